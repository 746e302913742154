//! Peer groups: devices that do the same job, learned from what the table saw them do (the
//! services they use, on about as many hosts, and the services they offer) and named by that
//! job, so an operator sees a new monitoring host sit with the old one. The scan models make
//! the same comparison per window from their own learned targets (a device still learning whose
//! window is a learned peer's usual work is held to that peer's pattern); this is the table's
//! view of it, for the operator.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::Device;

/// Two devices are peers when at least this share of their traits (in all) is common.
const LIKENESS_PERCENT: usize = 75;

/// On how many hosts a device uses a service: the shape of its fan-out, not the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Breadth {
    One,
    Few,
    Many,
}

impl Breadth {
    fn of(hosts: usize) -> Breadth {
        match hosts {
            0 | 1 => Breadth::One,
            2..=9 => Breadth::Few,
            _ => Breadth::Many,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Breadth::One => "one host",
            Breadth::Few => "a few hosts",
            Breadth::Many => "10+ hosts",
        }
    }
}

/// One thing a device does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Trait {
    Uses { port: u16, breadth: Breadth },
    Offers { port: u16 },
}

/// A group of devices doing the same job, as saved in `devices.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerGroup {
    /// What its devices do, e.g. `uses 22 on 10+ hosts, 3389 on 10+ hosts`.
    pub name: String,
    /// Device ids, ascending.
    pub members: Vec<u32>,
}

fn traits(device: &Device) -> BTreeSet<Trait> {
    let mut hosts_by_port: BTreeMap<u16, usize> = BTreeMap::new();
    for service in &device.services {
        *hosts_by_port.entry(service.value.1).or_default() += 1;
    }
    let uses = hosts_by_port.into_iter().map(|(port, hosts)| Trait::Uses {
        port,
        breadth: Breadth::of(hosts),
    });
    let offers = device
        .offers
        .iter()
        .map(|port| Trait::Offers { port: port.value });
    uses.chain(offers).collect()
}

fn alike(a: &BTreeSet<Trait>, b: &BTreeSet<Trait>) -> bool {
    let common = a.intersection(b).count();
    let all = a.union(b).count();
    all > 0 && common * 100 >= all * LIKENESS_PERCENT
}

fn name(traits: &BTreeSet<Trait>) -> String {
    let uses: Vec<String> = traits
        .iter()
        .filter_map(|t| match t {
            Trait::Uses { port, breadth } => Some(format!("{port} on {}", breadth.describe())),
            Trait::Offers { .. } => None,
        })
        .collect();
    let offers: Vec<String> = traits
        .iter()
        .filter_map(|t| match t {
            Trait::Offers { port } => Some(port.to_string()),
            Trait::Uses { .. } => None,
        })
        .collect();
    let mut parts = Vec::new();
    if !uses.is_empty() {
        parts.push(format!("uses {}", uses.join(", ")));
    }
    if !offers.is_empty() {
        parts.push(format!("offers {}", offers.join(", ")));
    }
    parts.join("; ")
}

/// The peer groups among `devices`: each device joins the first group (in device id order)
/// whose founder it is like, and a group needs two devices. Deterministic, so the file does not
/// churn between saves.
pub fn peer_groups(devices: &[Device]) -> Vec<PeerGroup> {
    let mut by_id: Vec<&Device> = devices.iter().collect();
    by_id.sort_by_key(|d| d.id);
    let mut groups: Vec<(BTreeSet<Trait>, Vec<u32>)> = Vec::new();
    for device in by_id {
        let traits = traits(device);
        if traits.is_empty() {
            continue;
        }
        match groups
            .iter_mut()
            .find(|(founder, _)| alike(founder, &traits))
        {
            Some((_, members)) => members.push(device.id),
            None => groups.push((traits, vec![device.id])),
        }
    }
    groups
        .into_iter()
        .filter(|(_, members)| members.len() >= 2)
        .map(|(traits, members)| PeerGroup {
            name: name(&traits),
            members,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::Seen;
    use std::net::IpAddr;
    use vigil_plugin_sdk::Timestamp;

    fn seen<T>(value: T) -> Seen<T> {
        Seen {
            value,
            first: Timestamp::from_secs(1),
            last: Timestamp::from_secs(1),
        }
    }

    fn device(id: u32, uses: &[(u8, u16)], offers: &[u16]) -> Device {
        Device {
            id,
            first_seen: Timestamp::from_secs(1),
            last_seen: Timestamp::from_secs(1),
            addresses: Vec::new(),
            macs: Vec::new(),
            host_names: Vec::new(),
            services: uses
                .iter()
                .map(|&(host, port)| seen((IpAddr::from([10, 0, 1, host]), port)))
                .collect(),
            offers: offers.iter().map(|&port| seen(port)).collect(),
            learning: None,
            models: Vec::new(),
        }
    }

    fn monitor(id: u32, hosts: u8) -> Device {
        let uses: Vec<(u8, u16)> = (1..=hosts).flat_map(|h| [(h, 22), (h, 3389)]).collect();
        device(id, &uses, &[])
    }

    #[test]
    fn devices_doing_the_same_job_form_a_group_named_by_it() {
        let backup: Vec<(u8, u16)> = (1..=40).map(|h| (h, 445)).collect();
        let devices = [
            monitor(1, 40),
            device(2, &backup, &[]),
            device(3, &[(1, 445), (2, 445)], &[]),
            monitor(4, 25),
            device(5, &[(3, 445), (4, 445), (5, 445)], &[]),
            device(6, &[], &[445]),
            device(7, &[], &[445]),
        ];
        let groups = peer_groups(&devices);
        let named: Vec<(&str, &[u32])> = groups
            .iter()
            .map(|g| (g.name.as_str(), g.members.as_slice()))
            .collect();
        assert_eq!(
            named,
            [
                ("uses 22 on 10+ hosts, 3389 on 10+ hosts", &[1, 4][..]),
                ("uses 445 on a few hosts", &[3, 5][..]),
                ("offers 445", &[6, 7][..]),
            ]
        );
    }

    #[test]
    fn a_device_that_also_does_something_else_is_no_longer_a_peer() {
        let mut other = monitor(2, 40);
        for port in [80, 443, 8080] {
            other.services.extend(device(0, &[(1, port)], &[]).services);
        }
        assert!(peer_groups(&[monitor(1, 40), other]).is_empty());
    }
}
