//! The fleet's figure: records exported per second by one appliance to a JetStream broker on
//! loopback, each acknowledged before the next (what keeps them in order through a reconnect).

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::fleet::export::Exporter;
use crate::fleet::outbox::Kind;
use crate::fleet::{Broker, FleetConfig};

/// Records exported per run.
const RECORDS: usize = 5_000;

/// A `nats-server` for the bench, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `nats-server` with JetStream under `dir` on a free loopback port; returns its URL.
fn start_server(dir: &Path) -> anyhow::Result<(Server, String)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("js"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nats-server (apt-get install nats-server)")?;
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "nats-server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((server, format!("nats://127.0.0.1:{port}")))
}

/// Alerts exported per second: `RECORDS` alert records handed to a fresh exporter, timed until
/// the stream acknowledged the last one.
pub fn export_rate(work: &Path, runs: u32) -> anyhow::Result<(String, String)> {
    let dir = work.join("fleet");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (_server, url) = start_server(&dir)?;
    let broker = Broker {
        url: url.clone(),
        ..Broker::default()
    };
    crate::fleet::runtime()?.block_on(async {
        let js = async_nats::jetstream::new(broker.connect("vigil bench", true).await?);
        super::fleet::create_stream_and_buckets(&js, 1).await
    })?;
    let alert = serde_json::json!({
        "timestamp": "2026-11-28T04:42:33.304350+0000",
        "event_type": "alert",
        "src_ip": "10.0.0.5",
        "alert": { "signature": "Device / Network Scan", "severity": 2 },
        "vigil": { "model": "Device / Network Scan", "score": 0.9, "evidence": { "ports": "120" } },
    })
    .to_string();
    let mut run = 0;
    let per_record = super::bench::median(runs, || {
        run += 1;
        let config = FleetConfig {
            url: Some(url.clone()),
            site: "bench".into(),
            appliance: format!("run{run}"),
            drain_secs: 600,
            ..FleetConfig::default()
        };
        let mut exporter =
            Exporter::start(&config, &dir.join(format!("run{run}")))?.context("the fleet is on")?;
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
