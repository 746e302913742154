//! The fleet over NATS JetStream, against real `nats-server` processes on loopback: appliances
//! export through a broker crash, and the broker's permissions keep each appliance to its own
//! subjects.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::lab::fixture;
use vigil_tests::live::{skip_live, LiveVigil};
use vigil_tests::nats::{free_port, NatsServer};
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::workspace::{
    build_bundle, dev_signer_key, eve_records, plugin_dir, root, saved_actions, tamper_wasm, vigil,
    vigil_bin, vigil_ok, TempDir,
};

/// `[fleet]` for appliance `name` at site `lab`, with `extra` keys (credentials).
fn fleet_config(dir: &Path, name: &str, url: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "[fleet]\nurl = \"{url}\"\nsite = \"lab\"\nappliance = \"{name}\"\n\
         heartbeat_secs = 1\ndrain_secs = 60\n{extra}"
    );
    std::fs::write(&path, text).expect("config");
    path
}

fn spawn_replay(data_dir: &Path, config: &Path, pcaps: &[PathBuf]) -> Child {
    Command::new(vigil_bin())
        .arg("replay")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--plugins")
        .arg(plugin_dir())
        .args(pcaps)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vigil replay starts")
}

/// `vigil fleet alerts` (with incidents) of one appliance, as it prints them; `auth` are the
/// reader's credential options.
fn fleet_records(url: &str, appliance: &str, auth: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "fleet",
        "alerts",
        "--url",
        url,
        "--site",
        "lab",
        "--appliance",
        appliance,
        "--incidents",
    ];
    args.extend_from_slice(auth);
    vigil_ok(&args)
        .lines()
        .map(|line| serde_json::from_str(line).expect("an EVE JSON line"))
        .collect()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The eve.json records the fleet carries as eve records: alerts and incidents. Its
/// `event_type: "action"` records are the actions' journal; actions travel as actions.
fn exported_from(data: &Path) -> Vec<Value> {
    eve_records(data)
        .into_iter()
        .filter(|r| r["event_type"] == "alert" || r["event_type"] == "incident")
        .collect()
}

#[test]
fn alerts_and_incidents_of_two_appliances_arrive_exactly_once_in_order_through_a_broker_crash() {
    let dir = TempDir::new("fleet-export");
    let mut server = NatsServer::start(&dir.path().join("nats"), "", &[], None);
    let url = server.url();
    vigil_ok(&["fleet", "init", "--url", &url]);
    let pcaps = [
        fixture("lab", "baseline.pcap"),
        fixture("lab", "attack.pcap"),
    ];
    let appliances = ["a1", "a2"];
    let mut runs: Vec<(PathBuf, Child)> = appliances
        .iter()
        .map(|name| {
            let data = dir.path().join(name);
            let config = fleet_config(dir.path(), name, &url, "");
            let child = spawn_replay(&data, &config, &pcaps);
            (data, child)
        })
        .collect();
    // Crash the broker once records are flowing, and bring it back two seconds later.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = vigil(&["fleet", "alerts", "--url", &url, "--site", "lab"]);
        if !seen.stdout.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no alert reached the broker");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill();
    std::thread::sleep(Duration::from_secs(2));
    server.restart();
    let mut outage_seen = false;
    for (name, (data, child)) in appliances.iter().zip(runs.drain(..)) {
        let out = child.wait_with_output().expect("replay ends");
        let log = stderr_of(&out);
        assert!(out.status.success(), "{name}: {log}");
        outage_seen |= log.contains("waiting for the broker");
        let written = exported_from(&data);
        assert!(
            written.iter().any(|r| r["event_type"] == "alert")
                && written.iter().any(|r| r["event_type"] == "incident"),
            "{name} raised alerts and incidents"
        );
        let exported = fleet_records(&url, name, &[]);
        assert_eq!(
            exported.len(),
            written.len(),
            "{name}: every record of eve.json exactly once"
        );
        assert!(
            exported == written,
            "{name}: the same records in the same order"
        );
        // Every version of every action went out: the last of each is the one on disk.
        let saved = saved_actions(&data);
        assert!(!saved.is_empty(), "{name}: the responder acted");
        let mut last = std::collections::BTreeMap::new();
        let args = [
            "fleet",
            "alerts",
            "--url",
            &url,
            "--appliance",
            name,
            "--actions",
        ];
        for action in vigil_ok(&args)
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).expect("JSON"))
            .filter(|record| record.get("audit").is_some())
        {
            last.insert(action["id"].as_u64(), action);
        }
        assert!(
            last.into_values().collect::<Vec<_>>() == saved,
            "{name}: the actions of actions.json"
        );
    }
    assert!(
        outage_seen,
        "the crash happened while records were being exported"
    );
}

/// The passwords the shipped `appliance/fleet/accounts.conf` reads from the server's environment.
const PASSWORDS: [(&str, &str); 5] = [
    ("VIGIL_ADMIN_PASSWORD", "admin-secret"),
    ("VIGIL_VENDOR_PASSWORD", "vendor-secret"),
    ("VIGIL_READER_PASSWORD", "reader-secret"),
    ("VIGIL_LAB_A1_PASSWORD", "a1-secret"),
    ("VIGIL_LAB_A2_PASSWORD", "a2-secret"),
];

#[test]
fn an_appliance_publishes_only_as_itself_under_the_shipped_accounts() {
    let dir = TempDir::new("fleet-perms");
    // nats-server includes relative to its config: the shipped file goes beside it.
    let server_dir = dir.path().join("nats");
    std::fs::create_dir_all(&server_dir).expect("server dir");
    std::fs::copy(
        root().join("appliance/fleet/accounts.conf"),
        server_dir.join("accounts.conf"),
    )
    .expect("the shipped accounts.conf");
    let server = NatsServer::start(&server_dir, "include ./accounts.conf", &PASSWORDS, None);
    let url = server.url();
    vigil_ok(&[
        "fleet",
        "init",
        "--url",
        &url,
        "--user",
        "admin",
        "--password",
        "admin-secret",
    ]);
    let reader = ["--user", "reader", "--password", "reader-secret"];
    let attack = [fixture("lab", "attack.pcap")];
    let a1_credentials = "user = \"lab-a1\"\npassword = \"a1-secret\"\n";

    // a1 as itself: everything it wrote arrives, and the reader reads it.
    let own = dir.path().join("own");
    let config = fleet_config(dir.path(), "a1", &url, a1_credentials);
    let out = spawn_replay(&own, &config, &attack)
        .wait_with_output()
        .expect("replay");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let written = exported_from(&own);
    assert!(!written.is_empty());
    assert!(fleet_records(&url, "a1", &reader) == written);

    // a1's credentials claiming to be a2: the server refuses every record.
    let posing = dir.path().join("posing");
    let config = std::fs::read_to_string(&config)
        .expect("config")
        .replace("appliance = \"a1\"", "appliance = \"a2\"")
        .replace("drain_secs = 60", "drain_secs = 3");
    let config_path = dir.path().join("posing.toml");
    std::fs::write(&config_path, config).expect("config");
    let out = spawn_replay(&posing, &config_path, &attack)
        .wait_with_output()
        .expect("replay");
    let log = stderr_of(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("Permissions Violation for Publish to \"vigil.lab.a2.alert\""),
        "{log}"
    );
    assert!(fleet_records(&url, "a2", &reader).is_empty());
    assert!(
        log.contains("records left in the outbox"),
        "kept for a start with the right credentials: {log}"
    );

    // The reader cannot publish bundles, the vendor can.
    let bundle = vigil_tests::workspace::plugin_dir().join("network-scan.vbundle");
    let publish = |user: &str, password: &str| {
        vigil(&[
            "fleet",
            "publish",
            "--url",
            &url,
            "--user",
            user,
            "--password",
            password,
            bundle.to_str().expect("utf-8"),
        ])
    };
    let refused = publish("reader", "reader-secret");
    assert!(!refused.status.success());
    assert!(
        stderr_of(&refused).contains("Permissions Violation"),
        "{}",
        stderr_of(&refused)
    );
    let published = publish("vendor", "vendor-secret");
    assert!(published.status.success(), "{}", stderr_of(&published));
}

/// Every file under `dir` with its bytes: what "nothing changed on disk" compares.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.map(|e| e.expect("dir entry")) {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("file");
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    files
}

/// `vigil fleet status --json` run in `ns`: each appliance's status by name.
fn fleet_status(ns: &Netns, url: &str) -> std::collections::BTreeMap<String, Value> {
    let bin = vigil_bin();
    let out = ns
        .run(
            bin.to_str().expect("utf-8"),
            &["fleet", "status", "--json", "--url", url],
        )
        .expect("vigil fleet status");
    out.lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("JSON"))
        .map(|status| {
            (
                status["appliance"].as_str().unwrap_or("?").to_string(),
                status,
            )
        })
        .collect()
}

/// Waits (up to 60 s) until every appliance's status passes `done`; returns the statuses.
fn wait_for_status(
    ns: &Netns,
    url: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> std::collections::BTreeMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let statuses = fleet_status(ns, url);
        if statuses.len() == 2 && statuses.values().all(&done) {
            return statuses;
        }
        assert!(Instant::now() < deadline, "{what}: {statuses:#?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_published_update_reaches_both_running_appliances_and_bad_ones_are_refused_by_each() {
    if skip_live() {
        return;
    }
    let fleet = Netns::unique().expect("namespace");
    let peer = Netns::unique().expect("namespace");
    let names = [
        (unique_name(), unique_name()),
        (unique_name(), unique_name()),
    ];
    let pairs: Vec<VethPair> = names
        .iter()
        .enumerate()
        .map(|(i, (a, b))| {
            let pair = VethPair::new(
                &fleet,
                a,
                &peer,
                b,
                &format!("10.204.{i}.1/24"),
                &format!("10.204.{i}.2/24"),
            )
            .expect("veth pair");
            pair.pin_neighbours().expect("neighbours");
            pair
        })
        .collect();
    let work = TempDir::new("fleet-updates");
    let server = NatsServer::start(&work.path().join("nats"), "", &[], Some(&fleet));
    let url = server.url();
    let bin = vigil_bin();
    let vigil_in = |args: &[&str]| {
        fleet
            .run(bin.to_str().expect("utf-8"), args)
            .unwrap_or_else(|err| panic!("vigil {args:?}: {err}"))
    };
    vigil_in(&["fleet", "init", "--url", &url]);
    let text = |p: &Path| p.to_str().expect("utf-8").to_string();
    let appliances: Vec<(PathBuf, LiveVigil)> = ["a1", "a2"]
        .iter()
        .zip(&pairs)
        .map(|(name, pair)| {
            let data = work.path().join(name);
            let config = fleet_config(work.path(), name, &url, "");
            let live = LiveVigil::start(
                &fleet,
                &[
                    "--iface",
                    pair.if_a(),
                    "--mode",
                    "generic",
                    "--data-dir",
                    &text(&data),
                    "--plugins",
                    &text(&plugin_dir()),
                    "--config",
                    &text(&config),
                ],
            );
            (data, live)
        })
        .collect();
    // Traffic flows through every update.
    for pair in &pairs {
        peer.spawn("ping", &["-q", "-i", "0.01", &pair.ip_a().to_string()])
            .expect("ping");
    }

    let publish = |bundle: &Path| vigil_in(&["fleet", "publish", "--url", &url, &text(bundle)]);
    let newer = work.path().join("network-scan-0.2.0.vbundle");
    build_bundle("network-scan", "0.2.0", &[&dev_signer_key()], &newer);
    publish(&newer);
    // The heartbeat says what the capture saw and lost, beside the versions.
    wait_for_status(&fleet, &url, "both run network-scan 0.2.0", |s| {
        s["plugins"]["network-scan"] == "0.2.0"
            && s["capture"]["packets"].as_u64() > Some(0)
            && s["capture"]["drop_ratio"].is_number()
    });
    let before: Vec<_> = appliances
        .iter()
        .map(|(data, _)| files_under(&data.join("bundles")))
        .collect();

    // A tampered bundle, an older version and a stranger's signature: each refused by both.
    let signed = work.path().join("network-scan-0.3.0.vbundle");
    build_bundle("network-scan", "0.3.0", &[&dev_signer_key()], &signed);
    let tampered = work.path().join("tampered.vbundle");
    tamper_wasm(&signed, &tampered);
    let older = work.path().join("network-scan-0.1.9.vbundle");
    build_bundle("network-scan", "0.1.9", &[&dev_signer_key()], &older);
    let stranger_key = work.path().join("stranger.key");
    vigil_ok(&["key", "generate", "--out", &text(&stranger_key)]);
    let stranger = work.path().join("network-scan-0.4.0.vbundle");
    build_bundle("network-scan", "0.4.0", &[&stranger_key], &stranger);
    let refusals = [
        (&tampered, "the wasm was changed after signing"),
        (&older, "is not newer than 0.2.0"),
        (&stranger, "which is not in the installed delegation"),
    ];
    for (n, (bundle, reason)) in refusals.iter().enumerate() {
        publish(bundle);
        let statuses = wait_for_status(&fleet, &url, reason, |s| {
            s["refusals"].as_array().map_or(0, Vec::len) == n + 1
        });
        for (name, status) in &statuses {
            let last = &status["refusals"][n];
            assert!(
                last["reason"].as_str().unwrap_or_default().contains(reason),
                "{name}: {last}"
            );
            assert_eq!(
                status["plugins"]["network-scan"], "0.2.0",
                "{name} kept 0.2.0"
            );
        }
    }
    let table = vigil_in(&["fleet", "status", "--url", &url]);
    assert!(table.contains("refused network-scan-0.1.9"), "{table}");
    let after: Vec<_> = appliances
        .iter()
        .map(|(data, _)| files_under(&data.join("bundles")))
        .collect();
    assert!(before == after, "refused updates changed nothing on disk");
    for (_, live) in appliances {
        assert!(live.stop().success());
    }
}

#[test]
fn a_three_node_cluster_loses_nothing_when_a_node_dies_during_export() {
    let dir = TempDir::new("fleet-cluster");
    let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes: Vec<NatsServer> = (0..3)
        .map(|i| {
            let routes: Vec<String> = cluster_ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, port)| format!("nats-route://127.0.0.1:{port}"))
                .collect();
            let extra = format!(
                "server_name: n{i}\ncluster {{ name: vigil, listen: 127.0.0.1:{}, routes: [{}] }}",
                cluster_ports[i],
                routes.join(", ")
            );
            NatsServer::start(&dir.path().join(format!("n{i}")), &extra, &[], None)
        })
        .collect();
    let url = nodes
        .iter()
        .map(NatsServer::url)
        .collect::<Vec<_>>()
        .join(",");
    let survivor = nodes[1].url();
    // The cluster elects its JetStream leader after the nodes are ready.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let init = vigil(&["fleet", "init", "--url", &survivor, "--replicas", "3"]);
        if init.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "{}", stderr_of(&init));
        std::thread::sleep(Duration::from_millis(500));
    }
    let pcaps = [
        fixture("lab", "baseline.pcap"),
        fixture("lab", "attack.pcap"),
    ];
    let runs: Vec<(&str, PathBuf, Child)> = ["a1", "a2"]
        .into_iter()
        .map(|name| {
            let data = dir.path().join(name);
            let config = fleet_config(dir.path(), name, &url, "");
            let child = spawn_replay(&data, &config, &pcaps);
            (name, data, child)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while vigil(&["fleet", "alerts", "--url", &survivor, "--site", "lab"])
        .stdout
        .is_empty()
    {
        assert!(Instant::now() < deadline, "no alert reached the cluster");
        std::thread::sleep(Duration::from_millis(50));
    }
    nodes[0].kill();
    // Readers wait out the election that may follow (consumers are created through the leader).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !vigil(&["fleet", "alerts", "--url", &survivor, "--site", "lab"])
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the cluster never answered again"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for (name, data, child) in runs {
        let out = child.wait_with_output().expect("replay ends");
        assert!(out.status.success(), "{name}: {}", stderr_of(&out));
        let written = exported_from(&data);
        assert!(!written.is_empty());
        let exported = fleet_records(&survivor, name, &[]);
        assert_eq!(
            exported.len(),
            written.len(),
            "{name}: nothing lost, nothing twice"
        );
        assert!(
            exported == written,
            "{name}: the same records in the same order"
        );
    }
}
