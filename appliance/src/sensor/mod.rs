//! The sensor: what turns frames into events for one shard of the traffic. Decode, fragment
//! reassembly, the flow table, the frames held for unattributed flows and the protocol parsers.
//!
//! Everything a sensor produces is tagged with its place in the capture's order ([`Tag`]): the
//! packet that caused it, and for what a tick or the end of the capture ends, the flow. A
//! capture split over several sensors ([`shards`]) is merged back by tag into exactly what one
//! sensor gives, so breaches, incidents and actions do not depend on the number of workers.

pub mod front;
mod pinning;
pub mod shards;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;

use vigil_plugin_sdk::{Event, EventKind, Timestamp};

use crate::analyzer::{Analyzer, LogOutbox, Record};
use crate::capture::Packet;
use crate::decode::fragments::{FragmentConfig, FragmentStats, Reassembler};
use crate::decode::{decode_frame, Decoded, Frame, Skip, SkipCounts, Transport as Layer4};
use crate::devices::Learned;
use crate::flow::held::{HeldFrames, HeldStats};
use crate::flow::{Direction, FlowConfig, FlowStats, FlowTable, Observed};
use crate::host::EventBatch;
use crate::respond::{EnforcementTable, ResponseGuard};
use crate::stream::StreamConfig;

/// DHCP's ports (RFC 2131): leases and host names for the device table.
const DHCP_SERVER: u16 = 67;
const DHCP_CLIENT: u16 = 68;

/// Where something a sensor produced belongs in the capture's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tag {
    /// The packet it came with (a tick or the end comes before the packet numbered so).
    pub seq: u64,
    pub stage: Stage,
    /// For [`Stage::Expired`] and [`Stage::Closed`], the flow (0 otherwise).
    pub flow: u64,
}

/// The order of what happens at one packet: a tick due first expires flows, then what their
/// end leaves the parsers to say, then the tick itself, then the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Expired,
    Closed,
    Tick,
    Packet,
}

/// How a sensor is set up; a shard of `n` gets `n`-th of each bound ([`SensorConfig::shard`]).
#[derive(Debug, Clone, Default)]
pub struct SensorConfig {
    pub flow: FlowConfig,
    pub streams: StreamConfig,
    pub fragments: FragmentConfig,
    /// Collect protocol log lines ([`Sensed::Log`]).
    pub keep_logs: bool,
}

impl SensorConfig {
    /// One of `shards` sensors sharing this config's memory bounds.
    fn shard(&self, shards: usize) -> SensorConfig {
        let part = |n: usize| (n / shards.max(1)).max(1);
        let mut config = self.clone();
        config.flow.capacity = part(config.flow.capacity);
        config.streams.max_total_bytes = part(config.streams.max_total_bytes);
        config.streams.max_streams = part(config.streams.max_streams);
        config.fragments.max_bytes = part(config.fragments.max_bytes);
        config.fragments.max_datagrams = part(config.fragments.max_datagrams);
        config
    }
}

/// Counts of what a sensor decoded, skipped and enforced, since it was made.
#[derive(Debug, Clone, Default)]
pub struct SensorStats {
    pub decoded: u64,
    pub skipped: SkipCounts,
    /// Frames of link types not decoded, by link type.
    pub unsupported_link_types: BTreeMap<i32, u64>,
    /// Packets the responses in force drop (inline) or would drop (mirror port).
    pub enforced: u64,
}

/// What a sensor produced, in tag order (reused from chunk to chunk).
#[derive(Debug, Default)]
pub struct Emissions {
    /// The events, encoded once for the plugins.
    pub events: EventBatch,
    pub items: Vec<Emission>,
    /// DHCP payloads ([`Sensed::Dhcp`]).
    pub bytes: Vec<u8>,
    /// Of the items, events.
    pub events_sensed: u64,
}

#[derive(Debug)]
pub struct Emission {
    pub tag: Tag,
    pub what: Sensed,
}

#[derive(Debug)]
pub enum Sensed {
    /// An event (number `entry` of [`Emissions::events`], none if it could not be encoded), what
    /// it teaches the device table, and the infrastructure service it shows the response guard.
    Event {
        entry: Option<usize>,
        learned: Learned,
        server: Option<(IpAddr, u16)>,
    },
    /// A datagram on the DHCP ports, for the device table (in [`Emissions::bytes`]).
    Dhcp {
        ts: Timestamp,
        payload: Range<usize>,
    },
    /// A protocol log line.
    Log { log: &'static str, record: Record },
}

impl Emissions {
    pub fn clear(&mut self) {
        self.events.clear();
        self.items.clear();
        self.bytes.clear();
        self.events_sensed = 0;
    }

    /// `answered`: an application event reported as its answer came in (see
    /// [`crate::devices::DeviceTable::observe_answer`]).
    fn event(&mut self, tag: Tag, event: &Event<'_>, answered: bool) {
        self.events_sensed += 1;
        let before = self.events.len();
        self.events.push(event);
        let entry = (self.events.len() > before).then_some(before);
        let server = match event.kind {
            EventKind::FlowEnd { .. } => ResponseGuard::server_of(event),
            _ => None,
        };
        self.items.push(Emission {
            tag,
            what: Sensed::Event {
                entry,
                learned: Learned::of(event, answered),
                server,
            },
        });
    }

    fn dhcp(&mut self, tag: Tag, ts: Timestamp, payload: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(payload);
        self.items.push(Emission {
            tag,
            what: Sensed::Dhcp {
                ts,
                payload: start..self.bytes.len(),
            },
        });
    }

    fn logs(&mut self, tag: Tag, logs: Option<&mut LogOutbox>) {
        let Some(logs) = logs else {
            return;
        };
        for (log, record) in logs.drain() {
            self.items.push(Emission {
                tag,
                what: Sensed::Log { log, record },
            });
        }
    }
}

pub struct Sensor {
    /// Fragments until their datagram is whole: nothing past decode sees a fragment.
    fragments: Reassembler,
    tracker: Tracker,
    stats: SensorStats,
}

/// What a whole datagram goes through: flows, held frames, parsers.
struct Tracker {
    flows: FlowTable,
    /// Frames of flows not yet attributed, for the parsers once they are.
    held: HeldFrames,
    analyzer: Analyzer,
    /// Flows that ended during the current packet or tick, for the analyzer to close (reused).
    ended: Vec<Event<'static>>,
    out: Emissions,
}

impl Sensor {
    pub fn new(config: SensorConfig) -> Sensor {
        Sensor {
            fragments: Reassembler::new(config.fragments),
            tracker: Tracker {
                flows: FlowTable::new(config.flow),
                held: HeldFrames::default(),
                analyzer: Analyzer::new(config.streams, config.keep_logs),
                ended: Vec::new(),
                out: Emissions::default(),
            },
            stats: SensorStats::default(),
        }
    }

    pub fn stats(&self) -> &SensorStats {
        &self.stats
    }

    pub fn flows(&self) -> &FlowTable {
        &self.tracker.flows
    }

    pub fn flow_stats(&self) -> FlowStats {
        self.tracker.flows.stats()
    }

    pub fn held_stats(&self) -> HeldStats {
        self.tracker.held.stats()
    }

    pub fn fragment_stats(&self) -> FragmentStats {
        *self.fragments.stats()
    }

    pub fn analyzer(&self) -> &Analyzer {
        &self.tracker.analyzer
    }

    /// What was produced since the emissions were last swapped out ([`Sensor::swap_emissions`]).
    pub fn swap_emissions(&mut self, other: &mut Emissions) {
        std::mem::swap(&mut self.tracker.out, other);
    }

    /// Handles packet number `seq`; true when the responses in force (`enforcement`) drop it.
    pub fn packet(
        &mut self,
        seq: u64,
        packet: &Packet<'_>,
        enforcement: Option<&EnforcementTable>,
    ) -> bool {
        let tag = Tag {
            seq,
            stage: Stage::Packet,
            flow: 0,
        };
        let now = packet.ts.micros() / 1_000_000;
        let mut dropped = false;
        let mut reassembled = false;
        // None: a fragment held until its datagram is whole.
        let decoded = match decode_frame(packet.link_type, packet.data) {
            Ok(Frame::Whole(decoded)) => Some(Ok(decoded)),
            Ok(Frame::Fragment(fragment)) => match self.fragments.push(packet.ts, &fragment) {
                // Decoded as if it had arrived whole, with the completing fragment's time.
                Some(datagram) => {
                    reassembled = true;
                    Some(datagram.decode())
                }
                // A blocked sender's fragments are dropped as they come (a fragment past the
                // first has no port; the datagram's is judged when it completes).
                None => {
                    dropped = enforcement
                        .is_some_and(|table| table.drops(fragment.src, fragment.dst, None, now));
                    None
                }
            },
            Err(reason) => Some(Err(reason)),
        };
        match decoded {
            Some(Ok(decoded)) => {
                self.stats.decoded += 1;
                let port = match decoded.transport {
                    Layer4::Tcp { dst_port, .. } | Layer4::Udp { dst_port, .. } => Some(dst_port),
                    _ => None,
                };
                dropped = enforcement
                    .is_some_and(|table| table.drops(decoded.src, decoded.dst, port, now));
                if let Layer4::Udp {
                    src_port: DHCP_SERVER | DHCP_CLIENT,
                    dst_port: DHCP_SERVER | DHCP_CLIENT,
                    payload,
                } = decoded.transport
                {
                    self.tracker.out.dhcp(tag, packet.ts, payload);
                }
                self.tracker.decoded(tag, packet, &decoded, reassembled);
            }
            Some(Err(reason)) => {
                self.stats.skipped.add(reason);
                if reason == Skip::UnsupportedLinkType {
                    *self
                        .stats
                        .unsupported_link_types
                        .entry(packet.link_type.0)
                        .or_default() += 1;
                }
            }
            None => {}
        }
        if dropped {
            self.stats.enforced += 1;
        }
        dropped
    }

    /// A tick before packet number `seq`, at `now`: expires flows and fragments.
    pub fn tick(&mut self, seq: u64, now: Timestamp) {
        let tracker = &mut self.tracker;
        let ended = &mut tracker.ended;
        tracker.flows.expire(now, &mut |event| ended.push(event));
        tracker.close_ended(seq, now);
        self.fragments.expire(now);
    }

    /// The end of the capture, before packet number `seq` (none comes): ends every open flow.
    pub fn flush(&mut self, seq: u64, now: Timestamp) {
        let tracker = &mut self.tracker;
        let ended = &mut tracker.ended;
        tracker.flows.flush(&mut |event| ended.push(event));
        tracker.close_ended(seq, now);
    }
}

impl Tracker {
    /// A decoded packet through the flow table and, once its flow is attributed, the parsers.
    /// `tag`: the packet's ([`Stage::Packet`]).
    fn decoded(&mut self, tag: Tag, packet: &Packet<'_>, decoded: &Decoded<'_>, reassembled: bool) {
        let out = &mut self.out;
        let ended = &mut self.ended;
        // A flow is numbered by the packet that opened it: the same whatever the sharding.
        let observed = self
            .flows
            .observe_as(tag.seq + 1, packet.ts, decoded, &mut |event| {
                out.event(tag, &event, false);
                if matches!(event.kind, EventKind::FlowEnd { .. }) {
                    ended.push(event);
                }
            });
        // An unattributed flow's packets are nobody's doing yet (see `flow`); what its
        // responder says meanwhile is held for the parsers until it is someone's.
        match observed {
            Some(observed) if observed.attributed => {
                if observed.attributed_now {
                    for frame in self.held.release(observed.flow) {
                        if let Ok(Frame::Whole(held)) = decode_frame(frame.link_type, &frame.data) {
                            let observed = Observed {
                                direction: frame.direction,
                                ..observed
                            };
                            parse(&mut self.analyzer, out, tag, frame.ts, &held, &observed);
                        }
                    }
                }
                parse(&mut self.analyzer, out, tag, packet.ts, decoded, &observed);
            }
            // A reassembled datagram is not one frame: it is not held.
            Some(observed) if !reassembled && decoded.transport.has_payload() => {
                self.held.hold(
                    observed.flow,
                    (packet.ts, observed.direction),
                    packet.link_type,
                    packet.data,
                );
            }
            _ => {}
        }
        // What the flows this packet ended leave unanswered.
        for end in self.ended.drain(..) {
            self.analyzer
                .flow_ended(packet.ts, &end, &mut |event| out.event(tag, event, false));
        }
        out.logs(tag, self.analyzer.logs());
    }

    /// Emits the flows a tick or the end ended, in the order of their ids (the order one sensor
    /// and several give alike), then what each leaves unanswered.
    fn close_ended(&mut self, seq: u64, now: Timestamp) {
        self.ended.sort_unstable_by_key(|end| end.flow);
        for end in &self.ended {
            let tag = Tag {
                seq,
                stage: Stage::Expired,
                flow: end.flow,
            };
            self.out.event(tag, end, false);
        }
        let out = &mut self.out;
        for end in self.ended.drain(..) {
            let tag = Tag {
                seq,
                stage: Stage::Closed,
                flow: end.flow,
            };
            self.analyzer
                .flow_ended(now, &end, &mut |event| out.event(tag, event, false));
            out.logs(tag, self.analyzer.logs());
        }
    }
}

/// One packet of an attributed flow through the parsers. What the responder's packet completes
/// was answered: it proves both ends.
fn parse(
    analyzer: &mut Analyzer,
    out: &mut Emissions,
    tag: Tag,
    ts: Timestamp,
    decoded: &Decoded<'_>,
    observed: &Observed,
) {
    let answer = observed.direction == Direction::FromResponder;
    analyzer.packet(ts, decoded, observed, &mut |event| {
        out.event(tag, event, answer)
    });
}
