//! The signing workflow through the real `vigil` binary, as a vendor and an operator run it: keys,
//! a root-signed delegation, a bundle of a real built plugin, signing and verification, and the
//! refusals an operator must see (tampered wasm, unsigned, revoked key, config update for code
//! that is not installed).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use vigil_tests::workspace::{module_dir, vigil, vigil_ok, TempDir};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `vigil ARGS`, which must fail; its standard error.
fn refused(args: &[&str]) -> String {
    let out = vigil(args);
    assert!(
        !out.status.success(),
        "vigil {args:?} succeeded:\n{}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// Temporary paths are ASCII: arguments stay plain strings.
fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

fn network_scan_wasm() -> PathBuf {
    module_dir().join("vigil_plugin_network_scan.wasm")
}

/// Keys for a root and a vendor, a trust dir with the root, and delegation v1 letting the
/// vendor ("acme release") sign network-scan for 30 days.
struct Vendor {
    dir: TempDir,
}

impl Vendor {
    fn new(tag: &str) -> Vendor {
        let dir = TempDir::new(tag);
        let vendor = Vendor { dir };
        vigil_ok(&["key", "generate", "--out", s(&vendor.path("root"))]);
        vigil_ok(&["key", "generate", "--out", s(&vendor.path("acme"))]);
        vigil_ok(&[
            "trust",
            "init",
            "--trust",
            s(&vendor.trust()),
            "--root",
            s(&vendor.path("root.pub")),
        ]);
        vendor.delegate(1, &["acme.pub", "acme release", "network-scan"]);
        vendor
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn trust(&self) -> PathBuf {
        self.path("trust")
    }

    /// Writes and installs delegation `version` naming the keys given as (pub file, name,
    /// plugins) triples.
    fn delegate(&self, version: u32, keys: &[&str]) -> String {
        let out = self.path(&format!("delegation-v{version}"));
        let version = version.to_string();
        let mut args: Vec<&str> = vec!["trust", "delegate", "--root-key"];
        let root = self.path("root");
        args.extend([s(&root), "--version", &version]);
        args.extend(["--days", "30", "--out", s(&out)]);
        let pubs: Vec<PathBuf> = keys.chunks(3).map(|k| self.path(k[0])).collect();
        for (key, pub_file) in keys.chunks(3).zip(&pubs) {
            args.extend(["--key", s(pub_file), "--name", key[1], "--plugins", key[2]]);
        }
        vigil_ok(&args);
        vigil_ok(&["trust", "install", "--trust", s(&self.trust()), s(&out)])
    }

    fn build(&self, out: &Path) -> String {
        vigil_ok(&[
            "bundle",
            "build",
            "--wasm",
            s(&network_scan_wasm()),
            "--out",
            s(out),
        ])
    }

    fn sign(&self, key: &str, bundle: &Path) -> String {
        vigil_ok(&["bundle", "sign", "--key", s(&self.path(key)), s(bundle)])
    }

    fn verify(&self, bundle: &Path) -> Output {
        vigil(&["bundle", "verify", "--trust", s(&self.trust()), s(bundle)])
    }
}

#[test]
fn signed_plugin_bundle_verifies_and_a_flipped_wasm_byte_is_refused() {
    let vendor = Vendor::new("bundle-cli");
    for secret in ["root", "acme"] {
        let mode = std::fs::metadata(vendor.path(secret))
            .expect("secret key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}: mode {mode:o}");
    }
    // A key file is never overwritten.
    let again = refused(&["key", "generate", "--out", s(&vendor.path("acme"))]);
    assert!(again.contains("already exists"), "{again}");

    let bundle = vendor.path("network-scan.vbundle");
    let built = vendor.build(&bundle);
    assert!(
        built.contains("built network-scan 0.1.0 (plugin)"),
        "{built}"
    );

    let unsigned = vendor.verify(&bundle);
    assert!(!unsigned.status.success());
    assert!(
        text(&unsigned.stderr).contains("REFUSED: the bundle is not signed"),
        "{}",
        text(&unsigned.stderr)
    );

    vendor.sign("acme", &bundle);
    let verified = vendor.verify(&bundle);
    assert!(verified.status.success(), "{}", text(&verified.stderr));
    let acme = std::fs::read_to_string(vendor.path("acme.pub")).expect("acme.pub");
    let acme_hex = acme.split_whitespace().nth(1).expect("key hex");
    assert_eq!(
        text(&verified.stdout).trim(),
        format!(
            "OK: network-scan 0.1.0 (plugin), signed by acme release (key {acme_hex}) under delegation v1"
        )
    );

    let inspected = vigil_ok(&["bundle", "inspect", s(&bundle)]);
    assert!(
        inspected.starts_with("network-scan 0.1.0 (plugin)\n"),
        "{inspected}"
    );
    assert!(
        inspected.contains("subscriptions  flow, tick"),
        "{inspected}"
    );
    assert!(inspected.contains("(matches the manifest)"), "{inspected}");
    assert!(
        inspected.contains(&format!("key {acme_hex}  valid signature")),
        "{inspected}"
    );

    // One byte of the code, in the middle of the wasm as it sits in the file.
    let wasm = std::fs::read(network_scan_wasm()).expect("plugin wasm");
    let mut bytes = std::fs::read(&bundle).expect("bundle");
    let at = bytes
        .windows(wasm.len())
        .position(|w| w == wasm.as_slice())
        .expect("the bundle carries the wasm verbatim");
    bytes[at + wasm.len() / 2] ^= 0x01;
    let tampered = vendor.path("tampered.vbundle");
    std::fs::write(&tampered, &bytes).expect("write");
    let out = vendor.verify(&tampered);
    assert!(!out.status.success(), "a tampered bundle verified");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("REFUSED: the wasm was changed after signing"),
        "{stderr}"
    );
    let inspected = vigil_ok(&["bundle", "inspect", s(&tampered)]);
    assert!(
        inspected.contains("DOES NOT MATCH the manifest"),
        "{inspected}"
    );
    // And signing it anew is refused too: the vendor's tool does not bless damage.
    let resign = refused(&[
        "bundle",
        "sign",
        "--key",
        s(&vendor.path("acme")),
        s(&tampered),
    ]);
    assert!(
        resign.contains("refusing to sign a damaged bundle"),
        "{resign}"
    );
}

#[test]
fn revoked_key_and_config_update_for_code_not_installed_are_refused() {
    let vendor = Vendor::new("bundle-cli-revoke");
    vigil_ok(&["key", "generate", "--out", s(&vendor.path("acme2"))]);
    let bundle = vendor.path("network-scan.vbundle");
    vendor.build(&bundle);
    vendor.sign("acme", &bundle);

    // A model update: new thresholds for the same code.
    let config = vendor.path("config.json");
    std::fs::write(&config, r#"{"threshold": 50}"#).expect("config");
    let update = vendor.path("network-scan-config.vbundle");
    let built = vigil_ok(&[
        "bundle",
        "build",
        "--config-update",
        "--for",
        s(&bundle),
        "--config",
        s(&config),
        "--version",
        "0.1.1",
        "--out",
        s(&update),
    ]);
    assert!(
        built.contains("built network-scan 0.1.1 (config update)"),
        "{built}"
    );
    vendor.sign("acme", &update);
    let inspected = vigil_ok(&["bundle", "inspect", s(&update)]);
    assert!(
        inspected.contains(r#"config         {"threshold": 50}"#),
        "{inspected}"
    );
    // Nothing is installed in this trust dir, so the update has nothing to apply to.
    let out = vendor.verify(&update);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("which is not installed"),
        "{}",
        text(&out.stderr)
    );

    // Rotation: v2 names only the new key; the old key's bundles are refused as revoked.
    vendor.delegate(2, &["acme2.pub", "acme 2027", "*"]);
    let out = vendor.verify(&bundle);
    assert!(
        !out.status.success(),
        "a bundle signed by a revoked key verified"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "(acme release), which was revoked: delegation v1 named it, the installed v2 does not"
        ),
        "{stderr}"
    );
    vendor.sign("acme2", &bundle);
    assert!(vendor.verify(&bundle).status.success());

    // The old delegation cannot be installed again.
    let replay = refused(&[
        "trust",
        "install",
        "--trust",
        s(&vendor.trust()),
        s(&vendor.path("delegation-v1")),
    ]);
    assert!(
        replay.contains("delegation v1 is older than the installed v2"),
        "{replay}"
    );

    let shown = vigil_ok(&["trust", "show", "--trust", s(&vendor.trust())]);
    assert!(shown.contains("delegation v2, expires"), "{shown}");
    assert!(shown.contains("acme 2027"), "{shown}");
    assert!(shown.contains("acme release ("), "{shown}");
    assert!(shown.contains("last in delegation v1"), "{shown}");
}
