//! Tap mode on real traffic: the appliance listens on a port of a hub (a Linux bridge that
//! forgets every MAC, so it floods every frame to every port, as a mirror port sees them). An
//! attacker holds a TCP connection open to a server's port 9401 and scans; once the responder
//! blocks 9401 for it, the appliance tears the live connection down with injected RSTs, which
//! the attacker's own TCP stack accepts.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::live::{skip_live, syn_scan, LiveVigil};
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::workspace::{plugin_dir, saved_actions, TempDir};

const SERVER: &str = "10.213.0.1";
const ATTACKER: &str = "10.213.0.2";

fn active_actions(data: &std::path::Path) -> Vec<Value> {
    saved_actions(data)
        .into_iter()
        .filter(|a| a["status"]["state"] == "active")
        .collect()
}

#[test]
fn a_blocked_connection_is_torn_down_by_injected_resets() {
    if skip_live() {
        return;
    }
    let hub = Netns::unique().expect("namespace");
    let attacker = Netns::unique().expect("namespace");
    let server = Netns::unique().expect("namespace");
    let appliance = Netns::unique().expect("namespace");
    let ports: Vec<String> = (0..6).map(|_| unique_name()).collect();
    let _pairs = [
        VethPair::new(
            &attacker,
            &ports[0],
            &hub,
            &ports[1],
            &format!("{ATTACKER}/24"),
            "10.214.0.1/30",
        )
        .expect("veth"),
        VethPair::new(
            &server,
            &ports[2],
            &hub,
            &ports[3],
            &format!("{SERVER}/24"),
            "10.214.0.5/30",
        )
        .expect("veth"),
        VethPair::new(
            &appliance,
            &ports[4],
            &hub,
            &ports[5],
            "10.214.0.9/30",
            "10.214.0.13/30",
        )
        .expect("veth"),
    ];
    hub.run(
        "ip",
        &["link", "add", "hub0", "type", "bridge", "ageing_time", "0"],
    )
    .expect("bridge");
    for port in [&ports[1], &ports[3], &ports[5]] {
        hub.run("ip", &["link", "set", port, "master", "hub0"])
            .expect("bridge port");
    }
    hub.run("ip", &["link", "set", "hub0", "up"])
        .expect("bridge up");
    server
        .spawn("socat", &["TCP-LISTEN:9401,fork,reuseaddr", "EXEC:cat"])
        .expect("echo server");
    std::thread::sleep(Duration::from_millis(300));

    let work = TempDir::new("tap");
    let config = work.path().join("vigil.toml");
    std::fs::write(&config, "[plugins.responder]\nduration_secs = 600\n").expect("config");
    let data = work.path().join("data");
    let plugins = plugin_dir();
    let vigil = LiveVigil::start(
        &appliance,
        &[
            "--iface",
            &ports[4],
            "--mode",
            "generic",
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--plugins",
            plugins.to_str().expect("utf-8"),
            "--config",
            config.to_str().expect("utf-8"),
        ],
    );

    // A live connection that sends a line every 50 ms, as an interactive session would.
    let mut session = Command::new("ip")
        .args(["netns", "exec", attacker.name(), "sh", "-c"])
        .arg(format!(
            "while true; do echo x; sleep 0.05; done | socat - TCP:{SERVER}:9401"
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("session");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        session.try_wait().expect("status").is_none(),
        "the session holds"
    );

    syn_scan(&attacker, SERVER, "1-1000");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !active_actions(&data)
        .iter()
        .any(|a| a["response"]["BlockPort"] == 9401)
    {
        assert!(Instant::now() < deadline, "no block of 9401 came");
        std::thread::sleep(Duration::from_millis(100));
    }
    let blocked_at = Instant::now();
    let ended = loop {
        if let Some(status) = session.try_wait().expect("status") {
            break status;
        }
        if blocked_at.elapsed() > Duration::from_secs(5) {
            let _ = session.kill();
            panic!("the session survived the block");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = session.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(!ended.success(), "socat ended cleanly: {stderr}");
    // The RST arrives between two writes: the next write fails with ECONNRESET or, if the
    // reset was already taken, EPIPE.
    assert!(
        stderr.contains("Connection reset by peer") || stderr.contains("Broken pipe"),
        "{stderr}"
    );
    let _ = Command::new("ip")
        .args([
            "netns",
            "exec",
            attacker.name(),
            "pkill",
            "-f",
            "sleep 0.05",
        ])
        .status();
    assert!(vigil.stop().success());
}
