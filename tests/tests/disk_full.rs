//! A full data partition does not stop the appliance. `vigil run` captures live on a veth, its
//! data dir on a 16 MiB ext4 loop mount, under a loop of real nmap scans from ever new sources,
//! while the disk is first filled down into the space reserved for state (logs stop, checkpoints
//! still land) and then filled completely (every write fails) for a minute in all: the daemon
//! keeps running and answering, eve.json has rotated, the drops are counted in the status, and
//! once space is freed, alerts and checkpoints are written again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use vigil_tests::live::{api_get, nmap_syn_scan, require_tools, skip_live, LiveVigil};
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::workspace::TempDir;

const TOKEN: &str = "disk-full-test-token";
const MIB: u64 = 1024 * 1024;

/// A 16 MiB ext4 file system on a loop device, mounted for one test and unmounted (and its
/// image deleted) when dropped.
struct LoopDisk {
    work: TempDir,
    mount: PathBuf,
}

impl LoopDisk {
    fn new() -> LoopDisk {
        let work = TempDir::new("diskfull");
        let image = work.path().join("data.img");
        let mount = work.path().join("mnt");
        std::fs::create_dir_all(&mount).expect("mount point");
        run("truncate", &["-s", "16M", s(&image)]);
        run("mkfs.ext4", &["-q", "-F", s(&image)]);
        run("mount", &["-o", "loop", s(&image), s(&mount)]);
        LoopDisk { work, mount }
    }

    /// Bytes free for writing (statvfs's f_bavail, as `df` reports it).
    fn available(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=avail", s(&self.mount)])
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df prints the space available")
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        // Lazily, should a process still hold a file open; the loop device goes with it.
        let _ = Command::new("umount").args(["-l", s(&self.mount)]).status();
        let _ = &self.work;
    }
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().expect(program);
    assert!(status.success(), "{program} {args:?}: {status}");
}

fn newest_state(data: &Path) -> Option<SystemTime> {
    std::fs::read_dir(data.join("state"))
        .ok()?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "bin"))
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
}

/// Scans from a new source address each time (a new device, so a new breach to write).
struct Scanner<'a> {
    ns: &'a Netns,
    iface: String,
    target: String,
    next: u8,
}

impl Scanner<'_> {
    fn scan(&mut self) -> String {
        let source = format!("10.207.1.{}", self.next);
        self.next += 1;
        self.ns
            .run(
                "ip",
                &["addr", "add", &format!("{source}/24"), "dev", &self.iface],
            )
            .expect("address");
        nmap_syn_scan(
            self.ns,
            &self.target,
            "1-200",
            &[
                "--send-ip",
                "--disable-arp-ping",
                "-S",
                &source,
                "-e",
                &self.iface,
            ],
        );
        source
    }

    /// Scans for `how_long`, asking for the status between scans; returns the last status.
    fn scan_for(
        &mut self,
        how_long: Duration,
        appliance: &Netns,
        vigil: &mut LiveVigil,
    ) -> serde_json::Value {
        let until = Instant::now() + how_long;
        loop {
            self.scan();
            let (code, status) =
                api_get(appliance, "/api/v1/status", TOKEN, Duration::from_secs(1))
                    .unwrap_or_else(|| panic!("status answered within 1 s: {:#?}", vigil.log()));
            assert_eq!(code, 200);
            if Instant::now() >= until {
                return status;
            }
        }
    }
}

fn alerts_from(eve: &Path, source: &str) -> usize {
    std::fs::read_to_string(eve)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["event_type"] == "alert" && r["src_ip"] == source)
        .count()
}

#[test]
fn a_full_data_disk_costs_records_not_capture_and_writing_resumes_when_space_returns() {
    if skip_live() {
        return;
    }
    require_tools(&[
        "mkfs.ext4",
        "mount",
        "umount",
        "truncate",
        "fallocate",
        "df",
    ]);
    let disk = LoopDisk::new();
    let appliance = Netns::unique().expect("namespace");
    let attacker = Netns::unique().expect("namespace");
    let (if_a, if_b) = (unique_name(), unique_name());
    let pair = VethPair::new(
        &appliance,
        &if_a,
        &attacker,
        &if_b,
        "10.207.1.1/24",
        "10.207.1.2/24",
    )
    .expect("veth pair");
    pair.pin_neighbours().expect("neighbours");

    // An appliance that has been running a while: eve.json just past its rotation size.
    let data = disk.mount.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let eve = data.join("eve.json");
    let earlier = serde_json::json!({
        "timestamp": "2026-12-01T00:00:00.000000+0000",
        "event_type": "alert",
        "src_ip": "10.207.1.99",
        "alert": { "signature": "an earlier run's alert" },
    })
    .to_string();
    let mut text = String::new();
    while (text.len() as u64) < MIB + 1024 {
        text.push_str(&earlier);
        text.push('\n');
    }
    std::fs::write(&eve, &text).expect("seed eve.json");

    let mut vigil = LiveVigil::with_api_and(
        &appliance,
        &if_a,
        &disk.mount,
        TOKEN,
        "[host]\ncache_modules = false\n[storage]\nrotate_mb = 1\neve_budget_mb = 3\nreserve_mb = 4\ncheckpoint_secs = 2\n",
        &["--mode", "generic"],
    );
    let mut scanner = Scanner {
        ns: &attacker,
        iface: if_b.clone(),
        target: pair.ip_a().to_string(),
        next: 10,
    };
    let first = scanner.scan();
    let deadline = Instant::now() + Duration::from_secs(20);
    while alerts_from(&eve, &first) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(alerts_from(&eve, &first), 1, "{:#?}", vigil.log());
    assert!(
        data.join("eve.json.1").is_file(),
        "eve.json rotated past 1 MiB"
    );

    // Into the reserve: 2 MiB left, under the 4 MiB kept for state. Logs stop, counted;
    // checkpoints still land.
    let reserve_filler = disk.mount.join("filler-reserve");
    let leave = 2 * MIB;
    run(
        "fallocate",
        &[
            "-l",
            &(disk.available() - leave).to_string(),
            s(&reserve_filler),
        ],
    );
    let before = newest_state(&data).expect("checkpointed");
    let status = scanner.scan_for(Duration::from_secs(25), &appliance, &mut vigil);
    assert!(
        status["storage"]["dropped_for_reserve"].as_u64() > Some(0),
        "alert lines dropped for the reserve, counted: {status:#}"
    );
    assert!(
        newest_state(&data) > Some(before),
        "checkpoints land in the reserved space"
    );

    // Completely full: every write fails, counted by path; capture goes on.
    let rest = disk.mount.join("filler-rest");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", s(&rest)), "bs=64K"])
        .stderr(std::process::Stdio::null())
        .status();
    let first_while_full = scanner.next;
    let status = scanner.scan_for(Duration::from_secs(35), &appliance, &mut vigil);
    // Responses go on: the responder's actions on the scanners of this minute are recorded
    // (held for an operator by the guard, as on a fresh appliance) though actions.json cannot
    // be written.
    let (_, actions) = api_get(&appliance, "/api/v1/actions", TOKEN, Duration::from_secs(1))
        .expect("actions answer");
    let answered = actions.as_array().into_iter().flatten().any(|a| {
        a["device"]
            .as_str()
            .and_then(|d| d.strip_prefix("10.207.1."))
            .and_then(|n| n.parse::<u8>().ok())
            .is_some_and(|n| n >= first_while_full)
    });
    assert!(answered, "actions requested on a full disk: {actions:#}");
    let failures = status["storage"]["write_failures"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let state_failed = failures
        .iter()
        .any(|(path, f)| path.contains("/state/") && f["failures"].as_u64() > Some(0));
    assert!(state_failed, "failed checkpoints counted: {status:#}");
    assert!(
        vigil
            .log()
            .iter()
            .any(|l| l.contains("No space left on device") && l.contains(s(&data))),
        "the failing path is logged: {:#?}",
        vigil.log()
    );

    // Space back: alerts and checkpoints are written again.
    std::fs::remove_file(&rest).expect("free");
    std::fs::remove_file(&reserve_filler).expect("free");
    let freed = SystemTime::now();
    let after = scanner.scan();
    let deadline = Instant::now() + Duration::from_secs(20);
    while alerts_from(&eve, &after) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(alerts_from(&eve, &after), 1, "{:#?}", vigil.log());
    std::thread::sleep(Duration::from_secs(3));
    assert!(newest_state(&data) > Some(freed), "checkpoints resume");
    let (_, status) = api_get(&appliance, "/api/v1/status", TOKEN, Duration::from_secs(1))
        .expect("status answers");
    let failing: Vec<&String> = status["storage"]["write_failures"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, f)| f["failing"] == true)
        .map(|(path, _)| path)
        .collect();
    assert!(failing.is_empty(), "still failing: {failing:?}");
    let exit = vigil.stop();
    assert!(exit.success(), "{exit:?}");
}
