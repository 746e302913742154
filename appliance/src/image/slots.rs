//! The A/B slots of a running appliance image: which one booted, which partition the other one
//! is, and installing a verified core update into it (see image/README.md for the layout).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use vigil_boot_contract::{Slot, ENTRY_DIR};

use crate::bundle::{InstalledVersions, TrustStore, Version};

use super::update::{self, UpdateError, CORE_NAME};

/// Where the appliance's system facts live; tests point these at a directory of their own.
#[derive(Debug, Clone)]
pub struct SystemPaths {
    pub cmdline: PathBuf,
    pub os_release: PathBuf,
    pub sys_block: PathBuf,
    pub dev: PathBuf,
    /// The EFI system partition (mounted by vigil-init, writable by the daemon).
    pub esp: PathBuf,
    pub mounts: PathBuf,
}

impl SystemPaths {
    pub fn appliance() -> SystemPaths {
        SystemPaths {
            cmdline: "/proc/cmdline".into(),
            os_release: "/etc/os-release".into(),
            sys_block: "/sys/class/block".into(),
            dev: "/dev".into(),
            esp: "/efi".into(),
            mounts: "/proc/self/mounts".into(),
        }
    }

    /// The slot booted (`vigil.slot=` on the kernel command line); `None` off the image.
    pub fn booted_slot(&self) -> Option<Slot> {
        Slot::from_cmdline(&fs::read_to_string(&self.cmdline).ok()?)
    }

    /// The running core's version (`IMAGE_VERSION` in the root's os-release).
    pub fn running_version(&self) -> Option<Version> {
        let text = fs::read_to_string(&self.os_release).ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix("IMAGE_VERSION="))
            .and_then(|value| value.trim_matches('"').parse().ok())
    }

    /// The device node of the GPT partition named `name`.
    pub fn partition(&self, name: &str) -> Option<PathBuf> {
        let wanted = format!("PARTNAME={name}");
        fs::read_dir(&self.sys_block)
            .ok()?
            .flatten()
            .find_map(|entry| {
                let uevent = fs::read_to_string(entry.path().join("uevent")).ok()?;
                uevent
                    .lines()
                    .any(|line| line == wanted)
                    .then(|| self.dev.join(entry.file_name()))
            })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Refused(#[from] UpdateError),
    #[error("this is not a booted Vigil image (no vigil.slot on the kernel command line)")]
    NotAnImage,
    #[error("slot {slot}'s partition ({name}) was not found")]
    NoPartition { slot: Slot, name: String },
    #[error("the slot image is {len} bytes, the partition only {room}")]
    TooBig { len: u64, room: u64 },
    #[error("the record of installed versions: {0}")]
    Versions(#[from] crate::bundle::StoreError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> InstallError {
    let what = what.into();
    move |source| InstallError::Io { what, source }
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub version: Version,
    pub slot: Slot,
    pub entry: PathBuf,
}

/// Verifies `bytes` and writes it into the slot not booted: the root to its partition, the boot
/// entry to the ESP with one try (`vigil-X+1-0.efi`, see vigil-init's boot counting). Refused
/// (with nothing written) unless signed for the core by a trusted key and newer than both the
/// running core and every core ever installed here (`versions`).
pub fn install(
    bytes: &[u8],
    trust: &TrustStore,
    versions_path: &Path,
    system: &SystemPaths,
    now: u64,
) -> Result<Installed, InstallError> {
    let verified = update::verify(bytes, trust, now)?;
    let version = verified.manifest.version;
    let mut versions = InstalledVersions::open(versions_path)?;
    let floors = [
        (system.running_version(), "the running core"),
        (
            versions.highest(CORE_NAME),
            "the newest core ever installed here",
        ),
    ];
    for (floor, which) in floors {
        if let Some(against) = floor.filter(|floor| version <= *floor) {
            return Err(UpdateError::NotNewer {
                version,
                against,
                which,
            }
            .into());
        }
    }
    let booted = system.booted_slot().ok_or(InstallError::NotAnImage)?;
    let slot = booted.other();
    let name = slot.root_partition();
    let device = system
        .partition(&name)
        .ok_or(InstallError::NoPartition { slot, name })?;

    let mut target = OpenOptions::new()
        .write(true)
        .open(&device)
        .map_err(io(format!("opening {}", device.display())))?;
    let room = partition_bytes(system, &device).unwrap_or(u64::MAX);
    if verified.root.len() as u64 > room {
        return Err(InstallError::TooBig {
            len: verified.root.len() as u64,
            room,
        });
    }
    // The old entry goes first: a half-written slot must never be bootable.
    let entries = system.esp.join(ENTRY_DIR);
    remove_entries(&entries, slot)?;
    target
        .write_all(verified.root)
        .and_then(|()| target.sync_all())
        .map_err(io(format!("writing {}", device.display())))?;
    let entry = entries.join(slot.trial_entry());
    let partial = entries.join(slot.partial_entry());
    fs::write(&partial, verified.uki_for(slot))
        .and_then(|()| File::open(&partial)?.sync_all())
        .and_then(|()| fs::rename(&partial, &entry))
        .and_then(|()| File::open(&entries)?.sync_all())
        .map_err(io(format!("writing {}", entry.display())))?;
    versions.record_highest(CORE_NAME, version)?;
    Ok(Installed {
        version,
        slot,
        entry,
    })
}

fn remove_entries(entries: &Path, slot: Slot) -> Result<(), InstallError> {
    for entry in fs::read_dir(entries).map_err(io(format!("reading {}", entries.display())))? {
        let entry = entry.map_err(io("reading the ESP"))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if slot.entry_kind(&name).is_some() {
            fs::remove_file(entry.path()).map_err(io(format!("removing {name}")))?;
        }
    }
    Ok(())
}

/// A partition's size from sysfs (512-byte sectors).
fn partition_bytes(system: &SystemPaths, device: &Path) -> Option<u64> {
    let name = device.file_name()?;
    let sectors: u64 = fs::read_to_string(system.sys_block.join(name).join("size"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(sectors * 512)
}
