//! Protocol logs: `DATA_DIR/proto/<log>.json`, JSON lines with Zeek's field names and meanings
//! (`uid`, `id.orig_h`, `query`, `qtype_name`...), so an analyst can diff them with Zeek's
//! output. Each protocol module builds its own records; this module only writes them.
//!
//! The analyzers of a sharded capture each collect their lines in a [`LogOutbox`]; the one
//! [`ProtocolLogs`] writes them in packet order, so the logs do not depend on the sharding.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::store::lines::{LineLog, LogLimits};

/// One log line under construction.
pub type Record = Map<String, Value>;

/// Lines of one log held in memory before they are written together.
const WRITE_EVERY_BYTES: usize = 64 * 1024;

/// Lines an analyzer produced and nobody wrote yet, in the order it produced them.
#[derive(Debug, Default)]
pub struct LogOutbox {
    lines: Vec<(&'static str, Record)>,
}

impl LogOutbox {
    pub fn write(&mut self, log: &'static str, record: Record) {
        self.lines.push((log, record));
    }

    pub fn drain(&mut self) -> std::vec::Drain<'_, (&'static str, Record)> {
        self.lines.drain(..)
    }
}

/// Each log is a [`LineLog`]: rotated within its budget, and a full disk costs lines (counted),
/// never the capture.
pub struct ProtocolLogs {
    dir: PathBuf,
    limits: LogLimits,
    files: BTreeMap<&'static str, LineLog>,
}

impl ProtocolLogs {
    pub fn open(data_dir: &Path, limits: LogLimits) -> io::Result<ProtocolLogs> {
        let dir = data_dir.join("proto");
        std::fs::create_dir_all(&dir)?;
        Ok(ProtocolLogs {
            dir,
            limits,
            files: BTreeMap::new(),
        })
    }

    /// Appends `record` to `DATA_DIR/proto/<log>.json`. A log that cannot be written costs its
    /// lines (counted), not detection.
    pub fn write(&mut self, log: &'static str, record: Record) {
        let file = match self.files.entry(log) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => entry.insert(LineLog::open(
                &self.dir.join(format!("{log}.json")),
                self.limits,
            )),
        };
        file.push(&Value::Object(record));
        if file.pending_bytes() >= WRITE_EVERY_BYTES {
            file.flush();
        }
    }

    pub fn flush(&mut self) {
        for file in self.files.values_mut() {
            file.flush();
        }
    }
}
