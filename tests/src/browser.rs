//! A real headless Chromium, driven through Debian's `chromedriver` over the W3C WebDriver
//! protocol, for tests of what the appliance serves to a browser.
//!
//! The client is the handful of WebDriver calls a test needs (session, navigate, find by CSS,
//! click, type, read text, screenshot) over ureq and serde_json, both already in the tree: a
//! WebDriver crate (fantoccini, thirtyfour) brings an async HTTP client stack for the same calls.
//!
//! The browser trusts the appliance's self-signed certificate by its public key only
//! (`--ignore-certificate-errors-spki-list`), not by ignoring certificate errors. Start it on a
//! thread inside the appliance's namespace ([`crate::netns::Netns::thread`]): chromedriver and
//! Chromium inherit that thread's network namespace and so reach its loopback.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::workspace::TempDir;

/// W3C WebDriver's key for an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long chromedriver has to come up.
const DRIVER_START: Duration = Duration::from_secs(30);

/// A WebDriver command chromedriver refused, with its W3C error code and message.
#[derive(Debug)]
pub struct WebDriverError {
    pub command: String,
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.command, self.error, self.message)
    }
}

impl std::error::Error for WebDriverError {}

/// chromedriver and one headless Chromium session; both end when it is dropped.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: TempDir,
}

/// An element of the page, found by [`Browser::find`].
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

/// The SHA-256 of the public key (SubjectPublicKeyInfo) of the PEM certificate `cert`, in
/// base64, as Chromium's `--ignore-certificate-errors-spki-list` takes it; computed by openssl
/// as Chromium's documentation does it.
pub fn spki_sha256_base64(cert: &Path) -> String {
    let cert = cert.to_str().expect("utf-8 path");
    let out = Command::new("sh")
        .args([
            "-c",
            "openssl x509 -in \"$1\" -pubkey -noout | openssl pkey -pubin -outform der \
             | openssl dgst -sha256 -binary | base64",
            "spki",
            cert,
        ])
        .output()
        .expect("openssl runs");
    let spki = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && spki.len() == 44,
        "the SPKI hash of {cert}: {spki} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    spki
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Browser {
    /// chromedriver on a free loopback port and a headless Chromium session that trusts the
    /// certificates whose public keys hash to `trusted_spki` ([`spki_sha256_base64`]).
    pub fn start(trusted_spki: &[String]) -> Browser {
        let port = free_port();
        // Its own process group, so Drop ends Chromium with it even if the session is stuck.
        let driver = std::os::unix::process::CommandExt::process_group(
            Command::new("chromedriver").arg(format!("--port={port}")),
            0,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts (apt-get install chromium-driver)");
        let profile = TempDir::new("chromium-profile");
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            agent,
            _profile: profile,
        };
        browser.wait_for_driver();
        let mut args = vec![
            "--headless=new".to_string(),
            // Chromium refuses its sandbox as root.
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        if !trusted_spki.is_empty() {
            args.push(format!(
                "--ignore-certificate-errors-spki-list={}",
                trusted_spki.join(",")
            ));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let created = browser
            .command("POST", "/session", Some(capabilities))
            .unwrap_or_else(|err| panic!("a Chromium session: {err}"));
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_string();
        browser
    }

    fn wait_for_driver(&mut self) {
        let started = Instant::now();
        loop {
            let ready = self
                .command("GET", "/status", None)
                .is_ok_and(|status| status["ready"] == true);
            if ready {
                return;
            }
            if let Ok(Some(exit)) = self.driver.try_wait() {
                panic!("chromedriver exited: {exit}");
            }
            assert!(
                started.elapsed() < DRIVER_START,
                "chromedriver not ready within {DRIVER_START:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `method path` with a JSON body to chromedriver; the answer's `value`.
    fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        let url = format!("{}{path}", self.base);
        let request = self.agent.request(method, &url);
        let answer = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        let refused = |error: String, message: String| WebDriverError {
            command: format!("{method} {path}"),
            error,
            message,
        };
        let response = match answer {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => {
                let body: Value = response.into_json().unwrap_or_default();
                return Err(refused(
                    body["value"]["error"].as_str().unwrap_or("?").to_string(),
                    body["value"]["message"].as_str().unwrap_or("").to_string(),
                ));
            }
            Err(err) => return Err(refused("no answer".into(), err.to_string())),
        };
        let mut body: Value = response
            .into_json()
            .map_err(|err| refused("not JSON".into(), err.to_string()))?;
        Ok(body["value"].take())
    }

    fn session_command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        self.command(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Opens `url` and waits for it to load.
    pub fn open(&self, url: &str) -> Result<(), WebDriverError> {
        self.session_command("POST", "/url", Some(json!({ "url": url })))
            .map(drop)
    }

    /// The first element matching the CSS `selector`.
    pub fn find(&self, selector: &str) -> Result<Element<'_>, WebDriverError> {
        let found = self.session_command(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": selector})),
        )?;
        let id = found[ELEMENT_KEY].as_str().ok_or_else(|| WebDriverError {
            command: format!("find {selector}"),
            error: "no element reference".into(),
            message: found.to_string(),
        })?;
        Ok(Element {
            browser: self,
            id: id.to_string(),
        })
    }

    /// Every element matching the CSS `selector`, in document order.
    pub fn find_all(&self, selector: &str) -> Result<Vec<Element<'_>>, WebDriverError> {
        let found = self.session_command(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": selector})),
        )?;
        Ok(found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|element| element[ELEMENT_KEY].as_str())
            .map(|id| Element {
                browser: self,
                id: id.to_string(),
            })
            .collect())
    }

    /// Saves what the window shows as a PNG at `path` (its directory made if need be).
    pub fn screenshot(&self, path: &Path) -> Result<(), WebDriverError> {
        let encoded = self.session_command("GET", "/screenshot", None)?;
        let failed = |message: String| WebDriverError {
            command: format!("screenshot to {}", path.display()),
            error: "not saved".into(),
            message,
        };
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .map_err(|err| failed(err.to_string()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|err| failed(err.to_string()))?;
        }
        std::fs::write(path, png).map_err(|err| failed(err.to_string()))
    }
}

impl Element<'_> {
    fn command(
        &self,
        method: &str,
        what: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        self.browser
            .session_command(method, &format!("/element/{}{what}", self.id), body)
    }

    pub fn click(&self) -> Result<(), WebDriverError> {
        self.command("POST", "/click", Some(json!({}))).map(drop)
    }

    /// Replaces what the field holds with `text`, typed.
    pub fn fill(&self, text: &str) -> Result<(), WebDriverError> {
        self.command("POST", "/clear", Some(json!({})))?;
        self.command("POST", "/value", Some(json!({ "text": text })))
            .map(drop)
    }

    /// Its attribute `name`, if it has one.
    pub fn attribute(&self, name: &str) -> Result<Option<String>, WebDriverError> {
        let value = self.command("GET", &format!("/attribute/{name}"), None)?;
        Ok(value.as_str().map(str::to_string))
    }

    /// Its rendered text.
    pub fn text(&self) -> Result<String, WebDriverError> {
        let text = self.command("GET", "/text", None)?;
        Ok(text.as_str().unwrap_or_default().to_string())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Ends Chromium cleanly; chromedriver's group is killed below either way.
            let _ = self.session_command("DELETE", "", None);
        }
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}
