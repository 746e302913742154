//! The highest version ever installed per plugin, and what is installed now.
//!
//! The high-water mark is what makes rollback protection work: it only rises, and it stays when a
//! plugin is removed, so removing a plugin and installing an older signed bundle of it is refused
//! too. Stored as JSON (`versions.json` in the trust dir), replaced atomically on every change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::manifest::{BundleManifest, Version};
use super::text::{hex, parse_hex};
use super::StoreError;

/// An installed plugin: its version (a config update's version once one is applied) and the
/// digest of its wasm (which a config update names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstalledPlugin {
    pub version: Version,
    pub wasm_sha256: [u8; 32],
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Record {
    highest: Option<Version>,
    installed: Option<InstalledPlugin>,
}

#[derive(Debug, Default)]
pub struct InstalledVersions {
    /// `None`: kept in memory only.
    path: Option<PathBuf>,
    plugins: BTreeMap<String, Record>,
}

/// The file's shape: readable, versions and digests as text.
#[derive(Serialize, Deserialize)]
struct FileRecord {
    highest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    installed: Option<FileInstalled>,
}

#[derive(Serialize, Deserialize)]
struct FileInstalled {
    version: String,
    wasm_sha256: String,
}

impl InstalledVersions {
    /// An empty set kept in memory only (nothing installed, nothing ever seen).
    pub fn in_memory() -> InstalledVersions {
        InstalledVersions::default()
    }

    /// Reads `path` (a missing file is an empty set); changes are written back to it.
    pub fn open(path: &Path) -> Result<InstalledVersions, StoreError> {
        let mut versions = InstalledVersions {
            path: Some(path.to_path_buf()),
            plugins: BTreeMap::new(),
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(versions),
            Err(err) => return Err(StoreError::io(path, err)),
        };
        let file: BTreeMap<String, FileRecord> =
            serde_json::from_slice(&bytes).map_err(|err| StoreError::corrupt(path, err))?;
        for (name, record) in file {
            let version = |text: &str| {
                text.parse::<Version>()
                    .map_err(|err| StoreError::corrupt(path, format!("{name}: {err}")))
            };
            let installed = match record.installed {
                Some(installed) => Some(InstalledPlugin {
                    version: version(&installed.version)?,
                    wasm_sha256: parse_hex::<32>(&installed.wasm_sha256).ok_or_else(|| {
                        StoreError::corrupt(path, format!("{name}: bad wasm digest"))
                    })?,
                }),
                None => None,
            };
            let highest = Some(version(&record.highest)?);
            versions.plugins.insert(name, Record { highest, installed });
        }
        Ok(versions)
    }

    /// The highest version of `name` ever recorded, installed now or not.
    pub fn highest(&self, name: &str) -> Option<Version> {
        self.plugins.get(name).and_then(|r| r.highest)
    }

    /// What of `name` is installed now.
    pub fn installed(&self, name: &str) -> Option<InstalledPlugin> {
        self.plugins.get(name).and_then(|r| r.installed)
    }

    /// Every plugin ever recorded: name, highest version, what is installed now.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<Version>, Option<InstalledPlugin>)> {
        self.plugins
            .iter()
            .map(|(name, r)| (name.as_str(), r.highest, r.installed))
    }

    /// Records that a verified bundle was installed: the plugin (or, for a config update, its
    /// new config) is now at `manifest.version`, and the high-water mark rises to it. Written
    /// before returning.
    pub fn record_install(&mut self, manifest: &BundleManifest) -> Result<(), StoreError> {
        let record = self.plugins.entry(manifest.name.clone()).or_default();
        record.highest = record.highest.max(Some(manifest.version));
        record.installed = Some(InstalledPlugin {
            version: manifest.version,
            wasm_sha256: *manifest.payload.wasm_sha256(),
        });
        self.save()
    }

    /// Raises the high-water mark of `name` (a core update, which has no wasm) to `version`.
    pub fn record_highest(&mut self, name: &str, version: Version) -> Result<(), StoreError> {
        let record = self.plugins.entry(name.to_string()).or_default();
        record.highest = record.highest.max(Some(version));
        self.save()
    }

    /// Raises each named plugin's high-water mark to at least its version (signed bundles found
    /// on disk, which a writable `versions.json` must not be able to undercut); written once if
    /// any rose. Returns the plugins whose recorded mark was lower (not those never recorded).
    pub fn raise_floors(
        &mut self,
        floors: impl IntoIterator<Item = (String, Version)>,
    ) -> Result<Vec<String>, StoreError> {
        let mut raised = Vec::new();
        let mut changed = false;
        for (name, version) in floors {
            let record = self.plugins.entry(name.clone()).or_default();
            if record.highest < Some(version) {
                if record.highest.is_some() {
                    raised.push(name);
                }
                record.highest = Some(version);
                changed = true;
            }
        }
        if changed {
            self.save()?;
        }
        Ok(raised)
    }

    /// Records that `name` was removed; its high-water mark stays.
    pub fn record_removal(&mut self, name: &str) -> Result<(), StoreError> {
        if let Some(record) = self.plugins.get_mut(name) {
            record.installed = None;
        }
        self.save()
    }

    fn save(&self) -> Result<(), StoreError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file: BTreeMap<&str, FileRecord> = self
            .plugins
            .iter()
            .filter_map(|(name, r)| {
                let highest = r.highest?;
                Some((
                    name.as_str(),
                    FileRecord {
                        highest: highest.to_string(),
                        installed: r.installed.map(|i| FileInstalled {
                            version: i.version.to_string(),
                            wasm_sha256: hex(&i.wasm_sha256),
                        }),
                    },
                ))
            })
            .collect();
        let json =
            serde_json::to_vec_pretty(&file).map_err(|err| StoreError::corrupt(path, err))?;
        crate::store::files::write_atomic(path, &json).map_err(|err| StoreError::io(path, err))
    }
}
