//! Device identity in `DATA_DIR/devices.json`: a real DHCP exchange (dnsmasq and ISC dhclient in
//! namespaces this test makes) names a device by its MAC and lease; in the lab's captures the
//! attacker's static VPN address carries both workstation names NTLM revealed, and the alerts
//! and incident say so.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::lab::{self, committed_labs, fixture, ground_truth};
use vigil_tests::live::{require_tools, start_tcpdump};
use vigil_tests::netns::{skip_without_root, unique_name, Netns, VethPair};
use vigil_tests::workspace::{eve_records, replay_ok, TempDir};

fn devices(data_dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(data_dir.join("devices.json")).expect("devices.json");
    let saved: Value = serde_json::from_str(&text).expect("JSON");
    saved["devices"].as_array().cloned().unwrap_or_default()
}

fn holding<'a>(devices: &'a [Value], address: &str) -> Vec<&'a Value> {
    devices
        .iter()
        .filter(|d| {
            d["addresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|s| s["value"] == address))
        })
        .collect()
}

fn names(device: &Value, source: &str) -> Vec<String> {
    device["host_names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["source"] == source)
        .filter_map(|n| n["name"].as_str().map(str::to_string))
        .collect()
}

/// Waits until the capture file holds a DHCPACK (option 53, length 1, type 5), so that stopping
/// tcpdump cannot cut the exchange short.
fn wait_for_ack_in(pcap: &Path, timeout: Duration) {
    const ACK_OPTION: [u8; 3] = [53, 1, 5];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let bytes = std::fs::read(pcap).unwrap_or_default();
        if bytes.windows(ACK_OPTION.len()).any(|w| w == ACK_OPTION) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_real_dhcp_lease_names_the_device_by_mac_and_address() {
    if skip_without_root() {
        return;
    }
    require_tools(&["dnsmasq", "dhclient", "tcpdump"]);
    const HOST_NAME: &str = "WS-DHCP-07";
    let server = Netns::unique().expect("namespace");
    let client = Netns::unique().expect("namespace");
    let (if_server, if_client) = (unique_name(), unique_name());
    let pair = VethPair::new(
        &server,
        &if_server,
        &client,
        &if_client,
        "10.204.7.1/24",
        "10.204.7.2/24",
    )
    .expect("veth pair");
    // The client starts without an address: DHCP gives it one.
    client
        .run("ip", &["addr", "flush", "dev", &if_client])
        .expect("flush");
    let work = TempDir::new("dhcp");
    let pcap = work.path().join("dhcp.pcap");
    let conf = work.path().join("dhclient.conf");
    std::fs::write(&conf, format!("send host-name \"{HOST_NAME}\";\n")).expect("conf");
    // Immediate mode and packet-buffered (-U): each frame reaches the file as it is captured,
    // not when the kernel retires a ring block (tcpdump's 1 s default), which could leave the
    // last frame, the ACK, out of the file when tcpdump is stopped.
    let pcap_path = pcap.display().to_string();
    let mut capture = start_tcpdump(
        &server,
        &[
            "-i",
            &if_server,
            "--immediate-mode",
            "-U",
            "-w",
            &pcap_path,
            "udp port 67 or udp port 68",
        ],
    );
    let leases = work.path().join("leases");
    let pid = work.path().join("dnsmasq.pid");
    server
        .spawn(
            "dnsmasq",
            &[
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                &format!("--interface={if_server}"),
                "--bind-interfaces",
                "--dhcp-range=10.204.7.50,10.204.7.60,255.255.255.0,1h",
                &format!("--dhcp-leasefile={}", leases.display()),
                &format!("--pid-file={}", pid.display()),
            ],
        )
        .expect("dnsmasq");
    let lease = work.path().join("dhclient.leases");
    let client_pid = work.path().join("dhclient.pid");
    // Foreground (-d), once (-1), no script: the address is not configured, only leased.
    client
        .spawn(
            "dhclient",
            &[
                "-4",
                "-d",
                "-1",
                "-sf",
                "/bin/true",
                "-cf",
                &conf.display().to_string(),
                "-lf",
                &lease.display().to_string(),
                "-pf",
                &client_pid.display().to_string(),
                &if_client,
            ],
        )
        .expect("dhclient");
    // dnsmasq writes the lease when it sends the ACK.
    let deadline = Instant::now() + Duration::from_secs(30);
    let granted = loop {
        let granted = std::fs::read_to_string(&leases).unwrap_or_default();
        if !granted.trim().is_empty() || Instant::now() > deadline {
            break granted;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    wait_for_ack_in(&pcap, Duration::from_secs(10));
    let _ = capture.kill();
    let _ = capture.wait();
    // "<expiry> <mac> <ip> <hostname> <client-id>"
    let fields: Vec<&str> = granted.split_whitespace().collect();
    assert!(fields.len() >= 4, "lease file: {granted:?}");
    let (mac, address) = (fields[1], fields[2]);
    let expected_mac = pair
        .mac_b()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(mac, expected_mac);

    let data = TempDir::new("dhcp-data");
    replay_ok(data.path(), &[&pcap]);
    let table = devices(data.path());
    let device = holding(&table, address);
    assert_eq!(device.len(), 1, "one device holds {address}: {table:#?}");
    let device = device[0];
    assert_eq!(names(device, "dhcp"), [HOST_NAME], "{device:#}");
    assert!(
        device["macs"]
            .as_array()
            .is_some_and(|m| m.iter().any(|s| s["value"] == mac)),
        "{device:#}"
    );
}

#[test]
fn the_attackers_static_address_carries_both_workstation_names() {
    for lab in committed_labs() {
        let attacker = ground_truth(&lab)[0].source.to_string();
        let (legit, attack) = (lab::param(&lab, "LEGIT_WS"), lab::param(&lab, "ATTACK_WS"));
        let data = TempDir::new("identity");
        replay_ok(
            data.path(),
            &[
                &fixture(&lab, "baseline.pcap"),
                &fixture(&lab, "attack.pcap"),
            ],
        );
        let table = devices(data.path());
        let device = holding(&table, &attacker);
        assert_eq!(device.len(), 1, "{lab}: {table:#?}");
        let mut ntlm = names(device[0], "ntlm");
        ntlm.sort();
        let mut expected = vec![legit.clone(), attack.clone()];
        expected.sort();
        assert_eq!(ntlm, expected, "{lab}");
        // The DNS server's PTR answers name the servers the sweep asked about.
        let dc = format!(
            "{}.{}",
            lab::param(&lab, "DC_NAME").to_lowercase(),
            lab::param(&lab, "LAB_DOMAIN")
        );
        assert!(
            table
                .iter()
                .any(|d| names(d, "dns").iter().any(|n| n.eq_ignore_ascii_case(&dc))),
            "{lab}: no device named {dc} by DNS"
        );
        // Alerts and the incident carry the identity, newest name first.
        let records = eve_records(data.path());
        let alert = records
            .iter()
            .find(|r| {
                r["event_type"] == "alert"
                    && r["src_ip"] == attacker.as_str()
                    && r["alert"]["signature"] == "Device / Unusual NTLM Hostname"
            })
            .expect("the attacker's NTLM hostname alert");
        assert_eq!(
            alert["vigil"]["identity"]["host_names"][0], attack,
            "{lab}: {alert:#}"
        );
        let incidents: Value = serde_json::from_str(
            &std::fs::read_to_string(data.path().join("incidents.json")).expect("incidents"),
        )
        .expect("JSON");
        assert_eq!(
            incidents[0]["identity"]["device_id"], device[0]["id"],
            "{lab}"
        );
    }
}
