//! The responder: turns model breaches into enforcement actions by the policy in its config.
//!
//! Each rule names models (or a minimum score) and the responses they call for; a breach that
//! matches a rule asks the core to enforce those responses on the breaching device for
//! `duration_secs`. In `autonomous` mode the core enforces at once; in `human` mode each action
//! waits for an operator's `vigil actions confirm ID`. The core de-duplicates repeated requests,
//! so the responder keeps no state of its own: a model update of the policy applies from the
//! next breach.

use serde::{Deserialize, Serialize};
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub mode: Mode,
    /// How long an action lasts once in force.
    pub duration_secs: u64,
    pub rules: Vec<Rule>,
}

impl Default for Config {
    fn default() -> Self {
        let models = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        Config {
            mode: Mode::Autonomous,
            // An hour: long enough for an analyst to look, short enough that a false alarm heals
            // itself.
            duration_secs: 3600,
            rules: vec![
                // The meta models: one device breaching many models, or several lateral
                // movement models, is an intrusion in progress: cut the device off.
                Rule {
                    models: models(&[
                        "Device / Large Number of Model Breaches",
                        "Device / Multiple Lateral Movement Model Breaches",
                    ]),
                    min_score: 0,
                    responses: vec![Response::BlockEgress],
                },
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
    const NAME: &'static str = "responder";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const KIND: PluginKind = PluginKind::Responder;
    const SUBSCRIPTIONS: Subscriptions = Subscriptions::NONE.with(EventClass::Breach);

    fn new(config: Config) -> Self {
        Responder { config }
    }

    fn on_event(&mut self, event: &Event<'_>, out: &mut Output) {
        let EventKind::Breach { model, score, .. } = &event.kind else {
            return;
        };
        for rule in &self.config.rules {
            let named = rule.models.is_empty() || rule.models.iter().any(|m| m == model);
            if !named || *score < rule.min_score {
                continue;
            }
            for response in &rule.responses {
                out.request_action(ActionRequest {
                    response: *response,
                    device: event.src.ip,
                    ts: event.ts,
                    reason: format!("{model} (score {score}) by {}", event.src.ip),
                    incident: None,
                    duration_secs: self.config.duration_secs,
                    needs_confirmation: self.config.mode == Mode::Human,
                });
            }
        }
    }
}

export_plugin!(Responder);

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::IpAddr;
    use vigil_plugin_sdk::harness::Harness;
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
        let mut h = Harness::<Responder>::new();
        feed(&mut h, "Device / SMB Session Brute Force (Admin)", 80);
        let responses: Vec<Response> = h.actions().iter().map(|a| a.response).collect();
        assert_eq!(
            responses,
            [Response::BlockPort(445), Response::BlockPort(9401)]
        );
        feed(&mut h, "Device / Large Number of Model Breaches", 75);
        assert_eq!(h.actions()[2].response, Response::BlockEgress);
        assert!(h.actions().iter().all(|a| !a.needs_confirmation));
        assert!(h
            .actions()
            .iter()
            .all(|a| a.device == IpAddr::from([10, 77, 0, 50]) && a.duration_secs == 3600));
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
}
