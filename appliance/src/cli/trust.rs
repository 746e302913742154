//! `vigil trust`: the appliance's root keys and the delegation naming who may sign plugins (see
//! `crate::bundle::trust`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::bundle::format::read_limited;
use crate::bundle::text::{format_time, hex, parse_date, unix_now};
use crate::bundle::trust::MAX_DELEGATION_BYTES;
use crate::bundle::{
    DelegatedKey, Delegation, Installed, InstalledVersions, PublicKey, SecretKey, SignedDelegation,
    TrustStore,
};
use crate::store::files::write_atomic;

#[derive(Subcommand)]
pub enum TrustCommand {
    /// Create a trust dir (if needed) and install a root public key in it. Run again to add
    /// another root.
    Init {
        /// The trust dir.
        #[arg(long)]
        trust: PathBuf,
        /// Root public key file (a .pub from `vigil key generate`).
        #[arg(long)]
        root: PathBuf,
    },
    /// Write a delegation signed by a root key: which keys may sign which plugins, until when.
    ///
    /// Name each signing key with --key, --name and --plugins, repeated in that order for
    /// several keys; every key expires with the delegation. Each new delegation needs a
    /// higher --version than the one installed, and replaces it entirely: a key left out is
    /// revoked. Example (rotating to a new key, keeping the old one for the SMB model only):
    ///
    ///   vigil trust delegate --root-key root --version 2 --expires 2027-12-31 --out d2.vdlg \
    ///     --key acme-2027.pub --name "acme 2027" --plugins '*' \
    ///     --key acme-2026.pub --name "acme 2026" --plugins smb-scan,smb-brute-force
    #[command(verbatim_doc_comment)]
    Delegate(DelegateArgs),
    /// Install a delegation file into the trust dir. Refused unless signed by an installed root,
    /// unexpired, and newer than the installed one.
    Install {
        #[arg(long)]
        trust: PathBuf,
        delegation: PathBuf,
    },
    /// Show the roots, the delegation's keys with their scope and expiry, revoked keys, and the
    /// highest version installed of each plugin.
    Show {
        #[arg(long)]
        trust: PathBuf,
    },
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("expiry").required(true).args(["expires", "days"])))]
pub struct DelegateArgs {
    /// Root secret key that signs the delegation.
    #[arg(long)]
    root_key: PathBuf,
    /// A signing key's public key file (repeat for several keys).
    #[arg(long = "key", value_name = "PUBFILE", required = true)]
    keys: Vec<PathBuf>,
    /// Who holds the key, as shown in listings and refusals (one per --key, same order).
    #[arg(long = "name", value_name = "LABEL", required = true)]
    names: Vec<String>,
    /// Plugins the key may sign: comma-separated names, or '*' for any (one per --key).
    #[arg(long = "plugins", value_name = "NAMES|*", required = true)]
    plugins: Vec<String>,
    /// Expiry date (UTC midnight at its start), YYYY-MM-DD.
    #[arg(long, value_name = "YYYY-MM-DD")]
    expires: Option<String>,
    /// Expiry in days from now.
    #[arg(long, value_name = "N")]
    days: Option<u64>,
    /// Delegation version: higher than every delegation installed before.
    #[arg(long = "version", value_name = "N")]
    version: u64,
    /// Where to write the signed delegation.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(command: TrustCommand) -> anyhow::Result<()> {
    match command {
        TrustCommand::Init { trust, root } => init(&trust, &root),
        TrustCommand::Delegate(args) => delegate(&args),
        TrustCommand::Install { trust, delegation } => install(&trust, &delegation),
        TrustCommand::Show { trust } => show(&trust),
    }
}

fn init(dir: &Path, root_path: &Path) -> anyhow::Result<()> {
    let root = PublicKey::read(root_path)?;
    let (store, added) = TrustStore::init(dir, &root)?;
    let verb = if added {
        "installed"
    } else {
        "already installed"
    };
    println!(
        "root key {root} {verb} in {} ({} root(s))",
        dir.display(),
        store.roots().len()
    );
    Ok(())
}

fn delegate(args: &DelegateArgs) -> anyhow::Result<()> {
    if args.keys.len() != args.names.len() || args.keys.len() != args.plugins.len() {
        bail!(
            "give one --name and one --plugins per --key ({} keys, {} names, {} plugin lists)",
            args.keys.len(),
            args.names.len(),
            args.plugins.len()
        );
    }
    let now = unix_now();
    let expires = match (&args.expires, args.days) {
        (Some(date), _) => parse_date(date)
            .with_context(|| format!("--expires {date:?}: not a date (YYYY-MM-DD)"))?,
        (None, Some(days)) => days
            .checked_mul(86_400)
            .and_then(|secs| now.checked_add(secs))
            .context("--days is too large")?,
        (None, None) => bail!("give --expires or --days"),
    };
    if expires <= now {
        bail!(
            "the delegation would expire at {}, which is past",
            format_time(expires)
        );
    }
    let mut keys = Vec::new();
    for ((path, name), plugins) in args.keys.iter().zip(&args.names).zip(&args.plugins) {
        let public = PublicKey::read(path)?;
        let plugins: Vec<String> = plugins
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect();
        keys.push(DelegatedKey {
            public: *public.as_bytes(),
            name: name.clone(),
            plugins,
            expires,
        });
    }
    let delegation = Delegation {
        version: args.version,
        expires,
        keys,
    };
    delegation
        .check()
        .map_err(|reason| anyhow::anyhow!("invalid delegation: {reason}"))?;
    let root = SecretKey::read(&args.root_key)?;
    let signed = SignedDelegation::sign(delegation, &root)?;
    write_atomic(&args.out, &signed.encode()?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "delegation v{} signed by root {} -> {}",
        args.version,
        root.public(),
        args.out.display()
    );
    print_delegation(&signed.delegation, now);
    Ok(())
}

fn install(dir: &Path, path: &Path) -> anyhow::Result<()> {
    let mut store = TrustStore::open(dir)?;
    let bytes = read_limited(path, MAX_DELEGATION_BYTES)
        .with_context(|| format!("reading {}", path.display()))?;
    let now = unix_now();
    let outcome = store
        .install_delegation(&bytes, now)
        .with_context(|| format!("{}: REFUSED", path.display()))?;
    let Some(delegation) = store.delegation() else {
        bail!("no delegation after installing one");
    };
    match outcome {
        Installed::New {
            previous: Some(previous),
        } => println!(
            "installed delegation v{} (replacing v{previous})",
            delegation.version
        ),
        Installed::New { previous: None } => {
            println!("installed delegation v{}", delegation.version)
        }
        Installed::Unchanged => println!(
            "delegation v{} is already installed: nothing changed",
            delegation.version
        ),
    }
    print_delegation(delegation, now);
    Ok(())
}

fn print_delegation(delegation: &Delegation, now: u64) {
    let state = |expires: u64| if now >= expires { "EXPIRED" } else { "expires" };
    println!(
        "delegation v{}, {} {}",
        delegation.version,
        state(delegation.expires),
        format_time(delegation.expires)
    );
    if delegation.keys.is_empty() {
        println!("  no signing keys: every key is revoked");
    }
    for key in &delegation.keys {
        println!("  {}", key.name);
        println!("    key      {}", key.public_key());
        println!("    plugins  {}", key.plugins.join(", "));
        println!("    {}  {}", state(key.expires), format_time(key.expires));
    }
}

fn show(dir: &Path) -> anyhow::Result<()> {
    let store = TrustStore::open(dir)?;
    let now = unix_now();
    println!("trust dir {}", dir.display());
    println!("roots");
    for root in store.roots() {
        println!("  {root}");
    }
    match store.delegation() {
        Some(delegation) => print_delegation(delegation, now),
        None => println!("no delegation installed: no plugin-signing key is trusted"),
    }
    if !store.retired().is_empty() {
        println!("revoked keys");
        for (key, retired) in store.retired() {
            println!(
                "  {} ({key}), last in delegation v{}",
                retired.name, retired.last_version
            );
        }
    }
    let versions = InstalledVersions::open(&store.versions_path())?;
    let mut plugins = versions.iter().peekable();
    if plugins.peek().is_none() {
        println!("no plugin installed from a bundle yet");
    } else {
        println!("plugins (highest version ever installed; installed now)");
    }
    for (name, highest, installed) in plugins {
        let highest = highest.map_or("-".to_string(), |v| v.to_string());
        let now = installed.map_or("removed".to_string(), |i| {
            format!("{} (wasm {})", i.version, &hex(&i.wasm_sha256)[..16])
        });
        println!("  {name:<24} {highest:<10} {now}");
    }
    Ok(())
}
