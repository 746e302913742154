//! What a bundle says about the plugin it carries: the part every signature covers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::{FlowFilter, PluginKind, Subscriptions};

/// A plugin version, `MAJOR.MINOR.PATCH` (no pre-release or build suffix: rollback protection
/// needs a total order nobody can argue about). Ordered field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl Version {
    pub const fn new(major: u64, minor: u64, patch: u64) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("version {0:?} is not MAJOR.MINOR.PATCH (three decimal numbers without leading zeros)")]
pub struct VersionError(pub String);

impl FromStr for Version {
    type Err = VersionError;

    /// Strict: `1.2.3`, never `01.2.3`, `1.2`, `v1.2.3` or `1.2.3-rc1`, so one version has one
    /// spelling.
    fn from_str(text: &str) -> Result<Version, VersionError> {
        let err = || VersionError(text.to_string());
        let number = |part: &str| -> Result<u64, VersionError> {
            let digits_only = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
            if !digits_only || (part.len() > 1 && part.starts_with('0')) {
                return Err(err());
            }
            part.parse().map_err(|_| err())
        };
        let mut parts = text.split('.');
        let (Some(major), Some(minor), Some(patch), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err());
        };
        Ok(Version::new(number(major)?, number(minor)?, number(patch)?))
    }
}

/// What the host enforces on the plugin's instance (see `host::HostConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest linear memory of one instance; growing past it traps.
    pub memory_bytes: u64,
    /// Wall-clock budget of one call (a batch, or init); past it the call traps.
    pub batch_deadline_ms: u32,
}

impl Default for Limits {
    /// The host's defaults.
    fn default() -> Self {
        Limits {
            memory_bytes: 64 * 1024 * 1024,
            batch_deadline_ms: 200,
        }
    }
}

/// What the bundle delivers. Either way the wasm is pinned by its SHA-256, so a signature over
/// the manifest covers the code too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// A plugin: the bundle carries the wasm with this digest.
    Plugin { wasm_sha256: [u8; 32] },
    /// A model update: no wasm, only a new config (the manifest's `default_config`) for the
    /// installed plugin whose wasm has this digest.
    ConfigUpdate { wasm_sha256: [u8; 32] },
}

impl Payload {
    pub fn wasm_sha256(&self) -> &[u8; 32] {
        match self {
            Payload::Plugin { wasm_sha256 } | Payload::ConfigUpdate { wasm_sha256 } => wasm_sha256,
        }
    }

    pub fn is_config_update(&self) -> bool {
        matches!(self, Payload::ConfigUpdate { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleManifest {
    /// The plugin's name (`[a-z0-9][a-z0-9_-]{0,63}`, as the host requires).
    pub name: String,
    pub version: Version,
    /// Plugin ABI major version; must be `vigil_plugin_sdk::abi::ABI_MAJOR`.
    pub abi: u16,
    pub kind: PluginKind,
    pub subscriptions: Subscriptions,
    /// What the host lets through of the subscribed events (the module's own, which must agree).
    pub filter: FlowFilter,
    pub limits: Limits,
    /// JSON: the plugin's config (for a config update, the new one).
    pub default_config: String,
    pub payload: Payload,
}

/// Longest default config a manifest may carry; model configs are a few hundred bytes.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

impl BundleManifest {
    /// The rules a manifest keeps whatever signed it. The ABI is checked by the verifier, as a
    /// refusal of its own.
    pub fn check(&self) -> Result<(), String> {
        check_name(&self.name)?;
        if self.default_config.len() > MAX_CONFIG_BYTES {
            return Err(format!(
                "default config is {} bytes, over the {MAX_CONFIG_BYTES}-byte limit",
                self.default_config.len()
            ));
        }
        // An empty config means "the plugin's defaults", as `PluginHost::load` takes it.
        if !self.default_config.trim().is_empty() {
            serde_json::from_str::<serde_json::Value>(&self.default_config)
                .map_err(|err| format!("default config is not JSON: {err}"))?;
        }
        if self.limits.memory_bytes == 0 || self.limits.batch_deadline_ms == 0 {
            return Err(format!(
                "limits must be non-zero (memory {} bytes, batch deadline {} ms)",
                self.limits.memory_bytes, self.limits.batch_deadline_ms
            ));
        }
        Ok(())
    }
}

/// The host's plugin-name rule, repeated here because the host is only built with
/// `plugin-host` and the decoder must not need it.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "plugin name {name:?} is not 1-64 characters of a-z, 0-9, '-' and '_'"
        ))
    }
}
