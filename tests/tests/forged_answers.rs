//! Autonomous response cannot be aimed at an innocent device with forged packets: "answers"
//! addressed to a workstation that never asked (SYN-ACKs and RSTs from made-up neighbours'
//! service ports, UDP from ports 53/161/137, and the workstation's own RSTs to the unexpected
//! SYN-ACKs) are laid into each lab's real attack capture. The workstation gets no breach and no
//! action, and the attacker's breaches and actions are exactly those of the attack alone.
//! Protected devices (the config's, and learned infrastructure) get only pending actions.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

use std::time::Duration;

use vigil_tests::forge::{self, ACK, RST, SYN};
use vigil_tests::lab::{self, committed_labs, fixture, ground_truth};
use vigil_tests::live::{skip_live, syn_scan, wait_for_alerts, LiveVigil};
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::pcap::{self, Record};
use vigil_tests::workspace::{
    eve_records, plugin_dir, replay_ok, replay_with, saved_actions, summary_value, TempDir,
};

/// About as many frames as the attack that blamed a workstation and blocked it within 3 s.
const FORGED_FRAMES: u64 = 1_500;
const TCP_PORTS: [u16; 5] = [445, 3389, 139, 22, 80];
const UDP_PORTS: [u16; 3] = [53, 161, 137];

#[derive(Debug, Clone, Copy)]
enum Shape {
    SynAckOnly,
    RstOnly,
    UdpFromServicePorts,
    /// All of them, with the workstation's kernel answering each SYN-ACK with a RST.
    Mixed,
}

/// The benign user's workstation: a real device of the lab that never attacks.
fn workstation(lab: &str) -> Ipv4Addr {
    format!(
        "{}.{}",
        lab::param(lab, "LAB_NET"),
        lab::param(lab, "NOISE_OCTET")
    )
    .parse()
    .expect("address")
}

/// Who the forged frames are addressed to, and where they claim to come from.
struct Aim {
    addressee: Ipv4Addr,
    addressee_mac: [u8; 6],
    /// The frames' source MAC: the forger's own NIC.
    forger_mac: [u8; 6],
    /// The made-up neighbours are `.150` to `.189` of this /24.
    neighbours: [u8; 3],
}

impl Aim {
    fn in_lab(lab: &str) -> Aim {
        let net: Vec<u8> = lab::param(lab, "LAB_NET")
            .split('.')
            .map(|o| o.parse().expect("octet"))
            .collect();
        Aim {
            addressee: workstation(lab),
            addressee_mac: [0x02, 0x00, 0x00, 0x00, 0x00, 0x99],
            forger_mac: [0x02, 0x66, 0x66, 0x66, 0x66, 0x66],
            neighbours: [net[0], net[1], net[2]],
        }
    }
}

/// `FORGED_FRAMES` forged answers of `shape`, spread evenly over `start..end` (microseconds).
fn forged(shape: Shape, aim: &Aim, (start, end): (u64, u64)) -> Vec<Record> {
    let step = (end - start) / FORGED_FRAMES;
    let mut frames = Vec::new();
    for i in 0..FORGED_FRAMES {
        let ts = start + i * step;
        let [a, b, c] = aim.neighbours;
        let neighbour = Ipv4Addr::new(a, b, c, 150 + (i % 40) as u8);
        let port = 32_768 + (i % 20_000) as u16;
        let kind = match shape {
            Shape::SynAckOnly => 0,
            Shape::RstOnly => 1,
            Shape::UdpFromServicePorts => 2,
            Shape::Mixed => i % 3,
        };
        let tcp_port = TCP_PORTS[(i as usize) % TCP_PORTS.len()];
        let from = (aim.forger_mac, neighbour, tcp_port);
        let to = (aim.addressee_mac, aim.addressee, port);
        match kind {
            0 => {
                frames.push(Record {
                    ts_micros: ts,
                    data: forge::tcp(from, to, SYN | ACK, i as u32),
                });
                if matches!(shape, Shape::Mixed) {
                    // The addressee's kernel refuses the SYN-ACK it never asked for.
                    let back = (aim.forger_mac, neighbour, tcp_port);
                    frames.push(Record {
                        ts_micros: ts + 50,
                        data: forge::tcp(to, back, RST, 0x1000_0001),
                    });
                }
            }
            1 => frames.push(Record {
                ts_micros: ts,
                data: forge::tcp(from, to, RST | ACK, i as u32),
            }),
            _ => {
                let udp_port = UDP_PORTS[(i as usize) % UDP_PORTS.len()];
                let from = (aim.forger_mac, neighbour, udp_port);
                frames.push(Record {
                    ts_micros: ts,
                    data: forge::udp(from, to, b"\x00\x01answer"),
                });
            }
        }
    }
    frames
}

/// Pairs of names, e.g. (model, source address).
type Pairs = BTreeSet<(String, String)>;

/// (model, source) of every alert, and (device, response and state) of every action.
fn outcome(data: &Path) -> (Pairs, Pairs) {
    let alerts = eve_records(data)
        .iter()
        .filter(|r| r["event_type"] == "alert")
        .map(|r| {
            (
                r["alert"]["signature"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r["src_ip"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let actions = saved_actions(data)
        .iter()
        .map(|a| {
            (
                a["device"].as_str().unwrap_or_default().to_string(),
                format!("{} {}", a["response"], a["status"]["state"]),
            )
        })
        .collect();
    (alerts, actions)
}

#[test]
fn forged_answers_blame_nobody_and_the_real_attack_is_still_blocked() {
    for lab in committed_labs() {
        let attacker = ground_truth(&lab)[0].source.to_string();
        let ws = workstation(&lab).to_string();
        let baseline = fixture(&lab, "baseline.pcap");
        let attack = fixture(&lab, "attack.pcap");

        let reference = TempDir::new("forged-reference");
        replay_ok(reference.path(), &[&baseline, &attack]);
        let (alerts, actions) = outcome(reference.path());
        assert!(
            actions.iter().any(|(device, _)| *device == attacker),
            "{lab}: the attack alone is answered: {actions:?}"
        );

        for shape in [
            Shape::SynAckOnly,
            Shape::RstOnly,
            Shape::UdpFromServicePorts,
            Shape::Mixed,
        ] {
            let work = TempDir::new("forged");
            let forged_pcap = work.path().join("forged.pcap");
            let merged = work.path().join("attack-and-forged.pcap");
            let frames = forged(shape, &Aim::in_lab(&lab), forge::time_span(&attack));
            pcap::write(&forged_pcap, &frames);
            forge::merge(&attack, &forged_pcap, &merged);
            let data = TempDir::new("forged-data");
            let out = replay_ok(data.path(), &[&baseline, &merged]);
            let (seen_alerts, seen_actions) = outcome(data.path());
            assert!(
                !seen_alerts.iter().any(|(_, src)| *src == ws),
                "{lab} {shape:?}: the addressee {ws} was blamed: {seen_alerts:?}"
            );
            assert!(
                !seen_actions.iter().any(|(device, _)| *device == ws),
                "{lab} {shape:?}: an action on the addressee: {seen_actions:?}"
            );
            assert_eq!(seen_alerts, alerts, "{lab} {shape:?}: alerts changed");
            assert_eq!(seen_actions, actions, "{lab} {shape:?}: actions changed");
            let unsolicited = summary_value(&out.stdout, "flows unsolicited (blamed on nobody)")
                .expect("summary row");
            assert!(
                unsolicited >= FORGED_FRAMES / 2,
                "{lab} {shape:?}: {unsolicited} unsolicited flows counted"
            );
        }
    }
}

#[test]
fn a_protected_attacker_gets_breaches_and_pending_actions_never_active_ones() {
    for lab in committed_labs() {
        let attacker = ground_truth(&lab)[0].source.to_string();
        let data = TempDir::new("forged-protected");
        let config = data.path().join("vigil.toml");
        std::fs::write(
            &config,
            format!("[respond]\nprotected = [\"{attacker}\"]\n"),
        )
        .expect("config");
        let out = replay_with(
            data.path(),
            &["--config", config.to_str().expect("utf-8")],
            &[
                &fixture(&lab, "baseline.pcap"),
                &fixture(&lab, "attack.pcap"),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (alerts, _) = outcome(data.path());
        assert!(
            alerts.iter().any(|(_, src)| *src == attacker),
            "{lab}: the protected attacker still breaches"
        );
        let actions = saved_actions(data.path());
        assert!(!actions.is_empty(), "{lab}: actions proposed");
        for action in &actions {
            assert_eq!(action["device"], attacker.as_str(), "{lab}");
            assert_eq!(action["status"]["state"], "pending", "{lab}: {action:#}");
            let held = action["audit"]
                .as_array()
                .expect("audit")
                .iter()
                .any(|entry| {
                    entry["what"].as_str().is_some_and(|what| {
                        what.starts_with("held for an operator: protected device")
                    })
                });
            assert!(held, "{lab}: the audit says why: {action:#}");
        }
    }
}

#[test]
fn live_forged_answers_on_a_veth_raise_nothing_while_a_real_scan_is_caught() {
    if skip_live() {
        return;
    }
    let appliance = Netns::unique().expect("namespace");
    let forger = Netns::unique().expect("namespace");
    let (if_a, if_b) = (unique_name(), unique_name());
    let pair = VethPair::new(
        &appliance,
        &if_a,
        &forger,
        &if_b,
        "10.204.1.1/24",
        "10.204.1.2/24",
    )
    .expect("veth pair");
    pair.pin_neighbours().expect("neighbours");
    let data = TempDir::new("forged-live");
    let plugins = plugin_dir();
    let mut vigil = LiveVigil::start(
        &appliance,
        &[
            "--iface",
            &if_a,
            "--mode",
            "generic",
            "--data-dir",
            data.path().to_str().expect("utf-8"),
            "--plugins",
            plugins.to_str().expect("utf-8"),
        ],
    );
    // The appliance's end stands for the workstation the frames are addressed to.
    let aim = Aim {
        addressee: pair.ip_a(),
        addressee_mac: pair.mac_a(),
        forger_mac: pair.mac_b(),
        neighbours: [10, 204, 1],
    };
    let pcap = data.path().join("forged.pcap");
    let frames = forged(Shape::Mixed, &aim, (1_000_000, 2_000_000));
    pcap::write(&pcap, &frames);
    let sent = forger
        .run(
            "tcpreplay",
            &[
                "--intf1",
                &if_b,
                "--pps",
                "2000",
                pcap.to_str().expect("utf-8"),
            ],
        )
        .expect("tcpreplay runs");
    assert!(sent.contains("Successful packets:"), "{sent}");

    // A real scan after the forgeries: once its breach is written, they have been judged too.
    let scanner = pair.ip_b().to_string();
    syn_scan(&forger, &pair.ip_a().to_string(), "1-200");
    let eve = data.path().join("eve.json");
    let scans = wait_for_alerts(
        &eve,
        "Device / Network Scan",
        &scanner,
        Duration::from_secs(20),
    );
    assert_eq!(scans.len(), 1, "{:#?}", vigil.log());
    let exit = vigil.stop();
    assert!(exit.success(), "{exit:?}");

    let workstation = pair.ip_a().to_string();
    let (alerts, actions) = outcome(data.path());
    assert!(
        !alerts.iter().any(|(_, src)| *src == workstation),
        "the addressee was blamed: {alerts:?}"
    );
    assert!(
        actions.iter().all(|(device, _)| *device == scanner),
        "only the scanner is answered: {actions:?}"
    );
}
