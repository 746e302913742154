//! ABI v1 between the host and a plugin module.
//!
//! A plugin module imports nothing but the functions of module [`IMPORT_MODULE`] and exports:
//!
//! | export | signature | meaning |
//! |---|---|---|
//! | `vigil_abi` | `() -> i32` | `(major << 16) \| minor`; the host refuses another major |
//! | `vigil_alloc` | `(len: i32) -> i32` | a guest buffer of at least `len` bytes for the host to fill |
//! | `vigil_manifest` | `() -> i64` | a [`crate::Manifest`] in postcard, as a packed pointer (see [`pack`]) |
//! | `vigil_init` | `(ptr, len) -> i32` | configure from JSON; 0 or an [`Status`] |
//! | `vigil_on_batch` | `(ptr, len) -> i32` | a batch: postcard [`crate::Event`]s back to back |
//! | `vigil_snapshot` | `() -> i64` | learned state as bytes, packed pointer |
//! | `vigil_restore` | `(ptr, len) -> i32` | put back a snapshot |
//!
//! Imports (module `vigil`): `emit_breach(ptr, len)` (a postcard [`crate::Breach`]),
//! `emit_incident(ptr, len)` (a postcard [`crate::Incident`], from analyst plugins built for
//! 1.0-1.2), `emit_incident_update(ptr, len)` (a new version of an incident as an update, see
//! [`crate::incident_update`]; from 1.3),
//! `request_action(ptr, len)` (a postcard [`crate::ActionRequest`], from responder plugins only),
//! `log(level, ptr, len)` (UTF-8). No WASI, no clock, no I/O: a plugin is a pure function of its
//! events, which is what makes replay deterministic.

pub const ABI_MAJOR: u16 = 1;
/// 1: the manifest ends with an [`crate::FlowFilter`].
/// 2: an LDAP search arrives as [`crate::EventKind::LdapSearchTree`], its filter a
/// [`crate::LdapFilter`]. Postcard is not extensible, so the host encodes an LDAP search both
/// ways and hands a plugin built for 1.0 or 1.1 the [`crate::EventKind::LdapSearch`] it was
/// built to decode (the filter as RFC 4515 text): already-signed plugins keep running.
/// 3: analysts hand over incidents with `emit_incident_update` (what changed since the version
/// the host holds); `emit_incident` (the whole incident) stays for plugins built for 1.0-1.2.
pub const ABI_MINOR: u16 = 3;
/// The first minor whose plugins receive [`crate::EventKind::LdapSearchTree`].
pub const LDAP_FILTER_TREE_MINOR: u16 = 2;
pub const IMPORT_MODULE: &str = "vigil";

pub const fn abi_version() -> i32 {
    ((ABI_MAJOR as i32) << 16) | ABI_MINOR as i32
}

pub const fn abi_major(version: i32) -> u16 {
    (version >> 16) as u16
}

pub const fn abi_minor(version: i32) -> u16 {
    version as u16
}

/// Packs a guest pointer and length into one `i64` return value.
pub const fn pack(ptr: u32, len: u32) -> i64 {
    ((ptr as u64) << 32 | len as u64) as i64
}

pub const fn unpack(packed: i64) -> (u32, u32) {
    let bits = packed as u64;
    ((bits >> 32) as u32, bits as u32)
}

/// Return codes of `vigil_init`, `vigil_on_batch` and `vigil_restore`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    BadConfig = 1,
    BadBatch = 2,
    BadSnapshot = 3,
    NotInitialised = 4,
}

impl Status {
    pub const fn from_code(code: i32) -> Option<Status> {
        Some(match code {
            0 => Status::Ok,
            1 => Status::BadConfig,
            2 => Status::BadBatch,
            3 => Status::BadSnapshot,
            4 => Status::NotInitialised,
            _ => return None,
        })
    }
}

/// Log levels for the `log` import.
pub mod level {
    pub const ERROR: i32 = 1;
    pub const WARN: i32 = 2;
    pub const INFO: i32 = 3;
    pub const DEBUG: i32 = 4;
}
