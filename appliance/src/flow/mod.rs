//! The flow table: a fixed number of slots, allocated once, tracking every conversation and
//! turning it into `FlowStart` / `FlowEnd` events.
//!
//! Slots are grouped in buckets of [`WAYS`]; a flow lives in the bucket its key hashes to. When a
//! bucket is full the least recently seen flow in it is evicted (and ended, and counted), so the
//! table never grows and a flood of unique flows costs evictions, not memory. Timeouts run on
//! packet time, so a replay ends flows exactly as the live capture did; a timing wheel
//! ([`expiry`]) finds the flows due, so a tick costs what ends, not the table's capacity.
//!
//! A flow is blamed on nobody until its originator demonstrably sent something. The originator is
//! the sender of the first packet when that packet opens an exchange (a SYN, a request datagram,
//! an echo request, a client's segment); when the first packet looks like an answer (a SYN-ACK,
//! a RST, a datagram from a service port, an echo reply) the flow is oriented by it but stays
//! *unattributed* until the side it names as originator sends a packet other than a RST. An
//! unattributed flow emits no events and feeds no parser: forged "answers" addressed to a
//! workstation (which at most RSTs them) are evidence against nobody, and are counted as
//! [`FlowStats::unsolicited`] when they end.

mod expiry;
pub mod held;
mod tcp;

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;

use vigil_plugin_sdk::{Endpoint, Event, EventKind, FlowState, Timestamp, Transport};

use crate::decode::{Decoded, IcmpKind, Quoted, TcpFlags, Transport as Wire, VlanTags};
use expiry::Wheel;
pub use tcp::segment_end;
use tcp::TcpState;

/// Slots per bucket: small enough to scan in one cache line or two, large enough that collisions
/// rarely evict a live flow.
pub const WAYS: usize = 8;

/// Flow table sizing and timeouts (packet-time seconds).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowConfig {
    /// Maximum concurrent flows; rounded up to a multiple of [`WAYS`].
    pub capacity: usize,
    /// A SYN (or datagram) nobody answers is a half-open flow after this long. Short, because
    /// scan models are judged on how quickly they see failed attempts.
    pub unanswered_timeout_secs: u64,
    pub tcp_idle_timeout_secs: u64,
    pub udp_idle_timeout_secs: u64,
    pub icmp_idle_timeout_secs: u64,
    /// A closed or reset flow lingers this long to absorb retransmitted FINs, RSTs and the last
    /// ACK without starting a new flow.
    pub closed_linger_secs: u64,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            capacity: 65536,
            unanswered_timeout_secs: 5,
            tcp_idle_timeout_secs: 300,
            udp_idle_timeout_secs: 60,
            icmp_idle_timeout_secs: 10,
            closed_linger_secs: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub started: u64,
    pub ended: u64,
    /// Flows pushed out of a full bucket before they ended on their own.
    pub evicted: u64,
    pub active: u64,
    /// Flows that ended without their originator ever sending: unanswered answers (backscatter,
    /// forged responses). They raised no event.
    pub unsolicited: u64,
}

impl std::ops::AddAssign for FlowStats {
    fn add_assign(&mut self, other: FlowStats) {
        self.started += other.started;
        self.ended += other.ended;
        self.evicted += other.evicted;
        self.active += other.active;
        self.unsolicited += other.unsolicited;
    }
}

/// A flow key with the two sides in a canonical order, so both directions find one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    protocol: u8,
    low: (IpAddr, u16),
    high: (IpAddr, u16),
}

impl FlowKey {
    fn new(protocol: u8, a: (IpAddr, u16), b: (IpAddr, u16)) -> FlowKey {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        FlowKey {
            protocol,
            low,
            high,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// Ended (event sent); lingering until `closed_linger_secs` pass.
    Closed,
}

#[derive(Debug, Clone, Copy)]
struct Flow {
    key: FlowKey,
    id: u64,
    transport: Transport,
    orig: Endpoint,
    resp: Endpoint,
    first: Timestamp,
    last: Timestamp,
    orig_bytes: u64,
    resp_bytes: u64,
    orig_packets: u64,
    resp_packets: u64,
    tcp: TcpState,
    phase: Phase,
    /// Set by an ICMP unreachable about this flow.
    refused: bool,
    /// The originator has sent a packet other than a RST: only then do the flow's events exist
    /// (see the module doc).
    attributed: bool,
    /// TCP: the first packet seen was not a SYN, so the capture began mid-connection.
    picked_up: bool,
    /// TCP: what each side (originator, responder) sent last, for resets built when an action
    /// comes in force rather than at the connection's next segment.
    sent: [Option<Sent>; 2],
}

/// The link layer of the frames one side of a TCP connection sends, and how far into sequence
/// space it has sent: what a reset in that side's name needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// The VLAN tags its frames carry, as they carry them.
    pub vlans: VlanTags,
    /// The sequence number after the furthest byte (SYN and FIN count one) it has sent.
    pub next_seq: u32,
}

/// An open TCP connection both of whose sides have been seen, as [`FlowTable::tcp_connections_of`]
/// reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConnection {
    pub orig: (IpAddr, u16),
    pub resp: (IpAddr, u16),
    pub from_orig: Sent,
    pub from_resp: Sent,
}

/// Which way a packet went within its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    FromOriginator,
    FromResponder,
}

impl Direction {
    const fn index(self) -> usize {
        match self {
            Direction::FromOriginator => 0,
            Direction::FromResponder => 1,
        }
    }
}

/// What the table knows about the flow a packet belongs to, for the parsers above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub flow: u64,
    pub orig: Endpoint,
    pub resp: Endpoint,
    pub transport: Transport,
    pub direction: Direction,
    /// Whether the flow's originator has demonstrably sent: parsers only see attributed flows.
    pub attributed: bool,
    /// Whether this packet attributed it (what was held for the flow is now the parsers').
    pub attributed_now: bool,
    /// A TCP connection whose opening SYN was not seen: its streams may begin inside a message,
    /// and its protocol log records say so.
    pub picked_up: bool,
}

/// A key's bucket of slots and its tag.
struct Place {
    slots: std::ops::Range<usize>,
    tag: u32,
}

pub struct FlowTable {
    config: FlowConfig,
    slots: Vec<Option<Flow>>,
    /// Per slot, a tag from its flow key's hash (0: empty). A lookup compares its bucket's tags,
    /// one cache line, before touching a flow (a few hundred bytes each).
    tags: Vec<u32>,
    hasher: std::collections::hash_map::RandomState,
    /// Every occupied slot, filed under when it is next due to be looked at.
    wheel: Wheel,
    /// The slots due at a tick (reused).
    due: Vec<usize>,
    /// The id the next new flow gets: counted here, or set by [`FlowTable::observe_as`].
    next_id: u64,
    stats: FlowStats,
}

impl FlowTable {
    pub fn new(config: FlowConfig) -> FlowTable {
        let capacity = config.capacity.max(WAYS).div_ceil(WAYS) * WAYS;
        FlowTable {
            config,
            slots: vec![None; capacity],
            tags: vec![0; capacity],
            hasher: Default::default(),
            wheel: Wheel::new(capacity),
            due: Vec::new(),
            next_id: 1,
            stats: FlowStats::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn stats(&self) -> FlowStats {
        self.stats
    }

    /// As [`FlowTable::observe`], numbering the flow this packet opens, if it opens one, `id`:
    /// a sharded capture numbers flows by the packet that opened them, so that they have the
    /// same ids however many shards there are.
    pub fn observe_as(
        &mut self,
        id: u64,
        ts: Timestamp,
        packet: &Decoded<'_>,
        emit: &mut impl FnMut(Event<'static>),
    ) -> Option<Observed> {
        self.next_id = id;
        self.observe(ts, packet, emit)
    }

    /// Accounts one decoded packet; emits `FlowStart` for a new flow and `FlowEnd` for one this
    /// packet closes (or evicts). Returns the packet's flow, if it has one.
    pub fn observe(
        &mut self,
        ts: Timestamp,
        packet: &Decoded<'_>,
        emit: &mut impl FnMut(Event<'static>),
    ) -> Option<Observed> {
        let (protocol, transport, src_port, dst_port, payload_len) = match packet.transport {
            Wire::Tcp {
                src_port,
                dst_port,
                payload,
                ..
            } => (6, Transport::Tcp, src_port, dst_port, payload.len()),
            Wire::Udp {
                src_port,
                dst_port,
                payload,
            } => (17, Transport::Udp, src_port, dst_port, payload.len()),
            Wire::Icmp {
                kind: IcmpKind::Unreachable(quoted),
                ..
            } => {
                self.refuse(ts, &quoted, emit);
                return None;
            }
            Wire::Icmp {
                kind: kind @ (IcmpKind::Request | IcmpKind::Reply),
                ident,
                ..
            } => {
                // ICMP flows are keyed by the echo identifier; the events' "ports" are the
                // request's type and code, as in Zeek (set in `start`).
                let is_request = kind == IcmpKind::Request;
                let (sp, dp) = if is_request { (ident, 0) } else { (0, ident) };
                (1, Transport::Icmp, sp, dp, 0)
            }
            Wire::Icmp { .. } | Wire::Other { .. } => return None,
        };
        let src = (packet.src, src_port);
        let dst = (packet.dst, dst_port);
        let key = if protocol == 1 {
            // Both directions share the identifier; the addresses alone order the key.
            let ident = src_port.max(dst_port);
            FlowKey::new(1, (packet.src, ident), (packet.dst, ident))
        } else {
            FlowKey::new(protocol, src, dst)
        };
        let flags = match packet.transport {
            Wire::Tcp { flags, .. } => flags,
            _ => TcpFlags::default(),
        };
        let place = self.place(&key);
        let slot = match self.find_at(&place, &key) {
            Some(slot) => slot,
            None => {
                let slot = self.claim(&place, ts, emit);
                let flow = self.start(key, ts, transport, packet, src_port, dst_port, flags);
                self.slots[slot] = Some(flow);
                self.tags[slot] = place.tag;
                self.wheel
                    .file(slot, after(ts, self.config.unanswered_timeout_secs), ts);
                self.stats.active += 1;
                slot
            }
        };
        let flow = self.slots[slot].as_mut()?;
        // ICMP flows match on addresses alone (both directions share the identifier).
        let from_orig = flow.orig.ip == packet.src
            && (transport == Transport::Icmp || flow.orig.port == src_port);
        let direction = if from_orig {
            Direction::FromOriginator
        } else {
            Direction::FromResponder
        };
        flow.last = ts;
        // A flow that already ended unattributed stays nobody's: it lingers only to absorb
        // stragglers, and a FlowStart now would have no FlowEnd.
        let attributed_now =
            !flow.attributed && flow.phase == Phase::Open && from_orig && !flags.has(TcpFlags::RST);
        if attributed_now {
            flow.attributed = true;
            self.stats.started += 1;
            emit(event(flow, ts, EventKind::FlowStart));
        }
        match direction {
            Direction::FromOriginator => {
                flow.orig_packets += 1;
                flow.orig_bytes += payload_len as u64;
            }
            Direction::FromResponder => {
                flow.resp_packets += 1;
                flow.resp_bytes += payload_len as u64;
                if flow.resp.mac == [0; 6] {
                    flow.resp.mac = packet.src_mac;
                }
            }
        }
        if let Wire::Tcp { seq, payload, .. } = packet.transport {
            note_sent(
                &mut flow.sent[direction.index()],
                packet,
                seq,
                flags,
                payload.len(),
            );
        }
        if transport == Transport::Tcp && flow.phase == Phase::Open {
            flow.tcp = flow.tcp.advance(direction, flags);
            if let Some(state) = flow.tcp.final_state() {
                let flow = *flow;
                self.end(slot, &flow, state, ts, emit);
            }
        }
        let flow = self.slots[slot].as_ref()?;
        Some(Observed {
            flow: flow.id,
            orig: flow.orig,
            resp: flow.resp,
            transport: flow.transport,
            direction,
            attributed: flow.attributed,
            attributed_now,
            picked_up: flow.picked_up,
        })
    }

    /// The open TCP connections `device` is an end of, both of whose sides have been seen. Walks
    /// the whole table: for the moment an action comes in force, never per packet.
    pub fn tcp_connections_of(&self, device: IpAddr) -> impl Iterator<Item = TcpConnection> + '_ {
        self.slots.iter().flatten().filter_map(move |flow| {
            if flow.transport != Transport::Tcp
                || flow.phase != Phase::Open
                || (flow.orig.ip != device && flow.resp.ip != device)
            {
                return None;
            }
            let [Some(from_orig), Some(from_resp)] = flow.sent else {
                return None;
            };
            Some(TcpConnection {
                orig: (flow.orig.ip, flow.orig.port),
                resp: (flow.resp.ip, flow.resp.port),
                from_orig,
                from_resp,
            })
        })
    }

    /// Ends flows whose time is up. Call as packet time advances (the pipeline does, once per
    /// second of capture time); [`FlowTable::flush`] ends the rest at the end of a capture.
    pub fn expire(&mut self, now: Timestamp, emit: &mut impl FnMut(Event<'static>)) {
        let mut due = std::mem::take(&mut self.due);
        self.wheel.take_due(now, &mut due);
        for slot in due.drain(..) {
            self.expire_slot(slot, now, emit);
        }
        self.due = due;
    }

    /// Ends the flow in `slot` if its time is up at `now`, frees a closed one whose linger is
    /// over, and files any other again under its deadline.
    fn expire_slot(&mut self, slot: usize, now: Timestamp, emit: &mut impl FnMut(Event<'static>)) {
        // Fields, not the whole flow: most slots due are filed again, and a copy costs.
        let Some((phase, last, answered, transport)) = self.slots[slot]
            .as_ref()
            .map(|f| (f.phase, f.last, f.resp_packets > 0, f.transport))
        else {
            return;
        };
        let idle = now.since(last);
        match phase {
            Phase::Closed => {
                let linger = self.config.closed_linger_secs;
                if idle >= linger * 1_000_000 {
                    self.free(slot);
                } else {
                    self.wheel.file(slot, after(last, linger), now);
                }
            }
            Phase::Open => {
                let timeout = if !answered {
                    self.config.unanswered_timeout_secs
                } else {
                    match transport {
                        Transport::Tcp => self.config.tcp_idle_timeout_secs,
                        Transport::Udp => self.config.udp_idle_timeout_secs,
                        _ => self.config.icmp_idle_timeout_secs,
                    }
                };
                if idle < timeout * 1_000_000 {
                    self.wheel.file(slot, after(last, timeout), now);
                } else if let Some(flow) = self.slots[slot] {
                    self.end(slot, &flow, timed_out_state(&flow), last, emit);
                    self.free(slot);
                }
            }
        }
    }

    fn free(&mut self, slot: usize) {
        self.slots[slot] = None;
        self.tags[slot] = 0;
        self.wheel.unfile(slot);
    }

    /// Ends every open flow now (end of capture, shutdown).
    pub fn flush(&mut self, emit: &mut impl FnMut(Event<'static>)) {
        for slot in 0..self.slots.len() {
            self.expire_slot(slot, Timestamp(u64::MAX), emit);
        }
        self.wheel.clear();
    }

    /// Where a key lives: its bucket and its tag, from one hash.
    fn place(&self, key: &FlowKey) -> Place {
        let hash = self.hasher.hash_one(key);
        let buckets = self.slots.len() / WAYS;
        let bucket = (hash as usize) % buckets;
        Place {
            slots: bucket * WAYS..(bucket + 1) * WAYS,
            // The high half, which picked no bucket; never 0, which marks an empty slot.
            tag: (hash >> 32) as u32 | 1,
        }
    }

    fn find(&self, key: &FlowKey) -> Option<usize> {
        self.find_at(&self.place(key), key)
    }

    fn find_at(&self, place: &Place, key: &FlowKey) -> Option<usize> {
        place.slots.clone().find(|&slot| {
            self.tags[slot] == place.tag
                && self.slots[slot]
                    .as_ref()
                    .is_some_and(|flow| flow.key == *key)
        })
    }

    /// A free slot in the key's bucket, evicting its least recently seen flow if none is free.
    fn claim(
        &mut self,
        place: &Place,
        ts: Timestamp,
        emit: &mut impl FnMut(Event<'static>),
    ) -> usize {
        let bucket = place.slots.clone();
        if let Some(free) = bucket.clone().find(|&slot| self.tags[slot] == 0) {
            return free;
        }
        let victim = bucket
            .min_by_key(|slot| {
                self.slots[*slot].map_or(Timestamp(0), |f| {
                    // Closed flows go first: they have already been reported.
                    if f.phase == Phase::Closed {
                        Timestamp(0)
                    } else {
                        f.last
                    }
                })
            })
            .unwrap_or(0);
        if let Some(flow) = self.slots[victim] {
            if flow.phase == Phase::Open {
                self.stats.evicted += 1;
                self.end(victim, &flow, timed_out_state(&flow), ts, emit);
            }
        }
        self.free(victim);
        victim
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        key: FlowKey,
        ts: Timestamp,
        transport: Transport,
        packet: &Decoded<'_>,
        src_port: u16,
        dst_port: u16,
        flags: TcpFlags,
    ) -> Flow {
        let sender = Endpoint {
            ip: packet.src,
            port: src_port,
            mac: packet.src_mac,
        };
        let receiver = Endpoint {
            ip: packet.dst,
            port: dst_port,
            mac: [0; 6],
        };
        let sender_is_orig = match transport {
            Transport::Tcp => tcp::sender_is_originator(flags, src_port, dst_port),
            Transport::Icmp => matches!(
                packet.transport,
                Wire::Icmp {
                    kind: IcmpKind::Request,
                    ..
                }
            ),
            // A reply from a well-known port to an ephemeral one: the capture began mid-exchange.
            _ => !(src_port < 1024 && dst_port >= 1024),
        };
        let (mut orig, mut resp) = if sender_is_orig {
            (sender, receiver)
        } else {
            (receiver, sender)
        };
        if transport == Transport::Icmp {
            // Zeek's convention: ICMP "ports" are the request's type and code.
            let (icmp_type, code) = match packet.transport {
                Wire::Icmp {
                    icmp_type, code, ..
                } if sender_is_orig => (icmp_type, code),
                Wire::Icmp { icmp_type, .. } => (request_type_for_reply(icmp_type), 0),
                _ => (0, 0),
            };
            orig.port = u16::from(icmp_type);
            resp.port = u16::from(code);
        }
        let id = self.next_id;
        self.next_id += 1;
        Flow {
            key,
            id,
            transport,
            orig,
            resp,
            first: ts,
            last: ts,
            orig_bytes: 0,
            resp_bytes: 0,
            orig_packets: 0,
            resp_packets: 0,
            tcp: TcpState::initial(sender_is_orig, flags),
            phase: Phase::Open,
            refused: false,
            // Set by the first packet its originator sends (`observe`), which may be this one.
            attributed: false,
            picked_up: transport == Transport::Tcp && !flags.has(TcpFlags::SYN),
            sent: [None; 2],
        }
    }

    /// An ICMP unreachable: the quoted flow was refused.
    fn refuse(&mut self, ts: Timestamp, quoted: &Quoted, emit: &mut impl FnMut(Event<'static>)) {
        if quoted.protocol != 6 && quoted.protocol != 17 {
            return;
        }
        let key = FlowKey::new(
            quoted.protocol,
            (quoted.src, quoted.src_port),
            (quoted.dst, quoted.dst_port),
        );
        let Some(slot) = self.find(&key) else {
            return;
        };
        if let Some(flow) = self.slots[slot].as_mut() {
            if flow.phase == Phase::Open {
                flow.refused = true;
                flow.last = ts;
                let flow = *flow;
                self.end(slot, &flow, FlowState::Rejected, ts, emit);
            }
        }
    }

    fn end(
        &mut self,
        slot: usize,
        flow: &Flow,
        state: FlowState,
        ts: Timestamp,
        emit: &mut impl FnMut(Event<'static>),
    ) {
        self.stats.active = self.stats.active.saturating_sub(1);
        if let Some(stored) = self.slots[slot].as_mut() {
            stored.phase = Phase::Closed;
            // Lingers to absorb the last retransmissions, then is freed.
            self.wheel
                .file(slot, after(stored.last, self.config.closed_linger_secs), ts);
        }
        if !flow.attributed {
            self.stats.unsolicited += 1;
            return;
        }
        emit(event(
            flow,
            ts,
            EventKind::FlowEnd {
                orig_bytes: flow.orig_bytes,
                resp_bytes: flow.resp_bytes,
                orig_packets: flow.orig_packets,
                resp_packets: flow.resp_packets,
                duration_us: flow.last.since(flow.first),
                state,
            },
        ));
        self.stats.ended += 1;
    }
}

/// Records a TCP segment in its side's [`Sent`]: the frame's link layer, and its end in sequence
/// space unless a retransmission or reordering puts it behind what the side already sent.
fn note_sent(sent: &mut Option<Sent>, packet: &Decoded<'_>, seq: u32, flags: TcpFlags, len: usize) {
    let end = segment_end(seq, flags, len);
    let next_seq = match sent {
        // Serial number arithmetic (RFC 1982): behind means a negative distance.
        Some(previous) if (end.wrapping_sub(previous.next_seq) as i32) < 0 => previous.next_seq,
        _ => end,
    };
    *sent = Some(Sent {
        src_mac: packet.src_mac,
        dst_mac: packet.dst_mac,
        vlans: packet.vlans,
        next_seq,
    });
}

/// `secs` after `ts`.
fn after(ts: Timestamp, secs: u64) -> Timestamp {
    Timestamp(ts.micros().saturating_add(secs.saturating_mul(1_000_000)))
}

fn request_type_for_reply(reply: u8) -> u8 {
    match reply {
        0 => 8,
        14 => 13,
        129 => 128,
        other => other,
    }
}

/// How a flow that went quiet (or was evicted) ended.
fn timed_out_state(flow: &Flow) -> FlowState {
    if flow.refused {
        return FlowState::Rejected;
    }
    if flow.transport == Transport::Tcp {
        return flow.tcp.state_if_abandoned(flow.resp_packets > 0);
    }
    if flow.resp_packets > 0 {
        FlowState::Established
    } else {
        FlowState::HalfOpen
    }
}

fn event(flow: &Flow, ts: Timestamp, kind: EventKind<'static>) -> Event<'static> {
    Event {
        ts,
        flow: flow.id,
        proto: flow.transport,
        src: flow.orig,
        dst: flow.resp,
        kind,
    }
}

impl Default for FlowTable {
    fn default() -> Self {
        FlowTable::new(FlowConfig::default())
    }
}

#[cfg(test)]
mod tests;
