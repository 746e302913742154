//! The host against small hand-written ABI v1 modules: each exercises one promise of the module
//! documentation. (Hostile modules next to the real plugins are in
//! `tests/tests/hostile_plugins.rs`.)

use std::net::IpAddr;

use vigil_plugin_sdk::harness::events::{flow_start, tick};
use vigil_plugin_sdk::{
    Breach, Endpoint, EventClass, FlowFilter, Manifest, PluginKind, Subscriptions, Timestamp,
    Transport,
};

use super::*;

const MANIFEST_AT: u32 = 1024;
const BREACH_AT: u32 = 4096;
const INBOX_AT: u32 = 65536;
const ACTION_AT: u32 = 16384;

/// Bodies of a module's functions; the defaults make a well-behaved plugin that raises one
/// breach per batch once configured, and keeps an `i32` of state it snapshots.
struct Guest {
    manifest: Manifest,
    pages: u32,
    /// `vigil_init (param $p i32) (param $l i32) (result i32)`.
    init: String,
    /// `vigil_on_batch (param $p i32) (param $l i32) (result i32)`.
    on_batch: String,
    alloc: String,
    /// What `vigil_abi` returns; a 1.0 module's manifest has no filter.
    abi: i32,
    /// `vigil_restore (param $p i32) (param $l i32) (result i32)`.
    restore: String,
    /// More module fields (data, functions) for the bodies above to use.
    extra: String,
}

fn manifest(name: &str, subscriptions: Subscriptions) -> Manifest {
    Manifest {
        name: name.into(),
        version: "1.2.3".into(),
        kind: PluginKind::Detector,
        subscriptions,
        default_config: "{}".into(),
        filter: FlowFilter::ANY,
    }
}

fn breach() -> Breach {
    let endpoint = |ip: [u8; 4], port| Endpoint {
        ip: IpAddr::from(ip),
        port,
        mac: [0; 6],
    };
    Breach {
        model: "Test / Model".into(),
        ts: Timestamp(1_000_000),
        device: endpoint([10, 0, 0, 1], 40000),
        dest: endpoint([10, 0, 0, 2], 22),
        proto: Transport::Tcp,
        score: 42,
        mitre: vec!["T0000".into()],
        destinations: vec![IpAddr::from([10, 0, 0, 2])],
        ports: vec![22],
        evidence: Vec::new(),
    }
}

fn action() -> vigil_plugin_sdk::ActionRequest {
    vigil_plugin_sdk::ActionRequest {
        response: vigil_plugin_sdk::Response::BlockPort(445),
        device: IpAddr::from([10, 0, 0, 1]),
        ts: Timestamp(1_000_000),
        reason: "test".into(),
        incident: None,
        duration_secs: 60,
        needs_confirmation: false,
    }
}

fn wat_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

impl Guest {
    fn new(name: &str) -> Guest {
        Guest {
            manifest: manifest(
                name,
                Subscriptions::NONE
                    .with(EventClass::Flow)
                    .with(EventClass::Tick),
            ),
            pages: 2,
            // Configured if the config is non-empty; state starts at 0.
            init: "(global.set $configured (local.get $l)) (i32.const 0)".into(),
            // state += 1; raise the breach if configured.
            on_batch: "(global.set $state (i32.add (global.get $state) (i32.const 1)))
                       (if (global.get $configured) (then (call $emit_breach_ok)))
                       (i32.const 0)"
                .into(),
            alloc: format!("(i32.const {INBOX_AT})"),
            abi: vigil_plugin_sdk::abi::abi_version(),
            // Takes back a 4-byte state; refuses anything else.
            restore: "(if (i32.ne (local.get $l) (i32.const 4)) (then (return (i32.const 3))))
                      (global.set $state (i32.load (local.get $p)))
                      (i32.const 0)"
                .into(),
            extra: String::new(),
        }
    }

    fn wasm(&self) -> Vec<u8> {
        let m = &self.manifest;
        let manifest = if vigil_plugin_sdk::abi::abi_minor(self.abi) == 0 {
            // Postcard writes a struct as its fields in order: the 1.0 manifest.
            let fields = (
                &m.name,
                &m.version,
                m.kind,
                m.subscriptions,
                &m.default_config,
            );
            postcard::to_allocvec(&fields)
        } else {
            postcard::to_allocvec(m)
        }
        .expect("manifest encodes");
        let breach = postcard::to_allocvec(&breach()).expect("breach encodes");
        let action = postcard::to_allocvec(&action()).expect("action encodes");
        let wat = format!(
            r#"(module
  (import "vigil" "emit_breach" (func $emit_breach (param i32 i32)))
  (import "vigil" "emit_incident_update" (func $emit_incident_update (param i32 i32)))
  (import "vigil" "log" (func $log (param i32 i32 i32)))
  (import "vigil" "request_action" (func $request_action (param i32 i32)))
  (memory (export "memory") {pages})
  (global $configured (mut i32) (i32.const 0))
  (global $state (mut i32) (i32.const 0))
  (data (i32.const {MANIFEST_AT}) "{manifest_data}")
  (data (i32.const {BREACH_AT}) "{breach_data}")
  (data (i32.const 8192) "bad config: want {{}}")
  (data (i32.const 8256) "no migration from state version 1")
  (data (i32.const 12300) "\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff")
  (data (i32.const {ACTION_AT}) "{action_data}")
  (func $emit_breach_ok (call $emit_breach (i32.const {BREACH_AT}) (i32.const {breach_len})))
  (func $request_action_ok
    (call $request_action (i32.const {ACTION_AT}) (i32.const {action_len})))
  (func (export "vigil_abi") (result i32) (i32.const {abi}))
  (func (export "vigil_alloc") (param $len i32) (result i32) {alloc})
  (func (export "vigil_manifest") (result i64)
    (i64.const {manifest_packed}))
  (func (export "vigil_init") (param $p i32) (param $l i32) (result i32) {init})
  (func (export "vigil_on_batch") (param $p i32) (param $l i32) (result i32) {on_batch})
  (func (export "vigil_snapshot") (result i64)
    (i32.store (i32.const 12288) (global.get $state))
    (i64.const {snapshot_packed}))
  (func (export "vigil_restore") (param $p i32) (param $l i32) (result i32) {restore})
  (func (export "state") (result i32) (global.get $state))
  {extra}
)"#,
            abi = self.abi,
            pages = self.pages,
            manifest_data = wat_bytes(&manifest),
            breach_data = wat_bytes(&breach),
            breach_len = breach.len(),
            action_data = wat_bytes(&action),
            action_len = action.len(),
            alloc = self.alloc,
            init = self.init,
            on_batch = self.on_batch,
            restore = self.restore,
            extra = self.extra,
            manifest_packed = abi::pack(MANIFEST_AT, manifest.len() as u32),
            snapshot_packed = abi::pack(12288, 4),
        );
        wat::parse_str(&wat).expect("test module is valid WAT")
    }
}

fn host() -> PluginHost {
    PluginHost::new(HostConfig {
        batch_deadline_ms: 50,
        ..HostConfig::default()
    })
    .expect("host starts")
}

fn flows(n: u16) -> EventBatch {
    let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
    let mut batch = EventBatch::new();
    for port in 0..n {
        batch.push(&flow_start(1.0, Transport::Tcp, a, b, 1000 + port));
    }
    batch
}

fn status(host: &PluginHost, id: PluginId) -> PluginStatus {
    host.plugins()
        .into_iter()
        .find(|p| p.id == id)
        .expect("plugin is listed")
}

#[test]
fn well_behaved_module_raises_its_breach_and_is_listed() {
    let mut host = host();
    let id = host
        .load(&Guest::new("good").wasm(), "good.wasm", Some(r#"{"on":1}"#))
        .expect("loads");
    assert_eq!(host.find("good"), Some(id));
    let emitted = host.dispatch(&flows(5));
    assert_eq!(emitted.len(), 1);
    assert_eq!(emitted[0].plugin, "good");
    assert_eq!(emitted[0].plugin_version, "1.2.3");
    assert_eq!(emitted[0].breach, breach());
    let s = status(&host, id);
    assert_eq!((s.name.as_str(), s.origin.as_str()), ("good", "good.wasm"));
    assert_eq!(s.kind, PluginKind::Detector);
    assert_eq!(
        s.stats,
        PluginStats {
            batches: 1,
            events: 5,
            breaches: 1,
            traps: 0,
            bad_output: 0,
            actions_refused: 0,
            // How long it took is the clock's; that it was counted is checked below.
            batch_durations: s.stats.batch_durations,
        }
    );
    assert_eq!(s.stats.batch_durations.count, 1);
    assert!(s.stats.batch_durations.total > std::time::Duration::ZERO);
    assert!(!s.quarantined);
    assert_eq!(s.last_error, None);
}

#[test]
fn plugin_receives_only_subscribed_classes_and_is_not_called_without_any() {
    let mut host = host();
    let mut guest = Guest::new("ticks-only");
    guest.manifest.subscriptions = Subscriptions::NONE.with(EventClass::Tick);
    let id = host
        .load(&guest.wasm(), "t.wasm", Some("{}"))
        .expect("loads");
    assert!(host.dispatch(&flows(3)).is_empty());
    assert_eq!(status(&host, id).stats.batches, 0);
    let mut batch = flows(3);
    batch.push(&tick(2.0));
    batch.push(&tick(3.0));
    assert_eq!(host.dispatch(&batch).len(), 1);
    let stats = status(&host, id).stats;
    assert_eq!((stats.batches, stats.events), (1, 2));
}

#[test]
fn plugin_receives_only_the_flows_its_filter_admits() {
    let mut host = host();
    let mut guest = Guest::new("one-port");
    guest.manifest.filter = FlowFilter::ANY.port(1002).port(1004);
    let id = host
        .load(&guest.wasm(), "p.wasm", Some("{}"))
        .expect("loads");
    let mut batch = flows(5);
    batch.push(&tick(2.0));
    host.dispatch(&batch);
    let s = status(&host, id);
    assert_eq!((s.stats.batches, s.stats.events), (1, 3));
    assert_eq!(
        host.manifest(id).map(|m| m.filter),
        Some(guest.manifest.filter)
    );
}

#[test]
fn a_module_of_abi_1_0_has_no_filter_and_receives_all_it_subscribed_to() {
    let mut host = host();
    let mut guest = Guest::new("old");
    guest.abi = 0x1_0000;
    let id = host
        .load(&guest.wasm(), "old.wasm", Some("{}"))
        .expect("a 1.0 module loads");
    host.dispatch(&flows(5));
    assert_eq!(status(&host, id).stats.events, 5);
    assert_eq!(host.manifest(id).map(|m| m.filter), Some(FlowFilter::ANY));
}

#[test]
fn default_config_is_empty_json_for_the_guest() {
    let mut host = host();
    // `$configured` stays 0 with an empty config: no breach.
    host.load(&Guest::new("quiet").wasm(), "q.wasm", None)
        .expect("loads");
    assert!(host.dispatch(&flows(1)).is_empty());
}

#[test]
fn trap_reinstantiates_with_same_config_and_quarantine_needs_consecutive_failures() {
    let mut host = host();
    let mut guest = Guest::new("flaky");
    // Traps on batches of more than 3 events, otherwise behaves.
    guest.on_batch = format!(
        "(if (i32.gt_u (local.get $l) (i32.const 200)) (then unreachable)) {}",
        Guest::new("x").on_batch
    );
    let id = host
        .load(&guest.wasm(), "flaky.wasm", Some(r#"{"a":1}"#))
        .expect("loads");
    let (small, big) = (flows(1), flows(20));
    assert!(host.dispatch(&big).is_empty());
    let s = status(&host, id);
    assert_eq!((s.stats.traps, s.quarantined), (1, false));
    let error = s.last_error.expect("trap recorded");
    assert!(error.contains("unreachable"), "{error}");
    // Fresh instance, initialised again with the config: configured, so it raises.
    assert_eq!(host.dispatch(&small).len(), 1);
    for _ in 0..2 {
        host.dispatch(&big);
    }
    host.dispatch(&small); // resets the run of failures
    for _ in 0..2 {
        host.dispatch(&big);
    }
    assert!(!status(&host, id).quarantined);
    host.dispatch(&big);
    let s = status(&host, id);
    assert!(s.quarantined);
    assert_eq!(s.stats.traps, 6);
    assert_eq!(s.stats.batches, 8);
    // Quarantined: not called any more, not even with a good batch.
    assert!(host.dispatch(&small).is_empty());
    assert_eq!(status(&host, id).stats.batches, 8);
    assert!(host.snapshot(id).is_err());
}

#[test]
fn bad_breach_pointers_and_encodings_are_counted_not_fatal() {
    let mut host = host();
    let mut guest = Guest::new("liar");
    guest.on_batch = "(call $emit_breach (i32.const -16) (i32.const 64))
        (call $emit_breach (i32.const 131000) (i32.const 4096))
        (call $emit_breach (i32.const 0) (i32.const -1))
        (call $emit_breach (i32.const 12300) (i32.const 16))
        (call $emit_breach (i32.const {BREACH_AT}) (i32.const {truncated}))
        (call $log (i32.const 1) (i32.const -5) (i32.const 10))
        (call $emit_breach_ok)
        (i32.const 0)"
        .replace("{BREACH_AT}", &BREACH_AT.to_string())
        .replace(
            "{truncated}",
            &(postcard::to_allocvec(&breach()).expect("encodes").len() - 1).to_string(),
        );
    let id = host.load(&guest.wasm(), "liar.wasm", None).expect("loads");
    let emitted = host.dispatch(&flows(1));
    assert_eq!(emitted.len(), 1, "the one good breach still arrives");
    let s = status(&host, id);
    assert_eq!(s.stats.bad_output, 6);
    assert_eq!((s.stats.traps, s.stats.breaches), (0, 1));
}

#[test]
fn incident_updates_are_rebuilt_and_one_naming_an_entry_the_host_lacks_is_counted() {
    use vigil_plugin_sdk::incident::TimelineEntry;
    use vigil_plugin_sdk::incident_update::UpdateEncoder;
    let entry = |seq: u32| {
        std::sync::Arc::new(TimelineEntry {
            seq,
            ts: Timestamp(u64::from(seq)),
            model: "Device / Network Scan".into(),
            score: 60,
            phase: "Discovery".into(),
            destinations: vec![IpAddr::from([10, 0, 0, 2])],
            ports: vec![445],
            evidence: Vec::new(),
        })
    };
    let incident = |timeline: Vec<std::sync::Arc<TimelineEntry>>| Incident {
        id: 7,
        device: IpAddr::from([10, 0, 0, 1]),
        first: Timestamp(1),
        last: Timestamp(timeline.len() as u64),
        score: 60,
        phases: Vec::new(),
        breaches: timeline.len() as u32,
        by_model: Vec::new(),
        unusual: 0,
        learning: 0,
        timeline,
        summary: "10.0.0.1 scanned.".into(),
    };
    let (first, second) = (incident(vec![entry(1)]), incident(vec![entry(1), entry(2)]));
    let mut encoder = UpdateEncoder::default();
    let whole = encoder.encode(&first).expect("encodes");
    let update = encoder.encode(&second).expect("encodes");
    // The second update keeps entry 1 by its seq: sent to a fresh instance (the host's end
    // starts anew with it), it names an entry the host does not hold.
    let (whole_at, update_at) = (40_000, 48_000);
    let mut guest = Guest::new("analyst-like");
    guest.extra = format!(
        "(data (i32.const {whole_at}) \"{}\") (data (i32.const {update_at}) \"{}\")",
        wat_bytes(&whole),
        wat_bytes(&update)
    );
    guest.on_batch = format!(
        "(if (i32.eqz (global.get $state))
           (then (call $emit_incident_update (i32.const {whole_at}) (i32.const {}))
                 (call $emit_incident_update (i32.const {update_at}) (i32.const {})))
           (else (call $emit_incident_update (i32.const {update_at}) (i32.const {}))
                 (call $emit_incident_update (i32.const 12300) (i32.const 16))))
         (global.set $state (i32.add (global.get $state) (i32.const 1)))
         (i32.const 0)",
        whole.len(),
        update.len(),
        update.len()
    );
    let mut host = host();
    let id = host.load(&guest.wasm(), "a.wasm", None).expect("loads");
    let incidents_of_a_batch = |host: &mut PluginHost| -> Vec<Incident> {
        host.dispatch(&flows(1));
        host.take_incidents()
            .into_iter()
            .map(|e| Incident::clone(&e.incident))
            .collect()
    };
    assert_eq!(incidents_of_a_batch(&mut host), [first, second.clone()]);
    // The same update again is still good (entries 1 and 2 are held); garbage is not.
    assert_eq!(incidents_of_a_batch(&mut host), [second]);
    assert_eq!(status(&host, id).stats.bad_output, 1);
    // A restarted instance holds nothing: the update that keeps entries is refused, counted.
    let mut fresh = self::host();
    let mut replayed = Guest::new("analyst-like");
    replayed.extra = guest.extra.clone();
    replayed.on_batch = format!(
        "(call $emit_incident_update (i32.const {update_at}) (i32.const {})) (i32.const 0)",
        update.len()
    );
    let id = fresh.load(&replayed.wasm(), "b.wasm", None).expect("loads");
    fresh.dispatch(&flows(1));
    assert!(fresh.take_incidents().is_empty());
    assert_eq!(status(&fresh, id).stats.bad_output, 1);
}

#[test]
fn refused_batch_is_counted_but_not_a_failure() {
    let mut host = host();
    let mut guest = Guest::new("picky");
    guest.on_batch = "(i32.const 2)".into();
    let id = host.load(&guest.wasm(), "p.wasm", None).expect("loads");
    for _ in 0..5 {
        host.dispatch(&flows(1));
    }
    let s = status(&host, id);
    assert_eq!(
        (s.stats.bad_output, s.stats.traps, s.quarantined),
        (5, 0, false)
    );
}

#[test]
fn alloc_returning_a_pointer_outside_memory_is_a_failure() {
    let mut host = host();
    let mut guest = Guest::new("wild");
    // Fine for the small config at load, outside memory for a batch.
    guest.alloc = "(if (result i32) (i32.lt_u (local.get $len) (i32.const 16))
        (then (i32.const 65536)) (else (i32.const 131070)))"
        .into();
    let id = host.load(&guest.wasm(), "w.wasm", None).expect("loads");
    host.dispatch(&flows(2));
    let s = status(&host, id);
    assert_eq!(s.stats.traps, 1);
    let error = s.last_error.expect("recorded");
    assert!(error.contains("outside its memory"), "{error}");
}

#[test]
fn snapshot_restore_round_trips_and_a_refused_snapshot_changes_nothing() {
    let mut host = host();
    let id = host
        .load(&Guest::new("counter").wasm(), "c.wasm", None)
        .expect("loads");
    for _ in 0..3 {
        host.dispatch(&flows(1));
    }
    let snapshot = host.snapshot(id).expect("snapshot");
    assert_eq!(snapshot, 3i32.to_le_bytes());
    host.restore(id, &7i32.to_le_bytes()).expect("restore");
    assert_eq!(host.snapshot(id).expect("snapshot"), 7i32.to_le_bytes());
    let err = host.restore(id, b"too long").expect_err("refused");
    assert!(err.to_string().contains("BadSnapshot"), "{err}");
    assert_eq!(host.snapshot(id).expect("snapshot"), 7i32.to_le_bytes());
    assert_eq!(status(&host, id).stats.traps, 0);
}

#[test]
fn refused_config_fails_the_load_with_the_plugins_reason() {
    let mut host = host();
    let mut guest = Guest::new("strict");
    guest.init = "(call $log (i32.const 1) (i32.const 8192) (i32.const 19)) (i32.const 1)".into();
    let err = host
        .load(&guest.wasm(), "strict.wasm", Some("[]"))
        .expect_err("refused");
    assert!(matches!(err, LoadError::InitFailed { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "strict.wasm: initialisation failed: vigil_init returned BadConfig: bad config: want {}"
    );
    assert!(host.plugins().is_empty());
}

#[test]
fn init_that_never_returns_is_interrupted_at_load() {
    let mut host = host();
    let mut guest = Guest::new("stuck");
    guest.init = "(loop $forever (br $forever)) (i32.const 0)".into();
    let err = host
        .load(&guest.wasm(), "stuck.wasm", None)
        .expect_err("fails");
    assert!(matches!(err, LoadError::InitFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("50 ms batch deadline"), "{err}");
}

#[test]
fn hostile_manifest_names_and_duplicates_are_refused() {
    let mut host = host();
    let err = host
        .load(&Guest::new("../../etc/cron.d/x").wasm(), "evil.wasm", None)
        .expect_err("refused");
    assert!(matches!(err, LoadError::BadManifest { .. }), "{err:?}");
    host.load(&Guest::new("twin").wasm(), "a.wasm", None)
        .expect("loads");
    let err = host
        .load(&Guest::new("twin").wasm(), "b.wasm", None)
        .expect_err("duplicate");
    assert_eq!(err.to_string(), "b.wasm: plugin `twin` is already loaded");
}

#[test]
fn wrong_export_types_and_missing_memory_are_refused() {
    let mut host = host();
    let wat = r#"(module (memory (export "memory") 1)
        (func (export "vigil_abi") (result i64) (i64.const 0x10000)))"#;
    let err = host
        .load(&wat::parse_str(wat).expect("wat"), "w.wasm", None)
        .expect_err("refused");
    assert_eq!(
        err.to_string(),
        "w.wasm: exports `vigil_abi` with the wrong type (ABI v1 wants (func (result i32)))"
    );
    let err = host
        .load(b"MZ\x90\0", "setup.exe", None)
        .expect_err("refused");
    assert!(matches!(err, LoadError::NotWasm { .. }));
    let err = host
        .load(b"\0asm\x01\0\0\0\x99", "trunc.wasm", None)
        .expect_err("refused");
    assert!(matches!(err, LoadError::Compile { .. }), "{err:?}");
}

#[test]
fn memory_over_the_cap_at_instantiation_is_refused() {
    let mut host = PluginHost::new(HostConfig {
        memory_limit_bytes: 1 << 20,
        ..HostConfig::default()
    })
    .expect("host");
    let mut guest = Guest::new("fat");
    guest.pages = 32; // 2 MiB
    let err = host
        .load(&guest.wasm(), "fat.wasm", None)
        .expect_err("refused");
    assert!(matches!(err, LoadError::InitFailed { .. }), "{err:?}");
}

#[test]
fn host_can_move_to_the_pipeline_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<PluginHost>();
    assert_send::<EventBatch>();
}

#[test]
fn a_swap_carries_the_state_over_between_batches_and_counts_every_event_once() {
    let mut host = host();
    let id = host
        .load(&Guest::new("counter").wasm(), "v1.wasm", Some("{}"))
        .expect("loads");
    for _ in 0..3 {
        host.dispatch(&flows(2));
    }
    let mut v2 = Guest::new("counter");
    v2.manifest.version = "1.3.0".into();
    host.swap(id, &v2.wasm(), "v2.wasm", Some("{}"), |_| Ok(()))
        .expect("swaps");
    for _ in 0..2 {
        host.dispatch(&flows(2));
    }
    // The guest's own count of batches went on from 3: no batch lost, none seen twice.
    assert_eq!(host.snapshot(id).expect("snapshot"), 5i32.to_le_bytes());
    let s = status(&host, id);
    assert_eq!((s.version.as_str(), s.stats.events), ("1.3.0", 10));
    // Another plugin's module is refused and the running one is untouched.
    let err = host
        .swap(id, &Guest::new("other").wasm(), "o.wasm", None, |_| Ok(()))
        .expect_err("refused");
    assert!(matches!(err, SwapError::OtherPlugin { .. }), "{err}");
    assert_eq!(status(&host, id).version, "1.3.0");
}

#[test]
fn a_new_version_refusing_the_learned_state_is_not_swapped_in_and_the_old_one_keeps_it() {
    let mut host = host();
    let id = host
        .load(&Guest::new("counter").wasm(), "v1.wasm", Some("{}"))
        .expect("loads");
    for _ in 0..3 {
        host.dispatch(&flows(1));
    }
    let mut v2 = Guest::new("counter");
    v2.manifest.version = "2.0.0".into();
    // What the SDK does when `migrate` fails: logs the reason and answers BadSnapshot.
    v2.restore = "(call $log (i32.const 1) (i32.const 8256) (i32.const 33)) (i32.const 3)".into();
    let err = host
        .swap(id, &v2.wasm(), "v2.wasm", None, |_| Ok(()))
        .expect_err("refused");
    assert!(matches!(err, SwapError::Restore { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "plugin counter 2.0.0 could not take over the learned state of 1.2.3: vigil_restore \
         returned BadSnapshot: no migration from state version 1"
    );
    let s = status(&host, id);
    assert_eq!((s.version.as_str(), s.stats.traps), ("1.2.3", 0));
    host.dispatch(&flows(1));
    assert_eq!(host.snapshot(id).expect("snapshot"), 4i32.to_le_bytes());
    assert!(
        host.take_rollbacks().is_empty(),
        "nothing to roll back from"
    );
}

#[test]
fn a_new_version_that_keeps_trapping_gives_way_to_the_old_one_with_its_state() {
    let mut host = host();
    let id = host
        .load(&Guest::new("counter").wasm(), "v1.wasm", Some("{}"))
        .expect("loads");
    for _ in 0..4 {
        host.dispatch(&flows(1));
    }
    let mut faulty = Guest::new("counter");
    faulty.manifest.version = "2.0.0".into();
    faulty.on_batch = "(unreachable)".into();
    host.swap(id, &faulty.wasm(), "v2.wasm", Some("{}"), |_| Ok(()))
        .expect("swaps");
    for _ in 0..HostConfig::default().max_consecutive_traps {
        host.dispatch(&flows(1));
    }
    let rollbacks = host.take_rollbacks();
    assert_eq!(rollbacks.len(), 1);
    assert_eq!(rollbacks[0].failed_version, "2.0.0");
    assert_eq!(rollbacks[0].restored_version, "1.2.3");
    assert!(rollbacks[0].reason.contains("unreachable"), "{rollbacks:?}");
    let s = status(&host, id);
    assert!(!s.quarantined);
    assert_eq!(s.version, "1.2.3");
    // The old version kept the state it had at the swap, and runs again.
    host.dispatch(&flows(1));
    assert_eq!(host.snapshot(id).expect("snapshot"), 5i32.to_le_bytes());
}

#[test]
fn a_model_update_changes_the_config_live_and_keeps_the_state() {
    let mut host = host();
    // Unconfigured (empty config): no breaches.
    let id = host
        .load(&Guest::new("counter").wasm(), "c.wasm", None)
        .expect("loads");
    assert!(host.dispatch(&flows(1)).is_empty());
    host.reconfigure(id, "{}").expect("reconfigured");
    assert_eq!(
        host.dispatch(&flows(1)).len(),
        1,
        "the new config is in force"
    );
    assert_eq!(host.snapshot(id).expect("snapshot"), 2i32.to_le_bytes());
    // A config the plugin refuses changes nothing.
    let mut picky = Guest::new("picky");
    picky.init = "(if (i32.eq (local.get $l) (i32.const 2)) (then (return (i32.const 0)))) \
                  (i32.const 2)"
        .into();
    let picky_id = host
        .load(&picky.wasm(), "p.wasm", Some("{}"))
        .expect("loads");
    let err = host
        .reconfigure(picky_id, "{\"x\":1}")
        .expect_err("refused");
    assert!(matches!(err, SwapError::Refused(_)), "{err}");
    assert_eq!(host.dispatch(&flows(1)).len(), 1);
}

#[test]
fn only_a_responder_may_request_actions_and_a_detector_is_refused_and_counted() {
    let mut host = host();
    let mut detector = Guest::new("pushy-detector");
    detector.on_batch = "(call $request_action_ok) (i32.const 0)".into();
    let mut responder = Guest::new("responder");
    responder.manifest.kind = PluginKind::Responder;
    responder.on_batch = "(call $request_action_ok) (i32.const 0)".into();
    let detector_id = host
        .load(&detector.wasm(), "d.wasm", Some("{}"))
        .expect("loads");
    let responder_id = host
        .load(&responder.wasm(), "r.wasm", Some("{}"))
        .expect("loads");
    host.dispatch(&flows(1));
    let actions = host.take_actions();
    assert_eq!(actions.len(), 1, "the responder's request only");
    assert_eq!(actions[0].plugin, "responder");
    assert_eq!(actions[0].action, action());
    assert_eq!(status(&host, detector_id).stats.actions_refused, 1);
    assert_eq!(status(&host, responder_id).stats.actions_refused, 0);
    // The refusal is no failure: the detector keeps running.
    let d = status(&host, detector_id);
    assert!(!d.quarantined && d.stats.traps == 0);
}

/// Where [`expecting`] keeps the batch a guest waits for.
const EXPECTED_AT: u32 = 32768;

/// A guest (of ABI `abi`) subscribed to LDAP that raises its breach only for a batch of exactly
/// `expected` bytes.
fn expecting(name: &str, abi: i32, expected: &[u8]) -> Vec<u8> {
    let mut guest = Guest::new(name);
    guest.abi = abi;
    guest.manifest.subscriptions = Subscriptions::NONE.with(EventClass::Ldap);
    guest.on_batch = "(if (call $is_expected (local.get $p) (local.get $l))
                        (then (call $emit_breach_ok)))
                      (i32.const 0)"
        .into();
    guest.extra = format!(
        r#"(data (i32.const {EXPECTED_AT}) "{bytes}")
  (func $is_expected (param $p i32) (param $l i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $l) (i32.const {len})) (then (return (i32.const 0))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $l)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $p) (local.get $i)))
                    (i32.load8_u (i32.add (i32.const {EXPECTED_AT}) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))"#,
        bytes = wat_bytes(expected),
        len = expected.len(),
    );
    guest.wasm()
}

#[test]
fn an_abi_1_1_module_gets_an_ldap_search_as_text_and_a_1_2_module_as_a_tree() {
    use vigil_plugin_sdk::{AuthResult, Event, EventKind, LdapFilter};
    // SharpHound's collection filter, as the analyzer reports it.
    let filter = LdapFilter::Or(vec![
        LdapFilter::equality("samaccounttype", "268435456"),
        LdapFilter::equality("samaccounttype", "805306368"),
        LdapFilter::equality("objectclass", "computer"),
    ]);
    let at = flow_start(
        1.0,
        Transport::Tcp,
        [10, 0, 0, 1].into(),
        [10, 0, 0, 2].into(),
        389,
    );
    let tree = Event {
        kind: EventKind::LdapSearchTree {
            base: "dc=corp,dc=local",
            scope: "tree",
            filter,
            entries: 7,
            result: AuthResult::Success,
        },
        ..at.clone()
    };
    let text = Event {
        kind: EventKind::LdapSearch {
            base: "dc=corp,dc=local",
            scope: "tree",
            filter: "(|(samaccounttype=268435456)(samaccounttype=805306368)(objectclass=computer))",
            entries: 7,
            result: AuthResult::Success,
        },
        ..at
    };
    let tree_bytes = postcard::to_allocvec(&tree).expect("encodes");
    let text_bytes = postcard::to_allocvec(&text).expect("encodes");
    let mut host = host();
    let abi_1_1 = (1 << 16) | 1;
    for (name, abi, expected) in [
        ("old", abi_1_1, &text_bytes),
        ("new", abi::abi_version(), &tree_bytes),
        // Control: an old module is never handed the form it cannot decode.
        ("old-given-a-tree", abi_1_1, &tree_bytes),
    ] {
        let wasm = expecting(name, abi, expected);
        host.load(&wasm, name, Some("{}")).expect("loads");
    }
    let mut batch = EventBatch::new();
    batch.push(&tree);
    let fired: Vec<String> = host
        .dispatch(&batch)
        .into_iter()
        .map(|e| e.plugin)
        .collect();
    assert_eq!(fired, ["old", "new"]);
}

/// A guest whose batch spins `spins` loop turns, then runs `then` (returning its status).
fn spinning(name: &str, spins: u32, then: &str) -> Guest {
    let mut guest = Guest::new(name);
    guest.on_batch = format!(
        "(local $n i32)
         (local.set $n (i32.const {spins}))
         (block (loop
           (br_if 1 (i32.eqz (local.get $n)))
           (local.set $n (i32.sub (local.get $n) (i32.const 1)))
           (br 0)))
         {then}"
    );
    guest
}

/// A detector that spins on every batch and raises nothing: a plugin slower than the traffic,
/// for the pipeline's tests.
pub(crate) fn slow_detector(name: &str, spins: u32) -> Vec<u8> {
    spinning(name, spins, "(i32.const 0)").wasm()
}

/// A responder that spins, then raises its breach and requests its action.
fn slow_responder(name: &str, spins: u32) -> Guest {
    let mut guest = spinning(
        name,
        spins,
        "(call $emit_breach_ok) (call $request_action_ok) (i32.const 0)",
    );
    guest.manifest.kind = PluginKind::Responder;
    guest
}

#[test]
fn plugins_on_several_threads_hand_over_in_plugin_order_and_fail_alone() {
    for threads in [1, 2, 4] {
        let mut host = PluginHost::new(HostConfig {
            plugin_threads: threads,
            ..HostConfig::default()
        })
        .expect("host starts");
        // The first loaded take longest, so on a pool they finish last.
        let mut ids = Vec::new();
        for i in 0..6u32 {
            let guest = slow_responder(&format!("p{i}"), (6 - i) * 200_000);
            let id = host
                .load(&guest.wasm(), &format!("p{i}.wasm"), Some("{}"))
                .expect("loads");
            ids.push(id);
        }
        let mut flaky = Guest::new("flaky");
        flaky.on_batch = "unreachable".into();
        let flaky = host.load(&flaky.wasm(), "flaky.wasm", None).expect("loads");
        let mut rounds = Vec::new();
        for _ in 0..4 {
            let breaches: Vec<String> = host
                .dispatch(&flows(3))
                .into_iter()
                .map(|e| e.plugin)
                .collect();
            let actions: Vec<String> = host.take_actions().into_iter().map(|a| a.plugin).collect();
            rounds.push((breaches, actions));
        }
        let loaded: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
        for (breaches, actions) in &rounds {
            assert_eq!(
                breaches, &loaded,
                "{threads} threads: breaches in plugin order"
            );
            assert_eq!(
                actions, &loaded,
                "{threads} threads: actions in plugin order"
            );
        }
        // The trapping plugin failed every batch and was quarantined after the third, alone.
        let f = status(&host, flaky);
        assert_eq!(
            (f.stats.batches, f.stats.traps, f.quarantined),
            (3, 3, true)
        );
        for id in ids {
            let s = status(&host, id);
            assert_eq!(
                (s.stats.batches, s.stats.breaches, s.quarantined),
                (4, 4, false)
            );
        }
    }
}
