//! The signed core update: one file carrying a root slot (erofs plus its dm-verity hash tree)
//! and the unified kernel image for each slot, whose command line holds that root's hash.
//!
//! Layout: `VIGILUPD`, a little-endian u32 header length, the header (postcard: manifest and
//! signatures), then the payload. Signatures are ed25519 over
//! `SHA-256("vigil core update v1\0" || postcard(manifest))`, by a key the trust store's
//! delegation names for `vigil-core` (a `*` delegation covers plugins only); the manifest
//! holds the SHA-256 of every payload part, so the payload is covered too.

use serde::{Deserialize, Serialize};
use vigil_boot_contract::Slot;

use crate::bundle::format::sha256;
use crate::bundle::{BundleError, SecretKey, Signature, TrustStore, Version};

pub const UPDATE_MAGIC: [u8; 8] = *b"VIGILUPD";
pub const UPDATE_DOMAIN: &[u8] = b"vigil core update v1\0";
/// The name core updates are signed under (`vigil trust delegate --plugins vigil-core`).
pub const CORE_NAME: &str = crate::bundle::trust::CORE_NAME;
/// A kernel, two initramfs and a root fit in far less; anything bigger is refused unread.
pub const MAX_UPDATE_BYTES: u64 = 512 * 1024 * 1024;
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// One part of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub offset: u64,
    pub len: u64,
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateManifest {
    pub name: String,
    pub version: Version,
    /// `DATA_BLOCKS,HASH_START,ROOT_HASH,SALT` as the boot entries' `vigil.verity=`.
    pub verity: String,
    /// The slot image: root filesystem, then its hash tree.
    pub root: Part,
    /// The boot entry for slot A and for slot B (same kernel, `vigil.slot=` differs).
    pub uki: [Part; 2],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    manifest: UpdateManifest,
    signatures: Vec<Signature>,
}

/// An update as found in the file: nothing in it is trusted until [`verify`] says so.
#[derive(Debug)]
pub struct Update<'a> {
    pub manifest: UpdateManifest,
    signatures: Vec<Signature>,
    payload: &'a [u8],
}

/// A verified update: its parts are exactly what a trusted key signed.
#[derive(Debug)]
pub struct VerifiedUpdate<'a> {
    pub manifest: UpdateManifest,
    pub signer: crate::bundle::Signer,
    /// The slot image, checked.
    pub root: &'a [u8],
    /// The boot entries for slot A and B, checked.
    pub uki: [&'a [u8]; 2],
}

impl<'a> VerifiedUpdate<'a> {
    /// The boot entry that boots `slot` (its command line names that slot's root and hash).
    pub fn uki_for(&self, slot: Slot) -> &'a [u8] {
        match slot {
            Slot::A => self.uki[0],
            Slot::B => self.uki[1],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("the update is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: u64, limit: u64 },
    #[error("not a Vigil core update: {0}")]
    Malformed(String),
    #[error("the update is unsigned")]
    Unsigned,
    #[error("the update carries {found}, not {CORE_NAME}")]
    WrongName { found: String },
    #[error("{0}")]
    Untrusted(BundleError),
    #[error("the {part} does not match its signed SHA-256: the update was altered")]
    PartAltered { part: &'static str },
    #[error("version {version} is not newer than {against} ({which}): older cores are refused")]
    NotNewer {
        version: Version,
        against: Version,
        which: &'static str,
    },
}

fn digest(manifest: &UpdateManifest) -> Result<[u8; 32], UpdateError> {
    let bytes = postcard::to_allocvec(manifest)
        .map_err(|err| UpdateError::Malformed(format!("manifest: {err}")))?;
    let mut input = UPDATE_DOMAIN.to_vec();
    input.extend_from_slice(&bytes);
    Ok(sha256(&input))
}

impl<'a> Update<'a> {
    /// Parses the header; the payload is only sliced, never copied.
    pub fn decode(bytes: &'a [u8]) -> Result<Update<'a>, UpdateError> {
        let size = bytes.len() as u64;
        if size > MAX_UPDATE_BYTES {
            return Err(UpdateError::TooLarge {
                size,
                limit: MAX_UPDATE_BYTES,
            });
        }
        let rest = bytes
            .strip_prefix(&UPDATE_MAGIC)
            .ok_or_else(|| UpdateError::Malformed("no VIGILUPD magic".into()))?;
        let (len, rest) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| UpdateError::Malformed("truncated header length".into()))?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > MAX_HEADER_BYTES || len > rest.len() {
            return Err(UpdateError::Malformed(format!(
                "header length {len} does not fit"
            )));
        }
        let (header, payload) = rest.split_at(len);
        let header: Header = postcard::from_bytes(header)
            .map_err(|err| UpdateError::Malformed(format!("header: {err}")))?;
        Ok(Update {
            manifest: header.manifest,
            signatures: header.signatures,
            payload,
        })
    }
}

/// Builds an update from its parts, signed by each of `keys` (none: unsigned, which every
/// appliance refuses).
pub fn pack(
    version: Version,
    verity: &str,
    root: &[u8],
    uki: [&[u8]; 2],
    keys: &[&SecretKey],
) -> Result<Vec<u8>, UpdateError> {
    let mut payload = Vec::with_capacity(root.len() + uki[0].len() + uki[1].len());
    let mut part = |bytes: &[u8]| {
        let part = Part {
            offset: payload.len() as u64,
            len: bytes.len() as u64,
            sha256: sha256(bytes),
        };
        payload.extend_from_slice(bytes);
        part
    };
    let root = part(root);
    let uki = [part(uki[0]), part(uki[1])];
    let manifest = UpdateManifest {
        name: CORE_NAME.to_string(),
        version,
        verity: verity.to_string(),
        root,
        uki,
    };
    let digest = digest(&manifest)?;
    let signatures = keys
        .iter()
        .map(|key| Signature {
            key: *key.public().as_bytes(),
            signature: key.sign_digest(&digest),
        })
        .collect();
    let header = postcard::to_allocvec(&Header {
        manifest,
        signatures,
    })
    .map_err(|err| UpdateError::Malformed(format!("header: {err}")))?;
    let mut out = UPDATE_MAGIC.to_vec();
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Signatures against the trust store, then every part against its signed digest.
pub fn verify<'a>(
    bytes: &'a [u8],
    trust: &TrustStore,
    now: u64,
) -> Result<VerifiedUpdate<'a>, UpdateError> {
    let update = Update::decode(bytes)?;
    if update.signatures.is_empty() {
        return Err(UpdateError::Unsigned);
    }
    if update.manifest.name != CORE_NAME {
        return Err(UpdateError::WrongName {
            found: update.manifest.name,
        });
    }
    let digest = digest(&update.manifest)?;
    let signer =
        crate::bundle::verify::trusted_signer(trust, &update.signatures, &digest, CORE_NAME, now)
            .map_err(UpdateError::Untrusted)?;
    let root = part(update.payload, &update.manifest.root, "root filesystem")?;
    let uki_a = part(update.payload, &update.manifest.uki[0], "slot A boot entry")?;
    let uki_b = part(update.payload, &update.manifest.uki[1], "slot B boot entry")?;
    Ok(VerifiedUpdate {
        manifest: update.manifest,
        signer,
        root,
        uki: [uki_a, uki_b],
    })
}

/// The bytes of `part`, checked against its signed digest.
fn part<'a>(payload: &'a [u8], part: &Part, name: &'static str) -> Result<&'a [u8], UpdateError> {
    let bytes = usize::try_from(part.offset)
        .ok()
        .zip(usize::try_from(part.len).ok())
        .and_then(|(offset, len)| payload.get(offset..offset.checked_add(len)?))
        .ok_or(UpdateError::PartAltered { part: name })?;
    if sha256(bytes) != part.sha256 {
        return Err(UpdateError::PartAltered { part: name });
    }
    Ok(bytes)
}
