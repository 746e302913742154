//! `vigil run`: live capture with AF_XDP until SIGINT or SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;

use super::{open_pipeline, summary, Common};
use crate::capture::bridge::Bridge;
use crate::capture::xdp::{nic, QueueBoard, Queues, XdpConfig, XdpMode, XdpSource};
use crate::capture::Source;
use crate::pipeline::Pipeline;
use crate::plugin_dir::Loaded;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    Auto,
    Native,
    Generic,
}

impl From<ModeArg> for XdpMode {
    fn from(mode: ModeArg) -> XdpMode {
        match mode {
            ModeArg::Auto => XdpMode::Auto,
            ModeArg::Native => XdpMode::Native,
            ModeArg::Generic => XdpMode::Generic,
        }
    }
}

/// The options `vigil run` takes in both live modes.
pub struct LiveArgs {
    pub common: Common,
    pub protocol_logs: bool,
    pub mode: ModeArg,
    pub ready_file: Option<PathBuf>,
}

/// What both live modes start with: the pipeline (with the management API if configured), a
/// stop flag set by SIGINT or SIGTERM, and the board the capture publishes its queues' counters
/// on for the API.
struct Live {
    pipeline: Pipeline,
    loaded: Vec<Loaded>,
    stop: Arc<AtomicBool>,
    queues: QueueBoard,
}

impl Live {
    fn start(args: &LiveArgs) -> anyhow::Result<Live> {
        let common = &args.common;
        let (config, source) = common.load()?;
        let (mut pipeline, loaded) =
            open_pipeline(&config, &common.data_dir, &source, args.protocol_logs)?;
        let queues = QueueBoard::default();
        let context = crate::api::ApiContext {
            max_bundle_bytes: config.bundles.max_bytes,
            data_dir: common.data_dir.clone(),
            trust_dir: source.trust_dir.clone(),
            ready_file: args.ready_file.clone(),
            system: crate::image::slots::SystemPaths::appliance(),
            capture_queues: Some(queues.clone()),
        };
        // The management API and the fleet's updates ask the capture loop the same way.
        let (to_pipeline, control) = std::sync::mpsc::sync_channel(16);
        let api = crate::api::start(&config.api, context, to_pipeline.clone())?;
        let fleet =
            crate::fleet::updates::start(&config.fleet, config.bundles.max_bytes, to_pipeline)?;
        if api || fleet {
            pipeline.attach_control(control);
        }
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&stop))
                .context("installing signal handlers")?;
        }
        Ok(Live {
            pipeline,
            loaded,
            stop,
            queues,
        })
    }
}

/// Opens the sockets of `queues` on `iface` and says which it holds, and whether both directions
/// of a flow land on one queue.
fn open_port(
    iface: &str,
    queues: &Queues,
    mode: ModeArg,
    board: &QueueBoard,
) -> anyhow::Result<XdpSource> {
    let mut source = XdpSource::open(XdpConfig {
        iface: iface.to_string(),
        queues: queues.clone(),
        mode: mode.into(),
        ..XdpConfig::default()
    })?;
    let held = source.queue_ids();
    tracing::info!(
        "{iface}: holding RX queues {held:?} ({:?} mode)",
        source.attached_mode()
    );
    if held.len() > 1 {
        // The capture thread reads every queue and hands each frame to the sensor worker its
        // address pair hashes to, so both directions of a flow meet whatever their queues; a
        // symmetric RSS hash also keeps a flow on one queue (its frames in order).
        tracing::info!(
            "{iface}: frames of every queue go to the sensor worker of their address pair (a \
             symmetric hash in software), so both directions of a flow meet; {}",
            nic::make_rss_symmetric(iface)
        );
    }
    source.publish_to(board.clone());
    Ok(source)
}

/// Logs and prints what each queue of `port` received and what the kernel lost.
fn report_queues(port: &XdpSource) {
    let queues = port.queue_stats();
    for queue in &queues {
        tracing::info!("{}: queue {queue:?}", port.describe());
    }
    summary::print_queues(&port.describe(), &queues);
}

/// Tells whoever watches `ready_file` (vigil-init) that capture is bound, and how: the ports,
/// the queues held on each, the XDP mode.
fn report_ready(ready_file: Option<&Path>, ports: &[&XdpSource]) -> anyhow::Result<()> {
    let Some(path) = ready_file else {
        return Ok(());
    };
    let rx_queues: serde_json::Map<String, serde_json::Value> = ports
        .iter()
        .map(|port| (port.iface().to_string(), port.queue_ids().into()))
        .collect();
    let ready = serde_json::json!({
        "pid": std::process::id(),
        "ports": ports.iter().map(|port| port.iface()).collect::<Vec<_>>(),
        "rx_queues": rx_queues,
        "xdp_mode": ports.first().map(|port| format!("{:?}", port.attached_mode())),
        // Copy mode is what the sockets bind (see capture/xdp/socket.rs).
        "bind": "copy",
        "since": crate::bundle::text::unix_now(),
    });
    std::fs::write(path, ready.to_string())
        .with_context(|| format!("writing the ready file {}", path.display()))
}

pub fn run(args: &LiveArgs, iface: &str, queues: Queues) -> anyhow::Result<()> {
    let Live {
        mut pipeline,
        loaded,
        stop,
        queues: board,
    } = Live::start(args)?;
    let common = &args.common;
    pipeline.enable_tap_resets();
    let mut source = open_port(iface, &queues, args.mode, &board)?;
    tracing::info!(
        "capturing on {} ({:?} mode) with {} sensor worker(s); alerts to {}",
        source.describe(),
        source.attached_mode(),
        pipeline.workers(),
        common.data_dir.join("eve.json").display()
    );
    report_ready(args.ready_file.as_deref(), &[&source])?;
    let result = pipeline.run(&mut source, &stop, true, |_| {});
    // Whatever stopped us, keep what was learned and raised.
    pipeline.finish()?;
    pipeline.save_learned(&common.data_dir);
    tracing::info!("stopped; ring statistics: {:?}", source.stats());
    summary::print(&pipeline, &loaded, &[]);
    report_queues(&source);
    result.map_err(Into::into)
}

/// `vigil run --inline A,B`: bridges two ports, analysing every frame and dropping what the
/// responses in force block, until SIGINT or SIGTERM. Each port reads `queues`; frames go out
/// through the other port's first queue.
pub fn run_inline(args: &LiveArgs, ports: &[String], queues: Queues) -> anyhow::Result<()> {
    let [port_a, port_b] = ports else {
        anyhow::bail!("--inline takes two interfaces: IF_A,IF_B");
    };
    let Live {
        mut pipeline,
        loaded,
        stop,
        queues: board,
    } = Live::start(args)?;
    let common = &args.common;
    let a = open_port(port_a, &queues, args.mode, &board)?;
    let b = open_port(port_b, &queues, args.mode, &board)?;
    let mut bridge = Bridge::new(a, b);
    tracing::info!(
        "capturing on {} <-> {} inline ({:?} mode); alerts to {}",
        bridge.sides().0.describe(),
        bridge.sides().1.describe(),
        bridge.sides().0.attached_mode(),
        common.data_dir.join("eve.json").display()
    );
    let (a, b) = bridge.sides();
    report_ready(args.ready_file.as_deref(), &[a, b])?;
    let result = pipeline.run_inline(&mut bridge, &stop);
    pipeline.finish()?;
    pipeline.save_learned(&common.data_dir);
    let stats = bridge.stats();
    tracing::info!(
        "stopped; forwarded {} + {} frames, dropped {} + {}, {} lost to full TX rings",
        stats.forwarded[0],
        stats.forwarded[1],
        stats.dropped[0],
        stats.dropped[1],
        stats.tx_full
    );
    summary::print(&pipeline, &loaded, &[]);
    report_queues(bridge.sides().0);
    report_queues(bridge.sides().1);
    result.map_err(Into::into)
}
