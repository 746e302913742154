//! A JSON-lines file that survives a full disk and stays within a budget: `eve.json` and the
//! protocol logs.
//!
//! Records collect in memory as whole lines and go out together on [`LineLog::flush`]. A write
//! that fails (ENOSPC, EIO) is cut back to the last whole line, its records are dropped and
//! counted ([`super::health`]), and the next flush tries again: nothing stops capture. Past
//! `rotate_bytes` the file becomes `NAME.1` (`NAME.1` becomes `NAME.2`...), and rotated files
//! beyond the budget are deleted, oldest first. Lines are not written while the data dir's free
//! space is below the reserve, which is kept for state, actions and the device table.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::health;

/// `[storage]` in the config file: how much of the data partition logs may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// A log file is rotated (`eve.json` -> `eve.json.1`) when it grows past this.
    pub rotate_mb: u64,
    /// `eve.json` and its rotated files together stay within this; the oldest go first.
    pub eve_budget_mb: u64,
    /// Each protocol log (`proto/<log>.json`) with its rotated files stays within this.
    pub protocol_log_budget_mb: u64,
    /// Free space on the data dir's file system that logs never use: what state checkpoints,
    /// actions and the device table are written into when the disk is otherwise full.
    pub reserve_mb: u64,
    /// Wall-clock seconds between checkpoints of learned state, the device table and actions
    /// (also taken at shutdown); what a kill -9 or power cut loses at most.
    pub checkpoint_secs: u64,
}

impl Default for StorageConfig {
    /// Fits the image's 64 MiB data partition: 24 MiB of alerts, 8 MiB kept free, the rest
    /// for installed bundles, plugin state and the device table.
    fn default() -> Self {
        StorageConfig {
            rotate_mb: 4,
            eve_budget_mb: 24,
            protocol_log_budget_mb: 8,
            reserve_mb: 8,
            checkpoint_secs: 60,
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// The bounds of one log, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    pub rotate_bytes: u64,
    /// Rotated files kept beside the live one.
    pub keep_rotated: u32,
    pub reserve_bytes: u64,
}

impl StorageConfig {
    pub fn eve_limits(&self) -> LogLimits {
        self.limits(self.eve_budget_mb)
    }

    pub fn protocol_log_limits(&self) -> LogLimits {
        self.limits(self.protocol_log_budget_mb)
    }

    fn limits(&self, budget_mb: u64) -> LogLimits {
        let rotate_mb = self.rotate_mb.max(1);
        LogLimits {
            rotate_bytes: rotate_mb * MIB,
            // The live file counts against the budget too.
            keep_rotated: u32::try_from((budget_mb / rotate_mb).saturating_sub(1))
                .unwrap_or(u32::MAX),
            reserve_bytes: self.reserve_mb * MIB,
        }
    }
}

impl Default for LogLimits {
    fn default() -> Self {
        StorageConfig::default().eve_limits()
    }
}

pub struct LineLog {
    path: PathBuf,
    limits: LogLimits,
    /// `None` after the file could not be (re)opened: the next flush tries again.
    file: Option<File>,
    /// Bytes of whole lines in the file.
    len: u64,
    pending: Vec<u8>,
    pending_lines: u64,
    /// Written to the OS since the last sync to disk.
    unsynced: bool,
}

impl LineLog {
    /// Opens `path` for appending, first cutting a last line an earlier process left half
    /// written (counted in [`health`]). A file that cannot be opened (full disk, I/O error) is
    /// counted and opened again at the next flush: a log never keeps the daemon from starting.
    pub fn open(path: &Path, limits: LogLimits) -> LineLog {
        let mut log = LineLog {
            path: path.to_path_buf(),
            limits,
            file: None,
            len: 0,
            pending: Vec::new(),
            pending_lines: 0,
            unsynced: false,
        };
        if let Err(err) = log.reopen() {
            health::write_failed(path, &err, 0);
        }
        log
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let cut = super::files::repair_cut_line(&self.path)?;
        if cut > 0 {
            tracing::warn!(
                "{}: cut {cut} bytes of a last line left half written by an earlier run",
                self.path.display()
            );
            health::repaired_at_start(1, 0);
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.len = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds one record as a line, written on the next [`LineLog::flush`].
    pub fn push(&mut self, record: &serde_json::Value) {
        // Serialising a `Value` into memory cannot fail.
        if serde_json::to_writer(&mut self.pending, record).is_ok() {
            self.pending.push(b'\n');
            self.pending_lines += 1;
        }
    }

    /// Bytes waiting for [`LineLog::flush`].
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Writes the waiting lines; whatever cannot be written is dropped and counted, never an
    /// error, so a full disk costs records and nothing else.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.pending_lines);
        if free_bytes(&self.path).is_some_and(|free| free < self.limits.reserve_bytes) {
            health::dropped_for_reserve(lines);
            self.pending.clear();
            return;
        }
        // Rotated before writing, not after: the newest lines stay in the live file, where a
        // reader tailing it looks.
        if self.len >= self.limits.rotate_bytes {
            self.rotate();
        }
        match self.write_pending() {
            Ok(()) => {
                health::write_ok(&self.path);
                self.unsynced = true;
            }
            Err(err) => health::write_failed(&self.path, &err, lines),
        }
        self.pending.clear();
    }

    fn write_pending(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            self.reopen()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("not open"));
        };
        // Others append whole lines too (actions' records): the file's length, not ours.
        let before = file.metadata()?.len();
        let written = file.write_all(&self.pending);
        match &written {
            Ok(()) => self.len = before + self.pending.len() as u64,
            // Part of the batch may be on disk: cut it, so the next line starts a line. Making
            // a file shorter needs no free space.
            Err(_) => {
                if let Err(err) = file.set_len(before) {
                    tracing::error!("cutting {} back to whole lines: {err}", self.path.display());
                    self.file = None;
                }
            }
        }
        written
    }

    /// Syncs what was written to disk (what a power cut can lose at most).
    pub fn sync(&mut self) {
        if !self.unsynced {
            return;
        }
        if let Some(file) = &self.file {
            match file.sync_data() {
                Ok(()) => self.unsynced = false,
                Err(err) => health::write_failed(&self.path, &err, 0),
            }
        }
    }

    /// `NAME` -> `NAME.1` -> ... -> `NAME.<keep>`; the one past `keep` is deleted.
    fn rotate(&mut self) {
        self.sync();
        let rotated = |n: u32| {
            let mut name = self.path.as_os_str().to_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        let oldest = rotated(self.limits.keep_rotated.max(1));
        if self.limits.keep_rotated == 0 || oldest.exists() {
            let gone = if self.limits.keep_rotated == 0 {
                &self.path
            } else {
                &oldest
            };
            match std::fs::remove_file(gone) {
                Ok(()) => health::rotated_out(gone),
                Err(err) => health::write_failed(gone, &err, 0),
            }
        }
        let mut moved = Ok(());
        for n in (1..self.limits.keep_rotated).rev() {
            let from = rotated(n);
            if from.exists() {
                moved = moved.and(std::fs::rename(&from, rotated(n + 1)));
            }
        }
        if self.limits.keep_rotated > 0 {
            moved = moved.and(std::fs::rename(&self.path, rotated(1)));
        }
        if let Err(err) = moved {
            health::write_failed(&self.path, &err, 0);
        }
        self.file = None;
        self.len = 0;
        // Failing here, the next flush opens it again.
        let _ = self.reopen();
    }
}

impl Drop for LineLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Free bytes (for an unprivileged writer) on the file system holding `path`'s directory.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    space(dir).map(|(free, _)| free)
}

/// Free bytes (for an unprivileged writer) and total bytes of the file system holding `dir`.
pub fn space(dir: &Path) -> Option<(u64, u64)> {
    let dir = CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `dir` is a NUL-terminated path and `stats` is a valid buffer statvfs fills in.
    let rc = unsafe { libc::statvfs(dir.as_ptr(), stats.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stats` in.
    let stats = unsafe { stats.assume_init() };
    Some((
        stats.f_bavail.saturating_mul(stats.f_frsize),
        stats.f_blocks.saturating_mul(stats.f_frsize),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_rotates_and_keeps_its_budget_oldest_out_first() {
        let dir = std::env::temp_dir().join(format!("vigil-lines-{}", std::process::id()));
        let path = dir.join("eve.json");
        let limits = LogLimits {
            rotate_bytes: 100,
            keep_rotated: 2,
            reserve_bytes: 0,
        };
        let mut log = LineLog::open(&path, limits);
        for i in 0..40 {
            log.push(&serde_json::json!({ "n": i, "pad": "0123456789" }));
            log.flush();
        }
        assert!(dir.join("eve.json.2").exists());
        assert!(!dir.join("eve.json.3").exists(), "past the budget");
        // Oldest to newest, the kept lines are the latest ones, in order, none cut.
        let mut kept = Vec::new();
        for name in ["eve.json.2", "eve.json.1", "eve.json"] {
            let text = std::fs::read_to_string(dir.join(name)).expect("read");
            for line in text.lines() {
                let record: serde_json::Value = serde_json::from_str(line).expect("whole line");
                kept.push(record["n"].as_u64().expect("n"));
            }
        }
        assert_eq!(kept.last(), Some(&39));
        assert!(kept.first() > Some(&0), "the oldest went first");
        assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "{kept:?}");
        std::fs::remove_dir_all(dir).expect("cleanup");
    }
}
