//! A bounded reorder buffer in front of a file source: captures merged from several taps, or
//! written by a capturer whose queues raced, hold packets slightly out of time order. Held for a
//! window of packet time, they come out in timestamp order (ties in file order), so the
//! pipeline sees the capture as it happened.
//!
//! Disorder wider than the window cannot be undone here. A packet stamped before one already
//! released (a clock stepped back) is counted as late and starts a new run: what was read before
//! it goes out first, in time order, then it and what follows, so beyond the window the file's
//! order is kept, and the pipeline handles such packets at its latest time (see
//! `PipelineStats::clock_clamped`). Live capture stamps packets as it reads them and needs no
//! buffer.

use std::collections::VecDeque;

use vigil_plugin_sdk::Timestamp;

use pcap_parser::Linktype;

use super::{CaptureError, Next, Packet, Source};

/// A held frame buffer larger than this is given back when freed, so one jumbo or GSO frame
/// does not pin its size in every slot it passes through.
const SLOT_KEEP_BYTES: usize = 64 * 1024;

/// How much disorder to undo, and what it may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReorderConfig {
    /// Packet time a packet is held for, waiting for earlier-stamped ones read after it. Zero
    /// turns reordering off.
    pub window_micros: u64,
    /// Packets held at most; past it the earliest goes out early (disorder then may survive).
    pub max_packets: usize,
    /// Captured bytes held at most; past it the earliest goes out early.
    pub max_bytes: usize,
}

impl Default for ReorderConfig {
    fn default() -> Self {
        ReorderConfig {
            window_micros: 500_000,
            max_packets: 65_536,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What the buffer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReorderStats {
    /// Packets read after a later-stamped one and put back in time order.
    pub reordered: u64,
    /// Packets stamped before one already released: too late to put back (wider disorder than
    /// the window, or a clock stepped back); each starts a new run.
    pub late: u64,
    /// Packets released before their window ran out because the buffer was full.
    pub forced: u64,
}

impl std::ops::AddAssign for ReorderStats {
    fn add_assign(&mut self, other: ReorderStats) {
        self.reordered += other.reordered;
        self.late += other.late;
        self.forced += other.forced;
    }
}

/// One held frame; its buffer is reused for later frames.
#[derive(Debug, Default)]
struct Slot {
    data: Vec<u8>,
    wire_len: u32,
    link_type: Linktype,
}

/// Wraps `S`, releasing its packets in timestamp order within [`ReorderConfig::window_micros`].
pub struct Reorder<S> {
    inner: S,
    buffer: Buffer,
}

/// The held packets, apart from the source so a packet borrowed from it can be copied in.
struct Buffer {
    config: ReorderConfig,
    /// Held packets, earliest first: (run, time, read order, slot). Kept sorted rather than in
    /// a heap: packets mostly come in time order and go on the back in O(1), where a heap paid
    /// a sift through tens of thousands of held packets per packet under a flood.
    held: VecDeque<(u64, Timestamp, u64, usize)>,
    /// The current run: a late packet starts the next one, after everything held before it.
    run: u64,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// The slot handed out last, freed on the next call once the caller is done with it.
    out: Option<usize>,
    held_bytes: usize,
    read: u64,
    /// The latest stamp read so far in this run.
    latest: Option<Timestamp>,
    /// The latest stamp released in this run.
    released: Option<Timestamp>,
    ended: bool,
    /// The source's error, reported once every packet read before it is out.
    failed: Option<CaptureError>,
    stats: ReorderStats,
}

impl<S: Source> Reorder<S> {
    pub fn new(inner: S, config: ReorderConfig) -> Reorder<S> {
        Reorder {
            inner,
            buffer: Buffer {
                config,
                held: VecDeque::new(),
                run: 0,
                slots: Vec::new(),
                free: Vec::new(),
                out: None,
                held_bytes: 0,
                read: 0,
                latest: None,
                released: None,
                ended: false,
                failed: None,
                stats: ReorderStats::default(),
            },
        }
    }
}

impl Buffer {
    /// Whether the earliest held packet may go: it belongs to an earlier run, its window has run
    /// out, nothing more is coming, or the buffer is over a bound (counted: disorder may then
    /// survive).
    fn releasable(&mut self) -> bool {
        let Some(&(run, ts, _, _)) = self.held.front() else {
            return false;
        };
        let waited = self
            .latest
            .is_some_and(|latest| latest.since(ts) >= self.config.window_micros);
        if run < self.run || waited || self.ended {
            return true;
        }
        let full =
            self.held.len() > self.config.max_packets || self.held_bytes > self.config.max_bytes;
        if full {
            self.stats.forced += 1;
        }
        full
    }

    /// Copies one frame from the source into a free slot.
    fn hold(&mut self, packet: &Packet<'_>) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            self.slots.len() - 1
        });
        let held = &mut self.slots[slot];
        held.data.clear();
        held.data.extend_from_slice(packet.data);
        held.wire_len = packet.wire_len;
        held.link_type = packet.link_type;
        self.held_bytes += packet.data.len();
        match (self.released, self.latest) {
            (Some(released), _) if packet.ts < released => {
                self.stats.late += 1;
                self.run += 1;
                self.latest = None;
                self.released = None;
            }
            (_, Some(latest)) if packet.ts < latest => self.stats.reordered += 1,
            _ => {}
        }
        self.latest = Some(
            self.latest
                .map_or(packet.ts, |latest| latest.max(packet.ts)),
        );
        let entry = (self.run, packet.ts, self.read, slot);
        if self.held.back().is_none_or(|last| *last <= entry) {
            self.held.push_back(entry);
        } else {
            let at = self.held.partition_point(|held| *held < entry);
            self.held.insert(at, entry);
        }
        self.read += 1;
    }

    fn free_out(&mut self) {
        if let Some(slot) = self.out.take() {
            let held = &mut self.slots[slot];
            self.held_bytes -= held.data.len();
            if held.data.capacity() > SLOT_KEEP_BYTES {
                held.data = Vec::new();
            }
            self.free.push(slot);
        }
    }
}

impl<S: Source> Source for Reorder<S> {
    fn next_packet(&mut self) -> Result<Next<'_>, CaptureError> {
        let buffer = &mut self.buffer;
        buffer.free_out();
        while !buffer.releasable() {
            if buffer.ended {
                return match buffer.failed.take() {
                    Some(err) => Err(err),
                    None => Ok(Next::End),
                };
            }
            match self.inner.next_packet() {
                Ok(Next::Packet(packet)) => buffer.hold(&packet),
                Ok(Next::Idle) => return Ok(Next::Idle),
                Ok(Next::End) => buffer.ended = true,
                // Damage ends the file, but what was read before it still goes out first.
                Err(err) => {
                    buffer.ended = true;
                    buffer.failed = Some(err);
                }
            }
        }
        let Some((run, ts, _, slot)) = buffer.held.pop_front() else {
            return Ok(Next::End);
        };
        buffer.out = Some(slot);
        if run == buffer.run {
            buffer.released = Some(buffer.released.map_or(ts, |released| released.max(ts)));
        }
        let held = &buffer.slots[slot];
        Ok(Next::Packet(Packet {
            ts,
            data: &held.data,
            wire_len: held.wire_len,
            link_type: held.link_type,
        }))
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn inject(&mut self, frame: &[u8]) -> Result<bool, CaptureError> {
        self.inner.inject(frame)
    }

    fn reorder_stats(&self) -> ReorderStats {
        self.buffer.stats
    }

    fn queue_counters(&self) -> Vec<super::QueueCounters> {
        self.inner.queue_counters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames from memory: (stamp in ms, one byte naming it).
    struct Frames {
        frames: Vec<(u64, u8)>,
        at: usize,
        byte: [u8; 1],
    }

    impl Source for Frames {
        fn next_packet(&mut self) -> Result<Next<'_>, CaptureError> {
            let Some(&(ms, name)) = self.frames.get(self.at) else {
                return Ok(Next::End);
            };
            self.at += 1;
            self.byte = [name];
            Ok(Next::Packet(Packet {
                ts: Timestamp(ms * 1000),
                data: &self.byte,
                wire_len: 1,
                link_type: Linktype::ETHERNET,
            }))
        }

        fn describe(&self) -> String {
            "frames".into()
        }
    }

    /// Frames, then damage.
    struct Damaged(Frames);

    impl Source for Damaged {
        fn next_packet(&mut self) -> Result<Next<'_>, CaptureError> {
            if self.0.at == self.0.frames.len() {
                return Err(CaptureError::Corrupt {
                    source: "frames".into(),
                    offset: 99,
                    reason: "truncated".into(),
                });
            }
            self.0.next_packet()
        }

        fn describe(&self) -> String {
            self.0.describe()
        }
    }

    fn run(frames: &[(u64, u8)], config: ReorderConfig) -> (Vec<(u64, u8)>, ReorderStats) {
        let mut source = Reorder::new(
            Frames {
                frames: frames.to_vec(),
                at: 0,
                byte: [0],
            },
            config,
        );
        let mut out = Vec::new();
        while let Next::Packet(packet) = source.next_packet().expect("in memory") {
            out.push((packet.ts.micros() / 1000, packet.data[0]));
        }
        (out, source.reorder_stats())
    }

    fn window(ms: u64) -> ReorderConfig {
        ReorderConfig {
            window_micros: ms * 1000,
            ..ReorderConfig::default()
        }
    }

    #[test]
    fn packets_shuffled_within_the_window_come_out_in_time_order_ties_in_file_order() {
        let shuffled = [
            (10, 1),
            (30, 3),
            (20, 2),
            (20, 4),
            (15, 5),
            (100, 6),
            (90, 7),
        ];
        let (out, stats) = run(&shuffled, window(50));
        assert_eq!(
            out,
            [
                (10, 1),
                (15, 5),
                (20, 2),
                (20, 4),
                (30, 3),
                (90, 7),
                (100, 6)
            ]
        );
        assert_eq!(
            stats,
            ReorderStats {
                reordered: 4,
                late: 0,
                forced: 0
            }
        );
    }

    #[test]
    fn disorder_wider_than_the_window_keeps_file_order_counted_as_late() {
        // By the time 200 ms is read, 10 ms has gone; 5 ms is too late to put back: what was
        // read before it goes first. Within the new run, 7 ms overtakes 9 ms again.
        let frames = [(10, 1), (200, 2), (5, 3), (9, 4), (7, 5), (300, 6)];
        let (out, stats) = run(&frames, window(50));
        assert_eq!(out, [(10, 1), (200, 2), (5, 3), (7, 5), (9, 4), (300, 6)]);
        assert_eq!(
            stats,
            ReorderStats {
                reordered: 1,
                late: 1,
                forced: 0
            }
        );
    }

    #[test]
    fn a_full_buffer_releases_early_and_counts_it() {
        let config = ReorderConfig {
            window_micros: 1_000_000,
            max_packets: 2,
            max_bytes: usize::MAX,
        };
        let (out, stats) = run(&[(10, 1), (30, 2), (20, 3), (40, 4)], config);
        // Holding three, the earliest (10) goes early; 20 still overtakes 30.
        assert_eq!(out, [(10, 1), (20, 3), (30, 2), (40, 4)]);
        assert_eq!(stats.forced, 2);
        assert_eq!(stats.reordered, 1);
    }

    #[test]
    fn damage_is_reported_after_every_packet_read_before_it() {
        let frames = Frames {
            frames: vec![(10, 1), (30, 2), (20, 3)],
            at: 0,
            byte: [0],
        };
        let mut source = Reorder::new(Damaged(frames), window(500));
        let mut out = Vec::new();
        let end = loop {
            match source.next_packet() {
                Ok(Next::Packet(packet)) => out.push(packet.data[0]),
                other => break other.map(|_| ()),
            }
        };
        assert_eq!(out, [1, 3, 2]);
        assert!(
            matches!(end, Err(CaptureError::Corrupt { offset: 99, .. })),
            "{end:?}"
        );
    }

    #[test]
    fn a_zero_window_changes_nothing() {
        let frames = [(10, 1), (5, 2), (20, 3)];
        let (out, stats) = run(&frames, window(0));
        assert_eq!(out, frames);
        assert_eq!(stats.late, 1);
    }
}
