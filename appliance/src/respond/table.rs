//! The enforcement table: what the responses in force drop, asked once per packet.
//!
//! Owned by the capture loop's thread, so the per-packet lookup takes no lock: one hash lookup
//! on the sender's address, then a few comparisons (a device rarely has more than a handful of
//! blocked ports). Expiry is by time: a rule past its end no longer drops anything and is swept
//! out when the table is rebuilt.

use std::collections::HashMap;
use std::net::IpAddr;

use vigil_plugin_sdk::Response;

/// Unix seconds.
pub type Secs = u64;

#[derive(Debug, Default, Clone)]
struct DeviceRules {
    egress_until: Option<Secs>,
    /// (port, until).
    ports: Vec<(u16, Secs)>,
}

#[derive(Debug, Default)]
pub struct EnforcementTable {
    devices: HashMap<IpAddr, DeviceRules>,
}

impl EnforcementTable {
    pub fn new() -> EnforcementTable {
        EnforcementTable::default()
    }

    /// Puts a response in force for `device` until `until`. Returns false for a response this
    /// table cannot enforce.
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

    /// Whether a packet from `src` to `dst_port` is dropped at `now`.
    pub fn drops(&self, src: IpAddr, dst_port: Option<u16>, now: Secs) -> bool {
        let Some(rules) = self.devices.get(&src) else {
            return false;
        };
        if rules.egress_until.is_some_and(|until| now < until) {
            return true;
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
        assert!(table.drops(ip(50), Some(445), 99));
        assert!(!table.drops(ip(50), Some(443), 99));
        assert!(!table.drops(ip(51), Some(445), 99), "another device");
        assert!(!table.drops(ip(50), Some(445), 100), "expired");
    }

    #[test]
    fn blocked_egress_drops_everything_the_device_sends() {
        let mut table = EnforcementTable::new();
        table.enforce(ip(50), Response::BlockEgress, 100);
        assert!(table.drops(ip(50), None, 10));
        assert!(table.drops(ip(50), Some(53), 10));
        // A shorter second request does not cut the first short.
        table.enforce(ip(50), Response::BlockEgress, 20);
        assert!(table.drops(ip(50), None, 50));
    }
}
