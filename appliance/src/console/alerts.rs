//! The alerts: the newest of eve.json (read from its end, as `GET /api/v1/alerts` does), grouped
//! by model and device with counts and first and last time, filtered by model, device and time.

use std::collections::BTreeMap;
use std::path::PathBuf;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::Extension;
use maud::{html, Markup};

use super::session::SignedIn;
use super::{ask_for, html, layout, render, root_of, wants_part, Problem, Shared};
use crate::api::{alerts, IncidentHeader, Request as ToPipeline};

/// Alerts the page reads at most, newest first: what it shows is their groups.
pub const NEWEST: usize = 10_000;

/// What the page is asked to show (`?model=&device=&from=&to=`; times are UTC ISO 8601
/// prefixes, e.g. `2026-11-28T04`, compared as eve.json writes them).
#[derive(Debug, Default)]
pub struct Filter {
    pub model: Option<String>,
    pub device: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

impl Filter {
    pub fn of(uri: &Uri) -> Filter {
        let mut filter = Filter::default();
        let query = uri.query().unwrap_or_default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let value = Some(value.into_owned()).filter(|value| !value.is_empty());
            match name.as_ref() {
                "model" => filter.model = value,
                "device" => filter.device = value,
                "from" => filter.from = value,
                "to" => filter.to = value,
                _ => {}
            }
        }
        filter
    }

    fn admits(&self, alert: &Alert) -> bool {
        self.model
            .as_ref()
            .is_none_or(|model| *model == alert.model)
            && self
                .device
                .as_ref()
                .is_none_or(|device| *device == alert.device)
            && self.from.as_ref().is_none_or(|from| alert.time >= *from)
            && self
                .to
                .as_ref()
                .is_none_or(|to| alert.time.get(..to.len()).is_some_and(|t| t <= to.as_str()))
    }
}

/// The fields of an eve.json alert the console shows.
pub struct Alert {
    pub time: String,
    pub model: String,
    pub device: String,
    pub score: u64,
}

impl Alert {
    /// Its time in unix seconds (eve.json's `2026-11-28T04:42:33.304350+0000`, UTC).
    pub fn seconds(&self) -> Option<u64> {
        let (date, time) = self.time.split_once('T')?;
        let day = crate::bundle::text::parse_date(date)?;
        let field = |range: std::ops::Range<usize>| time.get(range)?.parse::<u64>().ok();
        Some(day + field(0..2)? * 3600 + field(3..5)? * 60 + field(6..8)?)
    }

    /// `None` for a record that lacks them (written by something else): skipped.
    fn of(record: &serde_json::Value) -> Option<Alert> {
        Some(Alert {
            time: record["timestamp"].as_str()?.to_string(),
            model: record["alert"]["signature"].as_str()?.to_string(),
            device: record["src_ip"].as_str()?.to_string(),
            score: record["vigil"]["score"].as_u64().unwrap_or_default(),
        })
    }
}

/// One model's alerts on one device.
struct Group {
    count: usize,
    first: String,
    last: String,
    top_score: u64,
}

/// The newest [`NEWEST`] alerts of the data dir that `filter` admits, oldest first.
pub async fn read(data_dir: PathBuf, filter: Filter) -> Result<Vec<Alert>, Problem> {
    let path = crate::store::eve::eve_path(&data_dir);
    let shown = path.display().to_string();
    let read = tokio::task::spawn_blocking(move || alerts::newest(&path, NEWEST)).await;
    match read {
        Ok(Ok(records)) => Ok(records
            .iter()
            .filter_map(Alert::of)
            .filter(|alert| filter.admits(alert))
            .collect()),
        Ok(Err(err)) => Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{shown}: {err}"),
        )),
        Err(err) => Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            err.to_string(),
        )),
    }
}

/// `GET /console/alerts`.
pub async fn list(
    State(console): State<Shared>,
    Extension(user): Extension<SignedIn>,
    uri: Uri,
) -> Response {
    let root = root_of(uri.path());
    let made = async {
        let filter = Filter::of(&uri);
        let form = filter_form(&filter);
        let alerts = read(console.context.data_dir.clone(), filter).await?;
        let incidents: Vec<IncidentHeader> =
            ask_for(&console, ToPipeline::ListIncidents, "incidents").await?;
        let live = groups(&root, &alerts, &incidents);
        Ok(if wants_part(&uri) {
            html(live)
        } else {
            let body = html! { (form) (layout::live(live)) };
            html(layout::page(&root, Some(&user), "Alerts", body))
        })
    };
    render(&root, &user, made.await)
}

fn filter_form(filter: &Filter) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    html! {
        form.filter #alert-filter method="get" action="alerts" {
            input type="text" name="model" placeholder="model" value=(value(&filter.model));
            input type="text" name="device" placeholder="device address" value=(value(&filter.device));
            input type="text" name="from" placeholder="from (UTC, e.g. 2026-11-28T04)" value=(value(&filter.from));
            input type="text" name="to" placeholder="to" value=(value(&filter.to));
            button type="submit" { "Filter" }
        }
    }
}

fn groups(root: &str, alerts: &[Alert], incidents: &[IncidentHeader]) -> Markup {
    let mut groups: BTreeMap<(&str, &str), Group> = BTreeMap::new();
    for alert in alerts {
        let group = groups
            .entry((alert.model.as_str(), alert.device.as_str()))
            .or_insert_with(|| Group {
                count: 0,
                first: alert.time.clone(),
                last: alert.time.clone(),
                top_score: 0,
            });
        group.count += 1;
        group.last.clone_from(&alert.time);
        group.top_score = group.top_score.max(alert.score);
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1.last.cmp(&a.1.last));
    html! {
        p { (alerts.len()) " alerts in " (groups.len()) " groups (of the newest " (NEWEST) ")." }
        table #alerts {
            thead { tr { th { "Model" } th { "Device" } th { "Alerts" } th { "Top score" } th { "First" } th { "Last" } th { "Incidents" } } }
            tbody {
                @for ((model, device), group) in &groups {
                    tr.alert-group {
                        td { a.model href={ (root) "alerts?model=" (query_value(model)) } { (model) } }
                        td { a.device href={ (root) "devices/" (query_value(device)) } { (device) } }
                        td { (group.count) }
                        td { (group.top_score) }
                        td { (group.first) }
                        td { (group.last) }
                        td {
                            @for incident in incidents.iter().filter(|i| i.device.to_string() == *device) {
                                a.incident href={ (root) "incidents/" (incident.id) } { "#" (incident.id) } " "
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `value` percent-encoded for a query string or a path segment.
pub fn query_value(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
