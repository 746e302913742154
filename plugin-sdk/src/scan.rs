//! The shared shape of scan models: a device touching many distinct targets in a window, beyond
//! what that device usually does.
//!
//! A scan plugin says which flow starts count and what a target is; [`ScanModel`] does the
//! counting ([`FanOut`]), learns each device's usual targets and fan-out ([`FanOutProfiles`]),
//! expires on `Tick`, and builds a breach whose evidence lists every destination address and
//! port of the episode and what the device was expected to do.
//!
//! While the model or the device is learning, the fixed threshold (the floor) decides as it
//! always did, and the breach says so; past it, a breach needs the floor's worth of targets the
//! device was never seen with, or a window well over its learned peak. Targets of a breaching
//! episode are not learned: an anomaly does not become normal by happening once.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::marker::PhantomData;
use core::net::IpAddr;
use serde::{Deserialize, Serialize};

use crate::evidence;
use crate::newcomers::{Held, Newcomers};
use crate::plugin::Release;
use crate::profile::{FanOutProfiles, FanOutVerdict, Learning, PatternConfig};
use crate::window::{FanOut, FanOutConfig};
use crate::{Breach, Duration, Event, EventKind, FlowFilter, Model, Output};

/// The flows a scan model receives: their starts. Ends carry nothing it counts; and every start
/// counts, whatever its port or transport, since it tells how long the model has known the
/// device (a device known for weeks that suddenly sweeps a service is unusual, not new).
pub const FLOW_STARTS: FlowFilter = FlowFilter::ANY.flow_start();

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

/// Who a window is counted for: a device, or a device and one of its peers. The pattern is
/// learned per device (the first address), across all its windows.
pub trait Counted: Ord + Clone {
    fn device(&self) -> IpAddr;
}

impl Counted for IpAddr {
    fn device(&self) -> IpAddr {
        *self
    }
}

impl Counted for (IpAddr, IpAddr) {
    fn device(&self) -> IpAddr {
        self.0
    }
}

/// Evidence names a breach carries about the device's pattern of life. The host shows them
/// under `vigil.pattern` in alerts; the responder reads [`pattern::UNUSUAL`] and
/// [`pattern::STATE`].
pub mod pattern {
    /// Prefix of every pattern-of-life evidence name.
    pub const PREFIX: &str = "pattern.";
    /// `learning` or `learned`.
    pub const STATE: &str = "pattern.state";
    /// When learning began (`learning`), or when the pattern was learned (`learned`).
    pub const SINCE: &str = "pattern.since";
    /// When learning ends, while learning.
    pub const UNTIL: &str = "pattern.until";
    /// What the device usually does.
    pub const EXPECTED: &str = "pattern.expected";
    /// What it did in the breaching window.
    pub const SEEN: &str = "pattern.seen";
    /// `true` when the activity is beyond the device's own pattern, `false` when only the fixed
    /// threshold was crossed by activity its pattern includes (possible only while learning).
    pub const UNUSUAL: &str = "pattern.unusual";
    pub const LEARNING: &str = "learning";
    pub const LEARNED: &str = "learned";

    /// How a breach stands against its device's pattern of life, from its evidence.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Standing {
        /// Raised while the device's (or the model's) pattern was still being learned: the
        /// fixed threshold decided alone; `usual` when what crossed it is what the device did
        /// while learning.
        Learning { usual: bool },
        /// Past learning, of activity the device's pattern includes (only a floor crossed).
        Usual,
        /// Beyond the device's pattern, or from a model that does not learn (a signature, a
        /// learned hostname or account): evidence of something new.
        Unusual,
        /// Built from other breaches (`hop` > 0): it repeats what they showed and adds nothing.
        Derived,
    }

    impl Standing {
        pub fn of(evidence: &[(&str, &str)], hop: u8) -> Standing {
            if hop > 0 {
                return Standing::Derived;
            }
            let said = |name: &str| evidence.iter().find(|(n, _)| *n == name).map(|e| e.1);
            let usual = said(UNUSUAL) == Some("false");
            if said(STATE) == Some(LEARNING) {
                Standing::Learning { usual }
            } else if usual {
                Standing::Usual
            } else {
                Standing::Unusual
            }
        }
    }
}

/// A breaching window: its targets and how they compare with the device's pattern.
#[derive(Debug, Clone)]
pub struct Episode<T> {
    pub targets: Vec<T>,
    pub verdict: FanOutVerdict<IpAddr, T>,
    /// What the device is known for, for the evidence.
    pub usual: Vec<T>,
}

/// [`FanOut`] windows with each device's learned pattern: the part of a scan model that is the
/// same for every scan and sweep, usable on its own by models with their own evidence.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(
    serialize = "D: Serialize, T: Serialize",
    deserialize = "D: Ord + Deserialize<'de>, T: Ord + Clone + Deserialize<'de>"
))]
pub struct LearnedFanOut<D: Ord, T: Ord> {
    fan_out: FanOut<D, T>,
    profiles: FanOutProfiles<IpAddr, T>,
    /// Devices seen on one flow so far, not yet in `profiles` (see [`Newcomers`]).
    #[serde(skip, default = "Newcomers::new")]
    newcomers: Newcomers<D, T>,
}

impl<D: Ord + Clone, T: Ord + Clone> Default for LearnedFanOut<D, T> {
    fn default() -> Self {
        LearnedFanOut {
            fan_out: FanOut::new(),
            profiles: FanOutProfiles::default(),
            newcomers: Newcomers::new(),
        }
    }
}

impl<D: Counted, T: Target> LearnedFanOut<D, T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Windows kept before learning existed (a snapshot from an older version): the patterns
    /// start empty.
    pub fn from_windows(fan_out: FanOut<D, T>) -> Self {
        LearnedFanOut {
            fan_out,
            profiles: FanOutProfiles::new(),
            newcomers: Newcomers::new(),
        }
    }

    /// Notes that `device` is active (any event of it): its age, and the model's.
    pub fn seen(
        &mut self,
        config: &FanOutConfig,
        pattern: &PatternConfig,
        now: crate::Timestamp,
        device: IpAddr,
    ) {
        if !pattern.learn {
            return;
        }
        if !self.profiles.knows(&device) {
            self.profiles.start(now);
            match self.newcomers.get_mut(device) {
                None => {
                    self.newcomers.hold(Held {
                        device,
                        first: now,
                        touch: None,
                    });
                    return;
                }
                // Seen again at the same moment: nothing to learn from it.
                Some(held) if held.first == now => return,
                Some(_) => self.admit(config, pattern, device),
            }
        }
        self.profiles.seen(pattern, now, &device);
    }

    /// Whether a touch of `counted` can wait in the newcomers' table: a first flow cannot
    /// breach (the floor is at least two targets), so holding it changes nothing but the cost.
    fn holds(
        &mut self,
        config: &FanOutConfig,
        now: crate::Timestamp,
        counted: &D,
        target: &T,
    ) -> bool {
        let device = counted.device();
        if config.threshold < 2 || self.profiles.knows(&device) || self.fan_out.contains(counted) {
            return false;
        }
        self.profiles.start(now);
        match self.newcomers.get_mut(device) {
            None => {
                self.newcomers.hold(Held {
                    device,
                    first: now,
                    touch: Some((now, counted.clone(), target.clone())),
                });
                true
            }
            Some(held) if held.touch.is_none() && held.first <= now => {
                held.touch = Some((now, counted.clone(), target.clone()));
                true
            }
            Some(_) => false,
        }
    }

    /// Moves a held newcomer into the pattern store, replaying its held flow.
    fn admit(&mut self, config: &FanOutConfig, pattern: &PatternConfig, device: IpAddr) {
        let Some(held) = self.newcomers.take(device) else {
            return;
        };
        self.profiles.seen(pattern, held.first, &device);
        if let Some((at, counted, target)) = held.touch {
            // One target cannot reach a floor of two: this only learns.
            let _ = self.count(config, pattern, at, counted, target, |_| false);
        }
    }

    /// Expires old targets; call on `Tick`.
    pub fn expire_all(&mut self, config: &FanOutConfig, now: crate::Timestamp) {
        self.fan_out.expire_all(config, now);
    }

    /// Counts `target` for `counted` at `now` and learns it; returns the episode when this
    /// touch makes it breach: the floor reached, `accept` agreeing with the window's targets,
    /// and (past learning) the window beyond the device's pattern.
    pub fn observe(
        &mut self,
        config: &FanOutConfig,
        pattern: &PatternConfig,
        now: crate::Timestamp,
        counted: D,
        target: T,
        accept: impl FnOnce(&[T]) -> bool,
    ) -> Option<Episode<T>> {
        if pattern.learn {
            if self.holds(config, now, &counted, &target) {
                return None;
            }
            self.admit(config, pattern, counted.device());
        }
        self.count(config, pattern, now, counted, target, accept)
    }

    /// [`LearnedFanOut::observe`] for a device in the pattern store (or when nothing is learned).
    fn count(
        &mut self,
        config: &FanOutConfig,
        pattern: &PatternConfig,
        now: crate::Timestamp,
        counted: D,
        target: T,
        accept: impl FnOnce(&[T]) -> bool,
    ) -> Option<Episode<T>> {
        if !pattern.learn {
            let targets = self
                .fan_out
                .observe_where(config, now, counted, target, accept)?;
            return Some(Episode {
                verdict: FanOutVerdict {
                    learning: Learning::Off,
                    peer: None,
                    seen: targets.len(),
                    new: Vec::new(),
                    peak: 0,
                    unusual: true,
                },
                targets,
                usual: Vec::new(),
            });
        }
        let device = counted.device();
        self.profiles.seen(pattern, now, &device);
        let profiles = &self.profiles;
        let mut verdict = None;
        let fired =
            self.fan_out
                .observe_where(config, now, counted.clone(), target.clone(), |targets| {
                    // The model's own condition first: it is cheap, and a wide sweep that
                    // fails it (one port across many hosts) is asked again on every new target.
                    if !accept(targets) {
                        return false;
                    }
                    let judged = profiles.judge(
                        pattern,
                        now,
                        config.window,
                        &device,
                        targets,
                        config.threshold,
                    );
                    let breaches = judged.breaches();
                    verdict = Some(judged);
                    breaches
                });
        let learned = self.profiles.learning(pattern, now, &device).is_learned();
        // Past learning, what a breaching episode touches stays unusual until it is seen on
        // another occasion; during learning everything is the pattern.
        if !(learned && self.fan_out.fired(&counted)) {
            // The usual rate: past learning, a window's new targets count towards the peak only
            // once they are usual, so a window growing towards a breach does not raise the bar
            // it is judged against.
            let mut in_window = self.fan_out.count(&counted);
            let peak = self.profiles.peak(pattern, now, &device);
            if learned && in_window > usize::try_from(peak).unwrap_or(usize::MAX) {
                in_window = self
                    .fan_out
                    .window(&counted)
                    .filter(|t| self.profiles.is_usual(now, config.window, &device, t))
                    .count();
            }
            self.profiles
                .learn(pattern, now, &device, target, in_window);
        }
        let targets = fired?;
        let verdict = verdict?;
        if learned {
            self.profiles.forget(&device, &verdict.new);
        }
        let usual = self.profiles.usual(pattern, now, config.window, &device);
        Some(Episode {
            targets,
            verdict,
            usual,
        })
    }

    /// Devices whose pattern is kept.
    pub fn devices(&self) -> usize {
        self.profiles.len()
    }
}

/// How a target reads in evidence: `10.0.0.1:445`, `10.0.0.1` or `port 445`.
fn shown<T: Target>(target: &T) -> String {
    match (target.ip(), target.port()) {
        (Some(ip), Some(port)) => format!("{ip}:{port}"),
        (Some(ip), None) => ip.to_string(),
        (None, Some(port)) => format!("port {port}"),
        (None, None) => String::new(),
    }
}

fn listed<T: Target>(targets: &[T], shown_first: usize) -> String {
    evidence::listed_or(targets.iter().map(shown), shown_first, "none")
}

fn ports<T: Target>(targets: &[T]) -> BTreeSet<u16> {
    targets.iter().filter_map(Target::port).collect()
}

impl<T: Target> Episode<T> {
    /// `breach` with the pattern-of-life evidence ([`pattern`]) and its score scaled by how far
    /// beyond the device's pattern the window went.
    pub fn with_pattern(&self, mut breach: Breach, window: Duration) -> Breach {
        let verdict = &self.verdict;
        breach.score = verdict.score(breach.score);
        let (state, since, until) = match verdict.learning {
            Learning::Learning { since, until } => (pattern::LEARNING, since, Some(until)),
            Learning::Learned { since } => (pattern::LEARNED, since, None),
            // Nothing learned, nothing to compare with: the model's own evidence says it all.
            Learning::Off => return breach,
        };
        let expected = if self.usual.is_empty() {
            String::from("nothing: no usual targets learned for this device")
        } else {
            let known_ports: Vec<String> = ports(&self.usual).iter().map(u16::to_string).collect();
            let mut text = format!(
                "{} usual targets ({}), at most {} in {window} s",
                self.usual.len(),
                listed(&self.usual, 8),
                verdict.peak
            );
            if !known_ports.is_empty() {
                text.push_str(&format!(", ports {}", known_ports.join(", ")));
            }
            text
        };
        let expected = match verdict.peer {
            Some(peer) => {
                format!("{expected}; compared with its peer {peer}, which it behaves like")
            }
            None => expected,
        };
        let mut seen = format!(
            "{} targets in {window} s, {} new for this device ({})",
            verdict.seen,
            verdict.new.len(),
            listed(&verdict.new, 8)
        );
        let usual_ports = ports(&self.usual);
        let new_ports: Vec<String> = ports(&verdict.new)
            .difference(&usual_ports)
            .map(u16::to_string)
            .collect();
        if !new_ports.is_empty() {
            seen.push_str(&format!("; new ports {}", new_ports.join(", ")));
        }
        breach = breach
            .with_evidence(pattern::STATE, state)
            .with_evidence(pattern::SINCE, since.rfc3339());
        if let Some(until) = until {
            breach = breach.with_evidence(pattern::UNTIL, until.rfc3339());
        }
        breach
            .with_evidence(pattern::EXPECTED, expected)
            .with_evidence(pattern::SEEN, seen)
            .with_evidence(pattern::UNUSUAL, verdict.unusual)
    }
}

/// Where a scan model's config keeps its window and floor, and how it learns patterns.
pub trait ScanSettings {
    fn fan_out(&self) -> &FanOutConfig;
    fn pattern(&self) -> &PatternConfig;
}

/// A scan model: `D` is who is counted (a device, or a device and a peer), `T` what it touches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(
    serialize = "D: Serialize, T: Serialize",
    deserialize = "D: Ord + Deserialize<'de>, T: Ord + Clone + Deserialize<'de>"
))]
pub struct ScanModel<D: Ord, T: Ord> {
    scans: LearnedFanOut<D, T>,
}

impl<D: Ord + Clone, T: Ord + Clone> Default for ScanModel<D, T> {
    fn default() -> Self {
        ScanModel {
            scans: LearnedFanOut::default(),
        }
    }
}

impl<D: Counted, T: Target> ScanModel<D, T> {
    pub fn new() -> Self {
        ScanModel {
            scans: LearnedFanOut::new(),
        }
    }

    /// Notes the source of a flow start as active (its age for the pattern); call for every
    /// event the plugin receives.
    pub fn on_event(&mut self, config: &impl ScanSettings, event: &Event<'_>) {
        if matches!(event.kind, EventKind::FlowStart) {
            self.scans
                .seen(config.fan_out(), config.pattern(), event.ts, event.src.ip);
        }
    }

    /// Expires old targets; call from the plugin's [`crate::Plugin::on_tick`].
    pub fn on_tick(&mut self, config: &impl ScanSettings, now: crate::Timestamp) {
        self.scans.expire_all(config.fan_out(), now);
    }

    /// Counts `target` for `counted`; when this makes the episode breach (see
    /// [`LearnedFanOut::observe`]), returns a breach of `model` decided by `event`.
    pub fn observe(
        &mut self,
        model: &Model,
        settings: &impl ScanSettings,
        event: &Event<'_>,
        counted: D,
        target: T,
        accept: impl FnOnce(&[T]) -> bool,
    ) -> Option<Breach> {
        let config = settings.fan_out();
        let episode = self.scans.observe(
            config,
            settings.pattern(),
            event.ts,
            counted,
            target,
            accept,
        )?;
        let targets = &episode.targets;
        let hosts: BTreeSet<IpAddr> = targets.iter().filter_map(Target::ip).collect();
        let ports = ports(targets);
        let hosts: Vec<IpAddr> = hosts.into_iter().collect();
        let breach: Breach = model
            .breach(event)
            .with_evidence("distinct_targets", targets.len())
            .with_evidence("distinct_hosts", hosts.len())
            .with_evidence("distinct_ports", ports.len())
            .with_evidence("window_secs", config.window)
            .with_evidence("threshold", config.threshold)
            .with_evidence("hosts", evidence::listed(&hosts, 8))
            .with_destinations(hosts)
            .with_ports(ports);
        Some(episode.with_pattern(breach, config.window))
    }

    /// Devices whose pattern is kept.
    pub fn devices(&self) -> usize {
        self.scans.devices()
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
    /// How each device's usual sweeps are learned.
    pub pattern: PatternConfig,
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
            pattern: PatternConfig::default(),
            ports: S::PORTS.to_vec(),
            spec: PhantomData,
        }
    }
}

impl<S> ScanSettings for SweepConfig<S> {
    fn fan_out(&self) -> &FanOutConfig {
        &self.fan_out
    }
    fn pattern(&self) -> &PatternConfig {
        &self.pattern
    }
}

/// A complete detector for "one device tries one service on many hosts": RDP scans, SMB scans.
/// A plugin crate names its [`SweepSpec`] and calls `export_plugin!(ServiceSweep<Spec>)`, which
/// gives the spec its crate's release.
pub struct ServiceSweep<S> {
    config: SweepConfig<S>,
    scans: ScanModel<IpAddr, IpAddr>,
}

impl<S: Release> Release for ServiceSweep<S> {
    const VERSION: &'static str = S::VERSION;
}

impl<S: SweepSpec + Release> crate::Plugin for ServiceSweep<S> {
    type Config = SweepConfig<S>;
    type State = ScanModel<IpAddr, IpAddr>;
    const NAME: &'static str = S::NAME;
    const KIND: crate::PluginKind = crate::PluginKind::Detector;
    const SUBSCRIPTIONS: crate::Subscriptions = crate::Subscriptions::NONE
        .with(crate::EventClass::Flow)
        .with(crate::EventClass::Tick);
    const FILTER: FlowFilter = FLOW_STARTS;

    fn new(config: SweepConfig<S>) -> Self {
        ServiceSweep {
            config,
            scans: ScanModel::new(),
        }
    }

    fn on_tick(&mut self, now: crate::Timestamp, _: &mut Output) {
        self.scans.on_tick(&self.config, now);
    }

    fn on_event(&mut self, event: &Event<'_>, out: &mut Output) {
        let config = &self.config;
        self.scans.on_event(config, event);
        let counted = matches!(event.kind, EventKind::FlowStart)
            && event.proto == crate::Transport::Tcp
            && config.ports.contains(&event.dst.port)
            && is_scannable(&event.dst.ip);
        if !counted {
            return;
        }
        let breach =
            self.scans
                .observe(&S::MODEL, config, event, event.src.ip, event.dst.ip, |_| {
                    true
                });
        if let Some(breach) = breach {
            // Targets are hosts; the port is the service being swept.
            out.breach(breach.with_ports([event.dst.port]));
        }
    }

    fn state(&self) -> Option<&Self::State> {
        Some(&self.scans)
    }

    fn set_state(&mut self, state: Self::State) {
        self.scans = state;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Timestamp;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    fn at(secs: u64) -> Timestamp {
        Timestamp(secs * 1_000_000)
    }

    /// What a model learned, as its saved state.
    fn saved(model: &LearnedFanOut<IpAddr, (IpAddr, u16)>) -> Vec<u8> {
        postcard::to_allocvec(model).expect("state encodes")
    }

    #[test]
    fn a_device_seen_again_is_learned_as_if_it_had_entered_at_once() {
        let config = FanOutConfig {
            threshold: 3,
            ..FanOutConfig::default()
        };
        let pattern = PatternConfig::default();
        let mut held = LearnedFanOut::new();
        let mut direct = LearnedFanOut::new();
        // Each device: a flow it is only seen on, then flows it is counted on, across days.
        let flows: Vec<(u64, u32, u32, u16)> = (0..40u32)
            .flat_map(|n| {
                let (secs, device) = (u64::from(n) * 9_000, 0x0a00_0001 + n % 7);
                [
                    (secs, device, 0, 0),
                    (secs + 1, device, 0x0a00_0100 + n % 5, 445),
                    (secs + 1, device, 0x0a00_0200, 80 + (n % 3) as u16),
                ]
            })
            .collect();
        let mut breaches = (0, 0);
        for (secs, device, target, port) in flows {
            let (now, device) = (at(secs), ip(device));
            held.seen(&config, &pattern, now, device);
            direct.profiles.seen(&pattern, now, &device);
            if target != 0 {
                let target = (ip(target), port);
                breaches.0 += usize::from(
                    held.observe(&config, &pattern, now, device, target, |_| true)
                        .is_some(),
                );
                breaches.1 += usize::from(
                    direct
                        .count(&config, &pattern, now, device, target, |_| true)
                        .is_some(),
                );
            }
        }
        assert!(held.newcomers.is_empty());
        assert_eq!(breaches.0, breaches.1);
        assert_eq!(saved(&held), saved(&direct));
    }

    #[test]
    fn a_flood_of_one_flow_sources_leaves_learned_patterns_alone() {
        let config = FanOutConfig::default();
        let pattern = PatternConfig {
            max_devices: 100,
            ..PatternConfig::default()
        };
        let mut model: LearnedFanOut<IpAddr, (IpAddr, u16)> = LearnedFanOut::new();
        let server = ip(0x0a00_0005);
        for n in 0..20u32 {
            let now = at(u64::from(n));
            model.seen(&config, &pattern, now, server);
            let target = (ip(0x0a00_0100 + n), 443);
            model.observe(&config, &pattern, now, server, target, |_| true);
        }
        let learned = model.profiles.targets(&server);
        for n in 0..50_000u32 {
            let (now, source) = (at(100), ip(0x0b00_0000 + n));
            model.seen(&config, &pattern, now, source);
            let target = (ip(0x0a00_0001), 1024 + (n % 60_000) as u16);
            assert!(model
                .observe(&config, &pattern, now, source, target, |_| true)
                .is_none());
        }
        assert_eq!(model.profiles.len(), 1);
        assert_eq!(model.profiles.targets(&server), learned);
    }
}
