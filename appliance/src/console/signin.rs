//! The sign-in page, signing in and signing out.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};

use super::session::{removed_cookie_header, session_cookie_header, SignInError, SIGN_IN_WINDOW};
use super::{html, layout, source, Form, Shared};

/// `GET /console/signin`.
pub async fn form() -> Response {
    html(page(None))
}

fn page(problem: Option<&str>) -> Markup {
    let body = html! {
        @if let Some(problem) = problem { p.problem { (problem) } }
        form.signin #signin method="post" action="signin" {
            label for="signin-token" { "Token" }
            input #signin-token type="password" name="token" autocomplete="current-password" required autofocus;
            button #signin-submit type="submit" { "Sign in" }
        }
    };
    layout::page("./", None, "Sign in", body)
}

/// `POST /console/signin` with the form field `token`.
pub async fn sign_in(State(console): State<Shared>, request: Request) -> Response {
    let source = source(&request);
    let body: Bytes = match axum::body::to_bytes(request.into_body(), super::MAX_FORM_BYTES).await {
        Ok(body) => body,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let form = Form::parse(&body);
    let token = form.get("token").unwrap_or_default();
    match console.sessions.sign_in(source, token, Instant::now()) {
        Ok(id) => {
            let mut answer = Redirect::to("incidents").into_response();
            set_cookie(
                &mut answer,
                &session_cookie_header(&id, console.sessions.lifetime()),
            );
            answer
        }
        Err(err @ SignInError::TooManyFailures) => {
            let mut answer = (
                StatusCode::TOO_MANY_REQUESTS,
                html(page(Some(&err.to_string()))),
            )
                .into_response();
            answer.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(SIGN_IN_WINDOW.as_secs()),
            );
            answer
        }
        Err(err @ SignInError::WrongToken) => {
            tracing::warn!("console: failed sign-in from {source}");
            (StatusCode::UNAUTHORIZED, html(page(Some(&err.to_string())))).into_response()
        }
        Err(err @ SignInError::Random(_)) => {
            tracing::error!("console: {err}");
            (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response()
        }
    }
}

/// `POST /console/signout`: the session ends here and in the browser.
pub async fn sign_out(State(console): State<Shared>, headers: HeaderMap) -> Response {
    console.sessions.sign_out(&headers);
    let mut answer = Redirect::to("signin").into_response();
    set_cookie(&mut answer, &removed_cookie_header());
    answer
}

fn set_cookie(answer: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        answer.headers_mut().insert(header::SET_COOKIE, value);
    }
}
