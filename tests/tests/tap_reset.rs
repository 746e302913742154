//! Tap mode on real traffic: the appliance listens on a port of a hub (a Linux bridge that
//! forgets every MAC, so it floods every frame to every port, as a mirror port sees them). An
//! attacker holds an idle TCP connection open to a server's port 9401 and scans. Nothing crosses
//! that connection after its handshake, so only a reset built when the block comes in force (from
//! what the flow table last saw of it) can tear it down; the attacker's own TCP stack accepts it.
//! tcpdump in the attacker's namespace stamps the RST's arrival, which is compared with the
//! deciding breach's time in actions.json. In human mode the RST follows the operator's
//! confirmation, made on the data directory or through the management API.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use vigil_tests::live::{skip_live, start_tcpdump, syn_scan, LiveVigil};
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::workspace::{plugin_dir, saved_actions, vigil_bin, TempDir};

/// One test at a time: each runs an appliance and a scan, and on two cores a second one beside
/// it would be measured along with the latency these tests report.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

const SERVER: &str = "10.213.0.1";
const ATTACKER: &str = "10.213.0.2";

/// The attacker, the server and the appliance on one hub; an echo server on 9401.
struct Hub {
    attacker: Netns,
    appliance: Netns,
    /// The attacker's and the appliance's interfaces.
    attacker_if: String,
    appliance_if: String,
    // Dropped after the namespaces' processes: the veths and the hub itself.
    _pairs: [VethPair; 3],
    _server: Netns,
    _hub: Netns,
}

fn hub() -> Hub {
    let hub = Netns::unique().expect("namespace");
    let attacker = Netns::unique().expect("namespace");
    let server = Netns::unique().expect("namespace");
    let appliance = Netns::unique().expect("namespace");
    let ports: Vec<String> = (0..6).map(|_| unique_name()).collect();
    let pairs = [
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
    Hub {
        attacker,
        appliance,
        attacker_if: ports[0].clone(),
        appliance_if: ports[4].clone(),
        _pairs: pairs,
        _server: server,
        _hub: hub,
    }
}

fn start_vigil(hub: &Hub, data: &Path, config: &Path) -> LiveVigil {
    let plugins = plugin_dir();
    LiveVigil::start(
        &hub.appliance,
        &[
            "--iface",
            &hub.appliance_if,
            "--mode",
            "generic",
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--plugins",
            plugins.to_str().expect("utf-8"),
            "--config",
            config.to_str().expect("utf-8"),
        ],
    )
}

/// tcpdump on the attacker's interface, until the first RST from the server's 9401 reaches the
/// attacker (`-c 1`; `-p`: only frames addressed to it, not the flood).
fn watch_for_reset(hub: &Hub) -> Child {
    let filter = format!("src host {SERVER} and src port 9401 and tcp[tcpflags] & tcp-rst != 0");
    start_tcpdump(
        &hub.attacker,
        &[
            "-p",
            "-n",
            "-l",
            "-tt",
            "--time-stamp-precision=micro",
            "-c",
            "1",
            "-i",
            &hub.attacker_if,
            &filter,
        ],
    )
}

/// The arrival time (Unix microseconds) of the RST tcpdump saw, waiting up to `timeout`.
fn reset_arrival(mut tcpdump: Child, timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    while tcpdump.try_wait().expect("status").is_none() {
        if Instant::now() > deadline {
            let _ = tcpdump.kill();
            let _ = tcpdump.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut out = String::new();
    tcpdump
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("tcpdump's output");
    // "1764400000.123456 IP 10.213.0.1.9401 > 10.213.0.2.41234: Flags [R], seq ..."
    let stamp = out.split_whitespace().next()?;
    assert!(out.contains("Flags [R]"), "{out}");
    let (secs, micros) = stamp.split_once('.')?;
    Some(secs.parse::<u64>().ok()? * 1_000_000 + micros.parse::<u64>().ok()?)
}

/// An idle connection from the attacker to the server's 9401: socat only reads, and the server
/// only echoes, so after the handshake nothing crosses it until something ends it. `-d` makes
/// socat report the read's error (a warning, after which it exits 0 all the same).
fn idle_session(hub: &Hub) -> Child {
    let session = Command::new("ip")
        .args(["netns", "exec", hub.attacker.name(), "socat", "-d", "-u"])
        .arg(format!("TCP:{SERVER}:9401"))
        .arg("STDOUT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("session");
    std::thread::sleep(Duration::from_secs(1));
    session
}

fn assert_alive(session: &mut Child, what: &str) {
    assert!(session.try_wait().expect("status").is_none(), "{what}");
}

/// Waits for the session to end and checks that a reset ended it.
fn assert_reset(mut session: Child, within: Duration) {
    let started = Instant::now();
    loop {
        if session.try_wait().expect("status").is_some() {
            break;
        }
        if started.elapsed() > within {
            let _ = session.kill();
            let _ = session.wait();
            panic!("the idle session survived the block");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = session.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(stderr.contains("Connection reset by peer"), "{stderr}");
}

/// The action blocking 9401 once it is in `state`.
fn port_block(data: &Path, state: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let found = saved_actions(data)
            .into_iter()
            .find(|a| a["status"]["state"] == state && a["response"]["BlockPort"] == 9401);
        if let Some(action) = found {
            return action;
        }
        assert!(Instant::now() < deadline, "no {state} block of 9401 came");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unix_micros() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since.as_micros()).expect("fits")
}

#[test]
fn an_idle_connection_is_reset_within_milliseconds_of_the_deciding_breach() {
    if skip_live() {
        return;
    }
    let _alone = alone();
    let hub = hub();
    let work = TempDir::new("tap");
    let config = work.path().join("vigil.toml");
    // A fresh appliance: its first breaches are raised while learning, acted on as configured.
    std::fs::write(
        &config,
        "[plugins.responder]\nduration_secs = 600\nlearning_mode = \"autonomous\"\n",
    )
    .expect("config");
    let data = work.path().join("data");
    let vigil = start_vigil(&hub, &data, &config);
    let mut session = idle_session(&hub);
    assert_alive(&mut session, "the session holds");
    let tcpdump = watch_for_reset(&hub);

    syn_scan(&hub.attacker, SERVER, "1-1000");
    let action = port_block(&data, "active", Duration::from_secs(20));
    let arrived =
        reset_arrival(tcpdump, Duration::from_secs(5)).expect("a RST reached the attacker");
    let decided = action["decided_at"].as_u64().expect("decided_at");
    let latency_ms = arrived.saturating_sub(decided) as f64 / 1e3;
    println!("deciding breach -> RST at the attacker: {latency_ms:.2} ms");
    assert_reset(session, Duration::from_secs(5));
    // The breach is raised from the batch the scan's last packets went into; the action, the
    // table walk and the RSTs follow in the same pass of the capture loop.
    assert!(
        arrived >= decided,
        "a RST before the decision: {arrived} < {decided}"
    );
    assert!(latency_ms < 50.0, "{latency_ms:.2} ms");
    assert!(vigil.stop().success());
}

/// How the operator confirms: on the data directory, or through the management API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConfirmVia {
    DataDir,
    Api,
}

const API_TOKEN: &str = "tap-test-token-0123456789";
const API_LISTEN: &str = "127.0.0.1:8470";

/// Human mode: nothing is enforced until the operator confirms the pending block of 9401, then
/// the idle connection is reset; returns confirmation-to-RST in milliseconds.
fn human_mode_confirmation(via: ConfirmVia) -> f64 {
    let hub = hub();
    let work = TempDir::new("tap-human");
    let config = work.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins.responder]\nmode = \"human\"\nduration_secs = 600\n\n\
             [api]\nlisten = \"{API_LISTEN}\"\ntoken = \"{API_TOKEN}\"\ntls = false\n"
        ),
    )
    .expect("config");
    let data = work.path().join("data");
    let vigil = start_vigil(&hub, &data, &config);
    let mut session = idle_session(&hub);
    let tcpdump = watch_for_reset(&hub);

    syn_scan(&hub.attacker, SERVER, "1-1000");
    let pending = port_block(&data, "pending", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    assert_alive(&mut session, "nothing is enforced before the confirmation");

    let id = pending["id"].as_u64().expect("id").to_string();
    let confirm_in_appliance = |token: &str, id: &str| {
        let mut confirm = Command::new("ip");
        confirm
            .args(["netns", "exec", hub.appliance.name()])
            .arg(vigil_bin())
            .args(["actions", "confirm", "--by", "analyst"]);
        match via {
            ConfirmVia::DataDir => confirm.arg("--data-dir").arg(&data),
            ConfirmVia::Api => {
                confirm.args(["--to", &format!("http://{API_LISTEN}"), "--token", token])
            }
        };
        confirm.arg(id).output().expect("vigil actions confirm")
    };
    if via == ConfirmVia::Api {
        for (token, id, refusal) in [
            ("wrong-token-0123456789", id.as_str(), "HTTP 401"),
            (API_TOKEN, "999999", "HTTP 404: no action 999999"),
        ] {
            let refused = confirm_in_appliance(token, id);
            let stderr = String::from_utf8_lossy(&refused.stderr);
            assert!(
                !refused.status.success() && stderr.contains(refusal),
                "{stderr}"
            );
        }
        assert_alive(&mut session, "a refused confirmation enforces nothing");
    }
    let confirmed_at = unix_micros();
    let confirm = confirm_in_appliance(API_TOKEN, &id);
    assert!(confirm.status.success(), "{confirm:?}");
    assert!(
        String::from_utf8_lossy(&confirm.stdout).contains("active until"),
        "{confirm:?}"
    );
    let arrived =
        reset_arrival(tcpdump, Duration::from_secs(5)).expect("a RST reached the attacker");
    let latency_ms = arrived.saturating_sub(confirmed_at) as f64 / 1e3;
    println!("operator's confirmation ({via:?}) -> RST at the attacker: {latency_ms:.2} ms");
    assert_reset(session, Duration::from_secs(5));
    if via == ConfirmVia::Api {
        let again = confirm_in_appliance(API_TOKEN, &id);
        let stderr = String::from_utf8_lossy(&again.stderr);
        assert!(
            !again.status.success() && stderr.contains("HTTP 409") && stderr.contains("active"),
            "{stderr}"
        );
    }
    assert!(vigil.stop().success());
    let audit = port_block(&data, "active", Duration::ZERO)["audit"].to_string();
    assert!(audit.contains("analyst"), "{audit}");
    latency_ms
}

#[test]
fn in_human_mode_an_idle_connection_is_reset_when_the_operator_confirms() {
    if skip_live() {
        return;
    }
    let _alone = alone();
    let latency_ms = human_mode_confirmation(ConfirmVia::DataDir);
    // The running appliance looks for an operator's change to the file once a second.
    assert!(latency_ms < 1_500.0, "{latency_ms:.2} ms");
}

#[test]
fn a_confirmation_through_the_management_api_resets_without_waiting_for_a_poll() {
    if skip_live() {
        return;
    }
    let _alone = alone();
    let latency_ms = human_mode_confirmation(ConfirmVia::Api);
    // The capture loop applies it when it serves the request, not at the file's next
    // one-second poll (the figure includes the CLI's own start and its HTTP round trip).
    assert!(latency_ms < 900.0, "{latency_ms:.2} ms");
}
