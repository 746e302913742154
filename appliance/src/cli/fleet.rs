//! `vigil fleet`: the administrator's and the analyst's side of the fleet broker: create the
//! stream and buckets, read the merged alerts, the appliances' status.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer, stream};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::Value;

use crate::bundle::{format::read_limited, Bundle};
use crate::fleet::updates::{self, Desired};
use crate::fleet::{self, Broker};

#[derive(clap::Subcommand)]
pub enum FleetCommand {
    /// Create the stream, the bundle object store and the key-value buckets (administrator;
    /// appliances never create them).
    Init {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Copies of every message in a cluster (1 on a single server).
        #[arg(long, default_value_t = 1)]
        replicas: usize,
    },
    /// Publish a signed bundle to every appliance (or a group): the bundle goes into the
    /// object store and its version becomes the plugin's desired one. Each appliance verifies
    /// it against its own trust store before installing it.
    Publish {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Only the appliances of this group (`[fleet] group`); default: all.
        #[arg(long)]
        group: Option<String>,
        bundle: PathBuf,
    },
    /// Every appliance's alerts, merged, as EVE JSON lines.
    Alerts {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Keep printing new alerts as they arrive.
        #[arg(long)]
        follow: bool,
        /// Only this site's appliances.
        #[arg(long)]
        site: Option<String>,
        /// Only this appliance.
        #[arg(long)]
        appliance: Option<String>,
        /// Incident records too (`event_type: "incident"`), in order with the alerts.
        #[arg(long)]
        incidents: bool,
        /// Actions too (each version of an action, with its audit trail).
        #[arg(long)]
        actions: bool,
    },
    /// Every appliance: site, last heartbeat, versions, breaches and incidents in the last hour,
    /// capture drop ratio, update refusals.
    Status {
        #[command(flatten)]
        broker: BrokerArgs,
        /// One JSON object per appliance instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// The broker and the credentials of whoever runs the command.
#[derive(clap::Args)]
pub struct BrokerArgs {
    /// The broker, e.g. nats://127.0.0.1:4222.
    #[arg(long)]
    url: String,
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    password: Option<String>,
    #[arg(long)]
    token: Option<String>,
    /// CA certificate (PEM) the broker's TLS certificate must chain to.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

impl BrokerArgs {
    fn broker(&self) -> Broker {
        Broker {
            url: self.url.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            token: self.token.clone(),
            ca_file: self.ca_file.clone(),
        }
    }

    async fn jetstream(&self) -> anyhow::Result<jetstream::Context> {
        let client = self.broker().connect("vigil fleet", true).await?;
        Ok(jetstream::new(client))
    }
}

pub fn run(command: FleetCommand) -> anyhow::Result<()> {
    fleet::runtime()?.block_on(async {
        match command {
            FleetCommand::Init { broker, replicas } => init(&broker, replicas).await,
            FleetCommand::Alerts {
                broker,
                follow,
                site,
                appliance,
                incidents,
                actions,
            } => {
                let filter = Filter {
                    site: site.as_deref().unwrap_or("*"),
                    appliance: appliance.as_deref().unwrap_or("*"),
                    incidents,
                    actions,
                };
                alerts(&broker, follow, filter).await
            }
            FleetCommand::Status { broker, json } => status(&broker, json).await,
            FleetCommand::Publish {
                broker,
                group,
                bundle,
            } => publish(&broker, group.as_deref().unwrap_or(updates::ALL), &bundle).await,
        }
    })
}

async fn init(broker: &BrokerArgs, replicas: usize) -> anyhow::Result<()> {
    let js = broker.jetstream().await?;
    create_stream_and_buckets(&js, replicas).await?;
    println!(
        "stream {} ({}), buckets {}, {}, object store {}; {replicas} replicas",
        fleet::STREAM,
        fleet::SUBJECTS,
        updates::DESIRED,
        updates::RESULTS,
        updates::BUNDLES
    );
    Ok(())
}

/// What `vigil fleet init` makes (also the bench's broker).
pub(crate) async fn create_stream_and_buckets(
    js: &jetstream::Context,
    replicas: usize,
) -> anyhow::Result<()> {
    js.get_or_create_stream(stream::Config {
        name: fleet::STREAM.into(),
        subjects: vec![fleet::SUBJECTS.into()],
        duplicate_window: fleet::DUPLICATE_WINDOW,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating the stream {}", fleet::STREAM))?;
    for bucket in [updates::DESIRED, updates::RESULTS] {
        // The stream the client's `create_key_value` would make (one value per key); made
        // directly because that call first reads the account info in a form 2.9 does not send.
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating the key-value bucket {bucket}"))?;
    }
    js.create_object_store(jetstream::object_store::Config {
        bucket: updates::BUNDLES.into(),
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating the object store {}", updates::BUNDLES))?;
    Ok(())
}

async fn publish(broker: &BrokerArgs, group: &str, path: &Path) -> anyhow::Result<()> {
    let bytes =
        read_limited(path, u64::MAX).with_context(|| format!("reading {}", path.display()))?;
    // Only to name it: the appliances verify it, the vendor's side trusts nothing here either.
    let bundle = Bundle::decode(&bytes, u64::MAX)
        .with_context(|| format!("{}: not a bundle", path.display()))?;
    let (plugin, version) = (bundle.manifest.name.clone(), bundle.manifest.version);
    let digest = crate::bundle::format::sha256(&bytes);
    let object = format!("{plugin}-{version}-{}", hex_prefix(&digest));
    let js = broker.jetstream().await?;
    let store = js
        .get_object_store(updates::BUNDLES)
        .await
        .context("opening the bundle store (run `vigil fleet init`)")?;
    store
        .put(object.as_str(), &mut bytes.as_slice())
        .await
        .with_context(|| format!("storing {object}"))?;
    let desired = js.get_key_value(updates::DESIRED).await?;
    let record = Desired {
        plugin: plugin.clone(),
        version: version.to_string(),
        object: object.clone(),
    };
    desired
        .put(
            format!("{group}.{plugin}"),
            serde_json::to_vec(&record)?.into(),
        )
        .await
        .context("recording the desired version")?;
    println!("published {plugin} {version} to group {group} as {object}");
    Ok(())
}

fn hex_prefix(digest: &[u8; 32]) -> String {
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Attempts at placing a reader's consumer.
const CONSUMER_TRIES: u32 = 5;

/// Runs `attempt` (which makes a consumer on the broker and reads through it) until it works,
/// at most [`CONSUMER_TRIES`] times: with a cluster node down the server may place the consumer
/// on that node and the request times out, and another try gets another placement.
async fn placed<T, F: std::future::Future<Output = anyhow::Result<T>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> anyhow::Result<T> {
    let mut tries = 1;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(err) if tries < CONSUMER_TRIES => {
                tracing::debug!("{what}: {err:#}; trying again");
                tries += 1;
            }
            Err(err) => return Err(err).context(what.to_string()),
        }
    }
}

/// The records on `filter` from the start (or, with `last_per_subject`, the last of each
/// subject), handed to `each` in stream order; with `follow`, new ones too, until killed.
async fn read(
    js: &jetstream::Context,
    filter: String,
    last_per_subject: bool,
    follow: bool,
    mut each: impl FnMut(&str, &[u8]),
) -> anyhow::Result<()> {
    let stream = js.get_stream(fleet::STREAM).await.with_context(|| {
        format!(
            "opening the stream {} (run `vigil fleet init`)",
            fleet::STREAM
        )
    })?;
    let config = consumer::pull::Config {
        filter_subject: filter,
        deliver_policy: if last_per_subject {
            consumer::DeliverPolicy::LastPerSubject
        } else {
            consumer::DeliverPolicy::All
        },
        ack_policy: consumer::AckPolicy::None,
        inactive_threshold: Duration::from_secs(60),
        ..Default::default()
    };
    // The consumer and its first answer come together: one placed on a dead node fails at
    // either step.
    let (consumer, pending) = placed("reading the stream", || async {
        let mut consumer: consumer::PullConsumer = stream.create_consumer(config.clone()).await?;
        let pending = consumer.info().await?.num_pending;
        anyhow::Ok((consumer, pending))
    })
    .await?;
    if !follow && pending == 0 {
        return Ok(());
    }
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message.context("reading the stream")?;
        each(message.subject.as_str(), &message.payload);
        if !follow && message.info().map_err(anyhow::Error::msg)?.pending == 0 {
            break;
        }
    }
    Ok(())
}

/// Which records `vigil fleet alerts` prints.
struct Filter<'a> {
    site: &'a str,
    appliance: &'a str,
    incidents: bool,
    actions: bool,
}

impl Filter<'_> {
    /// Whether a record of this subject's kind (its last token) is printed.
    fn takes(&self, subject: &str) -> bool {
        match subject.rsplit('.').next() {
            Some("alert") => true,
            Some("incident") => self.incidents,
            Some("action") => self.actions,
            _ => false,
        }
    }
}

async fn alerts(broker: &BrokerArgs, follow: bool, filter: Filter<'_>) -> anyhow::Result<()> {
    let js = broker.jetstream().await?;
    // One subject filter per consumer on a 2.9 server: several kinds are read as every kind,
    // and the rest (status, what was not asked for) skipped here.
    let kind = if filter.incidents || filter.actions {
        "*"
    } else {
        "alert"
    };
    let subject = format!("vigil.{}.{}.{kind}", filter.site, filter.appliance);
    read(&js, subject, false, follow, |subject, payload| {
        if filter.takes(subject) {
            println!("{}", String::from_utf8_lossy(payload));
        }
    })
    .await
}

async fn status(broker: &BrokerArgs, json: bool) -> anyhow::Result<()> {
    let js = broker.jetstream().await?;
    let mut appliances: BTreeMap<String, Value> = BTreeMap::new();
    read(
        &js,
        "vigil.*.*.status".into(),
        true,
        false,
        |subject, payload| match serde_json::from_slice::<Value>(payload) {
            Ok(status) => {
                appliances.insert(appliance_key(&status), status);
            }
            Err(err) => eprintln!("vigil: {subject}: unreadable status: {err}"),
        },
    )
    .await?;
    // The update results are newer than the last heartbeat's versions when an update just ran.
    let results = js
        .get_key_value(updates::RESULTS)
        .await
        .context("opening the update results (run `vigil fleet init`)")?;
    // Listing keys is a consumer on the bucket's stream, placed like any other.
    let keys: Vec<String> = placed("listing the update results", || async {
        anyhow::Ok(results.keys().await?.try_collect().await?)
    })
    .await?;
    for key in keys {
        let Some(bytes) = results.get(&key).await? else {
            continue;
        };
        let Ok(result) = serde_json::from_slice::<Value>(&bytes) else {
            eprintln!("vigil: update result {key}: unreadable");
            continue;
        };
        let status = appliances.entry(appliance_key(&result)).or_insert_with(|| {
            serde_json::json!({
                "site": result["site"], "appliance": result["appliance"],
            })
        });
        status["plugins"] = result["plugins"].clone();
        status["refusals"] = result["refusals"].clone();
    }
    let now = crate::bundle::text::unix_now();
    if !json {
        println!(
            "{:<12} {:<16} {:>9} {:<8} {:>9} {:>10} {:>6} {:>8}  plugins",
            "SITE",
            "APPLIANCE",
            "HEARTBEAT",
            "VERSION",
            "BREACH/H",
            "INCIDENT/H",
            "DROP%",
            "REFUSALS"
        );
    }
    for status in appliances.values() {
        if json {
            println!("{status}");
            continue;
        }
        let age = status["at"].as_u64().map(|at| now.saturating_sub(at));
        let drop = status["capture"]["drop_ratio"].as_f64();
        let plugins = status["plugins"]
            .as_object()
            .map(|p| {
                p.iter()
                    .map(|(name, v)| format!("{name} {}", v.as_str().unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        println!(
            "{:<12} {:<16} {:>8}s {:<8} {:>9} {:>10} {:>6} {:>8}  {plugins}",
            status["site"].as_str().unwrap_or("?"),
            status["appliance"].as_str().unwrap_or("?"),
            age.map_or("?".into(), |a| a.to_string()),
            status["version"].as_str().unwrap_or("?"),
            status["breaches_last_hour"],
            status["incident_updates_last_hour"],
            drop.map_or("-".into(), |d| format!("{:.2}", d * 100.0)),
            status["refusals"].as_array().map_or(0, Vec::len),
        );
        for refusal in status["refusals"].as_array().into_iter().flatten() {
            println!(
                "  refused {}: {}",
                refusal["bundle"].as_str().unwrap_or("?"),
                refusal["reason"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

/// `SITE.APPLIANCE`, as a heartbeat or an update result names it.
fn appliance_key(record: &Value) -> String {
    format!(
        "{}.{}",
        record["site"].as_str().unwrap_or("?"),
        record["appliance"].as_str().unwrap_or("?")
    )
}
