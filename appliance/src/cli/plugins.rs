//! `vigil plugins`: what runs, installing a signed bundle, rolling one back. These work on the
//! data dir of an appliance that is not running; a running one takes bundles by `vigil push`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::push::Remote;
use super::server_trust::ServerTrust;
use super::summary::print_table;
use super::{open_store, Common, PluginSource};
use crate::bundle::{format::read_limited, BundleManifest};
use crate::host::{HostConfig, PluginHost};
use crate::installed::{module_agrees, BundleStore};

#[derive(Subcommand)]
pub enum PluginsCommand {
    /// The plugins the appliance would run, where each comes from and who signed it; with
    /// --to, the plugins a running appliance runs, through its management API.
    List {
        #[command(flatten)]
        common: Common,
        /// A running appliance's API, e.g. `https://10.0.0.5:8470`.
        #[arg(long)]
        to: Option<String>,
        /// Bearer token for --to; else `$VIGIL_API_TOKEN`, else `api.token` of --config.
        #[arg(long, requires = "to")]
        token: Option<String>,
        #[command(flatten)]
        trust: ServerTrust,
    },
    /// Verify a signed bundle (plugin or model update) and install it into the data dir; the
    /// previous version is kept for `rollback`. Refused bundles change nothing.
    Install {
        #[command(flatten)]
        common: Common,
        bundle: PathBuf,
    },
    /// Put the previous installed version of a plugin back.
    Rollback {
        #[command(flatten)]
        common: Common,
        name: String,
    },
    /// Compile every verified factory bundle ahead of time for --target's baseline CPU, into
    /// a directory an appliance reads with `[host] precompiled_dir` and `portable_code = true`
    /// (image/build.sh puts it on the image's verified root).
    Precompile {
        #[command(flatten)]
        common: Common,
        /// Target triple of the appliance's vigil, e.g. x86_64-unknown-linux-musl.
        #[arg(long)]
        target: String,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(command: PluginsCommand) -> anyhow::Result<()> {
    match command {
        PluginsCommand::Precompile {
            common,
            target,
            out,
        } => precompile(&common, &target, &out),
        PluginsCommand::List {
            common,
            to: Some(to),
            token,
            trust,
        } => list_running(&Remote {
            to,
            trust,
            token,
            config: common.config,
        }),
        PluginsCommand::List { common, .. } => list(&common),
        PluginsCommand::Install { common, bundle } => {
            let (_, source) = common.load()?;
            let mut store = store(&common, &source)?;
            let bytes = read_limited(&bundle, store.limits().max_bundle_bytes)
                .with_context(|| format!("reading {}", bundle.display()))?;
            let installed = store
                .install(&bytes, |bundle| {
                    check_module(&bundle.manifest, &bundle.wasm)
                })
                .with_context(|| format!("{}", bundle.display()))?;
            println!("{}", installed.describe());
            Ok(())
        }
        PluginsCommand::Rollback { common, name } => {
            let (_, source) = common.load()?;
            let mut store = store(&common, &source)?;
            let bundle = store.rollback(&name)?;
            println!(
                "{name} rolled back to {}; it runs from the next start",
                bundle.manifest.version
            );
            Ok(())
        }
    }
}

fn store(common: &Common, source: &PluginSource) -> anyhow::Result<BundleStore> {
    open_store(source, &common.data_dir)?.context("no trust store: bundles cannot be verified")
}

/// Loads the module in a scratch host: it must be a working plugin whose own manifest agrees
/// with the signed one.
fn check_module(manifest: &BundleManifest, wasm: &[u8]) -> Result<(), String> {
    if manifest.payload.is_config_update() {
        // Its wasm is the one installed; the plugin checks the config when it takes it.
        return Ok(());
    }
    let mut host = PluginHost::new(HostConfig::default()).map_err(|err| err.to_string())?;
    host.load_checked(wasm, &manifest.name, None, |module| {
        module_agrees(manifest, module)
    })
    .map(|_| ())
    .map_err(|err| err.to_string())
}

fn precompile(common: &Common, target: &str, out: &std::path::Path) -> anyhow::Result<()> {
    let (_, source) = common.load()?;
    let store = store(common, &source)?;
    let engine = crate::host::engine(Some(target))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut compiled = 0;
    for path in crate::plugin_dir::bundle_files(&source.dir)? {
        let bundle = store
            .verify_file(&path)
            .with_context(|| format!("{}", path.display()))?;
        let artifact = engine.precompile_module(&bundle.wasm)?;
        let digest = crate::bundle::format::sha256(&bundle.wasm);
        let file = crate::host::cache::artifact_path(out, &engine, &digest);
        std::fs::write(&file, artifact).with_context(|| format!("writing {}", file.display()))?;
        compiled += 1;
    }
    println!(
        "compiled {compiled} plugins for {target} into {}",
        out.display()
    );
    Ok(())
}

/// What `GET /api/v1/plugins` answers, one row per running plugin.
fn list_running(remote: &Remote) -> anyhow::Result<()> {
    let plugins = remote.get("/api/v1/plugins")?;
    let rows: Vec<(String, String)> = plugins
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|plugin| {
            let state = if plugin["quarantined"].as_bool().unwrap_or(false) {
                ", QUARANTINED"
            } else {
                ""
            };
            (
                plugin["name"].as_str().unwrap_or("?").to_string(),
                format!(
                    "{} {}, {} events, {} breaches, {} traps{state}",
                    plugin["version"].as_str().unwrap_or("?"),
                    plugin["kind"].as_str().unwrap_or("?"),
                    plugin["events"],
                    plugin["breaches"],
                    plugin["traps"],
                ),
            )
        })
        .collect();
    print_table(&format!("plugins running on {}", remote.to), &rows);
    Ok(())
}

fn list(common: &Common) -> anyhow::Result<()> {
    let (_, source) = common.load()?;
    let store = store(common, &source)?;
    let mut rows = Vec::new();
    for path in crate::plugin_dir::bundle_files(&source.dir)? {
        let row = match store.verify_file(&path) {
            Ok(b) => format!(
                "{} factory, signed by {}",
                b.manifest.version, b.signer.name
            ),
            Err(err) => format!("REFUSED: {err}"),
        };
        rows.push((path.display().to_string(), row));
    }
    for (path, bundle) in store.installed() {
        rows.push((
            path.display().to_string(),
            format!(
                "{} installed, signed by {}",
                bundle.manifest.version, bundle.signer.name
            ),
        ));
    }
    print_table("plugin bundles", &rows);
    let versions: Vec<(String, String)> = store
        .versions()
        .iter()
        .map(|(name, highest, installed)| {
            let running = installed.map_or("-".to_string(), |i| i.version.to_string());
            let highest = highest.map_or("-".to_string(), |v| v.to_string());
            (
                name.to_string(),
                format!("running {running}, highest ever {highest}"),
            )
        })
        .collect();
    if !versions.is_empty() {
        print_table("versions (rollback guard)", &versions);
    }
    Ok(())
}
