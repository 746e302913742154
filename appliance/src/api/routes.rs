//! The API's routes and what each answers; every one sits behind the gate.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::Deserialize;
use vigil_boot_contract::REBOOT_FILE;

use super::gate::{Gate, Scope, Verdict, FAILURE_WINDOW};
use super::metrics::{self, Process};
use super::server::Peer;
use super::tls::{CertStore, TlsError};
use super::upload::{self, Upload, UploadError};
use super::{alerts, ApiContext, ApiHealth, Control, Request as ToPipeline};
use crate::image::slots::InstallError;
use crate::image::update::MAX_UPDATE_BYTES;
use crate::respond::Decision;

/// The longest name an operator may sign a decision with, in the audit trail.
const MAX_OPERATOR_NAME: usize = 64;
const METRICS_PATH: &str = "/metrics";
/// Alerts `GET /api/v1/alerts` returns at most.
const NEWEST_ALERTS: usize = 500;
/// The body of `PUT /api/v1/tls` at most: a certificate chain and its key in PEM.
const MAX_CERTIFICATE_BYTES: u64 = 256 * 1024;

#[derive(Clone)]
struct Shared {
    to_pipeline: mpsc::SyncSender<Control>,
    context: Arc<ApiContext>,
    health: Arc<ApiHealth>,
    started: Instant,
    /// The certificate served; `None` when the API is plain HTTP on loopback.
    certificates: Option<Arc<CertStore>>,
}

/// The body of a decision: who made it. Empty means the API's own name.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DecisionBody {
    by: Option<String>,
}

pub fn router(
    gate: Gate,
    to_pipeline: mpsc::SyncSender<Control>,
    context: Arc<ApiContext>,
    health: Arc<ApiHealth>,
    certificates: Option<Arc<CertStore>>,
) -> Router {
    let shared = Shared {
        to_pipeline,
        context,
        health,
        started: Instant::now(),
        certificates,
    };
    Router::new()
        .route("/api/v1/plugins", get(list_plugins).post(install))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/actions", get(list_actions))
        .route("/api/v1/actions/{id}/{decision}", post(decide))
        .route("/api/v1/status", get(status))
        .route("/api/v1/image", post(apply_image))
        .route("/api/v1/tls", put(install_certificate))
        .route(METRICS_PATH, get(scrape))
        .with_state(shared)
        // Outermost, so it runs on the headers before any route reads a body.
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(gate),
            authenticate,
        ))
}

async fn authenticate(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    // Only a router driven without the server (tests) has no peer.
    let source = request
        .extensions()
        .get::<Peer>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| peer.0.ip());
    let scope = if request.uri().path() == METRICS_PATH {
        Scope::Metrics
    } else {
        Scope::Api
    };
    match gate.check(source, request.headers(), scope, Instant::now()) {
        Verdict::Allowed => next.run(request).await,
        Verdict::Unauthorised => {
            tracing::warn!(
                "management API: request from {source} without a valid bearer token refused"
            );
            json(
                401,
                serde_json::json!({"error": "a valid bearer token is required"}),
            )
        }
        Verdict::TooManyFailures => {
            let mut refusal = json(
                429,
                serde_json::json!({"error": "too many failed requests from this address; try later"}),
            );
            refusal.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(FAILURE_WINDOW.as_secs()),
            );
            refusal
        }
    }
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

fn error(status: u16, message: impl std::fmt::Display) -> Response {
    json(status, serde_json::json!({"error": message.to_string()}))
}

/// Hands a request to the capture loop and answers with its answer.
async fn send(shared: &Shared, request: ToPipeline) -> Response {
    match super::ask(&shared.to_pipeline, request).await {
        Ok(answer) => json(answer.status, answer.body),
        Err(unanswered) => error(503, unanswered),
    }
}

/// Streams a body to the data dir within `cap`, or answers why not.
async fn receive(
    shared: &Shared,
    headers: &HeaderMap,
    body: Body,
    cap: u64,
) -> Result<Upload, Response> {
    upload::receive(headers, body, &shared.context.data_dir, cap)
        .await
        .map_err(|err| {
            let status = match err {
                UploadError::TooLarge { .. } => 413,
                UploadError::Body(_) => 400,
                UploadError::Io { .. } => 500,
            };
            tracing::warn!("management API: upload refused: {err}");
            error(status, err)
        })
}

async fn list_plugins(State(shared): State<Shared>) -> Response {
    send(&shared, ToPipeline::ListPlugins).await
}

async fn install(State(shared): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let cap = shared.context.max_bundle_bytes;
    let bytes = match receive(&shared, &headers, body, cap).await {
        Ok(upload) => upload.read().await,
        Err(refusal) => return refusal,
    };
    match bytes {
        Ok(bytes) => send(&shared, ToPipeline::Install(bytes)).await,
        Err(err) => error(500, err),
    }
}

async fn list_actions(State(shared): State<Shared>) -> Response {
    send(&shared, ToPipeline::ListActions).await
}

/// `POST /api/v1/actions/{id}/confirm|clear`.
async fn decide(
    State(shared): State<Shared>,
    Path((id, decision)): Path<(u64, String)>,
    body: Bytes,
) -> Response {
    let Some(decision) = Decision::parse(&decision) else {
        return error(
            404,
            format!("no decision {decision:?}: confirm, clear or extend"),
        );
    };
    let body = if body.is_empty() {
        DecisionBody::default()
    } else {
        match serde_json::from_slice::<DecisionBody>(&body) {
            Ok(body) => body,
            Err(err) => return error(400, format!("expected {{\"by\": NAME}}: {err}")),
        }
    };
    let by = body.by.unwrap_or_else(|| "management API".into());
    if by.is_empty() || by.len() > MAX_OPERATOR_NAME || by.chars().any(char::is_control) {
        return error(
            400,
            format!("\"by\" must be 1 to {MAX_OPERATOR_NAME} printable bytes"),
        );
    }
    let decide = ToPipeline::Decide {
        id,
        decision,
        by,
        reason: None,
    };
    send(&shared, decide).await
}

/// The newest alerts in eve.json, oldest first.
async fn list_alerts(State(shared): State<Shared>) -> Response {
    let path = shared.context.data_dir.join("eve.json");
    let read = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || alerts::newest(&path, NEWEST_ALERTS)).await
    };
    match read {
        Ok(Ok(alerts)) => json(200, serde_json::Value::Array(alerts)),
        Ok(Err(err)) => error(500, format!("{}: {err}", path.display())),
        Err(err) => error(500, err),
    }
}

async fn status(State(shared): State<Shared>) -> Response {
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
            "storage": crate::store::health::snapshot(),
            "api": {
                "restarts": shared.health.restarts.load(Ordering::Relaxed),
                "tls": shared.certificates.as_ref().map(|store| {
                    serde_json::json!({"fingerprint_sha256": store.fingerprint()})
                }),
            },
        }),
    )
}

/// `GET /metrics`: the capture loop's counters, rendered here off the capture thread.
async fn scrape(State(shared): State<Shared>) -> Response {
    let counters = match super::ask(&shared.to_pipeline, ToPipeline::Counters)
        .await
        .map(|answer| serde_json::from_value(answer.body))
    {
        Ok(Ok(counters)) => counters,
        Ok(Err(err)) => return error(500, format!("the pipeline's counters: {err}")),
        Err(unanswered) => return error(503, unanswered),
    };
    let process = Process {
        uptime_secs: shared.started.elapsed().as_secs(),
        api_restarts: shared.health.restarts.load(Ordering::Relaxed),
    };
    match metrics::render(&counters, &process) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(err) => error(500, err),
    }
}

/// The body of `PUT /api/v1/tls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateBody {
    /// PEM, the end-entity certificate first, then any intermediates.
    certificate: String,
    /// PEM, PKCS#8, PKCS#1 or SEC1.
    key: String,
}

/// `PUT /api/v1/tls`: the operator's certificate and key, checked and served from the next
/// connection on; a refused pair changes nothing.
async fn install_certificate(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(store) = shared.certificates.clone() else {
        return error(
            409,
            "this API serves plain HTTP on loopback (api.tls = false)",
        );
    };
    let body = match receive(&shared, &headers, body, MAX_CERTIFICATE_BYTES).await {
        Ok(upload) => upload.read().await,
        Err(refusal) => return refusal,
    };
    let pair = match body.map(|bytes| serde_json::from_slice::<CertificateBody>(&bytes)) {
        Ok(Ok(pair)) => pair,
        Ok(Err(err)) => {
            return error(
                400,
                format!("expected {{\"certificate\": PEM, \"key\": PEM}}: {err}"),
            )
        }
        Err(err) => return error(500, err),
    };
    let installed = tokio::task::spawn_blocking(move || {
        store.install(pair.certificate.as_bytes(), pair.key.as_bytes())
    })
    .await;
    match installed {
        Ok(Ok(fingerprint)) => {
            tracing::info!(
                "management API: new certificate installed, SHA-256 fingerprint {fingerprint}"
            );
            json(
                200,
                serde_json::json!({ "fingerprint_sha256": fingerprint }),
            )
        }
        Ok(Err(err)) => {
            tracing::warn!("management API: certificate refused: {err}");
            let status = match err {
                TlsError::Io { .. } | TlsError::Generate(_) => 500,
                _ => 422,
            };
            error(status, err)
        }
        Err(err) => error(500, err),
    }
}

/// Verifies and installs a core update into the slot not booted, then asks vigil-init to
/// reboot (a moment later, so this answer gets out first).
async fn apply_image(State(shared): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let upload = match receive(&shared, &headers, body, MAX_UPDATE_BYTES).await {
        Ok(upload) => upload,
        Err(refusal) => return refusal,
    };
    let body = match upload.read().await {
        Ok(body) => body,
        Err(err) => return error(500, err),
    };
    drop(upload);
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
        Ok(Err((status, message))) => {
            tracing::warn!("core update refused: {message}");
            error(status, message)
        }
        Err(err) => error(500, err),
    }
}
