//! The incidents: a list by score and recency, and an incident's page with its summary, phases
//! in kill-chain order, timeline with evidence, the device's identity and its actions.

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;
use axum::Extension;
use maud::{html, Markup};
use vigil_plugin_sdk::Incident;

use super::session::SignedIn;
use super::{actions, ask_for, layout, live_page, render, root_of, Shared};
use crate::api::{IncidentHeader, Request as ToPipeline};
use crate::devices::Device;
use crate::respond::Action;

/// `GET /console/incidents`.
pub async fn list(
    State(console): State<Shared>,
    Extension(user): Extension<SignedIn>,
    uri: Uri,
) -> Response {
    let root = root_of(uri.path());
    let made = async {
        let mut incidents: Vec<IncidentHeader> =
            ask_for(&console, ToPipeline::ListIncidents, "incidents").await?;
        incidents.sort_by(|a, b| b.score.cmp(&a.score).then(b.last.cmp(&a.last)));
        let table = table(&incidents);
        Ok(live_page(&uri, &root, &user, "Incidents", table))
    };
    render(&root, &user, made.await)
}

fn table(incidents: &[IncidentHeader]) -> Markup {
    html! {
        @if incidents.is_empty() {
            p { "No incident in this run yet." }
        } @else {
            table #incidents {
                thead { tr { th { "Incident" } th { "Score" } th { "Device" } th { "Phases" } th { "Breaches" } th { "First" } th { "Last" } } }
                tbody {
                    @for incident in incidents {
                        tr.incident {
                            td { a href={ "incidents/" (incident.id) } { "#" (incident.id) } }
                            td.score { (incident.score) }
                            td { (incident.device) }
                            td { (incident.phases.join(" → ")) }
                            td { (incident.breaches) }
                            td { (layout::packet_time(incident.first)) }
                            td { (layout::packet_time(incident.last)) }
                        }
                    }
                }
            }
        }
    }
}

/// What the capture loop answers for one incident.
#[derive(serde::Deserialize)]
struct Shown {
    incident: Incident,
    device: Option<Device>,
}

/// `GET /console/incidents/{id}`.
pub async fn show(
    State(console): State<Shared>,
    Path(id): Path<u64>,
    Extension(user): Extension<SignedIn>,
    uri: Uri,
) -> Response {
    let root = root_of(uri.path());
    let made = async {
        let shown: Shown = ask_for(&console, ToPipeline::Incident(id), "incident").await?;
        let device = shown.incident.device;
        let mut actions = actions::all(&console).await?;
        actions.retain(|action| action.incident == Some(id) || action.device == device);
        let live = incident_page(&root, &user, &shown, &actions);
        Ok(live_page(
            &uri,
            &root,
            &user,
            &format!("Incident #{id}"),
            live,
        ))
    };
    render(&root, &user, made.await)
}

fn incident_page(root: &str, user: &SignedIn, shown: &Shown, actions: &[Action]) -> Markup {
    let incident = &shown.incident;
    html! {
        p { "Device " strong.device { (incident.device) } ", score " span.score #score { (incident.score) }
            ", " (incident.breaches) " breaches from " (layout::packet_time(incident.first)) " to " (layout::packet_time(incident.last)) "." }
        div.summary #summary { (incident.summary) }
        h2 { "Phases" }
        ol.phases {
            @for phase in &incident.phases {
                li.phase {
                    strong { (phase.name) } " " span.tactic { (phase.tactic) }
                    @for technique in &phase.techniques { " " span.technique { (technique) } }
                    br; small { "from " (layout::packet_time(phase.first)) }
                }
            }
        }
        h2 { "Device" }
        @match &shown.device {
            Some(device) => (layout::identity(device)),
            None => p { "Not in the device table." },
        }
        h2 { "Actions" }
        (actions::table(root, user, actions, &format!("incidents/{}", incident.id)))
        h2 { "Timeline" }
        @if (incident.timeline.len() as u64) < u64::from(incident.breaches) {
            p { "The first and the latest " (incident.timeline.len()) " of " (incident.breaches) " breaches." }
        }
        @for entry in &incident.timeline {
            div.timeline-entry {
                div { span.time { (layout::packet_time(entry.ts)) } " " strong.model { (entry.model) }
                    " score " (entry.score) ", " span.entry-phase { (entry.phase) } }
                @if !entry.destinations.is_empty() {
                    div { "to " (join(&entry.destinations)) }
                }
                @if !entry.ports.is_empty() {
                    div { "ports " (join(&entry.ports)) }
                }
                dl.evidence {
                    @for evidence in &entry.evidence {
                        dt { (evidence.name) } dd { (evidence.value) }
                    }
                }
            }
        }
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
