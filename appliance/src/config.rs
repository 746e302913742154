//! The operator's configuration file (TOML). Every field has a default, so an empty file, or
//! none, is a working appliance.
//!
//! ```toml
//! [flow]
//! capacity = 131072
//!
//! [host]
//! memory_limit_mb = 64
//!
//! # Per-plugin model config, handed to the plugin as JSON; keys are the plugin's config fields.
//! [plugins.network-scan]
//! threshold = 50
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::api::ApiConfig;
use crate::capture::reorder::ReorderConfig;
use crate::decode::fragments::FragmentConfig;
use crate::devices::DeviceConfig;
use crate::fleet::FleetConfig;
use crate::flow::FlowConfig;
use crate::host::HostConfig;
use crate::respond::GuardConfig;
use crate::store::lines::StorageConfig;
use crate::stream::StreamConfig;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the factory plugin bundles (`*.vbundle`) are loaded from; see
    /// [`default_plugin_dir`].
    pub plugin_dir: Option<PathBuf>,
    /// The trust store: root keys and the delegation naming the plugin-signing keys; see
    /// [`default_trust_dir`].
    pub trust_dir: Option<PathBuf>,
    pub flow: FlowConfig,
    /// IPv4/IPv6 fragment reassembly bounds.
    pub fragments: FragmentConfig,
    /// TCP reassembly bounds.
    pub stream: StreamConfig,
    pub host: HostSettings,
    pub pipeline: PipelineSettings,
    /// Packet sources: how much disorder in a capture file's time order to undo.
    pub capture: CaptureSettings,
    /// Which addresses are devices, and how many to remember.
    pub devices: DeviceConfig,
    /// The management API (off unless `listen` and `token` are set).
    pub api: ApiConfig,
    /// What plugin bundles may be.
    pub bundles: BundleSettings,
    /// When a responder's action may come in force without an operator.
    pub respond: GuardConfig,
    /// Log rotation and budgets, the space reserved for state, the checkpoint period.
    pub storage: StorageConfig,
    /// Model config per plugin name.
    pub plugins: BTreeMap<String, toml::Table>,
    /// The fleet broker (off unless `url` is set).
    pub fleet: FleetConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostSettings {
    /// Linear memory one plugin instance may grow to.
    pub memory_limit_mb: usize,
    /// Wall-clock budget of one batch in one plugin; past it the call is interrupted (a trap).
    pub batch_deadline_ms: u64,
    /// Consecutive failing batches after which a plugin is quarantined.
    pub max_consecutive_traps: u32,
    /// Keep compiled modules in `DATA_DIR/cache` across restarts. The appliance image turns it
    /// off: its data partition is neither verified nor executable, so code runs only from
    /// modules compiled from verified bundles in this run.
    pub cache_modules: bool,
    /// Read-only modules compiled ahead of time (`vigil plugins precompile`), used first; the
    /// image carries them on its verified root.
    pub precompiled_dir: Option<PathBuf>,
    /// Compile for the build target's baseline CPU (what `precompile` produces) rather than
    /// this machine's features.
    pub portable_code: bool,
    /// Threads the plugins run on, each plugin on one at a time (default: the cores available,
    /// at most 8). 1 runs them one after another on the pipeline's thread. The breaches,
    /// incidents and actions are the same whatever the number.
    pub plugin_threads: usize,
}

impl Default for HostSettings {
    fn default() -> Self {
        let defaults = HostConfig::default();
        HostSettings {
            memory_limit_mb: defaults.memory_limit_bytes / (1024 * 1024),
            batch_deadline_ms: defaults.batch_deadline_ms,
            max_consecutive_traps: defaults.max_consecutive_traps,
            cache_modules: true,
            precompiled_dir: None,
            portable_code: false,
            plugin_threads: defaults.plugin_threads,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BundleSettings {
    /// Largest bundle file accepted (install, push, start); larger ones are refused unread.
    pub max_bytes: u64,
}

impl Default for BundleSettings {
    fn default() -> Self {
        BundleSettings {
            max_bytes: crate::bundle::DEFAULT_MAX_BUNDLE_BYTES,
        }
    }
}

impl BundleSettings {
    pub fn limits(&self) -> crate::bundle::VerifyLimits {
        crate::bundle::VerifyLimits {
            max_bundle_bytes: self.max_bytes,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineSettings {
    /// Events handed to plugins per call. Larger batches amortise the wasm call; smaller ones
    /// cut breach latency.
    pub batch_size: usize,
    /// Sensor workers: threads that each decode, track and parse the flows of their share of
    /// the address pairs (default: half the cores, at least 1, at most 8; `--workers`
    /// overrides). Breaches, incidents and actions are the same for any number; the flow,
    /// stream and fragment bounds are shared between them.
    pub workers: usize,
}

/// Half the cores available (the other half detects), at least 1, at most 8.
pub fn default_workers() -> usize {
    (crate::host::default_plugin_threads() / 2).max(1)
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            batch_size: 256,
            workers: default_workers(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureSettings {
    /// Packet time a replayed packet is held for so that earlier-stamped packets read after it
    /// go first (merged or racing captures). 0 turns it off. Live capture is stamped as it is
    /// read and never reordered; there, and past this window, time that runs backwards is
    /// clamped instead (counted in the run's summary).
    pub reorder_window_ms: u64,
    /// Packets the reorder buffer holds at most; past it the earliest goes out early.
    pub reorder_max_packets: usize,
    /// Captured bytes the reorder buffer holds at most.
    pub reorder_max_bytes: usize,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        let defaults = ReorderConfig::default();
        CaptureSettings {
            reorder_window_ms: defaults.window_micros / 1000,
            reorder_max_packets: defaults.max_packets,
            reorder_max_bytes: defaults.max_bytes,
        }
    }
}

impl CaptureSettings {
    pub fn reorder(&self) -> ReorderConfig {
        ReorderConfig {
            window_micros: self.reorder_window_ms.saturating_mul(1000),
            max_packets: self.reorder_max_packets,
            max_bytes: self.reorder_max_bytes,
        }
    }
}

impl Config {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }

    pub fn host_config(&self, data_dir: &Path) -> HostConfig {
        HostConfig {
            memory_limit_bytes: self.host.memory_limit_mb * 1024 * 1024,
            batch_deadline_ms: self.host.batch_deadline_ms,
            max_consecutive_traps: self.host.max_consecutive_traps,
            cache_dir: self.host.cache_modules.then(|| data_dir.join("cache")),
            precompiled_dir: self.host.precompiled_dir.clone(),
            portable_code: self.host.portable_code,
            plugin_threads: self.host.plugin_threads,
        }
    }

    /// The JSON config for plugin `name`, if the operator set any.
    pub fn plugin_config_json(&self, name: &str) -> Option<String> {
        self.plugins
            .get(name)
            .and_then(|table| serde_json::to_string(table).ok())
    }

    /// The plugin directory in force: the config's, `$VIGIL_PLUGIN_DIR`, or the default.
    pub fn plugin_dir(&self) -> PathBuf {
        self.plugin_dir
            .clone()
            .or_else(|| std::env::var_os("VIGIL_PLUGIN_DIR").map(PathBuf::from))
            .unwrap_or_else(default_plugin_dir)
    }

    /// The trust dir in force: the config's, `$VIGIL_TRUST_DIR`, or the default.
    pub fn trust_dir(&self) -> PathBuf {
        self.trust_dir
            .clone()
            .or_else(|| std::env::var_os("VIGIL_TRUST_DIR").map(PathBuf::from))
            .unwrap_or_else(default_trust_dir)
    }
}

/// A directory beside a cargo build of `vigil` (`target/release/vigil`, or
/// `target/<profile>/deps/<test>` for tests), if there is one.
fn beside_build(relative: &Path) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .map(|dir| dir.join(relative))
        .find(|dir| dir.is_dir())
}

/// Where the factory bundles are without the operator copying files: the ones `./setup.sh`
/// signed beside a cargo build (`target/bundles/`), else the image's `/usr/lib/vigil/plugins`.
pub fn default_plugin_dir() -> PathBuf {
    beside_build(Path::new("bundles")).unwrap_or_else(|| PathBuf::from("/usr/lib/vigil/plugins"))
}

/// The trust store: the development one `./setup.sh` made beside a cargo build
/// (`target/dev-trust/`), else the appliance's `/etc/vigil/trust`.
pub fn default_trust_dir() -> PathBuf {
    beside_build(Path::new("dev-trust")).unwrap_or_else(|| PathBuf::from("/etc/vigil/trust"))
}

/// The compiled (unsigned) plugin modules of a cargo build, for benchmarks and development.
pub fn default_module_dir() -> PathBuf {
    let relative = Path::new("wasm32-unknown-unknown").join("plugin");
    beside_build(&relative).unwrap_or(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_tables_become_json_for_the_plugin() {
        let config: Config = toml::from_str(
            "[plugins.network-scan]\nthreshold = 50\nmin_ports = 2\n[flow]\ncapacity = 1024\n",
        )
        .expect("valid config");
        assert_eq!(config.flow.capacity, 1024);
        let json: serde_json::Value =
            serde_json::from_str(&config.plugin_config_json("network-scan").expect("set"))
                .expect("json");
        assert_eq!(json["threshold"], 50);
        assert_eq!(config.plugin_config_json("rdp-scan"), None);
    }

    #[test]
    fn the_reorder_window_comes_from_the_capture_section() {
        assert_eq!(
            Config::default().capture.reorder(),
            ReorderConfig::default()
        );
        let config: Config =
            toml::from_str("[capture]\nreorder_window_ms = 50\nreorder_max_packets = 10\n")
                .expect("valid config");
        assert_eq!(
            config.capture.reorder(),
            ReorderConfig {
                window_micros: 50_000,
                max_packets: 10,
                max_bytes: ReorderConfig::default().max_bytes,
            }
        );
        let err = toml::from_str::<Config>("[capture]\nreorder_window = 5\n").expect_err("typo");
        assert!(err.to_string().contains("reorder_window"), "{err}");
    }

    #[test]
    fn fragment_bounds_are_read_and_unknown_ones_refused() {
        let config: Config =
            toml::from_str("[fragments]\nmax_bytes = 1048576\ntimeout_secs = 30\n").expect("valid");
        assert_eq!(config.fragments.max_bytes, 1_048_576);
        assert_eq!(config.fragments.timeout_secs, 30);
        assert_eq!(config.fragments.max_datagrams, 4096);
        assert_eq!(config.fragments.max_datagram_bytes, 65_535);
        let err = toml::from_str::<Config>("[fragments]\nmax_byte = 5\n").expect_err("typo");
        assert!(err.to_string().contains("max_byte"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = toml::from_str::<Config>("[flow]\ncapcity = 5\n").expect_err("typo");
        assert!(err.to_string().contains("capcity"), "{err}");
    }
}
