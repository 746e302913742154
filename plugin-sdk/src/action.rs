//! Responses a responder plugin asks the core to enforce. Only a plugin whose manifest kind is
//! [`crate::PluginKind::Responder`] may ask; the host refuses (and counts) anyone else's request.

use alloc::string::String;
use core::net::IpAddr;
use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// What to enforce on a device's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Response {
    /// Drop everything the device sends.
    BlockEgress,
    /// Drop what the device sends to this TCP or UDP port (e.g. 445 SMB, 9401).
    BlockPort(u16),
    /// Let through only the peers and ports learned for the device before the incident.
    EnforcePatternOfLife,
}

/// One action request: what, on which device, why, answering which incident, for how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRequest {
    pub response: Response,
    pub device: IpAddr,
    /// Packet time of the event that decided it.
    pub ts: Timestamp,
    /// Plain language, for the audit log and the operator's confirmation.
    pub reason: String,
    /// The incident it answers, if an analyst wrote one.
    pub incident: Option<u64>,
    /// How long it lasts once in force.
    pub duration_secs: u64,
    /// Human mode: pending until an operator confirms it (`vigil actions confirm ID`).
    pub needs_confirmation: bool,
}
