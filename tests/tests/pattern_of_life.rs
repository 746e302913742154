//! The whole case, on each committed lab run: with the lab's normal week learned first, the
//! attack raises every model of the lab's ground truth for the attacker inside its step, and one
//! incident holds them all with the attack's phases; the benign captures raise nothing; and a
//! restart in the middle changes nothing.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use vigil_tests::lab::{committed_labs, eve_epoch, fixture, ground_truth, shifted, step_windows};
use vigil_tests::workspace::{eve_records, replay_ok, TempDir};

/// Models decide on the packet that completes the pattern (or on the connection's end), so a
/// breach falls inside its step; this allows for the lab's "about ±1 s" step offsets.
const SLACK_S: f64 = 2.0;

fn alerts(data_dir: &Path) -> Vec<Value> {
    eve_records(data_dir)
        .into_iter()
        .filter(|r| r["event_type"] == "alert")
        .collect()
}

/// (model, device, time to the millisecond) of every alert, for comparing runs.
fn breach_set(data_dir: &Path) -> BTreeSet<(String, String, i64)> {
    alerts(data_dir)
        .iter()
        .map(|a| {
            let t = eve_epoch(a["timestamp"].as_str().expect("timestamp"));
            (
                a["alert"]["signature"].as_str().unwrap_or("").to_string(),
                a["src_ip"].as_str().unwrap_or("").to_string(),
                (t * 1000.0).round() as i64,
            )
        })
        .collect()
}

#[test]
fn after_the_baseline_every_ground_truth_model_fires_in_its_step_and_one_incident_holds_them() {
    for lab in committed_labs() {
        let data = TempDir::new("pol");
        replay_ok(
            data.path(),
            &[
                &fixture(&lab, "baseline.pcap"),
                &fixture(&lab, "attack.pcap"),
            ],
        );
        let alerts = alerts(data.path());
        let windows = step_windows(&lab);
        let steps = ground_truth(&lab);
        let attacker = steps[0].source.to_string();
        let mut wanted_models = BTreeSet::new();
        for step in &steps {
            let (begin, end) = windows[&step.step];
            for model in &step.detections {
                wanted_models.insert(model.clone());
                let hit = alerts.iter().any(|a| {
                    let t = eve_epoch(a["timestamp"].as_str().unwrap_or(""));
                    a["alert"]["signature"] == model.as_str()
                        && a["src_ip"] == attacker.as_str()
                        && t >= begin - SLACK_S
                        && t <= end + SLACK_S
                });
                assert!(
                    hit,
                    "{lab}: step {} ({begin:.1}..{end:.1}) should raise {model} for {attacker}; \
                     raised: {:#?}",
                    step.step,
                    alerts
                        .iter()
                        .map(|a| (
                            a["alert"]["signature"].clone(),
                            eve_epoch(a["timestamp"].as_str().unwrap_or("")) - begin
                        ))
                        .collect::<Vec<_>>()
                );
            }
        }
        // Nothing is blamed on anyone else.
        for alert in &alerts {
            assert_eq!(alert["src_ip"], attacker.as_str(), "{lab}: {alert}");
        }

        let incidents: Vec<Value> = serde_json::from_slice(
            &std::fs::read(data.path().join("incidents.json")).expect("incidents.json"),
        )
        .expect("a JSON array");
        assert_eq!(incidents.len(), 1, "{lab}: one incident: {incidents:#?}");
        let incident = &incidents[0];
        assert_eq!(incident["device"], attacker.as_str());
        let in_timeline: BTreeSet<String> = incident["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .filter_map(|t| t["model"].as_str().map(String::from))
            .collect();
        assert!(
            wanted_models.is_subset(&in_timeline),
            "{lab}: missing from the incident: {:?}",
            wanted_models.difference(&in_timeline).collect::<Vec<_>>()
        );
        let phases: Vec<&str> = incident["phases"]
            .as_array()
            .expect("phases")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        for phase in [
            "Initial Access",
            "Credential Access",
            "Discovery",
            "Lateral Movement",
        ] {
            assert!(phases.contains(&phase), "{lab}: phases {phases:?}");
        }
        let summary = incident["summary"].as_str().expect("summary");
        assert!(summary.starts_with(&attacker), "{lab}: {summary}");
    }
}

#[test]
fn benign_traffic_and_another_normal_day_raise_nothing_after_the_baseline() {
    for lab in committed_labs() {
        let data = TempDir::new("pol-benign");
        replay_ok(
            data.path(),
            &[
                &fixture(&lab, "baseline.pcap"),
                &fixture(&lab, "benign-noise.pcap"),
            ],
        );
        assert_eq!(alerts(data.path()), Vec::<Value>::new(), "{lab}");
        // Another normal week after the learned one (the same traffic a week later): the
        // models know it and stay quiet.
        let later = data.path().join("next-week.pcap");
        shifted(&fixture(&lab, "baseline.pcap"), 604_800, &later);
        replay_ok(data.path(), &[&later]);
        assert_eq!(alerts(data.path()), Vec::<Value>::new(), "{lab}: next week");
    }
}

#[test]
fn a_restart_between_baseline_and_attack_gives_the_same_breaches() {
    for lab in committed_labs() {
        let baseline = fixture(&lab, "baseline.pcap");
        let attack = fixture(&lab, "attack.pcap");
        let once = TempDir::new("pol-once");
        replay_ok(once.path(), &[&baseline, &attack]);
        let twice = TempDir::new("pol-twice");
        replay_ok(twice.path(), &[&baseline]);
        replay_ok(twice.path(), &[&attack]);
        assert_eq!(
            breach_set(twice.path()),
            breach_set(once.path()),
            "{lab}: learned state carried over the restart"
        );
        assert!(!breach_set(once.path()).is_empty());
    }
}

#[test]
fn a_restart_in_the_middle_of_the_attack_gives_the_same_breaches() {
    for lab in committed_labs() {
        let baseline = fixture(&lab, "baseline.pcap");
        let attack = fixture(&lab, "attack.pcap");
        // Cut between two steps halfway through, where no connection is open.
        let windows = step_windows(&lab);
        let mut steps: Vec<(f64, f64)> = windows
            .iter()
            .filter(|(name, _)| name.as_str() != "capture")
            .map(|(_, w)| *w)
            .collect();
        steps.sort_by(|a, b| a.0.total_cmp(&b.0));
        let middle = steps.len() / 2;
        let cut = (steps[middle - 1].1 + steps[middle].0) / 2.0;
        let parts = TempDir::new("pol-parts");
        let first = parts.path().join("first.pcap");
        let second = parts.path().join("second.pcap");
        for (path, bound) in [(&first, "-B"), (&second, "-A")] {
            let status = Command::new("editcap")
                .arg(bound)
                .arg(format!("{cut:.6}"))
                .arg(&attack)
                .arg(path)
                .status()
                .expect("editcap runs (./setup.sh installs tshark's tools)");
            assert!(status.success());
        }
        let once = TempDir::new("pol-whole");
        replay_ok(once.path(), &[&baseline, &attack]);
        let split = TempDir::new("pol-split");
        replay_ok(split.path(), &[&baseline, &first]);
        replay_ok(split.path(), &[&second]);
        assert_eq!(
            breach_set(split.path()),
            breach_set(once.path()),
            "{lab}: cut at {cut}"
        );
    }
}

#[test]
fn without_the_baseline_no_hostname_change_is_claimed() {
    for lab in committed_labs() {
        let data = TempDir::new("pol-cold");
        replay_ok(data.path(), &[&fixture(&lab, "attack.pcap")]);
        let claimed: Vec<Value> = alerts(data.path())
            .into_iter()
            .filter(|a| a["alert"]["signature"] == "Device / Unusual NTLM Hostname")
            .collect();
        assert!(claimed.is_empty(), "{lab}: {claimed:#?}");
    }
}
