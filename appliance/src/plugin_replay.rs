//! Captures replayed into one plugin running natively (no wasm), for plugin authors' tests.
//!
//! The events come from the appliance's own path, as `vigil replay` runs it with the default
//! config: decode, fragments, flows, parsers and packet-time ticks, batched by the pipeline and
//! selected by the plugin's subscriptions and flow filter exactly as the host selects them. So a model tested
//! here sees, event for event, what it will see on an appliance. Only breaches of other plugins
//! (which a meta-model would receive) are missing: no other plugin runs.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::Context;
use vigil_plugin_sdk::harness::Harness;
use vigil_plugin_sdk::plugin::manifest_of;
use vigil_plugin_sdk::{Breach, Plugin};

use crate::cli::replay::replay_files;
use crate::config::Config;
use crate::devices::DeviceTable;
use crate::host::{HostConfig, PluginHost};
use crate::pipeline::Pipeline;
use crate::store::NullSink;

/// The batches the host would hand plugin `P` while `pcaps` are replayed in order as one
/// capture: each is the events encoded back to back, as `vigil_on_batch` receives them.
pub fn batches_for<P: Plugin>(pcaps: &[&Path]) -> anyhow::Result<Vec<Vec<u8>>> {
    let config = Config::default();
    let manifest = manifest_of::<P>();
    // No plugin is loaded: the host is only what the pipeline hands batches to.
    let host = PluginHost::new(HostConfig::default())?;
    let devices = DeviceTable::new(config.devices.clone()).map_err(anyhow::Error::msg)?;
    let mut pipeline = Pipeline::from_config(&config, host, devices, Box::new(NullSink), None)?;
    let (sent, batches) = mpsc::channel();
    pipeline.tap_batches(Box::new(move |batch| {
        let mut selected = Vec::new();
        if batch.select(
            manifest.subscriptions,
            &manifest.filter,
            None,
            // A plugin built on this SDK: what the host hands a module of the current ABI.
            vigil_plugin_sdk::abi::ABI_MINOR,
            &mut selected,
        ) > 0
        {
            // The receiver lives until the replay is over.
            let _ = sent.send(selected);
        }
    }));
    let pcaps: Vec<PathBuf> = pcaps.iter().map(|p| p.to_path_buf()).collect();
    let failures = replay_files(&mut pipeline, &pcaps, config.capture.reorder());
    pipeline.finish().context("finishing the replay")?;
    if let Some(reason) = pipeline.stats().undecodable() {
        anyhow::bail!("{reason}");
    }
    if !failures.is_empty() {
        anyhow::bail!("captures not read to the end: {}", failures.join("; "));
    }
    Ok(batches.try_iter().collect())
}

/// Replays `pcaps` into `harness`'s plugin (see [`batches_for`]); returns the breaches raised.
pub fn replay<P: Plugin>(harness: &mut Harness<P>, pcaps: &[&Path]) -> anyhow::Result<Vec<Breach>> {
    let mut raised = Vec::new();
    for batch in batches_for::<P>(pcaps)? {
        raised.extend(
            harness
                .feed_batch(&batch)
                .context("an event the host encoded did not decode")?,
        );
    }
    Ok(raised)
}
