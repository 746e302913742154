//! `Device / Unusual LDAP Bind and Search Activity`: a client device reads the directory in a way
//! it never does: it lists every account (or group, or computer) of the domain, pulls far more
//! entries or runs far more searches than it ever has, binds as an account it has never used, or
//! holds an LDAP connection open far longer than it ever did. This is how account discovery looks
//! on the wire (`ldapsearch`, `adfind`, BloodHound's collectors, PowerView).
//!
//! Pattern of life, per client device: the LDAP servers it uses, the accounts it binds as, the
//! enumerations it habitually runs (a sync or mail server lists users every day), and its learned
//! peaks: the most searches and entries it had in one sliding window, and its longest LDAP
//! connection. Peaks are learned from episodes that did not breach, so an intrusion does not
//! teach the model that it is normal.
//!
//! Scoring. Each signal carries a weight (config `weights`); an episode breaches when the weights
//! of its signals reach `breach_points` (100):
//!
//! | signal | weight | when |
//! | --- | --- | --- |
//! | enumeration | 50 | a filter naming only a class of objects (`(objectClass=user)`, `(objectCategory=person)`, `(sAMAccountType=805306368)`, `(objectClass=*)`) over the whole tree (scope `tree`) from the domain root, which the device does not habitually run |
//! | searches | 50 | more searches in the window than `peak_factor` times its learned peak, and more than `min_searches` |
//! | entries | 50 | the same for entries returned |
//! | bulk entries | 100 | at least `bulk_entries` entries in the window, and over the entries limit: a directory dump, whatever the filter |
//! | new account | 50 | a bind as an account the (learned) device never bound as |
//! | long connection | 50 | an LDAP connection held at least `long_connection_secs`, and `peak_factor` times its longest |
//! | new LDAP device | 50 | a device never seen doing LDAP, in a network past its learning period; counts only together with enumeration, searches or entries |
//!
//! So it takes two weak signals, or the one strong one. A small lookup (a bind and a search or
//! two for one user) is at most one weak signal (a new account, or a new device, which alone does
//! not count): it never breaches. Nothing is judged while the network, or the device, is in its
//! learning period (`learning_secs`), except that a device new to LDAP in a learned network is
//! judged against the floors (`min_searches`, `min_entries`) instead of a peak it does not have.
//!
//! An episode is the device's LDAP activity until it has been quiet for `episode_quiet_secs`
//! (or, if it has not breached, ran `max_episode_secs`): one breach per device per episode.

mod filter;

use core::net::IpAddr;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::evidence::{ago, listed_or, seconds};
use vigil_plugin_sdk::{
    export_plugin, AuthResult, Breach, Duration, Event, EventClass, EventKind, FlowFilter,
    FlowState, LdapFilter, Model, Novelty, Output, Plugin, PluginKind, ProfileConfig, Profiles,
    RateWindow, Subscriptions, Timestamp, Transport,
};

use filter::Kinds;

const MODEL: Model = Model {
    name: "Device / Unusual LDAP Bind and Search Activity",
    score: 60,
    // Account Discovery: Domain Account. Groups (T1069.002), computers (T1018) and the use of
    // another account (T1078.002) are added when the episode shows them.
    mitre: &["T1087.002"],
};
const GROUP_DISCOVERY: &str = "T1069.002";
const REMOTE_SYSTEM_DISCOVERY: &str = "T1018";
const DOMAIN_ACCOUNTS: &str = "T1078.002";

/// Distinct binds, filters, bases and connections kept per episode for the evidence.
const LISTED: usize = 8;
/// Evidence lists show every item: they were bounded (by [`LISTED`]) when remembered.
const ALL: usize = usize::MAX;

/// What each signal weighs; see the table in the crate documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Weights {
    pub enumeration: u32,
    pub searches: u32,
    pub entries: u32,
    pub bulk_entries: u32,
    pub new_account: u32,
    pub long_connection: u32,
    pub new_device: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            enumeration: 50,
            searches: 50,
            entries: 50,
            bulk_entries: 100,
            new_account: 50,
            long_connection: 50,
            new_device: 50,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `learning_secs`: one day, for each device (from its first LDAP) and for the network (from
    /// the first traffic the plugin saw). A client's daily logon lookups, a server's nightly
    /// sync, all show up within a day. `forget_after_secs`: 30 days; habits not seen for a month
    /// (an enumeration, an account) are new again.
    #[serde(flatten)]
    pub profile: ProfileConfig,
    /// 10 minutes: the sliding window searches and entries are counted in. A paged enumeration
    /// throttled to a page every few seconds still adds up within it.
    #[serde(rename = "window_secs")]
    pub window: Duration,
    /// 15 minutes without any LDAP from the device ends its episode.
    #[serde(rename = "episode_quiet_secs")]
    pub episode_quiet: Duration,
    /// An episode that has not breached is closed (and its peaks learned) after an hour, so a
    /// device that never goes quiet still teaches the model its rhythm.
    #[serde(rename = "max_episode_secs")]
    pub max_episode: Duration,
    /// 3: a device's busiest window is a noisy estimate from a few days; three times it is
    /// clearly something else, while a busier than usual morning is not.
    pub peak_factor: u64,
    /// 20 searches in the window, at least, for volume to count: a logon, a policy refresh or a
    /// mail client resolving a user and its groups takes a handful.
    pub min_searches: u64,
    /// 20 entries in the window, at least: a lookup returns the objects it names (the user, its
    /// groups, a few policies); twenty is a listing.
    pub min_entries: u64,
    /// 1000 entries in the window is a dump of the directory (most of a small domain, a page of
    /// the size AD serves at most) whatever the filter: a strong signal on its own.
    pub bulk_entries: u64,
    /// 30 seconds: a client binds, asks and leaves within a second or two; a tool paging through
    /// the directory, or an operator working interactively, holds the connection.
    #[serde(rename = "long_connection_secs")]
    pub long_connection: Duration,
    /// TCP ports of plain LDAP and the global catalog, whose connection lengths count.
    pub ldap_ports: Vec<u16>,
    pub weights: Weights,
    /// Points that make a breach: two weak signals, or one strong.
    pub breach_points: u32,
    /// Devices tracked at once (learned peaks, open episodes); the least recently seen go first.
    pub max_devices: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            profile: ProfileConfig::default(),
            window: Duration::from_secs(600),
            episode_quiet: Duration::from_secs(900),
            max_episode: Duration::from_secs(3600),
            peak_factor: 3,
            min_searches: 20,
            min_entries: 20,
            bulk_entries: 1000,
            long_connection: Duration::from_secs(30),
            ldap_ports: vec![389, 3268],
            weights: Weights::default(),
            breach_points: 100,
            max_devices: 4096,
        }
    }
}

/// What a device's LDAP pattern of life is made of.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Habit {
    /// An LDAP server it talks to: every LDAP event touches one, so the device's profile starts
    /// at its first LDAP.
    Server(IpAddr),
    /// A bind name (DN or user), lower case.
    Account(String),
    /// An enumeration it runs: filter and base, lower case.
    Enumeration(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Signal {
    Enumeration,
    Searches,
    Entries,
    BulkEntries,
    NewAccount,
    LongConnection,
    NewDevice,
}

impl Signal {
    fn weight(self, weights: &Weights) -> u32 {
        match self {
            Signal::Enumeration => weights.enumeration,
            Signal::Searches => weights.searches,
            Signal::Entries => weights.entries,
            Signal::BulkEntries => weights.bulk_entries,
            Signal::NewAccount => weights.new_account,
            Signal::LongConnection => weights.long_connection,
            Signal::NewDevice => weights.new_device,
        }
    }

    /// Volume or breadth: what a new device's novelty needs beside it to count.
    fn is_volume_or_breadth(self) -> bool {
        matches!(
            self,
            Signal::Enumeration | Signal::Searches | Signal::Entries | Signal::BulkEntries
        )
    }
}

/// What a device usually does, learned from episodes that did not breach.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Usual {
    /// Most searches in one window.
    searches: u64,
    /// Most entries returned in one window.
    entries: u64,
    longest_connection_us: u64,
    last: Timestamp,
}

/// One LDAP connection of an episode, by client port, server and server port.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Connection {
    first: Timestamp,
    /// Set when the connection ended.
    duration_us: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Episode {
    start: Timestamp,
    last: Timestamp,
    fired: bool,
    searches: RateWindow,
    entries: RateWindow,
    total_searches: u64,
    total_entries: u64,
    /// Each signal with the sentence that explains it (the first time it was seen).
    signals: BTreeMap<Signal, String>,
    binds: Vec<String>,
    accounts_known: Vec<String>,
    broad_filters: Vec<String>,
    kinds: u8,
    bases: Vec<String>,
    servers: BTreeSet<(IpAddr, u16)>,
    connections: BTreeMap<(u16, IpAddr, u16), Connection>,
}

impl Episode {
    fn new(now: Timestamp) -> Self {
        Episode {
            start: now,
            last: now,
            fired: false,
            searches: RateWindow::default(),
            entries: RateWindow::default(),
            total_searches: 0,
            total_entries: 0,
            signals: BTreeMap::new(),
            binds: Vec::new(),
            accounts_known: Vec::new(),
            broad_filters: Vec::new(),
            kinds: 0,
            bases: Vec::new(),
            servers: BTreeSet::new(),
            connections: BTreeMap::new(),
        }
    }

    fn is_over(&self, config: &Config, now: Timestamp) -> bool {
        now.elapsed_since(self.last) >= config.episode_quiet
            || (!self.fired && now.elapsed_since(self.start) >= config.max_episode)
    }

    fn signal(&mut self, signal: Signal, why: impl FnOnce() -> String) {
        self.signals.entry(signal).or_insert_with(why);
    }

    /// The weights of the signals that count: a new device's only beside volume or breadth.
    fn points(&self, weights: &Weights) -> u32 {
        let volume = self.signals.keys().any(|s| s.is_volume_or_breadth());
        self.signals
            .keys()
            .filter(|s| **s != Signal::NewDevice || volume)
            .map(|s| s.weight(weights))
            .sum()
    }

    /// Notes the LDAP connection an event came on.
    fn connection(&mut self, event: &Event<'_>) {
        self.servers.insert((event.dst.ip, event.dst.port));
        let key = (event.src.port, event.dst.ip, event.dst.port);
        if self.connections.contains_key(&key) || self.connections.len() < LISTED {
            self.connections.entry(key).or_insert(Connection {
                first: event.ts,
                duration_us: None,
            });
        }
    }
}

/// Everything carried across a restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// The first packet time the plugin saw: the network's learning period runs from it.
    since: Option<Timestamp>,
    habits: Profiles<IpAddr, Habit>,
    usual: BTreeMap<IpAddr, Usual>,
    episodes: BTreeMap<IpAddr, Episode>,
}

pub struct LdapActivity {
    config: Config,
    state: State,
}

impl Plugin for LdapActivity {
    type Config = Config;
    type State = State;
    const NAME: &'static str = "ldap-activity";
    const KIND: PluginKind = PluginKind::Detector;
    const SUBSCRIPTIONS: Subscriptions = Subscriptions::NONE
        .with(EventClass::Ldap)
        .with(EventClass::Flow)
        .with(EventClass::Tick);
    /// Only LDAP connections that ended are judged (their ports are config, so checked below).
    const FILTER: FlowFilter = FlowFilter::ANY
        .transport(Transport::Tcp)
        .flow_end(FlowState::Established)
        .flow_end(FlowState::Reset);

    fn new(config: Config) -> Self {
        LdapActivity {
            config,
            state: State::default(),
        }
    }

    fn on_tick(&mut self, now: Timestamp, _: &mut Output) {
        self.started(now);
        self.close_quiet(now);
    }

    fn on_event(&mut self, event: &Event<'_>, out: &mut Output) {
        self.started(event.ts);
        let device = event.src.ip;
        match &event.kind {
            EventKind::LdapBind {
                name,
                mechanism,
                result,
            } => {
                self.ldap(event);
                self.bind(event, name, mechanism, *result);
                self.judge(event, device, out);
            }
            EventKind::LdapSearchTree {
                base,
                scope,
                filter,
                entries,
                ..
            } => {
                self.ldap(event);
                self.search(event, base, scope, filter, *entries);
                self.judge(event, device, out);
            }
            EventKind::FlowEnd {
                duration_us, state, ..
            } => {
                let ldap = event.proto == Transport::Tcp
                    && self.config.ldap_ports.contains(&event.dst.port)
                    && matches!(state, FlowState::Established | FlowState::Reset);
                if ldap && self.connection_ended(event, *duration_us) {
                    self.judge(event, device, out);
                }
            }
            _ => {}
        }
    }

    fn state(&self) -> Option<&Self::State> {
        Some(&self.state)
    }

    fn set_state(&mut self, state: Self::State) {
        self.state = state;
    }
}

impl LdapActivity {
    /// Notes when the model first saw packet time: its learning period starts there.
    fn started(&mut self, now: Timestamp) {
        if self.state.since.is_none() && now.micros() > 0 {
            self.state.since = Some(now);
        }
    }

    /// Past the network's learning period: novelty means something.
    fn judged(&self, now: Timestamp) -> bool {
        self.state
            .since
            .is_some_and(|since| now.elapsed_since(since) >= self.config.profile.learning)
    }

    /// A device never seen doing LDAP (still in its own learning period) in a learned network.
    fn new_device(&self, device: IpAddr, now: Timestamp) -> bool {
        self.judged(now)
            && !self
                .state
                .habits
                .is_learned(&self.config.profile, now, &device)
    }

    /// The device's open episode, closing a stale one first.
    fn episode(&mut self, device: IpAddr, now: Timestamp) -> &mut Episode {
        if self
            .state
            .episodes
            .get(&device)
            .is_some_and(|e| e.is_over(&self.config, now))
        {
            self.close(device);
        }
        if !self.state.episodes.contains_key(&device)
            && self.state.episodes.len() >= self.config.max_devices.max(1)
        {
            let stalest = self
                .state
                .episodes
                .iter()
                .min_by_key(|(_, e)| e.last)
                .map(|(d, _)| *d);
            if let Some(stalest) = stalest {
                self.close(stalest);
            }
        }
        let episode = self
            .state
            .episodes
            .entry(device)
            .or_insert_with(|| Episode::new(now));
        episode.last = episode.last.max(now);
        episode
    }

    /// Ends an episode; if it did not breach, what it did becomes usual for the device.
    fn close(&mut self, device: IpAddr) {
        if let Some(episode) = self.state.episodes.remove(&device) {
            if !episode.fired {
                self.learn(device, &episode);
            }
        }
    }

    fn close_quiet(&mut self, now: Timestamp) {
        let over: Vec<IpAddr> = self
            .state
            .episodes
            .iter()
            .filter(|(_, e)| e.is_over(&self.config, now))
            .map(|(d, _)| *d)
            .collect();
        for device in over {
            self.close(device);
        }
    }

    fn learn(&mut self, device: IpAddr, episode: &Episode) {
        if !self.state.usual.contains_key(&device)
            && self.state.usual.len() >= self.config.max_devices.max(1)
        {
            let stalest = self
                .state
                .usual
                .iter()
                .min_by_key(|(_, u)| u.last)
                .map(|(d, _)| *d);
            if let Some(stalest) = stalest {
                self.state.usual.remove(&stalest);
            }
        }
        let usual = self.state.usual.entry(device).or_default();
        usual.searches = usual.searches.max(episode.searches.peak());
        usual.entries = usual.entries.max(episode.entries.peak());
        let longest = episode
            .connections
            .values()
            .filter_map(|c| c.duration_us)
            .max()
            .unwrap_or(0);
        usual.longest_connection_us = usual.longest_connection_us.max(longest);
        usual.last = usual.last.max(episode.last);
    }

    /// What the device usually does, as a limit for this event: nothing for a device new to
    /// LDAP, whose few minutes of history are no peak.
    fn usual(&self, device: IpAddr, now: Timestamp) -> Usual {
        if self.new_device(device, now) {
            return Usual::default();
        }
        self.state.usual.get(&device).copied().unwrap_or_default()
    }

    /// Every LDAP message: the device's profile, its episode and connection, and whether it is
    /// new to LDAP.
    fn ldap(&mut self, event: &Event<'_>) {
        let (device, now) = (event.src.ip, event.ts);
        self.state.habits.observe(
            &self.config.profile,
            now,
            device,
            Habit::Server(event.dst.ip),
        );
        let new_device = self.new_device(device, now);
        let episode = self.episode(device, now);
        episode.connection(event);
        if new_device {
            episode.signal(Signal::NewDevice, || {
                format!("new LDAP device: no LDAP seen from {device} before this day")
            });
        }
    }

    fn bind(&mut self, event: &Event<'_>, name: &str, mechanism: &str, result: AuthResult) {
        let (device, now) = (event.src.ip, event.ts);
        let outcome = match result {
            AuthResult::Success => "success".to_string(),
            AuthResult::Failure(code) => format!("failed, LDAP result {code}"),
            AuthResult::Unknown => "no answer".to_string(),
        };
        let shown = match (name, mechanism) {
            ("", "simple") => "(anonymous)",
            ("", _) => "(named inside the SASL exchange)",
            (name, _) => name,
        };
        let bind = format!("{shown} ({mechanism}, {outcome})");
        // A refused bind proves nothing about the account; an anonymous or SASL bind (whose
        // account travels inside NTLM or Kerberos) names none.
        let novelty = (!name.is_empty() && !matches!(result, AuthResult::Failure(_))).then(|| {
            self.state.habits.observe(
                &self.config.profile,
                now,
                device,
                Habit::Account(name.to_lowercase()),
            )
        });
        let episode = self.episode(device, now);
        remember(&mut episode.binds, bind);
        if let Some(Novelty::Unusual { known }) = novelty {
            for habit in known {
                if let Habit::Account(account) = habit {
                    remember(&mut episode.accounts_known, account);
                }
            }
            episode.signal(Signal::NewAccount, || {
                format!("new account: bound as {name}, never before from this device")
            });
        }
    }

    fn search(
        &mut self,
        event: &Event<'_>,
        base: &str,
        scope: &str,
        filter: &LdapFilter<'_>,
        entries: u32,
    ) {
        let (device, now) = (event.src.ip, event.ts);
        let judged = self.judged(now);
        let new_device = self.new_device(device, now);
        let usual = self.usual(device, now);
        let enumeration = (scope == "tree" && filter::is_domain_root(base))
            .then(|| filter::enumerates(filter))
            .flatten();
        let novel_enumeration = enumeration.map(|_| {
            let habit = Habit::Enumeration(format!("{} {}", filter, base).to_lowercase());
            match self
                .state
                .habits
                .observe(&self.config.profile, now, device, habit)
            {
                Novelty::Unusual { .. } => true,
                Novelty::Familiar(_) => false,
                Novelty::NewEntity | Novelty::Learning => new_device,
            }
        });
        let Config {
            window,
            peak_factor: factor,
            min_searches,
            min_entries,
            bulk_entries,
            ..
        } = self.config;
        let episode = self.episode(device, now);
        let searches = episode.searches.add(window, now, 1);
        let pulled = episode.entries.add(window, now, entries);
        episode.total_searches += 1;
        episode.total_entries += u64::from(entries);
        remember(&mut episode.bases, base.to_string());
        if let Some(kinds) = enumeration {
            episode.kinds |= kinds.bits();
            remember(&mut episode.broad_filters, filter.to_string());
        }
        if !judged {
            return;
        }
        if novel_enumeration == Some(true) {
            episode.signal(Signal::Enumeration, || {
                let base = if base.is_empty() { "the root" } else { base };
                format!("enumeration: {filter} over the whole tree from {base}")
            });
        }
        let searches_limit = limit(usual.searches, factor, min_searches);
        if searches > searches_limit {
            episode.signal(Signal::Searches, || {
                format!(
                    "searches: {searches} in {window} s, over {searches_limit} (learned peak {})",
                    usual.searches
                )
            });
        }
        let entries_limit = limit(usual.entries, factor, min_entries);
        if pulled > entries_limit {
            episode.signal(Signal::Entries, || {
                format!(
                    "entries: {pulled} in {window} s, over {entries_limit} (learned peak {})",
                    usual.entries
                )
            });
            if pulled >= bulk_entries {
                episode.signal(Signal::BulkEntries, || {
                    format!("bulk: {pulled} entries in {window} s, a dump of the directory")
                });
            }
        }
    }

    /// An LDAP connection ended. Returns whether it belongs to an episode to judge: a long one
    /// always does, a short one only adds to activity already under way.
    fn connection_ended(&mut self, event: &Event<'_>, duration_us: u64) -> bool {
        let (device, now) = (event.src.ip, event.ts);
        let long_floor = self.config.long_connection.micros();
        let under_way = self
            .state
            .episodes
            .get(&device)
            .is_some_and(|e| !e.is_over(&self.config, now));
        if !under_way && duration_us < long_floor {
            return false;
        }
        // Opened (closing a stale one, whose lessons then count) before reading what is usual.
        self.episode(device, now).connection(event);
        let judged = self.judged(now);
        let usual = self.usual(device, now);
        let factor = self.config.peak_factor;
        let Some(episode) = self.state.episodes.get_mut(&device) else {
            return false;
        };
        let key = (event.src.port, event.dst.ip, event.dst.port);
        if let Some(connection) = episode.connections.get_mut(&key) {
            connection.duration_us = Some(duration_us);
            // The connection began before its first LDAP message: at the handshake.
            connection.first = connection
                .first
                .min(Timestamp(now.micros().saturating_sub(duration_us)));
        }
        let longest = limit(
            usual.longest_connection_us,
            factor,
            long_floor.saturating_sub(1),
        );
        if judged && duration_us > longest {
            episode.signal(Signal::LongConnection, || {
                format!(
                    "long connection: {}:{} held {}, longest before {}",
                    event.dst.ip,
                    event.dst.port,
                    seconds(duration_us),
                    seconds(usual.longest_connection_us)
                )
            });
        }
        true
    }

    /// Breaches once per episode when its signals add up; while the network is still learning,
    /// what the device does is simply usual.
    fn judge(&mut self, event: &Event<'_>, device: IpAddr, out: &mut Output) {
        let now = event.ts;
        if !self.judged(now) {
            if let Some(episode) = self.state.episodes.remove(&device) {
                self.learn(device, &episode);
                self.state.episodes.insert(device, episode);
            }
            return;
        }
        let usual = self.usual(device, now);
        let first_ldap = self
            .state
            .habits
            .values(&device)
            .map(|(_, s)| s.first)
            .min();
        let Some(episode) = self.state.episodes.get_mut(&device) else {
            return;
        };
        let points = episode.points(&self.config.weights);
        if episode.fired || points < self.config.breach_points {
            return;
        }
        episode.fired = true;
        out.breach(evidence(
            &self.config,
            event,
            episode,
            usual,
            points,
            first_ldap,
        ));
    }
}

/// The breach an analyst reads: why it fired, then what the device did and what it usually does.
fn evidence(
    config: &Config,
    event: &Event<'_>,
    episode: &Episode,
    usual: Usual,
    points: u32,
    first_ldap: Option<Timestamp>,
) -> Breach {
    let now = event.ts;
    let volume = episode.signals.keys().any(|s| s.is_volume_or_breadth());
    let signals: Vec<&str> = episode
        .signals
        .iter()
        .filter(|(s, _)| **s != Signal::NewDevice || volume)
        .map(|(_, why)| why.as_str())
        .collect();
    let mut mitre = vec![MODEL.mitre[0].to_string()];
    let kinds = Kinds::from_bits(episode.kinds);
    if kinds.contains(Kinds::GROUPS) {
        mitre.push(GROUP_DISCOVERY.to_string());
    }
    if kinds.contains(Kinds::COMPUTERS) {
        mitre.push(REMOTE_SYSTEM_DISCOVERY.to_string());
    }
    if episode.signals.contains_key(&Signal::NewAccount) {
        mitre.push(DOMAIN_ACCOUNTS.to_string());
    }
    let connections: Vec<String> = episode
        .connections
        .iter()
        .map(|((client_port, server, port), c)| match c.duration_us {
            Some(d) => format!(
                "{server}:{port} from port {client_port}, held {}",
                seconds(d)
            ),
            None => format!(
                "{server}:{port} from port {client_port}, open {} so far",
                seconds(now.since(c.first))
            ),
        })
        .collect();
    let new_device = episode.signals.contains_key(&Signal::NewDevice);
    let mut breach = MODEL
        .breach(event)
        .with_evidence("signals", signals.join("; "))
        .with_evidence(
            "points",
            format!("{points} (breach at {})", config.breach_points),
        )
        .with_evidence("binds", listed_or(&episode.binds, ALL, "none seen"));
    if episode.signals.contains_key(&Signal::NewAccount) {
        breach = breach.with_evidence(
            "accounts_known",
            listed_or(&episode.accounts_known, ALL, "none"),
        );
    }
    let learned = |value: u64| {
        if new_device {
            "none (new LDAP device)".to_string()
        } else {
            value.to_string()
        }
    };
    breach.mitre = mitre;
    breach
        .with_evidence("searches", episode.total_searches)
        .with_evidence("most_searches_in_window", episode.searches.peak())
        .with_evidence("entries_pulled", episode.total_entries)
        .with_evidence("most_entries_in_window", episode.entries.peak())
        .with_evidence(
            "broad_filters",
            listed_or(&episode.broad_filters, ALL, "none"),
        )
        .with_evidence("base_dns", listed_or(&episode.bases, ALL, "none"))
        .with_evidence("connections", listed_or(&connections, ALL, "none seen"))
        .with_evidence("learned_peak_searches", learned(usual.searches))
        .with_evidence("learned_peak_entries", learned(usual.entries))
        .with_evidence(
            "learned_longest_connection",
            if new_device {
                learned(0)
            } else {
                seconds(usual.longest_connection_us)
            },
        )
        .with_evidence("window_secs", config.window)
        .with_evidence(
            "first_ldap_seen",
            first_ldap.map_or("now".to_string(), |t| ago(now.since(t))),
        )
        .with_destinations(episode.servers.iter().map(|(ip, _)| *ip))
        .with_ports(episode.servers.iter().map(|(_, port)| *port))
}

/// `peak_factor` times the learned peak, and never under the floor.
fn limit(peak: u64, factor: u64, floor: u64) -> u64 {
    peak.saturating_mul(factor).max(floor)
}

/// Adds a distinct value to an evidence list, within its bound.
fn remember(list: &mut Vec<String>, value: String) {
    if list.len() < LISTED && !list.contains(&value) {
        list.push(value);
    }
}

export_plugin!(LdapActivity);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_plugin_sdk::harness::{events::*, Harness};
    use vigil_plugin_sdk::ldap::{Substring, Substrings};

    const DC: [u8; 4] = [10, 77, 0, 10];
    const ALICE: [u8; 4] = [10, 77, 0, 50];
    const BOB: [u8; 4] = [10, 77, 0, 60];
    const DAY: f64 = 86_400.0;
    const ALICE_DN: &str = "cn=Alice Smith,ou=Staff,dc=corp,dc=local";
    const BOB_DN: &str = "cn=Bob Jones,ou=Staff,dc=corp,dc=local";
    const ROOT: &str = "dc=corp,dc=local";
    /// Five days into the lab: the attack starts an hour after the day's lookups.
    const ATTACK: f64 = 5.0 * DAY + 3600.0;

    fn at(secs: f64, client: [u8; 4], port: u16, kind: EventKind<'static>) -> Event<'static> {
        Event {
            ts: Timestamp((secs * 1e6).round() as u64),
            flow: 0,
            proto: Transport::Tcp,
            src: endpoint(IpAddr::from(client), port),
            dst: endpoint(IpAddr::from(DC), 389),
            kind,
        }
    }

    fn bind(secs: f64, client: [u8; 4], port: u16, name: &'static str) -> Event<'static> {
        let kind = EventKind::LdapBind {
            name,
            mechanism: "simple",
            result: AuthResult::Success,
        };
        at(secs, client, port, kind)
    }

    fn search(
        secs: f64,
        client: [u8; 4],
        port: u16,
        (base, scope, filter): (&'static str, &'static str, LdapFilter<'static>),
        entries: u32,
    ) -> Event<'static> {
        let kind = EventKind::LdapSearchTree {
            base,
            scope,
            filter,
            entries,
            result: AuthResult::Success,
        };
        at(secs, client, port, kind)
    }

    fn ended(secs: f64, client: [u8; 4], port: u16, held: f64) -> Event<'static> {
        let kind = EventKind::FlowEnd {
            orig_bytes: 900,
            resp_bytes: 1800,
            orig_packets: 8,
            resp_packets: 8,
            duration_us: (held * 1e6).round() as u64,
            state: FlowState::Established,
        };
        at(secs, client, port, kind)
    }

    /// The lab's daily session: `ldapsearch` binds as the user and reads the user's own entry.
    fn lookup(secs: f64, client: [u8; 4], dn: &'static str) -> Vec<Event<'static>> {
        vec![
            bind(secs, client, 41000, dn),
            search(
                secs + 0.001,
                client,
                41000,
                (dn, "base", LdapFilter::present("objectClass")),
                1,
            ),
            ended(secs + 0.002, client, 41000, 0.002),
        ]
    }

    /// Five days of both users' morning lookups.
    fn baseline() -> Vec<Event<'static>> {
        (0..5)
            .flat_map(|day| {
                let morning = f64::from(day) * DAY + 8.0 * 3600.0;
                let mut day = lookup(morning, ALICE, ALICE_DN);
                day.extend(lookup(morning + 2.5, BOB, BOB_DN));
                day
            })
            .collect()
    }

    /// The lab's `ldap_recon`: a simple bind as the victim, then a paged (5 per page, a page
    /// every 5 s) search of `(objectClass=user)` over the whole tree from the domain root, 51
    /// users, on one connection held 50 s.
    fn recon(start: f64, client: [u8; 4]) -> Vec<Event<'static>> {
        let mut events = vec![bind(start, client, 46318, ALICE_DN)];
        for page in 0..11 {
            let entries = if page < 10 { 5 } else { 1 };
            let when = start + 0.001 + 5.0 * f64::from(page);
            let users = (ROOT, "tree", LdapFilter::equality("objectClass", "user"));
            events.push(search(when, client, 46318, users, entries));
        }
        events.push(ended(start + 50.03, client, 46318, 50.03));
        events
    }

    fn run(events: &[Event<'static>]) -> Vec<Breach> {
        let mut h: Harness<LdapActivity> = Harness::new();
        h.feed_all(events)
    }

    fn evidence<'b>(breach: &'b Breach, name: &str) -> &'b str {
        breach.evidence(name).unwrap_or("<missing>")
    }

    #[test]
    fn paged_user_enumeration_after_the_baseline_raises_one_breach() {
        let mut events = baseline();
        events.extend(recon(ATTACK, ALICE));
        let breaches = run(&events);
        assert_eq!(breaches.len(), 1);
        let b = &breaches[0];
        assert_eq!(b.model, "Device / Unusual LDAP Bind and Search Activity");
        assert_eq!(b.device.ip, IpAddr::from(ALICE));
        assert_eq!(b.mitre, vec!["T1087.002".to_string()]);
        assert_eq!(b.destinations, vec![IpAddr::from(DC)]);
        assert_eq!(b.ports, vec![389]);
        // Decided by the fifth page: a broad enumeration, then 25 entries against a peak of 1.
        assert_eq!(b.ts, Timestamp(((ATTACK + 20.001) * 1e6).round() as u64));
        assert_eq!(
            evidence(b, "signals"),
            "enumeration: (objectClass=user) over the whole tree from dc=corp,dc=local; \
             entries: 25 in 600 s, over 20 (learned peak 1)"
        );
        assert_eq!(evidence(b, "points"), "100 (breach at 100)");
        assert_eq!(
            evidence(b, "binds"),
            format!("{ALICE_DN} (simple, success)")
        );
        assert_eq!(evidence(b, "searches"), "5");
        assert_eq!(evidence(b, "entries_pulled"), "25");
        assert_eq!(evidence(b, "broad_filters"), "(objectClass=user)");
        assert_eq!(evidence(b, "base_dns"), ROOT);
        assert_eq!(
            evidence(b, "connections"),
            "10.77.0.10:389 from port 46318, open 20.0 s so far"
        );
        assert_eq!(evidence(b, "learned_peak_searches"), "1");
        assert_eq!(evidence(b, "learned_peak_entries"), "1");
        assert_eq!(evidence(b, "learned_longest_connection"), "0.002 s");
        assert_eq!(evidence(b, "first_ldap_seen"), "4 days ago");
        assert!(b.evidence("accounts_known").is_none());
    }

    #[test]
    fn daily_lookups_never_breach() {
        let mut events = baseline();
        events.extend(lookup(5.0 * DAY + 8.0 * 3600.0, BOB, BOB_DN));
        events.extend(lookup(5.0 * DAY + 9.0 * 3600.0, ALICE, ALICE_DN));
        assert!(run(&events).is_empty());
    }

    #[test]
    fn one_enumeration_of_a_small_directory_on_a_short_connection_stays_quiet() {
        let mut events = baseline();
        events.push(bind(ATTACK, ALICE, 46318, ALICE_DN));
        let users = (ROOT, "tree", LdapFilter::equality("objectClass", "user"));
        events.push(search(ATTACK + 0.01, ALICE, 46318, users, 3));
        events.push(ended(ATTACK + 0.02, ALICE, 46318, 0.02));
        assert!(run(&events).is_empty());
    }

    #[test]
    fn a_bind_as_a_new_account_on_a_long_connection_breaches_with_the_known_accounts() {
        let mut events = baseline();
        events.push(bind(ATTACK, ALICE, 46318, BOB_DN));
        let own = (BOB_DN, "base", LdapFilter::present("objectClass"));
        events.push(search(ATTACK + 0.01, ALICE, 46318, own, 1));
        events.push(ended(ATTACK + 45.0, ALICE, 46318, 45.0));
        let breaches = run(&events);
        assert_eq!(breaches.len(), 1);
        let b = &breaches[0];
        assert_eq!(b.ts, Timestamp::from_secs(ATTACK as u64 + 45));
        assert_eq!(
            b.mitre,
            vec!["T1087.002".to_string(), "T1078.002".to_string()]
        );
        assert_eq!(
            evidence(b, "signals"),
            format!(
                "new account: bound as {BOB_DN}, never before from this device; \
                 long connection: 10.77.0.10:389 held 45.0 s, longest before 0.002 s"
            )
        );
        assert_eq!(evidence(b, "accounts_known"), ALICE_DN.to_lowercase());
        assert_eq!(
            evidence(b, "connections"),
            "10.77.0.10:389 from port 46318, held 45.0 s"
        );
    }

    #[test]
    fn a_bind_as_a_new_account_alone_stays_quiet() {
        let mut events = baseline();
        events.extend(lookup(ATTACK, ALICE, BOB_DN));
        assert!(run(&events).is_empty());
    }

    #[test]
    fn a_new_ldap_device_counts_only_with_volume_or_breadth() {
        let (quiet, curious) = ([10, 77, 0, 70], [10, 77, 0, 71]);
        let mut events = baseline();
        // A new device that looks itself up on a connection it keeps: novelty without volume.
        events.push(bind(
            ATTACK,
            quiet,
            50000,
            "cn=Carol,ou=Staff,dc=corp,dc=local",
        ));
        let own = (
            "cn=Carol,ou=Staff,dc=corp,dc=local",
            "base",
            LdapFilter::present("objectClass"),
        );
        events.push(search(ATTACK + 0.01, quiet, 50000, own, 1));
        events.push(ended(ATTACK + 60.0, quiet, 50000, 60.0));
        assert!(run(&events).is_empty());
        // A new device that lists the domain's computers, however few there are.
        let computers = (
            "",
            "tree",
            LdapFilter::equality("objectCategory", "computer"),
        );
        events.push(search(ATTACK + 100.0, curious, 50001, computers, 4));
        let breaches = run(&events);
        assert_eq!(breaches.len(), 1);
        let b = &breaches[0];
        assert_eq!(b.device.ip, IpAddr::from(curious));
        assert_eq!(b.mitre, vec!["T1087.002".to_string(), "T1018".to_string()]);
        assert_eq!(
            evidence(b, "signals"),
            "enumeration: (objectCategory=computer) over the whole tree from the root; \
             new LDAP device: no LDAP seen from 10.77.0.71 before this day"
        );
        assert_eq!(
            evidence(b, "learned_peak_entries"),
            "none (new LDAP device)"
        );
        assert_eq!(evidence(b, "first_ldap_seen"), "0 s ago");
    }

    #[test]
    fn nothing_breaches_while_the_network_is_learning() {
        let mut events = lookup(0.0, ALICE, ALICE_DN);
        events.extend(recon(3600.0, ALICE));
        events.extend(recon(7200.0, [10, 77, 0, 99]));
        assert!(run(&events).is_empty());
    }

    #[test]
    fn an_enumeration_the_device_runs_every_day_is_usual() {
        let sync = [10, 77, 0, 40];
        let people = LdapFilter::And(vec![
            LdapFilter::equality("objectCategory", "person"),
            LdapFilter::equality("objectClass", "user"),
        ]);
        let users = (ROOT, "tree", people);
        let mut events: Vec<Event<'static>> = (0..6)
            .flat_map(|day| {
                let night = f64::from(day) * DAY + 2.0 * 3600.0;
                vec![
                    bind(night, sync, 42000, "cn=sync,ou=Services,dc=corp,dc=local"),
                    search(night + 1.0, sync, 42000, users.clone(), 200),
                    ended(night + 2.0, sync, 42000, 2.0),
                ]
            })
            .collect();
        events.extend(baseline());
        events.sort_by_key(|e| e.ts);
        assert!(run(&events).is_empty());
    }

    #[test]
    fn a_directory_dump_is_one_strong_signal() {
        let mut events = baseline();
        events.push(bind(ATTACK, ALICE, 46318, ALICE_DN));
        for (i, initial) in ["a", "b", "c"].into_iter().enumerate() {
            let when = ATTACK + 1.0 + i as f64;
            // `(cn=a*)` and so on.
            let filter = LdapFilter::Substrings(Substrings {
                attribute: "cn".into(),
                parts: vec![Substring::Initial(initial.as_bytes().into())],
            });
            events.push(search(when, ALICE, 46318, (ROOT, "tree", filter), 400));
        }
        let breaches = run(&events);
        assert_eq!(breaches.len(), 1);
        let b = &breaches[0];
        assert_eq!(b.ts, Timestamp::from_secs(ATTACK as u64 + 3));
        assert_eq!(evidence(b, "broad_filters"), "none");
        assert_eq!(evidence(b, "points"), "150 (breach at 100)");
        assert_eq!(evidence(b, "entries_pulled"), "1200");
    }

    #[test]
    fn a_second_enumeration_after_a_quiet_spell_breaches_again() {
        let mut events = baseline();
        events.extend(recon(ATTACK, ALICE));
        events.extend(recon(ATTACK + 3600.0, ALICE));
        let breaches = run(&events);
        assert_eq!(breaches.len(), 2);
        // The enumeration is known by now, but the breach taught nothing about volume: the
        // entries and the held connection still stand out.
        let second = &breaches[1];
        assert_eq!(
            second.ts,
            Timestamp(((ATTACK + 3600.0 + 50.03) * 1e6).round() as u64)
        );
        assert_eq!(
            evidence(second, "signals"),
            "entries: 25 in 600 s, over 20 (learned peak 1); \
             long connection: 10.77.0.10:389 held 50.0 s, longest before 0.002 s"
        );
    }

    #[test]
    fn a_restart_mid_enumeration_gives_the_same_breach() {
        let mut events = baseline();
        events.extend(recon(ATTACK, ALICE));
        let whole = run(&events);
        let cut = events.len() - 9;
        let mut h: Harness<LdapActivity> = Harness::new();
        assert!(h.feed_all(&events[..cut]).is_empty());
        let mut h = h.restart().expect("state restores");
        let resumed = h.feed_all(&events[cut..]);
        assert_eq!(resumed, whole);
    }

    #[test]
    fn thresholds_come_from_config() {
        let mut events = baseline();
        events.extend(recon(ATTACK, ALICE));
        let mut h = Harness::<LdapActivity>::with_config_json(
            r#"{"min_entries": 100, "long_connection_secs": 60}"#,
        )
        .expect("valid config");
        assert!(h.feed_all(&events).is_empty());
    }
}
