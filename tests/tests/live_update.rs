//! Live updates under traffic, in process: the lab's captures flow through a real pipeline with
//! the signed plugin bundles, and new versions and a model update are installed between packets.
//! Compared with a run without updates: no event lost or seen twice (same events per plugin,
//! same breaches at the same packet times), learned state kept (the NTLM hostname model still
//! knows the baseline after its swap), a model update's threshold is in force at once, and a
//! new version that traps on every batch gives way to the one it replaced.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vigil::bundle::{Bundle, InstalledVersions, SecretKey, DEFAULT_MAX_BUNDLE_BYTES};
use vigil::capture::pcap::PcapSource;
use vigil::capture::{Next, Source};
use vigil::config::Config;
use vigil::devices::{Device, DeviceConfig, DeviceTable};
use vigil::host::{Emitted, EmittedIncident, HostConfig, PluginHost};
use vigil::installed::BundleStore;
use vigil::pipeline::Pipeline;
use vigil::store::Sink;
use vigil_tests::guest;
use vigil_tests::lab::{self, committed_labs, fixture};
use vigil_tests::workspace::{
    build_bundle, dev_signer_key, model_update_bundle, plugin_dir, target_dir, TempDir,
};

/// (model, device, packet time) of every breach.
type Seen = Arc<Mutex<Vec<(String, String, u64)>>>;

struct Collect(Seen);

impl Sink for Collect {
    fn breach(&mut self, emitted: &Emitted, _: Option<&Device>) -> std::io::Result<()> {
        let b = &emitted.breach;
        let mut seen = self.0.lock().expect("lock");
        seen.push((b.model.clone(), b.device.ip.to_string(), b.ts.micros()));
        Ok(())
    }
    fn incident(&mut self, _: &EmittedIncident, _: Option<&Device>) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn trust_dir() -> PathBuf {
    plugin_dir();
    target_dir().join("dev-trust")
}

fn pipeline(data: &Path, seen: &Seen) -> Pipeline {
    let config = Config::default();
    let mut host = PluginHost::new(config.host_config(data)).expect("host");
    let trust = vigil::bundle::TrustStore::open(&trust_dir()).expect("dev trust store");
    let mut store = BundleStore::open(data, trust, config.bundles.limits()).expect("bundle store");
    let loaded = vigil::plugin_dir::load_all(
        &mut host,
        &plugin_dir(),
        Some(&mut store),
        false,
        &config,
        data,
    )
    .expect("plugin dir");
    for plugin in &loaded {
        assert!(plugin.result.is_ok(), "{:?}", plugin.result);
        assert!(plugin.signed.is_some(), "loaded with its signature checked");
    }
    let devices = DeviceTable::new(DeviceConfig::default()).expect("devices");
    let sink = Box::new(Collect(Arc::clone(seen)));
    let mut pipeline =
        Pipeline::from_config(&config, host, devices, sink, None).expect("sensor workers start");
    pipeline.attach_store(store);
    pipeline
}

/// Feeds packets `from..to` of `pcap` (to the end when `to` is `None`).
fn feed(pipeline: &mut Pipeline, pcap: &Path, from: usize, to: Option<usize>) {
    let mut source = PcapSource::open(pcap).expect("pcap");
    let mut index = 0;
    while let Next::Packet(packet) = source.next_packet().expect("readable") {
        if index >= from && to.is_none_or(|to| index < to) {
            pipeline.handle(&packet).expect("output");
        }
        index += 1;
    }
}

fn packet_count(pcap: &Path) -> usize {
    let mut source = PcapSource::open(pcap).expect("pcap");
    let mut count = 0;
    while let Next::Packet(_) = source.next_packet().expect("readable") {
        count += 1;
    }
    count
}

/// A signed bundle of the built `plugin` under another version, or a model update for it.
fn signed_bundle(dir: &Path, plugin: &str, version: &str, config: Option<&str>) -> Vec<u8> {
    let out = dir.join(format!("{plugin}-{version}.vbundle"));
    let key = dev_signer_key();
    match config {
        Some(json) => model_update_bundle(plugin, version, json, &[&key], &out),
        None => build_bundle(plugin, version, &[&key], &out),
    }
    std::fs::read(&out).expect("bundle")
}

fn events_per_plugin(pipeline: &Pipeline) -> Vec<(String, u64)> {
    pipeline
        .host()
        .plugins()
        .into_iter()
        .map(|p| (p.name, p.stats.events))
        .collect()
}

#[test]
fn swapping_detectors_under_traffic_loses_nothing_and_keeps_what_they_learned() {
    let lab = committed_labs()
        .into_iter()
        .next()
        .expect("a committed lab");
    let (baseline, attack) = (fixture(&lab, "baseline.pcap"), fixture(&lab, "attack.pcap"));
    let bundles = TempDir::new("live-bundles");
    let updates: Vec<(String, Vec<u8>)> = ["ntlm-hostname", "network-scan", "ldap-activity"]
        .iter()
        .map(|p| {
            (
                p.to_string(),
                signed_bundle(bundles.path(), p, "0.2.0", None),
            )
        })
        .collect();

    let reference_seen = Seen::default();
    let reference_data = TempDir::new("live-reference");
    let mut reference = pipeline(reference_data.path(), &reference_seen);
    feed(&mut reference, &baseline, 0, None);
    feed(&mut reference, &attack, 0, None);
    reference.finish().expect("finish");

    let seen = Seen::default();
    let data = TempDir::new("live-swapped");
    let mut swapped = pipeline(data.path(), &seen);
    feed(&mut swapped, &baseline, 0, None);
    // Between the normal week and the attack: the pattern-of-life and scan models.
    for (_, bytes) in &updates[..2] {
        swapped.install(bytes).expect("installs");
    }
    // In the middle of the attack, while the LDAP connection is held open.
    let half = packet_count(&attack) / 2;
    feed(&mut swapped, &attack, 0, Some(half));
    swapped.install(&updates[2].1).expect("installs mid-attack");
    feed(&mut swapped, &attack, half, None);
    swapped.finish().expect("finish");

    let reference_breaches = reference_seen.lock().expect("lock").clone();
    let swapped_breaches = seen.lock().expect("lock").clone();
    assert!(
        reference_breaches
            .iter()
            .any(|(model, ..)| model == "Device / Unusual NTLM Hostname"),
        "the reference run raises the hostname model"
    );
    assert_eq!(
        swapped_breaches, reference_breaches,
        "same breaches, same times"
    );
    assert_eq!(events_per_plugin(&swapped), events_per_plugin(&reference));
    for plugin in swapped.host().plugins() {
        let expected = if updates.iter().any(|(name, _)| *name == plugin.name) {
            "0.2.0"
        } else {
            "0.1.0"
        };
        assert_eq!(plugin.version, expected, "{}", plugin.name);
    }
    // The swaps are on disk: the next start runs the new versions.
    let installed = InstalledVersions::open(&data.path().join("bundles").join("versions.json"))
        .expect("versions");
    assert_eq!(
        installed
            .installed("ntlm-hostname")
            .map(|i| i.version.to_string()),
        Some("0.2.0".to_string())
    );
}

#[test]
fn a_model_update_changes_the_threshold_live() {
    let lab = committed_labs()
        .into_iter()
        .next()
        .expect("a committed lab");
    let (baseline, attack) = (fixture(&lab, "baseline.pcap"), fixture(&lab, "attack.pcap"));
    let bundles = TempDir::new("update-bundles");
    let scan_breaches = |seen: &Seen| {
        seen.lock()
            .expect("lock")
            .iter()
            .filter(|(model, ..)| model == "Device / Network Scan")
            .count()
    };

    let seen = Seen::default();
    let data = TempDir::new("model-update");
    let mut pipeline = pipeline(data.path(), &seen);
    feed(&mut pipeline, &baseline, 0, None);
    feed(&mut pipeline, &attack, 0, None);
    let before = scan_breaches(&seen);
    assert!(before > 0, "the default threshold catches the lab's scans");
    // Nothing in the lab reaches ten thousand targets.
    let update = signed_bundle(
        bundles.path(),
        "network-scan",
        "0.1.1",
        Some(r#"{"threshold": 10000, "min_ports": 3}"#),
    );
    let installed = pipeline.install(&update).expect("model update installs");
    assert!(installed.config.is_some());
    // The same attack again, a day later (new episodes for every model).
    let later = TempDir::new("model-update-pcap");
    let shifted = later.path().join("attack-next-day.pcap");
    lab::shifted(&attack, 86_400, &shifted);
    feed(&mut pipeline, &shifted, 0, None);
    pipeline.finish().expect("finish");
    assert_eq!(
        scan_breaches(&seen),
        before,
        "no network scan breach past the new threshold"
    );
    // Control: without the update the second day's attack does raise it again.
    let control_seen = Seen::default();
    let control_data = TempDir::new("model-update-control");
    let mut control = self::pipeline(control_data.path(), &control_seen);
    for pcap in [&baseline, &attack, &shifted] {
        feed(&mut control, pcap, 0, None);
    }
    control.finish().expect("finish");
    assert!(scan_breaches(&control_seen) > before);
    let version = pipeline
        .host()
        .plugins()
        .into_iter()
        .find(|p| p.name == "network-scan")
        .map(|p| p.version);
    assert_eq!(version.as_deref(), Some("0.1.1"));
}

#[test]
fn a_new_version_that_traps_on_every_batch_is_rolled_back_to_the_previous_one() {
    let lab = committed_labs()
        .into_iter()
        .next()
        .expect("a committed lab");
    let (baseline, attack) = (fixture(&lab, "baseline.pcap"), fixture(&lab, "attack.pcap"));
    // A module claiming to be network-scan 0.3.0 (the real manifest) whose every batch traps,
    // signed by the vendor's key: the signature is good, the code is not.
    let factory_path = plugin_dir().join("network-scan.vbundle");
    let factory = Bundle::decode(
        &std::fs::read(&factory_path).expect("factory bundle"),
        DEFAULT_MAX_BUNDLE_BYTES,
    )
    .expect("decodes");
    let mut host = PluginHost::new(HostConfig::default()).expect("host");
    let id = host
        .load(&factory.wasm, "network-scan", None)
        .expect("loads");
    let module_manifest = host.manifest(id).expect("manifest").clone();
    let faulty =
        guest::trapping_on_every_batch(&postcard::to_allocvec(&module_manifest).expect("encodes"));
    let mut manifest = factory.manifest.clone();
    manifest.version = "0.3.0".parse().expect("version");
    let mut bundle = Bundle::plugin(manifest, faulty);
    let signer = SecretKey::read(&dev_signer_key()).expect("key");
    bundle.sign(&signer).expect("signs");
    let bytes = bundle.encode().expect("encodes");

    let seen = Seen::default();
    let data = TempDir::new("faulty");
    let mut pipeline = pipeline(data.path(), &seen);
    feed(&mut pipeline, &baseline, 0, None);
    pipeline
        .install(&bytes)
        .expect("a well-signed module installs");
    feed(&mut pipeline, &attack, 0, None);
    pipeline.finish().expect("finish");

    let scan = pipeline
        .host()
        .plugins()
        .into_iter()
        .find(|p| p.name == "network-scan")
        .expect("still listed");
    assert_eq!(scan.version, "0.1.0", "the previous version runs again");
    assert!(!scan.quarantined);
    assert!(scan.stats.traps >= u64::from(HostConfig::default().max_consecutive_traps));
    assert!(
        seen.lock()
            .expect("lock")
            .iter()
            .any(|(model, ..)| model == "Device / Network Scan"),
        "the restored version goes on detecting the attack's scans"
    );
    // On disk too: the factory bundle runs at the next start, and 0.3.0 can never come back.
    let dir = data.path().join("bundles");
    assert!(!dir.join("network-scan").join("current.vbundle").exists());
    let versions = InstalledVersions::open(&dir.join("versions.json")).expect("versions");
    assert_eq!(
        versions.highest("network-scan").map(|v| v.to_string()),
        Some("0.3.0".to_string())
    );
}
