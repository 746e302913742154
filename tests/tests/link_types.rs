//! Captures of every link type Vigil decodes, made here with real tools: one nmap SYN scan (and a
//! connection that is not HTTP on an HTTP port) captured at once by `tcpdump -i IF` (Ethernet),
//! `tcpdump -i any` (Linux cooked v2, what Debian 12's tcpdump writes) and `tcpdump -i any -y
//! LINUX_SLL` (v1) gives the same flows, breaches and warnings on replay; so do BSD null and loop
//! captures of it, which no tool here writes (no BSD loopback), built by rewriting the Ethernet
//! capture's frames. A scan through a tun device (`tcpdump -i TUN` writes LINKTYPE_RAW) is
//! decoded frame for frame. A capture of a link type Vigil does not decode is named, counted,
//! and fails a run that decoded nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use vigil_tests::lab::fixture;
use vigil_tests::live::{nmap_available, nmap_syn_scan, start_tcpdump, wait_until_written};
use vigil_tests::netns::{skip_without_root, unique_name, Netns, VethPair};
use vigil_tests::pcap::{self, Record};
use vigil_tests::workspace::{models_of, replay, replay_ok, summary_value, TempDir};

const SCANNER: &str = "10.225.0.2";
/// The scanner's end of the tunnel.
const TUN_SCANNER: &str = "10.227.0.1";
/// Routed through the victim's namespace, which answers for the whole /24.
const TARGETS: &str = "10.226.0.1-40";
const SCAN_MODELS: [&str; 4] = [
    "Device / Network Scan",
    "Device / Network Range Scan",
    "Device / RDP Scan",
    "Device / Suspicious SMB Scanning Activity",
];
const LINKTYPE_NULL: u32 = 0;
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_IEEE802_11: u32 = 105;
const LINKTYPE_LOOP: u32 = 108;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_LINUX_SLL2: u32 = 276;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What the scan raises against the scanner: the four scan models, and the meta models their
/// number and kinds raise.
fn scan_models() -> BTreeSet<String> {
    SCAN_MODELS
        .iter()
        .chain(&[
            "Device / Large Number of Model Breaches",
            "Device / Multiple Lateral Movement Model Breaches",
        ])
        .map(|m| m.to_string())
        .collect()
}

/// Each device of a data dir's devices.json: its addresses and its MACs.
fn devices(data_dir: &Path) -> BTreeSet<(Vec<String>, Vec<String>)> {
    let text = std::fs::read_to_string(data_dir.join("devices.json")).expect("devices.json");
    let saved: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let values = |device: &serde_json::Value, list: &str| -> Vec<String> {
        device[list]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["value"].as_str().map(str::to_string))
            .collect()
    };
    saved["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| (values(d, "addresses"), values(d, "macs")))
        .collect()
}

fn warnings(out: &Output) -> Vec<String> {
    text(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .map(str::to_string)
        .collect()
}

/// The scan every capture here records: five ports on 40 hosts.
fn scan(scanner: &Netns) {
    nmap_syn_scan(scanner, TARGETS, "22,80,139,445,3389", &[]);
}

/// A scanner and a victim namespace joined by a veth pair; the victim answers for TARGETS.
fn namespaces() -> (Netns, Netns, String, VethPair) {
    let scanner = Netns::unique().expect("namespace");
    let victim = Netns::unique().expect("namespace");
    let (if_scanner, if_victim) = (unique_name(), unique_name());
    let pair = VethPair::new(
        &scanner,
        &if_scanner,
        &victim,
        &if_victim,
        &format!("{SCANNER}/24"),
        "10.225.0.1/24",
    )
    .expect("veth pair");
    victim
        .run(
            "ip",
            &["route", "add", "local", "10.226.0.0/24", "dev", "lo"],
        )
        .expect("local route");
    (scanner, victim, if_scanner, pair)
}

/// One replay's outcome, compared across link types.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    packets: Option<u64>,
    decoded: Option<u64>,
    flows: Option<u64>,
    breaches: Option<u64>,
    models: BTreeSet<String>,
    warnings: Vec<String>,
}

/// Replays `capture` into `data`; the models are those that alerted on `scanner`.
fn outcome(data: &Path, capture: &Path, scanner: &str) -> Outcome {
    let out = replay_ok(data, &[capture]);
    Outcome {
        packets: summary_value(&out.stdout, "packets"),
        decoded: summary_value(&out.stdout, "decoded"),
        flows: summary_value(&out.stdout, "flows started"),
        breaches: summary_value(&out.stdout, "breaches"),
        models: models_of(data, scanner),
        warnings: warnings(&out),
    }
}

/// The Ethernet capture's frames behind a BSD loopback header: AF_INET (2) in the byte order
/// `family` writes it. Every frame here is untagged IPv4 (`tcpdump ... ip`).
fn as_loopback(frames: &[Record], family: [u8; 4]) -> Vec<Record> {
    frames
        .iter()
        .map(|r| {
            assert_eq!(r.data[12..14], [0x08, 0x00], "untagged IPv4");
            let mut data = family.to_vec();
            data.extend_from_slice(&r.data[14..]);
            Record {
                ts_micros: r.ts_micros,
                data,
            }
        })
        .collect()
}

#[test]
fn cooked_and_bsd_loopback_captures_give_the_ethernet_captures_flows_breaches_and_warnings() {
    if skip_without_root() || !nmap_available() {
        eprintln!("skipping: needs root, iproute2, nmap, socat and tcpdump");
        return;
    }
    let (scanner, victim, if_scanner, pair) = namespaces();
    scanner
        .run(
            "ip",
            &["route", "add", "10.226.0.0/24", "via", "10.225.0.1"],
        )
        .expect("route to the targets");
    // Something that is not HTTP on an HTTP port: an SSH banner to 8080, echoed back.
    victim
        .spawn(
            "socat",
            &["TCP-LISTEN:8080,fork,reuseaddr,bind=10.226.0.1", "EXEC:cat"],
        )
        .expect("socat listens");
    std::thread::sleep(Duration::from_millis(300));

    let work = TempDir::new("link-types");
    let capture = |name: &str| work.path().join(format!("{name}.pcap"));
    let (eth, sll2, sll) = (capture("ethernet"), capture("sll2"), capture("sll"));
    // `-i any` sizes its ring's slots by the snapshot length (it has no one MTU): at the default
    // 256 KiB the burst of a scan overflows it, so every capture takes whole frames of at most
    // 1600 bytes into an 8 MiB buffer.
    let capture_args = |iface: &str, cooked: Option<&str>, path: &PathBuf| {
        let mut args = vec!["-i".to_string(), iface.to_string()];
        if let Some(link_type) = cooked {
            args.extend(["-y".to_string(), link_type.to_string()]);
        }
        for arg in ["-s", "1600", "-B", "8192", "--immediate-mode", "-U", "-w"] {
            args.push(arg.to_string());
        }
        args.extend([path.display().to_string(), "ip".to_string()]);
        args
    };
    let mut tcpdumps: Vec<_> = [
        capture_args(&if_scanner, None, &eth),
        capture_args("any", None, &sll2),
        capture_args("any", Some("LINUX_SLL"), &sll),
    ]
    .iter()
    .map(|args| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        start_tcpdump(&scanner, &args)
    })
    .collect();
    scan(&scanner);
    scanner
        .run(
            "socat",
            &[
                "-t1",
                "SYSTEM:echo SSH-2.0-OpenSSH_9.2p1; sleep 1",
                "TCP:10.226.0.1:8080",
            ],
        )
        .expect("socat connects");
    for path in [&eth, &sll2, &sll] {
        wait_until_written(path);
    }
    for tcpdump in &mut tcpdumps {
        let _ = tcpdump.kill();
        let _ = tcpdump.wait();
    }

    let frames = pcap::read(&eth);
    let (null, loopback) = (capture("null"), capture("loop"));
    // A little-endian host's NULL header, and LOOP's network order.
    pcap::write_link(&null, LINKTYPE_NULL, &as_loopback(&frames, [2, 0, 0, 0]));
    pcap::write_link(
        &loopback,
        LINKTYPE_LOOP,
        &as_loopback(&frames, [0, 0, 0, 2]),
    );

    let cases = [
        (&eth, LINKTYPE_ETHERNET),
        (&sll2, LINKTYPE_LINUX_SLL2),
        (&sll, LINKTYPE_LINUX_SLL),
        (&null, LINKTYPE_NULL),
        (&loopback, LINKTYPE_LOOP),
    ];
    let mut outcomes = Vec::new();
    for (i, (path, link_type)) in cases.iter().enumerate() {
        assert_eq!(pcap::link_type(path), *link_type, "{}", path.display());
        assert_eq!(
            pcap::read(path).len(),
            frames.len(),
            "{}: every tcpdump saw every frame",
            path.display()
        );
        outcomes.push(outcome(
            &work.path().join(format!("data-{i}")),
            path,
            SCANNER,
        ));
    }
    let ethernet = &outcomes[0];
    // 200 SYNs, each its own flow, and the socat connection; every frame decoded.
    assert_eq!(ethernet.packets, Some(frames.len() as u64));
    assert_eq!(ethernet.decoded, ethernet.packets);
    assert_eq!(ethernet.flows, Some(201), "{ethernet:?}");
    assert_eq!(ethernet.models, scan_models(), "{ethernet:?}");
    // The banner is no HTTP request, and the run says so, with the parser's reason.
    let [warning] = ethernet.warnings.as_slice() else {
        panic!("one warning: {ethernet:?}");
    };
    assert!(
        warning.starts_with(
            "warning: http: 1 flows on its ports or recognised by content, and no http record \
             (parse errors: "
        ),
        "{warning}"
    );
    for ((path, _), found) in cases.iter().zip(&outcomes).skip(1) {
        assert_eq!(found, ethernet, "{} against Ethernet", path.display());
    }
    // The socat exchange proves both ends: the cooked headers give each the MAC it sent from,
    // as Ethernet does; BSD loopback has no MACs, so the devices are their addresses alone.
    let found: Vec<_> = (0..cases.len())
        .map(|i| devices(&work.path().join(format!("data-{i}"))))
        .collect();
    let mac = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let ends = BTreeSet::from([
        (vec![SCANNER.to_string()], vec![mac(pair.mac_a())]),
        (vec!["10.226.0.1".to_string()], vec![mac(pair.mac_b())]),
    ]);
    assert!(found[0].is_superset(&ends), "{:?}", found[0]);
    assert_eq!(found[1], found[0], "SLL2 devices");
    assert_eq!(found[2], found[0], "SLL devices");
    let without_macs: BTreeSet<_> = found[0]
        .iter()
        .map(|(addresses, _)| (addresses.clone(), Vec::new()))
        .collect();
    assert_eq!(found[3], without_macs, "NULL devices");
    assert_eq!(found[4], without_macs, "LOOP devices");
}

#[test]
fn a_scan_through_a_tun_device_captured_as_raw_ip_is_decoded_frame_for_frame() {
    if skip_without_root() || !nmap_available() {
        eprintln!("skipping: needs root, iproute2, nmap, socat and tcpdump");
        return;
    }
    let (scanner, victim, _if_scanner, _pair) = namespaces();
    // A tunnel as VPNs make one: a tun device at each end, its packets carried over UDP
    // (unconnected: an ICMP error while the other end starts must not end it).
    let tun = unique_name();
    for (ns, local, peer) in [
        (&scanner, &*format!("{TUN_SCANNER}/24"), "10.225.0.1"),
        (&victim, "10.227.0.2/24", "10.225.0.2"),
    ] {
        ns.spawn(
            "socat",
            &[
                &format!("TUN:{local},tun-name={tun},iff-up,tun-type=tun"),
                &format!("UDP-DATAGRAM:{peer}:9000,bind=:9000"),
            ],
        )
        .expect("socat tunnel");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for ns in [&scanner, &victim] {
        while ns.run("ip", &["link", "show", &tun]).is_err() {
            assert!(Instant::now() < deadline, "no tun device");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    scanner
        .run(
            "ip",
            &[
                "route",
                "add",
                "10.226.0.0/24",
                "via",
                "10.227.0.2",
                "dev",
                &tun,
            ],
        )
        .expect("route through the tunnel");

    let work = TempDir::new("link-raw");
    let raw = work.path().join("tun.pcap");
    let mut tcpdump = start_tcpdump(
        &scanner,
        &[
            "-i",
            &tun,
            "-s",
            "1600",
            "-B",
            "8192",
            "--immediate-mode",
            "-U",
            "-w",
            &raw.display().to_string(),
        ],
    );
    scan(&scanner);
    wait_until_written(&raw);
    let _ = tcpdump.kill();
    let _ = tcpdump.wait();

    assert_eq!(pcap::link_type(&raw), LINKTYPE_RAW);
    let frames = pcap::read(&raw);
    // IPv4 from the first byte: no link header at all.
    assert!(frames.iter().all(|f| f.data[0] >> 4 == 4));
    let syns = frames
        .iter()
        .filter(|f| f.data[9] == 6 && f.data[33] == 0x02)
        .count();
    assert_eq!(syns, 200, "five ports on 40 hosts");
    // The scan leaves through the tunnel: from the tun device's address.
    let found = outcome(&work.path().join("data"), &raw, TUN_SCANNER);
    assert_eq!(found.packets, Some(frames.len() as u64));
    assert_eq!(found.decoded, found.packets);
    assert_eq!(found.flows, Some(200));
    assert_eq!(found.models, scan_models());
    assert_eq!(found.warnings, Vec::<String>::new());
}

#[test]
fn an_unsupported_link_type_is_named_counted_and_fails_a_run_that_decoded_nothing() {
    // No tool here writes 802.11 captures without a wireless device: the lab's attack frames
    // are relabelled LINKTYPE_IEEE802_11, which Vigil does not decode.
    let frames: Vec<Record> = pcap::read(&fixture("lab", "attack.pcap"))
        .into_iter()
        .take(300)
        .collect();
    let work = TempDir::new("link-wifi");
    let (wifi, eth) = (work.path().join("wifi.pcap"), work.path().join("eth.pcap"));
    pcap::write_link(&wifi, LINKTYPE_IEEE802_11, &frames);
    pcap::write(&eth, &frames);

    let out = replay(&work.path().join("data-wifi"), &[&wifi]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}{stderr}");
    let named = "link type 105 (IEEE802_11) is not supported";
    assert_eq!(stderr.matches(named).count(), 1, "{stderr}");
    assert!(
        stderr.contains(
            "none of the 300 frames could be decoded: 300 of unsupported link type 105 (IEEE802_11)"
        ),
        "{stderr}"
    );
    assert_eq!(summary_value(&out.stdout, "packets"), Some(300));
    assert_eq!(summary_value(&out.stdout, "decoded"), Some(0));
    assert_eq!(
        summary_value(
            &out.stdout,
            "frames of unsupported link type 105 (IEEE802_11)"
        ),
        Some(300),
        "{stdout}"
    );
    assert_eq!(
        summary_value(&out.stdout, "unsupported_link_type"),
        Some(300)
    );
    assert_eq!(
        warnings(&out),
        [
            "warning: 300 frames of link type 105 (IEEE802_11) were not decoded: the link type is \
          not supported"
        ]
    );

    // With a readable capture beside it the run succeeds, still naming and counting the other.
    let alone = replay_ok(&work.path().join("data-eth"), &[&eth]);
    let decoded = summary_value(&alone.stdout, "decoded");
    assert!(decoded.is_some_and(|n| n > 0));
    let both = replay_ok(&work.path().join("data-both"), &[&wifi, &eth]);
    assert_eq!(summary_value(&both.stdout, "packets"), Some(600));
    assert_eq!(summary_value(&both.stdout, "decoded"), decoded);
    assert_eq!(
        summary_value(
            &both.stdout,
            "frames of unsupported link type 105 (IEEE802_11)"
        ),
        Some(300)
    );
    assert_eq!(text(&both.stderr).matches(named).count(), 1);
}
