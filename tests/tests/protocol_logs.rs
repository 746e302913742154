//! `vigil replay --protocol-logs` on the lab's attack: the reverse DNS sweep and Nmap's HTTP
//! probe appear in the Zeek-style protocol logs exactly as tshark counted them.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;
use vigil_tests::lab::{fixture, ground_truth};
use vigil_tests::workspace::{plugin_dir, vigil_bin, TempDir};

fn log(data: &std::path::Path, protocol: &str) -> Vec<Value> {
    std::fs::read_to_string(data.join("proto").join(format!("{protocol}.json")))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[test]
fn reverse_dns_sweep_and_nmap_probe_are_logged() {
    let data = TempDir::new("protologs");
    let out = Command::new(vigil_bin())
        .args(["replay", "--protocol-logs", "--data-dir"])
        .arg(data.path())
        .arg("--plugins")
        .arg(plugin_dir())
        .arg(fixture("lab", "attack.pcap"))
        .output()
        .expect("vigil runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps = ground_truth("lab");
    let sweep = steps
        .iter()
        .find(|s| s.step == "rdns_sweep")
        .expect("the lab has a reverse DNS sweep");
    let dns = log(data.path(), "dns");
    // The lab's verification: 60 PTR queries to port 53, for 60 distinct names.
    let sweep_names: BTreeSet<&str> = dns
        .iter()
        .filter(|r| r["qtype_name"] == "PTR" && r["id.resp_p"] == 53)
        .filter(|r| r["id.orig_h"] == sweep.source.to_string())
        .filter_map(|r| r["query"].as_str())
        .collect();
    assert_eq!(sweep_names.len(), 60, "{sweep_names:?}");
    for name in &sweep_names {
        assert!(name.ends_with(".in-addr.arpa"), "{name}");
    }
    let answered = dns
        .iter()
        .filter(|r| {
            r["qtype_name"] == "PTR" && r["id.resp_p"] == 53 && r["rcode_name"] == "NOERROR"
        })
        .count();
    let nxdomain = dns
        .iter()
        .filter(|r| {
            r["qtype_name"] == "PTR" && r["id.resp_p"] == 53 && r["rcode_name"] == "NXDOMAIN"
        })
        .count();
    assert_eq!(
        (answered, nxdomain),
        (10, 50),
        "dnsmasq holds 10 PTR records"
    );

    let http = log(data.path(), "http");
    let probe: Vec<&Value> = http
        .iter()
        .filter(|r| r["uri_decoded"] == "/nice ports,/Trinity.txt.bak")
        .collect();
    assert_eq!(probe.len(), 1, "{http:#?}");
    assert_eq!(probe[0]["uri"], "/nice%20ports%2C/Tri%6Eity.txt%2ebak");
    assert_eq!(probe[0]["method"], "GET");
    let nse = http
        .iter()
        .filter(|r| {
            r["user_agent"]
                .as_str()
                .is_some_and(|ua| ua.contains("Nmap Scripting Engine"))
        })
        .count();
    assert_eq!(nse, 4, "tshark counts 4 NSE user agents");
}
