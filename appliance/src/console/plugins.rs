//! The plugins running now: version, kind, what each handled and raised, traps, quarantine, and
//! the size of its learned state on the data dir.

use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use axum::Extension;
use maud::html;
use serde::Deserialize;

use super::session::SignedIn;
use super::{ask_pipeline, decode, html, layout, render, root_of, wants_part, Shared};
use crate::api::Request as ToPipeline;

/// A plugin as `GET /api/v1/plugins` lists it.
#[derive(Deserialize)]
struct Plugin {
    name: String,
    version: String,
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
        let body = ask_pipeline(&console, ToPipeline::ListPlugins).await?;
        let plugins: Vec<Plugin> = decode("plugins", body)?;
        let state_dir = console.context.data_dir.join("state");
        let live = html! {
            table #plugins {
                thead { tr { th { "Plugin" } th { "Version" } th { "Kind" } th { "Events" } th { "Breaches" } th { "Traps" } th { "Quarantined" } th { "Learned state" } } }
                tbody {
                    @for plugin in &plugins {
                        tr.plugin {
                            td { (plugin.name) }
                            td { (plugin.version) }
                            td { (plugin.kind) }
                            td { (plugin.events) }
                            td { (plugin.breaches) }
                            td { (plugin.traps) }
                            td.quarantine { @if plugin.quarantined { "quarantined" } @else { "no" } }
                            td { @match std::fs::metadata(state_dir.join(format!("{}.bin", plugin.name))) {
                                Ok(meta) => { (meta.len()) " bytes" },
                                Err(_) => "none saved",
                            } }
                        }
                    }
                }
            }
        };
        Ok(if wants_part(&uri) {
            html(live)
        } else {
            html(layout::page(
                &root,
                Some(&user),
                "Plugins",
                layout::live(live),
            ))
        })
    };
    render(&root, &user, made.await)
}
