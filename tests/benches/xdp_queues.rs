//! Live capture on every RX queue (`vigil run --iface`) on a veth pair with four queues per end,
//! in namespaces made here: the packet rate Vigil holds without losing frames, against an
//! XDP_DROP program's rate on the same pair in the same run. UDP datagrams from many sockets of
//! the peer namespace (so every queue carries its share), sent as fast as the sender can, then
//! paced at fractions of that. Needs root.
//!
//! `cargo bench -p vigil-tests --bench xdp_queues` (after ./setup.sh).

use std::net::Ipv4Addr;
use std::time::Duration;

use vigil::capture::xdp::{DropAll, XdpMode};
use vigil_tests::live::{api_status, LiveVigil};
use vigil_tests::load::udp_flood;
use vigil_tests::netns::{skip_without_root, unique_name, Netns, VethPair};
use vigil_tests::workspace::TempDir;

const QUEUES: u32 = 4;
const SECONDS: u64 = 3;
const TOKEN: &str = "bench-queues-token-9c2d41";

/// Datagrams to `target` for [`SECONDS`] from `ns` (see [`udp_flood`]).
fn send(ns: &Netns, from: Ipv4Addr, target: Ipv4Addr, rate: Option<u64>) -> u64 {
    udp_flood(ns, from, target, rate, Duration::from_secs(SECONDS))
}

/// veth's per-queue counter `rx_queue_N_<name>`, summed over the queues.
fn veth_counter(ns: &Netns, iface: &str, name: &str) -> u64 {
    let stats = ns.run("ethtool", &["-S", iface]).expect("ethtool -S");
    stats
        .lines()
        .filter_map(|line| {
            let (key, value) = line.trim().split_once(": ")?;
            let queue_counter = key.strip_prefix("rx_queue_")?.split_once('_')?.1;
            (queue_counter == name).then(|| value.parse::<u64>().ok())?
        })
        .sum()
}

/// What the status API counts, summed over the queues.
const COUNTERS: [&str; 4] = [
    "packets",
    "rx_dropped",
    "rx_ring_full",
    "rx_fill_ring_empty_descs",
];

/// The [`COUNTERS`] of Vigil's queues (a frame lost to a full ring is also counted dropped).
fn vigil_counters(ns: &Netns) -> [u64; 4] {
    let status = api_status(ns, TOKEN);
    let queues = status["capture"]["queues"].as_array().cloned();
    let queues = queues.unwrap_or_else(|| panic!("capture.queues in {status:#}"));
    COUNTERS.map(|field| queues.iter().filter_map(|q| q[field].as_u64()).sum())
}

fn per_second(n: u64) -> f64 {
    n as f64 / SECONDS as f64
}

fn main() {
    if skip_without_root() {
        return;
    }
    let appliance = Netns::unique().expect("namespace");
    let sender = Netns::unique().expect("namespace");
    let (if_a, if_b) = (unique_name(), unique_name());
    let pair = VethPair::with_queues(
        &appliance,
        &if_a,
        &sender,
        &if_b,
        "10.215.0.1/24",
        "10.215.0.2/24",
        QUEUES,
    )
    .expect("veth pair");
    pair.pin_neighbours().expect("neighbours");
    let (from, target) = (pair.ip_b(), pair.ip_a());

    println!("live capture, veth with {QUEUES} RX queues, native XDP, {SECONDS} s per row");
    println!(
        "{:<34} {:>12} {:>12} {:>10}",
        "", "offered/s", "handled/s", "lost"
    );
    let iface = if_a.clone();
    let drop = appliance
        .thread(move || DropAll::attach(&iface, XdpMode::Native).map_err(|e| e.to_string()))
        .join()
        .expect("thread")
        .expect("XDP_DROP attaches");
    assert_eq!(drop.attached_mode(), XdpMode::Native);
    let before = veth_counter(&appliance, &if_a, "xdp_drops");
    let sent = send(&sender, from, target, None);
    let dropped = veth_counter(&appliance, &if_a, "xdp_drops") - before;
    std::mem::drop(drop);
    println!(
        "{:<34} {:>12.0} {:>12.0} {:>10}",
        "XDP_DROP program",
        per_second(sent),
        per_second(dropped),
        sent.saturating_sub(dropped)
    );

    let work = TempDir::new("bench-queues");
    let vigil = LiveVigil::with_api_and(
        &appliance,
        &if_a,
        work.path(),
        TOKEN,
        "",
        &["--mode", "native"],
    );
    let mut full_rate = None;
    let mut held = 0.0f64;
    for percent in [None, Some(75), Some(50), Some(25)] {
        let rate = percent.and_then(|p| full_rate.map(|r: u64| r * p / 100));
        let before = vigil_counters(&appliance);
        let sent = send(&sender, from, target, rate);
        // The counters are published every 250 ms.
        std::thread::sleep(Duration::from_millis(600));
        let after = vigil_counters(&appliance);
        let [received, dropped, ring_full, fill_empty] = [0, 1, 2, 3].map(|i| after[i] - before[i]);
        let lost = sent.saturating_sub(received);
        let label = match percent {
            None => "vigil, as fast as the sender can".to_string(),
            Some(p) => format!("vigil, paced at {p}% of that"),
        };
        println!(
            "{label:<34} {:>12.0} {:>12.0} {:>10}  (kernel: rx_dropped {dropped}, ring full \
             {ring_full}, fill ring empty {fill_empty})",
            per_second(sent),
            per_second(received),
            lost,
        );
        full_rate.get_or_insert(sent / SECONDS);
        if lost == 0 {
            held = held.max(per_second(sent));
        }
    }
    println!("vigil held {held:.0} packets/s without losing one");
    assert!(vigil.stop().success());
}
