//! `DATA_DIR/devices.json`: the device table, saved atomically with the plugins' learned state
//! and read back at start, so identity (ids, MACs, host names) carries across restarts.

use std::io;
use std::path::{Path, PathBuf};

use vigil_plugin_sdk::Timestamp;

use super::files::write_atomic;
use crate::devices::{DeviceConfig, DeviceTable, SavedDevices};

pub fn devices_path(data_dir: &Path) -> PathBuf {
    data_dir.join("devices.json")
}

/// The saved table, or a fresh one. A damaged file is moved aside, not lost.
pub fn load(data_dir: &Path, config: &DeviceConfig) -> anyhow::Result<DeviceTable> {
    let path = devices_path(data_dir);
    let saved = match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<SavedDevices>(&bytes) {
            Ok(saved) => saved,
            Err(err) => {
                super::health::set_aside(
                    &path,
                    &err.to_string(),
                    Some("devices are learned again from traffic; their ids start afresh".into()),
                );
                SavedDevices::default()
            }
        },
        Err(err) if err.kind() == io::ErrorKind::NotFound => SavedDevices::default(),
        // Unreadable (an I/O error) is damaged too: the appliance starts without it.
        Err(err) => {
            super::health::set_aside(
                &path,
                &err.to_string(),
                Some("devices are learned again from traffic; their ids start afresh".into()),
            );
            SavedDevices::default()
        }
    };
    // Fails only on a bad `[devices]` config, not on the file.
    DeviceTable::restore(config.clone(), saved).map_err(anyhow::Error::msg)
}

pub fn save(data_dir: &Path, table: &DeviceTable, now: Timestamp) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(&table.to_saved(now))?;
    bytes.push(b'\n');
    write_atomic(&devices_path(data_dir), &bytes)
}
