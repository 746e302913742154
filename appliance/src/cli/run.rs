//! `vigil run`: live capture with AF_XDP until SIGINT or SIGTERM.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;

use super::{open_pipeline, summary, Common};
use crate::capture::bridge::Bridge;
use crate::capture::xdp::{XdpConfig, XdpMode, XdpSource, POLL_TIMEOUT_MS};
use crate::pipeline::wall_clock;
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

/// What both live modes start with: the pipeline (with the management API if configured) and a
/// stop flag set by SIGINT or SIGTERM.
struct Live {
    pipeline: Pipeline,
    loaded: Vec<Loaded>,
    stop: Arc<AtomicBool>,
}

impl Live {
    fn start(common: &Common, ready_file: Option<&Path>) -> anyhow::Result<Live> {
        let (config, source) = common.load()?;
        let (mut pipeline, loaded) = open_pipeline(&config, &common.data_dir, &source, false)?;
        let context = crate::api::ApiContext {
            max_bundle_bytes: config.bundles.max_bytes,
            data_dir: common.data_dir.clone(),
            trust_dir: source.trust_dir.clone(),
            ready_file: ready_file.map(Path::to_path_buf),
            system: crate::image::slots::SystemPaths::appliance(),
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
        })
    }
}

/// Tells whoever watches `ready_file` (vigil-init) that capture is bound, and how.
fn report_ready(ready_file: Option<&Path>, ports: &[&str], mode: XdpMode) -> anyhow::Result<()> {
    let Some(path) = ready_file else {
        return Ok(());
    };
    let ready = serde_json::json!({
        "pid": std::process::id(),
        "ports": ports,
        "xdp_mode": format!("{mode:?}"),
        // Copy mode is what the sockets bind (see capture/xdp/socket.rs).
        "bind": "copy",
        "since": crate::bundle::text::unix_now(),
    });
    std::fs::write(path, ready.to_string())
        .with_context(|| format!("writing the ready file {}", path.display()))
}

pub fn run(
    common: &Common,
    iface: &str,
    queue: u32,
    mode: ModeArg,
    ready_file: Option<&Path>,
) -> anyhow::Result<()> {
    let Live {
        mut pipeline,
        loaded,
        stop,
    } = Live::start(common, ready_file)?;
    pipeline.enable_tap_resets();
    let mut source = XdpSource::open(XdpConfig {
        iface: iface.to_string(),
        queue,
        mode: mode.into(),
        ..XdpConfig::default()
    })?;
    tracing::info!(
        "capturing on {iface} queue {queue} ({:?} mode); alerts to {}",
        source.attached_mode(),
        common.data_dir.join("eve.json").display()
    );
    report_ready(ready_file, &[iface], source.attached_mode())?;
    let result = pipeline.run(&mut source, &stop, true, |_| {});
    // Whatever stopped us, keep what was learned and raised.
    pipeline.finish()?;
    pipeline.save_learned(&common.data_dir);
    tracing::info!("stopped; ring statistics: {:?}", source.stats());
    summary::print(&pipeline, &loaded, &[]);
    result.map_err(Into::into)
}

/// `vigil run --inline A,B`: bridges two ports, analysing every frame and dropping what the
/// responses in force block, until SIGINT or SIGTERM.
pub fn run_inline(
    common: &Common,
    ports: &[String],
    queue: u32,
    mode: ModeArg,
    ready_file: Option<&Path>,
) -> anyhow::Result<()> {
    let [port_a, port_b] = ports else {
        anyhow::bail!("--inline takes two interfaces: IF_A,IF_B");
    };
    let Live {
        mut pipeline,
        loaded,
        stop,
    } = Live::start(common, ready_file)?;
    let side = |iface: &str| XdpConfig {
        iface: iface.to_string(),
        queue,
        mode: mode.into(),
        ..XdpConfig::default()
    };
    let mut bridge = Bridge::open(side(port_a), side(port_b))?;
    tracing::info!(
        "capturing on {port_a} <-> {port_b} inline ({:?} mode); alerts to {}",
        bridge.sides().0.attached_mode(),
        common.data_dir.join("eve.json").display()
    );
    report_ready(
        ready_file,
        &[port_a.as_str(), port_b.as_str()],
        bridge.sides().0.attached_mode(),
    )?;
    let mut result = Ok(());
    while !stop.load(Ordering::Relaxed) {
        match bridge.step(&mut |packet| pipeline.handle(packet)) {
            Ok(0) => {
                if let Err(err) = bridge.wait(POLL_TIMEOUT_MS) {
                    result = Err(anyhow::Error::from(err));
                    break;
                }
                pipeline.idle(wall_clock())?;
            }
            Ok(_) => {}
            Err(err) => {
                result = Err(anyhow::anyhow!("{err}"));
                break;
            }
        }
    }
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
    result
}
