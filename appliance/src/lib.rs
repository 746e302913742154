//! Vigil: a network detection appliance. The folder tree is the architecture: `capture` ->
//! `decode` -> `flow` -> `pipeline` -> `host` (wasm plugins) -> `store`; `cli` drives it.
//!
//! The modules that need wasmtime are behind the default `plugin-host` feature, so the fuzz
//! targets can build the parsing layers alone.

pub mod analyzer;
#[cfg(feature = "plugin-host")]
pub mod api;
pub mod bundle;
pub mod capture;
#[cfg(feature = "plugin-host")]
pub mod cli;
#[cfg(feature = "plugin-host")]
pub mod config;
#[cfg(feature = "plugin-host")]
pub mod console;
#[cfg(feature = "plugin-host")]
pub mod counters;
pub mod decode;
pub mod devices;
#[cfg(feature = "plugin-host")]
pub mod fleet;
pub mod flow;
#[cfg(feature = "plugin-host")]
pub mod host;
pub mod image;
#[cfg(feature = "plugin-host")]
pub mod installed;
#[cfg(feature = "plugin-host")]
pub mod pipeline;
#[cfg(feature = "plugin-host")]
pub mod plugin_dir;
#[cfg(feature = "plugin-host")]
pub mod plugin_replay;
pub mod proto;
#[cfg(feature = "plugin-host")]
pub mod respond;
#[cfg(feature = "plugin-host")]
pub mod sensor;
pub mod store;
pub mod stream;
