//! A signed bundle pushed to a running appliance over its management API, while traffic flows:
//! refused without the right token or when tampered (nothing changes), installed when good, and
//! the new version is the one that catches the next real scan.

use std::process::Output;
use std::time::Duration;

use vigil_tests::live::{output_text, skip_live, syn_scan, wait_for_alerts, LiveVigil};
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::workspace::{build_bundle, dev_signer_key, tamper_wasm, vigil_bin, TempDir};

const TOKEN: &str = "push-test-token-7f3a9c";

fn vigil_in(ns: &Netns, args: &[&str]) -> Output {
    std::process::Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(vigil_bin())
        .args(args)
        .env("VIGIL_LOG", "warn")
        .env_remove("VIGIL_API_TOKEN")
        .output()
        .expect("vigil runs")
}

#[test]
fn a_bundle_pushed_while_traffic_flows_takes_over_and_bad_pushes_change_nothing() {
    if skip_live() {
        return;
    }
    let appliance = Netns::unique().expect("namespace");
    let attacker = Netns::unique().expect("namespace");
    let (if_a, if_b) = (unique_name(), unique_name());
    let pair = VethPair::new(
        &appliance,
        &if_a,
        &attacker,
        &if_b,
        "10.203.9.1/24",
        "10.203.9.2/24",
    )
    .expect("veth pair");
    pair.pin_neighbours().expect("neighbours");
    let work = TempDir::new("push");
    let vigil = LiveVigil::with_api(&appliance, &if_a, work.path(), TOKEN);
    let data = work.path().join("data");
    // Traffic flows through every push.
    attacker
        .spawn("ping", &["-q", "-i", "0.01", &pair.ip_a().to_string()])
        .expect("ping");

    let bundle = work.path().join("network-scan-0.2.0.vbundle");
    build_bundle("network-scan", "0.2.0", &[&dev_signer_key()], &bundle);
    let tampered = work.path().join("tampered.vbundle");
    tamper_wasm(&bundle, &tampered);

    let url = "http://127.0.0.1:8470";
    let push = |token: &str, file: &std::path::Path| {
        vigil_in(
            &appliance,
            &[
                "push",
                "--to",
                url,
                "--token",
                token,
                file.to_str().expect("utf-8"),
            ],
        )
    };
    let wrong = push("not-the-token-at-all", &bundle);
    assert!(!wrong.status.success());
    assert!(
        output_text(&wrong).contains("HTTP 401"),
        "{}",
        output_text(&wrong)
    );
    let bad = push(TOKEN, &tampered);
    assert!(!bad.status.success());
    assert!(
        output_text(&bad).contains("HTTP 422"),
        "{}",
        output_text(&bad)
    );
    assert!(
        output_text(&bad).contains("the wasm was changed after signing"),
        "{}",
        output_text(&bad)
    );
    assert!(
        !data.join("bundles").join("network-scan").exists(),
        "refused pushes wrote nothing"
    );
    let good = push(TOKEN, &bundle);
    assert!(good.status.success(), "{}", output_text(&good));
    assert!(
        output_text(&good).contains("installed plugin network-scan 0.2.0"),
        "{}",
        output_text(&good)
    );

    // The new version catches the next scan.
    syn_scan(&attacker, &pair.ip_a().to_string(), "1-200");
    let alerts = wait_for_alerts(
        &data.join("eve.json"),
        "Device / Network Scan",
        &pair.ip_b().to_string(),
        Duration::from_secs(20),
    );
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["vigil"]["plugin_version"], "0.2.0");
    let exit = vigil.stop();
    assert!(exit.success());
    assert!(data
        .join("bundles")
        .join("network-scan")
        .join("current.vbundle")
        .is_file());
}
