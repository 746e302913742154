//! The newest alerts of eve.json, read backwards from its end in blocks, so answering costs the
//! tail it returns and not the whole file.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes read per step back.
const BLOCK: usize = 64 * 1024;
/// A line longer than this is skipped rather than gathered (no record Vigil writes comes close).
const MAX_LINE: usize = 4 * 1024 * 1024;

/// The newest `count` records with `event_type` `alert` in `path`, oldest first. Lines that are
/// not JSON (a line cut by a crash, or being written now) are skipped. A missing file has none.
pub fn newest(path: &Path, count: usize) -> std::io::Result<Vec<serde_json::Value>> {
    newest_in_blocks(path, count, BLOCK)
}

fn newest_in_blocks(
    path: &Path,
    count: usize,
    block: usize,
) -> std::io::Result<Vec<serde_json::Value>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut end = file.seek(SeekFrom::End(0))?;
    let mut found = Vec::new();
    // The start of the line that runs into the part already read (its end is in `partial`).
    let mut partial: Vec<u8> = Vec::new();
    let mut overlong = false;
    while end > 0 && found.len() < count {
        let step = end.min(block as u64);
        end -= step;
        file.seek(SeekFrom::Start(end))?;
        let mut buffer = vec![0; step as usize];
        file.read_exact(&mut buffer)?;
        buffer.extend_from_slice(&partial);
        let mut lines: Vec<&[u8]> = buffer.split(|&byte| byte == b'\n').collect();
        // The first piece may continue in the block before, unless this is the file's start.
        let first = if end > 0 { lines.remove(0) } else { &[] };
        for line in lines.iter().rev() {
            if std::mem::take(&mut overlong) {
                continue; // the rest of a line too long to gather
            }
            if let Some(alert) = alert(line) {
                found.push(alert);
                if found.len() == count {
                    break;
                }
            }
        }
        if first.len() > MAX_LINE {
            partial.clear();
            overlong = true;
        } else {
            partial = first.to_vec();
        }
    }
    found.reverse();
    Ok(found)
}

fn alert(line: &[u8]) -> Option<serde_json::Value> {
    let record = serde_json::from_slice::<serde_json::Value>(line).ok()?;
    (record["event_type"] == "alert").then_some(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// What reading the whole file forwards gives: the reference the tail reader must match.
    fn newest_reading_everything(path: &Path, count: usize) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(path).expect("read");
        let all: Vec<serde_json::Value> =
            text.lines().filter_map(|l| alert(l.as_bytes())).collect();
        all[all.len().saturating_sub(count)..].to_vec()
    }

    #[test]
    fn the_tail_read_in_blocks_matches_the_whole_file_read_forwards() {
        let dir = std::env::temp_dir().join(format!("vigil-alerts-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("eve.json");
        let mut file = std::fs::File::create(&path).expect("create");
        writeln!(file, "not json, a damaged first line").expect("write");
        for n in 0..3000 {
            // Lines of many lengths, so block edges fall everywhere in them.
            let padding = "x".repeat(n % 97);
            let kind = if n % 3 == 0 { "flow" } else { "alert" };
            writeln!(
                file,
                r#"{{"event_type":"{kind}","n":{n},"padding":"{padding}"}}"#
            )
            .expect("write");
        }
        write!(file, r#"{{"event_type":"alert","n":"cut"#).expect("write");
        drop(file);
        for block in [7, 64, 1000, BLOCK] {
            for count in [0, 1, 10, 500, 5000] {
                assert_eq!(
                    newest_in_blocks(&path, count, block).expect("tail"),
                    newest_reading_everything(&path, count),
                    "block {block}, count {count}"
                );
            }
        }
        assert!(newest(&dir.join("missing.json"), 5)
            .expect("missing")
            .is_empty());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
