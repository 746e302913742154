//! The core's interlock on autonomous response: whatever a responder plugin asks, an action comes
//! in force without an operator only when the device's own traffic backs it, the device is not
//! protected, and the appliance is not acting faster than its rate limit. Otherwise the action is
//! recorded as pending, with the reason it waits, for an operator to confirm or clear.
//!
//! This lives in the core, not in the responder, because the responder is replaceable code: a
//! signed policy update may be wrong, the guard still holds.
//!
//! - **Evidence.** Only breaches raised from traffic (hop 0) count; since the flow table blames a
//!   flow on its originator only once the originator has sent (see `crate::flow`), such a
//!   breach is backed by packets the device sent. A breach rule needs one such breach from the
//!   device within [`EVIDENCE_WINDOW_MICROS`]; an incident needs breaches of
//!   [`GuardConfig::incident_min_models`] distinct models, so one kind of forged or misread
//!   traffic cannot take a device off the network.
//! - **Protected devices.** Addresses and networks from the config, and (by default) every device
//!   seen serving DNS, DHCP, Kerberos or LDAP to other devices: blocking a domain controller
//!   takes the whole site down. An attacker who answers such queries protects itself too; that is
//!   the price of never blocking infrastructure autonomously, and its breaches still reach the
//!   operator as pending actions.
//! - **Rate limit.** At most [`GuardConfig::max_autonomous_per_minute`] actions come in force per
//!   minute of packet time; past it they wait, and the hits are counted.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use smoltcp::wire::IpCidr;
use vigil_plugin_sdk::{ActionRequest, Breach, Event, EventKind, FlowState, Timestamp, Transport};

/// How long a breach backs an action: the analyst's incident gap.
pub const EVIDENCE_WINDOW_MICROS: u64 = 2 * 3600 * 1_000_000;
const MINUTE_MICROS: u64 = 60 * 1_000_000;
/// Devices whose evidence is remembered; past it the stalest are forgotten.
const MAX_EVIDENCE_DEVICES: usize = 65_536;
/// Infrastructure servers remembered.
const MAX_SERVERS: usize = 4096;
/// Ports whose service makes a device infrastructure: DNS, DHCP, Kerberos, LDAP (and LDAPS, the
/// global catalogue).
const INFRASTRUCTURE_PORTS: [(Transport, u16); 8] = [
    (Transport::Udp, 53),
    (Transport::Tcp, 53),
    (Transport::Udp, 67),
    (Transport::Udp, 88),
    (Transport::Tcp, 88),
    (Transport::Tcp, 389),
    (Transport::Tcp, 636),
    (Transport::Tcp, 3268),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardConfig {
    /// Addresses and networks (CIDR) never blocked autonomously; their actions wait for an
    /// operator.
    pub protected: Vec<String>,
    /// Protect every device seen serving DNS, DHCP, Kerberos or LDAP.
    pub protect_infrastructure: bool,
    /// Distinct traffic models an incident needs from its device before it is answered
    /// autonomously.
    pub incident_min_models: usize,
    /// Actions that may come in force autonomously per minute of packet time.
    pub max_autonomous_per_minute: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            protected: Vec::new(),
            protect_infrastructure: true,
            incident_min_models: 2,
            max_autonomous_per_minute: 10,
        }
    }
}

/// Why an action that asked to be autonomous waits for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Named in the config (`[respond] protected`).
    Protected(String),
    /// Seen serving this infrastructure port.
    Infrastructure(u16),
    /// Not enough breaches from the device's own traffic: how many distinct models it has, and
    /// how many the action needs.
    Evidence {
        models: usize,
        needed: usize,
    },
    RateLimited {
        per_minute: usize,
    },
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::Protected(net) => write!(f, "protected device ({net} in [respond] protected)"),
            Hold::Infrastructure(port) => {
                write!(f, "protected device (serves port {port} to others)")
            }
            Hold::Evidence { models, needed } => write!(
                f,
                "not enough evidence from the device's own traffic ({models} of {needed} models)"
            ),
            Hold::RateLimited { per_minute } => {
                write!(f, "rate limit ({per_minute} autonomous actions a minute)")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GuardStats {
    pub held_protected: u64,
    pub held_evidence: u64,
    pub rate_limited: u64,
}

pub struct ResponseGuard {
    config: GuardConfig,
    protected: Vec<(IpCidr, String)>,
    /// Per device: the traffic models it breached and when, last.
    evidence: HashMap<IpAddr, BTreeMap<String, Timestamp>>,
    /// Infrastructure servers and the port each was seen serving.
    servers: HashMap<IpAddr, u16>,
    /// Packet times of the autonomous actions of the last minute.
    recent: VecDeque<Timestamp>,
    stats: GuardStats,
}

impl ResponseGuard {
    pub fn new(config: GuardConfig) -> Result<ResponseGuard, String> {
        let protected = config
            .protected
            .iter()
            .map(|net| {
                parse_net(net)
                    .map(|cidr| (cidr, net.clone()))
                    .ok_or_else(|| format!("respond.protected: {net:?} is not an address or CIDR"))
            })
            .collect::<Result<_, _>>()?;
        Ok(ResponseGuard {
            config,
            protected,
            evidence: HashMap::new(),
            servers: HashMap::new(),
            recent: VecDeque::new(),
            stats: GuardStats::default(),
        })
    }

    pub fn stats(&self) -> GuardStats {
        self.stats
    }

    /// Learns infrastructure from an ended flow: an internal responder that answered a service
    /// of [`INFRASTRUCTURE_PORTS`].
    pub fn observe_flow_end(&mut self, end: &Event<'_>) {
        if let Some(server) = ResponseGuard::server_of(end) {
            self.observe_server(server);
        }
    }

    /// The infrastructure service an ended flow shows ([`ResponseGuard::observe_flow_end`]), for
    /// the shard of a capture that saw it to work out and the guard to learn in packet order.
    pub fn server_of(end: &Event<'_>) -> Option<(IpAddr, u16)> {
        let EventKind::FlowEnd {
            resp_packets,
            state: FlowState::Established | FlowState::Reset,
            ..
        } = end.kind
        else {
            return None;
        };
        (resp_packets > 0 && INFRASTRUCTURE_PORTS.contains(&(end.proto, end.dst.port)))
            .then_some((end.dst.ip, end.dst.port))
    }

    /// Learns a server [`ResponseGuard::server_of`] found.
    pub fn observe_server(&mut self, (address, port): (IpAddr, u16)) {
        if self.servers.len() < MAX_SERVERS {
            self.servers.entry(address).or_insert(port);
        }
    }

    /// Records a breach raised after `hop` others; those raised from traffic (hop 0) back
    /// actions against their device.
    pub fn observe_breach(&mut self, breach: &Breach, hop: u8) {
        if hop != 0 {
            return;
        }
        if self.evidence.len() >= MAX_EVIDENCE_DEVICES
            && !self.evidence.contains_key(&breach.device.ip)
        {
            let now = breach.ts;
            self.evidence.retain(|_, models| {
                models
                    .values()
                    .any(|seen| now.since(*seen) < EVIDENCE_WINDOW_MICROS)
            });
            if self.evidence.len() >= MAX_EVIDENCE_DEVICES {
                return;
            }
        }
        let models = self.evidence.entry(breach.device.ip).or_default();
        let seen = models.entry(breach.model.clone()).or_insert(breach.ts);
        *seen = (*seen).max(breach.ts);
    }

    /// Whether `request`, which asks to come in force without an operator, must wait for one.
    pub fn hold(&self, request: &ActionRequest) -> Option<Hold> {
        if let Some((_, net)) = self
            .protected
            .iter()
            .find(|(cidr, _)| cidr.contains_addr(&request.device.into()))
        {
            return Some(Hold::Protected(net.clone()));
        }
        if self.config.protect_infrastructure {
            if let Some(port) = self.servers.get(&request.device) {
                return Some(Hold::Infrastructure(*port));
            }
        }
        let needed = if request.incident.is_some() {
            self.config.incident_min_models.max(1)
        } else {
            1
        };
        let models = self.evidence.get(&request.device).map_or(0, |models| {
            models
                .values()
                .filter(|seen| request.ts.since(**seen) < EVIDENCE_WINDOW_MICROS)
                .count()
        });
        if models < needed {
            return Some(Hold::Evidence { models, needed });
        }
        let in_last_minute = self
            .recent
            .iter()
            .filter(|at| request.ts.since(**at) < MINUTE_MICROS)
            .count();
        if in_last_minute >= self.config.max_autonomous_per_minute {
            return Some(Hold::RateLimited {
                per_minute: self.config.max_autonomous_per_minute,
            });
        }
        None
    }

    /// Counts what became of a new action: held (by `hold`) or in force at `at`.
    pub fn record(&mut self, hold: Option<&Hold>, at: Timestamp) {
        match hold {
            None => {
                self.recent.push_back(at);
                while self
                    .recent
                    .front()
                    .is_some_and(|first| at.since(*first) >= MINUTE_MICROS)
                {
                    self.recent.pop_front();
                }
            }
            Some(Hold::Protected(_) | Hold::Infrastructure(_)) => self.stats.held_protected += 1,
            Some(Hold::Evidence { .. }) => self.stats.held_evidence += 1,
            Some(Hold::RateLimited { .. }) => self.stats.rate_limited += 1,
        }
    }

    /// Devices protected as infrastructure, for the summary.
    pub fn infrastructure_devices(&self) -> usize {
        self.servers.len()
    }
}

/// An address (a host route) or a CIDR network.
fn parse_net(text: &str) -> Option<IpCidr> {
    if let Ok(cidr) = text.parse::<IpCidr>() {
        return Some(cidr);
    }
    let address = text.parse::<IpAddr>().ok()?;
    let prefix = if address.is_ipv4() { 32 } else { 128 };
    Some(IpCidr::new(address.into(), prefix))
}

#[cfg(test)]
mod tests;
