//! The responder: turns model breaches and incidents into enforcement actions by the policy in
//! its config.
//!
//! Each rule names models (or a minimum score) and the responses they call for; a breach that
//! matches a rule asks the core to enforce those responses on the breaching device for
//! `duration_secs`. Incident rules do the same for an analyst's incident once its score and the
//! number of attack phases it covers reach theirs; those actions name the incident they answer. In `autonomous` mode the core enforces at once; in `human` mode each action
//! waits for an operator's `vigil actions confirm ID`.
//!
//! Responses follow the device's pattern of life: a breach raised while its model or device was
//! still learning (`pattern.state` = `learning`), or one of activity the device's own pattern
//! includes (`pattern.unusual` = `false`: only the fixed threshold was crossed), asks in
//! `learning_mode` / `usual_mode`, human by default, so only what is unusual for the device is
//! acted on autonomously. An incident stands as its breaches do: one with no breach beyond its
//! device's pattern (all raised while learning, usual, or built from those) asks the same way. The core de-duplicates repeated requests,
//! so the responder keeps no state of its own: a model update of the policy applies from the
//! next breach.

use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::scan::pattern::Standing;
use vigil_plugin_sdk::{
    export_plugin, ActionRequest, Event, EventClass, EventKind, Output, Plugin, PluginKind,
    Response, Subscriptions,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Autonomous,
    Human,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rule {
    /// Model names this rule answers; empty: any model (with `min_score`).
    pub models: Vec<String>,
    /// Breaches below this score do not trigger the rule.
    pub min_score: u8,
    pub responses: Vec<Response>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IncidentRule {
    /// The incident's score (0-100) from which the rule applies.
    pub min_score: u8,
    /// Attack phases (ATT&CK tactics) the incident must cover.
    pub min_phases: usize,
    pub responses: Vec<Response>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub mode: Mode,
    /// Mode of the actions for a breach raised while the device's (or the model's) pattern was
    /// still being learned: its fixed threshold decided alone, so an operator looks first.
    pub learning_mode: Mode,
    /// Mode of the actions for a breach of activity the device's learned pattern includes (the
    /// fixed threshold crossed by what it always does).
    pub usual_mode: Mode,
    /// How long an action lasts once in force.
    pub duration_secs: u64,
    /// Rules on model breaches.
    pub rules: Vec<Rule>,
    /// Rules on incidents.
    pub incident_rules: Vec<IncidentRule>,
}

impl Default for Config {
    fn default() -> Self {
        let models = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        Config {
            mode: Mode::Autonomous,
            learning_mode: Mode::Human,
            usual_mode: Mode::Human,
            // An hour: long enough for an analyst to look, short enough that a false alarm heals
            // itself.
            duration_secs: 3600,
            // An incident that went from one phase to the next with a high score is an intrusion
            // in progress: cut the device off.
            incident_rules: vec![IncidentRule {
                min_score: 80,
                min_phases: 2,
                responses: vec![Response::BlockEgress],
            }],
            rules: vec![
                // SMB abuse and the scans that look for it: close file sharing and the
                // management port the case's attacker probed.
                Rule {
                    models: models(&[
                        "Device / Suspicious SMB Scanning Activity",
                        "Device / SMB Session Brute Force (Admin)",
                        "Device / SMB Session Brute Force (Non-Admin)",
                        "Device / Network Scan",
                    ]),
                    min_score: 0,
                    responses: vec![Response::BlockPort(445), Response::BlockPort(9401)],
                },
            ],
        }
    }
}

pub struct Responder {
    config: Config,
}

impl Plugin for Responder {
    type Config = Config;
    type State = ();
    const NAME: &'static str = "responder";
    const KIND: PluginKind = PluginKind::Responder;
    const SUBSCRIPTIONS: Subscriptions = Subscriptions::NONE
        .with(EventClass::Breach)
        .with(EventClass::Incident);

    fn new(config: Config) -> Self {
        Responder { config }
    }

    fn on_event(&mut self, event: &Event<'_>, out: &mut Output) {
        if let EventKind::Incident {
            id,
            score,
            phases,
            unusual,
            learning,
            ..
        } = &event.kind
        {
            // An incident none of whose breaches is beyond its device's pattern stands as its
            // breaches do: raised while learning, or the device's usual job.
            let standing = match (*unusual, *learning) {
                (0, 0) => Standing::Usual,
                (0, _) => Standing::Learning { usual: false },
                _ => Standing::Unusual,
            };
            let (mode, why) = self.mode_for(standing);
            for rule in &self.config.incident_rules {
                if *score >= rule.min_score && phases.len() >= rule.min_phases {
                    for response in &rule.responses {
                        out.request_action(self.request(
                            event,
                            *response,
                            format!(
                                "incident {id} (score {score}{why}, phases: {}) on {}",
                                phases.join(", "),
                                event.src.ip
                            ),
                            Some(*id),
                            mode,
                        ));
                    }
                }
            }
            return;
        }
        let EventKind::Breach {
            model,
            score,
            evidence,
            hop,
            ..
        } = &event.kind
        else {
            return;
        };
        let (mode, why) = self.mode_for(Standing::of(evidence, *hop));
        for rule in &self.config.rules {
            let named = rule.models.is_empty() || rule.models.iter().any(|m| m == model);
            if !named || *score < rule.min_score {
                continue;
            }
            for response in &rule.responses {
                let reason = format!("{model} (score {score}{why}) by {}", event.src.ip);
                out.request_action(self.request(event, *response, reason, None, mode));
            }
        }
    }
}

impl Responder {
    /// The mode of an action answering something of `standing`, and how its reason says so:
    /// any mode that asks for an operator makes the action wait for one.
    fn mode_for(&self, standing: Standing) -> (Mode, &'static str) {
        let learning = self.config.learning_mode == Mode::Human;
        let usual = self.config.usual_mode == Mode::Human;
        let (waits, why) = match standing {
            Standing::Learning { usual: false } => (learning, " while learning"),
            Standing::Learning { usual: true } => {
                (learning || usual, " while learning, usual for the device")
            }
            Standing::Usual => (usual, ", usual for the device"),
            Standing::Unusual | Standing::Derived => (false, ""),
        };
        if waits || self.config.mode == Mode::Human {
            (Mode::Human, why)
        } else {
            (Mode::Autonomous, why)
        }
    }

    fn request(
        &self,
        event: &Event<'_>,
        response: Response,
        reason: String,
        incident: Option<u64>,
        mode: Mode,
    ) -> ActionRequest {
        ActionRequest {
            response,
            device: event.src.ip,
            ts: event.ts,
            reason,
            incident,
            duration_secs: self.config.duration_secs,
            needs_confirmation: mode == Mode::Human,
        }
    }
}

export_plugin!(Responder);

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::IpAddr;
    use vigil_plugin_sdk::harness::Harness;
    use vigil_plugin_sdk::scan::pattern;
    use vigil_plugin_sdk::{Breach, Endpoint, Timestamp, Transport};

    fn breach(model: &str, score: u8) -> Breach {
        let device = Endpoint {
            ip: IpAddr::from([10, 77, 0, 50]),
            port: 0,
            mac: [0; 6],
        };
        Breach {
            model: model.into(),
            ts: Timestamp::from_secs(100),
            device,
            dest: device,
            proto: Transport::Tcp,
            score,
            mitre: Vec::new(),
            destinations: Vec::new(),
            ports: Vec::new(),
            evidence: Vec::new(),
        }
    }

    fn feed(h: &mut Harness<Responder>, model: &str, score: u8) {
        h.feed(&breach(model, score).to_event("some-detector", 0));
    }

    #[test]
    fn smb_brute_force_blocks_445_and_9401_and_an_intrusion_blocks_everything() {
        use vigil_plugin_sdk::incident::Phase;
        let mut h = Harness::<Responder>::new();
        feed(&mut h, "Device / SMB Session Brute Force (Admin)", 80);
        let responses: Vec<Response> = h.actions().iter().map(|a| a.response).collect();
        assert_eq!(
            responses,
            [Response::BlockPort(445), Response::BlockPort(9401)]
        );
        let phase = |name: &str| Phase {
            name: name.into(),
            tactic: String::new(),
            techniques: Vec::new(),
            first: Timestamp::from_secs(100),
        };
        let mut incident = vigil_plugin_sdk::Incident {
            id: 7,
            device: IpAddr::from([10, 77, 0, 50]),
            first: Timestamp::from_secs(100),
            last: Timestamp::from_secs(160),
            score: 60,
            phases: vec![phase("Initial Access")],
            breaches: 2,
            by_model: Vec::new(),
            unusual: 2,
            learning: 0,
            timeline: Vec::new(),
            summary: String::new(),
        };
        h.feed(&incident.to_event());
        assert_eq!(
            h.actions().len(),
            2,
            "an incident still small asks for nothing"
        );
        incident.score = 95;
        incident.phases.push(phase("Discovery"));
        h.feed(&incident.to_event());
        assert_eq!(h.actions()[2].response, Response::BlockEgress);
        assert_eq!(h.actions()[2].incident, Some(7));
        assert!(h.actions().iter().all(|a| !a.needs_confirmation));
        assert!(h
            .actions()
            .iter()
            .all(|a| a.device == IpAddr::from([10, 77, 0, 50]) && a.duration_secs == 3600));
        // The same intrusion whose breaches all came while the device was learning waits.
        incident.id = 8;
        incident.unusual = 0;
        incident.learning = 2;
        h.feed(&incident.to_event());
        let waiting = h.actions().last().expect("an action");
        assert_eq!(waiting.incident, Some(8));
        assert!(waiting.needs_confirmation, "{}", waiting.reason);
        assert!(
            waiting.reason.contains("while learning"),
            "{}",
            waiting.reason
        );
        // A model no rule names asks for nothing.
        let before = h.actions().len();
        feed(&mut h, "Device / Reverse DNS Sweep", 60);
        assert_eq!(h.actions().len(), before);
    }

    #[test]
    fn human_mode_and_policy_come_from_config() {
        let mut h = Harness::<Responder>::with_config_json(
            r#"{"mode": "human", "duration_secs": 60,
                "rules": [{"min_score": 70, "responses": ["BlockEgress"]}]}"#,
        )
        .expect("config");
        feed(&mut h, "Device / Reverse DNS Sweep", 60);
        assert!(h.actions().is_empty(), "below the rule's score");
        feed(&mut h, "Device / Reverse DNS Sweep", 70);
        assert_eq!(h.actions().len(), 1);
        assert!(h.actions()[0].needs_confirmation);
        assert_eq!(h.actions()[0].duration_secs, 60);
    }

    fn scan_breach(state: &str, unusual: bool) -> Breach {
        breach("Device / Suspicious SMB Scanning Activity", 70)
            .with_evidence(pattern::STATE, state)
            .with_evidence(pattern::UNUSUAL, unusual)
    }

    #[test]
    fn only_breaches_unusual_for_a_learned_device_act_autonomously() {
        let mut h = Harness::<Responder>::new();
        h.feed(&scan_breach("learned", true).to_event("smb-scan", 0));
        assert_eq!(h.actions().len(), 2);
        assert!(h.actions().iter().all(|a| !a.needs_confirmation));
        assert_eq!(
            h.actions()[0].reason,
            "Device / Suspicious SMB Scanning Activity (score 70) by 10.77.0.50"
        );

        let mut h = Harness::<Responder>::new();
        h.feed(&scan_breach("learning", true).to_event("smb-scan", 0));
        assert_eq!(h.actions().len(), 2);
        assert!(h.actions().iter().all(|a| a.needs_confirmation));
        assert_eq!(
            h.actions()[0].reason,
            "Device / Suspicious SMB Scanning Activity (score 70 while learning) by 10.77.0.50"
        );

        // A floor-only breach of what the device always does waits too, whatever the state.
        let mut h = Harness::<Responder>::with_config_json(r#"{"learning_mode": "autonomous"}"#)
            .expect("config");
        h.feed(&scan_breach("learning", false).to_event("smb-scan", 0));
        assert_eq!(h.actions().len(), 2);
        assert!(h.actions().iter().all(|a| a.needs_confirmation));
        let mut h = Harness::<Responder>::new();
        h.feed(&scan_breach("learned", false).to_event("smb-scan", 0));
        assert!(h.actions().iter().all(|a| a.needs_confirmation));
        assert_eq!(
            h.actions()[0].reason,
            "Device / Suspicious SMB Scanning Activity (score 70, usual for the device) by \
             10.77.0.50"
        );
    }

    #[test]
    fn learning_breaches_act_autonomously_when_the_policy_says_so() {
        let mut h = Harness::<Responder>::with_config_json(r#"{"learning_mode": "autonomous"}"#)
            .expect("config");
        h.feed(&scan_breach("learning", true).to_event("smb-scan", 0));
        assert_eq!(h.actions().len(), 2);
        assert!(h.actions().iter().all(|a| !a.needs_confirmation));
        // Human mode overall still waits for everything.
        let mut h = Harness::<Responder>::with_config_json(
            r#"{"mode": "human", "learning_mode": "autonomous"}"#,
        )
        .expect("config");
        h.feed(&scan_breach("learned", true).to_event("smb-scan", 0));
        assert!(h.actions().iter().all(|a| a.needs_confirmation));
    }
}
