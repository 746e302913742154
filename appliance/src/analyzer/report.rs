//! Where a protocol handler's results go: events to the plugins, records to the protocol logs,
//! and the per-protocol counters the summary shows.

use std::collections::BTreeMap;

use vigil_plugin_sdk::{Event, EventKind, Timestamp};

use serde_json::json;

use super::log::Record;
use super::{LogOutbox, Protocol, Resyncs, Traffic};
use crate::flow::{Direction, Observed};

/// Counters by (protocol, reason or outcome).
pub type Counts = BTreeMap<(&'static str, &'static str), u64>;

/// What the analyzer counts as its sessions report: parse errors, outcomes, and flows, records
/// and resynchronisations per protocol (indexed by `Protocol as usize`).
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    pub errors: Counts,
    pub counts: Counts,
    pub traffic: [Traffic; Protocol::ALL.len()],
    pub resyncs: [Resyncs; Protocol::ALL.len()],
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        for (key, n) in &other.errors {
            *self.errors.entry(*key).or_default() += n;
        }
        for (key, n) in &other.counts {
            *self.counts.entry(*key).or_default() += n;
        }
        for (mine, theirs) in self.traffic.iter_mut().zip(&other.traffic) {
            mine.flows += theirs.flows;
            mine.records += theirs.records;
        }
        for (mine, theirs) in self.resyncs.iter_mut().zip(&other.resyncs) {
            mine.found += theirs.found;
            mine.skipped_bytes += theirs.skipped_bytes;
        }
    }
}

pub(crate) struct Report<'r> {
    /// Packet time of what is being parsed.
    pub ts: Timestamp,
    pub observed: Observed,
    pub protocol: Protocol,
    emit: &'r mut dyn FnMut(&Event<'_>),
    logs: Option<&'r mut LogOutbox>,
    tally: &'r mut Tally,
}

impl<'r> Report<'r> {
    pub fn new(
        ts: Timestamp,
        observed: Observed,
        protocol: Protocol,
        emit: &'r mut dyn FnMut(&Event<'_>),
        logs: Option<&'r mut LogOutbox>,
        tally: &'r mut Tally,
    ) -> Report<'r> {
        Report {
            ts,
            observed,
            protocol,
            emit,
            logs,
            tally,
        }
    }

    /// A parse error or a protocol violation, counted by reason.
    pub fn error(&mut self, reason: &'static str) {
        *self
            .tally
            .errors
            .entry((self.protocol.name(), reason))
            .or_default() += 1;
    }

    /// A stream that lost its place found a message start again.
    pub fn resync_found(&mut self) {
        self.tally.resyncs[self.protocol as usize].found += 1;
    }

    /// Bytes passed over while looking for a message start.
    pub fn resync_skipped(&mut self, bytes: usize) {
        self.tally.resyncs[self.protocol as usize].skipped_bytes += bytes as u64;
    }

    /// Something worth a line in the summary (e.g. SMB logon failures).
    pub fn count(&mut self, what: &'static str) {
        *self
            .tally
            .counts
            .entry((self.protocol.name(), what))
            .or_default() += 1;
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
        self.tally.traffic[self.protocol as usize].records += 1;
        (self.emit)(&event);
        event
    }

    /// Like [`Report::log`], for a record that goes to no plugin: it still counts as one the
    /// protocol made (see [`super::Analyzer::silent_protocols`]).
    pub fn log_without_event(
        &mut self,
        log: &'static str,
        ts: Timestamp,
        fill: impl FnOnce(&mut Record),
    ) {
        self.tally.traffic[self.protocol as usize].records += 1;
        self.log(log, ts, fill);
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
