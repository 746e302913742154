//! `Device / Many New Hosts`: a device starts talking to more than `max_new_hosts` hosts it never
//! talked to before, within `window_secs`. Fires once per burst, and again once the hosts it
//! reported are a window old.

use core::net::IpAddr;

use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::{
    export_plugin, BoundedMap, Duration, Event, EventClass, EventKind, FlowFilter, Model, Output,
    Plugin, PluginKind, Subscriptions, Timestamp,
};

const MODEL: Model = Model {
    name: "Device / Many New Hosts",
    score: 50,
    mitre: &["T1046"],
};

/// The model's thresholds: an operator changes them with a config update, no new code.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub max_new_hosts: usize,
    /// Written in seconds, as `window_secs`.
    #[serde(rename = "window_secs")]
    pub window: Duration,
    /// Devices remembered; the least recently seen is forgotten first.
    pub max_devices: usize,
    /// Hosts remembered per device; likewise.
    pub max_known_hosts: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_new_hosts: 20,
            window: Duration::from_secs(3600),
            max_devices: 4096,
            max_known_hosts: 1024,
        }
    }
}

/// What the model knows of one device.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Peers {
    /// The hosts it has talked to.
    known: BoundedMap<IpAddr, ()>,
    /// Its new hosts of the current window, with when each was first seen.
    recent: Vec<(Timestamp, IpAddr)>,
    /// Whether this burst has already been reported.
    fired: bool,
}

pub struct NewHosts {
    config: Config,
    devices: BoundedMap<IpAddr, Peers>,
}

impl Plugin for NewHosts {
    type Config = Config;
    type State = BoundedMap<IpAddr, Peers>;
    const NAME: &'static str = "{{name}}";
    const KIND: PluginKind = PluginKind::Detector;
    const SUBSCRIPTIONS: Subscriptions = Subscriptions::NONE.with(EventClass::Flow);
    // Only flow starts count: the host drops the rest before they reach the plugin.
    const FILTER: FlowFilter = FlowFilter::ANY.flow_start();

    fn new(config: Config) -> Self {
        NewHosts {
            config,
            devices: BoundedMap::new(),
        }
    }

    fn on_event(&mut self, event: &Event<'_>, out: &mut Output) {
        if !matches!(event.kind, EventKind::FlowStart) {
            return;
        }
        let config = &self.config;
        let peers = self
            .devices
            .touch(config.max_devices, event.ts, event.src.ip, Peers::default);
        let host = event.dst.ip;
        let new = !peers.known.contains_key(&host);
        peers
            .known
            .touch(config.max_known_hosts, event.ts, host, || ());
        if !new {
            return;
        }
        peers
            .recent
            .retain(|(seen, _)| event.ts.elapsed_since(*seen) < config.window);
        if peers.recent.is_empty() {
            peers.fired = false;
        }
        if peers.fired {
            return;
        }
        peers.recent.push((event.ts, host));
        if peers.recent.len() > config.max_new_hosts {
            peers.fired = true;
            out.breach(
                MODEL
                    .breach(event)
                    .with_destinations(peers.recent.iter().map(|(_, ip)| *ip))
                    .with_evidence("new_hosts", peers.recent.len())
                    .with_evidence("window_secs", config.window),
            );
        }
    }

    fn state(&self) -> Option<&Self::State> {
        Some(&self.devices)
    }

    fn set_state(&mut self, state: Self::State) {
        self.devices = state;
    }
}

export_plugin!(NewHosts);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_plugin_sdk::harness::{events::flow_start, Harness};
    use vigil_plugin_sdk::Transport;

    fn sweep(secs: f64, hosts: u8) -> Vec<Event<'static>> {
        let device = IpAddr::from([10, 1, 0, 50]);
        (1..=hosts)
            .map(|i| {
                flow_start(
                    secs,
                    Transport::Tcp,
                    device,
                    IpAddr::from([10, 9, 0, i]),
                    443,
                )
            })
            .collect()
    }

    #[test]
    fn more_new_hosts_than_the_threshold_breach_once() {
        let mut harness: Harness<NewHosts> = Harness::new();
        let breaches = harness.feed_all(&sweep(1.0, 40));
        assert_eq!(breaches.len(), 1);
        let first_over = Config::default().max_new_hosts + 1;
        assert_eq!(
            breaches[0].evidence("new_hosts"),
            Some(first_over.to_string().as_str())
        );
    }

    #[test]
    fn hosts_it_knows_are_not_new_after_a_restart() {
        let mut harness: Harness<NewHosts> = Harness::new();
        harness.feed_all(&sweep(1.0, 15));
        let mut harness = harness.restart().expect("restores");
        assert!(harness.feed_all(&sweep(7200.0, 15)).is_empty());
    }
}
