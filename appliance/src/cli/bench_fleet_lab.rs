//! N live appliances and their broker in a network namespace the bench makes (deleted on drop),
//! for the time from `vigil fleet publish` to a new version running on all of them. Each
//! appliance is `vigil run` capturing (idle) on one end of its own veth pair, with only
//! network-scan, signed by a root and a signer the bench makes for itself, so every published
//! version is verified as on a real appliance. The first two appliances form the group `pair`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::bench::link_cache;
use super::bench_captures::{ip, run, wait_until, KillOnDrop};
use super::bench_fleet::nats_server;

/// The broker's port, on the namespace's own loopback.
const PORT: u16 = 4222;
/// The group of the first two appliances.
const PAIR: &str = "pair";

/// One running appliance: its log lines, each with when it was read.
struct Appliance {
    _process: KillOnDrop,
    lines: mpsc::Receiver<(Instant, String)>,
}

pub(super) struct FleetLab {
    ns: String,
    url: String,
    dir: PathBuf,
    vigil: PathBuf,
    scan_module: PathBuf,
    appliances: Vec<Appliance>,
    _server: Option<KillOnDrop>,
    /// The patch number of the next version published (network-scan 0.2.N).
    next: u32,
}

impl FleetLab {
    /// The namespace, the broker with the fleet's stream and buckets, the bench's trust, and
    /// `count` appliances capturing.
    pub(super) fn start(dir: &Path, scan_module: &Path, count: usize) -> anyhow::Result<FleetLab> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ns = format!("vfleet{}", std::process::id());
        ip(&["netns", "add", &ns]).context("making a network namespace (needs root)")?;
        // From here on the lab exists, so an error deletes what was made.
        let mut lab = FleetLab {
            url: format!("nats://127.0.0.1:{PORT}"),
            ns,
            dir: dir.to_path_buf(),
            vigil: std::env::current_exe().context("finding this executable")?,
            scan_module: scan_module.to_path_buf(),
            appliances: Vec::new(),
            _server: None,
            next: 0,
        };
        ip(&["-n", &lab.ns, "link", "set", "lo", "up"])?;
        lab._server = Some(nats_server(dir, PORT, Some(&lab.ns))?);
        let url = lab.url.clone();
        wait_until(Duration::from_secs(20), || {
            lab.vigil_in_ns(&["fleet", "init", "--url", &url]).is_ok()
        })
        .context("the broker did not answer `vigil fleet init`")?;
        lab.make_trust()?;
        // The first compiles network-scan; the others start with its compiled code.
        for i in 0..count {
            if i == 1 {
                let first = dir.join("a0");
                for other in 1..count {
                    link_cache(&first.join("cache"), &dir.join(format!("a{other}")))?;
                }
            }
            lab.start_appliance(i)?;
        }
        Ok(lab)
    }

    /// `vigil ARGS` outside the namespace (keys, bundles).
    fn vigil(&self, args: &[&str]) -> anyhow::Result<String> {
        run(&self.vigil.to_string_lossy(), args)
    }

    /// `vigil ARGS` inside the namespace (what talks to the broker).
    fn vigil_in_ns(&self, args: &[&str]) -> anyhow::Result<String> {
        let vigil = self.vigil.to_string_lossy();
        let mut all = vec!["netns", "exec", &self.ns, &vigil];
        all.extend_from_slice(args);
        ip(&all)
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// A root and a signer for network-scan, the trust dir, and the plugin dir of the
    /// appliances: network-scan at its own version, signed.
    fn make_trust(&self) -> anyhow::Result<()> {
        let (root, signer, trust) = (
            self.path("root.key"),
            self.path("signer.key"),
            self.path("trust"),
        );
        self.vigil(&["key", "generate", "--out", &root])?;
        self.vigil(&["key", "generate", "--out", &signer])?;
        self.vigil(&[
            "trust",
            "init",
            "--trust",
            &trust,
            "--root",
            &format!("{root}.pub"),
        ])?;
        let delegation = self.path("delegation.vdlg");
        self.vigil(&[
            "trust",
            "delegate",
            "--root-key",
            &root,
            "--version",
            "1",
            "--days",
            "1",
            "--out",
            &delegation,
            "--key",
            &format!("{signer}.pub"),
            "--name",
            "bench signer",
            "--plugins",
            "network-scan",
        ])?;
        self.vigil(&["trust", "install", "--trust", &trust, &delegation])?;
        std::fs::create_dir_all(self.dir.join("plugins"))?;
        self.bundle(None, &self.path("plugins/network-scan.vbundle"))
    }

    /// Builds and signs network-scan at `version` (its own without one) into `out`.
    fn bundle(&self, version: Option<&str>, out: &str) -> anyhow::Result<()> {
        let module = self.scan_module.to_string_lossy();
        let mut build = vec!["bundle", "build", "--wasm", &module, "--out", out];
        if let Some(version) = version {
            build.extend(["--version", version]);
        }
        self.vigil(&build)?;
        self.vigil(&["bundle", "sign", "--key", &self.path("signer.key"), out])?;
        Ok(())
    }

    /// Appliance `a{i}` on its own veth pair, followed until it captures.
    fn start_appliance(&mut self, i: usize) -> anyhow::Result<()> {
        let (capture, other) = (format!("vfa{i}"), format!("vfb{i}"));
        ip(&[
            "-n", &self.ns, "link", "add", &capture, "type", "veth", "peer", "name", &other,
        ])?;
        for iface in [&capture, &other] {
            ip(&["-n", &self.ns, "link", "set", iface, "up"])?;
        }
        let group = if i < 2 {
            format!("group = \"{PAIR}\"\n")
        } else {
            String::new()
        };
        let config = self.dir.join(format!("a{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "[fleet]\nurl = \"{}\"\nsite = \"bench\"\nappliance = \"a{i}\"\n{group}",
                self.url
            ),
        )?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(&self.vigil)
            .args([
                "run",
                "--iface",
                &capture,
                "--mode",
                "generic",
                "--data-dir",
            ])
            .arg(self.dir.join(format!("a{i}")))
            .arg("--plugins")
            .arg(self.dir.join("plugins"))
            .arg("--trust")
            .arg(self.dir.join("trust"))
            .arg("--config")
            .arg(&config)
            .env("VIGIL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting vigil run")?;
        let stderr = child.stderr.take().context("vigil run's stderr")?;
        let process = KillOnDrop(child);
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let appliance = Appliance {
            _process: process,
            lines,
        };
        appliance
            .wait_for("capturing on", Duration::from_secs(60))
            .with_context(|| format!("a{i} did not start capturing"))?;
        self.appliances.push(appliance);
        Ok(())
    }

    /// Publishes a new network-scan version to the first `n` appliances (`pair` for 2, every
    /// one otherwise) and times `vigil fleet publish` until the last of them runs it.
    pub(super) fn publish_and_wait(&mut self, n: usize) -> anyhow::Result<Duration> {
        let version = format!("0.2.{}", self.next);
        self.next += 1;
        let bundle = self.path(&format!("network-scan-{version}.vbundle"));
        self.bundle(Some(&version), &bundle)?;
        let group = if n == 2 {
            PAIR
        } else {
            crate::fleet::updates::ALL
        };
        let start = Instant::now();
        self.vigil_in_ns(&[
            "fleet", "publish", "--url", &self.url, "--group", group, &bundle,
        ])?;
        let installed = format!("fleet update network-scan {version}:");
        let mut last = start;
        for (i, appliance) in self.appliances.iter().take(n).enumerate() {
            let at = appliance
                .wait_for(&installed, Duration::from_secs(60))
                .with_context(|| format!("a{i} did not install {version}"))?;
            last = last.max(at);
        }
        Ok(last - start)
    }
}

impl Appliance {
    /// When a line holding `needle` was read, skipping the lines before it (the last of
    /// which an error shows).
    fn wait_for(&self, needle: &str, limit: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + limit;
        let mut skipped = std::collections::VecDeque::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((at, line)) = self.lines.recv_timeout(left) else {
                anyhow::bail!("no {needle:?} within {limit:?}; its log ended with {skipped:#?}");
            };
            if line.contains(needle) {
                return Ok(at);
            }
            skipped.push_back(line);
            if skipped.len() > 8 {
                skipped.pop_front();
            }
        }
    }
}

impl Drop for FleetLab {
    fn drop(&mut self) {
        // The appliances first: their veths go with the namespace once nothing holds it.
        self.appliances.clear();
        let _ = ip(&["netns", "del", &self.ns]);
    }
}
