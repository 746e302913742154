//! Finding the compiled plugins, loading them with the operator's config, and carrying their
//! learned state across runs in `DATA_DIR/state/`.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::host::{PluginHost, PluginId};
use crate::store::files::write_atomic;

/// The outcome of loading one plugin file.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub result: Result<PluginId, String>,
    /// Whether learned state from an earlier run was restored.
    pub restored: bool,
}

/// Every `*.wasm` in `dir`, in name order (so load order, and output, are stable).
pub fn plugin_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
        .collect();
    files.sort();
    Ok(files)
}

fn state_path(data_dir: &Path, plugin: &str) -> PathBuf {
    data_dir.join("state").join(format!("{plugin}.bin"))
}

/// Loads each file into `host`, restoring the state a previous run saved. A plugin that fails to
/// load is reported and skipped; the others still run.
pub fn load_all(
    host: &mut PluginHost,
    files: &[PathBuf],
    config: &Config,
    data_dir: &Path,
) -> Vec<Loaded> {
    files
        .iter()
        .map(|path| load_one(host, path, config, data_dir))
        .collect()
}

fn load_one(host: &mut PluginHost, path: &Path, config: &Config, data_dir: &Path) -> Loaded {
    let origin = path.display().to_string();
    let wasm = match std::fs::read(path) {
        Ok(wasm) => wasm,
        Err(err) => {
            return Loaded {
                path: path.to_path_buf(),
                result: Err(format!("{origin}: {err}")),
                restored: false,
            }
        }
    };
    // The operator's config is keyed by plugin name, which only the module knows: load with
    // defaults first when the name is not yet known from the file name.
    let name_guess = plugin_name_from_file(path);
    let config_json = config.plugin_config_json(&name_guess);
    let result = host
        .load(&wasm, &origin, config_json.as_deref())
        .map_err(|err| err.to_string());
    let mut restored = false;
    if let Ok(id) = result {
        if let Some(status) = host.plugins().into_iter().find(|p| p.id == id) {
            if let Ok(bytes) = std::fs::read(state_path(data_dir, &status.name)) {
                match host.restore(id, &bytes) {
                    Ok(()) => restored = true,
                    Err(err) => tracing::warn!(
                        plugin = %status.name,
                        "saved state not restored, starting fresh: {err:#}"
                    ),
                }
            }
        }
    }
    Loaded {
        path: path.to_path_buf(),
        result,
        restored,
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

/// Saves every running plugin's learned state (atomically), so the next run continues.
pub fn save_state(host: &mut PluginHost, data_dir: &Path) -> anyhow::Result<usize> {
    let mut saved = 0;
    for status in host.plugins() {
        if status.quarantined {
            continue;
        }
        let bytes = host.snapshot(status.id)?;
        write_atomic(&state_path(data_dir, &status.name), &bytes)?;
        saved += 1;
    }
    Ok(saved)
}
