//! The console in a real browser: Debian's headless Chromium signs in over HTTPS to a live
//! `vigil run` that learned the lab baseline and then sees the lab attack on the wire in human
//! mode, opens the incident, reads its phases and timeline, and confirms a pending action there.
//! The action is then in force on the page, in `vigil actions list --to` and in `actions.json`,
//! with the operator who confirmed it in its audit trail. A screenshot of the incident page is
//! kept under the target dir's `test-output/console_browser/`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::browser::{spki_sha256_base64, Browser, WebDriverError};
use vigil_tests::lab::fixture;
use vigil_tests::live::{
    output_text, require_tools, skip_live, vigil_in, LiveVigil, API_HTTPS_URL,
};
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::workspace::{plugin_dir, saved_actions, target_dir, vigil_bin, TempDir};

const API_TOKEN: &str = "console-browser-api-token";
const OPERATOR: &str = "alice-soc";
const OPERATOR_TOKEN: &str = "alice-soc-console-token";
/// Human mode: every response waits for an operator; and the operator who signs in.
const CONFIG: &str = "[[api.operators]]\nname = \"alice-soc\"\n\
                      token = \"alice-soc-console-token\"\nrole = \"operator\"\n\n\
                      [plugins.responder]\nmode = \"human\"\n";

/// Learns the lab baseline into `data` as a replay does, so the live run starts from it.
fn learn_baseline(data: &Path, config: &Path) {
    let out = Command::new(vigil_bin())
        .arg("replay")
        .arg("--data-dir")
        .arg(data)
        .arg("--plugins")
        .arg(plugin_dir())
        .arg("--config")
        .arg(config)
        .arg(fixture("lab", "baseline.pcap"))
        .output()
        .expect("vigil replay");
    assert!(out.status.success(), "{}", output_text(&out));
}

/// Retries `look` (the page is live: it refreshes its parts) for up to a minute until it gives
/// an answer; `None` if it never does.
fn wait_for<T>(mut look: impl FnMut() -> Result<Option<T>, WebDriverError>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(found)) = look() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What the browser saw of the incident and the action it confirmed.
struct Seen {
    incident_url: String,
    phases: Vec<String>,
    timeline_entries: usize,
    confirmed: u64,
    state_after: String,
}

/// Signs in as the operator, opens the first incident (by score) with a pending action, and
/// confirms that action with a reason; saves a screenshot of the incident page to `screenshot`.
fn confirm_in_browser(spki: String, screenshot: &Path) -> Seen {
    let browser = Browser::start(&[spki]);
    let console = format!("{API_HTTPS_URL}/console/");
    browser.open(&console).expect("the console opens");
    // No session yet: the console sends the browser to sign in.
    browser
        .find("#signin-token")
        .and_then(|field| field.fill(OPERATOR_TOKEN))
        .expect("the sign-in form");
    browser
        .find("#signin-submit")
        .and_then(|button| button.click())
        .expect("sign in");
    // The incident list, newest and highest first, once the pending action is there.
    let incident_url = wait_for(|| {
        browser.open(&format!("{console}incidents"))?;
        let mut pages = Vec::new();
        for link in browser.find_all("#incidents a[href^='incidents/']")? {
            // The attribute as written: relative to the console, as every console link is.
            pages.push(format!(
                "{console}{}",
                link.attribute("href")?.unwrap_or_default()
            ));
        }
        for page in pages {
            browser.open(&page)?;
            if !browser.find_all("form.confirm")?.is_empty() {
                return Ok(Some(page));
            }
        }
        Ok(None)
    })
    .unwrap_or_else(|| {
        let page = browser.find("body").and_then(|body| body.text());
        panic!("no incident with a pending action; the last page: {page:?}")
    });
    let phases: Vec<String> = browser
        .find_all(".phases .phase")
        .expect("phases")
        .iter()
        .map(|phase| phase.text().expect("phase text"))
        .collect();
    let timeline_entries = browser.find_all(".timeline-entry").expect("timeline").len();
    browser.screenshot(screenshot).expect("screenshot");
    let form = browser
        .find("form.confirm")
        .expect("a pending action's form");
    let target = form
        .attribute("action")
        .expect("attribute")
        .unwrap_or_default();
    let confirmed: u64 = target
        .rsplit('/')
        .nth(1)
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("an action id in {target}"));
    browser
        .find("form.confirm input[name='reason']")
        .and_then(|field| field.fill("seen in the lab: the phished account"))
        .expect("the reason field");
    browser
        .find("form.confirm button")
        .and_then(|button| button.click())
        .expect("confirm");
    let in_force = format!("#action-{confirmed} .action-state");
    let state_after = wait_for(|| {
        // Rendered text: the stylesheet shows states in capitals.
        let state = browser.find(&in_force)?.text()?.to_lowercase();
        Ok((state == "active").then_some(state))
    })
    .unwrap_or_else(|| {
        let page = browser.find("body").and_then(|body| body.text());
        panic!("never saw {in_force} active; the page: {page:?}")
    });
    Seen {
        incident_url,
        phases,
        timeline_entries,
        confirmed,
        state_after,
    }
}

#[test]
fn an_operator_confirms_a_pending_action_from_the_incident_page_in_a_real_browser() {
    if skip_live() {
        return;
    }
    require_tools(&["tcpreplay", "chromium", "chromedriver", "openssl"]);
    let appliance = Netns::unique().expect("namespace");
    let wire = Netns::unique().expect("namespace");
    let pair = VethPair::new(
        &appliance,
        &unique_name(),
        &wire,
        &unique_name(),
        "10.206.0.1/24",
        "10.206.0.2/24",
    )
    .expect("veth pair");
    let work = TempDir::new("console-browser");
    let data = work.path().join("data");
    let learn_config = work.path().join("learn.toml");
    std::fs::write(&learn_config, CONFIG).expect("config");
    learn_baseline(&data, &learn_config);
    let mut vigil =
        LiveVigil::with_https_api_and(&appliance, pair.if_a(), work.path(), API_TOKEN, CONFIG);
    let fingerprint = vigil.fingerprint();
    // The attack onto the wire at 4x its pace, as the appliance's mirror port would carry it.
    let attack = fixture("lab", "attack.pcap");
    let sent = wire
        .run(
            "tcpreplay",
            &[
                "--intf1",
                pair.if_b(),
                "--multiplier",
                "4",
                attack.to_str().expect("utf-8"),
            ],
        )
        .expect("tcpreplay runs");
    assert!(sent.contains("Successful packets:"), "{sent}");

    let screenshot = target_dir().join("test-output/console_browser/incident.png");
    let spki = spki_sha256_base64(&data.join("tls/cert.pem"));
    let shot = screenshot.clone();
    let seen = appliance
        .thread(move || confirm_in_browser(spki, &shot))
        .join()
        .expect("browser thread");

    // The incident page showed the attack's phases, with ATT&CK ids, and its timeline.
    assert!(
        seen.incident_url.contains("incidents/"),
        "{}",
        seen.incident_url
    );
    assert!(seen.phases.len() >= 2, "{:?}", seen.phases);
    assert!(
        seen.phases.iter().any(|phase| phase.contains(" T1")),
        "{:?}",
        seen.phases
    );
    assert!(seen.timeline_entries >= 2, "{}", seen.timeline_entries);
    assert_eq!(seen.state_after, "active");
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);

    // The CLI over HTTPS, pinned to the logged fingerprint, sees it in force.
    let listed = vigil_in(
        &appliance,
        &[
            "actions",
            "list",
            "--to",
            API_HTTPS_URL,
            "--token",
            API_TOKEN,
            "--fingerprint",
            &fingerprint,
        ],
    );
    assert!(listed.status.success(), "{}", output_text(&listed));
    let row = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .find(|line| line.trim_start().starts_with(&seen.confirmed.to_string()))
        .map(str::to_string)
        .unwrap_or_else(|| {
            panic!(
                "action {} not listed: {}",
                seen.confirmed,
                output_text(&listed)
            )
        });
    assert!(row.contains("active"), "{row}");

    // actions.json holds it in force, with the operator and the reason in its audit trail.
    let deadline = Instant::now() + Duration::from_secs(10);
    let saved = loop {
        let actions = saved_actions(&data);
        let saved = actions
            .into_iter()
            .find(|action| action["id"].as_u64() == Some(seen.confirmed));
        if let Some(action) = saved.filter(|a| a["status"]["state"] == "active") {
            break action;
        }
        assert!(
            Instant::now() < deadline,
            "actions.json never had it in force"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let audit: &Vec<Value> = saved["audit"].as_array().expect("an audit trail");
    assert!(
        audit.iter().any(|entry| entry["who"] == OPERATOR
            && entry["reason"]
                .as_str()
                .is_some_and(|reason| reason.contains("phished"))),
        "{audit:#?}"
    );
    let exit = vigil.stop();
    assert!(exit.success(), "{exit:?}");
}
