//! The console in `vigil bench`: how long its heaviest pages take to make, through its router
//! (session check, the request to the capture loop, JSON, rendering): the incident page of a
//! 300-breach incident, and the alerts page over an eve.json of 100,000 alerts.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use vigil_plugin_sdk::incident::{Phase, TimelineEntry};
use vigil_plugin_sdk::{Evidence, Incident, Timestamp};

use super::bench::median;
use crate::api::{Answer, ApiContext, Control, IncidentHeader, Request as ToPipeline, Role};
use crate::console::session::{Operator, Sessions};
use crate::console::{router, Console};
use crate::image::slots::SystemPaths;

const BREACHES: u32 = 300;
const ALERTS: usize = 100_000;
const TOKEN: &str = "the bench's console token";

/// The rows: the median time to answer each page.
pub fn rows(dir: &Path, runs: u32) -> anyhow::Result<Vec<(String, String)>> {
    let data = dir.join("console-data");
    std::fs::create_dir_all(&data)?;
    write_alerts(&data)?;
    let incident = incident(BREACHES);
    let (to_pipeline, requests) = mpsc::sync_channel(8);
    std::thread::spawn(move || capture_loop(&requests, &incident));
    let console = Console {
        sessions: Sessions::new(
            vec![Operator {
                name: "bench".into(),
                token: TOKEN.into(),
                role: Role::Operator,
            }],
            Duration::from_secs(3600),
        ),
        to_pipeline,
        context: Arc::new(ApiContext {
            max_bundle_bytes: 0,
            data_dir: data.clone(),
            trust_dir: data.clone(),
            ready_file: None,
            system: SystemPaths::appliance(),
            capture_queues: None,
        }),
        started: Instant::now(),
    };
    let app = router(console);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signed_in = runtime.block_on(
        app.clone().oneshot(
            Request::post("/console/signin")
                .body(Body::from(format!("token={}", TOKEN.replace(' ', "+"))))?,
        ),
    )?;
    let cookie = signed_in
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .context("the bench's sign-in set no cookie")?
        .to_string();
    let page = |path: &str| {
        median(runs, || {
            let request = Request::get(path)
                .header(header::COOKIE, &cookie)
                .body(Body::empty())?;
            let start = Instant::now();
            let answer = runtime.block_on(app.clone().oneshot(request))?;
            anyhow::ensure!(
                answer.status() == StatusCode::OK,
                "{path}: {}",
                answer.status()
            );
            runtime.block_on(answer.into_body().collect())?;
            Ok(start.elapsed())
        })
    };
    let incident_page = page("/console/incidents/1")?;
    let alerts_page = page("/console/alerts")?;
    let _ = std::fs::remove_dir_all(&data);
    let ms = |time: Duration| format!("{:.2} ms", time.as_secs_f64() * 1e3);
    Ok(vec![
        (
            format!("console: incident page, {BREACHES} breaches"),
            ms(incident_page),
        ),
        (
            format!("console: alerts page, eve.json of {ALERTS} alerts"),
            ms(alerts_page),
        ),
    ])
}

/// Answers the console's requests as the pipeline would, for one incident and no actions.
fn capture_loop(requests: &mpsc::Receiver<Control>, incident: &Incident) {
    while let Ok(Control { request, reply }) = requests.recv() {
        let body = match request {
            ToPipeline::Incident(_) => serde_json::json!({ "incident": incident, "device": null }),
            ToPipeline::ListIncidents => serde_json::json!([IncidentHeader::of(incident)]),
            _ => serde_json::json!([]),
        };
        let _ = reply.send(Answer { status: 200, body });
    }
}

/// An incident with `breaches` breaches on its timeline, each with evidence.
fn incident(breaches: u32) -> Incident {
    let device = IpAddr::from([10, 0, 0, 66]);
    let at = |n: u32| Timestamp::from_secs(1_800_000_000 + u64::from(n) * 10);
    Incident {
        id: 1,
        device,
        first: at(0),
        last: at(breaches),
        score: 95,
        phases: vec![Phase {
            name: "Discovery".into(),
            tactic: "TA0007".into(),
            techniques: vec!["T1046".into()],
            first: at(0),
        }],
        breaches,
        by_model: vec![("Device / Network Scan".into(), breaches)],
        unusual: breaches,
        learning: 0,
        timeline: (1..=breaches)
            .map(|seq| TimelineEntry {
                seq,
                ts: at(seq),
                model: "Device / Network Scan".into(),
                score: 60,
                phase: "Discovery".into(),
                destinations: (1..=8).map(|n| IpAddr::from([10, 0, 1, n])).collect(),
                ports: vec![22, 80, 139, 443, 445],
                evidence: ["targets", "ports", "window"]
                    .iter()
                    .map(|name| Evidence {
                        name: (*name).into(),
                        value: format!("{name} of breach {seq}"),
                    })
                    .collect(),
            })
            .map(Arc::new)
            .collect(),
        summary: "10.0.0.66 scanned the network.".into(),
    }
}

/// eve.json with [`ALERTS`] alerts of 20 models from 50 devices.
fn write_alerts(data: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let path = crate::store::eve::eve_path(data);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for n in 0..ALERTS {
        let ts = Timestamp::from_secs(1_800_000_000 + n as u64);
        let record = serde_json::json!({
            "timestamp": crate::store::eve::eve_timestamp(ts),
            "event_type": "alert",
            "src_ip": format!("10.0.0.{}", n % 50),
            "alert": { "signature": format!("Device / Model {}", n % 20), "severity": 2 },
            "vigil": { "score": 60, "evidence": { "targets": "40" } },
        });
        writeln!(file, "{record}")?;
    }
    file.flush()?;
    Ok(())
}
