use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Address, Ipv4Packet, Ipv4Repr, Ipv6Address, Ipv6FragmentHeader, Ipv6FragmentRepr,
    Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
};

use super::*;
use crate::decode::{decode, decode_frame, Frame, Transport};
use pcap_parser::Linktype;

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
const SRC4: Ipv4Address = Ipv4Address::new(10, 1, 0, 5);
const DST4: Ipv4Address = Ipv4Address::new(10, 1, 0, 9);
const SRC6: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 5);
const DST6: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 9);
const SECOND: u64 = 1_000_000;
const T0: Timestamp = Timestamp(1_700_000_000 * SECOND);

fn at(secs: u64) -> Timestamp {
    Timestamp(T0.0 + secs * SECOND)
}

/// A TCP SYN with an MSS option (24 bytes, as nmap sends it), checksummed for `src -> dst`.
fn tcp_syn(src: IpAddress, dst: IpAddress, dst_port: u16) -> Vec<u8> {
    let repr = TcpRepr {
        src_port: 40_000,
        dst_port,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(7),
        ack_number: None,
        window_len: 1024,
        window_scale: None,
        max_seg_size: Some(1460),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let mut segment = vec![0; repr.buffer_len()];
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut segment[..]),
        &src,
        &dst,
        &ChecksumCapabilities::default(),
    );
    segment
}

fn udp(src: IpAddress, dst: IpAddress, payload: &[u8]) -> Vec<u8> {
    let repr = UdpRepr {
        src_port: 5353,
        dst_port: 161,
    };
    let mut datagram = vec![0; repr.header_len() + payload.len()];
    repr.emit(
        &mut UdpPacket::new_unchecked(&mut datagram[..]),
        &src,
        &dst,
        payload.len(),
        |out| out.copy_from_slice(payload),
        &ChecksumCapabilities::default(),
    );
    datagram
}

fn ethernet(src_mac: [u8; 6], ethertype: EthernetProtocol, payload_len: usize) -> Vec<u8> {
    let repr = EthernetRepr {
        src_addr: EthernetAddress(src_mac),
        dst_addr: EthernetAddress(MAC_B),
        ethertype,
    };
    let mut frame = vec![0; repr.buffer_len() + payload_len];
    repr.emit(&mut EthernetFrame::new_unchecked(&mut frame[..]));
    frame
}

/// An IPv4 frame carrying `data` at `offset` of datagram `ident` (no fragment fields set when
/// `offset` is 0 and `more` false: a whole datagram).
fn v4_frame(
    src_mac: [u8; 6],
    ident: u16,
    protocol: IpProtocol,
    offset: usize,
    more: bool,
    data: &[u8],
) -> Vec<u8> {
    let ip = Ipv4Repr {
        src_addr: SRC4,
        dst_addr: DST4,
        next_header: protocol,
        payload_len: data.len(),
        hop_limit: 64,
    };
    let mut frame = ethernet(
        src_mac,
        EthernetProtocol::Ipv4,
        ip.buffer_len() + data.len(),
    );
    let mut packet = Ipv4Packet::new_unchecked(&mut frame[14..]);
    ip.emit(&mut packet, &ChecksumCapabilities::default());
    packet.set_ident(ident);
    packet.set_dont_frag(false);
    packet.set_more_frags(more);
    packet.set_frag_offset(offset as u16);
    packet.payload_mut().copy_from_slice(data);
    packet.fill_checksum();
    frame
}

/// `datagram` cut at `cuts` (byte offsets, multiples of 8) into IPv4 fragments, in order.
fn v4_fragments(ident: u16, protocol: IpProtocol, datagram: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    pieces(datagram, cuts)
        .map(|(offset, data, more)| v4_frame(MAC_A, ident, protocol, offset, more, data))
        .collect()
}

fn pieces<'a>(
    datagram: &'a [u8],
    cuts: &'a [usize],
) -> impl Iterator<Item = (usize, &'a [u8], bool)> + 'a {
    let bounds: Vec<usize> = std::iter::once(0)
        .chain(cuts.iter().copied())
        .chain(std::iter::once(datagram.len()))
        .collect();
    (0..bounds.len() - 1).map(move |i| {
        let (from, to) = (bounds[i], bounds[i + 1]);
        (from, &datagram[from..to], to < datagram.len())
    })
}

/// An IPv6 frame with a Fragment header carrying `data` at `offset` of datagram `ident`.
fn v6_fragment(ident: u32, next: IpProtocol, offset: usize, more: bool, data: &[u8]) -> Vec<u8> {
    let ip = Ipv6Repr {
        src_addr: SRC6,
        dst_addr: DST6,
        next_header: IpProtocol::Ipv6Frag,
        payload_len: 8 + data.len(),
        hop_limit: 64,
    };
    let mut frame = ethernet(
        MAC_A,
        EthernetProtocol::Ipv6,
        ip.buffer_len() + 8 + data.len(),
    );
    let mut packet = Ipv6Packet::new_unchecked(&mut frame[14..]);
    ip.emit(&mut packet);
    let payload = packet.payload_mut();
    payload[0] = u8::from(next);
    payload[1] = 0;
    Ipv6FragmentRepr {
        frag_offset: (offset / 8) as u16,
        more_frags: more,
        ident,
    }
    .emit(&mut Ipv6FragmentHeader::new_unchecked(&mut payload[2..8]));
    payload[8..].copy_from_slice(data);
    frame
}

fn v6_whole(next: IpProtocol, data: &[u8]) -> Vec<u8> {
    let ip = Ipv6Repr {
        src_addr: SRC6,
        dst_addr: DST6,
        next_header: next,
        payload_len: data.len(),
        hop_limit: 64,
    };
    let mut frame = ethernet(MAC_A, EthernetProtocol::Ipv6, ip.buffer_len() + data.len());
    let mut packet = Ipv6Packet::new_unchecked(&mut frame[14..]);
    ip.emit(&mut packet);
    packet.payload_mut().copy_from_slice(data);
    frame
}

fn fragment_of(frame: &[u8]) -> Fragment<'_> {
    match decode_frame(Linktype::ETHERNET, frame) {
        Ok(Frame::Fragment(fragment)) => fragment,
        other => panic!("expected a fragment, got {other:?}"),
    }
}

/// Pushes every frame in order; the decoded datagram the last one completed, if any, as an
/// owned copy of its payload so the reassembler can be inspected afterwards.
fn push_all(reassembler: &mut Reassembler, now: Timestamp, frames: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut done = None;
    for (i, frame) in frames.iter().enumerate() {
        let datagram = reassembler.push(now, &fragment_of(frame));
        if let Some(datagram) = datagram {
            assert_eq!(i, frames.len() - 1, "completed before the last fragment");
            done = Some(datagram.payload.to_vec());
        }
    }
    done
}

fn syn4() -> Vec<u8> {
    tcp_syn(IpAddress::Ipv4(SRC4), IpAddress::Ipv4(DST4), 445)
}

#[test]
fn in_order_ipv4_fragments_decode_as_the_whole_datagram() {
    let syn = syn4();
    // nmap -f: 8 bytes of TCP header per fragment.
    let frames = v4_fragments(0x1234, IpProtocol::Tcp, &syn, &[8, 16]);
    let mut reassembler = Reassembler::default();
    assert_eq!(
        decode(&frames[0]),
        Err(Skip::Fragment),
        "a first fragment is not decoded as a whole packet"
    );
    assert_eq!(reassembler.push(T0, &fragment_of(&frames[0])), None);
    assert_eq!(reassembler.push(T0, &fragment_of(&frames[1])), None);
    let datagram = reassembler
        .push(T0, &fragment_of(&frames[2]))
        .expect("the last fragment completes it");
    let whole = v4_frame(MAC_A, 0x1234, IpProtocol::Tcp, 0, false, &syn);
    assert_eq!(datagram.decode(), decode(&whole));
    assert_eq!(datagram.payload, &syn[..]);
    let stats = *reassembler.stats();
    assert_eq!(
        (stats.fragments, stats.completed, stats.tiny_first),
        (3, 1, 1)
    );
    assert_eq!((stats.in_progress, stats.held_bytes), (0, 0));
    assert_eq!(stats.peak_bytes, 512);
    assert_eq!((stats.overlaps, stats.timeouts, stats.evicted), (0, 0, 0));
}

#[test]
fn out_of_order_fragments_complete_with_the_first_fragments_link_layer() {
    let body: Vec<u8> = (0..40u8).collect();
    let datagram = udp(IpAddress::Ipv4(SRC4), IpAddress::Ipv4(DST4), &body);
    let mut frames = v4_fragments(7, IpProtocol::Udp, &datagram, &[16, 32]);
    // The first fragment (offset 0) arrives in the middle, from a MAC the others do not carry.
    let first_mac = [2, 0, 0, 0, 0, 0x77];
    frames[0] = v4_frame(first_mac, 7, IpProtocol::Udp, 0, true, &datagram[..16]);
    let mut reassembler = Reassembler::default();
    for i in [2, 0] {
        assert_eq!(reassembler.push(T0, &fragment_of(&frames[i])), None);
    }
    let datagram = reassembler
        .push(T0, &fragment_of(&frames[1]))
        .expect("the last one to arrive completes it");
    let decoded = datagram.decode().expect("decodes");
    assert_eq!(decoded.src_mac, first_mac);
    assert_eq!(
        (decoded.src, decoded.dst),
        (IpAddr::V4(SRC4), IpAddr::V4(DST4))
    );
    assert_eq!(
        decoded.transport,
        Transport::Udp {
            src_port: 5353,
            dst_port: 161,
            payload: &body,
        }
    );
    let stats = *reassembler.stats();
    assert_eq!(
        (stats.completed, stats.tiny_first, stats.overlaps),
        (1, 0, 0)
    );
}

#[test]
fn a_duplicate_fragment_is_counted_and_changes_nothing() {
    let body: Vec<u8> = (0..40u8).collect();
    let datagram = udp(IpAddress::Ipv4(SRC4), IpAddress::Ipv4(DST4), &body);
    let frames = v4_fragments(9, IpProtocol::Udp, &datagram, &[24]);
    let mut reassembler = Reassembler::default();
    let with_duplicate = [frames[0].clone(), frames[0].clone(), frames[1].clone()];
    let payload = push_all(&mut reassembler, T0, &with_duplicate).expect("complete");
    assert_eq!(payload, datagram);
    let stats = reassembler.stats();
    assert_eq!(
        (stats.overlaps, stats.conflicting_overlaps, stats.completed),
        (1, 0, 1)
    );
}

#[test]
fn ipv4_overlap_with_the_same_bytes_reassembles() {
    let body: Vec<u8> = (0..40u8).collect();
    let datagram = udp(IpAddress::Ipv4(SRC4), IpAddress::Ipv4(DST4), &body);
    let frames = [
        v4_frame(MAC_A, 3, IpProtocol::Udp, 0, true, &datagram[..24]),
        v4_frame(MAC_A, 3, IpProtocol::Udp, 16, false, &datagram[16..]),
    ];
    let mut reassembler = Reassembler::default();
    assert_eq!(
        push_all(&mut reassembler, T0, &frames).expect("complete"),
        datagram
    );
    let stats = reassembler.stats();
    assert_eq!((stats.overlaps, stats.conflicting_overlaps), (1, 0));
}

#[test]
fn ipv4_conflicting_overlap_keeps_the_first_bytes_and_is_counted() {
    let body = [b'A'; 40];
    let datagram = udp(IpAddress::Ipv4(SRC4), IpAddress::Ipv4(DST4), &body);
    // The second fragment rewrites bytes 16..24 (payload bytes 8..16) with Bs.
    let mut forged = datagram[16..].to_vec();
    forged[..8].copy_from_slice(&[b'B'; 8]);
    let frames = [
        v4_frame(MAC_A, 4, IpProtocol::Udp, 0, true, &datagram[..24]),
        v4_frame(MAC_A, 4, IpProtocol::Udp, 16, false, &forged),
    ];
    let mut reassembler = Reassembler::default();
    let payload = push_all(&mut reassembler, T0, &frames).expect("first wins, complete");
    assert_eq!(payload, datagram, "the first copy of the overlap stands");
    let stats = reassembler.stats();
    assert_eq!(
        (stats.overlaps, stats.conflicting_overlaps, stats.completed),
        (1, 1, 1)
    );
}

#[test]
fn tiny_ipv4_first_fragment_is_counted_and_still_reassembled() {
    let syn = syn4();
    // The flags ride in the second fragment: RFC 1858's tiny fragment attack.
    let frames = v4_fragments(11, IpProtocol::Tcp, &syn, &[8]);
    let mut reassembler = Reassembler::default();
    let payload = push_all(&mut reassembler, T0, &frames).expect("complete");
    assert_eq!(payload, syn);
    assert_eq!(reassembler.stats().tiny_first, 1);
    // A first fragment holding the whole fixed header is not tiny: 8 bytes are UDP's.
    let datagram = udp(IpAddress::Ipv4(SRC4), IpAddress::Ipv4(DST4), &[0; 16]);
    let frames = v4_fragments(12, IpProtocol::Udp, &datagram, &[8]);
    push_all(&mut reassembler, T0, &frames).expect("complete");
    assert_eq!(reassembler.stats().tiny_first, 1);
}

#[test]
fn incomplete_datagram_times_out_on_packet_time() {
    let syn = syn4();
    let frames = v4_fragments(13, IpProtocol::Tcp, &syn, &[16]);
    let config = FragmentConfig {
        timeout_secs: 30,
        ..FragmentConfig::default()
    };
    let mut reassembler = Reassembler::new(config);
    assert_eq!(reassembler.push(at(0), &fragment_of(&frames[0])), None);
    reassembler.expire(at(29));
    assert_eq!(reassembler.stats().in_progress, 1);
    reassembler.expire(at(30));
    let stats = *reassembler.stats();
    assert_eq!(
        (stats.timeouts, stats.in_progress, stats.held_bytes),
        (1, 0, 0)
    );
    // The rest, too late, starts a new datagram that cannot complete without its start.
    assert_eq!(reassembler.push(at(31), &fragment_of(&frames[1])), None);
    assert_eq!(reassembler.stats().completed, 0);
    // Without a tick in between, a stale datagram is timed out when its next fragment comes.
    assert_eq!(reassembler.push(at(61), &fragment_of(&frames[0])), None);
    assert_eq!(reassembler.push(at(95), &fragment_of(&frames[1])), None);
    let stats = reassembler.stats();
    assert_eq!((stats.timeouts, stats.completed), (3, 0));
}

#[test]
fn a_flood_of_never_completed_datagrams_stays_within_max_bytes() {
    let config = FragmentConfig {
        max_bytes: 64 * 1024,
        max_datagrams: 100_000,
        ..FragmentConfig::default()
    };
    let mut reassembler = Reassembler::new(config);
    let syn = syn4();
    let flood = 10_000u16;
    for ident in 0..flood {
        // First fragments only: each holds one 512-byte block until evicted.
        let frame = v4_frame(MAC_A, ident, IpProtocol::Tcp, 0, true, &syn[..16]);
        assert_eq!(reassembler.push(T0, &fragment_of(&frame)), None);
        assert!(reassembler.stats().held_bytes <= 64 * 1024);
    }
    let stats = *reassembler.stats();
    assert_eq!(stats.peak_bytes, 64 * 1024);
    assert_eq!(stats.in_progress, 128, "64 KiB holds 128 blocks");
    assert_eq!(stats.evicted, u64::from(flood) - 128);
    // The newest survive: a datagram whose start came last still completes.
    let last = v4_frame(MAC_A, flood - 1, IpProtocol::Tcp, 16, false, &syn[16..]);
    let datagram = reassembler
        .push(T0, &fragment_of(&last))
        .expect("the newest datagram was kept");
    assert_eq!(datagram.payload, &syn[..]);
}

#[test]
fn max_datagrams_evicts_the_oldest_in_progress() {
    let config = FragmentConfig {
        max_datagrams: 50,
        ..FragmentConfig::default()
    };
    let mut reassembler = Reassembler::new(config);
    let syn = syn4();
    for ident in 0..1000u16 {
        let frame = v4_frame(MAC_A, ident, IpProtocol::Tcp, 0, true, &syn[..16]);
        reassembler.push(T0, &fragment_of(&frame));
    }
    let stats = *reassembler.stats();
    assert_eq!((stats.in_progress, stats.evicted), (50, 950));
    assert_eq!(stats.peak_bytes, 50 * 512);
    // The oldest is gone, so its last fragment does not complete anything.
    let oldest_end = v4_frame(MAC_A, 0, IpProtocol::Tcp, 16, false, &syn[16..]);
    assert_eq!(reassembler.push(T0, &fragment_of(&oldest_end)), None);
}

#[test]
fn a_datagram_past_the_size_cap_is_discarded_with_its_later_fragments() {
    let mut reassembler = Reassembler::default();
    let data = [0u8; 16];
    // Ping of death: 20 + 65528 + 16 > 65535.
    let over = v4_frame(MAC_A, 21, IpProtocol::Icmp, 65_528, false, &data);
    assert_eq!(reassembler.push(T0, &fragment_of(&over)), None);
    let start = v4_frame(MAC_A, 21, IpProtocol::Icmp, 0, true, &data);
    assert_eq!(reassembler.push(T0, &fragment_of(&start)), None);
    let stats = reassembler.stats();
    assert_eq!(
        (stats.too_large, stats.discarded_fragments, stats.held_bytes),
        (1, 1, 0)
    );
}

#[test]
fn fragments_disagreeing_about_the_end_discard_the_datagram() {
    let syn = syn4();
    let mut reassembler = Reassembler::default();
    let frames = [
        v4_frame(MAC_A, 22, IpProtocol::Tcp, 8, false, &syn[8..]),
        v4_frame(MAC_A, 22, IpProtocol::Tcp, 8, false, &syn[8..16]),
        v4_frame(MAC_A, 22, IpProtocol::Tcp, 0, true, &syn[..8]),
    ];
    assert_eq!(push_all(&mut reassembler, T0, &frames), None);
    let stats = reassembler.stats();
    assert_eq!((stats.inconsistent, stats.discarded_fragments), (1, 1));
}

#[test]
fn different_identifications_and_protocols_do_not_mix() {
    let syn = syn4();
    let mut reassembler = Reassembler::default();
    let frames = [
        v4_frame(MAC_A, 30, IpProtocol::Tcp, 0, true, &syn[..16]),
        v4_frame(MAC_A, 31, IpProtocol::Tcp, 16, false, &syn[16..]),
        v4_frame(MAC_A, 30, IpProtocol::Udp, 16, false, &syn[16..]),
    ];
    assert_eq!(push_all(&mut reassembler, T0, &frames), None);
    assert_eq!(reassembler.stats().in_progress, 3);
}

fn udp6(body: &[u8]) -> Vec<u8> {
    udp(IpAddress::Ipv6(SRC6), IpAddress::Ipv6(DST6), body)
}

#[test]
fn ipv6_fragments_reassemble_in_and_out_of_order() {
    let body: Vec<u8> = (0..100u8).collect();
    let datagram = udp6(&body);
    let frames: Vec<Vec<u8>> = pieces(&datagram, &[48, 96])
        .map(|(offset, data, more)| v6_fragment(0xdead_beef, IpProtocol::Udp, offset, more, data))
        .collect();
    let whole = v6_whole(IpProtocol::Udp, &datagram);
    for order in [[0, 1, 2], [2, 0, 1]] {
        let mut reassembler = Reassembler::default();
        for i in &order[..2] {
            assert_eq!(reassembler.push(T0, &fragment_of(&frames[*i])), None);
        }
        let datagram = reassembler
            .push(T0, &fragment_of(&frames[order[2]]))
            .expect("complete");
        assert_eq!(datagram.decode(), decode(&whole), "order {order:?}");
    }
}

#[test]
fn ipv6_atomic_fragment_is_a_whole_datagram() {
    let datagram = udp6(b"atomic");
    let frame = v6_fragment(1, IpProtocol::Udp, 0, false, &datagram);
    let decoded = decode(&frame).expect("RFC 6946: processed on its own");
    assert!(matches!(
        decoded.transport,
        Transport::Udp {
            payload: b"atomic",
            ..
        }
    ));
}

#[test]
fn ipv6_overlap_discards_the_whole_datagram() {
    let body = [7u8; 64];
    let datagram = udp6(&body);
    let frames = [
        v6_fragment(5, IpProtocol::Udp, 0, true, &datagram[..32]),
        // Overlaps 24..32 with the same bytes: still an overlap under RFC 5722.
        v6_fragment(5, IpProtocol::Udp, 24, true, &datagram[24..48]),
        v6_fragment(5, IpProtocol::Udp, 48, false, &datagram[48..]),
    ];
    let mut reassembler = Reassembler::default();
    assert_eq!(push_all(&mut reassembler, T0, &frames), None);
    let stats = *reassembler.stats();
    assert_eq!(
        (
            stats.overlaps,
            stats.conflicting_overlaps,
            stats.overlap_discards,
            stats.discarded_fragments
        ),
        (1, 0, 1, 1)
    );
    assert_eq!((stats.completed, stats.held_bytes), (0, 0));
}

#[test]
fn ipv6_exact_retransmission_is_a_duplicate_not_an_overlap_discard() {
    let datagram = udp6(&[9u8; 64]);
    let first = v6_fragment(6, IpProtocol::Udp, 0, true, &datagram[..40]);
    let rest = v6_fragment(6, IpProtocol::Udp, 40, false, &datagram[40..]);
    let mut reassembler = Reassembler::default();
    let payload = push_all(&mut reassembler, T0, &[first.clone(), first, rest]).expect("completes");
    assert_eq!(payload, datagram);
    let stats = reassembler.stats();
    assert_eq!((stats.overlaps, stats.overlap_discards), (1, 0));
    // The same offset with different bytes is a conflicting overlap: discarded.
    let mut forged = datagram[..40].to_vec();
    forged[20] ^= 0xff;
    let frames = [
        v6_fragment(8, IpProtocol::Udp, 0, true, &datagram[..40]),
        v6_fragment(8, IpProtocol::Udp, 0, true, &forged),
        v6_fragment(8, IpProtocol::Udp, 40, false, &datagram[40..]),
    ];
    assert_eq!(push_all(&mut reassembler, T0, &frames), None);
    let stats = reassembler.stats();
    assert_eq!((stats.conflicting_overlaps, stats.overlap_discards), (1, 1));
}

#[test]
fn tiny_ipv6_first_fragment_discards_the_datagram() {
    let syn = tcp_syn(IpAddress::Ipv6(SRC6), IpAddress::Ipv6(DST6), 22);
    let frames = [
        v6_fragment(40, IpProtocol::Tcp, 0, true, &syn[..8]),
        v6_fragment(40, IpProtocol::Tcp, 8, false, &syn[8..]),
    ];
    let mut reassembler = Reassembler::default();
    assert_eq!(push_all(&mut reassembler, T0, &frames), None);
    let stats = reassembler.stats();
    assert_eq!(
        (stats.tiny_first, stats.discarded_fragments, stats.completed),
        (1, 1, 0)
    );
}

#[test]
fn ipv6_fragment_not_last_and_not_a_multiple_of_8_is_malformed() {
    let datagram = udp6(&[1u8; 40]);
    let mut reassembler = Reassembler::default();
    let odd = v6_fragment(41, IpProtocol::Udp, 0, true, &datagram[..13]);
    assert_eq!(reassembler.push(T0, &fragment_of(&odd)), None);
    let stats = reassembler.stats();
    assert_eq!((stats.malformed, stats.in_progress), (1, 0));
}

#[test]
fn a_large_datagram_spanning_many_blocks_reassembles_from_mtu_sized_fragments() {
    let body: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    let datagram = udp(IpAddress::Ipv4(SRC4), IpAddress::Ipv4(DST4), &body);
    let cuts: Vec<usize> = (1..datagram.len() / 1480 + 1).map(|i| i * 1480).collect();
    let mut frames = v4_fragments(50, IpProtocol::Udp, &datagram, &cuts);
    // Shuffled deterministically: odd pieces first, then even.
    let (odd, even): (Vec<_>, Vec<_>) = frames.drain(..).enumerate().partition(|(i, _)| i % 2 == 1);
    let mut shuffled: Vec<Vec<u8>> = odd.into_iter().chain(even).map(|(_, f)| f).collect();
    let last = shuffled.pop().expect("pieces");
    let mut reassembler = Reassembler::default();
    for frame in &shuffled {
        assert_eq!(reassembler.push(T0, &fragment_of(frame)), None);
    }
    let datagram_out = reassembler
        .push(T0, &fragment_of(&last))
        .expect("completes");
    assert_eq!(datagram_out.payload, &datagram[..]);
    let stats = reassembler.stats();
    assert_eq!(
        stats.peak_bytes,
        (datagram.len().div_ceil(512) * 512) as u64
    );
    assert_eq!(stats.held_bytes, 0);
}
