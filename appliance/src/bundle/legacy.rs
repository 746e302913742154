//! Bundles of format version 1, from before manifests carried an event filter: still read (an
//! appliance keeps the plugins it had installed across a core update), verified against the
//! manifest their signatures were made over, and run with no filter.

use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::{FlowFilter, PluginKind, Subscriptions};

use super::format::{Bundle, FormatError, Signature};
use super::manifest::{BundleManifest, Limits, Payload, Version};

/// What a version 1 bundle signature signs.
pub const BUNDLE_DOMAIN_V1: &[u8] = b"vigil bundle v1\0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleManifestV1 {
    name: String,
    version: Version,
    abi: u16,
    kind: PluginKind,
    subscriptions: Subscriptions,
    limits: Limits,
    default_config: String,
    payload: Payload,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleV1 {
    manifest: BundleManifestV1,
    wasm: Vec<u8>,
    signatures: Vec<Signature>,
}

impl From<BundleV1> for Bundle {
    fn from(old: BundleV1) -> Bundle {
        let m = old.manifest;
        Bundle {
            manifest: BundleManifest {
                name: m.name,
                version: m.version,
                abi: m.abi,
                kind: m.kind,
                subscriptions: m.subscriptions,
                filter: FlowFilter::ANY,
                limits: m.limits,
                default_config: m.default_config,
                payload: m.payload,
            },
            wasm: old.wasm,
            signatures: old.signatures,
            legacy: true,
        }
    }
}

impl TryFrom<BundleManifest> for BundleManifestV1 {
    type Error = FormatError;

    /// Only a manifest without a filter has a version 1 form.
    fn try_from(m: BundleManifest) -> Result<BundleManifestV1, FormatError> {
        if !m.filter.is_any() {
            return Err(FormatError::Encode {
                what: "manifest",
                reason: "format version 1 has no event filter".into(),
            });
        }
        Ok(BundleManifestV1 {
            name: m.name,
            version: m.version,
            abi: m.abi,
            kind: m.kind,
            subscriptions: m.subscriptions,
            limits: m.limits,
            default_config: m.default_config,
            payload: m.payload,
        })
    }
}

impl TryFrom<Bundle> for BundleV1 {
    type Error = FormatError;

    fn try_from(bundle: Bundle) -> Result<BundleV1, FormatError> {
        Ok(BundleV1 {
            manifest: BundleManifestV1::try_from(bundle.manifest)?,
            wasm: bundle.wasm,
            signatures: bundle.signatures,
        })
    }
}
