//! Which plugins run, with the operator's config, and their learned state across runs in
//! `DATA_DIR/state/`.
//!
//! Plugins come as signed bundles (`*.vbundle`): the factory set in the plugin dir and those
//! installed into `DATA_DIR/bundles/` ([`crate::installed`]), each verified against the trust
//! store at every start; an installed bundle newer than the factory one wins, and a model update
//! installed for its wasm supplies its config. Bare modules (`*.wasm`) load only when the
//! operator allows unsigned plugins (development), and each is announced loudly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::bundle::{BundleManifest, VerifiedBundle};
use crate::config::Config;
use crate::host::{PluginHost, PluginId};
use crate::installed::{module_agrees, BundleStore};
use crate::store::files::write_atomic;
use crate::store::health;

/// The outcome of loading one plugin.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub result: Result<PluginId, String>,
    /// Whether learned state from an earlier run was restored.
    pub restored: bool,
    /// The signed manifest it was loaded from (`None`: an unsigned development module).
    pub signed: Option<BundleManifest>,
}

/// One plugin to run: where it came from, its module and what vouches for it.
struct Candidate {
    path: PathBuf,
    wasm: Vec<u8>,
    signed: Option<BundleManifest>,
    /// Who signed it, by name in the delegation.
    signer: Option<String>,
}

/// Every `*.wasm` in `dir`, in name order (so load order, and output, are stable).
pub fn plugin_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    files_with(dir, "wasm")
}

/// Every `*.vbundle` in `dir`, in name order.
pub fn bundle_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    files_with(dir, "vbundle")
}

fn files_with(dir: &Path, extension: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .collect();
    files.sort();
    Ok(files)
}

fn state_path(data_dir: &Path, plugin: &str) -> PathBuf {
    data_dir.join("state").join(format!("{plugin}.bin"))
}

/// Where a saved state the plugin refused is kept, so that the next save does not overwrite
/// what was learned (a rollback to the version that wrote it can take it back). One per plugin.
pub fn unrestored_state_path(data_dir: &Path, plugin: &str) -> PathBuf {
    data_dir
        .join("state")
        .join(format!("{plugin}.unrestored.bin"))
}

/// Loads the plugins of `plugin_dir` and the installed ones into `host`, restoring the state a
/// previous run saved. A plugin refused or failing to load is reported and skipped; the others
/// still run. `store` is `None` only when unsigned plugins are allowed and no trust store exists.
pub fn load_all(
    host: &mut PluginHost,
    plugin_dir: &Path,
    mut store: Option<&mut BundleStore>,
    allow_unsigned: bool,
    config: &Config,
    data_dir: &Path,
) -> std::io::Result<Vec<Loaded>> {
    let mut refused = Vec::new();
    let mut candidates: BTreeMap<String, Candidate> = BTreeMap::new();
    for path in bundle_files(plugin_dir)? {
        let verified = match store.as_deref() {
            Some(store) => store.verify_file(&path).map_err(|err| err.to_string()),
            None => Err("no trust store to check its signature against".to_string()),
        };
        match verified {
            Ok(bundle) if bundle.manifest.payload.is_config_update() => refused.push(refusal(
                &path,
                "a model update: install it with `vigil plugins install`".into(),
            )),
            Ok(VerifiedBundle {
                manifest,
                wasm,
                signer,
            }) => {
                let name = manifest.name.clone();
                let candidate = Candidate {
                    path,
                    wasm,
                    signed: Some(manifest),
                    signer: Some(signer.name),
                };
                if let Some(first) = candidates.insert(name.clone(), candidate) {
                    refused.push(refusal(
                        &first.path,
                        format!("another bundle of `{name}` is in the same directory"),
                    ));
                }
            }
            Err(reason) => refused.push(refusal(&path, reason)),
        }
    }
    for path in plugin_files(plugin_dir)? {
        if !allow_unsigned {
            refused.push(refusal(
                &path,
                "unsigned module: the appliance runs signed bundles only (--allow-unsigned is \
                 for development)"
                    .into(),
            ));
            continue;
        }
        match std::fs::read(&path) {
            Ok(wasm) => {
                tracing::warn!(
                    "UNSIGNED PLUGIN {} loaded because unsigned plugins are allowed: its code \
                     is not verified by anyone",
                    path.display()
                );
                candidates.insert(
                    plugin_name_from_file(&path),
                    Candidate {
                        path,
                        wasm,
                        signed: None,
                        signer: None,
                    },
                );
            }
            Err(err) => refused.push(refusal(&path, err.to_string())),
        }
    }
    if let Some(store) = store.as_deref() {
        for (path, bundle) in store.installed() {
            let newer = candidates.get(&bundle.manifest.name).is_none_or(|c| {
                c.signed
                    .as_ref()
                    .is_none_or(|m| m.version < bundle.manifest.version)
            });
            if newer {
                candidates.insert(
                    bundle.manifest.name.clone(),
                    Candidate {
                        path,
                        wasm: bundle.wasm,
                        signed: Some(bundle.manifest),
                        signer: Some(bundle.signer.name),
                    },
                );
            }
        }
    }
    let mut loaded = refused;
    for (name, candidate) in candidates {
        loaded.push(load_one(
            host,
            &name,
            candidate,
            store.as_deref_mut(),
            config,
            data_dir,
        ));
    }
    Ok(loaded)
}

fn refusal(path: &Path, reason: String) -> Loaded {
    Loaded {
        path: path.to_path_buf(),
        result: Err(format!("{}: {reason}", path.display())),
        restored: false,
        signed: None,
    }
}

fn load_one(
    host: &mut PluginHost,
    name: &str,
    candidate: Candidate,
    store: Option<&mut BundleStore>,
    config: &Config,
    data_dir: &Path,
) -> Loaded {
    let origin = candidate.path.display().to_string();
    let signed = candidate.signed;
    // The operator's config wins over a vendor's model update.
    let update = match (&store, &signed) {
        (Some(store), Some(manifest)) => store.config_update(name, manifest.payload.wasm_sha256()),
        _ => None,
    };
    let config_json = config
        .plugin_config_json(name)
        .or_else(|| update.as_ref().map(|(_, config)| config.clone()));
    let result = host
        .load_checked(&candidate.wasm, &origin, config_json.as_deref(), |module| {
            signed
                .as_ref()
                .map_or(Ok(()), |manifest| module_agrees(manifest, module))
        })
        .map_err(|err| err.to_string());
    let mut restored = false;
    if let Ok(id) = result {
        if let Some(manifest) = &signed {
            let version = update.as_ref().map_or(manifest.version, |(v, _)| *v);
            let signer = candidate.signer.as_deref().unwrap_or_default();
            host.set_bundle(id, &version.to_string(), signer);
            if let Some(store) = store {
                if let Err(err) = store.record_running(manifest) {
                    tracing::error!("{err}");
                }
            }
        }
        let saved = state_path(data_dir, name);
        if let Ok(bytes) = std::fs::read(&saved) {
            match host.restore(id, &bytes) {
                Ok(()) => {
                    tracing::info!(
                        plugin = %name,
                        "learned state restored from {} ({} bytes)",
                        saved.display(),
                        bytes.len()
                    );
                    restored = true;
                }
                Err(err) => {
                    let kept = unrestored_state_path(data_dir, name);
                    let moved = std::fs::rename(&saved, &kept);
                    match moved {
                        Ok(()) => health::moved_aside(
                            &saved,
                            Some(&kept),
                            &format!("not restored by plugin {name}: {err:#}"),
                            None,
                        ),
                        Err(move_err) => tracing::error!(
                            plugin = %name,
                            "saved state not restored ({err:#}), and could not be kept aside \
                             ({move_err}): the next save replaces it"
                        ),
                    }
                }
            }
        }
    }
    Loaded {
        path: candidate.path,
        result,
        restored,
        signed,
    }
}

/// `vigil_plugin_network_scan.wasm` -> `network-scan`, matching the names plugins declare.
pub fn plugin_name_from_file(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    stem.strip_prefix("vigil_plugin_")
        .unwrap_or(&stem)
        .replace('_', "-")
}

/// Saves every running plugin's learned state (atomically), so the next run continues; returns
/// the bytes written. A plugin that cannot snapshot, or a file that cannot be written, costs
/// that plugin's save (logged, counted in [`health`]), not the others'.
pub fn save_state(host: &mut PluginHost, data_dir: &Path) -> u64 {
    let mut bytes_saved = 0;
    for status in host.plugins() {
        if status.quarantined {
            continue;
        }
        let bytes = match host.snapshot(status.id) {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::error!(plugin = %status.name, "state not saved: {err:#}");
                continue;
            }
        };
        let path = state_path(data_dir, &status.name);
        match write_atomic(&path, &bytes) {
            Ok(()) => {
                health::write_ok(&path);
                bytes_saved += bytes.len() as u64;
            }
            Err(err) => health::write_failed(&path, &err, 1),
        }
    }
    bytes_saved
}
