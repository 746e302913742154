//! Meta models: they watch other models' breaches instead of traffic (plugin chaining). Any one
//! model can misfire on an odd but honest device; one device breaching several different models
//! within the hour is how an intrusion looks from the outside.
//!
//! - `Device / Large Number of Model Breaches`: a device breaches many distinct models in a
//!   window, or distinct models whose scores add up to a lot.
//! - `Device / Multiple Lateral Movement Model Breaches`: a device breaches two or more distinct
//!   models that stand for lateral movement or credential abuse in a window.
//!
//! Each fires once per device per episode: the episode runs while the device keeps breaching and
//! ends after a quiet spell, and the next episode counts from nothing.

use core::net::IpAddr;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::episode;
use vigil_plugin_sdk::evidence::listed;
use vigil_plugin_sdk::state::OldState;
use vigil_plugin_sdk::{
    export_plugin, BoundedMap, Breach, Duration, Event, EventClass, EventKind, Model, Output,
    Plugin, PluginKind, Subscriptions, Timestamp,
};

/// Its technique ids are the union of the contributing breaches' (see [`large_breach`]).
const LARGE: Model = Model {
    name: "Device / Large Number of Model Breaches",
    score: 75,
    mitre: &[],
};

/// Remote services; the SMB and RDP sub-techniques are added when the contributing breaches
/// involved those ports.
const LATERAL: Model = Model {
    name: "Device / Multiple Lateral Movement Model Breaches",
    score: 80,
    mitre: &["T1021"],
};

/// Addresses kept per contributing model: enough to show a sweep of a /22, bounded for memory.
const MAX_DESTINATIONS: usize = 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LargeConfig {
    /// A model counts while its latest breach by the device is younger than this.
    #[serde(rename = "window_secs")]
    pub window: Duration,
    /// Distinct models in the window that make a breach.
    pub min_models: usize,
    /// Or: the distinct models' scores (each model's highest) add up to this. 0 turns it off.
    pub min_total_score: u32,
    /// After a breach, the episode lasts until the device has breached nothing for this long.
    #[serde(rename = "rearm_quiet_secs")]
    pub rearm_quiet: Duration,
}

impl Default for LargeConfig {
    fn default() -> Self {
        LargeConfig {
            // An intruder's hands-on session, from foothold to discovery to moving on, plays out
            // in minutes to an hour; an honest device's rare misfires do not pile up in one.
            window: Duration::from_secs(3600),
            // One or two models may misfire on an unusual but legitimate device (a backup server
            // sweeping SMB, an admin's tools); four different suspicious behaviours in an hour is
            // a pattern no ordinary device shows.
            min_models: 4,
            // Three strong breaches (score 80 each, the top severity) tell as much as four
            // middling ones. Each model counts once, so one model repeating never adds up.
            min_total_score: 240,
            // One alert per episode; an hour of silence makes the next burst a new story.
            rearm_quiet: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LateralConfig {
    /// A model counts while its latest breach by the device is younger than this.
    #[serde(rename = "window_secs")]
    pub window: Duration,
    /// Distinct lateral-movement models in the window that make a breach.
    pub min_models: usize,
    /// The models that indicate lateral movement or credential abuse.
    pub models: Vec<String>,
    /// After a breach, the episode lasts until the device has breached none of `models` for
    /// this long.
    #[serde(rename = "rearm_quiet_secs")]
    pub rearm_quiet: Duration,
}

impl Default for LateralConfig {
    fn default() -> Self {
        LateralConfig {
            // As for the large-number model: one intrusion session.
            window: Duration::from_secs(3600),
            // Each of these alone can be one honest slip (a mistyped password, a new laptop);
            // two different ways of reaching for other hosts' services or credentials from one
            // device is an attacker moving.
            min_models: 2,
            models: [
                "Device / Suspicious SMB Scanning Activity",
                "Device / SMB Session Brute Force (Admin)",
                "Device / SMB Session Brute Force (Non-Admin)",
                "Device / Unusual NTLM Hostname",
                "Device / RDP Scan",
            ]
            .iter()
            .map(|m| m.to_string())
            .collect(),
            rearm_quiet: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub large: LargeConfig,
    pub lateral: LateralConfig,
    /// Devices tracked at once by each model; the one quiet longest is forgotten first.
    pub max_devices: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            large: LargeConfig::default(),
            lateral: LateralConfig::default(),
            max_devices: 4096,
        }
    }
}

/// What a device's breaches of one model amounted to within the episode.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Seen {
    first: Timestamp,
    last: Timestamp,
    count: u32,
    /// The highest score among them.
    score: u8,
    mitre: BTreeSet<String>,
    destinations: BTreeSet<IpAddr>,
    ports: BTreeSet<u16>,
}

/// What one device breached in its current episode of one meta model.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Streak {
    models: BTreeMap<String, Seen>,
    /// When the device last breached a counted model.
    last: Timestamp,
    /// Set once this episode has breached.
    fired: bool,
}

impl Streak {
    fn total_score(&self) -> u32 {
        self.models.values().map(|s| u32::from(s.score)).sum()
    }

    fn breaches(&self) -> u32 {
        self.models.values().map(|s| s.count).sum()
    }

    fn first(&self) -> Timestamp {
        self.models
            .values()
            .map(|s| s.first)
            .min()
            .unwrap_or(self.last)
    }

    fn destinations(&self) -> Vec<IpAddr> {
        let all: BTreeSet<IpAddr> = self
            .models
            .values()
            .flat_map(|s| s.destinations.iter().copied())
            .collect();
        all.into_iter().collect()
    }

    fn ports(&self) -> BTreeSet<u16> {
        self.models
            .values()
            .flat_map(|s| s.ports.iter().copied())
            .collect()
    }

    /// `Device / RDP Scan (2 breaches, score 65); ...`, in name order.
    fn describe_models(&self) -> String {
        let parts: Vec<String> = self
            .models
            .iter()
            .map(|(name, s)| {
                let plural = if s.count == 1 { "" } else { "es" };
                format!("{name} ({} breach{plural}, score {})", s.count, s.score)
            })
            .collect();
        parts.join("; ")
    }
}

/// A breach event's fields that the meta models keep.
struct Contribution<'a> {
    ts: Timestamp,
    device: IpAddr,
    model: &'a str,
    score: u8,
    mitre: &'a [&'a str],
    destinations: &'a [IpAddr],
    ports: &'a [u16],
}

/// Per-device episodes of one meta model.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Tally {
    /// Touched at each breach (as [`Streak::last`]): the quietest device is forgotten first.
    devices: BoundedMap<IpAddr, Streak>,
}

impl Tally {
    /// Adds a breach to its device's episode, first ending the episode if it breached and has
    /// been quiet for `rearm_quiet`, and dropping models older than the window.
    fn record(
        &mut self,
        window: Duration,
        rearm_quiet: Duration,
        max_devices: usize,
        c: &Contribution<'_>,
    ) -> &mut Streak {
        let streak = self.devices.touch(max_devices, c.ts, c.device, || Streak {
            models: BTreeMap::new(),
            last: c.ts,
            fired: false,
        });
        if episode::rearm(&mut streak.fired, streak.last, c.ts, rearm_quiet) {
            // What the last episode saw was already reported.
            streak.models.clear();
        }
        streak
            .models
            .retain(|_, seen| c.ts.elapsed_since(seen.last) < window);
        let seen = streak
            .models
            .entry(c.model.to_string())
            .or_insert_with(|| Seen {
                first: c.ts,
                last: c.ts,
                count: 0,
                score: 0,
                mitre: BTreeSet::new(),
                destinations: BTreeSet::new(),
                ports: BTreeSet::new(),
            });
        seen.last = seen.last.max(c.ts);
        seen.count = seen.count.saturating_add(1);
        seen.score = seen.score.max(c.score);
        seen.mitre.extend(c.mitre.iter().map(|m| m.to_string()));
        for ip in c.destinations {
            if seen.destinations.len() >= MAX_DESTINATIONS {
                break;
            }
            seen.destinations.insert(*ip);
        }
        seen.ports.extend(c.ports.iter().copied());
        streak.last = streak.last.max(c.ts);
        streak
    }

    /// Forgets devices whose every model has left the window and whose episode has ended: what
    /// [`Tally::record`] would clear anyway.
    fn expire(&mut self, now: Timestamp, window: Duration, rearm_quiet: Duration) {
        let horizon = window.max(rearm_quiet);
        self.devices
            .retain(|_, _, streak| now.elapsed_since(streak.last) < horizon);
    }
}

/// State version 1: each meta model's devices in a plain map.
#[derive(Debug, Serialize, Deserialize)]
struct StateV1 {
    large: TallyV1,
    lateral: TallyV1,
}

#[derive(Debug, Serialize, Deserialize)]
struct TallyV1 {
    devices: BTreeMap<IpAddr, Streak>,
}

impl From<TallyV1> for Tally {
    fn from(old: TallyV1) -> Tally {
        let devices = old.devices.into_iter();
        Tally {
            devices: devices.map(|(ip, s)| (ip, s.last, s)).collect(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    large: Tally,
    lateral: Tally,
}

pub struct MetaModels {
    config: Config,
    state: State,
}

/// The large-number breach: every contributing model with its count and score, and the union of
/// their technique ids, destinations and ports.
fn large_breach(event: &Event<'_>, streak: &Streak, window: Duration) -> Breach {
    let mut breach = LARGE.breach(event);
    let mitre: BTreeSet<&String> = streak.models.values().flat_map(|s| &s.mitre).collect();
    breach.mitre = mitre.into_iter().cloned().collect();
    breach
        .with_destinations(streak.destinations())
        .with_ports(streak.ports())
        .with_evidence("models", streak.describe_models())
        .with_evidence("distinct_models", streak.models.len())
        .with_evidence("breaches", streak.breaches())
        .with_evidence("total_score", streak.total_score())
        .with_evidence("first_breach", streak.first())
        .with_evidence("last_breach", streak.last)
        .with_evidence("window_secs", window)
}

/// The lateral-movement breach: the lateral models breached and every host they reached for.
fn lateral_breach(event: &Event<'_>, streak: &Streak, window: Duration) -> Breach {
    let mut breach = LATERAL.breach(event);
    let ports = streak.ports();
    // SMB/Windows admin shares and RDP, when the contributing breaches reached for them.
    if ports.contains(&445) || ports.contains(&139) {
        breach.mitre.push("T1021.002".to_string());
    }
    if ports.contains(&3389) {
        breach.mitre.push("T1021.001".to_string());
    }
    let destinations = streak.destinations();
    breach
        .with_evidence("models", streak.describe_models())
        .with_evidence("distinct_models", streak.models.len())
        .with_evidence("destinations", listed(&destinations, 10))
        .with_evidence("first_breach", streak.first())
        .with_evidence("last_breach", streak.last)
        .with_evidence("window_secs", window)
        .with_destinations(destinations)
        .with_ports(ports)
}

impl Plugin for MetaModels {
    type Config = Config;
    type State = State;
    /// 2: each meta model's devices in a [`BoundedMap`]; 1 kept a plain map.
    const STATE_VERSION: u32 = 2;
    const NAME: &'static str = "meta-models";
    const KIND: PluginKind = PluginKind::Detector;
    const SUBSCRIPTIONS: Subscriptions = Subscriptions::NONE
        .with(EventClass::Breach)
        .with(EventClass::Tick);

    fn new(config: Config) -> Self {
        MetaModels {
            config,
            state: State::default(),
        }
    }

    fn on_tick(&mut self, now: Timestamp, _: &mut Output) {
        let (large, lateral) = (&self.config.large, &self.config.lateral);
        self.state
            .large
            .expire(now, large.window, large.rearm_quiet);
        self.state
            .lateral
            .expire(now, lateral.window, lateral.rearm_quiet);
    }

    fn on_event(&mut self, event: &Event<'_>, out: &mut Output) {
        let (model, score, mitre, destinations, ports, hop) = match &event.kind {
            EventKind::Breach {
                model,
                score,
                mitre,
                destinations,
                ports,
                hop,
                ..
            } => (*model, *score, mitre, destinations, ports, *hop),
            _ => return,
        };
        // Our own models never count towards themselves, and nor does any breach built from
        // other breaches (hop > 0): it repeats behaviour already counted, adds none.
        if hop > 0 || model == LARGE.name || model == LATERAL.name {
            return;
        }
        // A breach that lists no destinations still names the flow that decided it.
        let deciding = [event.dst.ip];
        let destinations: &[IpAddr] = if destinations.is_empty() && !event.dst.ip.is_unspecified() {
            &deciding
        } else {
            destinations
        };
        let contribution = Contribution {
            ts: event.ts,
            device: event.src.ip,
            model,
            score,
            mitre,
            destinations,
            ports,
        };

        let large = &self.config.large;
        let streak = self.state.large.record(
            large.window,
            large.rearm_quiet,
            self.config.max_devices,
            &contribution,
        );
        let by_count = streak.models.len() >= large.min_models.max(1);
        let by_score = large.min_total_score > 0 && streak.total_score() >= large.min_total_score;
        if !streak.fired && (by_count || by_score) {
            streak.fired = true;
            out.breach(large_breach(event, streak, large.window));
        }

        let lateral = &self.config.lateral;
        if !lateral.models.iter().any(|m| m == model) {
            return;
        }
        let streak = self.state.lateral.record(
            lateral.window,
            lateral.rearm_quiet,
            self.config.max_devices,
            &contribution,
        );
        if !streak.fired && streak.models.len() >= lateral.min_models.max(1) {
            streak.fired = true;
            out.breach(lateral_breach(event, streak, lateral.window));
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
                    large: old.large.into(),
                    lateral: old.lateral.into(),
                })
            }
            _ => Err(format!("unknown state version {from_version}")),
        }
    }
}

export_plugin!(MetaModels);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_plugin_sdk::harness::{events::tick, old_snapshot, Harness};
    use vigil_plugin_sdk::{Endpoint, Transport};

    const T0: u64 = 1_800_000_000;
    const NTLM: &str = "Device / Unusual NTLM Hostname";
    const RDP: &str = "Device / RDP Scan";
    const SMB_SCAN: &str = "Device / Suspicious SMB Scanning Activity";
    const BRUTE: &str = "Device / SMB Session Brute Force (Admin)";
    const NET_SCAN: &str = "Device / Network Scan";
    const TOOLS: &str = "Device / Attack and Recon Tools";
    const RDNS: &str = "Device / Reverse DNS Sweep";

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 77, 0, last])
    }

    fn endpoint(last: u8, port: u16) -> Endpoint {
        Endpoint {
            ip: ip(last),
            port,
            mac: [0; 6],
        }
    }

    /// A detector's breach by device `.device` at `secs` after T0, to `.10` on `port`.
    fn breach(model: &str, secs: u64, device: u8, port: u16) -> Breach {
        let mitre = match model {
            NTLM => vec!["T1078"],
            BRUTE => vec!["T1110.001", "T1110.003"],
            _ => vec!["T1046"],
        };
        Breach {
            model: model.into(),
            ts: Timestamp::from_secs(T0 + secs),
            device: endpoint(device, 40000),
            dest: endpoint(10, port),
            proto: Transport::Tcp,
            score: 60,
            mitre: mitre.into_iter().map(String::from).collect(),
            destinations: vec![ip(10)],
            ports: vec![port],
            evidence: Vec::new(),
        }
    }

    fn feed(h: &mut Harness<MetaModels>, b: &Breach) -> Vec<Breach> {
        h.feed(&b.to_event("detector", 0))
    }

    /// Four different models, a minute apart, by `.50`: the attack of the lab in short.
    fn intrusion(start: u64) -> Vec<Breach> {
        vec![
            breach(NTLM, start, 50, 445),
            breach(TOOLS, start + 60, 50, 80),
            breach(NET_SCAN, start + 120, 50, 9401),
            breach(RDNS, start + 180, 50, 53),
        ]
    }

    fn of_model<'b>(breaches: &'b [Breach], model: &str) -> Vec<&'b Breach> {
        breaches.iter().filter(|b| b.model == model).collect()
    }

    #[test]
    fn four_distinct_models_within_the_hour_raise_large_number_of_model_breaches() {
        let mut h: Harness<MetaModels> = Harness::new();
        let steps = intrusion(0);
        for b in &steps[..3] {
            assert!(feed(&mut h, b).is_empty(), "three models are not enough");
        }
        let raised = feed(&mut h, &steps[3]);
        assert_eq!(raised.len(), 1);
        let b = &raised[0];
        assert_eq!(b.model, LARGE.name);
        assert_eq!(b.device.ip, ip(50));
        assert_eq!(b.ts, Timestamp::from_secs(T0 + 180));
        assert_eq!(b.score, 75);
        assert_eq!(b.mitre, vec!["T1046".to_string(), "T1078".to_string()]);
        assert_eq!(b.destinations, vec![ip(10)]);
        assert_eq!(b.ports, vec![53, 80, 445, 9401]);
        assert_eq!(
            b.evidence("models"),
            Some(
                "Device / Attack and Recon Tools (1 breach, score 60); \
                 Device / Network Scan (1 breach, score 60); \
                 Device / Reverse DNS Sweep (1 breach, score 60); \
                 Device / Unusual NTLM Hostname (1 breach, score 60)"
            )
        );
        assert_eq!(b.evidence("distinct_models"), Some("4"));
        assert_eq!(b.evidence("breaches"), Some("4"));
        assert_eq!(b.evidence("total_score"), Some("240"));
        assert_eq!(b.evidence("first_breach"), Some("1800000000.000000"));
        assert_eq!(b.evidence("last_breach"), Some("1800000180.000000"));
        assert_eq!(b.evidence("window_secs"), Some("3600"));
    }

    #[test]
    fn one_model_breaching_again_and_again_is_not_a_large_number() {
        let mut h: Harness<MetaModels> = Harness::new();
        let repeats: Vec<Breach> = (0..20).map(|i| breach(NET_SCAN, i * 60, 50, 80)).collect();
        for b in &repeats {
            assert!(feed(&mut h, b).is_empty());
        }
    }

    #[test]
    fn models_breached_longer_ago_than_the_window_do_not_count() {
        let mut h: Harness<MetaModels> = Harness::new();
        let steps = intrusion(0);
        for b in &steps[..3] {
            feed(&mut h, b);
        }
        // The first three were an hour and more ago.
        assert!(feed(&mut h, &breach(RDNS, 3600 + 120, 50, 53)).is_empty());
    }

    #[test]
    fn devices_are_counted_apart() {
        let mut h: Harness<MetaModels> = Harness::new();
        for (i, model) in [NTLM, TOOLS, NET_SCAN, RDNS].iter().enumerate() {
            let device = 50 + (i as u8 % 2);
            assert!(feed(&mut h, &breach(model, i as u64, device, 445)).is_empty());
        }
    }

    #[test]
    fn one_breach_per_episode_then_a_new_episode_after_an_hour_of_quiet() {
        let mut h: Harness<MetaModels> = Harness::new();
        let mut raised = Vec::new();
        for b in &intrusion(0) {
            raised.extend(feed(&mut h, b));
        }
        // The same episode: more models, breaching every half hour, never an hour apart.
        for (i, model) in [SMB_SCAN, BRUTE, TOOLS, NTLM, RDNS].iter().enumerate() {
            raised.extend(feed(&mut h, &breach(model, 1800 * (i as u64 + 1), 50, 139)));
        }
        assert_eq!(of_model(&raised, LARGE.name).len(), 1);
        // Silent for over an hour: the next burst is a new episode, counted from nothing.
        let next = 1800 * 5 + 3601;
        assert!(feed(&mut h, &breach(NET_SCAN, next, 50, 80)).is_empty());
        let again: Vec<Breach> = intrusion(next + 10)
            .iter()
            .flat_map(|b| feed(&mut h, b))
            .collect();
        assert_eq!(of_model(&again, LARGE.name).len(), 1);
    }

    #[test]
    fn three_strong_models_add_up_to_a_large_number() {
        let mut h: Harness<MetaModels> = Harness::new();
        let mut raised = Vec::new();
        for (i, model) in [NTLM, TOOLS, RDNS].iter().enumerate() {
            let mut b = breach(model, i as u64 * 10, 50, 53);
            b.score = 80;
            raised.extend(feed(&mut h, &b));
        }
        assert_eq!(raised.len(), 1);
        assert_eq!(raised[0].evidence("total_score"), Some("240"));
        assert_eq!(raised[0].evidence("distinct_models"), Some("3"));
    }

    #[test]
    fn two_lateral_movement_models_raise_multiple_lateral_movement_model_breaches() {
        let mut h: Harness<MetaModels> = Harness::new();
        assert!(feed(&mut h, &breach(NTLM, 0, 50, 445)).is_empty());
        assert!(feed(&mut h, &breach(NET_SCAN, 30, 50, 80)).is_empty());
        let mut scan = breach(RDP, 80, 50, 3389);
        scan.destinations = (1..=254).map(ip).collect();
        let raised = feed(&mut h, &scan);
        assert_eq!(raised.len(), 1);
        let b = &raised[0];
        assert_eq!(b.model, LATERAL.name);
        assert_eq!(b.device.ip, ip(50));
        assert_eq!(b.score, 80);
        assert_eq!(b.mitre, vec!["T1021", "T1021.002", "T1021.001"]);
        assert_eq!(b.destinations, (1..=254).map(ip).collect::<Vec<_>>());
        assert_eq!(b.ports, vec![445, 3389], "the network scan is not lateral");
        assert_eq!(
            b.evidence("models"),
            Some(
                "Device / RDP Scan (1 breach, score 60); \
                 Device / Unusual NTLM Hostname (1 breach, score 60)"
            )
        );
        assert_eq!(
            b.evidence("destinations"),
            Some(
                "10.77.0.1, 10.77.0.2, 10.77.0.3, 10.77.0.4, 10.77.0.5, 10.77.0.6, 10.77.0.7, \
                 10.77.0.8, 10.77.0.9, 10.77.0.10 and 244 more"
            )
        );
        // More lateral models in the same episode add nothing (a fourth model is a large number).
        let more = feed(&mut h, &breach(BRUTE, 120, 50, 445));
        assert!(of_model(&more, LATERAL.name).is_empty());
    }

    #[test]
    fn one_lateral_model_repeated_or_with_discovery_models_is_not_lateral_movement() {
        let mut h: Harness<MetaModels> = Harness::new();
        let mut raised = Vec::new();
        for i in 0..5 {
            raised.extend(feed(&mut h, &breach(BRUTE, i * 60, 50, 445)));
        }
        for model in [NET_SCAN, TOOLS] {
            raised.extend(feed(&mut h, &breach(model, 400, 50, 80)));
        }
        assert!(of_model(&raised, LATERAL.name).is_empty());
    }

    #[test]
    fn own_models_and_breaches_built_from_breaches_do_not_count() {
        let mut h: Harness<MetaModels> = Harness::new();
        let mut raised = Vec::new();
        for (i, model) in [LARGE.name, LATERAL.name].iter().enumerate() {
            raised.extend(feed(&mut h, &breach(model, i as u64, 50, 445)));
        }
        for (i, model) in [NTLM, RDP].iter().enumerate() {
            raised.extend(h.feed(&breach(model, 10 + i as u64, 50, 445).to_event("other-meta", 1)));
        }
        raised.extend(feed(&mut h, &breach(NET_SCAN, 20, 50, 80)));
        assert!(raised.is_empty(), "{raised:?}");
    }

    #[test]
    fn episodes_survive_a_restart() {
        let mut h: Harness<MetaModels> = Harness::new();
        for b in &intrusion(0)[..3] {
            assert!(feed(&mut h, b).is_empty());
        }
        let mut h = h.restart().expect("restores");
        // Both models resume where they were: a fourth model, and a second lateral one.
        let raised = feed(&mut h, &breach(RDP, 190, 50, 3389));
        let models: Vec<&str> = raised.iter().map(|b| b.model.as_str()).collect();
        assert_eq!(models, [LARGE.name, LATERAL.name]);
        // And both episodes, having breached, stay quiet after another restart.
        let mut h = h.restart().expect("restores");
        assert!(feed(&mut h, &breach(SMB_SCAN, 200, 50, 445)).is_empty());
    }

    #[test]
    fn a_version_1_snapshot_keeps_its_episodes_and_the_quietest_is_still_forgotten_first() {
        let config = r#"{"max_devices": 2}"#;
        let mut h = Harness::<MetaModels>::with_config_json(config).expect("valid config");
        let steps = intrusion(0);
        feed(&mut h, &breach(NTLM, 0, 51, 445));
        for b in &steps[..3] {
            assert!(feed(&mut h, b).is_empty());
        }
        // Version 1 kept each meta model's devices in a plain map.
        let v1 = |tally: &Tally| TallyV1 {
            devices: tally
                .devices
                .iter()
                .map(|(ip, _, s)| (*ip, s.clone()))
                .collect(),
        };
        let state = &h.plugin().state;
        let old = StateV1 {
            large: v1(&state.large),
            lateral: v1(&state.lateral),
        };
        let snapshot = old_snapshot::<MetaModels, _>(1, &old);
        let mut plugin = MetaModels::new(h.plugin().config.clone());
        plugin.restore(&snapshot).expect("migrates");
        let mut h = Harness::from_plugin(plugin);
        assert_eq!(
            of_model(&feed(&mut h, &steps[3]), LARGE.name).len(),
            1,
            "the episode goes on"
        );
        // .51 breached longest ago: a third device forgets it, not .50.
        feed(&mut h, &breach(NTLM, 200, 52, 445));
        let large = &h.plugin().state.large.devices;
        assert!(large.contains_key(&ip(50)) && !large.contains_key(&ip(51)));
    }

    #[test]
    fn ticks_forget_devices_after_the_window_and_the_quiet_spell() {
        let mut h: Harness<MetaModels> = Harness::new();
        feed(&mut h, &breach(NTLM, 0, 50, 445));
        h.feed(&tick((T0 + 3599) as f64));
        assert_eq!(h.plugin().state.large.devices.len(), 1);
        assert_eq!(h.plugin().state.lateral.devices.len(), 1);
        h.feed(&tick((T0 + 3600) as f64));
        assert!(h.plugin().state.large.devices.is_empty());
        assert!(h.plugin().state.lateral.devices.is_empty());
    }

    #[test]
    fn tracked_devices_are_bounded() {
        let mut h =
            Harness::<MetaModels>::with_config_json(r#"{"max_devices": 3}"#).expect("valid config");
        for device in 1..=10u8 {
            feed(&mut h, &breach(NTLM, u64::from(device), device, 445));
        }
        assert_eq!(h.plugin().state.large.devices.len(), 3);
        assert!(h.plugin().state.large.devices.contains_key(&ip(10)));
    }

    #[test]
    fn thresholds_and_lateral_models_come_from_config() {
        let json = r#"{"large": {"min_models": 2, "min_total_score": 0},
                       "lateral": {"models": ["Device / Network Scan", "Device / Reverse DNS Sweep"]}}"#;
        let mut h = Harness::<MetaModels>::with_config_json(json).expect("valid config");
        assert!(feed(&mut h, &breach(NET_SCAN, 0, 50, 80)).is_empty());
        let raised = feed(&mut h, &breach(RDNS, 5, 50, 53));
        let models: Vec<&str> = raised.iter().map(|b| b.model.as_str()).collect();
        assert_eq!(models, [LARGE.name, LATERAL.name]);
        assert_eq!(
            raised[1].mitre,
            vec!["T1021"],
            "no SMB or RDP port involved"
        );
    }
}
