//! Classic pcap files (little-endian, microsecond stamps; Ethernet unless a link type is given),
//! as the lab's captures and `tcpdump -w` are: read them into records, write records a test
//! built, and stream large generated captures to disk.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
pub const LINKTYPE_ETHERNET: u32 = 1;
const SNAPLEN: u32 = 262_144;

/// One captured frame and its stamp (microseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub ts_micros: u64,
    pub data: Vec<u8>,
}

/// The whole records of a classic little-endian microsecond pcap (a record cut short at the end,
/// as a capture still being written has, is left out).
pub fn read(path: &Path) -> Vec<Record> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.len() >= 24, "{}: no pcap header", path.display());
    let field = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    assert_eq!(
        field(0),
        MAGIC_MICROS,
        "{}: not a classic LE microsecond pcap",
        path.display()
    );
    let mut records = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let (secs, micros, caplen) = (field(at), field(at + 4), field(at + 8) as usize);
        let Some(data) = bytes.get(at + 16..at + 16 + caplen) else {
            break;
        };
        records.push(Record {
            ts_micros: u64::from(secs) * 1_000_000 + u64::from(micros),
            data: data.to_vec(),
        });
        at += 16 + caplen;
    }
    records
}

/// The link type a classic pcap's header names (`LINKTYPE_*`, tcpdump.org/linktypes.html).
pub fn link_type(path: &Path) -> u32 {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let field = bytes.get(20..24).expect("a pcap header");
    u32::from_le_bytes(field.try_into().expect("4 bytes"))
}

/// Writes `records` as a classic Ethernet pcap, in the order given.
pub fn write(path: &Path, records: &[Record]) {
    write_link(path, LINKTYPE_ETHERNET, records);
}

/// Writes `records` as a classic pcap of `link_type`, in the order given.
pub fn write_link(path: &Path, link_type: u32, records: &[Record]) {
    let mut writer = Writer::create_link(path, link_type);
    for record in records {
        writer.frame(record.ts_micros, &record.data);
    }
    writer.finish();
}

/// A pcap written frame by frame through a buffer (for captures too large to hold).
pub struct Writer {
    out: BufWriter<File>,
}

impl Writer {
    /// An Ethernet capture.
    pub fn create(path: &Path) -> Writer {
        Writer::create_link(path, LINKTYPE_ETHERNET)
    }

    pub fn create_link(path: &Path, link_type: u32) -> Writer {
        let file = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&MAGIC_MICROS.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes());
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&[0; 8]);
        header.extend_from_slice(&SNAPLEN.to_le_bytes());
        header.extend_from_slice(&link_type.to_le_bytes());
        out.write_all(&header).expect("write pcap header");
        Writer { out }
    }

    pub fn frame(&mut self, ts_micros: u64, data: &[u8]) {
        let secs = u32::try_from(ts_micros / 1_000_000).expect("a stamp before 2106");
        let len = u32::try_from(data.len()).expect("a frame under 4 GiB");
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&secs.to_le_bytes());
        header[4..8].copy_from_slice(&((ts_micros % 1_000_000) as u32).to_le_bytes());
        header[8..12].copy_from_slice(&len.to_le_bytes());
        header[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&header).expect("write record");
        self.out.write_all(data).expect("write frame");
    }

    pub fn finish(mut self) {
        self.out.flush().expect("flush pcap");
    }
}

/// A small deterministic generator (xorshift64*), so generated captures are the same each run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` for shuffling test captures.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_write_and_read() {
        let dir = std::env::temp_dir().join(format!("vigil-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("two.pcap");
        let records = vec![
            Record {
                ts_micros: 1_795_848_578_734_969,
                data: vec![1, 2, 3],
            },
            Record {
                ts_micros: 1_795_848_579_000_001,
                data: vec![4; 60],
            },
        ];
        write(&path, &records);
        assert_eq!(read(&path), records);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
