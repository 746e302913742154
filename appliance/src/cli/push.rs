//! `vigil push`: hands a signed bundle to a running appliance's management API, which verifies
//! it exactly as `vigil plugins install` does and swaps it in between batches. The connection
//! options and the request are shared with `vigil image apply|status`.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::server_trust::ServerTrust;
use crate::bundle::{format::read_limited, DEFAULT_MAX_BUNDLE_BYTES};
use crate::config::Config;

/// Which appliance to talk to, how to know it, and with what token.
#[derive(clap::Args)]
pub struct Remote {
    /// The appliance's API, e.g. `https://10.0.0.5:8470` (`http://` only on loopback).
    #[arg(long)]
    pub to: String,
    #[command(flatten)]
    pub trust: ServerTrust,
    /// Bearer token; else `$VIGIL_API_TOKEN`, else `api.token` of --config.
    #[arg(long)]
    pub token: Option<String>,
    /// Config file to take the token from.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct PushArgs {
    #[command(flatten)]
    remote: Remote,
    /// The signed bundle (plugin or model update).
    bundle: PathBuf,
}

impl Remote {
    fn token(&self) -> anyhow::Result<String> {
        match (&self.token, std::env::var("VIGIL_API_TOKEN").ok()) {
            (Some(token), _) => Ok(token.clone()),
            (None, Some(token)) => Ok(token),
            (None, None) => Config::load(self.config.as_deref())?
                .api
                .token
                .context("no token: give --token, set VIGIL_API_TOKEN, or --config with api.token"),
        }
    }

    fn agent(&self) -> anyhow::Result<ureq::Agent> {
        self.trust.agent(&self.to)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.to.trim_end_matches('/'))
    }

    /// POSTs `file` (at most `max_bytes`) to `path`; the JSON answer, or the refusal's reason.
    pub fn post_file(
        &self,
        path: &str,
        file: &Path,
        max_bytes: u64,
    ) -> anyhow::Result<serde_json::Value> {
        let bytes =
            read_limited(file, max_bytes).with_context(|| format!("reading {}", file.display()))?;
        // The server refuses a wrong token from the headers and closes without reading the
        // body, which a client still sending sees only as a broken pipe: ask first.
        self.get("/api/v1/status")
            .with_context(|| format!("{} refused {}", self.to, file.display()))?;
        let request = self
            .agent()?
            .post(&self.url(path))
            .set("Authorization", &format!("Bearer {}", self.token()?))
            .set("Content-Type", "application/octet-stream");
        self.answer(request.send_bytes(&bytes), path)
            .with_context(|| format!("{} refused {}", self.to, file.display()))
    }

    /// POSTs `body` as JSON to `path`; the JSON answer, or the refusal's reason.
    pub fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        self.send_json("POST", path, body)
    }

    /// `method`s `body` as JSON to `path`; the JSON answer, or the refusal's reason.
    pub fn send_json(
        &self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let request = self
            .agent()?
            .request(method, &self.url(path))
            .set("Authorization", &format!("Bearer {}", self.token()?))
            .set("Content-Type", "application/json");
        self.answer(request.send_string(&body.to_string()), path)
    }

    /// GETs `path`.
    pub fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let request = self
            .agent()?
            .get(&self.url(path))
            .set("Authorization", &format!("Bearer {}", self.token()?));
        self.answer(request.call(), path)
    }

    fn answer(
        &self,
        answer: Result<ureq::Response, ureq::Error>,
        path: &str,
    ) -> anyhow::Result<serde_json::Value> {
        match answer {
            Ok(response) => Ok(serde_json::from_str(&response.into_string()?)?),
            Err(ureq::Error::Status(status, response)) => {
                let body: serde_json::Value = response
                    .into_string()
                    .ok()
                    .and_then(|text| serde_json::from_str(&text).ok())
                    .unwrap_or_default();
                anyhow::bail!(
                    "HTTP {status}: {}",
                    body["error"].as_str().unwrap_or("no reason given")
                )
            }
            Err(err) => {
                Err(anyhow::Error::new(err).context(format!("reaching {}", self.url(path))))
            }
        }
    }
}

pub fn push(args: &PushArgs) -> anyhow::Result<()> {
    let body = args
        .remote
        .post_file("/api/v1/plugins", &args.bundle, DEFAULT_MAX_BUNDLE_BYTES)?;
    println!(
        "{}: {}",
        args.remote.to,
        body["installed"].as_str().unwrap_or("installed")
    );
    Ok(())
}

/// `vigil alerts --to URL`: the newest alerts of a running appliance, one JSON record per line.
pub fn alerts(remote: &Remote) -> anyhow::Result<()> {
    let body = remote.get("/api/v1/alerts")?;
    for alert in body.as_array().map(Vec::as_slice).unwrap_or_default() {
        println!("{alert}");
    }
    Ok(())
}
