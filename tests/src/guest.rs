//! Hand-written ABI v1 guest modules (WAT) for tests of the host: hostile ones, and stand-ins
//! that claim a real plugin's manifest.

use vigil_plugin_sdk::abi;

/// A postcard `Manifest` (name, version, kind, subscriptions, default config), encoded by hand so
/// the hostile modules do not depend on the SDK's encoder: strings are a varint length and bytes,
/// the kind is its variant index (0 = detector), the subscriptions a varint bit mask (1 = flows).
pub fn manifest_bytes(name: &str) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        assert!(s.len() < 128, "one-byte varint");
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
    let mut out = Vec::new();
    string(&mut out, name);
    string(&mut out, "0.0.1");
    out.push(0);
    out.push(1);
    string(&mut out, "{}");
    out
}

/// An ABI v1 module with this (postcard) manifest whose exports behave, except for the bodies
/// given: `abi_body` is
/// `vigil_abi`'s and `on_batch` is `vigil_on_batch`'s (params `$p $l`, result i32). `imports` goes
/// first. The module keeps an `i64` of state (`$state`) that `vigil_snapshot` and
/// `vigil_restore` carry as 8 little-endian bytes.
pub fn module(manifest: &[u8], imports: &str, abi_body: &str, on_batch: &str) -> Vec<u8> {
    let restore = "(if (i32.ne (local.get $l) (i32.const 8)) (then (return (i32.const 3))))
    (global.set $state (i64.load (local.get $p)))
    (i32.const 0)";
    build(manifest, imports, abi_body, on_batch, restore)
}

/// A module with this manifest that takes over any learned state and then traps on every batch:
/// a new version of a real plugin that is broken.
pub fn trapping_on_every_batch(manifest: &[u8]) -> Vec<u8> {
    build(
        manifest,
        "",
        &format!("(i32.const {})", abi::abi_version()),
        "unreachable",
        "(i32.const 0)",
    )
}

fn build(manifest: &[u8], imports: &str, abi_body: &str, on_batch: &str, restore: &str) -> Vec<u8> {
    let data: String = manifest.iter().map(|b| format!("\\{b:02x}")).collect();
    let wat = format!(
        r#"(module
  {imports}
  (import "vigil" "emit_breach" (func $emit_breach (param i32 i32)))
  (memory (export "memory") 2)
  (global $state (mut i64) (i64.const 0))
  (data (i32.const 1024) "{data}")
  (func $vigil_abi (export "vigil_abi") (result i32) {abi_body})
  (func $vigil_alloc (export "vigil_alloc") (param i32) (result i32) (i32.const 65536))
  (func $vigil_manifest (export "vigil_manifest") (result i64) (i64.const {packed}))
  (func $vigil_init (export "vigil_init") (param i32 i32) (result i32) (i32.const 0))
  (func $vigil_on_batch (export "vigil_on_batch") (param $p i32) (param $l i32) (result i32)
    {on_batch})
  (func $vigil_snapshot (export "vigil_snapshot") (result i64)
    (i64.store (i32.const 2048) (global.get $state))
    (i64.const {snapshot}))
  (func $vigil_restore (export "vigil_restore") (param $p i32) (param $l i32) (result i32)
    {restore})
)"#,
        packed = abi::pack(1024, manifest.len() as u32),
        snapshot = abi::pack(2048, 8),
    );
    wat::parse_str(&wat).expect("hostile module is valid WAT")
}
