//! Events: what the core tells plugins about the traffic.
//!
//! Every event carries packet time, the flow id and both endpoints. Strings borrow from the batch
//! buffer (`#[serde(borrow)]`) so a guest decodes a batch without copying.

use core::net::IpAddr;
use serde::{Deserialize, Serialize};

use crate::{LdapFilter, Timestamp};

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

/// How a login went, as the carrying protocol's response said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthResult {
    Success,
    /// Refused, with the protocol's status (SMB NTSTATUS, LDAP result code...).
    Failure(u32),
    /// No response seen (yet).
    Unknown,
}

/// What happened on a flow. Strings borrow from the batch buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventKind<'a> {
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
    /// A DNS query and, once it came, its answer (`rcode` is `None` for an unanswered query).
    Dns {
        query: &'a str,
        qtype: u16,
        rcode: Option<u8>,
        #[serde(borrow)]
        answers: alloc::vec::Vec<&'a str>,
    },
    /// An HTTP request (and its status once the response came).
    Http {
        method: &'a str,
        /// Percent-decoded.
        uri: &'a str,
        uri_raw: &'a str,
        host: Option<&'a str>,
        user_agent: Option<&'a str>,
        status: Option<u16>,
    },
    /// The SMB dialect a server chose (0x0311 is 3.1.1; 0x0001 marks SMB1).
    SmbNegotiate { dialect: u16 },
    /// An SMB tree connect and its result.
    SmbTree { share: &'a str, result: AuthResult },
    /// An NTLM login wherever NTLMSSP travels (SMB, LDAP SASL, HTTP, DCE/RPC), with the result
    /// the carrier reported.
    NtlmAuth {
        carrier: &'a str,
        user: &'a str,
        domain: &'a str,
        workstation: &'a str,
        anonymous: bool,
        result: AuthResult,
    },
    /// An LDAP bind (simple: `mechanism` is `simple`).
    LdapBind {
        name: &'a str,
        mechanism: &'a str,
        result: AuthResult,
    },
    /// An LDAP search, reported when it is done, its filter as RFC 4515 text. What ABI 1.0 and
    /// 1.1 plugins receive; from 1.2 on the host sends [`EventKind::LdapSearchTree`] instead.
    LdapSearch {
        base: &'a str,
        scope: &'a str,
        filter: &'a str,
        entries: u32,
        result: AuthResult,
    },
    /// A Kerberos request and its outcome.
    Kerberos {
        request: &'a str,
        client: &'a str,
        realm: &'a str,
        service: &'a str,
        error: Option<u32>,
    },
    /// An RDP connection request.
    Rdp { cookie: &'a str, protocols: u32 },
    /// Another plugin's breach, for analyst and meta plugins (plugin chaining). `src` is the
    /// breaching device, `dst` the flow that decided it. `hop` counts how many breaches led to
    /// this one (0: raised from traffic); the host stops passing breaches on past a small hop
    /// limit and never hands a plugin its own, so chains cannot loop.
    Breach {
        model: &'a str,
        plugin: &'a str,
        score: u8,
        #[serde(borrow)]
        mitre: alloc::vec::Vec<&'a str>,
        destinations: alloc::vec::Vec<IpAddr>,
        ports: alloc::vec::Vec<u16>,
        #[serde(borrow)]
        evidence: alloc::vec::Vec<(&'a str, &'a str)>,
        hop: u8,
    },
    /// An analyst's incident (each new version of it), for responder plugins. `src` is the
    /// device; `phases` are the ATT&CK tactic names it covers so far.
    Incident {
        id: u64,
        score: u8,
        #[serde(borrow)]
        phases: alloc::vec::Vec<&'a str>,
        breaches: u32,
        /// Breaches beyond their device's pattern (see [`crate::scan::pattern::Standing`]).
        unusual: u32,
        /// Breaches raised while their device or model was learning.
        learning: u32,
    },
    /// An LDAP search, reported when it is done, its filter as a tree (ABI 1.2; last so that
    /// the variants before it keep their postcard tags for older plugins).
    LdapSearchTree {
        base: &'a str,
        scope: &'a str,
        #[serde(borrow)]
        filter: LdapFilter<'a>,
        entries: u32,
        result: AuthResult,
    },
}

/// Classes a plugin subscribes to; bit positions in [`crate::Subscriptions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum EventClass {
    Flow = 0,
    Tick = 1,
    Dns = 2,
    Http = 3,
    Smb = 4,
    Ntlm = 5,
    Ldap = 6,
    Kerberos = 7,
    Rdp = 8,
    Breach = 9,
    Incident = 10,
}

impl EventKind<'_> {
    pub const fn class(&self) -> EventClass {
        match self {
            EventKind::FlowStart | EventKind::FlowEnd { .. } => EventClass::Flow,
            EventKind::Tick => EventClass::Tick,
            EventKind::Dns { .. } => EventClass::Dns,
            EventKind::Http { .. } => EventClass::Http,
            EventKind::SmbNegotiate { .. } | EventKind::SmbTree { .. } => EventClass::Smb,
            EventKind::NtlmAuth { .. } => EventClass::Ntlm,
            EventKind::LdapBind { .. }
            | EventKind::LdapSearch { .. }
            | EventKind::LdapSearchTree { .. } => EventClass::Ldap,
            EventKind::Kerberos { .. } => EventClass::Kerberos,
            EventKind::Rdp { .. } => EventClass::Rdp,
            EventKind::Breach { .. } => EventClass::Breach,
            EventKind::Incident { .. } => EventClass::Incident,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event<'a> {
    pub ts: Timestamp,
    pub flow: u64,
    pub proto: Transport,
    pub src: Endpoint,
    pub dst: Endpoint,
    #[serde(borrow)]
    pub kind: EventKind<'a>,
}

impl Event<'_> {
    pub const fn class(&self) -> EventClass {
        self.kind.class()
    }
}
