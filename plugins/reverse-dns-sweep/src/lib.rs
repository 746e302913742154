//! `Device / Reverse DNS Sweep`: a device asks DNS for the names of many internal addresses (PTR
//! lookups of `in-addr.arpa` / `ip6.arpa` names) within a few minutes. A client resolves the names
//! of the handful of peers it deals with; walking an address range through the DNS server maps
//! which hosts exist and what they are called without sending them a single packet.
//!
//! Counted per client device: the distinct internal addresses looked up in a sliding window. The
//! breach says which range was walked, how much of it resolved, and through which DNS server.

use core::net::IpAddr;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::dns::{reverse_address, PTR};
use vigil_plugin_sdk::scan::{is_internal, is_scannable, LearnedFanOut};
use vigil_plugin_sdk::state::OldState;
use vigil_plugin_sdk::window::{FanOut, FanOutConfig};
use vigil_plugin_sdk::{
    export_plugin, BoundedMap, Duration, Event, EventClass, EventKind, Model, Output,
    PatternConfig, Plugin, PluginKind, Subscriptions, Timestamp,
};

const MODEL: Model = Model {
    name: "Device / Reverse DNS Sweep",
    score: 50,
    // Remote System Discovery; Gather Victim Network Information: DNS.
    mitre: &["T1018", "T1590.002"],
};

const NOERROR: u8 = 0;
const NXDOMAIN: u8 = 3;
/// Resolved names shown in the evidence.
const NAMES_SHOWN: usize = 8;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `threshold`: distinct internal addresses looked up that make a sweep. 32 is a /27 walked
    /// address by address, far past the handful of peers a client resolves (its servers, a
    /// printer, the odd `traceroute`), while any tool walking a subnet (`nmap -sL`, `dnsrecon -r`,
    /// a `dig -x` loop) passes it within seconds.
    /// `window_secs`: 5 minutes, so a sweep paced at one lookup every few seconds is still seen.
    /// `rearm_quiet_secs`: a minute without a new address ends the episode; slower sweeps of the
    /// same range stay one breach.
    #[serde(flatten)]
    pub fan_out: FanOutConfig,
    /// How each device's usual lookups are learned: a device that resolves the same many
    /// addresses every day (a monitoring or inventory host) is doing its job.
    pub pattern: PatternConfig,
    /// Queries to these ports are multicast name resolution (mDNS service discovery, LLMNR),
    /// not questions to a DNS server.
    pub ignored_ports: Vec<u16>,
    /// Outcomes remembered per device for the evidence; bounds memory during a huge sweep.
    pub max_lookups_per_device: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            fan_out: FanOutConfig {
                window: Duration::from_secs(300),
                threshold: 32,
                rearm_quiet: Duration::from_secs(60),
                max_devices: 4096,
            },
            pattern: PatternConfig::default(),
            ignored_ports: vec![5353, 5355],
            max_lookups_per_device: 1024,
        }
    }
}

/// How one reverse lookup went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Lookup {
    at: Timestamp,
    server: IpAddr,
    port: u16,
    /// `None`: no answer came.
    rcode: Option<u8>,
    /// The first name the server gave.
    name: Option<String>,
}

/// Everything carried across a restart: a sweep in progress must neither be lost nor fire twice,
/// and what each device usually looks up is learned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Per client device, the distinct addresses it looked up, and those it usually does.
    sweeps: LearnedFanOut<IpAddr, IpAddr>,
    /// Per client device, how each of those lookups went, touched when each was made: past
    /// `max_lookups_per_device` the oldest is forgotten first.
    lookups: BTreeMap<IpAddr, BoundedMap<IpAddr, Lookup>>,
}

/// How versions 1 and 2 kept each device's lookups.
type PlainLookups = BTreeMap<IpAddr, BTreeMap<IpAddr, Lookup>>;

/// State version 1 (and the unversioned snapshots before it): the windows, nothing learned.
#[derive(Debug, Clone, Deserialize)]
struct StateV1 {
    sweeps: FanOut<IpAddr, IpAddr>,
    lookups: PlainLookups,
}

/// State version 2: what each device usually looks up is learned.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateV2 {
    sweeps: LearnedFanOut<IpAddr, IpAddr>,
    lookups: PlainLookups,
}

fn bounded(lookups: PlainLookups) -> BTreeMap<IpAddr, BoundedMap<IpAddr, Lookup>> {
    let per_device = |known: BTreeMap<IpAddr, Lookup>| {
        let lookups = known.into_iter();
        lookups.map(|(address, l)| (address, l.at, l)).collect()
    };
    let devices = lookups.into_iter();
    devices
        .map(|(device, known)| (device, per_device(known)))
        .collect()
}

pub struct ReverseDnsSweep {
    config: Config,
    state: State,
}

impl Plugin for ReverseDnsSweep {
    type Config = Config;
    type State = State;
    /// 2 learned each device's usual lookups; 3 keeps its lookups in a [`BoundedMap`].
    const STATE_VERSION: u32 = 3;
    const NAME: &'static str = "reverse-dns-sweep";
    const KIND: PluginKind = PluginKind::Detector;
    const SUBSCRIPTIONS: Subscriptions = Subscriptions::NONE
        .with(EventClass::Dns)
        .with(EventClass::Tick);

    fn new(config: Config) -> Self {
        ReverseDnsSweep {
            config,
            state: State {
                sweeps: LearnedFanOut::new(),
                lookups: BTreeMap::new(),
            },
        }
    }

    fn on_tick(&mut self, now: Timestamp, _: &mut Output) {
        self.expire(now);
    }

    fn on_event(&mut self, event: &Event<'_>, out: &mut Output) {
        if matches!(event.kind, EventKind::Dns { .. }) {
            // Any lookup: the device is active (its age, for its pattern).
            let config = &self.config;
            self.state
                .sweeps
                .seen(&config.fan_out, &config.pattern, event.ts, event.src.ip);
        }
        let EventKind::Dns {
            query,
            qtype: PTR,
            rcode,
            answers,
        } = &event.kind
        else {
            return;
        };
        let asked_a_server =
            is_scannable(&event.dst.ip) && !self.config.ignored_ports.contains(&event.dst.port);
        let Some(address) = reverse_address(query) else {
            return;
        };
        if !asked_a_server || !is_internal(&address) {
            return;
        }
        let lookup = Lookup {
            at: event.ts,
            server: event.dst.ip,
            port: event.dst.port,
            rcode: *rcode,
            name: answers.first().map(|name| name.to_string()),
        };
        if let Some(breach) = self.observe(event, address, lookup) {
            out.breach(breach);
        }
    }

    fn state(&self) -> Option<&Self::State> {
        Some(&self.state)
    }

    fn set_state(&mut self, state: Self::State) {
        self.state = state;
    }

    fn migrate(from_version: u32, old: OldState) -> Result<State, String> {
        match from_version {
            0 | 1 => {
                let old: StateV1 = old.decode()?;
                Ok(State {
                    sweeps: LearnedFanOut::from_windows(old.sweeps),
                    lookups: bounded(old.lookups),
                })
            }
            2 => {
                let old: StateV2 = old.decode()?;
                Ok(State {
                    sweeps: old.sweeps,
                    lookups: bounded(old.lookups),
                })
            }
            _ => Err(format!("no migration from state version {from_version}")),
        }
    }
}

impl ReverseDnsSweep {
    fn observe(
        &mut self,
        event: &Event<'_>,
        address: IpAddr,
        lookup: Lookup,
    ) -> Option<vigil_plugin_sdk::Breach> {
        let device = event.src.ip;
        self.remember(device, address, lookup);
        let fan_out = &self.config.fan_out;
        let episode = self.state.sweeps.observe(
            fan_out,
            &self.config.pattern,
            event.ts,
            device,
            address,
            |_| true,
        )?;
        let targets = &episode.targets;
        let known = self.state.lookups.get(&device);
        let outcomes: Vec<&Lookup> = targets
            .iter()
            .filter_map(|target| known.and_then(|k| k.get(target)))
            .collect();
        let count = |wanted: Option<u8>| outcomes.iter().filter(|l| l.rcode == wanted).count();
        let resolved = count(Some(NOERROR));
        let nxdomain = count(Some(NXDOMAIN));
        let names: Vec<String> = targets
            .iter()
            .filter_map(|target| {
                let name = known?.get(target)?.name.as_deref()?;
                Some(format!("{target} {name}"))
            })
            .collect();
        let mut servers: Vec<IpAddr> = outcomes.iter().map(|l| l.server).collect();
        servers.sort_unstable();
        servers.dedup();
        // Targets come sorted, so the first and last are the ends of the walked range.
        let lowest = targets.first()?;
        let highest = targets.last()?;
        let breach = MODEL
            .breach(event)
            .with_evidence("distinct_addresses", targets.len())
            .with_evidence("range", format!("{lowest} - {highest}"))
            .with_evidence("lowest_address", lowest)
            .with_evidence("highest_address", highest)
            .with_evidence("resolved", resolved)
            .with_evidence("nxdomain", nxdomain)
            .with_evidence("other_or_unanswered", outcomes.len() - resolved - nxdomain)
            .with_evidence("names_found", shown(&names))
            .with_evidence(
                "dns_servers",
                vigil_plugin_sdk::evidence::listed(&servers, 4),
            )
            .with_evidence("window_secs", fan_out.window)
            .with_evidence("threshold", fan_out.threshold)
            .with_destinations(servers)
            .with_ports(outcomes.iter().map(|l| l.port));
        let breach = episode.with_pattern(breach, fan_out.window);
        // What this episode looked up has been reported; its outcomes need not be kept.
        if let Some(known) = self.state.lookups.get_mut(&device) {
            known.retain(|target, _, _| targets.binary_search(target).is_err());
        }
        Some(breach)
    }

    /// Keeps the latest outcome of `device`'s lookup of `address`, within the per-device bound.
    fn remember(&mut self, device: IpAddr, address: IpAddr, lookup: Lookup) {
        let limit = self.config.max_lookups_per_device;
        let known = self.state.lookups.entry(device).or_default();
        let slot = known.touch(limit, lookup.at, address, || lookup.clone());
        *slot = lookup;
    }

    /// Forgets windows and outcomes that fell out of the window.
    fn expire(&mut self, now: Timestamp) {
        let fan_out = &self.config.fan_out;
        self.state.sweeps.expire_all(fan_out, now);
        self.state.lookups.retain(|_, known| {
            known.retain(|_, _, l| now.elapsed_since(l.at) < fan_out.window);
            !known.is_empty()
        });
    }
}

fn shown(names: &[String]) -> String {
    let mut text = names
        .iter()
        .take(NAMES_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > NAMES_SHOWN {
        text.push_str(&format!(" and {} more", names.len() - NAMES_SHOWN));
    }
    if text.is_empty() {
        text.push_str("none");
    }
    text
}

export_plugin!(ReverseDnsSweep);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_plugin_sdk::harness::{events::*, old_snapshot, Harness};
    use vigil_plugin_sdk::{Breach, Transport};

    const CLIENT: [u8; 4] = [10, 77, 0, 50];
    const SERVER: [u8; 4] = [10, 77, 0, 10];

    /// A PTR lookup as the DNS analyzer reports it: the query, its rcode and answers.
    fn ptr<'a>(
        secs: f64,
        client: [u8; 4],
        port: u16,
        query: &'a str,
        rcode: Option<u8>,
        answers: Vec<&'a str>,
    ) -> Event<'a> {
        Event {
            ts: Timestamp((secs * 1e6).round() as u64),
            flow: 0,
            proto: Transport::Udp,
            src: endpoint(IpAddr::from(client), 40000),
            dst: endpoint(IpAddr::from(SERVER), port),
            kind: EventKind::Dns {
                query,
                qtype: PTR,
                rcode,
                answers,
            },
        }
    }

    /// The lab's sweep: `dig -x 10.77.0.1 .. 10.77.0.60`, ~50 ms apart, where .1 and .60 have
    /// names and the rest are NXDOMAIN.
    fn lab_sweep(names: &[String], start: f64) -> Vec<Event<'_>> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let host = i + 1;
                let (rcode, answers) = match host {
                    1 => (NOERROR, vec!["gw01.corp.local"]),
                    30 => (NOERROR, vec!["web01.corp.local"]),
                    _ => (NXDOMAIN, vec![]),
                };
                ptr(
                    start + 0.05 * i as f64,
                    CLIENT,
                    53,
                    name,
                    Some(rcode),
                    answers,
                )
            })
            .collect()
    }

    fn names(count: u8) -> Vec<String> {
        (1..=count)
            .map(|host| format!("{host}.0.77.10.in-addr.arpa"))
            .collect()
    }

    fn evidence<'b>(breach: &'b Breach, name: &str) -> &'b str {
        breach.evidence(name).unwrap_or("<missing>")
    }

    #[test]
    fn sixty_ptr_lookups_of_a_subnet_raise_one_reverse_dns_sweep() {
        let names = names(60);
        let mut h: Harness<ReverseDnsSweep> = Harness::new();
        let breaches = h.feed_all(&lab_sweep(&names, 100.0));
        assert_eq!(breaches.len(), 1);
        let b = &breaches[0];
        assert_eq!(b.model, "Device / Reverse DNS Sweep");
        assert_eq!(b.device.ip, IpAddr::from(CLIENT));
        assert_eq!(b.mitre, vec!["T1018".to_string(), "T1590.002".to_string()]);
        assert_eq!(b.destinations, vec![IpAddr::from(SERVER)]);
        assert_eq!(b.ports, vec![53]);
        assert_eq!(evidence(b, "distinct_addresses"), "32");
        assert_eq!(evidence(b, "range"), "10.77.0.1 - 10.77.0.32");
        assert_eq!(evidence(b, "resolved"), "2");
        assert_eq!(evidence(b, "nxdomain"), "30");
        assert_eq!(evidence(b, "other_or_unanswered"), "0");
        assert_eq!(
            evidence(b, "names_found"),
            "10.77.0.1 gw01.corp.local, 10.77.0.30 web01.corp.local"
        );
        assert_eq!(evidence(b, "dns_servers"), "10.77.0.10");
        // Decided by the 32nd lookup.
        assert_eq!(b.ts, Timestamp(101_550_000));
    }

    #[test]
    fn a_handful_of_lookups_a_day_stays_quiet() {
        let names = names(60);
        let mut h: Harness<ReverseDnsSweep> = Harness::new();
        // A client resolving a few peers, again and again, over hours.
        let events: Vec<Event<'_>> = (0..500)
            .map(|i| {
                let name = &names[i % 5];
                ptr(
                    f64::from(i as u32) * 30.0,
                    CLIENT,
                    53,
                    name,
                    Some(0),
                    vec![],
                )
            })
            .collect();
        assert!(h.feed_all(&events).is_empty());
    }

    #[test]
    fn mdns_service_discovery_and_public_addresses_do_not_count() {
        let names = names(60);
        let public: Vec<String> = (1..=60)
            .map(|host| format!("{host}.100.51.198.in-addr.arpa"))
            .collect();
        let mut h: Harness<ReverseDnsSweep> = Harness::new();
        let mut events: Vec<Event<'_>> = names
            .iter()
            .map(|name| ptr(1.0, CLIENT, 5353, name, None, vec![]))
            .collect();
        events.extend(
            public
                .iter()
                .map(|name| ptr(2.0, CLIENT, 53, name, Some(3), vec![])),
        );
        events.push(ptr(
            3.0,
            CLIENT,
            5353,
            "_services._dns-sd._udp.local",
            None,
            vec![],
        ));
        assert!(h.feed_all(&events).is_empty());
    }

    #[test]
    fn a_second_sweep_after_a_quiet_minute_breaches_again() {
        let first = names(40);
        let second: Vec<String> = (1..=40)
            .map(|host| format!("{host}.1.77.10.in-addr.arpa"))
            .collect();
        let mut h: Harness<ReverseDnsSweep> = Harness::new();
        let mut events = lab_sweep(&first, 0.0);
        events.extend(lab_sweep(&second, 120.0));
        let breaches = h.feed_all(&events);
        assert_eq!(breaches.len(), 2);
        assert_eq!(evidence(&breaches[1], "range"), "10.77.1.1 - 10.77.1.32");
    }

    #[test]
    fn a_sweep_cut_by_a_restart_breaches_once() {
        let names = names(60);
        let events = lab_sweep(&names, 0.0);
        let mut h: Harness<ReverseDnsSweep> = Harness::new();
        assert!(h.feed_all(&events[..20]).is_empty());
        let mut h = h.restart().expect("state restores");
        let breaches = h.feed_all(&events[20..]);
        assert_eq!(breaches.len(), 1);
        assert_eq!(evidence(&breaches[0], "nxdomain"), "30");
    }

    #[test]
    fn a_version_2_snapshot_keeps_the_outcomes_of_the_sweep_in_progress() {
        let names = names(60);
        let events = lab_sweep(&names, 0.0);
        let mut h: Harness<ReverseDnsSweep> = Harness::new();
        assert!(h.feed_all(&events[..20]).is_empty());
        // Version 2 kept each device's lookups in a plain map.
        let state = h.plugin().state().expect("state");
        let per_device = |known: &BoundedMap<IpAddr, Lookup>| {
            let lookups = known.iter();
            lookups
                .map(|(address, _, l)| (*address, l.clone()))
                .collect()
        };
        let old = StateV2 {
            sweeps: state.sweeps.clone(),
            lookups: state
                .lookups
                .iter()
                .map(|(device, known)| (*device, per_device(known)))
                .collect(),
        };
        let mut plugin = ReverseDnsSweep::new(Config::default());
        let snapshot = old_snapshot::<ReverseDnsSweep, _>(2, &old);
        plugin.restore(&snapshot).expect("migrates");
        let mut h = Harness::from_plugin(plugin);
        let breaches = h.feed_all(&events[20..]);
        assert_eq!(breaches.len(), 1);
        let b = &breaches[0];
        assert_eq!(
            evidence(b, "resolved"),
            "2",
            ".1 resolved before the snapshot"
        );
        assert_eq!(evidence(b, "nxdomain"), "30");
    }

    #[test]
    fn outcomes_kept_per_device_are_bounded_oldest_first() {
        let names = names(60);
        let config = r#"{"max_lookups_per_device": 31}"#;
        let mut h = Harness::<ReverseDnsSweep>::with_config_json(config).expect("valid config");
        let breaches = h.feed_all(&lab_sweep(&names, 0.0));
        assert_eq!(breaches.len(), 1);
        let b = &breaches[0];
        // The 32nd lookup made .1's outcome, the oldest, forgotten: only .30 resolved.
        assert_eq!(evidence(b, "distinct_addresses"), "32");
        assert_eq!(evidence(b, "resolved"), "1");
        assert_eq!(evidence(b, "nxdomain"), "30");
    }

    #[test]
    fn threshold_comes_from_config() {
        let names = names(60);
        let mut h = Harness::<ReverseDnsSweep>::with_config_json(r#"{"threshold": 100}"#)
            .expect("valid config");
        assert!(h.feed_all(&lab_sweep(&names, 0.0)).is_empty());
    }

    /// The inventory host's night: it resolves the names of `names`, one a second.
    fn inventory(night: u64, names: &[String]) -> Vec<Event<'_>> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let at = vigil_plugin_sdk::harness::nights::at(night, i as f64);
                ptr(at, CLIENT, 53, name, Some(NOERROR), vec!["host.corp.local"])
            })
            .collect()
    }

    #[test]
    fn an_inventory_hosts_usual_lookups_pass_and_a_new_range_breaches() {
        let usual = names(40);
        let mut h: Harness<ReverseDnsSweep> = Harness::new();
        for night in 0..5 {
            h.feed_all(&inventory(night, &usual));
        }
        assert_eq!(h.feed_all(&inventory(5, &usual)), Vec::new());
        let other: Vec<String> = (1..=40)
            .map(|host| format!("{host}.1.77.10.in-addr.arpa"))
            .collect();
        let mut h = h.restart().expect("state restores");
        let breaches = h.feed_all(&inventory(6, &other));
        assert_eq!(breaches.len(), 1, "{breaches:#?}");
        let b = &breaches[0];
        assert_eq!(evidence(b, "range"), "10.77.1.1 - 10.77.1.32");
        assert_eq!(evidence(b, "pattern.state"), "learned");
        assert_eq!(evidence(b, "pattern.unusual"), "true");
        assert_eq!(
            evidence(b, "pattern.expected"),
            "40 usual targets (10.77.0.1, 10.77.0.2, 10.77.0.3, 10.77.0.4, 10.77.0.5, 10.77.0.6, \
             10.77.0.7, 10.77.0.8 and 32 more), at most 40 in 300 s"
        );
        assert_eq!(b.score, 50);
    }

    #[test]
    fn a_version_1_snapshot_migrates_keeping_its_windows() {
        #[derive(Serialize)]
        struct V1<'a> {
            sweeps: &'a FanOut<IpAddr, IpAddr>,
            lookups: BTreeMap<IpAddr, BTreeMap<IpAddr, Lookup>>,
        }
        let config = Config::default();
        let mut sweeps: FanOut<IpAddr, IpAddr> = FanOut::new();
        for host in 1..=20u8 {
            sweeps.observe(
                &config.fan_out,
                Timestamp::from_secs(100),
                IpAddr::from(CLIENT),
                IpAddr::from([10, 77, 0, host]),
            );
        }
        let old = V1 {
            sweeps: &sweeps,
            lookups: BTreeMap::new(),
        };
        // What version 1 wrote before the envelope: postcard of its state.
        let legacy = postcard::to_allocvec(&old).expect("encodes");
        let state = vigil_plugin_sdk::state::open::<ReverseDnsSweep>(&legacy).expect("migrates");
        let mut plugin = ReverseDnsSweep::new(config);
        plugin.set_state(state);
        let mut h = Harness::from_plugin(plugin);
        // The sweep in progress goes on: twelve more addresses make the 32.
        let more: Vec<String> = (21..=32)
            .map(|host| format!("{host}.0.77.10.in-addr.arpa"))
            .collect();
        let events: Vec<Event<'_>> = more
            .iter()
            .map(|name| ptr(101.0, CLIENT, 53, name, Some(NXDOMAIN), vec![]))
            .collect();
        let breaches = h.feed_all(&events);
        assert_eq!(breaches.len(), 1);
        assert_eq!(evidence(&breaches[0], "distinct_addresses"), "32");
    }
}
