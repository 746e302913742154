//! `vigil demo`: the bundled attack capture through the full pipeline, explained.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use super::{open_pipeline, summary};
use crate::capture::pcap::PcapSource;
use crate::config::Config;
use crate::host::Emitted;
use crate::plugin_dir::save_state;
use vigil_plugin_sdk::model::summarize;

/// The lab's attack, made with real tools (see tests/fixtures/README.md).
const ATTACK_PCAP: &[u8] = include_bytes!("../../../tests/fixtures/lab/attack.pcap");

pub fn demo(data_dir: Option<PathBuf>, plugins: Option<PathBuf>) -> anyhow::Result<()> {
    let data_dir = data_dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("vigil-demo-{}", std::process::id())));
    let config = Config::default();
    let plugin_dir = plugins.unwrap_or_else(|| config.plugin_dir());
    let (mut pipeline, loaded) = open_pipeline(&config, &data_dir, &plugin_dir, false)?;
    println!(
        "Replaying the bundled attack capture ({} bytes): a phished VPN user's address scans, \
         sweeps and brute-forces the network.",
        ATTACK_PCAP.len()
    );
    let mut source = PcapSource::from_reader("bundled attack.pcap", Cursor::new(ATTACK_PCAP))?;
    pipeline.run(&mut source, &AtomicBool::new(false), false, |_| {})?;
    pipeline.finish()?;
    save_state(pipeline.host_mut(), &data_dir)?;
    let start = pipeline.stats().first_packet.unwrap_or_default();
    println!();
    println!("Model breaches, in packet time from the start of the capture:");
    let mut breaches: Vec<&Emitted> = pipeline.breaches().iter().collect();
    breaches.sort_by_key(|e| e.breach.ts);
    for emitted in breaches {
        println!("  {}", describe(emitted, start));
    }
    summary::print(&pipeline, &loaded, &[]);
    println!(
        "alerts (Suricata EVE JSON): {}",
        data_dir.join("eve.json").display()
    );
    Ok(())
}

fn describe(emitted: &Emitted, start: vigil_plugin_sdk::Timestamp) -> String {
    let b = &emitted.breach;
    let offset = b.ts.since(start) as f64 / 1e6;
    let ports = b
        .ports
        .iter()
        .take(12)
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let more_ports = if b.ports.len() > 12 { ",..." } else { "" };
    format!(
        "+{offset:7.2}s  {:<42} {} -> {} host(s) [{}], port(s) {ports}{more_ports}  score {} {}",
        b.model,
        b.device.ip,
        b.destinations.len(),
        summarize(&b.destinations, 3),
        b.score,
        b.mitre.join(" "),
    )
}
