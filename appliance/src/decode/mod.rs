//! Link, network and transport decoding with `smoltcp::wire` views: one length check per layer,
//! no copies, no allocation, and a counted reason instead of a panic for every malformed frame.
//!
//! Checksums are never verified: veth and offloading NICs hand us frames whose checksums the
//! hardware would have finished, and an IDS must see what the host sees.

use std::fmt;
use std::net::IpAddr;

use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet,
    IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
};

const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const VLAN_TAG_LEN: usize = 4;
/// Nested tags accepted (QinQ and one more): deeper stacks are malformed in practice.
const MAX_VLAN_TAGS: usize = 3;
/// IPv6 extension headers walked before giving up.
const MAX_IPV6_EXTENSIONS: usize = 8;

/// The 802.1Q/802.1ad tags of a frame as they were on the wire, outermost first: each tag's
/// protocol id (TPID) and control information (priority, DEI, VLAN id). A frame sent back into
/// the same VLANs (a tap-mode reset) carries them verbatim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VlanTags {
    tags: [(u16, u16); MAX_VLAN_TAGS],
    len: u8,
}

impl VlanTags {
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The innermost tag's VLAN id: the customer VLAN, which is what an analyst means by
    /// "the VLAN".
    pub fn vlan_id(&self) -> Option<u16> {
        self.tags[..self.len()].last().map(|(_, tci)| tci & 0x0fff)
    }

    /// Bytes the tags take between the MAC addresses and the payload's ethertype.
    pub fn wire_len(&self) -> usize {
        self.len() * VLAN_TAG_LEN
    }

    /// Writes the tags and then `ethertype` where an untagged frame has its ethertype (byte 12
    /// of the frame is `out[0]`); returns the bytes written.
    pub fn emit(&self, out: &mut [u8], ethertype: u16) -> usize {
        let mut at = 0;
        for (tpid, tci) in &self.tags[..self.len()] {
            out[at..at + 2].copy_from_slice(&tpid.to_be_bytes());
            out[at + 2..at + 4].copy_from_slice(&tci.to_be_bytes());
            at += VLAN_TAG_LEN;
        }
        out[at..at + 2].copy_from_slice(&ethertype.to_be_bytes());
        at + 2
    }

    fn push(&mut self, tpid: u16, tci: u16) -> Result<(), Skip> {
        let len = self.len();
        let slot = self.tags.get_mut(len).ok_or(Skip::TooManyVlanTags)?;
        *slot = (tpid, tci);
        self.len += 1;
        Ok(())
    }
}

/// TCP flag bits as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;

    pub const fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// The transport layer of a decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport<'a> {
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: TcpFlags,
        seq: u32,
        ack: u32,
        payload: &'a [u8],
    },
    Udp {
        src_port: u16,
        dst_port: u16,
        payload: &'a [u8],
    },
    /// ICMP (v4 or v6). `ident` is the echo/timestamp identifier where there is one.
    Icmp {
        kind: IcmpKind,
        icmp_type: u8,
        code: u8,
        ident: u16,
    },
    Other {
        protocol: u8,
    },
}

/// What an ICMP message means for flow tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpKind {
    /// Echo or timestamp request: opens an ICMP flow.
    Request,
    /// Echo or timestamp reply: answers one.
    Reply,
    /// Destination unreachable about an earlier packet, quoted here.
    Unreachable(Quoted),
    Other,
}

/// The flow an ICMP error quotes: the original packet's addresses and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

/// A frame decoded down to the transport layer; every slice borrows the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlans: VlanTags,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub transport: Transport<'a>,
}

/// Why a frame was not decoded. `NotIp` is ordinary (ARP, LLDP...); the rest are malformed or
/// deliberately not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    NotIp,
    TruncatedEthernet,
    TruncatedVlan,
    TooManyVlanTags,
    BadIpv4,
    BadIpv6,
    BadIpv6Extension,
    /// A non-first IPv4/IPv6 fragment: it carries no transport header.
    Fragment,
    TruncatedTcp,
    TruncatedUdp,
    TruncatedIcmp,
}

impl Skip {
    pub const ALL: [Skip; 11] = [
        Skip::NotIp,
        Skip::TruncatedEthernet,
        Skip::TruncatedVlan,
        Skip::TooManyVlanTags,
        Skip::BadIpv4,
        Skip::BadIpv6,
        Skip::BadIpv6Extension,
        Skip::Fragment,
        Skip::TruncatedTcp,
        Skip::TruncatedUdp,
        Skip::TruncatedIcmp,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Skip::NotIp => "not_ip",
            Skip::TruncatedEthernet => "truncated_ethernet",
            Skip::TruncatedVlan => "truncated_vlan",
            Skip::TooManyVlanTags => "too_many_vlan_tags",
            Skip::BadIpv4 => "bad_ipv4",
            Skip::BadIpv6 => "bad_ipv6",
            Skip::BadIpv6Extension => "bad_ipv6_extension",
            Skip::Fragment => "fragment",
            Skip::TruncatedTcp => "truncated_tcp",
            Skip::TruncatedUdp => "truncated_udp",
            Skip::TruncatedIcmp => "truncated_icmp",
        }
    }

    /// Whether the frame was damaged (as opposed to merely not for us).
    pub const fn is_malformed(self) -> bool {
        !matches!(self, Skip::NotIp | Skip::Fragment)
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Counts of skipped frames by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkipCounts([u64; Skip::ALL.len()]);

impl SkipCounts {
    pub fn add(&mut self, reason: Skip) {
        self.0[reason as usize] += 1;
    }

    pub fn get(&self, reason: Skip) -> u64 {
        self.0[reason as usize]
    }

    pub fn malformed(&self) -> u64 {
        Skip::ALL
            .iter()
            .filter(|r| r.is_malformed())
            .map(|r| self.get(*r))
            .sum()
    }

    /// Non-zero counts, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (Skip, u64)> + '_ {
        Skip::ALL
            .iter()
            .map(|r| (*r, self.get(*r)))
            .filter(|(_, n)| *n > 0)
    }
}

/// Decodes an Ethernet frame (with up to three 802.1Q/802.1ad tags).
pub fn decode(frame: &[u8]) -> Result<Decoded<'_>, Skip> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| Skip::TruncatedEthernet)?;
    let src_mac = eth.src_addr().0;
    let dst_mac = eth.dst_addr().0;
    let mut ethertype = u16::from(eth.ethertype());
    let mut payload = eth.payload();
    let mut vlans = VlanTags::default();
    while ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        let tag = payload.get(..VLAN_TAG_LEN).ok_or(Skip::TruncatedVlan)?;
        vlans.push(ethertype, u16::from_be_bytes([tag[0], tag[1]]))?;
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        payload = &payload[VLAN_TAG_LEN..];
    }
    let (src, dst, transport) = match EthernetProtocol::from(ethertype) {
        EthernetProtocol::Ipv4 => decode_ipv4(payload)?,
        EthernetProtocol::Ipv6 => decode_ipv6(payload)?,
        _ => return Err(Skip::NotIp),
    };
    Ok(Decoded {
        src_mac,
        dst_mac,
        vlans,
        src,
        dst,
        transport,
    })
}

fn decode_ipv4(bytes: &[u8]) -> Result<(IpAddr, IpAddr, Transport<'_>), Skip> {
    let ip = Ipv4Packet::new_checked(bytes).map_err(|_| Skip::BadIpv4)?;
    if ip.version() != 4 {
        return Err(Skip::BadIpv4);
    }
    if ip.frag_offset() != 0 {
        return Err(Skip::Fragment);
    }
    let (src, dst) = (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()));
    let protocol = u8::from(ip.next_header());
    let transport = decode_transport(protocol, ip.payload(), false)?;
    Ok((src, dst, transport))
}

fn decode_ipv6(bytes: &[u8]) -> Result<(IpAddr, IpAddr, Transport<'_>), Skip> {
    let ip = Ipv6Packet::new_checked(bytes).map_err(|_| Skip::BadIpv6)?;
    if ip.version() != 6 {
        return Err(Skip::BadIpv6);
    }
    let (src, dst) = (IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()));
    let (protocol, payload) = skip_ipv6_extensions(u8::from(ip.next_header()), ip.payload())?;
    let transport = decode_transport(protocol, payload, true)?;
    Ok((src, dst, transport))
}

/// Walks hop-by-hop, routing, destination-options and fragment headers to the transport header.
fn skip_ipv6_extensions(mut next: u8, mut bytes: &[u8]) -> Result<(u8, &[u8]), Skip> {
    const HOP_BY_HOP: u8 = 0;
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    const DEST_OPTS: u8 = 60;
    for _ in 0..MAX_IPV6_EXTENSIONS {
        match next {
            HOP_BY_HOP | ROUTING | DEST_OPTS => {
                let header = bytes.get(..2).ok_or(Skip::BadIpv6Extension)?;
                let len = (usize::from(header[1]) + 1) * 8;
                next = header[0];
                bytes = bytes.get(len..).ok_or(Skip::BadIpv6Extension)?;
            }
            FRAGMENT => {
                let header = bytes.get(..8).ok_or(Skip::BadIpv6Extension)?;
                let offset = u16::from_be_bytes([header[2], header[3]]) >> 3;
                if offset != 0 {
                    return Err(Skip::Fragment);
                }
                next = header[0];
                bytes = &bytes[8..];
            }
            _ => return Ok((next, bytes)),
        }
    }
    Err(Skip::BadIpv6Extension)
}

fn decode_transport(protocol: u8, bytes: &[u8], v6: bool) -> Result<Transport<'_>, Skip> {
    Ok(match IpProtocol::from(protocol) {
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(bytes).map_err(|_| Skip::TruncatedTcp)?;
            let raw_flags = bytes.get(13).copied().unwrap_or(0);
            Transport::Tcp {
                src_port: tcp.src_port(),
                dst_port: tcp.dst_port(),
                flags: TcpFlags(raw_flags),
                seq: u32::from_be_bytes(bytes[4..8].try_into().map_err(|_| Skip::TruncatedTcp)?),
                ack: u32::from_be_bytes(bytes[8..12].try_into().map_err(|_| Skip::TruncatedTcp)?),
                payload: tcp.payload(),
            }
        }
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(bytes).map_err(|_| Skip::TruncatedUdp)?;
            Transport::Udp {
                src_port: udp.src_port(),
                dst_port: udp.dst_port(),
                payload: udp.payload(),
            }
        }
        IpProtocol::Icmp if !v6 => decode_icmpv4(bytes)?,
        IpProtocol::Icmpv6 if v6 => decode_icmpv6(bytes)?,
        other => Transport::Other {
            protocol: u8::from(other),
        },
    })
}

fn decode_icmpv4(bytes: &[u8]) -> Result<Transport<'_>, Skip> {
    let icmp = Icmpv4Packet::new_checked(bytes).map_err(|_| Skip::TruncatedIcmp)?;
    let icmp_type = u8::from(icmp.msg_type());
    let ident = bytes
        .get(4..6)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let kind = match icmp.msg_type() {
        Icmpv4Message::EchoRequest | Icmpv4Message::Timestamp => IcmpKind::Request,
        Icmpv4Message::EchoReply | Icmpv4Message::TimestampReply => IcmpKind::Reply,
        Icmpv4Message::DstUnreachable => {
            quote_ipv4(icmp.data()).map_or(IcmpKind::Other, IcmpKind::Unreachable)
        }
        _ => IcmpKind::Other,
    };
    Ok(Transport::Icmp {
        kind,
        icmp_type,
        code: icmp.msg_code(),
        ident,
    })
}

fn decode_icmpv6(bytes: &[u8]) -> Result<Transport<'_>, Skip> {
    let icmp = Icmpv6Packet::new_checked(bytes).map_err(|_| Skip::TruncatedIcmp)?;
    let icmp_type = u8::from(icmp.msg_type());
    let ident = bytes
        .get(4..6)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let kind = match icmp.msg_type() {
        Icmpv6Message::EchoRequest => IcmpKind::Request,
        Icmpv6Message::EchoReply => IcmpKind::Reply,
        Icmpv6Message::DstUnreachable => bytes
            .get(8..)
            .and_then(quote_ipv6)
            .map_or(IcmpKind::Other, IcmpKind::Unreachable),
        _ => IcmpKind::Other,
    };
    Ok(Transport::Icmp {
        kind,
        icmp_type,
        code: icmp.msg_code(),
        ident,
    })
}

/// The addresses and ports of the packet an ICMPv4 error quotes (its IP header and at least the
/// first 8 bytes of its payload). The quote is often cut short, so no total-length check.
fn quote_ipv4(quote: &[u8]) -> Option<Quoted> {
    let header = quote.get(..20)?;
    let ihl = usize::from(header[0] & 0x0f) * 4;
    let ports = quote.get(ihl..ihl + 4)?;
    Some(Quoted {
        src: IpAddr::from(<[u8; 4]>::try_from(&header[12..16]).ok()?),
        dst: IpAddr::from(<[u8; 4]>::try_from(&header[16..20]).ok()?),
        protocol: header[9],
        src_port: u16::from_be_bytes([ports[0], ports[1]]),
        dst_port: u16::from_be_bytes([ports[2], ports[3]]),
    })
}

fn quote_ipv6(quote: &[u8]) -> Option<Quoted> {
    let header = quote.get(..40)?;
    let ports = quote.get(40..44)?;
    Some(Quoted {
        src: IpAddr::from(<[u8; 16]>::try_from(&header[8..24]).ok()?),
        dst: IpAddr::from(<[u8; 16]>::try_from(&header[24..40]).ok()?),
        protocol: header[6],
        src_port: u16::from_be_bytes([ports[0], ports[1]]),
        dst_port: u16::from_be_bytes([ports[2], ports[3]]),
    })
}

#[cfg(test)]
pub(crate) mod tests;
