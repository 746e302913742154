//! Replaying the lab's real-tool captures through the `vigil` binary raises the foundation's
//! scan models for the attacker, inside each step's window, with the step's destinations; the
//! benign capture raises nothing.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use serde_json::Value;
use vigil_tests::lab::{committed_labs, fixture, ground_truth};
use vigil_tests::workspace::{eve_records, replay, TempDir};

/// The models this plugins provide; the rest of the ground truth belongs to later work.
const SCAN_MODELS: [&str; 5] = [
    "Device / Network Scan",
    "Device / Network Range Scan",
    "Device / RDP Scan",
    "Device / UDP Enumeration",
    "Device / Suspicious SMB Scanning Activity",
];
/// A scan model decides on the packet that crosses its threshold, so it must fire before the
/// step is over; this allows for the lab's "about ±1 s" offsets.
const SLACK_S: f64 = 1.0;

fn first_packet_secs(pcap: &Path) -> f64 {
    let bytes = std::fs::read(pcap).expect("pcap");
    let secs = u32::from_le_bytes(bytes[24..28].try_into().expect("record header"));
    let micros = u32::from_le_bytes(bytes[28..32].try_into().expect("record header"));
    f64::from(secs) + f64::from(micros) / 1e6
}

fn alert_time(alert: &Value) -> f64 {
    // "2026-11-28T04:42:33.304350+0000": the date is the capture's, so seconds of day suffice
    // once both sides are taken modulo a day.
    let ts = alert["timestamp"].as_str().expect("timestamp");
    let time = &ts[11..26];
    let h: f64 = time[0..2].parse().expect("hour");
    let m: f64 = time[3..5].parse().expect("minute");
    let s: f64 = time[6..].parse().expect("second");
    h * 3600.0 + m * 60.0 + s
}

fn addresses(alert: &Value, field: &str) -> BTreeSet<IpAddr> {
    alert["vigil"][field]
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v.as_str().expect("address").parse().expect("ip"))
        .collect()
}

fn ports(alert: &Value) -> BTreeSet<u16> {
    alert["vigil"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|v| v.as_u64().expect("port") as u16)
        .collect()
}

fn check_lab(lab: &str) {
    let attack = fixture(lab, "attack.pcap");
    let data = TempDir::new("replay");
    let out = replay(data.path(), &[&attack]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alerts = eve_records(data.path());
    let start = first_packet_secs(&attack) % 86_400.0;
    let mut raised: BTreeSet<String> = BTreeSet::new();
    for step in ground_truth(lab) {
        let wanted = step
            .detections
            .iter()
            .filter(|d| SCAN_MODELS.contains(&d.as_str()));
        for model in wanted {
            let in_step: Vec<&Value> = alerts
                .iter()
                .filter(|a| a["alert"]["signature"] == model.as_str())
                .filter(|a| a["src_ip"] == step.source.to_string())
                .filter(|a| {
                    let t = alert_time(a) - start;
                    t >= step.start_s - SLACK_S && t <= step.end_s + SLACK_S
                })
                .collect();
            assert!(
                !in_step.is_empty(),
                "{lab}: step {} should raise {model} for {} between {}s and {}s; alerts: {:#?}",
                step.step,
                step.source,
                step.start_s,
                step.end_s,
                alerts
                    .iter()
                    .map(|a| (a["alert"]["signature"].clone(), alert_time(a) - start))
                    .collect::<Vec<_>>()
            );
            let allowed: BTreeSet<IpAddr> = step.destinations.iter().copied().collect();
            for alert in &in_step {
                let dests = addresses(alert, "destinations");
                assert!(
                    dests.is_subset(&allowed),
                    "{lab}: {model} in step {} names destinations outside the step: {:?}",
                    step.step,
                    dests.difference(&allowed).collect::<Vec<_>>()
                );
                let threshold: usize = alert["vigil"]["evidence"]["threshold"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .expect("threshold evidence");
                assert!(
                    !dests.is_empty()
                        && alert["vigil"]["evidence"]["distinct_targets"]
                            .as_str()
                            .and_then(|t| t.parse::<usize>().ok())
                            .is_some_and(|n| n >= threshold)
                );
                if !step.ports.is_empty() {
                    let allowed_ports: BTreeSet<u16> = step.ports.iter().copied().collect();
                    assert!(
                        ports(alert).is_subset(&allowed_ports),
                        "{lab}: {model} ports {:?} not in step {}'s {:?}",
                        ports(alert),
                        step.step,
                        allowed_ports
                    );
                }
                assert_eq!(alert["event_type"], "alert");
                assert!(alert["vigil"]["mitre"]
                    .as_array()
                    .is_some_and(|m| !m.is_empty()));
                assert!(alert["vigil"]["score"].as_u64().is_some_and(|s| s > 0));
            }
            raised.insert(model.clone());
        }
    }
    let expected: BTreeSet<String> = SCAN_MODELS.iter().map(|m| m.to_string()).collect();
    assert_eq!(
        raised, expected,
        "{lab}: every scan model is in the ground truth and raised"
    );
    // Nothing is blamed on a device other than the attacker.
    let attacker = ground_truth(lab)[0].source.to_string();
    for alert in &alerts {
        assert_eq!(alert["src_ip"], attacker.as_str(), "{lab}: {alert}");
    }
}

#[test]
fn attack_captures_raise_the_scan_models_for_the_attacker_in_each_step() {
    let labs = committed_labs();
    assert!(
        labs.contains(&"lab".to_string()),
        "tests/fixtures/lab is committed"
    );
    for lab in labs {
        check_lab(&lab);
    }
}

#[test]
fn benign_noise_raises_nothing() {
    for lab in committed_labs() {
        let data = TempDir::new("benign");
        let out = replay(data.path(), &[&fixture(&lab, "benign-noise.pcap")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(eve_records(data.path()), Vec::<Value>::new(), "{lab}");
    }
}

#[test]
fn baseline_week_raises_nothing() {
    for lab in committed_labs() {
        let data = TempDir::new("baseline");
        let out = replay(data.path(), &[&fixture(&lab, "baseline.pcap")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(eve_records(data.path()), Vec::<Value>::new(), "{lab}");
    }
}
