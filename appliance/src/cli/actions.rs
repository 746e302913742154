//! `vigil actions`: the responses responder plugins requested, confirming those waiting for an
//! operator (human mode) and lifting any, each recorded in `DATA_DIR/actions.json` with who and
//! when. Against the data directory, a running appliance takes the change in within a second;
//! through its management API (`--to`, as on the flashed image, which has no shell) at once.
//! Either way it resets the TCP connections a confirmed action blocks, in tap mode.

use std::path::PathBuf;

use clap::Subcommand;

use super::push::Remote;
use super::server_trust::ServerTrust;
use super::summary::print_table;
use crate::bundle::text::{format_time, unix_now};
use crate::respond::{state_name, Action, Actions, Decision, Status};

/// Where the actions (or the certificate, `vigil tls`) are: a data directory, or a running
/// appliance's API.
#[derive(clap::Args)]
pub struct Where {
    #[arg(long, default_value = "vigil-data", conflicts_with = "to")]
    pub data_dir: PathBuf,
    /// A running appliance's API instead, e.g. `https://10.0.0.5:8470`.
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    trust: ServerTrust,
    /// Bearer token for --to; else `$VIGIL_API_TOKEN`, else `api.token` of --config.
    #[arg(long, requires = "to")]
    token: Option<String>,
    /// Config file to take the token for --to from.
    #[arg(long, requires = "to")]
    config: Option<PathBuf>,
}

impl Where {
    pub fn remote(&self) -> Option<Remote> {
        self.to.as_ref().map(|to| Remote {
            to: to.clone(),
            trust: self.trust.clone(),
            token: self.token.clone(),
            config: self.config.clone(),
        })
    }
}

#[derive(Subcommand)]
pub enum ActionsCommand {
    /// Every action: pending, in force, cleared, expired.
    List {
        #[command(flatten)]
        at: Where,
    },
    /// Put a pending action in force, from now for its duration.
    Confirm {
        #[command(flatten)]
        at: Where,
        /// Who confirms, for the audit trail (default: $SUDO_USER, else $USER).
        #[arg(long)]
        by: Option<String>,
        id: u64,
    },
    /// Lift an action, pending or in force.
    Clear {
        #[command(flatten)]
        at: Where,
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
        ActionsCommand::List { at } => {
            let actions: Vec<Action> = match at.remote() {
                Some(remote) => serde_json::from_value(remote.get("/api/v1/actions")?)?,
                None => Actions::open(&at.data_dir)?.list().cloned().collect(),
            };
            let rows: Vec<(String, String)> = actions
                .iter()
                .map(|a| (a.id.to_string(), describe(a)))
                .collect();
            if rows.is_empty() {
                println!("no actions");
            } else {
                print_table("actions", &rows);
            }
        }
        ActionsCommand::Confirm { at, by, id } => decide(&at, id, Decision::Confirm, by)?,
        ActionsCommand::Clear { at, by, id } => decide(&at, id, Decision::Clear, by)?,
    }
    Ok(())
}

fn decide(at: &Where, id: u64, decision: Decision, by: Option<String>) -> anyhow::Result<()> {
    let by = operator(by);
    let action: Action = match at.remote() {
        Some(remote) => serde_json::from_value(remote.post_json(
            &format!("/api/v1/actions/{id}/{}", decision.name()),
            &serde_json::json!({ "by": by }),
        )?)?,
        None => Actions::open(&at.data_dir)?
            .decide(id, decision, &by, None, unix_now())?
            .clone(),
    };
    println!("{id}: {}", describe(&action));
    Ok(())
}
