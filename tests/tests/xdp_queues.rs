//! Live: `vigil run --workers 4` on a veth end with four RX queues binds a socket to every queue
//! and hands each frame to the sensor worker of its address pair. Many real UDP flows (DNS
//! queries, each from its own socket) from the peer's kernel spread over the queues, and the
//! per-queue counters of the status API show every queue carried traffic; every
//! query is in the DNS log; a real nmap scan whose probes land on several queues raises one
//! `Device / Network Scan`. Everything is removed after, pass or fail.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use vigil_tests::live::{api_status, skip_live, syn_scan, wait_for_alerts, LiveVigil};
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::workspace::TempDir;

const QUEUES: usize = 4;
/// Flows sent; with the sender's kernel hashing each socket to one of four TX queues (and so to
/// the peer's RX queue of that index), the chance a queue gets none of 64 is below 1 in 10^7.
const FLOWS: usize = 64;
const TOKEN: &str = "queues-test-token-4b1e07";

/// A DNS query (RFC 1035 4.1) for an A record of `name`.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut query = Vec::new();
    query.extend_from_slice(&id.to_be_bytes());
    // Recursion desired; one question, no records.
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        query.push(u8::try_from(label.len()).expect("short label"));
        query.extend_from_slice(label.as_bytes());
    }
    // Root, type A, class IN.
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

fn flow_name(i: usize) -> String {
    format!("flow{i}.queues.vigil.test")
}

/// The per-queue counters `capture.queues` of the appliance's status API, all of `iface`.
fn queue_packets(appliance: &Netns, iface: &str) -> Vec<(u64, u64)> {
    let status = api_status(appliance, TOKEN);
    status["capture"]["queues"]
        .as_array()
        .unwrap_or_else(|| panic!("capture.queues in {status:#}"))
        .iter()
        .map(|q| {
            let number = |field: &str| {
                q[field]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{field} in {q}"))
            };
            assert_eq!(q["iface"], iface, "{q}");
            assert_eq!(number("rx_dropped"), 0, "{q}");
            assert_eq!(number("rx_invalid_descs"), 0, "{q}");
            (number("queue"), number("packets"))
        })
        .collect()
}

/// Polls the status until `done` holds for the per-queue packet counts (published every 250 ms),
/// up to 10 s; returns the last counts.
fn wait_for_queues(appliance: &Netns, iface: &str, done: impl Fn(&[u64]) -> bool) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let queues = queue_packets(appliance, iface);
        let ids: Vec<u64> = queues.iter().map(|&(id, _)| id).collect();
        assert_eq!(ids, [0, 1, 2, 3], "one socket per RX queue");
        let packets: Vec<u64> = queues.iter().map(|&(_, n)| n).collect();
        if done(&packets) || Instant::now() > deadline {
            return packets;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn every_rx_queue_is_captured_and_a_scan_over_several_queues_is_one_breach() {
    if skip_live() {
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
        "10.203.15.1/24",
        "10.203.15.2/24",
        QUEUES as u32,
    )
    .expect("veth pair");
    // AF_XDP takes every frame on the appliance's end, ARP included.
    pair.pin_neighbours().expect("neighbours");
    let work = TempDir::new("queues");
    // Native mode: veth's generic (SKB) path reports a frame sent on TX queue n as received on
    // queue n-1 (0 for both 0 and 1), so the last queue would never see a frame there.
    let ready = work.path().join("ready.json");
    let mut vigil = LiveVigil::with_api_and(
        &appliance,
        &if_a,
        work.path(),
        TOKEN,
        "",
        &[
            "--protocol-logs",
            "--mode",
            "native",
            "--workers",
            "4",
            "--ready-file",
            ready.to_str().expect("utf-8"),
        ],
    );
    let log = vigil.log().join("\n");
    assert!(log.contains("holding RX queues [0, 1, 2, 3]"), "{log}");
    assert!(log.contains("with 4 sensor worker(s)"), "{log}");
    // veth has no RSS hash; frames go to the worker of their address pair whatever their
    // queue, so both directions still meet.
    assert!(log.contains("sensor worker of their address pair"), "{log}");
    assert!(log.contains("cannot be made symmetric"), "{log}");
    assert!(vigil.capturing.contains(":0,1,2,3"), "{}", vigil.capturing);
    let capture = &api_status(&appliance, TOKEN)["capture"];
    assert_eq!(
        capture["rx_queues"],
        serde_json::json!({ &if_a: [0, 1, 2, 3] }),
        "{capture}"
    );

    // Each flow from its own socket: the sender's kernel picks a TX queue per socket.
    let target = pair.ip_a();
    let sender_ip = pair.ip_b();
    sender
        .thread(move || {
            for i in 0..FLOWS {
                let socket = UdpSocket::bind((sender_ip, 0)).expect("bind");
                let id = u16::try_from(i).expect("few flows");
                socket
                    .send_to(&dns_query(id, &flow_name(i)), (target, 53))
                    .expect("send");
            }
        })
        .join()
        .expect("sender");
    let flows = wait_for_queues(&appliance, &if_a, |packets| packets.iter().all(|&n| n > 0));
    assert!(
        flows.iter().all(|&n| n > 0),
        "every queue carries traffic: {flows:?}\nvigil: {:#?}",
        vigil.log()
    );

    syn_scan(&sender, &target.to_string(), "1-200");
    let alerts = wait_for_alerts(
        &work.path().join("data").join("eve.json"),
        "Device / Network Scan",
        &sender_ip.to_string(),
        Duration::from_secs(20),
    );
    assert_eq!(alerts.len(), 1, "one scan, one breach: {alerts:#?}");
    assert_eq!(alerts[0]["dest_ip"], target.to_string());
    // 200 probes over four queues: several carried a share, not a stray frame or two.
    let scanned = wait_for_queues(&appliance, &if_a, |packets| {
        packets.iter().sum::<u64>() >= flows.iter().sum::<u64>() + 200
    });
    let carriers = scanned
        .iter()
        .zip(&flows)
        .filter(|&(after, before)| after - before >= 20)
        .count();
    assert!(
        carriers >= 2,
        "the scan landed on several queues: {flows:?} -> {scanned:?}"
    );

    eprintln!("packets per queue: flows {flows:?}, after the scan {scanned:?}");
    let exit = vigil.stop();
    assert!(exit.success(), "clean exit after SIGTERM: {exit:?}");
    // Unanswered queries are logged when their flow ends, at the latest on shutdown.
    let dns = std::fs::read_to_string(work.path().join("data").join("proto").join("dns.json"))
        .expect("dns log");
    let queries: Vec<serde_json::Value> = dns
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    for i in 0..FLOWS {
        let name = flow_name(i);
        let seen: Vec<&serde_json::Value> = queries.iter().filter(|q| q["query"] == name).collect();
        assert_eq!(seen.len(), 1, "{name} once in the DNS log: {dns}");
        assert_eq!(seen[0]["id.orig_h"], sender_ip.to_string());
        assert_eq!(seen[0]["trans_id"], i);
    }
}
