//! `Device / Attack and Recon Tools`: a device's requests carry the fingerprint of a well-known
//! offensive tool: Nmap's service-detection probes and scripting-engine user agent, a web
//! vulnerability scanner, a directory brute-forcer, a password sprayer. Legitimate software does
//! not send these, so one request is enough; the breach names the tool and the request.
//!
//! The fingerprints are the model's config, so a signed model update can add tools. One breach
//! per device and tool per episode: a scan sends hundreds of such requests, an analyst needs one.

use core::net::IpAddr;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::state::OldState;
use vigil_plugin_sdk::{
    export_plugin, BoundedMap, Breach, Duration, Event, EventClass, EventKind, Model, Output,
    Plugin, PluginKind, Subscriptions, Timestamp,
};

/// Every breach carries Active Scanning; each fingerprint adds the techniques its tool stands for.
const MODEL: Model = Model {
    name: "Device / Attack and Recon Tools",
    score: 70,
    mitre: &["T1595"],
};

/// Longest request text copied into the evidence: URIs and user agents are the attacker's to
/// choose, and an analyst needs the start of them, not megabytes.
const MAX_EVIDENCE_CHARS: usize = 256;

/// Which part of a request a fingerprint looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// The HTTP `User-Agent`.
    UserAgent,
    /// The HTTP request target, percent-decoded.
    Uri,
    /// The HTTP `Host`.
    Host,
    /// The `mstshash` cookie of an RDP connection request.
    RdpCookie,
}

impl Field {
    const fn name(self) -> &'static str {
        match self {
            Field::UserAgent => "user_agent",
            Field::Uri => "uri",
            Field::Host => "host",
            Field::RdpCookie => "rdp_cookie",
        }
    }
}

/// How a fingerprint's pattern is compared; always ignoring ASCII case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Matching {
    #[default]
    Contains,
    Prefix,
    Exact,
}

impl Matching {
    const fn name(self) -> &'static str {
        match self {
            Matching::Contains => "contains",
            Matching::Prefix => "starts with",
            Matching::Exact => "is",
        }
    }

    fn matches(self, text: &str, pattern: &str) -> bool {
        let (text, pattern) = (text.as_bytes(), pattern.as_bytes());
        // An empty pattern would match everything: a broken update must not flag every request.
        if pattern.is_empty() {
            return false;
        }
        match self {
            Matching::Contains => text
                .windows(pattern.len())
                .any(|w| w.eq_ignore_ascii_case(pattern)),
            Matching::Prefix => text
                .get(..pattern.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(pattern)),
            Matching::Exact => text.eq_ignore_ascii_case(pattern),
        }
    }
}

/// One tool's tell-tale: `field` `matching` `pattern`, e.g. user agent contains `sqlmap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The tool's name as an analyst knows it; breaches are counted per tool.
    pub tool: String,
    pub field: Field,
    pub pattern: String,
    #[serde(default)]
    pub matching: Matching,
    /// ATT&CK techniques this tool stands for, besides Active Scanning.
    #[serde(default)]
    pub mitre: Vec<String>,
}

impl Fingerprint {
    fn new(tool: &str, field: Field, matching: Matching, pattern: &str, mitre: &[&str]) -> Self {
        Fingerprint {
            tool: tool.into(),
            field,
            pattern: pattern.into(),
            matching,
            mitre: mitre.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} {} \"{}\"",
            self.field.name(),
            self.matching.name(),
            self.pattern
        )
    }
}

/// The tools every deployment should recognise: strings their authors hard-coded and that no
/// browser, library or agent sends. Generic probes (`/HNAP1`, `/robots.txt`) are left out:
/// legitimate crawlers send them too.
fn default_fingerprints() -> Vec<Fingerprint> {
    use Field::*;
    use Matching::*;
    // Network Service Discovery; Vulnerability Scanning; Wordlist Scanning.
    const DISCOVERY: &[&str] = &["T1046"];
    const VULN: &[&str] = &["T1595.002"];
    const WORDLIST: &[&str] = &["T1595.003"];
    let f = Fingerprint::new;
    vec![
        // nmap -sV: the GetRequest probe for a service that answers anything; its SIP probe.
        f(
            "Nmap",
            Uri,
            Exact,
            "/nice ports,/Trinity.txt.bak",
            DISCOVERY,
        ),
        f("Nmap", Uri, Exact, "sip:nm", DISCOVERY),
        // NSE scripts (http-* and the version scripts) announce themselves.
        f(
            "Nmap",
            UserAgent,
            Contains,
            "Nmap Scripting Engine",
            DISCOVERY,
        ),
        f("Nmap", Uri, Prefix, "/nmaplowercheck", DISCOVERY),
        // nmap's RDP probes (rdp-ntlm-info, -sV) log in as "nmap".
        f("Nmap", RdpCookie, Exact, "nmap", DISCOVERY),
        f("masscan", UserAgent, Contains, "masscan", DISCOVERY),
        f("ZGrab", UserAgent, Contains, "zgrab", DISCOVERY),
        f(
            "sqlmap",
            UserAgent,
            Contains,
            "sqlmap",
            &["T1595.002", "T1190"],
        ),
        f("Nikto", UserAgent, Contains, "Nikto", VULN),
        f("Nessus", UserAgent, Contains, "Nessus", VULN),
        f("OpenVAS", UserAgent, Contains, "OpenVAS", VULN),
        f("WPScan", UserAgent, Contains, "WPScan", VULN),
        f("Nuclei", UserAgent, Contains, "Nuclei", VULN),
        f("Acunetix", UserAgent, Contains, "Acunetix", VULN),
        f(
            "Acunetix",
            Uri,
            Contains,
            "acunetix-wvs-test-for-some-inexistent-file",
            VULN,
        ),
        f("Arachni", UserAgent, Contains, "Arachni", VULN),
        f("w3af", UserAgent, Contains, "w3af", VULN),
        f("gobuster", UserAgent, Contains, "gobuster", WORDLIST),
        f("DirBuster", UserAgent, Contains, "DirBuster", WORDLIST),
        f("ffuf", UserAgent, Contains, "Fuzz Faster U Fool", WORDLIST),
        f("feroxbuster", UserAgent, Contains, "feroxbuster", WORDLIST),
        f("Wfuzz", UserAgent, Contains, "Wfuzz", WORDLIST),
        // THC Hydra's HTTP modules: password guessing.
        f("Hydra", UserAgent, Contains, "(Hydra)", &["T1110"]),
    ]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The built-in fingerprint list; an update may replace it.
    pub fingerprints: Vec<Fingerprint>,
    /// Fingerprints added on top of `fingerprints`, so extending the list does not mean
    /// restating it.
    pub extra_fingerprints: Vec<Fingerprint>,
    /// A device's run of a tool ends when the tool has not been seen from it for this long; seeing
    /// it again after that is a new episode and a new breach. An hour: one scan (even a slow
    /// `nmap -T2` of a subnet) is one breach, tomorrow's is another.
    #[serde(rename = "rearm_quiet_secs")]
    pub rearm_quiet: Duration,
    /// Devices whose job is scanning (the vulnerability-scanner appliance): their tools are
    /// expected and raise nothing.
    pub authorised_scanners: Vec<IpAddr>,
    /// Device-and-tool episodes tracked at once; the least recently active is forgotten first.
    pub max_episodes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            fingerprints: default_fingerprints(),
            extra_fingerprints: Vec::new(),
            rearm_quiet: Duration::from_secs(3600),
            authorised_scanners: Vec::new(),
            max_episodes: 4096,
        }
    }
}

/// The request a fingerprint matched, as the evidence shows it.
struct Request<'e> {
    fields: [(Field, Option<&'e str>); 4],
    evidence: Vec<(&'static str, String)>,
}

impl<'e> Request<'e> {
    fn of(event: &'e Event<'e>) -> Option<Self> {
        let server = format!("{}:{}", event.dst.ip, event.dst.port);
        match &event.kind {
            EventKind::Http {
                method,
                uri,
                host,
                user_agent,
                status,
                ..
            } => Some(Request {
                fields: [
                    (Field::UserAgent, *user_agent),
                    (Field::Uri, Some(*uri)),
                    (Field::Host, *host),
                    (Field::RdpCookie, None),
                ],
                evidence: vec![
                    ("method", clip(method)),
                    ("uri", clip(uri)),
                    ("host", clip(host.unwrap_or("-"))),
                    ("user_agent", clip(user_agent.unwrap_or("-"))),
                    ("status", status.map_or("-".into(), |s| s.to_string())),
                    ("server", server),
                ],
            }),
            EventKind::Rdp { cookie, protocols } => Some(Request {
                fields: [
                    (Field::UserAgent, None),
                    (Field::Uri, None),
                    (Field::Host, None),
                    (Field::RdpCookie, Some(*cookie)),
                ],
                evidence: vec![
                    ("rdp_cookie", clip(cookie)),
                    ("requested_protocols", format!("{protocols:#x}")),
                    ("server", server),
                ],
            }),
            _ => None,
        }
    }

    fn matches(&self, fingerprint: &Fingerprint) -> bool {
        self.fields.iter().any(|(field, text)| {
            *field == fingerprint.field
                && text.is_some_and(|text| fingerprint.matching.matches(text, &fingerprint.pattern))
        })
    }
}

fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_EVIDENCE_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

pub struct AttackTools {
    config: Config,
    /// (device, tool), touched when the tool is seen from the device, while its episode runs.
    episodes: BoundedMap<(IpAddr, String), ()>,
}

impl Plugin for AttackTools {
    type Config = Config;
    type State = BoundedMap<(IpAddr, String), ()>;
    /// 2: the episodes in a [`BoundedMap`]; 1 kept a plain map of when each was last seen.
    const STATE_VERSION: u32 = 2;
    const NAME: &'static str = "attack-tools";
    const KIND: PluginKind = PluginKind::Detector;
    const SUBSCRIPTIONS: Subscriptions = Subscriptions::NONE
        .with(EventClass::Http)
        .with(EventClass::Rdp)
        .with(EventClass::Tick);

    fn new(config: Config) -> Self {
        AttackTools {
            config,
            episodes: BoundedMap::new(),
        }
    }

    fn on_tick(&mut self, now: Timestamp, _: &mut Output) {
        let quiet = self.config.rearm_quiet;
        self.episodes
            .retain(|_, last, _| now.elapsed_since(last) < quiet);
    }

    fn on_event(&mut self, event: &Event<'_>, out: &mut Output) {
        if self.config.authorised_scanners.contains(&event.src.ip) {
            return;
        }
        let Some(request) = Request::of(event) else {
            return;
        };
        let matched = self
            .config
            .fingerprints
            .iter()
            .chain(&self.config.extra_fingerprints)
            .find(|fingerprint| request.matches(fingerprint))
            .cloned();
        let Some(fingerprint) = matched else {
            return;
        };
        if !self.starts_episode(event, &fingerprint.tool) {
            return;
        }
        let mut breach: Breach = MODEL
            .breach(event)
            .with_evidence("tool", &fingerprint.tool)
            .with_evidence("fingerprint", fingerprint.describe())
            .with_destinations([event.dst.ip])
            .with_ports([event.dst.port]);
        for (name, value) in request.evidence {
            breach = breach.with_evidence(name, value);
        }
        for technique in &fingerprint.mitre {
            if !breach.mitre.contains(technique) {
                breach.mitre.push(technique.clone());
            }
        }
        out.breach(breach);
    }

    fn state(&self) -> Option<&Self::State> {
        Some(&self.episodes)
    }

    fn set_state(&mut self, state: Self::State) {
        self.episodes = state;
    }

    fn migrate(from_version: u32, old: OldState) -> Result<Self::State, String> {
        match from_version {
            0 | 1 => {
                let episodes: BTreeMap<(IpAddr, String), Timestamp> = old.decode()?;
                Ok(episodes
                    .into_iter()
                    .map(|(key, last)| (key, last, ()))
                    .collect())
            }
            _ => Err(format!("unknown state version {from_version}")),
        }
    }
}

impl AttackTools {
    /// Records that `tool` was seen from the event's device; true when this starts an episode.
    fn starts_episode(&mut self, event: &Event<'_>, tool: &str) -> bool {
        let quiet = self.config.rearm_quiet;
        let key = (event.src.ip, tool.to_string());
        let running = self
            .episodes
            .touched(&key)
            .is_some_and(|last| event.ts.elapsed_since(last) < quiet);
        // A touch keeps the latest time: requests reported late (at the end of their flow) can
        // be older than the last one.
        let capacity = self.config.max_episodes;
        self.episodes.touch(capacity, event.ts, key, || ());
        !running
    }
}

export_plugin!(AttackTools);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_plugin_sdk::harness::{events::*, old_snapshot, Harness};
    use vigil_plugin_sdk::Transport;

    const ATTACKER: [u8; 4] = [10, 77, 0, 50];
    const WEB: [u8; 4] = [10, 77, 0, 30];
    const NSE_UA: &str =
        "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)";
    const EDGE_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0";

    fn at(secs: f64, src: [u8; 4], port: u16, kind: EventKind<'static>) -> Event<'static> {
        Event {
            ts: Timestamp((secs * 1e6).round() as u64),
            flow: 0,
            proto: Transport::Tcp,
            src: endpoint(IpAddr::from(src), 46700),
            dst: endpoint(IpAddr::from(WEB), port),
            kind,
        }
    }

    fn http(
        method: &'static str,
        uri: &'static str,
        uri_raw: &'static str,
        host: Option<&'static str>,
        user_agent: Option<&'static str>,
        status: Option<u16>,
    ) -> EventKind<'static> {
        EventKind::Http {
            method,
            uri,
            uri_raw,
            host,
            user_agent,
            status,
        }
    }

    /// The HTTP requests of the lab's `nmap -sV` against the web server, in the order the
    /// analyzer reports them (the unanswered probe on 9401 at the end of its flow).
    fn nmap_sv() -> Vec<Event<'static>> {
        let nse = |secs, method, uri, status| {
            at(
                secs,
                ATTACKER,
                80,
                http(
                    method,
                    uri,
                    uri,
                    Some("10.77.0.30"),
                    Some(NSE_UA),
                    Some(status),
                ),
            )
        };
        vec![
            at(
                48.366,
                ATTACKER,
                80,
                http("GET", "/", "/", None, None, Some(200)),
            ),
            at(
                48.374,
                ATTACKER,
                9401,
                http("GET", "/", "/", None, None, None),
            ),
            nse(48.670, "POST", "/sdk", 501),
            nse(48.670, "GET", "/nmaplowercheck1795848648", 404),
            nse(48.675, "GET", "/evox/about", 404),
            nse(48.675, "GET", "/HNAP1", 404),
            at(
                48.527,
                ATTACKER,
                9401,
                http(
                    "GET",
                    "/nice ports,/Trinity.txt.bak",
                    "/nice%20ports%2C/Tri%6Eity.txt%2ebak",
                    None,
                    None,
                    None,
                ),
            ),
            at(
                48.544,
                ATTACKER,
                9401,
                http("OPTIONS", "sip:nm", "sip:nm", None, None, None),
            ),
        ]
    }

    #[test]
    fn nmap_service_detection_raises_one_attack_tools_breach_naming_nmap() {
        let mut h: Harness<AttackTools> = Harness::new();
        let breaches = h.feed_all(&nmap_sv());
        assert_eq!(
            breaches.len(),
            1,
            "one per device and tool, not per request"
        );
        let b = &breaches[0];
        assert_eq!(b.model, "Device / Attack and Recon Tools");
        assert_eq!(b.device.ip, IpAddr::from(ATTACKER));
        assert_eq!(b.mitre, vec!["T1595".to_string(), "T1046".to_string()]);
        assert_eq!(b.destinations, vec![IpAddr::from(WEB)]);
        assert_eq!(b.ports, vec![80]);
        assert_eq!(b.evidence("tool"), Some("Nmap"));
        assert_eq!(
            b.evidence("fingerprint"),
            Some("user_agent contains \"Nmap Scripting Engine\"")
        );
        assert_eq!(b.evidence("method"), Some("POST"));
        assert_eq!(b.evidence("uri"), Some("/sdk"));
        assert_eq!(b.evidence("host"), Some("10.77.0.30"));
        assert_eq!(b.evidence("user_agent"), Some(NSE_UA));
        assert_eq!(b.evidence("status"), Some("501"));
        assert_eq!(b.evidence("server"), Some("10.77.0.30:80"));
    }

    #[test]
    fn nmap_get_request_probe_is_recognised_decoded() {
        let mut h: Harness<AttackTools> = Harness::new();
        let probe = nmap_sv().remove(6);
        let breaches = h.feed(&probe);
        assert_eq!(breaches.len(), 1);
        let b = &breaches[0];
        assert_eq!(
            b.evidence("fingerprint"),
            Some("uri is \"/nice ports,/Trinity.txt.bak\"")
        );
        assert_eq!(b.evidence("user_agent"), Some("-"));
        assert_eq!(b.evidence("status"), Some("-"));
        assert_eq!(b.ports, vec![9401]);
    }

    #[test]
    fn browsing_with_a_browser_stays_quiet() {
        let mut h: Harness<AttackTools> = Harness::new();
        let events: Vec<Event<'static>> = ["/", "/news/", "/timesheets.html", "/img/logo.png"]
            .iter()
            .enumerate()
            .map(|(i, uri)| {
                let kind = http(
                    "GET",
                    uri,
                    uri,
                    Some("intranet.corp.local"),
                    Some(EDGE_UA),
                    Some(200),
                );
                at(i as f64, [10, 77, 0, 60], 80, kind)
            })
            .collect();
        assert!(h.feed_all(&events).is_empty());
    }

    #[test]
    fn rdp_cookie_nmap_is_nmap_but_a_user_name_is_not() {
        let mut h: Harness<AttackTools> = Harness::new();
        let rdp = |secs, cookie| {
            at(
                secs,
                ATTACKER,
                3389,
                EventKind::Rdp {
                    cookie,
                    protocols: 3,
                },
            )
        };
        assert!(h.feed(&rdp(1.0, "alice")).is_empty());
        assert!(h.feed(&rdp(2.0, "nmapuser")).is_empty());
        let breaches = h.feed(&rdp(3.0, "nmap"));
        assert_eq!(breaches.len(), 1);
        assert_eq!(breaches[0].evidence("rdp_cookie"), Some("nmap"));
        assert_eq!(breaches[0].evidence("requested_protocols"), Some("0x3"));
    }

    #[test]
    fn each_tool_breaches_once_per_episode() {
        let mut h: Harness<AttackTools> = Harness::new();
        let sqlmap = |secs| {
            let ua = Some("sqlmap/1.7.2#stable (https://sqlmap.org)");
            at(
                secs,
                ATTACKER,
                80,
                http("GET", "/?id=1", "/?id=1", None, ua, Some(200)),
            )
        };
        let nikto = |secs| {
            let ua = Some("Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:000001)");
            at(
                secs,
                ATTACKER,
                80,
                http("GET", "/", "/", None, ua, Some(200)),
            )
        };
        let mut events: Vec<Event<'static>> = (0..100).map(|i| sqlmap(f64::from(i))).collect();
        events.extend((0..100).map(|i| nikto(100.0 + f64::from(i))));
        // Still the same sqlmap run half an hour later; a new one after a quiet day.
        events.push(sqlmap(1900.0));
        events.push(sqlmap(90_000.0));
        let tools: Vec<String> = h
            .feed_all(&events)
            .iter()
            .map(|b| b.evidence("tool").unwrap_or("").to_string())
            .collect();
        assert_eq!(tools, ["sqlmap", "Nikto", "sqlmap"]);
        assert_eq!(
            h.breaches()[0].mitre,
            ["T1595", "T1595.002", "T1190"].map(String::from)
        );
    }

    #[test]
    fn a_restart_mid_scan_does_not_breach_again() {
        let events = nmap_sv();
        let mut h: Harness<AttackTools> = Harness::new();
        assert_eq!(h.feed_all(&events[..4]).len(), 1);
        let mut h = h.restart().expect("state restores");
        assert!(h.feed_all(&events[4..]).is_empty());
    }

    #[test]
    fn a_version_1_snapshot_mid_scan_does_not_breach_again() {
        let events = nmap_sv();
        let mut h: Harness<AttackTools> = Harness::new();
        assert_eq!(h.feed_all(&events[..4]).len(), 1);
        // Version 1 kept when each episode's tool was last seen in a plain map.
        let episodes = h.plugin().state().expect("state");
        let v1: BTreeMap<(IpAddr, String), Timestamp> = episodes
            .iter()
            .map(|(key, at, _)| (key.clone(), at))
            .collect();
        let mut plugin = AttackTools::new(Config::default());
        let snapshot = old_snapshot::<AttackTools, _>(1, &v1);
        plugin.restore(&snapshot).expect("migrates");
        let mut h = Harness::from_plugin(plugin);
        assert!(h.feed_all(&events[4..]).is_empty());
    }

    #[test]
    fn the_stalest_episode_is_forgotten_past_the_bound() {
        let ua = |tool| match tool {
            "sqlmap" => Some("sqlmap/1.7.2#stable (https://sqlmap.org)"),
            _ => Some("Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:000001)"),
        };
        let request = |secs, tool| {
            let kind = http("GET", "/", "/", None, ua(tool), Some(200));
            at(secs, ATTACKER, 80, kind)
        };
        let events = [
            request(0.0, "sqlmap"),
            request(1.0, "Nikto"),
            request(2.0, "sqlmap"),
        ];
        let mut h: Harness<AttackTools> = Harness::new();
        assert_eq!(h.feed_all(&events).len(), 2);
        // One episode kept: Nikto's makes sqlmap's forgotten, so sqlmap starts a new one.
        let config = r#"{"max_episodes": 1}"#;
        let mut h = Harness::<AttackTools>::with_config_json(config).expect("valid config");
        assert_eq!(h.feed_all(&events).len(), 3);
    }

    #[test]
    fn fingerprints_come_from_config() {
        let config = r#"{
            "extra_fingerprints": [
                {"tool": "Evil Scanner", "field": "host", "matching": "exact", "pattern": "scan.me",
                 "mitre": ["T1595.002"]}
            ],
            "authorised_scanners": ["10.77.0.99"]
        }"#;
        let mut h = Harness::<AttackTools>::with_config_json(config).expect("valid config");
        let evil = at(
            1.0,
            ATTACKER,
            80,
            http("GET", "/", "/", Some("SCAN.ME"), None, None),
        );
        let breaches = h.feed(&evil);
        assert_eq!(breaches.len(), 1);
        assert_eq!(breaches[0].evidence("tool"), Some("Evil Scanner"));
        assert!(
            h.feed_all(&nmap_sv()[2..3]).len() == 1,
            "the default list is still there"
        );
        let scanner = at(
            2.0,
            [10, 77, 0, 99],
            80,
            http("GET", "/", "/", None, Some(NSE_UA), None),
        );
        assert!(
            h.feed(&scanner).is_empty(),
            "authorised scanners are expected"
        );
    }

    #[test]
    fn empty_patterns_never_match() {
        let config = r#"{"fingerprints": [{"tool": "Broken", "field": "uri", "pattern": ""}]}"#;
        let mut h = Harness::<AttackTools>::with_config_json(config).expect("valid config");
        let get = at(1.0, ATTACKER, 80, http("GET", "/", "/", None, None, None));
        assert!(h.feed(&get).is_empty());
    }

    #[test]
    fn long_request_text_is_clipped_in_the_evidence() {
        let long = "A".repeat(1000);
        assert_eq!(clip(&long).len(), MAX_EVIDENCE_CHARS + 3);
        assert_eq!(clip("/sdk"), "/sdk");
    }
}
