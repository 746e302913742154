//! Protocol logs: `DATA_DIR/proto/<log>.json`, JSON lines with Zeek's field names and meanings
//! (`uid`, `id.orig_h`, `query`, `qtype_name`...), so an analyst can diff them with Zeek's
//! output. Each protocol module builds its own records; this module only writes them.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// One log line under construction.
pub type Record = Map<String, Value>;

pub struct ProtocolLogs {
    dir: PathBuf,
    files: BTreeMap<&'static str, BufWriter<File>>,
}

impl ProtocolLogs {
    pub fn open(data_dir: &Path) -> io::Result<ProtocolLogs> {
        let dir = data_dir.join("proto");
        std::fs::create_dir_all(&dir)?;
        Ok(ProtocolLogs {
            dir,
            files: BTreeMap::new(),
        })
    }

    /// Appends `record` to `DATA_DIR/proto/<log>.json`. A log that cannot be written is warned
    /// about, not fatal: detection goes on without it.
    pub fn write(&mut self, log: &'static str, record: Record) {
        let file = match self.files.entry(log) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                let path = self.dir.join(format!("{log}.json"));
                match OpenOptions::new().create(true).append(true).open(&path) {
                    Ok(file) => entry.insert(BufWriter::new(file)),
                    Err(err) => {
                        tracing::warn!("cannot write {}: {err}", path.display());
                        return;
                    }
                }
            }
        };
        let written = serde_json::to_writer(&mut *file, &Value::Object(record))
            .map_err(io::Error::from)
            .and_then(|()| file.write_all(b"\n"));
        if let Err(err) = written {
            tracing::warn!("writing the {log} log: {err}");
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        for file in self.files.values_mut() {
            file.flush()?;
        }
        Ok(())
    }
}
