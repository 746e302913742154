//! A plugin's learned state through its own upgrades, with real wasm, signed bundles and the
//! appliance's pipeline: `evolving` (tests/plugins/evolving) 1.0.0 learns the lab's normal
//! week, 2.0.0, whose state renames a field and adds one (state version 2, `migrate`), is
//! swapped in and detects the attack exactly as 1.0.0 alone does, and so does a restart on its
//! saved state; 3.0.0, whose `migrate` fails, is refused and changes nothing, and installed
//! offline it starts without the state but keeps it aside rather than overwrite it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use ciborium::Value;
use vigil::bundle::TrustStore;
use vigil::capture::pcap::PcapSource;
use vigil::config::Config;
use vigil::devices::{DeviceConfig, DeviceTable};
use vigil::host::PluginHost;
use vigil::installed::BundleStore;
use vigil::pipeline::Pipeline;
use vigil::plugin_dir::{self, Loaded};
use vigil::store::eve::EveFile;
use vigil_tests::lab::{committed_labs, fixture};
use vigil_tests::workspace::{bundle_module, fixture_module, vigil_ok, TempDir};

const PLUGIN: &str = "evolving";
const MODEL: &str = "Fixture / New Internal Peers";

/// (device, packet time) of every breach of the fixture's model.
type Breaches = Vec<(String, u64)>;

/// A vendor's keys and its three signed versions, and an operator's trust dir and factory
/// plugin dir holding version 1.
struct Vendor {
    dir: TempDir,
}

impl Vendor {
    fn new() -> Vendor {
        let vendor = Vendor {
            dir: TempDir::new("state-upgrades"),
        };
        let path = |name: &str| vendor.text(name);
        vigil_ok(&["key", "generate", "--out", &path("root.key")]);
        vigil_ok(&["key", "generate", "--out", &path("signer.key")]);
        vigil_ok(&[
            "trust",
            "init",
            "--trust",
            &path("trust"),
            "--root",
            &path("root.key.pub"),
        ]);
        vigil_ok(&[
            "trust",
            "delegate",
            "--root-key",
            &path("root.key"),
            "--version",
            "1",
            "--days",
            "30",
            "--out",
            &path("delegation.vdlg"),
            "--key",
            &path("signer.key.pub"),
            "--name",
            "fixture signer",
            "--plugins",
            PLUGIN,
        ]);
        vigil_ok(&[
            "trust",
            "install",
            "--trust",
            &path("trust"),
            &path("delegation.vdlg"),
        ]);
        let signer = vendor.path("signer.key");
        for version in ["v1", "v2", "v3"] {
            let module = fixture_module(&format!("vigil-fixture-evolving-{version}"));
            let number = format!("{}.0.0", &version[1..]);
            bundle_module(&module, &number, &[&signer], &vendor.bundle(version));
        }
        std::fs::create_dir_all(vendor.path("factory")).expect("factory dir");
        std::fs::copy(
            vendor.bundle("v1"),
            vendor.path("factory").join("evolving.vbundle"),
        )
        .expect("factory bundle");
        vendor
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn text(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn bundle(&self, version: &str) -> PathBuf {
        self.path(&format!("evolving-{version}.vbundle"))
    }

    /// The appliance started on `data`, as `vigil replay` starts it: the factory plugins and
    /// those installed in `data`, each with the state `data` saved for it restored.
    fn start(&self, data: &Path) -> (Pipeline, Loaded) {
        let config = Config::default();
        let mut host = PluginHost::new(config.host_config(data)).expect("host");
        let trust = TrustStore::open(&self.path("trust")).expect("trust store");
        let mut store = BundleStore::open(data, trust, config.bundles.limits()).expect("store");
        let mut loaded = plugin_dir::load_all(
            &mut host,
            &self.path("factory"),
            Some(&mut store),
            false,
            &config,
            data,
        )
        .expect("plugin dir");
        assert_eq!(loaded.len(), 1, "{loaded:?}");
        let loaded = loaded.remove(0);
        assert!(loaded.result.is_ok(), "{:?}", loaded.result);
        let devices = DeviceTable::new(DeviceConfig::default()).expect("devices");
        let sink = Box::new(EveFile::open(data, Default::default()).expect("eve.json"));
        let mut pipeline = Pipeline::from_config(&config, host, devices, sink, None)
            .expect("sensor workers start");
        pipeline.attach_store(store);
        (pipeline, loaded)
    }

    /// Installs a version into the running appliance, as `vigil push` does.
    fn install(&self, pipeline: &mut Pipeline, version: &str) -> Result<(), String> {
        let bytes = std::fs::read(self.bundle(version)).expect("bundle");
        pipeline
            .install(&bytes)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

fn replay(pipeline: &mut Pipeline, pcap: &Path) {
    let mut source = PcapSource::open(pcap).expect("pcap");
    pipeline
        .run(&mut source, &AtomicBool::new(false), false, |_| {})
        .expect("replays");
}

fn breaches(pipeline: &Pipeline) -> Breaches {
    pipeline
        .breaches()
        .iter()
        .filter(|e| e.breach.model == MODEL)
        .map(|e| (e.breach.device.ip.to_string(), e.breach.ts.micros()))
        .collect()
}

fn running_version(pipeline: &Pipeline) -> String {
    let plugins = pipeline.host().plugins();
    assert_eq!(plugins.len(), 1);
    plugins[0].version.clone()
}

/// Saves the running plugin's state as the appliance does on shutdown, once it has the events
/// still batched (as an install hands them over first); the file's bytes.
fn save_state(pipeline: &mut Pipeline, data: &Path) -> Vec<u8> {
    pipeline.dispatch().expect("batch handed over");
    let written = plugin_dir::save_state(pipeline.host_mut(), data);
    let bytes =
        std::fs::read(data.join("state").join(format!("{PLUGIN}.bin"))).expect("state file");
    assert_eq!(written, bytes.len() as u64, "state saved");
    bytes
}

/// A field of a CBOR map (the state envelope, or the state in it).
fn field<'v>(map: &'v Value, name: &str) -> &'v Value {
    map.as_map()
        .and_then(|entries| entries.iter().find(|(key, _)| key.as_text() == Some(name)))
        .map(|(_, value)| value)
        .unwrap_or_else(|| panic!("no field {name} in {map:?}"))
}

fn envelope(bytes: &[u8]) -> Value {
    ciborium::from_reader(bytes).expect("the state file is a CBOR envelope")
}

fn lab_captures() -> (PathBuf, PathBuf) {
    let lab = committed_labs()
        .into_iter()
        .next()
        .expect("a committed lab");
    (fixture(&lab, "baseline.pcap"), fixture(&lab, "attack.pcap"))
}

/// Version 1 alone over the normal week and then the attack: what the upgraded runs must match.
fn v1_alone(vendor: &Vendor, baseline: &Path, attack: &Path) -> Breaches {
    let data = TempDir::new("state-upgrades-v1");
    let (mut pipeline, _) = vendor.start(data.path());
    replay(&mut pipeline, baseline);
    assert_eq!(
        breaches(&pipeline),
        Vec::new(),
        "the normal week raises nothing"
    );
    replay(&mut pipeline, attack);
    pipeline.finish().expect("finish");
    breaches(&pipeline)
}

#[test]
fn an_upgrade_that_migrates_its_state_detects_as_the_old_version_did_and_after_a_restart() {
    let vendor = Vendor::new();
    let (baseline, attack) = lab_captures();
    let expected = v1_alone(&vendor, &baseline, &attack);
    let attacker = committed_labs()
        .first()
        .map(|lab| vigil_tests::lab::ground_truth(lab)[0].source.to_string())
        .expect("a lab");
    assert!(
        !expected.is_empty() && expected.iter().all(|(device, _)| *device == attacker),
        "version 1 raises its model on the attacker alone: {expected:?}"
    );
    // What it learned is what detects: without the normal week the attack raises nothing.
    let fresh = TempDir::new("state-upgrades-fresh");
    let (mut unlearned, _) = vendor.start(fresh.path());
    replay(&mut unlearned, &attack);
    unlearned.finish().expect("finish");
    assert_eq!(
        breaches(&unlearned),
        Vec::new(),
        "nothing learned, nothing new"
    );

    let data = TempDir::new("state-upgrades-swapped");
    let (mut pipeline, _) = vendor.start(data.path());
    replay(&mut pipeline, &baseline);
    let learned_by_v1 = envelope(&save_state(&mut pipeline, data.path()));
    assert_eq!(field(&learned_by_v1, "schema"), &Value::from(1));
    vendor.install(&mut pipeline, "v2").expect("2.0.0 installs");
    assert_eq!(running_version(&pipeline), "2.0.0");
    let migrated = envelope(&save_state(&mut pipeline, data.path()));
    assert_eq!(field(&migrated, "plugin_version"), &Value::from("2.0.0"));
    assert_eq!(field(&migrated, "schema"), &Value::from(2));
    let (old, new) = (field(&learned_by_v1, "state"), field(&migrated, "state"));
    assert_eq!(
        field(new, "usual_peers"),
        field(old, "peers"),
        "renamed, with v1's data"
    );
    assert_eq!(field(new, "new_peers"), field(old, "new_peers"));
    assert_eq!(field(new, "raised"), &Value::from(0), "the added field");

    // The restart: another appliance on a copy of this data dir as it was saved.
    let restarted = TempDir::new("state-upgrades-restarted");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(data.path().join("."))
        .arg(restarted.path())
        .status()
        .expect("cp runs");
    assert!(copied.success());

    replay(&mut pipeline, &attack);
    pipeline.finish().expect("finish");
    assert_eq!(breaches(&pipeline), expected, "swapped: as version 1 alone");

    let (mut pipeline, loaded) = vendor.start(restarted.path());
    assert!(loaded.restored, "the saved state version 2 is restored");
    assert_eq!(
        running_version(&pipeline),
        "2.0.0",
        "the installed version runs"
    );
    replay(&mut pipeline, &attack);
    pipeline.finish().expect("finish");
    assert_eq!(
        breaches(&pipeline),
        expected,
        "restarted: as version 1 alone"
    );
}

#[test]
fn an_upgrade_whose_migrate_fails_is_refused_and_changes_nothing() {
    let vendor = Vendor::new();
    let (baseline, _) = lab_captures();
    let data = TempDir::new("state-upgrades-refused");
    let (mut pipeline, _) = vendor.start(data.path());
    replay(&mut pipeline, &baseline);
    vendor.install(&mut pipeline, "v2").expect("2.0.0 installs");
    let saved = save_state(&mut pipeline, data.path());
    let versions = data.path().join("bundles").join("versions.json");
    let installed = std::fs::read(&versions).expect("versions.json");
    let id = pipeline.host().plugins()[0].id;
    let running = pipeline.host_mut().snapshot(id).expect("snapshot");

    let refused = vendor
        .install(&mut pipeline, "v3")
        .expect_err("3.0.0 cannot take over 2.0.0's state");
    assert_eq!(
        refused,
        "refused: plugin evolving 3.0.0 could not take over the learned state of 2.0.0: \
         vigil_restore returned BadSnapshot: evolving 3.0.0 (state version 3) cannot restore \
         state version 2 written by evolving 2.0.0: state version 2 counted peers of flows \
         that never completed; version 3 must learn again"
    );
    assert_eq!(running_version(&pipeline), "2.0.0", "2.0.0 still runs");
    assert_eq!(
        pipeline.host_mut().snapshot(id).expect("snapshot"),
        running,
        "with its state as it was"
    );
    let state_file = data.path().join("state").join(format!("{PLUGIN}.bin"));
    assert_eq!(std::fs::read(state_file).expect("state file"), saved);
    assert_eq!(std::fs::read(&versions).expect("versions.json"), installed);
    assert_eq!(save_state(&mut pipeline, data.path()), saved);
}

#[test]
fn a_version_installed_offline_that_refuses_the_saved_state_keeps_it_aside() {
    let vendor = Vendor::new();
    let (baseline, _) = lab_captures();
    let data = TempDir::new("state-upgrades-offline");
    let (mut pipeline, _) = vendor.start(data.path());
    replay(&mut pipeline, &baseline);
    vendor.install(&mut pipeline, "v2").expect("2.0.0 installs");
    let saved = save_state(&mut pipeline, data.path());
    drop(pipeline);

    // As `vigil plugins install` does with the appliance stopped: the bundle is verified and
    // put in place, and its module meets the saved state only at the next start.
    let config = Config::default();
    let trust = TrustStore::open(&vendor.path("trust")).expect("trust store");
    let mut store =
        BundleStore::open(data.path(), trust, config.bundles.limits()).expect("bundle store");
    let bytes = std::fs::read(vendor.bundle("v3")).expect("bundle");
    store
        .install(&bytes, |_| Ok(()))
        .expect("3.0.0 installs offline");
    drop(store);

    let (mut pipeline, loaded) = vendor.start(data.path());
    assert_eq!(running_version(&pipeline), "3.0.0");
    assert!(!loaded.restored, "3.0.0 cannot read 2.0.0's state");
    let kept = plugin_dir::unrestored_state_path(data.path(), PLUGIN);
    assert_eq!(
        std::fs::read(&kept).expect("the refused state is kept"),
        saved
    );
    let fresh = save_state(&mut pipeline, data.path());
    assert_ne!(fresh, saved, "3.0.0 saves its own, new state");
    assert_eq!(
        std::fs::read(&kept).expect("still kept"),
        saved,
        "and what 2.0.0 learned is not overwritten"
    );
}
