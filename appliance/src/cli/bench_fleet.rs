//! The fleet's figures, against `nats-server` processes the bench starts: records exported per
//! second by one appliance and `vigil replay`'s packet rate with export on, as a ratio to export
//! off (broker on loopback); and the time from `vigil fleet publish` to the new version running
//! on N live appliances ([`FleetLab`]).

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::bench::{median, row, Replayer};
use super::bench_captures::KillOnDrop;
use super::bench_fleet_lab::FleetLab;
use crate::fleet::export::Exporter;
use crate::fleet::outbox::Kind;
use crate::fleet::{Broker, FleetConfig};

/// Records exported per run.
const RECORDS: usize = 5_000;

/// Starts `nats-server` with JetStream stored under `dir`, listening on 127.0.0.1:`port` (of
/// namespace `netns` if given); killed when dropped.
pub(super) fn nats_server(
    dir: &Path,
    port: u16,
    netns: Option<&str>,
) -> anyhow::Result<KillOnDrop> {
    let mut command = match netns {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns, "nats-server"]);
            command
        }
        None => Command::new("nats-server"),
    };
    let child = command
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("js"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nats-server (apt-get install nats-server)")?;
    Ok(KillOnDrop(child))
}

/// A `nats-server` on a free loopback port with the fleet's stream and buckets.
pub(super) struct LoopbackBroker {
    _server: KillOnDrop,
    url: String,
}

impl LoopbackBroker {
    pub(super) fn start(work: &Path) -> anyhow::Result<LoopbackBroker> {
        let dir = work.join("fleet");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let server = nats_server(&dir, port, None)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let url = format!("nats://127.0.0.1:{port}");
        let broker = Broker {
            url: url.clone(),
            ..Broker::default()
        };
        crate::fleet::runtime()?.block_on(async {
            let js = async_nats::jetstream::new(broker.connect("vigil bench", true).await?);
            super::fleet::create_stream_and_buckets(&js, 1).await
        })?;
        Ok(LoopbackBroker {
            _server: server,
            url,
        })
    }

    /// Alerts exported per second: `RECORDS` alert records handed to a fresh exporter, timed
    /// until the stream acknowledged the last one.
    pub(super) fn export_rate(&self, work: &Path, runs: u32) -> anyhow::Result<(String, String)> {
        let alert = serde_json::json!({
            "timestamp": "2026-11-28T04:42:33.304350+0000",
            "event_type": "alert",
            "src_ip": "10.0.0.5",
            "alert": { "signature": "Device / Network Scan", "severity": 2 },
            "vigil": {
                "model": "Device / Network Scan",
                "score": 0.9,
                "evidence": { "ports": "120" },
            },
        })
        .to_string();
        let mut run = 0;
        let per_record = median(runs, || {
            run += 1;
            let config = FleetConfig {
                url: Some(self.url.clone()),
                site: "bench".into(),
                appliance: format!("run{run}"),
                drain_secs: 600,
                ..FleetConfig::default()
            };
            let data = work.join("fleet").join(format!("run{run}"));
            let mut exporter = Exporter::start(&config, &data)?.context("the fleet is on")?;
            let start = Instant::now();
            for n in 0..RECORDS {
                exporter
                    .outlet()
                    .send(Kind::Alert, &format!("eve.{n}"), alert.clone());
            }
            exporter.finish();
            Ok(start.elapsed() / RECORDS as u32)
        })?;
        Ok((
            "fleet export, broker on loopback".into(),
            format!(
                "{:.0} alerts/s ({} records, each acknowledged before the next)",
                1.0 / per_record.as_secs_f64(),
                RECORDS
            ),
        ))
    }

    /// `vigil replay` of `capture` exporting to this broker, against `export_off` (the same
    /// replay without `[fleet]`). With `drain_secs = 0` the replay does not wait for the broker
    /// at its end, as live capture never does: what the broker has not taken yet stays in the
    /// outbox.
    pub(super) fn capture_rate(
        &self,
        export_off: &Replayer,
        capture: &Path,
        packets: usize,
        runs: u32,
    ) -> anyhow::Result<(String, String)> {
        let config = format!(
            "[fleet]\nurl = \"{}\"\nsite = \"bench\"\nappliance = \"replay\"\ndrain_secs = 0\n",
            self.url
        );
        let export_on = export_off.sibling("fleet-export", &config, runs)?;
        // Alternated, so the machine's drift between runs weighs on both alike.
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for run in 0..=runs {
            let times = (
                export_on.packet_time(&export_on.run(capture)?),
                export_off.packet_time(&export_off.run(capture)?),
            );
            // The first is a warm-up.
            if run > 0 {
                on.push(times.0);
                off.push(times.1);
            }
        }
        let (on, off) = (middle(&mut on), middle(&mut off));
        // A run's packet time is its time less the start-up: on a tiny capture that is noise
        // around zero, and a ratio of two such figures means nothing.
        if on.min(off) < MEASURABLE {
            return Ok((
                "vigil replay, fleet export on (broker on loopback)".to_string(),
                format!(
                    "not measured: the capture takes under {} ms past start-up (raise --repeat)",
                    MEASURABLE.as_millis()
                ),
            ));
        }
        Ok(row(
            "vigil replay, fleet export on (broker on loopback)",
            packets,
            "packets",
            on,
            Some(("export off", off)),
        ))
    }
}

/// The least packet time a ratio is given for.
const MEASURABLE: Duration = Duration::from_millis(50);

fn middle(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Time from `vigil fleet publish` to the new version running on 2 and on 8 live appliances.
pub(super) fn publish_to_running(
    work: &Path,
    scan_module: &Path,
    runs: u32,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut lab = FleetLab::start(&work.join("fleet-lab"), scan_module, 8)?;
    let mut rows = Vec::new();
    for n in [2, 8] {
        let time = median(runs, || lab.publish_and_wait(n))?;
        rows.push((
            format!("fleet publish -> running on {n} appliances"),
            format!(
                "{:.0} ms (vigil fleet publish through the last hot swap; broker on loopback)",
                time.as_secs_f64() * 1e3
            ),
        ));
    }
    Ok(rows)
}
