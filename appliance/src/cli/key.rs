//! `vigil key`: ed25519 key pairs for signing bundles (vendor keys) and delegations (root keys).

use std::path::PathBuf;

use clap::Subcommand;

use crate::bundle::keys::{generate_key_files, public_path};

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Generate a key pair: PATH holds the secret key (mode 0600), PATH.pub the public key.
    /// Neither file may exist already.
    Generate {
        /// Where to write the secret key.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Generate { out } => {
            let public = generate_key_files(&out)?;
            println!("secret key: {} (keep it private)", out.display());
            println!("public key: {}", public_path(&out).display());
            println!("key:        {public}");
            Ok(())
        }
    }
}
