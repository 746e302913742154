//! Protocol logs side by side: Vigil's JSON lines, Zeek's own ASCII logs, and what tshark reads
//! from the same capture.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::workspace::{replay_with, TempDir};

/// A replay with `--protocol-logs`: the data dir and what the run printed.
pub struct Replay {
    pub data: TempDir,
    pub stdout: String,
}

impl Replay {
    pub fn run(pcap: &Path) -> Replay {
        Replay::run_all(&[pcap])
    }

    /// A replay of `pcaps` in order, as one capture.
    pub fn run_all(pcaps: &[&Path]) -> Replay {
        let data = TempDir::new("protologs");
        let out = replay_with(data.path(), &["--protocol-logs"], pcaps);
        assert!(
            out.status.success(),
            "vigil replay {pcaps:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Replay {
            data,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        }
    }

    /// The records of `DATA_DIR/proto/<log>.json` (none when the log was never written).
    pub fn log(&self, log: &str) -> Vec<Value> {
        let path = self.data.path().join("proto").join(format!("{log}.json"));
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    }
}

/// A Vigil log value as Zeek's ASCII writer spells it: `-` unset, `(empty)` empty, `T`/`F`,
/// vectors joined by commas.
pub fn zeek_text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::Bool(b) => if *b { "T" } else { "F" }.into(),
        Value::String(s) if s.is_empty() => "(empty)".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "(empty)".into(),
        Value::Array(items) => items.iter().map(zeek_text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// The rows of a Zeek ASCII log (tab separated, `#fields` header), by field name.
pub fn zeek_log(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).expect("baseline log");
    let mut fields: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("#fields\t") {
            fields = header.split('\t').map(String::from).collect();
        } else if !line.starts_with('#') && !line.is_empty() {
            // Some baselines lost the `#fields` prefix of their header line.
            if fields.is_empty() && line.starts_with("ts\t") {
                fields = line.split('\t').map(String::from).collect();
                continue;
            }
            let row = fields
                .iter()
                .cloned()
                .zip(line.split('\t').map(unescape))
                .collect();
            rows.push(row);
        }
    }
    rows
}

/// Zeek's ASCII writer escapes a backslash as `\\` and unprintable bytes as `\x..`.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let rest = chars.as_str();
        if let Some(after) = rest.strip_prefix('\\') {
            out.push('\\');
            chars = after.chars();
        } else if let Some(byte) = rest
            .strip_prefix('x')
            .and_then(|hex| hex.get(..2))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(char::from(byte));
            chars = rest[3..].chars();
        } else {
            out.push('\\');
        }
    }
    out
}

/// The chosen fields of every frame tshark's display `filter` matches (first occurrence each).
pub fn tshark_fields(pcap: &Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    tshark(pcap, filter, fields, "f")
}

/// Every occurrence of `field` in the frames `filter` matches (a frame may hold several).
pub fn tshark_all(pcap: &Path, filter: &str, field: &str) -> Vec<String> {
    tshark(pcap, filter, &[field], "a")
        .into_iter()
        .flatten()
        .flat_map(|joined| joined.split(',').map(String::from).collect::<Vec<_>>())
        .filter(|value| !value.is_empty())
        .collect()
}

fn tshark(pcap: &Path, filter: &str, fields: &[&str], occurrence: &str) -> Vec<Vec<String>> {
    let mut command = Command::new("tshark");
    command.arg("-r").arg(pcap).args([
        "-n",
        "-Y",
        filter,
        "-T",
        "fields",
        "-E",
        &format!("occurrence={occurrence}"),
    ]);
    for field in fields {
        command.args(["-e", field]);
    }
    let out = command
        .output()
        .expect("tshark runs (./setup.sh installs it)");
    assert!(
        out.status.success(),
        "tshark -Y {filter}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| line.split('\t').map(String::from).collect())
        .collect()
}
