//! pcap and pcapng files, read with `pcap-parser` in a fixed-size streaming buffer.
//!
//! Damage is reported with the file name and byte offset, after every packet before it has been
//! delivered: an analyst replaying a capture cut short by a full disk still gets what is there.
//!
//! Every packet goes out with its link type (pcapng interfaces may differ); one the decoder cannot
//! read is named in a warning once per file or interface, and its frames are still delivered, so
//! the pipeline counts them.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{create_reader, Linktype, PcapBlockOwned, PcapError};
use vigil_plugin_sdk::Timestamp;

use super::{CaptureError, Next, Packet, Source};
use crate::decode::link;

/// Streaming buffer; grows up to [`MAX_RECORD`] for jumbo or GSO-sized records.
const BUFFER: usize = 256 * 1024;
/// Larger records are damage, not packets (pcap snaplen is at most 256 KiB in practice).
const MAX_RECORD: usize = 4 * 1024 * 1024;
const PCAP_NANOSECOND_MAGICS: [u32; 2] = [0xa1b2_3c4d, 0x4d3c_b2a1];

/// How a pcapng interface stamps time.
#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: Linktype,
    /// Ticks per second.
    resolution: u64,
    offset_secs: i64,
}

pub struct PcapSource {
    path: PathBuf,
    reader: Box<dyn PcapReaderIterator + Send>,
    /// Bytes of the block handed out last; consumed on the next call, once the caller is done.
    pending: usize,
    /// The frame handed out last (copied so the reader's buffer may move).
    frame: Vec<u8>,
    legacy_linktype: Linktype,
    legacy_nanos: bool,
    interfaces: Vec<Interface>,
}

impl PcapSource {
    pub fn open(path: &Path) -> Result<PcapSource, CaptureError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|error| CaptureError::Io {
            source: name.clone(),
            error,
        })?;
        Self::from_reader(&name, file).map(|mut source| {
            source.path = path.to_path_buf();
            source
        })
    }

    /// Reads a capture from any reader (e.g. a pcap embedded in the binary).
    pub fn from_reader(
        name: &str,
        reader: impl Read + Send + 'static,
    ) -> Result<PcapSource, CaptureError> {
        let reader = create_reader(BUFFER, reader).map_err(|err| CaptureError::NotACapture {
            source: name.to_string(),
            reason: match err {
                PcapError::Eof => "the file is empty".to_string(),
                PcapError::HeaderNotRecognized => "unrecognised magic number".to_string(),
                PcapError::Incomplete(_) => "the file is shorter than a capture header".into(),
                other => format!("{other:?}"),
            },
        })?;
        Ok(PcapSource {
            path: PathBuf::from(name),
            reader,
            pending: 0,
            frame: Vec::with_capacity(65536),
            legacy_linktype: Linktype::ETHERNET,
            legacy_nanos: false,
            interfaces: Vec::new(),
        })
    }

    fn corrupt(&self, reason: String) -> CaptureError {
        CaptureError::Corrupt {
            source: self.path.display().to_string(),
            offset: self.reader.consumed() as u64,
            reason,
        }
    }

    /// Refills the buffer when a record straddles its end; `Ok(false)` at a clean end of file.
    fn refill(&mut self) -> Result<bool, CaptureError> {
        if self.reader.reader_exhausted() {
            let leftover = self.reader.data().len();
            if leftover == 0 {
                return Ok(false);
            }
            return Err(self.corrupt(format!(
                "truncated: the last record is cut short ({leftover} bytes left over)"
            )));
        }
        let before = self.reader.data().len();
        if let Err(err) = self.reader.refill() {
            let reason = format!("read failed: {err:?}");
            return Err(self.corrupt(reason));
        }
        if self.reader.data().len() == before && !self.reader.reader_exhausted() {
            // The buffer is full and still holds no whole record: grow once, within reason.
            let grown = before.saturating_mul(2);
            if grown > MAX_RECORD || !self.reader.grow(grown) {
                return Err(self.corrupt(format!("a record claims more than {MAX_RECORD} bytes")));
            }
        }
        Ok(true)
    }
}

/// What one block turned out to be, computed while the block borrows the reader.
enum Parsed {
    Frame {
        ts: Timestamp,
        wire_len: u32,
        link_type: Linktype,
    },
    Metadata,
}

impl Source for PcapSource {
    fn next_packet(&mut self) -> Result<Next<'_>, CaptureError> {
        if self.pending > 0 {
            self.reader.consume(self.pending);
            self.pending = 0;
        }
        loop {
            let parsed = match self.reader.next() {
                Ok((size, block)) => {
                    let parsed = parse_block(
                        &self.path,
                        block,
                        &mut self.frame,
                        &mut self.legacy_linktype,
                        &mut self.legacy_nanos,
                        &mut self.interfaces,
                    );
                    (size, parsed)
                }
                Err(PcapError::Eof) => return Ok(Next::End),
                Err(PcapError::UnexpectedEof) => {
                    let leftover = self.reader.data().len();
                    return Err(self.corrupt(format!(
                        "truncated: the last record is cut short ({leftover} bytes left over)"
                    )));
                }
                Err(PcapError::Incomplete(_)) => {
                    if self.refill()? {
                        continue;
                    }
                    return Ok(Next::End);
                }
                Err(err) => {
                    let reason = format!("unparsable record: {:?}", err.to_owned_vec());
                    return Err(self.corrupt(reason));
                }
            };
            match parsed {
                (
                    size,
                    Ok(Parsed::Frame {
                        ts,
                        wire_len,
                        link_type,
                    }),
                ) => {
                    self.pending = size;
                    return Ok(Next::Packet(Packet {
                        ts,
                        data: &self.frame,
                        wire_len,
                        link_type,
                    }));
                }
                (size, Ok(Parsed::Metadata)) => self.reader.consume(size),
                (_, Err(reason)) => return Err(self.corrupt(reason)),
            }
        }
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// Says once per file or interface that its frames cannot be decoded, naming the link type.
fn warn_unsupported(path: &Path, interface: Option<usize>, linktype: Linktype) {
    if link::supported(linktype) {
        return;
    }
    let place = match interface {
        Some(i) => format!("{}, interface {i}", path.display()),
        None => path.display().to_string(),
    };
    tracing::warn!(
        "{place}: link type {} ({}) is not supported: its frames are counted and not decoded",
        linktype.0,
        link::name(linktype)
    );
}

/// Interprets one block, copying a packet's bytes into `frame`.
fn parse_block(
    path: &Path,
    block: PcapBlockOwned<'_>,
    frame: &mut Vec<u8>,
    legacy_linktype: &mut Linktype,
    legacy_nanos: &mut bool,
    interfaces: &mut Vec<Interface>,
) -> Result<Parsed, String> {
    match block {
        PcapBlockOwned::LegacyHeader(header) => {
            *legacy_linktype = header.network;
            warn_unsupported(path, None, header.network);
            *legacy_nanos = PCAP_NANOSECOND_MAGICS.contains(&header.magic_number);
            Ok(Parsed::Metadata)
        }
        PcapBlockOwned::Legacy(record) => {
            let fraction = u64::from(record.ts_usec);
            let micros = if *legacy_nanos {
                fraction / 1000
            } else {
                fraction
            };
            copy_frame(frame, record.data);
            Ok(Parsed::Frame {
                ts: Timestamp(u64::from(record.ts_sec) * 1_000_000 + micros),
                wire_len: record.origlen,
                link_type: *legacy_linktype,
            })
        }
        PcapBlockOwned::NG(Block::SectionHeader(_)) => {
            // A new section restarts interface numbering.
            interfaces.clear();
            Ok(Parsed::Metadata)
        }
        PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
            warn_unsupported(path, Some(interfaces.len()), idb.linktype);
            interfaces.push(Interface {
                linktype: idb.linktype,
                resolution: idb.ts_resolution().unwrap_or(1_000_000),
                offset_secs: idb.ts_offset(),
            });
            Ok(Parsed::Metadata)
        }
        PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
            let Some(interface) = usize::try_from(epb.if_id)
                .ok()
                .and_then(|i| interfaces.get(i))
            else {
                return Err(format!(
                    "packet names interface {} which was never described",
                    epb.if_id
                ));
            };
            let ticks = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
            let resolution = interface.resolution.max(1);
            let secs = (ticks / resolution).saturating_add_signed(interface.offset_secs);
            let micros =
                (u128::from(ticks % resolution) * 1_000_000 / u128::from(resolution)) as u64;
            let caplen = usize::try_from(epb.caplen).unwrap_or(usize::MAX);
            let data = epb.data.get(..caplen).unwrap_or(epb.data);
            copy_frame(frame, data);
            Ok(Parsed::Frame {
                ts: Timestamp(secs.saturating_mul(1_000_000).saturating_add(micros)),
                wire_len: epb.origlen,
                link_type: interface.linktype,
            })
        }
        PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
            // Simple packets carry no time: they inherit none, so they get time zero and
            // are still counted and decoded. They belong to the first interface (RFC draft).
            copy_frame(frame, spb.data);
            Ok(Parsed::Frame {
                ts: Timestamp(0),
                wire_len: spb.origlen,
                link_type: interfaces
                    .first()
                    .map_or(Linktype::ETHERNET, |i| i.linktype),
            })
        }
        PcapBlockOwned::NG(_) => Ok(Parsed::Metadata),
    }
}

fn copy_frame(frame: &mut Vec<u8>, data: &[u8]) {
    frame.clear();
    frame.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn pcap_header() -> Vec<u8> {
        pcap_header_of(Linktype::ETHERNET)
    }

    fn pcap_header_of(link_type: Linktype) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&[2, 0, 4, 0]);
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&link_type.0.to_le_bytes());
        h
    }

    fn record(secs: u32, usecs: u32, data: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&secs.to_le_bytes());
        r.extend_from_slice(&usecs.to_le_bytes());
        r.extend_from_slice(&(data.len() as u32).to_le_bytes());
        r.extend_from_slice(&(data.len() as u32).to_le_bytes());
        r.extend_from_slice(data);
        r
    }

    type Frames = Vec<(Timestamp, Vec<u8>)>;

    fn read_all(bytes: Vec<u8>) -> (Frames, Result<(), CaptureError>) {
        let mut source = match PcapSource::from_reader("mem.pcap", Cursor::new(bytes)) {
            Ok(source) => source,
            Err(err) => return (Vec::new(), Err(err)),
        };
        let mut packets = Vec::new();
        loop {
            match source.next_packet() {
                Ok(Next::Packet(p)) => packets.push((p.ts, p.data.to_vec())),
                Ok(Next::End) => return (packets, Ok(())),
                Ok(Next::Idle) => continue,
                Err(err) => return (packets, Err(err)),
            }
        }
    }

    #[test]
    fn records_come_back_in_order_with_their_times() {
        let mut file = pcap_header();
        file.extend(record(100, 5, b"first-frame"));
        file.extend(record(101, 6, b"second"));
        let (packets, end) = read_all(file);
        end.expect("clean end");
        assert_eq!(
            packets,
            vec![
                (Timestamp(100_000_005), b"first-frame".to_vec()),
                (Timestamp(101_000_006), b"second".to_vec())
            ]
        );
    }

    #[test]
    fn every_record_carries_the_files_link_type_supported_or_not() {
        for link_type in [Linktype::LINUX_SLL2, Linktype::RAW, Linktype(105)] {
            let mut file = pcap_header_of(link_type);
            file.extend(record(1, 0, b"one"));
            file.extend(record(2, 0, b"two"));
            let mut source =
                PcapSource::from_reader("mem.pcap", Cursor::new(file)).expect("a capture");
            let mut seen = Vec::new();
            while let Next::Packet(packet) = source.next_packet().expect("clean") {
                seen.push((packet.link_type, packet.data.to_vec()));
            }
            assert_eq!(
                seen,
                vec![(link_type, b"one".to_vec()), (link_type, b"two".to_vec())]
            );
        }
    }

    #[test]
    fn a_truncated_file_delivers_what_precedes_the_damage_then_names_the_offset() {
        let mut file = pcap_header();
        file.extend(record(1, 0, &[0xaa; 60]));
        let good_end = file.len();
        file.extend(&record(2, 0, &[0xbb; 60])[..30]);
        let (packets, end) = read_all(file);
        assert_eq!(packets.len(), 1);
        match end {
            Err(CaptureError::Corrupt {
                source,
                offset,
                reason,
            }) => {
                assert_eq!(source, "mem.pcap");
                assert_eq!(offset, good_end as u64);
                assert!(reason.contains("truncated"), "{reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn empty_and_foreign_files_are_refused_clearly() {
        for (bytes, expected) in [
            (Vec::new(), "empty"),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "magic"),
        ] {
            match read_all(bytes).1 {
                Err(err @ CaptureError::NotACapture { .. }) => {
                    assert!(err.to_string().contains(expected), "{err}");
                    assert!(err.to_string().starts_with("mem.pcap: "), "{err}");
                }
                other => panic!("expected NotACapture, got {other:?}"),
            }
        }
    }

    #[test]
    fn an_absurd_record_length_is_damage_not_an_allocation() {
        let mut file = pcap_header();
        file.extend(record(1, 0, &[0xaa; 60]));
        let mut bad = record(2, 0, &[0; 8]);
        bad[8..12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        file.extend(bad);
        file.extend(vec![0u8; 300_000]);
        let (packets, end) = read_all(file);
        assert_eq!(packets.len(), 1);
        assert!(matches!(end, Err(CaptureError::Corrupt { .. })), "{end:?}");
    }
}
