//! Responses in `vigil bench`: the per-packet enforcement lookup with an empty and a full table,
//! and the latency from the packet that decided a breach to the action in force.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use vigil_plugin_sdk::{Response, Timestamp};

use crate::capture::pcap::PcapSource;
use crate::capture::{Next, Source};
use crate::pipeline::Pipeline;
use crate::respond::{Actions, EnforcementTable};

const FULL_TABLE: u32 = 100_000;
const LOOKUPS: u32 = 1_000_000;

/// Lookups of addresses that mostly have no rule, as on a real link, against an empty table and
/// one holding 100k devices' rules.
pub fn lookups(runs: u32) -> anyhow::Result<(String, String)> {
    let address = |n: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
    let mut full = EnforcementTable::new();
    for n in 0..FULL_TABLE {
        full.enforce(address(n * 2), Response::BlockPort(445), u64::MAX);
    }
    let empty = EnforcementTable::new();
    let time = |table: &EnforcementTable| {
        super::bench::median(runs, || {
            let start = Instant::now();
            let mut drops = 0u32;
            for n in 0..LOOKUPS {
                let source = address(n % (FULL_TABLE * 2));
                drops += u32::from(table.drops(source, address(1), Some(445), 1));
            }
            std::hint::black_box(drops);
            Ok(start.elapsed() / LOOKUPS)
        })
    };
    let (empty_time, full_time) = (time(&empty)?, time(&full)?);
    Ok((
        "enforcement lookup per packet".into(),
        format!(
            "{:.1} ns empty, {:.1} ns with {FULL_TABLE} devices  = {:.2}x",
            empty_time.as_secs_f64() * 1e9,
            full_time.as_secs_f64() * 1e9,
            full_time.as_secs_f64() / empty_time.as_secs_f64()
        ),
    ))
}

/// Wall-clock time from handling the packet a breach was decided on to the responder's action
/// being in the enforcement table.
pub fn breach_to_block(mut pipeline: Pipeline, capture: &Path) -> anyhow::Result<(String, String)> {
    let data = std::env::temp_dir().join(format!("vigil-bench-actions-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    pipeline.attach_actions(Actions::open(&data)?);
    let mut source = PcapSource::open(capture)?;
    let mut handled: Vec<(Timestamp, Instant)> = Vec::new();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut known = 0;
    while let Next::Packet(packet) = source.next_packet()? {
        handled.push((packet.ts, Instant::now()));
        pipeline.handle(&packet)?;
        let actions: Vec<Timestamp> = pipeline
            .actions()
            .map(|a| a.list().map(|a| a.decided_at).collect())
            .unwrap_or_default();
        for decided in &actions[known.min(actions.len())..] {
            let at = handled.partition_point(|(ts, _)| ts < decided);
            if let Some((_, when)) = handled.get(at) {
                latencies.push(when.elapsed());
            }
        }
        known = actions.len();
    }
    let _ = std::fs::remove_dir_all(&data);
    latencies.sort();
    let text = match (latencies.get(latencies.len() / 2), latencies.last()) {
        (Some(median), Some(max)) => format!(
            "median {:.2} ms, max {:.2} ms over {} actions",
            median.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            latencies.len()
        ),
        _ => "no actions (is the responder plugin in the plugin dir?)".into(),
    };
    Ok(("breach -> block (deciding packet -> in force)".into(), text))
}
