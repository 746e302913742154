//! The exporter: its own thread takes records from the pipeline through a bounded channel (the
//! pipeline never waits: a full channel counts the record as lost), keeps them in the
//! [`Outbox`] and publishes them one at a time, in order, each acknowledged by the stream
//! before the next is sent (a record sent while an earlier one is unacknowledged could land
//! before it after a reconnect). A status heartbeat goes out beside them.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use serde_json::json;
use tokio::sync::mpsc;

use super::outbox::{Kind, Outbox, Record};
use super::{Broker, FleetConfig};

/// Records the channel holds while the exporter writes the outbox.
const CHANNEL: usize = 65_536;
/// How long a publish waits for the stream's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed publish, before the next try.
const RETRY_AFTER: Duration = Duration::from_millis(500);

enum Outgoing {
    Record(Record),
    /// Drain the outbox (within `drain_secs`) and stop.
    Finish,
}

/// What the heartbeat reports that the pipeline knows.
#[derive(Default)]
struct Shared {
    /// Records the full channel turned away.
    lost: AtomicU64,
    /// Plugin name to version, as loaded or last installed.
    plugins: Mutex<BTreeMap<String, String>>,
    /// Capture packets seen and dropped by the ring, as last reported.
    capture: Mutex<Option<(u64, u64)>>,
}

/// The pipeline's handle: hands records to the exporter without ever waiting.
#[derive(Clone)]
pub struct Outlet {
    tx: mpsc::Sender<Outgoing>,
    prefix: String,
    shared: Arc<Shared>,
}

impl Outlet {
    /// Hands a record over; `local_id` is unique and stable within this appliance.
    pub fn send(&self, kind: Kind, local_id: &str, json: String) {
        let record = Record {
            kind,
            id: format!("{}.{local_id}", self.prefix),
            json,
        };
        if self.tx.try_send(Outgoing::Record(record)).is_err() {
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The plugins running now, for the heartbeat.
    pub fn set_plugins(&self, plugins: BTreeMap<String, String>) {
        if let Ok(mut mine) = self.shared.plugins.lock() {
            *mine = plugins;
        }
    }

    /// The capture's totals (packets, dropped by the ring), for the heartbeat's drop ratio.
    pub fn set_capture(&self, packets: u64, dropped: u64) {
        if let Ok(mut mine) = self.shared.capture.lock() {
            *mine = Some((packets, dropped));
        }
    }
}

/// Plugin name to version, for the heartbeat and the fleet's update results.
pub fn plugin_versions(host: &crate::host::PluginHost) -> BTreeMap<String, String> {
    host.plugins()
        .into_iter()
        .map(|p| (p.name.to_string(), p.version.to_string()))
        .collect()
}

/// The running exporter; [`Exporter::finish`] drains and stops it.
pub struct Exporter {
    outlet: Outlet,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Starts exporting if `[fleet] url` is set. The outbox is opened here, so a data dir that
    /// cannot hold it is an error at start, not a silent loss.
    pub fn start(config: &FleetConfig, data_dir: &Path) -> anyhow::Result<Option<Exporter>> {
        let Some(broker) = config.broker()? else {
            return Ok(None);
        };
        let outbox = Outbox::open(data_dir, config.outbox_max_mb.max(1) << 20)
            .with_context(|| format!("opening {}/fleet-outbox", data_dir.display()))?;
        if outbox.damaged > 0 {
            tracing::warn!("fleet outbox: {} damaged lines skipped", outbox.damaged);
        }
        let (tx, rx) = mpsc::channel(CHANNEL);
        let shared = Arc::new(Shared::default());
        let outlet = Outlet {
            tx,
            prefix: config.prefix(),
            shared: Arc::clone(&shared),
        };
        let runtime = super::runtime()?;
        let task = Task {
            broker,
            config: config.clone(),
            outbox,
            rx,
            shared,
            recent: VecDeque::new(),
        };
        let thread = std::thread::Builder::new()
            .name("fleet-export".into())
            .spawn(move || runtime.block_on(task.run()))
            .context("starting the fleet exporter")?;
        Ok(Some(Exporter {
            outlet,
            thread: Some(thread),
        }))
    }

    pub fn outlet(&self) -> &Outlet {
        &self.outlet
    }

    /// Waits (at most `drain_secs`) for the outbox to reach the broker, then stops the thread.
    pub fn finish(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if self.outlet.tx.blocking_send(Outgoing::Finish).is_ok() && thread.join().is_err() {
            tracing::error!("the fleet exporter panicked");
        }
    }
}

struct Task {
    broker: Broker,
    config: FleetConfig,
    outbox: Outbox,
    rx: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
    /// Wall-clock times of alerts and incident records in the last hour, for the heartbeat.
    recent: VecDeque<(Instant, Kind)>,
}

impl Task {
    async fn run(mut self) {
        let name = format!("vigil {}", self.config.prefix());
        let client = match self.broker.connect(&name, false).await {
            Ok(client) => Some(client),
            Err(err) => {
                // Only a bad configuration gets here (an unreachable broker is retried): keep
                // the records in the outbox for the next start, which may have it fixed.
                tracing::error!("fleet export off: {err:#}");
                None
            }
        };
        let mut js = client.map(jetstream::new);
        if let Some(js) = &mut js {
            js.set_timeout(ACK_TIMEOUT);
        }
        let heartbeat_every = Duration::from_secs(self.config.heartbeat_secs.max(1));
        let mut next_heartbeat = Instant::now();
        let mut drain_until: Option<Instant> = None;
        let mut failing = false;
        loop {
            while let Ok(outgoing) = self.rx.try_recv() {
                self.take(outgoing, &mut drain_until);
            }
            if drain_until.is_some_and(|until| self.outbox.is_empty() || Instant::now() > until) {
                break;
            }
            let Some(js) = &js else {
                // No broker: only keep what arrives, and stop at once when told (nothing to
                // drain to).
                if drain_until.is_some() {
                    break;
                }
                match self.rx.recv().await {
                    Some(outgoing) => self.take(outgoing, &mut drain_until),
                    None => break,
                }
                continue;
            };
            if Instant::now() >= next_heartbeat {
                self.heartbeat(js).await;
                next_heartbeat = Instant::now() + heartbeat_every;
            }
            if let Some(record) = self.outbox.front() {
                match publish(js, &self.config.prefix(), record).await {
                    Ok(()) => {
                        if failing {
                            tracing::info!("fleet broker back; {} waiting", self.outbox.len());
                            failing = false;
                        }
                        if let Err(err) = self.outbox.ack() {
                            tracing::error!("fleet outbox: {err}");
                        }
                    }
                    Err(err) => {
                        if !failing {
                            tracing::warn!("fleet export waiting for the broker: {err:#}");
                            failing = true;
                        }
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                }
            } else if drain_until.is_none() {
                let wait = next_heartbeat.saturating_duration_since(Instant::now());
                match tokio::time::timeout(wait, self.rx.recv()).await {
                    Ok(Some(outgoing)) => self.take(outgoing, &mut drain_until),
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
        }
        if let Err(err) = self.outbox.save_cursor() {
            tracing::error!("fleet outbox: {err}");
        }
        if !self.outbox.is_empty() {
            tracing::warn!(
                "fleet: {} records left in the outbox for the next start",
                self.outbox.len()
            );
        }
    }

    fn take(&mut self, outgoing: Outgoing, drain_until: &mut Option<Instant>) {
        match outgoing {
            Outgoing::Record(record) => {
                if record.kind != Kind::Action {
                    self.recent.push_back((Instant::now(), record.kind));
                }
                if let Err(err) = self.outbox.push(record) {
                    tracing::error!("fleet outbox: {err}");
                }
            }
            Outgoing::Finish => {
                let drain = Duration::from_secs(self.config.drain_secs);
                drain_until.get_or_insert(Instant::now() + drain);
            }
        }
    }

    async fn heartbeat(&mut self, js: &jetstream::Context) {
        let hour_ago = Instant::now().checked_sub(Duration::from_secs(3600));
        while self
            .recent
            .front()
            .is_some_and(|(at, _)| hour_ago.is_some_and(|h| *at < h))
        {
            self.recent.pop_front();
        }
        let count = |kind| self.recent.iter().filter(|(_, k)| *k == kind).count();
        let plugins = self
            .shared
            .plugins
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        let capture = self.shared.capture.lock().ok().and_then(|c| *c);
        let now = crate::bundle::text::unix_now();
        let status = json!({
            "appliance": self.config.appliance,
            "site": self.config.site,
            "at": now,
            "version": env!("CARGO_PKG_VERSION"),
            "plugins": plugins,
            "breaches_last_hour": count(Kind::Alert),
            "incident_updates_last_hour": count(Kind::Incident),
            "capture": capture.map(|(packets, dropped)| json!({
                "packets": packets,
                "dropped": dropped,
                "drop_ratio": if packets + dropped == 0 { 0.0 } else {
                    dropped as f64 / (packets + dropped) as f64
                },
            })),
            "outbox": self.outbox.len(),
            "outbox_dropped": self.outbox.dropped,
            "lost": self.shared.lost.load(Ordering::Relaxed),
        });
        let prefix = self.config.prefix();
        let id = format!("{prefix}.status.{now}");
        let sent = send(js, format!("{prefix}.status"), &id, status.to_string()).await;
        if let Err(err) = sent {
            tracing::debug!("fleet heartbeat not sent: {err:#}");
        }
    }
}

async fn publish(js: &jetstream::Context, prefix: &str, record: &Record) -> anyhow::Result<()> {
    let subject = format!("{prefix}.{}", record.kind.name());
    send(js, subject, &record.id, record.json.clone()).await
}

/// Publishes with a `Nats-Msg-Id` and waits for the stream's acknowledgement.
async fn send(
    js: &jetstream::Context,
    subject: String,
    id: &str,
    json: String,
) -> anyhow::Result<()> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
    js.publish_with_headers(subject, headers, json.into())
        .await?
        .await?;
    Ok(())
}
