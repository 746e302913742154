//! SMB1 logins made by real Samba tools: smbd speaking NT1 on 445 and on 139 (NetBIOS session
//! service), smbclient limited to NT1 with extended security (NTLMSSP in SPNEGO) and without it
//! (account and domain in clear beside the LM/NTLMv2 responses), with good and bad passwords,
//! captured with tcpdump in namespaces and replayed with `vigil replay --protocol-logs`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use vigil_tests::live::{start_tcpdump, wait_until_written};
use vigil_tests::logs::{tshark_fields, zeek_text, Replay};
use vigil_tests::netns::{skip_without_root, unique_name, Netns, VethPair};
use vigil_tests::samba::{self, Samba, Security};
use vigil_tests::workspace::{eve_records, TempDir};

const WORKGROUP: &str = "LABDOM";
const USER: &str = "alice";
const PASSWORD: &str = "Corr3ct-Horse!";
const WORKSTATION: &str = "SMB1-LAPTOP";
const STATUS_LOGON_FAILURE: &str = "0xc000006d";

/// One smbclient login to make.
struct Attempt {
    port: u16,
    security: Security,
    password: &'static str,
}

/// Runs `attempts` from a client namespace against smbd in another (subnet `10.{net}.0.0/24`),
/// capturing them on the server's side into `pcap`. Each attempt must end as its password says.
fn capture_logins(net: u8, attempts: &[Attempt], pcap: &Path) {
    let server = Netns::unique().expect("namespace");
    let client = Netns::unique().expect("namespace");
    let (if_server, if_client) = (unique_name(), unique_name());
    let pair = VethPair::new(
        &server,
        &if_server,
        &client,
        &if_client,
        &format!("10.{net}.0.1/24"),
        &format!("10.{net}.0.2/24"),
    )
    .expect("veth pair");
    let samba = Samba::start_nt1(&server, pair.ip_a(), WORKGROUP, &[(USER, PASSWORD)]);
    let path = pcap.display().to_string();
    let mut tcpdump = start_tcpdump(
        &server,
        &[
            "-i",
            &if_server,
            "--immediate-mode",
            "-U",
            "-w",
            &path,
            "tcp port 445 or tcp port 139",
        ],
    );
    for attempt in attempts {
        let outcome = samba.login(
            &client,
            WORKSTATION,
            attempt.port,
            attempt.security,
            USER,
            attempt.password,
        );
        if attempt.password == PASSWORD {
            assert_eq!(outcome, Ok(()), "smbd log: {}", samba.log());
        } else {
            let err = outcome.expect_err("a wrong password is refused");
            assert!(err.contains("NT_STATUS_LOGON_FAILURE"), "{err}");
        }
    }
    wait_until_written(pcap);
    let _ = tcpdump.kill();
    let _ = tcpdump.wait();
}

/// The user, domain, workstation ("-" when none travels), NT status and success of each login,
/// by client port, as tshark reads them.
fn tshark_logins(pcap: &Path) -> BTreeMap<String, Vec<String>> {
    let mut logins: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let spnego = tshark_fields(
        pcap,
        "ntlmssp.messagetype == 0x00000003",
        &[
            "tcp.srcport",
            "ntlmssp.auth.username",
            "ntlmssp.auth.domain",
            "ntlmssp.auth.hostname",
        ],
    );
    let in_clear = tshark_fields(
        pcap,
        "smb.cmd == 0x73 && smb.flags.response == 0 && smb.account",
        &["tcp.srcport", "smb.account", "smb.primary_domain"],
    );
    for row in spnego.into_iter().chain(in_clear) {
        let mut names = row[1..].to_vec();
        names.resize(3, "-".into());
        logins.insert(row[0].clone(), names);
    }
    let results = tshark_fields(
        pcap,
        "smb.cmd == 0x73 && smb.flags.response == 1 && smb.nt_status != 0xc0000016",
        &["tcp.dstport", "smb.nt_status"],
    );
    for row in results {
        let login = logins.get_mut(&row[0]).expect("a result answers a login");
        let status = u32::from_str_radix(row[1].trim_start_matches("0x"), 16).expect("status");
        login.push(if status == 0 {
            "-".into()
        } else {
            status.to_string()
        });
        login.push(if status == 0 { "T" } else { "F" }.into());
    }
    logins
}

fn vigil_logins(ntlm: &[Value]) -> BTreeMap<String, Vec<String>> {
    ntlm.iter()
        .map(|r| {
            let fields = ["username", "domainname", "hostname", "status", "success"];
            (
                zeek_text(&r["id.orig_p"]),
                fields.iter().map(|f| zeek_text(&r[*f])).collect(),
            )
        })
        .collect()
}

#[test]
fn smb1_ntlm_logins_on_445_and_139_are_logged_as_tshark_reads_them_with_their_result() {
    if skip_without_root() {
        return;
    }
    assert!(
        samba::installed(),
        "samba, smbclient or libnss-wrapper missing: run ./setup.sh"
    );
    let mut attempts = Vec::new();
    for port in [445, 139] {
        for security in [Security::Spnego, Security::WithoutExtendedSecurity] {
            for password in [PASSWORD, "wrong-guess"] {
                attempts.push(Attempt {
                    port,
                    security,
                    password,
                });
            }
        }
    }
    let work = TempDir::new("smb1-logins");
    let pcap = work.path().join("smb1.pcap");
    capture_logins(231, &attempts, &pcap);

    let replay = Replay::run(&pcap);
    let ntlm = replay.log("ntlm");
    let expected = tshark_logins(&pcap);
    assert_eq!(expected.len(), attempts.len(), "tshark sees every login");
    assert_eq!(vigil_logins(&ntlm), expected);
    // Every combination made it: both ports, both forms (only NTLMSSP names a workstation),
    // both outcomes, each from the carrier SMB.
    let mut seen: Vec<(String, bool, String)> = ntlm
        .iter()
        .map(|r| {
            assert_eq!(r["carrier"], "smb");
            (
                zeek_text(&r["id.resp_p"]),
                r["hostname"] == WORKSTATION,
                zeek_text(&r["success"]),
            )
        })
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), attempts.len(), "{seen:?}");
    assert!(ntlm
        .iter()
        .all(|r| r["username"] == USER && r["domainname"] == WORKGROUP));
    assert!(ntlm
        .iter()
        .filter(|r| r["success"] == false)
        .all(|r| format!("0x{:08x}", r["status"].as_u64().unwrap_or(0)) == STATUS_LOGON_FAILURE));

    // The successful logins' TREE_CONNECT_ANDX paths and services, as tshark reads the answers
    // (it names the path a response maps), in smb_mapping form.
    let mut trees: Vec<String> = replay
        .log("smb")
        .iter()
        .filter(|r| r["action"] == "tree_connect")
        .map(|r| format!("{} {}", zeek_text(&r["path"]), zeek_text(&r["share_type"])))
        .collect();
    trees.sort();
    let mut expected_trees: Vec<String> = tshark_fields(
        &pcap,
        "smb.cmd == 0x75 && smb.flags.response == 1 && smb.nt_status == 0",
        &["smb.path", "smb.service"],
    )
    .into_iter()
    .map(|row| {
        // [MS-CIFS] 2.2.4.55.2's service names, as Zeek's smb_mapping.log types them.
        let share = match row[1].as_str() {
            "A:" => "DISK",
            "IPC" => "PIPE",
            other => panic!("unexpected service {other}"),
        };
        format!("{} {share}", row[0])
    })
    .collect();
    expected_trees.sort();
    assert!(!expected_trees.is_empty());
    assert_eq!(trees, expected_trees);
}

#[test]
fn ten_bad_smb1_passwords_raise_the_smb_session_brute_force_breach() {
    if skip_without_root() {
        return;
    }
    assert!(
        samba::installed(),
        "samba, smbclient or libnss-wrapper missing: run ./setup.sh"
    );
    // smb-brute-force's default threshold: ten failures within ten minutes, both login forms
    // and both ports counted alike.
    let attempts: Vec<Attempt> = (0..10)
        .map(|n| Attempt {
            port: if n % 2 == 0 { 445 } else { 139 },
            security: if n % 4 < 2 {
                Security::Spnego
            } else {
                Security::WithoutExtendedSecurity
            },
            password: "wrong-guess",
        })
        .collect();
    let work = TempDir::new("smb1-brute");
    let pcap = work.path().join("smb1-brute.pcap");
    capture_logins(232, &attempts, &pcap);

    let replay = Replay::run(&pcap);
    let failures = replay
        .log("ntlm")
        .iter()
        .filter(|r| r["success"] == false)
        .count();
    assert_eq!(failures, attempts.len());
    let breaches: Vec<Value> = eve_records(replay.data.path())
        .into_iter()
        .filter(|a| a["alert"]["signature"] == "Device / SMB Session Brute Force (Non-Admin)")
        .collect();
    assert_eq!(breaches.len(), 1, "{breaches:#?}");
    assert_eq!(breaches[0]["src_ip"], "10.232.0.2", "{:#?}", breaches[0]);
}
