//! The outbox: records waiting for the broker's acknowledgement, kept on the data partition so
//! neither a broker outage nor a restart loses them.
//!
//! `DATA_DIR/fleet-outbox/` holds numbered segments (`00000001.jsonl`, ...), one record a line
//! (`kind TAB msg-id TAB json`), appended in the order the records were made, and `acked`: the
//! segment and byte offset of the first record the broker has not acknowledged. Acknowledged
//! whole segments are deleted; the cursor is saved at most once a second, so after a crash up
//! to a second of acknowledged records is sent again, and the stream drops them by their
//! `Nats-Msg-Id`. When the segments pass the cap, the oldest segment goes and its unsent
//! records are counted as dropped.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::store::files::write_atomic;

/// What a record is: the last token of its subject (`vigil.SITE.APPLIANCE.KIND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Alert,
    Incident,
    Action,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Alert => "alert",
            Kind::Incident => "incident",
            Kind::Action => "action",
        }
    }

    fn parse(name: &str) -> Option<Kind> {
        [Kind::Alert, Kind::Incident, Kind::Action]
            .into_iter()
            .find(|kind| kind.name() == name)
    }
}

/// One record on its way out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    /// The `Nats-Msg-Id`: derived from the record's own place (eve.json offset, action id and
    /// audit length), so a record sent again after a crash carries the same id.
    pub id: String,
    /// The record as JSON.
    pub json: String,
}

/// A record in memory, with the cursor just past it.
struct Pending {
    record: Record,
    segment: u64,
    end: u64,
}

pub struct Outbox {
    dir: PathBuf,
    cap_bytes: u64,
    segment_bytes: u64,
    /// Unacknowledged records, oldest first (at most the cap's worth).
    pending: VecDeque<Pending>,
    /// Bytes of every segment still on disk.
    disk_bytes: u64,
    /// Segments on disk, oldest first, with their sizes.
    segments: VecDeque<(u64, u64)>,
    writer: File,
    /// The acknowledged cursor (segment, offset) and whether it changed since it was saved.
    cursor: (u64, u64),
    cursor_dirty: bool,
    cursor_saved_at: Instant,
    /// Records dropped since start because the outbox was full.
    pub dropped: u64,
    /// Lines in the segments that could not be read back (damaged), skipped.
    pub damaged: u64,
}

/// How often the acknowledged cursor is saved while records flow.
const SAVE_CURSOR_EVERY: Duration = Duration::from_secs(1);

impl Outbox {
    /// Opens (or creates) the outbox under `data_dir`, reading back what was not acknowledged.
    pub fn open(data_dir: &Path, cap_bytes: u64) -> io::Result<Outbox> {
        let dir = data_dir.join("fleet-outbox");
        std::fs::create_dir_all(&dir)?;
        let cursor = read_cursor(&dir.join("acked"));
        let mut numbers = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name();
            let Some(number) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".jsonl"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            numbers.push(number);
        }
        numbers.sort_unstable();
        let mut pending = VecDeque::new();
        let mut segments = VecDeque::new();
        let (mut disk_bytes, mut damaged) = (0, 0);
        for number in numbers {
            let path = segment_path(&dir, number);
            if number < cursor.0 {
                // Acknowledged before the last stop: only its deletion was lost.
                std::fs::remove_file(&path)?;
                continue;
            }
            let from = if number == cursor.0 { cursor.1 } else { 0 };
            let size = read_back(&path, number, from, &mut pending, &mut damaged)?;
            segments.push_back((number, size));
            disk_bytes += size;
        }
        if segments.is_empty() {
            segments.push_back((cursor.0.max(1), 0));
        }
        let last = segments.back().map_or(1, |s| s.0);
        let writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&dir, last))?;
        Ok(Outbox {
            cap_bytes,
            // Four segments or more, so dropping the oldest drops a quarter at most.
            segment_bytes: (cap_bytes / 4).max(1),
            pending,
            disk_bytes,
            segments,
            writer,
            dir,
            cursor,
            cursor_dirty: false,
            cursor_saved_at: Instant::now(),
            dropped: 0,
            damaged,
        })
    }

    fn segment_path(&self, number: u64) -> PathBuf {
        segment_path(&self.dir, number)
    }

    /// Appends a record (handed to the OS, not synced: eve.json is the record of truth, the
    /// outbox only what has yet to leave). Drops the oldest segment when over the cap.
    pub fn push(&mut self, record: Record) -> io::Result<()> {
        let line = format!("{}\t{}\t{}\n", record.kind.name(), record.id, record.json);
        let bytes = line.len() as u64;
        let (mut number, mut size) = self.segments.back().copied().unwrap_or((1, 0));
        if size > 0 && size + bytes > self.segment_bytes {
            number += 1;
            size = 0;
            self.writer = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.segment_path(number))?;
            self.segments.push_back((number, 0));
        }
        self.writer.write_all(line.as_bytes())?;
        if let Some(back) = self.segments.back_mut() {
            back.1 = size + bytes;
        }
        self.disk_bytes += bytes;
        self.pending.push_back(Pending {
            record,
            segment: number,
            end: size + bytes,
        });
        while self.disk_bytes > self.cap_bytes && self.segments.len() > 1 {
            self.drop_oldest_segment()?;
        }
        Ok(())
    }

    fn drop_oldest_segment(&mut self) -> io::Result<()> {
        let Some((number, size)) = self.segments.pop_front() else {
            return Ok(());
        };
        while self.pending.front().is_some_and(|p| p.segment == number) {
            self.pending.pop_front();
            self.dropped += 1;
        }
        self.disk_bytes -= size;
        std::fs::remove_file(self.segment_path(number))?;
        self.cursor = (number + 1, 0);
        self.cursor_dirty = true;
        Ok(())
    }

    /// The oldest record not yet acknowledged.
    pub fn front(&self) -> Option<&Record> {
        self.pending.front().map(|p| &p.record)
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The broker acknowledged the oldest record: forget it, and delete segments wholly sent.
    pub fn ack(&mut self) -> io::Result<()> {
        let Some(done) = self.pending.pop_front() else {
            return Ok(());
        };
        self.cursor = (done.segment, done.end);
        self.cursor_dirty = true;
        let current = self.segments.back().map(|s| s.0);
        while let Some(&(number, size)) = self.segments.front() {
            let finished =
                Some(number) != current && self.pending.front().is_none_or(|p| p.segment > number);
            if !finished {
                break;
            }
            self.segments.pop_front();
            self.disk_bytes -= size;
            // Save the cursor past it first: a crash in between must not resend a deleted
            // segment's successor from its start while believing the old one still exists.
            self.save_cursor()?;
            std::fs::remove_file(self.segment_path(number))?;
        }
        if self.cursor_saved_at.elapsed() >= SAVE_CURSOR_EVERY {
            self.save_cursor()?;
        }
        Ok(())
    }

    /// Saves the acknowledged cursor if it moved.
    pub fn save_cursor(&mut self) -> io::Result<()> {
        if !self.cursor_dirty {
            return Ok(());
        }
        let (segment, offset) = self.cursor;
        write_atomic(
            &self.dir.join("acked"),
            format!("{segment} {offset}\n").as_bytes(),
        )?;
        self.cursor_dirty = false;
        self.cursor_saved_at = Instant::now();
        Ok(())
    }
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:08}.jsonl"))
}

/// Reads segment `number` from byte `from` into `pending`; returns the segment's size.
fn read_back(
    path: &Path,
    number: u64,
    from: u64,
    pending: &mut VecDeque<Pending>,
    damaged: &mut u64,
) -> io::Result<u64> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut offset = from.min(size);
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)? as u64;
        if n == 0 {
            break;
        }
        offset += n;
        // A line cut short by a crash has no newline: it was never handed on, so skip it.
        match line.strip_suffix('\n').and_then(parse_line) {
            Some(record) => pending.push_back(Pending {
                record,
                segment: number,
                end: offset,
            }),
            None => *damaged += 1,
        }
    }
    Ok(size)
}

/// `SEGMENT OFFSET`; a missing or damaged cursor means nothing was acknowledged (resending is
/// safe: the stream drops duplicates by id).
fn read_cursor(path: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(segment)), Some(Ok(offset))) => (segment, offset),
        _ => (0, 0),
    }
}

fn parse_line(line: &str) -> Option<Record> {
    let mut fields = line.splitn(3, '\t');
    let kind = Kind::parse(fields.next()?)?;
    let id = fields.next()?.to_string();
    let json = fields.next()?.to_string();
    Some(Record { kind, id, json })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vigil-outbox-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn record(n: usize) -> Record {
        Record {
            kind: Kind::Alert,
            id: format!("eve.{n}"),
            json: format!("{{\"n\":{n}}}"),
        }
    }

    #[test]
    fn a_restart_resends_from_the_first_unacknowledged_record_in_order() {
        let dir = data_dir("restart");
        let mut outbox = Outbox::open(&dir, 1 << 20).expect("outbox");
        for n in 0..10 {
            outbox.push(record(n)).expect("push");
        }
        for _ in 0..4 {
            outbox.ack().expect("ack");
        }
        outbox.save_cursor().expect("cursor");
        drop(outbox);
        let mut again = Outbox::open(&dir, 1 << 20).expect("reopened");
        let mut left = Vec::new();
        while let Some(front) = again.front().cloned() {
            left.push(front);
            again.ack().expect("ack");
        }
        assert_eq!(left, (4..10).map(record).collect::<Vec<_>>());
        assert_eq!((again.dropped, again.damaged), (0, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_records_and_counts_them() {
        let dir = data_dir("full");
        // About 20 bytes a line: segments of 100 bytes hold four or five.
        let mut outbox = Outbox::open(&dir, 400).expect("outbox");
        for n in 0..40 {
            outbox.push(record(n)).expect("push");
        }
        let kept = outbox.len() as u64;
        assert_eq!(kept + outbox.dropped, 40);
        assert!(outbox.dropped > 0 && kept > 0);
        assert_eq!(outbox.front(), Some(&record(outbox.dropped as usize)));
        let on_disk: u64 = std::fs::read_dir(dir.join("fleet-outbox"))
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .map(|p| std::fs::metadata(p).expect("meta").len())
            .sum();
        assert!(on_disk <= 400, "{on_disk} bytes on disk");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
