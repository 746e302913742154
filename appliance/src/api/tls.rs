//! TLS on the management port: the certificate and key on the data partition (`DATA/tls/cert.pem`,
//! `key.pem`), made self-signed on first start, replaceable by the operator's own pair while the
//! server runs (each new connection takes the pair in the slot at its handshake), and the rustls
//! server configuration that serves it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use base64::Engine;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use crate::store::files::{move_aside, write_atomic, write_atomic_private};

/// Under the data dir: the certificate and its key.
pub const TLS_DIR: &str = "tls";
const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("the certificate: {0}")]
    Certificate(String),
    #[error("the private key: {0}")]
    Key(String),
    #[error("the private key does not belong to the certificate (their public keys differ)")]
    KeyMismatch,
    #[error("making a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The crypto both ends use: ring, as async-nats already does. rustls deprecated it for lacking
/// post-quantum key exchange; its alternative, aws-lc-rs, is a large C build this appliance does
/// not otherwise need.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The SHA-256 of a certificate's DER, in upper-case hex pairs joined by colons, as browsers and
/// `openssl x509 -fingerprint -sha256` show it.
pub fn fingerprint(cert_der: &[u8]) -> String {
    let digest = Sha256::digest(cert_der);
    let pairs: Vec<String> = digest.iter().map(|byte| format!("{byte:02X}")).collect();
    pairs.join(":")
}

/// Checks a PEM certificate chain (end-entity first) and PEM private key: both parse, rustls can
/// sign with the key, and the key is the certificate's.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Certificate(format!("not PEM: {err}")))?;
    if chain.is_empty() {
        return Err(TlsError::Certificate(
            "no PEM CERTIFICATE block found".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|err| TlsError::Key(format!("no PEM private key found: {err}")))?;
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|err| TlsError::Key(err.to_string()))?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch)
        }
        Err(err) => Err(TlsError::Certificate(err.to_string())),
    }
}

/// The certificate the server presents now, in a slot an install swaps.
#[derive(Debug)]
pub struct CertStore {
    dir: PathBuf,
    slot: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// The pair under `data_dir`, made (self-signed, for `listen` and loopback) when there is
    /// none. A pair that no longer loads is moved aside and replaced, logged as an error: an
    /// appliance without a shell must stay reachable.
    pub fn open(data_dir: &Path, listen: IpAddr) -> Result<CertStore, TlsError> {
        let dir = data_dir.join(TLS_DIR);
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        let certified = match read_pair(&cert, &key) {
            Ok(Some(certified)) => certified,
            Ok(None) => generate(&dir, listen)?,
            Err(err) => {
                tracing::error!("management API certificate in {}: {err}", dir.display());
                for path in [&cert, &key] {
                    match move_aside(path) {
                        Ok(aside) => {
                            tracing::error!("moved {} aside to {}", path.display(), aside.display())
                        }
                        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                        Err(source) => {
                            return Err(TlsError::Io {
                                path: path.clone(),
                                source,
                            })
                        }
                    }
                }
                generate(&dir, listen)?
            }
        };
        Ok(CertStore {
            dir,
            slot: RwLock::new(Arc::new(certified)),
        })
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(
            &self
                .slot
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// The fingerprint of the certificate served now (see [`fingerprint`]).
    pub fn fingerprint(&self) -> String {
        fingerprint(
            self.current()
                .cert
                .first()
                .map_or(&[][..], |cert| cert.as_ref()),
        )
    }

    /// Checks the operator's pair and makes it the one served from the next handshake on, and
    /// after a restart; a refused pair changes nothing. Returns its fingerprint.
    pub fn install(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<String, TlsError> {
        let certified = install(&self.dir, cert_pem, key_pem)?;
        *self
            .slot
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(certified);
        Ok(self.fingerprint())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Checks a pair and writes it under `data_dir`'s TLS directory, for a server that is not
/// running (`vigil tls install`) or through [`CertStore::install`].
pub fn install_files(data_dir: &Path, cert_pem: &[u8], key_pem: &[u8]) -> Result<String, TlsError> {
    let certified = install(&data_dir.join(TLS_DIR), cert_pem, key_pem)?;
    Ok(fingerprint(
        certified.cert.first().map_or(&[][..], |cert| cert.as_ref()),
    ))
}

fn install(dir: &Path, cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let certified = certified_key(cert_pem, key_pem)?;
    write_pair(dir, cert_pem, key_pem)?;
    Ok(certified)
}

/// What `[api] tls` asks for at start: the certificate store under `data_dir` (its fingerprint
/// logged), or `None` for plain HTTP, which is refused unless `listen` is on loopback.
pub fn open_for_api(
    tls: bool,
    data_dir: &Path,
    listen: SocketAddr,
) -> anyhow::Result<Option<Arc<CertStore>>> {
    if !tls {
        anyhow::ensure!(
            listen.ip().is_loopback(),
            "api.tls = false is allowed only on a loopback address, not {listen}: the token \
             would cross the network in the clear"
        );
        return Ok(None);
    }
    let store =
        CertStore::open(data_dir, listen.ip()).context("the management API's TLS certificate")?;
    tracing::info!(
        "management API certificate SHA-256 fingerprint {}",
        store.fingerprint()
    );
    Ok(Some(Arc::new(store)))
}

/// The server's TLS handshake: HTTP/1.1 only, the certificate from `store` at each handshake.
pub fn acceptor(store: Arc<CertStore>) -> Result<TlsAcceptor, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The pair on disk; `None` when neither file is there.
fn read_pair(cert: &Path, key: &Path) -> Result<Option<CertifiedKey>, TlsError> {
    let read = |path: &Path| match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TlsError::Io {
            path: path.to_path_buf(),
            source,
        }),
    };
    match (read(cert)?, read(key)?) {
        (None, None) => Ok(None),
        (Some(cert_pem), Some(key_pem)) => certified_key(&cert_pem, &key_pem).map(Some),
        (None, Some(_)) => Err(TlsError::Certificate(format!(
            "{} is missing",
            cert.display()
        ))),
        (Some(_), None) => Err(TlsError::Key(format!("{} is missing", key.display()))),
    }
}

/// A self-signed certificate for the names a client may reach the appliance by, written to `dir`.
fn generate(dir: &Path, listen: IpAddr) -> Result<CertifiedKey, TlsError> {
    let mut names = vec![
        "vigil".to_string(),
        "localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
    ];
    if !listen.is_unspecified() && !listen.is_loopback() {
        names.push(listen.to_string());
    }
    let made = rcgen::generate_simple_self_signed(names)?;
    let cert_pem = pem("CERTIFICATE", made.cert.der());
    let key_pem = pem("PRIVATE KEY", &made.signing_key.serialize_der());
    let certified = install(dir, cert_pem.as_bytes(), key_pem.as_bytes())?;
    tracing::info!(
        "management API: made a self-signed certificate {}",
        dir.join(CERT_FILE).display()
    );
    Ok(certified)
}

/// The key first, readable by root only, then the certificate: each file is replaced whole.
fn write_pair(dir: &Path, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
    let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    write_atomic_private(&key, key_pem).map_err(|source| TlsError::Io { path: key, source })?;
    write_atomic(&cert, cert_pem).map_err(|source| TlsError::Io { path: cert, source })
}

/// PEM text (RFC 7468): base64 in lines of 64 between the label's lines.
fn pem(label: &str, der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vigil-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn listen() -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 9, 8, 7))
    }

    /// A pair made as a first start makes it, in a directory of its own.
    fn other_pair(name: &str) -> (Vec<u8>, Vec<u8>) {
        let dir = temp_dir(name);
        CertStore::open(&dir, listen()).expect("made");
        let read = |file| std::fs::read(dir.join(TLS_DIR).join(file)).expect("read");
        let pair = (read(CERT_FILE), read(KEY_FILE));
        std::fs::remove_dir_all(&dir).expect("clean up");
        pair
    }

    #[test]
    fn first_start_makes_a_private_key_and_the_next_start_serves_the_same_certificate() {
        let dir = temp_dir("first");
        let made = CertStore::open(&dir, listen()).expect("made");
        let key = dir.join(TLS_DIR).join(KEY_FILE);
        let mode = std::fs::metadata(&key).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        let cert_pem = std::fs::read(dir.join(TLS_DIR).join(CERT_FILE)).expect("cert");
        let der = CertificateDer::from_pem_slice(&cert_pem).expect("PEM");
        assert_eq!(made.fingerprint(), fingerprint(&der));
        assert_eq!(made.fingerprint().len(), 32 * 3 - 1);
        let again = CertStore::open(&dir, listen()).expect("reloaded");
        assert_eq!(again.fingerprint(), made.fingerprint());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn install_serves_the_new_pair_and_keeps_it_across_a_restart() {
        let dir = temp_dir("install");
        let store = CertStore::open(&dir, listen()).expect("made");
        let old = store.fingerprint();
        let (cert, key) = other_pair("install-other");
        let new = store.install(&cert, &key).expect("installed");
        assert_ne!(new, old);
        assert_eq!(store.fingerprint(), new);
        assert_eq!(
            CertStore::open(&dir, listen())
                .expect("reloaded")
                .fingerprint(),
            new
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn install_refuses_a_key_of_another_certificate_and_keeps_the_old_pair() {
        let dir = temp_dir("mismatch");
        let store = CertStore::open(&dir, listen()).expect("made");
        let old = store.fingerprint();
        let on_disk = || std::fs::read(dir.join(TLS_DIR).join(CERT_FILE)).expect("cert");
        let before = on_disk();
        let (cert, _) = other_pair("mismatch-a");
        let (_, key) = other_pair("mismatch-b");
        let err = store.install(&cert, &key).expect_err("refused");
        assert!(matches!(err, TlsError::KeyMismatch), "{err}");
        let err = store
            .install(b"not a certificate", &key)
            .expect_err("refused");
        assert!(matches!(err, TlsError::Certificate(_)), "{err}");
        let err = install_files(
            &dir,
            &cert,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .expect_err("refused");
        assert!(matches!(err, TlsError::Key(_)), "{err}");
        assert_eq!(store.fingerprint(), old);
        assert_eq!(on_disk(), before);
        assert_eq!(
            CertStore::open(&dir, listen())
                .expect("reloaded")
                .fingerprint(),
            old
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_damaged_pair_is_moved_aside_and_replaced() {
        let dir = temp_dir("damaged");
        let old = CertStore::open(&dir, listen()).expect("made").fingerprint();
        let cert = dir.join(TLS_DIR).join(CERT_FILE);
        std::fs::write(&cert, b"garbage").expect("damage");
        let store = CertStore::open(&dir, listen()).expect("replaced");
        assert_ne!(store.fingerprint(), old);
        let aside = std::fs::read_dir(dir.join(TLS_DIR))
            .expect("list")
            .filter_map(Result::ok)
            .filter(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("cert.pem.damaged-")
            })
            .count();
        assert_eq!(aside, 1);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
