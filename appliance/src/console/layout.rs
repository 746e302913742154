//! The frame every console page shares (navigation, who is signed in, sign-out), the security
//! headers every console answer carries, and the stylesheet and script compiled into the binary.

use axum::extract::{Path, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use vigil_plugin_sdk::Timestamp;

use super::session::SignedIn;
use crate::devices::Device;

/// Scripts and styles only from the console itself, no inline code, no framing, forms posting
/// only back to it: an injected tag can neither run nor send anything anywhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

const STYLESHEET: &str = include_str!("static/console.css");
const SCRIPT: &str = include_str!("static/console.js");

/// The console's sections, in the navigation's order: (path under the console, title).
const SECTIONS: &[(&str, &str)] = &[
    ("incidents", "Incidents"),
    ("alerts", "Alerts"),
    ("devices", "Devices"),
    ("actions", "Actions"),
    ("plugins", "Plugins"),
    ("system", "System"),
];

/// Adds the security headers to every console answer.
pub async fn secure_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// `GET /console/static/{file}`.
pub async fn static_file(Path(file): Path<String>) -> Response {
    let (content_type, body) = match file.as_str() {
        "console.css" => ("text/css; charset=utf-8", STYLESHEET),
        "console.js" => ("text/javascript; charset=utf-8", SCRIPT),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A whole page: `root` is the relative way back to the console's top (`./` or `../`...), so
/// every link works wherever a reverse proxy mounts the console.
pub fn page(root: &str, user: Option<&SignedIn>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Vigil" }
                link rel="stylesheet" href={ (root) "static/console.css" };
                script src={ (root) "static/console.js" } defer {}
            }
            body {
                header {
                    span.brand { "Vigil" }
                    @if let Some(user) = user {
                        nav {
                            @for (path, name) in SECTIONS {
                                a href={ (root) (path) } { (name) }
                            }
                        }
                        span.user { (user.name) " (" (role_name(user)) ")" }
                        form.signout method="post" action={ (root) "signout" } {
                            input type="hidden" name="csrf" value=(user.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A region of a page that the script refreshes every few seconds from `?part=live`, so the
/// page follows the appliance without reloading.
pub fn live(body: Markup) -> Markup {
    html! { div #live data-refresh="?part=live" { (body) } }
}

fn role_name(user: &SignedIn) -> &'static str {
    match user.role {
        crate::api::Role::Viewer => "viewer",
        crate::api::Role::Operator => "operator",
    }
}

/// A page that only says what went wrong, with `status`.
pub fn problem(root: &str, user: Option<&SignedIn>, status: StatusCode, message: &str) -> Response {
    let body = html! { p.problem { (message) } };
    (
        status,
        Html(page(root, user, "Not possible", body).into_string()),
    )
        .into_response()
}

/// A device's addresses, MACs and host names, each name with the protocol that revealed it.
pub fn identity(device: &Device) -> Markup {
    html! {
        table.identity {
            tr { th { "Addresses" } td { @for address in &device.addresses { span.address { (address.value) } " " } } }
            tr { th { "MACs" } td { @for mac in &device.macs { span.mac { (mac.value) } " " } } }
            tr { th { "Host names" } td { (host_names(device)) } }
            tr { th { "Seen" } td { (packet_time(device.first_seen)) " to " (packet_time(device.last_seen)) } }
        }
    }
}

pub fn host_names(device: &Device) -> Markup {
    html! {
        @for name in &device.host_names {
            span.host-name { (name.name) " (" (format!("{:?}", name.source).to_lowercase()) ")" } " "
        }
    }
}

/// Packet time as a UTC date and time.
pub fn packet_time(ts: Timestamp) -> String {
    time(ts.secs())
}

/// Unix seconds as a UTC date and time.
pub fn time(unix: u64) -> String {
    crate::bundle::text::format_time(unix)
}
