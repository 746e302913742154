//! The enforcement table: what the responses in force drop, asked once per packet.
//!
//! Each sensor reads a snapshot ([`super::Actions::snapshot`]), so the per-packet lookup takes no
//! lock: one hash lookup on the sender's address, then a few comparisons (a device rarely has
//! more than a handful of blocked ports). Expiry is by time: a rule past its end no longer drops anything and is swept
//! out when the table is rebuilt.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use vigil_plugin_sdk::Response;

/// Unix seconds.
pub type Secs = u64;

#[derive(Debug, Default, Clone)]
struct DeviceRules {
    egress_until: Option<Secs>,
    /// (port, until).
    ports: Vec<(u16, Secs)>,
    pattern: Option<Pattern>,
}

/// Pattern of life: only these services (peer, port) pass until `until`; ICMP passes to the
/// peers alone.
#[derive(Debug, Clone)]
struct Pattern {
    services: HashSet<(IpAddr, u16)>,
    peers: HashSet<IpAddr>,
    until: Secs,
}

#[derive(Debug, Default, Clone)]
pub struct EnforcementTable {
    devices: HashMap<IpAddr, DeviceRules>,
}

impl EnforcementTable {
    pub fn new() -> EnforcementTable {
        EnforcementTable::default()
    }

    /// Lets only `services` (peer, port) through from `device` until `until`.
    pub fn enforce_pattern(&mut self, device: IpAddr, services: &[(IpAddr, u16)], until: Secs) {
        let rules = self.devices.entry(device).or_default();
        rules.pattern = Some(Pattern {
            services: services.iter().copied().collect(),
            peers: services.iter().map(|(peer, _)| *peer).collect(),
            until,
        });
    }

    /// Puts a response in force for `device` until `until`. Returns false for a response this
    /// table cannot enforce (a pattern of life needs [`EnforcementTable::enforce_pattern`]).
    pub fn enforce(&mut self, device: IpAddr, response: Response, until: Secs) -> bool {
        let rules = self.devices.entry(device).or_default();
        match response {
            Response::BlockEgress => {
                rules.egress_until = Some(rules.egress_until.unwrap_or(0).max(until));
                true
            }
            Response::BlockPort(port) => {
                match rules.ports.iter_mut().find(|(p, _)| *p == port) {
                    Some((_, end)) => *end = (*end).max(until),
                    None => rules.ports.push((port, until)),
                }
                true
            }
            Response::EnforcePatternOfLife => false,
        }
    }

    pub fn clear(&mut self) {
        self.devices.clear();
    }

    /// Whether a packet from `src` to `dst` (`dst_port` for TCP and UDP) is dropped at `now`.
    pub fn drops(&self, src: IpAddr, dst: IpAddr, dst_port: Option<u16>, now: Secs) -> bool {
        let Some(rules) = self.devices.get(&src) else {
            return false;
        };
        if rules.egress_until.is_some_and(|until| now < until) {
            return true;
        }
        if let Some(pattern) = &rules.pattern {
            let known = match dst_port {
                Some(port) => pattern.services.contains(&(dst, port)),
                None => pattern.peers.contains(&dst),
            };
            if now < pattern.until && !known {
                return true;
            }
        }
        match dst_port {
            Some(port) => rules
                .ports
                .iter()
                .any(|&(blocked, until)| blocked == port && now < until),
            None => false,
        }
    }

    /// Devices with a rule (in force or expired but not yet swept).
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_blocked_port_drops_only_that_port_of_that_device_until_expiry() {
        let mut table = EnforcementTable::new();
        assert!(table.enforce(ip(50), Response::BlockPort(445), 100));
        assert!(table.drops(ip(50), ip(1), Some(445), 99));
        assert!(!table.drops(ip(50), ip(1), Some(443), 99));
        assert!(!table.drops(ip(51), ip(1), Some(445), 99), "another device");
        assert!(!table.drops(ip(50), ip(1), Some(445), 100), "expired");
    }

    #[test]
    fn blocked_egress_drops_everything_the_device_sends() {
        let mut table = EnforcementTable::new();
        table.enforce(ip(50), Response::BlockEgress, 100);
        assert!(table.drops(ip(50), ip(1), None, 10));
        assert!(table.drops(ip(50), ip(1), Some(53), 10));
        // A shorter second request does not cut the first short.
        table.enforce(ip(50), Response::BlockEgress, 20);
        assert!(table.drops(ip(50), ip(1), None, 50));
    }

    #[test]
    fn a_pattern_of_life_lets_only_the_learned_services_through() {
        let mut table = EnforcementTable::new();
        table.enforce_pattern(ip(50), &[(ip(10), 445), (ip(10), 389)], 100);
        assert!(!table.drops(ip(50), ip(10), Some(445), 10));
        assert!(!table.drops(ip(50), ip(10), Some(389), 10));
        assert!(table.drops(ip(50), ip(10), Some(3389), 10), "a new port");
        assert!(table.drops(ip(50), ip(20), Some(445), 10), "a new peer");
        assert!(
            !table.drops(ip(50), ip(10), None, 10),
            "ICMP to a known peer"
        );
        assert!(table.drops(ip(50), ip(20), None, 10));
        assert!(!table.drops(ip(50), ip(20), Some(445), 100), "expired");
    }
}
