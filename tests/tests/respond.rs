//! Responses end to end, through the real binary and the signed responder plugin: after the
//! lab's attack the attacker (and only the attacker) has ports 445 and 9401 blocked on the scan
//! and SMB models and its egress blocked in answer to the analyst's incident, recorded in
//! `actions.json`; benign traffic asks for nothing; in human mode nothing
//! is enforced until an operator confirms, and clearing lifts it; actions in force survive a
//! restart until they end.

use serde_json::Value;
use vigil::respond::Actions;
use vigil_tests::lab::{committed_labs, fixture, ground_truth, shifted};
use vigil_tests::workspace::{replay_ok, replay_with, saved_actions, vigil_ok, TempDir};

fn responses(actions: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = actions.iter().map(|a| a["response"].to_string()).collect();
    names.sort();
    names
}

/// "packets blocked by responses  N" from the run's summary.
fn blocked(stdout: &[u8]) -> u64 {
    String::from_utf8_lossy(stdout)
        .lines()
        .find_map(|l| l.strip_prefix("packets blocked by responses"))
        .and_then(|rest| rest.trim().parse().ok())
        .expect("summary line")
}

/// The lab's normal week then its attack, replayed into `data` with `config` as vigil.toml;
/// the run must succeed.
fn replay_lab_with_config(lab: &str, data: &TempDir, config: &str) -> std::process::Output {
    let path = data.path().join("vigil.toml");
    std::fs::write(&path, config).expect("config");
    let out = replay_with(
        data.path(),
        &["--config", path.to_str().expect("utf-8")],
        &[&fixture(lab, "baseline.pcap"), &fixture(lab, "attack.pcap")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_attacker_is_blocked_and_nobody_else() {
    for lab in committed_labs() {
        let attacker = ground_truth(&lab)[0].source.to_string();
        let data = TempDir::new("respond");
        let out = replay_ok(
            data.path(),
            &[
                &fixture(&lab, "baseline.pcap"),
                &fixture(&lab, "attack.pcap"),
            ],
        );
        let recorded = saved_actions(data.path());
        assert!(
            recorded.iter().all(|a| a["device"] == attacker.as_str()),
            "{lab}: {recorded:#?}"
        );
        assert!(
            recorded.iter().all(|a| a["status"]["state"] == "active"),
            "{lab}: {recorded:#?}"
        );
        assert_eq!(
            responses(&recorded),
            [
                r#""BlockEgress""#,
                r#"{"BlockPort":445}"#,
                r#"{"BlockPort":9401}"#
            ],
            "{lab}"
        );
        assert!(blocked(&out.stdout) > 0, "{lab}: nothing enforced");
        // Cutting the device off answers the analyst's incident, by its id.
        let incidents: Value = serde_json::from_str(
            &std::fs::read_to_string(data.path().join("incidents.json")).expect("incidents"),
        )
        .expect("JSON");
        let egress = recorded
            .iter()
            .find(|a| a["response"] == "BlockEgress")
            .expect("egress blocked");
        assert_eq!(egress["incident"], incidents[0]["id"], "{lab}: {egress:#}");

        // Restart ten minutes later: still in force, the attacker's traffic still dropped.
        let later = TempDir::new("respond-later");
        let attack_later = later.path().join("attack-later.pcap");
        shifted(&fixture(&lab, "attack.pcap"), 600, &attack_later);
        let again = replay_ok(data.path(), &[&attack_later]);
        assert!(
            blocked(&again.stdout) > 0,
            "{lab}: not enforced after a restart"
        );
        // A day later every action has ended.
        let next_day = later.path().join("attack-next-day.pcap");
        shifted(&fixture(&lab, "benign-noise.pcap"), 86_400 * 2, &next_day);
        let quiet = replay_ok(data.path(), &[&next_day]);
        assert_eq!(blocked(&quiet.stdout), 0, "{lab}");
        assert!(
            saved_actions(data.path())
                .iter()
                .filter(|a| a["response"] == "BlockEgress")
                .all(|a| a["status"]["state"] == "expired"),
            "{lab}: {:#?}",
            saved_actions(data.path())
        );
    }
}

#[test]
fn benign_traffic_asks_for_nothing() {
    for lab in committed_labs() {
        let data = TempDir::new("respond-benign");
        replay_ok(
            data.path(),
            &[
                &fixture(&lab, "baseline.pcap"),
                &fixture(&lab, "benign-noise.pcap"),
            ],
        );
        assert!(saved_actions(data.path()).is_empty(), "{lab}");
    }
}

#[test]
fn human_mode_enforces_only_what_an_operator_confirms() {
    let lab = committed_labs().into_iter().next().expect("a lab");
    let data = TempDir::new("respond-human");
    let out = replay_lab_with_config(&lab, &data, "[plugins.responder]\nmode = \"human\"\n");
    assert_eq!(blocked(&out.stdout), 0, "nothing before confirmation");
    let pending = saved_actions(data.path());
    assert!(!pending.is_empty());
    assert!(pending.iter().all(|a| a["status"]["state"] == "pending"));
    let attacker: std::net::IpAddr = pending[0]["device"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .expect("device");
    let id = pending[0]["id"].as_u64().expect("id").to_string();
    let now = vigil::bundle::text::unix_now();
    let any_peer = std::net::IpAddr::from([10, 0, 0, 1]);
    let data_dir = data.path().to_str().expect("utf-8");
    let confirmed = vigil_ok(&[
        "actions",
        "confirm",
        "--by",
        "alice-soc",
        "--data-dir",
        data_dir,
        &id,
    ]);
    assert!(confirmed.contains("active until"), "{confirmed}");
    let table = Actions::open(data.path()).expect("actions");
    let response = &pending[0]["response"];
    let port = response["BlockPort"].as_u64().map(|p| p as u16);
    assert!(table
        .table()
        .drops(attacker, any_peer, port.or(Some(445)), now + 1));
    let record = saved_actions(data.path());
    let audit = &record[0]["audit"];
    assert!(
        audit
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["who"] == "alice-soc")),
        "{audit:#}"
    );
    vigil_ok(&[
        "actions",
        "clear",
        "--by",
        "alice-soc",
        "--data-dir",
        data_dir,
        &id,
    ]);
    let table = Actions::open(data.path()).expect("actions");
    assert!(!table
        .table()
        .drops(attacker, any_peer, port.or(Some(445)), now + 1));
    assert_eq!(saved_actions(data.path())[0]["status"]["state"], "cleared");
}

#[test]
fn enforcing_the_pattern_of_life_keeps_what_the_device_used_before() {
    let lab = committed_labs().into_iter().next().expect("a lab");
    let data = TempDir::new("respond-pattern");
    let out = replay_lab_with_config(
        &lab,
        &data,
        "[plugins.responder]\n\
         incident_rules = []\n\
         rules = [{ models = [\"Device / Network Scan\"], responses = [\"EnforcePatternOfLife\"] }]\n",
    );
    let recorded = saved_actions(data.path());
    assert_eq!(recorded.len(), 1, "{recorded:#?}");
    let allowed = recorded[0]["allowed"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !allowed.is_empty(),
        "the normal week's services are kept: {recorded:#?}"
    );
    // The scan's targets were not part of the normal week; its later traffic is blocked.
    assert!(blocked(&out.stdout) > 0);
    // What the device did in its normal week is what passes: every kept service was used then
    // (TCP and UDP by port; ICMP flows carry the code where a port would be).
    let device = recorded[0]["device"].as_str().expect("device");
    let baseline_services = vigil_tests::logs::tshark_fields(
        &fixture(&lab, "baseline.pcap"),
        &format!(
            "ip.src == {device} && ((tcp.flags.syn == 1 && tcp.flags.ack == 0) || udp || icmp)"
        ),
        &["ip.dst", "tcp.dstport", "udp.dstport", "icmp.code"],
    );
    for service in &allowed {
        let (peer, port) = (service[0].as_str().expect("peer"), service[1].to_string());
        assert!(
            baseline_services
                .iter()
                .any(|f| f[0] == peer && f[1..].contains(&port)),
            "{peer}:{port} was not used in the normal week"
        );
    }
}
