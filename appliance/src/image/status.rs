//! What the appliance reports about itself: core version, booted slot, how the root is mounted
//! and verified, and what the capture bound (the ready file `vigil run --ready-file` writes).

use std::fs;
use std::path::Path;

use serde::Serialize;

use super::slots::SystemPaths;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RootStatus {
    pub device: String,
    pub fstype: String,
    pub read_only: bool,
    /// The device-mapper name when the root is a dm device (`vigil-root`: dm-verity by init).
    pub mapper: Option<String>,
    /// The partitions under it.
    pub over: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SystemStatus {
    pub version: Option<String>,
    pub slot: Option<&'static str>,
    pub root: Option<RootStatus>,
}

pub fn read(system: &SystemPaths) -> SystemStatus {
    SystemStatus {
        version: system.running_version().map(|v| v.to_string()),
        slot: system.booted_slot().map(|slot| slot.letter()),
        root: root(system),
    }
}

fn root(system: &SystemPaths) -> Option<RootStatus> {
    let mounts = fs::read_to_string(&system.mounts).ok()?;
    // The last mount on `/` is the one in force.
    let line = mounts
        .lines()
        .rfind(|line| line.split_whitespace().nth(1) == Some("/"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (device, fstype, options) = (fields.first()?, fields.get(2)?, fields.get(3)?);
    let dm = Path::new(device)
        .file_name()
        .and_then(|name| name.to_str())
        .filter(|name| name.starts_with("dm-"))
        .map(|name| system.sys_block.join(name));
    let mapper = dm
        .as_ref()
        .and_then(|dir| fs::read_to_string(dir.join("dm/name")).ok())
        .map(|name| name.trim().to_string());
    let over = dm
        .and_then(|dir| fs::read_dir(dir.join("slaves")).ok())
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    Some(RootStatus {
        device: device.to_string(),
        fstype: fstype.to_string(),
        read_only: options.split(',').any(|option| option == "ro"),
        mapper,
        over,
    })
}
