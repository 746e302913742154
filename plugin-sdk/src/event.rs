//! Events: what the core tells plugins about the traffic.
//!
//! Every event carries packet time, the flow id and both endpoints. Strings borrow from the batch
//! buffer (`#[serde(borrow)]`) so a guest decodes a batch without copying.

use core::net::IpAddr;
use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// One side of a flow. `src` of an event is the flow's originator (the side that sent the first
/// SYN, the first datagram or the echo request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    pub mac: [u8; 6],
}

/// Transport protocol of a flow. For ICMP the ports are the type and code, as in Zeek.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Transport {
    Tcp,
    Udp,
    Icmp,
    Other(u8),
}

impl Transport {
    /// The lower-case name used in EVE records (`"TCP"` etc. in Suricata is upper case).
    pub const fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Udp => "UDP",
            Transport::Icmp => "ICMP",
            Transport::Other(_) => "IP",
        }
    }
}

/// How a flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FlowState {
    /// The responder refused: RST answering a SYN, or ICMP unreachable answering a datagram.
    Rejected,
    /// Established, then torn down by a RST.
    Reset,
    /// Both sides spoke (TCP handshake completed; UDP or ICMP answered).
    Established,
    /// Only the originator spoke (SYN or datagram never answered).
    HalfOpen,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    /// A new flow: the first packet of a connection attempt, datagram exchange or echo.
    FlowStart,
    /// A flow closed, was refused, timed out or was evicted.
    FlowEnd {
        orig_bytes: u64,
        resp_bytes: u64,
        orig_packets: u64,
        resp_packets: u64,
        duration_us: u64,
        state: FlowState,
    },
    /// Packet-time heartbeat (once per second of capture time) so plugins can close windows
    /// when traffic goes quiet. Endpoints are unspecified.
    Tick,
}

/// Classes a plugin subscribes to; bit positions in [`crate::Subscriptions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum EventClass {
    Flow = 0,
    Tick = 1,
}

impl EventKind {
    pub const fn class(&self) -> EventClass {
        match self {
            EventKind::FlowStart | EventKind::FlowEnd { .. } => EventClass::Flow,
            EventKind::Tick => EventClass::Tick,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub ts: Timestamp,
    pub flow: u64,
    pub proto: Transport,
    pub src: Endpoint,
    pub dst: Endpoint,
    pub kind: EventKind,
}

impl Event {
    pub const fn class(&self) -> EventClass {
        self.kind.class()
    }
}
