//! What one event reveals about devices: which addresses are present behind which MAC, and
//! which host names the protocols tie to an address.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::dns::{reverse_address, PTR};
use vigil_plugin_sdk::{Event, EventKind, FlowState, Timestamp, Transport};

use crate::proto::local_names::LocalNames;
use crate::proto::nbns;

/// DNS query types A and AAAA.
const A: u16 = 1;
const AAAA: u16 = 28;

/// Which protocol named a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NameSource {
    /// The workstation name of an NTLM login from the device.
    Ntlm,
    /// A machine account (`NAME$`) asking Kerberos for tickets from the device.
    Kerberos,
    /// The host name the device announced to DHCP.
    Dhcp,
    /// A DNS answer tying the name to the device's address (A, AAAA or PTR).
    Dns,
    /// An mDNS answer or announcement (`name.local` A/AAAA), as macOS and Linux hosts send.
    Mdns,
    /// An LLMNR answer (A/AAAA), as Windows hosts send.
    Llmnr,
    /// A NetBIOS name registration or answer for a workstation or server name (`NAME<00>`,
    /// `NAME<20>`), as Windows and Samba hosts send.
    Nbns,
}

impl NameSource {
    /// Which protocol a `Dns` event came over: the analyzer gives the local name protocols'
    /// datagrams to the same sessions by these same ports.
    fn of_dns(event: &Event<'_>) -> NameSource {
        if event.proto != Transport::Udp {
            return NameSource::Dns;
        }
        match LocalNames::of_udp_ports(event.src.port, event.dst.port) {
            Some(LocalNames::Mdns) => NameSource::Mdns,
            Some(LocalNames::Llmnr) => NameSource::Llmnr,
            Some(LocalNames::Nbns) => NameSource::Nbns,
            None => NameSource::Dns,
        }
    }
}

/// What one event teaches the device table, taken out of the event: the shard of a capture that
/// produced the event works it out, and the one table learns it in packet order
/// ([`super::DeviceTable::learn`]).
#[derive(Debug, Clone)]
pub struct Learned {
    pub(super) ts: Timestamp,
    pub(super) src: IpAddr,
    pub(super) presences: [Option<Presence>; 2],
    pub(super) service: Option<(IpAddr, u16)>,
    pub(super) names: Vec<(IpAddr, String, NameSource)>,
}

impl Learned {
    /// `answered`: as for [`present`].
    pub fn of(event: &Event<'_>, answered: bool) -> Learned {
        let mut presences = [None; 2];
        for (slot, presence) in presences.iter_mut().zip(present(event, answered)) {
            *slot = Some(presence);
        }
        Learned {
            ts: event.ts,
            src: event.src.ip,
            presences,
            service: service(event),
            names: names(event)
                .into_iter()
                .map(|(address, name, source)| (address, name.to_string(), source))
                .collect(),
        }
    }
}

/// An address an event showed on the wire, with the MAC its frames came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    pub address: IpAddr,
    pub mac: [u8; 6],
    /// The event proves the address is a host: it answered, or completed an exchange. Anyone
    /// can send a lone SYN or datagram from any address, so without proof a sighting only
    /// refreshes a device already known.
    pub proven: bool,
}

/// Addresses that showed themselves with this event. `answered`: an application event reported
/// as the responder's answer came in (both sides took part in the exchange).
///
/// - A new flow's originator (`FlowStart`): present, not proven.
/// - A flow's responder that answered (`FlowEnd` with packets both ways, a RST answering a SYN
///   included): proven.
/// - A flow's originator that completed an exchange (`FlowEnd` established or reset after the
///   handshake, a UDP or ICMP flow answered): proven.
/// - Both ends of an answered application exchange (NTLM, Kerberos, LDAP, SMB, HTTP, DNS...):
///   proven; a request without its answer proves nothing.
pub fn present(event: &Event<'_>, answered: bool) -> impl Iterator<Item = Presence> {
    let (originator, responder) = match event.kind {
        EventKind::FlowStart => (Some(false), None),
        EventKind::FlowEnd {
            orig_packets,
            resp_packets,
            state,
            ..
        } => (
            completed(event.proto, state, orig_packets, resp_packets).then_some(true),
            (resp_packets > 0 && orig_packets > 0).then_some(true),
        ),
        EventKind::Tick | EventKind::Breach { .. } | EventKind::Incident { .. } => (None, None),
        _ if answered => (Some(true), Some(true)),
        _ => (None, None),
    };
    let src = originator.map(|proven| Presence {
        address: event.src.ip,
        mac: event.src.mac,
        proven,
    });
    let dst = responder.map(|proven| Presence {
        address: event.dst.ip,
        mac: event.dst.mac,
        proven,
    });
    src.into_iter().chain(dst)
}

/// Whether a flow's originator took part in a two-way exchange. A TCP originator must also have
/// sent after its SYN (the handshake's ACK, data, or the RST of a SYN scan): a flow table
/// reports a SYN answered by a SYN-ACK that nobody acknowledged as established when it times
/// out, and a SYN from a forged address is answered just the same.
fn completed(proto: Transport, state: FlowState, orig_packets: u64, resp_packets: u64) -> bool {
    let exchanged = matches!(state, FlowState::Established | FlowState::Reset) && resp_packets > 0;
    match proto {
        Transport::Tcp => exchanged && orig_packets >= 2,
        _ => exchanged,
    }
}

/// The service (responder address and port) an answered flow's originator reached.
pub fn service(event: &Event<'_>) -> Option<(IpAddr, u16)> {
    match event.kind {
        EventKind::FlowEnd {
            state: FlowState::Established | FlowState::Reset,
            ..
        } => Some((event.dst.ip, event.dst.port)),
        _ => None,
    }
}

/// Host names the event ties to addresses.
pub fn names<'a>(event: &'a Event<'a>) -> Vec<(IpAddr, &'a str, NameSource)> {
    match &event.kind {
        EventKind::NtlmAuth {
            workstation,
            anonymous: false,
            ..
        } if is_host_name(workstation) => vec![(event.src.ip, *workstation, NameSource::Ntlm)],
        EventKind::Kerberos { client, .. } => client
            .strip_suffix('$')
            .filter(|name| is_host_name(name))
            .map(|name| vec![(event.src.ip, name, NameSource::Kerberos)])
            .unwrap_or_default(),
        EventKind::Dns {
            query,
            qtype,
            rcode: Some(0),
            answers,
        } => dns_names(query, *qtype, answers, NameSource::of_dns(event)),
        _ => Vec::new(),
    }
}

fn dns_names<'a>(
    query: &'a str,
    qtype: u16,
    answers: &[&'a str],
    source: NameSource,
) -> Vec<(IpAddr, &'a str, NameSource)> {
    let addresses = || answers.iter().filter_map(|a| a.parse::<IpAddr>().ok());
    match (source, qtype) {
        (NameSource::Nbns, nbns::rtype::NB) => netbios_host_name(query)
            .map(|name| addresses().map(|a| (a, name, source)).collect())
            .unwrap_or_default(),
        (NameSource::Nbns, _) => Vec::new(),
        (_, PTR) => reverse_address(query)
            .into_iter()
            .flat_map(|address| {
                answers
                    .iter()
                    .filter(|name| is_host_name(name))
                    .map(move |name| (address, trim_root(name), source))
            })
            .collect(),
        (_, A | AAAA) if is_host_name(query) => addresses()
            .map(|address| (address, trim_root(query), source))
            .collect(),
        _ => Vec::new(),
    }
}

/// The host name in a NetBIOS name as events carry it (`WS01<20>` is `WS01`); other suffixes
/// name services or users, not the host.
fn netbios_host_name(query: &str) -> Option<&str> {
    let (name, _) = query.rsplit_once('<')?;
    let parsed = nbns::parse_display(query)?;
    (parsed.host_name().is_some() && is_host_name(name)).then_some(name)
}

fn trim_root(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

/// A name worth keeping: printable, not empty, not absurdly long.
fn is_host_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic())
}
