//! DHCPv4 (RFC 2131) for device identity: a lease binds a MAC to an address, and a client names
//! itself in option 12 (host name) or option 81 (client FQDN, RFC 4702). The message layout is
//! read with `smoltcp::wire::DhcpPacket`; only what identifies a device is interpreted here.

use std::net::Ipv4Addr;

use smoltcp::wire::{DhcpMessageType, DhcpOpCode, DhcpPacket};

const MAGIC_COOKIE: u32 = 0x6382_5363;
const HARDWARE_ETHERNET: u8 = 1;
const OPT_HOST_NAME: u8 = 12;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_CLIENT_FQDN: u8 = 81;
/// Option 81 flag E: the name is in DNS wire format (labels), not ASCII.
const FQDN_FLAG_WIRE_FORMAT: u8 = 0x04;
/// RFC 1035's bound on a domain name.
const MAX_NAME: usize = 255;

/// What one DHCP message says about the client it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpMessage {
    pub message_type: DhcpMessageType,
    pub client_mac: [u8; 6],
    /// The address the client holds now: granted by an ACK (`yiaddr`), or already configured
    /// (`ciaddr` of a REQUEST renewing a lease, or of an INFORM). `None` while it is only asking.
    pub bound_address: Option<Ipv4Addr>,
    /// The address a client asks for (option 50): a hint, not a binding.
    pub requested_address: Option<Ipv4Addr>,
    /// The host name the client announces (option 12, else the first label of option 81).
    pub host_name: Option<String>,
}

/// Why a datagram on the DHCP ports was not read as DHCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DhcpError {
    #[error("shorter than the fixed DHCP header")]
    Truncated,
    #[error("no DHCP magic cookie (BOOTP only)")]
    NotDhcp,
    #[error("hardware type is not Ethernet")]
    NotEthernet,
    #[error("no message type option")]
    NoMessageType,
}

pub fn parse(payload: &[u8]) -> Result<DhcpMessage, DhcpError> {
    let packet = DhcpPacket::new_checked(payload).map_err(|_| DhcpError::Truncated)?;
    if packet.magic_number() != MAGIC_COOKIE {
        return Err(DhcpError::NotDhcp);
    }
    if payload[1] != HARDWARE_ETHERNET || packet.hardware_len() != 6 {
        return Err(DhcpError::NotEthernet);
    }
    let mut message_type = None;
    let mut requested_address = None;
    let mut host_name = None;
    let mut fqdn = None;
    for option in packet.options() {
        match (option.kind, option.data) {
            (OPT_MESSAGE_TYPE, [kind]) => message_type = Some(DhcpMessageType::from(*kind)),
            (OPT_REQUESTED_IP, &[a, b, c, d]) => {
                requested_address = Some(Ipv4Addr::new(a, b, c, d))
            }
            (OPT_HOST_NAME, name) => host_name = host_name_from(name),
            (OPT_CLIENT_FQDN, data) => fqdn = fqdn_first_label(data),
            _ => {}
        }
    }
    let message_type = message_type.ok_or(DhcpError::NoMessageType)?;
    let bound = match message_type {
        DhcpMessageType::Ack if packet.opcode() == DhcpOpCode::Reply => packet.your_ip(),
        DhcpMessageType::Request | DhcpMessageType::Inform => packet.client_ip(),
        _ => Ipv4Addr::UNSPECIFIED,
    };
    Ok(DhcpMessage {
        message_type,
        client_mac: packet.client_hardware_address().0,
        bound_address: (!bound.is_unspecified()).then_some(bound),
        requested_address,
        host_name: host_name.or(fqdn),
    })
}

/// A printable host name, or nothing: clients pad with NULs, and a hostile one may send
/// anything at all.
fn host_name_from(bytes: &[u8]) -> Option<String> {
    let trimmed = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(&[][..], |end| &bytes[..=end]);
    let name = std::str::from_utf8(trimmed).ok()?;
    let printable =
        !name.is_empty() && name.len() <= MAX_NAME && name.bytes().all(|b| b.is_ascii_graphic());
    printable.then(|| name.to_string())
}

/// Option 81: flags, two obsolete rcode bytes, then the name in ASCII or in DNS labels.
fn fqdn_first_label(data: &[u8]) -> Option<String> {
    let (&flags, rest) = data.split_first()?;
    let name = rest.get(2..)?;
    if flags & FQDN_FLAG_WIRE_FORMAT != 0 {
        let (&len, labels) = name.split_first()?;
        host_name_from(labels.get(..usize::from(len))?)
    } else {
        let first = name.split(|&b| b == b'.').next()?;
        host_name_from(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{DhcpOption, DhcpRepr, EthernetAddress};

    /// A DHCP message as smoltcp's own encoder writes it.
    fn message(
        kind: DhcpMessageType,
        client_ip: Ipv4Addr,
        your_ip: Ipv4Addr,
        extra: &[DhcpOption<'_>],
    ) -> Vec<u8> {
        let repr = DhcpRepr {
            message_type: kind,
            transaction_id: 0x1234_5678,
            secs: 0,
            client_hardware_address: EthernetAddress([2, 0, 0, 0, 0, 0x42]),
            client_ip,
            your_ip,
            server_ip: Ipv4Addr::UNSPECIFIED,
            router: None,
            subnet_mask: None,
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: false,
            requested_ip: None,
            client_identifier: None,
            server_identifier: None,
            parameter_request_list: None,
            dns_servers: None,
            max_size: None,
            lease_duration: None,
            renew_duration: None,
            rebind_duration: None,
            additional_options: extra,
        };
        let mut bytes = vec![0; repr.buffer_len()];
        repr.emit(&mut DhcpPacket::new_unchecked(&mut bytes[..]))
            .expect("emit");
        bytes
    }

    #[test]
    fn an_ack_binds_the_granted_address_to_the_client_mac() {
        let ack = message(
            DhcpMessageType::Ack,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 1, 2, 3),
            &[],
        );
        let parsed = parse(&ack).expect("parse");
        assert_eq!(parsed.message_type, DhcpMessageType::Ack);
        assert_eq!(parsed.client_mac, [2, 0, 0, 0, 0, 0x42]);
        assert_eq!(parsed.bound_address, Some(Ipv4Addr::new(10, 1, 2, 3)));
    }

    #[test]
    fn a_request_names_its_host_and_asks_without_binding() {
        let request = message(
            DhcpMessageType::Request,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[
                DhcpOption {
                    kind: OPT_HOST_NAME,
                    data: b"WS-FINANCE-07\0",
                },
                DhcpOption {
                    kind: OPT_REQUESTED_IP,
                    data: &[10, 1, 2, 3],
                },
            ],
        );
        let parsed = parse(&request).expect("parse");
        assert_eq!(parsed.host_name.as_deref(), Some("WS-FINANCE-07"));
        assert_eq!(parsed.bound_address, None);
        assert_eq!(parsed.requested_address, Some(Ipv4Addr::new(10, 1, 2, 3)));
    }

    #[test]
    fn the_client_fqdn_gives_its_first_label_in_either_encoding() {
        for (flags, name) in [
            (0u8, &b"laptop-bob.corp.example"[..]),
            (
                FQDN_FLAG_WIRE_FORMAT,
                &b"\x0alaptop-bob\x04corp\x07example\x00"[..],
            ),
        ] {
            let mut data = vec![flags, 0, 0];
            data.extend_from_slice(name);
            let discover = message(
                DhcpMessageType::Discover,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                &[DhcpOption {
                    kind: OPT_CLIENT_FQDN,
                    data: &data,
                }],
            );
            let parsed = parse(&discover).expect("parse");
            assert_eq!(parsed.host_name.as_deref(), Some("laptop-bob"));
        }
    }

    #[test]
    fn hostile_messages_are_refused_or_read_without_the_bad_parts() {
        assert_eq!(parse(&[1, 1, 6]), Err(DhcpError::Truncated));
        let mut bootp = message(
            DhcpMessageType::Discover,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[],
        );
        bootp[236] ^= 0xff;
        assert_eq!(parse(&bootp), Err(DhcpError::NotDhcp));
        // A host name of control bytes is dropped; an option running past the end is ignored.
        let mut odd = message(
            DhcpMessageType::Discover,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[DhcpOption {
                kind: OPT_HOST_NAME,
                data: b"\x1b[31mevil",
            }],
        );
        odd.extend_from_slice(&[OPT_HOST_NAME, 200, b'x']);
        let parsed = parse(&odd).expect("parse");
        assert_eq!(parsed.host_name, None);
        for cut in 0..odd.len() {
            let _ = parse(&odd[..cut]);
        }
    }
}
