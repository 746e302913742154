//! `vigil bench`: four captures it builds (the lab attack x40 as one device and with shifted
//! addresses, a 1 M-packet SYN flood, bulk HTTP made with real tools), each through decode +
//! flows + parsers and through `vigil replay` itself, against tshark on the same file in the same
//! run, and with the plugins on one thread and on two; then the figures of single stages
//! (plugins, hot swap, reassembly, checkpoints, responses) on the shifted attack.

use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::ValueEnum;
use vigil_plugin_sdk::{Event, EventKind, Timestamp};

use super::bench_captures::{self, Capture, CaptureKind};
use super::summary::print_table;
use crate::analyzer::Analyzer;
use crate::capture::pcap::PcapSource;
use crate::capture::{Next, Source};
use crate::config::Config;
use crate::decode::decode;
use crate::devices::DeviceTable;
use crate::flow::{FlowConfig, FlowTable};
use crate::host::{EventBatch, HostConfig, PluginHost};
use crate::pipeline::Pipeline;
use crate::plugin_dir;
use crate::store::NullSink;
use crate::stream::StreamConfig;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Copies of the lab attack in the two attack captures.
    #[arg(long, default_value_t = 40)]
    repeat: u32,
    /// Packets in the SYN flood.
    #[arg(long, default_value_t = 1_000_000)]
    flood_packets: u32,
    /// The captures to measure, comma separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "one-device,shifted,flood,http"
    )]
    captures: Vec<CaptureKind>,
    /// Only the captures' table: skip the figures of single stages (plugins, hot swap,
    /// reassembly, responses).
    #[arg(long)]
    captures_only: bool,
    /// Timed runs per figure; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Directory of compiled plugins (*.wasm), for the figures of single stages.
    #[arg(long)]
    plugins: Option<PathBuf>,
    /// Where the captures are kept (built once, reused by later runs) and the replays' data
    /// dirs made.
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("vigil-bench"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let runs = args.runs.max(1);
    let build = |kind| bench_captures::capture(kind, args.repeat, args.flood_packets, &dir);
    let replay = Replayer::new(&dir, "replay", None, runs)?;
    let scaling = Scaling::new(&replay, runs)?;
    println!("captures and the replays' data dirs: {}", dir.display());
    println!(
        "vigil replay: {:.3} s to start, load the signed plugins and save on an empty capture \
         (median of {runs}); the full pipeline's rates below leave it out, the comparison with \
         tshark (whole commands) keeps it\n",
        replay.startup.as_secs_f64()
    );
    for &kind in &args.captures {
        match build(kind)? {
            Ok(capture) => print_table(
                &format!("{} (median of {runs} runs)", capture.title),
                &capture_rows(&capture, &replay, &scaling, runs)?,
            ),
            Err(reason) => println!(
                "{}: not run: {reason}\n",
                kind.to_possible_value()
                    .map_or_else(|| format!("{kind:?}"), |v| v.get_name().to_string())
            ),
        }
    }
    if args.captures_only {
        return Ok(());
    }
    let capture = build(CaptureKind::Shifted)?.map_err(anyhow::Error::msg)?;
    stage_rows(args, &capture, &dir, &replay, runs)
}

/// `vigil replay` on one core (one sensor worker, the plugins on one thread), and with two sensor
/// workers, the plugins on two threads, and both: how each stage scales.
struct Scaling {
    one_core: Replayer,
    /// (what it is, its replayer)
    others: Vec<(&'static str, Replayer)>,
}

impl Scaling {
    fn new(replay: &Replayer, runs: u32) -> anyhow::Result<Scaling> {
        let with = |workers: usize, threads: usize| {
            format!("[pipeline]\nworkers = {workers}\n[host]\nplugin_threads = {threads}\n")
        };
        let sibling =
            |name: &str, workers, threads| replay.sibling(name, &with(workers, threads), runs);
        Ok(Scaling {
            one_core: sibling("workers-1-plugins-1", 1, 1)?,
            others: vec![
                (
                    "2 workers, plugins on 1 thread",
                    sibling("workers-2-plugins-1", 2, 1)?,
                ),
                (
                    "1 worker, plugins on 2 threads",
                    sibling("workers-1-plugins-2", 1, 2)?,
                ),
                (
                    "2 workers, plugins on 2 threads",
                    sibling("workers-2-plugins-2", 2, 2)?,
                ),
            ],
        })
    }
}

/// One capture: decode + flows + parsers, `vigil replay` (rates, peak RSS, eve.json per breach;
/// then on one core and scaled, [`Scaling`]) and tshark, each a median of `runs`.
fn capture_rows(
    capture: &Capture,
    replay: &Replayer,
    scaling: &Scaling,
    runs: u32,
) -> anyhow::Result<Vec<(String, String)>> {
    let path = &capture.path;
    let parse_time = median(runs, || decode_flows_and_parsers(path))?;
    let (full, peak_rss) = replay.median(path, runs)?;
    let full_time = replay.packet_time(&full);
    let rate = |t: Duration| capture.packets as f64 / t.as_secs_f64();
    let gbits = |t: Duration| capture.wire_bytes as f64 * 8.0 / t.as_secs_f64() / 1e9;
    let speed = |t: Duration| format!("{:>10.0} packets/s {:>6.2} Gbit/s", rate(t), gbits(t));
    let mut rows = vec![
        (
            "capture".to_string(),
            format!(
                "{} packets, {:.1} MB on the wire: {}",
                capture.packets,
                capture.wire_bytes as f64 / 1e6,
                capture.detail,
            ),
        ),
        (
            "decode + flows + parsers".to_string(),
            format!("{}  ({:.3} s)", speed(parse_time), parse_time.as_secs_f64()),
        ),
        (
            "full pipeline (vigil replay)".to_string(),
            format!(
                "{}  ({:.3} s + start-up)  = {:.2}x decode + flows + parsers",
                speed(full_time),
                full_time.as_secs_f64(),
                parse_time.as_secs_f64() / full_time.as_secs_f64()
            ),
        ),
    ];
    let one_core = &scaling.one_core;
    let one = one_core.packet_time(&one_core.median(path, runs)?.0);
    rows.push((
        "full pipeline, 1 worker, plugins on 1 thread".to_string(),
        format!("{}  ({:.3} s)", speed(one), one.as_secs_f64()),
    ));
    for (what, replayer) in &scaling.others {
        let time = replayer.packet_time(&replayer.median(path, runs)?.0);
        rows.push((
            format!("full pipeline, {what}"),
            format!(
                "{}  ({:.3} s)  = {:.2}x 1 worker, plugins on 1 thread",
                speed(time),
                time.as_secs_f64(),
                one.as_secs_f64() / time.as_secs_f64()
            ),
        ));
    }
    rows.extend([
        (
            "peak RSS of the replay".to_string(),
            format!("{:.1} MiB", peak_rss as f64 / 1024.0),
        ),
        (
            "eve.json".to_string(),
            match full.breaches {
                0 => format!("{} bytes, no breaches", full.eve_bytes),
                n => format!(
                    "{:.0} bytes per breach ({n} breaches, {:.2} MB)",
                    full.eve_bytes as f64 / n as f64,
                    full.eve_bytes as f64 / 1e6
                ),
            },
        ),
    ]);
    rows.push(match median(runs, || tshark_read(path)) {
        Ok(tshark) => (
            "tshark -r FILE -q".to_string(),
            format!(
                "{}  ({:.3} s)  vigil replay = {:.2}x tshark's packet rate",
                speed(tshark),
                tshark.as_secs_f64(),
                tshark.as_secs_f64() / full.time.as_secs_f64()
            ),
        ),
        Err(err) => ("tshark -r FILE -q".to_string(), format!("not run: {err:#}")),
    });
    Ok(rows)
}

/// The figures of single stages, on the shifted attack.
fn stage_rows(
    args: &BenchArgs,
    capture: &Capture,
    dir: &Path,
    replay: &Replayer,
    runs: u32,
) -> anyhow::Result<()> {
    let config = Config::default();
    let plugin_dir = args
        .plugins
        .clone()
        .unwrap_or_else(crate::config::default_module_dir);
    let files: Vec<PathBuf> = plugin_dir::plugin_files(&plugin_dir)
        .with_context(|| format!("reading plugin dir {}", plugin_dir.display()))?
        .into_iter()
        // Cargo's wasm output dir also holds the tests' fixture modules: only the plugins.
        .filter(|file| args.plugins.is_some() || is_product_plugin(file))
        .collect();
    let (path, packets) = (capture.path.as_path(), capture.packets);
    // The image compiles plugins ahead of time for the baseline CPU (no host feature inference).
    let portable = Replayer::new(
        dir,
        "portable",
        Some("[host]\nportable_code = true\n"),
        runs,
    )?;
    let native_time = replay.packet_time(&replay.median(path, runs)?.0);
    let portable_time = portable.packet_time(&portable.median(path, runs)?.0);
    let latencies = breach_latencies(path, &files, &config)?;
    let events = flow_events(path)?;
    let scan_plugin = files
        .iter()
        .find(|f| plugin_dir::plugin_name_from_file(f) == "network-scan")
        .context("network-scan plugin not found")?;
    let scan_only = std::slice::from_ref(scan_plugin);
    let batched = median(runs, || into_plugins(scan_only, &events, 256, 1))?;
    let per_event = median(runs, || into_plugins(scan_only, &events, 1, 1))?;
    let batch = config.pipeline.batch_size;
    let all_one = median(runs, || into_plugins(&files, &events, batch, 1))?;
    let all_two = median(runs, || into_plugins(&files, &events, batch, 2))?;

    let mut rows = vec![
        row(
            "vigil replay, baseline-CPU plugin code (image)",
            packets,
            "packets",
            portable_time,
            Some(("native plugin code", native_time)),
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
        row(
            &format!("{} plugins on 1 thread, batches of {batch}", files.len()),
            events.len(),
            "events",
            all_one,
            None,
        ),
        row(
            &format!("{} plugins on 2 threads, batches of {batch}", files.len()),
            events.len(),
            "events",
            all_two,
            Some(("1 thread", all_one)),
        ),
    ];
    rows.extend(super::bench_learning::rows(&files, &events, runs)?);
    rows.push(super::bench_updates::hot_swap(
        bench_pipeline(&files, &config)?,
        path,
        packets,
        runs,
    )?);
    rows.extend(super::bench_fragments::rows(runs, || {
        bench_pipeline(&files, &config)
    })?);
    rows.extend(super::bench_checkpoints::rows(
        path,
        packets,
        dir,
        runs,
        || bench_pipeline(&files, &config),
    )?);
    rows.extend(super::bench_console::rows(dir, runs)?);
    rows.push(super::bench_respond::lookups(runs)?);
    let (block, block_median) =
        super::bench_respond::breach_to_block(bench_pipeline(&files, &config)?, path)?;
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
    match super::bench_fleet::LoopbackBroker::start(dir) {
        Ok(broker) => {
            rows.push(or_not_run(
                "fleet export, broker on loopback",
                broker.export_rate(dir, runs),
            ));
            rows.push(or_not_run(
                "vigil replay, fleet export on (broker on loopback)",
                broker.capture_rate(replay, path, packets, runs),
            ));
        }
        Err(err) => rows.push((
            "fleet, broker on loopback".into(),
            format!("not run: {err:#}"),
        )),
    }
    match super::bench_fleet::publish_to_running(dir, scan_plugin, runs) {
        Ok(more) => rows.extend(more),
        Err(err) => rows.push((
            "fleet publish -> running on N appliances".into(),
            format!("not run: {err:#}"),
        )),
    }
    print_table(
        &format!(
            "single stages on the {} (median of {runs} runs)",
            capture.title
        ),
        &rows,
    );
    Ok(())
}

/// A figure's row, or why it was not measured.
fn or_not_run(name: &str, row: anyhow::Result<(String, String)>) -> (String, String) {
    row.unwrap_or_else(|err| (name.into(), format!("not run: {err:#}")))
}

/// One run of `vigil replay`.
pub(super) struct ReplayRun {
    /// Wall clock from spawn to exit.
    time: Duration,
    /// The child's peak resident set, KiB.
    max_rss_kib: u64,
    eve_bytes: u64,
    breaches: u64,
}

/// `vigil replay` as an operator runs it: this executable spawned with `replay --data-dir DIR
/// FILE`, a fresh data dir each run. Spawning rather than calling the replay code in-process
/// means nothing can drift from what `vigil replay` does (config, signed bundles, ticks, expiry,
/// reorder buffer, the EVE sink, incidents.json, the saved state), and wait4 gives the replay's
/// own peak RSS, which an in-process run could not separate from the bench's. The module cache
/// of a warm-up run is linked into every data dir (an appliance compiles its plugins once), and
/// the time of a replay of an empty capture, measured the same way, is the start-up left out of
/// the packet rates.
pub(super) struct Replayer {
    exe: PathBuf,
    name: String,
    work: PathBuf,
    config: Option<PathBuf>,
    cache: PathBuf,
    startup: Duration,
}

impl Replayer {
    fn new(work: &Path, name: &str, config: Option<&str>, runs: u32) -> anyhow::Result<Replayer> {
        let config = match config {
            Some(text) => {
                let path = work.join(format!("{name}.toml"));
                std::fs::write(&path, text)?;
                Some(path)
            }
            None => None,
        };
        let empty = work.join("empty.pcap");
        bench_captures::write_empty(&empty)?;
        let mut replayer = Replayer {
            exe: std::env::current_exe().context("finding this executable")?,
            name: name.to_string(),
            work: work.to_path_buf(),
            config,
            cache: work.join(format!("{name}-cache")),
            startup: Duration::ZERO,
        };
        // The warm-up compiles every plugin; its module cache is kept for the timed runs.
        let _ = std::fs::remove_dir_all(&replayer.cache);
        replayer.run(&empty)?;
        std::fs::rename(replayer.data_dir().join("cache"), &replayer.cache)
            .context("keeping the module cache")?;
        replayer.startup = replayer.median(&empty, runs)?.0.time;
        Ok(replayer)
    }

    /// A replayer with the same compiled plugins and `config` (TOML) instead.
    pub(super) fn sibling(&self, name: &str, config: &str, runs: u32) -> anyhow::Result<Replayer> {
        let path = self.work.join(format!("{name}.toml"));
        std::fs::write(&path, config)?;
        let mut sibling = Replayer {
            exe: self.exe.clone(),
            name: name.to_string(),
            work: self.work.clone(),
            config: Some(path),
            cache: self.cache.clone(),
            startup: Duration::ZERO,
        };
        sibling.startup = sibling.median(&self.work.join("empty.pcap"), runs)?.0.time;
        Ok(sibling)
    }

    fn data_dir(&self) -> PathBuf {
        self.work.join(format!("{}-data", self.name))
    }

    /// A run's time without the start-up.
    pub(super) fn packet_time(&self, run: &ReplayRun) -> Duration {
        run.time
            .saturating_sub(self.startup)
            .max(Duration::from_micros(1))
    }

    /// The median run of `runs` (after a warm-up), and the highest peak RSS of them, KiB.
    pub(super) fn median(&self, capture: &Path, runs: u32) -> anyhow::Result<(ReplayRun, u64)> {
        self.run(capture)?;
        let mut all = (0..runs)
            .map(|_| self.run(capture))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let peak = all.iter().map(|r| r.max_rss_kib).max().unwrap_or(0);
        all.sort_by_key(|r| r.time);
        let median = all.swap_remove(all.len() / 2);
        Ok((median, peak))
    }

    pub(super) fn run(&self, capture: &Path) -> anyhow::Result<ReplayRun> {
        let data = self.data_dir();
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("removing {}", data.display()))?;
        }
        std::fs::create_dir_all(&data)?;
        if self.cache.is_dir() {
            link_cache(&self.cache, &data)?;
        }
        let log_path = self.work.join(format!("{}.log", self.name));
        let mut command = Command::new(&self.exe);
        command.arg("replay").arg("--data-dir").arg(&data);
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        command
            .arg(capture)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path)?);
        let start = Instant::now();
        let child = command.spawn().context("starting vigil replay")?;
        let (status, usage) = wait_with_usage(child)?;
        let time = start.elapsed();
        anyhow::ensure!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "vigil replay {} failed (status {status:#x}); see {}",
            capture.display(),
            log_path.display()
        );
        let (eve_bytes, breaches) = eve_breaches(&data.join("eve.json"))?;
        Ok(ReplayRun {
            time,
            max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
            eve_bytes,
            breaches,
        })
    }
}

/// Gives `data_dir` the compiled plugin code in `cache` (hard links where it can), as an
/// appliance has it after its first start.
pub(super) fn link_cache(cache: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let to_dir = data_dir.join("cache");
    std::fs::create_dir_all(&to_dir)?;
    for entry in std::fs::read_dir(cache).with_context(|| format!("reading {}", cache.display()))? {
        let entry = entry?;
        let to = to_dir.join(entry.file_name());
        if std::fs::hard_link(entry.path(), &to).is_err() {
            std::fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}

/// Waits for `child` and returns its wait status and resource usage.
fn wait_with_usage(child: std::process::Child) -> anyhow::Result<(i32, libc::rusage)> {
    let pid = libc::pid_t::try_from(child.id()).context("child pid")?;
    let mut status = 0;
    // SAFETY: rusage is integers and timevals, for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child, not yet reaped (`Child` only reaps in wait()); both
        // pointers are to live locals.
        let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if waited == pid {
            return Ok((status, usage));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(anyhow::Error::new(err).context("waiting for vigil replay"));
        }
    }
}

/// eve.json's size and its alerts (one per breach).
fn eve_breaches(path: &Path) -> anyhow::Result<(u64, u64)> {
    #[derive(serde::Deserialize)]
    struct Record<'a> {
        #[serde(borrow)]
        event_type: std::borrow::Cow<'a, str>,
    }
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let bytes = file.metadata()?.len();
    let mut breaches = 0;
    for line in BufReader::new(file).lines() {
        let line = line?;
        let record: Record = serde_json::from_str(&line)
            .with_context(|| format!("a record of {}", path.display()))?;
        breaches += u64::from(record.event_type == "alert");
    }
    Ok((bytes, breaches))
}

pub(super) fn row(
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

/// A product plugin's module as cargo names it (`vigil_plugin_*.wasm`), not a test fixture.
fn is_product_plugin(file: &Path) -> bool {
    file.file_name()
        .is_some_and(|name| name.to_string_lossy().starts_with("vigil_plugin_"))
}

/// What the analyzer adds: reassembly and every protocol parser, events counted, no plugins.
fn decode_flows_and_parsers(path: &Path) -> anyhow::Result<Duration> {
    let mut source = PcapSource::open(path)?;
    let mut flows = FlowTable::new(FlowConfig::default());
    let mut analyzer = Analyzer::new(StreamConfig::default(), false);
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

/// The time to hand `events` to the plugins `wasm_paths` running on `plugin_threads` threads.
fn into_plugins(
    wasm_paths: &[PathBuf],
    events: &[Event<'_>],
    batch_size: usize,
    plugin_threads: usize,
) -> anyhow::Result<Duration> {
    let mut host = PluginHost::new(HostConfig {
        plugin_threads,
        ..HostConfig::default()
    })?;
    for path in wasm_paths {
        host.load(&std::fs::read(path)?, &path.display().to_string(), None)?;
    }
    let start = Instant::now();
    feed(&mut host, events, batch_size);
    Ok(start.elapsed())
}

/// Hands `events` to the plugins of `host` in batches of `batch_size`, as the pipeline does.
pub(super) fn feed(host: &mut PluginHost, events: &[Event<'_>], batch_size: usize) {
    let mut batch = EventBatch::new();
    for chunk in events.chunks(batch_size) {
        batch.clear();
        for event in chunk {
            batch.push(event);
        }
        std::hint::black_box(host.dispatch(&batch));
    }
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
