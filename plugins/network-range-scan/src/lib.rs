//! `Device / Network Range Scan`: a device reaches out to many distinct internal hosts within a
//! short window (ping sweeps, single-port sweeps), whatever the protocol.

use core::net::IpAddr;

use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::scan::{is_internal, is_scannable, ScanModel, ScanSettings, FLOW_STARTS};
use vigil_plugin_sdk::window::FanOutConfig;
use vigil_plugin_sdk::PatternConfig;
use vigil_plugin_sdk::{
    export_plugin, Event, EventClass, EventKind, FlowFilter, Model, Output, Plugin, PluginKind,
    Subscriptions, Timestamp,
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

impl ScanSettings for Config {
    fn fan_out(&self) -> &FanOutConfig {
        &self.fan_out
    }
    fn pattern(&self) -> &PatternConfig {
        &self.pattern
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
    const KIND: PluginKind = PluginKind::Detector;
    const SUBSCRIPTIONS: Subscriptions = Subscriptions::NONE
        .with(EventClass::Flow)
        .with(EventClass::Tick);
    const FILTER: FlowFilter = FLOW_STARTS;

    fn new(config: Config) -> Self {
        NetworkRangeScan {
            config,
            scans: ScanModel::new(),
        }
    }

    fn on_tick(&mut self, now: Timestamp, _: &mut Output) {
        self.scans.on_tick(&self.config, now);
    }

    fn on_event(&mut self, event: &Event<'_>, out: &mut Output) {
        self.scans.on_event(&self.config, event);
        let counted = matches!(event.kind, EventKind::FlowStart)
            && is_scannable(&event.dst.ip)
            && (!self.config.internal_only || is_internal(&event.dst.ip));
        if counted {
            if let Some(breach) = self.scans.observe(
                &MODEL,
                &self.config,
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

    mod pattern_of_life {
        use super::*;
        use vigil_plugin_sdk::harness::nights::{flows, hosts};
        use vigil_plugin_sdk::Breach;

        const MONITOR: [u8; 4] = [10, 9, 0, 200];

        /// The monitoring host's night: it pings its 40 servers, one a second.
        fn pings(night: u64, servers: &[IpAddr]) -> Vec<Event<'static>> {
            flows(
                night,
                1.0,
                Transport::Icmp,
                IpAddr::from(MONITOR),
                servers,
                &[0],
            )
        }

        fn learned() -> Harness<NetworkRangeScan> {
            let mut h: Harness<NetworkRangeScan> = Harness::new();
            for night in 0..5 {
                h.feed_all(&pings(night, &hosts([10, 9, 1], 40)));
            }
            h
        }

        fn evidence<'b>(breach: &'b Breach, name: &str) -> &'b str {
            breach.evidence(name).unwrap_or("<missing>")
        }

        #[test]
        fn the_monitoring_hosts_sixth_identical_night_raises_nothing() {
            let mut h = learned();
            assert_eq!(h.feed_all(&pings(5, &hosts([10, 9, 1], 40))), Vec::new());
        }

        #[test]
        fn many_new_hosts_beyond_its_usual_ones_breach() {
            let mut h = learned();
            let mut servers = hosts([10, 9, 1], 40);
            servers.extend(hosts([10, 9, 2], 40));
            let breaches = h.feed_all(&pings(5, &servers));
            assert_eq!(breaches.len(), 1, "{breaches:#?}");
            let b = &breaches[0];
            assert_eq!(evidence(b, "pattern.state"), "learned");
            assert_eq!(evidence(b, "pattern.unusual"), "true");
            assert_eq!(
                evidence(b, "pattern.seen"),
                "60 targets in 60 s, 32 new for this device (10.9.2.1, 10.9.2.2, 10.9.2.3, \
                 10.9.2.4, 10.9.2.5, 10.9.2.6, 10.9.2.7, 10.9.2.8 and 24 more)"
            );
            assert_eq!(
                evidence(b, "pattern.expected"),
                "40 usual targets (10.9.1.1, 10.9.1.2, 10.9.1.3, 10.9.1.4, 10.9.1.5, 10.9.1.6, \
                 10.9.1.7, 10.9.1.8 and 32 more), at most 40 in 60 s"
            );
        }
    }
}
