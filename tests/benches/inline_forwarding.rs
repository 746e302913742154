//! Forwarding throughput of the inline bridge (`vigil run --inline`) on veth pairs in namespaces
//! made here, with an empty enforcement table and with one holding 100k devices' rules, against
//! the plain veth path measured in the same run. Needs root.
//!
//! `cargo bench -p vigil-tests --bench inline_forwarding` (after ./setup.sh).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vigil_tests::live::LiveVigil;
use vigil_tests::netns::{skip_without_root, unique_name, Netns, VethPair};
use vigil_tests::workspace::{plugin_dir, TempDir};

const MB: u64 = 256;
const RUNS: usize = 3;
const FULL_TABLE: u32 = 100_000;

/// Time to push `MB` megabytes over one TCP connection from `client` to `server_ip`.
fn transfer(client: &Netns, server: &Netns, server_ip: &str) -> Duration {
    let mut sink = Command::new("ip")
        .args(["netns", "exec", server.name(), "socat", "-u"])
        .args(["TCP-LISTEN:5001,reuseaddr", "OPEN:/dev/null"])
        .spawn()
        .expect("sink");
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let status = Command::new("ip")
        .args(["netns", "exec", client.name(), "sh", "-c"])
        .arg(format!(
            "dd if=/dev/zero bs=64K count={} 2>/dev/null | socat -u - TCP:{server_ip}:5001",
            MB * 16
        ))
        .stdout(Stdio::null())
        .status()
        .expect("source");
    let elapsed = start.elapsed();
    assert!(status.success(), "transfer failed");
    let _ = sink.wait();
    elapsed
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn gbits(time: Duration) -> f64 {
    (MB * 8 * 1_048_576) as f64 / time.as_secs_f64() / 1e9
}

/// An actions.json with a port block in force for `count` other devices.
fn full_table(data: &Path, count: u32) {
    let actions: Vec<serde_json::Value> = (0..count)
        .map(|n| {
            let [a, b, c, d] = (0x0b00_0000u32 + n).to_be_bytes();
            serde_json::json!({
                "id": n + 1,
                "response": {"BlockPort": 445},
                "device": format!("{a}.{b}.{c}.{d}"),
                "reason": "benchmark",
                "incident": null,
                "duration_secs": 3600,
                "requested_by": "bench",
                "requested_at": 0,
                "status": {"state": "active", "since": 0, "until": u64::MAX / 2},
                "audit": [],
            })
        })
        .collect();
    std::fs::create_dir_all(data).expect("data dir");
    std::fs::write(
        data.join("actions.json"),
        serde_json::to_vec(&serde_json::json!({ "actions": actions })).expect("json"),
    )
    .expect("actions.json");
}

fn main() {
    if skip_without_root() {
        eprintln!("skipping: the inline benchmark needs root");
        return;
    }
    // The plain path: two namespaces on one veth pair.
    let client = Netns::unique().expect("namespace");
    let server = Netns::unique().expect("namespace");
    let _direct = VethPair::new(
        &client,
        &unique_name(),
        &server,
        &unique_name(),
        "10.220.0.2/24",
        "10.220.0.1/24",
    )
    .expect("veth");
    let plain = median(
        (0..RUNS)
            .map(|_| transfer(&client, &server, "10.220.0.1"))
            .collect(),
    );

    // The bridged path: client -> appliance (two AF_XDP sockets) -> server.
    let west_client = Netns::unique().expect("namespace");
    let appliance = Netns::unique().expect("namespace");
    let east_server = Netns::unique().expect("namespace");
    let names: Vec<String> = (0..4).map(|_| unique_name()).collect();
    let _west = VethPair::new(
        &west_client,
        &names[0],
        &appliance,
        &names[1],
        "10.221.0.2/24",
        "10.222.0.1/30",
    )
    .expect("veth");
    let _east = VethPair::new(
        &appliance,
        &names[2],
        &east_server,
        &names[3],
        "10.222.0.5/30",
        "10.221.0.1/24",
    )
    .expect("veth");
    let plugins = plugin_dir();
    let mut rows = vec![("plain veth".to_string(), plain, 1.0)];
    for (label, rules) in [
        ("inline bridge, empty table", 0),
        ("inline bridge, 100k rules", FULL_TABLE),
    ] {
        let work = TempDir::new("bench-inline");
        let data = work.path().join("data");
        full_table(&data, rules);
        let vigil = LiveVigil::start(
            &appliance,
            &[
                "--inline",
                &format!("{},{}", names[1], names[2]),
                "--mode",
                "native",
                "--data-dir",
                data.to_str().expect("utf-8"),
                "--plugins",
                plugins.to_str().expect("utf-8"),
            ],
        );
        let time = median(
            (0..RUNS)
                .map(|_| transfer(&west_client, &east_server, "10.221.0.1"))
                .collect(),
        );
        assert!(vigil.stop().success());
        rows.push((
            label.to_string(),
            time,
            plain.as_secs_f64() / time.as_secs_f64(),
        ));
    }
    println!("TCP throughput, {MB} MB per transfer, median of {RUNS}, same run");
    println!("{}", "-".repeat(72));
    for (label, time, ratio) in rows {
        println!(
            "{label:<30} {:>6.2} Gbit/s  ({:.2} s)  = {ratio:.2}x plain veth",
            gbits(time),
            time.as_secs_f64()
        );
    }
}
