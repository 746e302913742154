//! Breaches: what a detector reports when a model fires.

use alloc::string::String;
use alloc::vec::Vec;
use core::net::IpAddr;
use serde::{Deserialize, Serialize};

use crate::{Endpoint, Event, EventKind, Timestamp, Transport};

/// One named piece of evidence, e.g. `("distinct_ports", "100")`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub name: String,
    pub value: String,
}

/// A model breach. `device` is the endpoint whose behaviour breached the model; `dest` is the
/// flow that decided it (the one that crossed the threshold).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breach {
    /// The model name, e.g. `Device / Network Scan`.
    pub model: String,
    /// Packet time of the deciding event.
    pub ts: Timestamp,
    pub device: Endpoint,
    pub dest: Endpoint,
    pub proto: Transport,
    /// 0-100: how sure and how serious.
    pub score: u8,
    /// MITRE ATT&CK technique ids, e.g. `T1046`.
    pub mitre: Vec<String>,
    /// Every destination address involved, sorted, so an analyst sees the whole range.
    pub destinations: Vec<IpAddr>,
    /// Every destination port involved, sorted.
    pub ports: Vec<u16>,
    pub evidence: Vec<Evidence>,
}

impl Breach {
    /// Suricata-style severity: 1 is the most severe.
    pub const fn severity(&self) -> u8 {
        match self.score {
            80..=u8::MAX => 1,
            50..=79 => 2,
            _ => 3,
        }
    }
}

impl Breach {
    /// This breach as an event for the plugins that consume breaches, raised by `plugin` after
    /// `hop` earlier breaches.
    pub fn to_event<'a>(&'a self, plugin: &'a str, hop: u8) -> Event<'a> {
        Event {
            ts: self.ts,
            flow: 0,
            proto: self.proto,
            src: self.device,
            dst: self.dest,
            kind: EventKind::Breach {
                model: &self.model,
                plugin,
                score: self.score,
                mitre: self.mitre.iter().map(String::as_str).collect(),
                destinations: self.destinations.clone(),
                ports: self.ports.clone(),
                evidence: self
                    .evidence
                    .iter()
                    .map(|e| (e.name.as_str(), e.value.as_str()))
                    .collect(),
                hop,
            },
        }
    }
}
