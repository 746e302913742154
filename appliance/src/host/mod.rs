//! The plugin host: runs ABI v1 plugin modules (see `vigil_plugin_sdk::abi`) under wasmtime,
//! each in its own store with a memory cap and a wall-clock deadline per batch.
//!
//! What a caller may rely on:
//! - a plugin only receives the event classes its manifest subscribed to;
//! - a plugin that traps (including running past its deadline or its memory cap) loses that
//!   batch and is re-instantiated fresh; after `max_consecutive_traps` failing batches in a row
//!   it is quarantined and receives nothing more, while every other plugin keeps running;
//! - nothing a guest returns (pointers, lengths, encodings) is trusted: it is bounds-checked and
//!   decoded, and failures are counted, never panics.

mod batch;
mod cache;
mod instance;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vigil_plugin_sdk::{Breach, Manifest, PluginKind};
use wasmtime::{Engine, Linker, Module};

pub use batch::EventBatch;
use instance::{HostState, Instance};

/// How often the watchdog advances the engine's epoch; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Largest linear memory one plugin instance may have. Growing past it traps the plugin
    /// (a memory bomb becomes a counted trap, not a host out-of-memory).
    pub memory_limit_bytes: usize,
    /// Wall-clock budget of one call into a plugin. Past it the call is interrupted with a trap.
    pub batch_deadline_ms: u64,
    /// Failing batches in a row after which a plugin is quarantined.
    pub max_consecutive_traps: u32,
    /// Where compiled modules are cached across runs; `None` keeps the cache in memory only.
    pub cache_dir: Option<PathBuf>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            memory_limit_bytes: 64 * 1024 * 1024,
            batch_deadline_ms: 200,
            max_consecutive_traps: 3,
            cache_dir: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PluginId(usize);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginStats {
    pub batches: u64,
    pub events: u64,
    pub breaches: u64,
    pub traps: u64,
    /// Breaches or log lines the plugin handed over that could not be read (bad pointer,
    /// bad encoding, over the size limit), and batches it reported as unreadable.
    pub bad_output: u64,
}

#[derive(Debug, Clone)]
pub struct PluginStatus {
    pub id: PluginId,
    pub name: String,
    pub version: String,
    pub kind: PluginKind,
    pub origin: String,
    pub stats: PluginStats,
    pub quarantined: bool,
    pub last_error: Option<String>,
}

/// A breach and the plugin that raised it.
#[derive(Debug, Clone)]
pub struct Emitted {
    pub plugin: String,
    pub plugin_version: String,
    pub breach: Breach,
}

/// Why a module was not loaded. Each names the module's origin (file path).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{origin}: not a WebAssembly module")]
    NotWasm { origin: String },
    #[error("{origin}: does not compile: {reason}")]
    Compile { origin: String, reason: String },
    #[error("{origin}: imports {import}, which Vigil does not provide (plugins may import only vigil.emit_breach and vigil.log: no WASI, no clock, no I/O)")]
    ForbiddenImport { origin: String, import: String },
    #[error("{origin}: does not export `{name}`: not a Vigil ABI v1 plugin")]
    MissingExport { origin: String, name: String },
    #[error("{origin}: built for plugin ABI {found}, this appliance speaks ABI {expected}")]
    AbiMismatch {
        origin: String,
        found: u16,
        expected: u16,
    },
    #[error("{origin}: unreadable manifest: {reason}")]
    BadManifest { origin: String, reason: String },
    #[error("{origin}: plugin `{name}` is already loaded")]
    Duplicate { origin: String, name: String },
    #[error("{origin}: initialisation failed: {reason}")]
    InitFailed { origin: String, reason: String },
}

struct Plugin {
    manifest: Manifest,
    origin: String,
    config_json: String,
    pre: wasmtime::InstancePre<HostState>,
    /// `None` after a trap until the next batch re-instantiates it.
    instance: Option<Instance>,
    stats: PluginStats,
    consecutive_failures: u32,
    quarantined: bool,
    last_error: Option<String>,
    /// This plugin's share of a batch, reused between batches.
    filtered: Vec<u8>,
}

pub struct PluginHost {
    engine: Engine,
    linker: Linker<HostState>,
    config: HostConfig,
    cache: cache::ModuleCache,
    plugins: Vec<Plugin>,
    ticker_stop: Arc<AtomicBool>,
}

impl PluginHost {
    pub fn new(config: HostConfig) -> anyhow::Result<PluginHost> {
        let mut engine_config = wasmtime::Config::new();
        // The epoch is the watchdog: cheap for healthy plugins, unlike per-instruction fuel.
        engine_config.epoch_interruption(true);
        let engine = Engine::new(&engine_config)?;
        let linker = instance::linker(&engine)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let stop = Arc::clone(&ticker_stop);
        std::thread::Builder::new()
            .name("vigil-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })?;
        Ok(PluginHost {
            cache: cache::ModuleCache::new(config.cache_dir.clone()),
            engine,
            linker,
            config,
            plugins: Vec::new(),
            ticker_stop,
        })
    }

    fn deadline_ticks(&self) -> u64 {
        (self.config.batch_deadline_ms / EPOCH_TICK.as_millis() as u64).max(1)
    }

    /// Compiles (or fetches from the cache), checks and initialises a plugin module.
    /// `config_json` overrides the plugin's default config; `None` keeps its defaults.
    pub fn load(
        &mut self,
        wasm: &[u8],
        origin: &str,
        config_json: Option<&str>,
    ) -> Result<PluginId, LoadError> {
        let origin_s = origin.to_string();
        if !wasm.starts_with(b"\0asm") {
            return Err(LoadError::NotWasm { origin: origin_s });
        }
        let module = self
            .cache
            .get_or_compile(&self.engine, wasm)
            .map_err(|err| LoadError::Compile {
                origin: origin_s.clone(),
                reason: format!("{err:#}"),
            })?;
        check_imports(&module, origin)?;
        for name in instance::REQUIRED_EXPORTS {
            if module.get_export(name).is_none() {
                return Err(LoadError::MissingExport {
                    origin: origin_s,
                    name: name.to_string(),
                });
            }
        }
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|err| LoadError::Compile {
                origin: origin_s.clone(),
                reason: format!("{err:#}"),
            })?;
        let ticks = self.deadline_ticks();
        let mut instance = Instance::new(&self.engine, &pre, &self.config, ticks, origin)
            .map_err(|err| init_failed(origin, err))?;
        let abi = instance.abi().map_err(|err| init_failed(origin, err))?;
        let found = vigil_plugin_sdk::abi::abi_major(abi);
        if found != vigil_plugin_sdk::abi::ABI_MAJOR {
            return Err(LoadError::AbiMismatch {
                origin: origin_s,
                found,
                expected: vigil_plugin_sdk::abi::ABI_MAJOR,
            });
        }
        let manifest = instance.manifest().map_err(|err| LoadError::BadManifest {
            origin: origin_s.clone(),
            reason: format!("{err:#}"),
        })?;
        if self
            .plugins
            .iter()
            .any(|p| p.manifest.name == manifest.name)
        {
            return Err(LoadError::Duplicate {
                origin: origin_s,
                name: manifest.name,
            });
        }
        let config_json = config_json.unwrap_or("").to_string();
        instance
            .init(&config_json)
            .map_err(|err| init_failed(origin, err))?;
        instance.rename(&manifest.name);
        tracing::info!(
            "loaded plugin {} {} ({:?}) from {origin}",
            manifest.name,
            manifest.version,
            manifest.kind
        );
        self.plugins.push(Plugin {
            manifest,
            origin: origin_s,
            config_json,
            pre,
            instance: Some(instance),
            stats: PluginStats::default(),
            consecutive_failures: 0,
            quarantined: false,
            last_error: None,
            filtered: Vec::new(),
        });
        Ok(PluginId(self.plugins.len() - 1))
    }

    pub fn find(&self, name: &str) -> Option<PluginId> {
        self.plugins
            .iter()
            .position(|p| p.manifest.name == name)
            .map(PluginId)
    }

    pub fn plugins(&self) -> Vec<PluginStatus> {
        self.plugins
            .iter()
            .enumerate()
            .map(|(i, p)| PluginStatus {
                id: PluginId(i),
                name: p.manifest.name.clone(),
                version: p.manifest.version.clone(),
                kind: p.manifest.kind,
                origin: p.origin.clone(),
                stats: p.stats,
                quarantined: p.quarantined,
                last_error: p.last_error.clone(),
            })
            .collect()
    }

    /// Hands each plugin its subscribed share of `batch`; returns the breaches raised.
    pub fn dispatch(&mut self, batch: &EventBatch) -> Vec<Emitted> {
        let mut emitted = Vec::new();
        let ticks = self.deadline_ticks();
        for plugin in &mut self.plugins {
            if plugin.quarantined {
                continue;
            }
            let events = batch.select(plugin.manifest.subscriptions, &mut plugin.filtered);
            if events == 0 {
                continue;
            }
            let outcome = run_batch(&self.engine, &self.config, ticks, plugin);
            plugin.stats.batches += 1;
            plugin.stats.events += events as u64;
            match outcome {
                Ok(outcome) => {
                    plugin.consecutive_failures = 0;
                    plugin.stats.bad_output += outcome.bad_output;
                    plugin.stats.breaches += outcome.breaches.len() as u64;
                    emitted.extend(outcome.breaches.into_iter().map(|breach| Emitted {
                        plugin: plugin.manifest.name.clone(),
                        plugin_version: plugin.manifest.version.clone(),
                        breach,
                    }));
                }
                Err(err) => fail(plugin, &self.config, err),
            }
        }
        emitted
    }

    /// The plugin's learned state.
    pub fn snapshot(&mut self, id: PluginId) -> anyhow::Result<Vec<u8>> {
        let ticks = self.deadline_ticks();
        let plugin = self
            .plugins
            .get_mut(id.0)
            .ok_or_else(|| anyhow::anyhow!("no plugin with id {}", id.0))?;
        ensure_instance(&self.engine, &self.config, ticks, plugin)?;
        let instance = plugin
            .instance
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no instance"))?;
        instance.snapshot()
    }

    /// Puts learned state back into the plugin (its config is kept).
    pub fn restore(&mut self, id: PluginId, bytes: &[u8]) -> anyhow::Result<()> {
        let ticks = self.deadline_ticks();
        let plugin = self
            .plugins
            .get_mut(id.0)
            .ok_or_else(|| anyhow::anyhow!("no plugin with id {}", id.0))?;
        ensure_instance(&self.engine, &self.config, ticks, plugin)?;
        let instance = plugin
            .instance
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no instance"))?;
        instance.restore(bytes)
    }
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn init_failed(origin: &str, err: anyhow::Error) -> LoadError {
    LoadError::InitFailed {
        origin: origin.to_string(),
        reason: format!("{err:#}"),
    }
}

fn check_imports(module: &Module, origin: &str) -> Result<(), LoadError> {
    for import in module.imports() {
        let allowed = import.module() == vigil_plugin_sdk::abi::IMPORT_MODULE
            && instance::IMPORTS.contains(&import.name());
        if !allowed {
            return Err(LoadError::ForbiddenImport {
                origin: origin.to_string(),
                import: format!("{}.{}", import.module(), import.name()),
            });
        }
    }
    Ok(())
}

/// Re-instantiates a plugin that lost its instance to a trap, with its config (fresh state).
fn ensure_instance(
    engine: &Engine,
    config: &HostConfig,
    ticks: u64,
    plugin: &mut Plugin,
) -> anyhow::Result<()> {
    if plugin.instance.is_none() {
        let mut instance =
            Instance::new(engine, &plugin.pre, config, ticks, &plugin.manifest.name)?;
        instance.init(&plugin.config_json)?;
        plugin.instance = Some(instance);
    }
    Ok(())
}

fn run_batch(
    engine: &Engine,
    config: &HostConfig,
    ticks: u64,
    plugin: &mut Plugin,
) -> anyhow::Result<instance::BatchOutcome> {
    ensure_instance(engine, config, ticks, plugin)?;
    let instance = plugin
        .instance
        .as_mut()
        .ok_or_else(|| anyhow::anyhow!("no instance"))?;
    instance.on_batch(&plugin.filtered)
}

/// Counts a failed batch; drops the (possibly corrupt) instance; quarantines a repeat offender.
fn fail(plugin: &mut Plugin, config: &HostConfig, err: anyhow::Error) {
    plugin.stats.traps += 1;
    plugin.consecutive_failures += 1;
    plugin.instance = None;
    let message = instance::describe_failure(&err, config);
    tracing::warn!(
        "plugin {} failed a batch ({} in a row): {message}",
        plugin.manifest.name,
        plugin.consecutive_failures
    );
    plugin.last_error = Some(message);
    if plugin.consecutive_failures >= config.max_consecutive_traps {
        plugin.quarantined = true;
        tracing::error!(
            "plugin {} QUARANTINED after {} failing batches in a row; the rest of the pipeline keeps running. Last error: {}",
            plugin.manifest.name,
            plugin.consecutive_failures,
            plugin.last_error.as_deref().unwrap_or("")
        );
    }
}
