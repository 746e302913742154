//! Vigil started on a busy link: the lab's captures cut with `editcap`, their first packets
//! removed (connections picked up without their SYN, one of them inside an SMB message) or single
//! segments removed mid-stream, still log every login, tree connect, bind and search that starts
//! after the cut exactly as the whole capture does. Picked-up connections are marked
//! `"partial": true`, resynchronisations are counted in the run summary, and `Device / Unusual
//! NTLM Hostname` still fires on the attack picked up after its first SMB handshake.
//! Cut points are found in each capture with tshark, never numbered by hand.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vigil_tests::lab::{committed_labs, fixture, without_frames};
use vigil_tests::logs::{tshark_fields, Replay};
use vigil_tests::workspace::{eve_records, TempDir};

/// The logs an analyst reads for logins and directory recon.
const LOGS: [&str; 4] = ["ntlm", "smb", "ldap", "ldap_search"];

/// The number of every frame `filter` matches, in capture order.
fn frames(pcap: &Path, filter: &str) -> Vec<u64> {
    tshark_fields(pcap, filter, &["frame.number"])
        .iter()
        .map(|row| row[0].parse().expect("frame number"))
        .collect()
}

/// One field of frame `frame`, as tshark prints it.
fn field(pcap: &Path, frame: u64, name: &str) -> String {
    tshark_fields(pcap, &format!("frame.number == {frame}"), &[name])
        .first()
        .and_then(|row| row.first())
        .cloned()
        .unwrap_or_else(|| panic!("frame {frame} of {} has no {name}", pcap.display()))
}

/// Frame `frame`'s TCP source port.
fn source_port(pcap: &Path, frame: u64) -> u64 {
    field(pcap, frame, "tcp.srcport").parse().expect("port")
}

/// A time between frame `first - 1` and frame `first`: records stamped after it come from frame
/// `first` on (Vigil's float seconds and tshark's decimal ones need not round alike).
fn cut_time(pcap: &Path, first: u64) -> f64 {
    let at = |frame: u64| -> f64 {
        field(pcap, frame, "frame.time_epoch")
            .parse()
            .expect("time")
    };
    let (before, after) = (at(first - 1), at(first));
    assert!(
        before < after,
        "frames {} and {first} share a stamp",
        first - 1
    );
    (before + after) / 2.0
}

/// `pcap` from frame `first` on, as a capture started then.
fn starting_at(pcap: &Path, first: u64, dir: &TempDir) -> PathBuf {
    let out = dir.path().join(format!("from-{first}.pcap"));
    without_frames(pcap, &[format!("1-{}", first - 1)], &out);
    out
}

/// A record as compared across runs: flow ids and the partial mark depend on where the capture
/// starts.
fn comparable(record: &Value) -> Value {
    let mut record = record.clone();
    if let Some(fields) = record.as_object_mut() {
        fields.remove("uid");
        fields.remove("partial");
    }
    record
}

fn sorted(mut records: Vec<Value>) -> Vec<Value> {
    records.sort_by_key(|r| r.to_string());
    records
}

/// `log`'s records stamped after `since`, comparable, in a stable order.
fn records_since(replay: &Replay, log: &str, since: f64) -> Vec<Value> {
    sorted(
        replay
            .log(log)
            .iter()
            .filter(|r| r["ts"].as_f64().expect("ts") > since)
            .map(comparable)
            .collect(),
    )
}

/// Every record the whole capture logs after `since`, the cut one logs too, and nothing else.
fn assert_same_records_since(whole: &Replay, cut: &Replay, since: f64, what: &str) {
    for log in LOGS {
        assert_eq!(
            records_since(cut, log, f64::MIN),
            records_since(whole, log, since),
            "{what}: {log} records after the cut"
        );
    }
}

/// The summary's resynchronisation line for `protocol`: `(message starts found, bytes skipped)`.
fn resyncs(replay: &Replay, protocol: &str) -> Option<(u64, u64)> {
    let prefix = format!("{protocol}: message starts found");
    let line = replay.stdout.lines().find(|l| l.starts_with(&prefix))?;
    let (found, skipped) = line[prefix.len()..].trim().split_once(" (")?;
    let skipped = skipped.strip_suffix(" bytes skipped)")?;
    Some((found.parse().ok()?, skipped.parse().ok()?))
}

/// The summary's count of parse problems `protocol: reason`, 0 when not shown.
fn problem(replay: &Replay, protocol: &str, reason: &str) -> u64 {
    let prefix = format!("{protocol}: {reason} ");
    replay
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().expect("count"))
}

#[test]
fn a_capture_started_inside_an_smb_read_resynchronises_and_keeps_every_later_login() {
    for lab in committed_labs() {
        let pcap = fixture(&lab, "baseline.pcap");
        // The last segment of an SMB2 message spread over several: it begins mid-message.
        let tail = *frames(&pcap, "tcp.port == 445 && tcp.segments")
            .first()
            .unwrap_or_else(|| panic!("{lab}: no SMB message spans segments"));
        let dir = TempDir::new("midstream");
        let whole = Replay::run(&pcap);
        let cut = Replay::run(&starting_at(&pcap, tail, &dir));
        let since = cut_time(&pcap, tail);
        assert_same_records_since(&whole, &cut, since, &lab);
        let logins = frames(
            &pcap,
            &format!("ntlmssp.messagetype == 0x00000003 && frame.number > {tail}"),
        );
        let logged = cut.log("ntlm");
        assert!(!logins.is_empty(), "{lab}: logins after the cut");
        assert_eq!(
            logged.iter().filter(|r| !r["username"].is_null()).count(),
            logins.len(),
            "{lab}: {logged:#?}"
        );
        // Both directions of the connection found their place again: the server's after passing
        // over the rest of the message, the client's at once.
        let tail_len: u64 = field(&pcap, tail, "tcp.len").parse().expect("length");
        assert_eq!(
            resyncs(&cut, "smb"),
            Some((2, tail_len)),
            "{lab}: {}",
            cut.stdout
        );
        assert_eq!(resyncs(&whole, "smb"), None, "{lab}: whole connections");
    }
}

#[test]
fn a_capture_started_during_the_ldap_recon_logs_every_later_search_as_partial() {
    for lab in committed_labs() {
        let pcap = fixture(&lab, "attack.pcap");
        let searches = frames(&pcap, "ldap.protocolOp == 3");
        let first = searches[searches.len() / 2];
        let port = source_port(&pcap, first);
        let dir = TempDir::new("midstream");
        let whole = Replay::run(&pcap);
        let cut = Replay::run(&starting_at(&pcap, first, &dir));
        assert_same_records_since(&whole, &cut, cut_time(&pcap, first), &lab);
        let logged = cut.log("ldap_search");
        assert_eq!(
            logged.len(),
            searches.len() - searches.len() / 2,
            "{lab}: every search from the cut on"
        );
        // Only the connection picked up is partial; those opened after the cut are whole.
        for record in logged.iter().chain(&cut.log("ntlm")).chain(&cut.log("smb")) {
            let picked_up = record["id.orig_p"] == port;
            assert_eq!(
                record.get("partial"),
                picked_up.then_some(&Value::Bool(true)),
                "{lab}: {record}"
            );
        }
        assert!(
            !cut.log("ntlm").is_empty(),
            "{lab}: the SMB logins after the cut"
        );
        // Both directions were picked up where a message starts.
        assert_eq!(resyncs(&cut, "ldap"), Some((2, 0)), "{lab}: {}", cut.stdout);
    }
}

#[test]
fn unusual_ntlm_hostname_still_fires_on_the_attack_picked_up_after_the_first_smb_handshake() {
    for lab in committed_labs() {
        let attack = fixture(&lab, "attack.pcap");
        // The first SMB connection's first message: everything before it, its handshake
        // included, is cut away.
        let first = frames(&attack, "smb2")[0];
        let port = source_port(&attack, first);
        let workstation = tshark_fields(
            &attack,
            &format!("ntlmssp.messagetype == 0x00000003 && tcp.srcport == {port}"),
            &["ntlmssp.auth.hostname"],
        )[0][0]
            .clone();
        let dir = TempDir::new("midstream");
        let cut = starting_at(&attack, first, &dir);
        let replay = Replay::run_all(&[&fixture(&lab, "baseline.pcap"), &cut]);
        let logins: Vec<Value> = replay
            .log("ntlm")
            .into_iter()
            .filter(|r| r["id.orig_p"] == port && r["username"].is_string())
            .collect();
        assert_eq!(logins.len(), 1, "{lab}: {logins:#?}");
        assert_eq!(logins[0]["hostname"], workstation.as_str(), "{lab}");
        assert_eq!(logins[0]["partial"], true, "{lab}");
        let alerts: Vec<Value> = eve_records(replay.data.path())
            .into_iter()
            .filter(|r| {
                r["event_type"] == "alert"
                    && r["alert"]["signature"] == "Device / Unusual NTLM Hostname"
            })
            .collect();
        assert!(
            alerts.iter().any(|a| a["src_port"] == port
                && a["vigil"]["evidence"]["workstation"] == workstation.as_str()),
            "{lab}: {alerts:#?}"
        );
    }
}

#[test]
fn segments_missing_mid_stream_lose_only_the_messages_they_carried() {
    let pcap = fixture("lab", "attack.pcap");
    // The first entry answering the middle search, and the first tree connect request.
    let searches = tshark_fields(&pcap, "ldap.protocolOp == 3", &["ldap.messageID"]);
    let search_id: u64 = searches[searches.len() / 2][0].parse().expect("message id");
    let entry = frames(
        &pcap,
        &format!("ldap.protocolOp == 4 && ldap.messageID == {search_id}"),
    )[0];
    let ldap_port = source_port(&pcap, entry);
    let tree = frames(&pcap, "smb2.cmd == 3 && smb2.flags.response == 0")[0];
    let tree_port = source_port(&pcap, tree);
    let tree_path = field(&pcap, tree, "smb2.tree");
    let dir = TempDir::new("midstream");
    let holed = dir.path().join("holed.pcap");
    without_frames(&pcap, &[entry.to_string(), tree.to_string()], &holed);
    let whole = Replay::run(&pcap);
    let cut = Replay::run(&holed);
    // The search is still answered, with one entry fewer.
    let mut searches = whole.log("ldap_search");
    let search = searches
        .iter_mut()
        .find(|r| r["message_id"] == search_id && r["id.resp_p"] == ldap_port)
        .expect("the search is logged");
    let count = search["result_count"].as_u64().expect("result_count");
    search["result_count"] = (count - 1).into();
    // The tree connect whose request went missing is not logged; everything else is.
    let mut trees = whole.log("smb");
    let at = trees
        .iter()
        .position(|r| {
            r["action"] == "tree_connect"
                && r["path"] == tree_path.as_str()
                && r["id.orig_p"] == tree_port
        })
        .expect("the tree connect is logged");
    trees.remove(at);
    for (log, expected) in [
        ("ldap_search", searches),
        ("smb", trees),
        ("ntlm", whole.log("ntlm")),
        ("ldap", whole.log("ldap")),
    ] {
        assert_eq!(
            sorted(cut.log(log).iter().map(comparable).collect()),
            sorted(expected.iter().map(comparable).collect()),
            "{log}"
        );
    }
    assert_eq!(problem(&cut, "ldap", "stream_gap"), 1, "{}", cut.stdout);
    assert_eq!(problem(&cut, "smb", "stream_gap"), 1, "{}", cut.stdout);
    // The lost segments ended where a message ends: the next ones begin messages.
    assert_eq!(resyncs(&cut, "ldap"), Some((1, 0)), "{}", cut.stdout);
    assert_eq!(resyncs(&cut, "smb"), Some((1, 0)), "{}", cut.stdout);
}
