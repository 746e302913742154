//! ed25519 keys and their files.
//!
//! A key file is one line of text: `vigil-ed25519-secret <64 hex>` (the 32-byte seed) or
//! `vigil-ed25519-public <64 hex>`. The tag says which is which, so a secret key handed where a
//! public one is expected is refused instead of published. Secret key files are created with mode
//! 0600 from the start (never widened and narrowed afterwards), and no key file is ever
//! overwritten.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use super::text::{hex, parse_hex};

pub const SECRET_TAG: &str = "vigil-ed25519-secret";
pub const PUBLIC_TAG: &str = "vigil-ed25519-public";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: already exists; refusing to overwrite a key file", path.display())]
    Exists { path: PathBuf },
    #[error("{}: is a secret key file; give the public key (the .pub file)", path.display())]
    SecretGiven { path: PathBuf },
    #[error("{}: is a public key file; give the secret key", path.display())]
    PublicGiven { path: PathBuf },
    #[error("{}: not a Vigil key file ({reason})", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

/// An ed25519 public key: 32 bytes, shown as hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub const fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 bytes in hex: enough to tell keys apart in listings and file names.
    pub fn fingerprint(&self) -> String {
        hex(&self.0[..8])
    }

    /// Whether `signature` is this key's signature of `digest`. Strict verification: weak
    /// (small-order) keys and malleable signatures are refused.
    pub fn verify_digest(&self, digest: &[u8; 32], signature: &[u8; 64]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        key.verify_strict(digest, &ed25519_dalek::Signature::from_bytes(signature))
            .is_ok()
    }

    /// A point on the curve and not of small order: a key a signature could really be checked
    /// against.
    pub fn is_usable(&self) -> bool {
        VerifyingKey::from_bytes(&self.0).is_ok_and(|key| !key.is_weak())
    }

    pub fn to_text(&self) -> String {
        format!("{PUBLIC_TAG} {}\n", hex(&self.0))
    }

    pub fn parse(text: &str, path: &Path) -> Result<PublicKey, KeyError> {
        let bytes = parse_key_text(text, path, PUBLIC_TAG)?;
        let key = PublicKey(bytes);
        if !key.is_usable() {
            return Err(KeyError::Malformed {
                path: path.to_path_buf(),
                reason: "not a usable ed25519 public key".into(),
            });
        }
        Ok(key)
    }

    pub fn read(path: &Path) -> Result<PublicKey, KeyError> {
        PublicKey::parse(&read_key_file(path)?, path)
    }

    /// Writes the key to a new file (mode 0644); refuses to overwrite.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        create_new(path, 0o644, self.to_text().as_bytes())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex(&self.0))
    }
}

/// An ed25519 signing key (zeroed when dropped, by ed25519-dalek).
pub struct SecretKey(SigningKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public())
    }
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<SecretKey, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|err| KeyError::Random(err.to_string()))?;
        let key = SecretKey::from_seed(&seed);
        seed.fill(0);
        Ok(key)
    }

    /// The key for a 32-byte seed (tests use fixed seeds for repeatable keys).
    pub fn from_seed(seed: &[u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs a domain-separated digest (see `format::signed_digest`).
    pub fn sign_digest(&self, digest: &[u8; 32]) -> [u8; 64] {
        self.0.sign(digest).to_bytes()
    }

    pub fn read(path: &Path) -> Result<SecretKey, KeyError> {
        let text = read_key_file(path)?;
        let seed = parse_key_text(&text, path, SECRET_TAG)?;
        Ok(SecretKey::from_seed(&seed))
    }

    /// Writes the secret to a new file created with mode 0600; refuses to overwrite.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let text = format!("{SECRET_TAG} {}\n", hex(self.0.as_bytes()));
        create_new(path, 0o600, text.as_bytes())
    }
}

/// `out.pub` beside `out`.
pub fn public_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_os_string();
    name.push(".pub");
    PathBuf::from(name)
}

/// Generates a key pair into `out` (secret, 0600) and `out.pub`. Refuses if either exists.
pub fn generate_key_files(out: &Path) -> Result<PublicKey, KeyError> {
    let public_file = public_path(out);
    for path in [out, public_file.as_path()] {
        if path.symlink_metadata().is_ok() {
            return Err(KeyError::Exists {
                path: path.to_path_buf(),
            });
        }
    }
    let key = SecretKey::generate()?;
    key.write_new(out)?;
    let public = key.public();
    public.write_new(&public_file)?;
    Ok(public)
}

/// Key files are one short line; anything much longer is not one.
const MAX_KEY_FILE: u64 = 1024;

fn read_key_file(path: &Path) -> Result<String, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = super::format::read_limited(path, MAX_KEY_FILE).map_err(io)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError::Malformed {
            path: path.to_path_buf(),
            reason: "too long".into(),
        });
    }
    String::from_utf8(bytes).map_err(|_| KeyError::Malformed {
        path: path.to_path_buf(),
        reason: "not text".into(),
    })
}

fn parse_key_text(text: &str, path: &Path, tag: &str) -> Result<[u8; 32], KeyError> {
    let malformed = |reason: &str| KeyError::Malformed {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut words = text.split_whitespace();
    let (Some(found_tag), Some(key_hex), None) = (words.next(), words.next(), words.next()) else {
        return Err(malformed("expected one line: `<tag> <64 hex digits>`"));
    };
    match (found_tag, tag) {
        (SECRET_TAG, PUBLIC_TAG) => {
            return Err(KeyError::SecretGiven {
                path: path.to_path_buf(),
            })
        }
        (PUBLIC_TAG, SECRET_TAG) => {
            return Err(KeyError::PublicGiven {
                path: path.to_path_buf(),
            })
        }
        _ if found_tag != tag => return Err(malformed(&format!("expected `{tag}` first"))),
        _ => {}
    }
    parse_hex::<32>(key_hex).ok_or_else(|| malformed("the key is not 64 hex digits"))
}

fn create_new(path: &Path, mode: u32, bytes: &[u8]) -> Result<(), KeyError> {
    let io = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            KeyError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    // `create_new` refuses an existing file (or symlink) atomically; the mode applies at
    // creation, so the secret is never readable by others, not even for an instant.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}
