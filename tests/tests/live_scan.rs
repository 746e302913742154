//! Live: `vigil run` captures with AF_XDP on one end of a veth pair in a namespace this test
//! makes, a real nmap scan comes from the other end, and `Device / Network Scan` lands in
//! eve.json. In native (driver) mode and in generic (SKB) mode; everything is removed after,
//! pass or fail.

use std::time::Duration;

use vigil_tests::live::{skip_live, syn_scan, wait_for_alerts, LiveVigil};
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::workspace::{plugin_dir, TempDir};

fn live_scan(mode: &str, subnet: u8) {
    let appliance = Netns::unique().expect("namespace");
    let attacker = Netns::unique().expect("namespace");
    let (if_a, if_b) = (unique_name(), unique_name());
    let pair = VethPair::new(
        &appliance,
        &if_a,
        &attacker,
        &if_b,
        &format!("10.203.{subnet}.1/24"),
        &format!("10.203.{subnet}.2/24"),
    )
    .expect("veth pair");
    // AF_XDP takes every frame on the appliance's end, ARP included.
    pair.pin_neighbours().expect("neighbours");
    let data = TempDir::new("live");
    let plugins = plugin_dir();
    let mut vigil = LiveVigil::start(
        &appliance,
        &[
            "--iface",
            &if_a,
            "--mode",
            mode,
            "--data-dir",
            data.path().to_str().expect("utf-8"),
            "--plugins",
            plugins.to_str().expect("utf-8"),
        ],
    );
    let expected_mode = if mode == "native" {
        "Native"
    } else {
        "Generic"
    };
    assert!(
        vigil.capturing.contains(expected_mode),
        "{}",
        vigil.capturing
    );

    let target = pair.ip_a().to_string();
    syn_scan(&attacker, &target, "1-200");

    let eve = data.path().join("eve.json");
    let attacker_ip = pair.ip_b().to_string();
    let alerts = wait_for_alerts(
        &eve,
        "Device / Network Scan",
        &attacker_ip,
        Duration::from_secs(20),
    );
    assert_eq!(
        alerts.len(),
        1,
        "one scan, one breach: {alerts:#?}\neve.json: {}\nvigil: {:#?}",
        std::fs::read_to_string(&eve).unwrap_or_default(),
        vigil.log()
    );
    assert_eq!(alerts[0]["dest_ip"], target.as_str());
    assert_eq!(
        alerts[0]["vigil"]["destinations"],
        serde_json::json!([target])
    );

    // SIGTERM: a clean shutdown, state saved.
    let exit = vigil.stop();
    assert!(exit.success(), "clean exit after SIGTERM: {exit:?}");
    assert!(data.path().join("state").join("network-scan.bin").is_file());
}

#[test]
fn live_nmap_scan_is_caught_in_native_mode() {
    if skip_live() {
        return;
    }
    live_scan("native", 1);
}

#[test]
fn live_nmap_scan_is_caught_in_generic_mode() {
    if skip_live() {
        return;
    }
    live_scan("generic", 2);
}
