//! The operator console: server-rendered pages under `/console/`, served by the management API's
//! server beside `/api/v1/`. Pages reach the capture loop through the same requests as the API
//! ([`crate::api::ask`]), so a confirmation here is exactly `POST /api/v1/actions/{id}/confirm`.
//!
//! Every console answer carries a strict Content-Security-Policy ([`layout`]); every page but
//! sign-in needs a session ([`session`]); every POST carries the session's CSRF token, and all
//! but sign-out need the `operator` role. Links are relative, so a reverse proxy may mount the
//! console anywhere.

mod actions;
mod alerts;
mod devices;
mod incidents;
mod layout;
mod plugins;
pub mod session;
mod signin;
mod system;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::api::{ask, Answer, ApiContext, Control, Peer, Request as ToPipeline, Role};
use session::{csrf_matches, Sessions, SignedIn};

/// Where the page's script puts the CSRF token of an upload (whose body is no form).
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The largest form the console takes (a reason, a CSRF token, a few ids).
const MAX_FORM_BYTES: usize = 16 * 1024;

/// What the console's pages need.
pub struct Console {
    pub sessions: Sessions,
    pub to_pipeline: mpsc::SyncSender<Control>,
    pub context: Arc<ApiContext>,
    /// When the API (and the console) started: the uptime shown.
    pub started: Instant,
}

type Shared = Arc<Console>;

/// The console's routes, each behind its session check, all with the security headers.
pub fn router(console: Console) -> Router {
    let console = Arc::new(console);
    let signed_in = Router::new()
        .route("/console/incidents", get(incidents::list))
        .route("/console/incidents/{id}", get(incidents::show))
        .route("/console/alerts", get(alerts::list))
        .route("/console/devices", get(devices::list))
        .route("/console/devices/{address}", get(devices::show))
        .route(
            "/console/plugins",
            get(plugins::list).post(plugins::install),
        )
        .route("/console/plugins/{name}/rollback", post(plugins::roll_back))
        .route("/console/system", get(system::show))
        .route("/console/actions", get(actions::list))
        .route("/console/actions/{id}/{decision}", post(actions::decide))
        .route("/console/signout", post(signin::sign_out))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&console),
            require_session,
        ));
    Router::new()
        .route("/console", get(|| async { Redirect::to("console/") }))
        .route("/console/", get(|| async { Redirect::to("incidents") }))
        .route("/console/signin", get(signin::form).post(signin::sign_in))
        .route("/console/static/{file}", get(layout::static_file))
        .merge(signed_in)
        .with_state(console)
        // Routes only: a path that is no page is left to the API's gate.
        .route_layer(middleware::from_fn(layout::secure_headers))
}

/// The way from `path` back to the console's top, relative: `./` for `/console/incidents`,
/// `../` for `/console/incidents/7`.
pub fn root_of(path: &str) -> String {
    let below = path.strip_prefix("/console/").unwrap_or_default();
    match below.matches('/').count() {
        0 => "./".into(),
        depth => "../".repeat(depth),
    }
}

/// A form's fields, as posted.
#[derive(Debug, Clone, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Form {
        Form(form_urlencoded::parse(body).into_owned().collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The address a request came from (unspecified for a router driven without the server).
fn source(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<Peer>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| peer.0.ip())
}

/// A page's answer: its live part alone when the page's script refreshes it, else the whole
/// page titled `title` around it.
fn live_page(uri: &Uri, root: &str, user: &SignedIn, title: &str, live: maud::Markup) -> Response {
    if wants_part(uri) {
        html(live)
    } else {
        html(layout::page(root, Some(user), title, layout::live(live)))
    }
}

/// True when the request asks only for a page's live part (the script's refresh).
fn wants_part(uri: &Uri) -> bool {
    uri.query().is_some_and(|query| {
        form_urlencoded::parse(query.as_bytes()).any(|(name, _)| name == "part")
    })
}

/// Lets a request through only with a live session: a page without one is sent to sign-in, a
/// refresh or a form gets `401`. A POST must carry the session's CSRF token (`403`), and all
/// but sign-out need the operator role (`403`).
async fn require_session(State(console): State<Shared>, request: Request, next: Next) -> Response {
    let root = root_of(request.uri().path());
    let Some(user) = console
        .sessions
        .signed_in(request.headers(), Instant::now())
    else {
        if request.method() == Method::GET && !wants_part(request.uri()) {
            return Redirect::to(&format!("{root}signin")).into_response();
        }
        return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
    };
    let mut request = request;
    if request.method() == Method::POST {
        if let Some(given) = request.headers().get(CSRF_HEADER) {
            // A script's upload: the token in a header, the body left for the handler to stream.
            if !csrf_matches(&user, given.to_str().ok()) {
                return stale_form(&root, &user);
            }
            if user.role != Role::Operator {
                return viewer_refused(&root, &user);
            }
            request.extensions_mut().insert(user);
            // No fields: a form handler reached this way finds what it needs missing (400).
            request.extensions_mut().insert(Form::default());
            return next.run(request).await;
        }
        let (parts, body) = request.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
            Ok(bytes) => bytes,
            Err(_) => {
                return layout::problem(
                    &root,
                    Some(&user),
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "The form is too large.",
                )
            }
        };
        let form = Form::parse(&bytes);
        if !csrf_matches(&user, form.get("csrf")) {
            return stale_form(&root, &user);
        }
        if user.role != Role::Operator && parts.uri.path() != "/console/signout" {
            return viewer_refused(&root, &user);
        }
        request = Request::from_parts(parts, Body::from(bytes));
        request.extensions_mut().insert(form);
    }
    request.extensions_mut().insert(user);
    next.run(request).await
}

/// Why a page could not be made: shown as a page of its own with `status`.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub message: String,
}

impl Problem {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Problem {
        Problem {
            status,
            message: message.into(),
        }
    }
}

/// The page a handler made, or the page saying why it could not.
fn render(root: &str, user: &SignedIn, made: Result<Response, Problem>) -> Response {
    made.unwrap_or_else(|problem| {
        layout::problem(root, Some(user), problem.status, &problem.message)
    })
}

fn stale_form(root: &str, user: &SignedIn) -> Response {
    tracing::warn!(
        "console: a form from {} without its session's CSRF token refused",
        user.name
    );
    layout::problem(
        root,
        Some(user),
        StatusCode::FORBIDDEN,
        "This form is stale or did not come from the console: reload the page.",
    )
}

fn viewer_refused(root: &str, user: &SignedIn) -> Response {
    layout::problem(
        root,
        Some(user),
        StatusCode::FORBIDDEN,
        "Only an operator may change anything; you are signed in as a viewer.",
    )
}

/// Asks the capture loop; no answer or a refusal is a [`Problem`] saying so.
async fn ask_pipeline(
    console: &Console,
    request: ToPipeline,
) -> Result<serde_json::Value, Problem> {
    match ask(&console.to_pipeline, request).await {
        Ok(Answer { status: 200, body }) => Ok(body),
        Ok(Answer { status, body }) => Err(Problem::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body["error"].as_str().unwrap_or("refused"),
        )),
        Err(unanswered) => Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            unanswered.to_string(),
        )),
    }
}

/// Asks the capture loop for `request` and reads its answer as `T` (`what` names it in errors).
async fn ask_for<T: serde::de::DeserializeOwned>(
    console: &Console,
    request: ToPipeline,
    what: &str,
) -> Result<T, Problem> {
    let body = ask_pipeline(console, request).await?;
    serde_json::from_value(body).map_err(|err| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the capture loop's {what}: {err}"),
        )
    })
}

/// Markup as an HTML answer: a whole page, or a live part alone.
fn html(markup: maud::Markup) -> Response {
    Html(markup.into_string()).into_response()
}
