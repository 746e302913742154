//! How a client command (`--to`) knows it talks to the appliance and not to someone in between:
//! `https://` with the server's certificate checked against `--ca FILE` (a CA, or the
//! appliance's self-signed certificate itself) or pinned by `--fingerprint SHA256`. Plain
//! `http://` only to a loopback address, where nothing crosses a network.

use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    SignatureScheme, StreamOwned,
};

use crate::api::tls::{fingerprint, provider};

/// The options that say which server certificate to accept.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServerTrust {
    /// PEM file of the CA that signed the appliance's certificate, or the appliance's
    /// certificate itself (`DATA/tls/cert.pem`).
    #[arg(long, conflicts_with = "fingerprint")]
    pub ca: Option<PathBuf>,
    /// The SHA-256 fingerprint of the appliance's certificate, as it logs it at start and shows
    /// in its status (`AB:CD:...`; colons and case do not matter).
    #[arg(long)]
    pub fingerprint: Option<String>,
}

impl ServerTrust {
    /// An HTTP client for `url` that checks the server as asked; refuses `http://` off loopback
    /// and `https://` with neither `--ca` nor `--fingerprint`.
    pub fn agent(&self, url: &str) -> anyhow::Result<ureq::Agent> {
        let (scheme, host) = scheme_and_host(url)?;
        match scheme.as_str() {
            "http" if is_loopback(&host) => Ok(ureq::agent()),
            "http" => anyhow::bail!(
                "{url}: plain http:// is accepted only on loopback; use https:// with --ca or \
                 --fingerprint"
            ),
            "https" => {
                let config = self.client_config()?;
                Ok(ureq::builder()
                    .tls_connector(Arc::new(Connector(config)))
                    .build())
            }
            other => anyhow::bail!("{url}: scheme {other}:// is not http:// or https://"),
        }
    }

    fn client_config(&self) -> anyhow::Result<Arc<ClientConfig>> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let config = match (&self.ca, &self.fingerprint) {
            (Some(ca), _) => {
                let mut roots = RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(ca)
                    .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                    .with_context(|| format!("{}: not a PEM certificate file", ca.display()))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                anyhow::ensure!(added > 0, "{}: no usable certificate in it", ca.display());
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            (None, Some(pinned)) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCertificate::new(pinned)?))
                .with_no_client_auth(),
            (None, None) => anyhow::bail!(
                "https:// needs --ca FILE or --fingerprint SHA256 to know the appliance (its \
                 fingerprint is logged at its start and shown by GET /api/v1/status)"
            ),
        };
        Ok(Arc::new(config))
    }
}

fn scheme_and_host(url: &str) -> anyhow::Result<(String, String)> {
    let request = ureq::get(url);
    let parsed = request
        .request_url()
        .with_context(|| format!("{url}: not a URL"))?;
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    Ok((scheme.to_ascii_lowercase(), parsed.host().to_string()))
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Accepts exactly the end-entity certificate whose SHA-256 was pinned, whoever signed it; the
/// handshake's signatures are still verified with the provider's algorithms, so the server
/// must hold that certificate's key.
#[derive(Debug)]
struct PinnedCertificate {
    fingerprint: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedCertificate {
    fn new(pinned: &str) -> anyhow::Result<PinnedCertificate> {
        let hex: String = pinned.chars().filter(|c| *c != ':').collect();
        anyhow::ensure!(
            hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()),
            "--fingerprint {pinned:?} is not a SHA-256 (64 hex digits, colons allowed)"
        );
        let pairs: Vec<String> = hex
            .to_ascii_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|pair| String::from_utf8_lossy(pair).into_owned())
            .collect();
        Ok(PinnedCertificate {
            fingerprint: pairs.join(":"),
            algorithms: provider().signature_verification_algorithms,
        })
    }
}

/// The server presented another certificate than the one pinned.
#[derive(Debug, thiserror::Error)]
#[error("the server's certificate has SHA-256 fingerprint {presented}, not the pinned {pinned}")]
struct FingerprintMismatch {
    presented: String,
    pinned: String,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = fingerprint(end_entity);
        if presented == self.fingerprint {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = FingerprintMismatch {
            presented,
            pinned: self.fingerprint.clone(),
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(mismatch)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// ureq's TLS hook, served by rustls with the configuration above.
struct Connector(Arc<ClientConfig>);

impl ureq::TlsConnector for Connector {
    fn connect(
        &self,
        dns_name: &str,
        mut io: Box<dyn ureq::ReadWrite>,
    ) -> Result<Box<dyn ureq::ReadWrite>, ureq::Error> {
        let name = dns_name.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(name.to_string())
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        let mut connection = ClientConnection::new(Arc::clone(&self.0), name)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        // The whole handshake now, so a refused certificate is reported as such.
        while connection.is_handshaking() {
            connection.complete_io(&mut io).map_err(explain)?;
        }
        Ok(Box::new(TlsStream(StreamOwned::new(connection, io))))
    }
}

/// A pinned fingerprint's refusal in its own words (rustls shows it in its Debug form).
fn explain(err: io::Error) -> io::Error {
    let refusal = match err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) => {
            other.0.to_string()
        }
        _ => return err,
    };
    io::Error::new(io::ErrorKind::InvalidData, refusal)
}

#[derive(Debug)]
struct TlsStream(StreamOwned<ClientConnection, Box<dyn ureq::ReadWrite>>);

impl ureq::ReadWrite for TlsStream {
    fn socket(&self) -> Option<&TcpStream> {
        self.0.sock.socket()
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_refused_off_loopback_only() {
        let trust = ServerTrust::default();
        for url in [
            "http://127.0.0.1:8470",
            "http://[::1]:8470/",
            "http://localhost:1",
        ] {
            trust
                .agent(url)
                .unwrap_or_else(|err| panic!("{url}: {err}"));
        }
        let err = trust.agent("http://10.0.0.5:8470").expect_err("refused");
        assert!(err.to_string().contains("only on loopback"), "{err}");
        let err = trust.agent("https://10.0.0.5:8470").expect_err("no trust");
        assert!(err.to_string().contains("--fingerprint"), "{err}");
    }

    #[test]
    fn a_fingerprint_is_64_hex_digits_with_or_without_colons() {
        let colons = "ab:".repeat(31) + "ab";
        let pinned = PinnedCertificate::new(&colons).expect("colons");
        assert_eq!(pinned.fingerprint, "AB:".repeat(31) + "AB");
        PinnedCertificate::new(&"0f".repeat(32)).expect("bare");
        assert!(PinnedCertificate::new("AB:CD").is_err());
        assert!(PinnedCertificate::new(&"zz".repeat(32)).is_err());
    }
}
