//! From flows to application events: picks each flow's protocol (by port, or by content where a
//! protocol turns up elsewhere), feeds its reassembled streams or its datagrams to that
//! protocol's session, and passes on the events plugins see and the protocol log records.
//!
//! Each protocol has one module here holding its per-flow session (request/response pairing,
//! NTLM exchanges); the byte-level parsers live in [`crate::proto`].

mod dcerpc;
mod dns;
mod http;
mod kerberos;
mod ldap;
mod local_names;
mod log;
mod ntlm;
mod rdp;
mod report;
mod smb;

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use vigil_plugin_sdk::{Event, Timestamp, Transport as Proto};

use crate::decode::{Decoded, TcpFlags, Transport};
use crate::flow::{Direction, Observed};
use crate::proto::local_names::LocalNames;
use crate::proto::{self, Boundary};
use crate::stream::{StreamConfig, StreamTable};

pub use log::{LogOutbox, ProtocolLogs, Record};
pub use report::Counts;
use report::{Report, Tally};

/// Parse errors by protocol and reason, for the summary and metrics.
pub type ErrorCounts = Counts;

/// Requests one flow may keep waiting for their responses; past it they are counted and dropped.
const MAX_PENDING_PER_FLOW: usize = 64;

/// The application protocol a flow carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Dns,
    Http,
    Smb,
    Ntlm,
    Ldap,
    Kerberos,
    Rdp,
    DceRpc,
    /// The local name protocols (see [`LocalNames`]), logged with DNS.
    Mdns,
    Llmnr,
    Nbns,
    Unknown,
}

impl Protocol {
    pub const ALL: [Protocol; 12] = [
        Protocol::Dns,
        Protocol::Http,
        Protocol::Smb,
        Protocol::Ntlm,
        Protocol::Ldap,
        Protocol::Kerberos,
        Protocol::Rdp,
        Protocol::DceRpc,
        Protocol::Mdns,
        Protocol::Llmnr,
        Protocol::Nbns,
        Protocol::Unknown,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Dns => "dns",
            Protocol::Http => "http",
            Protocol::Smb => "smb",
            Protocol::Ntlm => "ntlm",
            Protocol::Ldap => "ldap",
            Protocol::Kerberos => "kerberos",
            Protocol::Rdp => "rdp",
            Protocol::DceRpc => "dce_rpc",
            Protocol::Mdns => "mdns",
            Protocol::Llmnr => "llmnr",
            Protocol::Nbns => "nbns",
            Protocol::Unknown => "unknown",
        }
    }

    /// The protocol a flow's responder port says it speaks; for the local name protocols
    /// either port, as their answers often start a flow of their own from the service port.
    fn by_port(observed: &Observed) -> Protocol {
        if observed.transport == Proto::Udp {
            match LocalNames::of_udp_ports(observed.orig.port, observed.resp.port) {
                Some(LocalNames::Mdns) => return Protocol::Mdns,
                Some(LocalNames::Llmnr) => return Protocol::Llmnr,
                Some(LocalNames::Nbns) => return Protocol::Nbns,
                None => {}
            }
        }
        match (observed.transport, observed.resp.port) {
            (Proto::Udp | Proto::Tcp, 53) => Protocol::Dns,
            (Proto::Tcp, 80 | 8000 | 8080) => Protocol::Http,
            (Proto::Tcp, 445 | 139) => Protocol::Smb,
            (Proto::Tcp, 389 | 3268) => Protocol::Ldap,
            (Proto::Udp | Proto::Tcp, 88) => Protocol::Kerberos,
            (Proto::Tcp, 3389) => Protocol::Rdp,
            (Proto::Tcp, 135) => Protocol::DceRpc,
            _ => Protocol::Unknown,
        }
    }

    /// The protocol a flow's first payload looks like, for unusual ports.
    fn by_content(transport: Proto, first: &[u8]) -> Protocol {
        if transport == Proto::Udp {
            return if proto::dns::looks_like_dns(first) {
                Protocol::Dns
            } else {
                Protocol::Unknown
            };
        }
        if proto::http::looks_like_request(first) {
            Protocol::Http
        } else if proto::smb2::looks_like_smb(first) {
            Protocol::Smb
        } else if proto::dcerpc::looks_like_bind(first) {
            Protocol::DceRpc
        } else {
            Protocol::Unknown
        }
    }
}

/// What a session did with the stream bytes it was offered.
pub(crate) enum Progress {
    /// `used` bytes from the front were parsed; the next `skip` bytes to arrive are dropped
    /// unread (message bodies, frames too large to keep).
    Used { used: usize, skip: usize },
    /// The stream cannot be cut here (a framing error) after `used` bytes were parsed: the
    /// protocol looks for its next message, or, when it cannot, ignores the rest of the
    /// direction.
    Lost { used: usize, reason: &'static str },
}

/// Cuts whole frames off the front of `data` with `frame_len` and hands each to `each`. A frame
/// longer than `max_frame` is skipped unread, as is everything once the framing breaks.
pub(crate) fn framed(
    data: &[u8],
    max_frame: usize,
    frame_len: impl Fn(&[u8]) -> Result<Option<usize>, &'static str>,
    mut each: impl FnMut(&[u8]),
) -> Progress {
    let mut used = 0;
    loop {
        let rest = &data[used..];
        match frame_len(rest) {
            Err(reason) => return Progress::Lost { used, reason },
            Ok(Some(0)) => {
                return Progress::Lost {
                    used,
                    reason: "empty_frame",
                }
            }
            Ok(Some(len)) if len > max_frame => {
                let here = len.min(rest.len());
                return Progress::Used {
                    used: used + here,
                    skip: len - here,
                };
            }
            Ok(Some(len)) if len <= rest.len() => {
                each(&rest[..len]);
                used += len;
            }
            Ok(_) => return Progress::Used { used, skip: 0 },
        }
    }
}

/// One flow's parser state, chosen with its protocol.
enum Session {
    Dns(dns::Session),
    Http(http::Session),
    Smb(smb::Session),
    Ldap(ldap::Session),
    Kerberos(kerberos::Session),
    Rdp(rdp::Session),
    DceRpc(dcerpc::Session),
    /// Each datagram stands alone: no pairing (see [`local_names`]).
    LocalNames,
    /// Not a protocol parsed here: its bytes are not kept.
    Ignored,
}

impl Session {
    fn new(protocol: Protocol) -> Session {
        match protocol {
            Protocol::Dns => Session::Dns(dns::Session::default()),
            Protocol::Http => Session::Http(http::Session::default()),
            Protocol::Smb => Session::Smb(smb::Session::default()),
            Protocol::Ldap => Session::Ldap(ldap::Session::default()),
            Protocol::Kerberos => Session::Kerberos(kerberos::Session::default()),
            Protocol::Rdp => Session::Rdp(rdp::Session::default()),
            Protocol::DceRpc => Session::DceRpc(dcerpc::Session::default()),
            Protocol::Mdns | Protocol::Llmnr | Protocol::Nbns => Session::LocalNames,
            Protocol::Ntlm | Protocol::Unknown => Session::Ignored,
        }
    }

    fn stream(&mut self, data: &[u8], max_frame: usize, report: &mut Report<'_>) -> Progress {
        match self {
            Session::Dns(s) => s.stream(data, report),
            Session::Http(s) => s.stream(data, report),
            Session::Smb(s) => s.stream(data, max_frame, report),
            Session::Ldap(s) => s.stream(data, max_frame, report),
            Session::Kerberos(s) => s.stream(data, max_frame, report),
            Session::Rdp(s) => s.stream(data, report),
            Session::DceRpc(s) => s.stream(data, max_frame, report),
            Session::LocalNames | Session::Ignored => Progress::Used {
                used: data.len(),
                skip: 0,
            },
        }
    }

    /// How the protocol finds the next message in a stream that lost its place (picked up
    /// mid-connection, after a gap or a framing error); `None` when it cannot: DNS and Kerberos
    /// lengths carry no marker to find, and RDP is encrypted after its first message.
    fn next_message(&self, from_originator: bool) -> Option<fn(&[u8]) -> Boundary> {
        match self {
            Session::Http(_) if from_originator => Some(proto::http::next_request),
            Session::Http(_) => Some(proto::http::next_response),
            Session::Smb(_) => Some(proto::smb2::next_message),
            Session::Ldap(_) => Some(proto::ldap::next_message),
            Session::DceRpc(_) => Some(proto::dcerpc::next_message),
            _ => None,
        }
    }

    fn datagram(&mut self, payload: &[u8], report: &mut Report<'_>) {
        match self {
            Session::Dns(s) => s.message(payload, report),
            Session::Kerberos(s) => s.message(payload, report),
            Session::LocalNames => local_names::datagram(payload, report),
            _ => {}
        }
    }

    fn ended(&mut self, report: &mut Report<'_>) {
        match self {
            Session::Dns(s) => s.ended(report),
            Session::Http(s) => s.ended(report),
            Session::Smb(s) => s.ended(report),
            Session::Ldap(s) => s.ended(report),
            Session::Kerberos(s) => s.ended(report),
            Session::Rdp(s) => s.ended(report),
            Session::DceRpc(s) => s.ended(report),
            Session::LocalNames | Session::Ignored => {}
        }
    }
}

struct FlowState {
    protocol: Protocol,
    session: Session,
    /// Bytes still to drop unread in each direction (originator first).
    skip: [usize; 2],
    /// A direction whose framing broke, in a protocol that cannot find its place again, is no
    /// longer parsed.
    lost: [bool; 2],
    /// A direction not known to be at a message boundary: its parser looks for the next one.
    hunting: [bool; 2],
    /// The connection's SYN was not seen: its log records say so.
    picked_up: bool,
}

/// Per protocol: streams that lost their place (picked up mid-connection, after a gap or a
/// framing error) and found a message start again, and the bytes passed over to find it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resyncs {
    pub found: u64,
    pub skipped_bytes: u64,
}

/// Per protocol: flows given to it (on its ports or recognised by content, with payload) and
/// the events its sessions produced, so a protocol that saw traffic and made nothing of it is
/// told ([`Analyzer::silent_protocols`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub flows: u64,
    pub records: u64,
}

pub struct Analyzer {
    streams: StreamTable,
    /// Largest message kept whole for parsing: what one direction's stream buffer can hold.
    max_frame: usize,
    flows: HashMap<u64, FlowState>,
    tally: Tally,
    /// Protocol log lines not yet taken (when logs are kept).
    logs: Option<LogOutbox>,
}

/// What analyzers counted, one or several added together (a sharded capture has one analyzer
/// per shard): for the summary and the metrics.
#[derive(Debug, Default, Clone)]
pub struct Analysis {
    tally: Tally,
    streams: crate::stream::StreamStats,
}

impl Analysis {
    /// Adds what `analyzer` counted.
    pub fn add(&mut self, analyzer: &Analyzer) {
        self.tally.add(&analyzer.tally);
        self.streams += analyzer.streams.stats();
    }

    /// Flows and records per protocol, for protocols that saw any flow.
    pub fn traffic(&self) -> impl Iterator<Item = (Protocol, Traffic)> + '_ {
        Protocol::ALL
            .iter()
            .map(|p| (*p, self.tally.traffic[*p as usize]))
            .filter(|(_, t)| t.flows > 0)
    }

    /// Protocols that were given flows and produced no record at all: traffic Vigil could not
    /// read (another protocol on its port, a dialect or a capture cut it does not parse).
    pub fn silent_protocols(&self) -> impl Iterator<Item = (Protocol, Traffic)> + '_ {
        self.traffic().filter(|(_, t)| t.records == 0)
    }

    /// Resynchronisations, for protocols that had any.
    pub fn resyncs(&self) -> impl Iterator<Item = (Protocol, Resyncs)> + '_ {
        Protocol::ALL
            .iter()
            .map(|p| (*p, self.tally.resyncs[*p as usize]))
            .filter(|(_, r)| *r != Resyncs::default())
    }

    /// Parse errors by protocol and reason.
    pub fn errors(&self) -> &Counts {
        &self.tally.errors
    }

    /// Outcomes worth a summary line, by protocol (e.g. `("smb", "logon_failure")`).
    pub fn counts(&self) -> &Counts {
        &self.tally.counts
    }

    pub fn stream_stats(&self) -> crate::stream::StreamStats {
        self.streams
    }
}

impl Analyzer {
    /// `keep_logs`: collect protocol log lines for [`Analyzer::logs`] to take.
    pub fn new(streams: StreamConfig, keep_logs: bool) -> Analyzer {
        Analyzer {
            max_frame: streams.max_direction_bytes,
            streams: StreamTable::new(streams),
            flows: HashMap::new(),
            tally: Tally::default(),
            logs: keep_logs.then(LogOutbox::default),
        }
    }

    /// What this analyzer counted.
    pub fn analysis(&self) -> Analysis {
        let mut analysis = Analysis::default();
        analysis.add(self);
        analysis
    }

    /// The protocol log lines produced since they were last taken (none unless kept).
    pub fn logs(&mut self) -> Option<&mut LogOutbox> {
        self.logs.as_mut()
    }

    /// Takes one packet of a tracked flow.
    pub fn packet(
        &mut self,
        ts: Timestamp,
        packet: &Decoded<'_>,
        observed: &Observed,
        emit: &mut impl FnMut(&Event<'_>),
    ) {
        match packet.transport {
            Transport::Udp { payload, .. } if !payload.is_empty() => {
                let Some(state) =
                    Self::state(&mut self.flows, &mut self.tally.traffic, observed, payload)
                else {
                    return;
                };
                if state.protocol == Protocol::Unknown {
                    return;
                }
                let mut report = Report::new(
                    ts,
                    *observed,
                    state.protocol,
                    emit,
                    self.logs.as_mut(),
                    &mut self.tally,
                );
                state.session.datagram(payload, &mut report);
            }
            Transport::Tcp {
                flags,
                seq,
                ack,
                payload,
                ..
            } => {
                let syn = flags.has(TcpFlags::SYN);
                // Scans are mostly SYNs: no state until there is something to parse, except
                // the initial sequence number of a connection to a port we parse.
                if payload.is_empty() && !self.flows.contains_key(&observed.flow) {
                    if syn && Protocol::by_port(observed) != Protocol::Unknown {
                        let from_orig = observed.direction == Direction::FromOriginator;
                        self.streams
                            .segment(observed.flow, from_orig, syn, seq, payload);
                    }
                    return;
                }
                let Some(state) =
                    Self::state(&mut self.flows, &mut self.tally.traffic, observed, payload)
                else {
                    return;
                };
                if state.protocol == Protocol::Unknown {
                    return;
                }
                let protocol = state.protocol;
                let from_orig = observed.direction == Direction::FromOriginator;
                if self
                    .streams
                    .segment(observed.flow, from_orig, syn, seq, payload)
                    .is_some()
                {
                    self.stream_data(ts, observed, protocol, emit);
                }
                if flags.has(TcpFlags::ACK) && self.streams.acked(observed.flow, from_orig, ack) {
                    let other = Observed {
                        direction: if from_orig {
                            Direction::FromResponder
                        } else {
                            Direction::FromOriginator
                        },
                        ..*observed
                    };
                    self.stream_data(ts, &other, protocol, emit);
                }
            }
            _ => {}
        }
    }

    /// The flow's state, created on its first payload: `None` when the flow is not worth any.
    fn state<'f>(
        flows: &'f mut HashMap<u64, FlowState>,
        traffic: &mut [Traffic; Protocol::ALL.len()],
        observed: &Observed,
        payload: &[u8],
    ) -> Option<&'f mut FlowState> {
        match flows.entry(observed.flow) {
            Entry::Occupied(entry) => Some(entry.into_mut()),
            Entry::Vacant(entry) => {
                let by_port = Protocol::by_port(observed);
                let protocol = if by_port != Protocol::Unknown {
                    by_port
                } else if matches!(observed.transport, Proto::Tcp | Proto::Udp) {
                    // Either direction: a capture that starts mid-connection leaves the flow
                    // table to guess which side opened it.
                    Protocol::by_content(observed.transport, payload)
                } else {
                    return None;
                };
                if protocol != Protocol::Unknown {
                    traffic[protocol as usize].flows += 1;
                }
                // Unknown flows keep a marker so later packets are not classified anew.
                Some(entry.insert(FlowState {
                    protocol,
                    session: Session::new(protocol),
                    skip: [0; 2],
                    lost: [false; 2],
                    // Picked up mid-connection, either stream may begin inside a message.
                    hunting: [observed.picked_up; 2],
                    picked_up: observed.picked_up,
                }))
            }
        }
    }

    /// Feeds what the stream has in order to the flow's session.
    fn stream_data(
        &mut self,
        ts: Timestamp,
        observed: &Observed,
        protocol: Protocol,
        emit: &mut impl FnMut(&Event<'_>),
    ) {
        let from_orig = observed.direction == Direction::FromOriginator;
        let side = usize::from(!from_orig);
        let Some(state) = self.flows.get_mut(&observed.flow) else {
            return;
        };
        if self.streams.take_desync(observed.flow, from_orig) {
            *self
                .tally
                .errors
                .entry((protocol.name(), "stream_gap"))
                .or_default() += 1;
            // What a message still owed went down the gap: find the next message instead.
            if state.session.next_message(from_orig).is_some() {
                state.skip[side] = 0;
                state.hunting[side] = true;
            }
        }
        let mut report = Report::new(
            ts,
            *observed,
            protocol,
            emit,
            self.logs.as_mut(),
            &mut self.tally,
        );
        loop {
            let data = self.streams.data(observed.flow, from_orig);
            if data.is_empty() {
                return;
            }
            if state.hunting[side] {
                let Some(next_message) = state.session.next_message(from_orig) else {
                    state.hunting[side] = false;
                    continue;
                };
                let skipped = match next_message(data) {
                    Boundary::At(at) => {
                        report.resync_found();
                        state.hunting[side] = false;
                        at
                    }
                    Boundary::NotYet { discard: 0 } => return,
                    Boundary::NotYet { discard } => discard,
                };
                report.resync_skipped(skipped);
                self.streams.consume(observed.flow, from_orig, skipped);
                continue;
            }
            if state.skip[side] > 0 || state.lost[side] {
                let n = if state.lost[side] {
                    data.len()
                } else {
                    state.skip[side].min(data.len())
                };
                state.skip[side] -= n.min(state.skip[side]);
                self.streams.consume(observed.flow, from_orig, n);
                continue;
            }
            match state.session.stream(data, self.max_frame, &mut report) {
                Progress::Used { used, skip } => {
                    self.streams.consume(observed.flow, from_orig, used);
                    state.skip[side] = skip;
                    if used == 0 && skip == 0 {
                        return;
                    }
                }
                Progress::Lost { used, reason } => {
                    report.error(reason);
                    if state.session.next_message(from_orig).is_some() {
                        // The byte the framing broke on starts no message: hunting from the
                        // next one always moves on.
                        report.resync_skipped(1);
                        self.streams.consume(observed.flow, from_orig, used + 1);
                        state.hunting[side] = true;
                    } else {
                        self.streams.consume(observed.flow, from_orig, used);
                        state.lost[side] = true;
                    }
                }
            }
        }
    }

    /// The flow ended: report what never got a response, forget its state.
    pub fn flow_ended(
        &mut self,
        ts: Timestamp,
        event: &Event<'_>,
        emit: &mut impl FnMut(&Event<'_>),
    ) {
        self.streams.remove(event.flow);
        let Some(mut state) = self.flows.remove(&event.flow) else {
            return;
        };
        let observed = Observed {
            flow: event.flow,
            orig: event.src,
            resp: event.dst,
            transport: event.proto,
            direction: Direction::FromOriginator,
            // Only attributed flows reach the analyzer, or end with an event.
            attributed: true,
            attributed_now: false,
            picked_up: state.picked_up,
        };
        let mut report = Report::new(
            ts,
            observed,
            state.protocol,
            emit,
            self.logs.as_mut(),
            &mut self.tally,
        );
        state.session.ended(&mut report);
    }
}

#[cfg(test)]
mod tests;
