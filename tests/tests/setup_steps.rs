//! The set-up's first-time paths, which a CI machine that keeps its caches would otherwise never
//! take again: the kernel package download into an empty cache, and the development keys, trust
//! store and signed bundles made into an empty target directory.

use std::path::Path;
use std::process::Command;

use vigil_tests::workspace::{module_dir, root, vigil_bin, TempDir};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_kernel_step_fetches_the_named_package_into_an_empty_cache() {
    let cache = TempDir::new("kernel-cache");
    let run = || {
        Command::new(root().join("image").join("fetch-kernel.sh"))
            .env("VIGIL_IMAGE_CACHE", cache.path())
            // From elsewhere than the checkout: the step must not depend on where it is run.
            .current_dir(std::env::temp_dir())
            .output()
            .expect("fetch-kernel.sh runs")
    };
    let fetched = run();
    assert!(
        fetched.status.success(),
        "fetch-kernel.sh failed on an empty cache: {}",
        text(&fetched.stderr)
    );
    let deb = text(&fetched.stdout).trim().to_string();
    assert!(
        Path::new(&deb).starts_with(cache.path()),
        "{deb} is not in the cache"
    );
    let package = std::fs::read_to_string(root().join("image").join("kernel-package"))
        .expect("image/kernel-package");
    let field = Command::new("dpkg-deb")
        .args(["--field", &deb, "Package"])
        .output()
        .expect("dpkg-deb runs");
    assert_eq!(text(&field.stdout).trim(), package.trim());

    // Second time: served from the cache, the same file.
    let again = run();
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout).trim(), deb);
}

#[test]
fn signing_into_an_empty_target_dir_makes_keys_trust_and_every_bundle() {
    let target = TempDir::new("sign-target");
    // sign-dev.sh reads the binary and the modules from the target dir it is given.
    std::fs::create_dir_all(target.path().join("release")).expect("release dir");
    std::os::unix::fs::symlink(vigil_bin(), target.path().join("release").join("vigil"))
        .expect("link vigil");
    let wasm = target.path().join("wasm32-unknown-unknown");
    std::fs::create_dir_all(&wasm).expect("wasm dir");
    std::os::unix::fs::symlink(module_dir(), wasm.join("plugin")).expect("link modules");

    let signed = Command::new(root().join("plugins").join("sign-dev.sh"))
        .env("CARGO_TARGET_DIR", target.path())
        .output()
        .expect("sign-dev.sh runs");
    assert!(
        signed.status.success(),
        "sign-dev.sh failed on an empty target dir: {}",
        text(&signed.stderr)
    );
    // The shipped plugins are the crates under plugins/: test fixtures and plugins made by the
    // tutorial build into the same module dir, and are not signed as the appliance's.
    let modules = std::fs::read_dir(root().join("plugins"))
        .expect("plugins/")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .count();
    let bundles = std::fs::read_dir(target.path().join("bundles"))
        .expect("bundles made")
        .filter_map(Result::ok)
        .count();
    assert!(modules > 0);
    assert_eq!(bundles, modules, "one signed bundle per shipped plugin");
    for key in ["root.key", "signer.key", "core.key"] {
        assert!(target.path().join("dev-keys").join(key).is_file(), "{key}");
    }

    // Every bundle verifies against the trust store made here.
    let trust = target.path().join("dev-trust");
    for entry in std::fs::read_dir(target.path().join("bundles")).expect("bundles") {
        let bundle = entry.expect("entry").path();
        let verified = Command::new(vigil_bin())
            .args(["bundle", "verify", "--trust"])
            .arg(&trust)
            .arg(&bundle)
            .output()
            .expect("vigil bundle verify runs");
        assert!(
            verified.status.success(),
            "{}: {}",
            bundle.display(),
            text(&verified.stderr)
        );
    }
}
