//! `vigil bundle`: build, sign, verify and inspect signed plugin bundles (see `crate::bundle`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use vigil_plugin_sdk::abi::ABI_MAJOR;
use vigil_plugin_sdk::{EventClass, Manifest, PluginKind, Subscriptions};

use crate::bundle::format::{read_limited, sha256};
use crate::bundle::text::{hex, unix_now};
use crate::bundle::{
    verify, Bundle, BundleManifest, InstalledVersions, Limits, Payload, SecretKey, TrustStore,
    VerifyLimits, Version, DEFAULT_MAX_BUNDLE_BYTES,
};
use crate::host::{HostConfig, PluginHost};
use crate::store::files::write_atomic;

#[derive(Subcommand)]
pub enum BundleCommand {
    /// Build an unsigned bundle of a plugin module, or a config-only update.
    ///
    /// A plugin bundle takes its name, version, kind, subscriptions and default config from the
    /// module itself (it is loaded to read them, and to check it accepts --config). A config
    /// update (a model update: new config, same code) needs --config-update, --for, --config
    /// and --version.
    Build(BuildArgs),
    /// Add a signature to BUNDLE with a secret key (replacing that key's earlier one). The file
    /// is rewritten atomically.
    Sign {
        /// Secret key file (from `vigil key generate`).
        #[arg(long)]
        key: PathBuf,
        bundle: PathBuf,
    },
    /// Check BUNDLE as the appliance would: format, signatures against the trust dir's
    /// delegation, wasm digest, ABI, and no rollback below the highest version installed.
    /// Prints OK or the reason for refusing; exits non-zero on refusal.
    Verify {
        /// The trust dir (see `vigil trust init`).
        #[arg(long)]
        trust: PathBuf,
        bundle: PathBuf,
    },
    /// Show what BUNDLE holds: manifest, wasm size and digest, signers. Checks nothing against
    /// a trust dir (use `verify` for that).
    Inspect { bundle: PathBuf },
}

#[derive(clap::Args)]
pub struct BuildArgs {
    /// The plugin module (.wasm) to bundle.
    #[arg(long, required_unless_present = "config_update", conflicts_with_all = ["config_update", "target"])]
    wasm: Option<PathBuf>,
    /// Build a config-only bundle for a plugin already installed.
    #[arg(long, requires_all = ["target", "config", "version"])]
    config_update: bool,
    /// With --config-update: the installed plugin it is for, as its .wasm or a bundle of it.
    #[arg(
        long = "for",
        value_name = "WASM_OR_BUNDLE",
        requires = "config_update"
    )]
    target: Option<PathBuf>,
    /// The plugin's config as a JSON file: the bundle's default config, or the update's new one.
    /// Without it a plugin bundle carries the plugin's own defaults.
    #[arg(long, value_name = "JSON_FILE")]
    config: Option<PathBuf>,
    /// The bundle's version, MAJOR.MINOR.PATCH, above every version of the plugin installed so
    /// far: required for a config update; for a plugin it defaults to the module's own (a
    /// vendor may re-release the same code under a new version).
    #[arg(long = "version", value_name = "X.Y.Z")]
    version: Option<String>,
    /// Memory cap of the plugin's instance in MiB [default: 64, or the --for bundle's].
    #[arg(long, value_name = "MIB")]
    memory_limit_mb: Option<u64>,
    /// Wall-clock budget of one batch in ms [default: 200, or the --for bundle's].
    #[arg(long, value_name = "MS")]
    batch_deadline_ms: Option<u32>,
    /// Where to write the bundle.
    #[arg(long)]
    out: PathBuf,
}

impl BuildArgs {
    /// `vigil bundle build --wasm WASM --out OUT`: the module's own name, version and defaults.
    pub(super) fn plugin(wasm: PathBuf, out: PathBuf) -> BuildArgs {
        BuildArgs {
            wasm: Some(wasm),
            config_update: false,
            target: None,
            config: None,
            version: None,
            memory_limit_mb: None,
            batch_deadline_ms: None,
            out,
        }
    }
}

pub fn run(command: BundleCommand) -> anyhow::Result<()> {
    match command {
        BundleCommand::Build(args) => build(&args),
        BundleCommand::Sign { key, bundle } => sign(&key, &bundle),
        BundleCommand::Verify { trust, bundle } => verify_file(&trust, &bundle),
        BundleCommand::Inspect { bundle } => inspect(&bundle),
    }
}

fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    read_limited(path, DEFAULT_MAX_BUNDLE_BYTES)
        .with_context(|| format!("reading {}", path.display()))
}

fn read_bundle(path: &Path) -> anyhow::Result<Bundle> {
    let bytes = read_bounded(path)?;
    Bundle::decode(&bytes, DEFAULT_MAX_BUNDLE_BYTES)
        .with_context(|| format!("{}: not a readable bundle", path.display()))
}

fn write_bundle(bundle: &Bundle, path: &Path) -> anyhow::Result<()> {
    let bytes = bundle.encode()?;
    write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))
}

fn limits(args: &BuildArgs, base: Limits) -> anyhow::Result<Limits> {
    let memory_bytes = match args.memory_limit_mb {
        Some(mib) => mib
            .checked_mul(1024 * 1024)
            .filter(|&bytes| bytes > 0)
            .context("--memory-limit-mb must be between 1 and a few million")?,
        None => base.memory_bytes,
    };
    let batch_deadline_ms = args.batch_deadline_ms.unwrap_or(base.batch_deadline_ms);
    if batch_deadline_ms == 0 {
        bail!("--batch-deadline-ms must be at least 1");
    }
    Ok(Limits {
        memory_bytes,
        batch_deadline_ms,
    })
}

fn read_config(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    serde_json::from_str::<serde_json::Value>(&text)
        .with_context(|| format!("{}: not JSON", path.display()))?;
    Ok(text.trim().to_string())
}

/// Loads `wasm` in a host under `limits`, with `config` if given, and returns what it says about
/// itself: the module must be a plugin the appliance would run, accepting that config.
fn plugin_manifest(
    wasm: &[u8],
    origin: &Path,
    limits: Limits,
    config: Option<&str>,
) -> anyhow::Result<Manifest> {
    let host_config = HostConfig {
        memory_limit_bytes: usize::try_from(limits.memory_bytes)
            .context("memory limit too large for this machine")?,
        batch_deadline_ms: u64::from(limits.batch_deadline_ms),
        ..HostConfig::default()
    };
    let mut host = PluginHost::new(host_config)?;
    let id = host.load(wasm, &origin.display().to_string(), config)?;
    host.manifest(id)
        .cloned()
        .context("the host lost the plugin it loaded")
}

pub(super) fn build(args: &BuildArgs) -> anyhow::Result<()> {
    let config = args.config.as_deref().map(read_config).transpose()?;
    let bundle = match (&args.wasm, &args.target) {
        (Some(wasm_path), _) => build_plugin(args, wasm_path, config)?,
        (None, Some(target)) => {
            let config = config.context("--config-update needs --config")?;
            build_config_update(args, target, config)?
        }
        (None, None) => bail!("give --wasm, or --config-update with --for"),
    };
    bundle
        .manifest
        .check()
        .map_err(|reason| anyhow::anyhow!("the bundle would be refused: {reason}"))?;
    write_bundle(&bundle, &args.out)?;
    let m = &bundle.manifest;
    println!(
        "built {} {} ({}) -> {} ({} bytes, unsigned)",
        m.name,
        m.version,
        payload_kind(&m.payload),
        args.out.display(),
        bundle.encode()?.len()
    );
    println!(
        "sign it with: vigil bundle sign --key SECRET_KEY {}",
        args.out.display()
    );
    Ok(())
}

fn build_plugin(
    args: &BuildArgs,
    wasm_path: &Path,
    config: Option<String>,
) -> anyhow::Result<Bundle> {
    let wasm = read_bounded(wasm_path)?;
    let limits = limits(args, Limits::default())?;
    let plugin = plugin_manifest(&wasm, wasm_path, limits, config.as_deref())?;
    let version_text = args.version.as_deref().unwrap_or(&plugin.version);
    let version: Version = version_text.parse().with_context(|| {
        format!(
            "version {version_text:?} of plugin {}: a bundle needs MAJOR.MINOR.PATCH",
            plugin.name
        )
    })?;
    let manifest = BundleManifest {
        name: plugin.name,
        version,
        // The host refused the module if it spoke another ABI.
        abi: ABI_MAJOR,
        kind: plugin.kind,
        subscriptions: plugin.subscriptions,
        filter: plugin.filter,
        limits,
        default_config: config.unwrap_or(plugin.default_config),
        payload: Payload::Plugin {
            wasm_sha256: [0; 32],
        },
    };
    Ok(Bundle::plugin(manifest, wasm))
}

fn build_config_update(args: &BuildArgs, target: &Path, config: String) -> anyhow::Result<Bundle> {
    let version_text = args
        .version
        .as_deref()
        .context("--config-update needs --version")?;
    let version: Version = version_text.parse()?;
    let bytes = read_bounded(target)?;
    let (name, kind, subscriptions, filter, limits, wasm_sha256) = if bytes.starts_with(b"\0asm") {
        let limits = limits(args, Limits::default())?;
        let plugin = plugin_manifest(&bytes, target, limits, Some(&config))?;
        (
            plugin.name,
            plugin.kind,
            plugin.subscriptions,
            plugin.filter,
            limits,
            sha256(&bytes),
        )
    } else {
        let base = Bundle::decode(&bytes, DEFAULT_MAX_BUNDLE_BYTES).with_context(|| {
            format!(
                "--for {}: neither a wasm module nor a bundle",
                target.display()
            )
        })?;
        let limits = limits(args, base.manifest.limits)?;
        if !base.manifest.payload.is_config_update() {
            if !base.wasm_matches_manifest() {
                bail!(
                    "--for {}: its wasm does not match its manifest",
                    target.display()
                );
            }
            // The plugin must accept the new config, as it will have to on the appliance.
            plugin_manifest(&base.wasm, target, limits, Some(&config))?;
        }
        let m = base.manifest;
        (
            m.name,
            m.kind,
            m.subscriptions,
            m.filter,
            limits,
            *m.payload.wasm_sha256(),
        )
    };
    let manifest = BundleManifest {
        name,
        version,
        abi: ABI_MAJOR,
        kind,
        subscriptions,
        filter,
        limits,
        default_config: config,
        payload: Payload::ConfigUpdate { wasm_sha256 },
    };
    Ok(Bundle::config_update(manifest, wasm_sha256))
}

pub(super) fn sign(key_path: &Path, path: &Path) -> anyhow::Result<()> {
    let mut bundle = read_bundle(path)?;
    if !bundle.wasm_matches_manifest() {
        bail!(
            "{}: its wasm does not match its manifest; refusing to sign a damaged bundle",
            path.display()
        );
    }
    bundle
        .manifest
        .check()
        .map_err(|reason| anyhow::anyhow!("{}: refusing to sign: {reason}", path.display()))?;
    let key = SecretKey::read(key_path)?;
    let replaced = bundle.sign(&key)?;
    write_bundle(&bundle, path)?;
    println!(
        "{} {} signed by key {}{} ({} signature(s))",
        bundle.manifest.name,
        bundle.manifest.version,
        key.public(),
        if replaced {
            ", replacing its earlier signature"
        } else {
            ""
        },
        bundle.signatures.len()
    );
    Ok(())
}

fn verify_file(trust_dir: &Path, path: &Path) -> anyhow::Result<()> {
    let trust = TrustStore::open(trust_dir)?;
    let installed = InstalledVersions::open(&trust.versions_path())?;
    let limits = VerifyLimits::default();
    let bytes = read_limited(path, limits.max_bundle_bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    match verify(&bytes, &trust, &installed, &limits, unix_now()) {
        Ok(verified) => {
            let m = &verified.manifest;
            println!(
                "OK: {} {} ({}), signed by {} (key {}) under delegation v{}",
                m.name,
                m.version,
                payload_kind(&m.payload),
                verified.signer.name,
                verified.signer.key,
                verified.signer.delegation_version
            );
            Ok(())
        }
        Err(err) => bail!("{}: REFUSED: {err}", path.display()),
    }
}

fn payload_kind(payload: &Payload) -> &'static str {
    match payload {
        Payload::Plugin { .. } => "plugin",
        Payload::ConfigUpdate { .. } => "config update",
    }
}

fn kind_name(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::Detector => "detector",
        PluginKind::Analyst => "analyst",
        PluginKind::Responder => "responder",
    }
}

fn subscription_names(subscriptions: Subscriptions) -> String {
    const CLASSES: [(EventClass, &str); 10] = [
        (EventClass::Flow, "flow"),
        (EventClass::Tick, "tick"),
        (EventClass::Dns, "dns"),
        (EventClass::Http, "http"),
        (EventClass::Smb, "smb"),
        (EventClass::Ntlm, "ntlm"),
        (EventClass::Ldap, "ldap"),
        (EventClass::Kerberos, "kerberos"),
        (EventClass::Rdp, "rdp"),
        (EventClass::Breach, "breach"),
    ];
    let mut names: Vec<String> = CLASSES
        .iter()
        .filter(|(class, _)| subscriptions.contains(*class))
        .map(|(_, name)| name.to_string())
        .collect();
    let known = CLASSES
        .iter()
        .fold(Subscriptions::NONE, |all, (class, _)| all.with(*class));
    // Classes added to the SDK after this list still show, by bit.
    for bit in 0..64 {
        if subscriptions.0 & !known.0 & (1 << bit) != 0 {
            names.push(format!("class {bit}"));
        }
    }
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn inspect(path: &Path) -> anyhow::Result<()> {
    let bundle = read_bundle(path)?;
    let m = &bundle.manifest;
    println!("{} {} ({})", m.name, m.version, payload_kind(&m.payload));
    println!("  abi            {}", m.abi);
    println!("  kind           {}", kind_name(m.kind));
    println!("  subscriptions  {}", subscription_names(m.subscriptions));
    println!("  filter         {}", m.filter);
    println!(
        "  limits         memory {} MiB, batch deadline {} ms",
        m.limits.memory_bytes / (1024 * 1024),
        m.limits.batch_deadline_ms
    );
    match &m.payload {
        Payload::Plugin { wasm_sha256 } => {
            let verdict = if bundle.wasm_matches_manifest() {
                "matches the manifest".to_string()
            } else {
                format!(
                    "DOES NOT MATCH the manifest's {}: changed after signing",
                    hex(wasm_sha256)
                )
            };
            println!(
                "  wasm           {} bytes, sha256 {} ({verdict})",
                bundle.wasm.len(),
                hex(&sha256(&bundle.wasm))
            );
        }
        Payload::ConfigUpdate { wasm_sha256 } => {
            println!("  for wasm       sha256 {}", hex(wasm_sha256));
            if !bundle.wasm.is_empty() {
                println!(
                    "  wasm           {} bytes (A CONFIG UPDATE CARRIES NONE)",
                    bundle.wasm.len()
                );
            }
        }
    }
    println!("  config         {}", m.default_config);
    if let Err(reason) = m.check() {
        println!("  INVALID        {reason}");
    }
    let signatures = bundle.check_signatures()?;
    if signatures.is_empty() {
        println!("  signatures     none (unsigned)");
    } else {
        println!("  signatures     {}", signatures.len());
        for (key, valid) in signatures {
            let verdict = if valid {
                "valid signature of this manifest"
            } else {
                "DOES NOT MATCH this manifest"
            };
            println!("    key {key}  {verdict}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks its definitions only in debug builds; the tests run in release.
    #[test]
    fn command_line_definition_is_consistent() {
        super::super::Cli::command().debug_assert();
    }
}
