//! Responses: the actions responder plugins request, their audit trail in
//! `DATA_DIR/actions.json`, and the enforcement table built from those in force.
//!
//! An action is `pending` (human mode: waiting for `vigil actions confirm ID`), `active` (in the
//! table until its end), `cleared` by an operator, or `expired`. Every change is recorded with
//! who made it and when, and the file is rewritten atomically, so after a restart exactly the
//! actions in force are enforced again until they end.
//!
//! Every change is also appended to `eve.json` as an `event_type: "action"` record (the SIEM
//! sees responses beside the alerts that caused them). A damaged `actions.json` is moved aside
//! and the actions are re-derived from those records (the live `eve.json` and its rotated
//! files): the last record of each action wins. What was only in the damaged file (records
//! dropped on a full disk, or rotated out) is said to be lost, in the log and the status.

pub mod guard;
pub mod reset;
pub mod table;

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::Response;

use crate::fleet::export::Outlet;
use crate::fleet::outbox::Kind;
use crate::store::eve::{eve_path, eve_timestamp};
use crate::store::files::write_atomic;
use crate::store::health;
pub use guard::{GuardConfig, Hold, ResponseGuard};
pub use table::{EnforcementTable, Secs};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Status {
    Pending,
    Active { since: Secs, until: Secs },
    Cleared { at: Secs },
    Expired { at: Secs },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: Secs,
    pub who: String,
    pub what: String,
    /// Why, in the operator's words (the console asks for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub id: u64,
    pub response: Response,
    pub device: IpAddr,
    pub reason: String,
    pub incident: Option<u64>,
    pub duration_secs: u64,
    /// `plugin version`.
    pub requested_by: String,
    pub requested_at: Secs,
    /// Packet time of the breach that decided it.
    #[serde(default)]
    pub decided_at: vigil_plugin_sdk::Timestamp,
    /// For a pattern of life: the services (peer, port) the device used before, which alone
    /// pass while the action is in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<(IpAddr, u16)>,
    pub status: Status,
    pub audit: Vec<AuditEntry>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedActions {
    actions: Vec<Action>,
}

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no action {0}")]
    NoSuchAction(u64),
    #[error("action {id} is {state}, not pending")]
    NotPending { id: u64, state: String },
    #[error("action {id} is {state}, not in force")]
    NotActive { id: u64, state: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: damaged: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

pub struct Actions {
    path: PathBuf,
    /// `eve.json`, where every change is recorded as well.
    journal: PathBuf,
    actions: BTreeMap<u64, Action>,
    /// Each action as last recorded in the journal.
    journaled: BTreeMap<u64, Action>,
    /// The last write of the file failed: the next checkpoint writes it.
    unsaved: bool,
    /// Published to the sensors as a snapshot ([`Actions::snapshot`]); a change copies it when
    /// a sensor still holds the old one, so reading it takes no lock.
    table: Arc<EnforcementTable>,
    /// The file as we last read or wrote it: any other is an operator's change (`vigil actions
    /// confirm|clear` while the appliance runs).
    seen: Option<FileStamp>,
    /// When the fleet is on: where changed actions go, and each action's audit length as last
    /// sent.
    fleet: Option<(Outlet, BTreeMap<u64, usize>)>,
}

/// What an operator does with an action (`vigil actions confirm|clear`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Confirm,
    Clear,
    /// An action in force stays in force for another of its durations past its end.
    Extend,
}

impl Decision {
    /// As the command line and the API path spell it.
    pub fn name(self) -> &'static str {
        match self {
            Decision::Confirm => "confirm",
            Decision::Clear => "clear",
            Decision::Extend => "extend",
        }
    }

    pub fn parse(name: &str) -> Option<Decision> {
        [Decision::Confirm, Decision::Clear, Decision::Extend]
            .into_iter()
            .find(|decision| decision.name() == name)
    }
}

/// What a responder's request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requested {
    pub id: u64,
    /// A new action, not a repeat of one already recorded.
    pub new: bool,
    /// It came in force with this request (a new autonomous action), rather than waiting for an
    /// operator or repeating one already recorded.
    pub activated: bool,
}

impl Actions {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("actions.json")
    }

    /// The data dir's actions; those in force go back into the table. A damaged file is moved
    /// aside and its actions re-derived from their records in `eve.json`.
    pub fn open(data_dir: &Path) -> Result<Actions, ActionError> {
        let path = Actions::path(data_dir);
        let journal = eve_path(data_dir);
        let (saved, recovered) = match load(&path) {
            Ok(saved) => (saved.actions, false),
            // Unreadable (an I/O error) is damaged too: the appliance starts without it.
            Err(err @ (ActionError::Corrupt { .. } | ActionError::Io { .. })) => {
                let reason = err.to_string();
                let actions = recover_from_journal(&journal);
                let in_force = actions
                    .iter()
                    .filter(|a| matches!(a.status, Status::Active { .. }))
                    .count();
                health::set_aside(
                    &path,
                    &reason,
                    Some(format!(
                        "{} actions ({in_force} in force) re-derived from their records in \
                         {} and its rotated files; changes whose records were dropped \
                         (full disk) or rotated out could not be recovered",
                        actions.len(),
                        journal.display()
                    )),
                );
                (actions, true)
            }
            Err(err) => return Err(err),
        };
        let mut actions = Actions {
            seen: stamp(&path),
            path,
            journal,
            journaled: saved.iter().map(|a| (a.id, a.clone())).collect(),
            actions: saved.into_iter().map(|a| (a.id, a)).collect(),
            unsaved: recovered,
            table: Arc::new(EnforcementTable::new()),
            fleet: None,
        };
        actions.rebuild();
        actions.save_if_unsaved();
        Ok(actions)
    }

    /// Writes the file if its last write failed (a checkpoint; the table in memory enforced
    /// the actions all along).
    pub fn save_if_unsaved(&mut self) {
        if self.unsaved {
            // Counted in `health` by `save`.
            let _ = self.save();
        }
    }

    /// Takes in what an operator changed in the file since we last read or wrote it, so a
    /// running appliance enforces a confirmation and lifts a cleared action. Returns the devices
    /// of the actions that came in force by that change. One `stat` when nothing changed.
    pub fn reload_if_changed(&mut self) -> Result<Vec<IpAddr>, ActionError> {
        let now = stamp(&self.path);
        if now == self.seen {
            return Ok(Vec::new());
        }
        let saved = match load(&self.path) {
            Ok(saved) => saved,
            Err(ActionError::Corrupt { reason, .. }) => {
                // Damaged beside us: what this process holds is the truth; write it back.
                health::set_aside(
                    &self.path,
                    &reason,
                    Some("rewritten from the actions the running appliance holds".into()),
                );
                self.unsaved = true;
                self.save_if_unsaved();
                return Ok(Vec::new());
            }
            Err(err) => return Err(err),
        };
        self.seen = now;
        let activated = saved
            .actions
            .iter()
            .filter(|a| matches!(a.status, Status::Active { .. }))
            .filter(|a| {
                !self
                    .actions
                    .get(&a.id)
                    .is_some_and(|old| matches!(old.status, Status::Active { .. }))
            })
            .map(|a| a.device)
            .collect();
        self.actions = saved.actions.into_iter().map(|a| (a.id, a)).collect();
        self.rebuild();
        self.export_changed();
        Ok(activated)
    }

    fn rebuild(&mut self) {
        let table = Arc::make_mut(&mut self.table);
        table.clear();
        for action in self.actions.values() {
            if let Status::Active { until, .. } = action.status {
                enforce(table, action, until);
            }
        }
    }

    pub fn table(&self) -> &EnforcementTable {
        &self.table
    }

    /// The table as it is now, for the sensors to read while the actions change.
    pub fn snapshot(&self) -> Arc<EnforcementTable> {
        Arc::clone(&self.table)
    }

    pub fn list(&self) -> impl Iterator<Item = &Action> {
        self.actions.values()
    }

    pub fn get(&self, id: u64) -> Option<&Action> {
        self.actions.get(&id)
    }

    /// Records a responder's request: in force at once, or pending an operator's confirmation
    /// (asked for by the responder, or `held` by the core's [`ResponseGuard`], whose reason goes
    /// into the audit trail). `allowed` is the device's learned pattern of life, for that
    /// response.
    pub fn request(
        &mut self,
        request: &vigil_plugin_sdk::ActionRequest,
        requested_by: &str,
        now: Secs,
        allowed: Vec<(IpAddr, u16)>,
        held: Option<&Hold>,
    ) -> Result<Requested, ActionError> {
        // One request per device, response and incident: a responder repeating itself on every
        // breach of an incident does not pile up actions.
        let duplicate = self.actions.values().find(|a| {
            a.device == request.device
                && a.response == request.response
                && a.incident == request.incident
                && matches!(a.status, Status::Pending | Status::Active { .. })
        });
        if let Some(existing) = duplicate {
            return Ok(Requested {
                id: existing.id,
                new: false,
                activated: false,
            });
        }
        let id = self.actions.keys().next_back().map_or(1, |last| last + 1);
        let mut action = Action {
            id,
            response: request.response,
            device: request.device,
            reason: request.reason.clone(),
            incident: request.incident,
            duration_secs: request.duration_secs,
            requested_by: requested_by.to_string(),
            requested_at: now,
            decided_at: request.ts,
            allowed,
            status: Status::Pending,
            audit: vec![AuditEntry {
                at: now,
                who: requested_by.to_string(),
                what: format!("requested: {}", request.reason),
                reason: None,
            }],
        };
        if let Some(why) = held {
            action.audit.push(AuditEntry {
                at: now,
                who: "vigil".to_string(),
                what: format!("held for an operator: {why}"),
                reason: None,
            });
        }
        let activated = !request.needs_confirmation && held.is_none();
        if activated {
            activate(
                &mut action,
                Arc::make_mut(&mut self.table),
                requested_by,
                now,
            );
        }
        self.actions.insert(id, action);
        // In force from here whatever the disk says; a failed write is retried (`save`).
        let _ = self.save();
        Ok(Requested {
            id,
            new: true,
            activated,
        })
    }

    /// An operator confirms a pending action: it is in force from now for its duration.
    pub fn confirm(&mut self, id: u64, who: &str, now: Secs) -> Result<&Action, ActionError> {
        self.decide(id, Decision::Confirm, who, None, now)
    }

    /// An operator lifts an action, pending or in force.
    pub fn clear(&mut self, id: u64, who: &str, now: Secs) -> Result<&Action, ActionError> {
        self.decide(id, Decision::Clear, who, None, now)
    }

    /// An operator's [`Decision`] on action `id`, recorded in its audit trail with `reason` when
    /// one is given.
    pub fn decide(
        &mut self,
        id: u64,
        decision: Decision,
        who: &str,
        reason: Option<&str>,
        now: Secs,
    ) -> Result<&Action, ActionError> {
        let action = self
            .actions
            .get_mut(&id)
            .ok_or(ActionError::NoSuchAction(id))?;
        match decision {
            Decision::Confirm => {
                if action.status != Status::Pending {
                    return Err(ActionError::NotPending {
                        id,
                        state: state_name(&action.status).into(),
                    });
                }
                activate(action, Arc::make_mut(&mut self.table), who, now);
            }
            Decision::Clear => {
                action.status = Status::Cleared { at: now };
                action.audit.push(AuditEntry {
                    at: now,
                    who: who.to_string(),
                    what: "cleared".into(),
                    reason: None,
                });
            }
            Decision::Extend => {
                let Status::Active { since, until } = action.status else {
                    return Err(ActionError::NotActive {
                        id,
                        state: state_name(&action.status).into(),
                    });
                };
                let until = until.saturating_add(action.duration_secs);
                action.status = Status::Active { since, until };
                action.audit.push(AuditEntry {
                    at: now,
                    who: who.to_string(),
                    what: format!("extended until {until}"),
                    reason: None,
                });
            }
        }
        if let Some(entry) = action.audit.last_mut() {
            entry.reason = reason.map(str::to_string);
        }
        if decision != Decision::Confirm {
            self.rebuild();
        }
        self.save()?;
        self.actions.get(&id).ok_or(ActionError::NoSuchAction(id))
    }

    /// Marks actions past their end as expired (the table already stopped enforcing them).
    pub fn expire(&mut self, now: Secs) -> Result<usize, ActionError> {
        let mut expired = 0;
        for action in self.actions.values_mut() {
            if let Status::Active { until, .. } = action.status {
                if now >= until {
                    action.status = Status::Expired { at: until };
                    action.audit.push(AuditEntry {
                        at: until,
                        who: "vigil".into(),
                        what: "expired".into(),
                        reason: None,
                    });
                    expired += 1;
                }
            }
        }
        if expired > 0 {
            self.rebuild();
            // Lifted from here whatever the disk says; a failed write is retried (`save`).
            let _ = self.save();
        }
        Ok(expired)
    }

    /// Writes the file, and records what changed in the journal. A failed write is counted
    /// ([`health`]) and retried at the next checkpoint; the change is in force regardless.
    fn save(&mut self) -> Result<(), ActionError> {
        self.journal_changes();
        let saved = SavedActions {
            actions: self.actions.values().cloned().collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&saved).map_err(|err| ActionError::Corrupt {
            path: self.path.clone(),
            reason: err.to_string(),
        })?;
        bytes.push(b'\n');
        if let Err(source) = write_atomic(&self.path, &bytes) {
            health::write_failed(&self.path, &source, 1);
            self.unsaved = true;
            return Err(ActionError::Io {
                path: self.path.clone(),
                source,
            });
        }
        health::write_ok(&self.path);
        self.unsaved = false;
        self.seen = stamp(&self.path);
        self.export_changed();
        Ok(())
    }

    /// Appends an `event_type: "action"` record to `eve.json` for every action changed since
    /// its last record, as one write (whole lines, so the alert writer's lines stay whole).
    fn journal_changes(&mut self) {
        let mut lines = Vec::new();
        let mut changed = 0;
        for action in self.actions.values() {
            if self.journaled.get(&action.id) == Some(action) {
                continue;
            }
            let at = action.audit.last().map_or(action.requested_at, |a| a.at);
            let record = serde_json::json!({
                "timestamp": eve_timestamp(vigil_plugin_sdk::Timestamp::from_secs(at)),
                "event_type": "action",
                "src_ip": action.device.to_string(),
                "action": action,
            });
            if serde_json::to_writer(&mut lines, &record).is_ok() {
                lines.push(b'\n');
                changed += 1;
            }
        }
        if changed == 0 {
            return;
        }
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.journal)
            .and_then(|mut file| io::Write::write_all(&mut file, &lines));
        match written {
            Ok(()) => {
                self.journaled = self.actions.clone();
            }
            Err(err) => health::write_failed(&self.journal, &err, changed),
        }
    }
}

/// Every action recorded in `eve` and its rotated files, the latest record of each.
fn recover_from_journal(eve: &Path) -> Vec<Action> {
    let rotated = |n: u32| {
        let mut name = eve.as_os_str().to_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    };
    let mut files: Vec<PathBuf> = (1..).map(rotated).take_while(|p| p.exists()).collect();
    // Oldest first, the live file last: later records win.
    files.reverse();
    files.push(eve.to_path_buf());
    let mut actions = BTreeMap::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for line in text
            .lines()
            .filter(|l| l.contains("\"event_type\":\"action\""))
        {
            let Ok(mut record) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if let Ok(action) = serde_json::from_value::<Action>(record["action"].take()) {
                actions.insert(action.id, action);
            }
        }
    }
    actions.into_values().collect()
}

impl Actions {
    /// Sends every action (with its audit trail) to the fleet when it changes; those already
    /// saved were sent by an earlier run.
    pub fn export_to(&mut self, outlet: Outlet) {
        let sent = self
            .actions
            .values()
            .map(|action| (action.id, action.audit.len()))
            .collect();
        self.fleet = Some((outlet, sent));
    }

    /// Each change adds an audit entry, so (id, audit length) names a version of an action.
    fn export_changed(&mut self) {
        let Some((outlet, sent)) = &mut self.fleet else {
            return;
        };
        for action in self.actions.values() {
            let len = action.audit.len();
            if sent.get(&action.id).is_some_and(|&was| was >= len) {
                continue;
            }
            match serde_json::to_string(action) {
                Ok(json) => outlet.send(Kind::Action, &format!("action.{}.{len}", action.id), json),
                Err(err) => tracing::error!("action {} not exported: {err}", action.id),
            }
            sent.insert(action.id, len);
        }
    }
}

fn load(path: &Path) -> Result<SavedActions, ActionError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice::<SavedActions>(&bytes).map_err(|err| ActionError::Corrupt {
                path: path.to_path_buf(),
                reason: err.to_string(),
            })
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(SavedActions::default()),
        Err(source) => Err(ActionError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// What tells one version of the file from another without reading it. Modification times are
/// as coarse as the kernel's tick, so two writes within one share theirs; every atomic write is a
/// new inode, though.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: SystemTime,
    inode: u64,
    len: u64,
}

/// `None` while there is no file.
fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok()?,
        inode: meta.ino(),
        len: meta.len(),
    })
}

fn enforce(table: &mut EnforcementTable, action: &Action, until: Secs) -> bool {
    match action.response {
        Response::EnforcePatternOfLife => {
            table.enforce_pattern(action.device, &action.allowed, until);
            true
        }
        response => table.enforce(action.device, response, until),
    }
}

fn activate(action: &mut Action, table: &mut EnforcementTable, who: &str, now: Secs) {
    let until = now.saturating_add(action.duration_secs);
    let enforced = enforce(table, action, until);
    action.status = Status::Active { since: now, until };
    action.audit.push(AuditEntry {
        at: now,
        who: who.to_string(),
        what: if enforced {
            format!("in force until {until}")
        } else {
            "in force (recorded; this response is not enforced by the table yet)".into()
        },
        reason: None,
    });
}

pub fn state_name(status: &Status) -> &'static str {
    match status {
        Status::Pending => "pending",
        Status::Active { .. } => "active",
        Status::Cleared { .. } => "cleared",
        Status::Expired { .. } => "expired",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A responder's request to block port 445 on `device` at second 1,000, for a minute.
    fn block_445(device: IpAddr, needs_confirmation: bool) -> vigil_plugin_sdk::ActionRequest {
        vigil_plugin_sdk::ActionRequest {
            response: Response::BlockPort(445),
            device,
            ts: vigil_plugin_sdk::Timestamp::from_secs(1_000),
            reason: "scan".into(),
            incident: None,
            duration_secs: 60,
            needs_confirmation,
        }
    }

    #[test]
    fn a_running_appliance_takes_in_a_confirmation_and_a_clearing_made_beside_it() {
        let dir = std::env::temp_dir().join(format!("vigil-actions-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let device = IpAddr::from([10, 0, 0, 50]);
        let request = block_445(device, true);
        let mut running = Actions::open(&dir).expect("open");
        let requested = running
            .request(&request, "responder 1", 1_000, Vec::new(), None)
            .expect("request");
        assert!(!requested.activated, "human mode waits");
        assert!(running.reload_if_changed().expect("reload").is_empty());
        assert!(!running.table().drops(device, device, Some(445), 1_001));

        // `vigil actions confirm`, another process on the same file.
        Actions::open(&dir)
            .expect("open")
            .confirm(requested.id, "analyst", 1_001)
            .expect("confirm");
        assert_eq!(running.reload_if_changed().expect("reload"), vec![device]);
        assert!(running.table().drops(device, device, Some(445), 1_002));
        assert!(
            running.reload_if_changed().expect("reload").is_empty(),
            "once"
        );

        Actions::open(&dir)
            .expect("open")
            .clear(requested.id, "analyst", 1_003)
            .expect("clear");
        assert!(running.reload_if_changed().expect("reload").is_empty());
        assert!(!running.table().drops(device, device, Some(445), 1_004));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_file_is_moved_aside_and_actions_in_force_come_back_from_eve_json() {
        let dir =
            std::env::temp_dir().join(format!("vigil-actions-damaged-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let device = IpAddr::from([10, 0, 0, 51]);
        let request = block_445(device, false);
        let mut running = Actions::open(&dir).expect("open");
        let id = running
            .request(&request, "responder 1", 1_000, Vec::new(), None)
            .expect("request")
            .id;
        std::fs::write(Actions::path(&dir), b"{\"actions\": [{\"id\": 1, \"resp").expect("damage");

        let reopened = Actions::open(&dir).expect("starts");
        assert!(reopened.table().drops(device, device, Some(445), 1_001));
        assert_eq!(
            reopened.get(id).map(|a| &a.status),
            running.get(id).map(|a| &a.status)
        );
        let kept = std::fs::read_dir(&dir)
            .expect("list")
            .filter_map(Result::ok)
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("actions.json.damaged-")
            });
        assert!(kept, "the damaged file is kept aside");
        assert_eq!(
            load(&Actions::path(&dir)).expect("rewritten").actions.len(),
            1
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn decisions_are_named_as_the_command_line_and_the_api_spell_them() {
        for decision in [Decision::Confirm, Decision::Clear, Decision::Extend] {
            assert_eq!(Decision::parse(decision.name()), Some(decision));
        }
        assert_eq!(Decision::parse("approve"), None);
    }

    #[test]
    fn an_action_in_force_is_extended_by_its_duration_with_the_reason_in_its_audit_trail() {
        let dir = std::env::temp_dir().join(format!("vigil-actions-extend-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let device = IpAddr::from([10, 0, 0, 51]);
        let mut actions = Actions::open(&dir).expect("open");
        let id = actions
            .request(
                &block_445(device, true),
                "responder 1",
                1_000,
                Vec::new(),
                None,
            )
            .expect("request")
            .id;
        let refused = actions.decide(id, Decision::Extend, "analyst", None, 1_001);
        assert!(
            matches!(refused, Err(ActionError::NotActive { .. })),
            "{refused:?}"
        );
        actions.confirm(id, "analyst", 1_001).expect("confirm");
        // In force for its 60 s: until 1,061; extended, until 1,121.
        let extended = actions
            .decide(
                id,
                Decision::Extend,
                "analyst",
                Some("still scanning"),
                1_050,
            )
            .expect("extend")
            .clone();
        assert_eq!(
            extended.status,
            Status::Active {
                since: 1_001,
                until: 1_121
            }
        );
        let entry = extended.audit.last().expect("audit");
        assert_eq!(
            (entry.who.as_str(), entry.reason.as_deref()),
            ("analyst", Some("still scanning"))
        );
        assert!(actions.table().drops(device, device, Some(445), 1_100));
        let reopened = Actions::open(&dir).expect("reopen");
        assert_eq!(reopened.get(id).expect("kept").status, extended.status);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
