//! The update path in `vigil bench`: verifying a signed bundle, and a hot swap from request to
//! the first event handled by the new version, each against a baseline timed in the same run.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::bundle::{format::sha256, text::unix_now, verify_signed, TrustStore, VerifyLimits};
use crate::capture::pcap::PcapSource;
use crate::capture::{Next, Source};
use crate::config::{default_plugin_dir, default_trust_dir};
use crate::host::{EventBatch, PluginHost};
use crate::pipeline::{tick, Pipeline};

/// Verifications timed per figure: one takes well under a millisecond.
const VERIFICATIONS: u32 = 200;

/// Signature verification of the factory network-scan bundle against the trust store, per
/// bundle, and as a multiple of hashing its bytes (the part no signature scheme can skip).
pub fn verification(runs: u32) -> anyhow::Result<(String, String)> {
    let bundle = default_plugin_dir().join("network-scan.vbundle");
    let bytes = std::fs::read(&bundle)?;
    let trust = TrustStore::open(&default_trust_dir())?;
    let limits = VerifyLimits::default();
    let verify = super::bench::median(runs, || {
        let start = Instant::now();
        for _ in 0..VERIFICATIONS {
            verify_signed(&bytes, &trust, &limits, unix_now())?;
        }
        Ok(start.elapsed() / VERIFICATIONS)
    })?;
    let hash = super::bench::median(runs, || {
        let start = Instant::now();
        for _ in 0..VERIFICATIONS {
            std::hint::black_box(sha256(&bytes));
        }
        Ok(start.elapsed() / VERIFICATIONS)
    })?;
    Ok((
        "signature verification, per bundle".into(),
        format!(
            "{:.3} ms for {} KB  = {:.2}x its SHA-256 alone",
            ms(verify),
            bytes.len() / 1024,
            verify.as_secs_f64() / hash.as_secs_f64()
        ),
    ))
}

/// A hot swap in a pipeline that has seen the first half of the capture: the plugin holding the
/// most learned state is replaced by its own module, from the request to the first batch the new
/// version handled, against loading that module fresh (its compiled code cached, as after an
/// appliance's first start).
pub fn hot_swap(
    mut pipeline: Pipeline,
    capture: &Path,
    packets: usize,
    runs: u32,
) -> anyhow::Result<(String, String)> {
    let mut source = PcapSource::open(capture)?;
    let mut handled = 0;
    while handled < packets / 2 {
        let Next::Packet(packet) = source.next_packet()? else {
            break;
        };
        pipeline.handle(&packet)?;
        handled += 1;
    }
    pipeline.dispatch()?;
    let host = pipeline.host_mut();
    let mut biggest = None;
    for plugin in host.plugins() {
        let size = host.snapshot(plugin.id)?.len();
        if biggest.as_ref().is_none_or(|(_, _, s)| size > *s) {
            biggest = Some((plugin.id, plugin.origin.clone(), size));
        }
    }
    let (id, origin, state) = biggest.context("no plugin loaded")?;
    let wasm = std::fs::read(&origin)?;
    let mut first = EventBatch::new();
    first.push(&tick(pipeline.stats().last_packet.unwrap_or_default()));
    let config = pipeline.host().config().clone();
    let host = pipeline.host_mut();
    let swap = super::bench::median(runs, || {
        let start = Instant::now();
        host.swap(id, &wasm, &origin, None, |_| Ok(()))?;
        host.dispatch(&first);
        Ok(start.elapsed())
    })?;
    let load = super::bench::median(runs, || {
        let mut fresh = PluginHost::new(config.clone())?;
        let start = Instant::now();
        fresh.load(&wasm, &origin, None)?;
        fresh.dispatch(&first);
        Ok(start.elapsed())
    })?;
    let name = host
        .plugins()
        .into_iter()
        .find(|p| p.id == id)
        .map(|p| p.name)
        .unwrap_or_default();
    Ok((
        "hot swap, request -> first event".into(),
        format!(
            "{:.2} ms for {name} carrying {state} bytes of learned state  = {:.2}x a fresh load",
            ms(swap),
            swap.as_secs_f64() / load.as_secs_f64()
        ),
    ))
}

fn ms(time: Duration) -> f64 {
    time.as_secs_f64() * 1e3
}
