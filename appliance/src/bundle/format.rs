//! The bundle file: `MAGIC`, the format version (u16, little-endian), then the postcard
//! encoding of a [`Bundle`]. Delegations use the same envelope with their own magic.
//!
//! Decoding is for hostile bytes: the size limit is checked before anything is parsed, a short
//! or overlong input is an error (never a panic), and the encoding must be canonical (decoding
//! then re-encoding gives back the same bytes), so the bytes a signature covers are exactly the
//! bytes on disk.

use std::io::Read;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::keys::{PublicKey, SecretKey};
use super::legacy::{BundleManifestV1, BundleV1, BUNDLE_DOMAIN_V1};
use super::manifest::{BundleManifest, Payload};

pub const BUNDLE_MAGIC: [u8; 8] = *b"VIGILBDL";
/// 2: the manifest carries the plugin's event filter. Version 1 bundles (already installed,
/// or signed before) are still read, as manifests without a filter.
pub const FORMAT_VERSION: u16 = 2;
/// The format of delegations (and of bundles before event filters).
pub const FORMAT_VERSION_1: u16 = 1;
/// Prefix of what a bundle signature signs, so a bundle signature can never be taken for a
/// signature over anything else (a delegation, the other format).
pub const BUNDLE_DOMAIN: &[u8] = b"vigil bundle v2\0";
/// The default largest bundle: plugins are a few hundred KiB, and the whole file is read into
/// memory before it is checked.
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 32 * 1024 * 1024;

const HEADER_LEN: usize = 8 + 2;

/// Why bytes are not a well-formed bundle (or delegation). Always the input's fault, except
/// [`FormatError::Encode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("{size} bytes, over the {limit}-byte limit")]
    TooLarge { size: u64, limit: u64 },
    #[error("not a Vigil {what} file (it does not start with {:?})", String::from_utf8_lossy(&magic[..]))]
    BadMagic {
        what: &'static str,
        magic: &'static [u8; 8],
    },
    #[error("{what} format version {found}; this build reads version {reads}")]
    UnsupportedVersion {
        what: &'static str,
        found: u16,
        reads: u16,
    },
    #[error("cannot decode the {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("{count} unexpected bytes after the end of the {what}")]
    TrailingBytes { what: &'static str, count: usize },
    #[error("the {what} is not canonically encoded (an overlong number?): refused, so that signed bytes are exact")]
    NotCanonical { what: &'static str },
    #[error("cannot encode the {what}: {reason}")]
    Encode { what: &'static str, reason: String },
}

/// A signature and the public key that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub key: [u8; 32],
    #[serde(with = "signature_bytes")]
    pub signature: [u8; 64],
}

/// A bundle as it is in the file: nothing in it is trusted yet (see `bundle::verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    pub manifest: BundleManifest,
    /// The plugin module; empty for a config update.
    pub wasm: Vec<u8>,
    pub signatures: Vec<Signature>,
    /// Read from a version 1 file: its signatures are over the version 1 manifest, and it is
    /// written back in that format.
    #[serde(skip)]
    pub legacy: bool,
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// `SHA-256(domain || postcard(value))`: what a signature over `value` signs.
pub(crate) fn domain_digest<T: Serialize>(
    domain: &[u8],
    value: &T,
    what: &'static str,
) -> Result<[u8; 32], FormatError> {
    let bytes = postcard::to_stdvec(value).map_err(|err| FormatError::Encode {
        what,
        reason: err.to_string(),
    })?;
    let mut hasher = Sha256::new();
    hasher.update(domain);
    hasher.update(&bytes);
    Ok(hasher.finalize().into())
}

/// The digest a bundle signature signs. The manifest pins the wasm by its SHA-256, so this
/// covers the code as well.
pub fn signed_digest(manifest: &BundleManifest) -> Result<[u8; 32], FormatError> {
    domain_digest(BUNDLE_DOMAIN, manifest, "manifest")
}

/// The format version in an envelope's header, if it has one.
fn envelope_version(bytes: &[u8]) -> Option<u16> {
    let version = bytes.get(8..HEADER_LEN)?;
    Some(u16::from_le_bytes([version[0], version[1]]))
}

pub(crate) fn encode_envelope<T: Serialize>(
    magic: &[u8; 8],
    version: u16,
    value: &T,
    what: &'static str,
) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    postcard::to_io(value, &mut out).map_err(|err| FormatError::Encode {
        what,
        reason: err.to_string(),
    })?;
    Ok(out)
}

pub(crate) fn decode_envelope<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    magic: &'static [u8; 8],
    reads: u16,
    what: &'static str,
    max_bytes: u64,
) -> Result<T, FormatError> {
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if size > max_bytes {
        return Err(FormatError::TooLarge {
            size,
            limit: max_bytes,
        });
    }
    let (header, body) = bytes
        .split_at_checked(HEADER_LEN)
        .ok_or(FormatError::BadMagic { what, magic })?;
    let (found_magic, version) = header.split_at(8);
    if found_magic != magic {
        return Err(FormatError::BadMagic { what, magic });
    }
    let found = u16::from_le_bytes([version[0], version[1]]);
    if found != reads {
        return Err(FormatError::UnsupportedVersion { what, found, reads });
    }
    let (value, rest) =
        postcard::take_from_bytes::<T>(body).map_err(|err| FormatError::Decode {
            what,
            reason: err.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(FormatError::TrailingBytes {
            what,
            count: rest.len(),
        });
    }
    // postcard accepts overlong varints; two encodings of one value would let the same signed
    // content travel as different bytes, so only the canonical one is accepted.
    let canonical = postcard::to_stdvec(&value).map_err(|err| FormatError::Encode {
        what,
        reason: err.to_string(),
    })?;
    if canonical != body {
        return Err(FormatError::NotCanonical { what });
    }
    Ok(value)
}

impl Bundle {
    /// An unsigned bundle carrying `wasm`; the manifest's payload is set from it.
    pub fn plugin(mut manifest: BundleManifest, wasm: Vec<u8>) -> Bundle {
        manifest.payload = Payload::Plugin {
            wasm_sha256: sha256(&wasm),
        };
        Bundle {
            manifest,
            wasm,
            signatures: Vec::new(),
            legacy: false,
        }
    }

    /// An unsigned config update for the installed wasm with digest `wasm_sha256`.
    pub fn config_update(mut manifest: BundleManifest, wasm_sha256: [u8; 32]) -> Bundle {
        manifest.payload = Payload::ConfigUpdate { wasm_sha256 };
        Bundle {
            manifest,
            wasm: Vec::new(),
            signatures: Vec::new(),
            legacy: false,
        }
    }

    /// Decodes a bundle file of at most `max_bytes` (see the module doc). Nothing is verified.
    pub fn decode(bytes: &[u8], max_bytes: u64) -> Result<Bundle, FormatError> {
        if envelope_version(bytes) == Some(FORMAT_VERSION_1) {
            let old: BundleV1 =
                decode_envelope(bytes, &BUNDLE_MAGIC, FORMAT_VERSION_1, "bundle", max_bytes)?;
            return Ok(old.into());
        }
        decode_envelope(bytes, &BUNDLE_MAGIC, FORMAT_VERSION, "bundle", max_bytes)
    }

    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        if self.legacy {
            let old = BundleV1::try_from(self.clone())?;
            return encode_envelope(&BUNDLE_MAGIC, FORMAT_VERSION_1, &old, "bundle");
        }
        encode_envelope(&BUNDLE_MAGIC, FORMAT_VERSION, self, "bundle")
    }

    pub fn signed_digest(&self) -> Result<[u8; 32], FormatError> {
        if self.legacy {
            let old = BundleManifestV1::try_from(self.manifest.clone())?;
            return domain_digest(BUNDLE_DOMAIN_V1, &old, "manifest");
        }
        signed_digest(&self.manifest)
    }

    /// Whether the carried wasm is what the manifest pins: its digest for a plugin, nothing for
    /// a config update.
    pub fn wasm_matches_manifest(&self) -> bool {
        match &self.manifest.payload {
            Payload::Plugin { wasm_sha256 } => sha256(&self.wasm) == *wasm_sha256,
            Payload::ConfigUpdate { .. } => self.wasm.is_empty(),
        }
    }

    /// Adds `key`'s signature over the manifest, replacing an earlier one by the same key.
    /// Returns whether one was replaced.
    pub fn sign(&mut self, key: &SecretKey) -> Result<bool, FormatError> {
        let digest = self.signed_digest()?;
        let public = key.public();
        let signature = Signature {
            key: *public.as_bytes(),
            signature: key.sign_digest(&digest),
        };
        let before = self.signatures.len();
        self.signatures.retain(|s| s.key != *public.as_bytes());
        let replaced = self.signatures.len() != before;
        self.signatures.push(signature);
        Ok(replaced)
    }

    /// Each signature's key and whether it is a valid signature of this manifest by that key
    /// (says nothing about whether the key is trusted).
    pub fn check_signatures(&self) -> Result<Vec<(PublicKey, bool)>, FormatError> {
        let digest = self.signed_digest()?;
        Ok(self
            .signatures
            .iter()
            .map(|s| {
                let key = PublicKey::from_bytes(s.key);
                let valid = key.verify_digest(&digest, &s.signature);
                (key, valid)
            })
            .collect())
    }
}

/// Reads at most `max_bytes + 1` bytes of `path`: enough for the decoder to say "too large"
/// without reading a huge file into memory.
pub fn read_limited(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// serde has no impls for arrays past 32 elements: a signature goes as a 64-tuple, which postcard
/// writes as the 64 raw bytes.
mod signature_bytes {
    use std::fmt;

    use serde::de::{Error, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 64], serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(64)?;
        for byte in bytes {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 64], D::Error> {
        struct Bytes64;
        impl<'de> Visitor<'de> for Bytes64 {
            type Value = [u8; 64];
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; 64], A::Error> {
                let mut out = [0u8; 64];
                for (i, byte) in out.iter_mut().enumerate() {
                    *byte = seq
                        .next_element()?
                        .ok_or_else(|| A::Error::invalid_length(i, &self))?;
                }
                Ok(out)
            }
        }
        deserializer.deserialize_tuple(64, Bytes64)
    }
}
