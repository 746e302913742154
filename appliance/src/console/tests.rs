//! The console's router driven request by request (`tower::ServiceExt::oneshot`), with a capture
//! loop stand-in that answers from a real action store on disk and a real incident.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;
use vigil_plugin_sdk::incident::{Phase, TimelineEntry};
use vigil_plugin_sdk::{ActionRequest, Evidence, Incident, Response as Responded, Timestamp};

use super::session::{Operator, Sessions, MAX_SIGN_IN_FAILURES};
use super::{router, Console};
use crate::api::{Answer, ApiContext, Control, IncidentHeader, Request as ToPipeline, Role};
use crate::devices::{Device, HostName, NameSource, Seen};
use crate::image::slots::SystemPaths;
use crate::respond::{Actions, Status};

const ADMIN_TOKEN: &str = "the api token, long enough";
const VIEWER_TOKEN: &str = "a viewer's token, long enough";
const HOSTILE: &str = "<script>alert(1)</script>\"><img src=x onerror=alert(1)>";
const DEVICE: &str = "10.0.0.66";
const INCIDENT: u64 = 7;

struct Appliance {
    app: Router,
    dir: PathBuf,
}

impl Drop for Appliance {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A console whose sessions last `lifetime`, over a data dir holding one pending action
/// answering the incident [`INCIDENT`].
fn appliance(name: &str, lifetime: Duration) -> Appliance {
    let dir = std::env::temp_dir().join(format!("vigil-console-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("data dir");
    let mut actions = Actions::open(&dir).expect("actions");
    let request = ActionRequest {
        response: Responded::BlockPort(445),
        device: DEVICE.parse().expect("address"),
        ts: Timestamp::from_secs(1_000),
        reason: format!("scan {HOSTILE}"),
        incident: Some(INCIDENT),
        duration_secs: 3600,
        needs_confirmation: true,
    };
    actions
        .request(&request, "responder 1.0.0", 1_000, Vec::new(), None)
        .expect("requested");
    write_alerts(&dir);
    let (to_pipeline, from_console) = mpsc::sync_channel(8);
    std::thread::spawn(move || capture_loop(from_console, actions));
    let operators = vec![
        Operator {
            name: "admin".into(),
            token: ADMIN_TOKEN.into(),
            role: Role::Operator,
        },
        Operator {
            name: "vera".into(),
            token: VIEWER_TOKEN.into(),
            role: Role::Viewer,
        },
    ];
    let console = Console {
        sessions: Sessions::new(operators, lifetime),
        to_pipeline,
        context: Arc::new(ApiContext {
            max_bundle_bytes: 1 << 20,
            data_dir: dir.clone(),
            trust_dir: dir.join("trust"),
            ready_file: None,
            system: SystemPaths::appliance(),
            capture_queues: None,
        }),
        started: std::time::Instant::now(),
    };
    Appliance {
        app: router(console),
        dir,
    }
}

/// eve.json with two alerts of the hostile device, as the sink writes them (a damaged line too).
fn write_alerts(dir: &Path) {
    let alert = |time: &str, model: &str| {
        serde_json::json!({
            "timestamp": time,
            "event_type": "alert",
            "src_ip": DEVICE,
            "dest_ip": "10.0.0.1",
            "alert": { "signature": model, "severity": 1 },
            "vigil": { "model": model, "score": 80, "evidence": { "uri": HOSTILE } },
        })
        .to_string()
    };
    let lines = [
        alert(
            "2026-11-28T04:00:00.000000+0000",
            &format!("Device / Network Scan {HOSTILE}"),
        ),
        "{\"event_type\": \"alert\", cut".to_string(),
        alert(
            "2026-11-28T05:30:00.000000+0000",
            "Device / SMB Session Brute Force (Admin)",
        ),
    ];
    std::fs::write(crate::store::eve::eve_path(dir), lines.join("\n") + "\n").expect("eve.json");
}

/// Answers the console as the pipeline does, from `actions` and one hostile incident.
fn capture_loop(requests: mpsc::Receiver<Control>, mut actions: Actions) {
    let incident = hostile_incident();
    let device = hostile_device();
    while let Ok(Control { request, reply }) = requests.recv() {
        let body = match request {
            ToPipeline::ListActions => serde_json::to_value(actions.list().collect::<Vec<_>>()),
            ToPipeline::ListIncidents => serde_json::to_value(vec![IncidentHeader::of(&incident)]),
            ToPipeline::ListDevices => serde_json::to_value(vec![&device]),
            ToPipeline::Device(address) if address == device.addresses[0].value => {
                serde_json::to_value(&device)
            }
            ToPipeline::Counters => serde_json::to_value(crate::counters::Counters::default()),
            ToPipeline::ListPlugins => Ok(serde_json::json!([{
                "name": "network-scan", "version": "1.0.0", "kind": "Detector",
                "events": 10, "breaches": 1, "traps": 0, "quarantined": false,
            }])),
            ToPipeline::RollBack(name) => Ok(serde_json::json!({ "rolled_back": name })),
            ToPipeline::Incident(id) if id == INCIDENT => {
                Ok(serde_json::json!({ "incident": &incident, "device": &device }))
            }
            ToPipeline::Decide {
                id,
                decision,
                by,
                reason,
            } => {
                let decided = actions.decide(id, decision, &by, reason.as_deref(), 2_000);
                match decided {
                    Ok(action) => serde_json::to_value(action),
                    Err(err) => {
                        let _ = reply.send(Answer {
                            status: 409,
                            body: serde_json::json!({ "error": err.to_string() }),
                        });
                        continue;
                    }
                }
            }
            _ => {
                let _ = reply.send(Answer {
                    status: 404,
                    body: serde_json::json!({ "error": "not here" }),
                });
                continue;
            }
        };
        let _ = reply.send(Answer {
            status: 200,
            body: body.expect("JSON"),
        });
    }
}

fn hostile_incident() -> Incident {
    let device: IpAddr = DEVICE.parse().expect("address");
    Incident {
        id: INCIDENT,
        device,
        first: Timestamp::from_secs(1_000),
        last: Timestamp::from_secs(1_060),
        score: 90,
        phases: vec![
            Phase {
                name: "Discovery".into(),
                tactic: "TA0007".into(),
                techniques: vec!["T1046".into()],
                first: Timestamp::from_secs(1_000),
            },
            Phase {
                name: "Credential Access".into(),
                tactic: "TA0006".into(),
                techniques: vec!["T1110".into()],
                first: Timestamp::from_secs(1_030),
            },
        ],
        breaches: 2,
        by_model: Vec::new(),
        unusual: 2,
        learning: 0,
        timeline: [
            TimelineEntry {
                seq: 1,
                ts: Timestamp::from_secs(1_000),
                model: format!("Device / Network Scan {HOSTILE}"),
                score: 60,
                phase: "Discovery".into(),
                destinations: vec!["10.0.0.1".parse().expect("address")],
                ports: vec![445],
                evidence: vec![Evidence {
                    name: "uri".into(),
                    value: HOSTILE.into(),
                }],
            },
            TimelineEntry {
                seq: 2,
                ts: Timestamp::from_secs(1_030),
                model: "Device / SMB Session Brute Force (Admin)".into(),
                score: 80,
                phase: "Credential Access".into(),
                destinations: vec!["10.0.0.1".parse().expect("address")],
                ports: vec![445],
                evidence: vec![Evidence {
                    name: "workstation".into(),
                    value: HOSTILE.into(),
                }],
            },
        ]
        .into_iter()
        .map(Arc::new)
        .collect(),
        summary: format!("{DEVICE} scanned and guessed passwords. {HOSTILE}"),
    }
}

fn hostile_device() -> Device {
    let seen = |value| Seen {
        value,
        first: Timestamp::from_secs(900),
        last: Timestamp::from_secs(1_060),
    };
    Device {
        id: 1,
        first_seen: Timestamp::from_secs(900),
        last_seen: Timestamp::from_secs(1_060),
        addresses: vec![seen(DEVICE.parse().expect("address"))],
        macs: vec![Seen {
            value: "02:00:00:00:00:66".into(),
            first: Timestamp::from_secs(900),
            last: Timestamp::from_secs(1_060),
        }],
        host_names: vec![HostName {
            name: HOSTILE.into(),
            source: NameSource::Ntlm,
            first: Timestamp::from_secs(900),
            last: Timestamp::from_secs(1_060),
        }],
        services: Vec::new(),
        offers: Vec::new(),
        learning: None,
        models: Vec::new(),
    }
}

struct Answered {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answered {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    /// The CSRF token the page's forms carry.
    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("a form with a CSRF token") + marker.len();
        let end = self.body[start..].find('"').expect("end of the token");
        self.body[start..start + end].to_string()
    }
}

impl Appliance {
    async fn send(&self, request: Request<Body>) -> Answered {
        let answer = self.app.clone().oneshot(request).await.expect("answer");
        let status = answer.status();
        let headers = answer.headers().clone();
        let body = answer.into_body().collect().await.expect("body").to_bytes();
        Answered {
            status,
            headers,
            body: String::from_utf8(body.to_vec()).expect("UTF-8"),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Answered {
        let mut request = Request::get(path);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        self.send(request.body(Body::empty()).expect("request"))
            .await
    }

    async fn post(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Answered {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut request =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        self.send(request.body(Body::from(body)).expect("request"))
            .await
    }

    /// Signs in with `token`: the cookie to send back.
    async fn sign_in(&self, token: &str) -> String {
        let answer = self
            .post("/console/signin", None, &[("token", token)])
            .await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        assert_eq!(answer.location(), "incidents");
        let cookie = answer
            .headers
            .get(header::SET_COOKIE)
            .and_then(|value| value.to_str().ok())
            .expect("a session cookie");
        cookie.split(';').next().expect("name=value").to_string()
    }

    fn action_on_disk(&self) -> crate::respond::Action {
        let actions = Actions::open(&self.dir).expect("actions");
        let action = actions.list().next().expect("the action").clone();
        action
    }
}

fn assert_secure_headers(answer: &Answered, what: &str) {
    let header = |name| {
        answer
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    };
    assert_eq!(
        header(header::CONTENT_SECURITY_POLICY),
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        "{what}"
    );
    assert_eq!(header(header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{what}");
    assert_eq!(header(header::REFERRER_POLICY), "no-referrer", "{what}");
}

/// Every page and part a signed-in user can open.
const PAGES: &[&str] = &[
    "/console/alerts",
    "/console/alerts?part=live",
    "/console/alerts?model=Device+%2F+SMB+Session+Brute+Force+%28Admin%29&from=2026-11-28T05",
    "/console/devices",
    "/console/devices/10.0.0.66",
    "/console/devices/10.0.0.66?part=live",
    "/console/plugins",
    "/console/system",
    "/console/incidents",
    "/console/incidents?part=live",
    "/console/incidents/7",
    "/console/incidents/7?part=live",
    "/console/actions",
    "/console/actions?part=live",
];

#[tokio::test]
async fn the_api_token_signs_in_with_a_strict_cookie_and_every_page_answers_securely() {
    let appliance = appliance("signin", Duration::from_secs(3600));
    let form = appliance.get("/console/signin", None).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("id=\"signin-token\""), "{}", form.body);
    assert_secure_headers(&form, "sign-in page");

    let answer = appliance
        .post("/console/signin", None, &[("token", ADMIN_TOKEN)])
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_secure_headers(&answer, "sign-in");
    let cookie = answer.headers[header::SET_COOKIE].to_str().expect("cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Max-Age=3600"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    let cookie = appliance.sign_in(ADMIN_TOKEN).await;

    for path in PAGES {
        let page = appliance.get(path, Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert_secure_headers(&page, path);
        assert_eq!(
            page.headers[header::CONTENT_TYPE],
            "text/html; charset=utf-8",
            "{path}"
        );
    }
    let incident = appliance.get("/console/incidents/7", Some(&cookie)).await;
    let phases: Vec<&str> = incident
        .body
        .match_indices("class=\"phase\"")
        .map(|(at, _)| &incident.body[at..at + 60])
        .collect();
    assert_eq!(phases.len(), 2, "{}", incident.body);
    assert!(phases[0].contains("Discovery") && phases[1].contains("Credential Access"));
    assert!(incident.body.contains("TA0007") && incident.body.contains("T1110"));
    assert_eq!(incident.body.matches("class=\"timeline-entry\"").count(), 2);
    assert!(incident.body.contains("02:00:00:00:00:66"));
    assert!(incident.body.contains("(ntlm)"));
    assert!(incident.body.contains("<form class=\"confirm\""));
    // Relative links, so a reverse proxy may mount the console anywhere.
    assert!(incident.body.contains("href=\"../static/console.css\""));
    assert!(incident.body.contains("action=\"../actions/1/confirm\""));
    assert!(!incident.body.contains("=\"/"), "an absolute link");

    for (file, content_type) in [
        ("console.css", "text/css; charset=utf-8"),
        ("console.js", "text/javascript; charset=utf-8"),
    ] {
        let answer = appliance
            .get(&format!("/console/static/{file}"), None)
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{file}");
        assert_eq!(answer.headers[header::CONTENT_TYPE], content_type);
        assert_secure_headers(&answer, file);
    }
    let entry = appliance.get("/console/", None).await;
    assert_eq!(
        (entry.status, entry.location()),
        (StatusCode::SEE_OTHER, "incidents")
    );
}

#[tokio::test]
async fn without_a_session_pages_go_to_sign_in_and_parts_and_forms_are_refused() {
    let appliance = appliance("nosession", Duration::from_secs(3600));
    for (path, sign_in) in [
        ("/console/incidents", "./signin"),
        ("/console/actions", "./signin"),
        ("/console/incidents/7", "../signin"),
    ] {
        for cookie in [None, Some("vigil_session=0123456789abcdef")] {
            let answer = appliance.get(path, cookie).await;
            assert_eq!(answer.status, StatusCode::SEE_OTHER, "{path}");
            assert_eq!(answer.location(), sign_in, "{path}");
            assert_secure_headers(&answer, path);
        }
    }
    let part = appliance.get("/console/incidents?part=live", None).await;
    assert_eq!(part.status, StatusCode::UNAUTHORIZED);
    let form = appliance
        .post(
            "/console/actions/1/confirm",
            None,
            &[("csrf", "x"), ("reason", "r")],
        )
        .await;
    assert_eq!(form.status, StatusCode::UNAUTHORIZED);
    assert_eq!(appliance.action_on_disk().status, Status::Pending);
}

#[tokio::test]
async fn wrong_tokens_are_refused_and_after_five_even_the_right_one_gets_429() {
    let appliance = appliance("ratelimit", Duration::from_secs(3600));
    for attempt in 0..MAX_SIGN_IN_FAILURES {
        let answer = appliance
            .post("/console/signin", None, &[("token", "a wrong guess at it")])
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
        assert!(answer.headers.get(header::SET_COOKIE).is_none());
        assert!(answer.body.contains("no operator has this token"));
    }
    let answer = appliance
        .post("/console/signin", None, &[("token", ADMIN_TOKEN)])
        .await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers[header::RETRY_AFTER], "60");
    assert!(answer.headers.get(header::SET_COOKIE).is_none());
}

#[tokio::test]
async fn an_expired_session_is_sent_to_sign_in_again() {
    let appliance = appliance("expired", Duration::from_millis(300));
    let cookie = appliance.sign_in(ADMIN_TOKEN).await;
    let page = appliance.get("/console/actions", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let page = appliance.get("/console/actions", Some(&cookie)).await;
    assert_eq!(
        (page.status, page.location()),
        (StatusCode::SEE_OTHER, "./signin")
    );
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let appliance = appliance("signout", Duration::from_secs(3600));
    let cookie = appliance.sign_in(VIEWER_TOKEN).await;
    let csrf = appliance
        .get("/console/actions", Some(&cookie))
        .await
        .csrf();
    let answer = appliance
        .post("/console/signout", Some(&cookie), &[("csrf", &csrf)])
        .await;
    assert_eq!(
        (answer.status, answer.location()),
        (StatusCode::SEE_OTHER, "signin")
    );
    assert!(answer.headers[header::SET_COOKIE]
        .to_str()
        .expect("cookie")
        .contains("Max-Age=0"));
    let page = appliance.get("/console/actions", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_form_without_its_sessions_csrf_token_is_refused_and_changes_nothing() {
    let appliance = appliance("csrf", Duration::from_secs(3600));
    let cookie = appliance.sign_in(ADMIN_TOKEN).await;
    let other = appliance.sign_in(ADMIN_TOKEN).await;
    let others_csrf = appliance.get("/console/actions", Some(&other)).await.csrf();
    for form in [
        vec![("reason", "no token")],
        vec![("reason", "a wrong one"), ("csrf", "0000")],
        vec![("reason", "another session's"), ("csrf", &others_csrf)],
    ] {
        let answer = appliance
            .post("/console/actions/1/confirm", Some(&cookie), &form)
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{form:?}");
        assert_secure_headers(&answer, "refused form");
    }
    assert_eq!(appliance.action_on_disk().status, Status::Pending);
}

#[tokio::test]
async fn a_viewer_reads_every_page_but_may_not_confirm() {
    let appliance = appliance("viewer", Duration::from_secs(3600));
    let cookie = appliance.sign_in(VIEWER_TOKEN).await;
    for path in PAGES {
        let page = appliance.get(path, Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(!page.body.contains("form class=\"confirm\""), "{path}");
    }
    let csrf = appliance
        .get("/console/actions", Some(&cookie))
        .await
        .csrf();
    let answer = appliance
        .post(
            "/console/actions/1/confirm",
            Some(&cookie),
            &[("csrf", &csrf), ("reason", "a viewer tries")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(appliance.action_on_disk().status, Status::Pending);
}

#[tokio::test]
async fn an_operator_confirms_from_the_incident_page_with_their_name_and_reason() {
    let appliance = appliance("confirm", Duration::from_secs(3600));
    let cookie = appliance.sign_in(ADMIN_TOKEN).await;
    let page = appliance.get("/console/incidents/7", Some(&cookie)).await;
    let csrf = page.csrf();
    let refused = appliance
        .post(
            "/console/actions/1/confirm",
            Some(&cookie),
            &[("csrf", &csrf), ("reason", "")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let answer = appliance
        .post(
            "/console/actions/1/confirm",
            Some(&cookie),
            &[
                ("csrf", &csrf),
                ("reason", "seen the scan"),
                ("back", "incidents/7"),
            ],
        )
        .await;
    assert_eq!(
        (answer.status, answer.location()),
        (StatusCode::SEE_OTHER, "../../incidents/7"),
        "{}",
        answer.body
    );
    let action = appliance.action_on_disk();
    assert!(matches!(action.status, Status::Active { .. }), "{action:?}");
    let entry = action.audit.last().expect("audit entry");
    assert_eq!(entry.who, "admin");
    assert_eq!(entry.reason.as_deref(), Some("seen the scan"));
    let page = appliance.get("/console/incidents/7", Some(&cookie)).await;
    assert!(page
        .body
        .contains("<span class=\"action-state\">active</span>"));
    assert!(page.body.contains("seen the scan"));
    // A second confirmation is the capture loop's refusal, shown as a page.
    let again = appliance
        .post(
            "/console/actions/1/confirm",
            Some(&cookie),
            &[("csrf", &csrf), ("reason", "twice")],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.body.contains("not pending"), "{}", again.body);
    // Somewhere outside the console is never a place to return to.
    let cleared = appliance
        .post(
            "/console/actions/1/clear",
            Some(&cookie),
            &[
                ("csrf", &csrf),
                ("reason", "done"),
                ("back", "//elsewhere.example/"),
            ],
        )
        .await;
    assert_eq!(cleared.location(), "../../actions");
}

#[tokio::test]
async fn html_and_script_in_captured_values_are_shown_as_text() {
    let appliance = appliance("hostile", Duration::from_secs(3600));
    let cookie = appliance.sign_in(ADMIN_TOKEN).await;
    for path in PAGES {
        let page = appliance.get(path, Some(&cookie)).await;
        assert_only_escaped(&page.body, path);
    }
    let incident = appliance.get("/console/incidents/7", Some(&cookie)).await;
    // Summary, model, evidence, host name and the action's reason, each escaped.
    assert!(
        incident.body.matches("&lt;script&gt;").count() >= 5,
        "{}",
        incident.body
    );
}

/// `body` holds the hostile strings only as escaped text.
fn assert_only_escaped(body: &str, what: &str) {
    for markup in ["<script>alert", "<img", "onerror=alert(1)>"] {
        assert!(!body.contains(markup), "{what} contains {markup:?}");
    }
}

#[test]
fn the_way_back_to_the_top_is_relative() {
    assert_eq!(super::root_of("/console/incidents"), "./");
    assert_eq!(super::root_of("/console/incidents/7"), "../");
    assert_eq!(super::root_of("/console/actions/1/confirm"), "../../");
    assert!(Path::new(&super::root_of("/console/")).is_relative());
}

#[tokio::test]
async fn alerts_are_grouped_by_model_and_device_filtered_and_linked() {
    let appliance = appliance("alerts", Duration::from_secs(3600));
    let cookie = appliance.sign_in(VIEWER_TOKEN).await;
    let page = appliance.get("/console/alerts", Some(&cookie)).await;
    assert_eq!(
        page.body.matches("<tr class=\"alert-group\">").count(),
        2,
        "{}",
        page.body
    );
    assert!(page.body.contains("href=\"./devices/10.0.0.66\""));
    assert!(page.body.contains("href=\"./incidents/7\""));
    assert!(page
        .body
        .contains("href=\"./alerts?model=Device+%2F+SMB+Session+Brute+Force+%28Admin%29\""));
    for (query, groups) in [
        ("model=Device+%2F+SMB+Session+Brute+Force+%28Admin%29", 1),
        ("device=10.0.0.99", 0),
        ("from=2026-11-28T05", 1),
        ("to=2026-11-28T04", 1),
        ("from=2026-11-28T06", 0),
    ] {
        let page = appliance
            .get(&format!("/console/alerts?{query}"), Some(&cookie))
            .await;
        assert_eq!(
            page.body.matches("<tr class=\"alert-group\">").count(),
            groups,
            "{query}"
        );
    }
    let device = appliance
        .get("/console/devices/10.0.0.66", Some(&cookie))
        .await;
    assert!(
        device.body.contains("<svg class=\"activity\""),
        "{}",
        device.body
    );
    assert_eq!(device.body.matches("class=\"breach-marker\"").count(), 2);
    assert_eq!(device.body.matches("<tr class=\"breach\">").count(), 2);
    let unknown = appliance
        .get("/console/devices/10.0.0.99", Some(&cookie))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn plugins_are_rolled_back_and_uploads_need_the_header_token_and_the_operator_role() {
    let appliance = appliance("plugins", Duration::from_secs(3600));
    let admin = appliance.sign_in(ADMIN_TOKEN).await;
    let page = appliance.get("/console/plugins", Some(&admin)).await;
    assert!(page.body.contains("<form id=\"install\""), "{}", page.body);
    assert!(page
        .body
        .contains("action=\"plugins/network-scan/rollback\""));
    let csrf = page.csrf();
    let rolled = appliance
        .post(
            "/console/plugins/network-scan/rollback",
            Some(&admin),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(
        (rolled.status, rolled.location()),
        (StatusCode::SEE_OTHER, "../../plugins"),
        "{}",
        rolled.body
    );
    let viewer = appliance.sign_in(VIEWER_TOKEN).await;
    let viewers_page = appliance.get("/console/plugins", Some(&viewer)).await;
    assert!(!viewers_page.body.contains("id=\"install\""));
    assert!(!viewers_page.body.contains("rollback"));
    let viewers_csrf = viewers_page.csrf();
    for (cookie, token, status) in [
        (None, csrf.as_str(), StatusCode::UNAUTHORIZED),
        (Some(&admin), "a forged token", StatusCode::FORBIDDEN),
        (Some(&viewer), viewers_csrf.as_str(), StatusCode::FORBIDDEN),
    ] {
        let mut request = Request::post("/console/plugins").header("x-csrf-token", token);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie.as_str());
        }
        let answer = appliance
            .send(request.body(Body::from("not a bundle")).expect("request"))
            .await;
        assert_eq!(answer.status, status, "{token}");
    }
    assert!(
        !appliance.dir.join("uploads").exists(),
        "a refused upload reached the disk"
    );
    // A form route given the token as a header rather than a form: no reason, nothing done.
    let confirm = Request::post("/console/actions/1/confirm")
        .header("x-csrf-token", csrf.as_str())
        .header(header::COOKIE, admin.as_str())
        .body(Body::empty())
        .expect("request");
    assert_eq!(
        appliance.send(confirm).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(appliance.action_on_disk().status, Status::Pending);
}
