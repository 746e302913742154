//! `vigil bench`: throughput of each stage on a large capture made by repeating the bundled lab
//! capture with shifted addresses, against tshark on the same file in the same run.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use vigil_plugin_sdk::{Event, EventKind, Timestamp};

use super::summary::print_table;
use crate::analyzer::Analyzer;
use crate::capture::pcap::PcapSource;
use crate::capture::{Next, Source};
use crate::config::Config;
use crate::decode::decode;
use crate::devices::{Device, DeviceTable};
use crate::flow::{FlowConfig, FlowTable};
use crate::host::{Emitted, EmittedIncident, EventBatch, PluginHost};
use crate::pipeline::Pipeline;
use crate::plugin_dir;
use crate::store::Sink;
use crate::stream::StreamConfig;

const ATTACK_PCAP: &[u8] = include_bytes!("../../../tests/fixtures/lab/attack.pcap");

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Copies of the lab capture in the benchmark file (each with its own addresses).
    #[arg(long, default_value_t = 40)]
    repeat: u32,
    /// Timed runs per figure; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Directory of compiled plugins (*.wasm).
    #[arg(long)]
    plugins: Option<PathBuf>,
    /// Where to write the benchmark capture.
    #[arg(long)]
    out: Option<PathBuf>,
}

struct NullSink;

impl Sink for NullSink {
    fn breach(&mut self, _: &Emitted, _: Option<&Device>) -> io::Result<()> {
        Ok(())
    }
    fn incident(&mut self, _: &EmittedIncident, _: Option<&Device>) -> io::Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let config = Config::default();
    let plugin_dir = args
        .plugins
        .clone()
        .unwrap_or_else(crate::config::default_module_dir);
    let path = args
        .out
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("vigil-bench.pcap"));
    let (packets, bytes) = write_repeated(ATTACK_PCAP, args.repeat, &path)?;
    println!(
        "benchmark capture: {} ({packets} packets, {:.1} MB, {} copies of the lab attack)",
        path.display(),
        bytes as f64 / 1e6,
        args.repeat
    );
    let files = plugin_dir::plugin_files(&plugin_dir)
        .with_context(|| format!("reading plugin dir {}", plugin_dir.display()))?;
    let runs = args.runs.max(1);

    let decode_time = median(runs, || decode_and_flows(&path))?;
    let parse_time = median(runs, || decode_flows_and_parsers(&path))?;
    let mut plugin_events = 0;
    let full_time = median(runs, || {
        let (time, events) = full_pipeline(&path, &files, &config)?;
        plugin_events = events;
        Ok(time)
    })?;
    // The image compiles plugins ahead of time for the baseline CPU (no host feature inference).
    let mut portable = config.clone();
    portable.host.portable_code = true;
    let portable_time = median(runs, || Ok(full_pipeline(&path, &files, &portable)?.0))?;
    let latencies = breach_latencies(&path, &files, &config)?;
    let events = flow_events(&path)?;
    let scan_plugin = files
        .iter()
        .find(|f| plugin_dir::plugin_name_from_file(f) == "network-scan")
        .context("network-scan plugin not found")?;
    let batched = median(runs, || into_one_plugin(scan_plugin, &events, 256))?;
    let per_event = median(runs, || into_one_plugin(scan_plugin, &events, 1))?;
    let tshark = median(runs, || tshark_read(&path)).ok();

    let rate = |n: usize, t: Duration| n as f64 / t.as_secs_f64();
    let mut rows = vec![
        row("decode + flows", packets, "packets", decode_time, None),
        row(
            "decode + flows + all parsers",
            packets,
            "packets",
            parse_time,
            Some(("decode + flows", decode_time)),
        ),
        row(
            &format!("full pipeline, {} plugins", files.len()),
            packets,
            "packets",
            full_time,
            Some(("decode + flows", decode_time)),
        ),
        row(
            "full pipeline, baseline-CPU plugin code (image)",
            packets,
            "packets",
            portable_time,
            Some(("full pipeline", full_time)),
        ),
        row(
            &format!("events into all {} plugins", files.len()),
            plugin_events as usize,
            "events",
            full_time,
            None,
        ),
        (
            "breach latency (deciding packet -> breach)".into(),
            match (latencies.get(latencies.len() / 2), latencies.last()) {
                (Some(median), Some(max)) => format!(
                    "median {:.2} ms, max {:.2} ms over {} breaches (batches of {})",
                    median.as_secs_f64() * 1e3,
                    max.as_secs_f64() * 1e3,
                    latencies.len(),
                    config.pipeline.batch_size
                ),
                _ => "no breaches".into(),
            },
        ),
        row(
            "1 plugin, batches of 256",
            events.len(),
            "events",
            batched,
            None,
        ),
        row(
            "1 plugin, one call per event",
            events.len(),
            "events",
            per_event,
            Some(("batched", batched)),
        ),
    ];
    rows.push(super::bench_updates::hot_swap(
        bench_pipeline(&files, &config)?,
        &path,
        packets,
        runs,
    )?);
    rows.extend(super::bench_fragments::rows(runs, || {
        bench_pipeline(&files, &config)
    })?);
    rows.push(super::bench_respond::lookups(runs)?);
    let (block, block_median) =
        super::bench_respond::breach_to_block(bench_pipeline(&files, &config)?, &path)?;
    rows.push(block);
    rows.push(super::bench_respond::decision_to_resets(
        runs,
        block_median,
    )?);
    match super::bench_updates::verification(runs) {
        Ok(row) => rows.push(row),
        Err(err) => rows.push((
            "signature verification, per bundle".into(),
            format!("not run: {err:#} (run ./setup.sh to sign the bundles)"),
        )),
    }
    match tshark {
        Some(t) => {
            rows.push(row("tshark -r FILE -q", packets, "packets", t, None));
            rows.push((
                "full pipeline / tshark".into(),
                format!(
                    "{:.2}x tshark's packet rate",
                    rate(packets, full_time) / rate(packets, t)
                ),
            ));
        }
        None => rows.push((
            "tshark -r FILE -q".into(),
            "not run (tshark not installed)".into(),
        )),
    }
    print_table(
        &format!("median of {runs} runs, same machine, same file"),
        &rows,
    );
    Ok(())
}

fn row(
    name: &str,
    count: usize,
    unit: &str,
    time: Duration,
    baseline: Option<(&str, Duration)>,
) -> (String, String) {
    let rate = count as f64 / time.as_secs_f64();
    let mut text = format!(
        "{:>12.0} {unit}/s  ({count} in {:.3} s)",
        rate,
        time.as_secs_f64()
    );
    if let Some((base_name, base)) = baseline {
        text.push_str(&format!(
            "  = {:.2}x {base_name}",
            base.as_secs_f64() / time.as_secs_f64()
        ));
    }
    (name.to_string(), text)
}

pub(super) fn median(
    runs: u32,
    mut measure: impl FnMut() -> anyhow::Result<Duration>,
) -> anyhow::Result<Duration> {
    measure()?; // warm-up: caches, page cache, compiled modules
    let mut times = (0..runs)
        .map(|_| measure())
        .collect::<anyhow::Result<Vec<_>>>()?;
    times.sort();
    Ok(times[times.len() / 2])
}

fn decode_and_flows(path: &Path) -> anyhow::Result<Duration> {
    let mut source = PcapSource::open(path)?;
    let mut flows = FlowTable::new(FlowConfig::default());
    let mut events = 0u64;
    let start = Instant::now();
    while let Next::Packet(packet) = source.next_packet()? {
        if let Ok(decoded) = decode(packet.data) {
            flows.observe(packet.ts, &decoded, &mut |_| events += 1);
        }
    }
    flows.flush(&mut |_| events += 1);
    std::hint::black_box(events);
    Ok(start.elapsed())
}

/// What the analyzer adds: reassembly and every protocol parser, events counted, no plugins.
fn decode_flows_and_parsers(path: &Path) -> anyhow::Result<Duration> {
    let mut source = PcapSource::open(path)?;
    let mut flows = FlowTable::new(FlowConfig::default());
    let mut analyzer = Analyzer::new(StreamConfig::default(), None);
    let mut ended = Vec::new();
    let mut events = 0u64;
    let start = Instant::now();
    while let Next::Packet(packet) = source.next_packet()? {
        if let Ok(decoded) = decode(packet.data) {
            let observed = flows.observe(packet.ts, &decoded, &mut |event| {
                events += 1;
                if matches!(event.kind, EventKind::FlowEnd { .. }) {
                    ended.push(event);
                }
            });
            if let Some(observed) = observed {
                analyzer.packet(packet.ts, &decoded, &observed, &mut |_| events += 1);
            }
            for end in ended.drain(..) {
                analyzer.flow_ended(packet.ts, &end, &mut |_| events += 1);
            }
        }
    }
    flows.flush(&mut |_| events += 1);
    std::hint::black_box(events);
    Ok(start.elapsed())
}

fn bench_pipeline(files: &[PathBuf], config: &Config) -> anyhow::Result<Pipeline> {
    let data_dir = std::env::temp_dir().join(format!("vigil-bench-{}", std::process::id()));
    let mut host = PluginHost::new(config.host_config(&data_dir))?;
    for file in files {
        let wasm = std::fs::read(file)?;
        // The capture is an attack on a fresh appliance, so every breach is raised while
        // learning: the responder acts on them at once, as the block latency row measures.
        let responder = file
            .file_name()
            .is_some_and(|name| name.to_string_lossy().contains("responder"));
        let config = responder.then_some(r#"{"learning_mode": "autonomous"}"#);
        host.load(&wasm, &file.display().to_string(), config)?;
    }
    Ok(Pipeline::new(
        FlowConfig::default(),
        Default::default(),
        host,
        DeviceTable::new(config.devices.clone()).map_err(anyhow::Error::msg)?,
        config.pipeline.batch_size,
        Box::new(NullSink),
        None,
    ))
}

/// The whole pipeline with every plugin: its time, and the events it handed to plugins.
fn full_pipeline(
    path: &Path,
    files: &[PathBuf],
    config: &Config,
) -> anyhow::Result<(Duration, u64)> {
    let mut pipeline = bench_pipeline(files, config)?;
    let mut source = PcapSource::open(path)?;
    let start = Instant::now();
    pipeline.run(&mut source, &AtomicBool::new(false), false, |_| {})?;
    pipeline.finish()?;
    Ok((start.elapsed(), pipeline.stats().events))
}

/// Breach latency: wall-clock time from handling the packet whose time the breach carries (the
/// deciding packet) to the breach leaving the plugin host.
fn breach_latencies(
    path: &Path,
    files: &[PathBuf],
    config: &Config,
) -> anyhow::Result<Vec<Duration>> {
    let mut pipeline = bench_pipeline(files, config)?;
    let mut source = PcapSource::open(path)?;
    // (packet time, when it was handled), in capture order.
    let mut handled: Vec<(Timestamp, Instant)> = Vec::new();
    let mut latencies = Vec::new();
    let collect = |pipeline: &Pipeline,
                   handled: &[(Timestamp, Instant)],
                   from: usize,
                   into: &mut Vec<Duration>| {
        let now = Instant::now();
        for emitted in &pipeline.breaches()[from..] {
            let at = handled.partition_point(|(ts, _)| *ts <= emitted.breach.ts);
            if let Some((_, when)) = at.checked_sub(1).and_then(|i| handled.get(i)) {
                into.push(now - *when);
            }
        }
    };
    let mut seen = 0;
    while let Next::Packet(packet) = source.next_packet()? {
        handled.push((packet.ts, Instant::now()));
        pipeline.handle(&packet)?;
        if pipeline.breaches().len() > seen {
            collect(&pipeline, &handled, seen, &mut latencies);
            seen = pipeline.breaches().len();
        }
    }
    pipeline.finish()?;
    collect(&pipeline, &handled, seen, &mut latencies);
    latencies.sort();
    Ok(latencies)
}

fn flow_events(path: &Path) -> anyhow::Result<Vec<Event<'static>>> {
    let mut source = PcapSource::open(path)?;
    let mut flows = FlowTable::new(FlowConfig::default());
    let mut events = Vec::new();
    while let Next::Packet(packet) = source.next_packet()? {
        if let Ok(decoded) = decode(packet.data) {
            flows.observe(packet.ts, &decoded, &mut |e| events.push(e));
        }
    }
    flows.flush(&mut |e| events.push(e));
    Ok(events)
}

fn into_one_plugin(
    wasm_path: &Path,
    events: &[Event<'_>],
    batch_size: usize,
) -> anyhow::Result<Duration> {
    let mut host = PluginHost::new(Default::default())?;
    host.load(
        &std::fs::read(wasm_path)?,
        &wasm_path.display().to_string(),
        None,
    )?;
    let mut batch = EventBatch::new();
    let start = Instant::now();
    for chunk in events.chunks(batch_size) {
        batch.clear();
        for event in chunk {
            batch.push(event);
        }
        std::hint::black_box(host.dispatch(&batch));
    }
    Ok(start.elapsed())
}

fn tshark_read(path: &Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let status = Command::new("tshark")
        .arg("-r")
        .arg(path)
        .arg("-q")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "tshark failed: {status}");
    Ok(start.elapsed())
}

/// Writes `copies` of a pcap, each with the second octet of every IPv4 address shifted and the
/// clock moved past the previous copy, so flows and devices do not repeat. Returns the packet
/// count and file size.
fn write_repeated(pcap: &[u8], copies: u32, out: &Path) -> anyhow::Result<(usize, usize)> {
    let mut source = PcapSource::from_reader("bundled attack.pcap", Cursor::new(pcap.to_vec()))?;
    let mut frames: Vec<(u64, Vec<u8>)> = Vec::new();
    while let Next::Packet(packet) = source.next_packet()? {
        frames.push((packet.ts.micros(), packet.data.to_vec()));
    }
    let first = frames.first().map_or(0, |f| f.0);
    let span = frames.last().map_or(0, |f| f.0) - first + 1_000_000;
    let mut file = Vec::with_capacity(pcap.len() * copies as usize);
    file.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    file.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    file.extend_from_slice(&262_144u32.to_le_bytes());
    file.extend_from_slice(&1u32.to_le_bytes());
    let mut packets = 0;
    for copy in 0..copies {
        for (ts, frame) in &frames {
            let mut frame = frame.clone();
            // Untagged IPv4: addresses at 26..30 and 30..34.
            if frame.len() >= 34 && frame[12..14] == [0x08, 0x00] {
                frame[27] = frame[27].wrapping_add(copy as u8);
                frame[31] = frame[31].wrapping_add(copy as u8);
            }
            let ts = ts + u64::from(copy) * span;
            file.extend_from_slice(&((ts / 1_000_000) as u32).to_le_bytes());
            file.extend_from_slice(&((ts % 1_000_000) as u32).to_le_bytes());
            file.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            file.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            file.extend_from_slice(&frame);
            packets += 1;
        }
    }
    std::fs::write(out, &file).with_context(|| format!("writing {}", out.display()))?;
    Ok((packets, file.len()))
}
