//! The verifier: from bundle bytes to a bundle the appliance may install, or the one reason why
//! not. Every refusal is the bundle's (or its signer's) fault and says what was wrong.
//!
//! Order of the checks: size, then format; then the signatures, each checked cryptographically
//! before its key's standing (so a changed manifest reads as a changed manifest, whoever signed
//! it); then the wasm against the signed manifest (so a changed wasm reads as a changed wasm);
//! then the manifest's own rules and ABI; last what is installed (rollback, config target).

use vigil_plugin_sdk::abi::ABI_MAJOR;

use super::format::{sha256, Bundle, FormatError, Signature, DEFAULT_MAX_BUNDLE_BYTES};
use super::keys::PublicKey;
use super::manifest::{BundleManifest, Payload, Version};
use super::text::{format_time, hex};
use super::trust::TrustStore;
use super::versions::InstalledVersions;

/// What the verifier accepts, beyond what the trust store decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyLimits {
    /// Largest bundle file, checked before parsing.
    pub max_bundle_bytes: u64,
}

impl Default for VerifyLimits {
    fn default() -> Self {
        VerifyLimits {
            max_bundle_bytes: DEFAULT_MAX_BUNDLE_BYTES,
        }
    }
}

/// The key a verified bundle was accepted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub key: PublicKey,
    /// Its name in the delegation.
    pub name: String,
    pub delegation_version: u64,
}

/// A bundle that passed every check: its manifest, its wasm (empty for a config update, which
/// applies to the installed wasm with `manifest.payload.wasm_sha256()`), and who signed it.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    pub manifest: BundleManifest,
    pub wasm: Vec<u8>,
    pub signer: Signer,
}

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("the bundle is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: u64, limit: u64 },
    #[error("malformed bundle: {0}")]
    Malformed(FormatError),
    #[error("the bundle is not signed")]
    Unsigned,
    #[error("no delegation is installed, so no plugin-signing key is trusted (install one with `vigil trust install`)")]
    NoDelegation,
    #[error("the installed delegation v{version} expired at {}: install a newer one", format_time(*expires))]
    DelegationExpired { version: u64, expires: u64 },
    #[error("the signature by key {key} does not match the manifest: the manifest was changed after signing (or the signature is damaged)")]
    SignatureMismatch { key: PublicKey },
    #[error(
        "the wasm was changed after signing: its SHA-256 is {}, the signed manifest says {}",
        hex(found),
        hex(expected)
    )]
    WasmDigestMismatch { expected: [u8; 32], found: [u8; 32] },
    #[error("a config update carries no wasm, but this one carries {len} bytes the signature does not cover")]
    UnexpectedWasm { len: usize },
    #[error("signed by key {key}, which is not in the installed delegation v{delegation_version}")]
    UnknownKey {
        key: PublicKey,
        delegation_version: u64,
    },
    #[error("signed by key {key} ({name}), which was revoked: delegation v{last_version} named it, the installed v{delegation_version} does not")]
    KeyRevoked {
        key: PublicKey,
        name: String,
        last_version: u64,
        delegation_version: u64,
    },
    #[error("signed by key {key} ({name}), which expired at {}", format_time(*expires))]
    KeyExpired {
        key: PublicKey,
        name: String,
        expires: u64,
    },
    #[error("signed by key {key} ({name}), which may not sign plugin `{plugin}` (it may sign: {})", allowed.join(", "))]
    OutOfScope {
        key: PublicKey,
        name: String,
        plugin: String,
        allowed: Vec<String>,
    },
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    #[error("built for plugin ABI {found}, this appliance speaks ABI {expected}")]
    AbiMismatch { found: u16, expected: u16 },
    #[error("rollback refused: {name} {version} is not newer than {highest}, the highest version of it ever installed")]
    Rollback {
        name: String,
        version: Version,
        highest: Version,
    },
    #[error("config update for {name} targets wasm {}, which is not installed ({})", hex(target), installed.map_or("it is not installed at all".to_string(), |d| format!("the installed wasm is {}", hex(&d))))]
    ConfigTargetNotInstalled {
        name: String,
        target: [u8; 32],
        installed: Option<[u8; 32]>,
    },
}

impl BundleError {
    /// Among refusals of several signatures, which one to report: the most specific. A damaged
    /// signature says most (someone changed the bundle), an unknown key least.
    fn rank(&self) -> u8 {
        match self {
            BundleError::SignatureMismatch { .. } => 5,
            BundleError::OutOfScope { .. } => 4,
            BundleError::KeyExpired { .. } => 3,
            BundleError::KeyRevoked { .. } => 2,
            _ => 1,
        }
    }
}

/// Everything: [`verify_signed`], then [`check_installable`] against what is installed.
pub fn verify(
    bytes: &[u8],
    trust: &TrustStore,
    installed: &InstalledVersions,
    limits: &VerifyLimits,
    now: u64,
) -> Result<VerifiedBundle, BundleError> {
    let verified = verify_signed(bytes, trust, limits, now)?;
    check_installable(&verified.manifest, installed)?;
    Ok(verified)
}

/// Format, signatures, trust, wasm digest, manifest rules and ABI; not what is installed.
/// `now` is unix seconds.
pub fn verify_signed(
    bytes: &[u8],
    trust: &TrustStore,
    limits: &VerifyLimits,
    now: u64,
) -> Result<VerifiedBundle, BundleError> {
    let bundle = Bundle::decode(bytes, limits.max_bundle_bytes).map_err(|err| match err {
        FormatError::TooLarge { size, limit } => BundleError::TooLarge { size, limit },
        err => BundleError::Malformed(err),
    })?;
    if bundle.signatures.is_empty() {
        return Err(BundleError::Unsigned);
    }
    let digest = bundle.signed_digest().map_err(BundleError::Malformed)?;
    let signer = trusted_signer(
        trust,
        &bundle.signatures,
        &digest,
        &bundle.manifest.name,
        now,
    )?;

    match &bundle.manifest.payload {
        Payload::Plugin { wasm_sha256 } => {
            let found = sha256(&bundle.wasm);
            if found != *wasm_sha256 {
                return Err(BundleError::WasmDigestMismatch {
                    expected: *wasm_sha256,
                    found,
                });
            }
        }
        Payload::ConfigUpdate { .. } => {
            if !bundle.wasm.is_empty() {
                return Err(BundleError::UnexpectedWasm {
                    len: bundle.wasm.len(),
                });
            }
        }
    }
    bundle
        .manifest
        .check()
        .map_err(BundleError::InvalidManifest)?;
    if bundle.manifest.abi != ABI_MAJOR {
        return Err(BundleError::AbiMismatch {
            found: bundle.manifest.abi,
            expected: ABI_MAJOR,
        });
    }
    Ok(VerifiedBundle {
        manifest: bundle.manifest,
        wasm: bundle.wasm,
        signer,
    })
}

/// The first of `signatures` over `digest` by a key the trust store lets sign `name` at `now`;
/// otherwise the most specific refusal among them. Bundles and core updates both go through it.
pub(crate) fn trusted_signer(
    trust: &TrustStore,
    signatures: &[Signature],
    digest: &[u8; 32],
    name: &str,
    now: u64,
) -> Result<Signer, BundleError> {
    let delegation = trust.delegation().ok_or(BundleError::NoDelegation)?;
    if now >= delegation.expires {
        return Err(BundleError::DelegationExpired {
            version: delegation.version,
            expires: delegation.expires,
        });
    }
    let mut refusal: Option<BundleError> = None;
    for signature in signatures {
        let key = PublicKey::from_bytes(signature.key);
        let outcome = if !key.verify_digest(digest, &signature.signature) {
            Err(BundleError::SignatureMismatch { key })
        } else {
            authorize(trust, &key, name, now)
        };
        match outcome {
            Ok(signer) => return Ok(signer),
            Err(err) => {
                if refusal.as_ref().is_none_or(|r| err.rank() > r.rank()) {
                    refusal = Some(err);
                }
            }
        }
    }
    Err(refusal.unwrap_or(BundleError::Unsigned))
}

/// The trust store's word on `key` signing plugin `name` at `now`.
fn authorize(
    trust: &TrustStore,
    key: &PublicKey,
    name: &str,
    now: u64,
) -> Result<Signer, BundleError> {
    let Some(delegation) = trust.delegation() else {
        return Err(BundleError::NoDelegation);
    };
    let Some(delegated) = delegation.key(key.as_bytes()) else {
        return Err(match trust.retired().get(key) {
            Some(retired) => BundleError::KeyRevoked {
                key: *key,
                name: retired.name.clone(),
                last_version: retired.last_version,
                delegation_version: delegation.version,
            },
            None => BundleError::UnknownKey {
                key: *key,
                delegation_version: delegation.version,
            },
        });
    };
    if now >= delegated.expires {
        return Err(BundleError::KeyExpired {
            key: *key,
            name: delegated.name.clone(),
            expires: delegated.expires,
        });
    }
    if !delegated.allows(name) {
        return Err(BundleError::OutOfScope {
            key: *key,
            name: delegated.name.clone(),
            plugin: name.to_string(),
            allowed: delegated.plugins.clone(),
        });
    }
    Ok(Signer {
        key: *key,
        name: delegated.name.clone(),
        delegation_version: delegation.version,
    })
}

/// Whether a verified manifest may be installed over what is installed: its version above the
/// highest ever seen for its name, and a config update aimed at the wasm installed now.
pub fn check_installable(
    manifest: &BundleManifest,
    installed: &InstalledVersions,
) -> Result<(), BundleError> {
    if let Some(highest) = installed.highest(&manifest.name) {
        if manifest.version <= highest {
            return Err(BundleError::Rollback {
                name: manifest.name.clone(),
                version: manifest.version,
                highest,
            });
        }
    }
    if let Payload::ConfigUpdate { wasm_sha256 } = &manifest.payload {
        let current = installed.installed(&manifest.name).map(|i| i.wasm_sha256);
        if current != Some(*wasm_sha256) {
            return Err(BundleError::ConfigTargetNotInstalled {
                name: manifest.name.clone(),
                target: *wasm_sha256,
                installed: current,
            });
        }
    }
    Ok(())
}
