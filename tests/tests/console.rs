//! The console of a live `vigil run`, fed a hostile capture: an NTLM workstation, an HTTP URI, a
//! DNS name and an LDAP filter holding HTML and script. Signed in over a real socket, every page
//! shows them as text (escaped), never as markup; a tampered bundle uploaded on the plugins page
//! is refused and changes nothing on disk.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vigil_tests::forge::{tcp_exchange, udp};
use vigil_tests::http::{request_with, Answer};
use vigil_tests::live::{skip_live, wait_for_alerts, LiveVigil, API_ADDR};
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::pcap;
use vigil_tests::workspace::{plugin_dir, TempDir};

const TOKEN: &str = "console-test-token-81c2f0";
const SCRIPT: &str = "<script>alert(1)</script>";
/// No spaces, so it passes as a host name too.
const IMAGE: &str = "\"><img/src=x/onerror=alert(1)>";
const DEVICE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x66];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];

/// What a client sends percent-encoded in a URI, decoded again in the evidence.
fn percent_encoded(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// An NTLMSSP AUTHENTICATE (OEM strings) from `user` at `workstation`.
fn ntlm_authenticate(user: &str, workstation: &str) -> Vec<u8> {
    let nt_response = [0x11u8; 24];
    let fields: [&[u8]; 6] = [
        &[0u8; 24],
        &nt_response,
        b"CORP",
        user.as_bytes(),
        workstation.as_bytes(),
        &[],
    ];
    let mut header = b"NTLMSSP\0".to_vec();
    header.extend_from_slice(&3u32.to_le_bytes());
    let mut payload = Vec::new();
    let mut offset = 64u32;
    for field in fields {
        let len = field.len() as u16;
        header.extend_from_slice(&len.to_le_bytes());
        header.extend_from_slice(&len.to_le_bytes());
        header.extend_from_slice(&offset.to_le_bytes());
        payload.extend_from_slice(field);
        offset += u32::from(len);
    }
    header.extend_from_slice(&0u32.to_le_bytes()); // flags: OEM strings
    header.extend_from_slice(&payload);
    header
}

/// A DNS query for the address of `name`.
fn dns_query(name: &str) -> Vec<u8> {
    let mut message = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        message.push(label.len() as u8);
        message.extend_from_slice(label.as_bytes());
    }
    message.extend_from_slice(&[0, 0, 1, 0, 1]);
    message
}

/// The answer to [`dns_query`]: `name` has address `address`.
fn dns_answer(name: &str, address: Ipv4Addr) -> Vec<u8> {
    let mut message = dns_query(name);
    message[2..8].copy_from_slice(&[0x81, 0x80, 0, 1, 0, 1]);
    message.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4]);
    message.extend_from_slice(&address.octets());
    message
}

/// BER: `tag`, its definite length, `content`.
fn ber(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match content.len() {
        len @ 0..=127 => out.push(len as u8),
        len => {
            out.push(0x82);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(content);
    out
}

/// An LDAP search of the whole tree whose filter is `(description=VALUE)`.
fn ldap_search(value: &str) -> Vec<u8> {
    let filter = ber(
        0xa3,
        &[ber(0x04, b"description"), ber(0x04, value.as_bytes())].concat(),
    );
    let search = [
        ber(0x04, b"dc=corp,dc=local"),
        ber(0x0a, &[2]),
        ber(0x0a, &[0]),
        ber(0x02, &[0]),
        ber(0x02, &[0]),
        ber(0x01, &[0]),
        filter,
        ber(0x30, &[]),
    ]
    .concat();
    ber(0x30, &[ber(0x02, &[2]), ber(0x63, &search)].concat())
}

/// An LDAP searchResDone: success.
fn ldap_done() -> Vec<u8> {
    let done = [ber(0x0a, &[0]), ber(0x04, b""), ber(0x04, b"")].concat();
    ber(0x30, &[ber(0x02, &[2]), ber(0x65, &done)].concat())
}

/// The hostile capture: from `device` to `server`, an HTTP request with Nmap's scripting-engine
/// user agent, a hostile URI and an NTLM login from a hostile workstation; a DNS lookup whose
/// answer names the device with a hostile name; an LDAP search with a hostile filter.
fn hostile_frames(device: Ipv4Addr, server: Ipv4Addr) -> Vec<Vec<u8>> {
    use base64::Engine;
    let client = |port| (DEVICE_MAC, device, port);
    let service = |port| (SERVER_MAC, server, port);
    let token = base64::engine::general_purpose::STANDARD
        .encode(ntlm_authenticate("alice", &format!("{SCRIPT}{IMAGE}")));
    let uri = format!("/{}", percent_encoded(&format!("{SCRIPT}{IMAGE}")));
    let http = format!(
        "GET {uri} HTTP/1.1\r\nHost: intranet\r\n\
         User-Agent: Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)\r\n\
         Authorization: NTLM {token}\r\n\r\n"
    );
    let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let mut frames = tcp_exchange(
        client(40_001),
        service(80),
        http.as_bytes(),
        answer.as_bytes(),
    );
    let name = format!("{SCRIPT}.{IMAGE}.corp");
    frames.push(udp(client(40_002), service(53), &dns_query(&name)));
    frames.push(udp(service(53), client(40_002), &dns_answer(&name, device)));
    frames.extend(tcp_exchange(
        client(40_003),
        service(389),
        &ldap_search(&format!("{SCRIPT}{IMAGE}")),
        &ldap_done(),
    ));
    frames
}

/// The hostile strings appear in `body` only escaped.
fn assert_only_text(body: &str, page: &str) {
    for markup in ["<script>alert", "<img", "onerror=alert(1)>"] {
        assert!(!body.contains(markup), "{page} holds {markup:?} as markup");
    }
}

/// Every file under `dir` with its bytes (none if it does not exist).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(snapshot(&path));
        } else {
            files.insert(path.clone(), std::fs::read(&path).expect("read"));
        }
    }
    files
}

/// A signed bundle with one byte changed, uploaded on the plugins page as its script sends it:
/// refused by the verification a push goes through, and nothing installed or written.
fn tampered_bundle_is_refused_and_nothing_changes(console: &Console, data: &Path) {
    let mut bundle = std::fs::read(plugin_dir().join("network-scan.vbundle")).expect("bundle");
    let middle = bundle.len() / 2;
    bundle[middle] ^= 0x01;
    let page = console.get("/console/plugins");
    let marker = "data-csrf=\"";
    let start = page
        .body
        .find(marker)
        .unwrap_or_else(|| panic!("no install form: {}", page.body))
        + marker.len();
    let csrf = &page.body[start..start + page.body[start..].find('"').expect("token end")];
    let before = snapshot(&data.join("bundles"));
    for (token, status) in [("a-forged-token", 403), (csrf, 422)] {
        let answer = console.upload("/console/plugins", token, &bundle);
        assert_eq!(answer.status, status, "{}", answer.body);
    }
    assert_eq!(
        snapshot(&data.join("bundles")),
        before,
        "a refused bundle changed the disk"
    );
    assert!(
        snapshot(&data.join("uploads")).is_empty(),
        "the upload was left on disk"
    );
    let after = console.get("/console/plugins");
    assert!(after.body.contains("network-scan"), "{}", after.body);
    // Who signed each running plugin: the name plugins/sign-dev.sh's delegation gives its key.
    assert!(
        after
            .body
            .contains("<td class=\"signer\">development signer</td>"),
        "{}",
        after.body
    );
}

struct Console<'a> {
    ns: &'a Netns,
    cookie: String,
}

impl Console<'_> {
    fn send(&self, method: &str, path: &str, cookie: Option<&str>, body: &str) -> Answer {
        let (method, path, body) = (method.to_string(), path.to_string(), body.to_string());
        let mut extra = vec!["Content-Type: application/x-www-form-urlencoded".to_string()];
        if let Some(cookie) = cookie {
            extra.push(format!("Cookie: {cookie}"));
        }
        self.ns
            .thread(move || {
                request_with(API_ADDR, &method, &path, None, &extra, body.as_bytes())
                    .expect("request")
            })
            .join()
            .expect("client thread")
    }

    /// `body` posted as the plugins page's script posts a bundle.
    fn upload(&self, path: &str, csrf: &str, body: &[u8]) -> Answer {
        let (path, body) = (path.to_string(), body.to_vec());
        let extra = vec![
            "Content-Type: application/octet-stream".to_string(),
            format!("X-CSRF-Token: {csrf}"),
            format!("Cookie: {}", self.cookie),
        ];
        self.ns
            .thread(move || {
                request_with(API_ADDR, "POST", &path, None, &extra, &body).expect("upload")
            })
            .join()
            .expect("client thread")
    }

    fn get(&self, path: &str) -> Answer {
        let answer = self.send("GET", path, Some(&self.cookie), "");
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        answer
    }
}

#[test]
fn a_hostile_capture_is_shown_as_text_on_every_console_page() {
    if skip_live() {
        return;
    }
    let ns = Netns::unique().expect("namespace");
    let peer = Netns::unique().expect("namespace");
    let pair = VethPair::new(
        &ns,
        &unique_name(),
        &peer,
        &unique_name(),
        "10.207.3.1/24",
        "10.207.3.2/24",
    )
    .expect("veth pair");
    let work = TempDir::new("console");
    std::fs::create_dir_all(work.path().join("data")).expect("data dir");
    let mut vigil = LiveVigil::with_api_and(
        &ns,
        pair.if_a(),
        work.path(),
        TOKEN,
        "",
        &["--mode", "generic", "--protocol-logs"],
    );

    let (device, server) = (Ipv4Addr::new(10, 207, 3, 66), Ipv4Addr::new(10, 207, 3, 10));
    let capture = work.path().join("hostile.pcap");
    let records: Vec<pcap::Record> = hostile_frames(device, server)
        .into_iter()
        .enumerate()
        .map(|(n, data)| pcap::Record {
            ts_micros: 1_000_000 + n as u64 * 1_000,
            data,
        })
        .collect();
    pcap::write(&capture, &records);
    let sent = peer
        .run(
            "tcpreplay",
            &["--intf1", pair.if_b(), capture.to_str().expect("utf-8")],
        )
        .expect("tcpreplay runs");
    assert!(sent.contains("Successful packets:"), "{sent}");
    let alerts = wait_for_alerts(
        &work.path().join("data/eve.json"),
        "Device / Attack and Recon Tools",
        &device.to_string(),
        Duration::from_secs(20),
    );
    assert_eq!(alerts.len(), 1, "{:#?}", vigil.log());
    let evidence = alerts[0]["vigil"]["evidence"].to_string();
    assert!(
        evidence.contains("<script>"),
        "the URI reached the evidence: {evidence}"
    );

    let signing = Console {
        ns: &ns,
        cookie: String::new(),
    };
    let signed_in = signing.send("POST", "/console/signin", None, &format!("token={TOKEN}"));
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let cookie = signed_in
        .header("set-cookie")
        .and_then(|cookie| cookie.split(';').next())
        .expect("a session cookie")
        .to_string();
    let console = Console { ns: &ns, cookie };

    let incidents = console.get("/console/incidents");
    let incident_links: Vec<String> = incidents
        .body
        .match_indices("href=\"incidents/")
        .map(|(at, _)| {
            let link = &incidents.body[at + 6..];
            link[..link.find('"').expect("end of link")].to_string()
        })
        .collect();
    assert!(
        !incident_links.is_empty(),
        "no incident: {}",
        incidents.body
    );
    let mut pages: Vec<String> = [
        "incidents",
        "incidents?part=live",
        "alerts",
        "devices",
        "actions",
        "plugins",
        "system",
    ]
    .iter()
    .map(|page| page.to_string())
    .collect();
    pages.extend(incident_links);
    pages.push(format!("devices/{device}"));
    let mut escaped = 0;
    for page in &pages {
        let answer = console.get(&format!("/console/{page}"));
        assert_only_text(&answer.body, page);
        escaped += answer
            .body
            .matches("&lt;script&gt;alert(1)&lt;/script&gt;")
            .count();
    }
    let device_page = console.get(&format!("/console/devices/{device}"));
    // The NTLM workstation and the DNS name, as host names of the device.
    assert!(
        device_page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img/src=x/onerror=alert(1)&gt; (ntlm)"),
        "{}",
        device_page.body
    );
    assert!(device_page.body.contains("(dns)"), "{}", device_page.body);
    assert!(escaped >= pages.len() / 2, "escaped only {escaped} times");
    tampered_bundle_is_refused_and_nothing_changes(&console, &work.path().join("data"));
    vigil.stop();
    // The LDAP filter was read too (no model breaches on one search: it is in the log only,
    // written out at the latest when the daemon stops).
    let ldap = std::fs::read_to_string(work.path().join("data/proto/ldap_search.json"))
        .expect("ldap_search log");
    // RFC 4515 escapes the parentheses of `alert(1)`, not the markup.
    assert!(ldap.contains("(description=<script>alert"), "{ldap}");
}
