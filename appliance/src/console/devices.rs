//! The devices: the device table, and a device's page with its identity, breaches, actions,
//! learned services and its breaches over time as an inline SVG chart.

use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;
use axum::Extension;
use maud::{html, Markup};

use super::alerts::{self, query_value, Alert, Filter};
use super::session::SignedIn;
use super::{actions, ask_for, layout, live_page, render, root_of, Shared};
use crate::api::Request as ToPipeline;
use crate::devices::Device;

/// Columns of the activity chart.
const CHART_BUCKETS: usize = 48;
const CHART_WIDTH: usize = 720;
const CHART_HEIGHT: usize = 120;

/// `GET /console/devices`.
pub async fn list(
    State(console): State<Shared>,
    Extension(user): Extension<SignedIn>,
    uri: Uri,
) -> Response {
    let root = root_of(uri.path());
    let made = async {
        let devices: Vec<Device> = ask_for(&console, ToPipeline::ListDevices, "devices").await?;
        let live = html! {
            table #devices {
                thead { tr { th { "Device" } th { "Addresses" } th { "MACs" } th { "Host names" } th { "First seen" } th { "Last seen" } } }
                tbody {
                    @for device in &devices {
                        tr.device {
                            td { "#" (device.id) }
                            td { @for address in &device.addresses {
                                a.address href={ (root) "devices/" (query_value(&address.value.to_string())) } { (address.value) } " "
                            } }
                            td { @for mac in &device.macs { span.mac { (mac.value) } " " } }
                            td { (layout::host_names(device)) }
                            td { (layout::packet_time(device.first_seen)) }
                            td { (layout::packet_time(device.last_seen)) }
                        }
                    }
                }
            }
        };
        Ok(live_page(&uri, &root, &user, "Devices", live))
    };
    render(&root, &user, made.await)
}

/// `GET /console/devices/{address}`.
pub async fn show(
    State(console): State<Shared>,
    Path(address): Path<IpAddr>,
    Extension(user): Extension<SignedIn>,
    uri: Uri,
) -> Response {
    let root = root_of(uri.path());
    let made = async {
        let device: Device = ask_for(&console, ToPipeline::Device(address), "device").await?;
        let mut actions = actions::all(&console).await?;
        actions.retain(|action| action.device == address);
        let filter = Filter {
            device: Some(address.to_string()),
            ..Filter::default()
        };
        let breaches = alerts::read(console.context.data_dir.clone(), filter).await?;
        let back = format!("devices/{}", query_value(&address.to_string()));
        let live = html! {
            h2 { "Identity" }
            (layout::identity(&device))
            h2 { "Breaches over time" }
            (chart(&breaches))
            h2 { "Actions" }
            (actions::table(&root, &user, &actions, &back))
            h2 { "Learned services" }
            @if device.services.is_empty() {
                p { "None learned yet." }
            } @else {
                table.services {
                    thead { tr { th { "Peer" } th { "Port" } th { "First" } th { "Last" } } }
                    tbody { @for service in &device.services {
                        tr { td { (service.value.0) } td { (service.value.1) }
                            td { (layout::packet_time(service.first)) } td { (layout::packet_time(service.last)) } }
                    } }
                }
            }
            h2 { "Breaches" }
            table.breaches {
                thead { tr { th { "Time" } th { "Model" } th { "Score" } } }
                tbody { @for breach in breaches.iter().rev() {
                    tr.breach { td { (breach.time) }
                        td { a.model href={ (root) "alerts?model=" (query_value(&breach.model)) } { (breach.model) } }
                        td { (breach.score) } }
                } }
            }
        };
        Ok(live_page(
            &uri,
            &root,
            &user,
            &format!("Device {address}"),
            live,
        ))
    };
    render(&root, &user, made.await)
}

/// The breaches per stretch of time from the first to the last, as bars, with a marker at each
/// stretch that has any.
fn chart(breaches: &[Alert]) -> Markup {
    let (Some(first), Some(last)) = (breaches.first(), breaches.last()) else {
        return html! { p { "No breach." } };
    };
    let seconds = Alert::seconds;
    let (start, end) = (seconds(first).unwrap_or(0), seconds(last).unwrap_or(0));
    let span = end.saturating_sub(start).max(1);
    let mut counts = [0usize; CHART_BUCKETS];
    for breach in breaches {
        let at = seconds(breach).unwrap_or(start).saturating_sub(start);
        let bucket =
            usize::try_from(at.saturating_mul(CHART_BUCKETS as u64 - 1) / span).unwrap_or(0);
        counts[bucket.min(CHART_BUCKETS - 1)] += 1;
    }
    let most = counts.iter().copied().max().unwrap_or(1).max(1);
    let step = CHART_WIDTH / CHART_BUCKETS;
    let plot = CHART_HEIGHT - 12;
    html! {
        svg.activity width=(CHART_WIDTH) height=(CHART_HEIGHT) viewBox={ "0 0 " (CHART_WIDTH) " " (CHART_HEIGHT) } role="img" {
            title { (breaches.len()) " breaches from " (first.time) " to " (last.time) }
            @for (n, &count) in counts.iter().enumerate() {
                @if count > 0 {
                    @let height = (count * plot / most).max(2);
                    rect.bar x=(n * step) y=(CHART_HEIGHT - height) width=(step - 2) height=(height) fill="#c0392b" {}
                    circle.breach-marker cx=(n * step + step / 2) cy="5" r="4" fill="#1d232b" {}
                }
            }
        }
        p { small { (first.time) " — " (last.time) } }
    }
}
