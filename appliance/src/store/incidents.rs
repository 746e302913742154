//! `DATA_DIR/incidents.json`: the latest version of every incident the analyst wrote, as one
//! JSON array, rewritten atomically at most once a second (wall clock) while incidents change
//! and at shutdown, and read back at start so a restart continues the same incidents.
//!
//! `eve.json` gets one `event_type: "incident"` record per update instead: the incident's
//! header (id, device, score, phases, summary, counts) and the timeline entries the update added
//! (`timeline_added`, each with its `seq`), so what is written per breach is bounded whatever the
//! incident's length. A consumer rebuilds an incident from its records: the last record's header,
//! and the union of every record's `timeline_added` by `seq` (the whole timeline, every breach;
//! `incidents.json` keeps the analyst's bounded view of it).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use vigil_plugin_sdk::incident::TimelineEntry;
use vigil_plugin_sdk::Incident;

use super::eve::{eve_timestamp, identity};
use super::files::write_atomic;
use crate::devices::Device;
use crate::host::EmittedIncident;

/// How often `incidents.json` is rewritten while incidents change.
const REWRITE_EVERY: Duration = Duration::from_secs(1);
/// Incidents whose written timeline is remembered; past it the memory is dropped, and an old
/// incident's next record repeats its kept entries (a consumer keys them by `seq`).
const MAX_TRACKED: usize = 65_536;

pub struct IncidentFile {
    path: PathBuf,
    /// By incident id, as read back or last written.
    incidents: BTreeMap<u64, Value>,
    /// Changed since the last rewrite, by id: the header and the analyst's timeline, made JSON
    /// only when the file is rewritten (an incident can change with every breach, the file only
    /// once a second, and turning a long timeline into JSON on every change dominated replays).
    changed: BTreeMap<u64, (Map<String, Value>, Arc<Incident>)>,
    written_at: Option<Instant>,
    /// The last rewrite failed: the next one is due even with no change.
    unsaved: bool,
    /// Per incident: the highest timeline `seq` already written to eve.json.
    written_seq: HashMap<u64, u32>,
}

impl IncidentFile {
    /// Opens the data dir's incidents; a file that cannot be read is kept aside, not lost.
    pub fn open(data_dir: &Path) -> io::Result<IncidentFile> {
        let path = data_dir.join("incidents.json");
        let mut incidents = BTreeMap::new();
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Vec<Value>>(&bytes) {
                Ok(list) => {
                    for incident in list {
                        if let Some(id) = incident["id"].as_u64() {
                            incidents.insert(id, incident);
                        }
                    }
                }
                Err(err) => super::health::set_aside(
                    &path,
                    &err.to_string(),
                    Some("incidents continue from their records in eve.json".into()),
                ),
            },
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => super::health::set_aside(
                &path,
                &err.to_string(),
                Some("incidents continue from their records in eve.json".into()),
            ),
        }
        Ok(IncidentFile {
            path,
            incidents,
            changed: BTreeMap::new(),
            written_at: None,
            unsaved: false,
            written_seq: HashMap::new(),
        })
    }

    /// Takes in a new version of an incident; returns its eve.json record: the header and the
    /// timeline entries not written before.
    pub fn update(&mut self, emitted: &EmittedIncident, device: Option<&Device>) -> Value {
        let i = &emitted.incident;
        let header = incident_header(emitted, device);
        let mut record = header.clone();
        self.changed
            .insert(i.id, (header, Arc::clone(&emitted.incident)));
        if self.written_seq.len() >= MAX_TRACKED && !self.written_seq.contains_key(&i.id) {
            self.written_seq.clear();
        }
        let written = self.written_seq.entry(i.id).or_insert(0);
        record.insert(
            "timeline_added".into(),
            i.timeline
                .iter()
                .filter(|t| t.seq > *written)
                .map(|t| timeline_entry(t))
                .collect(),
        );
        *written = i.timeline.iter().map(|t| t.seq).fold(*written, u32::max);
        Value::Object(record)
    }

    /// Rewrites the file if incidents changed and the last rewrite is a second old.
    pub fn flush_due(&mut self) {
        if self
            .written_at
            .is_some_and(|at| at.elapsed() < REWRITE_EVERY)
        {
            return;
        }
        self.flush()
    }

    /// Rewrites the file now if incidents changed (shutdown, end of a replay). A file that
    /// cannot be written is counted ([`super::health`]) and rewritten whole by the next flush
    /// that can.
    pub fn flush(&mut self) {
        if self.changed.is_empty() && !self.unsaved {
            return;
        }
        for (id, (mut header, incident)) in std::mem::take(&mut self.changed) {
            header.insert(
                "timeline".into(),
                incident
                    .timeline
                    .iter()
                    .map(|t| timeline_entry(t))
                    .collect(),
            );
            self.incidents.insert(id, Value::Object(header));
        }
        let list: Vec<&Value> = self.incidents.values().collect();
        let mut bytes = serde_json::to_vec_pretty(&list).unwrap_or_default();
        bytes.push(b'\n');
        self.unsaved = match write_atomic(&self.path, &bytes) {
            Ok(()) => {
                super::health::write_ok(&self.path);
                false
            }
            Err(err) => {
                super::health::write_failed(&self.path, &err, 1);
                true
            }
        };
        self.written_at = Some(Instant::now());
    }
}

/// An incident's header as JSON (everything but its timeline), timestamps in EVE's format.
fn incident_header(emitted: &EmittedIncident, device: Option<&Device>) -> Map<String, Value> {
    let i = &emitted.incident;
    let record = json!({
        "id": i.id,
        "device": i.device.to_string(),
        "identity": identity(device),
        "first": eve_timestamp(i.first),
        "last": eve_timestamp(i.last),
        "score": i.score,
        "summary": i.summary,
        "phases": i.phases.iter().map(|p| json!({
            "name": p.name,
            "tactic": p.tactic,
            "techniques": p.techniques,
            "first": eve_timestamp(p.first),
        })).collect::<Vec<_>>(),
        "breaches": i.breaches,
        "unusual": i.unusual,
        "learning": i.learning,
        "by_model": i.by_model.iter().cloned().collect::<BTreeMap<String, u32>>(),
        "plugin": emitted.plugin,
        "plugin_version": emitted.plugin_version,
    });
    match record {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn timeline_entry(t: &TimelineEntry) -> Value {
    json!({
        "seq": t.seq,
        "timestamp": eve_timestamp(t.ts),
        "model": t.model,
        "score": t.score,
        "phase": t.phase,
        "destinations": t.destinations.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
        "ports": t.ports,
        "evidence": t.evidence.iter().map(|e| (e.name.clone(), e.value.clone())).collect::<BTreeMap<_, _>>(),
    })
}
