//! Finding what the set-up step built: the `vigil` binary and the compiled plugins.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

pub fn root() -> PathBuf {
    // Cargo sets the variable when it runs a test too; that one is right even when the binary
    // was built from a checkout elsewhere that shares this target directory.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// The cargo target directory this test binary was built into (`.../target/release/deps/x`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .find(|dir| dir.join("wasm32-unknown-unknown").is_dir() || dir.join("release").is_dir())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root().join("target"))
}

fn cargo(args: &[&str]) {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(root())
        .env("CARGO_TARGET_DIR", target_dir())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo {args:?} failed");
}

/// The signed plugin bundles the set-up step made (`plugins/sign-dev.sh`), made here if it has
/// not; the appliance built here trusts their development key by default.
pub fn plugin_dir() -> PathBuf {
    static SIGNED: OnceLock<PathBuf> = OnceLock::new();
    SIGNED
        .get_or_init(|| {
            let dir = target_dir().join("bundles");
            if !dir.join("network-scan.vbundle").is_file() {
                module_dir();
                vigil_bin();
                let status = Command::new(root().join("plugins").join("sign-dev.sh"))
                    .env("CARGO_TARGET_DIR", target_dir())
                    .status()
                    .expect("sign-dev.sh runs");
                assert!(status.success(), "plugins/sign-dev.sh failed");
            }
            dir
        })
        .clone()
}

/// Builds the workspace packages matching `packages` for wasm, as plugins are built.
fn build_wasm(packages: &str) {
    cargo(&[
        "build",
        "--profile",
        "plugin",
        "--target",
        "wasm32-unknown-unknown",
        "-p",
        packages,
    ]);
}

/// The compiled (unsigned) plugin modules, building them if the set-up step has not.
pub fn module_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = target_dir().join("wasm32-unknown-unknown").join("plugin");
            if !dir.join("vigil_plugin_network_scan.wasm").is_file() {
                build_wasm("vigil-plugin-*");
            }
            dir
        })
        .clone()
}

/// The release `vigil` binary, building it if needed.
pub fn vigil_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let bin = target_dir().join("release").join("vigil");
            if !bin.is_file() {
                cargo(&["build", "--release", "-p", "appliance"]);
            }
            bin
        })
        .clone()
}

/// A fresh, empty directory for one test, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vigil-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `vigil replay` of `pcaps`, in order as one capture, into `data_dir` with the built plugins:
/// what it printed and how it exited, whatever the outcome.
pub fn replay(data_dir: &Path, pcaps: &[&Path]) -> Output {
    replay_with(data_dir, &[], pcaps)
}

/// [`replay`] with extra `vigil replay` options. Unless they choose a config or the workers, the
/// traffic is split over two sensor workers, so every replay test runs the sharded path (whose
/// output is that of one worker: `output_stable` compares them).
pub fn replay_with(data_dir: &Path, options: &[&str], pcaps: &[&Path]) -> Output {
    let chosen = options
        .iter()
        .any(|option| *option == "--workers" || *option == "--config");
    let workers: &[&str] = if chosen { &[] } else { &["--workers", "2"] };
    Command::new(vigil_bin())
        .arg("replay")
        .args(workers)
        .args(options)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--plugins")
        .arg(plugin_dir())
        .args(pcaps)
        .output()
        .expect("vigil runs")
}

/// [`replay`] that must succeed.
pub fn replay_ok(data_dir: &Path, pcaps: &[&Path]) -> Output {
    let out = replay(data_dir, pcaps);
    assert!(
        out.status.success(),
        "vigil replay {pcaps:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every record of `DATA_DIR/eve.json` (none when it was never written).
pub fn eve_records(data_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(data_dir.join("eve.json"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every eve.json line is JSON"))
        .collect()
}

/// The models that alerted on `source` in a data dir's eve.json.
pub fn models_of(data_dir: &Path, source: &str) -> std::collections::BTreeSet<String> {
    eve_records(data_dir)
        .iter()
        .filter(|r| r["event_type"] == "alert" && r["src_ip"] == source)
        .filter_map(|r| r["alert"]["signature"].as_str().map(str::to_string))
        .collect()
}

/// The value of a row of the run's summary table (`packets`, `devices`...); `None` when the row
/// is not printed (counters print only when not zero).
pub fn summary_value(stdout: &[u8], row: &str) -> Option<u64> {
    String::from_utf8_lossy(stdout).lines().find_map(|line| {
        let rest = line.strip_prefix(row)?;
        if !rest.starts_with("  ") {
            return None;
        }
        rest.trim().parse().ok()
    })
}

/// `vigil ARGS` (warnings only on stderr): how it exited and what it printed.
pub fn vigil(args: &[&str]) -> Output {
    Command::new(vigil_bin())
        .args(args)
        .env("VIGIL_LOG", "warn")
        .output()
        .expect("vigil runs")
}

/// `vigil ARGS`, which must succeed; its standard output.
pub fn vigil_ok(args: &[&str]) -> String {
    let out = vigil(args);
    assert!(
        out.status.success(),
        "vigil {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The actions recorded in `DATA_DIR/actions.json` (none when there is no file yet).
pub fn saved_actions(data_dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(data_dir.join("actions.json")).unwrap_or_default();
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|saved| saved["actions"].as_array().cloned())
        .unwrap_or_default()
}

/// The built (unsigned) module of `plugin`: `network-scan` -> `vigil_plugin_network_scan.wasm`.
pub fn plugin_module(plugin: &str) -> PathBuf {
    module_dir().join(format!("vigil_plugin_{}.wasm", plugin.replace('-', "_")))
}

/// The plugin-signing key `plugins/sign-dev.sh` made, which the development trust dir trusts.
pub fn dev_signer_key() -> PathBuf {
    plugin_dir();
    target_dir().join("dev-keys").join("signer.key")
}

/// The compiled test-fixture plugin `krate` (`tests/plugins/`, never shipped). Every fixture is
/// built on the first call of a test run: cargo rebuilds only what changed, so an edited fixture
/// is never tested stale.
pub fn fixture_module(krate: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        build_wasm("vigil-fixture-*");
        target_dir().join("wasm32-unknown-unknown").join("plugin")
    });
    dir.join(format!("{}.wasm", krate.replace('-', "_")))
}

/// `vigil bundle build` of the built `plugin` as `version` into `out`, then `vigil bundle sign`
/// with each of `keys` (none: left unsigned).
pub fn build_bundle(plugin: &str, version: &str, keys: &[&Path], out: &Path) {
    bundle_module(&plugin_module(plugin), version, keys, out);
}

/// [`build_bundle`] of any compiled module.
pub fn bundle_module(module: &Path, version: &str, keys: &[&Path], out: &Path) {
    let text = |path: &Path| path.to_str().expect("utf-8 path").to_string();
    let wasm = text(module);
    vigil_ok(&[
        "bundle",
        "build",
        "--wasm",
        &wasm,
        "--version",
        version,
        "--out",
        &text(out),
    ]);
    for key in keys {
        vigil_ok(&["bundle", "sign", "--key", &text(key), &text(out)]);
    }
}

/// A model update (new config for the built `plugin`'s code) at `version`, with `config` (JSON),
/// signed by each of `keys`, written to `out` (the config beside it).
pub fn model_update_bundle(plugin: &str, version: &str, config: &str, keys: &[&Path], out: &Path) {
    let text = |path: &Path| path.to_str().expect("utf-8 path").to_string();
    let file = out.with_extension("json");
    std::fs::write(&file, config).expect("config file");
    vigil_ok(&[
        "bundle",
        "build",
        "--config-update",
        "--for",
        &text(&plugin_module(plugin)),
        "--config",
        &text(&file),
        "--version",
        version,
        "--out",
        &text(out),
    ]);
    for key in keys {
        vigil_ok(&["bundle", "sign", "--key", &text(key), &text(out)]);
    }
}

/// Flips one byte of the wasm inside the bundle file at `path` (the wasm sits between the
/// manifest and the signatures at the end), writing the result to `out`.
pub fn tamper_wasm(path: &Path, out: &Path) {
    let mut bytes = std::fs::read(path).expect("bundle");
    let at = bytes.len() - 1000;
    bytes[at] ^= 0x01;
    std::fs::write(out, &bytes).expect("write the tampered bundle");
}
