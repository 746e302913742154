//! Signed plugin bundles and the trust that decides which to install (DESIGN.md, "Bundles, trust
//! and updates").
//!
//! A bundle is one file: a [`BundleManifest`] (name, version, ABI, kind, subscriptions and event
//! filter, limits,
//! config, and the wasm's SHA-256), the wasm, and ed25519 signatures over a domain-separated
//! digest of the manifest ([`format`]). The appliance holds root keys; a root-signed
//! [`Delegation`] names the keys that may sign plugins ([`trust`]). [`verify`] refuses what is
//! unsigned, tampered, signed by an unknown, revoked, expired or out-of-scope key, built for
//! another ABI, or not newer than the highest version ever installed ([`InstalledVersions`]).
//!
//! What a caller may rely on: decoding never panics and bounds its input before parsing; a
//! [`VerifiedBundle`]'s wasm is exactly what a trusted key signed; wall-clock time is always a
//! parameter (`now`, unix seconds). Nothing here needs the wasm runtime, so the fuzz targets
//! build it; checking that the wasm's own manifest agrees with the bundle's is the host's job.

pub mod format;
pub mod keys;
mod legacy;
pub mod manifest;
pub mod text;
pub mod trust;
pub mod verify;
pub mod versions;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use format::{Bundle, FormatError, Signature, DEFAULT_MAX_BUNDLE_BYTES};
pub use keys::{KeyError, PublicKey, SecretKey};
pub use manifest::{BundleManifest, Limits, Payload, Version};
pub use trust::{DelegatedKey, Delegation, Installed, SignedDelegation, TrustError, TrustStore};
pub use verify::{
    check_installable, verify, verify_signed, BundleError, Signer, VerifiedBundle, VerifyLimits,
};
pub use versions::{InstalledPlugin, InstalledVersions};

/// A trust dir or versions file that cannot be read or written: our side's fault, not the
/// bundle's.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: damaged: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{}: not a trust dir (no roots/ in it): run `vigil trust init` first", dir.display())]
    NotInitialised { dir: PathBuf },
}

impl StoreError {
    fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn corrupt(path: &Path, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}
