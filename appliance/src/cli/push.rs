//! `vigil push`: hands a signed bundle to a running appliance's management API, which verifies
//! it exactly as `vigil plugins install` does and swaps it in between batches.

use std::path::PathBuf;

use anyhow::Context;

use crate::bundle::{format::read_limited, DEFAULT_MAX_BUNDLE_BYTES};
use crate::config::Config;

#[derive(clap::Args)]
pub struct PushArgs {
    /// The appliance's API, e.g. `http://10.0.0.5:8470`.
    #[arg(long)]
    to: String,
    /// Bearer token; else `$VIGIL_API_TOKEN`, else `api.token` of --config.
    #[arg(long)]
    token: Option<String>,
    /// Config file to take the token from.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The signed bundle (plugin or model update).
    bundle: PathBuf,
}

pub fn push(args: &PushArgs) -> anyhow::Result<()> {
    let token = match (&args.token, std::env::var("VIGIL_API_TOKEN").ok()) {
        (Some(token), _) => token.clone(),
        (None, Some(token)) => token,
        (None, None) => Config::load(args.config.as_deref())?
            .api
            .token
            .context("no token: give --token, set VIGIL_API_TOKEN, or --config with api.token")?,
    };
    let bytes = read_limited(&args.bundle, DEFAULT_MAX_BUNDLE_BYTES)
        .with_context(|| format!("reading {}", args.bundle.display()))?;
    let url = format!("{}/api/v1/plugins", args.to.trim_end_matches('/'));
    let answer = ureq::post(&url)
        .set("Authorization", &format!("Bearer {token}"))
        .set("Content-Type", "application/octet-stream")
        .send_bytes(&bytes);
    match answer {
        Ok(response) => {
            let body: serde_json::Value = serde_json::from_str(&response.into_string()?)?;
            println!(
                "{}: {}",
                args.to,
                body["installed"].as_str().unwrap_or("installed")
            );
            Ok(())
        }
        Err(ureq::Error::Status(status, response)) => {
            let body: serde_json::Value = response
                .into_string()
                .ok()
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or_default();
            anyhow::bail!(
                "{} refused {} (HTTP {status}): {}",
                args.to,
                args.bundle.display(),
                body["error"].as_str().unwrap_or("no reason given")
            )
        }
        Err(err) => Err(anyhow::Error::new(err).context(format!("reaching {url}"))),
    }
}
