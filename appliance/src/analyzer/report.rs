//! Where a protocol handler's results go: events to the plugins, records to the protocol logs,
//! and the per-protocol counters the summary shows.

use std::collections::BTreeMap;

use vigil_plugin_sdk::{Event, EventKind, Timestamp};

use serde_json::json;

use super::log::Record;
use super::{Protocol, ProtocolLogs};
use crate::flow::{Direction, Observed};

/// Counters by (protocol, reason or outcome).
pub type Counts = BTreeMap<(&'static str, &'static str), u64>;

pub(crate) struct Report<'r> {
    /// Packet time of what is being parsed.
    pub ts: Timestamp,
    pub observed: Observed,
    pub protocol: Protocol,
    emit: &'r mut dyn FnMut(&Event<'_>),
    logs: Option<&'r mut ProtocolLogs>,
    errors: &'r mut Counts,
    counts: &'r mut Counts,
}

impl<'r> Report<'r> {
    pub fn new(
        ts: Timestamp,
        observed: Observed,
        protocol: Protocol,
        emit: &'r mut dyn FnMut(&Event<'_>),
        logs: Option<&'r mut ProtocolLogs>,
        errors: &'r mut Counts,
        counts: &'r mut Counts,
    ) -> Report<'r> {
        Report {
            ts,
            observed,
            protocol,
            emit,
            logs,
            errors,
            counts,
        }
    }

    /// A parse error or a protocol violation, counted by reason.
    pub fn error(&mut self, reason: &'static str) {
        *self
            .errors
            .entry((self.protocol.name(), reason))
            .or_default() += 1;
    }

    /// Something worth a line in the summary (e.g. SMB logon failures).
    pub fn count(&mut self, what: &'static str) {
        *self.counts.entry((self.protocol.name(), what)).or_default() += 1;
    }

    /// Whether the message being parsed travels from the flow's originator.
    pub fn is_from_originator(&self) -> bool {
        self.observed.direction == Direction::FromOriginator
    }

    /// Hands an event about this flow, stamped `ts`, to the plugins and returns it for the logs.
    pub fn event<'k>(&mut self, ts: Timestamp, kind: EventKind<'k>) -> Event<'k> {
        let event = Event {
            ts,
            flow: self.observed.flow,
            proto: self.observed.transport,
            src: self.observed.orig,
            dst: self.observed.resp,
            kind,
        };
        (self.emit)(&event);
        event
    }

    /// Writes one line to `DATA_DIR/proto/<log>.json` (when `--protocol-logs` asked for them):
    /// Zeek's connection fields for this flow at `ts`, then what `fill` adds.
    pub fn log(&mut self, log: &'static str, ts: Timestamp, fill: impl FnOnce(&mut Record)) {
        let Some(logs) = self.logs.as_deref_mut() else {
            return;
        };
        let observed = &self.observed;
        let mut record = Record::new();
        record.insert("ts".into(), json!(ts.secs_f64()));
        record.insert("uid".into(), json!(format!("F{}", observed.flow)));
        record.insert("id.orig_h".into(), json!(observed.orig.ip.to_string()));
        record.insert("id.orig_p".into(), json!(observed.orig.port));
        record.insert("id.resp_h".into(), json!(observed.resp.ip.to_string()));
        record.insert("id.resp_p".into(), json!(observed.resp.port));
        // Only when true, as Zeek's JSON leaves unset fields out: most connections are whole.
        if observed.picked_up {
            record.insert("partial".into(), json!(true));
        }
        fill(&mut record);
        logs.write(log, record);
    }
}
