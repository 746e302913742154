//! `Device / SMB Session Brute Force (Admin)` and `(Non-Admin)`: a device fails many NTLM logins
//! over SMB within a few minutes: guessing passwords for one account, or spraying a few common
//! passwords over many. A person who mistypes a password gets it right within two or three tries;
//! a guessing tool keeps going, a login every fraction of a second.
//!
//! Counted per client device and per kind of account tried (administrative or not, from the
//! configured names and name patterns): failed SMB session setups in a sliding window. One breach
//! per device, model and episode; the episode ends after a quiet spell with no failures.

use core::net::IpAddr;
use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::account::Account;
use vigil_plugin_sdk::episode;
use vigil_plugin_sdk::evidence::listed;
use vigil_plugin_sdk::ntstatus::{self, NtStatus};
use vigil_plugin_sdk::state::OldState;
use vigil_plugin_sdk::{
    export_plugin, AuthResult, BoundedMap, Breach, Duration, Event, EventClass, EventKind, Model,
    Output, Plugin, PluginKind, Subscriptions, Timestamp,
};

const ADMIN: Model = Model {
    name: "Device / SMB Session Brute Force (Admin)",
    score: 80,
    // Brute Force; Valid Accounts: Domain Accounts (the prize is an administrative login).
    mitre: &["T1110", "T1078.002"],
};

const NON_ADMIN: Model = Model {
    name: "Device / SMB Session Brute Force (Non-Admin)",
    score: 65,
    mitre: &["T1110"],
};

/// Password Guessing (many passwords, one account) and Password Spraying (few passwords, many
/// accounts): which one an episode was is decided by how many accounts it tried.
const GUESSING: &str = "T1110.001";
const SPRAYING: &str = "T1110.003";

/// Accounts and servers shown in the evidence before "and N more".
const SHOWN: usize = 8;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Failed logins within `window_secs` that make a brute force: 10. Someone who mistyped
    /// gets in, or gives up, within three tries, and domain lockout policies lock an account
    /// after 5-10 bad passwords, so ten failures from one device is past anything a person does
    /// and past what a lockout policy tolerates; a guessing tool gets there in seconds.
    pub threshold: usize,
    /// 10 minutes: a tool throttled to one guess a minute to stay under lockout still counts.
    #[serde(rename = "window_secs")]
    pub window: Duration,
    /// After a breach, the episode (and its silence) lasts until the device has had no failed
    /// login for this long: 15 minutes. A guessing run pausing for breath stays one breach.
    #[serde(rename = "rearm_quiet_secs")]
    pub rearm_quiet: Duration,
    /// Carriers (as the analyzer names them) whose NTLM logins count.
    pub carriers: Vec<String>,
    /// Administrative account names (case-insensitive): built-in and localised administrator
    /// accounts, and `root` for Samba and appliances.
    pub admin_accounts: Vec<String>,
    /// Name prefixes and suffixes of administrative accounts by convention (`adm-jdoe`,
    /// `jdoe-adm`, `jdoe_admin`), case-insensitive.
    pub admin_prefixes: Vec<String>,
    pub admin_suffixes: Vec<String>,
    /// Refusals that mean the password was right (expired, must change, outside logon hours or
    /// from a workstation the account may not use): not a failed guess.
    pub ignored_statuses: Vec<u32>,
    /// An episode that tried at least this many accounts is a password spray (T1110.003); fewer
    /// is password guessing (T1110.001).
    pub spray_accounts: usize,
    /// Devices tracked at once; the least recently active is forgotten first.
    pub max_devices: usize,
}

impl Default for Config {
    fn default() -> Self {
        let names = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        Config {
            threshold: 10,
            window: Duration::from_secs(600),
            rearm_quiet: Duration::from_secs(900),
            carriers: names(&["smb"]),
            admin_accounts: names(&[
                "administrator",
                "admin",
                "root",
                "administrateur",
                "administrador",
                "amministratore",
                "administratör",
            ]),
            admin_prefixes: names(&["adm-", "adm_", "adm.", "admin-", "admin_", "admin."]),
            admin_suffixes: names(&["adm", "admin"]),
            ignored_statuses: ntstatus::PASSWORD_WAS_RIGHT.to_vec(),
            spray_accounts: 3,
            max_devices: 4096,
        }
    }
}

/// One failed login.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Failure {
    at: Timestamp,
    account: Account,
    workstation: String,
    server: IpAddr,
    port: u16,
    status: u32,
}

/// One device's failed logins against one kind of account.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Guesses {
    /// Failures within the window, oldest first; never more than `threshold` are needed.
    failures: VecDeque<Failure>,
    last_failure: Timestamp,
    /// The episode breached: silent until it ends.
    fired: bool,
}

impl Guesses {
    /// Records a failure; returns the window's failures when they make a breach.
    fn fail(&mut self, config: &Config, failure: Failure) -> Option<Vec<Failure>> {
        let now = failure.at;
        episode::rearm(&mut self.fired, self.last_failure, now, config.rearm_quiet);
        self.last_failure = self.last_failure.max(now);
        if self.fired {
            return None;
        }
        while self
            .failures
            .front()
            .is_some_and(|oldest| now.elapsed_since(oldest.at) >= config.window)
        {
            self.failures.pop_front();
        }
        self.failures.push_back(failure);
        if self.failures.len() < config.threshold.max(1) {
            return None;
        }
        self.fired = true;
        // Reported: the episode needs nothing more of them.
        Some(self.failures.drain(..).collect())
    }

    /// Whether anything here can still matter at `now`.
    fn active(&self, config: &Config, now: Timestamp) -> bool {
        now.elapsed_since(self.last_failure) < config.window.max(config.rearm_quiet)
    }
}

/// Per device, per model: everything carried across a restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Device {
    admin: Guesses,
    non_admin: Guesses,
}

impl Device {
    fn last_failure(&self) -> Timestamp {
        self.admin.last_failure.max(self.non_admin.last_failure)
    }
}

pub struct SmbBruteForce {
    config: Config,
    /// Touched at each device's failures, so the least recently active is forgotten first.
    devices: BoundedMap<IpAddr, Device>,
}

impl Plugin for SmbBruteForce {
    type Config = Config;
    type State = BoundedMap<IpAddr, Device>;
    /// 2: the devices carry when each last failed (a [`BoundedMap`]); 1 was a plain map.
    const STATE_VERSION: u32 = 2;
    const NAME: &'static str = "smb-brute-force";
    const KIND: PluginKind = PluginKind::Detector;
    const SUBSCRIPTIONS: Subscriptions = Subscriptions::NONE.with(EventClass::Ntlm);

    fn new(config: Config) -> Self {
        SmbBruteForce {
            config,
            devices: BoundedMap::new(),
        }
    }

    fn on_event(&mut self, event: &Event<'_>, out: &mut Output) {
        let EventKind::NtlmAuth {
            carrier,
            user,
            domain,
            workstation,
            anonymous,
            result: AuthResult::Failure(status),
        } = &event.kind
        else {
            return;
        };
        let counted = self.config.carriers.iter().any(|c| c == carrier)
            && !self.config.ignored_statuses.contains(status);
        let account = Account::new(domain, user);
        // A refused NULL session guesses no password.
        if !counted || *anonymous || account.is_anonymous() {
            return;
        }
        let failure = Failure {
            at: event.ts,
            account,
            workstation: workstation.trim().to_string(),
            server: event.dst.ip,
            port: event.dst.port,
            status: *status,
        };
        if let Some(breach) = self.fail(event, failure) {
            out.breach(breach);
        }
    }

    fn state(&self) -> Option<&Self::State> {
        Some(&self.devices)
    }

    fn set_state(&mut self, state: Self::State) {
        self.devices = state;
    }

    fn migrate(from_version: u32, old: OldState) -> Result<Self::State, String> {
        match from_version {
            0 | 1 => {
                let devices: BTreeMap<IpAddr, Device> = old.decode()?;
                Ok(devices
                    .into_iter()
                    .map(|(ip, d)| (ip, d.last_failure(), d))
                    .collect())
            }
            _ => Err(format!("unknown state version {from_version}")),
        }
    }
}

impl SmbBruteForce {
    fn fail(&mut self, event: &Event<'_>, failure: Failure) -> Option<Breach> {
        let admin = self.is_admin(&failure.account);
        let device = event.src.ip;
        if !self.devices.contains_key(&device) {
            self.forget_inactive(event.ts);
        }
        let episodes =
            self.devices
                .touch(self.config.max_devices, event.ts, device, Device::default);
        let (model, episode) = match admin {
            true => (ADMIN, &mut episodes.admin),
            false => (NON_ADMIN, &mut episodes.non_admin),
        };
        let failures = episode.fail(&self.config, failure)?;
        Some(self.breach(model, event, &failures))
    }

    fn breach(&self, model: Model, event: &Event<'_>, failures: &[Failure]) -> Breach {
        let mut accounts: BTreeMap<&Account, usize> = BTreeMap::new();
        let mut statuses: BTreeMap<u32, usize> = BTreeMap::new();
        let mut workstations: Vec<&str> = Vec::new();
        for failure in failures {
            *accounts.entry(&failure.account).or_default() += 1;
            *statuses.entry(failure.status).or_default() += 1;
            workstations.push(&failure.workstation);
        }
        workstations.sort_unstable();
        workstations.dedup();
        let mut servers: Vec<IpAddr> = failures.iter().map(|f| f.server).collect();
        servers.sort_unstable();
        servers.dedup();
        // Most tried first; ties in name order.
        let mut tried: Vec<(&Account, usize)> = accounts.into_iter().collect();
        tried.sort_by_key(|(_, n)| core::cmp::Reverse(*n));
        let first = failures.first().map_or(event.ts, |f| f.at);
        let technique = match tried.len() >= self.config.spray_accounts.max(2) {
            true => SPRAYING,
            false => GUESSING,
        };
        let mut breach = model
            .breach(event)
            .with_evidence("failures", failures.len())
            .with_evidence("distinct_accounts", tried.len())
            .with_evidence(
                "accounts",
                listed(tried.iter().map(|(a, n)| format!("{a} ({n})")), SHOWN),
            )
            .with_evidence(
                "statuses",
                listed(
                    statuses
                        .iter()
                        .map(|(s, n)| format!("{} ({n})", NtStatus(*s))),
                    SHOWN,
                ),
            )
            .with_evidence(
                "workstations",
                listed(
                    workstations.iter().map(|w| match *w {
                        "" => "(none)",
                        name => name,
                    }),
                    SHOWN,
                ),
            )
            .with_evidence("servers", listed(&servers, SHOWN))
            .with_evidence("first_failure", first)
            .with_evidence(
                "duration_secs",
                format!("{:.1}", event.ts.since(first) as f64 / 1e6),
            )
            .with_evidence("window_secs", self.config.window)
            .with_evidence("threshold", self.config.threshold)
            .with_destinations(servers)
            .with_ports(failures.iter().map(|f| f.port));
        breach.mitre.push(technique.to_string());
        breach
    }

    fn is_admin(&self, account: &Account) -> bool {
        let user = account.user.as_str();
        let lower = |s: &String| s.to_lowercase();
        self.config.admin_accounts.iter().any(|a| lower(a) == user)
            || self
                .config
                .admin_prefixes
                .iter()
                .any(|p| user.starts_with(&lower(p)))
            || self
                .config
                .admin_suffixes
                .iter()
                .any(|s| user.ends_with(&lower(s)))
    }

    /// Forgets devices with nothing in play (the bound then forgets the least recently active).
    fn forget_inactive(&mut self, now: Timestamp) {
        let config = &self.config;
        self.devices
            .retain(|_, _, d| d.admin.active(config, now) || d.non_admin.active(config, now));
    }
}

export_plugin!(SmbBruteForce);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_plugin_sdk::harness::{events::endpoint, old_snapshot, Harness};
    use vigil_plugin_sdk::Transport;

    const ATTACKER: [u8; 4] = [10, 77, 0, 50];
    const BOB: [u8; 4] = [10, 77, 0, 60];
    const DC: [u8; 4] = [10, 77, 0, 10];
    const FS: [u8; 4] = [10, 77, 0, 20];
    use vigil_plugin_sdk::ntstatus::{LOGON_FAILURE, PASSWORD_EXPIRED};

    fn login<'a>(
        secs: f64,
        client: [u8; 4],
        server: [u8; 4],
        user: &'a str,
        carrier: &'a str,
        result: AuthResult,
    ) -> Event<'a> {
        Event {
            ts: Timestamp((secs * 1e6).round() as u64),
            flow: 0,
            proto: Transport::Tcp,
            src: endpoint(IpAddr::from(client), 50000),
            dst: endpoint(IpAddr::from(server), 445),
            kind: EventKind::NtlmAuth {
                carrier,
                user,
                domain: "CORP",
                workstation: "DESKTOP-7Q2M1X",
                anonymous: user.is_empty(),
                result,
            },
        }
    }

    /// `count` refused guesses for `users` in turn, alternating DC01 and FS01, ~0.5 s apart, as
    /// the lab's smbclient loop makes them.
    fn guesses<'a>(start: f64, count: usize, users: &[&'a str]) -> Vec<Event<'a>> {
        (0..count)
            .map(|i| {
                let server = if i % 2 == 0 { DC } else { FS };
                let user = users[i % users.len()];
                let failure = AuthResult::Failure(LOGON_FAILURE);
                login(
                    start + 0.5 * i as f64,
                    ATTACKER,
                    server,
                    user,
                    "smb",
                    failure,
                )
            })
            .collect()
    }

    fn evidence<'b>(breach: &'b Breach, name: &str) -> &'b str {
        breach.evidence(name).unwrap_or("<missing>")
    }

    #[test]
    fn thirty_administrator_guesses_raise_one_admin_brute_force() {
        let mut h: Harness<SmbBruteForce> = Harness::new();
        let breaches = h.feed_all(&guesses(100.0, 30, &["Administrator"]));
        assert_eq!(breaches.len(), 1);
        let b = &breaches[0];
        assert_eq!(b.model, "Device / SMB Session Brute Force (Admin)");
        assert_eq!(b.device.ip, IpAddr::from(ATTACKER));
        assert_eq!(b.score, 80);
        assert_eq!(b.mitre, ["T1110", "T1078.002", "T1110.001"]);
        // Decided by the tenth failure.
        assert_eq!(b.ts, Timestamp(104_500_000));
        assert_eq!(b.destinations, vec![IpAddr::from(DC), IpAddr::from(FS)]);
        assert_eq!(b.ports, vec![445]);
        assert_eq!(evidence(b, "failures"), "10");
        assert_eq!(evidence(b, "distinct_accounts"), "1");
        assert_eq!(evidence(b, "accounts"), "CORP\\administrator (10)");
        assert_eq!(evidence(b, "statuses"), "STATUS_LOGON_FAILURE (10)");
        assert_eq!(evidence(b, "workstations"), "DESKTOP-7Q2M1X");
        assert_eq!(evidence(b, "servers"), "10.77.0.10, 10.77.0.20");
        assert_eq!(evidence(b, "first_failure"), "100.000000");
        assert_eq!(evidence(b, "duration_secs"), "4.5");
    }

    #[test]
    fn a_spray_of_three_ordinary_accounts_raises_one_non_admin_brute_force() {
        let mut h: Harness<SmbBruteForce> = Harness::new();
        let breaches = h.feed_all(&guesses(100.0, 18, &["ghall", "jyoung", "ohill"]));
        assert_eq!(breaches.len(), 1);
        let b = &breaches[0];
        assert_eq!(b.model, "Device / SMB Session Brute Force (Non-Admin)");
        assert_eq!(b.score, 65);
        assert_eq!(b.mitre, ["T1110", "T1110.003"]);
        assert_eq!(evidence(b, "distinct_accounts"), "3");
        assert_eq!(
            evidence(b, "accounts"),
            "CORP\\ghall (4), CORP\\jyoung (3), CORP\\ohill (3)"
        );
    }

    #[test]
    fn a_mistyped_password_or_two_is_not_a_brute_force() {
        let mut h: Harness<SmbBruteForce> = Harness::new();
        let failure = AuthResult::Failure(LOGON_FAILURE);
        // Every working day for a month: two typos, then the right password.
        let events: Vec<Event<'_>> = (0..30)
            .flat_map(|day| {
                let t = f64::from(day) * 86_400.0;
                [
                    login(t, BOB, FS, "bob", "smb", failure),
                    login(t + 3.0, BOB, FS, "bob", "smb", failure),
                    login(t + 6.0, BOB, FS, "bob", "smb", AuthResult::Success),
                ]
            })
            .collect();
        assert!(h.feed_all(&events).is_empty());
    }

    #[test]
    fn failures_spread_wider_than_the_window_do_not_add_up() {
        let mut h: Harness<SmbBruteForce> = Harness::new();
        let failure = AuthResult::Failure(LOGON_FAILURE);
        // One failure every two minutes: never more than five in ten minutes.
        let events: Vec<Event<'_>> = (0..50)
            .map(|i| login(f64::from(i) * 120.0, BOB, FS, "bob", "smb", failure))
            .collect();
        assert!(h.feed_all(&events).is_empty());
    }

    #[test]
    fn admin_and_ordinary_accounts_are_counted_apart() {
        let mut h: Harness<SmbBruteForce> = Harness::new();
        // Six guesses each: neither kind reaches ten.
        let events = guesses(0.0, 12, &["administrator", "ghall"]);
        assert!(h.feed_all(&events).is_empty());
        // Then both do, each raising its own model once.
        let breaches = h.feed_all(&guesses(10.0, 8, &["Admin", "ghall"]));
        let models: Vec<&str> = breaches.iter().map(|b| b.model.as_str()).collect();
        assert_eq!(
            models,
            [
                "Device / SMB Session Brute Force (Admin)",
                "Device / SMB Session Brute Force (Non-Admin)"
            ]
        );
    }

    #[test]
    fn admin_naming_conventions_and_configured_names_count_as_admin() {
        let h: Harness<SmbBruteForce> = Harness::new();
        let plugin = h.plugin();
        let admin = |user: &str| plugin.is_admin(&Account::new("CORP", user));
        for user in [
            "Administrator",
            "ROOT",
            "adm-jdoe",
            "jdoe-adm",
            "jdoe_admin",
            "jdoeadm",
        ] {
            assert!(admin(user), "{user}");
        }
        for user in ["alice", "ghall", "administration-printer", "madmax"] {
            assert!(!admin(user), "{user}");
        }
        let json = r#"{"admin_accounts": ["svc-backup"], "admin_suffixes": []}"#;
        let h = Harness::<SmbBruteForce>::with_config_json(json).expect("valid config");
        assert!(h.plugin().is_admin(&Account::new("CORP", "SVC-Backup")));
        assert!(!h.plugin().is_admin(&Account::new("CORP", "jdoe-adm")));
    }

    #[test]
    fn one_breach_per_episode_then_again_after_a_quiet_spell() {
        let mut h: Harness<SmbBruteForce> = Harness::new();
        let mut events = guesses(0.0, 30, &["Administrator"]);
        // A pause shorter than the quiet spell: the same episode.
        events.extend(guesses(300.0, 30, &["Administrator"]));
        assert_eq!(h.feed_all(&events).len(), 1);
        // Twenty quiet minutes later, a new run is a new episode.
        let breaches = h.feed_all(&guesses(315.0 + 1200.0, 30, &["Administrator"]));
        assert_eq!(breaches.len(), 1);
        assert_eq!(evidence(&breaches[0], "failures"), "10");
    }

    #[test]
    fn other_carriers_null_sessions_and_right_passwords_do_not_count() {
        let mut h: Harness<SmbBruteForce> = Harness::new();
        let refused = AuthResult::Failure(LOGON_FAILURE);
        let expired = AuthResult::Failure(PASSWORD_EXPIRED);
        let mut events = Vec::new();
        for i in 0..20 {
            let t = f64::from(i);
            events.push(login(
                t,
                ATTACKER,
                DC,
                "alice",
                "ldap",
                AuthResult::Failure(49),
            ));
            events.push(login(
                t,
                ATTACKER,
                DC,
                "alice",
                "http",
                AuthResult::Failure(401),
            ));
            events.push(login(t, ATTACKER, DC, "", "smb", refused));
            events.push(login(t, ATTACKER, DC, "svc-sql", "smb", expired));
            events.push(login(t, ATTACKER, DC, "bob", "smb", AuthResult::Unknown));
        }
        assert!(h.feed_all(&events).is_empty());
    }

    #[test]
    fn a_brute_force_cut_by_a_restart_breaches_once() {
        let events = guesses(0.0, 30, &["Administrator"]);
        let mut h: Harness<SmbBruteForce> = Harness::new();
        assert!(h.feed_all(&events[..6]).is_empty());
        let mut h = h.restart().expect("state restores");
        assert_eq!(h.feed_all(&events[6..12]).len(), 1);
        let mut h = h.restart().expect("state restores");
        assert!(
            h.feed_all(&events[12..]).is_empty(),
            "still the same episode"
        );
    }

    #[test]
    fn a_version_1_snapshot_restores_its_episodes_and_their_ages() {
        let events = guesses(0.0, 30, &["Administrator"]);
        let mut h: Harness<SmbBruteForce> = Harness::new();
        assert!(h.feed_all(&events[..6]).is_empty());
        // Version 1 kept the devices in a plain map.
        let devices = h.plugin().state().expect("state");
        let v1: BTreeMap<IpAddr, Device> =
            devices.iter().map(|(ip, _, d)| (*ip, d.clone())).collect();
        let snapshot = old_snapshot::<SmbBruteForce, _>(1, &v1);
        let mut plugin = SmbBruteForce::new(Config::default());
        plugin.restore(&snapshot).expect("migrates");
        let restored = plugin.state().expect("state");
        let ages: Vec<_> = restored.iter().map(|(ip, at, _)| (*ip, at)).collect();
        assert_eq!(ages, [(IpAddr::from(ATTACKER), events[5].ts)]);
        let mut h = Harness::from_plugin(plugin);
        assert_eq!(h.feed_all(&events[6..12]).len(), 1, "the episode goes on");
        assert!(h.feed_all(&events[12..]).is_empty(), "and breached once");
    }

    #[test]
    fn the_least_recently_failing_device_is_forgotten_past_the_bound() {
        let failure = |t: f64, device: u8| {
            let status = AuthResult::Failure(LOGON_FAILURE);
            login(t, [10, 77, 0, device], DC, "bob", "smb", status)
        };
        // Three failures each for 1 then 2; 3 comes, then 1 and 2 fail a fourth time.
        let mut events: Vec<Event<'_>> = (0..6).map(|i| failure(f64::from(i), 1 + i / 3)).collect();
        events.extend([failure(6.0, 3), failure(7.0, 1), failure(8.0, 2)]);
        let unbounded = r#"{"threshold": 4}"#;
        let mut h = Harness::<SmbBruteForce>::with_config_json(unbounded).expect("valid config");
        assert_eq!(h.feed_all(&events).len(), 2, "1 and 2 reach four failures");
        // Two devices at most: 3 makes room by forgetting 1 (the least recently failing), and 1
        // coming back forgets 2, so neither counts to four.
        let bounded = r#"{"threshold": 4, "max_devices": 2}"#;
        let mut h = Harness::<SmbBruteForce>::with_config_json(bounded).expect("valid config");
        assert!(h.feed_all(&events).is_empty());
    }

    #[test]
    fn threshold_and_window_come_from_config() {
        let json = r#"{"threshold": 40}"#;
        let mut h = Harness::<SmbBruteForce>::with_config_json(json).expect("valid config");
        assert!(h.feed_all(&guesses(0.0, 30, &["Administrator"])).is_empty());
        let json = r#"{"threshold": 3, "window_secs": 1}"#;
        let mut h = Harness::<SmbBruteForce>::with_config_json(json).expect("valid config");
        assert!(h.feed_all(&guesses(0.0, 30, &["Administrator"])).is_empty());
    }
}
