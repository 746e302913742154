//! The capabilities the appliance image gives the daemon (image/init/src/supervise.rs,
//! `DAEMON_CAPS`), measured: as an unprivileged user with exactly those four, `vigil run`
//! binds AF_XDP and reports ready; without any one of them it stops with the reason.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vigil_tests::live::skip_live;
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::workspace::{plugin_dir, target_dir, vigil_bin, TempDir};

/// The image's set, in setpriv's spelling.
const DAEMON_CAPS: [&str; 4] = ["net_raw", "net_admin", "bpf", "ipc_lock"];
/// The daemon's user on the image.
const VIGIL_UID: &str = "990";

/// Runs `vigil run` as the daemon's user with `caps` (ambient, inheritable and bounding);
/// whether it reported ready, and what it said.
fn run_with(ns: &Netns, iface: &str, caps: &[&str]) -> (bool, String) {
    let data = TempDir::new("caps");
    let status = Command::new("chown")
        .args([&format!("{VIGIL_UID}:{VIGIL_UID}")])
        .arg(data.path())
        .status()
        .expect("chown");
    assert!(status.success());
    let set: String = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|cap| format!("+{cap}")))
        .collect::<Vec<_>>()
        .join(",");
    let ready = data.path().join("ready");
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns.name(), "setpriv"])
        .args(["--reuid", VIGIL_UID, "--regid", VIGIL_UID, "--clear-groups"])
        .args([
            "--inh-caps",
            &set,
            "--ambient-caps",
            &set,
            "--bounding-set",
            &set,
        ])
        .arg(vigil_bin())
        .args(["run", "--iface", iface, "--data-dir"])
        .arg(data.path())
        .arg("--plugins")
        .arg(plugin_dir())
        .arg("--trust")
        .arg(target_dir().join("dev-trust"))
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv runs");
    // Only the start-up is measured: ready, or exited with its reason.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() && Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let bound = ready.exists();
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    (bound, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_daemon_captures_with_exactly_its_four_capabilities_and_not_with_fewer() {
    if skip_live() {
        return;
    }
    // The build tree must be readable by the unprivileged user.
    for dir in [target_dir(), target_dir().join("release")] {
        Command::new("chmod")
            .arg("o+rx")
            .arg(&dir)
            .status()
            .expect("chmod");
    }
    let appliance = Netns::unique().expect("namespace");
    let peer = Netns::unique().expect("namespace");
    let (if_a, if_b) = (unique_name(), unique_name());
    let _pair = VethPair::new(
        &appliance,
        &if_a,
        &peer,
        &if_b,
        "10.203.77.1/24",
        "10.203.77.2/24",
    )
    .expect("veth pair");

    let (ready, log) = run_with(&appliance, &if_a, &DAEMON_CAPS);
    assert!(
        ready,
        "with {DAEMON_CAPS:?} the daemon did not bind:\n{log}"
    );
    for missing in DAEMON_CAPS {
        let fewer: Vec<&str> = DAEMON_CAPS.into_iter().filter(|c| *c != missing).collect();
        let (ready, log) = run_with(&appliance, &if_a, &fewer);
        assert!(
            !ready,
            "the daemon bound without CAP_{}",
            missing.to_uppercase()
        );
        assert!(log.contains("AF_XDP"), "without {missing}: {log}");
    }
}
