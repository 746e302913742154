//! Inline mode on real traffic: three namespaces (attacker, the appliance bridging two veth
//! pairs with AF_XDP, a server). Ordinary traffic crosses the bridge (ARP, ping with MTU-sized
//! frames, UDP, TCP); after a real nmap scan the responder's actions stop the attacker's new
//! connections to 445 and 9401 (or, with an egress policy, everything it sends) while a benign
//! address next to it still gets through; when the actions end the attacker gets through again.
//! With four RX queues on every port, connections spread over the queues cross the bridge, and
//! an egress block stops the attacker's on every queue.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::live::{skip_live, syn_scan, LiveVigil};
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::workspace::{plugin_dir, saved_actions, TempDir};

const SERVER: &str = "10.210.0.1";
const ATTACKER: &str = "10.210.0.2";
const BENIGN: &str = "10.210.0.3";

struct Lab {
    attacker: Netns,
    appliance: Netns,
    /// Runs the listeners; kept for the test's lifetime.
    _server: Netns,
    _pairs: [VethPair; 2],
    appliance_ports: [String; 2],
    /// XDP mode of the appliance's ports.
    mode: &'static str,
}

impl Lab {
    fn new(subnet: u8) -> Lab {
        Lab::with_queues(subnet, 1, "generic")
    }

    /// `queues` RX/TX queues on every veth end, the bridge's ports captured in `mode`.
    fn with_queues(subnet: u8, queues: u32, mode: &'static str) -> Lab {
        let attacker = Netns::unique().expect("namespace");
        let appliance = Netns::unique().expect("namespace");
        let server = Netns::unique().expect("namespace");
        let names: Vec<String> = (0..4).map(|_| unique_name()).collect();
        // The appliance's ends get addresses of their own subnets; the bridged hosts never see
        // them (AF_XDP takes every frame).
        let west = VethPair::with_queues(
            &attacker,
            &names[0],
            &appliance,
            &names[1],
            &format!("{ATTACKER}/24"),
            &format!("10.211.{subnet}.1/30"),
            queues,
        )
        .expect("veth");
        let east = VethPair::with_queues(
            &appliance,
            &names[2],
            &server,
            &names[3],
            &format!("10.211.{subnet}.5/30"),
            &format!("{SERVER}/24"),
            queues,
        )
        .expect("veth");
        attacker
            .run(
                "ip",
                &["addr", "add", &format!("{BENIGN}/24"), "dev", &names[0]],
            )
            .expect("benign address");
        for port in ["445", "9401", "8080"] {
            server
                .spawn(
                    "socat",
                    &[
                        &format!("TCP-LISTEN:{port},fork,reuseaddr"),
                        "EXEC:/bin/true",
                    ],
                )
                .expect("listener");
        }
        server
            .spawn("socat", &["UDP-LISTEN:5353,fork,reuseaddr", "EXEC:cat"])
            .expect("UDP echo");
        std::thread::sleep(Duration::from_millis(300));
        Lab {
            attacker,
            appliance,
            _server: server,
            _pairs: [west, east],
            appliance_ports: [names[1].clone(), names[2].clone()],
            mode,
        }
    }

    /// A UDP datagram to the server's echo service and its answer back, through the bridge.
    fn udp_echo(&self) -> bool {
        Command::new("ip")
            .args(["netns", "exec", self.attacker.name(), "sh", "-c"])
            .arg(format!("echo across | socat -T2 - UDP:{SERVER}:5353"))
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("across"))
    }

    /// A real TCP connection from `source` to the server's `port` (2 s to connect).
    fn connects(&self, source: &str, port: u16) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                self.attacker.name(),
                "socat",
                "-u",
                "OPEN:/dev/null",
            ])
            .arg(format!(
                "TCP:{SERVER}:{port},bind={source},connect-timeout=2"
            ))
            .output()
            .is_ok_and(|out| out.status.success())
    }

    fn start(&self, data: &Path, config: &Path) -> LiveVigil {
        let plugins = plugin_dir();
        LiveVigil::start(
            &self.appliance,
            &[
                "--inline",
                &format!("{},{}", self.appliance_ports[0], self.appliance_ports[1]),
                "--mode",
                self.mode,
                "--data-dir",
                data.to_str().expect("utf-8"),
                "--plugins",
                plugins.to_str().expect("utf-8"),
                "--config",
                config.to_str().expect("utf-8"),
            ],
        )
    }
}

fn active_actions(data: &Path) -> Vec<Value> {
    saved_actions(data)
        .into_iter()
        .filter(|a| a["status"]["state"] == "active" && a["device"] == ATTACKER)
        .collect()
}

fn wait_until(what: &str, wait: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + wait;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn blocked_ports_stop_the_attacker_only_and_heal_at_expiry() {
    if skip_live() {
        return;
    }
    let lab = Lab::new(1);
    let work = TempDir::new("inline-ports");
    let config = work.path().join("vigil.toml");
    // The default policy (Network Scan -> block 445 and 9401), for 15 seconds, acting on the
    // breaches a fresh appliance raises while learning.
    std::fs::write(
        &config,
        "[plugins.responder]\nduration_secs = 15\nlearning_mode = \"autonomous\"\n",
    )
    .expect("config");
    let data = work.path().join("data");
    let vigil = lab.start(&data, &config);

    // Ordinary traffic crosses: ARP (nothing is pinned), ICMP with MTU-sized frames, UDP, TCP.
    let ping = lab
        .attacker
        .run(
            "ping",
            &["-c", "2", "-W", "2", "-M", "do", "-s", "1472", SERVER],
        )
        .expect("an MTU-sized ping crosses the bridge");
    assert!(ping.contains("2 received"), "{ping}");
    assert!(lab.udp_echo(), "a UDP exchange crosses the bridge");
    for port in [445, 9401, 8080] {
        assert!(
            lab.connects(ATTACKER, port),
            "before the attack, port {port}"
        );
    }
    assert!(lab.connects(BENIGN, 445));

    syn_scan(&lab.attacker, SERVER, "1-1000");
    wait_until("the responder's actions", Duration::from_secs(20), || {
        active_actions(&data).len() >= 2
    });
    assert!(
        !lab.connects(ATTACKER, 445),
        "445 still open to the attacker"
    );
    assert!(
        !lab.connects(ATTACKER, 9401),
        "9401 still open to the attacker"
    );
    assert!(
        lab.connects(ATTACKER, 8080),
        "only the blocked ports are closed"
    );
    assert!(lab.connects(BENIGN, 445), "the benign host is not touched");

    // After the 15 s the attacker gets through again.
    wait_until("the actions to end", Duration::from_secs(30), || {
        lab.connects(ATTACKER, 445)
    });
    let exit = vigil.stop();
    assert!(exit.success(), "{exit:?}");
}

/// Connections from `source` to the server's `port`, each on a fresh socket (so on a queue of
/// its own hash): how many connected.
fn connections(lab: &Lab, source: &str, port: u16, tries: usize) -> usize {
    (0..tries).filter(|_| lab.connects(source, port)).count()
}

fn blocked_egress_stops_everything_the_attacker_sends(lab: &Lab, tries: usize) {
    let work = TempDir::new("inline-egress");
    let config = work.path().join("vigil.toml");
    std::fs::write(
        &config,
        "[plugins.responder]\nduration_secs = 600\nlearning_mode = \"autonomous\"\n\
         rules = [{ models = [\"Device / Network Scan\"], responses = [\"BlockEgress\"] }]\n",
    )
    .expect("config");
    let data = work.path().join("data");
    let vigil = lab.start(&data, &config);
    assert_eq!(connections(lab, ATTACKER, 8080, tries), tries);
    syn_scan(&lab.attacker, SERVER, "1-1000");
    wait_until("the egress block", Duration::from_secs(20), || {
        !active_actions(&data).is_empty()
    });
    assert_eq!(
        connections(lab, ATTACKER, 8080, tries),
        0,
        "the attacker still gets out"
    );
    let ping = lab
        .attacker
        .run("ping", &["-c", "1", "-W", "1", "-I", ATTACKER, SERVER]);
    assert!(ping.is_err() || ping.is_ok_and(|p| p.contains("0 received")));
    assert_eq!(
        connections(lab, BENIGN, 8080, tries),
        tries,
        "the benign host is not touched"
    );
    assert!(vigil.stop().success());
}

#[test]
fn blocked_egress_stops_everything_the_attacker_sends_on_one_queue() {
    if skip_live() {
        return;
    }
    blocked_egress_stops_everything_the_attacker_sends(&Lab::new(2), 1);
}

/// Native mode: veth's generic path numbers queues off by one (see README, Live capture).
#[test]
fn blocked_egress_stops_everything_the_attacker_sends_on_every_queue() {
    if skip_live() {
        return;
    }
    let lab = Lab::with_queues(3, 4, "native");
    blocked_egress_stops_everything_the_attacker_sends(&lab, 16);
    // The scan's thousand probes and the server's answers spread over every queue of both ports.
    for port in &lab.appliance_ports {
        let stats = lab
            .appliance
            .run("ethtool", &["-S", port])
            .expect("ethtool -S");
        for queue in 0..4 {
            let redirected = stats
                .lines()
                .find_map(|line| {
                    line.trim()
                        .strip_prefix(&format!("rx_queue_{queue}_xdp_redirect: "))
                })
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("queue {queue} in {stats}"));
            assert!(
                redirected > 0,
                "{port} queue {queue} carried nothing: {stats}"
            );
        }
    }
}
