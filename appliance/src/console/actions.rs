//! The actions: pending, in force, cleared and expired, each with its audit trail, and the
//! operator's confirm, clear and extend forms. A decision goes to the capture loop as the API's
//! `POST /api/v1/actions/{id}/confirm|clear` does, so a confirmation resets connections at once.

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use maud::{html, Markup};

use super::session::SignedIn;
use super::{
    ask_for, ask_pipeline, layout, live_page, render, root_of, Console, Form, Problem, Shared,
};
use crate::api::{Request as ToPipeline, Role};
use crate::respond::{state_name, Action, Decision, Status};

/// The longest reason an operator may give, in the audit trail.
const MAX_REASON: usize = 500;
/// States in the order the page shows them.
const STATES: &[(&str, &str)] = &[
    ("pending", "Pending"),
    ("active", "In force"),
    ("cleared", "Cleared"),
    ("expired", "Expired"),
];

/// Every action, newest first.
pub async fn all(console: &Console) -> Result<Vec<Action>, Problem> {
    let mut actions: Vec<Action> = ask_for(console, ToPipeline::ListActions, "actions").await?;
    actions.sort_by_key(|action| std::cmp::Reverse(action.id));
    Ok(actions)
}

/// `GET /console/actions`.
pub async fn list(
    State(console): State<Shared>,
    Extension(user): Extension<SignedIn>,
    uri: Uri,
) -> Response {
    let root = root_of(uri.path());
    let made = async {
        let actions = all(&console).await?;
        let live = html! {
            @for (state, title) in STATES {
                section.actions id=(state) {
                    h2 { (title) }
                    (table(&root, &user, &actions.iter().filter(|a| state_name(&a.status) == *state).cloned().collect::<Vec<_>>(), "actions"))
                }
            }
        };
        Ok(live_page(&uri, &root, &user, "Actions", live))
    };
    render(&root, &user, made.await)
}

/// The actions in `actions` with their audit trails and, for an operator, the forms that decide
/// them; a decision returns to `back` (a path under the console).
pub fn table(root: &str, user: &SignedIn, actions: &[Action], back: &str) -> Markup {
    html! {
        @if actions.is_empty() {
            p { "None." }
        } @else {
            table.action-list {
                thead { tr { th { "Action" } th { "Response" } th { "Device" } th { "State" } th { "Why" } th { "Audit trail" } } }
                tbody {
                    @for action in actions {
                        tr.action id={ "action-" (action.id) } {
                            td { "#" (action.id)
                                @if let Some(incident) = action.incident {
                                    br; a href={ (root) "incidents/" (incident) } { "incident #" (incident) }
                                }
                            }
                            td { (format!("{:?}", action.response)) }
                            td { (action.device) }
                            td { span.action-state { (state_name(&action.status)) } br; small { (state_detail(&action.status)) } }
                            td { (action.reason) br; small { "requested by " (action.requested_by) " at " (layout::time(action.requested_at)) } }
                            td {
                                ol.audit {
                                    @for entry in &action.audit {
                                        li { (layout::time(entry.at)) " " strong { (entry.who) } ": " (entry.what)
                                            @if let Some(reason) = &entry.reason { " — " em { (reason) } } }
                                    }
                                }
                                @if user.role == Role::Operator {
                                    (forms(root, user, action, back))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn forms(root: &str, user: &SignedIn, action: &Action, back: &str) -> Markup {
    let decisions: &[Decision] = match action.status {
        Status::Pending => &[Decision::Confirm, Decision::Clear],
        Status::Active { .. } => &[Decision::Extend, Decision::Clear],
        Status::Cleared { .. } | Status::Expired { .. } => &[],
    };
    html! {
        @for decision in decisions {
            form class=(decision.name()) method="post" action={ (root) "actions/" (action.id) "/" (decision.name()) } {
                input type="hidden" name="csrf" value=(user.csrf);
                input type="hidden" name="back" value=(back);
                input type="text" name="reason" placeholder="reason" maxlength=(MAX_REASON) required;
                button type="submit" { (decision.name()) }
            }
        }
    }
}

fn state_detail(status: &Status) -> String {
    match status {
        Status::Pending => "waiting for an operator".into(),
        Status::Active { since, until } => {
            format!(
                "since {} until {}",
                layout::time(*since),
                layout::time(*until)
            )
        }
        Status::Cleared { at } => format!("at {}", layout::time(*at)),
        Status::Expired { at } => format!("at {}", layout::time(*at)),
    }
}

/// `POST /console/actions/{id}/confirm|clear|extend` with `reason` (and `back`, where to return).
pub async fn decide(
    State(console): State<Shared>,
    Path((id, decision)): Path<(u64, String)>,
    Extension(user): Extension<SignedIn>,
    Extension(form): Extension<Form>,
    uri: Uri,
) -> Response {
    let root = root_of(uri.path());
    let made = async {
        let decision = Decision::parse(&decision).ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "No such decision: confirm, clear or extend.",
            )
        })?;
        let reason = form.get("reason").unwrap_or_default().trim();
        if reason.is_empty() || reason.len() > MAX_REASON || reason.chars().any(char::is_control) {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                format!("Give a reason of 1 to {MAX_REASON} printable bytes."),
            ));
        }
        let request = ToPipeline::Decide {
            id,
            decision,
            by: user.name.clone(),
            reason: Some(reason.to_string()),
        };
        ask_pipeline(&console, request).await?;
        let back = form
            .get("back")
            .filter(|back| is_console_page(back))
            .unwrap_or("actions");
        Ok(Redirect::to(&format!("{root}{back}")).into_response())
    };
    render(&root, &user, made.await)
}

/// Only `actions` and `incidents/ID`, so a form cannot send the browser anywhere else.
fn is_console_page(path: &str) -> bool {
    path == "actions"
        || path
            .strip_prefix("incidents/")
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}
