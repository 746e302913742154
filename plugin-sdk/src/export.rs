//! The wasm side of ABI v1: the glue [`crate::export_plugin!`] expands to.

/// Exports a [`crate::Plugin`] as a Vigil ABI v1 module, its version ([`crate::plugin::Release`])
/// read from the calling crate's `Cargo.toml`. A service sweep names its spec:
/// `export_plugin!(ServiceSweep<Rdp>)`. The wasm exports are left out on native targets, so the
/// same crate also builds as an rlib for tests under [`crate::harness`].
#[macro_export]
macro_rules! export_plugin {
    // The spec, not `ServiceSweep<_>`, is the calling crate's own type: the only one it may
    // implement an SDK trait for.
    (ServiceSweep<$spec:ty>) => {
        impl $crate::plugin::Release for $spec {
            const VERSION: &'static str = env!("CARGO_PKG_VERSION");
        }
        $crate::__export_abi!($crate::scan::ServiceSweep<$spec>);
    };
    ($plugin:ty) => {
        impl $crate::plugin::Release for $plugin {
            const VERSION: &'static str = env!("CARGO_PKG_VERSION");
        }
        $crate::__export_abi!($plugin);
    };
}

/// The wasm exports of [`export_plugin!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __export_abi {
    ($plugin:ty) => {
        // An anonymous const keeps the exports out of the plugin's namespace while `$plugin`
        // still resolves where the macro was called.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__private::guest::Runtime;

            static RUNTIME: Runtime<$plugin> = Runtime::new();

            #[no_mangle]
            pub extern "C" fn vigil_abi() -> i32 {
                $crate::abi::abi_version()
            }

            #[no_mangle]
            pub extern "C" fn vigil_alloc(len: i32) -> i32 {
                RUNTIME.alloc(len)
            }

            #[no_mangle]
            pub extern "C" fn vigil_manifest() -> i64 {
                RUNTIME.manifest()
            }

            #[no_mangle]
            pub extern "C" fn vigil_init(ptr: i32, len: i32) -> i32 {
                RUNTIME.init(ptr, len)
            }

            #[no_mangle]
            pub extern "C" fn vigil_on_batch(ptr: i32, len: i32) -> i32 {
                RUNTIME.on_batch(ptr, len)
            }

            #[no_mangle]
            pub extern "C" fn vigil_snapshot() -> i64 {
                RUNTIME.snapshot()
            }

            #[no_mangle]
            pub extern "C" fn vigil_restore(ptr: i32, len: i32) -> i32 {
                RUNTIME.restore(ptr, len)
            }
        };
    };
}

#[cfg(target_arch = "wasm32")]
pub mod guest {
    use alloc::vec::Vec;
    use core::cell::UnsafeCell;

    use crate::abi::{pack, Status};
    use crate::incident_update::UpdateEncoder;
    use crate::plugin::{manifest_of, parse_config};
    use crate::{Event, Output, Plugin};

    #[link(wasm_import_module = "vigil")]
    extern "C" {
        fn emit_breach(ptr: *const u8, len: usize);
        fn emit_incident_update(ptr: *const u8, len: usize);
        fn request_action(ptr: *const u8, len: usize);
        fn log(level: i32, ptr: *const u8, len: usize);
    }

    struct State<P> {
        plugin: Option<P>,
        /// Filled by the host after `vigil_alloc`; reused across calls so a batch costs no
        /// allocation once it has grown to the batch size.
        inbox: Vec<u8>,
        /// Holds what `vigil_manifest` and `vigil_snapshot` return until the next call.
        outbox: Vec<u8>,
        output: Output,
        /// What the host holds of each incident, so a new version is sent as what changed.
        incident_updates: UpdateEncoder,
    }

    /// The plugin instance and its buffers.
    pub struct Runtime<P> {
        state: UnsafeCell<Option<State<P>>>,
    }

    // SAFETY: wasm32-unknown-unknown guests are single-threaded, and the host never re-enters the
    // module while an export is running (imports do not call back), so at most one `&mut` to the
    // state exists at any time.
    unsafe impl<P> Sync for Runtime<P> {}

    impl<P: Plugin> Default for Runtime<P> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<P: Plugin> Runtime<P> {
        pub const fn new() -> Self {
            Runtime {
                state: UnsafeCell::new(None),
            }
        }

        #[allow(clippy::mut_from_ref)]
        fn state(&self) -> &mut State<P> {
            // SAFETY: see the `Sync` impl: exports run one at a time and each takes this
            // reference once, for the duration of the call.
            let slot = unsafe { &mut *self.state.get() };
            slot.get_or_insert_with(|| State {
                plugin: None,
                inbox: Vec::new(),
                outbox: Vec::new(),
                output: Output::default(),
                incident_updates: UpdateEncoder::default(),
            })
        }

        pub fn alloc(&self, len: i32) -> i32 {
            let state = self.state();
            let len = usize::try_from(len).unwrap_or(0);
            if state.inbox.len() < len {
                state.inbox.resize(len, 0);
            }
            state.inbox.as_ptr() as i32
        }

        /// The bytes the host wrote after `vigil_alloc`; `None` if the host passed another buffer.
        fn input(inbox: &[u8], ptr: i32, len: i32) -> Option<&[u8]> {
            let len = usize::try_from(len).ok()?;
            if ptr != inbox.as_ptr() as i32 || len > inbox.len() {
                return None;
            }
            Some(&inbox[..len])
        }

        fn send_to_outbox(state: &mut State<P>, bytes: Vec<u8>) -> i64 {
            state.outbox = bytes;
            pack(state.outbox.as_ptr() as u32, state.outbox.len() as u32)
        }

        pub fn manifest(&self) -> i64 {
            let state = self.state();
            let bytes = postcard::to_allocvec(&manifest_of::<P>()).unwrap_or_default();
            Self::send_to_outbox(state, bytes)
        }

        pub fn init(&self, ptr: i32, len: i32) -> i32 {
            let state = self.state();
            let Some(input) = Self::input(&state.inbox, ptr, len) else {
                return Status::BadConfig as i32;
            };
            match parse_config::<P>(input) {
                Ok(config) => {
                    state.plugin = Some(P::new(config));
                    Status::Ok as i32
                }
                Err(err) => {
                    let message = alloc::format!("bad config: {err}");
                    // SAFETY: the pointer and length describe a live, initialised string.
                    unsafe { log(crate::abi::level::ERROR, message.as_ptr(), message.len()) };
                    Status::BadConfig as i32
                }
            }
        }

        pub fn on_batch(&self, ptr: i32, len: i32) -> i32 {
            let state = self.state();
            let Some(mut rest) = Self::input(&state.inbox, ptr, len) else {
                return Status::BadBatch as i32;
            };
            let Some(plugin) = state.plugin.as_mut() else {
                return Status::NotInitialised as i32;
            };
            let mut status = Status::Ok;
            while !rest.is_empty() {
                match postcard::take_from_bytes::<Event>(rest) {
                    Ok((event, tail)) => {
                        crate::plugin::deliver(plugin, &event, &mut state.output);
                        rest = tail;
                    }
                    Err(_) => {
                        status = Status::BadBatch;
                        break;
                    }
                }
            }
            Self::flush(&mut state.output, &mut state.incident_updates);
            status as i32
        }

        fn flush(output: &mut Output, incident_updates: &mut UpdateEncoder) {
            for breach in output.take_breaches() {
                if let Ok(bytes) = postcard::to_allocvec(&breach) {
                    // SAFETY: the pointer and length describe a live, initialised buffer.
                    unsafe { emit_breach(bytes.as_ptr(), bytes.len()) };
                }
            }
            for incident in output.take_incidents() {
                if let Ok(bytes) = incident_updates.encode(&incident) {
                    // SAFETY: the pointer and length describe a live, initialised buffer.
                    unsafe { emit_incident_update(bytes.as_ptr(), bytes.len()) };
                }
            }
            for action in output.take_actions() {
                if let Ok(bytes) = postcard::to_allocvec(&action) {
                    // SAFETY: the pointer and length describe a live, initialised buffer.
                    unsafe { request_action(bytes.as_ptr(), bytes.len()) };
                }
            }
            for (level, message) in output.take_logs() {
                // SAFETY: the pointer and length describe a live, initialised string.
                unsafe { log(level, message.as_ptr(), message.len()) };
            }
        }

        pub fn snapshot(&self) -> i64 {
            let state = self.state();
            let bytes = state.plugin.as_ref().map(P::snapshot).unwrap_or_default();
            Self::send_to_outbox(state, bytes)
        }

        pub fn restore(&self, ptr: i32, len: i32) -> i32 {
            let state = self.state();
            let Some(input) = Self::input(&state.inbox, ptr, len) else {
                return Status::BadSnapshot as i32;
            };
            let input = input.to_vec();
            let Some(plugin) = state.plugin.as_mut() else {
                return Status::NotInitialised as i32;
            };
            match plugin.restore(&input) {
                Ok(()) => Status::Ok as i32,
                Err(err) => {
                    state.output.log(crate::abi::level::ERROR, err.0);
                    Self::flush(&mut state.output, &mut state.incident_updates);
                    Status::BadSnapshot as i32
                }
            }
        }
    }
}
