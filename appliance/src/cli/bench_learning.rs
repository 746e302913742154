//! Pattern of life in `vigil bench`: the five flow scan models with learning on (their default)
//! against the same models with `pattern.learn = false` (the fixed threshold alone, as before
//! they learned), on the bench capture's flow events; and the size of their learned state once
//! 65,536 devices have each done a user's day.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use vigil_plugin_sdk::{Endpoint, Event, EventKind, Timestamp, Transport};

use super::bench::feed;
use crate::host::PluginHost;
use crate::plugin_dir;

/// The models that learn each device's fan-out from flow events.
const SCAN_MODELS: [&str; 5] = [
    "network-scan",
    "network-range-scan",
    "rdp-scan",
    "smb-scan",
    "udp-enumeration",
];
const DEVICES: u32 = 65_536;
/// Services each synthetic device uses in its day: a file server, a remote desktop, SSH.
const SERVICES: [u16; 3] = [445, 3389, 22];
const THRESHOLD_ONLY: &str = r#"{"pattern": {"learn": false}}"#;

fn scan_models(files: &[PathBuf]) -> anyhow::Result<Vec<&Path>> {
    SCAN_MODELS
        .iter()
        .map(|name| {
            files
                .iter()
                .find(|f| plugin_dir::plugin_name_from_file(f) == *name)
                .map(PathBuf::as_path)
                .with_context(|| format!("{name} plugin not found"))
        })
        .collect()
}

/// One host with the five models loaded with `config` (default: theirs).
fn host_with(models: &[&Path], config: Option<&str>) -> anyhow::Result<PluginHost> {
    let mut host = PluginHost::new(Default::default())?;
    for wasm in models {
        host.load(&std::fs::read(wasm)?, &wasm.display().to_string(), config)?;
    }
    Ok(host)
}

/// The rows: events/s with learning on against threshold-only, and the learned state's size.
pub fn rows(
    files: &[PathBuf],
    events: &[Event<'_>],
    runs: u32,
) -> anyhow::Result<Vec<(String, String)>> {
    let models = scan_models(files)?;
    // Batches as the pipeline makes them by default.
    let batch = crate::config::PipelineSettings::default().batch_size;
    let time = |config: Option<&str>| {
        super::bench::median(runs, || {
            let mut host = host_with(&models, config)?;
            let start = Instant::now();
            feed(&mut host, events, batch);
            Ok(start.elapsed())
        })
    };
    let threshold_only = time(Some(THRESHOLD_ONLY))?;
    let learning = time(None)?;
    let rate = |time: Duration| events.len() as f64 * SCAN_MODELS.len() as f64 / time.as_secs_f64();
    let mut rows = vec![(
        "5 scan models, learning on".to_string(),
        format!(
            "{:>12.0} events/s per model ({} events each)  = {:.2}x threshold-only ({:.0}/s)",
            rate(learning),
            events.len(),
            threshold_only.as_secs_f64() / learning.as_secs_f64(),
            rate(threshold_only)
        ),
    )];
    let day = users_day();
    let mut sizes = Vec::new();
    for config in [None, Some(THRESHOLD_ONLY)] {
        let mut host = host_with(&models, config)?;
        feed(&mut host, &day, batch);
        let mut bytes = 0;
        for plugin in host.plugins() {
            bytes += host.snapshot(plugin.id)?.len();
        }
        sizes.push(bytes);
    }
    rows.push((
        format!("learned state, {DEVICES} devices"),
        format!(
            "{:.1} MiB over 5 models ({:.0} bytes per device; threshold-only windows {:.1} MiB; \
             each model keeps at most 16,384 devices by default)",
            sizes[0] as f64 / 1048576.0,
            sizes[0] as f64 / f64::from(DEVICES),
            sizes[1] as f64 / 1048576.0
        ),
    ));
    Ok(rows)
}

/// Every device connects to three services on hosts of its own, spread over a day, with ticks.
fn users_day() -> Vec<Event<'static>> {
    let start = Timestamp::from_secs(1_800_000_000);
    let step_micros = 86_400 * 1_000_000 / u64::from(DEVICES);
    let mut events = Vec::new();
    let mut next_tick = start;
    for n in 0..DEVICES {
        let ts = Timestamp::from_micros(start.micros() + u64::from(n) * step_micros);
        while next_tick <= ts {
            events.push(event(next_tick, 0, [0; 4], [0; 4], 0, EventKind::Tick));
            next_tick = next_tick.plus_secs(1);
        }
        let [_, _, a, b] = n.to_be_bytes();
        for (i, port) in SERVICES.into_iter().enumerate() {
            let server = [10, 200 + i as u8, a, b];
            let flow = u64::from(n) * 4 + i as u64;
            events.push(event(
                ts,
                flow,
                [10, 1, a, b],
                server,
                port,
                EventKind::FlowStart,
            ));
        }
    }
    events
}

fn event(
    ts: Timestamp,
    flow: u64,
    src: [u8; 4],
    dst: [u8; 4],
    port: u16,
    kind: EventKind<'static>,
) -> Event<'static> {
    let endpoint = |ip: [u8; 4], port| Endpoint {
        ip: IpAddr::from(ip),
        port,
        mac: [0; 6],
    };
    Event {
        ts,
        flow,
        proto: Transport::Tcp,
        src: endpoint(src, 50_000),
        dst: endpoint(dst, port),
        kind,
    }
}
