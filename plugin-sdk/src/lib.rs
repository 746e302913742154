//! The Vigil plugin SDK.
//!
//! A plugin is a struct implementing [`Plugin`]; [`export_plugin!`] turns it into a wasm module
//! speaking ABI v1 (see [`abi`]). The same struct runs natively under [`harness`] for tests.
//!
//! The crate is `no_std` + `alloc` so that it builds for `wasm32-unknown-unknown` without pulling
//! in anything a sandboxed plugin cannot use; all collections are B-trees so that iteration order,
//! and therefore every breach, is deterministic.
#![no_std]

extern crate alloc;

pub mod abi;
pub mod account;
pub mod action;
pub mod breach;
pub mod dns;
pub mod episode;
pub mod event;
pub mod evidence;
mod export;
pub mod harness;
pub mod incident;
pub mod incident_update;
pub mod ldap;
pub mod manifest;
pub mod model;
pub mod newcomers;
pub mod ntstatus;
pub mod plugin;
pub mod profile;
pub mod scan;
pub mod state;
pub mod time;
pub mod window;

pub use action::{ActionRequest, Response};
pub use breach::{Breach, Evidence};
pub use event::{AuthResult, Endpoint, Event, EventClass, EventKind, FlowState, Transport};
pub use incident::Incident;
pub use ldap::LdapFilter;
pub use manifest::{FilterKey, FlowFilter, Manifest, PluginKind, Subscriptions};
pub use model::Model;
pub use plugin::{Output, Plugin, Release};
pub use profile::{
    BoundedMap, FanOutProfiles, FanOutVerdict, Learning, Novelty, PatternConfig, ProfileConfig,
    Profiles, RateWindow,
};
pub use time::{Duration, Timestamp};

#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
pub mod __private {
    pub use crate::export::guest;
}
