//! The analyst: turns a device's breaches into one incident, the way a human analyst would
//! write it up. Breaches of one device that come within `incident_gap_secs` of each other join
//! the same incident; each is placed in an attack phase (an ATT&CK tactic) by its model, or by its
//! technique ids when the model is not in the table; the incident keeps a timeline with the
//! evidence, a score that grows with the phases covered, and a summary written from the evidence
//! (no network calls, no language model: every sentence is built from the breaches).
//!
//! Every change to an incident is written as a new version with the same id.

use core::net::IpAddr;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::evidence::{duration, listed};
use vigil_plugin_sdk::incident::{Phase, TimelineEntry};
use vigil_plugin_sdk::scan::pattern::Standing;
use vigil_plugin_sdk::state::OldState;
use vigil_plugin_sdk::{
    export_plugin, BoundedMap, Duration, Event, EventClass, EventKind, Evidence, Incident, Output,
    Plugin, PluginKind, Subscriptions, Timestamp,
};

/// ATT&CK tactics in kill-chain order: a phase's place in an incident.
const TACTICS: &[(&str, &str)] = &[
    ("TA0043", "Reconnaissance"),
    ("TA0001", "Initial Access"),
    ("TA0002", "Execution"),
    ("TA0003", "Persistence"),
    ("TA0004", "Privilege Escalation"),
    ("TA0005", "Defense Evasion"),
    ("TA0006", "Credential Access"),
    ("TA0007", "Discovery"),
    ("TA0008", "Lateral Movement"),
    ("TA0009", "Collection"),
    ("TA0011", "Command and Control"),
    ("TA0010", "Exfiltration"),
    ("TA0040", "Impact"),
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// A breach this long after the device's last one starts a new incident.
    #[serde(rename = "incident_gap_secs")]
    pub incident_gap: Duration,
    /// Model name -> ATT&CK tactic id: where each model's breaches sit in an attack.
    pub model_tactics: BTreeMap<String, String>,
    /// Technique id prefix -> tactic id, for models not in `model_tactics`.
    pub technique_tactics: BTreeMap<String, String>,
    /// Devices with an open incident at once; the one quiet longest is closed first.
    pub max_open: usize,
    /// Timeline entries kept per incident from its start (how it started matters most)...
    pub timeline_first: usize,
    /// ...and its latest ones. Besides these, the timeline keeps each model's first breach and
    /// the most serious one; `breaches` and `by_model` count every breach.
    pub timeline_last: usize,
}

impl Default for Config {
    fn default() -> Self {
        let pairs = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Config {
            // Two hours: an intruder's session is minutes to hours; the next day is a new story.
            incident_gap: Duration::from_secs(2 * 3600),
            model_tactics: pairs(&[
                ("Device / Unusual NTLM Hostname", "TA0001"),
                ("Device / Unusual LDAP Bind and Search Activity", "TA0007"),
                ("Device / Attack and Recon Tools", "TA0007"),
                ("Device / Network Scan", "TA0007"),
                ("Device / Network Range Scan", "TA0007"),
                ("Device / RDP Scan", "TA0007"),
                ("Device / UDP Enumeration", "TA0007"),
                ("Device / Reverse DNS Sweep", "TA0007"),
                ("Device / Suspicious SMB Scanning Activity", "TA0008"),
                ("Device / SMB Session Brute Force (Admin)", "TA0006"),
                ("Device / SMB Session Brute Force (Non-Admin)", "TA0006"),
                (
                    "Device / Multiple Lateral Movement Model Breaches",
                    "TA0008",
                ),
                ("Device / Large Number of Model Breaches", "TA0007"),
            ]),
            technique_tactics: pairs(&[
                ("T1595", "TA0043"),
                ("T1590", "TA0043"),
                ("T1078", "TA0001"),
                ("T1133", "TA0001"),
                ("T1110", "TA0006"),
                ("T1003", "TA0006"),
                ("T1046", "TA0007"),
                ("T1018", "TA0007"),
                ("T1087", "TA0007"),
                ("T1069", "TA0007"),
                ("T1021", "TA0008"),
                ("T1570", "TA0008"),
                ("T1041", "TA0010"),
            ]),
            max_open: 1024,
            timeline_first: 64,
            timeline_last: 64,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Analyst {
    config: Config,
    /// The open incident of each device, touched at its breaches (as [`Incident::last`]): past
    /// `max_open`, the stalest is closed first.
    open: BoundedMap<IpAddr, Incident>,
}

impl Analyst {
    fn tactic_of(&self, model: &str, mitre: &[&str]) -> &'static (&'static str, &'static str) {
        let by_model = self.config.model_tactics.get(model);
        let by_technique = || {
            mitre.iter().find_map(|technique| {
                self.config
                    .technique_tactics
                    .iter()
                    .find(|(prefix, _)| technique.starts_with(prefix.as_str()))
                    .map(|(_, tactic)| tactic)
            })
        };
        let id = by_model.or_else(by_technique);
        id.and_then(|id| TACTICS.iter().find(|(t, _)| t == id))
            // Unknown: discovery is where most single-model breaches of a device sit.
            .unwrap_or(&TACTICS[7])
    }
}

/// A stable id for a device's incident: its start time and address, mixed (FNV-1a).
fn incident_id(device: IpAddr, first: Timestamp) -> u64 {
    let mut bytes: Vec<u8> = first.micros().to_be_bytes().to_vec();
    match device {
        IpAddr::V4(v4) => bytes.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => bytes.extend_from_slice(&v6.octets()),
    }
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    // Kept within JSON's exact integer range.
    hash >> 11
}

fn rank(tactic: &str) -> usize {
    TACTICS
        .iter()
        .position(|(id, _)| *id == tactic)
        .unwrap_or(TACTICS.len())
}

/// Drops the oldest entry that is none of: the first `timeline_first`, the last
/// `timeline_last`, a model's first, the most serious (the earliest of the top score), until the
/// timeline fits. One breach is added at a time, so at most one entry goes each time.
fn trim_timeline(incident: &mut Incident, config: &Config) {
    let last_kept_from = incident
        .breaches
        .saturating_sub(u32::try_from(config.timeline_last).unwrap_or(u32::MAX));
    let first_until = u32::try_from(config.timeline_first).unwrap_or(u32::MAX);
    loop {
        let timeline = &incident.timeline;
        let top = timeline
            .iter()
            .max_by_key(|t| (t.score, core::cmp::Reverse(t.seq)))
            .map(|t| t.seq);
        let is_models_first = |entry: &TimelineEntry| {
            !timeline
                .iter()
                .any(|other| other.model == entry.model && other.seq < entry.seq)
        };
        let droppable = timeline
            .iter()
            .enumerate()
            .filter(|(_, t)| t.seq > first_until && t.seq <= last_kept_from)
            .filter(|(_, t)| Some(t.seq) != top && !is_models_first(t))
            .min_by_key(|(_, t)| t.seq)
            .map(|(at, _)| at);
        match droppable {
            Some(at) => {
                incident.timeline.remove(at);
            }
            None => return,
        }
    }
}

/// The plain-language write-up, rebuilt from the incident each time it changes.
fn write_summary(incident: &Incident) -> String {
    let models: Vec<&str> = incident.by_model.iter().map(|(m, _)| m.as_str()).collect();
    let mut text = format!(
        "{} breached {} model{} over {}, covering {} attack phase{}.",
        incident.device,
        models.len(),
        if models.len() == 1 { "" } else { "s" },
        duration(incident.last.since(incident.first)),
        incident.phases.len(),
        if incident.phases.len() == 1 { "" } else { "s" },
    );
    for phase in &incident.phases {
        let entries: Vec<&TimelineEntry> = incident
            .timeline
            .iter()
            .filter(|t| t.phase == phase.name)
            .map(|t| &**t)
            .collect();
        let mut described: Vec<String> = Vec::new();
        for entry in &entries {
            let short = entry.model.trim_start_matches("Device / ");
            let already = described.iter().any(|d| d.starts_with(short));
            if already {
                continue;
            }
            let mut what = short.to_string();
            if !entry.destinations.is_empty() {
                what.push_str(&format!(" against {}", listed(&entry.destinations, 2)));
            }
            if !entry.ports.is_empty() && entry.ports.len() <= 6 {
                let ports: Vec<String> = entry.ports.iter().map(|p| p.to_string()).collect();
                what.push_str(&format!(" (port {})", ports.join(", ")));
            }
            // The first piece of evidence is the one the model thought most telling.
            if let Some(first) = entry.evidence.first() {
                what.push_str(&format!(
                    ", {} {}",
                    first.name.replace('_', " "),
                    first.value
                ));
            }
            described.push(what);
        }
        text.push_str(&format!(
            " {} (+{}): {}.",
            phase.name,
            duration(phase.first.since(incident.first)),
            described.join("; ")
        ));
    }
    if let Some(top) = incident.timeline.iter().max_by_key(|t| t.score) {
        text.push_str(&format!(
            " Most serious: {} (score {}).",
            top.model, top.score
        ));
    }
    if incident.learning > 0 {
        text.push_str(&format!(
            " {} of its {} breaches came while the device's pattern of life was still being \
             learned{}.",
            incident.learning,
            incident.breaches,
            if incident.unusual == 0 {
                ", and none was beyond what it usually does"
            } else {
                ""
            }
        ));
    }
    text
}

impl Plugin for Analyst {
    type Config = Config;
    type State = BoundedMap<IpAddr, Incident>;
    /// 2: the open incidents in a [`BoundedMap`]; 1 kept a plain map.
    const STATE_VERSION: u32 = 2;
    const NAME: &'static str = "analyst";
    const KIND: PluginKind = PluginKind::Analyst;
    const SUBSCRIPTIONS: Subscriptions = Subscriptions::NONE.with(EventClass::Breach);

    fn new(config: Config) -> Self {
        Analyst {
            config,
            open: BoundedMap::new(),
        }
    }

    fn on_event(&mut self, event: &Event<'_>, out: &mut Output) {
        let EventKind::Breach {
            model,
            score,
            mitre,
            destinations,
            ports,
            evidence,
            hop,
            ..
        } = &event.kind
        else {
            return;
        };
        let device = event.src.ip;
        let &(tactic, phase_name) = self.tactic_of(model, mitre);
        let gap = self.config.incident_gap;
        let stale = self
            .open
            .get(&device)
            .is_some_and(|incident| event.ts.elapsed_since(incident.last) > gap);
        if stale {
            self.open.remove(&device);
        }
        let capacity = self.config.max_open;
        let incident = self.open.touch(capacity, event.ts, device, || Incident {
            id: incident_id(device, event.ts),
            device,
            first: event.ts,
            last: event.ts,
            score: 0,
            phases: Vec::new(),
            breaches: 0,
            by_model: Vec::new(),
            unusual: 0,
            learning: 0,
            timeline: Vec::new(),
            summary: String::new(),
        });
        incident.first = incident.first.min(event.ts);
        incident.last = incident.last.max(event.ts);
        incident.breaches = incident.breaches.saturating_add(1);
        match Standing::of(evidence, *hop) {
            Standing::Unusual => incident.unusual = incident.unusual.saturating_add(1),
            Standing::Learning { .. } => incident.learning = incident.learning.saturating_add(1),
            Standing::Usual | Standing::Derived => {}
        }
        match incident
            .by_model
            .binary_search_by(|(name, _)| name.as_str().cmp(model))
        {
            Ok(at) => incident.by_model[at].1 = incident.by_model[at].1.saturating_add(1),
            Err(at) => incident.by_model.insert(at, (model.to_string(), 1)),
        }
        {
            incident.timeline.push(Arc::new(TimelineEntry {
                seq: incident.breaches,
                ts: event.ts,
                model: model.to_string(),
                score: *score,
                phase: phase_name.to_string(),
                destinations: destinations.clone(),
                ports: ports.clone(),
                evidence: evidence
                    .iter()
                    .map(|(name, value)| Evidence {
                        name: name.to_string(),
                        value: value.to_string(),
                    })
                    .collect(),
            }));
            incident.timeline.sort_by_key(|t| t.ts);
            trim_timeline(incident, &self.config);
        }
        match incident.phases.iter_mut().find(|p| p.tactic == tactic) {
            Some(phase) => {
                phase.first = phase.first.min(event.ts);
                for technique in mitre {
                    if !phase.techniques.iter().any(|t| t == technique) {
                        phase.techniques.push(technique.to_string());
                        phase.techniques.sort();
                    }
                }
            }
            None => {
                let mut techniques: Vec<String> = mitre.iter().map(|t| t.to_string()).collect();
                techniques.sort();
                techniques.dedup();
                incident.phases.push(Phase {
                    name: phase_name.to_string(),
                    tactic: tactic.to_string(),
                    techniques,
                    first: event.ts,
                });
            }
        }
        // Kill-chain order, then time: how the story is told.
        incident.phases.sort_by_key(|p| (rank(&p.tactic), p.first));
        let top = incident.timeline.iter().map(|t| t.score).max().unwrap_or(0);
        // Each further phase makes the same breaches more convincing as one intrusion.
        let breadth = 5 * incident.phases.len().saturating_sub(1);
        incident.score = (usize::from(top) + breadth).min(100) as u8;
        incident.summary = write_summary(incident);
        out.incident(incident.clone());
    }

    fn state(&self) -> Option<&Self::State> {
        Some(&self.open)
    }

    fn set_state(&mut self, state: Self::State) {
        self.open = state;
    }

    fn migrate(from_version: u32, old: OldState) -> Result<Self::State, String> {
        match from_version {
            0 | 1 => {
                let open: BTreeMap<IpAddr, Incident> = old.decode()?;
                Ok(open
                    .into_iter()
                    .map(|(device, incident)| (device, incident.last, incident))
                    .collect())
            }
            _ => Err(format!("unknown state version {from_version}")),
        }
    }
}

export_plugin!(Analyst);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_plugin_sdk::harness::{old_snapshot, Harness};
    use vigil_plugin_sdk::{Breach, Endpoint, Transport};

    fn endpoint(last: u8) -> Endpoint {
        Endpoint {
            ip: IpAddr::from([10, 77, 0, last]),
            port: 0,
            mac: [0; 6],
        }
    }

    fn breach(model: &str, mitre: &[&str], secs: u64, device: u8) -> Breach {
        Breach {
            model: model.into(),
            ts: Timestamp::from_secs(1_800_000_000 + secs),
            device: endpoint(device),
            dest: endpoint(10),
            proto: Transport::Tcp,
            score: 60,
            mitre: mitre.iter().map(|m| m.to_string()).collect(),
            destinations: vec![endpoint(10).ip],
            ports: vec![445],
            evidence: vec![Evidence {
                name: "failed_logins".into(),
                value: "30".into(),
            }],
        }
    }

    fn feed(h: &mut Harness<Analyst>, b: &Breach) {
        h.feed(&b.to_event("test", 0));
    }

    #[test]
    fn one_device_one_incident_with_phases_in_kill_chain_order() {
        let mut h: Harness<Analyst> = Harness::new();
        feed(&mut h, &breach("Device / Network Scan", &["T1046"], 60, 50));
        feed(
            &mut h,
            &breach("Device / Unusual NTLM Hostname", &["T1078"], 0, 50),
        );
        feed(
            &mut h,
            &breach(
                "Device / SMB Session Brute Force (Admin)",
                &["T1110"],
                120,
                50,
            ),
        );
        feed(&mut h, &breach("Made / Up", &["T1021.002"], 130, 50));
        let incidents = h.incidents();
        assert_eq!(incidents.len(), 4, "one version per breach");
        let last = incidents.last().expect("an incident");
        assert!(incidents.iter().all(|i| i.id == last.id));
        let phases: Vec<&str> = last.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            phases,
            [
                "Initial Access",
                "Credential Access",
                "Discovery",
                "Lateral Movement"
            ]
        );
        assert_eq!(last.timeline.len(), 4);
        assert_eq!(last.timeline[0].model, "Device / Unusual NTLM Hostname");
        assert_eq!(last.score, 75);
        assert!(last
            .summary
            .starts_with("10.77.0.50 breached 4 models over 2 min 10 s"));
        assert!(
            last.summary.contains("failed logins 30"),
            "{}",
            last.summary
        );
    }

    #[test]
    fn a_long_incident_keeps_its_start_its_latest_each_models_first_and_counts_every_breach() {
        let mut h: Harness<Analyst> =
            Harness::with_config_json(r#"{"timeline_first": 4, "timeline_last": 4}"#)
                .expect("config");
        feed(
            &mut h,
            &breach("Device / Unusual NTLM Hostname", &["T1078"], 0, 50),
        );
        for i in 1..300u64 {
            let mut scan = breach("Device / Network Scan", &["T1046"], i, 50);
            if i == 150 {
                scan.score = 90;
            }
            feed(&mut h, &scan);
        }
        feed(&mut h, &breach("Device / RDP Scan", &["T1046"], 300, 50));
        let last = h.incidents().last().cloned().expect("an incident");
        assert_eq!(last.breaches, 301);
        assert_eq!(
            last.by_model,
            [
                ("Device / Network Scan".to_string(), 299),
                ("Device / RDP Scan".to_string(), 1),
                ("Device / Unusual NTLM Hostname".to_string(), 1),
            ]
        );
        let seqs: Vec<u32> = last.timeline.iter().map(|t| t.seq).collect();
        // The first four, the most serious (seq 151), the last four (the RDP scan's first is
        // among them).
        assert_eq!(seqs, [1, 2, 3, 4, 151, 298, 299, 300, 301]);
        assert!(
            last.summary.contains("breached 3 models"),
            "{}",
            last.summary
        );
        assert_eq!(last.score, 95, "the most serious breach still counts");
    }

    #[test]
    fn other_devices_and_later_episodes_are_other_incidents() {
        let mut h: Harness<Analyst> = Harness::new();
        feed(&mut h, &breach("Device / Network Scan", &["T1046"], 0, 50));
        feed(&mut h, &breach("Device / Network Scan", &["T1046"], 10, 60));
        feed(
            &mut h,
            &breach("Device / Network Scan", &["T1046"], 3 * 3600, 50),
        );
        let ids: Vec<u64> = h.incidents().iter().map(|i| i.id).collect();
        assert_eq!(ids.len(), 3);
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[0], ids[2]);
    }

    #[test]
    fn open_incidents_survive_a_restart() {
        let mut h: Harness<Analyst> = Harness::new();
        feed(&mut h, &breach("Device / Network Scan", &["T1046"], 0, 50));
        let first_id = h.incidents()[0].id;
        let mut again = h.restart().expect("restores");
        feed(&mut again, &breach("Device / RDP Scan", &["T1046"], 30, 50));
        let incident = again.incidents().last().expect("updated");
        assert_eq!(incident.id, first_id);
        assert_eq!(incident.timeline.len(), 2);
    }

    #[test]
    fn open_incidents_of_a_version_1_snapshot_go_on() {
        let mut h: Harness<Analyst> = Harness::new();
        feed(&mut h, &breach("Device / Network Scan", &["T1046"], 0, 50));
        feed(&mut h, &breach("Device / Network Scan", &["T1046"], 10, 60));
        let ids: Vec<u64> = h.incidents().iter().map(|i| i.id).collect();
        // Version 1 kept the open incidents in a plain map.
        let open = h.plugin().state().expect("state");
        let v1: BTreeMap<IpAddr, Incident> =
            open.iter().map(|(ip, _, i)| (*ip, i.clone())).collect();
        let mut plugin = Analyst::new(Config {
            max_open: 2,
            ..Config::default()
        });
        plugin
            .restore(&old_snapshot::<Analyst, _>(1, &v1))
            .expect("migrates");
        let mut h = Harness::from_plugin(plugin);
        feed(&mut h, &breach("Device / RDP Scan", &["T1046"], 20, 50));
        let incident = h.incidents().last().expect("updated");
        assert_eq!((incident.id, incident.timeline.len()), (ids[0], 2));
        // Two open at most: .70's closes .60's (the stalest), so .60 starts a new incident.
        feed(&mut h, &breach("Device / Network Scan", &["T1046"], 30, 70));
        feed(&mut h, &breach("Device / RDP Scan", &["T1046"], 40, 60));
        let incident = h.incidents().last().expect("updated");
        assert_ne!(incident.id, ids[1]);
        assert_eq!(incident.timeline.len(), 1);
    }
}
