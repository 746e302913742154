//! What a plugin says about itself: name, version, kind, subscriptions and default config.

use alloc::string::String;
use serde::{Deserialize, Serialize};

use crate::{Event, EventClass, EventKind, FlowState, Transport};

/// What a plugin is allowed to do. The host enforces it: only a responder may request actions, and
/// a plugin only ever receives the event classes it subscribed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PluginKind {
    /// Protocol events in, breaches out.
    Detector,
    /// Breaches in, incidents out.
    Analyst,
    /// Breaches and incidents in, action requests out.
    Responder,
}

/// A set of [`EventClass`]es as a bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Subscriptions(pub u64);

impl Subscriptions {
    pub const NONE: Subscriptions = Subscriptions(0);

    pub const fn with(self, class: EventClass) -> Subscriptions {
        Subscriptions(self.0 | (1 << class as u8))
    }

    pub const fn contains(self, class: EventClass) -> bool {
        self.0 & (1 << class as u8) != 0
    }
}

/// Most ports one [`FlowFilter`] names; a model about more services takes them all.
pub const MAX_FILTER_PORTS: usize = 8;

/// Narrows the flow events (`FlowStart`, `FlowEnd`) a plugin subscribed to `Flow` receives: by
/// transport, responder port (`dst.port`) and kind (start, or end in some states). Flows are
/// what floods and scans multiply, so the host applies the filter before an event enters wasm,
/// and a model about a few flows pays nothing for the rest; the harness applies the same
/// [`FlowFilter::admits`]. It is part of the signed manifest. Each part left empty admits
/// everything; other event classes are never filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowFilter {
    /// One bit per transport (see [`FlowFilter::transport`]).
    transports: u8,
    /// Bit 0: `FlowStart`; bit 1 + state: a `FlowEnd` in that [`FlowState`].
    flow_kinds: u8,
    ports: [u16; MAX_FILTER_PORTS],
    port_count: u8,
}

impl Default for FlowFilter {
    fn default() -> Self {
        FlowFilter::ANY
    }
}

impl FlowFilter {
    pub const ANY: FlowFilter = FlowFilter {
        transports: 0,
        flow_kinds: 0,
        ports: [0; MAX_FILTER_PORTS],
        port_count: 0,
    };

    /// Admits traffic of `transport` (and of any other transport added).
    pub const fn transport(mut self, transport: Transport) -> FlowFilter {
        self.transports |= transport_bit(transport);
        self
    }

    /// Admits traffic to responder port `port`. More than [`MAX_FILTER_PORTS`] fails to compile
    /// in a `const`.
    pub const fn port(mut self, port: u16) -> FlowFilter {
        assert!(
            (self.port_count as usize) < MAX_FILTER_PORTS,
            "an event filter names at most MAX_FILTER_PORTS ports"
        );
        self.ports[self.port_count as usize] = port;
        self.port_count += 1;
        self
    }

    /// Admits flow starts.
    pub const fn flow_start(mut self) -> FlowFilter {
        self.flow_kinds |= FLOW_START_BIT;
        self
    }

    /// Admits flow ends in `state`.
    pub const fn flow_end(mut self, state: FlowState) -> FlowFilter {
        self.flow_kinds |= flow_end_bit(state);
        self
    }

    /// Admits flow ends in any state.
    pub const fn flow_ends(self) -> FlowFilter {
        self.flow_end(FlowState::Rejected)
            .flow_end(FlowState::Reset)
            .flow_end(FlowState::Established)
            .flow_end(FlowState::HalfOpen)
    }

    pub fn ports(&self) -> &[u16] {
        self.ports
            .get(..usize::from(self.port_count))
            .unwrap_or(&self.ports)
    }

    pub const fn is_any(&self) -> bool {
        self.transports == 0 && self.flow_kinds == 0 && self.port_count == 0
    }

    /// Whether a plugin with this filter receives `event` (of a class it subscribed to).
    pub fn admits(&self, event: &Event<'_>) -> bool {
        self.admits_key(&FilterKey::of(event))
    }

    /// As [`FlowFilter::admits`], on what the host keeps of an encoded event.
    pub fn admits_key(&self, key: &FilterKey) -> bool {
        if key.flow_kind == 0 {
            return true;
        }
        let transport_ok = self.transports == 0 || self.transports & key.transport != 0;
        let port_ok = self.port_count == 0 || self.ports().contains(&key.port);
        let kind_ok = self.flow_kinds == 0 || self.flow_kinds & key.flow_kind != 0;
        transport_ok && port_ok && kind_ok
    }
}

/// `any`, or e.g. `tcp, ports 389 636, flow end (established)`, as `vigil bundle inspect` shows it.
impl core::fmt::Display for FlowFilter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.is_any() {
            return f.write_str("any");
        }
        let mut parts = 0;
        let mut part = |f: &mut core::fmt::Formatter<'_>, text: core::fmt::Arguments<'_>| {
            let separator = if parts == 0 { "" } else { ", " };
            parts += 1;
            write!(f, "{separator}{text}")
        };
        for (bit, name) in [(1, "tcp"), (2, "udp"), (4, "icmp"), (8, "other transports")] {
            if self.transports & bit != 0 {
                part(f, format_args!("{name}"))?;
            }
        }
        if self.port_count > 0 {
            part(f, format_args!("ports"))?;
            for port in self.ports() {
                write!(f, " {port}")?;
            }
        }
        if self.flow_kinds & FLOW_START_BIT != 0 {
            part(f, format_args!("flow start"))?;
        }
        let ends = [
            FlowState::Rejected,
            FlowState::Reset,
            FlowState::Established,
            FlowState::HalfOpen,
        ];
        for state in ends {
            if self.flow_kinds & flow_end_bit(state) != 0 {
                part(f, format_args!("flow end ({state:?})"))?;
            }
        }
        Ok(())
    }
}

/// What an [`FlowFilter`] looks at in one event, small enough for the host to keep beside
/// every encoded event of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterKey {
    /// The event's flow-kind bit; 0 for an event that is not a flow start or end.
    flow_kind: u8,
    transport: u8,
    port: u16,
}

impl FilterKey {
    pub fn of(event: &Event<'_>) -> FilterKey {
        let flow_kind = match event.kind {
            EventKind::FlowStart => FLOW_START_BIT,
            EventKind::FlowEnd { state, .. } => flow_end_bit(state),
            _ => 0,
        };
        FilterKey {
            flow_kind,
            transport: transport_bit(event.proto),
            port: event.dst.port,
        }
    }
}

const FLOW_START_BIT: u8 = 1;

const fn flow_end_bit(state: FlowState) -> u8 {
    2 << state as u8
}

const fn transport_bit(transport: Transport) -> u8 {
    match transport {
        Transport::Tcp => 1,
        Transport::Udp => 2,
        Transport::Icmp => 4,
        Transport::Other(_) => 8,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    /// Semantic version, `MAJOR.MINOR.PATCH`.
    pub version: String,
    pub kind: PluginKind,
    pub subscriptions: Subscriptions,
    /// The plugin's default configuration as JSON, so an operator can see and override it.
    pub default_config: String,
    /// Since ABI 1.1; a module of ABI 1.0 receives everything it subscribed to.
    pub filter: FlowFilter,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::events::{flow_end, flow_start, tick};
    use crate::harness::Harness;
    use crate::{Output, Plugin, Release};
    use alloc::vec::Vec;
    use core::net::IpAddr;

    /// Records what reaches it, to see what its filter let through.
    struct Rdp(Vec<(Transport, u16, bool)>);

    impl Release for Rdp {
        const VERSION: &'static str = "1.0.0";
    }

    impl Plugin for Rdp {
        type Config = ();
        type State = ();
        const NAME: &'static str = "rdp";
        const KIND: PluginKind = PluginKind::Detector;
        const SUBSCRIPTIONS: Subscriptions = Subscriptions::NONE
            .with(EventClass::Flow)
            .with(EventClass::Tick);
        const FILTER: FlowFilter = FlowFilter::ANY
            .transport(Transport::Tcp)
            .port(3389)
            .flow_start()
            .flow_end(FlowState::Established);
        fn new(_: ()) -> Self {
            Rdp(Vec::new())
        }
        fn on_event(&mut self, event: &Event<'_>, _: &mut Output) {
            self.0.push((event.proto, event.dst.port, false));
        }
        fn on_tick(&mut self, _: crate::Timestamp, _: &mut Output) {
            self.0.push((Transport::Other(0), 0, true));
        }
    }

    #[test]
    fn the_harness_hands_a_plugin_only_the_flows_its_filter_admits() {
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let mut h: Harness<Rdp> = Harness::new();
        h.feed_all(&[
            flow_start(1.0, Transport::Tcp, a, b, 3389),
            flow_start(1.0, Transport::Tcp, a, b, 445),
            flow_start(1.0, Transport::Udp, a, b, 3389),
            flow_end(2.0, Transport::Tcp, a, b, 3389, FlowState::Rejected),
            flow_end(2.0, Transport::Tcp, a, b, 3389, FlowState::Established),
            tick(3.0),
        ]);
        assert_eq!(
            h.plugin().0,
            [
                (Transport::Tcp, 3389, false),
                (Transport::Tcp, 3389, false),
                (Transport::Other(0), 0, true)
            ]
        );
    }

    #[test]
    fn a_filter_reads_as_it_was_written() {
        assert_eq!(alloc::format!("{}", FlowFilter::ANY), "any");
        assert_eq!(
            alloc::format!("{}", Rdp::FILTER),
            "tcp, ports 3389, flow start, flow end (Established)"
        );
    }
}
