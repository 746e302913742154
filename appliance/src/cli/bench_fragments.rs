//! IP reassembly in `vigil bench`: a SYN scan built in code (nmap's 24-byte SYNs, each answered
//! by a RST), whole and cut into `nmap -f`'s 8-byte fragments, and a flood of first fragments
//! that never complete, through decode + reassembly + flows and through the full pipeline, as
//! ratios against the whole scan in the same run; and the reassembler's memory under the flood.

use std::time::{Duration, Instant};

use pcap_parser::Linktype;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Address, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};
use vigil_plugin_sdk::Timestamp;

use super::bench::median;
use crate::capture::Packet;
use crate::decode::fragments::{FragmentConfig, FragmentStats, Reassembler};
use crate::decode::{decode_frame, Frame};
use crate::flow::{FlowConfig, FlowTable};
use crate::pipeline::Pipeline;

/// SYNs in the scan through decode + reassembly + flows: ten scanners, 40,000 hosts, five ports.
const LAYER_SYNS: u32 = 200_000;
/// SYNs in the scan through the full pipeline (about 2 s here: the scan models track every
/// target).
const PIPELINE_SYNS: u32 = 40_000;
/// First fragments in the flood, each of its own datagram.
const FLOOD: u32 = 500_000;
const PORTS: [u16; 5] = [22, 80, 139, 445, 3389];
const START_MICROS: u64 = 1_800_000_000 * 1_000_000;
/// nmap -f: 8 bytes of transport header per fragment.
const FRAGMENT_DATA: usize = 8;

type Frames = Vec<(Timestamp, Vec<u8>)>;

pub fn rows(
    runs: u32,
    mut pipeline: impl FnMut() -> anyhow::Result<Pipeline>,
) -> anyhow::Result<Vec<(String, String)>> {
    let flood = flood();
    let layer = |frames: &Frames| median(runs, || Ok(decode_reassemble_flows(frames).0));
    let (whole, cut) = (scan(LAYER_SYNS, false), scan(LAYER_SYNS, true));
    let (whole_layer, cut_layer, flood_layer) = (layer(&whole)?, layer(&cut)?, layer(&flood)?);
    let mut full = |frames: &Frames| median(runs, || full_pipeline(pipeline()?, frames));
    let (whole_small, cut_small) = (scan(PIPELINE_SYNS, false), scan(PIPELINE_SYNS, true));
    let (whole_full, cut_full, flood_full) =
        (full(&whole_small)?, full(&cut_small)?, full(&flood)?);
    let flood_stats = decode_reassemble_flows(&flood).1;
    let bounds = FragmentConfig::default();
    let memory = flood_memory(&flood);
    Ok(vec![
        rate_row(
            "SYN scan, whole: decode + reassembly + flows",
            &whole,
            whole_layer,
            None,
            false,
        ),
        rate_row(
            "  same scan in 8-byte fragments (nmap -f)",
            &cut,
            cut_layer,
            Some((&whole, whole_layer)),
            true,
        ),
        rate_row(
            "  fragment flood (never completed)",
            &flood,
            flood_layer,
            Some((&whole, whole_layer)),
            false,
        ),
        rate_row(
            "SYN scan, whole: full pipeline",
            &whole_small,
            whole_full,
            None,
            false,
        ),
        rate_row(
            "  same scan in 8-byte fragments (nmap -f)",
            &cut_small,
            cut_full,
            Some((&whole_small, whole_full)),
            true,
        ),
        rate_row(
            "  fragment flood (never completed)",
            &flood,
            flood_full,
            Some((&whole_small, whole_full)),
            false,
        ),
        (
            "reassembly memory under the flood".into(),
            format!(
                "peak {} KiB of fragment data held (bounds {} KiB, {} datagrams), {} KiB of \
                 tables touched; {} datagrams evicted",
                flood_stats.peak_bytes / 1024,
                bounds.max_bytes / 1024,
                bounds.max_datagrams,
                memory / 1024,
                flood_stats.evicted
            ),
        ),
    ])
}

/// Packets/s, and against a baseline the packet rate as a ratio; for the same scan cut up, also
/// the time for the whole scan as a ratio (a fragmented SYN is three packets but one datagram).
fn rate_row(
    name: &str,
    frames: &Frames,
    time: Duration,
    baseline: Option<(&Frames, Duration)>,
    same_scan: bool,
) -> (String, String) {
    let rate = |n: usize, t: Duration| n as f64 / t.as_secs_f64();
    let mut text = format!(
        "{:>12.0} packets/s  ({} in {:.3} s)",
        rate(frames.len(), time),
        frames.len(),
        time.as_secs_f64()
    );
    if let Some((base, base_time)) = baseline {
        text.push_str(&format!(
            "  = {:.2}x the whole scan's packet rate",
            rate(frames.len(), time) / rate(base.len(), base_time),
        ));
        if same_scan {
            text.push_str(&format!(
                ", {:.2}x its time",
                time.as_secs_f64() / base_time.as_secs_f64()
            ));
        }
    }
    (name.to_string(), text)
}

/// What the pipeline does before the analyzer: decode, reassembly, flows. Also returns the
/// reassembler's counts.
fn decode_reassemble_flows(frames: &Frames) -> (Duration, FragmentStats) {
    let mut flows = FlowTable::new(FlowConfig::default());
    let mut reassembler = Reassembler::new(FragmentConfig::default());
    let mut events = 0u64;
    let start = Instant::now();
    for (ts, frame) in frames {
        let decoded = match decode_frame(Linktype::ETHERNET, frame) {
            Ok(Frame::Whole(decoded)) => decoded,
            Ok(Frame::Fragment(fragment)) => match reassembler.push(*ts, &fragment) {
                Some(datagram) => match datagram.decode() {
                    Ok(decoded) => decoded,
                    Err(_) => continue,
                },
                None => continue,
            },
            Err(_) => continue,
        };
        flows.observe(*ts, &decoded, &mut |_| events += 1);
    }
    flows.flush(&mut |_| events += 1);
    std::hint::black_box(events);
    (start.elapsed(), *reassembler.stats())
}

fn full_pipeline(mut pipeline: Pipeline, frames: &Frames) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for (ts, data) in frames {
        pipeline.handle(&Packet {
            ts: *ts,
            data,
            wire_len: data.len() as u32,
            link_type: Linktype::ETHERNET,
        })?;
    }
    pipeline.finish()?;
    Ok(start.elapsed())
}

/// The reassembler's tables after the flood: what it touched at its peak.
fn flood_memory(frames: &Frames) -> usize {
    let mut reassembler = Reassembler::new(FragmentConfig::default());
    for (ts, frame) in frames {
        if let Ok(Frame::Fragment(fragment)) = decode_frame(Linktype::ETHERNET, frame) {
            reassembler.push(*ts, &fragment);
        }
    }
    reassembler.memory_bytes()
}

fn address(a: u8, b: u32) -> Ipv4Address {
    let [_, _, c, d] = b.to_be_bytes();
    Ipv4Address::new(10, a, c, d)
}

/// `syns` SYNs from ten scanners over `syns / 5` hosts and five ports, each answered by a RST
/// 25 us later; SYNs cut into 8-byte fragments when `fragmented`.
fn scan(syns: u32, fragmented: bool) -> Frames {
    let mut frames = Vec::new();
    for i in 0..syns {
        let ts = START_MICROS + u64::from(i) * 50;
        let scanner = address(90, (i % 10) + 2);
        let target = address(91, 256 + i / 5);
        let port = PORTS[(i % 5) as usize];
        let syn = tcp(scanner, target, 40_000, port, TcpControl::Syn, None);
        let ident = (i / 10) as u16;
        if fragmented {
            for (n, piece) in syn.chunks(FRAGMENT_DATA).enumerate() {
                let offset = n * FRAGMENT_DATA;
                let more = offset + piece.len() < syn.len();
                frames.push((
                    Timestamp(ts + n as u64),
                    ipv4(scanner, target, ident, offset, more, piece),
                ));
            }
        } else {
            frames.push((Timestamp(ts), ipv4(scanner, target, ident, 0, false, &syn)));
        }
        let rst = tcp(target, scanner, port, 40_000, TcpControl::Rst, Some(8));
        frames.push((Timestamp(ts + 25), ipv4(target, scanner, 0, 0, false, &rst)));
    }
    frames
}

/// `FLOOD` 16-byte first fragments from made-up neighbours to one host, none ever completed.
fn flood() -> Frames {
    let target = address(93, 9);
    (0..FLOOD)
        .map(|i| {
            let source = address(92, i % 60_000 + 2);
            let syn = tcp(source, target, 40_000, 445, TcpControl::Syn, None);
            let ts = Timestamp(START_MICROS + u64::from(i) * 5);
            let ident = (i / 60_000) as u16;
            (ts, ipv4(source, target, ident, 0, true, &syn[..16]))
        })
        .collect()
}

/// A TCP header (nmap's SYN carries an MSS option: 24 bytes).
pub(super) fn tcp(
    src: Ipv4Address,
    dst: Ipv4Address,
    src_port: u16,
    dst_port: u16,
    control: TcpControl,
    ack: Option<u32>,
) -> Vec<u8> {
    let repr = TcpRepr {
        src_port,
        dst_port,
        control,
        seq_number: TcpSeqNumber(7),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 1024,
        window_scale: None,
        max_seg_size: (control == TcpControl::Syn).then_some(1460),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let mut segment = vec![0; repr.buffer_len()];
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut segment[..]),
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        &ChecksumCapabilities::default(),
    );
    segment
}

/// An Ethernet frame with an IPv4 packet carrying `data` at `offset` of datagram `ident`.
pub(super) fn ipv4(
    src: Ipv4Address,
    dst: Ipv4Address,
    ident: u16,
    offset: usize,
    more: bool,
    data: &[u8],
) -> Vec<u8> {
    let eth = EthernetRepr {
        src_addr: EthernetAddress([2, 0, 0, 0, 0, 0xa]),
        dst_addr: EthernetAddress([2, 0, 0, 0, 0, 0xb]),
        ethertype: EthernetProtocol::Ipv4,
    };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: data.len(),
        hop_limit: 64,
    };
    let mut frame = vec![0; eth.buffer_len() + ip.buffer_len() + data.len()];
    eth.emit(&mut EthernetFrame::new_unchecked(&mut frame[..]));
    let mut packet = Ipv4Packet::new_unchecked(&mut frame[eth.buffer_len()..]);
    ip.emit(&mut packet, &ChecksumCapabilities::default());
    packet.set_ident(ident);
    packet.set_dont_frag(false);
    packet.set_more_frags(more);
    packet.set_frag_offset(offset as u16);
    packet.payload_mut().copy_from_slice(data);
    packet.fill_checksum();
    frame
}
