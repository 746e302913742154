//! Whose signatures count: TUF's idea, kept small.
//!
//! The appliance holds root public keys. A root signs a [`Delegation`]: the plugin-signing keys,
//! the plugins each may sign, and their expiry. Rotating or revoking a signing key is a new
//! delegation with a higher version; a key absent from it is no longer trusted. The store keeps
//! the current delegation (so the highest version seen) and refuses an older one, or another one
//! with the same version: a replayed delegation cannot bring a revoked key back.
//!
//! On disk, `TRUST_DIR/`:
//! - `roots/<fingerprint>.pub`: root public keys (key files, see `keys`);
//! - `delegation.bin`: the current signed delegation, exactly as installed;
//! - `retired.json`: keys named by an earlier delegation but not the current one, with the last
//!   version that named them (so a refusal can say "revoked" rather than "unknown");
//! - `versions.json`: the highest version installed per plugin ([`super::InstalledVersions`]).
//!
//! The files are checked when written (`install_delegation` verifies the root signature): they are
//! as trusted as the root keys beside them. Each is replaced atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::format::{
    decode_envelope, domain_digest, encode_envelope, FormatError, Signature, FORMAT_VERSION_1,
};
use super::keys::{KeyError, PublicKey, SecretKey};
use super::manifest::check_name;
use super::text::{format_time, hex, parse_hex};
use super::StoreError;

pub const DELEGATION_MAGIC: [u8; 8] = *b"VIGILDLG";
/// Prefix of what a root signs: never the same message as a bundle signature.
pub const DELEGATION_DOMAIN: &[u8] = b"vigil delegation v1\0";
/// Delegations are a few keys; anything this large is not one.
pub const MAX_DELEGATION_BYTES: u64 = 1024 * 1024;

const ROOTS_DIR: &str = "roots";
const DELEGATION_FILE: &str = "delegation.bin";
const RETIRED_FILE: &str = "retired.json";
const VERSIONS_FILE: &str = "versions.json";

/// What core updates are signed as (see `image::update`).
pub const CORE_NAME: &str = "vigil-core";

/// The plugin-signing keys the roots trust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    /// Increases with every new delegation; the store refuses anything not newer.
    pub version: u64,
    /// Unix seconds: from then on no bundle verifies under this delegation.
    pub expires: u64,
    pub keys: Vec<DelegatedKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegatedKey {
    pub public: [u8; 32],
    /// Who holds it (`"acme release 2027"`), shown in listings and refusals.
    pub name: String,
    /// Plugin names it may sign, or `"*"` for any.
    pub plugins: Vec<String>,
    /// Unix seconds: from then on its signatures no longer count.
    pub expires: u64,
}

impl DelegatedKey {
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_bytes(self.public)
    }

    /// Whether this key may sign plugin `name`. A `*` key signs any plugin but never the core:
    /// a key that may replace the whole appliance must be delegated for it by name.
    pub fn allows(&self, name: &str) -> bool {
        self.plugins
            .iter()
            .any(|p| p == name || (p == "*" && name != CORE_NAME))
    }
}

impl Delegation {
    /// What `SignedDelegation::sign` signs: `SHA-256(DELEGATION_DOMAIN || postcard(self))`.
    pub fn signed_digest(&self) -> Result<[u8; 32], FormatError> {
        domain_digest(DELEGATION_DOMAIN, self, "delegation")
    }

    /// The rules a delegation keeps whatever signed it.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for key in &self.keys {
            let public = key.public_key();
            if !seen.insert(key.public) {
                return Err(format!("key {public} is listed twice"));
            }
            if !public.is_usable() {
                return Err(format!("key {public} is not a usable ed25519 public key"));
            }
            if key.name.trim().is_empty() || key.name.len() > 128 {
                return Err(format!("key {public} needs a name of 1-128 characters"));
            }
            if key.plugins.is_empty() {
                return Err(format!("key {} ({public}) may sign no plugin", key.name));
            }
            for plugin in &key.plugins {
                if plugin != "*" {
                    check_name(plugin).map_err(|e| format!("key {}: {e}", key.name))?;
                }
            }
        }
        Ok(())
    }

    pub fn key(&self, public: &[u8; 32]) -> Option<&DelegatedKey> {
        self.keys.iter().find(|k| k.public == *public)
    }
}

/// A delegation and its root signatures, as in a delegation file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDelegation {
    pub delegation: Delegation,
    pub signatures: Vec<Signature>,
}

impl SignedDelegation {
    pub fn sign(delegation: Delegation, root: &SecretKey) -> Result<SignedDelegation, FormatError> {
        let digest = delegation.signed_digest()?;
        Ok(SignedDelegation {
            signatures: vec![Signature {
                key: *root.public().as_bytes(),
                signature: root.sign_digest(&digest),
            }],
            delegation,
        })
    }

    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        encode_envelope(&DELEGATION_MAGIC, FORMAT_VERSION_1, self, "delegation")
    }

    pub fn decode(bytes: &[u8]) -> Result<SignedDelegation, FormatError> {
        decode_envelope(
            bytes,
            &DELEGATION_MAGIC,
            FORMAT_VERSION_1,
            "delegation",
            MAX_DELEGATION_BYTES,
        )
    }
}

/// Why a delegation was not installed: the delegation's fault, or (`Store`) the trust dir's.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("malformed delegation: {0}")]
    Malformed(FormatError),
    #[error("the delegation is not signed")]
    Unsigned,
    #[error("the delegation is not signed by an installed root key (signed by {keys})")]
    NotSignedByRoot { keys: String },
    #[error("the signature of root key {key} does not match the delegation: it was changed after signing")]
    BadRootSignature { key: PublicKey },
    #[error("invalid delegation v{version}: {reason}")]
    Invalid { version: u64, reason: String },
    #[error("delegation v{version} expired at {}", format_time(*expires))]
    Expired { version: u64, expires: u64 },
    #[error("delegation v{found} is older than the installed v{current}: refused (replayed?)")]
    Replay { found: u64, current: u64 },
    #[error("a different delegation v{version} is already installed: a new delegation needs a higher version")]
    Conflict { version: u64 },
}

/// What `install_delegation` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// Installed; the previous version, if any.
    New { previous: Option<u64> },
    /// Exactly this delegation was already installed: nothing changed.
    Unchanged,
}

/// A key that an earlier delegation named and the current one does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    pub name: String,
    /// The last delegation version that named it.
    pub last_version: u64,
}

/// The trust dir: root keys, the current delegation and the retired keys (see the module doc).
#[derive(Debug)]
pub struct TrustStore {
    dir: PathBuf,
    roots: Vec<PublicKey>,
    current: Option<SignedDelegation>,
    retired: BTreeMap<PublicKey, Retired>,
}

impl TrustStore {
    /// Opens an initialised trust dir (one with a `roots/` folder, see [`TrustStore::init`]).
    pub fn open(dir: &Path) -> Result<TrustStore, TrustError> {
        let roots_dir = dir.join(ROOTS_DIR);
        if !roots_dir.is_dir() {
            return Err(StoreError::NotInitialised {
                dir: dir.to_path_buf(),
            }
            .into());
        }
        let mut roots = Vec::new();
        let entries = std::fs::read_dir(&roots_dir).map_err(|e| StoreError::io(&roots_dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| StoreError::io(&roots_dir, e))?.path();
            if path.extension().is_some_and(|ext| ext == "pub") {
                roots.push(PublicKey::read(&path)?);
            }
        }
        roots.sort();
        roots.dedup();

        let delegation_path = dir.join(DELEGATION_FILE);
        let current = match std::fs::read(&delegation_path) {
            Ok(bytes) => {
                Some(
                    SignedDelegation::decode(&bytes).map_err(|err| StoreError::Corrupt {
                        path: delegation_path.clone(),
                        reason: err.to_string(),
                    })?,
                )
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => return Err(StoreError::io(&delegation_path, err).into()),
        };

        let retired_path = dir.join(RETIRED_FILE);
        let retired = match std::fs::read(&retired_path) {
            Ok(bytes) => {
                let by_hex: BTreeMap<String, Retired> = serde_json::from_slice(&bytes)
                    .map_err(|err| StoreError::corrupt(&retired_path, err))?;
                let mut retired = BTreeMap::new();
                for (key, entry) in by_hex {
                    let bytes = parse_hex::<32>(&key).ok_or_else(|| {
                        StoreError::corrupt(&retired_path, format!("{key:?} is not a key"))
                    })?;
                    retired.insert(PublicKey::from_bytes(bytes), entry);
                }
                retired
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(err) => return Err(StoreError::io(&retired_path, err).into()),
        };

        Ok(TrustStore {
            dir: dir.to_path_buf(),
            roots,
            current,
            retired,
        })
    }

    /// Creates the trust dir if needed and installs `root` (nothing happens if it is already
    /// there). Returns the store and whether the root was added.
    pub fn init(dir: &Path, root: &PublicKey) -> Result<(TrustStore, bool), TrustError> {
        let roots_dir = dir.join(ROOTS_DIR);
        std::fs::create_dir_all(&roots_dir).map_err(|e| StoreError::io(&roots_dir, e))?;
        let mut store = TrustStore::open(dir)?;
        let added = store.add_root(root)?;
        Ok((store, added))
    }

    /// Installs another root key as `roots/<fingerprint>.pub`; `false` if it was there already.
    pub fn add_root(&mut self, root: &PublicKey) -> Result<bool, TrustError> {
        if self.roots.contains(root) {
            return Ok(false);
        }
        let path = self
            .dir
            .join(ROOTS_DIR)
            .join(format!("{}.pub", root.fingerprint()));
        root.write_new(&path)?;
        self.roots.push(*root);
        self.roots.sort();
        Ok(true)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn roots(&self) -> &[PublicKey] {
        &self.roots
    }

    /// The installed delegation, if any.
    pub fn delegation(&self) -> Option<&Delegation> {
        self.current.as_ref().map(|c| &c.delegation)
    }

    /// Keys an earlier delegation named and the current one does not.
    pub fn retired(&self) -> &BTreeMap<PublicKey, Retired> {
        &self.retired
    }

    /// Where [`super::InstalledVersions`] lives in this trust dir.
    pub fn versions_path(&self) -> PathBuf {
        self.dir.join(VERSIONS_FILE)
    }

    /// Checks a delegation file against the roots and installs it if it is newer than the
    /// current one (see the module doc). `now` is unix seconds.
    pub fn install_delegation(&mut self, bytes: &[u8], now: u64) -> Result<Installed, TrustError> {
        let signed = SignedDelegation::decode(bytes).map_err(TrustError::Malformed)?;
        self.check_root_signature(&signed)?;
        let delegation = &signed.delegation;
        delegation.check().map_err(|reason| TrustError::Invalid {
            version: delegation.version,
            reason,
        })?;
        let previous = self.current.as_ref().map(|c| &c.delegation);
        if let Some(previous) = previous {
            if delegation.version < previous.version {
                return Err(TrustError::Replay {
                    found: delegation.version,
                    current: previous.version,
                });
            }
            if delegation.version == previous.version {
                return if delegation == previous {
                    Ok(Installed::Unchanged)
                } else {
                    Err(TrustError::Conflict {
                        version: delegation.version,
                    })
                };
            }
        }
        if now >= delegation.expires {
            return Err(TrustError::Expired {
                version: delegation.version,
                expires: delegation.expires,
            });
        }

        let mut retired = self.retired.clone();
        if let Some(previous) = previous {
            for key in &previous.keys {
                if delegation.key(&key.public).is_none() {
                    retired.insert(
                        key.public_key(),
                        Retired {
                            name: key.name.clone(),
                            last_version: previous.version,
                        },
                    );
                }
            }
        }
        for key in &delegation.keys {
            retired.remove(&key.public_key());
        }

        // The delegation first: if the second write is lost, a revoked key reads as unknown
        // rather than revoked, and is refused either way.
        let encoded = signed.encode().map_err(TrustError::Malformed)?;
        let path = self.dir.join(DELEGATION_FILE);
        crate::store::files::write_atomic(&path, &encoded).map_err(|e| StoreError::io(&path, e))?;
        let by_hex: BTreeMap<String, &Retired> = retired
            .iter()
            .map(|(k, r)| (hex(k.as_bytes()), r))
            .collect();
        let json = serde_json::to_vec_pretty(&by_hex)
            .map_err(|err| StoreError::corrupt(&self.dir.join(RETIRED_FILE), err))?;
        let path = self.dir.join(RETIRED_FILE);
        crate::store::files::write_atomic(&path, &json).map_err(|e| StoreError::io(&path, e))?;

        let previous = previous.map(|p| p.version);
        self.current = Some(signed);
        self.retired = retired;
        Ok(Installed::New { previous })
    }

    /// At least one signature by an installed root, and every root signature valid.
    fn check_root_signature(&self, signed: &SignedDelegation) -> Result<(), TrustError> {
        if signed.signatures.is_empty() {
            return Err(TrustError::Unsigned);
        }
        let digest = signed
            .delegation
            .signed_digest()
            .map_err(TrustError::Malformed)?;
        let mut by_root = false;
        for signature in &signed.signatures {
            let key = PublicKey::from_bytes(signature.key);
            if !self.roots.contains(&key) {
                continue;
            }
            if !key.verify_digest(&digest, &signature.signature) {
                return Err(TrustError::BadRootSignature { key });
            }
            by_root = true;
        }
        if by_root {
            Ok(())
        } else {
            let keys = signed
                .signatures
                .iter()
                .map(|s| PublicKey::from_bytes(s.key).to_string())
                .collect::<Vec<_>>()
                .join(", ");
            Err(TrustError::NotSignedByRoot { keys })
        }
    }
}
