//! Fleet updates, the appliance's side: watch the desired versions (`vigil-desired`, keys
//! `GROUP.PLUGIN`, group `all` for every appliance), fetch each bundle from the object store
//! (`vigil-bundles`) and hand it to the capture loop exactly as the management API's push does
//! ([`Request::Install`]: verified against this appliance's own trust store and rollback floor,
//! installed live with state kept). The outcome goes to this appliance's key in `vigil-results`
//! (`SITE.APPLIANCE`): the versions running and the refusals with their reasons. The broker is
//! trusted with nothing: a bundle it serves is only bytes to verify.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

use super::{Broker, FleetConfig};
use crate::api::{Answer, Control, Request};

/// The object store of published bundles.
pub const BUNDLES: &str = "vigil-bundles";
/// Desired versions: `GROUP.PLUGIN` to a [`Desired`].
pub const DESIRED: &str = "vigil-desired";
/// Each appliance's outcome: `SITE.APPLIANCE` to its versions and refusals.
pub const RESULTS: &str = "vigil-results";
/// The group every appliance follows besides its own.
pub const ALL: &str = "all";
/// Refusals kept in an appliance's result, newest last.
const KEEP_REFUSALS: usize = 16;
/// Before watching again after the broker or a bucket failed.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// A watch quiet for this long is started again (from the history, cheap: one key per plugin
/// and group): a watch whose broker node went away can stay silent instead of failing.
const WATCH_AGAIN_AFTER: Duration = Duration::from_secs(15);
/// A bundle not read whole within this is fetched again on the next watch: a read stalled on a
/// broker node that went away would otherwise hold the update for the client's own timeouts.
const FETCH_WITHIN: Duration = Duration::from_secs(8);

/// What `vigil fleet publish` records per plugin and group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Desired {
    pub plugin: String,
    pub version: String,
    /// The bundle's name in the object store.
    pub object: String,
}

/// Starts watching if `[fleet] url` is set; installs go to `to_pipeline`.
pub fn start(
    config: &FleetConfig,
    max_bundle_bytes: u64,
    to_pipeline: SyncSender<Control>,
) -> anyhow::Result<bool> {
    let Some(broker) = config.broker()? else {
        return Ok(false);
    };
    let runtime = super::runtime()?;
    let watcher = Watcher {
        broker,
        config: config.clone(),
        max_bundle_bytes,
        to_pipeline,
        handled: BTreeSet::new(),
        refusals: Vec::new(),
        unreported: false,
    };
    std::thread::Builder::new()
        .name("fleet-updates".into())
        .spawn(move || runtime.block_on(watcher.run()))
        .context("starting the fleet update watcher")?;
    Ok(true)
}

struct Watcher {
    broker: Broker,
    config: FleetConfig,
    max_bundle_bytes: u64,
    to_pipeline: SyncSender<Control>,
    /// Objects already tried in this run: a refused bundle is not retried on every watch.
    handled: BTreeSet<String>,
    refusals: Vec<Value>,
    /// The last result could not be written (the broker's node went away): the next watch
    /// writes it first, since the objects already handled are not tried again.
    unreported: bool,
}

impl Watcher {
    async fn run(mut self) {
        let name = format!("vigil {} updates", self.config.prefix());
        let client = match self.broker.connect(&name, false).await {
            Ok(client) => client,
            Err(err) => {
                tracing::error!("fleet updates off: {err:#}");
                return;
            }
        };
        let js = jetstream::new(client);
        loop {
            if let Err(err) = self.watch(&js).await {
                tracing::debug!("fleet updates: {err:#}; watching again");
            }
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }

    /// Follows the desired versions (every current one first) until the watch breaks or stays
    /// quiet for [`WATCH_AGAIN_AFTER`].
    async fn watch(&mut self, js: &jetstream::Context) -> anyhow::Result<()> {
        let desired = js.get_key_value(DESIRED).await?;
        let bundles = js.get_object_store(BUNDLES).await?;
        let results = js.get_key_value(RESULTS).await?;
        if self.unreported {
            self.report(&results).await?;
        }
        let mut entries = desired.watch_with_history(">").await?;
        while let Ok(Some(entry)) = tokio::time::timeout(WATCH_AGAIN_AFTER, entries.next()).await {
            let entry = entry?;
            if entry.operation != kv::Operation::Put || !self.follows(&entry.key) {
                continue;
            }
            let wanted: Desired = match serde_json::from_slice(&entry.value) {
                Ok(wanted) => wanted,
                Err(err) => {
                    self.refuse(&entry.key, &format!("unreadable desired version: {err}"));
                    self.report(&results).await?;
                    continue;
                }
            };
            if self.handled.contains(&wanted.object) {
                continue;
            }
            let fetched = tokio::time::timeout(FETCH_WITHIN, self.fetch(&bundles, &wanted.object))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("reading {}: stalled", wanted.object)));
            let bytes = match fetched {
                Ok(bytes) => bytes,
                Err(err) => {
                    tracing::warn!("fleet update {}: {err:#}", wanted.object);
                    // Perhaps only the broker's node going away: shown, and tried again on
                    // the next watch rather than given up for this run.
                    self.refuse(&wanted.object, &format!("{err:#}"));
                    self.report(&results).await?;
                    return Err(err);
                }
            };
            self.handled.insert(wanted.object.clone());
            let answer = self.ask(Request::Install(bytes)).await?;
            if answer.status == 200 {
                tracing::info!(
                    "fleet update {} {}: {}",
                    wanted.plugin,
                    wanted.version,
                    answer.body["installed"]
                );
                self.refusals
                    .retain(|r| r["bundle"] != wanted.object.as_str());
            } else {
                let reason = answer.body["error"].as_str().unwrap_or("refused");
                tracing::warn!("fleet update {} refused: {reason}", wanted.object);
                self.refuse(&wanted.object, reason);
            }
            self.report(&results).await?;
        }
        Ok(())
    }

    /// `GROUP.PLUGIN` with this appliance's group, or `all`.
    fn follows(&self, key: &str) -> bool {
        let group = key.split('.').next().unwrap_or_default();
        group == ALL || self.config.group.as_deref() == Some(group)
    }

    async fn fetch(
        &self,
        bundles: &jetstream::object_store::ObjectStore,
        object: &str,
    ) -> anyhow::Result<Vec<u8>> {
        let mut reader = bundles
            .get(object)
            .await
            .with_context(|| format!("fetching {object}"))?;
        if reader.info().size as u64 > self.max_bundle_bytes {
            anyhow::bail!(
                "{object}: {} bytes, over the limit of {}",
                reader.info().size,
                self.max_bundle_bytes
            );
        }
        let mut bytes = Vec::new();
        // The object store checks the object's digest as it reads: a changed chunk fails here.
        reader
            .read_to_end(&mut bytes)
            .await
            .with_context(|| format!("reading {object}"))?;
        Ok(bytes)
    }

    /// Asks the capture loop, as the management API does, and waits for its answer.
    async fn ask(&self, request: Request) -> anyhow::Result<Answer> {
        let (reply, answer) = oneshot::channel();
        let to_pipeline = self.to_pipeline.clone();
        tokio::task::spawn_blocking(move || to_pipeline.send(Control { request, reply }))
            .await?
            .map_err(|_| anyhow::anyhow!("the capture loop stopped"))?;
        Ok(answer.await?)
    }

    /// Records a refusal; the same one again (a fetch retried) only moves its time.
    fn refuse(&mut self, what: &str, reason: &str) {
        self.refusals
            .retain(|r| r["bundle"] != what || r["reason"] != reason);
        self.refusals.push(json!({
            "bundle": what,
            "reason": reason,
            "at": crate::bundle::text::unix_now(),
        }));
        if self.refusals.len() > KEEP_REFUSALS {
            self.refusals.remove(0);
        }
    }

    /// Writes this appliance's versions and refusals to its key in `vigil-results`.
    async fn report(&mut self, results: &kv::Store) -> anyhow::Result<()> {
        self.unreported = true;
        let plugins = self.ask(Request::ListPlugins).await?;
        let versions: BTreeMap<String, Value> = plugins
            .body
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["name"].as_str()?.to_string(), p["version"].clone())))
            .collect();
        let result = json!({
            "site": self.config.site,
            "appliance": self.config.appliance,
            "at": crate::bundle::text::unix_now(),
            "plugins": versions,
            "refusals": self.refusals,
        });
        let key = format!("{}.{}", self.config.site, self.config.appliance);
        results
            .put(key, result.to_string().into())
            .await
            .context("writing the update result")?;
        self.unreported = false;
        Ok(())
    }
}
