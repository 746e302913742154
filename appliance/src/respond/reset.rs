//! TCP resets for tap mode: on a mirror port the appliance cannot drop a blocked connection's
//! packets, so it tears the connection down instead, with a RST to each end that each end
//! accepts: the one to the responder as if from the blocked device, carrying the device's next
//! sequence number; the one to the device as if from the responder, carrying the sequence
//! number the device acknowledged. Frames are built with `smoltcp::wire`, checksums included.

use std::net::IpAddr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

use crate::decode::{decode, TcpFlags, Transport};

const TCP_HEADER: usize = 20;
const ETHERNET_HEADER: usize = 14;
const TTL: u8 = 64;

/// The RST frames that end the TCP connection `frame` belongs to: to the responder, then (when
/// the segment acknowledges something) to the sender. Empty for anything but an untagged TCP
/// segment, or one that is itself a RST.
pub fn resets(frame: &[u8]) -> Vec<Vec<u8>> {
    resets_of(frame).unwrap_or_default()
}

fn resets_of(frame: &[u8]) -> Option<Vec<Vec<u8>>> {
    let decoded = decode(frame).ok()?;
    if decoded.vlan.is_some() {
        return None;
    }
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
    // The sequence space a segment takes: its payload, plus one for SYN and for FIN.
    let length = payload.len() as u32
        + u32::from(flags.has(TcpFlags::SYN))
        + u32::from(flags.has(TcpFlags::FIN));
    let onward = segment(
        (decoded.src_mac, decoded.src, src_port),
        (decoded.dst_mac, decoded.dst, dst_port),
        seq.wrapping_add(length),
    )?;
    let mut frames = vec![onward];
    // Without an ACK (a bare SYN) the sender has acknowledged nothing to answer to.
    if flags.has(TcpFlags::ACK) {
        frames.push(segment(
            (decoded.dst_mac, decoded.dst, dst_port),
            (decoded.src_mac, decoded.src, src_port),
            ack,
        )?);
    }
    Some(frames)
}

/// One RST segment from `from` to `to` with sequence number `seq`, as an Ethernet frame.
fn segment(from: ([u8; 6], IpAddr, u16), to: ([u8; 6], IpAddr, u16), seq: u32) -> Option<Vec<u8>> {
    let tcp = TcpRepr {
        src_port: from.2,
        dst_port: to.2,
        control: TcpControl::Rst,
        seq_number: TcpSeqNumber(seq as i32),
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
    let (ethertype, ip_len) = match (from.1, to.1) {
        (IpAddr::V4(_), IpAddr::V4(_)) => (EthernetProtocol::Ipv4, 20),
        (IpAddr::V6(_), IpAddr::V6(_)) => (EthernetProtocol::Ipv6, 40),
        _ => return None,
    };
    let mut frame = vec![0u8; ETHERNET_HEADER + ip_len + TCP_HEADER];
    let ethernet = EthernetRepr {
        src_addr: EthernetAddress(from.0),
        dst_addr: EthernetAddress(to.0),
        ethertype,
    };
    let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
    ethernet.emit(&mut eth);
    let ip_bytes = eth.payload_mut();
    let (src, dst) = (IpAddress::from(from.1), IpAddress::from(to.1));
    match (from.1, to.1) {
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

    /// A data segment from 10.0.0.2:40000 to 10.0.0.1:445, as smoltcp writes one.
    fn data_segment() -> Vec<u8> {
        let payload = b"0123456789";
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: 445,
            control: TcpControl::Psh,
            seq_number: TcpSeqNumber(1000),
            ack_number: Some(TcpSeqNumber(5000)),
            window_len: 512,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload,
        };
        segment_with(tcp)
    }

    fn segment_with(tcp: TcpRepr<'_>) -> Vec<u8> {
        let (s, d) = ([10, 0, 0, 2].into(), [10, 0, 0, 1].into());
        let mut frame = vec![0u8; 14 + 20 + tcp.buffer_len()];
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        EthernetRepr {
            src_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
            dst_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
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
        // smoltcp's own checked parse verifies both checksums.
        for frame in [onward, back] {
            let eth = EthernetFrame::new_checked(&frame[..]).expect("ethernet");
            let ip = Ipv4Packet::new_checked(eth.payload()).expect("ip");
            let caps = ChecksumCapabilities::default();
            Ipv4Repr::parse(&ip, &caps).expect("ip checksum");
            let tcp = TcpPacket::new_checked(ip.payload()).expect("tcp");
            TcpRepr::parse(&tcp, &ip.src_addr().into(), &ip.dst_addr().into(), &caps)
                .expect("tcp checksum");
        }
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
