//! `Device / Network Scan`: a device opens connections to many distinct host:port targets, across
//! several ports, within a short window: a port scan of one host or a multi-port scan of many.
//! A sweep of one port over a range is `Network Range Scan`'s concern, not this one's.

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
    name: "Device / Network Scan",
    score: 60,
    mitre: &["T1046"],
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    #[serde(flatten)]
    pub fan_out: FanOutConfig,
    /// How each device's usual fan-out is learned.
    pub pattern: PatternConfig,
    /// Distinct destination ports the targets must span.
    pub min_ports: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            fan_out: FanOutConfig {
                threshold: 30,
                ..FanOutConfig::default()
            },
            pattern: PatternConfig::default(),
            min_ports: 3,
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

pub struct NetworkScan {
    config: Config,
    scans: ScanModel<IpAddr, (IpAddr, u16)>,
}

impl Plugin for NetworkScan {
    type Config = Config;
    type State = ScanModel<IpAddr, (IpAddr, u16)>;
    const NAME: &'static str = "network-scan";
    const KIND: PluginKind = PluginKind::Detector;
    const SUBSCRIPTIONS: Subscriptions = Subscriptions::NONE
        .with(EventClass::Flow)
        .with(EventClass::Tick);
    const FILTER: FlowFilter = FLOW_STARTS;

    fn new(config: Config) -> Self {
        NetworkScan {
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
            && matches!(event.proto, Transport::Tcp | Transport::Udp)
            && is_scannable(&event.dst.ip);
        if !counted {
            return;
        }
        let min_ports = self.config.min_ports;
        if let Some(breach) = self.scans.observe(
            &MODEL,
            &self.config,
            event,
            event.src.ip,
            (event.dst.ip, event.dst.port),
            |targets| has_distinct_ports(targets, min_ports),
        ) {
            out.breach(breach);
        }
    }

    fn state(&self) -> Option<&Self::State> {
        Some(&self.scans)
    }

    fn set_state(&mut self, state: Self::State) {
        self.scans = state;
    }
}

/// Whether `targets` hold at least `wanted` distinct ports. Asked on every new target of a
/// wide sweep, so it stops as soon as it knows.
fn has_distinct_ports(targets: &[(IpAddr, u16)], wanted: usize) -> bool {
    let mut found: Vec<u16> = Vec::new();
    for (_, port) in targets {
        if found.len() >= wanted {
            break;
        }
        if !found.contains(port) {
            found.push(*port);
        }
    }
    found.len() >= wanted
}

export_plugin!(NetworkScan);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_plugin_sdk::harness::{events::*, Harness};

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 1, 0, last])
    }

    #[test]
    fn port_scan_of_many_ports_raises_network_scan() {
        let mut h: Harness<NetworkScan> = Harness::new();
        let events: Vec<Event<'static>> = (1..=40u16)
            .map(|port| flow_start(1.0, Transport::Tcp, ip(50), ip(10), port))
            .collect();
        let breaches = h.feed_all(&events);
        assert_eq!(breaches.len(), 1);
        let b = &breaches[0];
        assert_eq!(b.model, "Device / Network Scan");
        assert_eq!(b.device.ip, ip(50));
        assert_eq!(b.destinations, vec![ip(10)]);
        assert_eq!(b.ports, (1..=30).collect::<Vec<u16>>());
        assert_eq!(b.mitre, vec!["T1046".to_string()]);
    }

    #[test]
    fn single_port_sweep_is_not_a_network_scan() {
        let mut h: Harness<NetworkScan> = Harness::new();
        let events: Vec<Event<'static>> = (1..=200u8)
            .map(|host| flow_start(1.0, Transport::Tcp, ip(50), ip(host), 443))
            .collect();
        assert!(h.feed_all(&events).is_empty());
    }

    #[test]
    fn ordinary_client_traffic_stays_quiet() {
        let mut h: Harness<NetworkScan> = Harness::new();
        let services = [(10, 445), (10, 389), (10, 53), (20, 445), (30, 80)];
        let events: Vec<Event<'static>> = (0..100)
            .flat_map(|i| {
                services.iter().map(move |(host, port)| {
                    flow_start(f64::from(i), Transport::Tcp, ip(60), ip(*host), *port)
                })
            })
            .collect();
        assert!(h.feed_all(&events).is_empty());
    }

    #[test]
    fn threshold_comes_from_config() {
        let mut h = Harness::<NetworkScan>::with_config_json(r#"{"threshold": 5, "min_ports": 1}"#)
            .expect("valid config");
        let events: Vec<Event<'static>> = (1..=5u16)
            .map(|port| flow_start(1.0, Transport::Tcp, ip(50), ip(10), port))
            .collect();
        assert_eq!(h.feed_all(&events).len(), 1);
    }

    /// The lab's attack (real nmap, smbclient, ldapsearch... see tests/fixtures/README.md) through
    /// the appliance's capture path: only its attacker scans, and its port scan is caught.
    #[test]
    fn the_lab_attackers_port_scan_raises_network_scan_on_the_real_capture() {
        let lab = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/lab");
        let mut h: Harness<NetworkScan> = Harness::new();
        let breaches =
            vigil::plugin_replay::replay(&mut h, &[&lab.join("attack.pcap")]).expect("replays");
        // ground-truth.tsv: 10.77.0.50 scans 445, 3389 and 9401 across 10.77.0.1-254.
        let attacker = IpAddr::from([10, 77, 0, 50]);
        assert!(!breaches.is_empty());
        assert!(
            breaches.iter().all(|b| b.device.ip == attacker),
            "{breaches:#?}"
        );
        assert!(
            breaches
                .iter()
                .any(|b| [445, 3389, 9401].iter().all(|p| b.ports.contains(p))),
            "{breaches:#?}"
        );
    }

    mod pattern_of_life {
        use super::*;
        use vigil_plugin_sdk::harness::nights::{flows, hosts};
        use vigil_plugin_sdk::Breach;

        const MONITOR: [u8; 4] = [10, 5, 0, 200];

        /// The monitoring host's night: its 40 servers on ssh, smb and rdp, four a second.
        fn monitoring_night(night: u64, ports: &[u16]) -> Vec<Event<'static>> {
            let servers = hosts([10, 5, 1], 40);
            flows(
                night,
                0.25,
                Transport::Tcp,
                IpAddr::from(MONITOR),
                &servers,
                ports,
            )
        }

        fn learned() -> Harness<NetworkScan> {
            let mut h: Harness<NetworkScan> = Harness::new();
            for night in 0..5 {
                h.feed_all(&monitoring_night(night, &[22, 445, 3389]));
            }
            h
        }

        fn evidence<'b>(breach: &'b Breach, name: &str) -> &'b str {
            breach.evidence(name).unwrap_or("<missing>")
        }

        #[test]
        fn the_monitoring_hosts_sixth_identical_night_raises_nothing() {
            let mut h = learned();
            assert_eq!(
                h.feed_all(&monitoring_night(5, &[22, 445, 3389])),
                Vec::new()
            );
        }

        #[test]
        fn a_new_port_on_its_usual_hosts_breaches_naming_the_port() {
            let mut h = learned();
            let breaches = h.feed_all(&monitoring_night(5, &[22, 445, 3389, 5900]));
            assert_eq!(breaches.len(), 1, "{breaches:#?}");
            let b = &breaches[0];
            assert_eq!(evidence(b, "pattern.state"), "learned");
            assert_eq!(evidence(b, "pattern.unusual"), "true");
            assert_eq!(
                evidence(b, "pattern.expected"),
                "120 usual targets (10.5.1.1:22, 10.5.1.1:445, 10.5.1.1:3389, 10.5.1.2:22, \
                 10.5.1.2:445, 10.5.1.2:3389, 10.5.1.3:22, 10.5.1.3:445 and 112 more), at most \
                 120 in 60 s, ports 22, 445, 3389"
            );
            assert_eq!(
                evidence(b, "pattern.seen"),
                "120 targets in 60 s, 30 new for this device (10.5.1.1:5900, 10.5.1.2:5900, \
                 10.5.1.3:5900, 10.5.1.4:5900, 10.5.1.5:5900, 10.5.1.6:5900, 10.5.1.7:5900, \
                 10.5.1.8:5900 and 22 more); new ports 5900"
            );
            // 30 of 120 targets new.
            assert_eq!(b.score, 45);
        }

        #[test]
        fn many_new_hosts_breach() {
            let mut h = learned();
            let strangers = hosts([10, 5, 2], 40);
            let night = flows(
                5,
                0.25,
                Transport::Tcp,
                IpAddr::from(MONITOR),
                &strangers,
                &[22, 445, 3389],
            );
            let breaches = h.feed_all(&night);
            assert_eq!(breaches.len(), 1, "{breaches:#?}");
            assert_eq!(evidence(&breaches[0], "pattern.unusual"), "true");
            assert_eq!(evidence(&breaches[0], "distinct_targets"), "30");
            assert_eq!(breaches[0].score, 60, "every target is new");
        }
    }
}
