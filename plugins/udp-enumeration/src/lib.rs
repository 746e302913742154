//! `Device / UDP Enumeration`: a device sends datagrams to many distinct UDP ports of one host
//! within a short window, mapping which UDP services it runs.

use core::net::IpAddr;

use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::scan::{is_scannable, ScanModel, ScanSettings, FLOW_STARTS};
use vigil_plugin_sdk::window::FanOutConfig;
use vigil_plugin_sdk::PatternConfig;
use vigil_plugin_sdk::{
    export_plugin, Event, EventClass, EventKind, FlowFilter, Model, Output, Plugin, PluginKind,
    Subscriptions, Timestamp, Transport,
};

const MODEL: Model = Model {
    name: "Device / UDP Enumeration",
    score: 50,
    mitre: &["T1046"],
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    #[serde(flatten)]
    pub fan_out: FanOutConfig,
    /// How each device's usual fan-out is learned.
    pub pattern: PatternConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            fan_out: FanOutConfig {
                threshold: 20,
                ..FanOutConfig::default()
            },
            pattern: PatternConfig::default(),
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

pub struct UdpEnumeration {
    config: Config,
    /// Counted per (source, destination) pair: the ports of one host.
    scans: ScanModel<(IpAddr, IpAddr), (IpAddr, u16)>,
}

impl Plugin for UdpEnumeration {
    type Config = Config;
    type State = ScanModel<(IpAddr, IpAddr), (IpAddr, u16)>;
    const NAME: &'static str = "udp-enumeration";
    const KIND: PluginKind = PluginKind::Detector;
    const SUBSCRIPTIONS: Subscriptions = Subscriptions::NONE
        .with(EventClass::Flow)
        .with(EventClass::Tick);
    const FILTER: FlowFilter = FLOW_STARTS;

    fn new(config: Config) -> Self {
        UdpEnumeration {
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
            && event.proto == Transport::Udp
            && is_scannable(&event.dst.ip);
        if counted {
            if let Some(breach) = self.scans.observe(
                &MODEL,
                &self.config,
                event,
                (event.src.ip, event.dst.ip),
                (event.dst.ip, event.dst.port),
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

export_plugin!(UdpEnumeration);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_plugin_sdk::harness::{events::*, Harness};

    #[test]
    fn many_udp_ports_on_one_host_raise_udp_enumeration() {
        let mut h: Harness<UdpEnumeration> = Harness::new();
        let (src, dst) = (IpAddr::from([10, 4, 0, 50]), IpAddr::from([10, 4, 0, 10]));
        let events: Vec<Event<'static>> = (1..=100u16)
            .map(|port| flow_start(3.0, Transport::Udp, src, dst, port * 7))
            .collect();
        let breaches = h.feed_all(&events);
        assert_eq!(breaches.len(), 1);
        assert_eq!(breaches[0].destinations, vec![dst]);
        assert_eq!(breaches[0].ports.len(), 20);
    }

    #[test]
    fn dns_lookups_to_one_server_are_not_enumeration() {
        let mut h: Harness<UdpEnumeration> = Harness::new();
        let (src, dst) = (IpAddr::from([10, 4, 0, 50]), IpAddr::from([10, 4, 0, 10]));
        let events: Vec<Event<'static>> = (0..500)
            .map(|i| flow_start(f64::from(i) * 0.1, Transport::Udp, src, dst, 53))
            .collect();
        assert!(h.feed_all(&events).is_empty());
    }

    #[test]
    fn the_same_ports_spread_over_many_hosts_are_not_enumeration() {
        let mut h: Harness<UdpEnumeration> = Harness::new();
        let src = IpAddr::from([10, 4, 0, 50]);
        let events: Vec<Event<'static>> = (1..=100u8)
            .map(|i| flow_start(1.0, Transport::Udp, src, IpAddr::from([10, 4, 1, i]), 161))
            .collect();
        assert!(h.feed_all(&events).is_empty());
    }

    mod pattern_of_life {
        use super::*;
        use vigil_plugin_sdk::harness::nights::flows;
        use vigil_plugin_sdk::Breach;

        const MONITOR: [u8; 4] = [10, 4, 0, 200];
        const SERVER: [u8; 4] = [10, 4, 0, 10];

        /// The monitoring host's night: it polls 25 UDP services of a server, two a second.
        fn polls(night: u64, server: [u8; 4], ports: &[u16]) -> Vec<Event<'static>> {
            let server = [IpAddr::from(server)];
            flows(
                night,
                0.5,
                Transport::Udp,
                IpAddr::from(MONITOR),
                &server,
                ports,
            )
        }

        fn usual_ports() -> Vec<u16> {
            (1000..1025).collect()
        }

        fn learned() -> Harness<UdpEnumeration> {
            let mut h: Harness<UdpEnumeration> = Harness::new();
            for night in 0..5 {
                h.feed_all(&polls(night, SERVER, &usual_ports()));
            }
            h
        }

        fn evidence<'b>(breach: &'b Breach, name: &str) -> &'b str {
            breach.evidence(name).unwrap_or("<missing>")
        }

        #[test]
        fn the_usual_polls_raise_nothing_on_the_sixth_night() {
            let mut h = learned();
            assert_eq!(h.feed_all(&polls(5, SERVER, &usual_ports())), Vec::new());
        }

        #[test]
        fn new_ports_on_its_usual_server_breach_naming_them() {
            let mut h = learned();
            let mut ports = usual_ports();
            ports.extend(2000..2025);
            let breaches = h.feed_all(&polls(5, SERVER, &ports));
            assert_eq!(breaches.len(), 1, "{breaches:#?}");
            let b = &breaches[0];
            assert_eq!(evidence(b, "pattern.unusual"), "true");
            assert_eq!(
                evidence(b, "pattern.seen"),
                "45 targets in 60 s, 20 new for this device (10.4.0.10:2000, 10.4.0.10:2001, \
                 10.4.0.10:2002, 10.4.0.10:2003, 10.4.0.10:2004, 10.4.0.10:2005, \
                 10.4.0.10:2006, 10.4.0.10:2007 and 12 more); new ports 2000, 2001, 2002, 2003, \
                 2004, 2005, 2006, 2007, 2008, 2009, 2010, 2011, 2012, 2013, 2014, 2015, 2016, \
                 2017, 2018, 2019"
            );
            // 20 of 45 targets new: 42 of 45 weighted.
            assert_eq!(b.score, 46);
        }

        #[test]
        fn the_same_polls_of_a_new_server_breach() {
            let mut h = learned();
            let breaches = h.feed_all(&polls(5, [10, 4, 0, 11], &usual_ports()));
            assert_eq!(breaches.len(), 1, "{breaches:#?}");
            assert_eq!(breaches[0].destinations, vec![IpAddr::from([10, 4, 0, 11])]);
            assert_eq!(evidence(&breaches[0], "pattern.state"), "learned");
            assert_eq!(breaches[0].score, 50);
        }
    }
}
