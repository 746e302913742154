//! Conformance with Zeek: each capture in `../shared/pcaps/zeek/` (real Windows, Samba, MIT
//! Kerberos and web traffic recorded by the Zeek project) is replayed with `--protocol-logs`, and
//! the fields an analyst relies on must equal what Zeek's own logs under `baselines/` say.
//! Runs when `../shared/pcaps` exists.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use vigil_tests::logs::{tshark_fields, zeek_log, zeek_text, Replay};
use vigil_tests::workspace::root;

fn zeek_dir() -> Option<PathBuf> {
    let dir = root().join("../shared/pcaps/zeek");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: {} is not here", dir.display());
        None
    }
}

/// The rows of a baseline log, reduced to `fields`, sorted.
fn baseline(dir: &std::path::Path, test: &str, log: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let path = dir.join("baselines").join(test).join(format!("{log}.log"));
    let mut rows: Vec<Vec<String>> = zeek_log(&path)
        .iter()
        .map(|row| fields.iter().map(|f| row[*f].clone()).collect())
        .collect();
    rows.sort();
    rows
}

/// Vigil's records, reduced to `fields` in Zeek's spelling, sorted.
fn ours(records: &[Value], fields: &[&str]) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| fields.iter().map(|f| zeek_text(&r[*f])).collect())
        .collect();
    rows.sort();
    rows
}

/// Replays `pcap` and compares each listed log with Zeek's.
fn conform(pcap: &str, test: &str, logs: &[(&str, &str, &[&str])]) {
    let Some(dir) = zeek_dir() else {
        return;
    };
    let replay = Replay::run(&dir.join(pcap));
    for (zeek_name, vigil_name, fields) in logs {
        let expected = baseline(&dir, test, zeek_name, fields);
        assert!(!expected.is_empty(), "{test}/{zeek_name}.log has rows");
        let got = ours(&replay.log(vigil_name), fields);
        assert_eq!(
            got, expected,
            "{pcap}: {vigil_name}.json vs Zeek's {zeek_name}.log on {fields:?}"
        );
    }
}

#[test]
fn kerberos_clients_and_services_match_zeek() {
    conform(
        "krb/kinit.pcap",
        "scripts.base.protocols.krb.kinit",
        &[(
            "kerberos",
            "kerberos",
            &[
                "id.orig_p",
                "request_type",
                "client",
                "service",
                "success",
                "error_msg",
            ],
        )],
    );
}

#[test]
fn ldap_simple_bind_dns_and_searches_match_zeek() {
    conform(
        "ldap/simpleauth.pcap",
        "scripts.base.protocols.ldap.basic",
        &[
            (
                "ldap",
                "ldap",
                &[
                    "message_id",
                    "version",
                    "opcode",
                    "result",
                    "object",
                    "argument",
                ],
            ),
            (
                "ldap_search",
                "ldap_search",
                &[
                    "message_id",
                    "scope",
                    "base_object",
                    "result_count",
                    "result",
                    "filter",
                ],
            ),
        ],
    );
}

#[test]
fn ldap_sasl_ntlm_bind_searches_and_ntlm_user_match_zeek() {
    conform(
        "ldap/sasl-ntlm.pcap",
        "scripts.base.protocols.ldap.sasl-ntlm",
        &[
            (
                "ldap",
                "ldap",
                &["message_id", "opcode", "result", "argument"],
            ),
            (
                "ldap_search",
                "ldap_search",
                &[
                    "message_id",
                    "scope",
                    "base_object",
                    "result_count",
                    "result",
                    "filter",
                ],
            ),
            (
                "ntlm",
                "ntlm",
                &[
                    "username",
                    "hostname",
                    "domainname",
                    "server_nb_computer_name",
                ],
            ),
        ],
    );
}

/// Zeek leaves an NTLM login's `success` unset over LDAP; Vigil takes it from the bind response
/// that answers the AUTHENTICATE, which is compared here with what tshark reads.
#[test]
fn ldap_sasl_ntlm_login_result_is_the_bind_response_tshark_reads() {
    let Some(dir) = zeek_dir() else {
        return;
    };
    let pcap = dir.join("ldap/sasl-ntlm.pcap");
    let responses = tshark_fields(
        &pcap,
        "ldap.protocolOp == 1",
        &["ldap.messageID", "ldap.resultCode"],
    );
    let mut expected: Vec<Vec<String>> = tshark_fields(
        &pcap,
        "ntlmssp.messagetype == 0x00000003",
        &["ldap.messageID", "ntlmssp.auth.username"],
    )
    .into_iter()
    .map(|auth| {
        let response = responses
            .iter()
            .find(|r| r[0] == auth[0])
            .unwrap_or_else(|| panic!("no bind response to message {}", auth[0]));
        let success = if response[1] == "0" { "T" } else { "F" };
        vec![auth[1].clone(), success.to_string()]
    })
    .collect();
    expected.sort();
    assert!(!expected.is_empty());
    let replay = Replay::run(&pcap);
    assert_eq!(
        ours(&replay.log("ntlm"), &["username", "success"]),
        expected
    );
}

/// Zeek logs only the server's CHALLENGE of this DCE/RPC exchange (its user fields are unset),
/// so the server names are compared with Zeek and the login itself with what tshark reads.
#[test]
fn dce_rpc_ntlm_server_names_match_zeek_and_the_login_matches_tshark() {
    conform(
        "dce-rpc/dce_rpc_ntlm.pcapng",
        "scripts.base.protocols.dce-rpc.dce_rpc_ntlm",
        &[(
            "ntlm",
            "ntlm",
            &[
                "id.orig_h",
                "id.resp_p",
                "server_nb_computer_name",
                "server_dns_computer_name",
                "server_tree_name",
            ],
        )],
    );
    let Some(dir) = zeek_dir() else {
        return;
    };
    let pcap = dir.join("dce-rpc/dce_rpc_ntlm.pcapng");
    let expected = tshark_fields(
        &pcap,
        "ntlmssp.messagetype == 0x00000003",
        &[
            "ntlmssp.auth.username",
            "ntlmssp.auth.domain",
            "ntlmssp.auth.hostname",
        ],
    );
    let replay = Replay::run(&pcap);
    assert_eq!(
        ours(&replay.log("ntlm"), &["username", "domainname", "hostname"]),
        expected
    );
}

#[test]
fn rdp_cookies_and_security_protocols_match_zeek() {
    conform(
        "rdp/rdp-to-ssl.pcap",
        "scripts.base.protocols.rdp.rdp-to-ssl",
        &[(
            "rdp",
            "rdp",
            &["id.orig_p", "cookie", "result", "security_protocol"],
        )],
    );
}

/// Zeek's `smb_mapping.log` is the tree connects that succeeded.
fn smb_mappings(pcap: &str, test: &str) {
    let Some(dir) = zeek_dir() else {
        return;
    };
    let fields = ["path", "share_type"];
    let expected = baseline(&dir, test, "smb_mapping", &fields);
    let replay = Replay::run(&dir.join(pcap));
    let connected: Vec<Value> = replay
        .log("smb")
        .into_iter()
        .filter(|r| r["action"] == "tree_connect" && r["status"] == "STATUS_SUCCESS")
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(ours(&connected, &fields), expected, "{pcap}");
}

#[test]
fn smb2_tree_connects_match_zeek() {
    smb_mappings("smb/smb2.pcap", "scripts.base.protocols.smb.smb2");
}

#[test]
fn smb3_tree_connects_match_zeek_despite_encryption() {
    smb_mappings("smb/smb3.pcap", "scripts.base.protocols.smb.smb3");
}

#[test]
fn http_methods_and_uris_match_zeek() {
    let Some(dir) = zeek_dir() else {
        return;
    };
    let replay = Replay::run(&dir.join("http/methods.pcap"));
    let fields = ["id.orig_p", "method", "uri"];
    // Zeek also logs the requests it could not read (method `-`); Vigil counts those as errors.
    let expected: Vec<Vec<String>> = baseline(
        &dir,
        "scripts.base.protocols.http.http-methods",
        "http",
        &fields,
    )
    .into_iter()
    .filter(|row| row[1] != "-")
    .collect();
    assert_eq!(ours(&replay.log("http"), &fields), expected);
    let refused: BTreeMap<String, usize> =
        zeek_log(&dir.join("baselines/scripts.base.protocols.http.http-methods/weird.log"))
            .iter()
            .filter(|w| w["name"].starts_with("bad_HTTP_request"))
            .fold(BTreeMap::new(), |mut m, w| {
                *m.entry(w["id.orig_p"].clone()).or_default() += 1;
                m
            });
    assert!(
        replay.stdout.contains("http: invalid"),
        "the {} requests Zeek calls bad are counted: {}",
        refused.len(),
        replay.stdout
    );
}
