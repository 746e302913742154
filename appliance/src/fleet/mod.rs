//! The fleet: alerts, incidents and actions out to a NATS JetStream broker that many appliances
//! share, and signed updates in from it (see README "The fleet").
//!
//! Subjects are `vigil.SITE.APPLIANCE.{alert,incident,action,status}`. The stream that stores
//! them (`VIGIL`), the bundle object store and the key-value buckets are created by the fleet's
//! administrator (`vigil fleet init`), never by an appliance, whose account may only publish
//! under its own subjects.

pub mod export;
pub mod outbox;
pub mod updates;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The stream holding every appliance's records.
pub const STREAM: &str = "VIGIL";
/// Every subject the stream takes.
pub const SUBJECTS: &str = "vigil.>";
/// How long the stream remembers a `Nats-Msg-Id` to drop a resent record: longer than an
/// appliance's usual restart, so what a crash resends is dropped.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(20 * 60);

/// `[fleet]`: off unless `url` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// The broker, e.g. `nats://broker.example:4222` or `tls://...`; several, comma-separated,
    /// for a cluster.
    pub url: Option<String>,
    /// This appliance's name, one subject token (no `.`, `*`, `>` or spaces).
    pub appliance: String,
    /// The site it watches, one subject token.
    pub site: String,
    /// The update group it follows besides `all` (`vigil fleet publish --group`).
    pub group: Option<String>,
    /// User and password, or a token (not both).
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// A CA certificate (PEM): the broker must then speak TLS with a certificate it signed.
    pub ca_file: Option<PathBuf>,
    /// The outbox's cap on the data partition, in MiB (default 64); when full the oldest records
    /// are dropped and counted. It is also held in memory.
    pub outbox_max_mb: u64,
    /// Seconds between status heartbeats (default 10).
    pub heartbeat_secs: u64,
    /// At shutdown (and at the end of a replay), how long to wait for the broker to take what is
    /// in the outbox (default 10 s); what is left is sent at the next start.
    pub drain_secs: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            url: None,
            appliance: String::new(),
            site: String::new(),
            group: None,
            user: None,
            password: None,
            token: None,
            ca_file: None,
            outbox_max_mb: 64,
            heartbeat_secs: 10,
            drain_secs: 10,
        }
    }
}

/// Where to reach the broker and as whom: what an appliance and the fleet commands share.
#[derive(Debug, Clone, Default)]
pub struct Broker {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub ca_file: Option<PathBuf>,
}

impl FleetConfig {
    /// The broker, or `None` when the fleet is off; an error names a bad key.
    pub fn broker(&self) -> anyhow::Result<Option<Broker>> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        for (key, value) in [
            ("fleet.appliance", &self.appliance),
            ("fleet.site", &self.site),
        ] {
            if !is_token(value) {
                anyhow::bail!(
                    "{key} = {value:?}: must be one NATS subject token (letters, digits, - or _)"
                );
            }
        }
        Ok(Some(Broker {
            url: url.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            token: self.token.clone(),
            ca_file: self.ca_file.clone(),
        }))
    }

    /// `vigil.SITE.APPLIANCE`: the prefix of every subject this appliance publishes.
    pub fn prefix(&self) -> String {
        format!("vigil.{}.{}", self.site, self.appliance)
    }
}

fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Broker {
    /// Connects; with `wait` false the client keeps trying in the background (an appliance
    /// starts whether or not the broker is up), with `wait` true an unreachable broker is an
    /// error (the fleet commands).
    pub async fn connect(&self, name: &str, wait: bool) -> anyhow::Result<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            // The broker refusing a subject (permissions) says so only here.
            .event_callback(|event| async move {
                if let async_nats::Event::ServerError(err) = event {
                    tracing::warn!("fleet broker: {err}");
                }
            });
        match (&self.user, &self.password, &self.token) {
            (Some(user), Some(password), None) => {
                options = options.user_and_password(user.clone(), password.clone());
            }
            (None, None, Some(token)) => options = options.token(token.clone()),
            (None, None, None) => {}
            _ => anyhow::bail!("fleet credentials: give user and password, or a token"),
        }
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if !wait {
            options = options.retry_on_initial_connect();
        }
        // A cluster's nodes, comma-separated: the client moves to another when one goes.
        let nodes: Vec<&str> = self.url.split(',').map(str::trim).collect();
        options
            .connect(nodes)
            .await
            .with_context(|| format!("connecting to the fleet broker {}", self.url))
    }
}

/// A runtime for one fleet thread or command: the fleet's I/O never runs on the capture thread.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?)
}
