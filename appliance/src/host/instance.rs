//! One plugin instance: its store, its exports, and the host functions it may import.
//!
//! Nothing the guest hands over is trusted. Every pointer and length it passes to an import or
//! returns from an export is bounds-checked against its own linear memory and a size limit, and
//! every encoding is decoded fallibly: a hostile guest costs itself a counted error, never a host
//! panic or an unbounded host allocation.

use std::ops::Range;
use std::sync::Arc;

use vigil_plugin_sdk::abi::{self, Status};
use vigil_plugin_sdk::incident_update::UpdateDecoder;
use vigil_plugin_sdk::{ActionRequest, Breach, Incident, Manifest};
use wasmtime::{
    Caller, ExternType, InstancePre, Linker, Memory, Module, Store, StoreLimits,
    StoreLimitsBuilder, Trap, TypedFunc, ValType, WasmBacktrace,
};

/// The functions a plugin may import from module `vigil`, with their parameter types (none
/// returns a value).
pub const IMPORTS: [(&str, &[Num]); 5] = [
    ("emit_breach", &[Num::I32, Num::I32]),
    ("emit_incident", &[Num::I32, Num::I32]),
    ("emit_incident_update", &[Num::I32, Num::I32]),
    ("request_action", &[Num::I32, Num::I32]),
    ("log", &[Num::I32, Num::I32, Num::I32]),
];

/// The functions a plugin must export: name, parameters, results.
pub const EXPORTS: [(&str, &[Num], &[Num]); 7] = [
    ("vigil_abi", &[], &[Num::I32]),
    ("vigil_alloc", &[Num::I32], &[Num::I32]),
    ("vigil_manifest", &[], &[Num::I64]),
    ("vigil_init", &[Num::I32, Num::I32], &[Num::I32]),
    ("vigil_on_batch", &[Num::I32, Num::I32], &[Num::I32]),
    ("vigil_snapshot", &[], &[Num::I64]),
    ("vigil_restore", &[Num::I32, Num::I32], &[Num::I32]),
];

/// The only value types ABI v1 uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Num {
    I32,
    I64,
}

impl Num {
    fn matches(self, ty: &ValType) -> bool {
        match self {
            Num::I32 => matches!(ty, ValType::I32),
            Num::I64 => matches!(ty, ValType::I64),
        }
    }
}

/// Renders a signature the way an author would write it in WAT.
pub fn signature(params: &[Num], results: &[Num]) -> String {
    let names = |nums: &[Num]| {
        nums.iter()
            .map(|n| match n {
                Num::I32 => "i32",
                Num::I64 => "i64",
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut text = String::from("(func");
    if !params.is_empty() {
        text.push_str(&format!(" (param {})", names(params)));
    }
    if !results.is_empty() {
        text.push_str(&format!(" (result {})", names(results)));
    }
    text.push(')');
    text
}

/// Whether `ty` is a function with exactly these parameter and result types.
pub fn is_func(ty: &ExternType, params: &[Num], results: &[Num]) -> bool {
    let ExternType::Func(func) = ty else {
        return false;
    };
    func.params().len() == params.len()
        && func.results().len() == results.len()
        && func.params().zip(params).all(|(ty, n)| n.matches(&ty))
        && func.results().zip(results).all(|(ty, n)| n.matches(&ty))
}

/// One encoded breach larger than this is hostile, not evidence (a real one is well under 4 KiB;
/// a range scan listing 1,000 destinations is about 20 KiB).
const MAX_BREACH_BYTES: usize = 256 * 1024;
/// Encoded breach bytes one call may hand over in total; past it breaches are dropped and counted.
/// Decoding can multiply the size (an empty string is one byte encoded, 24 decoded), so this
/// bounds what one batch can make the host allocate.
const MAX_BREACH_BYTES_PER_CALL: usize = 2 * 1024 * 1024;
/// Breaches one call may raise; past it they are dropped and counted.
const MAX_BREACHES_PER_CALL: usize = 4096;
/// Longest log line kept; longer ones are cut.
const MAX_LOG_BYTES: usize = 4096;
/// Log lines one call may write; past it they are dropped silently (a chatty plugin must not be
/// able to flood the appliance's log).
const MAX_LOGS_PER_CALL: u32 = 64;

/// Largest number of table elements an instance may have: a Rust plugin's function table holds
/// a few hundred entries, so this only stops a module that declares a huge table.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// What the host functions see of the store.
pub struct HostState {
    limits: StoreLimits,
    /// The plugin's name (or origin until its manifest is read), for log lines.
    plugin: String,
    /// The guest's exported memory, set once instantiated.
    memory: Option<Memory>,
    /// Breaches and incidents raised during the current call.
    breaches: Vec<Breach>,
    incidents: Vec<Arc<Incident>>,
    /// Rebuilds whole incidents from the updates of an analyst built for ABI 1.3; lives as long
    /// as the instance, as the plugin's encoder does.
    incident_updates: UpdateDecoder,
    /// Action requests of the current call; the host decides whether the plugin may make them.
    actions: Vec<ActionRequest>,
    breach_bytes: usize,
    /// Breaches and log lines that could not be read during the current call.
    bad_output: u64,
    logs: u32,
    /// The last error-level log line of the current call, to explain a refusal status.
    last_error_log: Option<String>,
}

pub fn linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    linker.func_wrap(abi::IMPORT_MODULE, "emit_breach", emit_breach)?;
    linker.func_wrap(abi::IMPORT_MODULE, "emit_incident", emit_incident)?;
    linker.func_wrap(
        abi::IMPORT_MODULE,
        "emit_incident_update",
        emit_incident_update,
    )?;
    linker.func_wrap(abi::IMPORT_MODULE, "request_action", request_action)?;
    linker.func_wrap(abi::IMPORT_MODULE, "log", log)?;
    Ok(linker)
}

/// Where one output a plugin hands over (a breach, an incident, an action) lies in guest memory,
/// within the per-call limits; `None` when it is out of bounds or over them.
fn output_range(state: &HostState, ptr: i32, len: i32) -> Option<Range<usize>> {
    let range = guest_range(ptr, len, MAX_BREACH_BYTES)?;
    let outputs = state.breaches.len() + state.incidents.len() + state.actions.len();
    if outputs >= MAX_BREACHES_PER_CALL
        || state.breach_bytes + range.len() > MAX_BREACH_BYTES_PER_CALL
    {
        return None;
    }
    Some(range)
}

/// Takes one output a plugin hands over: `decode`s it straight out of guest memory within the
/// per-call limits (with the host state at hand, which the incident updates need) and `keep`s
/// it. Anything unreadable or over the limits is counted in `bad_output` and dropped.
fn take_output<T>(
    mut caller: Caller<'_, HostState>,
    ptr: i32,
    len: i32,
    decode: impl FnOnce(&mut HostState, &[u8]) -> Option<T>,
    keep: impl FnOnce(&mut HostState, T),
) {
    let memory = caller.data().memory;
    let taken = memory.and_then(|memory| {
        let range = output_range(caller.data(), ptr, len)?;
        let size = range.len();
        let (data, state) = memory.data_and_store_mut(&mut caller);
        decode(state, data.get(range)?).map(|value| (value, size))
    });
    let state = caller.data_mut();
    match taken {
        Some((value, size)) => {
            state.breach_bytes += size;
            keep(state, value);
        }
        None => state.bad_output += 1,
    }
}

/// Decodes a postcard value, for [`take_output`].
fn postcard_value<T: serde::de::DeserializeOwned>(_: &mut HostState, bytes: &[u8]) -> Option<T> {
    postcard::from_bytes(bytes).ok()
}

/// `vigil.emit_breach(ptr, len)`: a postcard `Breach` in guest memory.
fn emit_breach(caller: Caller<'_, HostState>, ptr: i32, len: i32) {
    take_output(caller, ptr, len, postcard_value, |state, breach: Breach| {
        state.breaches.push(breach)
    });
}

/// `vigil.emit_incident(ptr, len)`: a postcard `Incident` from an analyst plugin built for ABI
/// 1.0-1.2, under the same limits as breaches.
fn emit_incident(caller: Caller<'_, HostState>, ptr: i32, len: i32) {
    take_output(
        caller,
        ptr,
        len,
        postcard_value,
        |state, incident: Incident| state.incidents.push(Arc::new(incident)),
    );
}

/// `vigil.emit_incident_update(ptr, len)`: a new version of an incident as an update (see
/// `vigil_plugin_sdk::incident_update`), under the same limits; one that cannot be rebuilt is
/// bad output.
fn emit_incident_update(caller: Caller<'_, HostState>, ptr: i32, len: i32) {
    let rebuild = |state: &mut HostState, bytes: &[u8]| {
        state
            .incident_updates
            .decode(bytes)
            .map_err(|err| tracing::debug!("plugin {}: {err}", state.plugin))
            .ok()
    };
    take_output(caller, ptr, len, rebuild, |state, incident| {
        state.incidents.push(incident)
    });
}

/// `vigil.request_action(ptr, len)`: a postcard `ActionRequest`, under the same limits.
fn request_action(caller: Caller<'_, HostState>, ptr: i32, len: i32) {
    take_output(
        caller,
        ptr,
        len,
        postcard_value,
        |state, action: ActionRequest| state.actions.push(action),
    );
}

/// `vigil.log(level, ptr, len)`: UTF-8 text (invalid sequences are replaced), forwarded to
/// `tracing` under the plugin's name.
fn log(caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32) {
    let mut caller = caller;
    let state = caller.data_mut();
    if state.logs >= MAX_LOGS_PER_CALL {
        return;
    }
    state.logs += 1;
    let Some(memory) = state.memory else {
        state.bad_output += 1;
        return;
    };
    // An over-long line is cut, not refused: the start is what explains it (a character split
    // at the cut becomes U+FFFD). A negative length stays an error.
    let text = guest_range(ptr, len.min(MAX_LOG_BYTES as i32), MAX_LOG_BYTES)
        .and_then(|range| memory.data(&caller).get(range))
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned());
    let state = caller.data_mut();
    let Some(text) = text else {
        state.bad_output += 1;
        return;
    };
    let plugin = &state.plugin;
    match level {
        abi::level::ERROR => tracing::error!("plugin {plugin}: {text}"),
        abi::level::WARN => tracing::warn!("plugin {plugin}: {text}"),
        abi::level::INFO => tracing::info!("plugin {plugin}: {text}"),
        _ => tracing::debug!("plugin {plugin}: {text}"),
    }
    if level == abi::level::ERROR {
        state.last_error_log = Some(text);
    }
}

/// The byte range `ptr..ptr + len` of guest memory, if `len` is at most `max`. Both numbers are
/// the guest's `i32`s read as unsigned wasm32 addresses; the caller still checks the range against
/// the memory's current size (`<[u8]>::get`).
pub fn guest_range(ptr: i32, len: i32, max: usize) -> Option<Range<usize>> {
    let start = usize::try_from(ptr as u32).ok()?;
    let len = usize::try_from(len as u32).ok()?;
    if len > max {
        return None;
    }
    Some(start..start.checked_add(len)?)
}

/// A plugin answered a call with a refusal status instead of trapping: the instance is intact.
#[derive(Debug, thiserror::Error)]
#[error("{call} returned {status}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
pub struct Refused {
    pub call: &'static str,
    pub status: String,
    /// The plugin's own explanation: its last error-level log line during the call.
    pub message: Option<String>,
}

/// The sandbox every instance runs in.
#[derive(Debug, Clone, Copy)]
pub struct Sandbox {
    /// Largest linear memory (and the cap on each `memory.grow`): past it, growing traps.
    pub memory_limit_bytes: usize,
    /// Epoch ticks one call may run before it is interrupted with `Trap::Interrupt`.
    pub deadline_ticks: u64,
    /// The deadline as configured, for messages.
    pub deadline_ms: u64,
}

/// A store for one instance, with the sandbox's limits and deadline.
fn new_store(engine: &wasmtime::Engine, sandbox: Sandbox, plugin: &str) -> Store<HostState> {
    // Limits of the sandbox: a memory or table growing past its cap traps (rather than
    // `memory.grow` returning -1, which a careless loop would ignore); one instance, one memory.
    // `memory_size` also refuses to instantiate a module whose initial memory is already over
    // the cap.
    let limits = StoreLimitsBuilder::new()
        .memory_size(sandbox.memory_limit_bytes)
        .table_elements(MAX_TABLE_ELEMENTS)
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
            memory: None,
            breaches: Vec::new(),
            incidents: Vec::new(),
            incident_updates: UpdateDecoder::default(),
            actions: Vec::new(),
            breach_bytes: 0,
            bad_output: 0,
            logs: 0,
            last_error_log: None,
        },
    );
    store.limiter(|state| &mut state.limits);
    // Past the deadline a call traps with `Trap::Interrupt` (the default is to trap; said here so
    // that nobody switches it to yielding without a reason). The deadline also covers the
    // module's start function.
    store.epoch_deadline_trap();
    store.set_epoch_deadline(sandbox.deadline_ticks);
    store
}

/// Asks a module which ABI it speaks before holding it to ABI v1's imports and exports, so a
/// plugin built for another ABI is told so rather than that it imports or exports the wrong
/// things. Imports it asks for are stubbed with traps. `None` if it has no usable `vigil_abi`.
pub fn probe_abi(module: &Module, sandbox: Sandbox) -> Option<i32> {
    let ty = module.get_export("vigil_abi")?;
    if !is_func(&ty, &[], &[Num::I32]) {
        return None;
    }
    let mut linker = Linker::new(module.engine());
    linker.define_unknown_imports_as_traps(module).ok()?;
    let mut store = new_store(module.engine(), sandbox, "probe");
    let instance = linker.instantiate(&mut store, module).ok()?;
    let abi = instance
        .get_typed_func::<(), i32>(&mut store, "vigil_abi")
        .ok()?;
    abi.call(&mut store, ()).ok()
}

/// What a batch did besides raising breaches.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchReport {
    /// Breaches or log lines that could not be read, plus one if the plugin refused the batch.
    pub bad_output: u64,
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
    /// A fresh instance in a new store. The module's start function, if any, already runs under
    /// the deadline and the memory cap.
    pub fn new(
        pre: &InstancePre<HostState>,
        sandbox: Sandbox,
        plugin: &str,
    ) -> anyhow::Result<Instance> {
        let mut store = new_store(pre.module().engine(), sandbox, plugin);
        let instance = pre.instantiate(&mut store)?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| anyhow::anyhow!("exports no memory named `memory`"))?;
        store.data_mut().memory = Some(memory);
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
            deadline_ticks: sandbox.deadline_ticks,
        })
    }

    /// Names the plugin in its log lines once its manifest is known.
    pub fn rename(&mut self, plugin: &str) {
        self.store.data_mut().plugin = plugin.to_string();
    }

    /// Starts a call: a fresh deadline and empty per-call output.
    fn arm(&mut self) {
        self.store.set_epoch_deadline(self.deadline_ticks);
        let state = self.store.data_mut();
        state.breaches.clear();
        state.incidents.clear();
        state.actions.clear();
        state.breach_bytes = 0;
        state.bad_output = 0;
        state.logs = 0;
        state.last_error_log = None;
    }

    pub fn abi(&mut self) -> anyhow::Result<i32> {
        self.arm();
        Ok(self.abi.call(&mut self.store, ())?)
    }

    /// The module's manifest, as its ABI minor version `minor` writes it.
    pub fn manifest(&mut self, minor: u16) -> anyhow::Result<Manifest> {
        self.arm();
        let packed = self.manifest.call(&mut self.store, ())?;
        let bytes = self.read_packed(packed, "vigil_manifest")?;
        let not_a_manifest = |err| anyhow::anyhow!("not a postcard Manifest: {err}");
        if minor == 0 {
            return postcard::from_bytes::<ManifestV1_0>(bytes)
                .map(Manifest::from)
                .map_err(not_a_manifest);
        }
        postcard::from_bytes(bytes).map_err(not_a_manifest)
    }

    pub fn init(&mut self, config_json: &str) -> anyhow::Result<()> {
        self.arm();
        let (ptr, len) = self.write(config_json.as_bytes())?;
        let status = self.init.call(&mut self.store, (ptr, len))?;
        self.check_status("vigil_init", status)
    }

    /// Runs one batch (postcard events back to back). The breaches it raised are then in
    /// [`Instance::drain_breaches`]. A refusal status is reported, not an error: the instance
    /// is intact and the next batch may be fine.
    pub fn on_batch(&mut self, events: &[u8]) -> anyhow::Result<BatchReport> {
        self.arm();
        let (ptr, len) = self.write(events)?;
        let status = self.on_batch.call(&mut self.store, (ptr, len))?;
        let mut report = BatchReport {
            bad_output: self.store.data().bad_output,
        };
        if status != Status::Ok as i32 {
            report.bad_output += 1;
            tracing::warn!(
                "plugin {} refused a batch: {}",
                self.store.data().plugin,
                self.check_status("vigil_on_batch", status)
                    .err()
                    .map(|err| err.to_string())
                    .unwrap_or_default()
            );
        }
        Ok(report)
    }

    /// The breaches raised by the last call, leaving the buffer's capacity for the next.
    pub fn drain_breaches(&mut self) -> std::vec::Drain<'_, Breach> {
        self.store.data_mut().breaches.drain(..)
    }

    /// The actions requested by the last call.
    pub fn drain_actions(&mut self) -> std::vec::Drain<'_, ActionRequest> {
        self.store.data_mut().actions.drain(..)
    }

    /// The incidents written by the last call.
    pub fn drain_incidents(&mut self) -> std::vec::Drain<'_, Arc<Incident>> {
        self.store.data_mut().incidents.drain(..)
    }

    pub fn snapshot(&mut self) -> anyhow::Result<Vec<u8>> {
        self.arm();
        let packed = self.snapshot.call(&mut self.store, ())?;
        Ok(self.read_packed(packed, "vigil_snapshot")?.to_vec())
    }

    pub fn restore(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.arm();
        let (ptr, len) = self.write(bytes)?;
        let status = self.restore.call(&mut self.store, (ptr, len))?;
        self.check_status("vigil_restore", status)
    }

    /// Asks the guest for a buffer (`vigil_alloc`) and fills it; the guest's answer is
    /// bounds-checked.
    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<(i32, i32)> {
        let len = i32::try_from(bytes.len())
            .map_err(|_| anyhow::anyhow!("{} bytes is too much for a wasm32 guest", bytes.len()))?;
        let ptr = self.alloc.call(&mut self.store, len)?;
        let target = guest_range(ptr, len, usize::MAX)
            .and_then(|range| self.memory.data_mut(&mut self.store).get_mut(range))
            .ok_or_else(|| {
                anyhow::anyhow!("vigil_alloc({len}) returned {ptr:#x}, outside its memory")
            })?;
        target.copy_from_slice(bytes);
        Ok((ptr, len))
    }

    /// The bytes a packed `(ptr << 32) | len` return value points at, if all inside memory.
    fn read_packed(&self, packed: i64, call: &str) -> anyhow::Result<&[u8]> {
        let (ptr, len) = abi::unpack(packed);
        guest_range(ptr as i32, len as i32, usize::MAX)
            .and_then(|range| self.memory.data(&self.store).get(range))
            .ok_or_else(|| {
                anyhow::anyhow!("{call} returned {len} bytes at {ptr:#x}, outside its memory")
            })
    }

    fn check_status(&self, call: &'static str, status: i32) -> anyhow::Result<()> {
        let status = match Status::from_code(status) {
            Some(Status::Ok) => return Ok(()),
            Some(other) => format!("{other:?}"),
            None => format!("unknown status {status}"),
        };
        Err(Refused {
            call,
            status,
            message: self.store.data().last_error_log.clone(),
        }
        .into())
    }
}

/// Re-instantiating a plugin after a failure failed: always a failure, even when the cause was a
/// refusal (the plugin refused the config it accepted at load).
#[derive(Debug, thiserror::Error)]
#[error("re-initialisation failed: {0}")]
pub struct Reinit(pub String);

/// Whether a failed call left the instance unusable (a trap, a deadline, the memory cap, a bad
/// pointer) rather than merely refused.
pub fn is_failure(err: &anyhow::Error) -> bool {
    !err.is::<Refused>()
}

/// A one-line reason for a failed call: deadline and memory-cap traps said plainly, then the
/// innermost wasm frames (`in f <- g <- h`) when wasmtime captured a backtrace.
pub fn describe_failure(err: &anyhow::Error, sandbox: &Sandbox) -> String {
    let root = err.root_cause().to_string();
    let mut text = match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            format!(
                "exceeded its {} ms batch deadline (interrupted)",
                sandbox.deadline_ms
            )
        }
        Some(trap) => {
            let trap = trap.to_string();
            format!("trapped: {}", trap.trim_start_matches("wasm trap: "))
        }
        None if root.starts_with("forcing trap when growing memory") => format!(
            "trapped: grew its memory past the {} limit ({root})",
            human_bytes(sandbox.memory_limit_bytes)
        ),
        None => root,
    };
    if let Some(backtrace) = err.downcast_ref::<WasmBacktrace>() {
        let frames: Vec<String> = backtrace
            .frames()
            .iter()
            .take(4)
            .map(|frame| match frame.func_name() {
                Some(name) => name.to_string(),
                None => format!("func[{}]", frame.func_index()),
            })
            .collect();
        if !frames.is_empty() {
            text.push_str(" in ");
            text.push_str(&frames.join(" <- "));
            if backtrace.frames().len() > frames.len() {
                text.push_str(" <- ...");
            }
        }
    }
    text
}

fn human_bytes(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// Checks `module`'s imports against what the linker provides, describing the first it does not.
pub fn unsupported_import(module: &Module) -> Option<(String, String)> {
    for import in module.imports() {
        let name = format!("{}.{}", import.module(), import.name());
        let wanted = IMPORTS
            .iter()
            .find(|(func, _)| import.module() == abi::IMPORT_MODULE && import.name() == *func);
        match wanted {
            None => {
                return Some((
                    name,
                    "Vigil provides only vigil.emit_breach, vigil.emit_incident(_update), \
                     vigil.request_action and vigil.log to plugins (no WASI, no clock, no I/O)"
                        .to_string(),
                ))
            }
            Some((_, params)) if !is_func(&import.ty(), params, &[]) => {
                return Some((name, format!("must have type {}", signature(params, &[]))))
            }
            Some(_) => {}
        }
    }
    None
}

/// The manifest of an ABI 1.0 module: no event filter, so it receives all it subscribed to.
#[derive(serde::Deserialize)]
struct ManifestV1_0 {
    name: String,
    version: String,
    kind: vigil_plugin_sdk::PluginKind,
    subscriptions: vigil_plugin_sdk::Subscriptions,
    default_config: String,
}

impl From<ManifestV1_0> for Manifest {
    fn from(old: ManifestV1_0) -> Manifest {
        Manifest {
            name: old.name,
            version: old.version,
            kind: old.kind,
            subscriptions: old.subscriptions,
            default_config: old.default_config,
            filter: vigil_plugin_sdk::FlowFilter::ANY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_ranges_are_checked_for_overflow_and_size() {
        assert_eq!(guest_range(16, 4, 100), Some(16..20));
        // Negative i32s are high wasm32 addresses or huge lengths, never negative offsets.
        assert_eq!(
            guest_range(-1, 1, usize::MAX),
            Some(0xffff_ffff..0x1_0000_0000)
        );
        assert_eq!(guest_range(0, -1, 1024), None);
        assert_eq!(guest_range(0, 1025, 1024), None);
    }

    #[test]
    fn signatures_read_like_wat() {
        assert_eq!(
            signature(&[Num::I32, Num::I32], &[Num::I32]),
            "(func (param i32 i32) (result i32))"
        );
        assert_eq!(signature(&[], &[]), "(func)");
    }

    #[test]
    fn refusals_are_not_failures_but_traps_are() {
        let refused: anyhow::Error = Refused {
            call: "vigil_init",
            status: "BadConfig".into(),
            message: Some("bad config: unknown field `x`".into()),
        }
        .into();
        assert!(!is_failure(&refused));
        assert_eq!(
            refused.to_string(),
            "vigil_init returned BadConfig: bad config: unknown field `x`"
        );
        let trap = anyhow::Error::from(Trap::UnreachableCodeReached);
        assert!(is_failure(&trap));
        let sandbox = Sandbox {
            memory_limit_bytes: 64 << 20,
            deadline_ticks: 21,
            deadline_ms: 200,
        };
        assert_eq!(
            describe_failure(&trap, &sandbox),
            "trapped: wasm `unreachable` instruction executed"
        );
        let interrupted = anyhow::Error::from(Trap::Interrupt);
        assert_eq!(
            describe_failure(&interrupted, &sandbox),
            "exceeded its 200 ms batch deadline (interrupted)"
        );
        let reinit = anyhow::Error::new(Reinit(describe_failure(&refused, &sandbox)));
        assert!(is_failure(&reinit));
        assert_eq!(
            describe_failure(&reinit, &sandbox),
            "re-initialisation failed: vigil_init returned BadConfig: bad config: unknown field `x`"
        );
    }
}
