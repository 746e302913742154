//! The capture side of the pipeline: packets numbered, the clock kept (packet time, never
//! backwards), ticks marked once per second of it, chunks sensed ([`Shards`]). It runs on the
//! thread that reads the source; detection takes what it sensed ([`Front::take`]).

use std::collections::BTreeMap;

use vigil_plugin_sdk::Timestamp;

use super::shards::{Mark, MarkKind, Shards};
use super::{Emissions, Sensor, SensorConfig};
use crate::capture::Packet;
use crate::decode::fragments::FragmentStats;
use crate::decode::SkipCounts;
use crate::respond::EnforcementTable;

/// Ticks (and flow expiry) run once per second of packet time.
const TICK_MICROS: u64 = 1_000_000;

/// What the capture side counted, since it was made.
#[derive(Debug, Clone, Default)]
pub struct FrontCounts {
    pub packets: u64,
    pub bytes: u64,
    pub first_packet: Option<Timestamp>,
    pub last_packet: Option<Timestamp>,
    /// Packets stamped earlier than one already handled (merged captures, a clock stepped
    /// back, crafted files): handled at the latest time instead, so time never runs backwards.
    pub clock_clamped: u64,
    pub decoded: u64,
    pub skipped: SkipCounts,
    pub unsupported_link_types: BTreeMap<i32, u64>,
    pub fragments: FragmentStats,
    /// Packets the responses in force drop (inline) or would drop (mirror port).
    pub enforced: u64,
    /// Events the sensors produced (detection adds the ticks'; live capture may shed some).
    pub events_sensed: u64,
}

#[derive(Default)]
pub struct Front {
    shards: Shards,
    /// The next packet's number: its place in the capture's order.
    seq: u64,
    /// The latest time handled (packets and idle ticks): packets stamped earlier are handled
    /// at it.
    clock: Option<Timestamp>,
    next_tick: Option<Timestamp>,
    counts: FrontCounts,
}

impl Front {
    /// `workers` sensors sharing `config`'s bounds; fails only if their threads cannot be made.
    pub fn new(config: &SensorConfig, workers: usize) -> std::io::Result<Front> {
        Ok(Front {
            shards: Shards::new(config, workers)?,
            ..Front::default()
        })
    }

    pub fn counts(&self) -> &FrontCounts {
        &self.counts
    }

    pub fn sensors(&self) -> &[Sensor] {
        self.shards.sensors()
    }

    /// Packets read into the chunk and not yet taken.
    pub fn packets(&self) -> usize {
        self.shards.packets()
    }

    /// Numbers a frame and adds it to the chunk, after the tick it makes due; its index there.
    pub fn admit(&mut self, packet: &Packet<'_>) -> usize {
        // Flow timeouts, ticks and the plugins' windows only move forwards.
        let packet = &match self.clock {
            Some(latest) if packet.ts < latest => {
                self.counts.clock_clamped += 1;
                Packet {
                    ts: latest,
                    ..*packet
                }
            }
            _ => *packet,
        };
        self.counts.packets += 1;
        self.counts.bytes += u64::from(packet.wire_len);
        self.counts.first_packet.get_or_insert(packet.ts);
        self.counts.last_packet = Some(packet.ts);
        self.clock = Some(packet.ts);
        self.mark_tick_if_due(packet.ts);
        let index = self.shards.push(self.seq, packet);
        self.seq += 1;
        index
    }

    /// Time passes without traffic (a quiet live link): the tick it makes due, if any. The
    /// wall clock may lag the packets' stamps: it never takes time back.
    pub fn idle(&mut self, now: Timestamp) {
        let now = self.clock.map_or(now, |latest| now.max(latest));
        self.clock = Some(now);
        self.mark_tick_if_due(now);
    }

    /// The end of the capture: every open flow ends with the next sensing.
    pub fn end(&mut self) {
        self.shards.mark(Mark {
            seq: self.seq,
            now: self.counts.last_packet.unwrap_or_default(),
            kind: MarkKind::End,
        });
    }

    /// A tick once per second of packet time; one however long the gap: a capture that skips a
    /// night needs no 30,000 ticks.
    fn mark_tick_if_due(&mut self, now: Timestamp) {
        if self.next_tick.is_some_and(|next| now < next) {
            return;
        }
        self.shards.mark(Mark {
            seq: self.seq,
            now,
            kind: MarkKind::Tick,
        });
        self.next_tick = Some(Timestamp((now.micros() / TICK_MICROS + 1) * TICK_MICROS));
    }

    /// Whether the chunk holds anything to sense.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The sensors take the chunk; `enforcement`: the responses in force.
    pub fn sense(&mut self, enforcement: Option<&EnforcementTable>) {
        self.shards.run(enforcement);
        let mut counts = FrontCounts {
            decoded: 0,
            skipped: SkipCounts::default(),
            unsupported_link_types: BTreeMap::new(),
            fragments: FragmentStats::default(),
            enforced: 0,
            ..std::mem::take(&mut self.counts)
        };
        for sensor in self.shards.sensors() {
            let stats = sensor.stats();
            counts.decoded += stats.decoded;
            counts.enforced += stats.enforced;
            counts.skipped += &stats.skipped;
            counts.fragments += sensor.fragment_stats();
            for (link_type, n) in &stats.unsupported_link_types {
                *counts.unsupported_link_types.entry(*link_type).or_default() += n;
            }
        }
        self.counts = counts;
    }

    /// Whether the sensing dropped packet `index` of the chunk.
    pub fn dropped(&self, index: usize) -> bool {
        self.shards.dropped(index)
    }

    /// The chunk's packets in order, each with whether the sensing dropped it.
    pub fn sensed(&self) -> impl Iterator<Item = (Packet<'_>, bool)> {
        self.shards.sensed()
    }

    /// Takes what the chunk's sensing emitted and its marks (swapping buffers with `outs`,
    /// replacing `marks`), and empties the chunk.
    pub fn take(&mut self, outs: &mut Vec<Emissions>, marks: &mut Vec<Mark>) {
        self.shards.swap_emissions(outs);
        self.counts.events_sensed += outs.iter().map(|out| out.events_sensed).sum::<u64>();
        marks.clear();
        marks.extend_from_slice(self.shards.marks());
        self.shards.clear();
    }
}
