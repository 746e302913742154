//! Core updates with real signatures over real bytes, installed into a directory laid out like
//! the appliance's /proc, /sys, /dev and ESP.

use std::fs;
use std::path::{Path, PathBuf};

use vigil_boot_contract::Slot;

use super::slots::{install, InstallError, SystemPaths};
use super::update::{pack, verify, UpdateError};
use crate::bundle::{DelegatedKey, Delegation, SecretKey, SignedDelegation, TrustStore, Version};

const NOW: u64 = 1_767_225_600;
const YEAR: u64 = 365 * 86_400;
const VERITY: &str = "2,2,aa,bb";

struct Appliance {
    dir: PathBuf,
    system: SystemPaths,
    trust: TrustStore,
}

impl Drop for Appliance {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed(&[seed; 32])
}

/// Booted from slot A at core 0.1.0; key 2 may sign the core, key 3 any plugin (`*`).
fn appliance(tag: &str) -> Appliance {
    let dir = std::env::temp_dir().join(format!("vigil-image-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    for sub in [
        "proc",
        "etc",
        "dev",
        "efi/EFI/Linux",
        "sys/vda2",
        "sys/vda3",
        "trust",
    ] {
        fs::create_dir_all(dir.join(sub)).expect("dirs");
    }
    fs::write(dir.join("proc/cmdline"), "console=ttyS0 vigil.slot=a\n").expect("cmdline");
    fs::write(
        dir.join("etc/os-release"),
        "ID=vigil\nIMAGE_VERSION=0.1.0\n",
    )
    .expect("osrel");
    for (dev, name) in [("vda2", "vigil-root-a"), ("vda3", "vigil-root-b")] {
        fs::write(
            dir.join("sys").join(dev).join("uevent"),
            format!("PARTNAME={name}\n"),
        )
        .expect("uevent");
        fs::write(dir.join("sys").join(dev).join("size"), "64\n").expect("size");
        fs::write(dir.join("dev").join(dev), vec![0u8; 64 * 512]).expect("device");
    }
    fs::write(dir.join("efi/EFI/Linux/vigil-a.efi"), b"old a").expect("entry");
    let root = key(1);
    let (mut trust, _) = TrustStore::init(&dir.join("trust"), &root.public()).expect("trust");
    let delegated = |key: &SecretKey, plugins: &str| DelegatedKey {
        public: *key.public().as_bytes(),
        name: format!("signer for {plugins}"),
        plugins: vec![plugins.to_string()],
        expires: NOW + YEAR,
    };
    let delegation = Delegation {
        version: 1,
        expires: NOW + YEAR,
        keys: vec![delegated(&key(2), "vigil-core"), delegated(&key(3), "*")],
    };
    let file = SignedDelegation::sign(delegation, &root)
        .expect("sign")
        .encode()
        .expect("encode");
    trust.install_delegation(&file, NOW).expect("delegation");
    let system = SystemPaths {
        cmdline: dir.join("proc/cmdline"),
        os_release: dir.join("etc/os-release"),
        sys_block: dir.join("sys"),
        dev: dir.join("dev"),
        esp: dir.join("efi"),
        mounts: dir.join("proc/mounts"),
    };
    Appliance { dir, system, trust }
}

fn update_signed_by(version: &str, signers: &[&SecretKey]) -> Vec<u8> {
    let version: Version = version.parse().expect("version");
    let root = format!("root of {version}").into_bytes();
    pack(version, VERITY, &root, [b"uki a", b"uki b"], signers).expect("pack")
}

fn update(version: &str, signer: &SecretKey) -> Vec<u8> {
    update_signed_by(version, &[signer])
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(
                fs::read_dir(&path)
                    .expect("dir")
                    .map(|e| e.expect("entry").path()),
            );
        } else {
            files.push((path.clone(), fs::read(&path).expect("file")));
        }
    }
    files.sort();
    files
}

#[test]
fn signed_update_installs_into_the_other_slot_on_trial() {
    let appliance = appliance("install");
    let versions = appliance.dir.join("versions.json");
    let installed = install(
        &update("0.2.0", &key(2)),
        &appliance.trust,
        &versions,
        &appliance.system,
        NOW,
    )
    .expect("installs");
    assert_eq!(installed.slot, Slot::B);
    assert_eq!(installed.version, "0.2.0".parse().expect("version"));
    let device = fs::read(appliance.dir.join("dev/vda3")).expect("slot b");
    assert!(device.starts_with(b"root of 0.2.0"));
    let entry = appliance.dir.join("efi/EFI/Linux/vigil-b+1-0.efi");
    assert_eq!(installed.entry, entry);
    assert_eq!(fs::read(&entry).expect("entry"), b"uki b");
    // Slot A, booted, is untouched.
    assert_eq!(
        fs::read(appliance.dir.join("efi/EFI/Linux/vigil-a.efi")).expect("a"),
        b"old a"
    );
    assert!(fs::read(appliance.dir.join("dev/vda2"))
        .expect("a")
        .iter()
        .all(|&b| b == 0));
    // A second, newer update replaces the trial entry rather than adding one.
    install(
        &update("0.3.0", &key(2)),
        &appliance.trust,
        &versions,
        &appliance.system,
        NOW,
    )
    .expect("installs");
    let entries: Vec<String> = fs::read_dir(appliance.dir.join("efi/EFI/Linux"))
        .expect("esp")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
}

#[test]
fn refused_updates_write_nothing() {
    let appliance = appliance("refuse");
    let versions = appliance.dir.join("versions.json");
    let good = update("0.2.0", &key(2));
    let mut tampered = good.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("unsigned", update_signed_by("0.2.0", &[]), "unsigned"),
        ("tampered", tampered, "altered"),
        ("older", update("0.0.9", &key(2)), "not newer than 0.1.0"),
        ("same", update("0.1.0", &key(2)), "not newer"),
        ("wildcard key", update("0.2.0", &key(3)), "vigil-core"),
        (
            "unknown key",
            update("0.2.0", &key(9)),
            "not in the installed delegation",
        ),
        (
            "garbage",
            b"VIGILUPD\xff\xff\xff\xff".to_vec(),
            "not a Vigil core update",
        ),
    ];
    let before = snapshot(&appliance.dir);
    for (what, bytes, expected) in cases {
        let err =
            install(&bytes, &appliance.trust, &versions, &appliance.system, NOW).expect_err(what);
        let message = err.to_string();
        assert!(
            message.to_lowercase().contains(&expected.to_lowercase()),
            "{what}: {message}"
        );
        assert_eq!(snapshot(&appliance.dir), before, "{what} changed something");
    }
}

#[test]
fn a_core_once_installed_cannot_be_installed_again_or_undercut() {
    let appliance = appliance("rollback");
    let versions = appliance.dir.join("versions.json");
    let install_version = |version: &str| {
        install(
            &update(version, &key(2)),
            &appliance.trust,
            &versions,
            &appliance.system,
            NOW,
        )
    };
    install_version("0.3.0").expect("installs");
    // Still booted from A at 0.1.0 (say 0.3.0 fell back): 0.2.0 is newer than the running core
    // but older than one installed before.
    match install_version("0.2.0") {
        Err(InstallError::Refused(UpdateError::NotNewer { which, .. })) => {
            assert!(which.contains("ever installed"), "{which}")
        }
        other => panic!("0.2.0 after 0.3.0: {other:?}"),
    }
    install_version("0.4.0").expect("newer installs");
}

#[test]
fn verify_names_the_signer() {
    let appliance = appliance("signer");
    let bytes = update("0.2.0", &key(2));
    let verified = verify(&bytes, &appliance.trust, NOW).expect("verifies");
    assert_eq!(verified.signer.name, "signer for vigil-core");
    assert_eq!(verified.root, b"root of 0.2.0");
    assert_eq!(verified.uki, [b"uki a".as_slice(), b"uki b".as_slice()]);
}
