//! Protocol logs: `DATA_DIR/proto/<protocol>.json`, JSON lines with Zeek's field names and
//! meanings (`uid`, `id.orig_h`, `query`, `qtype_name`...), so an analyst can diff them with
//! Zeek's output.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use vigil_plugin_sdk::{Event, EventKind};

use crate::proto::dns;

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

    fn write(&mut self, protocol: &'static str, record: &Value) {
        let file = match self.files.entry(protocol) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                let path = self.dir.join(format!("{protocol}.json"));
                match OpenOptions::new().create(true).append(true).open(&path) {
                    Ok(file) => entry.insert(BufWriter::new(file)),
                    Err(err) => {
                        tracing::warn!("cannot write {}: {err}", path.display());
                        return;
                    }
                }
            }
        };
        let written = serde_json::to_writer(&mut *file, record)
            .map_err(io::Error::from)
            .and_then(|()| file.write_all(b"\n"));
        if let Err(err) = written {
            tracing::warn!("writing the {protocol} log: {err}");
        }
    }

    fn common(event: &Event<'_>) -> serde_json::Map<String, Value> {
        let mut record = serde_json::Map::new();
        record.insert("ts".into(), json!(event.ts.secs_f64()));
        record.insert("uid".into(), json!(format!("F{}", event.flow)));
        record.insert("id.orig_h".into(), json!(event.src.ip.to_string()));
        record.insert("id.orig_p".into(), json!(event.src.port));
        record.insert("id.resp_h".into(), json!(event.dst.ip.to_string()));
        record.insert("id.resp_p".into(), json!(event.dst.port));
        record
    }

    pub fn dns(&mut self, event: &Event<'_>, trans_id: u16) {
        let EventKind::Dns {
            query,
            qtype,
            rcode,
            answers,
        } = &event.kind
        else {
            return;
        };
        let mut record = Self::common(event);
        record.insert("proto".into(), json!(event.proto.name().to_lowercase()));
        record.insert("trans_id".into(), json!(trans_id));
        record.insert("query".into(), json!(query));
        record.insert("qtype".into(), json!(qtype));
        record.insert("qtype_name".into(), json!(dns::qtype_name(*qtype)));
        if let Some(rcode) = rcode {
            record.insert("rcode".into(), json!(rcode));
            record.insert("rcode_name".into(), json!(dns::rcode_name(*rcode)));
        }
        record.insert("answers".into(), json!(answers));
        self.write("dns", &Value::Object(record));
    }

    pub fn http(&mut self, event: &Event<'_>) {
        let EventKind::Http {
            method,
            uri,
            uri_raw,
            host,
            user_agent,
            status,
        } = &event.kind
        else {
            return;
        };
        let mut record = Self::common(event);
        record.insert("method".into(), json!(method));
        record.insert("host".into(), json!(host));
        record.insert("uri".into(), json!(uri_raw));
        record.insert("uri_decoded".into(), json!(uri));
        record.insert("user_agent".into(), json!(user_agent));
        record.insert("status_code".into(), json!(status));
        self.write("http", &Value::Object(record));
    }

    pub fn flush(&mut self) -> io::Result<()> {
        for file in self.files.values_mut() {
            file.flush()?;
        }
        Ok(())
    }
}
