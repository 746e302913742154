//! `GET /metrics`: the pipeline's [`Counters`] in the Prometheus (OpenMetrics) text format.
//! A registry is filled from one snapshot per scrape, so the metrics cost nothing between scrapes.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::counters::{Counters, Histogram};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// Everything a scrape reports besides the pipeline's counters.
pub struct Process {
    pub uptime_secs: u64,
    pub api_restarts: u64,
}

/// A registry being filled; each metric is registered once with all its label sets.
struct Metrics(Registry);

impl Metrics {
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.counters(name, help, [(Vec::new(), value)]);
    }

    fn counters(
        &mut self,
        name: &str,
        help: &str,
        values: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        let family = Family::<Labels, Counter>::default();
        for (labels, value) in values {
            family.get_or_create(&labels).inc_by(value);
        }
        self.0.register(name, help, family);
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.gauges(name, help, [(Vec::new(), value)]);
    }

    fn gauges(&mut self, name: &str, help: &str, values: impl IntoIterator<Item = (Labels, u64)>) {
        let family = Family::<Labels, Gauge>::default();
        for (labels, value) in values {
            family
                .get_or_create(&labels)
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
        self.0.register(name, help, family);
    }
}

/// Histograms already counted elsewhere, one per label set (prometheus-client's own histogram
/// only counts observations made through it).
#[derive(Debug)]
struct Histograms(Vec<(Labels, Histogram)>);

impl EncodeMetric for Histograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, histogram) in &self.0 {
            // The encoder sums the buckets up itself, and wants `+Inf` among them.
            let bounded: u64 = histogram.buckets.iter().map(|(_, n)| n).sum();
            let mut buckets = histogram.buckets.clone();
            buckets.push((f64::INFINITY, histogram.count.saturating_sub(bounded)));
            encoder
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(histogram.sum, histogram.count, &buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The text of one scrape.
pub fn render(counters: &Counters, process: &Process) -> Result<String, std::fmt::Error> {
    let mut m = Metrics(Registry::with_prefix("vigil"));
    let queue = |q: &crate::capture::QueueCounters| -> Labels {
        vec![
            ("interface", q.interface.clone()),
            ("queue", q.queue.to_string()),
        ]
    };
    m.counters(
        "capture_packets",
        "Frames a capture queue handed to the pipeline.",
        counters.queues.iter().map(|q| (queue(q), q.packets)),
    );
    m.counters(
        "capture_bytes",
        "Bytes of the frames a capture queue handed to the pipeline.",
        counters.queues.iter().map(|q| (queue(q), q.bytes)),
    );
    m.counters(
        "capture_kernel_drops",
        "Frames the kernel dropped before the pipeline saw them, by reason.",
        counters.queues.iter().flat_map(|q| {
            [
                ("dropped", q.kernel_dropped),
                ("rx_ring_full", q.rx_ring_full),
                ("fill_ring_empty", q.fill_ring_empty),
            ]
            .map(|(reason, n)| {
                let mut labels = queue(q);
                labels.push(("reason", reason.to_string()));
                (labels, n)
            })
        }),
    );
    m.counter("packets", "Frames the pipeline handled.", counters.packets);
    m.counter(
        "bytes",
        "Bytes of the frames the pipeline handled.",
        counters.bytes,
    );
    m.counter("decoded_packets", "Frames decoded.", counters.decoded);
    m.counters(
        "skipped_packets",
        "Frames not decoded, by reason.",
        counters
            .skipped
            .iter()
            .map(|(reason, n)| (vec![("reason", reason.clone())], *n)),
    );
    m.gauge(
        "flows_active",
        "Flows in the flow table.",
        counters.flows.active,
    );
    m.counter("flows_started", "Flows started.", counters.flows.started);
    m.counter("flows_ended", "Flows ended.", counters.flows.ended);
    m.counter(
        "flows_evicted",
        "Flows pushed out of a full flow table before they ended.",
        counters.flows.evicted,
    );
    m.counter(
        "tcp_reassembly_gaps",
        "Gaps in reassembled TCP streams.",
        counters.tcp_gaps,
    );
    m.counter(
        "tcp_out_of_order_segments",
        "TCP segments that arrived out of order.",
        counters.tcp_out_of_order,
    );
    m.counters(
        "protocol_parse_errors",
        "Protocol messages that did not parse, by protocol and reason.",
        counters.parse_errors.iter().map(|(protocol, reason, n)| {
            (
                vec![("protocol", protocol.clone()), ("reason", reason.clone())],
                *n,
            )
        }),
    );
    m.counter("events", "Events handed to plugins.", counters.events);
    m.counters(
        "shed",
        "What live capture shed because detection was behind, by what: chunks, their packets \
         (tracked all the same), events and protocol log lines never detected or written.",
        [
            ("chunks", counters.shed.chunks),
            ("packets", counters.shed.packets),
            ("events", counters.shed.events),
            ("log_lines", counters.shed.log_lines),
        ]
        .into_iter()
        .map(|(what, n)| (vec![("what", what.to_string())], n)),
    );
    m.counters(
        "breaches",
        "Breaches raised, by model.",
        counters
            .breaches_by_model
            .iter()
            .map(|(model, n)| (vec![("model", model.clone())], *n)),
    );
    let plugin = |name: &str| -> Labels { vec![("plugin", name.to_string())] };
    m.counters(
        "plugin_invocations",
        "Batches of events handed to a plugin.",
        counters
            .plugins
            .iter()
            .map(|p| (plugin(&p.name), p.batches)),
    );
    m.counters(
        "plugin_events",
        "Events handed to a plugin.",
        counters.plugins.iter().map(|p| (plugin(&p.name), p.events)),
    );
    m.counters(
        "plugin_breaches",
        "Breaches a plugin raised.",
        counters
            .plugins
            .iter()
            .map(|p| (plugin(&p.name), p.breaches)),
    );
    m.counters(
        "plugin_traps",
        "Failed calls of a plugin (traps, deadlines, memory cap).",
        counters.plugins.iter().map(|p| (plugin(&p.name), p.traps)),
    );
    m.counters(
        "plugin_errors",
        "Output of a plugin that could not be read, and batches it refused.",
        counters
            .plugins
            .iter()
            .map(|p| (plugin(&p.name), p.bad_output)),
    );
    m.0.register_with_unit(
        "plugin_batch_duration",
        "How long a plugin took over a batch of events.",
        Unit::Seconds,
        Histograms(
            counters
                .plugins
                .iter()
                .map(|p| (plugin(&p.name), p.batch_seconds.clone()))
                .collect(),
        ),
    );
    m.gauges(
        "plugin_quarantined",
        "1 while a plugin is quarantined.",
        counters
            .plugins
            .iter()
            .map(|p| (plugin(&p.name), u64::from(p.quarantined))),
    );
    m.gauges(
        "plugin_bundle_info",
        "The version of each running plugin.",
        counters.plugins.iter().map(|p| {
            (
                vec![("plugin", p.name.clone()), ("version", p.version.clone())],
                1,
            )
        }),
    );
    m.gauge(
        "incidents",
        "Incidents raised and kept by this run.",
        counters.incidents,
    );
    m.gauges(
        "actions",
        "Responses by state.",
        counters
            .actions
            .iter()
            .map(|(state, n)| (vec![("state", state.clone())], *n)),
    );
    m.gauge("devices", "Devices in the device table.", counters.devices);
    m.counter(
        "api_restarts",
        "Times the management API failed and was started again.",
        process.api_restarts,
    );
    let uptime = Gauge::<i64>::default();
    uptime.set(i64::try_from(process.uptime_secs).unwrap_or(i64::MAX));
    m.0.register_with_unit(
        "uptime",
        "Time since the daemon started.",
        Unit::Seconds,
        uptime,
    );
    m.0.register(
        "build",
        "The version of this build.",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_string())]),
    );
    let mut text = String::new();
    encode(&mut text, &m.0)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::QueueCounters;
    use crate::counters::PluginCounters;

    #[test]
    fn every_counter_ends_in_total_and_every_name_is_vigils() {
        let counters = Counters {
            queues: vec![QueueCounters {
                interface: "eth1".into(),
                queue: 0,
                packets: 7,
                ..QueueCounters::default()
            }],
            packets: 7,
            plugins: vec![PluginCounters {
                name: "network-scan".into(),
                version: "0.2.0".into(),
                ..PluginCounters::default()
            }],
            actions: vec![("pending".into(), 1)],
            ..Counters::default()
        };
        let process = Process {
            uptime_secs: 5,
            api_restarts: 0,
        };
        let text = render(&counters, &process).expect("render");
        let mut counters_seen = Vec::new();
        for line in text.lines() {
            if let Some(name) = line
                .strip_prefix("# TYPE ")
                .and_then(|rest| rest.strip_suffix(" counter"))
            {
                counters_seen.push(name.to_string());
            }
            if line.starts_with('#') {
                continue;
            }
            assert!(line.starts_with("vigil_"), "{line}");
        }
        assert!(
            counters_seen.contains(&"vigil_packets".to_string()),
            "{text}"
        );
        for name in counters_seen {
            assert!(
                text.contains(&format!("\n{name}_total")),
                "{name} has no _total sample: {text}"
            );
        }
        assert!(text.contains("vigil_uptime_seconds 5"), "{text}");
    }
}
