//! `vigil replay --protocol-logs` on each committed lab's attack capture: what the protocol logs
//! say must match what tshark reads from the same pcap, message for message: every NTLMSSP
//! AUTHENTICATE with its user, domain and workstation, every SMB logon failure, every LDAP bind
//! and search, Nmap's probe URI decoded, every PTR query of the reverse DNS sweep.

use std::collections::BTreeSet;

use serde_json::Value;
use vigil_tests::lab::{committed_labs, fixture, ground_truth};
use vigil_tests::logs::{tshark_all, tshark_fields, zeek_text, Replay};

/// Sorted rows of the given fields, from Vigil's records.
fn rows(records: &[Value], fields: &[&str]) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| fields.iter().map(|f| zeek_text(&r[*f])).collect())
        .collect();
    rows.sort();
    rows
}

fn sorted(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.sort();
    rows
}

#[test]
fn every_ntlm_login_and_smb_logon_failure_is_logged_as_tshark_reads_it() {
    for lab in committed_labs() {
        let pcap = fixture(&lab, "attack.pcap");
        let replay = Replay::run(&pcap);
        let ntlm = replay.log("ntlm");
        let logins: Vec<Value> = ntlm
            .iter()
            .filter(|r| !r["username"].is_null())
            .cloned()
            .collect();
        let expected = sorted(tshark_fields(
            &pcap,
            "ntlmssp.messagetype == 0x00000003 && ntlmssp.auth.username != \"NULL\"",
            &[
                "ntlmssp.auth.username",
                "ntlmssp.auth.domain",
                "ntlmssp.auth.hostname",
            ],
        ));
        assert!(!expected.is_empty(), "{lab}: the attack logs in over NTLM");
        assert_eq!(
            rows(&logins, &["username", "domainname", "hostname"]),
            expected,
            "{lab}: NTLM AUTHENTICATE messages"
        );

        // STATUS_LOGON_FAILURE answers to session setups, as tshark counts them.
        let failures = tshark_fields(
            &pcap,
            "smb2.cmd == 1 && smb2.nt_status == 0xc000006d",
            &["frame.number"],
        )
        .len();
        assert!(failures > 0, "{lab}: the brute force fails to log in");
        let logged = ntlm
            .iter()
            .filter(|r| r["carrier"] == "smb" && r["status"] == 0xc000_006d_u32)
            .count();
        assert_eq!(logged, failures, "{lab}: failed SMB logins in ntlm.json");
        assert!(
            replay
                .stdout
                .lines()
                .any(|l| l.contains("smb: logon_failure") && l.contains(&failures.to_string())),
            "{lab}: the summary counts {failures} logon failures:\n{}",
            replay.stdout
        );
    }
}

#[test]
fn every_ldap_bind_and_search_is_logged_as_tshark_reads_it() {
    for lab in committed_labs() {
        let pcap = fixture(&lab, "attack.pcap");
        let replay = Replay::run(&pcap);
        let binds: Vec<Value> = replay
            .log("ldap")
            .into_iter()
            .filter(|r| r["opcode"].as_str().is_some_and(|o| o.starts_with("bind")))
            .collect();
        let expected_binds = sorted(tshark_fields(&pcap, "ldap.protocolOp == 0", &["ldap.name"]));
        assert!(!expected_binds.is_empty(), "{lab}: the attacker binds");
        assert_eq!(rows(&binds, &["object"]), expected_binds, "{lab}: bind DNs");

        let expected_searches = sorted(tshark_fields(
            &pcap,
            "ldap.protocolOp == 3",
            &["ldap.baseObject", "ldap.scope"],
        ));
        let searches = replay.log("ldap_search");
        let got: Vec<Vec<String>> = sorted(
            searches
                .iter()
                .map(|r| {
                    let scope = match r["scope"].as_str() {
                        Some("base") => "0",
                        Some("one") => "1",
                        Some("tree") => "2",
                        _ => "?",
                    };
                    vec![zeek_text(&r["base_object"]), scope.to_string()]
                })
                .collect(),
        );
        assert!(
            !expected_searches.is_empty(),
            "{lab}: the attacker searches"
        );
        assert_eq!(got, expected_searches, "{lab}: every search");
        // The entries the directory returned, summed, are the entries on the wire.
        let entries: u64 = searches
            .iter()
            .filter_map(|r| r["result_count"].as_u64())
            .sum();
        let on_wire = tshark_all(&pcap, "ldap.protocolOp == 4", "ldap.protocolOp")
            .iter()
            .filter(|op| *op == "4")
            .count();
        assert_eq!(entries as usize, on_wire, "{lab}: search result entries");
    }
}

#[test]
fn reverse_dns_sweep_and_nmap_probe_are_logged_as_tshark_reads_them() {
    for lab in committed_labs() {
        let pcap = fixture(&lab, "attack.pcap");
        let replay = Replay::run(&pcap);
        let steps = ground_truth(&lab);
        let sweep = steps
            .iter()
            .find(|s| s.step == "rdns_sweep")
            .expect("the lab has a reverse DNS sweep");
        let attacker = sweep.source.to_string();

        let dns = replay.log("dns");
        let logged: BTreeSet<Vec<String>> = dns
            .iter()
            .filter(|r| r["qtype_name"] == "PTR" && r["id.resp_p"] == 53)
            .filter(|r| r["id.orig_h"] == attacker.as_str())
            .map(|r| vec![zeek_text(&r["query"]), zeek_text(&r["rcode"])])
            .collect();
        let on_wire: BTreeSet<Vec<String>> = tshark_fields(
            &pcap,
            &format!(
                "dns.flags.response == 1 && dns.qry.type == 12 && udp.srcport == 53 \
                 && ip.dst == {attacker}"
            ),
            &["dns.qry.name", "dns.flags.rcode"],
        )
        .into_iter()
        .collect();
        assert!(on_wire.len() >= 20, "{lab}: a sweep, not a lookup");
        assert_eq!(logged, on_wire, "{lab}: PTR queries and their rcodes");

        let http = replay.log("http");
        let probes: Vec<&Value> = http
            .iter()
            .filter(|r| r["uri_decoded"] == "/nice ports,/Trinity.txt.bak")
            .collect();
        let sent = tshark_fields(
            &pcap,
            "http.request.uri == \"/nice%20ports%2C/Tri%6Eity.txt%2ebak\"",
            &["http.request.method"],
        );
        assert!(!sent.is_empty(), "{lab}: nmap -sV sends its probe");
        assert_eq!(probes.len(), sent.len(), "{lab}: {http:#?}");
        for probe in probes {
            assert_eq!(probe["uri"], "/nice%20ports%2C/Tri%6Eity.txt%2ebak");
            assert_eq!(probe["method"], "GET");
        }
        let nse_agents = tshark_fields(
            &pcap,
            "http.user_agent contains \"Nmap Scripting Engine\"",
            &["frame.number"],
        )
        .len();
        let logged_agents = http
            .iter()
            .filter(|r| {
                r["user_agent"]
                    .as_str()
                    .is_some_and(|ua| ua.contains("Nmap Scripting Engine"))
            })
            .count();
        assert_eq!(logged_agents, nse_agents, "{lab}: NSE user agents");
    }
}
