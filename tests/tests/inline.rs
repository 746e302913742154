//! Inline mode on real traffic: three namespaces (attacker, the appliance bridging two veth
//! pairs with AF_XDP, a server). Ordinary traffic crosses the bridge (ARP, ping with MTU-sized
//! frames, UDP, TCP); after a real nmap scan the responder's actions stop the attacker's new
//! connections to 445 and 9401 (or, with an egress policy, everything it sends) while a benign
//! address next to it still gets through; when the actions end the attacker gets through again.
//! With four RX queues on every port, connections spread over the queues cross the bridge, and
//! an egress block stops the attacker's on every queue. While TCP transfers keep the bridge
//! busy, the management API still answers a plugin push and an action's confirmation at once.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::live::{api_section, output_text, skip_live, syn_scan, LiveVigil, API_URL};
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::workspace::{
    build_bundle, dev_signer_key, plugin_dir, saved_actions, vigil_bin, TempDir,
};

const SERVER: &str = "10.210.0.1";
const ATTACKER: &str = "10.210.0.2";
const BENIGN: &str = "10.210.0.3";

struct Lab {
    attacker: Netns,
    appliance: Netns,
    /// Runs the listeners.
    server: Netns,
    _pairs: [VethPair; 2],
    appliance_ports: [String; 2],
    /// The server's end of its veth pair.
    server_port: String,
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
            server,
            _pairs: [west, east],
            appliance_ports: [names[1].clone(), names[2].clone()],
            server_port: names[3].clone(),
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

    /// Bytes the server's port has received so far (what crossed the bridge towards it).
    fn server_received(&self) -> u64 {
        let path = format!("/sys/class/net/{}/statistics/rx_bytes", self.server_port);
        self.server
            .run("cat", &[&path])
            .expect("the server's counters")
            .trim()
            .parse()
            .expect("a byte count")
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

const TOKEN: &str = "inline-api-token-4b81";
/// TCP transfers each way across the bridge: with fewer, its rings ran empty often enough for
/// an API served only on idle rings to answer in time now and then.
const TRANSFERS: usize = 16;

/// `vigil ARGS` against the appliance's management API from inside its namespace (given up
/// after 20 s so a hung request fails the test rather than hanging it): the output and how long
/// the answer took.
fn api_call(lab: &Lab, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", lab.appliance.name(), "timeout", "20"])
        .arg(vigil_bin())
        .args(args)
        .args(["--to", API_URL, "--token", TOKEN])
        .env("VIGIL_LOG", "warn")
        .output()
        .expect("vigil runs");
    (out, started.elapsed())
}

/// Runs `call` while the transfers go on: asserts it succeeded within a second and the bridge
/// still carried them meanwhile. Returns its output.
fn answered_under_load(lab: &Lab, what: &str, call: impl FnOnce() -> (Output, Duration)) -> String {
    let before = lab.server_received();
    let (out, took) = call();
    let carried = lab.server_received() - before;
    let text = output_text(&out);
    assert!(out.status.success(), "{what}: {text}");
    assert!(took < Duration::from_secs(1), "{what} took {took:?}");
    assert!(carried > 0, "the transfer stopped during {what}");
    text
}

#[test]
fn the_api_answers_while_a_transfer_keeps_the_bridge_busy() {
    if skip_live() {
        return;
    }
    let lab = Lab::new(4);
    let work = TempDir::new("inline-api");
    let config = work.path().join("vigil.toml");
    // The default policy: breaches of a fresh (learning) appliance wait for an operator.
    std::fs::write(&config, api_section(TOKEN)).expect("config");
    let data = work.path().join("data");
    let vigil = lab.start(&data, &config);
    let bundle = work.path().join("network-scan-0.2.0.vbundle");
    build_bundle("network-scan", "0.2.0", &[&dev_signer_key()], &bundle);

    // The benign host and the server stream zeros to each other for the rest of the test, as
    // fast as the bridge carries them, so its rings seldom run empty.
    lab.server
        .spawn(
            "socat",
            &["-u", "TCP-LISTEN:9000,reuseaddr,fork", "OPEN:/dev/null"],
        )
        .expect("sink");
    lab.server
        .spawn(
            "socat",
            &["-u", "OPEN:/dev/zero", "TCP-LISTEN:9001,reuseaddr,fork"],
        )
        .expect("source");
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..TRANSFERS {
        let (upload, download) = (
            format!("TCP:{SERVER}:9000,bind={BENIGN}"),
            format!("TCP:{SERVER}:9001,bind={BENIGN}"),
        );
        for args in [
            ["-u", "OPEN:/dev/zero", &upload],
            ["-u", &download, "OPEN:/dev/null"],
        ] {
            lab.attacker.spawn("socat", &args).expect("transfer");
        }
    }
    std::thread::sleep(Duration::from_secs(1));

    let pushed = answered_under_load(&lab, "the push", || {
        api_call(&lab, &["push", bundle.to_str().expect("utf-8")])
    });
    assert!(
        pushed.contains("installed plugin network-scan 0.2.0"),
        "{pushed}"
    );

    syn_scan(&lab.attacker, SERVER, "1-1000");
    wait_until("a pending action", Duration::from_secs(20), || {
        saved_actions(&data)
            .iter()
            .any(|a| a["status"]["state"] == "pending" && a["device"] == ATTACKER)
    });
    assert!(
        lab.connects(ATTACKER, 445),
        "nothing enforced before confirmation"
    );
    let pending = saved_actions(&data);
    let action = pending
        .iter()
        .find(|a| a["status"]["state"] == "pending" && a["device"] == ATTACKER)
        .expect("a pending action");
    let id = action["id"].as_u64().expect("id").to_string();
    let port = action["response"]["BlockPort"]
        .as_u64()
        .expect("a blocked port");
    let confirmed = answered_under_load(&lab, "the confirmation", || {
        api_call(&lab, &["actions", "confirm", "--by", "alice-soc", &id])
    });
    assert!(confirmed.contains("active until"), "{confirmed}");
    let port = u16::try_from(port).expect("a port");
    assert!(
        !lab.connects(ATTACKER, port),
        "{port} still open to the attacker"
    );
    assert!(lab.connects(BENIGN, port), "the benign host is not touched");
    assert!(vigil.stop().success());
}
