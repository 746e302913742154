//! The `vigil` command line.

mod actions;
mod bench;
mod bench_captures;
mod bench_checkpoints;
mod bench_console;
mod bench_fleet;
mod bench_fleet_lab;
mod bench_fragments;
mod bench_learning;
mod bench_respond;
mod bench_updates;
mod bundle;
mod demo;
mod fleet;
mod image;
mod key;
mod plugin;
mod plugins;
mod push;
pub(crate) mod replay;
mod run;
mod server_trust;
mod summary;
mod tls;
mod trust;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::analyzer::ProtocolLogs;
use crate::bundle::TrustStore;
use crate::capture::xdp::Queues;
use crate::config::Config;
use crate::host::PluginHost;
use crate::installed::BundleStore;
use crate::pipeline::Pipeline;
use crate::plugin_dir::{self, Loaded};
use crate::store::{self, eve::EveFile};

#[derive(Parser)]
#[command(name = "vigil", version, about = "Vigil network detection appliance")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every processing command shares.
#[derive(clap::Args, Clone)]
pub struct Common {
    /// Where alerts (eve.json), learned state and caches live. A second run with the same
    /// directory continues where the first left off.
    #[arg(long, default_value = "vigil-data")]
    data_dir: PathBuf,
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Sensor workers: threads that each decode, track and parse their share of the flows;
    /// overrides `[pipeline] workers`. What comes out does not depend on the number.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: Option<u16>,
    #[command(flatten)]
    plugins: PluginArgs,
}

/// Where plugins come from and what vouches for them.
#[derive(clap::Args, Clone, Default)]
pub struct PluginArgs {
    /// Directory of factory plugin bundles (*.vbundle); overrides the config file.
    #[arg(long)]
    plugins: Option<PathBuf>,
    /// Trust dir (root keys and delegation) that bundles are verified against; overrides the
    /// config file.
    #[arg(long)]
    trust: Option<PathBuf>,
    /// DEVELOPMENT ONLY: also load unsigned modules (*.wasm) from the plugin dir.
    #[arg(long)]
    allow_unsigned: bool,
}

/// [`PluginArgs`] resolved against the config file.
pub(crate) struct PluginSource {
    pub dir: PathBuf,
    pub bundle_limits: crate::bundle::VerifyLimits,
    pub trust_dir: PathBuf,
    pub allow_unsigned: bool,
}

impl PluginArgs {
    pub(crate) fn resolve(&self, config: &Config) -> PluginSource {
        PluginSource {
            dir: self.plugins.clone().unwrap_or_else(|| config.plugin_dir()),
            bundle_limits: config.bundles.limits(),
            trust_dir: self.trust.clone().unwrap_or_else(|| config.trust_dir()),
            allow_unsigned: self.allow_unsigned,
        }
    }
}

/// The installed bundles and the trust store. Without a trust store only unsigned development
/// plugins can run, so that is an error unless they are allowed.
pub(crate) fn open_store(
    source: &PluginSource,
    data_dir: &Path,
) -> anyhow::Result<Option<BundleStore>> {
    match TrustStore::open(&source.trust_dir) {
        Ok(trust) => {
            let mut store = BundleStore::open(data_dir, trust, source.bundle_limits)?;
            // The factory bundles are on the verified root: no file on the data partition
            // lowers the floor below them. A plugin dir that cannot be read raises nothing
            // (loading the plugins reports it).
            let factory = plugin_dir::bundle_files(&source.dir).unwrap_or_default();
            store.raise_floor(&factory)?;
            Ok(Some(store))
        }
        Err(err) if source.allow_unsigned => {
            tracing::warn!("no trust store ({err}): only unsigned plugins can load");
            Ok(None)
        }
        Err(err) => Err(anyhow::Error::new(err).context(format!(
            "opening the trust store {} (run ./setup.sh, or `vigil trust init`)",
            source.trust_dir.display()
        ))),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Process pcap/pcapng files in order, as one continuous capture.
    Replay {
        #[command(flatten)]
        common: Common,
        /// Also write protocol logs (DATA_DIR/proto/<protocol>.json, Zeek-style fields).
        #[arg(long)]
        protocol_logs: bool,
        /// Capture files, processed in the order given.
        #[arg(required = true)]
        pcaps: Vec<PathBuf>,
    },
    /// Capture live from an interface with AF_XDP until SIGINT or SIGTERM.
    Run {
        #[command(flatten)]
        common: Common,
        /// Interface to capture on (a mirror port).
        #[arg(long, required_unless_present = "inline", conflicts_with = "inline")]
        iface: Option<String>,
        /// Inline mode: bridge these two ports, forwarding every frame both ways except what
        /// the responses in force drop.
        #[arg(long, value_name = "IF_A,IF_B", value_delimiter = ',')]
        inline: Option<Vec<String>>,
        /// RX queues to bind, e.g. `0,2` (`--queue N` still works): every queue the NIC has
        /// by default.
        #[arg(long, alias = "queue", value_name = "LIST", value_delimiter = ',')]
        queues: Vec<u32>,
        /// Also write protocol logs (DATA_DIR/proto/<protocol>.json), as `replay` does.
        #[arg(long)]
        protocol_logs: bool,
        /// XDP attach mode: auto tries native (driver) mode, then generic (SKB) mode.
        #[arg(long, value_enum, default_value_t = run::ModeArg::Auto)]
        mode: run::ModeArg,
        /// Once capture is bound, write what was bound (JSON) to this file: how vigil-init
        /// learns the appliance came up healthy.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Replay the bundled attack capture and show what Vigil finds.
    Demo {
        /// Data directory (a fresh temporary one by default).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Measure throughput and print a table.
    Bench(bench::BenchArgs),
    /// Generate signing keys (for bundles and delegations).
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Build, sign, verify and inspect signed plugin bundles.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// Root keys and the delegation of plugin-signing keys.
    #[command(subcommand)]
    Trust(trust::TrustCommand),
    /// Write a plugin: a new crate from the template, built and signed into a bundle.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Installed plugins: list, install a signed bundle, roll back.
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
    /// Install a signed bundle on a running appliance through its management API.
    Push(push::PushArgs),
    /// The newest alerts of a running appliance (JSON lines), through its management API.
    Alerts(push::Remote),
    /// Responses requested by the responder: list, confirm (human mode), clear.
    #[command(subcommand)]
    Actions(actions::ActionsCommand),
    /// Signed core updates of the appliance image: pack, inspect, verify, apply, status.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// The management API's TLS certificate: install the operator's own.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// The fleet broker: create its stream, publish updates, read the merged alerts and every
    /// appliance's status.
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
}

pub fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Key(_) | Command::Bundle(_) | Command::Trust(_) | Command::Plugin(_)
    ) {
        end_quietly_on_closed_pipe();
    }
    let result = match cli.command {
        Command::Replay {
            common,
            protocol_logs,
            pcaps,
        } => replay::replay(&common, &pcaps, protocol_logs),
        Command::Run {
            common,
            iface,
            inline,
            queues,
            protocol_logs,
            mode,
            ready_file,
        } => {
            let live = run::LiveArgs {
                common,
                protocol_logs,
                mode,
                ready_file,
            };
            let queues = if queues.is_empty() {
                Queues::Every
            } else {
                Queues::List(queues)
            };
            match (iface, inline) {
                (Some(iface), _) => run::run(&live, &iface, queues),
                (None, Some(ports)) => run::run_inline(&live, &ports, queues),
                (None, None) => Err(anyhow::anyhow!("give --iface or --inline")),
            }
        }
        Command::Demo { data_dir, plugins } => demo::demo(data_dir, plugins),
        Command::Bench(args) => bench::bench(&args),
        Command::Key(command) => key::run(command),
        Command::Bundle(command) => bundle::run(command),
        Command::Trust(command) => trust::run(command),
        Command::Plugin(command) => plugin::run(command),
        Command::Plugins(command) => plugins::run(command),
        Command::Push(args) => push::push(&args),
        Command::Alerts(remote) => push::alerts(&remote),
        Command::Actions(command) => actions::run(command),
        Command::Image(command) => image::run(command),
        Command::Fleet(command) => fleet::run(command),
        Command::Tls(command) => tls::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("vigil: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// A command that only reads and writes local files, piped into `head` or `grep -q`, ends as
/// other Unix tools do when the reader goes away (Rust ignores SIGPIPE, so `println!` would
/// panic instead). Not for the daemon or the commands that talk to one: a peer closing a socket
/// must give them an error to report, not a silent death.
fn end_quietly_on_closed_pipe() {
    // SAFETY: restores the default action of one signal before any thread is started; no handler
    // code runs in this process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_logging() {
    let filter = std::env::var("VIGIL_LOG").unwrap_or_else(|_| "info".to_string());
    let level = filter.parse().unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// A pipeline over the data dir with every plugin of the plugin dir and the installed bundles
/// loaded (and their learned state restored). Plugins that fail to load are reported, not fatal.
pub(crate) fn open_pipeline(
    config: &Config,
    data_dir: &Path,
    source: &PluginSource,
    protocol_logs: bool,
) -> anyhow::Result<(Pipeline, Vec<Loaded>)> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    // Before this process writes anything: what a killed one left half done.
    let removed = store::files::remove_stale_temporaries(data_dir);
    store::health::repaired_at_start(0, removed as u64);
    let mut store = open_store(source, data_dir)?;
    if source.allow_unsigned {
        tracing::warn!(
            "DEVELOPMENT MODE: unsigned plugins are allowed; do not run an appliance like this"
        );
    }
    let mut host = PluginHost::new(config.host_config(data_dir))?;
    let loaded = plugin_dir::load_all(
        &mut host,
        &source.dir,
        store.as_mut(),
        source.allow_unsigned,
        config,
        data_dir,
    )
    .with_context(|| {
        format!(
            "reading plugin dir {} (run ./setup.sh to build and sign the plugins)",
            source.dir.display()
        )
    })?;
    for plugin in &loaded {
        if let Err(err) = &plugin.result {
            tracing::error!("plugin not loaded: {err}");
        }
    }
    if !loaded.iter().any(|p| p.result.is_ok()) {
        anyhow::bail!(
            "no plugin could be loaded from {} (run ./setup.sh to build and sign them)",
            source.dir.display()
        );
    }
    let mut sink = EveFile::open(data_dir, config.storage.eve_limits())
        .with_context(|| format!("opening {}/eve.json", data_dir.display()))?;
    let exporter = crate::fleet::export::Exporter::start(&config.fleet, data_dir)?;
    let outlet = exporter.as_ref().map(|e| e.outlet().clone());
    if let Some(exporter) = exporter {
        sink.export_to(exporter);
    }
    let logs = if protocol_logs {
        Some(
            ProtocolLogs::open(data_dir, config.storage.protocol_log_limits())
                .with_context(|| format!("creating {}/proto", data_dir.display()))?,
        )
    } else {
        None
    };
    let devices = store::devices::load(data_dir, &config.devices)
        .with_context(|| format!("reading {}/devices.json", data_dir.display()))?;
    let mut pipeline = Pipeline::from_config(config, host, devices, Box::new(sink), logs)
        .context("starting the sensor workers")?;
    if let Some(outlet) = &outlet {
        pipeline.attach_fleet(outlet.clone());
    }
    if let Some(store) = store {
        pipeline.attach_store(store);
    }
    let mut actions = crate::respond::Actions::open(data_dir).with_context(|| {
        format!(
            "reading {}",
            crate::respond::Actions::path(data_dir).display()
        )
    })?;
    if let Some(outlet) = outlet {
        actions.export_to(outlet);
    }
    let guard =
        crate::respond::ResponseGuard::new(config.respond.clone()).map_err(anyhow::Error::msg)?;
    pipeline.attach_actions(actions, guard);
    pipeline.enable_checkpoints(
        data_dir,
        std::time::Duration::from_secs(config.storage.checkpoint_secs.max(1)),
    );
    Ok((pipeline, loaded))
}

impl Common {
    fn load(&self) -> anyhow::Result<(Config, PluginSource)> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(workers) = self.workers {
            config.pipeline.workers = usize::from(workers);
        }
        let source = self.plugins.resolve(&config);
        Ok((config, source))
    }
}
