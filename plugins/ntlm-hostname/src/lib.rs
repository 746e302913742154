//! `Device / Unusual NTLM Hostname`: a credential, or a static client address, logs in with an
//! NTLM workstation name it has never been seen with. A phished credential used from the
//! attacker's own machine (over the victim's VPN address, even) still names that machine in every
//! NTLM AUTHENTICATE; the user's own logins always name their laptop.
//!
//! Pattern of life, per credential (`DOMAIN\user`, case-insensitive) and per client address: the
//! workstation names seen in successful, non-anonymous NTLM logins over any carrier. A failed
//! guess proves nothing about the credential (brute force is another model's business), and a
//! NULL session names no one. An entity first seen is learned, never anomalous: without history
//! there is no change to report.

use core::net::IpAddr;

use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::account::Account;
use vigil_plugin_sdk::profile::Sighting;
use vigil_plugin_sdk::{
    export_plugin, AuthResult, Breach, Event, EventClass, EventKind, Model, Novelty, Output,
    Plugin, PluginKind, ProfileConfig, Profiles, Subscriptions,
};

const MODEL: Model = Model {
    name: "Device / Unusual NTLM Hostname",
    score: 70,
    // Valid Accounts; Valid Accounts: Domain Accounts.
    mitre: &["T1078", "T1078.002"],
};

/// When only the address finds the name unusual (the credential is new, or roams): an address
/// changes hands (DHCP, a reinstalled laptop) more innocently than a credential changes machine.
const ADDRESS_ONLY_SCORE: u8 = 55;

/// How an empty workstation field (some tools send none) appears in the evidence.
const NO_NAME: &str = "(none)";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `learning_secs`: one day. Everything a credential or address does on its first day is
    /// learned: a user's laptop, desktop and VDI session all show up within a working day, while a
    /// stolen credential used days later from another machine does not.
    /// `forget_after_secs`: 30 days. A machine not used for a month (returned, reimaged) is no
    /// longer vouched for.
    /// `max_entities` / `max_values` bound memory.
    #[serde(flatten)]
    pub profile: ProfileConfig,
    /// Also learn per client address. Right for static addresses (VPN pools with fixed
    /// assignments, servers); turn off where clients get dynamic addresses.
    pub track_addresses: bool,
    /// An entity already seen with this many workstation names roams (a helpdesk account, a
    /// terminal server's or NAT's address): one more name says nothing. A user has a laptop, a
    /// desktop, a VDI session or two.
    pub roaming_workstations: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            profile: ProfileConfig::default(),
            track_addresses: true,
            roaming_workstations: 6,
        }
    }
}

/// Learned state: what each credential and each address has logged in from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    credentials: Profiles<Account, String>,
    addresses: Profiles<IpAddr, String>,
}

pub struct NtlmHostname {
    config: Config,
    state: State,
}

/// One successful login, as the model sees it.
struct Login<'a> {
    account: Account,
    user: &'a str,
    domain: &'a str,
    /// As sent, for the evidence.
    workstation: &'a str,
    carrier: &'a str,
}

impl Plugin for NtlmHostname {
    type Config = Config;
    type State = State;
    const NAME: &'static str = "ntlm-hostname";
    const KIND: PluginKind = PluginKind::Detector;
    const SUBSCRIPTIONS: Subscriptions = Subscriptions::NONE.with(EventClass::Ntlm);

    fn new(config: Config) -> Self {
        NtlmHostname {
            config,
            state: State::default(),
        }
    }

    fn on_event(&mut self, event: &Event<'_>, out: &mut Output) {
        let EventKind::NtlmAuth {
            carrier,
            user,
            domain,
            workstation,
            anonymous,
            result: AuthResult::Success,
        } = &event.kind
        else {
            return;
        };
        let account = Account::new(domain, user);
        if *anonymous || account.is_anonymous() {
            return;
        }
        let login = Login {
            account,
            user,
            domain,
            workstation,
            carrier,
        };
        if let Some(breach) = self.observe(event, login) {
            out.breach(breach);
        }
    }

    fn state(&self) -> Option<&Self::State> {
        Some(&self.state)
    }

    fn set_state(&mut self, state: Self::State) {
        self.state = state;
    }
}

impl NtlmHostname {
    /// Learns the login's workstation for its credential and address; a breach when either,
    /// past learning, had never seen it.
    fn observe(&mut self, event: &Event<'_>, login: Login<'_>) -> Option<Breach> {
        // NetBIOS names are case-insensitive.
        let name = login.workstation.trim().to_uppercase();
        let profile = &self.config.profile;
        let by_credential =
            self.state
                .credentials
                .observe(profile, event.ts, login.account.clone(), name.clone());
        let credential = self.judge(by_credential);
        let address = match self.config.track_addresses {
            true => {
                let novelty = self
                    .state
                    .addresses
                    .observe(profile, event.ts, event.src.ip, name);
                self.judge(novelty)
            }
            false => Verdict::Usual("not tracked".to_string()),
        };
        let unusual_for = match (&credential, &address) {
            (Verdict::Usual(_), Verdict::Usual(_)) => return None,
            (Verdict::Unusual(_), Verdict::Usual(_)) => "credential",
            (Verdict::Usual(_), Verdict::Unusual(_)) => "address",
            (Verdict::Unusual(_), Verdict::Unusual(_)) => "credential and address",
        };
        let credential_history = describe(&credential, |known| {
            self.state
                .credentials
                .values(&login.account)
                .find(|(v, _)| *v == known)
        });
        let address_history = describe(&address, |known| {
            self.state
                .addresses
                .values(&event.src.ip)
                .find(|(v, _)| *v == known)
        });
        let mut breach = MODEL
            .breach(event)
            .with_evidence("credential", &login.account)
            .with_evidence("user", login.user)
            .with_evidence("domain", login.domain)
            .with_evidence("workstation", shown(login.workstation))
            .with_evidence("unusual_for", unusual_for)
            .with_evidence("credential_workstations", credential_history)
            .with_evidence("address_workstations", address_history)
            .with_evidence("carrier", login.carrier)
            .with_evidence("server", event.dst.ip)
            .with_destinations([event.dst.ip])
            .with_ports([event.dst.port]);
        if matches!(credential, Verdict::Usual(_)) {
            breach.score = ADDRESS_ONLY_SCORE;
        }
        Some(breach)
    }

    /// Whether a novelty is worth a breach; if not, why not (for the evidence of the other
    /// entity's breach).
    fn judge(&self, novelty: Novelty<String>) -> Verdict {
        match novelty {
            Novelty::NewEntity => Verdict::Usual("never seen before".to_string()),
            Novelty::Learning => Verdict::Usual("still learning".to_string()),
            Novelty::Familiar(seen) => {
                Verdict::Usual(format!("already seen with it ({} logins)", seen.count))
            }
            Novelty::Unusual { known } if known.len() >= self.config.roaming_workstations => {
                Verdict::Usual(format!("roams ({} workstations known)", known.len()))
            }
            Novelty::Unusual { known } => Verdict::Unusual(known),
        }
    }
}

/// What an entity made of a login's workstation name.
enum Verdict {
    /// Never seen with it: the names it was seen with, most recent first.
    Unusual(Vec<String>),
    /// Nothing to report, and why.
    Usual(String),
}

/// `LAPTOP-ALICE (25 logins)` for each name an entity knew, or why it found nothing unusual.
fn describe<'s>(
    verdict: &Verdict,
    sighting: impl Fn(&str) -> Option<(&'s String, &'s Sighting)>,
) -> String {
    match verdict {
        Verdict::Usual(why) => why.clone(),
        Verdict::Unusual(known) => known
            .iter()
            .map(|name| match sighting(name) {
                Some((_, seen)) => format!("{} ({} logins)", shown(name), seen.count),
                None => shown(name).to_string(),
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn shown(workstation: &str) -> &str {
    match workstation.trim() {
        "" => NO_NAME,
        name => name,
    }
}

export_plugin!(NtlmHostname);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_plugin_sdk::harness::{events::endpoint, Harness};
    use vigil_plugin_sdk::{Timestamp, Transport};

    const DAY: f64 = 86_400.0;
    const VPN: [u8; 4] = [10, 77, 0, 50];
    const BOB: [u8; 4] = [10, 77, 0, 60];
    const DC: [u8; 4] = [10, 77, 0, 10];
    const FS: [u8; 4] = [10, 77, 0, 20];
    use vigil_plugin_sdk::ntstatus::LOGON_FAILURE;

    /// An NTLM login over SMB as the analyzer reports it.
    fn ntlm<'a>(
        secs: f64,
        client: [u8; 4],
        server: [u8; 4],
        (domain, user, workstation): (&'a str, &'a str, &'a str),
        result: AuthResult,
    ) -> Event<'a> {
        Event {
            ts: Timestamp((secs * 1e6).round() as u64),
            flow: 0,
            proto: Transport::Tcp,
            src: endpoint(IpAddr::from(client), 50000),
            dst: endpoint(IpAddr::from(server), 445),
            kind: EventKind::NtlmAuth {
                carrier: "smb",
                user,
                domain,
                workstation,
                anonymous: user.is_empty(),
                result,
            },
        }
    }

    /// The lab's baseline: five days, alice from her laptop on the VPN address and bob from his,
    /// morning and afternoon, to DC01 and FS01.
    fn baseline() -> Vec<Event<'static>> {
        let mut events = Vec::new();
        for day in 0..5 {
            for session in [8.0, 14.0] {
                let t = f64::from(day) * DAY + session * 3600.0;
                for (i, server) in [DC, DC, FS].into_iter().enumerate() {
                    let at = t + i as f64;
                    let alice = ("CORP", "alice", "LAPTOP-ALICE");
                    events.push(ntlm(at, VPN, server, alice, AuthResult::Success));
                    let bob = ("CORP", "bob", "LAPTOP-BOB");
                    events.push(ntlm(at + 0.5, BOB, server, bob, AuthResult::Success));
                }
            }
        }
        events
    }

    /// The attack day: alice's credential from the attacker's machine, twice.
    const ATTACK: f64 = 6.0 * DAY;

    fn stolen_login(secs: f64) -> Event<'static> {
        let attacker = ("CORP", "alice", "DESKTOP-7Q2M1X");
        ntlm(secs, VPN, DC, attacker, AuthResult::Success)
    }

    fn evidence<'b>(breach: &'b Breach, name: &str) -> &'b str {
        breach.evidence(name).unwrap_or("<missing>")
    }

    #[test]
    fn ntlm_auth_from_new_workstation_raises_breach() {
        let mut h: Harness<NtlmHostname> = Harness::new();
        assert!(h.feed_all(&baseline()).is_empty());
        let breaches = h.feed_all(&[stolen_login(ATTACK), stolen_login(ATTACK + 0.8)]);
        assert_eq!(
            breaches.len(),
            1,
            "the second login's name is known by then"
        );
        let b = &breaches[0];
        assert_eq!(b.model, "Device / Unusual NTLM Hostname");
        assert_eq!(b.device.ip, IpAddr::from(VPN));
        assert_eq!(b.ts, Timestamp::from_secs(ATTACK as u64));
        assert_eq!(b.score, 70);
        assert_eq!(b.mitre, vec!["T1078".to_string(), "T1078.002".to_string()]);
        assert_eq!(b.destinations, vec![IpAddr::from(DC)]);
        assert_eq!(b.ports, vec![445]);
        assert_eq!(evidence(b, "credential"), "CORP\\alice");
        assert_eq!(evidence(b, "user"), "alice");
        assert_eq!(evidence(b, "domain"), "CORP");
        assert_eq!(evidence(b, "workstation"), "DESKTOP-7Q2M1X");
        assert_eq!(evidence(b, "unusual_for"), "credential and address");
        assert_eq!(
            evidence(b, "credential_workstations"),
            "LAPTOP-ALICE (30 logins)"
        );
        assert_eq!(
            evidence(b, "address_workstations"),
            "LAPTOP-ALICE (30 logins)"
        );
        assert_eq!(evidence(b, "carrier"), "smb");
        assert_eq!(evidence(b, "server"), "10.77.0.10");
    }

    #[test]
    fn without_a_baseline_a_first_login_is_learned_not_unusual() {
        let mut h: Harness<NtlmHostname> = Harness::new();
        let events = [
            stolen_login(ATTACK),
            stolen_login(ATTACK + 0.8),
            ntlm(
                ATTACK + 100.0,
                VPN,
                FS,
                ("CORP", "bob", "LAPTOP-BOB"),
                AuthResult::Success,
            ),
        ];
        assert!(h.feed_all(&events).is_empty());
    }

    #[test]
    fn a_second_machine_on_the_first_day_is_learned() {
        let mut h: Harness<NtlmHostname> = Harness::new();
        let laptop = ("CORP", "alice", "LAPTOP-ALICE");
        let vdi = ("CORP", "alice", "VDI-07");
        let events = [
            ntlm(0.0, VPN, DC, laptop, AuthResult::Success),
            ntlm(3.0 * 3600.0, VPN, DC, vdi, AuthResult::Success),
            ntlm(3.0 * DAY, VPN, DC, vdi, AuthResult::Success),
            ntlm(3.0 * DAY, VPN, DC, laptop, AuthResult::Success),
        ];
        assert!(h.feed_all(&events).is_empty());
    }

    #[test]
    fn failed_and_anonymous_logins_neither_teach_nor_breach() {
        let mut h: Harness<NtlmHostname> = Harness::new();
        h.feed_all(&baseline());
        let guesses: Vec<Event<'_>> = (0..30)
            .map(|i| {
                let admin = ("CORP", "Administrator", "DESKTOP-7Q2M1X");
                let failure = AuthResult::Failure(LOGON_FAILURE);
                ntlm(ATTACK + f64::from(i), VPN, DC, admin, failure)
            })
            .collect();
        assert!(h.feed_all(&guesses).is_empty());
        let null_session = ntlm(
            ATTACK + 40.0,
            VPN,
            DC,
            ("", "", "DESKTOP-7Q2M1X"),
            AuthResult::Success,
        );
        assert!(h.feed(&null_session).is_empty());
        let unanswered = ntlm(
            ATTACK + 50.0,
            VPN,
            DC,
            ("CORP", "alice", "DESKTOP-7Q2M1X"),
            AuthResult::Unknown,
        );
        assert!(h.feed(&unanswered).is_empty());
        // None of that taught the address the attacker's name.
        let breaches = h.feed(&stolen_login(ATTACK + 60.0));
        assert_eq!(breaches.len(), 1);
        assert_eq!(
            evidence(&breaches[0], "unusual_for"),
            "credential and address"
        );
    }

    #[test]
    fn a_new_credential_from_a_learned_address_and_new_machine_is_unusual_for_the_address() {
        let mut h: Harness<NtlmHostname> = Harness::new();
        h.feed_all(&baseline());
        let admin = ("CORP", "Administrator", "DESKTOP-7Q2M1X");
        let breaches = h.feed(&ntlm(ATTACK, VPN, FS, admin, AuthResult::Success));
        assert_eq!(breaches.len(), 1);
        let b = &breaches[0];
        assert_eq!(evidence(b, "unusual_for"), "address");
        assert_eq!(evidence(b, "credential"), "CORP\\administrator");
        assert_eq!(evidence(b, "credential_workstations"), "never seen before");
        assert_eq!(
            evidence(b, "address_workstations"),
            "LAPTOP-ALICE (30 logins)"
        );
        assert_eq!(b.score, ADDRESS_ONLY_SCORE);
    }

    #[test]
    fn a_credential_from_a_new_address_is_unusual_for_the_credential() {
        let mut h: Harness<NtlmHostname> = Harness::new();
        h.feed_all(&baseline());
        let elsewhere = [10, 99, 0, 7];
        let breaches = h.feed(&ntlm(
            ATTACK,
            elsewhere,
            DC,
            ("CORP", "alice", "DESKTOP-7Q2M1X"),
            AuthResult::Success,
        ));
        assert_eq!(breaches.len(), 1);
        assert_eq!(evidence(&breaches[0], "unusual_for"), "credential");
        assert_eq!(
            evidence(&breaches[0], "address_workstations"),
            "never seen before"
        );
    }

    #[test]
    fn names_and_credentials_compare_without_case() {
        let mut h: Harness<NtlmHostname> = Harness::new();
        h.feed_all(&baseline());
        let events = [
            ntlm(
                ATTACK,
                VPN,
                DC,
                ("corp", "ALICE", "laptop-alice"),
                AuthResult::Success,
            ),
            ntlm(
                ATTACK + 1.0,
                VPN,
                DC,
                ("", "CORP\\Alice", "Laptop-Alice "),
                AuthResult::Success,
            ),
        ];
        assert!(h.feed_all(&events).is_empty());
    }

    #[test]
    fn an_empty_workstation_name_is_a_change_too() {
        let mut h: Harness<NtlmHostname> = Harness::new();
        h.feed_all(&baseline());
        let breaches = h.feed(&ntlm(
            ATTACK,
            VPN,
            DC,
            ("CORP", "alice", ""),
            AuthResult::Success,
        ));
        assert_eq!(breaches.len(), 1);
        assert_eq!(evidence(&breaches[0], "workstation"), "(none)");
    }

    #[test]
    fn a_roaming_credential_on_a_shared_address_stays_quiet() {
        let mut h: Harness<NtlmHostname> = Harness::new();
        let helpdesk = |secs: f64, ws: &'static str| {
            ntlm(
                secs,
                [10, 77, 1, 5],
                DC,
                ("CORP", "helpdesk", ws),
                AuthResult::Success,
            )
        };
        let names = [
            "PC-01", "PC-02", "PC-03", "PC-04", "PC-05", "PC-06", "PC-07",
        ];
        let first_day: Vec<Event<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, ws)| helpdesk(i as f64 * 60.0, ws))
            .collect();
        assert!(h.feed_all(&first_day).is_empty());
        assert!(h.feed(&helpdesk(3.0 * DAY, "PC-99")).is_empty());
    }

    #[test]
    fn learned_state_survives_a_restart() {
        let mut h: Harness<NtlmHostname> = Harness::new();
        h.feed_all(&baseline());
        let mut h = h.restart().expect("state restores");
        let breaches = h.feed(&stolen_login(ATTACK));
        assert_eq!(breaches.len(), 1);
        assert_eq!(
            evidence(&breaches[0], "credential_workstations"),
            "LAPTOP-ALICE (30 logins)"
        );
    }

    #[test]
    fn learning_period_and_address_tracking_come_from_config() {
        // A week of learning: the attack day is still inside it.
        let json = r#"{"learning_secs": 604800}"#;
        let mut h = Harness::<NtlmHostname>::with_config_json(json).expect("valid config");
        h.feed_all(&baseline());
        assert!(h.feed(&stolen_login(ATTACK)).is_empty());

        let json = r#"{"track_addresses": false}"#;
        let mut h = Harness::<NtlmHostname>::with_config_json(json).expect("valid config");
        h.feed_all(&baseline());
        let admin = ("CORP", "Administrator", "DESKTOP-7Q2M1X");
        assert!(h
            .feed(&ntlm(ATTACK, VPN, FS, admin, AuthResult::Success))
            .is_empty());
        let breaches = h.feed(&stolen_login(ATTACK + 1.0));
        assert_eq!(evidence(&breaches[0], "unusual_for"), "credential");
        assert_eq!(
            evidence(&breaches[0], "address_workstations"),
            "not tracked"
        );
    }
}
