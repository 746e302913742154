//! The appliance itself: capture per queue (packets, kernel drops, drop ratio), flows, events,
//! uptime, the image slot and version, and the data partition's disk use.

use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use axum::Extension;
use maud::html;

use super::session::SignedIn;
use super::{ask_for, live_page, render, root_of, Shared};
use crate::api::Request as ToPipeline;
use crate::counters::Counters;

/// `GET /console/system`.
pub async fn show(
    State(console): State<Shared>,
    Extension(user): Extension<SignedIn>,
    uri: Uri,
) -> Response {
    let root = root_of(uri.path());
    let made = async {
        let counters: Counters = ask_for(&console, ToPipeline::Counters, "counters").await?;
        let uptime = console.started.elapsed().as_secs();
        let system = crate::image::status::read(&console.context.system);
        let space = crate::store::lines::space(&console.context.data_dir);
        let live = html! {
            h2 { "Capture" }
            table #queues {
                thead { tr { th { "Interface" } th { "Queue" } th { "Packets" } th { "Kernel drops" } th { "Drop ratio" } } }
                tbody {
                    @for queue in &counters.queues {
                        @let drops = queue.kernel_dropped + queue.rx_ring_full + queue.fill_ring_empty;
                        tr.queue {
                            td { (queue.interface) } td { (queue.queue) } td { (queue.packets) } td { (drops) }
                            td { (format!("{:.4}%", ratio(drops, queue.packets + drops) * 100.0)) }
                        }
                    }
                }
            }
            table #counters {
                tr { th { "Packets" } td { (counters.packets) } }
                tr { th { "Flows active" } td { (counters.flows.active) } }
                tr { th { "Flows started" } td { (counters.flows.started) } }
                tr { th { "Events" } td { (counters.events) } }
                tr { th { "Events per second" } td { (format!("{:.1}", ratio(counters.events, uptime))) } }
                tr { th { "Devices" } td { (counters.devices) } }
                tr { th { "Incidents" } td { (counters.incidents) } }
                tr { th { "Uptime" } td { (uptime / 3600) " h " (uptime / 60 % 60) " min" } }
            }
            h2 { "Image" }
            table #image {
                tr { th { "Vigil" } td { (env!("CARGO_PKG_VERSION")) } }
                tr { th { "Image version" } td { (system.version.as_deref().unwrap_or("not an appliance image")) } }
                tr { th { "Booted slot" } td { (system.slot.unwrap_or("-")) } }
                tr { th { "Data partition" } td {
                    @match space {
                        Some((free, total)) => { (format!("{:.1}", mib(total - free.min(total)))) " MiB used of " (format!("{:.1}", mib(total))) " MiB" },
                        None => "unknown",
                    }
                } }
            }
        };
        Ok(live_page(&uri, &root, &user, "System", live))
    };
    render(&root, &user, made.await)
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
