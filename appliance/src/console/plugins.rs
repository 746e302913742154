//! The plugins running now: version, signer, kind, what each handled and raised, traps, quarantine, and
//! the size of its learned state on the data dir; an operator rolls one back, or installs a
//! signed bundle by upload (the capture loop's install, as `vigil push` does).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use maud::html;
use serde::Deserialize;

use super::alerts::query_value;
use super::session::SignedIn;
use super::{ask_for, ask_pipeline, html, layout, render, root_of, wants_part, Problem, Shared};
use crate::api::upload::{self, UploadError};
use crate::api::{Request as ToPipeline, Role};

/// A plugin as `GET /api/v1/plugins` lists it.
#[derive(Deserialize)]
struct Plugin {
    name: String,
    version: String,
    /// `None`: an unsigned development module.
    signer: Option<String>,
    kind: String,
    events: u64,
    breaches: u64,
    traps: u64,
    quarantined: bool,
}

/// `GET /console/plugins`.
pub async fn list(
    State(console): State<Shared>,
    Extension(user): Extension<SignedIn>,
    uri: Uri,
) -> Response {
    let root = root_of(uri.path());
    let made = async {
        let plugins: Vec<Plugin> = ask_for(&console, ToPipeline::ListPlugins, "plugins").await?;
        let state_dir = console.context.data_dir.join("state");
        let live = html! {
            table #plugins {
                thead { tr { th { "Plugin" } th { "Version" } th { "Signed by" } th { "Kind" } th { "Events" } th { "Breaches" } th { "Traps" } th { "Quarantined" } th { "Learned state" } } }
                tbody {
                    @for plugin in &plugins {
                        tr.plugin {
                            td { (plugin.name) }
                            td { (plugin.version) }
                            td.signer { @match &plugin.signer {
                                Some(signer) => (signer),
                                None => em { "unsigned (development)" },
                            } }
                            td { (plugin.kind) }
                            td { (plugin.events) }
                            td { (plugin.breaches) }
                            td { (plugin.traps) }
                            td.quarantine { @if plugin.quarantined { "quarantined" } @else { "no" } }
                            td { @match std::fs::metadata(state_dir.join(format!("{}.bin", plugin.name))) {
                                Ok(meta) => { (meta.len()) " bytes" },
                                Err(_) => "none saved",
                            } }
                            @if user.role == Role::Operator {
                                td { form.rollback method="post" action={ "plugins/" (query_value(&plugin.name)) "/rollback" } {
                                    input type="hidden" name="csrf" value=(user.csrf);
                                    button type="submit" { "roll back" }
                                } }
                            }
                        }
                    }
                }
            }
        };
        Ok(if wants_part(&uri) {
            html(live)
        } else {
            let body = html! {
                (layout::live(live))
                @if user.role == Role::Operator {
                    h2 { "Install a signed bundle" }
                    form #install method="post" action="plugins" data-csrf=(user.csrf) {
                        input #install-bundle type="file" name="bundle" accept=".vbundle" required;
                        button type="submit" { "Install" }
                    }
                    div #install-result {}
                }
            };
            html(layout::page(&root, Some(&user), "Plugins", body))
        })
    };
    render(&root, &user, made.await)
}

/// `POST /console/plugins`: the body is a signed bundle (sent by the page's script, the CSRF
/// token in a header), streamed to the data dir within `[bundles] max_bytes` and installed by
/// the capture loop, verified exactly as a push is. Answers a fragment saying what happened.
pub async fn install(
    State(console): State<Shared>,
    Extension(user): Extension<SignedIn>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let context = &console.context;
    let received = upload::receive(&headers, body, &context.data_dir, context.max_bundle_bytes);
    let outcome = async {
        let upload = received.await.map_err(|err| {
            let status = match err {
                UploadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                UploadError::Body(_) => StatusCode::BAD_REQUEST,
                UploadError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Problem::new(status, err.to_string())
        })?;
        let bytes = upload
            .read()
            .await
            .map_err(|err| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?;
        ask_pipeline(&console, ToPipeline::Install(bytes)).await
    };
    match outcome.await {
        Ok(body) => {
            let installed = body["installed"]
                .as_str()
                .unwrap_or("installed")
                .to_string();
            tracing::info!("console: {} installed {installed}", user.name);
            html(html! { p.installed { (installed) } })
        }
        Err(problem) => (
            problem.status,
            html(html! { p.problem { "Refused: " (problem.message) } }),
        )
            .into_response(),
    }
}

/// `POST /console/plugins/{name}/rollback`.
pub async fn roll_back(
    State(console): State<Shared>,
    Path(name): Path<String>,
    Extension(user): Extension<SignedIn>,
    uri: Uri,
) -> Response {
    let root = root_of(uri.path());
    let made = async {
        ask_pipeline(&console, ToPipeline::RollBack(name.clone())).await?;
        tracing::warn!("console: {} rolled {name} back", user.name);
        Ok(Redirect::to(&format!("{root}plugins")).into_response())
    };
    render(&root, &user, made.await)
}
