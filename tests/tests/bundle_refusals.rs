//! The attack suite against plugin installs, through the real `vigil` binary on an appliance's
//! data dir that has learned a normal week: one case per refusal (unsigned, tampered wasm,
//! tampered manifest, unknown, revoked, expired and out-of-scope keys, ABI mismatch, rollback
//! and reinstalling an old version, a replayed older delegation, too large, malformed). Each must
//! fail with its own message and leave the installed bundles, the version records, the trust
//! store and the learned state byte for byte as they were.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use vigil::bundle::text::unix_now;
use vigil::bundle::{
    Bundle, DelegatedKey, Delegation, PublicKey, SecretKey, SignedDelegation,
    DEFAULT_MAX_BUNDLE_BYTES,
};
use vigil_tests::lab::{committed_labs, fixture};
use vigil_tests::workspace::{build_bundle, plugin_module, tamper_wasm, vigil, vigil_ok, TempDir};

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Every file under `dirs`, by path, with its bytes: what "nothing changed" compares.
fn snapshot(dirs: &[&Path]) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.insert(path.clone(), std::fs::read(&path).expect("readable"));
            }
        }
    }
    let mut out = BTreeMap::new();
    for dir in dirs {
        walk(dir, &mut out);
    }
    out
}

/// The appliance under attack: its keys, trust dir, factory bundles and a data dir that has
/// learned the lab's normal week and has network-scan 0.2.0 installed.
struct Appliance {
    work: TempDir,
}

impl Appliance {
    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    fn key(&self, name: &str) -> PathBuf {
        self.path(&format!("{name}.key"))
    }

    fn plugin_args(&self) -> Vec<String> {
        vec![
            "--data-dir".into(),
            self.path("data").display().to_string(),
            "--plugins".into(),
            self.path("factory").display().to_string(),
            "--trust".into(),
            self.path("trust").display().to_string(),
        ]
    }

    /// `vigil bundle build` of a built plugin at `version`, signed by `signers`.
    fn bundle(&self, plugin: &str, version: &str, signers: &[&str]) -> PathBuf {
        let out = self.path(&format!("{plugin}-{version}-{}.vbundle", signers.join("+")));
        let keys: Vec<PathBuf> = signers.iter().map(|signer| self.key(signer)).collect();
        let keys: Vec<&Path> = keys.iter().map(PathBuf::as_path).collect();
        build_bundle(plugin, version, &keys, &out);
        out
    }

    fn install(&self, bundle: &Path) -> Output {
        self.install_with(bundle, &[])
    }

    fn install_with(&self, bundle: &Path, options: &[&str]) -> Output {
        let mut args: Vec<String> = vec!["plugins".into(), "install".into()];
        args.extend(self.plugin_args());
        args.extend(options.iter().map(|o| o.to_string()));
        args.push(bundle.display().to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        vigil(&args)
    }

    fn state(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        snapshot(&[
            &self.path("data").join("bundles"),
            &self.path("data").join("state"),
            &self.path("trust"),
        ])
    }

    fn new() -> Appliance {
        let appliance = Appliance {
            work: TempDir::new("refusals"),
        };
        let a = &appliance;
        for name in [
            "root", "signer", "stranger", "smb-only", "departed", "lapsed",
        ] {
            vigil_ok(&["key", "generate", "--out", s(&a.key(name))]);
        }
        let trust = a.path("trust");
        vigil_ok(&[
            "trust",
            "init",
            "--trust",
            s(&trust),
            "--root",
            &format!("{}.pub", s(&a.key("root"))),
        ]);
        let delegate = |version: &str, keys: &[(&str, &str)]| {
            let out = a.path(&format!("delegation-{version}.vdlg"));
            let mut args: Vec<String> = [
                "trust",
                "delegate",
                "--root-key",
                s(&a.key("root")),
                "--version",
                version,
                "--days",
                "365",
                "--out",
                s(&out),
            ]
            .map(String::from)
            .to_vec();
            for (key, plugins) in keys {
                args.extend([
                    "--key".into(),
                    format!("{}.pub", s(&a.key(key))),
                    "--name".into(),
                    key.to_string(),
                    "--plugins".into(),
                    plugins.to_string(),
                ]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            vigil_ok(&args);
            out
        };
        let everyone = [("signer", "*"), ("smb-only", "smb-scan"), ("departed", "*")];
        let first = delegate("1", &everyone);
        vigil_ok(&["trust", "install", "--trust", s(&trust), s(&first)]);
        // Version 2 revokes `departed`; `lapsed` is named with an expiry already past (a
        // delegation the CLI cannot write, so it is signed here with the library).
        let root = SecretKey::read(&a.key("root")).expect("root key");
        let public = |name: &str| -> [u8; 32] {
            *PublicKey::read(&PathBuf::from(format!("{}.pub", s(&a.key(name)))))
                .expect("public key")
                .as_bytes()
        };
        let year = unix_now() + 365 * 86_400;
        let key = |name: &str, plugins: &str, expires: u64| DelegatedKey {
            public: public(name),
            name: name.into(),
            plugins: vec![plugins.into()],
            expires,
        };
        let second = SignedDelegation::sign(
            Delegation {
                version: 2,
                expires: year,
                keys: vec![
                    key("signer", "*", year),
                    key("smb-only", "smb-scan", year),
                    key("lapsed", "*", unix_now() - 86_400),
                ],
            },
            &root,
        )
        .expect("signs");
        let second_path = a.path("delegation-2.vdlg");
        std::fs::write(&second_path, second.encode().expect("encodes")).expect("write");
        vigil_ok(&["trust", "install", "--trust", s(&trust), s(&second_path)]);

        // The factory set, signed by the vendor, and a normal week learned with it.
        let factory = a.path("factory");
        std::fs::create_dir_all(&factory).expect("factory dir");
        for plugin in ["network-scan", "ntlm-hostname"] {
            let bundle = a.bundle(plugin, "0.1.0", &["signer"]);
            std::fs::rename(&bundle, factory.join(format!("{plugin}.vbundle"))).expect("move");
        }
        let lab = committed_labs().into_iter().next().expect("a lab");
        let mut args: Vec<String> = vec!["replay".into()];
        args.extend(a.plugin_args());
        args.push(fixture(&lab, "baseline.pcap").display().to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        vigil_ok(&args);
        let update = a.bundle("network-scan", "0.2.0", &["signer"]);
        assert!(
            a.install(&update).status.success(),
            "a good bundle installs"
        );
        appliance
    }
}

/// Signs `bundle` again with `key` after `change`, as a tamperer holding a trusted key would not
/// need to: used for the ABI case, where the vendor's own key signs a wrong bundle.
fn resign(bundle: &Path, key: &Path, change: impl FnOnce(&mut Bundle), out: &Path) {
    let mut decoded = Bundle::decode(
        &std::fs::read(bundle).expect("bundle"),
        DEFAULT_MAX_BUNDLE_BYTES,
    )
    .expect("decodes");
    change(&mut decoded);
    decoded.signatures.clear();
    decoded
        .sign(&SecretKey::read(key).expect("key"))
        .expect("signs");
    std::fs::write(out, decoded.encode().expect("encodes")).expect("write");
}

#[test]
fn every_bad_bundle_is_refused_with_its_reason_and_changes_nothing() {
    let a = Appliance::new();
    let good = a.bundle("network-scan", "0.3.0", &["signer"]);
    let before = a.state();
    assert!(
        before.keys().any(|p| p.ends_with("state/network-scan.bin")),
        "the normal week was learned"
    );

    let mut cases: Vec<(&str, PathBuf, &str)> = Vec::new();
    cases.push((
        "unsigned",
        a.bundle("network-scan", "0.3.0", &[]),
        "not signed",
    ));

    let tampered_wasm = a.path("tampered-wasm.vbundle");
    tamper_wasm(&good, &tampered_wasm);
    cases.push((
        "tampered wasm",
        tampered_wasm,
        "the wasm was changed after signing",
    ));

    let tampered_manifest = a.path("tampered-manifest.vbundle");
    let mut decoded = Bundle::decode(
        &std::fs::read(&good).expect("bundle"),
        DEFAULT_MAX_BUNDLE_BYTES,
    )
    .expect("decodes");
    decoded.manifest.default_config = r#"{"threshold": 1000000}"#.into();
    std::fs::write(&tampered_manifest, decoded.encode().expect("encodes")).expect("write");
    cases.push((
        "tampered manifest",
        tampered_manifest,
        "the manifest was changed after signing",
    ));

    cases.push((
        "unknown key",
        a.bundle("network-scan", "0.3.0", &["stranger"]),
        "which is not in the installed delegation v2",
    ));
    cases.push((
        "revoked key",
        a.bundle("network-scan", "0.3.0", &["departed"]),
        "which was revoked",
    ));
    cases.push((
        "expired key",
        a.bundle("network-scan", "0.3.0", &["lapsed"]),
        "which expired at",
    ));
    cases.push((
        "out-of-scope key",
        a.bundle("network-scan", "0.3.0", &["smb-only"]),
        "which may not sign plugin `network-scan`",
    ));

    let abi = a.path("abi-2.vbundle");
    resign(&good, &a.key("signer"), |b| b.manifest.abi = 2, &abi);
    cases.push(("ABI mismatch", abi, "built for plugin ABI 2"));

    cases.push((
        "older version",
        a.bundle("network-scan", "0.1.5", &["signer"]),
        "rollback refused: network-scan 0.1.5 is not newer than 0.2.0",
    ));
    cases.push((
        "same version again",
        a.bundle("network-scan", "0.2.0", &["signer"]),
        "rollback refused",
    ));

    let huge = a.path("huge.vbundle");
    let file = std::fs::File::create(&huge).expect("create");
    file.set_len(DEFAULT_MAX_BUNDLE_BYTES + 1)
        .expect("sparse file");
    cases.push(("too large for the default limit", huge, "over the"));

    let garbage = a.path("garbage.vbundle");
    std::fs::write(&garbage, b"VIGILBND but not really a bundle at all").expect("write");
    cases.push(("malformed", garbage, "malformed bundle"));

    for (case, bundle, expected) in &cases {
        let out = a.install(bundle);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case}: installed");
        assert!(stderr.contains(expected), "{case}: {stderr}");
        assert!(
            a.state() == before,
            "{case}: something changed on the appliance"
        );
    }

    // A good bundle over the operator's configured size limit.
    let config = a.path("small-bundles.toml");
    std::fs::write(&config, "[bundles]\nmax_bytes = 100000\n").expect("config");
    let out = a.install_with(&good, &["--config", s(&config)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "too large: installed");
    assert!(stderr.contains("over the 100000-byte limit"), "{stderr}");
    assert!(a.state() == before, "too large: something changed");

    // A replayed older delegation (v1 named the revoked key) is refused too.
    let out = vigil(&[
        "trust",
        "install",
        "--trust",
        s(&a.path("trust")),
        s(&a.path("delegation-1.vdlg")),
    ]);
    assert!(!out.status.success(), "older delegation installed");
    assert!(a.state() == before, "replayed delegation changed something");

    // Rolling back and reinstalling the version rolled back from: refused, the mark stays.
    assert!(a.install(&good).status.success(), "0.3.0 installs");
    let mut args: Vec<String> = vec!["plugins".into(), "rollback".into()];
    args.extend(a.plugin_args());
    args.push("network-scan".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    vigil_ok(&args);
    let after_rollback = a.state();
    let again = a.install(&good);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not newer than 0.3.0"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(a.state() == after_rollback);
}

#[test]
fn the_appliance_runs_only_what_verifies() {
    let a = Appliance::new();
    // A factory bundle whose wasm was altered on disk is not run; the others are.
    let factory = a.path("factory").join("ntlm-hostname.vbundle");
    tamper_wasm(&factory, &factory);
    let unsigned = a.path("factory").join("vigil_plugin_rdp_scan.wasm");
    std::fs::copy(plugin_module("rdp-scan"), &unsigned).expect("copy");
    let lab = committed_labs().into_iter().next().expect("a lab");
    let mut args: Vec<String> = vec!["replay".into()];
    args.extend(a.plugin_args());
    args.push(fixture(&lab, "benign-noise.pcap").display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = vigil_ok(&args);
    assert!(out.contains("network-scan 0.2.0"), "{out}");
    assert!(!out.contains("ntlm-hostname 0.1.0 "), "{out}");
    assert!(out.contains("the wasm was changed after signing"), "{out}");
    assert!(out.contains("unsigned module"), "{out}");
}
