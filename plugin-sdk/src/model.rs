//! Describing a model once and building its breaches.

use alloc::string::ToString;
use alloc::vec::Vec;
use core::net::IpAddr;

use crate::{Breach, Event, Evidence};

/// A model's fixed identity: what it is called, how much a breach of it weighs, which ATT&CK
/// techniques it stands for.
#[derive(Debug, Clone, Copy)]
pub struct Model {
    pub name: &'static str,
    pub score: u8,
    pub mitre: &'static [&'static str],
}

impl Model {
    /// A breach decided by `event`: its originator is the device, its responder the destination.
    pub fn breach(&self, event: &Event<'_>) -> Breach {
        Breach {
            model: self.name.to_string(),
            ts: event.ts,
            device: event.src,
            dest: event.dst,
            proto: event.proto,
            score: self.score,
            mitre: self.mitre.iter().map(|m| m.to_string()).collect(),
            destinations: Vec::new(),
            ports: Vec::new(),
            evidence: Vec::new(),
        }
    }
}

impl Breach {
    pub fn with_evidence(mut self, name: &str, value: impl ToString) -> Breach {
        self.evidence.push(Evidence {
            name: name.to_string(),
            value: value.to_string(),
        });
        self
    }

    /// Sets the destination addresses (sorted, without repeats).
    pub fn with_destinations(mut self, destinations: impl IntoIterator<Item = IpAddr>) -> Breach {
        self.destinations = destinations.into_iter().collect();
        self.destinations.sort_unstable();
        self.destinations.dedup();
        self
    }

    /// Sets the destination ports (sorted, without repeats).
    pub fn with_ports(mut self, ports: impl IntoIterator<Item = u16>) -> Breach {
        self.ports = ports.into_iter().collect();
        self.ports.sort_unstable();
        self.ports.dedup();
        self
    }

    /// The value of a named piece of evidence.
    pub fn evidence(&self, name: &str) -> Option<&str> {
        self.evidence
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.value.as_str())
    }
}
