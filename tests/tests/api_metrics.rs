//! `/metrics` of a live `vigil run`, read as Prometheus reads it (the `prometheus-parse`
//! crate) while traffic flows: it parses, needs a token, and its packet counter is the one the
//! run's summary prints.

use std::process::Command;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use vigil_tests::http::request;
use vigil_tests::live::{skip_live, LiveVigil, API_ADDR};
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::workspace::{summary_value, TempDir};

const TOKEN: &str = "metrics-test-token-93d0b7";

/// `GET /metrics` from inside `ns`, parsed.
fn scrape(ns: &Netns) -> Scrape {
    let answer = ns
        .thread(|| request(API_ADDR, "GET", "/metrics", Some(TOKEN), b"").expect("scrape"))
        .join()
        .expect("client thread");
    assert_eq!(answer.status, 200, "{answer:?}");
    Scrape::parse(answer.body.lines().map(|line| Ok(line.to_string()))).expect("Prometheus text")
}

/// The value of the sample `metric` whose labels include `labels`.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == metric)
        .find(|sample| {
            labels
                .iter()
                .all(|(name, value)| sample.labels.get(name) == Some(value))
        })
        .map(value_of)
}

fn value_of(sample: &prometheus_parse::Sample) -> f64 {
    match sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{} is not a single number: {other:?}", sample.metric),
    }
}

#[test]
fn metrics_parse_as_prometheus_text_and_count_the_packets_the_summary_counts() {
    if skip_live() {
        return;
    }
    let appliance = Netns::unique().expect("namespace");
    let peer = Netns::unique().expect("namespace");
    let (if_a, if_b) = (unique_name(), unique_name());
    let pair = VethPair::new(
        &appliance,
        &if_a,
        &peer,
        &if_b,
        "10.205.1.1/24",
        "10.205.1.2/24",
    )
    .expect("veth pair");
    pair.pin_neighbours().expect("neighbours");
    let work = TempDir::new("metrics");
    let vigil = LiveVigil::with_api(&appliance, &if_a, work.path(), TOKEN);

    let refused = appliance
        .thread(|| request(API_ADDR, "GET", "/metrics", None, b"").expect("request"))
        .join()
        .expect("client thread");
    assert_eq!(refused.status, 401, "{refused:?}");

    // Scraped while traffic flows.
    let mut ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            peer.name(),
            "ping",
            "-q",
            "-c",
            "200",
            "-i",
            "0.01",
        ])
        .arg(pair.ip_a().to_string())
        .spawn()
        .expect("ping");
    std::thread::sleep(Duration::from_millis(500));
    let during = scrape(&appliance);
    assert!(value(&during, "vigil_packets_total", &[]).is_some_and(|n| n > 0.0));
    assert_eq!(
        value(
            &during,
            "vigil_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &during,
            "vigil_plugin_bundle_info",
            &[("plugin", "network-scan")]
        ),
        Some(1.0)
    );
    // Capture takes every frame of the port, so nothing answers: ping reports losses.
    ping.wait().expect("ping");

    // Once the link is quiet the counters stand still; then they are what the summary prints.
    let mut last = scrape(&appliance);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = scrape(&appliance);
        if value(&now, "vigil_packets_total", &[]) == value(&last, "vigil_packets_total", &[]) {
            break;
        }
        last = now;
    }
    let packets = value(&last, "vigil_packets_total", &[]).expect("vigil_packets_total");
    assert!(packets >= 200.0, "{packets} packets for 200 pings");
    assert_eq!(
        value(
            &last,
            "vigil_capture_packets_total",
            &[("interface", &if_a), ("queue", "0")]
        ),
        Some(packets)
    );
    assert_eq!(
        value(
            &last,
            "vigil_capture_kernel_drops_total",
            &[("reason", "rx_ring_full")]
        ),
        Some(0.0)
    );
    // Each plugin's batch durations count every invocation, up to the `+Inf` bucket.
    let invocations: Vec<(String, f64)> = last
        .samples
        .iter()
        .filter(|sample| sample.metric == "vigil_plugin_invocations_total")
        .filter_map(|sample| Some((sample.labels.get("plugin")?.to_string(), value_of(sample))))
        .collect();
    assert!(invocations.iter().any(|(_, n)| *n > 0.0), "{invocations:?}");
    for (plugin, n) in &invocations {
        let labels = [("plugin", plugin.as_str())];
        assert_eq!(
            value(&last, "vigil_plugin_batch_duration_seconds_count", &labels),
            Some(*n),
            "{plugin}"
        );
        let histogram = last
            .samples
            .iter()
            .find(|s| {
                s.metric == "vigil_plugin_batch_duration_seconds"
                    && s.labels.get("plugin") == Some(plugin)
            })
            .map(|s| s.value.clone());
        let Some(Value::Histogram(buckets)) = histogram else {
            panic!("no batch duration histogram for {plugin}: {histogram:?}");
        };
        let infinite = buckets.iter().find(|b| b.less_than == f64::INFINITY);
        assert_eq!(infinite.map(|b| b.count), Some(*n), "{plugin}: {buckets:?}");
    }
    let (exit, summary) = vigil.stop_with_summary();
    assert!(exit.success());
    assert_eq!(
        summary_value(&summary, "packets").map(|n| n as f64),
        Some(packets),
        "{}",
        String::from_utf8_lossy(&summary)
    );
}
