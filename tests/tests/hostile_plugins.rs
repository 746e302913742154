//! Hostile plugin modules, written in WAT, against the plugin host: each is refused at load with
//! the right reason, or isolated (quarantined after repeated failures, with the cause on record)
//! while the real `network-scan` plugin in the same host keeps raising its breach.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use vigil::host::{Emitted, EventBatch, HostConfig, LoadError, PluginHost, PluginStatus};
use vigil_plugin_sdk::harness::events::flow_start;
use vigil_plugin_sdk::Transport;
use vigil_tests::guest;
use vigil_tests::workspace::{root, target_dir, TempDir};

const ATTACKER: [u8; 4] = [10, 1, 0, 50];
const VICTIM: [u8; 4] = [10, 1, 0, 10];

/// The real `network-scan` plugin, built here if the set-up step has not built it; `None` (with
/// the reason printed) when it cannot be built, e.g. without the wasm32 target.
fn network_scan_wasm() -> Option<Vec<u8>> {
    static WASM: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    let result = WASM.get_or_init(|| {
        let path: PathBuf = target_dir()
            .join("wasm32-unknown-unknown")
            .join("plugin")
            .join("vigil_plugin_network_scan.wasm");
        if !path.is_file() {
            let status = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--target",
                    "wasm32-unknown-unknown",
                    "--profile",
                    "plugin",
                    "-p",
                    "vigil-plugin-network-scan",
                ])
                .current_dir(root())
                .env("CARGO_TARGET_DIR", target_dir())
                .status()
                .map_err(|err| format!("cannot run cargo: {err}"))?;
            if !status.success() {
                return Err(format!("building the network-scan plugin failed: {status}"));
            }
        }
        std::fs::read(&path).map_err(|err| format!("{}: {err}", path.display()))
    });
    match result {
        Ok(wasm) => Some(wasm.clone()),
        Err(reason) => {
            println!("SKIPPED the parts that need the real network-scan plugin: {reason}");
            None
        }
    }
}

fn module(name: &str, imports: &str, abi_body: &str, on_batch: &str) -> Vec<u8> {
    guest::module(&guest::manifest_bytes(name), imports, abi_body, on_batch)
}

const ABI_V1: &str = "(i32.const 0x10000)";

fn spinner() -> Vec<u8> {
    module(
        "spinner",
        "",
        ABI_V1,
        "(loop $forever (br $forever)) (i32.const 0)",
    )
}

/// Grows its memory a MiB at a time, forever, ignoring failures.
fn balloon() -> Vec<u8> {
    module(
        "balloon",
        "",
        ABI_V1,
        "(loop $more (drop (memory.grow (i32.const 16))) (br $more)) (i32.const 0)",
    )
}

/// Adds up the bytes of every batch it is given: learned state that must survive a restart.
fn counter() -> Vec<u8> {
    module(
        "counter",
        "",
        ABI_V1,
        "(global.set $state (i64.add (global.get $state) (i64.extend_i32_u (local.get $l))))
         (i32.const 0)",
    )
}

fn crasher() -> Vec<u8> {
    module("crasher", "", ABI_V1, "unreachable")
}

/// Hands the host breaches at addresses outside its memory and of garbage length.
fn liar() -> Vec<u8> {
    module(
        "liar",
        "",
        ABI_V1,
        "(call $emit_breach (i32.const -8) (i32.const 64))
         (call $emit_breach (i32.const 131070) (i32.const 1000))
         (call $emit_breach (i32.const 1024) (i32.const -1))
         (i32.const 0)",
    )
}

fn port_scan_batches(ports: std::ops::RangeInclusive<u16>, per_batch: usize) -> Vec<EventBatch> {
    let events: Vec<_> = ports
        .map(|port| {
            flow_start(
                1.0 + f64::from(port) / 1000.0,
                Transport::Tcp,
                IpAddr::from(ATTACKER),
                IpAddr::from(VICTIM),
                port,
            )
        })
        .collect();
    events
        .chunks(per_batch)
        .map(|chunk| {
            let mut batch = EventBatch::new();
            for event in chunk {
                batch.push(event);
            }
            batch
        })
        .collect()
}

fn status(host: &PluginHost, name: &str) -> PluginStatus {
    host.plugins()
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{name} is loaded"))
}

/// The breach the native harness test of `network-scan` expects for the same scan.
fn assert_is_the_port_scan(emitted: &[Emitted]) {
    assert_eq!(emitted.len(), 1, "{emitted:#?}");
    let e = &emitted[0];
    assert_eq!(e.plugin, "network-scan");
    let b = &e.breach;
    assert_eq!(b.model, "Device / Network Scan");
    assert_eq!(b.device.ip, IpAddr::from(ATTACKER));
    assert_eq!(b.dest.ip, IpAddr::from(VICTIM));
    assert_eq!(b.dest.port, 30, "the 30th distinct target decides");
    assert_eq!(b.proto, Transport::Tcp);
    assert_eq!(b.destinations, vec![IpAddr::from(VICTIM)]);
    assert_eq!(b.ports, (1..=30).collect::<Vec<u16>>());
    assert_eq!(b.mitre, vec!["T1046".to_string()]);
}

/// Peak resident set of this process, from `/proc/self/status`.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[test]
fn module_built_for_abi_2_is_refused_naming_both_majors() {
    let mut host = PluginHost::new(HostConfig::default()).expect("host");
    let err = host
        .load(
            &module("future", "", "(i32.const 0x20000)", "(i32.const 0)"),
            "plugins/future.wasm",
            None,
        )
        .expect_err("refused");
    assert!(
        matches!(
            err,
            LoadError::AbiMismatch {
                found_major: 2,
                expected_major: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "plugins/future.wasm: built for plugin ABI 2, this appliance speaks ABI 1"
    );
    assert!(host.plugins().is_empty());
}

#[test]
fn module_with_no_vigil_exports_is_refused() {
    let mut host = PluginHost::new(HostConfig::default()).expect("host");
    let wasm = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "main")))"#)
        .expect("wat");
    let err = host
        .load(&wasm, "plugins/stranger.wasm", None)
        .expect_err("refused");
    assert!(
        matches!(&err, LoadError::MissingExport { name, .. } if name == "vigil_abi"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "plugins/stranger.wasm: does not export `vigil_abi`: not a Vigil ABI v1 plugin"
    );
}

#[test]
fn module_importing_wasi_is_refused() {
    let mut host = PluginHost::new(HostConfig::default()).expect("host");
    let wasm = module(
        "wasi-user",
        r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
        ABI_V1,
        "(i32.const 0)",
    );
    let err = host
        .load(&wasm, "plugins/wasi.wasm", None)
        .expect_err("refused");
    assert!(
        matches!(&err, LoadError::ForbiddenImport { import, .. }
            if import == "wasi_snapshot_preview1.fd_write"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.starts_with("plugins/wasi.wasm: imports `wasi_snapshot_preview1.fd_write`"));
    assert!(message.contains("no WASI"), "{message}");
}

#[test]
fn non_wasm_is_refused() {
    let mut host = PluginHost::new(HostConfig::default()).expect("host");
    let err = host
        .load(b"#!/bin/sh\nrm -rf /\n", "plugins/evil.wasm", None)
        .expect_err("refused");
    assert!(matches!(err, LoadError::NotWasm { .. }), "{err:?}");
}

#[test]
fn misbehaving_plugins_are_quarantined_while_network_scan_still_raises_its_breach() {
    let config = HostConfig::default();
    let mut host = PluginHost::new(config.clone()).expect("host");
    let scanner = network_scan_wasm();
    if let Some(wasm) = &scanner {
        host.load(wasm, "vigil_plugin_network_scan.wasm", None)
            .expect("network-scan loads");
    }
    for (wasm, origin) in [
        (spinner(), "spinner.wasm"),
        (balloon(), "balloon.wasm"),
        (crasher(), "crasher.wasm"),
        (liar(), "liar.wasm"),
    ] {
        host.load(&wasm, origin, None)
            .expect("hostile module loads");
    }

    let start = Instant::now();
    let mut emitted = Vec::new();
    for batch in port_scan_batches(1..=40, 10) {
        emitted.extend(host.dispatch(&batch));
    }
    println!(
        "4 batches through 3 failing plugins: {:?} (deadline {} ms, at most {} failing batches each)",
        start.elapsed(),
        config.batch_deadline_ms,
        config.max_consecutive_traps
    );

    for (name, cause) in [
        ("spinner", "exceeded its 200 ms batch deadline"),
        ("balloon", "grew its memory past the 64 MiB limit"),
        ("crasher", "wasm `unreachable` instruction executed"),
    ] {
        let s = status(&host, name);
        println!("{name}: {:?}", s.last_error);
        assert!(s.quarantined, "{name} is quarantined");
        assert_eq!(s.stats.traps, 3, "{name}");
        assert_eq!(s.stats.batches, 3, "{name} is not called once quarantined");
        assert_eq!(s.stats.breaches, 0, "{name}");
        let error = s.last_error.expect("cause recorded");
        assert!(error.contains(cause), "{name}: {error}");
        assert!(
            error.contains(" in "),
            "{name}: names the wasm frames: {error}"
        );
    }
    let liar = status(&host, "liar");
    assert!(!liar.quarantined, "bad output is counted, not a trap");
    assert_eq!((liar.stats.traps, liar.stats.bad_output), (0, 12));

    // Capped at 64 MiB per instance, the balloon never got near the host's memory.
    if let Some(peak) = peak_rss_bytes() {
        println!("peak RSS {} MiB", peak >> 20);
        assert!(peak < 1 << 30, "peak RSS {peak} bytes");
    }

    if scanner.is_some() {
        assert_is_the_port_scan(&emitted);
        let s = status(&host, "network-scan");
        assert!(!s.quarantined);
        assert_eq!(
            (
                s.stats.batches,
                s.stats.events,
                s.stats.breaches,
                s.stats.traps
            ),
            (4, 40, 1, 0)
        );
        assert_eq!(s.last_error, None);
    } else {
        assert!(emitted.is_empty());
    }
}

#[test]
fn snapshot_restore_through_wasm_continues_as_if_never_stopped() {
    let batches = port_scan_batches(1..=30, 10);
    let mut before = PluginHost::new(HostConfig::default()).expect("host");
    let id = before
        .load(&counter(), "counter.wasm", None)
        .expect("loads");
    for batch in &batches[..2] {
        before.dispatch(batch);
    }
    let snapshot = before.snapshot(id).expect("snapshot");
    assert_eq!(snapshot.len(), 8);
    assert!(u64::from_le_bytes(snapshot[..].try_into().expect("8 bytes")) > 0);

    let mut after = PluginHost::new(HostConfig::default()).expect("host");
    let id = after.load(&counter(), "counter.wasm", None).expect("loads");
    let err = after.restore(id, b"bad").expect_err("refused");
    assert_eq!(
        err.to_string(),
        "plugin counter: restore failed: vigil_restore returned BadSnapshot"
    );
    after.restore(id, &snapshot).expect("restore");
    assert_eq!(after.snapshot(id).expect("snapshot"), snapshot);
    after.dispatch(&batches[2]);

    let mut never_stopped = PluginHost::new(HostConfig::default()).expect("host");
    let control = never_stopped
        .load(&counter(), "counter.wasm", None)
        .expect("loads");
    for batch in &batches {
        never_stopped.dispatch(batch);
    }
    assert_eq!(
        after.snapshot(id).expect("snapshot"),
        never_stopped.snapshot(control).expect("snapshot")
    );
    assert_eq!(after.plugins()[0].stats.traps, 0);
}

#[test]
fn network_scan_state_survives_snapshot_and_restore() {
    let Some(wasm) = network_scan_wasm() else {
        return;
    };
    let mut before = PluginHost::new(HostConfig::default()).expect("host");
    let id = before.load(&wasm, "scan.wasm", None).expect("loads");
    for batch in port_scan_batches(1..=20, 10) {
        assert!(
            before.dispatch(&batch).is_empty(),
            "20 targets is under threshold"
        );
    }
    let snapshot = before.snapshot(id).expect("snapshot");

    let mut after = PluginHost::new(HostConfig::default()).expect("host");
    let id = after.load(&wasm, "scan.wasm", None).expect("loads");
    after
        .restore(id, &snapshot)
        .expect("its own snapshot is accepted");
    assert_eq!(after.snapshot(id).expect("snapshot"), snapshot);
    // Whether or not the plugin keeps learned state, the full scan after a restore is a scan.
    let mut emitted = Vec::new();
    for batch in port_scan_batches(1..=40, 10) {
        emitted.extend(after.dispatch(&batch));
    }
    assert_is_the_port_scan(&emitted);
}

#[test]
fn second_host_loads_the_compiled_module_from_the_cache_dir() {
    let Some(wasm) = network_scan_wasm() else {
        return;
    };
    let dir = TempDir::new("module-cache");
    let config = HostConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..HostConfig::default()
    };

    let mut first = PluginHost::new(config.clone()).expect("host");
    let start = Instant::now();
    first.load(&wasm, "scan.wasm", None).expect("loads");
    let compiled_in = start.elapsed();
    assert_eq!(first.cache_stats().compiled, 1);
    assert_eq!(first.cache_stats().disk_hits, 0);
    let artifacts: Vec<String> = std::fs::read_dir(dir.path())
        .expect("cache dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    let (sha, engine) = artifacts[0]
        .strip_suffix(".cwasm")
        .and_then(|stem| stem.split_once('-'))
        .expect("<sha256>-<engine hash>.cwasm");
    assert_eq!(sha.len(), 64);
    assert!(sha.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(!engine.is_empty());

    let mut second = PluginHost::new(config).expect("host");
    let start = Instant::now();
    second.load(&wasm, "scan.wasm", None).expect("loads");
    let cached_in = start.elapsed();
    assert_eq!(second.cache_stats().disk_hits, 1);
    assert_eq!(second.cache_stats().compiled, 0);
    println!("load with compilation {compiled_in:?}, from the .cwasm cache {cached_in:?}");

    // The cached module is the same plugin.
    let mut emitted = Vec::new();
    for batch in port_scan_batches(1..=40, 10) {
        emitted.extend(second.dispatch(&batch));
    }
    assert_is_the_port_scan(&emitted);
}
