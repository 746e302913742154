//! `vigil replay`: pcap files in, alerts out.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use indicatif::{ProgressBar, ProgressStyle};

use super::{open_pipeline, summary, Common};
use crate::capture::pcap::PcapSource;
use crate::capture::reorder::{Reorder, ReorderConfig};
use crate::pipeline::Pipeline;

pub fn replay(common: &Common, pcaps: &[PathBuf], protocol_logs: bool) -> anyhow::Result<()> {
    let (config, source) = common.load()?;
    let (mut pipeline, loaded) = open_pipeline(&config, &common.data_dir, &source, protocol_logs)?;
    let failures = replay_files(&mut pipeline, pcaps, config.capture.reorder());
    pipeline.finish()?;
    pipeline.save_learned(&common.data_dir);
    summary::print(&pipeline, &loaded, &failures);
    println!("alerts: {}", common.data_dir.join("eve.json").display());
    // A capture Vigil cannot read at all must not pass for a quiet one.
    if let Some(reason) = pipeline.stats().undecodable() {
        anyhow::bail!("{reason}");
    }
    // Everything readable was processed and saved; still fail so a script notices the damage.
    if !failures.is_empty() {
        anyhow::bail!(
            "{} of {} captures could not be read to the end",
            failures.len(),
            pcaps.len()
        );
    }
    Ok(())
}

/// Replays each file in order as one capture, each through a reorder buffer; a damaged or
/// unreadable file is reported (after its good packets were processed) and the next file still
/// runs. Returns the failures.
pub(crate) fn replay_files(
    pipeline: &mut Pipeline,
    pcaps: &[PathBuf],
    reorder: ReorderConfig,
) -> Vec<String> {
    let bar = ProgressBar::new(pcaps.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} files  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let stop = AtomicBool::new(false);
    let mut failures = Vec::new();
    for path in pcaps {
        let name = path.display().to_string();
        let result = PcapSource::open(path)
            .map_err(anyhow::Error::from)
            .and_then(|source| {
                let mut source = Reorder::new(source, reorder);
                pipeline
                    .run(&mut source, &stop, false, |stats| {
                        bar.set_message(format!("{name}: {} packets", stats.packets));
                    })
                    .map_err(anyhow::Error::from)
            });
        if let Err(err) = result {
            bar.suspend(|| eprintln!("vigil: {err:#}"));
            failures.push(format!("{err:#}"));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    failures
}
