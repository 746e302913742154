//! Devices doing their usual job are not attackers, on real traffic: a nightly backup server, a
//! monitoring host, a weekly vulnerability scanner and ordinary users, made with socat, ping and
//! nmap in namespaces this test creates and captured with tcpdump. A week of those nights is
//! learned; the next night's usual work, run again with the same tools (and a second monitoring
//! host doing the first one's job), raises no breach and no action, while the same devices doing
//! something new breach, saying what was expected and what was seen.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vigil_tests::forge::time_span;
use vigil_tests::lab::{eve_epoch, shifted};
use vigil_tests::live::{nmap_syn_scan, skip_live, start_tcpdump, wait_until_written};
use vigil_tests::netns::{Netns, VethPair};
use vigil_tests::workspace::{eve_records, replay_ok, saved_actions, TempDir};

const DAY: u64 = 24 * 3600;
/// Nights of learning before the test night: past the models' four days of learning.
const NIGHTS: u64 = 7;

const BACKUP: &str = "10.61.0.10";
const MONITOR: &str = "10.61.0.11";
const SECOND_MONITOR: &str = "10.61.0.12";
const SCANNER: &str = "10.61.0.13";
const USER: &str = "10.61.0.20";
const OTHER_USER: &str = "10.61.0.21";
const CLIENTS: [&str; 6] = [BACKUP, MONITOR, SECOND_MONITOR, SCANNER, USER, OTHER_USER];
/// The weekly scan's ports.
const SCAN_PORTS: &str = "22,80,135,139,445,3389,5985";

/// `10.61.NET.1` to `10.61.NET.N`: the file servers (net 1) and hosts nobody usually touches
/// (net 2).
fn hosts(net: u8, n: u8) -> Vec<String> {
    (1..=n).map(|i| format!("10.61.{net}.{i}")).collect()
}

/// A shell job: one connection (or ping, or datagram) per target, all at once, from `src`.
struct Job(String);

impl Job {
    fn tcp(src: &str, hosts: &[String], port: u16) -> Job {
        Job::each(hosts, |host| {
            format!("socat -u OPEN:/dev/null TCP:{host}:{port},bind={src},connect-timeout=3")
        })
    }

    fn ping(src: &str, hosts: &[String]) -> Job {
        Job::each(hosts, |host| {
            format!("ping -n -q -c 1 -W 2 -I {src} {host}")
        })
    }

    /// A datagram to each of `ports` on `host`.
    fn udp(src: &str, host: &str, ports: std::ops::Range<u16>) -> Job {
        let ports: Vec<String> = ports.map(|p| p.to_string()).collect();
        Job::each(&ports, |port| {
            format!("echo probe | socat -u - UDP:{host}:{port},bind={src}")
        })
    }

    fn each(targets: &[String], command: impl Fn(&str) -> String) -> Job {
        let lines: Vec<String> = targets
            .iter()
            .map(|t| format!("{} >/dev/null 2>&1 &", command(t)))
            .collect();
        Job(lines.join("\n"))
    }
}

/// Clients on one side of a veth pair, servers (every address of nets 1 and 2, listening on
/// 22, 445 and 3389) on the other; tcpdump records on the servers' end.
struct Office {
    clients: Netns,
    servers: Netns,
    _link: VethPair,
    dir: TempDir,
}

impl Office {
    fn new() -> Office {
        let clients = Netns::unique().expect("clients namespace");
        let servers = Netns::unique().expect("servers namespace");
        let link = VethPair::new(
            &clients,
            "office0",
            &servers,
            "servers0",
            "10.61.0.1/16",
            "10.61.1.1/16",
        )
        .expect("veth pair");
        let dir = TempDir::new("usual-jobs");
        let mut batch = String::new();
        for client in CLIENTS {
            batch += &format!("addr add {client}/16 dev office0\n");
        }
        let batch_file = dir.path().join("clients.batch");
        std::fs::write(&batch_file, batch).expect("batch file");
        clients
            .run("ip", &["-batch", &batch_file.to_string_lossy()])
            .expect("client addresses");
        let mut batch = String::new();
        for host in hosts(1, 40).iter().skip(1).chain(&hosts(2, 40)) {
            batch += &format!("addr add {host}/16 dev servers0\n");
        }
        let batch_file = dir.path().join("servers.batch");
        std::fs::write(&batch_file, batch).expect("batch file");
        servers
            .run("ip", &["-batch", &batch_file.to_string_lossy()])
            .expect("server addresses");
        // Every unreachable port answers (the kernel otherwise rate-limits ICMP errors).
        servers
            .run("sysctl", &["-q", "-w", "net.ipv4.icmp_ratelimit=0"])
            .expect("sysctl");
        for port in [22, 445, 3389] {
            servers
                .spawn(
                    "socat",
                    &[
                        "-u",
                        &format!("TCP-LISTEN:{port},fork,reuseaddr"),
                        "OPEN:/dev/null",
                    ],
                )
                .expect("socat listener");
        }
        let office = Office {
            clients,
            servers,
            _link: link,
            dir,
        };
        office.wait_for_listeners();
        office
    }

    fn wait_for_listeners(&self) {
        for _ in 0..50 {
            let listening = self.servers.run("ss", &["-ltnH"]).unwrap_or_default();
            if [":22 ", ":445 ", ":3389 "]
                .iter()
                .all(|port| listening.contains(port))
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("socat listeners did not start");
    }

    /// Runs `jobs` from the clients and returns what tcpdump recorded of them.
    fn record(&self, name: &str, jobs: &[Job]) -> PathBuf {
        let script: Vec<&str> = jobs.iter().map(|j| j.0.as_str()).collect();
        self.capture(name, || {
            self.clients
                .run("bash", &["-c", &format!("{}\nwait", script.join("\n"))])
                .expect("the night's jobs run");
        })
    }

    /// What tcpdump on the servers' end records while `run` runs.
    fn capture(&self, name: &str, run: impl FnOnce()) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.pcap"));
        let mut tcpdump = start_tcpdump(
            &self.servers,
            &[
                "-i",
                "servers0",
                "-n",
                "-U",
                "-s",
                "1600",
                "-B",
                "8192",
                "-w",
                &path.to_string_lossy(),
            ],
        );
        run();
        wait_until_written(&path);
        let _ = tcpdump.kill();
        let _ = tcpdump.wait();
        path
    }

    /// What the backup server, the monitoring host and the users do every night.
    fn night(&self, name: &str) -> PathBuf {
        let file_servers = hosts(1, 40);
        self.record(
            name,
            &[
                Job::tcp(BACKUP, &file_servers, 445),
                Job::ping(MONITOR, &file_servers),
                Job::tcp(MONITOR, &file_servers, 22),
                Job::tcp(MONITOR, &file_servers, 3389),
                Job::tcp(USER, &file_servers[..2], 445),
                Job::tcp(OTHER_USER, &file_servers[2..3], 445),
                Job::tcp(OTHER_USER, &file_servers[2..3], 22),
            ],
        )
    }

    /// The weekly vulnerability scan: nmap from its fixed host over the file servers.
    fn weekly_scan(&self, name: &str) -> PathBuf {
        self.capture(name, || {
            nmap_syn_scan(
                &self.clients,
                "10.61.1.1-40",
                SCAN_PORTS,
                &["-S", SCANNER, "-e", "office0"],
            );
        })
    }
}

/// `pcap` moved `days` later, next to it.
fn on_day(pcap: &Path, days: u64) -> PathBuf {
    let out = pcap.with_extension(format!("day{days}.pcap"));
    shifted(pcap, days * DAY, &out);
    out
}

/// The first packet's time of a capture tcpdump wrote, in epoch seconds.
fn start_of(pcap: &Path) -> f64 {
    time_span(pcap).0 as f64 / 1e6
}

fn alerts_since(data: &Path, since: f64) -> Vec<Value> {
    eve_records(data)
        .into_iter()
        .filter(|r| r["event_type"] == "alert")
        .filter(|r| eve_epoch(r["timestamp"].as_str().unwrap_or_default()) >= since)
        .collect()
}

fn device_table(data: &Path) -> Value {
    let text = std::fs::read_to_string(data.join("devices.json")).expect("devices.json");
    serde_json::from_str(&text).expect("devices.json is JSON")
}

/// The device holding `ip` in a saved device table.
fn device_in(table: &Value, ip: &str) -> Value {
    table["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| {
            d["addresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["value"] == ip))
        })
        .cloned()
        .unwrap_or_else(|| panic!("{ip} is in the device table"))
}

fn summary(alerts: &[Value]) -> Vec<String> {
    alerts
        .iter()
        .map(|a| {
            format!(
                "{} by {}: {}",
                a["alert"]["signature"], a["src_ip"], a["vigil"]["pattern"]
            )
        })
        .collect()
}

#[test]
fn usual_jobs_raise_nothing_after_learning_and_new_activity_of_the_same_devices_breaches() {
    if skip_live() {
        return;
    }
    let office = Office::new();
    let learned_night = office.night("night");
    let first_scan = office.weekly_scan("scan");
    let test_night = office.night("test-night");
    let second_scan = office.weekly_scan("scan-again");
    let file_servers = hosts(1, 40);
    let peer = office.record(
        "second-monitor",
        &[
            Job::ping(SECOND_MONITOR, &file_servers),
            Job::tcp(SECOND_MONITOR, &file_servers, 22),
            Job::tcp(SECOND_MONITOR, &file_servers, 3389),
        ],
    );
    let unusual = office.record(
        "unusual",
        &[
            // A new port on the backup server's usual hosts.
            Job::tcp(BACKUP, &file_servers, 3389),
            // The monitoring host's usual checks, on hosts it never watched.
            Job::ping(MONITOR, &hosts(2, 40)),
            Job::tcp(MONITOR, &hosts(2, 40), 22),
            // A user's first use of a protocol it never used, on many ports of a file server.
            Job::udp(USER, &file_servers[0], 161..191),
        ],
    );

    // A week of nights with the weekly scan on the first; then the test night (the usual jobs,
    // the weekly scan again, the second monitoring host), every capture on its own day.
    let mut week: Vec<PathBuf> = Vec::new();
    for day in 0..NIGHTS {
        week.push(on_day(&learned_night, day));
        if day == 0 {
            week.push(on_day(&first_scan, day));
        }
    }
    let tested: Vec<PathBuf> = [&test_night, &second_scan, &peer]
        .iter()
        .map(|pcap| on_day(pcap, NIGHTS))
        .collect();
    let test_night_start = start_of(&test_night) + (NIGHTS * DAY) as f64 - 1.0;
    let data = TempDir::new("usual-jobs-data");
    let pcaps: Vec<&Path> = week.iter().chain(&tested).map(PathBuf::as_path).collect();
    replay_ok(data.path(), &pcaps);

    let learning_alerts = eve_records(data.path())
        .into_iter()
        .filter(|r| r["event_type"] == "alert")
        .collect::<Vec<_>>();
    assert!(
        !learning_alerts.is_empty(),
        "the floors decide while the models learn: the first night's jobs breach"
    );
    let quiet = alerts_since(data.path(), test_night_start);
    assert!(
        quiet.is_empty(),
        "after a week, the usual jobs and a peer of the monitoring host raise nothing: {:#?}",
        summary(&quiet)
    );
    let actions = saved_actions(data.path());
    assert!(
        actions.iter().all(|a| a["status"]["state"] == "pending"),
        "breaches raised while learning wait for an operator: {actions:#?}"
    );

    // The device table shows the second monitoring host, still learning, in the first one's
    // peer group, and the backup server in neither.
    let table = device_table(data.path());
    let device = |ip: &str| device_in(&table, ip);
    let group_of = |ip: &str| -> Option<Value> {
        let id = device(ip)["id"].clone();
        table["peer_groups"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g["members"].as_array().is_some_and(|m| m.contains(&id)))
            .cloned()
    };
    let monitors = group_of(MONITOR).expect("the monitoring host has a peer group");
    assert_eq!(group_of(SECOND_MONITOR), Some(monitors.clone()));
    assert_ne!(group_of(BACKUP), Some(monitors.clone()), "{monitors}");
    assert_eq!(device(MONITOR)["learning"]["state"], "learned");
    assert_eq!(device(SECOND_MONITOR)["learning"]["state"], "learning");

    // The next night, the same devices do something new: each breaches, past learning, with
    // what its pattern expected and what it did.
    let unusual_night = on_day(&unusual, NIGHTS + 1);
    let unusual_start = start_of(&unusual) + ((NIGHTS + 1) * DAY) as f64 - 1.0;
    replay_ok(data.path(), &[&unusual_night]);
    let breaches = alerts_since(data.path(), unusual_start);
    for (model, device) in [
        ("Device / RDP Scan", BACKUP),
        ("Device / Network Range Scan", MONITOR),
        ("Device / UDP Enumeration", USER),
    ] {
        let alert = breaches
            .iter()
            .find(|a| a["alert"]["signature"] == model && a["src_ip"] == device)
            .unwrap_or_else(|| {
                panic!(
                    "{device} doing something new should raise {model}; raised: {:#?}",
                    summary(&breaches)
                )
            });
        let pattern = &alert["vigil"]["pattern"];
        assert_eq!(pattern["state"], "learned", "{model}: {pattern}");
        let models = device_in(&device_table(data.path()), device)["models"].clone();
        assert!(
            models.as_array().is_some_and(|m| m
                .iter()
                .any(|m| m["model"] == model && m["state"] == "learned")),
            "the device table shows {model} learned for {device}: {models}"
        );
        assert!(
            pattern["expected"].as_str().is_some_and(|e| !e.is_empty())
                && pattern["seen"].as_str().is_some_and(|s| !s.is_empty()),
            "{model} says what was expected and what was seen: {pattern}"
        );
    }
}
