//! `DATA_DIR/incidents.json`: the latest version of every incident the analyst wrote, as one
//! JSON array, rewritten atomically when one changes, and read back at start so a restart
//! continues the same incidents.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::eve::{eve_timestamp, identity};
use super::files::write_atomic;
use crate::devices::Device;
use crate::host::EmittedIncident;

pub struct IncidentFile {
    path: PathBuf,
    /// By incident id.
    incidents: BTreeMap<u64, Value>,
    dirty: bool,
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
                Err(err) => {
                    let aside = path.with_extension("json.unreadable");
                    tracing::warn!(
                        "{}: {err}; kept as {} and starting afresh",
                        path.display(),
                        aside.display()
                    );
                    std::fs::rename(&path, &aside)?;
                }
            },
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        Ok(IncidentFile {
            path,
            incidents,
            dirty: false,
        })
    }

    pub fn update(&mut self, emitted: &EmittedIncident, device: Option<&Device>) {
        self.incidents
            .insert(emitted.incident.id, incident_record(emitted, device));
        self.dirty = true;
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let list: Vec<&Value> = self.incidents.values().collect();
        let mut bytes = serde_json::to_vec_pretty(&list)?;
        bytes.push(b'\n');
        write_atomic(&self.path, &bytes)?;
        self.dirty = false;
        Ok(())
    }
}

/// An incident as JSON, timestamps in EVE's format.
pub fn incident_record(emitted: &EmittedIncident, device: Option<&Device>) -> Value {
    let i = &emitted.incident;
    json!({
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
        "timeline": i.timeline.iter().map(|t| json!({
            "timestamp": eve_timestamp(t.ts),
            "model": t.model,
            "score": t.score,
            "phase": t.phase,
            "destinations": t.destinations.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
            "ports": t.ports,
            "evidence": t.evidence.iter().map(|e| (e.name.clone(), e.value.clone())).collect::<BTreeMap<_, _>>(),
        })).collect::<Vec<_>>(),
        "plugin": emitted.plugin,
        "plugin_version": emitted.plugin_version,
    })
}
