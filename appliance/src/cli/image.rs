//! `vigil image`: signed core updates. A vendor packs and signs one (image/build.sh does it for
//! every build); an operator checks it and applies it to a running appliance, which writes the
//! slot not booted and reboots into it on trial (image/README.md).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use super::push::Remote;
use crate::bundle::text::hex;
use crate::bundle::{SecretKey, TrustStore, Version};
use crate::image::update::{self, Update, MAX_UPDATE_BYTES};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Pack a slot image and both slots' boot entries into an update signed with --key.
    Pack {
        #[arg(long)]
        version: Version,
        /// The slot image: root filesystem followed by its dm-verity hash tree.
        #[arg(long)]
        root: PathBuf,
        /// `DATA_BLOCKS,HASH_START,ROOT_HASH,SALT`, as in the boot entries.
        #[arg(long)]
        verity: String,
        #[arg(long)]
        uki_a: PathBuf,
        #[arg(long)]
        uki_b: PathBuf,
        /// Secret key delegated for `vigil-core`.
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Show what an update carries and who signed it (nothing is checked).
    Inspect { update: PathBuf },
    /// Check an update against a trust dir as an appliance would.
    Verify {
        #[arg(long)]
        trust: PathBuf,
        update: PathBuf,
    },
    /// Send an update to a running appliance: it verifies it, writes the slot not booted,
    /// and reboots into it; if that slot never reports healthy, the next boot falls back.
    Apply {
        #[command(flatten)]
        remote: Remote,
        update: PathBuf,
    },
    /// A running appliance's version, booted slot, root and capture.
    Status {
        #[command(flatten)]
        remote: Remote,
    },
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    crate::bundle::format::read_limited(path, MAX_UPDATE_BYTES)
        .with_context(|| format!("reading {}", path.display()))
}

pub fn run(command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Pack {
            version,
            root,
            verity,
            uki_a,
            uki_b,
            key,
            out,
        } => {
            let key = SecretKey::read(&key)?;
            let bytes = update::pack(
                version,
                &verity,
                &read(&root)?,
                [&read(&uki_a)?, &read(&uki_b)?],
                &[&key],
            )?;
            std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "packed vigil-core {version} ({} bytes) signed by {} into {}",
                bytes.len(),
                key.public().fingerprint(),
                out.display()
            );
            Ok(())
        }
        ImageCommand::Inspect { update } => {
            let bytes = read(&update)?;
            let found = Update::decode(&bytes)?;
            let manifest = &found.manifest;
            println!("{} {}", manifest.name, manifest.version);
            println!("verity     {}", manifest.verity);
            println!(
                "root       {} bytes, sha256 {}",
                manifest.root.len,
                hex(&manifest.root.sha256)
            );
            for (slot, part) in ["a", "b"].iter().zip(&manifest.uki) {
                println!(
                    "boot {slot}     {} bytes, sha256 {}",
                    part.len,
                    hex(&part.sha256)
                );
            }
            Ok(())
        }
        ImageCommand::Verify { trust, update } => {
            let bytes = read(&update)?;
            let trust = TrustStore::open(&trust)?;
            let verified = update::verify(&bytes, &trust, crate::bundle::text::unix_now())?;
            println!(
                "{} {}: signed by {} ({}), every part intact",
                verified.manifest.name,
                verified.manifest.version,
                verified.signer.name,
                verified.signer.key.fingerprint()
            );
            Ok(())
        }
        ImageCommand::Apply { remote, update } => {
            let body = remote.post_file("/api/v1/image", &update, MAX_UPDATE_BYTES)?;
            println!(
                "{}: {}",
                remote.to,
                body["installed"].as_str().unwrap_or("installed")
            );
            Ok(())
        }
        ImageCommand::Status { remote } => {
            let body = remote.get("/api/v1/status")?;
            println!("{}", serde_json::to_string_pretty(&body)?);
            Ok(())
        }
    }
}
