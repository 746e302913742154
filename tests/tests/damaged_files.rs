//! A data dir whose files are damaged (a flipped sector, a hostile edit at rest) still starts an
//! appliance: each damaged file is moved aside, named in the management API's status, and what
//! can be re-derived is (actions in force, from their records in eve.json). And the rollback
//! floor does not live in one writable file: deleting or emptying `versions.json` does not let an
//! older signed bundle in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vigil_tests::lab::fixture;
use vigil_tests::live::{api_get, skip_live, LiveVigil};
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::workspace::{
    build_bundle, dev_signer_key, plugin_dir, replay_ok, saved_actions, vigil, TempDir,
};

const TOKEN: &str = "damaged-files-test-token";

/// The id and end of each action in force.
fn in_force(actions: &[serde_json::Value]) -> Vec<(u64, u64)> {
    actions
        .iter()
        .filter(|a| a["status"]["state"] == "active")
        .filter_map(|a| Some((a["id"].as_u64()?, a["status"]["until"].as_u64()?)))
        .collect()
}

/// Keeps the first half of a file: what a torn write or a bad sector leaves.
fn cut_in_half(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.len() > 8, "{} has content to damage", path.display());
    std::fs::write(path, &bytes[..bytes.len() / 2]).expect("damage");
}

#[test]
fn each_damaged_file_is_moved_aside_named_in_status_and_actions_in_force_are_rederived() {
    if skip_live() {
        return;
    }
    let work = TempDir::new("damaged");
    let data = work.path().join("data");
    // The lab's attack: devices, incidents, learned state and an action in force.
    replay_ok(
        &data,
        &[
            &fixture("lab", "baseline.pcap"),
            &fixture("lab", "attack.pcap"),
        ],
    );
    let in_force = in_force(&saved_actions(&data));
    assert!(
        !in_force.is_empty(),
        "the lab's attack puts an action in force"
    );

    let damaged: Vec<PathBuf> = [
        "actions.json",
        "devices.json",
        "incidents.json",
        "bundles/versions.json",
        "state/network-scan.bin",
    ]
    .iter()
    .map(|name| data.join(name))
    .collect();
    for path in &damaged {
        cut_in_half(path);
    }

    let appliance = Netns::unique().expect("namespace");
    let other = Netns::unique().expect("namespace");
    let (if_a, if_b) = (unique_name(), unique_name());
    let _pair = VethPair::new(
        &appliance,
        &if_a,
        &other,
        &if_b,
        "10.205.1.1/24",
        "10.205.1.2/24",
    )
    .expect("veth pair");
    let mut vigil = LiveVigil::with_api(&appliance, &if_a, work.path(), TOKEN);
    let (status, body) = api_get(&appliance, "/api/v1/status", TOKEN, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("status answers: {:#?}", vigil.log()));
    assert_eq!(status, 200, "{body}");
    let moved = body["storage"]["moved_aside"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for path in &damaged {
        let entry = moved
            .iter()
            .find(|m| m["path"] == path.to_str().expect("utf-8"))
            .unwrap_or_else(|| panic!("{} named in status: {body:#}", path.display()));
        let kept = entry["kept_as"].as_str().expect("moved aside");
        assert!(Path::new(kept).is_file(), "{kept} kept");
        let logged = vigil.log().iter().any(|l| l.contains(kept));
        assert!(logged, "{kept} named in the log: {:#?}", vigil.log());
    }

    // The actions in force were re-derived from their eve.json records: in force again, or
    // expired at the end they had (the lab's packet time is days before this wall clock).
    let (status, actions) = api_get(&appliance, "/api/v1/actions", TOKEN, Duration::from_secs(5))
        .expect("actions answer");
    assert_eq!(status, 200);
    let came_back = |actions: &[serde_json::Value]| {
        in_force.iter().all(|(id, until)| {
            actions.iter().any(|a| {
                a["id"] == *id
                    && (a["status"]["state"] == "active"
                        || (a["status"]["state"] == "expired" && a["status"]["at"] == *until))
            })
        })
    };
    assert!(
        came_back(actions.as_array().expect("a list")),
        "{in_force:?} in {actions:#}"
    );
    assert!(came_back(&saved_actions(&data)), "written back");
    let exit = vigil.stop();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn an_older_signed_bundle_stays_refused_when_versions_json_is_deleted_or_emptied() {
    let work = TempDir::new("floor");
    let data = work.path().join("data");
    let text = |p: &Path| p.to_str().expect("utf-8").to_string();
    let install = |bundle: &Path| {
        vigil(&[
            "plugins",
            "install",
            "--data-dir",
            &text(&data),
            "--plugins",
            &text(&plugin_dir()),
            &text(bundle),
        ])
    };
    let signer = dev_signer_key();
    let bundle = |version: &str| {
        let out = work.path().join(format!("network-scan-{version}.vbundle"));
        build_bundle("network-scan", version, &[&signer], &out);
        out
    };
    let newer = bundle("9.0.0");
    let older = bundle("8.0.0");
    let ancient = bundle("0.0.1");

    // Older than the factory bundle (on the verified root), even on a fresh data dir.
    let out = install(&ancient);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rollback refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert!(install(&newer).status.success(), "a newer bundle installs");
    let versions = data.join("bundles").join("versions.json");
    for damage in ["deleted", "emptied"] {
        match damage {
            "deleted" => std::fs::remove_file(&versions).expect("delete"),
            _ => std::fs::write(&versions, b"{}").expect("empty"),
        }
        let out = install(&older);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "versions.json {damage}: {stderr}");
        assert!(
            stderr.contains("rollback refused: network-scan 8.0.0 is not newer than 9.0.0"),
            "versions.json {damage}: {stderr}"
        );
    }
}
