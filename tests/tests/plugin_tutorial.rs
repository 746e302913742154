//! The README's plugin tutorial, run exactly as written: its shell blocks are read from
//! README.md, so the tutorial cannot drift from what works. A new plugin is made from the
//! template in a fresh home directory, tested on the lab capture, built and signed, pushed into
//! an appliance capturing live on a veth in a namespace, and a real nmap sweep from the other
//! end raises its breach.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use vigil_tests::live::{output_text, require_tools, skip_live, wait_for_alerts, LiveVigil};
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::workspace::{root, target_dir, vigil_bin, TempDir};

const TOKEN: &str = "tutorial-token-5c1e8a";
const MODEL: &str = "Device / Many New Hosts";

/// Where a block of the tutorial runs, from its first line.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Place {
    Workstation,
    Appliance,
    Device,
}

/// The tutorial's shell blocks, in order, with where each runs.
fn tutorial_blocks() -> Vec<(Place, String)> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let start = readme
        .find("### Tutorial: a custom model")
        .expect("README has the plugin tutorial");
    let section = &readme[start..];
    let end = section[3..].find("\n##").map_or(section.len(), |at| at + 3);
    let mut blocks = Vec::new();
    let mut rest = &section[..end];
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("```").expect("every block is closed");
        let block = &body[..close];
        let place = match block.lines().next() {
            Some("# on your workstation, in the Vigil checkout:") => Place::Workstation,
            Some("# against the appliance:") => Place::Appliance,
            Some("# on a device the appliance watches:") => Place::Device,
            other => panic!("a tutorial block must say where it runs, not {other:?}"),
        };
        blocks.push((place, block.to_string()));
        rest = &body[close + 3..];
    }
    blocks
}

#[test]
fn the_readme_tutorial_builds_a_plugin_that_catches_a_live_sweep() {
    if skip_live() {
        return;
    }
    require_tools(&["nmap", "sed", "cargo"]);
    let blocks = tutorial_blocks();
    assert_eq!(blocks.len(), 5, "{blocks:#?}");

    let appliance = Netns::unique().expect("namespace");
    let device = Netns::unique().expect("namespace");
    let (if_a, if_b) = (unique_name(), unique_name());
    let pair = VethPair::new(
        &appliance,
        &if_a,
        &device,
        &if_b,
        "10.211.7.1/24",
        "10.211.7.2/24",
    )
    .expect("veth pair");
    pair.pin_neighbours().expect("neighbours");
    // The hosts the device sweeps lie beyond the appliance's end of the link.
    device
        .run(
            "ip",
            &[
                "route",
                "add",
                "10.210.0.0/24",
                "via",
                &pair.ip_a().to_string(),
            ],
        )
        .expect("route");

    let work = TempDir::new("tutorial");
    let vigil = LiveVigil::with_api(&appliance, &if_a, work.path(), TOKEN);
    let data = work.path().join("data");

    // The reader's machine: a home of their own, this build's vigil on the PATH, this build's
    // target dir (and so its development key) and the cargo and rustup they already have.
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let real_home = std::env::var_os("HOME").unwrap_or_default();
    let bin_dir = vigil_bin().parent().expect("bin dir").to_path_buf();
    let search = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    let shell = |place: Place, block: &str| -> Output {
        let mut command = match place {
            Place::Workstation => Command::new("bash"),
            Place::Appliance | Place::Device => {
                let ns = if place == Place::Appliance {
                    &appliance
                } else {
                    &device
                };
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns.name(), "bash"]);
                command
            }
        };
        command
            .args(["-euo", "pipefail", "-c", block])
            .current_dir(root())
            .env("HOME", &home)
            .env("PATH", &search)
            .env("CARGO_TARGET_DIR", target_dir())
            .env(
                "CARGO_HOME",
                std::env::var_os("CARGO_HOME")
                    .unwrap_or_else(|| Path::new(&real_home).join(".cargo").into()),
            )
            .env(
                "RUSTUP_HOME",
                std::env::var_os("RUSTUP_HOME")
                    .unwrap_or_else(|| Path::new(&real_home).join(".rustup").into()),
            )
            .env("APPLIANCE", "http://127.0.0.1:8470")
            .env("VIGIL_API_TOKEN", TOKEN)
            .env("VIGIL_LOG", "warn")
            .output()
            .expect("bash runs")
    };

    let (checks, steps) = blocks.split_last().expect("blocks");
    for (place, block) in steps {
        let out = shell(*place, block);
        assert!(out.status.success(), "{block}\n{}", output_text(&out));
    }
    let alerts = wait_for_alerts(
        &data.join("eve.json"),
        MODEL,
        &pair.ip_b().to_string(),
        Duration::from_secs(20),
    );
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["vigil"]["plugin"], "new-hosts");
    // The tutorial's own check sees it through the API.
    let (place, block) = checks;
    let out = shell(*place, block);
    assert!(out.status.success(), "{block}\n{}", output_text(&out));
    assert!(output_text(&out).contains(MODEL), "{}", output_text(&out));
    assert!(vigil.stop().success());
}
