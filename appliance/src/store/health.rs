//! What went wrong with the data dir while running: records dropped because a file could not be
//! written (full disk, I/O errors), damaged files moved aside, logs rotated out, repairs made at
//! start. Every write path reports here instead of stopping the daemon, and the management API's
//! status and the run's summary read it.
//!
//! One registry for the process, because the writers (eve.json, protocol logs, incidents,
//! devices, plugin state, actions) live in different layers and threads, and the API thread
//! reads it: threading a handle through each of them would add a parameter to every writer for
//! a counter.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

/// A failing path is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Clone, Serialize)]
pub struct PathHealth {
    /// Records (lines, or whole-file saves) lost because this path could not be written.
    pub dropped: u64,
    /// Writes that failed.
    pub failures: u64,
    pub last_error: String,
    /// Whether the latest write failed (writing resumes on the next that works).
    pub failing: bool,
    #[serde(skip)]
    logged_at: Option<Instant>,
    #[serde(skip)]
    unlogged: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MovedAside {
    pub path: PathBuf,
    pub kept_as: Option<PathBuf>,
    pub reason: String,
    /// What could and could not be recovered, when something was.
    pub recovered: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct StorageHealth {
    /// By path: writes that failed and what they cost.
    pub write_failures: BTreeMap<PathBuf, PathHealth>,
    /// Log lines not written because free space was down to the reserve kept for state,
    /// actions and the device table.
    pub dropped_for_reserve: u64,
    /// Rotated log files deleted to stay within their budget (oldest first).
    pub rotated_out: u64,
    /// Damaged files moved aside at start or while running.
    pub moved_aside: Vec<MovedAside>,
    /// Cut last lines of JSON-lines files removed at start, and temporaries of interrupted
    /// atomic writes removed.
    pub cut_lines_repaired: u64,
    pub stale_temporaries_removed: u64,
    /// Checkpoints of learned state written (periodic and at shutdown), and the last one's
    /// wall clock (Unix seconds).
    pub checkpoints: u64,
    pub last_checkpoint: Option<u64>,
}

impl StorageHealth {
    /// Records lost to failed writes, every path together.
    pub fn dropped(&self) -> u64 {
        self.write_failures.values().map(|p| p.dropped).sum()
    }
}

static HEALTH: Mutex<Option<StorageHealth>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut StorageHealth) -> T) -> T {
    // A panic elsewhere while holding it leaves counters, still worth reading.
    let mut guard: MutexGuard<'_, Option<StorageHealth>> = HEALTH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    f(guard.get_or_insert_with(StorageHealth::default))
}

/// A write of `path` failed and `dropped` records were lost with it. Logged with the path at
/// most once a minute (with how many failed since the last line).
pub fn write_failed(path: &Path, err: &std::io::Error, dropped: u64) {
    with(|health| {
        let entry = health.write_failures.entry(path.to_path_buf()).or_default();
        entry.dropped += dropped;
        entry.failures += 1;
        entry.unlogged += 1;
        entry.failing = true;
        entry.last_error = err.to_string();
        if entry.logged_at.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            tracing::error!(
                "cannot write {}: {err}; {} failed writes since the last report, {} records \
                 dropped in all; capture and response go on",
                path.display(),
                entry.unlogged,
                entry.dropped
            );
            entry.logged_at = Some(Instant::now());
            entry.unlogged = 0;
        }
    });
}

/// A write of `path` worked: if it was failing, say that writing resumed.
pub fn write_ok(path: &Path) {
    with(|health| {
        if let Some(entry) = health.write_failures.get_mut(path) {
            if entry.failing {
                entry.failing = false;
                tracing::warn!(
                    "writing {} again ({} records were dropped while it failed)",
                    path.display(),
                    entry.dropped
                );
            }
        }
    });
}

pub fn dropped_for_reserve(lines: u64) {
    with(|health| health.dropped_for_reserve += lines);
}

pub fn rotated_out(path: &Path) {
    tracing::info!("{} deleted: log budget reached", path.display());
    with(|health| health.rotated_out += 1);
}

/// A damaged file was moved aside (`kept_as`, `None` if even that failed); logged here.
pub fn moved_aside(path: &Path, kept_as: Option<&Path>, reason: &str, recovered: Option<String>) {
    match kept_as {
        Some(kept) => tracing::error!(
            "{} is damaged ({reason}): moved aside as {}; starting without it{}",
            path.display(),
            kept.display(),
            recovered
                .as_deref()
                .map(|r| format!("; {r}"))
                .unwrap_or_default()
        ),
        None => tracing::error!(
            "{} is damaged ({reason}) and could not be moved aside; starting without it",
            path.display()
        ),
    }
    with(|health| {
        health.moved_aside.push(MovedAside {
            path: path.to_path_buf(),
            kept_as: kept_as.map(Path::to_path_buf),
            reason: reason.to_string(),
            recovered,
        })
    });
}

/// Moves damaged `path` aside ([`super::files::move_aside`]) and records it.
pub fn set_aside(path: &Path, reason: &str, recovered: Option<String>) {
    let kept = match super::files::move_aside(path) {
        Ok(kept) => Some(kept),
        Err(err) => {
            tracing::error!("moving {} aside: {err}", path.display());
            None
        }
    };
    moved_aside(path, kept.as_deref(), reason, recovered);
}

pub fn repaired_at_start(cut_lines: u64, temporaries: u64) {
    with(|health| {
        health.cut_lines_repaired += cut_lines;
        health.stale_temporaries_removed += temporaries;
    });
}

pub fn checkpointed(unix_secs: u64) {
    with(|health| {
        health.checkpoints += 1;
        health.last_checkpoint = Some(unix_secs);
    });
}

/// A copy of everything recorded so far.
pub fn snapshot() -> StorageHealth {
    with(|health| health.clone())
}
