//! Link-layer headers other captures start with: what a capture's link type
//! (<https://www.tcpdump.org/linktypes.html>) puts ahead of the network layer, read in place.
//!
//! Each header is reduced to the link facts a frame keeps ([`Link`]: MACs where the header has
//! them, VLAN tags are read afterwards like Ethernet's) and an ethertype naming what follows, so
//! the network layer is decoded from the captured bytes directly, whatever the link type.

pub use pcap_parser::Linktype;

use super::{Link, Skip, NO_LINK};

/// DLT_RAW as BSD systems number it in their own files: 12 on most, 14 on OpenBSD (libpcap
/// writes LINKTYPE_RAW, 101, but older files and some writers keep the DLT). pcap-parser 0.17
/// does not name them.
pub const DLT_RAW: Linktype = Linktype(12);
pub const DLT_RAW_OPENBSD: Linktype = Linktype(14);

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Linux cooked capture v1: packet type, ARPHRD type, address length, 8 address bytes, protocol.
const SLL_LEN: usize = 16;
/// Linux cooked capture v2: protocol, reserved, interface index, ARPHRD type, packet type,
/// address length, 8 address bytes.
const SLL2_LEN: usize = 20;
/// BSD loopback: the address family, 4 bytes.
const NULL_LEN: usize = 4;

/// Address families BSD loopback headers name. AF_INET is 2 everywhere; AF_INET6 differs by
/// the capturing system (Linux 10, NetBSD/OpenBSD/BSD/OS 24, FreeBSD 28, Darwin 30).
const AF_INET: u32 = 2;
const AF_INET6: [u32; 4] = [10, 24, 28, 30];

/// Whether frames of this link type are decoded here.
pub fn supported(link_type: Linktype) -> bool {
    matches!(
        link_type,
        Linktype::ETHERNET
            | Linktype::LINUX_SLL
            | Linktype::LINUX_SLL2
            | Linktype::RAW
            | DLT_RAW
            | DLT_RAW_OPENBSD
            | Linktype::IPV4
            | Linktype::IPV6
            | Linktype::NULL
            | Linktype::LOOP
    )
}

/// The LINKTYPE_ name tcpdump.org gives a link type, for warnings about the ones not decoded
/// (pcap-parser names only a few); `"unknown"` for the rest.
pub fn name(link_type: Linktype) -> &'static str {
    match link_type.0 {
        0 => "NULL",
        1 => "ETHERNET",
        3 => "AX25",
        6 => "IEEE802_5",
        7 => "ARCNET_BSD",
        8 => "SLIP",
        9 => "PPP",
        10 => "FDDI",
        12 | 14 | 101 => "RAW",
        50 => "PPP_HDLC",
        51 => "PPP_ETHER",
        100 => "ATM_RFC1483",
        104 => "C_HDLC",
        105 => "IEEE802_11",
        107 => "FRELAY",
        108 => "LOOP",
        113 => "LINUX_SLL",
        114 => "LTALK",
        117 => "PFLOG",
        119 => "IEEE802_11_PRISM",
        122 => "IP_OVER_FC",
        127 => "IEEE802_11_RADIOTAP",
        143 => "DOCSIS",
        147..=162 => "USER",
        163 => "IEEE802_11_AVS",
        187 => "BLUETOOTH_HCI_H4",
        189 => "USB_LINUX",
        195 => "IEEE802_15_4_WITHFCS",
        220 => "USB_LINUX_MMAPPED",
        228 => "IPV4",
        229 => "IPV6",
        239 => "NFLOG",
        249 => "USBPCAP",
        252 => "WIRESHARK_UPPER_PDU",
        253 => "NETLINK",
        254 => "BLUETOOTH_LINUX_MONITOR",
        276 => "LINUX_SLL2",
        _ => "unknown",
    }
}

/// Reads the link-layer header of `frame`: its link facts, the ethertype of what follows
/// (VLAN tags included, read by the caller) and the bytes after the header.
pub(super) fn header(link_type: Linktype, frame: &[u8]) -> Result<(Link, u16, &[u8]), Skip> {
    match link_type {
        Linktype::ETHERNET => ethernet(frame),
        Linktype::LINUX_SLL => {
            let header = frame.get(..SLL_LEN).ok_or(Skip::TruncatedLinkHeader)?;
            let link = cooked_link(u16::from_be_bytes([header[4], header[5]]), &header[6..14]);
            Ok((link, be16(&header[14..16]), &frame[SLL_LEN..]))
        }
        Linktype::LINUX_SLL2 => {
            let header = frame.get(..SLL2_LEN).ok_or(Skip::TruncatedLinkHeader)?;
            let link = cooked_link(u16::from(header[11]), &header[12..20]);
            Ok((link, be16(&header[0..2]), &frame[SLL2_LEN..]))
        }
        Linktype::RAW | DLT_RAW | DLT_RAW_OPENBSD => {
            let ethertype = match frame.first().map(|b| b >> 4) {
                Some(4) => ETHERTYPE_IPV4,
                Some(6) => ETHERTYPE_IPV6,
                _ => return Err(Skip::BadIpVersion),
            };
            Ok((NO_LINK, ethertype, frame))
        }
        Linktype::IPV4 => Ok((NO_LINK, ETHERTYPE_IPV4, frame)),
        Linktype::IPV6 => Ok((NO_LINK, ETHERTYPE_IPV6, frame)),
        Linktype::NULL | Linktype::LOOP => {
            let header = frame.get(..NULL_LEN).ok_or(Skip::TruncatedLinkHeader)?;
            let bytes = [header[0], header[1], header[2], header[3]];
            let family = if link_type == Linktype::LOOP {
                u32::from_be_bytes(bytes)
            } else {
                // NULL is in the capturing host's byte order; families are small numbers, so
                // one read in the wrong order shows in the upper half.
                let little = u32::from_le_bytes(bytes);
                if little > 0xffff {
                    little.swap_bytes()
                } else {
                    little
                }
            };
            let ethertype = if family == AF_INET {
                ETHERTYPE_IPV4
            } else if AF_INET6.contains(&family) {
                ETHERTYPE_IPV6
            } else {
                return Err(Skip::NotIp);
            };
            Ok((NO_LINK, ethertype, &frame[NULL_LEN..]))
        }
        _ => Err(Skip::UnsupportedLinkType),
    }
}

fn ethernet(frame: &[u8]) -> Result<(Link, u16, &[u8]), Skip> {
    let eth =
        smoltcp::wire::EthernetFrame::new_checked(frame).map_err(|_| Skip::TruncatedEthernet)?;
    let link = Link {
        src_mac: eth.src_addr().0,
        dst_mac: eth.dst_addr().0,
        ..NO_LINK
    };
    Ok((link, u16::from(eth.ethertype()), eth.payload()))
}

/// A cooked header's link facts: the sender's link-layer address is a MAC when it is 6 bytes
/// long (Ethernet, Wi-Fi, loopback's zeros); the destination is not recorded.
fn cooked_link(address_len: u16, address: &[u8]) -> Link {
    let mut link = NO_LINK;
    if address_len == 6 {
        link.src_mac.copy_from_slice(&address[..6]);
    }
    link
}

fn be16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}
