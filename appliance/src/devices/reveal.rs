//! What one event reveals about devices: which addresses are present behind which MAC, and
//! which host names the protocols tie to an address.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::dns::{reverse_address, PTR};
use vigil_plugin_sdk::{Event, EventKind, FlowState};

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
}

/// Addresses that showed themselves with this event, with the MAC their frames came from: the
/// originator of a new flow, and a responder that answered.
pub fn present(event: &Event<'_>) -> impl Iterator<Item = (IpAddr, [u8; 6])> {
    let (originator, responder) = match event.kind {
        EventKind::FlowStart => (true, false),
        EventKind::FlowEnd { resp_packets, .. } => (false, resp_packets > 0),
        _ => (false, false),
    };
    let src = originator.then_some((event.src.ip, event.src.mac));
    let dst = responder.then_some((event.dst.ip, event.dst.mac));
    src.into_iter().chain(dst)
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
        } => dns_names(query, *qtype, answers),
        _ => Vec::new(),
    }
}

fn dns_names<'a>(
    query: &'a str,
    qtype: u16,
    answers: &[&'a str],
) -> Vec<(IpAddr, &'a str, NameSource)> {
    match qtype {
        PTR => reverse_address(query)
            .into_iter()
            .flat_map(|address| {
                answers
                    .iter()
                    .filter(|name| is_host_name(name))
                    .map(move |name| (address, trim_root(name), NameSource::Dns))
            })
            .collect(),
        A | AAAA if is_host_name(query) => answers
            .iter()
            .filter_map(|answer| answer.parse::<IpAddr>().ok())
            .map(|address| (address, trim_root(query), NameSource::Dns))
            .collect(),
        _ => Vec::new(),
    }
}

fn trim_root(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

/// A name worth keeping: printable, not empty, not absurdly long.
fn is_host_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic())
}
