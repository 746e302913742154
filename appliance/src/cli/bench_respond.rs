//! Responses in `vigil bench`: the per-packet enforcement lookup with an empty and a full table,
//! and the latency from the packet that decided a breach to the action in force, and to the
//! tap-mode RSTs for the connections it blocks ready to inject.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use vigil_plugin_sdk::{Response, Timestamp};

use crate::capture::pcap::PcapSource;
use crate::capture::{Next, Source};
use crate::decode::{Decoded, TcpFlags, Transport as Layer4};
use crate::flow::FlowTable;
use crate::pipeline::Pipeline;
use crate::respond::reset::reset_blocked;
use crate::respond::ResponseGuard;
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
/// being in the enforcement table. Also returns the median, for [`decision_to_resets`].
pub fn breach_to_block(
    mut pipeline: Pipeline,
    capture: &Path,
) -> anyhow::Result<((String, String), Option<Duration>)> {
    let data = std::env::temp_dir().join(format!("vigil-bench-actions-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    pipeline.attach_actions(
        Actions::open(&data)?,
        ResponseGuard::new(Default::default()).map_err(anyhow::Error::msg)?,
    );
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
    let row = "breach -> block (deciding packet -> in force)".to_string();
    Ok(match summary(&mut latencies) {
        Some((median, max)) => (
            (
                row,
                format!(
                    "median {:.2} ms, max {:.2} ms over {} actions",
                    ms(median),
                    ms(max),
                    latencies.len()
                ),
            ),
            Some(median),
        ),
        None => (
            (
                row,
                "no actions (is the responder plugin in the plugin dir?)".into(),
            ),
            None,
        ),
    })
}

/// What tap mode adds once an action is in force: walking a full flow table for the device's
/// established connections that the action blocks and building two RSTs for each, ready for the
/// source to inject. (The lab capture has no connection open at its decisions, so the table is
/// made here: every slot an established connection, `DEVICE_CONNECTIONS` of them the device's.)
pub fn decision_to_resets(
    runs: u32,
    breach_to_block: Option<Duration>,
) -> anyhow::Result<(String, String)> {
    const DEVICE_CONNECTIONS: u32 = 8;
    let device = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 50));
    let server = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let mut flows = FlowTable::default();
    let capacity = u32::try_from(flows.capacity())?;
    for n in 0..capacity {
        // The device's last, so that no full bucket evicts them.
        let client = if n >= capacity - DEVICE_CONNECTIONS {
            device
        } else {
            IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + n))
        };
        established(&mut flows, client, 40_000 + (n % 20_000) as u16, server);
    }
    let mut table = EnforcementTable::new();
    table.enforce(device, Response::BlockPort(445), u64::MAX);
    let mut frames = Vec::new();
    let mut reset = 0;
    let mut times: Vec<Duration> = (0..runs.max(1))
        .map(|_| {
            frames.clear();
            let start = Instant::now();
            reset = reset_blocked(&flows, &table, device, 1, &mut frames);
            start.elapsed()
        })
        .collect();
    let (median, max) = summary(&mut times).unwrap_or_default();
    let ratio = breach_to_block.map_or(String::new(), |block| {
        format!(
            "  = {:.2}x breach -> block",
            median.as_secs_f64() / block.as_secs_f64()
        )
    });
    Ok((
        "decision -> tap RSTs ready to inject".into(),
        format!(
            "median {:.3} ms, max {:.3} ms for {reset} connections ({} RSTs) among {} flows{ratio}",
            ms(median),
            ms(max),
            frames.len(),
            flows.stats().active
        ),
    ))
}

/// A TCP handshake from `client` to `server`:445 as the flow table sees it.
fn established(flows: &mut FlowTable, client: IpAddr, port: u16, server: IpAddr) {
    let segment = |from_client: bool, flags: u8, seq: u32, ack: u32| Decoded {
        src_mac: [2, 0, 0, 0, 0, u8::from(from_client)],
        dst_mac: [2, 0, 0, 0, 0, u8::from(!from_client)],
        vlans: Default::default(),
        src: if from_client { client } else { server },
        dst: if from_client { server } else { client },
        transport: Layer4::Tcp {
            src_port: if from_client { port } else { 445 },
            dst_port: if from_client { 445 } else { port },
            flags: TcpFlags(flags),
            seq,
            ack,
            payload: &[],
        },
    };
    for packet in [
        segment(true, TcpFlags::SYN, 100, 0),
        segment(false, TcpFlags::SYN | TcpFlags::ACK, 500, 101),
        segment(true, TcpFlags::ACK, 101, 501),
    ] {
        flows.observe(Timestamp(1), &packet, &mut |_| {});
    }
}

/// Median and maximum.
fn summary(times: &mut [Duration]) -> Option<(Duration, Duration)> {
    times.sort();
    Some((*times.get(times.len() / 2)?, *times.last()?))
}

fn ms(time: Duration) -> f64 {
    time.as_secs_f64() * 1e3
}
