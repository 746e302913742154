//! Vigil: a network detection appliance. The folder tree is the architecture: `capture` ->
//! `decode` -> `flow` -> `pipeline` -> `host` (wasm plugins) -> `store`; `cli` drives it.

pub mod analyzer;
pub mod capture;
pub mod cli;
pub mod config;
pub mod decode;
pub mod flow;
pub mod host;
pub mod pipeline;
pub mod plugin_dir;
pub mod proto;
pub mod store;
pub mod stream;
