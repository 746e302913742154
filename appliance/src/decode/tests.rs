use super::*;

/// Builds frames byte by byte so the tests do not depend on the code under test.
pub mod frames {
    pub const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    pub const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    pub fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&MAC_B);
        f.extend_from_slice(&MAC_A);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    pub fn ipv4(src: [u8; 4], dst: [u8; 4], protocol: u8, payload: &[u8]) -> Vec<u8> {
        let total = (20 + payload.len()) as u16;
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 1, 0x40, 0, 64, protocol, 0, 0]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    pub fn tcp(src_port: u16, dst_port: u16, flags: u8, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&src_port.to_be_bytes());
        t.extend_from_slice(&dst_port.to_be_bytes());
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&0u32.to_be_bytes());
        t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend_from_slice(payload);
        t
    }

    pub fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&src_port.to_be_bytes());
        u.extend_from_slice(&dst_port.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    pub fn tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
        ethernet(
            0x0800,
            &ipv4(src, dst, 6, &tcp(sport, dport, flags, 1000, &[])),
        )
    }

    pub fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
        ethernet(0x0800, &ipv4(src, dst, 17, &udp(sport, dport, payload)))
    }

    pub fn icmp4(src: [u8; 4], dst: [u8; 4], icmp_type: u8, ident: u16, rest: &[u8]) -> Vec<u8> {
        let mut m = vec![icmp_type, 0, 0, 0];
        m.extend_from_slice(&ident.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m.extend_from_slice(rest);
        ethernet(0x0800, &ipv4(src, dst, 1, &m))
    }
}

use frames::*;

#[test]
fn tcp_syn_decodes_with_addresses_ports_and_flags() {
    let frame = tcp4([10, 0, 0, 1], 40000, [10, 0, 0, 2], 445, TcpFlags::SYN);
    let d = decode(&frame).expect("valid frame");
    assert_eq!(d.src, IpAddr::from([10, 0, 0, 1]));
    assert_eq!(d.dst, IpAddr::from([10, 0, 0, 2]));
    assert_eq!(d.src_mac, MAC_A);
    assert_eq!(d.vlans.vlan_id(), None);
    assert!(d.vlans.is_empty());
    match d.transport {
        Transport::Tcp {
            src_port,
            dst_port,
            flags,
            seq,
            ..
        } => {
            assert_eq!((src_port, dst_port, seq), (40000, 445, 1000));
            assert!(flags.has(TcpFlags::SYN) && !flags.has(TcpFlags::ACK));
        }
        other => panic!("expected TCP, got {other:?}"),
    }
}

#[test]
fn vlan_and_qinq_tags_are_followed() {
    let inner = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 17, &udp(5000, 53, b"q"));
    let mut tagged = vec![0x00, 0x64, 0x81, 0x00, 0x20, 0x07, 0x08, 0x00];
    tagged.extend_from_slice(&inner);
    let frame = ethernet(0x88a8, &tagged);
    let d = decode(&frame).expect("QinQ frame");
    assert_eq!(d.vlans.vlan_id(), Some(7));
    assert_eq!(d.vlans.len(), 2);
    // The tags as they came: outer S-tag VLAN 100, inner C-tag VLAN 7 with priority 1.
    let mut wire = [0u8; 10];
    assert_eq!(d.vlans.emit(&mut wire, 0x0800), 10);
    assert_eq!(
        wire,
        [0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x20, 0x07, 0x08, 0x00]
    );
    assert!(matches!(
        d.transport,
        Transport::Udp {
            dst_port: 53,
            payload: b"q",
            ..
        }
    ));
}

#[test]
fn icmp_unreachable_quotes_the_refused_datagram() {
    let refused = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 17, &udp(5000, 161, b"x"));
    let frame = icmp4([10, 0, 0, 2], [10, 0, 0, 1], 3, 0, &refused);
    let d = decode(&frame).expect("icmp");
    let Transport::Icmp {
        kind: IcmpKind::Unreachable(q),
        ..
    } = d.transport
    else {
        panic!("expected unreachable, got {:?}", d.transport);
    };
    assert_eq!(q.src, IpAddr::from([10, 0, 0, 1]));
    assert_eq!((q.protocol, q.src_port, q.dst_port), (17, 5000, 161));
}

#[test]
fn echo_and_timestamp_requests_open_icmp_flows() {
    for icmp_type in [8u8, 13] {
        let frame = icmp4([10, 0, 0, 1], [10, 0, 0, 9], icmp_type, 77, &[0; 12]);
        let d = decode(&frame).expect("icmp request");
        assert!(matches!(
            d.transport,
            Transport::Icmp {
                kind: IcmpKind::Request,
                ident: 77,
                ..
            }
        ));
    }
}

#[test]
fn ipv6_hop_by_hop_is_skipped_to_the_transport() {
    let udp = udp(546, 547, b"dhcp");
    let mut hbh = vec![17u8, 0, 0, 0, 0, 0, 0, 0];
    hbh.extend_from_slice(&udp);
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(hbh.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 64]);
    ip.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    ip.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2]);
    ip.extend_from_slice(&hbh);
    let frame = ethernet(0x86dd, &ip);
    let d = decode(&frame).expect("ipv6");
    assert!(matches!(
        d.transport,
        Transport::Udp {
            src_port: 546,
            dst_port: 547,
            ..
        }
    ));
}

#[test]
fn fragments_and_non_ip_are_skipped_not_malformed() {
    let mut ip = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 17, &[0; 16]);
    ip[6] = 0x00;
    ip[7] = 0x10;
    assert_eq!(decode(&ethernet(0x0800, &ip)), Err(Skip::Fragment));
    // A first fragment (MF set, offset 0) is no whole packet either: its transport header may
    // be cut short, so it waits for reassembly.
    let mut first = ipv4(
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        6,
        &tcp(1, 2, TcpFlags::SYN, 0, &[]),
    );
    first[6] = 0x20;
    assert_eq!(decode(&ethernet(0x0800, &first)), Err(Skip::Fragment));
    assert_eq!(decode(&ethernet(0x0806, &[0; 28])), Err(Skip::NotIp));
    assert!(!Skip::Fragment.is_malformed() && !Skip::NotIp.is_malformed());
}

#[test]
fn every_truncation_of_a_valid_frame_is_a_counted_reason_not_a_panic() {
    let frames = [
        tcp4([10, 0, 0, 1], 1, [10, 0, 0, 2], 2, TcpFlags::SYN),
        udp4([10, 0, 0, 1], 1, [10, 0, 0, 2], 53, b"abcdef"),
        icmp4([10, 0, 0, 1], [10, 0, 0, 2], 8, 1, &[0; 8]),
    ];
    let mut counts = SkipCounts::default();
    for frame in &frames {
        for len in 0..frame.len() {
            if let Err(reason) = decode(&frame[..len]) {
                counts.add(reason);
            }
        }
    }
    assert!(counts.get(Skip::TruncatedEthernet) > 0);
    assert!(counts.get(Skip::BadIpv4) > 0);
    assert!(counts.malformed() > 0);
}

/// `len` bytes of a deterministic xorshift stream: reproducible, no dependency.
fn noise(state: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state as u8
        })
        .collect()
}

#[test]
fn garbage_never_panics() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for len in 0..2000usize {
        let frame = noise(&mut state, len % 200);
        let mut with_ip = frame.clone();
        if with_ip.len() > 14 {
            with_ip[12] = 0x08;
            with_ip[13] = if len % 2 == 0 { 0x00 } else { 0xdd };
            with_ip[14] = if len % 2 == 0 { 0x45 } else { 0x60 };
        }
        let _ = decode(&frame);
        let _ = decode(&with_ip);
    }
}

/// Link-layer headers as tcpdump writes them, built byte by byte like the frames above.
mod links {
    use super::frames::*;
    use super::*;
    use crate::decode::fragments::Reassembler;
    use crate::decode::link::{DLT_RAW, DLT_RAW_OPENBSD};
    use vigil_plugin_sdk::Timestamp;

    /// Linux cooked v1: an outgoing (4) Ethernet (ARPHRD 1) frame sent by MAC_A.
    fn sll(protocol: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0, 4, 0, 1, 0, 6];
        f.extend_from_slice(&MAC_A);
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&protocol.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Linux cooked v2: the same, on interface index 7.
    fn sll2(protocol: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = protocol.to_be_bytes().to_vec();
        f.extend_from_slice(&[0, 0, 0, 0, 0, 7, 0, 1, 4, 6]);
        f.extend_from_slice(&MAC_A);
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    fn family(header: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut f = header.to_vec();
        f.extend_from_slice(payload);
        f
    }

    fn syn() -> Vec<u8> {
        ipv4(
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            6,
            &tcp(40000, 445, TcpFlags::SYN, 1000, &[]),
        )
    }

    fn ipv6_udp() -> Vec<u8> {
        let udp = udp(5353, 53, b"q");
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&(udp.len() as u16).to_be_bytes());
        ip.extend_from_slice(&[17, 64]);
        ip.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        ip.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        ip.extend_from_slice(&udp);
        ip
    }

    fn assert_syn(d: &Decoded<'_>, src_mac: [u8; 6]) {
        assert_eq!(d.src, IpAddr::from([10, 0, 0, 1]));
        assert_eq!(d.dst, IpAddr::from([10, 0, 0, 2]));
        assert_eq!(d.src_mac, src_mac);
        assert_eq!(d.dst_mac, [0; 6]);
        assert!(matches!(
            d.transport,
            Transport::Tcp {
                src_port: 40000,
                dst_port: 445,
                seq: 1000,
                ..
            }
        ));
    }

    #[test]
    fn linux_cooked_v1_and_v2_decode_with_the_senders_mac() {
        let frame = sll(0x0800, &syn());
        let d = decode_link(Linktype::LINUX_SLL, &frame).expect("SLL");
        assert_syn(&d, MAC_A);
        let frame = sll2(0x0800, &syn());
        let d = decode_link(Linktype::LINUX_SLL2, &frame).expect("SLL2");
        assert_syn(&d, MAC_A);
        let frame = sll2(0x86dd, &ipv6_udp());
        let d = decode_link(Linktype::LINUX_SLL2, &frame).expect("v6");
        assert!(matches!(
            d.transport,
            Transport::Udp {
                src_port: 5353,
                dst_port: 53,
                ..
            }
        ));
        // A tag the kernel left in the packet follows the cooked header's protocol.
        let mut tagged = vec![0x00, 0x2a, 0x08, 0x00];
        tagged.extend_from_slice(&syn());
        let frame = sll(0x8100, &tagged);
        let d = decode_link(Linktype::LINUX_SLL, &frame).expect("tagged");
        assert_eq!(d.vlans.vlan_id(), Some(42));
        assert_syn(&d, MAC_A);
        // An address that is not 6 bytes long (a tunnel's) is no MAC.
        let mut tunnel = sll2(0x0800, &syn());
        tunnel[11] = 0;
        let d = decode_link(Linktype::LINUX_SLL2, &tunnel).expect("no address");
        assert_syn(&d, [0; 6]);
        assert_eq!(
            decode_link(Linktype::LINUX_SLL, &sll(0x0806, &[0; 28])),
            Err(Skip::NotIp)
        );
    }

    #[test]
    fn raw_ip_is_read_by_its_version() {
        for link in [Linktype::RAW, DLT_RAW, DLT_RAW_OPENBSD, Linktype::IPV4] {
            let frame = syn();
            let d = decode_link(link, &frame).expect("raw IPv4");
            assert_syn(&d, [0; 6]);
        }
        for link in [Linktype::RAW, DLT_RAW, Linktype::IPV6] {
            let frame = ipv6_udp();
            let d = decode_link(link, &frame).expect("raw IPv6");
            assert_eq!(d.dst, "fd00::2".parse::<IpAddr>().expect("address"));
        }
        let mut neither = syn();
        neither[0] = 0x55;
        assert_eq!(
            decode_link(Linktype::RAW, &neither),
            Err(Skip::BadIpVersion)
        );
        assert_eq!(decode_link(Linktype::RAW, &[]), Err(Skip::BadIpVersion));
        // The IPv6 link type says IPv6: an IPv4 header there is a bad IPv6 packet.
        assert_eq!(decode_link(Linktype::IPV6, &syn()), Err(Skip::BadIpv6));
    }

    #[test]
    fn bsd_null_in_either_byte_order_and_loop_in_network_order() {
        // NULL: AF_INET as written by a little-endian and by a big-endian host.
        for header in [[2, 0, 0, 0], [0, 0, 0, 2]] {
            let frame = family(header, &syn());
            let d = decode_link(Linktype::NULL, &frame).expect("null");
            assert_syn(&d, [0; 6]);
        }
        // AF_INET6 as Linux, OpenBSD, FreeBSD and macOS number it.
        for af in [10u8, 24, 28, 30] {
            let frame = family([af, 0, 0, 0], &ipv6_udp());
            let d = decode_link(Linktype::NULL, &frame).expect("null v6");
            assert!(matches!(d.transport, Transport::Udp { dst_port: 53, .. }));
            let frame = family([0, 0, 0, af], &ipv6_udp());
            let d = decode_link(Linktype::LOOP, &frame).expect("loop v6");
            assert!(matches!(d.transport, Transport::Udp { dst_port: 53, .. }));
        }
        let frame = family([0, 0, 0, 2], &syn());
        let d = decode_link(Linktype::LOOP, &frame).expect("loop");
        assert_syn(&d, [0; 6]);
        // Another family (AF_APPLETALK) is not IP; LOOP is never little-endian.
        assert_eq!(
            decode_link(Linktype::NULL, &family([16, 0, 0, 0], &syn())),
            Err(Skip::NotIp)
        );
        assert_eq!(
            decode_link(Linktype::LOOP, &family([2, 0, 0, 0], &syn())),
            Err(Skip::NotIp)
        );
    }

    #[test]
    fn unsupported_link_types_are_counted_apart_from_damage() {
        let wifi = Linktype(105);
        assert!(!link::supported(wifi));
        assert_eq!(link::name(wifi), "IEEE802_11");
        assert_eq!(link::name(Linktype::LINUX_SLL2), "LINUX_SLL2");
        assert_eq!(decode_link(wifi, &syn()), Err(Skip::UnsupportedLinkType));
        assert!(!Skip::UnsupportedLinkType.is_malformed());
        assert!(Skip::TruncatedLinkHeader.is_malformed() && Skip::BadIpVersion.is_malformed());
    }

    #[test]
    fn every_truncation_of_each_link_header_is_a_counted_reason_not_a_panic() {
        let frames = [
            (Linktype::LINUX_SLL, sll(0x0800, &syn()), 16),
            (Linktype::LINUX_SLL2, sll2(0x0800, &syn()), 20),
            (Linktype::NULL, family([2, 0, 0, 0], &syn()), 4),
            (Linktype::LOOP, family([0, 0, 0, 2], &syn()), 4),
            (Linktype::RAW, syn(), 0),
        ];
        for (link, frame, header_len) in &frames {
            let mut counts = SkipCounts::default();
            for len in 0..frame.len() {
                let reason = decode_link(*link, &frame[..len]).expect_err("cut short");
                counts.add(reason);
                if len < *header_len {
                    assert_eq!(reason, Skip::TruncatedLinkHeader, "{link} at {len}");
                }
            }
            assert_eq!(counts.get(Skip::TruncatedLinkHeader), *header_len as u64);
            assert!(counts.get(Skip::BadIpv4) > 0, "{link}");
            assert_eq!(counts.malformed(), frame.len() as u64, "{link}");
        }
    }

    #[test]
    fn garbage_of_every_link_type_never_panics() {
        let links = [
            Linktype::LINUX_SLL,
            Linktype::LINUX_SLL2,
            Linktype::RAW,
            Linktype::IPV4,
            Linktype::IPV6,
            Linktype::NULL,
            Linktype::LOOP,
            Linktype(105),
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..1600usize {
            let frame = noise(&mut state, len % 120);
            for link in links {
                let _ = decode_frame(link, &frame);
            }
        }
    }

    /// IPv4 fragments of `whole`'s payload: 8 bytes, then the rest.
    fn fragments_of(whole: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let payload = &whole[20..];
        let header = |offset: u16, more: bool, data: &[u8]| {
            let mut ip = whole[..20].to_vec();
            ip[2..4].copy_from_slice(&((20 + data.len()) as u16).to_be_bytes());
            let flags = if more { 0x2000 } else { 0 } | (offset / 8);
            ip[6..8].copy_from_slice(&flags.to_be_bytes());
            ip.extend_from_slice(data);
            ip
        };
        (
            header(0, true, &payload[..8]),
            header(8, false, &payload[8..]),
        )
    }

    /// Puts a link header in front of an IP packet.
    type Wrap = fn(&[u8]) -> Vec<u8>;

    #[test]
    fn fragments_of_cooked_and_raw_captures_reassemble_with_their_link_facts() {
        let whole = ipv4(
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            17,
            &udp(5000, 53, b"a question of sixteen"),
        );
        let (first, last) = fragments_of(&whole);
        let cases: [(Linktype, Wrap, [u8; 6]); 3] = [
            (Linktype::LINUX_SLL2, |ip| sll2(0x0800, ip), MAC_A),
            (Linktype::RAW, <[u8]>::to_vec, [0; 6]),
            (Linktype::NULL, |ip| family([2, 0, 0, 0], ip), [0; 6]),
        ];
        for (link, wrap, mac) in cases {
            let mut reassembler = Reassembler::default();
            let now = Timestamp(1_000_000);
            let frame = wrap(&first);
            let Ok(Frame::Fragment(fragment)) = decode_frame(link, &frame) else {
                panic!("{link}: first fragment");
            };
            assert_eq!(fragment.link.src_mac, mac);
            assert!(reassembler.push(now, &fragment).is_none());
            let frame = wrap(&last);
            let Ok(Frame::Fragment(fragment)) = decode_frame(link, &frame) else {
                panic!("{link}: last fragment");
            };
            let datagram = reassembler.push(now, &fragment).expect("whole again");
            let decoded = datagram.decode().expect("decodes");
            assert_eq!(decoded.src_mac, mac);
            assert_eq!(Ok(decoded), decode_link(link, &wrap(&whole)), "{link}");
        }
    }
}
