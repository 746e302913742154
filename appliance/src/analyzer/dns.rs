//! DNS sessions: pairs queries with responses by transaction id (UDP datagrams, or TCP messages
//! behind their 2-byte length), so one event carries the question, the rcode and the answers.

use std::collections::HashMap;

use serde_json::json;
use vigil_plugin_sdk::{EventKind, Timestamp, Transport};

use super::log::Record;
use super::{framed, Progress, Protocol, Report, MAX_PENDING_PER_FLOW};
use crate::proto::dns;

struct Pending {
    ts: Timestamp,
    query: String,
    qtype: u16,
}

#[derive(Default)]
pub(crate) struct Session {
    pending: HashMap<u16, Pending>,
}

/// DNS over TCP prefixes each message with its length (RFC 1035 §4.2.2).
fn tcp_frame_len(buf: &[u8]) -> Result<Option<usize>, &'static str> {
    Ok(buf
        .get(..2)
        .map(|b| 2 + usize::from(u16::from_be_bytes([b[0], b[1]]))))
}

impl Session {
    pub fn stream(&mut self, data: &[u8], report: &mut Report<'_>) -> Progress {
        framed(data, usize::MAX, tcp_frame_len, |frame| {
            self.message(&frame[2..], report);
        })
    }

    pub fn message(&mut self, payload: &[u8], report: &mut Report<'_>) {
        let parsed = dns::Message::new_checked(payload).and_then(|m| dns::Repr::parse(&m));
        let repr = match parsed {
            Ok(Some(repr)) => repr,
            Ok(None) => return,
            Err(err) => return report.error(err.name()),
        };
        if !repr.response {
            if self.pending.len() < MAX_PENDING_PER_FLOW {
                let pending = Pending {
                    ts: report.ts,
                    query: repr.query,
                    qtype: repr.qtype,
                };
                self.pending.insert(repr.id, pending);
            } else {
                report.error("too_many_pending");
            }
            return;
        }
        // A response whose query was not seen still says what was asked.
        let pending = self.pending.remove(&repr.id).unwrap_or(Pending {
            ts: report.ts,
            query: repr.query.clone(),
            qtype: repr.qtype,
        });
        emit(report, repr.id, &pending, Some(repr.rcode), &repr.answers);
    }

    /// Queries that never got an answer are reported unanswered.
    pub fn ended(&mut self, report: &mut Report<'_>) {
        for (id, pending) in std::mem::take(&mut self.pending) {
            emit(report, id, &pending, None, &[]);
        }
    }
}

fn emit(report: &mut Report<'_>, id: u16, query: &Pending, rcode: Option<u8>, answers: &[String]) {
    report.event(
        query.ts,
        EventKind::Dns {
            query: &query.query,
            qtype: query.qtype,
            rcode,
            answers: answers.iter().map(String::as_str).collect(),
        },
    );
    let logged = Logged {
        id,
        query: &query.query,
        qtype: query.qtype,
        qtype_name: dns::qtype_name(query.qtype),
        rcode,
        answers,
    };
    let (protocol, transport) = (report.protocol, report.observed.transport);
    report.log("dns", query.ts, |record| {
        logged.fill(protocol, transport, record)
    });
}

/// One line of the `dns` log, which DNS and the local name protocols share.
pub(super) struct Logged<'a> {
    pub id: u16,
    pub query: &'a str,
    pub qtype: u16,
    pub qtype_name: String,
    pub rcode: Option<u8>,
    pub answers: &'a [String],
}

impl Logged<'_> {
    pub fn fill(&self, protocol: Protocol, transport: Transport, record: &mut Record) {
        record.insert("proto".into(), json!(transport.name().to_lowercase()));
        // Zeek's `proto` is the transport; which name protocol it was is ours to add.
        record.insert("protocol".into(), json!(protocol.name()));
        record.insert("trans_id".into(), json!(self.id));
        record.insert("query".into(), json!(self.query));
        record.insert("qtype".into(), json!(self.qtype));
        record.insert("qtype_name".into(), json!(self.qtype_name));
        if let Some(rcode) = self.rcode {
            record.insert("rcode".into(), json!(rcode));
            record.insert("rcode_name".into(), json!(dns::rcode_name(rcode)));
        }
        record.insert("answers".into(), json!(self.answers));
    }
}
