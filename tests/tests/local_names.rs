//! Names hosts give themselves on their own link, made by real tools in namespaces and captured
//! with tcpdump: avahi-daemon announcing and answering over mDNS (asked by `dig`, as RFC 6762
//! §6.7's one-shot querier), nmbd registering and answering NetBIOS names (asked by `nmblookup`
//! from port 137, as Windows asks), and LLMNR as Windows answers it (tests/tools/llmnr.py).
//! Replayed, they reach the `dns` log with their protocol and the device table with their
//! source; and DNS served on an odd port (dnsmasq on 5300, asked by `dig -p 5300`) is recognised
//! by its content.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::live::{require_tools, start_tcpdump, wait_until_written};
use vigil_tests::logs::{tshark_fields, Replay};
use vigil_tests::netns::{skip_without_root, unique_name, Netns, VethPair};
use vigil_tests::workspace::{root, TempDir};

const CLIENT: &str = "10.206.9.1";
const WORKSTATION: &str = "10.206.9.2";
const BROADCAST: &str = "10.206.9.255";
const ODD_DNS_PORT: &str = "5300";
const SERVED_NAME: &str = "fileserver.lab";
const SERVED_ADDRESS: &str = "10.206.9.20";
const MDNS_NAME: &str = "ws-mdns-07";
const NETBIOS_NAME: &str = "WS-NBNS-07";
const WORKGROUP: &str = "LABGROUP";
const LLMNR_NAME: &str = "ws-llmnr-07";

/// A client and a workstation on one link, captured from the client's side.
struct Link {
    client: Netns,
    workstation: Netns,
    _pair: VethPair,
    if_client: String,
    if_workstation: String,
    work: TempDir,
    pcap: PathBuf,
    capture: std::process::Child,
}

impl Link {
    fn new(tag: &str) -> Link {
        let client = Netns::unique().expect("namespace");
        let workstation = Netns::unique().expect("namespace");
        let (if_client, if_workstation) = (unique_name(), unique_name());
        let pair = VethPair::new(
            &client,
            &if_client,
            &workstation,
            &if_workstation,
            &format!("{CLIENT}/24"),
            &format!("{WORKSTATION}/24"),
        )
        .expect("veth pair");
        // NetBIOS names are registered and asked for by subnet broadcast, which a host only
        // takes in with its broadcast address set; mDNS and LLMNR need a multicast route.
        for (ns, ifname, address) in [
            (&client, &if_client, CLIENT),
            (&workstation, &if_workstation, WORKSTATION),
        ] {
            ns.run(
                "ip",
                &[
                    "addr",
                    "replace",
                    &format!("{address}/24"),
                    "brd",
                    "+",
                    "dev",
                    ifname,
                ],
            )
            .expect("broadcast address");
            ns.run("ip", &["route", "add", "224.0.0.0/4", "dev", ifname])
                .expect("multicast route");
        }
        let work = TempDir::new(tag);
        let pcap = work.path().join("link.pcap");
        let pcap_text = pcap.display().to_string();
        let capture = start_tcpdump(
            &client,
            &[
                "-i",
                &if_client,
                "--immediate-mode",
                "-U",
                "-w",
                &pcap_text,
                "udp",
            ],
        );
        Link {
            client,
            workstation,
            _pair: pair,
            if_client,
            if_workstation,
            work,
            pcap,
            capture,
        }
    }

    /// dnsmasq on the workstation serving one name on [`ODD_DNS_PORT`], asked by `dig`: the
    /// answered exchange also proves both hosts exist, so later announcements can name them.
    fn dns_on_odd_port(&self) {
        let pid = self.work.path().join("dnsmasq.pid");
        self.workstation
            .spawn(
                "dnsmasq",
                &[
                    "--no-daemon",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    &format!("--port={ODD_DNS_PORT}"),
                    &format!("--interface={}", self.if_workstation),
                    "--bind-interfaces",
                    &format!("--host-record={SERVED_NAME},{SERVED_ADDRESS}"),
                    &format!("--pid-file={}", pid.display()),
                ],
            )
            .expect("dnsmasq");
        let asked = retry(|| {
            let answer = self
                .client
                .run(
                    "dig",
                    &[
                        "+short",
                        "+tries=1",
                        "+time=1",
                        "-p",
                        ODD_DNS_PORT,
                        &format!("@{WORKSTATION}"),
                        SERVED_NAME,
                        "A",
                    ],
                )
                .unwrap_or_default();
            answer.contains(SERVED_ADDRESS)
        });
        assert!(asked, "dnsmasq never answered on port {ODD_DNS_PORT}");
    }

    /// Stops the capture once everything sent is in the file, and replays it.
    fn replay(mut self) -> (Replay, PathBuf, TempDir) {
        wait_until_written(&self.pcap);
        let _ = self.capture.kill();
        let _ = self.capture.wait();
        let replay = Replay::run(&self.pcap);
        (replay, self.pcap, self.work)
    }
}

/// Tries `attempt` for up to 30 s, as a daemon in a fresh namespace takes a few seconds.
fn retry(mut attempt: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if attempt() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    false
}

fn wait_for_line(log: &Path, line: &str) -> bool {
    retry(|| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(line)
    })
}

/// The `dns` log's records of `protocol` for `query` (case-insensitive, as names are).
fn logged<'a>(dns: &'a [Value], protocol: &str, query: &str) -> Vec<&'a Value> {
    dns.iter()
        .filter(|r| r["protocol"] == protocol)
        .filter(|r| {
            r["query"]
                .as_str()
                .is_some_and(|q| q.eq_ignore_ascii_case(query))
        })
        .collect()
}

fn answers(record: &Value) -> Vec<String> {
    record["answers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

fn devices(data_dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(data_dir.join("devices.json")).expect("devices.json");
    let saved: Value = serde_json::from_str(&text).expect("JSON");
    saved["devices"].as_array().cloned().unwrap_or_default()
}

fn names_by_source(device: &Value, source: &str) -> Vec<String> {
    let mut names: Vec<String> = device["host_names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["source"] == source)
        .filter_map(|n| n["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

fn skip_or_check_tools(programs: &[&str]) -> bool {
    if skip_without_root() {
        return true;
    }
    require_tools(programs);
    false
}

#[test]
fn dns_served_on_an_odd_port_is_recognised_by_content() {
    if skip_or_check_tools(&["dnsmasq", "dig", "tcpdump"]) {
        return;
    }
    let link = Link::new("odd-dns");
    link.dns_on_odd_port();
    let (replay, _pcap, _work) = link.replay();
    let dns = replay.log("dns");
    let served = logged(&dns, "dns", SERVED_NAME);
    assert!(!served.is_empty(), "{dns:#?}");
    for record in served {
        assert_eq!(record["id.resp_p"], 5300, "{record:#}");
        assert_eq!(record["qtype_name"], "A", "{record:#}");
        assert_eq!(record["rcode_name"], "NOERROR", "{record:#}");
        assert_eq!(answers(record), [SERVED_ADDRESS], "{record:#}");
    }
}

#[test]
fn names_hosts_claim_over_mdns_llmnr_and_netbios_reach_the_dns_log_and_the_device_table() {
    if skip_or_check_tools(&[
        "avahi-daemon",
        "nmbd",
        "nmblookup",
        "dnsmasq",
        "dig",
        "python3",
        "unshare",
        "tcpdump",
    ]) {
        return;
    }
    let link = Link::new("local-names");
    link.dns_on_odd_port();
    let work = link.work.path();

    // avahi-daemon without D-Bus, announcing its host name. /run is a tmpfs of its own (its
    // pid file and socket go in /run/avahi-daemon), so it runs beside any other avahi-daemon on
    // the machine, and on one where the package never ran, which has no /run/avahi-daemon to
    // mount over. The shell's errors go to the log too.
    let avahi_conf = work.join("avahi-daemon.conf");
    std::fs::write(
        &avahi_conf,
        format!(
            "[server]\nhost-name={MDNS_NAME}\nuse-ipv4=yes\nuse-ipv6=no\n\
             allow-interfaces={}\nenable-dbus=no\n[publish]\npublish-workstation=no\n",
            link.if_workstation
        ),
    )
    .expect("avahi config");
    let avahi_log = work.join("avahi.log");
    link.workstation
        .spawn(
            "unshare",
            &[
                "-m",
                "sh",
                "-c",
                &format!(
                    "exec 2>{}; mount -t tmpfs tmpfs /run && mkdir /run/avahi-daemon && \
                     exec avahi-daemon -f {} --no-chroot --no-drop-root --no-rlimits",
                    avahi_log.display(),
                    avahi_conf.display()
                ),
            ],
        )
        .expect("avahi-daemon");

    // nmbd registering its name and workgroup; every directory it writes is the test's.
    let smb_conf = |side: &str, ifname: &str, netbios_name: &str| {
        let dir = work.join(format!("samba-{side}"));
        let mut conf = format!(
            "[global]\nnetbios name = {netbios_name}\nworkgroup = {WORKGROUP}\n\
             interfaces = {ifname}\nbind interfaces only = yes\n\
             log file = {dir}/log.%m\n",
            dir = dir.display()
        );
        for key in ["lock", "state", "cache", "pid"] {
            let sub = dir.join(key);
            std::fs::create_dir_all(&sub).expect("samba dir");
            conf.push_str(&format!("{key} directory = {}\n", sub.display()));
        }
        let path = dir.join("smb.conf");
        std::fs::write(&path, conf).expect("smb.conf");
        path.display().to_string()
    };
    let nmbd_conf = smb_conf("workstation", &link.if_workstation, NETBIOS_NAME);
    link.workstation
        .spawn(
            "nmbd",
            &["--foreground", "--no-process-group", "-s", &nmbd_conf],
        )
        .expect("nmbd");

    let llmnr = root().join("tests/tools/llmnr.py").display().to_string();
    link.workstation
        .spawn("python3", &[&llmnr, "respond", LLMNR_NAME, WORKSTATION])
        .expect("LLMNR responder");

    // The client asks for each name the way its protocol's usual querier does.
    let client_conf = smb_conf("client", &link.if_client, "CLIENT-07");
    let netbios_answered = retry(|| {
        link.client
            .run(
                "nmblookup",
                &["-s", &client_conf, "-r", "-B", BROADCAST, NETBIOS_NAME],
            )
            .unwrap_or_default()
            .contains(&format!("{WORKSTATION} {NETBIOS_NAME}<00>"))
    });
    assert!(netbios_answered, "nmbd never answered for {NETBIOS_NAME}");
    let llmnr_answered = retry(|| {
        link.client
            .run("python3", &[&llmnr, "query", LLMNR_NAME, CLIENT])
            .is_ok_and(|answer| answer.trim() == WORKSTATION)
    });
    assert!(llmnr_answered, "nobody answered LLMNR for {LLMNR_NAME}");
    assert!(
        wait_for_line(&avahi_log, "Server startup complete"),
        "avahi-daemon did not start: {}",
        std::fs::read_to_string(&avahi_log).unwrap_or_default()
    );
    // A one-shot mDNS query: avahi answers it by unicast, from 5353 to dig's port. dig itself
    // rejects an answer from an address it did not ask, so the capture is what tells.
    let mdns_name = format!("{MDNS_NAME}.local");
    let _ = link.client.run(
        "dig",
        &[
            "+tries=1",
            "+time=2",
            "-p",
            "5353",
            "@224.0.0.251",
            &mdns_name,
            "A",
        ],
    );
    let (replay, pcap, _work) = link.replay();
    let dns = replay.log("dns");

    // mDNS: avahi's announcements and its answer name its address.
    let mdns = logged(&dns, "mdns", &mdns_name);
    assert!(
        mdns.iter()
            .any(|r| r["qtype_name"] == "A" && answers(r) == [WORKSTATION]),
        "{mdns:#?}"
    );
    // LLMNR: the client's question, and the workstation's answer.
    let llmnr = logged(&dns, "llmnr", LLMNR_NAME);
    assert!(
        llmnr
            .iter()
            .any(|r| r["id.orig_h"] == CLIENT && answers(r).is_empty()),
        "{llmnr:#?}"
    );
    assert!(
        llmnr.iter().any(|r| r["id.orig_h"] == WORKSTATION
            && r["rcode_name"] == "NOERROR"
            && answers(r) == [WORKSTATION]),
        "{llmnr:#?}"
    );
    // NetBIOS: the names as tshark decodes them from the same capture, registrations and the
    // answer alike, each with the workstation's address.
    let nbns: Vec<&Value> = dns.iter().filter(|r| r["protocol"] == "nbns").collect();
    let mut vigil_names: Vec<String> = nbns
        .iter()
        .filter_map(|r| r["query"].as_str().map(str::to_string))
        .collect();
    vigil_names.sort();
    vigil_names.dedup();
    let mut tshark_names: Vec<String> = tshark_fields(&pcap, "nbns", &["nbns.name"])
        .into_iter()
        .flat_map(|row| row.into_iter().flat_map(tshark_netbios_names))
        .collect();
    tshark_names.sort();
    tshark_names.dedup();
    assert_eq!(vigil_names, tshark_names);
    let own = logged(&dns, "nbns", &format!("{NETBIOS_NAME}<00>"));
    assert!(
        own.iter()
            .any(|r| r["qtype_name"] == "NB" && answers(r) == [WORKSTATION]),
        "{own:#?}"
    );

    // The device table: the workstation carries each protocol's name, the client none, and
    // the workgroup (a NetBIOS group name) names nobody.
    let table = devices(replay.data.path());
    let holding = |address: &str| {
        table
            .iter()
            .find(|d| {
                d["addresses"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|s| s["value"] == address))
            })
            .unwrap_or_else(|| panic!("no device holds {address}: {table:#?}"))
    };
    let workstation = holding(WORKSTATION);
    assert_eq!(
        names_by_source(workstation, "mdns"),
        [mdns_name.as_str()],
        "{workstation:#}"
    );
    assert_eq!(
        names_by_source(workstation, "llmnr"),
        [LLMNR_NAME],
        "{workstation:#}"
    );
    assert_eq!(
        names_by_source(workstation, "nbns"),
        [NETBIOS_NAME],
        "{workstation:#}"
    );
    let client = holding(CLIENT);
    assert_eq!(
        client["host_names"].as_array().map(Vec::len),
        Some(0),
        "{client:#}"
    );
}

/// tshark's `nbns.name` reads `WS-NBNS-07<00> (Workstation/Redirector)`; several names in one
/// packet come comma-separated.
fn tshark_netbios_names(field: String) -> Vec<String> {
    field
        .split(',')
        .filter_map(|name| name.split(" (").next())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .collect()
}
