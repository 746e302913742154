//! Forged traffic for the tests that check Vigil cannot be aimed at the innocent: Ethernet/IPv4
//! frames with TCP or UDP headers an attacker can send with a raw socket, for a pcap
//! (`crate::pcap`) that `mergecap` can lay into a real capture. Checksums are left zero: Vigil never checks them (as
//! a host behind an offloading NIC would not), so they change nothing.

use std::net::Ipv4Addr;
use std::path::Path;

pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

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
    src: ([u8; 6], Ipv4Addr, u16),
    dst: ([u8; 6], Ipv4Addr, u16),
    flags: u8,
    seq: u32,
) -> Vec<u8> {
    let ack: u32 = if flags & ACK != 0 { 0x1000_0001 } else { 0 };
    tcp_segment(src, dst, flags, (seq, ack), &[])
}

/// A TCP segment carrying `payload`, with its sequence and acknowledgement numbers.
pub fn tcp_segment(
    (src_mac, src, src_port): ([u8; 6], Ipv4Addr, u16),
    (dst_mac, dst, dst_port): ([u8; 6], Ipv4Addr, u16),
    flags: u8,
    (seq, ack): (u32, u32),
    payload: &[u8],
) -> Vec<u8> {
    let mut segment = Vec::with_capacity(20 + payload.len());
    segment.extend_from_slice(&src_port.to_be_bytes());
    segment.extend_from_slice(&dst_port.to_be_bytes());
    segment.extend_from_slice(&seq.to_be_bytes());
    segment.extend_from_slice(&ack.to_be_bytes());
    segment.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    segment.extend_from_slice(payload);
    ethernet(src_mac, dst_mac, &ipv4(src, dst, 6, &segment))
}

/// A whole TCP connection from `client` to `server`: handshake, the request and the answer,
/// and both FINs; the frames in order.
pub fn tcp_exchange(
    client: ([u8; 6], Ipv4Addr, u16),
    server: ([u8; 6], Ipv4Addr, u16),
    request: &[u8],
    answer: &[u8],
) -> Vec<Vec<u8>> {
    const PSH: u8 = 0x08;
    const FIN: u8 = 0x01;
    let (c, s) = (1_000u32, 50_000u32);
    let (req, ans) = (request.len() as u32, answer.len() as u32);
    vec![
        tcp_segment(client, server, SYN, (c, 0), &[]),
        tcp_segment(server, client, SYN | ACK, (s, c + 1), &[]),
        tcp_segment(client, server, ACK, (c + 1, s + 1), &[]),
        tcp_segment(client, server, PSH | ACK, (c + 1, s + 1), request),
        tcp_segment(server, client, PSH | ACK, (s + 1, c + 1 + req), answer),
        tcp_segment(client, server, FIN | ACK, (c + 1 + req, s + 1 + ans), &[]),
        tcp_segment(server, client, FIN | ACK, (s + 1 + ans, c + 2 + req), &[]),
        tcp_segment(client, server, ACK, (c + 2 + req, s + 2 + ans), &[]),
    ]
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

/// The first and last packet times of a pcap (microseconds).
pub fn time_span(path: &Path) -> (u64, u64) {
    let records = crate::pcap::read(path);
    let first = records.iter().map(|r| r.ts_micros).min().unwrap_or(0);
    let last = records.iter().map(|r| r.ts_micros).max().unwrap_or(0);
    (first, last)
}
