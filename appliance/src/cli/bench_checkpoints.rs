//! Checkpoints in `vigil bench`: what one costs with the state learned from the bench capture
//! (every plugin's state and the device table, written atomically), and the capture rate of a
//! pipeline checkpointing every [`DENSE_PERIOD`] of wall clock (600 times the default) against
//! the same pipeline not checkpointing, in the same run.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::capture::pcap::PcapSource;
use crate::pipeline::Pipeline;

/// Often enough that a replay of the bench capture is checkpointed dozens of times.
const DENSE_PERIOD: Duration = Duration::from_millis(100);

/// The data dir checkpoints go to: created empty, removed after.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(dir: &Path) -> anyhow::Result<Scratch> {
        let path = dir.join("checkpoints-data");
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Scratch(path))
    }

    /// Bytes of every file under it.
    fn bytes(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(kind) if kind.is_dir() => walk(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        }
        walk(&self.0)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The capture through `pipeline`; the wall-clock time it took.
fn run_capture(pipeline: &mut Pipeline, capture: &Path) -> anyhow::Result<Duration> {
    let mut source = PcapSource::open(capture)?;
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    pipeline.run(&mut source, &stop, false, |_| {})?;
    pipeline.finish()?;
    Ok(start.elapsed())
}

/// The rows: one checkpoint's time and size, and the capture rate while checkpointing.
pub fn rows(
    capture: &Path,
    packets: usize,
    dir: &Path,
    runs: u32,
    pipeline: impl Fn() -> anyhow::Result<Pipeline>,
) -> anyhow::Result<Vec<(String, String)>> {
    let scratch = Scratch::new(dir)?;
    let mut learned = pipeline()?;
    run_capture(&mut learned, capture)?;
    let cost = super::bench::median(runs, || {
        let start = Instant::now();
        learned.save_learned(&scratch.0);
        Ok(start.elapsed())
    })?;
    let bytes = scratch.bytes();
    let without = super::bench::median(runs, || run_capture(&mut pipeline()?, capture))?;
    let before = crate::store::health::snapshot().checkpoints;
    let with = super::bench::median(runs, || {
        let mut checkpointing = pipeline()?;
        checkpointing.enable_checkpoints(&scratch.0, DENSE_PERIOD);
        run_capture(&mut checkpointing, capture)
    })?;
    let checkpoints = crate::store::health::snapshot().checkpoints - before;
    let rate = |time: Duration| packets as f64 / time.as_secs_f64();
    Ok(vec![
        (
            "checkpoint (plugin state + device table)".into(),
            format!(
                "{:.2} ms, {} KB per checkpoint, with the state learned from the capture",
                cost.as_secs_f64() * 1e3,
                bytes / 1024
            ),
        ),
        (
            "capture rate, checkpointing every 100 ms".into(),
            format!(
                "{:>10.0} packets/s  = {:.2}x without checkpoints ({:.0}/s); {} checkpoints \
                 per run",
                rate(with),
                without.as_secs_f64() / with.as_secs_f64(),
                rate(without),
                // The median's warm-up run checkpoints too.
                checkpoints / u64::from(runs + 1)
            ),
        ),
    ])
}
