//! The plugin host: runs ABI v1 plugin modules (see `vigil_plugin_sdk::abi`) under wasmtime,
//! each in its own store with a memory cap and a wall-clock deadline per call.
//!
//! What a caller may rely on:
//! - a module is checked at load: it must be wasm, import nothing but `vigil.emit_breach` and
//!   `vigil.log` (no WASI), export the ABI v1 functions with their exact types, speak ABI major 1,
//!   carry a readable manifest with a name no other loaded plugin has, and accept its config;
//!   otherwise [`PluginHost::load`] returns a [`LoadError`] naming the module's origin;
//! - a plugin only receives the event classes its manifest subscribed to, in batch order;
//! - a call that traps (an `unreachable`, a bad memory access, running past
//!   [`HostConfig::batch_deadline_ms`], growing past [`HostConfig::memory_limit_bytes`]) or hands
//!   back an out-of-bounds buffer is a *failure*: the batch's breaches are lost, the store is
//!   dropped, and the next call runs in a fresh instance re-initialised with the same config
//!   (so state learned before the failure is lost too);
//! - after [`HostConfig::max_consecutive_traps`] failing batches in a row a plugin is quarantined:
//!   it receives nothing more, while every other plugin keeps running; a good batch resets the
//!   count;
//! - nothing a guest hands over (pointers, lengths, encodings) is trusted: it is bounds-checked
//!   and decoded fallibly, and what cannot be read is counted in [`PluginStats::bad_output`],
//!   never a panic;
//! - the plugins of a round run concurrently on [`HostConfig::plugin_threads`] threads, yet what
//!   they raise is merged in plugin order: the result is that of running them one by one. A
//!   panic while running a plugin is a failure of that plugin, like a trap.

mod batch;
pub mod cache;
mod instance;
mod parallel;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vigil_plugin_sdk::abi;
use vigil_plugin_sdk::{ActionRequest, Breach, EventClass, Incident, Manifest, PluginKind};
use wasmtime::{Engine, ExternType, InstancePre, Linker};

pub use batch::EventBatch;
pub use cache::CacheStats;
use instance::{HostState, Instance, Sandbox};
use parallel::{Panicked, Rounds};

/// How often the watchdog thread advances the engine's epoch; deadlines are counted in these
/// ticks, so a call is interrupted between `batch_deadline_ms` and one tick later.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits every plugin runs under. Plugins are untrusted code: each limit turns a misbehaving
/// plugin into a counted failure of that plugin alone.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Largest linear memory one plugin instance may have (default 64 MiB). A `memory.grow` past
    /// it traps (a memory bomb becomes a counted failure, not a host out-of-memory), and a module
    /// whose initial memory is larger is refused at load.
    pub memory_limit_bytes: usize,
    /// Wall-clock budget of one call into a plugin (default 200 ms): a batch, or at load the ABI,
    /// manifest and init calls. Past it the call traps with an interrupt, counted as a failure.
    pub batch_deadline_ms: u64,
    /// Failing batches in a row after which a plugin is quarantined (default 3).
    pub max_consecutive_traps: u32,
    /// Where compiled modules are cached across runs; `None` keeps the cache in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Read-only modules compiled ahead of time by `vigil plugins precompile`, used first.
    pub precompiled_dir: Option<PathBuf>,
    /// Compile for the baseline CPU of this build's target instead of this machine's features,
    /// so that modules compiled ahead of time on another machine are the ones looked up.
    pub portable_code: bool,
    /// Threads the plugins of a dispatch round run on (default: the cores available, at most
    /// [`MAX_PLUGIN_THREADS`]). 1 runs them one after another on the caller's thread, with no
    /// thread created. More threads than plugins with work in a round do not help: a plugin
    /// runs on one thread at a time.
    pub plugin_threads: usize,
}

/// The default [`HostConfig::plugin_threads`] uses at most this many cores: the factory set has
/// about a dozen plugins, and a few dominate a round.
pub const MAX_PLUGIN_THREADS: usize = 8;

/// The cores available to this process, at most [`MAX_PLUGIN_THREADS`].
pub fn default_plugin_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_PLUGIN_THREADS)
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            memory_limit_bytes: 64 * 1024 * 1024,
            batch_deadline_ms: 200,
            max_consecutive_traps: 3,
            cache_dir: None,
            precompiled_dir: None,
            portable_code: false,
            plugin_threads: default_plugin_threads(),
        }
    }
}

impl HostConfig {
    fn sandbox(&self) -> Sandbox {
        let tick = EPOCH_TICK.as_millis() as u64;
        Sandbox {
            memory_limit_bytes: self.memory_limit_bytes,
            // Rounded up, plus the tick already under way when the call starts, so a call always
            // gets at least its full budget.
            deadline_ticks: self.batch_deadline_ms.div_ceil(tick).max(1) + 1,
            deadline_ms: self.batch_deadline_ms,
        }
    }
}

/// A loaded plugin; valid for the host that returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PluginId(usize);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginStats {
    /// Batches handed to the plugin (including failed ones).
    pub batches: u64,
    /// Events in those batches.
    pub events: u64,
    /// Breaches raised and delivered.
    pub breaches: u64,
    /// Failed calls: traps, deadlines, memory-cap hits, out-of-bounds buffers, failed
    /// re-initialisation.
    pub traps: u64,
    /// Breaches or log lines the plugin handed over that could not be read (bad pointer, bad
    /// encoding, over a size limit), and batches it refused with a status.
    pub bad_output: u64,
    /// Action requests refused because the plugin is not a responder.
    pub actions_refused: u64,
    /// How long its batches took.
    pub batch_durations: BatchDurations,
}

/// Upper bounds of the buckets of [`BatchDurations`].
pub const BATCH_DURATION_BOUNDS: [Duration; 8] = [
    Duration::from_micros(10),
    Duration::from_micros(50),
    Duration::from_micros(100),
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(50),
];

/// How long a plugin's batches took, counted in buckets (one clock read per batch, no more).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchDurations {
    /// Batches per bucket: `in_bucket[i]` took longer than bound `i - 1` and at most bound `i`
    /// of [`BATCH_DURATION_BOUNDS`]; longer ones are only in `count`.
    pub in_bucket: [u64; BATCH_DURATION_BOUNDS.len()],
    pub count: u64,
    pub total: Duration,
}

impl BatchDurations {
    fn record(&mut self, took: Duration) {
        if let Some(bucket) = BATCH_DURATION_BOUNDS
            .iter()
            .position(|bound| took <= *bound)
        {
            self.in_bucket[bucket] += 1;
        }
        self.count += 1;
        self.total = self.total.saturating_add(took);
    }
}

#[derive(Debug, Clone)]
pub struct PluginStatus {
    pub id: PluginId,
    pub name: String,
    pub version: String,
    pub kind: PluginKind,
    /// Where it was loaded from (the `origin` passed to [`PluginHost::load`]).
    pub origin: String,
    /// Who signed its bundle, by name in the delegation (`None`: unsigned, development only).
    pub signer: Option<String>,
    pub stats: PluginStats,
    pub quarantined: bool,
    /// Why the last failed call failed (e.g. `trapped: wasm \`unreachable\` instruction executed
    /// in on_batch <- ...`).
    pub last_error: Option<String>,
}

/// Breaches are passed on to breach-consuming plugins at most this many times: a detector's
/// breach to a meta model, the meta model's breach to the analyst. Bounds every chain.
pub const MAX_BREACH_HOPS: u8 = 2;

/// A breach and the plugin that raised it.
#[derive(Debug, Clone)]
pub struct Emitted {
    pub plugin: String,
    pub plugin_version: String,
    pub origin: PluginId,
    /// How many breaches led to this one (0: raised from traffic).
    pub hop: u8,
    pub breach: Breach,
}

/// An action a responder plugin requested.
#[derive(Debug, Clone)]
pub struct EmittedAction {
    pub plugin: String,
    pub plugin_version: String,
    pub action: ActionRequest,
}

/// An incident (or a new version of one) and the analyst plugin that wrote it. Shared: it is
/// passed on to responders, written, and kept for the status API, and its timeline is long.
#[derive(Debug, Clone)]
pub struct EmittedIncident {
    pub plugin: String,
    pub plugin_version: String,
    pub incident: std::sync::Arc<Incident>,
}

/// Why a module was not loaded. Each names the module's origin (its file path).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{origin}: not a WebAssembly module (no `\\0asm` header)")]
    NotWasm { origin: String },
    #[error("{origin}: does not compile: {reason}")]
    Compile { origin: String, reason: String },
    #[error("{origin}: imports `{import}`: {reason}")]
    ForbiddenImport {
        origin: String,
        import: String,
        reason: String,
    },
    #[error("{origin}: does not export `{name}`: not a Vigil ABI v1 plugin")]
    MissingExport { origin: String, name: String },
    #[error("{origin}: exports `{name}` with the wrong type (ABI v1 wants {expected})")]
    WrongExportType {
        origin: String,
        name: String,
        expected: String,
    },
    #[error(
        "{origin}: built for plugin ABI {found_major}, this appliance speaks ABI {expected_major}"
    )]
    AbiMismatch {
        origin: String,
        found_major: u16,
        expected_major: u16,
    },
    #[error("{origin}: bad manifest: {reason}")]
    BadManifest { origin: String, reason: String },
    #[error("{origin}: plugin `{name}` is already loaded")]
    Duplicate { origin: String, name: String },
    #[error("{origin}: initialisation failed: {reason}")]
    InitFailed { origin: String, reason: String },
}

struct Plugin {
    manifest: Manifest,
    /// The ABI minor the module was built for: which form of a changed event it decodes.
    abi_minor: u16,
    origin: String,
    /// Who signed the bundle it came from (`None`: an unsigned development module).
    signer: Option<String>,
    /// What `vigil_init` gets, at load and after every re-instantiation.
    config_json: String,
    pre: InstancePre<HostState>,
    /// `None` after a failure until the next call re-instantiates it, and once quarantined.
    instance: Option<Instance>,
    stats: PluginStats,
    consecutive_failures: u32,
    quarantined: bool,
    last_error: Option<String>,
    /// This plugin's share of a batch, reused between batches.
    filtered: Vec<u8>,
    /// The version this one replaced, while the new one is on probation.
    previous: Option<Box<Previous>>,
}

/// What one plugin raised in one round, kept apart from the others' until they are merged in
/// plugin order.
#[derive(Default)]
struct RoundOutput {
    breaches: Vec<Emitted>,
    incidents: Vec<EmittedIncident>,
    actions: Vec<EmittedAction>,
    rollback: Option<Rollback>,
}

/// A replaced plugin, frozen with its state at the moment of the swap.
struct Previous {
    plugin: Plugin,
    good_batches: u32,
}

/// Good batches after which a swapped-in version is trusted and its predecessor dropped.
pub const PROBATION_BATCHES: u32 = 64;

/// A plugin put back to its previous version.
#[derive(Debug, Clone)]
pub struct Rollback {
    pub plugin: String,
    pub failed_version: String,
    pub restored_version: String,
    pub reason: String,
}

/// Why a swap or model update did not happen; the running plugin is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("no such plugin is running")]
    NoSuchPlugin,
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the new module is plugin `{offered}`, not `{running}`")]
    OtherPlugin { running: String, offered: String },
    #[error("the running plugin could not hand over its state: {0}")]
    Snapshot(String),
    /// The new version refused the running one's learned state (its `migrate` failed, or the
    /// state is not one it can read): the running version keeps running with its state.
    #[error(
        "plugin {plugin} {offered} could not take over the learned state of {running}: {reason}"
    )]
    Restore {
        plugin: String,
        running: String,
        offered: String,
        reason: String,
    },
    #[error("the plugin refused the new config: {0}")]
    Refused(String),
}

impl Plugin {
    /// A plugin with a ready instance and nothing counted yet.
    fn fresh(
        manifest: Manifest,
        abi_minor: u16,
        origin: String,
        config_json: String,
        pre: InstancePre<HostState>,
        instance: Instance,
    ) -> Plugin {
        Plugin {
            manifest,
            abi_minor,
            origin,
            signer: None,
            config_json,
            pre,
            instance: Some(instance),
            stats: PluginStats::default(),
            consecutive_failures: 0,
            quarantined: false,
            last_error: None,
            filtered: Vec::new(),
            previous: None,
        }
    }

    /// Runs `call` on the plugin's instance, re-instantiating it first if a failure dropped it.
    /// A failure (anything but a refusal status) drops the instance and is counted; quarantine is
    /// the caller's decision.
    fn call<T>(
        &mut self,
        config: &HostConfig,
        call: impl FnOnce(&mut Instance) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let result = match self.instance.as_mut() {
            Some(instance) => call(instance),
            None => self.reinstantiate(config.sandbox()).and_then(|()| {
                let instance = self
                    .instance
                    .as_mut()
                    .ok_or_else(|| anyhow::anyhow!("no instance after re-instantiation"))?;
                call(instance)
            }),
        };
        if let Err(err) = &result {
            if instance::is_failure(err) {
                self.failed(instance::describe_failure(err, &config.sandbox()));
            }
        }
        result
    }

    /// Counts a failed call: the instance is dropped, the next call starts a fresh one.
    fn failed(&mut self, message: String) {
        self.instance = None;
        self.stats.traps += 1;
        self.consecutive_failures += 1;
        tracing::warn!(
            "plugin {} failed ({} in a row): {message}",
            self.manifest.name,
            self.consecutive_failures
        );
        self.last_error = Some(message);
    }

    /// After a failed batch: the previous version comes back or the plugin is quarantined, if
    /// it has failed often enough.
    fn after_failed_batch(&mut self, config: &HostConfig) -> Option<Rollback> {
        let rollback = self.roll_back_if_due(config);
        self.quarantine_if_due(config);
        rollback
    }

    /// Copies the plugin's share of `batch` (it is plugin number `index`) into `filtered`;
    /// how many events that is (none once quarantined).
    fn select(&mut self, index: usize, batch: &EventBatch) -> usize {
        if self.quarantined {
            return 0;
        }
        batch.select(
            self.manifest.subscriptions,
            &self.manifest.filter,
            Some(index),
            self.abi_minor,
            &mut self.filtered,
        )
    }

    /// Hands the plugin the `count` events [`Plugin::select`] left in `filtered` and returns
    /// what it raised. A failed call is counted here, and may roll the plugin back or
    /// quarantine it.
    fn run_selected(
        &mut self,
        index: usize,
        count: usize,
        hop: u8,
        config: &HostConfig,
    ) -> RoundOutput {
        let mut output = RoundOutput::default();
        let events = std::mem::take(&mut self.filtered);
        self.stats.batches += 1;
        self.stats.events += count as u64;
        let started = std::time::Instant::now();
        let result = self.call(config, |instance| instance.on_batch(&events));
        self.stats.batch_durations.record(started.elapsed());
        match result {
            Ok(report) => {
                self.consecutive_failures = 0;
                self.probation_passed();
                self.stats.bad_output += report.bad_output;
                self.drain_into(index, hop, &mut output);
            }
            // A refusal status is reported in `Ok`; an `Err` has already been counted.
            Err(_) => output.rollback = self.after_failed_batch(config),
        }
        self.filtered = events;
        output
    }

    /// Moves what the instance raised during its last call into `output`; an action request
    /// from a plugin that is not a responder is refused and counted.
    fn drain_into(&mut self, index: usize, hop: u8, output: &mut RoundOutput) {
        let Some(instance) = self.instance.as_mut() else {
            return;
        };
        let (name, version) = (&self.manifest.name, &self.manifest.version);
        output
            .breaches
            .extend(instance.drain_breaches().map(|breach| Emitted {
                plugin: name.clone(),
                plugin_version: version.clone(),
                origin: PluginId(index),
                hop,
                breach,
            }));
        self.stats.breaches += output.breaches.len() as u64;
        output
            .incidents
            .extend(instance.drain_incidents().map(|incident| EmittedIncident {
                plugin: name.clone(),
                plugin_version: version.clone(),
                incident,
            }));
        let requested: Vec<ActionRequest> = instance.drain_actions().collect();
        if self.manifest.kind == PluginKind::Responder {
            output
                .actions
                .extend(requested.into_iter().map(|action| EmittedAction {
                    plugin: name.clone(),
                    plugin_version: version.clone(),
                    action,
                }));
        } else if !requested.is_empty() {
            self.stats.actions_refused += requested.len() as u64;
            tracing::warn!(
                "plugin {} ({:?}) requested {} action(s): refused, only a responder may",
                self.manifest.name,
                self.manifest.kind,
                requested.len()
            );
        }
    }

    /// A round whose work panicked (a bug on the host's side of the call, or in wasmtime): a
    /// failure of this plugin like a trap, so the rest of the appliance keeps running.
    fn panicked(&mut self, panic: Panicked, config: &HostConfig) -> RoundOutput {
        self.failed(format!("the host panicked running it: {}", panic.0));
        RoundOutput {
            rollback: self.after_failed_batch(config),
            ..RoundOutput::default()
        }
    }

    fn reinstantiate(&mut self, sandbox: Sandbox) -> anyhow::Result<()> {
        let instance =
            Instance::new(&self.pre, sandbox, &self.manifest.name).and_then(|mut instance| {
                instance.init(&self.config_json)?;
                Ok(instance)
            });
        // A failure here is the plugin's (its init traps, or refuses the config it accepted
        // before), so even a refusal counts as a failure.
        let instance = instance.map_err(|err| {
            anyhow::Error::new(instance::Reinit(instance::describe_failure(&err, &sandbox)))
        })?;
        self.instance = Some(instance);
        Ok(())
    }

    /// Counts a good batch of a swapped-in version; past probation its predecessor goes.
    fn probation_passed(&mut self) {
        if let Some(previous) = self.previous.as_mut() {
            previous.good_batches += 1;
            if previous.good_batches >= PROBATION_BATCHES {
                self.previous = None;
            }
        }
    }

    /// A swapped-in version that keeps failing gives way to the one it replaced.
    fn roll_back_if_due(&mut self, config: &HostConfig) -> Option<Rollback> {
        if self.consecutive_failures < config.max_consecutive_traps {
            return None;
        }
        let previous = self.previous.take()?;
        let failed = std::mem::replace(self, previous.plugin);
        self.stats = failed.stats;
        let rollback = Rollback {
            plugin: self.manifest.name.clone(),
            failed_version: failed.manifest.version,
            restored_version: self.manifest.version.clone(),
            reason: failed.last_error.unwrap_or_else(|| "failures".into()),
        };
        tracing::error!(
            "PLUGIN ROLLED BACK: {} {} failed {} batches in a row ({}); {} is running again \
             with the state it had",
            rollback.plugin,
            rollback.failed_version,
            failed.consecutive_failures,
            rollback.reason,
            rollback.restored_version
        );
        Some(rollback)
    }

    fn quarantine_if_due(&mut self, config: &HostConfig) {
        if self.quarantined || self.consecutive_failures < config.max_consecutive_traps {
            return;
        }
        self.quarantined = true;
        self.instance = None;
        tracing::error!(
            "PLUGIN QUARANTINED: {} {} (from {}) failed {} batches in a row and will receive no \
             more events; the rest of the appliance keeps running. Last error: {}",
            self.manifest.name,
            self.manifest.version,
            self.origin,
            self.consecutive_failures,
            self.last_error.as_deref().unwrap_or("unknown")
        );
    }
}

/// Runs plugins. One wasmtime [`Engine`] (and its compiled-module cache) serves every plugin;
/// each plugin has its own store. Not `Sync`: one pipeline thread drives it, and it lends the
/// plugins to its own threads during a dispatch round.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<HostState>,
    config: HostConfig,
    cache: cache::ModuleCache,
    plugins: Vec<Plugin>,
    incidents: Vec<EmittedIncident>,
    actions: Vec<EmittedAction>,
    rollbacks: Vec<Rollback>,
    rounds: Rounds,
    ticker_stop: Arc<AtomicBool>,
}

/// The engine plugins run on. `portable_target` (a target triple) compiles for that target's
/// baseline CPU rather than for this machine, as `vigil plugins precompile` does for an image.
pub fn engine(portable_target: Option<&str>) -> anyhow::Result<Engine> {
    let mut engine_config = wasmtime::Config::new();
    // The epoch is the watchdog: a load and a compare per loop header and function entry,
    // cheap for healthy plugins, unlike per-instruction fuel (a guest hash-map resize took
    // 15 M fuel).
    engine_config.epoch_interruption(true);
    engine_config.wasm_backtrace_max_frames(std::num::NonZeroUsize::new(16));
    if let Some(target) = portable_target {
        engine_config
            .target(target)
            .map_err(|err| anyhow::anyhow!("target {target}: {err}"))?;
    }
    Engine::new(&engine_config).map_err(|err| anyhow::anyhow!("{err}"))
}

impl PluginHost {
    /// A host with no plugins, its watchdog thread (`vigil-epoch`, stopped when the host is
    /// dropped) and the threads the plugins run on (`vigil-plugins-N`, unless
    /// [`HostConfig::plugin_threads`] is 1).
    pub fn new(config: HostConfig) -> anyhow::Result<PluginHost> {
        let host_triple = target_lexicon::HOST.to_string();
        let engine = engine(config.portable_code.then_some(host_triple.as_str()))?;
        let linker = instance::linker(&engine)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let ticker = engine.weak();
        let stop = Arc::clone(&ticker_stop);
        std::thread::Builder::new()
            .name("vigil-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        let rounds = Rounds::new(config.plugin_threads)?;
        Ok(PluginHost {
            rounds,
            cache: cache::ModuleCache::new(
                config.cache_dir.clone(),
                config.precompiled_dir.clone(),
            ),
            engine,
            linker,
            config,
            plugins: Vec::new(),
            incidents: Vec::new(),
            actions: Vec::new(),
            rollbacks: Vec::new(),
            ticker_stop,
        })
    }

    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Where module loads were served from.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Compiles (or fetches from the cache), checks and initialises a plugin module.
    /// `origin` names the module in messages (its file path); `config_json` overrides the
    /// plugin's default config, `None` keeps its defaults.
    pub fn load(
        &mut self,
        wasm: &[u8],
        origin: &str,
        config_json: Option<&str>,
    ) -> Result<PluginId, LoadError> {
        self.load_checked(wasm, origin, config_json, |_| Ok(()))
    }

    /// [`PluginHost::load`], refusing the module unless `check` accepts what it says about
    /// itself (a signed bundle's manifest must agree with the module's own).
    pub fn load_checked(
        &mut self,
        wasm: &[u8],
        origin: &str,
        config_json: Option<&str>,
        check: impl FnOnce(&Manifest) -> Result<(), String>,
    ) -> Result<PluginId, LoadError> {
        let plugin = self.prepare(wasm, origin, config_json)?;
        check(&plugin.manifest).map_err(|reason| LoadError::BadManifest {
            origin: origin.to_string(),
            reason,
        })?;
        if self.find(&plugin.manifest.name).is_some() {
            return Err(LoadError::Duplicate {
                origin: origin.to_string(),
                name: plugin.manifest.name,
            });
        }
        tracing::info!(
            "loaded plugin {} {} ({:?}) from {origin}",
            plugin.manifest.name,
            plugin.manifest.version,
            plugin.manifest.kind
        );
        self.plugins.push(plugin);
        Ok(PluginId(self.plugins.len() - 1))
    }

    /// Compiles, checks and initialises a module without running it yet.
    fn prepare(
        &mut self,
        wasm: &[u8],
        origin: &str,
        config_json: Option<&str>,
    ) -> Result<Plugin, LoadError> {
        let origin_s = || origin.to_string();
        if !wasm.starts_with(b"\0asm") {
            return Err(LoadError::NotWasm { origin: origin_s() });
        }
        let module = self
            .cache
            .get_or_compile(&self.engine, wasm)
            .map_err(|err| LoadError::Compile {
                origin: origin_s(),
                reason: format!("{err:#}"),
            })?;
        if let Some(version) = instance::probe_abi(&module, self.config.sandbox()) {
            let found_major = abi::abi_major(version);
            if found_major != abi::ABI_MAJOR {
                return Err(LoadError::AbiMismatch {
                    origin: origin_s(),
                    found_major,
                    expected_major: abi::ABI_MAJOR,
                });
            }
        }
        if let Some((import, reason)) = instance::unsupported_import(&module) {
            return Err(LoadError::ForbiddenImport {
                origin: origin_s(),
                import,
                reason,
            });
        }
        for (name, params, results) in instance::EXPORTS {
            let Some(ty) = module.get_export(name) else {
                return Err(LoadError::MissingExport {
                    origin: origin_s(),
                    name: name.into(),
                });
            };
            if !instance::is_func(&ty, params, results) {
                return Err(LoadError::WrongExportType {
                    origin: origin_s(),
                    name: name.into(),
                    expected: instance::signature(params, results),
                });
            }
        }
        match module.get_export("memory") {
            Some(ExternType::Memory(_)) => {}
            Some(_) => {
                return Err(LoadError::WrongExportType {
                    origin: origin_s(),
                    name: "memory".into(),
                    expected: "a memory".into(),
                })
            }
            None => {
                return Err(LoadError::MissingExport {
                    origin: origin_s(),
                    name: "memory".into(),
                })
            }
        }
        let init_failed = |err: anyhow::Error| LoadError::InitFailed {
            origin: origin_s(),
            reason: instance::describe_failure(&err, &self.config.sandbox()),
        };
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|err| init_failed(err.into()))?;
        let mut instance =
            Instance::new(&pre, self.config.sandbox(), origin).map_err(init_failed)?;
        let version = instance.abi().map_err(init_failed)?;
        let (found_major, abi_minor) = (abi::abi_major(version), abi::abi_minor(version));
        if found_major != abi::ABI_MAJOR {
            return Err(LoadError::AbiMismatch {
                origin: origin_s(),
                found_major,
                expected_major: abi::ABI_MAJOR,
            });
        }
        let manifest = instance
            .manifest(abi_minor)
            .map_err(|err| LoadError::BadManifest {
                origin: origin_s(),
                reason: format!("{err:#}"),
            })?;
        check_manifest(&manifest).map_err(|reason| LoadError::BadManifest {
            origin: origin_s(),
            reason,
        })?;
        instance.rename(&manifest.name);
        let config_json = config_json.unwrap_or("").to_string();
        instance.init(&config_json).map_err(init_failed)?;
        Ok(Plugin::fresh(
            manifest,
            abi_minor,
            origin_s(),
            config_json,
            pre,
            instance,
        ))
    }

    /// Replaces a running plugin with a new module of the same name, between batches: the old
    /// instance's learned state is restored into the new one, which receives every event from
    /// the next batch on. On any error nothing changes. The old version is kept, frozen with
    /// its state, until the new one has run [`PROBATION_BATCHES`] good batches: if the new one
    /// fails [`HostConfig::max_consecutive_traps`] batches in a row before that, the old one
    /// comes back instead of a quarantine (see [`PluginHost::take_rollbacks`]).
    pub fn swap(
        &mut self,
        id: PluginId,
        wasm: &[u8],
        origin: &str,
        config_json: Option<&str>,
        check: impl FnOnce(&Manifest) -> Result<(), String>,
    ) -> Result<(), SwapError> {
        let running = self.plugins.get(id.0).ok_or(SwapError::NoSuchPlugin)?;
        // Without a new config the new version runs with the one in force (the operator's).
        let config_json = config_json
            .map(str::to_string)
            .unwrap_or_else(|| running.config_json.clone());
        let replacement = self.prepare(wasm, origin, Some(&config_json))?;
        check(&replacement.manifest).map_err(|reason| LoadError::BadManifest {
            origin: origin.to_string(),
            reason,
        })?;
        self.replace(id, replacement)
    }

    /// A model update: the same module with new config, taking over the learned state like
    /// [`PluginHost::swap`] (and rolled back the same way if the config makes it fail).
    pub fn reconfigure(&mut self, id: PluginId, config_json: &str) -> Result<(), SwapError> {
        let current = self.plugins.get(id.0).ok_or(SwapError::NoSuchPlugin)?;
        let sandbox = self.config.sandbox();
        let mut instance = Instance::new(&current.pre, sandbox, &current.manifest.name)
            .and_then(|mut instance| instance.init(config_json).map(|()| instance))
            .map_err(|err| SwapError::Refused(instance::describe_failure(&err, &sandbox)))?;
        instance.rename(&current.manifest.name);
        let replacement = Plugin::fresh(
            current.manifest.clone(),
            current.abi_minor,
            current.origin.clone(),
            config_json.to_string(),
            current.pre.clone(),
            instance,
        );
        self.replace(id, replacement)
    }

    fn replace(&mut self, id: PluginId, mut replacement: Plugin) -> Result<(), SwapError> {
        let config = self.config.clone();
        let current = self.plugins.get_mut(id.0).ok_or(SwapError::NoSuchPlugin)?;
        if replacement.manifest.name != current.manifest.name {
            return Err(SwapError::OtherPlugin {
                running: current.manifest.name.clone(),
                offered: replacement.manifest.name,
            });
        }
        // A quarantined plugin has no state left to carry over.
        if !current.quarantined {
            let state = current
                .call(&config, Instance::snapshot)
                .map_err(|err| SwapError::Snapshot(describe_err(&err, &config)))?;
            replacement
                .call(&config, |instance| instance.restore(&state))
                .map_err(|err| SwapError::Restore {
                    plugin: current.manifest.name.clone(),
                    running: current.manifest.version.clone(),
                    offered: replacement.manifest.version.clone(),
                    reason: describe_err(&err, &config),
                })?;
        }
        replacement.stats = current.stats;
        let mut previous = std::mem::replace(current, replacement);
        // The old version's own fallback is not kept: one step back is what an operator expects.
        previous.previous = None;
        tracing::info!(
            "plugin {} swapped: {} -> {} (state carried over)",
            current.manifest.name,
            previous.manifest.version,
            current.manifest.version
        );
        current.previous = Some(Box::new(Previous {
            plugin: previous,
            good_batches: 0,
        }));
        Ok(())
    }

    /// Plugins put back to their previous version since the last call, because the new one kept
    /// failing.
    pub fn take_rollbacks(&mut self) -> Vec<Rollback> {
        std::mem::take(&mut self.rollbacks)
    }

    /// Shows the signed bundle's `version` and `signer` for the plugin (in alerts and listings):
    /// the bundle's version may differ from the module's own (a config-only update has its own).
    pub fn set_bundle(&mut self, id: PluginId, version: &str, signer: &str) {
        if let Some(plugin) = self.plugins.get_mut(id.0) {
            plugin.manifest.version = version.to_string();
            plugin.signer = Some(signer.to_string());
        }
    }

    pub fn find(&self, name: &str) -> Option<PluginId> {
        self.plugins
            .iter()
            .position(|p| p.manifest.name == name)
            .map(PluginId)
    }

    /// What a loaded plugin says about itself (as read at load; `vigil bundle build` puts it in
    /// the bundle manifest).
    pub fn manifest(&self, id: PluginId) -> Option<&Manifest> {
        self.plugins.get(id.0).map(|p| &p.manifest)
    }

    /// Every loaded plugin, in load order.
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
                signer: p.signer.clone(),
                stats: p.stats,
                quarantined: p.quarantined,
                last_error: p.last_error.clone(),
            })
            .collect()
    }

    /// Hands a batch to every plugin subscribed to its events, then passes the breaches they
    /// raised on to the plugins that consume breaches (meta models, the analyst), hop by hop up
    /// to [`MAX_BREACH_HOPS`]; a plugin never receives its own breaches. Returns every breach
    /// raised, in order; incidents wait in [`PluginHost::take_incidents`].
    pub fn dispatch(&mut self, batch: &EventBatch) -> Vec<Emitted> {
        let mut emitted = Vec::new();
        let incidents_before = self.incidents.len();
        self.dispatch_round(batch, 0, &mut emitted);
        // Plugins run one after another over the whole batch; putting their breaches back in
        // packet-time order makes what consumers see independent of plugin and batch order.
        emitted.sort_by_key(|e| e.breach.ts);
        let mut fresh = 0..emitted.len();
        for hop in 1..=MAX_BREACH_HOPS {
            let consumers = self
                .plugins
                .iter()
                .any(|p| !p.quarantined && p.manifest.subscriptions.contains(EventClass::Breach));
            if fresh.is_empty() || !consumers {
                break;
            }
            let mut chained = EventBatch::new();
            for e in &emitted[fresh.clone()] {
                chained.push_from(&e.breach.to_event(&e.plugin, e.hop), Some(e.origin.0));
            }
            let before = emitted.len();
            self.dispatch_round(&chained, hop, &mut emitted);
            emitted[before..].sort_by_key(|e| e.breach.ts);
            fresh = before..emitted.len();
        }
        self.pass_on_incidents(incidents_before, &mut emitted);
        emitted
    }

    /// Hands the incidents written during this dispatch to the plugins that subscribed to
    /// incidents (responders), once, in packet-time order; never back to the analyst that wrote
    /// them.
    fn pass_on_incidents(&mut self, from: usize, emitted: &mut Vec<Emitted>) {
        let consumers = self
            .plugins
            .iter()
            .any(|p| !p.quarantined && p.manifest.subscriptions.contains(EventClass::Incident));
        if !consumers || self.incidents.len() <= from {
            return;
        }
        let mut written: Vec<(std::sync::Arc<Incident>, Option<usize>)> = self.incidents[from..]
            .iter()
            .map(|e| {
                let origin = self
                    .plugins
                    .iter()
                    .position(|p| p.manifest.name == e.plugin);
                (std::sync::Arc::clone(&e.incident), origin)
            })
            .collect();
        written.sort_by_key(|(incident, _)| incident.last);
        let mut batch = EventBatch::new();
        for (incident, origin) in &written {
            batch.push_from(&incident.to_event(), *origin);
        }
        self.dispatch_round(&batch, MAX_BREACH_HOPS + 1, emitted);
    }

    /// The actions responder plugins requested since the last call.
    pub fn take_actions(&mut self) -> Vec<EmittedAction> {
        std::mem::take(&mut self.actions)
    }

    /// The incidents analyst plugins wrote since the last call.
    pub fn take_incidents(&mut self) -> Vec<EmittedIncident> {
        std::mem::take(&mut self.incidents)
    }

    /// Runs a round (see [`parallel`]) and appends what the plugins raised, plugin by plugin
    /// in plugin order, as running them one after another would.
    fn dispatch_round(&mut self, batch: &EventBatch, hop: u8, emitted: &mut Vec<Emitted>) {
        let config = &self.config;
        // Selecting is a copy, done here: only the plugins with events to handle go to the
        // threads, so a round that has one (a breach hop, the incidents) stays on this thread.
        let mut busy: Vec<(usize, usize, &mut Plugin)> = self
            .plugins
            .iter_mut()
            .enumerate()
            .filter_map(|(index, plugin)| {
                let count = plugin.select(index, batch);
                (count > 0).then_some((index, count, plugin))
            })
            .collect();
        let outputs = self.rounds.run(&mut busy, |(index, count, plugin)| {
            plugin.run_selected(*index, *count, hop, config)
        });
        for ((_, _, plugin), output) in busy.into_iter().zip(outputs) {
            let output = output.unwrap_or_else(|panic| plugin.panicked(panic, config));
            emitted.extend(output.breaches);
            self.incidents.extend(output.incidents);
            self.actions.extend(output.actions);
            self.rollbacks.extend(output.rollback);
        }
    }

    fn plugin_mut(&mut self, id: PluginId) -> anyhow::Result<&mut Plugin> {
        let plugin = self
            .plugins
            .get_mut(id.0)
            .ok_or_else(|| anyhow::anyhow!("no plugin with id {}", id.0))?;
        anyhow::ensure!(
            !plugin.quarantined,
            "plugin {} is quarantined",
            plugin.manifest.name
        );
        Ok(plugin)
    }

    /// The plugin's learned state, as its `vigil_snapshot` encodes it.
    pub fn snapshot(&mut self, id: PluginId) -> anyhow::Result<Vec<u8>> {
        let config = self.config.clone();
        let plugin = self.plugin_mut(id)?;
        let name = plugin.manifest.name.clone();
        let result = plugin.call(&config, Instance::snapshot);
        plugin.quarantine_if_due(&config);
        result.map_err(|err| describe(&name, "snapshot", &err, &config))
    }

    /// Puts learned state back into the plugin; its config is kept. A snapshot the plugin
    /// refuses (`BadSnapshot`) leaves its current state as it was.
    pub fn restore(&mut self, id: PluginId, bytes: &[u8]) -> anyhow::Result<()> {
        let config = self.config.clone();
        let plugin = self.plugin_mut(id)?;
        let name = plugin.manifest.name.clone();
        let result = plugin.call(&config, |instance| instance.restore(bytes));
        plugin.quarantine_if_due(&config);
        result.map_err(|err| describe(&name, "restore", &err, &config))
    }
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn describe_err(err: &anyhow::Error, config: &HostConfig) -> String {
    if instance::is_failure(err) {
        instance::describe_failure(err, &config.sandbox())
    } else {
        err.to_string()
    }
}

fn describe(plugin: &str, what: &str, err: &anyhow::Error, config: &HostConfig) -> anyhow::Error {
    let reason = describe_err(err, config);
    anyhow::anyhow!("plugin {plugin}: {what} failed: {reason}")
}

/// The manifest's name ends up in file names (saved state) and log lines, so it is held to the
/// form the SDK's plugins use: `network-scan`.
fn check_manifest(manifest: &Manifest) -> Result<(), String> {
    let name = &manifest.name;
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        return Err(format!(
            "plugin name {name:?} is not 1-64 characters of a-z, 0-9, '-' and '_'"
        ));
    }
    let version = &manifest.version;
    if version.is_empty() || version.len() > 32 || !version.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!("version {version:?} is not a semantic version"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
