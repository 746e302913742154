//! The shared shape of scan models: a device touching many distinct targets in a window.
//!
//! A scan plugin says which flow starts count and what a target is; [`ScanModel`] does the
//! counting ([`FanOut`]), the expiry on `Tick`, and builds a breach whose evidence lists every
//! destination address and port of the episode.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::marker::PhantomData;
use core::net::IpAddr;
use serde::{Deserialize, Serialize};

use crate::model::summarize;
use crate::window::{FanOut, FanOutConfig};
use crate::{Breach, Event, EventKind, Model, Output};

/// Something a scan touches: a host, a port, or a host and port.
pub trait Target: Ord + Clone {
    fn ip(&self) -> Option<IpAddr>;
    fn port(&self) -> Option<u16>;
}

impl Target for IpAddr {
    fn ip(&self) -> Option<IpAddr> {
        Some(*self)
    }
    fn port(&self) -> Option<u16> {
        None
    }
}

impl Target for u16 {
    fn ip(&self) -> Option<IpAddr> {
        None
    }
    fn port(&self) -> Option<u16> {
        Some(*self)
    }
}

impl Target for (IpAddr, u16) {
    fn ip(&self) -> Option<IpAddr> {
        Some(self.0)
    }
    fn port(&self) -> Option<u16> {
        Some(self.1)
    }
}

/// A scan model: `D` is who is counted (usually the source address), `T` what it touches.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScanModel<D: Ord, T: Ord> {
    fan_out: FanOut<D, T>,
}

impl<D: Ord + Clone, T: Target> ScanModel<D, T> {
    pub fn new() -> Self {
        ScanModel {
            fan_out: FanOut::new(),
        }
    }

    /// Expires old targets on `Tick`; call for every event the plugin receives.
    pub fn on_tick(&mut self, config: &FanOutConfig, event: &Event<'_>) {
        if matches!(event.kind, EventKind::Tick) {
            self.fan_out.expire_all(config, event.ts);
        }
    }

    /// Counts `target` for `device`; when this makes the episode reach the threshold and `accept`
    /// agrees with the whole target set, returns a breach of `model` decided by `event`.
    pub fn observe(
        &mut self,
        model: &Model,
        config: &FanOutConfig,
        event: &Event<'_>,
        device: D,
        target: T,
        accept: impl Fn(&[T]) -> bool,
    ) -> Option<Breach> {
        let targets = self
            .fan_out
            .observe_where(config, event.ts, device, target, accept)?;
        let hosts: BTreeSet<IpAddr> = targets.iter().filter_map(Target::ip).collect();
        let ports: BTreeSet<u16> = targets.iter().filter_map(Target::port).collect();
        let hosts: Vec<IpAddr> = hosts.into_iter().collect();
        let breach: Breach = model
            .breach(event)
            .with_evidence("distinct_targets", targets.len())
            .with_evidence("distinct_hosts", hosts.len())
            .with_evidence("distinct_ports", ports.len())
            .with_evidence("window_secs", config.window_secs)
            .with_evidence("threshold", config.threshold)
            .with_evidence("hosts", summarize(&hosts, 8))
            .with_destinations(hosts)
            .with_ports(ports);
        Some(breach)
    }
}

/// Whether an address can be the target of a scan: unicast, not loopback or unspecified.
/// Broadcast and multicast discovery (NetBIOS, SSDP, mDNS) is ordinary chatter.
pub fn is_scannable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_broadcast() || v4.is_multicast() || v4.is_loopback() || v4.is_unspecified())
        }
        IpAddr::V6(v6) => !(v6.is_multicast() || v6.is_loopback() || v6.is_unspecified()),
    }
}

/// Whether an address is inside an organisation: RFC 1918, CGNAT, link-local, IPv6 ULA.
pub fn is_internal(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || v4.is_link_local() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// What distinguishes one service-sweep model from another: the ports it watches.
pub trait SweepSpec {
    const NAME: &'static str;
    const VERSION: &'static str;
    const MODEL: Model;
    /// The service's ports (e.g. `[445, 139]` for SMB).
    const PORTS: &'static [u16];
    /// Distinct hosts in the window that make a breach, unless the config says otherwise.
    const THRESHOLD: usize;
}

/// Config of a [`ServiceSweep`]; its defaults come from the plugin's [`SweepSpec`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, bound = "S: SweepSpec")]
pub struct SweepConfig<S> {
    #[serde(flatten)]
    pub fan_out: FanOutConfig,
    pub ports: Vec<u16>,
    #[serde(skip)]
    spec: PhantomData<S>,
}

impl<S: SweepSpec> Default for SweepConfig<S> {
    fn default() -> Self {
        SweepConfig {
            fan_out: FanOutConfig {
                threshold: S::THRESHOLD,
                ..FanOutConfig::default()
            },
            ports: S::PORTS.to_vec(),
            spec: PhantomData,
        }
    }
}

/// A complete detector for "one device tries one service on many hosts": RDP scans, SMB scans.
/// A plugin crate names its [`SweepSpec`] and exports `ServiceSweep<Spec>`.
pub struct ServiceSweep<S> {
    config: SweepConfig<S>,
    scans: ScanModel<IpAddr, IpAddr>,
}

impl<S: SweepSpec> crate::Plugin for ServiceSweep<S> {
    type Config = SweepConfig<S>;
    type State = ();
    const NAME: &'static str = S::NAME;
    const VERSION: &'static str = S::VERSION;
    const KIND: crate::PluginKind = crate::PluginKind::Detector;
    const SUBSCRIPTIONS: crate::Subscriptions = crate::Subscriptions::NONE
        .with(crate::EventClass::Flow)
        .with(crate::EventClass::Tick);

    fn new(config: SweepConfig<S>) -> Self {
        ServiceSweep {
            config,
            scans: ScanModel::new(),
        }
    }

    fn on_event(&mut self, event: &Event<'_>, out: &mut Output) {
        self.scans.on_tick(&self.config.fan_out, event);
        let counted = matches!(event.kind, EventKind::FlowStart)
            && event.proto == crate::Transport::Tcp
            && self.config.ports.contains(&event.dst.port)
            && is_scannable(&event.dst.ip);
        if !counted {
            return;
        }
        let breach = self.scans.observe(
            &S::MODEL,
            &self.config.fan_out,
            event,
            event.src.ip,
            event.dst.ip,
            |_| true,
        );
        if let Some(breach) = breach {
            // Targets are hosts; the port is the service being swept.
            out.breach(breach.with_ports([event.dst.port]));
        }
    }
}
