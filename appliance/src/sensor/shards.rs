//! A capture split over several sensors, each on a worker thread, chunk by chunk.
//!
//! A packet goes to the sensor its IP address pair hashes to, the same for both directions, so
//! one sensor sees the whole of every flow and every fragment of a datagram (fragments past the
//! first carry no ports). An ICMP error goes where the flow it quotes went. Ticks and the end of
//! the capture reach every sensor at their place in the packets. What the sensors emit is
//! merged back by [`Tag`] ([`Merge`]): the order one sensor alone gives.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::ops::Range;

use pcap_parser::Linktype;
use rayon::prelude::*;
use vigil_plugin_sdk::Timestamp;

use super::{pinning, Emissions, Sensor, SensorConfig, Tag};
use crate::capture::Packet;
use crate::decode::{decode_frame, Frame, IcmpKind, Transport};
use crate::respond::EnforcementTable;

/// Chunks of fewer packets run their sensors on the caller's thread.
const PARALLEL_FROM: usize = 64;

/// Something every sensor handles at its place among the packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// Before the packet numbered so.
    pub seq: u64,
    pub now: Timestamp,
    pub kind: MarkKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    /// Once per second of packet time: flows and fragments expire.
    Tick,
    /// The end: every open flow ends.
    End,
}

/// A packet copied into the chunk.
#[derive(Debug)]
struct Copied {
    seq: u64,
    ts: Timestamp,
    link_type: Linktype,
    wire_len: u32,
    data: Range<usize>,
    shard: usize,
    dropped: bool,
}

/// The packets and marks handled together, in order.
#[derive(Debug, Default)]
struct Chunk {
    bytes: Vec<u8>,
    packets: Vec<Copied>,
    marks: Vec<Mark>,
}

impl Chunk {
    fn packet(&self, copied: &Copied) -> Packet<'_> {
        Packet {
            ts: copied.ts,
            data: &self.bytes[copied.data.clone()],
            link_type: copied.link_type,
            wire_len: copied.wire_len,
        }
    }
}

/// Default: no sensor at all, what a pipeline holds while its front is on the capture thread.
#[derive(Default)]
pub struct Shards {
    sensors: Vec<Sensor>,
    /// One thread per sensor when there are several.
    pool: Option<rayon::ThreadPool>,
    chunk: Chunk,
    /// Per sensor, the chunk's packets it dropped (reused).
    dropped: Vec<Vec<usize>>,
}

impl Shards {
    /// `workers` sensors sharing `config`'s bounds. Fails only if the threads cannot be made.
    pub fn new(config: &SensorConfig, workers: usize) -> std::io::Result<Shards> {
        let workers = workers.max(1);
        let shard = config.shard(workers);
        let pool = match workers {
            1 => None,
            n => {
                let placement = pinning::cores_for(n);
                tracing::info!("{n} sensor workers, {}", pinning::describe(&placement));
                let cores = placement.unwrap_or_default();
                Some(
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(n)
                        .thread_name(|i| format!("vigil-sensor-{i}"))
                        .start_handler(move |i| pinning::pin_worker(&cores, i))
                        .build()
                        .map_err(std::io::Error::other)?,
                )
            }
        };
        Ok(Shards {
            sensors: (0..workers).map(|_| Sensor::new(shard.clone())).collect(),
            pool,
            chunk: Chunk::default(),
            dropped: vec![Vec::new(); workers],
        })
    }

    pub fn sensors(&self) -> &[Sensor] {
        &self.sensors
    }

    /// Whether the sensors take the chunk on threads of their own: with several sensors, for a
    /// chunk worth waking the threads for.
    fn parallel(&self) -> bool {
        self.pool.is_some() && self.chunk.packets.len() >= PARALLEL_FROM
    }

    /// Packets and marks waiting for [`Shards::run`].
    pub fn is_empty(&self) -> bool {
        self.chunk.packets.is_empty() && self.chunk.marks.is_empty()
    }

    pub fn packets(&self) -> usize {
        self.chunk.packets.len()
    }

    /// Adds packet number `seq` to the chunk; returns its index in the chunk.
    pub fn push(&mut self, seq: u64, packet: &Packet<'_>) -> usize {
        let start = self.chunk.bytes.len();
        self.chunk.bytes.extend_from_slice(packet.data);
        self.chunk.packets.push(Copied {
            seq,
            ts: packet.ts,
            link_type: packet.link_type,
            wire_len: packet.wire_len,
            data: start..self.chunk.bytes.len(),
            shard: self.shard_of(packet),
            dropped: false,
        });
        self.chunk.packets.len() - 1
    }

    pub fn mark(&mut self, mark: Mark) {
        self.chunk.marks.push(mark);
    }

    pub fn marks(&self) -> &[Mark] {
        &self.chunk.marks
    }

    /// Whether the responses in force dropped packet `index` of the chunk ([`Shards::run`]).
    pub fn dropped(&self, index: usize) -> bool {
        self.chunk.packets.get(index).is_some_and(|p| p.dropped)
    }

    /// The chunk's packets in order, each with whether the responses in force dropped it.
    pub fn sensed(&self) -> impl Iterator<Item = (Packet<'_>, bool)> {
        self.chunk
            .packets
            .iter()
            .map(|p| (self.chunk.packet(p), p.dropped))
    }

    /// Empties the chunk (after its emissions were taken and its drops read).
    pub fn clear(&mut self) {
        self.chunk.bytes.clear();
        self.chunk.packets.clear();
        self.chunk.marks.clear();
    }

    /// Every sensor handles its packets of the chunk and every mark, in order, on its own thread
    /// when there are several. `enforcement`: the responses in force, as the chunk began.
    pub fn run(&mut self, enforcement: Option<&EnforcementTable>) {
        let chunk = &self.chunk;
        let work = |(index, (sensor, dropped)): (usize, (&mut Sensor, &mut Vec<usize>))| {
            dropped.clear();
            handle(sensor, index, chunk, enforcement, dropped);
        };
        match &self.pool {
            // A few packets (an inline bridge's frame, a quiet link's trickle) are not worth
            // waking the threads for; the sensors handle them one after the other.
            Some(pool) if self.parallel() => pool.install(|| {
                self.sensors
                    .par_iter_mut()
                    .zip(self.dropped.par_iter_mut())
                    .enumerate()
                    .for_each(work)
            }),
            _ => self
                .sensors
                .iter_mut()
                .zip(self.dropped.iter_mut())
                .enumerate()
                .for_each(work),
        }
        for index in self.dropped.iter().flatten() {
            self.chunk.packets[*index].dropped = true;
        }
    }

    /// Swaps every sensor's emissions with `outs` (made one per sensor): the caller merges them
    /// ([`Merge`]) and hands the buffers back, cleared, with the next call.
    pub fn swap_emissions(&mut self, outs: &mut Vec<Emissions>) {
        outs.truncate(self.sensors.len());
        outs.resize_with(self.sensors.len(), Emissions::default);
        for (sensor, out) in self.sensors.iter_mut().zip(outs.iter_mut()) {
            out.clear();
            sensor.swap_emissions(out);
        }
    }

    /// The sensor for `packet`: by a symmetric hash of its addresses (those of the flow an ICMP
    /// error quotes). What does not decode goes to the first, which counts it.
    fn shard_of(&self, packet: &Packet<'_>) -> usize {
        let shards = self.sensors.len();
        if shards == 1 {
            return 0;
        }
        let pair = match decode_frame(packet.link_type, packet.data) {
            Ok(Frame::Whole(decoded)) => match decoded.transport {
                Transport::Icmp {
                    kind: IcmpKind::Unreachable(quoted),
                    ..
                } => (quoted.src, quoted.dst),
                _ => (decoded.src, decoded.dst),
            },
            Ok(Frame::Fragment(fragment)) => (fragment.src, fragment.dst),
            Err(_) => return 0,
        };
        (pair_hash(pair) % shards as u64) as usize
    }
}

/// The same for both orders of the pair, and from run to run.
fn pair_hash((a, b): (IpAddr, IpAddr)) -> u64 {
    let mut hasher = DefaultHasher::new();
    (a.min(b), a.max(b)).hash(&mut hasher);
    hasher.finish()
}

/// Sensor number `index`'s share of `chunk`: its packets, and every mark before the packet it
/// names.
fn handle(
    sensor: &mut Sensor,
    index: usize,
    chunk: &Chunk,
    enforcement: Option<&EnforcementTable>,
    dropped: &mut Vec<usize>,
) {
    let mut marks = chunk.marks.iter().peekable();
    let apply = |sensor: &mut Sensor, mark: &Mark| match mark.kind {
        MarkKind::Tick => sensor.tick(mark.seq, mark.now),
        MarkKind::End => sensor.flush(mark.seq, mark.now),
    };
    for (at, copied) in chunk.packets.iter().enumerate() {
        while let Some(mark) = marks.next_if(|mark| mark.seq <= copied.seq) {
            apply(sensor, mark);
        }
        if copied.shard == index && sensor.packet(copied.seq, &chunk.packet(copied), enforcement) {
            dropped.push(at);
        }
    }
    for mark in marks {
        apply(sensor, mark);
    }
}

/// The sensors' emissions in tag order: each sensor's are in order already, and no two share a
/// tag's group ([`Tag`]), so taking the least head each time gives one sensor's order.
pub struct Merge<'a> {
    outs: &'a [Emissions],
    next: Vec<usize>,
}

impl<'a> Merge<'a> {
    pub fn new(outs: &'a [Emissions]) -> Merge<'a> {
        Merge {
            outs,
            next: vec![0; outs.len()],
        }
    }
}

impl Iterator for Merge<'_> {
    /// (sensor, index of the emission in its `items`, its tag)
    type Item = (usize, usize, Tag);

    fn next(&mut self) -> Option<Self::Item> {
        let (shard, tag) = self
            .outs
            .iter()
            .zip(&self.next)
            .enumerate()
            .filter_map(|(shard, (out, &next))| out.items.get(next).map(|e| (shard, e.tag)))
            // Ties (none between sensors) go to the lower sensor: stable.
            .min_by_key(|&(shard, tag)| (tag, shard))?;
        let index = self.next[shard];
        self.next[shard] += 1;
        Some((shard, index, tag))
    }
}
