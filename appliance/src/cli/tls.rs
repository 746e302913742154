//! `vigil tls`: the certificate of the management API. `install` checks the operator's own
//! certificate and key (they parse, the key is the certificate's) and puts them in place of the
//! old pair, on a stopped appliance's data dir or on a running one through its API, which serves
//! them from the next connection; a refused pair changes nothing.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use super::actions::Where;
use crate::api::tls::install_files;

#[derive(Subcommand)]
pub enum TlsCommand {
    /// Install a PEM certificate (chain, end-entity first) and its PEM private key.
    Install {
        /// The data dir of an appliance that is not running, or its API.
        #[command(flatten)]
        at: Where,
        cert: PathBuf,
        key: PathBuf,
    },
}

/// The PEM files are small; anything larger is not one.
const MAX_PEM_BYTES: u64 = 256 * 1024;

fn read(path: &Path) -> anyhow::Result<String> {
    let bytes = crate::bundle::format::read_limited(path, MAX_PEM_BYTES)
        .with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{}: not PEM text", path.display()))
}

pub fn run(command: TlsCommand) -> anyhow::Result<()> {
    let TlsCommand::Install { at, cert, key } = command;
    let (cert_pem, key_pem) = (read(&cert)?, read(&key)?);
    let fingerprint = match at.remote() {
        Some(remote) => {
            let body = serde_json::json!({ "certificate": cert_pem, "key": key_pem });
            let answer = remote
                .send_json("PUT", "/api/v1/tls", &body)
                .with_context(|| format!("{} refused {}", remote.to, cert.display()))?;
            answer["fingerprint_sha256"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
        None => install_files(&at.data_dir, cert_pem.as_bytes(), key_pem.as_bytes())
            .with_context(|| format!("{} and {}", cert.display(), key.display()))?,
    };
    println!(
        "installed {}; SHA-256 fingerprint {fingerprint}",
        cert.display()
    );
    Ok(())
}
