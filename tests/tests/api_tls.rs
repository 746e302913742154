//! The management API over HTTPS on a live `vigil run`: the certificate it makes on first start
//! is the one it serves and logs, clients know it by `--fingerprint` or `--ca` and refuse another,
//! `http://` off loopback is refused by the client, an operator's pair installed through the API
//! is served from the next connection, a mismatched pair is refused, and a client that never says
//! hello is closed. A real headless Chromium, pinned to the certificate's public key, opens it.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use vigil_tests::browser::{spki_sha256_base64, Browser};
use vigil_tests::live::{output_text, skip_live, vigil_in, LiveVigil, API_ADDR, API_HTTPS_URL};
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::workspace::{target_dir, vigil_bin, TempDir};

const TOKEN: &str = "api-tls-token-7d31a9";
/// What the daemon allows for a request's headers, and so for a TLS handshake (api/server.rs).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// `vigil plugins list --to` the HTTPS API, trusting it by `trust` (`--fingerprint F`, `--ca P`).
fn list_plugins(ns: &Netns, trust: &[&str]) -> Output {
    let mut args = vec!["plugins", "list", "--to", API_HTTPS_URL, "--token", TOKEN];
    args.extend_from_slice(trust);
    vigil_in(ns, &args)
}

/// `openssl ARGS`, which must succeed; its stdout.
fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The SHA-256 fingerprint of a PEM certificate as openssl shows it (`AB:CD:...`).
fn openssl_fingerprint(cert: &Path) -> String {
    let cert = cert.to_str().expect("utf-8 path");
    let out = openssl(&["x509", "-in", cert, "-noout", "-fingerprint", "-sha256"]);
    out.trim()
        .split_once('=')
        .map(|(_, fingerprint)| fingerprint.to_string())
        .unwrap_or_else(|| panic!("openssl said {out}"))
}

/// A new P-256 key and a self-signed certificate for 127.0.0.1, made by openssl in `dir`:
/// (certificate, key). Not a CA (openssl's default), so it can be its own trust anchor.
fn openssl_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=vigil-operator",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-keyout",
        &path(&key),
        "-out",
        &path(&cert),
    ]);
    (cert, key)
}

/// The fingerprint the daemon logged at start.
struct Appliance {
    vigil: LiveVigil,
    pair: VethPair,
    ns: Netns,
    work: TempDir,
}

impl Appliance {
    /// Starts one on its own subnet `10.207.SUBNET.0/24`.
    fn start(subnet: u8) -> Appliance {
        let ns = Netns::unique().expect("namespace");
        let peer = Netns::unique().expect("namespace");
        let pair = VethPair::new(
            &ns,
            &unique_name(),
            &peer,
            &unique_name(),
            &format!("10.207.{subnet}.1/24"),
            &format!("10.207.{subnet}.2/24"),
        )
        .expect("veth pair");
        let work = TempDir::new("api-tls");
        let vigil = LiveVigil::with_https_api(&ns, pair.if_a(), work.path(), TOKEN);
        Appliance {
            vigil,
            pair,
            ns,
            work,
        }
    }

    fn cert(&self) -> PathBuf {
        self.work.path().join("data/tls/cert.pem")
    }
}

#[test]
fn the_api_serves_https_with_its_own_certificate_and_takes_the_operators() {
    if skip_live() {
        return;
    }
    let mut appliance = Appliance::start(1);
    let ns = &appliance.ns;

    // The certificate made on first start: the one logged, its key for root only.
    let made = openssl_fingerprint(&appliance.cert());
    assert_eq!(appliance.vigil.fingerprint(), made);
    let key = appliance.work.path().join("data/tls/key.pem");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key).expect("key.pem").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // Known by its fingerprint, or by the certificate itself as the CA.
    let listed = list_plugins(ns, &["--fingerprint", &made]);
    assert!(listed.status.success(), "{}", output_text(&listed));
    assert!(
        output_text(&listed).contains("network-scan"),
        "{}",
        output_text(&listed)
    );
    let lower_bare = made.replace(':', "").to_lowercase();
    let listed = list_plugins(ns, &["--fingerprint", &lower_bare]);
    assert!(listed.status.success(), "{}", output_text(&listed));
    let ca = appliance.cert();
    let listed = list_plugins(ns, &["--ca", ca.to_str().expect("utf-8")]);
    assert!(listed.status.success(), "{}", output_text(&listed));

    // Another certificate's fingerprint, another CA, no trust at all: refused.
    let other = TempDir::new("api-tls-other");
    let (other_cert, other_key) = openssl_pair(other.path(), "other");
    let wrong = openssl_fingerprint(&other_cert);
    let refused = list_plugins(ns, &["--fingerprint", &wrong]);
    assert!(!refused.status.success());
    assert!(
        output_text(&refused).contains(&format!(
            "has SHA-256 fingerprint {made}, not the pinned {wrong}"
        )),
        "{}",
        output_text(&refused)
    );
    let refused = list_plugins(ns, &["--ca", other_cert.to_str().expect("utf-8")]);
    assert!(!refused.status.success(), "{}", output_text(&refused));
    assert!(
        output_text(&refused).contains("certificate"),
        "{}",
        output_text(&refused)
    );
    let refused = list_plugins(ns, &[]);
    assert!(!refused.status.success());
    assert!(
        output_text(&refused).contains("--fingerprint"),
        "{}",
        output_text(&refused)
    );

    // Plain http:// to an address off loopback is refused before anything is sent.
    let off_loopback = format!("http://{}:8470", appliance.pair.ip_a());
    let refused = vigil_in(ns, &["alerts", "--to", &off_loopback, "--token", TOKEN]);
    assert!(!refused.status.success());
    assert!(
        output_text(&refused).contains("only on loopback"),
        "{}",
        output_text(&refused)
    );

    // A key of another certificate: refused, the old certificate still served.
    let (second_cert, _) = openssl_pair(other.path(), "second");
    let install = |cert: &Path, key: &Path, trust: &str| {
        vigil_in(
            ns,
            &[
                "tls",
                "install",
                "--to",
                API_HTTPS_URL,
                "--token",
                TOKEN,
                "--fingerprint",
                trust,
                cert.to_str().expect("utf-8"),
                key.to_str().expect("utf-8"),
            ],
        )
    };
    let refused = install(&second_cert, &other_key, &made);
    assert!(!refused.status.success());
    assert!(
        output_text(&refused)
            .contains("HTTP 422: the private key does not belong to the certificate"),
        "{}",
        output_text(&refused)
    );
    assert_eq!(openssl_fingerprint(&appliance.cert()), made);
    let listed = list_plugins(ns, &["--fingerprint", &made]);
    assert!(listed.status.success(), "{}", output_text(&listed));

    // The operator's pair through the API: served from the next connection, on disk, in the
    // status; the old fingerprint no longer opens it.
    let installed = install(&other_cert, &other_key, &made);
    assert!(installed.status.success(), "{}", output_text(&installed));
    assert!(
        output_text(&installed).contains(&wrong),
        "{}",
        output_text(&installed)
    );
    assert_eq!(openssl_fingerprint(&appliance.cert()), wrong);
    let listed = list_plugins(ns, &["--fingerprint", &wrong]);
    assert!(listed.status.success(), "{}", output_text(&listed));
    let listed = list_plugins(ns, &["--ca", other_cert.to_str().expect("utf-8")]);
    assert!(listed.status.success(), "{}", output_text(&listed));
    let refused = list_plugins(ns, &["--fingerprint", &made]);
    assert!(!refused.status.success(), "{}", output_text(&refused));
    let status = vigil_in(
        ns,
        &[
            "image",
            "status",
            "--to",
            API_HTTPS_URL,
            "--token",
            TOKEN,
            "--fingerprint",
            &wrong,
        ],
    );
    assert!(status.status.success(), "{}", output_text(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(status["api"]["tls"]["fingerprint_sha256"], wrong.as_str());

    // A client that connects and never says hello is closed like an idle one.
    let (closed, waited) = ns
        .thread(|| {
            let mut stream = TcpStream::connect(API_ADDR).expect("connect");
            stream
                .set_read_timeout(Some(HEADER_TIMEOUT * 3))
                .expect("timeout");
            let started = Instant::now();
            let mut byte = [0u8; 1];
            (stream.read(&mut byte), started.elapsed())
        })
        .join()
        .expect("client thread");
    assert!(matches!(closed, Ok(0)), "{closed:?} after {waited:?}");
    assert!(
        waited >= HEADER_TIMEOUT - Duration::from_secs(1),
        "{waited:?}"
    );
    assert!(waited < HEADER_TIMEOUT * 2, "{waited:?}");
}

#[test]
fn tls_install_on_a_data_dir_checks_the_pair_and_keeps_the_old_one_on_refusal() {
    let work = TempDir::new("api-tls-local");
    let data = work.path().join("data");
    let data_arg = data.to_str().expect("utf-8");
    let (first_cert, first_key) = openssl_pair(work.path(), "first");
    let (second_cert, second_key) = openssl_pair(work.path(), "second");
    let path = |p: &Path| p.to_str().expect("utf-8").to_string();
    let install = |cert: &Path, key: &Path| {
        Command::new(vigil_bin())
            .args([
                "tls",
                "install",
                "--data-dir",
                data_arg,
                &path(cert),
                &path(key),
            ])
            .output()
            .expect("vigil runs")
    };
    let installed = install(&first_cert, &first_key);
    assert!(installed.status.success(), "{}", output_text(&installed));
    let first = openssl_fingerprint(&first_cert);
    assert!(
        output_text(&installed).contains(&first),
        "{}",
        output_text(&installed)
    );
    let on_disk = data.join("tls/cert.pem");
    assert_eq!(openssl_fingerprint(&on_disk), first);

    let refused = install(&second_cert, &first_key);
    assert!(!refused.status.success());
    assert!(
        output_text(&refused).contains("the private key does not belong to the certificate"),
        "{}",
        output_text(&refused)
    );
    let refused = install(&second_key, &second_key);
    assert!(!refused.status.success());
    assert!(
        output_text(&refused).contains("the certificate"),
        "{}",
        output_text(&refused)
    );
    assert_eq!(openssl_fingerprint(&on_disk), first);
}

#[test]
fn a_headless_browser_pinned_to_the_certificate_reads_the_api_over_https() {
    if skip_live() {
        return;
    }
    let appliance = Appliance::start(2);
    let spki = spki_sha256_base64(&appliance.cert());
    let screenshot = target_dir().join("test-output/api_tls/unauthorised.png");
    let saved = screenshot.clone();
    let url = format!("{API_HTTPS_URL}/api/v1/status");
    let (text, warning) = appliance
        .ns
        .thread(move || {
            let browser = Browser::start(&[spki]);
            browser
                .open(&url)
                .expect("the pinned browser opens the API");
            // A browser sends no bearer token: the gate's refusal is what it shows.
            let text = browser.find("body").and_then(|body| body.text());
            browser.screenshot(&saved).expect("screenshot");
            drop(browser);
            let unpinned = Browser::start(&[]);
            unpinned
                .open(&url)
                .expect("the unpinned browser shows a warning");
            let warning = unpinned.find("body").and_then(|body| body.text());
            (text, warning)
        })
        .join()
        .expect("browser thread");
    let text = text.expect("the page's text");
    assert!(
        text.contains(r#"{"error":"a valid bearer token is required"}"#),
        "{text}"
    );
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
        "{}",
        screenshot.display()
    );
    // Without the pin the same certificate is refused: the pin is what trusts it.
    let warning = warning.expect("the warning's text");
    assert!(warning.contains("ERR_CERT_AUTHORITY_INVALID"), "{warning}");
    assert!(!warning.contains("bearer token"), "{warning}");
}
