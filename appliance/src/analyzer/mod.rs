//! From flows to application events: picks each flow's protocol, feeds its reassembled streams
//! (or datagrams) to the parsers in `proto`, pairs requests with responses, and emits the events
//! plugins see and the records of the protocol logs.

mod log;

use std::collections::HashMap;

use vigil_plugin_sdk::{Event, EventKind, Timestamp, Transport as Proto};

use crate::decode::{Decoded, TcpFlags, Transport};
use crate::flow::{Direction, Observed};
use crate::proto::{dns, http};
use crate::stream::{StreamConfig, StreamTable};

pub use log::ProtocolLogs;

/// Bounds on what one flow may keep waiting for a response.
const MAX_PENDING_PER_FLOW: usize = 64;
/// Longest HTTP head buffered before it counts as hostile.
const MAX_HTTP_HEAD: usize = 64 * 1024;

/// The application protocol a flow carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Dns,
    Http,
    Unknown,
}

impl Protocol {
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Dns => "dns",
            Protocol::Http => "http",
            Protocol::Unknown => "unknown",
        }
    }
}

/// Parse errors by protocol and reason, for the summary and metrics.
pub type ErrorCounts = std::collections::BTreeMap<(&'static str, &'static str), u64>;

struct PendingDns {
    ts: Timestamp,
    query: String,
    qtype: u16,
}

#[derive(Default)]
struct FlowState {
    protocol: Option<Protocol>,
    dns: HashMap<u16, PendingDns>,
    http: std::collections::VecDeque<(Timestamp, http::Request)>,
    /// Body bytes still to skip in each direction.
    http_body: [usize; 2],
}

pub struct Analyzer {
    streams: StreamTable,
    flows: HashMap<u64, FlowState>,
    errors: ErrorCounts,
    logs: Option<ProtocolLogs>,
}

/// The event an analyzer hands up, already bound to a flow.
fn app_event<'a>(ts: Timestamp, observed: &Observed, kind: EventKind<'a>) -> Event<'a> {
    Event {
        ts,
        flow: observed.flow,
        proto: observed.transport,
        src: observed.orig,
        dst: observed.resp,
        kind,
    }
}

impl Analyzer {
    pub fn new(streams: StreamConfig, logs: Option<ProtocolLogs>) -> Analyzer {
        Analyzer {
            streams: StreamTable::new(streams),
            flows: HashMap::new(),
            errors: ErrorCounts::new(),
            logs,
        }
    }

    pub fn errors(&self) -> &ErrorCounts {
        &self.errors
    }

    pub fn stream_stats(&self) -> crate::stream::StreamStats {
        self.streams.stats()
    }

    fn error(&mut self, protocol: Protocol, reason: &'static str) {
        *self.errors.entry((protocol.name(), reason)).or_default() += 1;
    }

    /// Takes one packet of a tracked flow.
    pub fn packet(
        &mut self,
        ts: Timestamp,
        packet: &Decoded<'_>,
        observed: &Observed,
        emit: &mut impl FnMut(&Event<'_>),
    ) {
        let from_orig = observed.direction == Direction::FromOriginator;
        match packet.transport {
            Transport::Udp { payload, .. }
                if !payload.is_empty() && classify_port(observed) == Protocol::Dns =>
            {
                self.dns_message(ts, observed, payload, emit);
            }
            Transport::Tcp {
                flags,
                seq,
                payload,
                ..
            } => {
                let state = self.flows.entry(observed.flow).or_default();
                if state.protocol.is_none() && !payload.is_empty() {
                    let by_port = classify_port(observed);
                    state.protocol = Some(if by_port != Protocol::Unknown {
                        by_port
                    } else if from_orig && http::looks_like_request(payload) {
                        Protocol::Http
                    } else {
                        Protocol::Unknown
                    });
                }
                let protocol = state.protocol.unwrap_or(Protocol::Unknown);
                if protocol == Protocol::Unknown && !payload.is_empty() {
                    return;
                }
                let syn = flags.has(TcpFlags::SYN);
                if self
                    .streams
                    .segment(observed.flow, from_orig, syn, seq, payload)
                    .is_some()
                {
                    self.stream_data(ts, observed, protocol, from_orig, emit);
                }
            }
            _ => {}
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
        let Some(state) = self.flows.remove(&event.flow) else {
            return;
        };
        let observed = Observed {
            flow: event.flow,
            orig: event.src,
            resp: event.dst,
            transport: event.proto,
            direction: Direction::FromOriginator,
        };
        for (id, pending) in state.dns {
            self.report_dns(pending.ts.min(ts), &observed, id, &pending, None, &[], emit);
        }
        for (request_ts, request) in state.http {
            self.report_http(request_ts, &observed, &request, None, emit);
        }
    }

    fn stream_data(
        &mut self,
        ts: Timestamp,
        observed: &Observed,
        protocol: Protocol,
        from_orig: bool,
        emit: &mut impl FnMut(&Event<'_>),
    ) {
        if self.streams.take_desync(observed.flow, from_orig) {
            self.error(protocol, "stream_gap");
        }
        match protocol {
            Protocol::Dns => self.dns_over_tcp(ts, observed, from_orig, emit),
            Protocol::Http => self.http_stream(ts, observed, from_orig, emit),
            Protocol::Unknown => {}
        }
    }

    fn dns_over_tcp(
        &mut self,
        ts: Timestamp,
        observed: &Observed,
        from_orig: bool,
        emit: &mut impl FnMut(&Event<'_>),
    ) {
        loop {
            let data = self.streams.data(observed.flow, from_orig);
            let Some(len) = data
                .get(..2)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            else {
                return;
            };
            let Some(message) = data.get(2..2 + len).map(<[u8]>::to_vec) else {
                return;
            };
            self.streams.consume(observed.flow, from_orig, 2 + len);
            self.dns_message(ts, observed, &message, emit);
        }
    }

    fn dns_message(
        &mut self,
        ts: Timestamp,
        observed: &Observed,
        payload: &[u8],
        emit: &mut impl FnMut(&Event<'_>),
    ) {
        let parsed = dns::Message::new_checked(payload).and_then(|m| dns::Repr::parse(&m));
        let repr = match parsed {
            Ok(Some(repr)) => repr,
            Ok(None) => return,
            Err(err) => return self.error(Protocol::Dns, err.name()),
        };
        let state = self.flows.entry(observed.flow).or_default();
        if !repr.response {
            if state.dns.len() < MAX_PENDING_PER_FLOW {
                state.dns.insert(
                    repr.id,
                    PendingDns {
                        ts,
                        query: repr.query,
                        qtype: repr.qtype,
                    },
                );
            } else {
                self.error(Protocol::Dns, "too_many_pending");
            }
            return;
        }
        let pending = state.dns.remove(&repr.id).unwrap_or(PendingDns {
            ts,
            query: repr.query.clone(),
            qtype: repr.qtype,
        });
        self.report_dns(
            pending.ts,
            observed,
            repr.id,
            &pending,
            Some(repr.rcode),
            &repr.answers,
            emit,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn report_dns(
        &mut self,
        ts: Timestamp,
        observed: &Observed,
        id: u16,
        query: &PendingDns,
        rcode: Option<u8>,
        answers: &[String],
        emit: &mut impl FnMut(&Event<'_>),
    ) {
        let event = app_event(
            ts,
            observed,
            EventKind::Dns {
                query: &query.query,
                qtype: query.qtype,
                rcode,
                answers: answers.iter().map(String::as_str).collect(),
            },
        );
        emit(&event);
        if let Some(logs) = self.logs.as_mut() {
            logs.dns(&event, id);
        }
    }

    fn http_stream(
        &mut self,
        ts: Timestamp,
        observed: &Observed,
        from_orig: bool,
        emit: &mut impl FnMut(&Event<'_>),
    ) {
        let side = usize::from(!from_orig);
        loop {
            // Skip a body first.
            let skip = self
                .flows
                .get(&observed.flow)
                .map_or(0, |s| s.http_body[side]);
            if skip > 0 {
                let available = self.streams.data(observed.flow, from_orig).len();
                let n = skip.min(available);
                self.streams.consume(observed.flow, from_orig, n);
                if let Some(state) = self.flows.get_mut(&observed.flow) {
                    state.http_body[side] -= n;
                }
                if n < skip {
                    return;
                }
            }
            let data = self.streams.data(observed.flow, from_orig);
            if data.is_empty() {
                return;
            }
            if from_orig {
                match http::parse_request(data, MAX_HTTP_HEAD) {
                    Ok(http::Parsed::Complete(request, used)) => {
                        self.streams.consume(observed.flow, from_orig, used);
                        let state = self.flows.entry(observed.flow).or_default();
                        state.http_body[side] = request.body_len;
                        if state.http.len() < MAX_PENDING_PER_FLOW {
                            state.http.push_back((ts, request));
                        } else {
                            self.error(Protocol::Http, "too_many_pending");
                        }
                    }
                    Ok(http::Parsed::Partial) => return,
                    Err(err) => return self.http_failed(observed, from_orig, err),
                }
            } else {
                match http::parse_response(data, MAX_HTTP_HEAD) {
                    Ok(http::Parsed::Complete(response, used)) => {
                        self.streams.consume(observed.flow, from_orig, used);
                        let state = self.flows.entry(observed.flow).or_default();
                        // A body of unknown length runs to the end of the connection.
                        state.http_body[side] = response.body_len.unwrap_or(usize::MAX);
                        if let Some((request_ts, request)) = state.http.pop_front() {
                            self.report_http(
                                request_ts,
                                observed,
                                &request,
                                Some(response.status),
                                emit,
                            );
                        }
                    }
                    Ok(http::Parsed::Partial) => return,
                    Err(err) => return self.http_failed(observed, from_orig, err),
                }
            }
        }
    }

    fn http_failed(&mut self, observed: &Observed, from_orig: bool, err: http::Error) {
        self.error(Protocol::Http, err.name());
        // Drop what cannot be parsed; a later message may still be.
        let len = self.streams.data(observed.flow, from_orig).len();
        self.streams.consume(observed.flow, from_orig, len);
    }

    fn report_http(
        &mut self,
        ts: Timestamp,
        observed: &Observed,
        request: &http::Request,
        status: Option<u16>,
        emit: &mut impl FnMut(&Event<'_>),
    ) {
        let event = app_event(
            ts,
            observed,
            EventKind::Http {
                method: &request.method,
                uri: &request.uri_decoded,
                uri_raw: &request.uri,
                host: request.host.as_deref(),
                user_agent: request.user_agent.as_deref(),
                status,
            },
        );
        emit(&event);
        if let Some(logs) = self.logs.as_mut() {
            logs.http(&event);
        }
    }

    pub fn flush_logs(&mut self) -> std::io::Result<()> {
        self.logs.as_mut().map_or(Ok(()), ProtocolLogs::flush)
    }
}

/// The protocol a flow's responder port says it speaks.
fn classify_port(observed: &Observed) -> Protocol {
    match (observed.transport, observed.resp.port) {
        (Proto::Udp | Proto::Tcp, 53) | (Proto::Udp, 5353) => Protocol::Dns,
        (Proto::Tcp, 80 | 8000 | 8080) => Protocol::Http,
        _ => Protocol::Unknown,
    }
}
