//! `Device / Network Range Scan`: a device reaches out to many distinct internal hosts within a
//! short window (ping sweeps, single-port sweeps), whatever the protocol.

use core::net::IpAddr;

use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::scan::{is_internal, is_scannable, ScanModel};
use vigil_plugin_sdk::window::FanOutConfig;
use vigil_plugin_sdk::PatternConfig;
use vigil_plugin_sdk::{
    export_plugin, Event, EventClass, EventKind, Model, Output, Plugin, PluginKind, Subscriptions,
};

const MODEL: Model = Model {
    name: "Device / Network Range Scan",
    score: 55,
    mitre: &["T1018", "T1046"],
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    #[serde(flatten)]
    pub fan_out: FanOutConfig,
    /// How each device's usual fan-out is learned.
    pub pattern: PatternConfig,
    /// Count only internal destinations (RFC 1918, ULA, link-local, CGNAT).
    pub internal_only: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            fan_out: FanOutConfig {
                threshold: 32,
                ..FanOutConfig::default()
            },
            pattern: PatternConfig::default(),
            internal_only: true,
        }
    }
}

pub struct NetworkRangeScan {
    config: Config,
    scans: ScanModel<IpAddr, IpAddr>,
}

impl Plugin for NetworkRangeScan {
    type Config = Config;
    type State = ScanModel<IpAddr, IpAddr>;
    const NAME: &'static str = "network-range-scan";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const KIND: PluginKind = PluginKind::Detector;
    const SUBSCRIPTIONS: Subscriptions = Subscriptions::NONE
        .with(EventClass::Flow)
        .with(EventClass::Tick);

    fn new(config: Config) -> Self {
        NetworkRangeScan {
            config,
            scans: ScanModel::new(),
        }
    }

    fn on_event(&mut self, event: &Event<'_>, out: &mut Output) {
        self.scans
            .on_event(&self.config.fan_out, &self.config.pattern, event);
        let counted = matches!(event.kind, EventKind::FlowStart)
            && is_scannable(&event.dst.ip)
            && (!self.config.internal_only || is_internal(&event.dst.ip));
        if counted {
            if let Some(breach) = self.scans.observe(
                &MODEL,
                &self.config.fan_out,
                &self.config.pattern,
                event,
                event.src.ip,
                event.dst.ip,
                |_| true,
            ) {
                out.breach(breach);
            }
        }
    }

    fn state(&self) -> Option<&Self::State> {
        Some(&self.scans)
    }

    fn set_state(&mut self, state: Self::State) {
        self.scans = state;
    }
}

export_plugin!(NetworkRangeScan);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_plugin_sdk::harness::{events::*, Harness};
    use vigil_plugin_sdk::Transport;

    #[test]
    fn ping_sweep_of_a_subnet_raises_range_scan_with_its_hosts() {
        let mut h: Harness<NetworkRangeScan> = Harness::new();
        let src = IpAddr::from([10, 9, 0, 50]);
        let events: Vec<Event<'static>> = (1..=254u8)
            .map(|i| flow_start(2.0, Transport::Icmp, src, IpAddr::from([10, 9, 0, i]), 0))
            .collect();
        let breaches = h.feed_all(&events);
        assert_eq!(breaches.len(), 1);
        let hosts: Vec<IpAddr> = (1..=32u8).map(|i| IpAddr::from([10, 9, 0, i])).collect();
        assert_eq!(breaches[0].destinations, hosts);
        assert_eq!(breaches[0].device.ip, src);
    }

    #[test]
    fn public_destinations_do_not_count_by_default() {
        let mut h: Harness<NetworkRangeScan> = Harness::new();
        let src = IpAddr::from([10, 9, 0, 50]);
        let events: Vec<Event<'static>> = (1..=100u8)
            .map(|i| flow_start(2.0, Transport::Tcp, src, IpAddr::from([93, 184, 0, i]), 443))
            .collect();
        assert!(h.feed_all(&events).is_empty());
    }

    #[test]
    fn hosts_spread_beyond_the_window_do_not_breach() {
        let mut h: Harness<NetworkRangeScan> = Harness::new();
        let src = IpAddr::from([10, 9, 0, 50]);
        let events: Vec<Event<'static>> = (1..=100u8)
            .map(|i| {
                let secs = f64::from(i) * 120.0;
                flow_start(secs, Transport::Tcp, src, IpAddr::from([10, 9, 1, i]), 445)
            })
            .collect();
        assert!(h.feed_all(&events).is_empty());
    }
}
