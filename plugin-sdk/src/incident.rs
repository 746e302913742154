//! Incidents: what an analyst plugin makes of a device's breaches. One incident per device and
//! episode, with the attack phases it covers, a timeline, a score and a written summary. The
//! host keeps the latest version of each (by `id`) in `DATA_DIR/incidents.json`.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::IpAddr;
use serde::{Deserialize, Serialize};

use crate::{Evidence, Timestamp};

/// One attack phase (an ATT&CK tactic) and the techniques seen in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    /// e.g. `Discovery`.
    pub name: String,
    /// ATT&CK tactic id, e.g. `TA0007`.
    pub tactic: String,
    /// Technique ids seen in this phase, sorted.
    pub techniques: Vec<String>,
    pub first: Timestamp,
}

/// One breach on an incident's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// Its place among the incident's breaches, from 1: stable while the timeline is trimmed,
    /// so an output can tell which entries it has already written.
    #[serde(default)]
    pub seq: u32,
    pub ts: Timestamp,
    pub model: String,
    pub score: u8,
    /// The phase it was put in.
    pub phase: String,
    pub destinations: Vec<IpAddr>,
    pub ports: Vec<u16>,
    pub evidence: Vec<Evidence>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Stable across updates of the same incident.
    pub id: u64,
    pub device: IpAddr,
    pub first: Timestamp,
    pub last: Timestamp,
    /// 0-100.
    pub score: u8,
    /// In the order the attack went through them.
    pub phases: Vec<Phase>,
    /// Breaches in the incident, all of them.
    #[serde(default)]
    pub breaches: u32,
    /// Breaches per model name, all of them, sorted by name.
    #[serde(default)]
    pub by_model: Vec<(String, u32)>,
    /// Breaches beyond their device's pattern of life, or of models that do not learn: what
    /// makes the incident more than a device's usual job or a floor crossed while learning.
    #[serde(default)]
    pub unusual: u32,
    /// Breaches raised while their device's (or model's) pattern was still being learned.
    #[serde(default)]
    pub learning: u32,
    /// The first and the latest breaches (an analyst keeps a bounded number of each), in time
    /// order; [`Incident::breaches`] and [`Incident::by_model`] count the rest. Shared, so that a
    /// new version of an incident (one per breach) costs its new entry, not a copy of them all.
    pub timeline: Vec<Arc<TimelineEntry>>,
    /// A few plain sentences written from the evidence.
    pub summary: String,
}

impl Incident {
    /// This version of the incident as an event for responder plugins.
    pub fn to_event(&self) -> crate::Event<'_> {
        let device = crate::Endpoint {
            ip: self.device,
            port: 0,
            mac: [0; 6],
        };
        crate::Event {
            ts: self.last,
            flow: 0,
            proto: crate::Transport::Other(0),
            src: device,
            dst: device,
            kind: crate::EventKind::Incident {
                id: self.id,
                score: self.score,
                phases: self.phases.iter().map(|p| p.name.as_str()).collect(),
                breaches: self.breaches,
                unusual: self.unusual,
                learning: self.learning,
            },
        }
    }
}
