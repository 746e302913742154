//! `vigil plugin`: a plugin author's crate, made from the template built into this binary
//! (`appliance/templates/plugin/`), then built for wasm and signed into a bundle in one step.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use clap::Subcommand;

use super::bundle::{self, BuildArgs};

/// The template's files: where each goes in the new crate, and its text.
const TEMPLATE: [(&str, &str); 5] = [
    (
        "Cargo.toml",
        include_str!("../../templates/plugin/Cargo.toml"),
    ),
    ("src/lib.rs", include_str!("../../templates/plugin/lib.rs")),
    (
        "tests/replay.rs",
        include_str!("../../templates/plugin/replay.rs"),
    ),
    (
        "README.md",
        include_str!("../../templates/plugin/README.md"),
    ),
    (
        ".gitignore",
        include_str!("../../templates/plugin/gitignore"),
    ),
];

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Make a plugin crate from the template: a small working model (`Device / Many New
    /// Hosts`), its unit tests and a test over a real capture, depending on this checkout's SDK.
    New {
        /// The plugin's name (lowercase letters, digits and dashes), also its crate's.
        name: String,
        /// Where to make it [default: ./NAME]; it must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The Vigil checkout whose SDK and appliance the crate uses [default: the one this
        /// `vigil` was built from].
        #[arg(long)]
        vigil_src: Option<PathBuf>,
    },
    /// Build the plugin crate in DIR for wasm (`cargo build --profile plugin --target
    /// wasm32-unknown-unknown`) and sign it into a bundle (`vigil bundle build` + `sign`).
    Build {
        /// The plugin crate.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Secret key to sign with (from `vigil key generate`).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the bundle [default: DIR/NAME.vbundle].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::New {
            name,
            dir,
            vigil_src,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let checkout = match vigil_src {
                Some(path) => path,
                None => built_from()?,
            };
            new(&name, &dir, &checkout)
        }
        PluginCommand::Build { dir, key, out } => build(&dir, &key, out),
    }
}

/// The checkout this binary was built from, while it still exists.
fn built_from() -> anyhow::Result<PathBuf> {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if !checkout.join("plugin-sdk").join("Cargo.toml").is_file() {
        bail!(
            "the Vigil checkout this vigil was built from ({}) is gone: give --vigil-src",
            checkout.display()
        );
    }
    Ok(checkout)
}

fn new(name: &str, dir: &Path, checkout: &Path) -> anyhow::Result<()> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!("plugin name {name:?}: use lowercase letters, digits and dashes, starting with a letter");
    }
    let checkout = checkout
        .canonicalize()
        .with_context(|| format!("the Vigil checkout {}", checkout.display()))?;
    // The path goes into TOML and Rust string literals as it is.
    let checkout_text = checkout
        .to_str()
        .filter(|text| !text.contains(['"', '\\']))
        .with_context(|| format!("{}: a path with quotes or backslashes", checkout.display()))?;
    let workspace = std::fs::read_to_string(checkout.join("Cargo.toml"))
        .with_context(|| format!("{}: not a Vigil checkout", checkout.display()))?;
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        bail!("{} exists and is not empty", dir.display());
    }
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{checkout}}", checkout_text)
    };
    for (path, text) in TEMPLATE {
        let mut text = fill(text);
        if path == "Cargo.toml" {
            text.push_str(&profiles(&workspace));
        }
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    // The checkout's lock pins the versions its builds used, so a shared target dir reuses them.
    let lock = checkout.join("Cargo.lock");
    if lock.is_file() {
        std::fs::copy(&lock, dir.join("Cargo.lock"))
            .with_context(|| format!("copying {}", lock.display()))?;
    }
    println!("made plugin {name} in {}", dir.display());
    println!(
        "test it:            cd {} && cargo test --release",
        dir.display()
    );
    println!(
        "build and sign it:  vigil plugin build {} --key SECRET_KEY",
        dir.display()
    );
    Ok(())
}

/// The workspace's `[profile.*]` sections: the plugin profile, and a release profile the same
/// as the workspace's so that tests built with a shared target dir reuse its builds.
fn profiles(workspace_toml: &str) -> String {
    let mut copying = false;
    let mut out = String::new();
    for line in workspace_toml.lines() {
        if line.starts_with('[') {
            copying = line.starts_with("[profile.");
        }
        if copying {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn build(dir: &Path, key: &Path, out: Option<PathBuf>) -> anyhow::Result<()> {
    let manifest = dir.join("Cargo.toml");
    let metadata = Command::new(cargo())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .context("running cargo metadata")?;
    if !metadata.status.success() {
        bail!(
            "cargo metadata {}: {}",
            manifest.display(),
            String::from_utf8_lossy(&metadata.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&metadata.stdout).context("reading cargo metadata")?;
    let package = &metadata["packages"][0];
    let name = package["name"]
        .as_str()
        .context("cargo metadata names no package")?;
    let target_dir = metadata["target_directory"]
        .as_str()
        .context("cargo metadata names no target directory")?;
    let status = Command::new(cargo())
        .args([
            "build",
            "--profile",
            "plugin",
            "--target",
            "wasm32-unknown-unknown",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of {} failed", manifest.display());
    }
    let wasm = Path::new(target_dir)
        .join("wasm32-unknown-unknown")
        .join("plugin")
        .join(format!("{}.wasm", name.replace('-', "_")));
    let out = out.unwrap_or_else(|| dir.join(format!("{name}.vbundle")));
    bundle::build(&BuildArgs::plugin(wasm, out.clone()))?;
    bundle::sign(key, &out)
}

/// The cargo that runs this (when it does), else the one on the PATH.
fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}
