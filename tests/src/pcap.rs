//! Classic pcap files (microsecond, little-endian, Ethernet), as `tcpdump -w` writes them: read
//! a capture's frames, or write frames a test built into one.

use std::path::Path;

const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;
const SNAPLEN: u32 = 262_144;

/// One captured frame: packet time in microseconds since the epoch, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub ts_micros: u64,
    pub data: Vec<u8>,
}

/// Writes `frames` as a classic pcap file.
pub fn write(path: &Path, frames: &[Frame]) {
    let mut file = Vec::with_capacity(24 + frames.iter().map(|f| 16 + f.data.len()).sum::<usize>());
    file.extend_from_slice(&MAGIC_MICROS.to_le_bytes());
    file.extend_from_slice(&2u16.to_le_bytes());
    file.extend_from_slice(&4u16.to_le_bytes());
    file.extend_from_slice(&[0; 8]);
    file.extend_from_slice(&SNAPLEN.to_le_bytes());
    file.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    for frame in frames {
        let len = u32::try_from(frame.data.len()).expect("frame fits a pcap record");
        let secs = u32::try_from(frame.ts_micros / 1_000_000).expect("time fits pcap's 32 bits");
        file.extend_from_slice(&secs.to_le_bytes());
        file.extend_from_slice(&((frame.ts_micros % 1_000_000) as u32).to_le_bytes());
        file.extend_from_slice(&len.to_le_bytes());
        file.extend_from_slice(&len.to_le_bytes());
        file.extend_from_slice(&frame.data);
    }
    std::fs::write(path, file).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The whole records of a classic little-endian microsecond pcap (a record cut short at the end,
/// as a capture still being written has, is left out).
pub fn read(path: &Path) -> Vec<Frame> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let le32 = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    assert!(bytes.len() >= 24, "{}: no pcap header", path.display());
    assert_eq!(
        le32(0),
        MAGIC_MICROS,
        "{}: not a LE microsecond pcap",
        path.display()
    );
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let caplen = le32(at + 8) as usize;
        let Some(data) = bytes.get(at + 16..at + 16 + caplen) else {
            break;
        };
        frames.push(Frame {
            ts_micros: u64::from(le32(at)) * 1_000_000 + u64::from(le32(at + 4)),
            data: data.to_vec(),
        });
        at += 16 + caplen;
    }
    frames
}
