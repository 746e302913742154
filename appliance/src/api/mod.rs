//! The management API of a running appliance (HTTP/1 over TLS, [`tls`]; axum on its own small
//! tokio runtime):
//!
//! | method and path | what |
//! |---|---|
//! | `GET /api/v1/plugins` | the running plugins as JSON (version, signer, kind, counters) |
//! | `POST /api/v1/plugins` | body: a signed bundle; installed live, between batches |
//! | `GET /api/v1/alerts` | the newest alerts (up to 500) from eve.json |
//! | `GET /api/v1/status` | core version, booted slot, root mount and verity, capture bound, storage |
//! | `POST /api/v1/image` | body: a signed core update; written to the slot not booted, then reboot |
//! | `GET /api/v1/actions` | the responses requested: pending, in force, cleared, expired |
//! | `POST /api/v1/actions/{id}/confirm` | body `{"by": NAME}`: a pending action in force now |
//! | `POST /api/v1/actions/{id}/clear` | body `{"by": NAME}`: an action lifted |
//! | `POST /api/v1/actions/{id}/extend` | body `{"by": NAME}`: an action in force for another of its durations |
//! | `PUT /api/v1/tls` | body `{"certificate": PEM, "key": PEM}`: served from the next connection |
//! | `GET /metrics` | counters in the Prometheus text format (also with `metrics_token`) |
//!
//! Every request needs `Authorization: Bearer TOKEN` with the token from the config file; there
//! is no API without one. The token is checked from the headers before any body is read
//! ([`gate`]), bodies go to a capped file on the data dir ([`upload`]), connections are bounded
//! and timed out ([`server`]), and the server restarts itself if it fails.
//!
//! Requests reach the capture loop through [`Control`], which the pipeline polls between
//! packets, so the API never touches plugins from another thread and the signature check is
//! exactly the one `vigil plugins install` makes. Core updates and status touch no plugin and
//! are served on the API's own thread.

pub(crate) mod alerts;
pub(crate) mod failures;
mod gate;
mod metrics;
mod routes;
mod server;
pub mod tls;
pub(crate) mod upload;

pub use server::Peer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::console::session::{Operator, Sessions, API_TOKEN_OPERATOR};
use crate::image::slots::SystemPaths;
use crate::respond::Decision;

/// `[api]` in the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Where to listen, e.g. `127.0.0.1:8470`; `None`: no API.
    pub listen: Option<SocketAddr>,
    /// The bearer token every request must carry (at least 16 characters).
    pub token: Option<String>,
    /// A second token (at least 16 characters) good for `GET /metrics` only, for a scraper.
    pub metrics_token: Option<String>,
    /// HTTPS with the certificate in `DATA/tls/` (default). `false` serves plain HTTP, which
    /// is allowed only when `listen` is a loopback address: the token would cross the
    /// management network in the clear.
    pub tls: bool,
    /// Named tokens (at least 16 characters each) that sign in to the console; the API token
    /// signs in too, as the operator `admin`.
    pub operators: Vec<OperatorConfig>,
    /// How long a console session lasts after sign-in, in minutes (default 480).
    pub session_minutes: Option<u64>,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            listen: None,
            token: None,
            metrics_token: None,
            tls: true,
            operators: Vec::new(),
            session_minutes: None,
        }
    }
}

/// `[[api.operators]]`: someone who signs in to the console with their own token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// Shown in the console and written in the audit trail of their decisions.
    pub name: String,
    pub token: String,
    pub role: Role,
}

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads every page, changes nothing.
    Viewer,
    /// Also confirms, clears and extends actions, installs and rolls back plugins.
    Operator,
}

const MIN_TOKEN_LEN: usize = 16;
/// How long a console session lasts unless `api.session_minutes` says otherwise: a working day.
const DEFAULT_SESSION_MINUTES: u64 = 480;
/// How long the supervisor waits before starting a failed server again, so a failure that
/// repeats at once does not spin.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// What the API asks of the capture loop.
pub enum Request {
    Install(Vec<u8>),
    /// Back to the plugin's previous installed version, on disk and running.
    RollBack(String),
    ListPlugins,
    ListActions,
    /// The pipeline's [`crate::counters::Counters`], for `/metrics`.
    Counters,
    /// An operator's decision on action `id`; `by` and `reason` go into its audit trail.
    Decide {
        id: u64,
        decision: Decision,
        by: String,
        reason: Option<String>,
    },
    /// The incidents of this run, each without its timeline.
    ListIncidents,
    /// One incident whole, with its device's identity.
    Incident(u64),
    /// The device table, the most recently seen first (up to [`MAX_LISTED_DEVICES`]).
    ListDevices,
    /// The device holding an address.
    Device(std::net::IpAddr),
}

/// Devices [`Request::ListDevices`] answers at most.
pub const MAX_LISTED_DEVICES: usize = 1000;

/// The capture loop's answer: a status and a JSON body.
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

/// An incident without its timeline, as [`Request::ListIncidents`] lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentHeader {
    pub id: u64,
    pub device: std::net::IpAddr,
    pub score: u8,
    pub first: vigil_plugin_sdk::Timestamp,
    pub last: vigil_plugin_sdk::Timestamp,
    pub breaches: u32,
    /// Phase names in kill-chain order.
    pub phases: Vec<String>,
    pub summary: String,
}

impl IncidentHeader {
    pub fn of(incident: &vigil_plugin_sdk::Incident) -> IncidentHeader {
        IncidentHeader {
            id: incident.id,
            device: incident.device,
            score: incident.score,
            first: incident.first,
            last: incident.last,
            breaches: incident.breaches,
            phases: incident.phases.iter().map(|p| p.name.clone()).collect(),
            summary: incident.summary.clone(),
        }
    }
}

/// Why the capture loop gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unanswered {
    #[error("the appliance is busy")]
    Busy,
    #[error("the capture loop stopped")]
    Stopped,
}

/// Hands `request` to the capture loop and waits for its answer: the one way the API and the
/// console reach plugins, actions, incidents and devices.
pub async fn ask(
    to_pipeline: &mpsc::SyncSender<Control>,
    request: Request,
) -> Result<Answer, Unanswered> {
    let (reply, answer) = oneshot::channel();
    to_pipeline
        .try_send(Control { request, reply })
        .map_err(|_| Unanswered::Busy)?;
    answer.await.map_err(|_| Unanswered::Stopped)
}

/// One request and where its answer goes.
pub struct Control {
    pub request: Request,
    pub reply: oneshot::Sender<Answer>,
}

/// What the API needs to know of the appliance besides the capture loop.
pub struct ApiContext {
    pub max_bundle_bytes: u64,
    pub data_dir: PathBuf,
    pub trust_dir: PathBuf,
    /// Where `vigil run --ready-file` reported the capture bound.
    pub ready_file: Option<PathBuf>,
    pub system: SystemPaths,
    /// The live capture's per-queue counters, shown as `capture.queues` in the status.
    pub capture_queues: Option<crate::capture::xdp::QueueBoard>,
}

/// How the API itself is doing, for the status answer.
#[derive(Default)]
pub struct ApiHealth {
    /// Times the server failed (a panic or an error) and was started again.
    pub restarts: AtomicU64,
}

/// Starts the API on a thread of its own, asking the pipeline through `to_pipeline`; false
/// when it is off.
pub fn start(
    config: &ApiConfig,
    context: ApiContext,
    to_pipeline: mpsc::SyncSender<Control>,
) -> anyhow::Result<bool> {
    let Some(listen) = config.listen else {
        return Ok(false);
    };
    let token = match &config.token {
        Some(token) if token.len() >= MIN_TOKEN_LEN => token.clone(),
        _ => anyhow::bail!(
            "api.listen is set but api.token is missing or shorter than {MIN_TOKEN_LEN} \
             characters: the management API never runs without a token"
        ),
    };
    if config
        .metrics_token
        .as_ref()
        .is_some_and(|token| token.len() < MIN_TOKEN_LEN)
    {
        anyhow::bail!("api.metrics_token is shorter than {MIN_TOKEN_LEN} characters");
    }
    let certificates = tls::open_for_api(config.tls, &context.data_dir, listen)?;
    let acceptor = certificates.clone().map(tls::acceptor).transpose()?;
    let sessions = console_sessions(config, &token)?;
    raise_open_file_limit();
    upload::clear_stale(&context.data_dir);
    let health = Arc::new(ApiHealth::default());
    let gate = gate::Gate::new(token.clone(), config.metrics_token.clone());
    let app = app(
        gate,
        sessions,
        to_pipeline,
        context,
        Arc::clone(&health),
        certificates,
    );
    // Bound once, so a restarted server takes the same socket and no connection is refused
    // while it restarts.
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    widen_backlog(&listener);
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    tracing::info!("management API on {scheme}://{listen}/api/v1/");
    std::thread::Builder::new()
        .name("vigil-api".into())
        .spawn(move || {
            supervise(&health, || {
                server::serve_once(&listener, app.clone(), acceptor.clone())
            })
        })?;
    Ok(true)
}

/// The API behind its bearer token, and the console beside it behind its sessions.
fn app(
    gate: gate::Gate,
    sessions: Sessions,
    to_pipeline: mpsc::SyncSender<Control>,
    context: ApiContext,
    health: Arc<ApiHealth>,
    certificates: Option<Arc<tls::CertStore>>,
) -> axum::Router {
    let context = Arc::new(context);
    let console = crate::console::Console {
        sessions,
        to_pipeline: to_pipeline.clone(),
        context: Arc::clone(&context),
        started: std::time::Instant::now(),
    };
    // The API merged into the console, not the other way round: so the API's fallback, behind
    // the bearer gate, answers every path that is neither (401 without the token, as before).
    crate::console::router(console).merge(routes::router(
        gate,
        to_pipeline,
        context,
        health,
        certificates,
    ))
}

/// Who may sign in to the console: the API token (as [`API_TOKEN_OPERATOR`]) and the config's
/// operators, each token long enough and different from every other.
fn console_sessions(config: &ApiConfig, api_token: &str) -> anyhow::Result<Sessions> {
    let mut operators = vec![Operator {
        name: API_TOKEN_OPERATOR.into(),
        token: api_token.into(),
        role: Role::Operator,
    }];
    for operator in &config.operators {
        let name = &operator.name;
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            anyhow::bail!("api.operators: the name {name:?} must be 1 to 64 printable bytes");
        }
        if operator.token.len() < MIN_TOKEN_LEN {
            anyhow::bail!(
                "api.operators: {name}'s token is shorter than {MIN_TOKEN_LEN} characters"
            );
        }
        let tokens = operators.iter().map(|o| &o.token);
        if tokens
            .chain(&config.metrics_token)
            .any(|t| *t == operator.token)
        {
            anyhow::bail!("api.operators: {name}'s token is also another's token");
        }
        operators.push(Operator {
            name: name.clone(),
            token: operator.token.clone(),
            role: operator.role,
        });
    }
    let minutes = config.session_minutes.unwrap_or(DEFAULT_SESSION_MINUTES);
    Ok(Sessions::new(
        operators,
        Duration::from_secs(minutes.saturating_mul(60)),
    ))
}

/// Runs `serve` for as long as the process lives: a panic or an error is logged, counted in
/// [`ApiHealth::restarts`] and followed by a fresh start. Capture runs on other threads and is
/// not touched.
fn supervise(health: &ApiHealth, mut serve: impl FnMut() -> anyhow::Result<()>) -> ! {
    loop {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut serve));
        let restarts = health.restarts.fetch_add(1, Ordering::Relaxed) + 1;
        match outcome {
            Ok(Err(err)) => {
                tracing::error!(
                    "management API failed: {err:#}; restarting it (restart {restarts})"
                )
            }
            Ok(Ok(())) => tracing::error!(
                "management API stopped accepting; restarting it (restart {restarts})"
            ),
            Err(_) => tracing::error!(
                "management API panicked (message above); restarting it (restart {restarts})"
            ),
        }
        std::thread::sleep(RESTART_DELAY);
    }
}

/// Connections the kernel completes and holds for the accept loop; std binds with 128, which
/// a burst of connections fills, and a client whose handshake finds it full waits a whole
/// retransmission (a second or more).
const LISTEN_BACKLOG: libc::c_int = 1024;

fn widen_backlog(listener: &std::net::TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: listen() on a socket `listener` owns and keeps open; calling it again on a
    // listening socket only changes its backlog.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        tracing::warn!(
            "management API: could not widen the listen backlog: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Raises this process's soft open-file limit to its hard limit: each API connection holds a
/// descriptor, and the default soft limit (1024) is far below what the kernel allows.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`, which lives across the calls.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
        }
    };
    if raised {
        tracing::debug!("open-file limit raised to {}", limit.rlim_cur);
    } else {
        tracing::warn!(
            "could not raise the open-file limit: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> ApiContext {
        ApiContext {
            max_bundle_bytes: 1024,
            data_dir: PathBuf::from("unused"),
            trust_dir: PathBuf::from("unused"),
            ready_file: None,
            system: SystemPaths::appliance(),
            capture_queues: None,
        }
    }

    #[test]
    fn a_server_that_panics_is_started_again_and_counted() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let (to_pipeline, _from_api) = mpsc::sync_channel(1);
        let health = Arc::new(ApiHealth::default());
        let app = routes::router(
            gate::Gate::new("a-token-long-enough".into(), None),
            to_pipeline,
            Arc::new(context()),
            Arc::clone(&health),
            None,
        );
        let supervised = Arc::clone(&health);
        let mut first = true;
        std::thread::spawn(move || {
            supervise(&supervised, || {
                assert!(
                    !std::mem::take(&mut first),
                    "a failure injected by the test"
                );
                server::serve_once(&listener, app.clone(), None)
            })
        });
        // Sent while the server is down: the kernel holds it until the restarted one answers.
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: vigil\r\nConnection: close\r\n\r\n")
            .expect("request");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer");
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert_eq!(health.restarts.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn the_console_is_served_beside_the_api_whose_bearer_gate_is_unchanged() {
        use axum::http::{header, Request as HttpRequest, StatusCode};
        use tower::ServiceExt;
        const TOKEN: &str = "a-token-long-enough";
        let config = ApiConfig {
            token: Some(TOKEN.into()),
            ..ApiConfig::default()
        };
        let (to_pipeline, _from_api) = mpsc::sync_channel(1);
        let app = app(
            gate::Gate::new(TOKEN.into(), None),
            console_sessions(&config, TOKEN).expect("sessions"),
            to_pipeline,
            context(),
            Arc::new(ApiHealth::default()),
            None,
        );
        let status = |path: &str, token: Option<&str>| {
            let mut request = HttpRequest::get(path);
            if let Some(token) = token {
                request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let app = app.clone();
            let request = request.body(axum::body::Body::empty()).expect("request");
            async move { app.oneshot(request).await.expect("answer").status() }
        };
        assert_eq!(
            status("/api/v1/status", None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(status("/api/v1/status", Some(TOKEN)).await, StatusCode::OK);
        assert_eq!(
            status("/api/v1/nothing", None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(status("/console/signin", None).await, StatusCode::OK);
        // The console's sessions are not the API's: a bearer token opens no page.
        assert_eq!(
            status("/console/incidents", Some(TOKEN)).await,
            StatusCode::SEE_OTHER
        );
    }

    #[test]
    fn operators_need_long_distinct_tokens_and_printable_names() {
        let operator = |name: &str, token: &str| OperatorConfig {
            name: name.into(),
            token: token.into(),
            role: Role::Viewer,
        };
        for (operators, complaint) in [
            (vec![operator("vera", "short")], "shorter than"),
            (vec![operator("", "a viewer's long token")], "printable"),
            (
                vec![operator("vera", "the api token, long")],
                "another's token",
            ),
            (
                vec![
                    operator("vera", "a viewer's long token"),
                    operator("otto", "a viewer's long token"),
                ],
                "another's token",
            ),
        ] {
            let config = ApiConfig {
                operators,
                ..ApiConfig::default()
            };
            let err = console_sessions(&config, "the api token, long")
                .err()
                .expect("refused");
            assert!(err.to_string().contains(complaint), "{err}");
        }
    }

    #[test]
    fn no_api_without_a_long_enough_token() {
        let listen = Some("127.0.0.1:0".parse().expect("address"));
        let (to_pipeline, _control) = mpsc::sync_channel(1);
        for token in [None, Some("short".to_string())] {
            let config = ApiConfig {
                listen,
                token,
                ..ApiConfig::default()
            };
            let err = start(&config, context(), to_pipeline.clone()).expect_err("refused");
            assert!(err.to_string().contains("api.token"), "{err}");
        }
        assert!(!start(&ApiConfig::default(), context(), to_pipeline).expect("no API"));
    }

    #[test]
    fn plain_http_is_refused_off_loopback() {
        let (to_pipeline, _control) = mpsc::sync_channel(1);
        let config = ApiConfig {
            listen: Some("0.0.0.0:0".parse().expect("address")),
            token: Some("a-token-long-enough".into()),
            tls: false,
            ..ApiConfig::default()
        };
        let err = start(&config, context(), to_pipeline).expect_err("refused");
        assert!(err.to_string().contains("api.tls = false"), "{err}");
    }
}
