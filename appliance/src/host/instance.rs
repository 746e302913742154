//! One plugin instance: its store, its exports, and the host functions it may import.

use vigil_plugin_sdk::abi::{self, Status};
use vigil_plugin_sdk::{Breach, Manifest};
use wasmtime::{
    Caller, Engine, InstancePre, Linker, Memory, Store, StoreLimits, StoreLimitsBuilder, Trap,
    TypedFunc,
};

use super::HostConfig;

/// The functions a plugin may import from module `vigil`.
pub const IMPORTS: [&str; 2] = ["emit_breach", "log"];
/// What a module must export to be a plugin.
pub const REQUIRED_EXPORTS: [&str; 8] = [
    "memory",
    "vigil_abi",
    "vigil_alloc",
    "vigil_manifest",
    "vigil_init",
    "vigil_on_batch",
    "vigil_snapshot",
    "vigil_restore",
];
/// A single breach larger than this is hostile, not evidence.
const MAX_BREACH_BYTES: usize = 256 * 1024;
/// Breaches one batch may raise; more are dropped and counted.
const MAX_BREACHES_PER_BATCH: usize = 10_000;
const MAX_LOG_BYTES: usize = 4096;
const MAX_LOGS_PER_BATCH: u32 = 100;
/// Largest snapshot or manifest read back out of a guest.
const MAX_OUTPUT_BYTES: usize = 256 * 1024 * 1024;

/// What the host functions see of the store.
pub struct HostState {
    limits: StoreLimits,
    plugin: String,
    breaches: Vec<Breach>,
    bad_output: u64,
    logs: u32,
}

pub struct BatchOutcome {
    pub breaches: Vec<Breach>,
    pub bad_output: u64,
}

pub fn linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    linker.func_wrap(
        abi::IMPORT_MODULE,
        "emit_breach",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
            let breach = read_guest(&mut caller, ptr, len, MAX_BREACH_BYTES)
                .and_then(|bytes| postcard::from_bytes::<Breach>(&bytes).ok());
            let state = caller.data_mut();
            match breach {
                Some(breach) if state.breaches.len() < MAX_BREACHES_PER_BATCH => {
                    state.breaches.push(breach)
                }
                _ => state.bad_output += 1,
            }
        },
    )?;
    linker.func_wrap(
        abi::IMPORT_MODULE,
        "log",
        |mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| {
            if caller.data().logs >= MAX_LOGS_PER_BATCH {
                return;
            }
            caller.data_mut().logs += 1;
            let Some(bytes) = read_guest(&mut caller, ptr, len, MAX_LOG_BYTES) else {
                caller.data_mut().bad_output += 1;
                return;
            };
            let text = String::from_utf8_lossy(&bytes);
            let plugin = &caller.data().plugin;
            match level {
                abi::level::ERROR => tracing::error!("plugin {plugin}: {text}"),
                abi::level::WARN => tracing::warn!("plugin {plugin}: {text}"),
                abi::level::INFO => tracing::info!("plugin {plugin}: {text}"),
                _ => tracing::debug!("plugin {plugin}: {text}"),
            }
        },
    )?;
    Ok(linker)
}

/// Copies `len` bytes at guest address `ptr` out of the caller's memory, if they are all there.
fn read_guest(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    len: i32,
    max: usize,
) -> Option<Vec<u8>> {
    let memory = caller.get_export("memory")?.into_memory()?;
    let range = guest_range(ptr, len, max)?;
    memory.data(&caller).get(range).map(<[u8]>::to_vec)
}

fn guest_range(ptr: i32, len: i32, max: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(ptr as u32).ok()?;
    let len = usize::try_from(len as u32).ok()?;
    if len > max {
        return None;
    }
    Some(start..start.checked_add(len)?)
}

pub struct Instance {
    store: Store<HostState>,
    memory: Memory,
    deadline_ticks: u64,
    abi: TypedFunc<(), i32>,
    alloc: TypedFunc<i32, i32>,
    manifest: TypedFunc<(), i64>,
    init: TypedFunc<(i32, i32), i32>,
    on_batch: TypedFunc<(i32, i32), i32>,
    snapshot: TypedFunc<(), i64>,
    restore: TypedFunc<(i32, i32), i32>,
}

impl Instance {
    pub fn new(
        engine: &Engine,
        pre: &InstancePre<HostState>,
        config: &HostConfig,
        deadline_ticks: u64,
        plugin: &str,
    ) -> anyhow::Result<Instance> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(config.memory_limit_bytes)
            .instances(1)
            .memories(1)
            .tables(4)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            engine,
            HostState {
                limits,
                plugin: plugin.to_string(),
                breaches: Vec::new(),
                bad_output: 0,
                logs: 0,
            },
        );
        store.limiter(|state| &mut state.limits);
        // Start functions run under the same deadline as any call.
        store.set_epoch_deadline(deadline_ticks);
        store.epoch_deadline_trap();
        let instance = pre.instantiate(&mut store)?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| anyhow::anyhow!("exports no memory"))?;
        Ok(Instance {
            abi: instance.get_typed_func(&mut store, "vigil_abi")?,
            alloc: instance.get_typed_func(&mut store, "vigil_alloc")?,
            manifest: instance.get_typed_func(&mut store, "vigil_manifest")?,
            init: instance.get_typed_func(&mut store, "vigil_init")?,
            on_batch: instance.get_typed_func(&mut store, "vigil_on_batch")?,
            snapshot: instance.get_typed_func(&mut store, "vigil_snapshot")?,
            restore: instance.get_typed_func(&mut store, "vigil_restore")?,
            store,
            memory,
            deadline_ticks,
        })
    }

    /// Names the plugin in its log lines once its manifest is known.
    pub fn rename(&mut self, plugin: &str) {
        self.store.data_mut().plugin = plugin.to_string();
    }

    fn arm(&mut self) {
        self.store.set_epoch_deadline(self.deadline_ticks);
        let state = self.store.data_mut();
        state.breaches.clear();
        state.bad_output = 0;
        state.logs = 0;
    }

    pub fn abi(&mut self) -> anyhow::Result<i32> {
        self.arm();
        Ok(self.abi.call(&mut self.store, ())?)
    }

    pub fn manifest(&mut self) -> anyhow::Result<Manifest> {
        self.arm();
        let packed = self.manifest.call(&mut self.store, ())?;
        let bytes = self.read_packed(packed)?;
        Ok(postcard::from_bytes(&bytes)?)
    }

    pub fn init(&mut self, config_json: &str) -> anyhow::Result<()> {
        self.arm();
        let (ptr, len) = self.write(config_json.as_bytes())?;
        let status = self.init.call(&mut self.store, (ptr, len))?;
        check_status("vigil_init", status)
    }

    pub fn on_batch(&mut self, events: &[u8]) -> anyhow::Result<BatchOutcome> {
        self.arm();
        let (ptr, len) = self.write(events)?;
        let status = self.on_batch.call(&mut self.store, (ptr, len))?;
        let state = self.store.data_mut();
        let mut outcome = BatchOutcome {
            breaches: std::mem::take(&mut state.breaches),
            bad_output: state.bad_output,
        };
        if status != Status::Ok as i32 {
            // The plugin could not read what we sent: its fault or ours, but not a trap.
            outcome.bad_output += 1;
            tracing::warn!(
                "plugin {} rejected a batch with status {status}",
                self.store.data().plugin
            );
        }
        Ok(outcome)
    }

    pub fn snapshot(&mut self) -> anyhow::Result<Vec<u8>> {
        self.arm();
        let packed = self.snapshot.call(&mut self.store, ())?;
        self.read_packed(packed)
    }

    pub fn restore(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.arm();
        let (ptr, len) = self.write(bytes)?;
        let status = self.restore.call(&mut self.store, (ptr, len))?;
        check_status("vigil_restore", status)
    }

    /// Asks the guest for a buffer and fills it; the guest's answer is bounds-checked.
    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<(i32, i32)> {
        let len = i32::try_from(bytes.len())?;
        let ptr = self.alloc.call(&mut self.store, len)?;
        let range = guest_range(ptr, len, usize::MAX)
            .ok_or_else(|| anyhow::anyhow!("vigil_alloc returned an invalid buffer"))?;
        let target = self
            .memory
            .data_mut(&mut self.store)
            .get_mut(range)
            .ok_or_else(|| anyhow::anyhow!("vigil_alloc returned a buffer outside memory"))?;
        target.copy_from_slice(bytes);
        Ok((ptr, len))
    }

    fn read_packed(&mut self, packed: i64) -> anyhow::Result<Vec<u8>> {
        let (ptr, len) = abi::unpack(packed);
        let range = guest_range(ptr as i32, len as i32, MAX_OUTPUT_BYTES)
            .ok_or_else(|| anyhow::anyhow!("returned an invalid buffer ({len} bytes)"))?;
        self.memory
            .data(&self.store)
            .get(range)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| anyhow::anyhow!("returned a buffer outside its memory"))
    }
}

fn check_status(call: &str, status: i32) -> anyhow::Result<()> {
    match Status::from_code(status) {
        Some(Status::Ok) => Ok(()),
        Some(other) => anyhow::bail!("{call} returned {other:?}"),
        None => anyhow::bail!("{call} returned unknown status {status}"),
    }
}

/// A one-line reason for a failed call, naming deadline and memory-cap traps plainly.
pub fn describe_failure(err: &anyhow::Error, config: &HostConfig) -> String {
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!(
            "exceeded its {} ms batch deadline (interrupted)",
            config.batch_deadline_ms
        ),
        Some(Trap::AllocationTooLarge) => format!(
            "tried to grow its memory past the {} MiB limit",
            config.memory_limit_bytes / (1024 * 1024)
        ),
        Some(trap) => format!("trapped: {trap}"),
        None => {
            let text = format!("{err:#}");
            if text.contains("forcing trap when growing memory") {
                format!(
                    "tried to grow its memory past the {} MiB limit",
                    config.memory_limit_bytes / (1024 * 1024)
                )
            } else {
                text
            }
        }
    }
}
