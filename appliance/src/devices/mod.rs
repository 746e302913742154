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
//!
//! A device is admitted on evidence that it exists: it answered, completed an exchange, took
//! part in an answered application exchange (an NTLM login, a Kerberos or LDAP request, an HTTP
//! request...) or took a DHCP lease (see [`reveal::present`]). A lone SYN or datagram can carry
//! any source address, so it only refreshes a device already known: a flood from random
//! addresses adds nothing. When the table is full the least recently seen devices make room.

mod peers;
mod reveal;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use smoltcp::wire::IpCidr;
use vigil_plugin_sdk::profile::Learning;
use vigil_plugin_sdk::{Duration, Event, Timestamp};

use crate::proto::dhcp::DhcpMessage;
pub use peers::PeerGroup;
pub use reveal::{Learned, NameSource};

/// Names and addresses kept per device: the most recent win when a device has more.
const MAX_NAMES: usize = 16;
const MAX_ADDRESSES: usize = 16;
const MAX_MACS: usize = 8;
/// Services (peer and port) a device's pattern of life keeps; the least recently used go first.
const MAX_SERVICES: usize = 256;
/// Models whose learning state a device keeps (each plugin's model names, in all).
const MAX_MODELS: usize = 32;
/// Service ports a device was seen to offer (answered on); the least recently used go first.
const MAX_OFFERS: usize = 64;
/// A full table forgets this fraction of its devices (the least recently seen) at once, so
/// making room costs one pass per `max_devices / EVICT_FRACTION` new devices, not one per device.
const EVICT_FRACTION: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceConfig {
    /// Networks whose hosts are devices (CIDR). Empty: the internal ranges (RFC 1918, CGNAT,
    /// link-local, IPv6 ULA).
    pub home_nets: Vec<String>,
    /// Devices remembered at most (at least 1); past it the least recently seen are forgotten
    /// (1/64 of the table at a time) to make room for new ones, and counted.
    pub max_devices: usize,
    /// A device not seen for this long (packet time) is forgotten when the table is saved.
    pub forget_after_days: u64,
    /// How long after it is first seen a device's pattern of life is still being learned, as
    /// the device table shows it: the scan models' default (each model's own period, in its
    /// config, is what its breaches report).
    pub learning_days: u64,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            home_nets: Vec::new(),
            max_devices: 65_536,
            forget_after_days: 90,
            learning_days: 4,
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
    /// The service ports it answered connections on.
    #[serde(default)]
    pub offers: Vec<Seen<u16>>,
    /// Where its pattern of life stands; filled in when the table is saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning: Option<Learning>,
    /// Where each learning model's pattern of it stood, as its latest breach said.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelPattern>,
}

/// A model's learning state for one device, from the `pattern.*` evidence of its latest breach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPattern {
    pub model: String,
    /// `learning` or `learned`.
    pub state: String,
    pub since: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// When the breach that said so was raised.
    pub reported: Timestamp,
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
    /// Devices doing the same job (see [`peers`]); derived, so not read back.
    #[serde(default, skip_deserializing)]
    pub peer_groups: Vec<PeerGroup>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeviceStats {
    pub devices: usize,
    /// Devices forgotten to make room for new ones (the table was full): the least recently
    /// seen went first.
    pub evicted: u64,
    /// Sightings of unknown internal addresses with no evidence they exist (a lone SYN or
    /// datagram): no device was added for them.
    pub unproven: u64,
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
        if config.max_devices == 0 {
            return Err("devices.max_devices: must be at least 1".to_string());
        }
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
        // A table saved under a larger limit keeps its most recently seen devices.
        let excess = table.devices.len().saturating_sub(table.config.max_devices);
        if excess > 0 {
            table.evict(excess);
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
            .map(|d| Device {
                learning: Some(Learning::from(
                    d.first_seen,
                    Duration::from_secs(self.config.learning_days.saturating_mul(86_400)),
                    now,
                )),
                ..d.clone()
            })
            .collect();
        devices.sort_by_key(|d| d.id);
        // A router's MAC is worth keeping while a saved device was seen behind it; so the file
        // holds at most MAX_MACS of them per device.
        let listed: HashSet<&str> = devices
            .iter()
            .flat_map(|d| d.macs.iter().map(|m| m.value.as_str()))
            .collect();
        let mut shared_macs: Vec<String> = self
            .by_mac
            .iter()
            .filter(|(_, owner)| **owner == MacOwner::Shared)
            .map(|(mac, _)| format_mac(*mac))
            .filter(|mac| listed.contains(mac.as_str()))
            .collect();
        shared_macs.sort();
        SavedDevices {
            peer_groups: peers::peer_groups(&devices),
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

    /// Learns from one flow event, or from an application event reported before (or without)
    /// its answer: who is present, and what names the protocols revealed. See [`reveal::present`]
    /// for what admits a new device.
    pub fn observe(&mut self, event: &Event<'_>) {
        self.learn(&Learned::of(event, false));
    }

    /// Learns from an application event reported as its answer came in (an NTLM login with the
    /// server's verdict, a Kerberos reply, an HTTP response...): the exchange proves both ends.
    pub fn observe_answer(&mut self, event: &Event<'_>) {
        self.learn(&Learned::of(event, true));
    }

    /// Learns what one event revealed ([`Learned::of`]).
    pub fn learn(&mut self, learned: &Learned) {
        for presence in learned.presences.iter().flatten() {
            self.sighting(learned.ts, *presence);
        }
        // After the sightings: the flow that proves a device exists is its first service.
        if let Some(service) = learned.service {
            if let Some(&index) = self.by_address.get(&learned.src) {
                touch(
                    &mut self.devices[index].services,
                    &service,
                    learned.ts,
                    MAX_SERVICES,
                );
            }
            if let Some(&index) = self.by_address.get(&service.0) {
                touch(
                    &mut self.devices[index].offers,
                    &service.1,
                    learned.ts,
                    MAX_OFFERS,
                );
            }
        }
        for (address, name, source) in &learned.names {
            if let Some(&index) = self.by_address.get(address) {
                self.name(index, learned.ts, name, *source);
            }
        }
    }

    /// Notes where `breach`'s model stands in learning its device's pattern, when it says.
    pub fn breached(&mut self, breach: &vigil_plugin_sdk::Breach) {
        use vigil_plugin_sdk::scan::pattern;
        let Some(&index) = self.by_address.get(&breach.device.ip) else {
            return;
        };
        let said = |name: &str| {
            breach
                .evidence
                .iter()
                .find(|e| e.name == name)
                .map(|e| e.value.clone())
        };
        let Some(state) = said(pattern::STATE) else {
            return;
        };
        let reported = ModelPattern {
            model: breach.model.clone(),
            state,
            since: said(pattern::SINCE).unwrap_or_default(),
            until: said(pattern::UNTIL),
            reported: breach.ts,
        };
        let models = &mut self.devices[index].models;
        if let Some(known) = models.iter_mut().find(|m| m.model == breach.model) {
            *known = reported;
        } else if models.len() < MAX_MODELS {
            models.push(reported);
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

    /// `address` sent (or answered) from `mac`; a new device only when the sighting is proven.
    fn sighting(&mut self, ts: Timestamp, presence: reveal::Presence) {
        let reveal::Presence {
            address,
            mac,
            proven,
        } = presence;
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
                    // Another device's MAC sending from this address: it fronts both. Only on
                    // evidence: a forged SYN could otherwise unmake any device's MAC.
                    Some(MacOwner::Device(other)) if other != index => {
                        if !proven {
                            self.refresh(index, ts, address, None);
                            return;
                        }
                        self.share(mac);
                    }
                    Some(_) => {}
                }
                index
            }
            (None, _) if !proven => {
                self.stats.unproven += 1;
                return;
            }
            (None, mac) => {
                let owner = mac.and_then(|m| self.by_mac.get(&m).copied());
                match (owner, mac) {
                    (Some(MacOwner::Device(index)), Some(mac)) => {
                        if self.devices[index].holds_family_of(address, &self.by_address, index) {
                            // A second address of one family behind one MAC: a router.
                            self.share(mac);
                            self.add(ts)
                        } else {
                            index
                        }
                    }
                    (Some(MacOwner::Shared), _) | (None, None) => self.add(ts),
                    (None, Some(mac)) => {
                        let index = self.add(ts);
                        self.by_mac.insert(mac, MacOwner::Device(index));
                        index
                    }
                    (Some(MacOwner::Device(_)), None) => return,
                }
            }
        };
        self.by_address.insert(address, index);
        self.refresh(index, ts, address, mac);
    }

    /// The device at `index` was seen at `ts` with `address` (which it holds) and `mac`.
    fn refresh(&mut self, index: usize, ts: Timestamp, address: IpAddr, mac: Option<[u8; 6]>) {
        let device = &mut self.devices[index];
        device.last_seen = device.last_seen.max(ts);
        if let Some(gone) = touch(&mut device.addresses, &address, ts, MAX_ADDRESSES) {
            self.release_address(gone, index);
        }
        if let Some(mac) = mac {
            self.touch_mac(index, mac, ts);
        }
    }

    /// Lists `mac` on the device at `index`; the MAC that drops off its list no longer
    /// identifies it.
    fn touch_mac(&mut self, index: usize, mac: [u8; 6], ts: Timestamp) {
        let gone = touch(
            &mut self.devices[index].macs,
            MacText::of(mac).as_str(),
            ts,
            MAX_MACS,
        );
        if let Some(gone) = gone.as_deref().and_then(parse_mac) {
            if self.by_mac.get(&gone) == Some(&MacOwner::Device(index)) {
                self.by_mac.remove(&gone);
            }
        }
    }

    /// An address that dropped off the device's list no longer leads to it.
    fn release_address(&mut self, address: IpAddr, index: usize) {
        if self.by_address.get(&address) == Some(&index) {
            self.by_address.remove(&address);
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
                    _ => self.add(ts),
                };
                self.by_mac.insert(mac, MacOwner::Device(index));
                index
            }
        };
        let device = &mut self.devices[index];
        device.last_seen = device.last_seen.max(ts);
        self.touch_mac(index, mac, ts);
        if let Some(address) = message.bound_address {
            let address = IpAddr::V4(address);
            if self.is_home(address) {
                self.by_address.insert(address, index);
                self.refresh(index, ts, address, None);
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

    /// A new device, seen first at `ts`; when the table is full the least recently seen make
    /// room first. Indexes into the table taken before this call are stale after it.
    fn add(&mut self, ts: Timestamp) -> usize {
        if self.devices.len() >= self.config.max_devices {
            self.evict((self.devices.len() / EVICT_FRACTION).max(1));
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
            offers: Vec::new(),
            learning: None,
            models: Vec::new(),
        });
        index
    }

    /// Forgets the `count` least recently seen devices (ties: the older entry) in one pass, and
    /// renumbers the indexes of the others. Their addresses and MACs are free: seen again, they
    /// make a new device.
    fn evict(&mut self, count: usize) {
        let len = self.devices.len();
        let count = count.min(len);
        if count == 0 {
            return;
        }
        let mut ages: Vec<(Timestamp, usize)> = self
            .devices
            .iter()
            .enumerate()
            .map(|(index, device)| (device.last_seen, index))
            .collect();
        ages.select_nth_unstable(count - 1);
        let mut kept = vec![true; len];
        for &(_, index) in &ages[..count] {
            kept[index] = false;
        }
        // A router's MAC stays shared while a device still lists it.
        let mut shared_gone: HashSet<String> = ages[..count]
            .iter()
            .flat_map(|&(_, index)| self.devices[index].macs.iter())
            .filter(|m| {
                parse_mac(&m.value)
                    .is_some_and(|mac| self.by_mac.get(&mac) == Some(&MacOwner::Shared))
            })
            .map(|m| m.value.clone())
            .collect();
        if !shared_gone.is_empty() {
            for (index, device) in self.devices.iter().enumerate() {
                if kept[index] {
                    for mac in &device.macs {
                        shared_gone.remove(&mac.value);
                    }
                }
            }
        }
        let mut renumbered = vec![None; len];
        let mut next = 0;
        for (index, keep) in kept.iter().enumerate() {
            if *keep {
                renumbered[index] = Some(next);
                next += 1;
            }
        }
        let mut index = 0;
        self.devices.retain(|_| {
            index += 1;
            kept[index - 1]
        });
        self.by_address.retain(|_, index| match renumbered[*index] {
            Some(new) => {
                *index = new;
                true
            }
            None => false,
        });
        self.by_mac.retain(|mac, owner| match owner {
            MacOwner::Device(index) => match renumbered[*index] {
                Some(new) => {
                    *index = new;
                    true
                }
                None => false,
            },
            MacOwner::Shared => !shared_gone.contains(&format_mac(*mac)),
        });
        self.stats.evicted += count as u64;
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

/// Records `value` seen at `ts`; a full list drops its least recently seen entry, returned.
/// Notes `value` seen at `ts` in `seen` (at most `max` kept: the one seen least recently makes
/// room, and is returned). Takes a borrowed value so that a known one costs no allocation.
fn touch<T, Q>(seen: &mut Vec<Seen<T>>, value: &Q, ts: Timestamp, max: usize) -> Option<T>
where
    T: std::borrow::Borrow<Q>,
    Q: PartialEq + ToOwned<Owned = T> + ?Sized,
{
    if let Some(known) = seen.iter_mut().find(|s| s.value.borrow() == value) {
        known.last = known.last.max(ts);
        return None;
    }
    let mut gone = None;
    if seen.len() >= max {
        if let Some(oldest) = (0..seen.len()).min_by_key(|&i| seen[i].last) {
            gone = Some(seen.remove(oldest).value);
        }
    }
    seen.push(Seen {
        value: value.to_owned(),
        first: ts,
        last: ts,
    });
    gone
}

pub fn format_mac(mac: [u8; 6]) -> String {
    MacText::of(mac).as_str().to_string()
}

/// A MAC address as text (`aa:bb:cc:dd:ee:ff`) on the stack: every packet names its device's
/// MAC, and comparing it with the ones listed must not allocate.
struct MacText([u8; 17]);

impl MacText {
    fn of(mac: [u8; 6]) -> MacText {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [b':'; 17];
        for (i, byte) in mac.iter().enumerate() {
            text[i * 3] = HEX[usize::from(byte >> 4)];
            text[i * 3 + 1] = HEX[usize::from(byte & 0x0f)];
        }
        MacText(text)
    }

    fn as_str(&self) -> &str {
        // Only ASCII hex digits and colons are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}
