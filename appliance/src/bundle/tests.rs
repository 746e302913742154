//! Every refusal of the verifier and the trust store, and the paths that succeed, with real
//! ed25519 signatures over real encoded bytes. Keys come from fixed seeds so runs repeat.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use vigil_plugin_sdk::abi::ABI_MAJOR;
use vigil_plugin_sdk::{EventClass, FlowFilter, PluginKind, Subscriptions, Transport};

use super::format::{sha256, BUNDLE_MAGIC, FORMAT_VERSION};
use super::keys::{generate_key_files, public_path};
use super::text::{format_time, parse_date};
use super::*;

/// 2026-01-01T00:00:00Z: "now" in these tests.
const NOW: u64 = 1_767_225_600;
const DAY: u64 = 86_400;
const YEAR: u64 = 365 * DAY;

/// A minimal valid wasm module: what the library carries is bytes, whatever they are.
const WASM: &[u8] = b"\0asm\x01\0\0\0";

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("vigil-bundle-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed(&[seed; 32])
}

fn root() -> SecretKey {
    key(1)
}

fn vendor() -> SecretKey {
    key(2)
}

fn manifest(name: &str, version: &str) -> BundleManifest {
    BundleManifest {
        name: name.into(),
        version: version.parse().expect("version"),
        abi: ABI_MAJOR,
        kind: PluginKind::Detector,
        subscriptions: Subscriptions::NONE.with(EventClass::Flow),
        filter: FlowFilter::ANY,
        limits: Limits::default(),
        default_config: r#"{"threshold":30}"#.into(),
        payload: Payload::Plugin {
            wasm_sha256: [0; 32],
        },
    }
}

fn delegated(key: &SecretKey, name: &str, plugins: &[&str], expires: u64) -> DelegatedKey {
    DelegatedKey {
        public: *key.public().as_bytes(),
        name: name.into(),
        plugins: plugins.iter().map(|p| p.to_string()).collect(),
        expires,
    }
}

fn delegation_file(version: u64, expires: u64, keys: Vec<DelegatedKey>, by: &SecretKey) -> Vec<u8> {
    let delegation = Delegation {
        version,
        expires,
        keys,
    };
    SignedDelegation::sign(delegation, by)
        .expect("sign")
        .encode()
        .expect("encode")
}

/// A trust dir with `root()` installed and delegation v1: `vendor()` may sign network-scan for a
/// year.
fn trust_dir(tag: &str) -> (TempDir, TrustStore) {
    let dir = TempDir::new(tag);
    let (mut store, added) = TrustStore::init(dir.path(), &root().public()).expect("init");
    assert!(added);
    let v1 = delegation_file(
        1,
        NOW + YEAR,
        vec![delegated(
            &vendor(),
            "acme release",
            &["network-scan"],
            NOW + YEAR,
        )],
        &root(),
    );
    assert_eq!(
        store.install_delegation(&v1, NOW).expect("install v1"),
        Installed::New { previous: None }
    );
    (dir, store)
}

fn signed(manifest: BundleManifest, wasm: &[u8], signers: &[&SecretKey]) -> Vec<u8> {
    let mut bundle = Bundle::plugin(manifest, wasm.to_vec());
    for signer in signers {
        bundle.sign(signer).expect("sign");
    }
    bundle.encode().expect("encode")
}

fn check(store: &TrustStore, bytes: &[u8]) -> Result<VerifiedBundle, BundleError> {
    verify(
        bytes,
        store,
        &InstalledVersions::in_memory(),
        &VerifyLimits::default(),
        NOW,
    )
}

#[test]
fn bundle_signed_by_a_delegated_key_verifies() {
    let (_dir, store) = trust_dir("happy");
    let bytes = signed(manifest("network-scan", "1.0.0"), WASM, &[&vendor()]);
    let verified = check(&store, &bytes).expect("verifies");
    assert_eq!(verified.manifest.name, "network-scan");
    assert_eq!(verified.manifest.version, Version::new(1, 0, 0));
    assert_eq!(
        verified.manifest.payload,
        Payload::Plugin {
            wasm_sha256: sha256(WASM)
        }
    );
    assert_eq!(verified.wasm, WASM);
    assert_eq!(
        verified.signer,
        Signer {
            key: vendor().public(),
            name: "acme release".into(),
            delegation_version: 1,
        }
    );
}

#[test]
fn bundle_over_the_size_limit_is_refused_before_parsing() {
    let (_dir, store) = trust_dir("large");
    let bytes = signed(manifest("network-scan", "1.0.0"), &[7; 4096], &[&vendor()]);
    let limits = VerifyLimits {
        max_bundle_bytes: 1024,
    };
    let err = verify(
        &bytes,
        &store,
        &InstalledVersions::in_memory(),
        &limits,
        NOW,
    )
    .expect_err("too large");
    assert_eq!(
        err,
        BundleError::TooLarge {
            size: bytes.len() as u64,
            limit: 1024
        }
    );
    // Not even the magic is looked at.
    let err = verify(
        &[0; 2048],
        &store,
        &InstalledVersions::in_memory(),
        &limits,
        NOW,
    )
    .expect_err("too large");
    assert!(matches!(err, BundleError::TooLarge { size: 2048, .. }));
}

#[test]
fn malformed_bundles_are_refused_with_the_reason() {
    let (_dir, store) = trust_dir("malformed");
    let good = signed(manifest("network-scan", "1.0.0"), WASM, &[&vendor()]);
    let malformed = |bytes: &[u8]| match check(&store, bytes) {
        Err(BundleError::Malformed(reason)) => reason,
        other => panic!("expected a malformed bundle, got {other:?}"),
    };

    assert!(matches!(malformed(b""), FormatError::BadMagic { .. }));
    assert!(matches!(
        malformed(b"\0asm\x01\0\0\0\0\0\0\0"),
        FormatError::BadMagic { .. }
    ));
    let mut other_version = good.clone();
    other_version[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    assert_eq!(
        malformed(&other_version),
        FormatError::UnsupportedVersion {
            what: "bundle",
            found: FORMAT_VERSION + 1,
            reads: FORMAT_VERSION,
        }
    );
    for cut in [10, 11, good.len() / 2, good.len() - 1] {
        assert!(
            matches!(malformed(&good[..cut]), FormatError::Decode { .. }),
            "cut at {cut}"
        );
    }
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"xx");
    assert_eq!(
        malformed(&trailing),
        FormatError::TrailingBytes {
            what: "bundle",
            count: 2
        }
    );
    // The name's length (12) as an overlong varint: same value, different bytes.
    let at = 10;
    assert_eq!(good[at], 12, "the manifest starts with the name's length");
    let mut overlong = good[..at].to_vec();
    overlong.extend_from_slice(&[0x80 | 12, 0x00]);
    overlong.extend_from_slice(&good[at + 1..]);
    assert_eq!(
        malformed(&overlong),
        FormatError::NotCanonical { what: "bundle" }
    );
    assert!(good.starts_with(&BUNDLE_MAGIC));
}

#[test]
fn unsigned_bundle_is_refused() {
    let (_dir, store) = trust_dir("unsigned");
    let bytes = signed(manifest("network-scan", "1.0.0"), WASM, &[]);
    assert_eq!(
        check(&store, &bytes).expect_err("unsigned"),
        BundleError::Unsigned
    );
}

#[test]
fn a_format_1_bundle_signed_before_filters_still_verifies_and_runs_unfiltered() {
    let (_dir, store) = trust_dir("format-1");
    let mut bundle = Bundle::plugin(manifest("network-scan", "1.0.0"), WASM.to_vec());
    bundle.legacy = true;
    bundle.sign(&vendor()).expect("sign");
    let bytes = bundle.encode().expect("encode");
    assert_eq!(bytes[8..10], 1u16.to_le_bytes());
    let verified = check(&store, &bytes).expect("a format 1 bundle verifies");
    assert_eq!(verified.manifest.filter, FlowFilter::ANY);
    // Its signature is over the format 1 manifest: the same signature on a format 2 file
    // (which signs the filter too) does not verify.
    let mut as_format_2 = Bundle::decode(&bytes, u64::MAX).expect("decode");
    as_format_2.legacy = false;
    let moved = as_format_2.encode().expect("encode");
    assert_eq!(
        check(&store, &moved).expect_err("other format"),
        BundleError::SignatureMismatch {
            key: vendor().public()
        }
    );
}

#[test]
fn the_event_filter_is_signed() {
    let (_dir, store) = trust_dir("filter-signed");
    let mut rdp = manifest("rdp-scan", "1.0.0");
    rdp.filter = FlowFilter::ANY.transport(Transport::Tcp).port(3389);
    let bytes = signed(rdp, WASM, &[&vendor()]);
    let mut bundle = Bundle::decode(&bytes, u64::MAX).expect("decode");
    assert_eq!(bundle.manifest.filter.ports(), [3389]);
    bundle.manifest.filter = FlowFilter::ANY.transport(Transport::Tcp).port(445);
    let tampered = bundle.encode().expect("encode");
    assert_eq!(
        check(&store, &tampered).expect_err("tampered"),
        BundleError::SignatureMismatch {
            key: vendor().public()
        }
    );
}

#[test]
fn manifest_changed_after_signing_is_a_signature_mismatch() {
    let (_dir, store) = trust_dir("tampered-manifest");
    let bytes = signed(manifest("network-scan", "1.0.0"), WASM, &[&vendor()]);
    let mut bundle = Bundle::decode(&bytes, u64::MAX).expect("decode");
    bundle.manifest.default_config = r#"{"threshold":100000}"#.into();
    let tampered = bundle.encode().expect("encode");
    assert_eq!(
        check(&store, &tampered).expect_err("tampered"),
        BundleError::SignatureMismatch {
            key: vendor().public()
        }
    );
}

#[test]
fn wasm_changed_after_signing_is_a_wasm_digest_mismatch() {
    let (_dir, store) = trust_dir("tampered-wasm");
    let bytes = signed(manifest("network-scan", "1.0.0"), WASM, &[&vendor()]);
    let mut bundle = Bundle::decode(&bytes, u64::MAX).expect("decode");
    bundle.wasm[4] ^= 1;
    let found = sha256(&bundle.wasm);
    let tampered = bundle.encode().expect("encode");
    let err = check(&store, &tampered).expect_err("tampered");
    assert_eq!(
        err,
        BundleError::WasmDigestMismatch {
            expected: sha256(WASM),
            found
        }
    );
    assert!(err
        .to_string()
        .starts_with("the wasm was changed after signing"));
}

#[test]
fn bundle_signed_by_an_unknown_key_is_refused() {
    let (_dir, store) = trust_dir("unknown");
    let stranger = key(9);
    let bytes = signed(manifest("network-scan", "1.0.0"), WASM, &[&stranger]);
    assert_eq!(
        check(&store, &bytes).expect_err("unknown"),
        BundleError::UnknownKey {
            key: stranger.public(),
            delegation_version: 1
        }
    );
}

#[test]
fn no_delegation_trusts_no_key() {
    let dir = TempDir::new("no-delegation");
    let (store, _) = TrustStore::init(dir.path(), &root().public()).expect("init");
    let bytes = signed(manifest("network-scan", "1.0.0"), WASM, &[&vendor()]);
    assert_eq!(
        check(&store, &bytes).expect_err("no delegation"),
        BundleError::NoDelegation
    );
}

#[test]
fn key_dropped_from_a_newer_delegation_is_revoked() {
    let (_dir, mut store) = trust_dir("revoked");
    let bytes = signed(manifest("network-scan", "1.0.0"), WASM, &[&vendor()]);
    check(&store, &bytes).expect("trusted under v1");
    let v2 = delegation_file(
        2,
        NOW + YEAR,
        vec![delegated(&key(3), "acme 2027", &["*"], NOW + YEAR)],
        &root(),
    );
    store.install_delegation(&v2, NOW).expect("install v2");
    let revoked = BundleError::KeyRevoked {
        key: vendor().public(),
        name: "acme release".into(),
        last_version: 1,
        delegation_version: 2,
    };
    assert_eq!(check(&store, &bytes).expect_err("revoked"), revoked);
    // The history is on disk: a restarted appliance still says why.
    let reopened = TrustStore::open(store.dir()).expect("reopen");
    assert_eq!(check(&reopened, &bytes).expect_err("revoked"), revoked);
}

#[test]
fn rotation_moves_trust_to_the_new_key() {
    let (_dir, mut store) = trust_dir("rotation");
    let (old, new) = (vendor(), key(3));
    let v2 = delegation_file(
        2,
        NOW + 2 * YEAR,
        vec![
            delegated(&old, "acme release", &["network-scan"], NOW + 30 * DAY),
            delegated(&new, "acme release 2027", &["network-scan"], NOW + 2 * YEAR),
        ],
        &root(),
    );
    assert_eq!(
        store.install_delegation(&v2, NOW).expect("v2"),
        Installed::New { previous: Some(1) }
    );
    let by_new = signed(manifest("network-scan", "1.1.0"), WASM, &[&new]);
    let verified = check(&store, &by_new).expect("new key trusted");
    assert_eq!(verified.signer.name, "acme release 2027");
    assert_eq!(verified.signer.delegation_version, 2);
    // The old key overlaps for a month, then its signatures stop counting.
    let by_old = signed(manifest("network-scan", "1.1.0"), WASM, &[&old]);
    check(&store, &by_old).expect("old key still trusted during the overlap");
    let later = NOW + 31 * DAY;
    let err = verify_signed(&by_old, &store, &VerifyLimits::default(), later)
        .expect_err("old key expired");
    assert!(matches!(err, BundleError::KeyExpired { .. }), "{err:?}");
    verify_signed(&by_new, &store, &VerifyLimits::default(), later).expect("new key");
}

#[test]
fn expired_key_is_refused() {
    let (_dir, mut store) = trust_dir("key-expired");
    let v2 = delegation_file(
        2,
        NOW + YEAR,
        vec![delegated(&vendor(), "acme release", &["*"], NOW)],
        &root(),
    );
    store.install_delegation(&v2, NOW - 1).expect("v2");
    let bytes = signed(manifest("network-scan", "1.0.0"), WASM, &[&vendor()]);
    let err = check(&store, &bytes).expect_err("expired");
    assert_eq!(
        err,
        BundleError::KeyExpired {
            key: vendor().public(),
            name: "acme release".into(),
            expires: NOW
        }
    );
    assert!(
        err.to_string()
            .ends_with("expired at 2026-01-01 00:00:00 UTC"),
        "{err}"
    );
}

#[test]
fn expired_delegation_is_refused() {
    let (_dir, store) = trust_dir("delegation-expired");
    let bytes = signed(manifest("network-scan", "1.0.0"), WASM, &[&vendor()]);
    let err =
        verify_signed(&bytes, &store, &VerifyLimits::default(), NOW + YEAR).expect_err("expired");
    assert_eq!(
        err,
        BundleError::DelegationExpired {
            version: 1,
            expires: NOW + YEAR
        }
    );
}

#[test]
fn key_may_only_sign_the_plugins_it_was_delegated() {
    let (_dir, mut store) = trust_dir("scope");
    let bytes = signed(manifest("smb-scan", "1.0.0"), WASM, &[&vendor()]);
    assert_eq!(
        check(&store, &bytes).expect_err("out of scope"),
        BundleError::OutOfScope {
            key: vendor().public(),
            name: "acme release".into(),
            plugin: "smb-scan".into(),
            allowed: vec!["network-scan".into()],
        }
    );
    let v2 = delegation_file(
        2,
        NOW + YEAR,
        vec![delegated(&vendor(), "acme release", &["*"], NOW + YEAR)],
        &root(),
    );
    store.install_delegation(&v2, NOW).expect("v2");
    check(&store, &bytes).expect("`*` allows any plugin");
}

#[test]
fn bundle_for_another_abi_is_refused() {
    let (_dir, store) = trust_dir("abi");
    let mut other = manifest("network-scan", "1.0.0");
    other.abi = ABI_MAJOR + 1;
    let bytes = signed(other, WASM, &[&vendor()]);
    assert_eq!(
        check(&store, &bytes).expect_err("abi"),
        BundleError::AbiMismatch {
            found: ABI_MAJOR + 1,
            expected: ABI_MAJOR
        }
    );
}

#[test]
fn signed_manifest_breaking_the_rules_is_refused() {
    let (_dir, mut store) = trust_dir("invalid");
    let v2 = delegation_file(
        2,
        NOW + YEAR,
        vec![delegated(&vendor(), "acme release", &["*"], NOW + YEAR)],
        &root(),
    );
    store.install_delegation(&v2, NOW).expect("v2");
    let mut bad_config = manifest("network-scan", "1.0.0");
    bad_config.default_config = "{threshold: 30".into();
    let err = check(&store, &signed(bad_config, WASM, &[&vendor()])).expect_err("config");
    assert!(
        matches!(&err, BundleError::InvalidManifest(m) if m.starts_with("default config is not JSON")),
        "{err:?}"
    );
    let bad_name = manifest("../etc/passwd", "1.0.0");
    let err = check(&store, &signed(bad_name, WASM, &[&vendor()])).expect_err("name");
    assert!(matches!(err, BundleError::InvalidManifest(_)), "{err:?}");
}

#[test]
fn version_not_above_the_highest_ever_installed_is_a_rollback() {
    let (dir, store) = trust_dir("rollback");
    let versions_path = dir.path().join("versions.json");
    let mut installed = InstalledVersions::open(&versions_path).expect("open");
    let v120 = signed(manifest("network-scan", "1.2.0"), WASM, &[&vendor()]);
    let accepted =
        verify(&v120, &store, &installed, &VerifyLimits::default(), NOW).expect("first install");
    installed
        .record_install(&accepted.manifest)
        .expect("record");

    for (older, label) in [
        ("1.2.0", "same"),
        ("1.1.9", "older"),
        ("0.9.0", "older major"),
    ] {
        let bytes = signed(manifest("network-scan", older), WASM, &[&vendor()]);
        assert_eq!(
            verify(&bytes, &store, &installed, &VerifyLimits::default(), NOW).expect_err(label),
            BundleError::Rollback {
                name: "network-scan".into(),
                version: older.parse().expect("version"),
                highest: Version::new(1, 2, 0),
            },
            "{label}"
        );
    }

    // Removing the plugin and restarting does not lower the mark.
    installed.record_removal("network-scan").expect("remove");
    let reopened = InstalledVersions::open(&versions_path).expect("reopen");
    assert_eq!(reopened.installed("network-scan"), None);
    assert_eq!(
        reopened.highest("network-scan"),
        Some(Version::new(1, 2, 0))
    );
    let v110 = signed(manifest("network-scan", "1.1.0"), WASM, &[&vendor()]);
    assert!(matches!(
        verify(&v110, &store, &reopened, &VerifyLimits::default(), NOW),
        Err(BundleError::Rollback { .. })
    ));
    let v121 = signed(manifest("network-scan", "1.2.1"), WASM, &[&vendor()]);
    verify(&v121, &store, &reopened, &VerifyLimits::default(), NOW).expect("newer");
}

fn config_update(name: &str, version: &str, target: [u8; 32], config: &str) -> Bundle {
    let mut update = manifest(name, version);
    update.default_config = config.into();
    let mut bundle = Bundle::config_update(update, target);
    bundle.sign(&vendor()).expect("sign");
    bundle
}

#[test]
fn config_update_applies_to_the_installed_wasm() {
    let (_dir, store) = trust_dir("config-update");
    let mut installed = InstalledVersions::in_memory();
    let plugin = signed(manifest("network-scan", "1.0.0"), WASM, &[&vendor()]);
    let plugin =
        verify(&plugin, &store, &installed, &VerifyLimits::default(), NOW).expect("plugin");
    installed.record_install(&plugin.manifest).expect("record");

    let update = config_update("network-scan", "1.0.1", sha256(WASM), r#"{"threshold":50}"#)
        .encode()
        .expect("encode");
    let verified =
        verify(&update, &store, &installed, &VerifyLimits::default(), NOW).expect("update");
    assert!(verified.manifest.payload.is_config_update());
    assert!(verified.wasm.is_empty());
    assert_eq!(verified.manifest.default_config, r#"{"threshold":50}"#);
    installed
        .record_install(&verified.manifest)
        .expect("record");
    assert_eq!(
        installed.installed("network-scan"),
        Some(InstalledPlugin {
            version: Version::new(1, 0, 1),
            wasm_sha256: sha256(WASM)
        })
    );
    // Replaying the update is a rollback like any other.
    assert!(matches!(
        verify(&update, &store, &installed, &VerifyLimits::default(), NOW),
        Err(BundleError::Rollback { .. })
    ));
}

#[test]
fn config_update_for_a_wasm_that_is_not_installed_is_refused() {
    let (_dir, store) = trust_dir("config-target");
    let mut installed = InstalledVersions::in_memory();
    let other = sha256(b"another build");
    let update = config_update("network-scan", "1.0.1", other, "{}")
        .encode()
        .expect("encode");
    assert_eq!(
        verify(&update, &store, &installed, &VerifyLimits::default(), NOW)
            .expect_err("nothing installed"),
        BundleError::ConfigTargetNotInstalled {
            name: "network-scan".into(),
            target: other,
            installed: None
        }
    );
    let plugin = signed(manifest("network-scan", "1.0.0"), WASM, &[&vendor()]);
    let plugin =
        verify(&plugin, &store, &installed, &VerifyLimits::default(), NOW).expect("plugin");
    installed.record_install(&plugin.manifest).expect("record");
    assert_eq!(
        verify(&update, &store, &installed, &VerifyLimits::default(), NOW)
            .expect_err("other wasm installed"),
        BundleError::ConfigTargetNotInstalled {
            name: "network-scan".into(),
            target: other,
            installed: Some(sha256(WASM))
        }
    );
}

#[test]
fn config_update_smuggling_wasm_is_refused() {
    let (_dir, store) = trust_dir("config-wasm");
    let mut update = config_update("network-scan", "1.0.1", sha256(WASM), "{}");
    update.wasm = WASM.to_vec();
    let bytes = update.encode().expect("encode");
    assert_eq!(
        check(&store, &bytes).expect_err("wasm in a config update"),
        BundleError::UnexpectedWasm { len: WASM.len() }
    );
}

#[test]
fn the_most_telling_refusal_of_several_signatures_is_reported() {
    let (_dir, store) = trust_dir("several");
    let bytes = signed(
        manifest("network-scan", "1.0.0"),
        WASM,
        &[&key(9), &vendor()],
    );
    assert_eq!(
        check(&store, &bytes)
            .expect("one trusted signature suffices")
            .signer
            .name,
        "acme release"
    );

    let mut bundle = Bundle::decode(&bytes, u64::MAX).expect("decode");
    bundle.manifest.limits.memory_bytes *= 4;
    let err = check(&store, &bundle.encode().expect("encode")).expect_err("tampered");
    assert_eq!(
        err,
        BundleError::SignatureMismatch {
            key: key(9).public()
        }
    );
}

#[test]
fn signing_again_with_the_same_key_replaces_its_signature() {
    let mut bundle = Bundle::plugin(manifest("network-scan", "1.0.0"), WASM.to_vec());
    assert!(!bundle.sign(&vendor()).expect("sign"));
    assert!(bundle.sign(&vendor()).expect("sign again"));
    bundle.sign(&key(3)).expect("co-sign");
    assert_eq!(bundle.signatures.len(), 2);
    let checked = bundle.check_signatures().expect("check");
    assert_eq!(
        checked,
        vec![(vendor().public(), true), (key(3).public(), true)]
    );
}

#[test]
fn older_delegation_is_refused_as_a_replay() {
    let (_dir, mut store) = trust_dir("replay");
    let v1 = delegation_file(
        1,
        NOW + YEAR,
        vec![delegated(
            &vendor(),
            "acme release",
            &["network-scan"],
            NOW + YEAR,
        )],
        &root(),
    );
    assert_eq!(
        store.install_delegation(&v1, NOW).expect("same again"),
        Installed::Unchanged
    );
    let v3 = delegation_file(3, NOW + YEAR, vec![], &root());
    store
        .install_delegation(&v3, NOW)
        .expect("v3 revokes every key");

    let reopened = &mut TrustStore::open(store.dir()).expect("reopen");
    let v2 = delegation_file(
        2,
        NOW + YEAR,
        vec![delegated(&vendor(), "x", &["*"], NOW + YEAR)],
        &root(),
    );
    for (old, found) in [(&v1, 1), (&v2, 2)] {
        assert!(matches!(
            reopened.install_delegation(old, NOW),
            Err(TrustError::Replay { found: f, current: 3 }) if f == found
        ));
    }
    let other_v3 = delegation_file(3, NOW + 2 * YEAR, vec![], &root());
    assert!(matches!(
        reopened.install_delegation(&other_v3, NOW),
        Err(TrustError::Conflict { version: 3 })
    ));
    assert_eq!(reopened.delegation().map(|d| d.version), Some(3));
}

#[test]
fn delegation_needs_a_valid_root_signature() {
    let (_dir, mut store) = trust_dir("root-signature");
    let keys = vec![delegated(&key(9), "mallory", &["*"], NOW + YEAR)];
    let by_stranger = delegation_file(2, NOW + YEAR, keys.clone(), &vendor());
    assert!(matches!(
        store.install_delegation(&by_stranger, NOW),
        Err(TrustError::NotSignedByRoot { .. })
    ));

    let mut forged =
        SignedDelegation::decode(&delegation_file(2, NOW + YEAR, vec![], &root())).expect("decode");
    forged.delegation.keys = keys;
    let forged = forged.encode().expect("encode");
    assert!(matches!(
        store.install_delegation(&forged, NOW),
        Err(TrustError::BadRootSignature { key }) if key == root().public()
    ));

    let mut unsigned = SignedDelegation::decode(&by_stranger).expect("decode");
    unsigned.signatures.clear();
    assert!(matches!(
        store.install_delegation(&unsigned.encode().expect("encode"), NOW),
        Err(TrustError::Unsigned)
    ));
    assert!(matches!(
        store.install_delegation(b"VIGILBDL\x01\0", NOW),
        Err(TrustError::Malformed(FormatError::BadMagic { .. }))
    ));
    assert_eq!(
        store.delegation().map(|d| d.version),
        Some(1),
        "nothing changed"
    );
}

#[test]
fn expired_or_invalid_delegation_is_not_installed() {
    let (_dir, mut store) = trust_dir("delegation-install");
    let expired = delegation_file(2, NOW, vec![], &root());
    assert!(matches!(
        store.install_delegation(&expired, NOW),
        Err(TrustError::Expired {
            version: 2,
            expires: NOW
        })
    ));
    let twice = delegation_file(
        2,
        NOW + YEAR,
        vec![
            delegated(&vendor(), "a", &["*"], NOW + YEAR),
            delegated(&vendor(), "b", &["*"], NOW + YEAR),
        ],
        &root(),
    );
    assert!(matches!(
        store.install_delegation(&twice, NOW),
        Err(TrustError::Invalid { version: 2, .. })
    ));
}

#[test]
fn trust_dir_must_be_initialised() {
    let dir = TempDir::new("not-init");
    assert!(matches!(
        TrustStore::open(dir.path()),
        Err(TrustError::Store(StoreError::NotInitialised { .. }))
    ));
    let (mut store, added) = TrustStore::init(dir.path(), &root().public()).expect("init");
    assert!(added);
    assert!(
        !store.add_root(&root().public()).expect("again"),
        "idempotent"
    );
    store.add_root(&key(5).public()).expect("second root");
    let reopened = TrustStore::open(dir.path()).expect("open");
    let mut expected = vec![root().public(), key(5).public()];
    expected.sort();
    assert_eq!(reopened.roots(), expected.as_slice());
}

#[test]
fn generated_secret_key_is_private_and_never_overwritten() {
    let dir = TempDir::new("keys");
    let out = dir.path().join("signer");
    let public = generate_key_files(&out).expect("generate");
    let mode = std::fs::metadata(&out)
        .expect("secret")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        PublicKey::read(&public_path(&out)).expect("read pub"),
        public
    );
    assert_eq!(SecretKey::read(&out).expect("read secret").public(), public);
    assert!(matches!(
        generate_key_files(&out),
        Err(KeyError::Exists { .. })
    ));
    assert!(matches!(
        PublicKey::read(&out),
        Err(KeyError::SecretGiven { .. })
    ));
    assert!(matches!(
        SecretKey::read(&public_path(&out)),
        Err(KeyError::PublicGiven { .. })
    ));
    let garbage = dir.path().join("garbage.pub");
    std::fs::write(&garbage, "vigil-ed25519-public 1234\n").expect("write");
    assert!(matches!(
        PublicKey::read(&garbage),
        Err(KeyError::Malformed { .. })
    ));
}

#[test]
fn versions_are_strict_semver_ordered_by_number() {
    let v = |s: &str| s.parse::<Version>();
    assert_eq!(v("1.10.0"), Ok(Version::new(1, 10, 0)));
    assert!(v("1.10.0").expect("v") > v("1.9.9").expect("v"));
    assert!(v("2.0.0").expect("v") > v("1.99.99").expect("v"));
    for bad in [
        "",
        "1",
        "1.2",
        "1.2.3.4",
        "01.2.3",
        "v1.2.3",
        "1.2.3-rc1",
        "1.-2.3",
        " 1.2.3",
    ] {
        assert!(v(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(Version::new(0, 1, 0).to_string(), "0.1.0");
}

#[test]
fn dates_parse_and_print_in_utc() {
    assert_eq!(parse_date("2026-01-01"), Some(NOW));
    assert_eq!(parse_date("1970-01-01"), Some(0));
    assert_eq!(parse_date("2028-02-29"), Some(1_835_395_200));
    for bad in [
        "2027-02-29",
        "2027-13-01",
        "2027-00-10",
        "2027-1-1",
        "27-01-01",
        "tomorrow",
    ] {
        assert_eq!(parse_date(bad), None, "{bad}");
    }
    assert_eq!(format_time(NOW + 3661), "2026-01-01 01:01:01 UTC");
}

/// The decoder fuzz target's seeds (appliance/fuzz/seeds/bundle) are real files of the current
/// format. Run with `VIGIL_WRITE_SEEDS=1` to rewrite them after a format change.
#[test]
fn fuzz_seeds_are_current_bundle_and_delegation_files() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/bundle");
    let plugin = signed(manifest("network-scan", "1.0.0"), WASM, &[&vendor()]);
    let update = config_update("network-scan", "1.0.1", sha256(WASM), r#"{"threshold":50}"#)
        .encode()
        .expect("encode");
    let delegation = delegation_file(
        1,
        NOW + YEAR,
        vec![delegated(
            &vendor(),
            "acme release",
            &["network-scan", "*"],
            NOW + YEAR,
        )],
        &root(),
    );
    let expected = [
        ("plugin-bundle", plugin),
        ("config-update-bundle", update),
        ("delegation", delegation),
    ];
    if std::env::var_os("VIGIL_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(&seeds).expect("seed dir");
        for (name, bytes) in &expected {
            std::fs::write(seeds.join(name), bytes).expect("write seed");
        }
    }
    for (name, bytes) in &expected {
        let found = std::fs::read(seeds.join(name)).expect("seed (VIGIL_WRITE_SEEDS=1 writes it)");
        assert_eq!(
            &found, bytes,
            "seed {name} is stale: rerun with VIGIL_WRITE_SEEDS=1"
        );
    }
}
