//! The device table: who is on the network, followed across MAC, address and the host names that
//! NTLM, Kerberos, DHCP and DNS reveal.
//!
//! A device is first of all an address (the static address of a VPN user is that user's device
//! as far as the network can tell). A MAC identifies a device too, as long as it is seen with one
//! address per IP family; a MAC seen with a second one belongs to a router or VPN concentrator
//! and from then on says nothing about who is behind it. A DHCP lease is authoritative: the
//! address moves to the device whose MAC took it, so a laptop keeps its history across leases.
//!
//! Only internal addresses become devices (see [`DeviceConfig::home_nets`]); the internet's hosts
//! are peers, not devices. Plugins keep their own pattern of life per address and credential;
//! this table is what the alerts, incidents and the operator see of a device's identity.

mod reveal;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use smoltcp::wire::IpCidr;
use vigil_plugin_sdk::{Event, Timestamp};

use crate::proto::dhcp::DhcpMessage;
pub use reveal::NameSource;

/// Names and addresses kept per device: the most recent win when a device has more.
const MAX_NAMES: usize = 16;
const MAX_ADDRESSES: usize = 16;
const MAX_MACS: usize = 8;
/// Services (peer and port) a device's pattern of life keeps; the least recently used go first.
const MAX_SERVICES: usize = 256;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceConfig {
    /// Networks whose hosts are devices (CIDR). Empty: the internal ranges (RFC 1918, CGNAT,
    /// link-local, IPv6 ULA).
    pub home_nets: Vec<String>,
    /// Devices remembered at most; past it new ones are counted and not added.
    pub max_devices: usize,
    /// A device not seen for this long (packet time) is forgotten when the table is saved.
    pub forget_after_days: u64,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            home_nets: Vec::new(),
            max_devices: 65_536,
            forget_after_days: 90,
        }
    }
}

impl DeviceConfig {
    fn home_nets(&self) -> Result<Vec<IpCidr>, String> {
        self.home_nets
            .iter()
            .map(|net| {
                net.parse::<IpCidr>()
                    .map_err(|()| format!("devices.home_nets: {net:?} is not a CIDR network"))
            })
            .collect()
    }
}

/// When something about a device was first and last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen<T> {
    pub value: T,
    pub first: Timestamp,
    pub last: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostName {
    pub name: String,
    pub source: NameSource,
    pub first: Timestamp,
    pub last: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: u32,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// Addresses it has held, the current ones among them (see [`DeviceTable::device_of`]).
    pub addresses: Vec<Seen<IpAddr>>,
    /// `aa:bb:cc:dd:ee:ff`, including MACs later found to be a router's.
    pub macs: Vec<Seen<String>>,
    pub host_names: Vec<HostName>,
    /// The services it reached (peer, port) over answered connections it opened: what
    /// "enforce its pattern of life" lets through.
    #[serde(default)]
    pub services: Vec<Seen<(IpAddr, u16)>>,
}

impl Device {
    /// Host names, most recently seen first, without repeats.
    pub fn names(&self) -> Vec<&str> {
        let mut by_recency: Vec<&HostName> = self.host_names.iter().collect();
        by_recency.sort_by_key(|n| std::cmp::Reverse(n.last));
        let mut names: Vec<&str> = Vec::new();
        for name in by_recency {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(&name.name)) {
                names.push(&name.name);
            }
        }
        names
    }
}

/// Who a MAC stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MacOwner {
    Device(usize),
    /// Seen with several addresses of one family: a router's, identifying nobody.
    Shared,
}

/// The table as saved in `DATA_DIR/devices.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SavedDevices {
    pub devices: Vec<Device>,
    pub shared_macs: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeviceStats {
    pub devices: usize,
    /// New devices not added because the table was full.
    pub refused: u64,
    pub dhcp_messages: u64,
    /// Datagrams on the DHCP ports that were not DHCP.
    pub dhcp_malformed: u64,
}

pub struct DeviceTable {
    config: DeviceConfig,
    home_nets: Vec<IpCidr>,
    devices: Vec<Device>,
    by_address: HashMap<IpAddr, usize>,
    by_mac: HashMap<[u8; 6], MacOwner>,
    /// Ids stay stable across restarts and forgetting, so alerts keep pointing at one device.
    next_id: u32,
    stats: DeviceStats,
}

impl DeviceTable {
    pub fn new(config: DeviceConfig) -> Result<DeviceTable, String> {
        Ok(DeviceTable {
            home_nets: config.home_nets()?,
            config,
            devices: Vec::new(),
            by_address: HashMap::new(),
            by_mac: HashMap::new(),
            next_id: 1,
            stats: DeviceStats::default(),
        })
    }

    /// A table continuing from a saved one: the identity indexes are rebuilt from the devices,
    /// each address going to the device that held it last.
    pub fn restore(config: DeviceConfig, saved: SavedDevices) -> Result<DeviceTable, String> {
        let mut table = DeviceTable::new(config)?;
        table.devices = saved.devices;
        table.next_id = table.devices.iter().map(|d| d.id).max().unwrap_or(0) + 1;
        let mut holders: Vec<(Timestamp, IpAddr, usize)> = Vec::new();
        for (index, device) in table.devices.iter().enumerate() {
            for address in &device.addresses {
                holders.push((address.last, address.value, index));
            }
            for mac in &device.macs {
                if let Some(bytes) = parse_mac(&mac.value) {
                    table.by_mac.insert(bytes, MacOwner::Device(index));
                }
            }
        }
        holders.sort();
        for (_, address, index) in holders {
            table.by_address.insert(address, index);
        }
        for mac in saved.shared_macs.iter().filter_map(|m| parse_mac(m)) {
            table.by_mac.insert(mac, MacOwner::Shared);
        }
        Ok(table)
    }

    /// What to save; devices not seen for `forget_after_days` before `now` are left out.
    pub fn to_saved(&self, now: Timestamp) -> SavedDevices {
        let horizon = self.config.forget_after_days.saturating_mul(86_400);
        let mut devices: Vec<Device> = self
            .devices
            .iter()
            .filter(|d| now.since(d.last_seen) / 1_000_000 <= horizon)
            .cloned()
            .collect();
        devices.sort_by_key(|d| d.id);
        let mut shared_macs: Vec<String> = self
            .by_mac
            .iter()
            .filter(|(_, owner)| **owner == MacOwner::Shared)
            .map(|(mac, _)| format_mac(*mac))
            .collect();
        shared_macs.sort();
        SavedDevices {
            devices,
            shared_macs,
        }
    }

    pub fn stats(&self) -> DeviceStats {
        DeviceStats {
            devices: self.devices.len(),
            ..self.stats
        }
    }

    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The device holding `address` now.
    pub fn device_of(&self, address: IpAddr) -> Option<&Device> {
        self.by_address.get(&address).map(|&i| &self.devices[i])
    }

    /// The services `address`'s device reached, first seen before `before`: its pattern of life
    /// as it was then.
    pub fn services_before(&self, address: IpAddr, before: Timestamp) -> Vec<(IpAddr, u16)> {
        self.device_of(address)
            .map(|d| {
                d.services
                    .iter()
                    .filter(|s| s.first < before)
                    .map(|s| s.value)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Learns from one event: who sent and answered, and what names the protocols revealed.
    pub fn observe(&mut self, event: &Event<'_>) {
        if let Some(service) = reveal::service(event) {
            if let Some(&index) = self.by_address.get(&event.src.ip) {
                touch(
                    &mut self.devices[index].services,
                    service,
                    event.ts,
                    MAX_SERVICES,
                );
            }
        }
        for (address, mac) in reveal::present(event) {
            self.sighting(event.ts, address, mac);
        }
        for (address, name, source) in reveal::names(event) {
            if let Some(&index) = self.by_address.get(&address) {
                self.name(index, event.ts, name, source);
            }
        }
    }

    /// Learns from a datagram on the DHCP ports.
    pub fn dhcp(&mut self, ts: Timestamp, payload: &[u8]) {
        match crate::proto::dhcp::parse(payload) {
            Ok(message) => {
                self.stats.dhcp_messages += 1;
                self.lease(ts, &message);
            }
            Err(_) => self.stats.dhcp_malformed += 1,
        }
    }

    fn is_home(&self, address: IpAddr) -> bool {
        if self.home_nets.is_empty() {
            vigil_plugin_sdk::scan::is_internal(&address)
        } else {
            let address = address.into();
            self.home_nets.iter().any(|net| net.contains_addr(&address))
        }
    }

    /// `address` sent (or answered) from `mac`.
    fn sighting(&mut self, ts: Timestamp, address: IpAddr, mac: [u8; 6]) {
        if !self.is_home(address) {
            return;
        }
        let mac = identifying(mac);
        let index = match (self.by_address.get(&address).copied(), mac) {
            (Some(index), None) => index,
            (Some(index), Some(mac)) => {
                match self.by_mac.get(&mac).copied() {
                    None => {
                        self.by_mac.insert(mac, MacOwner::Device(index));
                    }
                    // Another device's MAC sending from this address: it fronts both.
                    Some(MacOwner::Device(other)) if other != index => self.share(mac),
                    Some(_) => {}
                }
                index
            }
            (None, mac) => {
                let owner = mac.and_then(|m| self.by_mac.get(&m).copied());
                match (owner, mac) {
                    (Some(MacOwner::Device(index)), Some(mac)) => {
                        if self.devices[index].holds_family_of(address, &self.by_address, index) {
                            // A second address of one family behind one MAC: a router.
                            self.share(mac);
                            let Some(index) = self.add(ts) else { return };
                            index
                        } else {
                            index
                        }
                    }
                    (Some(MacOwner::Shared), _) | (None, None) => {
                        let Some(index) = self.add(ts) else { return };
                        index
                    }
                    (None, Some(mac)) => {
                        let Some(index) = self.add(ts) else { return };
                        self.by_mac.insert(mac, MacOwner::Device(index));
                        index
                    }
                    (Some(MacOwner::Device(_)), None) => return,
                }
            }
        };
        self.by_address.insert(address, index);
        let device = &mut self.devices[index];
        device.last_seen = device.last_seen.max(ts);
        touch(&mut device.addresses, address, ts, MAX_ADDRESSES);
        if let Some(mac) = mac {
            touch(&mut device.macs, format_mac(mac), ts, MAX_MACS);
        }
    }

    /// What a DHCP message says: the client's MAC holds the bound address, and its name.
    fn lease(&mut self, ts: Timestamp, message: &DhcpMessage) {
        let Some(mac) = identifying(message.client_mac) else {
            return;
        };
        let index = match self.by_mac.get(&mac).copied() {
            Some(MacOwner::Device(index)) => index,
            // A lease names the client's own MAC (chaddr), whatever relayed it: it is not
            // shared after all.
            Some(MacOwner::Shared) | None => {
                let held = message
                    .bound_address
                    .and_then(|a| self.by_address.get(&IpAddr::V4(a)).copied());
                let index = match held {
                    Some(index) if self.devices[index].macs.is_empty() => index,
                    _ => match self.add(ts) {
                        Some(index) => index,
                        None => return,
                    },
                };
                self.by_mac.insert(mac, MacOwner::Device(index));
                index
            }
        };
        let device = &mut self.devices[index];
        device.last_seen = device.last_seen.max(ts);
        touch(&mut device.macs, format_mac(mac), ts, MAX_MACS);
        if let Some(address) = message.bound_address {
            let address = IpAddr::V4(address);
            if self.is_home(address) {
                touch(
                    &mut self.devices[index].addresses,
                    address,
                    ts,
                    MAX_ADDRESSES,
                );
                self.by_address.insert(address, index);
            }
        }
        if let Some(name) = &message.host_name {
            self.name(index, ts, name, NameSource::Dhcp);
        }
    }

    fn name(&mut self, index: usize, ts: Timestamp, name: &str, source: NameSource) {
        let device = &mut self.devices[index];
        device.last_seen = device.last_seen.max(ts);
        let names = &mut device.host_names;
        match names
            .iter_mut()
            .find(|n| n.source == source && n.name.eq_ignore_ascii_case(name))
        {
            Some(known) => known.last = known.last.max(ts),
            None => {
                if names.len() == MAX_NAMES {
                    if let Some(oldest) = (0..names.len()).min_by_key(|&i| names[i].last) {
                        names.remove(oldest);
                    }
                }
                names.push(HostName {
                    name: name.to_string(),
                    source,
                    first: ts,
                    last: ts,
                });
            }
        }
    }

    fn share(&mut self, mac: [u8; 6]) {
        self.by_mac.insert(mac, MacOwner::Shared);
    }

    fn add(&mut self, ts: Timestamp) -> Option<usize> {
        if self.devices.len() >= self.config.max_devices {
            self.stats.refused += 1;
            return None;
        }
        let index = self.devices.len();
        let id = self.next_id;
        self.next_id += 1;
        self.devices.push(Device {
            id,
            first_seen: ts,
            last_seen: ts,
            addresses: Vec::new(),
            macs: Vec::new(),
            host_names: Vec::new(),
            services: Vec::new(),
        });
        Some(index)
    }
}

impl Device {
    /// Whether the device (at `index`) holds an address of `address`'s family now.
    fn holds_family_of(
        &self,
        address: IpAddr,
        by_address: &HashMap<IpAddr, usize>,
        index: usize,
    ) -> bool {
        self.addresses.iter().any(|held| {
            held.value.is_ipv4() == address.is_ipv4() && by_address.get(&held.value) == Some(&index)
        })
    }
}

/// A MAC that can name a host: not all-zero (no Ethernet header), broadcast or multicast.
fn identifying(mac: [u8; 6]) -> Option<[u8; 6]> {
    let multicast = mac[0] & 1 == 1;
    (mac != [0; 6] && !multicast).then_some(mac)
}

fn touch<T: PartialEq>(seen: &mut Vec<Seen<T>>, value: T, ts: Timestamp, max: usize) {
    if let Some(known) = seen.iter_mut().find(|s| s.value == value) {
        known.last = known.last.max(ts);
        return;
    }
    if seen.len() == max {
        if let Some(oldest) = (0..seen.len()).min_by_key(|&i| seen[i].last) {
            seen.remove(oldest);
        }
    }
    seen.push(Seen {
        value,
        first: ts,
        last: ts,
    });
}

pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}
