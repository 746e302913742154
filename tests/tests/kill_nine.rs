//! kill -9 at random moments, of a replay and of a live run: every JSON file of the data dir
//! still parses, no eve.json line is left glued onto a cut one (a cut last line is repaired at
//! the next start), and with a one-second checkpoint period the learned state on disk at the
//! kill is at most a period (plus scheduling slack) old and is what the next start restores.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use vigil_tests::lab::fixture;
use vigil_tests::live::{skip_live, syn_scan, LiveVigil};
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::workspace::{plugin_dir, replay_with, vigil_bin, TempDir};

const KILLS: usize = 20;
const CHECKPOINT: &str = "[storage]\ncheckpoint_secs = 1\n";

/// A random duration up to `max` (std's hasher keys are random per process).
fn random_up_to(max: Duration) -> Duration {
    let n = RandomState::new().hash_one(std::time::Instant::now());
    max.mul_f64((n % 10_000) as f64 / 10_000.0)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every JSON document parses; in eve.json every line but a cut last one (no newline yet) is
/// one whole record. Returns whether the last line was cut.
fn check_after_kill(data: &Path, when: &str) -> bool {
    let mut files = Vec::new();
    files_under(data, &mut files);
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name == "eve.json" {
            continue;
        }
        let bytes = std::fs::read(path).expect("read");
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .unwrap_or_else(|e| panic!("{when}: {} does not parse: {e}", path.display()));
    }
    let eve = std::fs::read(data.join("eve.json")).unwrap_or_default();
    let cut = !eve.is_empty() && !eve.ends_with(b"\n");
    let text = String::from_utf8_lossy(&eve);
    let whole = text.lines().count() - usize::from(cut);
    for line in text.lines().take(whole) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("{when}: eve.json line cut or glued ({e}): {line}"));
    }
    cut
}

#[test]
fn kill_nine_during_replays_leaves_whole_files_and_the_next_start_repairs_a_cut_line() {
    let work = TempDir::new("kill9-replay");
    let data = work.path().join("data");
    let config = work.path().join("vigil.toml");
    std::fs::write(&config, CHECKPOINT).expect("config");
    let pcaps = [
        fixture("lab", "baseline.pcap"),
        fixture("lab", "attack.pcap"),
    ];
    // Whole runs first: compiled modules cached, then how long a replay takes here.
    let args = ["--config", config.to_str().expect("utf-8")];
    let pcap_refs: Vec<&Path> = pcaps.iter().map(PathBuf::as_path).collect();
    assert!(replay_with(&data, &args, &pcap_refs).status.success());
    let started = std::time::Instant::now();
    assert!(replay_with(&data, &args, &pcap_refs).status.success());
    let whole_run = started.elapsed();
    let mut cuts = 0;
    for kill in 0..KILLS {
        let mut child = Command::new(vigil_bin())
            .arg("replay")
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .arg("--plugins")
            .arg(plugin_dir())
            .args(&pcaps)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("vigil replay");
        std::thread::sleep(random_up_to(whole_run));
        let _ = child.kill();
        child.wait().expect("wait");
        cuts += usize::from(check_after_kill(&data, &format!("replay kill {kill}")));
    }
    // The next start repairs whatever the last kill cut, and appends whole lines after it.
    let out = replay_with(&data, &args, &pcap_refs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!check_after_kill(&data, "after the kills"));
    eprintln!("{KILLS} kills, {cuts} left a cut eve.json line (repaired at the next start)");
}

/// The newest modification time of the learned state files.
fn newest_state(data: &Path) -> Option<SystemTime> {
    std::fs::read_dir(data.join("state"))
        .ok()?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "bin"))
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
}

#[test]
fn kill_nine_during_live_runs_loses_at_most_one_checkpoint_period_of_learning() {
    if skip_live() {
        return;
    }
    let appliance = Netns::unique().expect("namespace");
    let attacker = Netns::unique().expect("namespace");
    let (if_a, if_b) = (unique_name(), unique_name());
    let pair = VethPair::new(
        &appliance,
        &if_a,
        &attacker,
        &if_b,
        "10.206.1.1/24",
        "10.206.1.2/24",
    )
    .expect("veth pair");
    pair.pin_neighbours().expect("neighbours");
    let work = TempDir::new("kill9-live");
    let data = work.path().join("data");
    let config = work.path().join("vigil.toml");
    std::fs::write(&config, CHECKPOINT).expect("config");
    let text = |p: &Path| p.to_str().expect("utf-8").to_string();
    let args = [
        "--iface".to_string(),
        if_a.clone(),
        "--mode".into(),
        "generic".into(),
        "--data-dir".into(),
        text(&data),
        "--plugins".into(),
        text(&plugin_dir()),
        "--config".into(),
        text(&config),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let target = pair.ip_a().to_string();
    let mut restored_expected: Option<Vec<u8>> = None;
    for kill in 0..KILLS {
        let mut vigil = LiveVigil::start(&appliance, &args);
        if let Some(state) = restored_expected.take() {
            let line = format!(
                "learned state restored from {} ({} bytes)",
                data.join("state").join("network-scan.bin").display(),
                state.len()
            );
            assert!(
                vigil.log().iter().any(|l| l.contains(&line)),
                "kill {kill}: the next start restores the last checkpoint ({line}): {:#?}",
                vigil.log()
            );
        }
        // Traffic to learn from, then a random moment past the first checkpoint.
        syn_scan(
            &attacker,
            &target,
            &format!("{}-{}", 1 + kill * 50, 50 + kill * 50),
        );
        std::thread::sleep(Duration::from_millis(1200) + random_up_to(Duration::from_secs(2)));
        let killed_at = SystemTime::now();
        vigil.kill9();
        let newest = newest_state(&data).expect("state checkpointed while running");
        let age = killed_at.duration_since(newest).unwrap_or_default();
        // One period, plus a second for the capture loop to come round and write.
        assert!(
            age <= Duration::from_secs(2),
            "kill {kill}: the newest checkpoint was {age:?} old"
        );
        check_after_kill(&data, &format!("live kill {kill}"));
        restored_expected =
            Some(std::fs::read(data.join("state").join("network-scan.bin")).expect("state"));
    }
}
