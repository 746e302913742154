//! The management API of a running appliance (HTTP/1, axum on its own small tokio runtime):
//!
//! | method and path | what |
//! |---|---|
//! | `GET /api/v1/plugins` | the running plugins as JSON |
//! | `POST /api/v1/plugins` | body: a signed bundle; installed live, between batches |
//!
//! Every request needs `Authorization: Bearer TOKEN` with the token from the config file; there
//! is no API without one. Requests reach the capture loop through [`Control`], which the
//! pipeline polls between packets, so the API never touches plugins from another thread and the
//! signature check is exactly the one `vigil plugins install` makes.

use std::net::SocketAddr;
use std::sync::mpsc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

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

/// What the API asks of the capture loop.
pub enum Request {
    Install(Vec<u8>),
    ListPlugins,
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

#[derive(Clone)]
struct Shared {
    token: String,
    to_pipeline: mpsc::SyncSender<Control>,
}

/// Starts the API on a thread of its own; returns the receiving end the pipeline polls.
pub fn start(
    config: &ApiConfig,
    max_bundle_bytes: u64,
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
    let shared = Shared { token, to_pipeline };
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

async fn ask(shared: &Shared, headers: &HeaderMap, request: Request) -> Response {
    if !authorised(headers, shared) {
        tracing::warn!("management API: request without a valid bearer token refused");
        return json(
            401,
            serde_json::json!({"error": "a valid bearer token is required"}),
        );
    }
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

    #[test]
    fn no_api_without_a_long_enough_token() {
        let listen = Some("127.0.0.1:0".parse().expect("address"));
        for token in [None, Some("short".to_string())] {
            let err = start(&ApiConfig { listen, token }, 1024).expect_err("refused");
            assert!(err.to_string().contains("api.token"), "{err}");
        }
        assert!(start(&ApiConfig::default(), 1024)
            .expect("no API")
            .is_none());
    }
}
