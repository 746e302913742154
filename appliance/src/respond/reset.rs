//! TCP resets for tap mode: on a mirror port the appliance cannot drop a blocked connection's
//! packets, so it tears the connection down instead, with a RST to each end that each end
//! accepts: the one to the responder as if from the blocked device, carrying the device's next
//! sequence number; the one to the device as if from the responder, carrying the sequence
//! number the device acknowledged. Frames are built with `smoltcp::wire`, checksums included,
//! and carry the VLAN tags (802.1Q, or stacked 802.1ad QinQ) of the frames they answer.
//!
//! Two moments: when an action comes in force, every established connection it blocks is reset
//! at once from what the flow table last saw of each side ([`connection_resets`]); a connection
//! whose numbers moved on since (or that the table could not follow) is reset again from its next
//! blocked segment ([`resets`]).

use std::net::IpAddr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

use super::{EnforcementTable, Secs};
use crate::decode::{decode, TcpFlags, Transport};
use crate::flow::{segment_end, FlowTable, Sent, TcpConnection};

const TCP_HEADER: usize = 20;
const ETHERNET_HEADER: usize = 14;
/// Where the ethertype (or the first VLAN tag) starts: after the two MAC addresses.
const ETHERTYPE_AT: usize = 12;
const TTL: u8 = 64;

/// The RST frames that end the TCP connection `frame` belongs to: to the responder, then (when
/// the segment acknowledges something) to the sender. Empty for anything but a TCP segment, or
/// for one that is itself a RST.
pub fn resets(frame: &[u8]) -> Vec<Vec<u8>> {
    resets_of(frame).unwrap_or_default()
}

/// The RST frames that end `connection` now, without waiting for its next segment: one to each
/// end in the other's name, each carrying what the other end sent last (its link layer and the
/// sequence number after its furthest byte, which is what the receiver expects next).
pub fn connection_resets(connection: &TcpConnection) -> Vec<Vec<u8>> {
    [
        segment(&connection.from_orig, connection.orig, connection.resp),
        segment(&connection.from_resp, connection.resp, connection.orig),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Adds to `out` the RSTs for every established TCP connection of `device` in `flows` that
/// `table` blocks at `now`, either way. Returns how many connections that is.
pub fn reset_blocked(
    flows: &FlowTable,
    table: &EnforcementTable,
    device: IpAddr,
    now: Secs,
    out: &mut Vec<Vec<u8>>,
) -> usize {
    let mut reset = 0;
    for connection in flows.tcp_connections_of(device) {
        let ((orig, orig_port), (resp, resp_port)) = (connection.orig, connection.resp);
        if table.drops(orig, resp, Some(resp_port), now)
            || table.drops(resp, orig, Some(orig_port), now)
        {
            out.extend(connection_resets(&connection));
            reset += 1;
        }
    }
    reset
}

fn resets_of(frame: &[u8]) -> Option<Vec<Vec<u8>>> {
    let decoded = decode(frame).ok()?;
    let Transport::Tcp {
        src_port,
        dst_port,
        flags,
        seq,
        ack,
        payload,
    } = decoded.transport
    else {
        return None;
    };
    if flags.has(TcpFlags::RST) {
        return None;
    }
    let (sender, receiver) = ((decoded.src, src_port), (decoded.dst, dst_port));
    let onward = Sent {
        src_mac: decoded.src_mac,
        dst_mac: decoded.dst_mac,
        vlans: decoded.vlans,
        next_seq: segment_end(seq, flags, payload.len()),
    };
    let mut frames = vec![segment(&onward, sender, receiver)?];
    // Without an ACK (a bare SYN) the sender has acknowledged nothing to answer to.
    if flags.has(TcpFlags::ACK) {
        let back = Sent {
            src_mac: decoded.dst_mac,
            dst_mac: decoded.src_mac,
            vlans: decoded.vlans,
            next_seq: ack,
        };
        frames.push(segment(&back, receiver, sender)?);
    }
    Some(frames)
}

/// One RST segment from `from` to `to` in the name of the side that `sent` describes (its MACs,
/// its VLAN tags, its next sequence number), as an Ethernet frame.
fn segment(sent: &Sent, from: (IpAddr, u16), to: (IpAddr, u16)) -> Option<Vec<u8>> {
    let tcp = TcpRepr {
        src_port: from.1,
        dst_port: to.1,
        control: TcpControl::Rst,
        seq_number: TcpSeqNumber(sent.next_seq as i32),
        ack_number: None,
        window_len: 0,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let checksums = ChecksumCapabilities::default();
    let (ethertype, ip_len) = match (from.0, to.0) {
        (IpAddr::V4(_), IpAddr::V4(_)) => (EthernetProtocol::Ipv4, 20),
        (IpAddr::V6(_), IpAddr::V6(_)) => (EthernetProtocol::Ipv6, 40),
        _ => return None,
    };
    let mut frame = vec![0u8; ETHERNET_HEADER + sent.vlans.wire_len() + ip_len + TCP_HEADER];
    let ethernet = EthernetRepr {
        src_addr: EthernetAddress(sent.src_mac),
        dst_addr: EthernetAddress(sent.dst_mac),
        ethertype,
    };
    ethernet.emit(&mut EthernetFrame::new_unchecked(&mut frame[..]));
    // smoltcp has no 802.1Q view: the tags go in by hand between the MACs and the ethertype.
    let ip_at = ETHERTYPE_AT
        + sent
            .vlans
            .emit(&mut frame[ETHERTYPE_AT..], u16::from(ethertype));
    let ip_bytes = &mut frame[ip_at..];
    let (src, dst) = (IpAddress::from(from.0), IpAddress::from(to.0));
    match (from.0, to.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ip = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Tcp,
                payload_len: TCP_HEADER,
                hop_limit: TTL,
            };
            let mut packet = Ipv4Packet::new_unchecked(&mut ip_bytes[..]);
            ip.emit(&mut packet, &checksums);
            let mut segment = TcpPacket::new_unchecked(packet.payload_mut());
            tcp.emit(&mut segment, &src, &dst, &checksums);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Tcp,
                payload_len: TCP_HEADER,
                hop_limit: TTL,
            };
            let mut packet = Ipv6Packet::new_unchecked(&mut ip_bytes[..]);
            ip.emit(&mut packet);
            let mut segment = TcpPacket::new_unchecked(packet.payload_mut());
            tcp.emit(&mut segment, &src, &dst, &checksums);
        }
        _ => return None,
    }
    Some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment between 10.0.0.2 and 10.0.0.1 as smoltcp writes one (no options).
    fn repr<'a>(
        src_port: u16,
        dst_port: u16,
        control: TcpControl,
        seq: i32,
        ack: Option<i32>,
        payload: &'a [u8],
    ) -> TcpRepr<'a> {
        TcpRepr {
            src_port,
            dst_port,
            control,
            seq_number: TcpSeqNumber(seq),
            ack_number: ack.map(TcpSeqNumber),
            window_len: 512,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload,
        }
    }

    /// A data segment from 10.0.0.2:40000 to 10.0.0.1:445.
    fn data_segment() -> Vec<u8> {
        let tcp = repr(40000, 445, TcpControl::Psh, 1000, Some(5000), b"0123456789");
        segment_with(tcp, true)
    }

    /// A segment between the client 10.0.0.2 (MAC ..:02) and the server 10.0.0.1 (MAC ..:01).
    fn segment_with(tcp: TcpRepr<'_>, from_client: bool) -> Vec<u8> {
        let (client, server) = ([10, 0, 0, 2].into(), [10, 0, 0, 1].into());
        let (client_mac, server_mac) = ([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1]);
        let (s, d, src_mac, dst_mac) = if from_client {
            (client, server, client_mac, server_mac)
        } else {
            (server, client, server_mac, client_mac)
        };
        let mut frame = vec![0u8; 14 + 20 + tcp.buffer_len()];
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        EthernetRepr {
            src_addr: EthernetAddress(src_mac),
            dst_addr: EthernetAddress(dst_mac),
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut eth);
        let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
        Ipv4Repr {
            src_addr: s,
            dst_addr: d,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        }
        .emit(&mut ip, &ChecksumCapabilities::default());
        let mut seg = TcpPacket::new_unchecked(ip.payload_mut());
        tcp.emit(
            &mut seg,
            &IpAddress::Ipv4(s),
            &IpAddress::Ipv4(d),
            &ChecksumCapabilities::default(),
        );
        frame
    }

    const VLAN_TAG: usize = 4;

    /// `frame` with one more tag (`tpid`, `tci`) ahead of those it has, after its MACs.
    fn tagged_with(frame: &[u8], tpid: u16, tci: u16) -> Vec<u8> {
        let mut out = frame[..ETHERTYPE_AT].to_vec();
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&tci.to_be_bytes());
        out.extend_from_slice(&frame[ETHERTYPE_AT..]);
        out
    }

    /// `frame` with one 802.1Q tag for VLAN `vid`.
    fn tagged(frame: &[u8], vid: u16) -> Vec<u8> {
        tagged_with(frame, 0x8100, vid)
    }

    /// Checks both checksums with smoltcp's own checked parse, the IP header at `ip_at`.
    fn assert_checksums(frame: &[u8], ip_at: usize) {
        let ip = Ipv4Packet::new_checked(&frame[ip_at..]).expect("ip");
        let caps = ChecksumCapabilities::default();
        Ipv4Repr::parse(&ip, &caps).expect("ip checksum");
        let tcp = TcpPacket::new_checked(ip.payload()).expect("tcp");
        TcpRepr::parse(&tcp, &ip.src_addr().into(), &ip.dst_addr().into(), &caps)
            .expect("tcp checksum");
    }

    fn tcp_of(frame: &[u8]) -> (IpAddr, IpAddr, u16, u16, TcpFlags, u32) {
        let d = decode(frame).expect("decodes");
        match d.transport {
            Transport::Tcp {
                src_port,
                dst_port,
                flags,
                seq,
                ..
            } => (d.src, d.dst, src_port, dst_port, flags, seq),
            other => panic!("not TCP: {other:?}"),
        }
    }

    #[test]
    fn resets_carry_the_sequence_numbers_each_end_expects_and_valid_checksums() {
        let frames = resets(&data_segment());
        let [onward, back] = frames.as_slice() else {
            panic!("two resets: {frames:?}");
        };
        let (src, dst, sport, dport, flags, seq) = tcp_of(onward);
        assert_eq!(
            (src, dst, sport, dport),
            ([10, 0, 0, 2].into(), [10, 0, 0, 1].into(), 40000, 445)
        );
        assert!(flags.has(TcpFlags::RST));
        assert_eq!(seq, 1010, "the sender's next byte");
        let (src, dst, sport, dport, flags, seq) = tcp_of(back);
        assert_eq!(
            (src, dst, sport, dport),
            ([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), 445, 40000)
        );
        assert!(flags.has(TcpFlags::RST));
        assert_eq!(seq, 5000, "what the sender acknowledged");
        for frame in [onward, back] {
            assert_checksums(frame, ETHERNET_HEADER);
        }
    }

    #[test]
    fn resets_of_a_tagged_segment_carry_its_vlan_tag() {
        let frames = resets(&tagged(&data_segment(), 42));
        let [onward, back] = frames.as_slice() else {
            panic!("two resets: {frames:?}");
        };
        for frame in [onward, back] {
            assert_eq!(frame[12..16], [0x81, 0x00, 0, 42], "802.1Q tag, VLAN 42");
            assert_eq!(frame[16..18], [0x08, 0x00], "IPv4 inside the tag");
            let decoded = decode(frame).expect("decodes");
            assert_eq!(
                (decoded.vlans.vlan_id(), decoded.vlans.len()),
                (Some(42), 1)
            );
            assert_checksums(frame, ETHERNET_HEADER + VLAN_TAG);
        }
        assert_eq!(tcp_of(onward).5, 1010);
        assert_eq!(tcp_of(back).5, 5000);
        // MACs: the onward reset goes the segment's way, the other one back.
        assert_eq!(onward[..12], data_segment()[..12]);
        assert_eq!(back[..6], data_segment()[6..12]);
    }

    #[test]
    fn resets_of_a_qinq_segment_carry_both_tags_as_they_came() {
        // A C-tag (VLAN 42, priority 5) inside an 802.1ad S-tag (VLAN 7).
        let c_tci = (5 << 13) | 42;
        let frame = tagged_with(&tagged_with(&data_segment(), 0x8100, c_tci), 0x88a8, 7);
        let frames = resets(&frame);
        let [onward, back] = frames.as_slice() else {
            panic!("two resets: {frames:?}");
        };
        for reset in [onward, back] {
            assert_eq!(
                reset[12..20],
                [0x88, 0xa8, 0, 7, 0x81, 0x00, 0xa0, 42],
                "S-tag then C-tag, priority kept"
            );
            assert_eq!(reset[20..22], [0x08, 0x00], "IPv4 inside the tags");
            assert_checksums(reset, ETHERNET_HEADER + 2 * VLAN_TAG);
        }
        assert_eq!(tcp_of(onward).5, 1010);
        assert_eq!(tcp_of(back).5, 5000);
    }

    #[test]
    fn connection_resets_use_what_the_flow_table_last_saw_of_each_side() {
        use crate::flow::FlowTable;
        use vigil_plugin_sdk::Timestamp;

        let device: IpAddr = [10, 0, 0, 2].into();
        let mut table = FlowTable::default();
        let mut observe = |frame: &[u8]| {
            let decoded = decode(frame).expect("decodes");
            table.observe(Timestamp(1), &decoded, &mut |_| {});
        };
        // Handshake (client ISN 999, server ISN 4999), 10 bytes from the client at 1000.
        let syn = segment_with(repr(40000, 445, TcpControl::Syn, 999, None, &[]), true);
        let synack = segment_with(
            repr(445, 40000, TcpControl::Syn, 4999, Some(1000), &[]),
            false,
        );
        let ack = segment_with(
            repr(445, 40000, TcpControl::None, 5000, Some(1010), &[]),
            false,
        );
        for frame in [&syn, &synack, &data_segment()] {
            observe(&tagged(frame, 9));
        }
        // A retransmission of old data does not move the client's next sequence number back.
        observe(&tagged(&data_segment(), 9));
        observe(&tagged(&ack, 9));
        let connections: Vec<_> = table.tcp_connections_of(device).collect();
        let [connection] = connections.as_slice() else {
            panic!("one connection: {connections:?}");
        };
        assert!(table
            .tcp_connections_of([10, 0, 0, 3].into())
            .next()
            .is_none());
        let frames = connection_resets(connection);
        let [to_server, to_client] = frames.as_slice() else {
            panic!("two resets: {frames:?}");
        };
        let (src, _, sport, dport, flags, seq) = tcp_of(to_server);
        assert_eq!((src, sport, dport, seq), (device, 40000, 445, 1010));
        assert!(flags.has(TcpFlags::RST));
        let (src, dst, sport, dport, flags, seq) = tcp_of(to_client);
        assert_eq!(
            (src, dst, sport, dport, seq),
            ([10, 0, 0, 1].into(), device, 445, 40000, 5000)
        );
        assert!(flags.has(TcpFlags::RST));
        for frame in [to_server, to_client] {
            assert_eq!(decode(frame).expect("decodes").vlans.vlan_id(), Some(9));
            assert_checksums(frame, ETHERNET_HEADER + VLAN_TAG);
        }
        assert_eq!(to_server[..12], data_segment()[..12]);
        assert_eq!(to_client[..6], data_segment()[6..12]);
    }

    #[test]
    fn a_reset_is_never_answered_and_non_tcp_gets_none() {
        let mut rst = data_segment();
        // TCP flags byte: Ethernet 14 + IP 20 + 13.
        rst[14 + 20 + 13] = 0x04;
        assert!(resets(&rst).is_empty());
        assert!(resets(&[0u8; 60]).is_empty());
    }
}
