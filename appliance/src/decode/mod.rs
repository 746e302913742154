//! Link, network and transport decoding with `smoltcp::wire` views: one length check per layer,
//! no copies, no allocation, and a counted reason instead of a panic for every malformed frame.
//!
//! Checksums are never verified: veth and offloading NICs hand us frames whose checksums the
//! hardware would have finished, and an IDS must see what the host sees.
//!
//! Frames start with the link layer their capture names ([`link`]: Ethernet with 802.1Q/802.1ad
//! tags, Linux cooked v1/v2, raw IPv4/IPv6, BSD loopback); the network layer is then read from
//! the captured bytes in place, whatever the link type.
//!
//! [`decode`] takes whole datagrams only. [`decode_frame`] also recognises IPv4 and IPv6
//! fragments and hands them out as [`Fragment`]s, for [`fragments::Reassembler`] to put back
//! together; a reassembled datagram is decoded by [`fragments::Datagram::decode`] exactly as if it
//! had arrived whole.

use std::fmt;
use std::net::IpAddr;

use pcap_parser::Linktype;
use smoltcp::wire::{
    EthernetProtocol, Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet, IpProtocol,
    Ipv4Packet, Ipv6FragmentHeader, Ipv6Packet, TcpPacket, UdpPacket,
};

const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const VLAN_TAG_LEN: usize = 4;
pub mod fragments;
pub mod link;

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

impl Transport<'_> {
    /// Whether the segment or datagram carries application bytes.
    pub fn has_payload(&self) -> bool {
        match self {
            Transport::Tcp { payload, .. } | Transport::Udp { payload, .. } => !payload.is_empty(),
            Transport::Icmp { .. } | Transport::Other { .. } => false,
        }
    }
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
    /// A Linux cooked (SLL, SLL2) or BSD loopback header cut short.
    TruncatedLinkHeader,
    /// A raw-IP link type whose packet is neither IPv4 nor IPv6.
    BadIpVersion,
    /// The capture's link type is not one decoded here ([`link::supported`]).
    UnsupportedLinkType,
    TruncatedVlan,
    TooManyVlanTags,
    BadIpv4,
    BadIpv6,
    BadIpv6Extension,
    /// An IPv4/IPv6 fragment (first or later): [`decode`] alone cannot read its transport
    /// header; the pipeline reassembles it ([`fragments`]).
    Fragment,
    TruncatedTcp,
    TruncatedUdp,
    TruncatedIcmp,
}

impl Skip {
    pub const ALL: [Skip; 14] = [
        Skip::NotIp,
        Skip::TruncatedEthernet,
        Skip::TruncatedLinkHeader,
        Skip::BadIpVersion,
        Skip::UnsupportedLinkType,
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
            Skip::TruncatedLinkHeader => "truncated_link_header",
            Skip::BadIpVersion => "bad_ip_version",
            Skip::UnsupportedLinkType => "unsupported_link_type",
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

    /// Whether the frame was damaged (as opposed to merely not for us, or not readable here).
    pub const fn is_malformed(self) -> bool {
        !matches!(
            self,
            Skip::NotIp | Skip::Fragment | Skip::UnsupportedLinkType
        )
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

impl std::ops::AddAssign<&SkipCounts> for SkipCounts {
    fn add_assign(&mut self, other: &SkipCounts) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine += theirs;
        }
    }
}

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

/// A frame's link layer: what a reassembled datagram keeps of its first fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlans: VlanTags,
}

/// One IPv4 fragment (MF set or a non-zero offset) or IPv6 fragment (a Fragment header that is
/// not an atomic fragment, RFC 6946): the part of a datagram it carries and where that goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment<'a> {
    pub link: Link,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The IPv4 Identification or the IPv6 Fragment Identification.
    pub ident: u32,
    /// IPv4: the datagram's protocol. IPv6: the Fragment header's Next Header (the first header
    /// of the fragmentable part).
    pub protocol: u8,
    pub v6: bool,
    /// Where `data` goes in the reassembled payload, in bytes (a multiple of 8).
    pub offset: usize,
    /// More fragments follow (MF / M flag): false on the last one.
    pub more: bool,
    /// What the reassembled datagram carries before the fragmentable part: the IPv4 header, or
    /// the IPv6 extension headers ahead of the Fragment header. Counts against the size cap.
    pub header_len: usize,
    pub data: &'a [u8],
}

/// A frame decoded as far as one frame can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole datagram, decoded to the transport layer.
    Whole(Decoded<'a>),
    /// A fragment, to reassemble before it can be decoded.
    Fragment(Fragment<'a>),
}

/// Decodes an Ethernet frame (with up to three 802.1Q/802.1ad tags) holding a whole datagram;
/// a fragment is [`Skip::Fragment`] (see [`decode_frame`]).
pub fn decode(frame: &[u8]) -> Result<Decoded<'_>, Skip> {
    decode_link(Linktype::ETHERNET, frame)
}

/// Decodes a frame of `link_type` holding a whole datagram.
pub fn decode_link(link_type: Linktype, frame: &[u8]) -> Result<Decoded<'_>, Skip> {
    match decode_frame(link_type, frame)? {
        Frame::Whole(decoded) => Ok(decoded),
        Frame::Fragment(_) => Err(Skip::Fragment),
    }
}

/// Decodes a frame of `link_type` (see [`link`]), handing out fragments instead of skipping
/// them.
pub fn decode_frame(link_type: Linktype, frame: &[u8]) -> Result<Frame<'_>, Skip> {
    let (mut link, mut ethertype, mut payload) = link::header(link_type, frame)?;
    // Ethernet's and the cooked headers' protocol is an ethertype: tags may follow it.
    while ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        let tag = payload.get(..VLAN_TAG_LEN).ok_or(Skip::TruncatedVlan)?;
        link.vlans
            .push(ethertype, u16::from_be_bytes([tag[0], tag[1]]))?;
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        payload = &payload[VLAN_TAG_LEN..];
    }
    let network = match EthernetProtocol::from(ethertype) {
        EthernetProtocol::Ipv4 => decode_ipv4(payload)?,
        EthernetProtocol::Ipv6 => decode_ipv6(payload)?,
        _ => return Err(Skip::NotIp),
    };
    Ok(match network {
        Network::Whole(src, dst, transport) => Frame::Whole(Decoded {
            src_mac: link.src_mac,
            dst_mac: link.dst_mac,
            vlans: link.vlans,
            src,
            dst,
            transport,
        }),
        Network::Fragment(fragment) => Frame::Fragment(Fragment { link, ..fragment }),
    })
}

/// The network layer of one frame: a whole datagram, or a fragment (its `link` not yet set).
enum Network<'a> {
    Whole(IpAddr, IpAddr, Transport<'a>),
    Fragment(Fragment<'a>),
}

const NO_LINK: Link = Link {
    src_mac: [0; 6],
    dst_mac: [0; 6],
    vlans: VlanTags {
        tags: [(0, 0); MAX_VLAN_TAGS],
        len: 0,
    },
};

fn decode_ipv4(bytes: &[u8]) -> Result<Network<'_>, Skip> {
    let ip = Ipv4Packet::new_checked(bytes).map_err(|_| Skip::BadIpv4)?;
    if ip.version() != 4 {
        return Err(Skip::BadIpv4);
    }
    let (src, dst) = (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()));
    let protocol = u8::from(ip.next_header());
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Ok(Network::Fragment(Fragment {
            link: NO_LINK,
            src,
            dst,
            ident: u32::from(ip.ident()),
            protocol,
            v6: false,
            offset: usize::from(ip.frag_offset()),
            more: ip.more_frags(),
            header_len: usize::from(ip.header_len()),
            data: ip.payload(),
        }));
    }
    let transport = decode_transport(protocol, ip.payload(), false)?;
    Ok(Network::Whole(src, dst, transport))
}

fn decode_ipv6(bytes: &[u8]) -> Result<Network<'_>, Skip> {
    let ip = Ipv6Packet::new_checked(bytes).map_err(|_| Skip::BadIpv6)?;
    if ip.version() != 6 {
        return Err(Skip::BadIpv6);
    }
    let (src, dst) = (IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()));
    match walk_ipv6_extensions(u8::from(ip.next_header()), ip.payload())? {
        Chain::Upper(protocol, payload) => Ok(Network::Whole(
            src,
            dst,
            decode_transport(protocol, payload, true)?,
        )),
        Chain::Fragment(header) => Ok(Network::Fragment(Fragment {
            link: NO_LINK,
            src,
            dst,
            ident: header.ident,
            protocol: header.next,
            v6: true,
            offset: header.offset,
            more: header.more,
            header_len: header.unfragmentable,
            data: header.data,
        })),
    }
}

/// Where an IPv6 packet's extension headers lead.
enum Chain<'a> {
    /// The upper-layer header: its protocol number and bytes.
    Upper(u8, &'a [u8]),
    /// A Fragment header that is not an atomic fragment.
    Fragment(Ipv6Fragment<'a>),
}

struct Ipv6Fragment<'a> {
    next: u8,
    offset: usize,
    more: bool,
    ident: u32,
    /// Bytes of extension headers ahead of the Fragment header.
    unfragmentable: usize,
    data: &'a [u8],
}

/// Walks hop-by-hop, routing, destination-options and fragment headers to the transport header,
/// or to a Fragment header. An atomic fragment (offset 0, no more fragments: RFC 6946) is
/// walked through like any other header.
fn walk_ipv6_extensions(mut next: u8, bytes: &[u8]) -> Result<Chain<'_>, Skip> {
    const HOP_BY_HOP: u8 = 0;
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    const DEST_OPTS: u8 = 60;
    const FRAGMENT_HEADER_LEN: usize = 8;
    let mut at = 0;
    for _ in 0..MAX_IPV6_EXTENSIONS {
        let rest = &bytes[at..];
        match next {
            HOP_BY_HOP | ROUTING | DEST_OPTS => {
                let header = rest.get(..2).ok_or(Skip::BadIpv6Extension)?;
                let len = (usize::from(header[1]) + 1) * 8;
                if rest.len() < len {
                    return Err(Skip::BadIpv6Extension);
                }
                next = header[0];
                at += len;
            }
            FRAGMENT => {
                let header = rest
                    .get(..FRAGMENT_HEADER_LEN)
                    .ok_or(Skip::BadIpv6Extension)?;
                // The smoltcp view starts after Next Header and the reserved byte.
                let view = Ipv6FragmentHeader::new_checked(&header[2..])
                    .map_err(|_| Skip::BadIpv6Extension)?;
                let offset = usize::from(view.frag_offset()) * 8;
                let more = view.more_frags();
                if offset != 0 || more {
                    return Ok(Chain::Fragment(Ipv6Fragment {
                        next: header[0],
                        offset,
                        more,
                        ident: view.ident(),
                        unfragmentable: at,
                        data: &rest[FRAGMENT_HEADER_LEN..],
                    }));
                }
                next = header[0];
                at += FRAGMENT_HEADER_LEN;
            }
            _ => return Ok(Chain::Upper(next, rest)),
        }
    }
    Err(Skip::BadIpv6Extension)
}

/// The fixed header of a transport protocol: what a first fragment must hold for its ports and
/// flags (RFC 1858's tiny fragments) and its type to be read without the next fragment.
fn transport_header_len(protocol: u8, v6: bool) -> usize {
    match IpProtocol::from(protocol) {
        IpProtocol::Tcp => 20,
        IpProtocol::Udp => 8,
        IpProtocol::Icmp if !v6 => 8,
        IpProtocol::Icmpv6 if v6 => 8,
        _ => 0,
    }
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
