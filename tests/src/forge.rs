//! Forged traffic for the tests that check Vigil cannot be aimed at the innocent: Ethernet/IPv4
//! frames with TCP or UDP headers an attacker can send with a raw socket, written as a pcap that
//! `mergecap` can lay into a real capture. Checksums are left zero: Vigil never checks them (as
//! a host behind an offloading NIC would not), so they change nothing.

use std::net::Ipv4Addr;
use std::path::Path;

pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// One frame at a time (microseconds since the epoch).
#[derive(Debug, Clone)]
pub struct Frame {
    pub ts_micros: u64,
    pub bytes: Vec<u8>,
}

fn ethernet(src_mac: [u8; 6], dst_mac: [u8; 6], ip: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + ip.len());
    frame.extend_from_slice(&dst_mac);
    frame.extend_from_slice(&src_mac);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    frame.extend_from_slice(ip);
    frame
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, protocol, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(payload);
    ip
}

/// A TCP segment with no payload.
pub fn tcp(
    (src_mac, src, src_port): ([u8; 6], Ipv4Addr, u16),
    (dst_mac, dst, dst_port): ([u8; 6], Ipv4Addr, u16),
    flags: u8,
    seq: u32,
) -> Vec<u8> {
    let mut segment = Vec::with_capacity(20);
    segment.extend_from_slice(&src_port.to_be_bytes());
    segment.extend_from_slice(&dst_port.to_be_bytes());
    segment.extend_from_slice(&seq.to_be_bytes());
    let ack: u32 = if flags & ACK != 0 { 0x1000_0001 } else { 0 };
    segment.extend_from_slice(&ack.to_be_bytes());
    segment.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    ethernet(src_mac, dst_mac, &ipv4(src, dst, 6, &segment))
}

/// A UDP datagram.
pub fn udp(
    (src_mac, src, src_port): ([u8; 6], Ipv4Addr, u16),
    (dst_mac, dst, dst_port): ([u8; 6], Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut datagram = Vec::with_capacity(8 + payload.len());
    datagram.extend_from_slice(&src_port.to_be_bytes());
    datagram.extend_from_slice(&dst_port.to_be_bytes());
    datagram.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(payload);
    ethernet(src_mac, dst_mac, &ipv4(src, dst, 17, &datagram))
}

/// Writes `frames` as a classic pcap (microsecond timestamps, Ethernet).
pub fn write_pcap(path: &Path, frames: &[Frame]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for frame in frames {
        let len = frame.bytes.len() as u32;
        out.extend_from_slice(&((frame.ts_micros / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((frame.ts_micros % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&frame.bytes);
    }
    std::fs::write(path, out).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// `a` and `b` merged in time order into `out` (Wireshark's mergecap).
pub fn merge(a: &Path, b: &Path, out: &Path) {
    let status = std::process::Command::new("mergecap")
        .arg("-F")
        .arg("pcap")
        .arg("-w")
        .arg(out)
        .arg(a)
        .arg(b)
        .status()
        .expect("mergecap runs (./setup.sh installs tshark's tools)");
    assert!(status.success(), "mergecap {} {}", a.display(), b.display());
}

/// The first and last packet times of a pcap (microseconds), read from its records.
pub fn time_span(path: &Path) -> (u64, u64) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let le =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    assert_eq!(
        le(0),
        0xa1b2_c3d4,
        "{}: a little-endian microsecond pcap",
        path.display()
    );
    let mut at = 24;
    let (mut first, mut last) = (u64::MAX, 0);
    while at + 16 <= bytes.len() {
        let ts = u64::from(le(at)) * 1_000_000 + u64::from(le(at + 4));
        first = first.min(ts);
        last = last.max(ts);
        at += 16 + le(at + 8) as usize;
    }
    (first, last)
}
