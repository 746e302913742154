//! The fleet over NATS JetStream, against real `nats-server` processes on loopback: appliances
//! export through a broker crash, and the broker's permissions keep each appliance to its own
//! subjects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::lab::fixture;
use vigil_tests::live::{skip_live, LiveVigil};
use vigil_tests::nats::{NatsCluster, NatsServer};
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::workspace::{
    build_bundle, dev_signer_key, eve_records, model_update_bundle, plugin_dir, root,
    saved_actions, tamper_wasm, vigil, vigil_bin, vigil_ok, TempDir,
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

    // Neither the reader nor an appliance can publish bundles, the vendor can.
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
    let refused_with = |out: &Output, subject: &str| {
        assert!(!out.status.success());
        let violation = format!("Permissions Violation for Publish to \"{subject}");
        assert!(stderr_of(out).contains(&violation), "{}", stderr_of(out));
    };
    // The reader may not even look at the bundle store; an appliance reads it, but not write.
    refused_with(
        &publish("reader", "reader-secret"),
        "$JS.API.STREAM.INFO.OBJ_vigil-bundles",
    );
    refused_with(&publish("lab-a1", "a1-secret"), "$O.vigil-bundles.");
    // An appliance cannot read the fleet's alerts either.
    let reading = vigil(&[
        "fleet",
        "alerts",
        "--url",
        &url,
        "--user",
        "lab-a1",
        "--password",
        "a1-secret",
    ]);
    refused_with(&reading, "$JS.API.STREAM.INFO.VIGIL");
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

/// `vigil ARGS` run in `ns`: its stdout; a failure panics with its stderr.
fn vigil_in(ns: &Netns, args: &[&str]) -> String {
    try_vigil_in(ns, args).unwrap_or_else(|err| panic!("vigil {args:?}: {err}"))
}

/// `vigil ARGS` run in `ns`: its stdout, or why it failed.
fn try_vigil_in(ns: &Netns, args: &[&str]) -> Result<String, String> {
    let bin = vigil_bin();
    ns.run(bin.to_str().expect("utf-8"), args)
        .map_err(|err| err.to_string())
}

/// Retries `attempt` (up to 60 s) until it succeeds: a cluster answers once it elected the
/// leaders of what the request touches.
fn until_ok(what: &str, attempt: impl Fn() -> Result<String, String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match attempt() {
            Ok(out) => return out,
            Err(err) => assert!(Instant::now() < deadline, "{what}: {err}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `vigil fleet status --json` run in `ns`: each appliance's status by name.
fn fleet_status(ns: &Netns, url: &str) -> Result<BTreeMap<String, Value>, String> {
    let out = try_vigil_in(ns, &["fleet", "status", "--json", "--url", url])?;
    Ok(out
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("JSON"))
        .map(|status| {
            (
                status["appliance"].as_str().unwrap_or("?").to_string(),
                status,
            )
        })
        .collect())
}

/// Waits (up to 60 s) until both appliances' statuses pass `done`; returns the statuses.
fn wait_for_status(
    ns: &Netns,
    url: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let statuses = fleet_status(ns, url);
        if let Ok(statuses) = &statuses {
            if statuses.len() == 2 && statuses.values().all(&done) {
                return statuses.clone();
            }
        }
        assert!(Instant::now() < deadline, "{what}: {statuses:#?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn text(path: &Path) -> String {
    path.to_str().expect("utf-8").to_string()
}

/// Two appliances `a1` and `a2` running live (`vigil run`) in `fleet`, each on its own veth
/// pair to `peer` (10.`subnet`.N.0/24), with `[fleet] url` and their data dirs under `work`;
/// pings from `peer` keep traffic flowing through them. Drop the appliances before the pairs.
fn live_appliances(
    fleet: &Netns,
    peer: &Netns,
    subnet: u8,
    work: &Path,
    url: &str,
) -> (Vec<VethPair>, Vec<(PathBuf, LiveVigil)>) {
    let pairs: Vec<VethPair> = (0..2)
        .map(|i| {
            let pair = VethPair::new(
                fleet,
                &unique_name(),
                peer,
                &unique_name(),
                &format!("10.{subnet}.{i}.1/24"),
                &format!("10.{subnet}.{i}.2/24"),
            )
            .expect("veth pair");
            pair.pin_neighbours().expect("neighbours");
            pair
        })
        .collect();
    let appliances = ["a1", "a2"]
        .iter()
        .zip(&pairs)
        .map(|(name, pair)| {
            let data = work.join(name);
            let config = fleet_config(work, name, url, "");
            let live = LiveVigil::start(
                fleet,
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
    for pair in &pairs {
        peer.spawn("ping", &["-q", "-i", "0.01", &pair.ip_a().to_string()])
            .expect("ping");
    }
    (pairs, appliances)
}

/// `network-scan` at `version`, signed by the development key, under `work`.
fn scan_bundle(work: &Path, version: &str) -> PathBuf {
    let bundle = work.join(format!("network-scan-{version}.vbundle"));
    build_bundle("network-scan", version, &[&dev_signer_key()], &bundle);
    bundle
}

#[test]
fn a_published_update_reaches_both_running_appliances_and_bad_ones_are_refused_by_each() {
    if skip_live() {
        return;
    }
    let fleet = Netns::unique().expect("namespace");
    let peer = Netns::unique().expect("namespace");
    let work = TempDir::new("fleet-updates");
    let server = NatsServer::start(&work.path().join("nats"), "", &[], Some(&fleet));
    let url = server.url();
    vigil_in(&fleet, &["fleet", "init", "--url", &url]);
    let (_pairs, appliances) = live_appliances(&fleet, &peer, 204, work.path(), &url);

    let publish =
        |bundle: &Path| vigil_in(&fleet, &["fleet", "publish", "--url", &url, &text(bundle)]);
    publish(&scan_bundle(work.path(), "0.2.0"));
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
    let signed = scan_bundle(work.path(), "0.3.0");
    let tampered = work.path().join("tampered.vbundle");
    tamper_wasm(&signed, &tampered);
    let older = scan_bundle(work.path(), "0.1.9");
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
    let table = vigil_in(&fleet, &["fleet", "status", "--url", &url]);
    assert!(table.contains("refused network-scan-0.1.9"), "{table}");
    let after: Vec<_> = appliances
        .iter()
        .map(|(data, _)| files_under(&data.join("bundles")))
        .collect();
    assert!(before == after, "refused updates changed nothing on disk");

    // A model update (new config, same code) travels the same way.
    let model = work.path().join("network-scan-0.2.1.vbundle");
    let config = r#"{"threshold": 10000, "min_ports": 3}"#;
    model_update_bundle(
        "network-scan",
        "0.2.1",
        config,
        &[&dev_signer_key()],
        &model,
    );
    publish(&model);
    wait_for_status(&fleet, &url, "both run the model update 0.2.1", |s| {
        s["plugins"]["network-scan"] == "0.2.1"
    });
    for (_, live) in appliances {
        assert!(live.stop().success());
    }
}

/// `vigil fleet init --replicas 3` through `url`, once the cluster elected its JetStream leader
/// (after the nodes are ready); run in `ns` if given.
fn init_cluster(url: &str, ns: Option<&Netns>) {
    let args = ["fleet", "init", "--url", url, "--replicas", "3"];
    until_ok("vigil fleet init on the cluster", || match ns {
        Some(ns) => try_vigil_in(ns, &args),
        None => {
            let init = vigil(&args);
            if init.status.success() {
                Ok(String::new())
            } else {
                Err(stderr_of(&init))
            }
        }
    });
}

#[test]
fn a_three_node_cluster_loses_nothing_when_a_node_dies_during_export() {
    let dir = TempDir::new("fleet-cluster");
    let mut cluster = NatsCluster::start(dir.path(), None);
    let url = cluster.url();
    let survivor = cluster.nodes[1].url();
    init_cluster(&survivor, None);
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
    cluster.nodes[0].kill();
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

#[test]
fn a_three_node_cluster_keeps_updating_running_appliances_when_their_node_dies() {
    if skip_live() {
        return;
    }
    let fleet = Netns::unique().expect("namespace");
    let peer = Netns::unique().expect("namespace");
    let work = TempDir::new("fleet-cluster-updates");
    let mut cluster = NatsCluster::start(&work.path().join("nats"), Some(&fleet));
    let url = cluster.url();
    init_cluster(&url, Some(&fleet));
    let (_pairs, appliances) = live_appliances(&fleet, &peer, 205, work.path(), &url);
    let publish = |url: &str, bundle: &Path| {
        until_ok("vigil fleet publish", || {
            try_vigil_in(&fleet, &["fleet", "publish", "--url", url, &text(bundle)])
        })
    };
    publish(&url, &scan_bundle(work.path(), "0.2.0"));
    wait_for_status(&fleet, &url, "both run network-scan 0.2.0", |s| {
        s["plugins"]["network-scan"] == "0.2.0"
    });

    // Kill the node a1's update watcher is connected to (each connection names its appliance).
    let watcher = "vigil vigil.lab.a1 updates";
    let node = cluster
        .nodes
        .iter()
        .position(|node| node.client_names().iter().any(|name| name == watcher))
        .unwrap_or_else(|| panic!("no node serves {watcher:?}"));
    cluster.nodes[node].kill();
    let killed_at = unix_now();
    let survivor = cluster.nodes[(node + 1) % 3].url();

    // A new version published to what is left reaches both, and their heartbeats go on.
    publish(&survivor, &scan_bundle(work.path(), "0.3.0"));
    let statuses = wait_for_status(&fleet, &survivor, "both run network-scan 0.3.0", |s| {
        s["plugins"]["network-scan"] == "0.3.0" && s["at"].as_u64() > Some(killed_at)
    });
    for (name, status) in &statuses {
        assert_eq!(
            status["refusals"].as_array().map(Vec::len),
            Some(0),
            "{name}: {status}"
        );
    }
    for (name, (data, live)) in ["a1", "a2"].iter().zip(appliances) {
        let record = std::fs::read(data.join("bundles/versions.json")).expect("versions.json");
        let versions: Value = serde_json::from_slice(&record).expect("versions.json is JSON");
        assert_eq!(
            versions["network-scan"]["installed"]["version"], "0.3.0",
            "{name} installed 0.3.0 on disk: {versions}"
        );
        assert!(live.stop().success());
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}
