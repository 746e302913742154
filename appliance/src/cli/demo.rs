//! `vigil demo`: the bundled captures through the full pipeline, explained: five days of the
//! lab's normal traffic are learned first, then the attack, then the incident is printed.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use super::{open_pipeline, summary, PluginArgs};
use crate::capture::pcap::PcapSource;
use crate::capture::{Next, Source};
use crate::config::Config;
use crate::devices::Device;
use crate::host::{Emitted, EmittedIncident};
use vigil_plugin_sdk::evidence::listed;
use vigil_plugin_sdk::Timestamp;

/// The lab's pattern of life and its attack, made with real tools (see tests/fixtures/README.md).
const BASELINE_PCAP: &[u8] = include_bytes!("../../../tests/fixtures/lab/baseline.pcap");
const ATTACK_PCAP: &[u8] = include_bytes!("../../../tests/fixtures/lab/attack.pcap");

pub fn demo(data_dir: Option<PathBuf>, plugins: PluginArgs) -> anyhow::Result<()> {
    let data_dir = data_dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("vigil-demo-{}", std::process::id())));
    let config = Config::default();
    let source = plugins.resolve(&config);
    let (mut pipeline, loaded) = open_pipeline(&config, &data_dir, &source, false)?;
    println!(
        "Learning the lab's normal week ({} bytes of capture), then replaying the attack ({} \
         bytes): a phished VPN user's address logs in from a new machine, enumerates the \
         directory, scans, sweeps and brute-forces the network.",
        BASELINE_PCAP.len(),
        ATTACK_PCAP.len()
    );
    let stop = AtomicBool::new(false);
    let mut baseline =
        PcapSource::from_reader("bundled baseline.pcap", Cursor::new(BASELINE_PCAP))?;
    pipeline.run(&mut baseline, &stop, false, |_| {})?;
    let learned = pipeline.breaches().len();
    let mut attack = PcapSource::from_reader("bundled attack.pcap", Cursor::new(ATTACK_PCAP))?;
    let start = first_packet_time(ATTACK_PCAP)?;
    pipeline.run(&mut attack, &stop, false, |_| {})?;
    pipeline.finish()?;
    pipeline.save_learned(&data_dir);
    println!();
    println!("Breaches while learning the normal week: {learned}");
    println!("Model breaches during the attack, in packet time from its first packet:");
    let mut breaches: Vec<&Emitted> = pipeline.breaches().iter().collect();
    breaches.sort_by_key(|e| e.breach.ts);
    for emitted in breaches.iter().filter(|e| e.breach.ts >= start) {
        println!("  {}", describe(emitted, start));
    }
    for incident in pipeline.incidents() {
        let device = pipeline.devices().device_of(incident.incident.device);
        print_incident(incident, device, start);
    }
    if let Some(actions) = pipeline.actions() {
        println!();
        println!("Responses (autonomous mode; `vigil actions list --data-dir DIR`):");
        for action in actions.list() {
            println!(
                "  {:>3}  {:<20} on {}  for {} s  ({})",
                action.id,
                format!("{:?}", action.response),
                action.device,
                action.duration_secs,
                action.reason
            );
        }
    }
    summary::print(&pipeline, &loaded, &[]);
    println!(
        "alerts (Suricata EVE JSON): {}",
        data_dir.join("eve.json").display()
    );
    println!("incidents: {}", data_dir.join("incidents.json").display());
    Ok(())
}

fn describe(emitted: &Emitted, start: Timestamp) -> String {
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
        listed(&b.destinations, 3),
        b.score,
        b.mitre.join(" "),
    )
}

fn first_packet_time(pcap: &'static [u8]) -> anyhow::Result<Timestamp> {
    let mut source = PcapSource::from_reader("bundled attack.pcap", Cursor::new(pcap))?;
    match source.next_packet()? {
        Next::Packet(packet) => Ok(packet.ts),
        _ => anyhow::bail!("the bundled attack capture is empty"),
    }
}

/// The incident as an analyst reads it: phases, timeline, summary.
fn print_incident(emitted: &EmittedIncident, device: Option<&Device>, start: Timestamp) {
    let i = &emitted.incident;
    let offset = |ts: Timestamp| ts.since(start) as f64 / 1e6;
    println!();
    println!(
        "Incident {} on {}: score {}, {} breaches from +{:.1}s to +{:.1}s",
        i.id,
        i.device,
        i.score,
        i.breaches,
        offset(i.first),
        offset(i.last)
    );
    if let Some(device) = device {
        println!(
            "  Device {}: host names {} (newest first), MACs {}",
            device.id,
            device.names().join(", "),
            device
                .macs
                .iter()
                .map(|m| m.value.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("  Phases:");
    for phase in &i.phases {
        println!(
            "    {:<18} {:<7} {}  (from +{:.1}s)",
            phase.name,
            phase.tactic,
            phase.techniques.join(" "),
            offset(phase.first)
        );
    }
    println!("  Timeline:");
    for entry in &i.timeline {
        println!(
            "    +{:7.1}s  {:<18} {:<50} score {}",
            offset(entry.ts),
            entry.phase,
            entry.model,
            entry.score
        );
    }
    println!("  Summary:");
    for line in wrap(&i.summary, 96) {
        println!("    {line}");
    }
}

/// Word-wraps `text` at `width` columns for the terminal.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}
