//! `vigil actions`: the responses responder plugins requested, confirming those waiting for an
//! operator (human mode) and lifting any, each recorded in `DATA_DIR/actions.json` with who and
//! when. A running appliance takes the change in within a second (and resets the TCP connections
//! a confirmed action blocks, in tap mode).

use std::path::PathBuf;

use clap::Subcommand;

use super::summary::print_table;
use crate::bundle::text::{format_time, unix_now};
use crate::respond::{state_name, Action, Actions, Status};

#[derive(Subcommand)]
pub enum ActionsCommand {
    /// Every action: pending, in force, cleared, expired.
    List {
        #[arg(long, default_value = "vigil-data")]
        data_dir: PathBuf,
    },
    /// Put a pending action in force, from now for its duration.
    Confirm {
        #[arg(long, default_value = "vigil-data")]
        data_dir: PathBuf,
        /// Who confirms, for the audit trail (default: $SUDO_USER, else $USER).
        #[arg(long)]
        by: Option<String>,
        id: u64,
    },
    /// Lift an action, pending or in force.
    Clear {
        #[arg(long, default_value = "vigil-data")]
        data_dir: PathBuf,
        #[arg(long)]
        by: Option<String>,
        id: u64,
    },
}

fn operator(by: Option<String>) -> String {
    by.or_else(|| std::env::var("SUDO_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "operator".into())
}

fn describe(action: &Action) -> String {
    let state = match action.status {
        Status::Active { until, .. } => format!("active until {}", format_time(until)),
        ref other => state_name(other).to_string(),
    };
    format!(
        "{:?} on {} for {} s, {state}; {} (by {})",
        action.response, action.device, action.duration_secs, action.reason, action.requested_by
    )
}

pub fn run(command: ActionsCommand) -> anyhow::Result<()> {
    match command {
        ActionsCommand::List { data_dir } => {
            let actions = Actions::open(&data_dir)?;
            let rows: Vec<(String, String)> = actions
                .list()
                .map(|a| (a.id.to_string(), describe(a)))
                .collect();
            if rows.is_empty() {
                println!("no actions");
            } else {
                print_table("actions", &rows);
            }
        }
        ActionsCommand::Confirm { data_dir, by, id } => {
            let mut actions = Actions::open(&data_dir)?;
            let action = actions.confirm(id, &operator(by), unix_now())?;
            println!("{id}: {}", describe(action));
        }
        ActionsCommand::Clear { data_dir, by, id } => {
            let mut actions = Actions::open(&data_dir)?;
            let action = actions.clear(id, &operator(by), unix_now())?;
            println!("{id}: {}", describe(action));
        }
    }
    Ok(())
}
