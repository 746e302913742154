//! The management API of a running appliance (HTTP/1, axum on its own small tokio runtime):
//!
//! | method and path | what |
//! |---|---|
//! | `GET /api/v1/plugins` | the running plugins as JSON |
//! | `POST /api/v1/plugins` | body: a signed bundle; installed live, between batches |
//! | `GET /api/v1/alerts` | the newest alerts (up to 500) from eve.json |
//! | `GET /api/v1/status` | core version, booted slot, root mount and verity, capture bound |
//! | `POST /api/v1/image` | body: a signed core update; written to the slot not booted, then reboot |
//! | `GET /api/v1/actions` | the responses requested: pending, in force, cleared, expired |
//! | `POST /api/v1/actions/{id}/confirm` | body `{"by": NAME}`: a pending action in force now |
//! | `POST /api/v1/actions/{id}/clear` | body `{"by": NAME}`: an action lifted |
//!
//! Every request needs `Authorization: Bearer TOKEN` with the token from the config file; there
//! is no API without one. Requests reach the capture loop through [`Control`], which the
//! pipeline polls between packets, so the API never touches plugins from another thread and the
//! signature check is exactly the one `vigil plugins install` makes. Core updates and status
//! touch no plugin and are served on the API's own thread.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use vigil_boot_contract::REBOOT_FILE;

use crate::image::slots::{InstallError, SystemPaths};
use crate::image::update::MAX_UPDATE_BYTES;
use crate::respond::Decision;

/// `[api]` in the config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Where to listen, e.g. `127.0.0.1:8470`; `None`: no API.
    pub listen: Option<SocketAddr>,
    /// The bearer token every request must carry (at least 16 characters).
    pub token: Option<String>,
}

const MIN_TOKEN_LEN: usize = 16;
/// The longest name an operator may sign a decision with, in the audit trail.
const MAX_OPERATOR_NAME: usize = 64;

/// What the API asks of the capture loop.
pub enum Request {
    Install(Vec<u8>),
    ListPlugins,
    ListActions,
    /// An operator's decision on action `id`; `by` goes into its audit trail.
    Decide {
        id: u64,
        decision: Decision,
        by: String,
    },
}

/// The body of a decision: who made it. Empty means the API's own name.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DecisionBody {
    by: Option<String>,
}

/// The capture loop's answer: a status and a JSON body.
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
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

#[derive(Clone)]
struct Shared {
    token: String,
    to_pipeline: mpsc::SyncSender<Control>,
    context: Arc<ApiContext>,
}

/// Starts the API on a thread of its own; returns the receiving end the pipeline polls.
pub fn start(
    config: &ApiConfig,
    context: ApiContext,
) -> anyhow::Result<Option<mpsc::Receiver<Control>>> {
    let Some(listen) = config.listen else {
        return Ok(None);
    };
    let token = match &config.token {
        Some(token) if token.len() >= MIN_TOKEN_LEN => token.clone(),
        _ => anyhow::bail!(
            "api.listen is set but api.token is missing or shorter than {MIN_TOKEN_LEN} \
             characters: the management API never runs without a token"
        ),
    };
    let (to_pipeline, from_api) = mpsc::sync_channel(16);
    let max_bundle_bytes = context.max_bundle_bytes;
    let shared = Shared {
        token,
        to_pipeline,
        context: Arc::new(context),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(listen))?;
    tracing::info!("management API on http://{listen}/api/v1/");
    let app = Router::new()
        .route("/api/v1/plugins", get(list_plugins).post(install))
        // One byte over the limit still arrives, so the verifier refuses it by name.
        .layer(DefaultBodyLimit::max(
            usize::try_from(max_bundle_bytes.saturating_add(1)).unwrap_or(usize::MAX),
        ))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/actions", get(list_actions))
        .route("/api/v1/actions/{id}/{decision}", post(decide))
        .route("/api/v1/status", get(status))
        .route(
            "/api/v1/image",
            post(apply_image).layer(DefaultBodyLimit::max(
                usize::try_from(MAX_UPDATE_BYTES.saturating_add(1)).unwrap_or(usize::MAX),
            )),
        )
        .with_state(shared);
    std::thread::Builder::new()
        .name("vigil-api".into())
        .spawn(move || {
            if let Err(err) = runtime.block_on(async { axum::serve(listener, app).await }) {
                tracing::error!("management API stopped: {err}");
            }
        })?;
    Ok(Some(from_api))
}

/// Compares in time independent of where the strings differ.
fn same_token(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorised(headers: &HeaderMap, shared: &Shared) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|token| same_token(token, &shared.token))
}

fn json(status: u16, body: serde_json::Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn refuse_unauthorised(headers: &HeaderMap, shared: &Shared) -> Option<Response> {
    if authorised(headers, shared) {
        return None;
    }
    tracing::warn!("management API: request without a valid bearer token refused");
    Some(json(
        401,
        serde_json::json!({"error": "a valid bearer token is required"}),
    ))
}

async fn ask(shared: &Shared, headers: &HeaderMap, request: Request) -> Response {
    if let Some(refusal) = refuse_unauthorised(headers, shared) {
        return refusal;
    }
    send(shared, request).await
}

/// Hands an authorised request to the capture loop and waits for its answer.
async fn send(shared: &Shared, request: Request) -> Response {
    let (reply, answer) = oneshot::channel();
    if shared
        .to_pipeline
        .try_send(Control { request, reply })
        .is_err()
    {
        return json(503, serde_json::json!({"error": "the appliance is busy"}));
    }
    match answer.await {
        Ok(answer) => json(answer.status, answer.body),
        Err(_) => json(
            503,
            serde_json::json!({"error": "the capture loop stopped"}),
        ),
    }
}

async fn list_plugins(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    ask(&shared, &headers, Request::ListPlugins).await
}

async fn install(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    ask(&shared, &headers, Request::Install(body.to_vec())).await
}

async fn list_actions(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    ask(&shared, &headers, Request::ListActions).await
}

/// `POST /api/v1/actions/{id}/confirm|clear`.
async fn decide(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((id, decision)): Path<(u64, String)>,
    body: Bytes,
) -> Response {
    // The token first: nobody without it learns how the path or body would be judged.
    if let Some(refusal) = refuse_unauthorised(&headers, &shared) {
        return refusal;
    }
    let Some(decision) = Decision::parse(&decision) else {
        return json(
            404,
            serde_json::json!({"error": format!("no decision {decision:?}: confirm or clear")}),
        );
    };
    let body = if body.is_empty() {
        DecisionBody::default()
    } else {
        match serde_json::from_slice::<DecisionBody>(&body) {
            Ok(body) => body,
            Err(err) => {
                return json(
                    400,
                    serde_json::json!({"error": format!("expected {{\"by\": NAME}}: {err}")}),
                )
            }
        }
    };
    let by = body.by.unwrap_or_else(|| "management API".into());
    if by.is_empty() || by.len() > MAX_OPERATOR_NAME || by.chars().any(char::is_control) {
        return json(
            400,
            serde_json::json!({"error": format!("\"by\" must be 1 to {MAX_OPERATOR_NAME} printable bytes")}),
        );
    }
    send(&shared, Request::Decide { id, decision, by }).await
}

/// The newest alerts in eve.json, oldest first.
async fn alerts(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refuse_unauthorised(&headers, &shared) {
        return refusal;
    }
    const NEWEST: usize = 500;
    let path = shared.context.data_dir.join("eve.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => {
            return json(
                500,
                serde_json::json!({"error": format!("{}: {err}", path.display())}),
            )
        }
    };
    let mut alerts: Vec<serde_json::Value> = text
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|record| record["event_type"] == "alert")
        .take(NEWEST)
        .collect();
    alerts.reverse();
    json(200, serde_json::Value::Array(alerts))
}

async fn status(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refuse_unauthorised(&headers, &shared) {
        return refusal;
    }
    let context = &shared.context;
    let mut capture = context
        .ready_file
        .as_ref()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
    if let Some(board) = &context.capture_queues {
        let queues = serde_json::to_value(board.snapshot()).unwrap_or_default();
        match &mut capture {
            Some(serde_json::Value::Object(fields)) => {
                fields.insert("queues".to_string(), queues);
            }
            _ => capture = Some(serde_json::json!({ "queues": queues })),
        }
    }
    let system = crate::image::status::read(&context.system);
    json(
        200,
        serde_json::json!({
            "vigil": env!("CARGO_PKG_VERSION"),
            "system": system,
            "capture": capture,
        }),
    )
}

/// Verifies and installs a core update into the slot not booted, then asks vigil-init to
/// reboot (a moment later, so this answer gets out first).
async fn apply_image(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = refuse_unauthorised(&headers, &shared) {
        return refusal;
    }
    let context = Arc::clone(&shared.context);
    let outcome = tokio::task::spawn_blocking(move || {
        let trust = crate::bundle::TrustStore::open(&context.trust_dir)
            .map_err(|err| (500, err.to_string()))?;
        let versions = context.data_dir.join("bundles").join("versions.json");
        crate::image::slots::install(
            &body,
            &trust,
            &versions,
            &context.system,
            crate::bundle::text::unix_now(),
        )
        .map_err(|err| {
            let status = match err {
                InstallError::Refused(_) => 422,
                _ => 500,
            };
            (status, err.to_string())
        })
    })
    .await;
    match outcome {
        Ok(Ok(installed)) => {
            let message = format!(
                "vigil-core {} written to slot {} ({}); rebooting into it on trial",
                installed.version,
                installed.slot,
                installed.entry.display()
            );
            tracing::info!("{message}");
            std::thread::spawn(|| {
                std::thread::sleep(std::time::Duration::from_secs(2));
                if let Err(err) = std::fs::write(REBOOT_FILE, b"core update\n") {
                    tracing::error!("could not ask for a reboot ({REBOOT_FILE}): {err}");
                }
            });
            json(200, serde_json::json!({"installed": message}))
        }
        Ok(Err((status, error))) => {
            tracing::warn!("core update refused: {error}");
            json(status, serde_json::json!({"error": error}))
        }
        Err(err) => json(500, serde_json::json!({"error": err.to_string()})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("correct horse battery", "correct horse battery"));
        assert!(!same_token(
            "correct horse batterx",
            "correct horse battery"
        ));
        assert!(!same_token("correct", "correct horse battery"));
        assert!(!same_token("", "correct horse battery"));
    }

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
    fn no_api_without_a_long_enough_token() {
        let listen = Some("127.0.0.1:0".parse().expect("address"));
        for token in [None, Some("short".to_string())] {
            let err = start(&ApiConfig { listen, token }, context()).expect_err("refused");
            assert!(err.to_string().contains("api.token"), "{err}");
        }
        assert!(start(&ApiConfig::default(), context())
            .expect("no API")
            .is_none());
    }
}
