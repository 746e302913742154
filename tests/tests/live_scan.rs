//! Live: `vigil run` captures with AF_XDP on one end of a veth pair in a namespace this test
//! makes, a real nmap scan comes from the other end, and `Device / Network Scan` lands in
//! eve.json. In native (driver) mode and in generic (SKB) mode; everything is removed after,
//! pass or fail.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::netns::{skip_without_root, unique_name, Netns, VethPair};
use vigil_tests::workspace::{plugin_dir, vigil_bin, TempDir};

/// Kills the appliance if the test ends before it was stopped cleanly.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nmap_available() -> bool {
    Command::new("nmap")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn network_scan_alerts(eve: &std::path::Path, attacker: &str) -> Vec<Value> {
    std::fs::read_to_string(eve)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|a| a["alert"]["signature"] == "Device / Network Scan" && a["src_ip"] == attacker)
        .collect()
}

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
    let mut child = Command::new("ip")
        .args(["netns", "exec", appliance.name()])
        .arg(vigil_bin())
        .args(["run", "--iface", &if_a, "--mode", mode, "--data-dir"])
        .arg(data.path())
        .arg("--plugins")
        .arg(plugin_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vigil starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut running = Running(child);
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut log = Vec::new();
    let capturing = loop {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                let found = line.contains("capturing on");
                log.push(line.clone());
                if found {
                    break line;
                }
            }
            Err(_) => panic!("vigil did not start capturing in {mode} mode: {log:#?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{log:#?}");
    };
    let expected_mode = if mode == "native" {
        "Native"
    } else {
        "Generic"
    };
    assert!(capturing.contains(expected_mode), "{capturing}");

    let target = pair.ip_a().to_string();
    let scan = attacker
        .run(
            "nmap",
            &[
                "-n",
                "-Pn",
                // AF_XDP takes the appliance end's ARP too: nmap must use the pinned neighbour
                // through the kernel instead of resolving it on the wire itself.
                "--send-ip",
                "--disable-arp-ping",
                "-sS",
                "-T4",
                "--max-retries",
                "0",
                "-p",
                "1-200",
                &target,
            ],
        )
        .expect("nmap runs");
    assert!(scan.contains("Nmap done"), "{scan}");

    let eve = data.path().join("eve.json");
    let attacker_ip = pair.ip_b().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while network_scan_alerts(&eve, &attacker_ip).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let alerts = network_scan_alerts(&eve, &attacker_ip);
    log.extend(lines.try_iter());
    assert_eq!(
        alerts.len(),
        1,
        "one scan, one breach: {alerts:#?}\neve.json: {}\nvigil: {log:#?}",
        std::fs::read_to_string(&eve).unwrap_or_default()
    );
    assert_eq!(alerts[0]["dest_ip"], target.as_str());
    assert_eq!(
        alerts[0]["vigil"]["destinations"],
        serde_json::json!([target])
    );

    // SIGTERM: a clean shutdown, state saved.
    let pid = running.0.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let stop_deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = running.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < stop_deadline, "vigil ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "clean exit after SIGTERM: {exit:?}");
    assert!(data.path().join("state").join("network-scan.bin").is_file());
}

#[test]
fn live_nmap_scan_is_caught_in_native_mode() {
    if skip_without_root() || !nmap_available() {
        eprintln!("skipping: needs root, iproute2 and nmap (./setup.sh installs them)");
        return;
    }
    live_scan("native", 1);
}

#[test]
fn live_nmap_scan_is_caught_in_generic_mode() {
    if skip_without_root() || !nmap_available() {
        eprintln!("skipping: needs root, iproute2 and nmap (./setup.sh installs them)");
        return;
    }
    live_scan("generic", 2);
}
