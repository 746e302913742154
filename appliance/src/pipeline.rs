//! One capture loop: frames -> decode -> flows -> event batches -> plugins -> sinks.
//!
//! Packet time drives everything here: ticks, flow timeouts and the plugins' windows, so a
//! replayed pcap produces exactly the breaches the live capture did.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vigil_plugin_sdk::{Endpoint, Event, EventKind, Timestamp, Transport};

use crate::analyzer::{Analysis, ProtocolLogs};
use crate::api::{Answer, Control, IncidentHeader, Request, MAX_LISTED_DEVICES};
use crate::bundle::text::unix_now;
use crate::capture::reorder::ReorderStats;
use crate::capture::{CaptureError, Next, Packet, QueueCounters, Source};
use crate::config::Config;
use crate::control_cadence::ControlCadence;
use crate::counters::Counters;
use crate::decode::fragments::{FragmentConfig, FragmentStats};
use crate::decode::{Skip, SkipCounts};
use crate::devices::DeviceTable;
use crate::fleet::export::{plugin_versions, Outlet};
use crate::flow::held::HeldStats;
use crate::flow::{FlowConfig, FlowStats};
use crate::host::{Emitted, EmittedIncident, EventBatch, PluginHost};
use crate::installed::{apply, BundleStore, InstallError, Installation};
use crate::respond::{reset, ActionError, Actions, Decision, ResponseGuard};
use crate::sensor::shards::{Mark, MarkKind, Merge, Shards};
use crate::sensor::{Emissions, Sensed, SensorConfig, Stage, Tag};
use crate::store::{self, health, Sink};
use crate::stream::StreamConfig;

/// What counts as a device's pattern of life when it is enforced: services it used at least this
/// long before the decision, so the attack's own connections are not among them.
const PATTERN_HORIZON_MICROS: u64 = 3600 * 1_000_000;
/// Packets read before the sensors run over them together: enough to keep several workers
/// busy for a while, few enough that the API and the plugins never wait long.
const CHUNK_PACKETS: usize = 2048;
/// Ticks (and flow expiry) run once per second of packet time.
const TICK_MICROS: u64 = 1_000_000;
/// Breaches kept in memory for the run's summary; all of them go to the sinks regardless.
const RECENT_BREACHES: usize = 10_000;

/// What [`Pipeline::tap_batches`] calls with each batch.
pub type BatchTap = Box<dyn FnMut(&EventBatch) + Send>;

#[derive(Debug, Clone, Default)]
pub struct PipelineStats {
    pub packets: u64,
    pub bytes: u64,
    pub decoded: u64,
    pub skipped: SkipCounts,
    /// Frames of link types not decoded ([`crate::decode::link::supported`]), by link type.
    pub unsupported_link_types: BTreeMap<i32, u64>,
    /// IPv4/IPv6 fragment reassembly (fragments are neither decoded nor skipped frames; a
    /// datagram they complete is decoded with the fragment that completed it).
    pub fragments: FragmentStats,
    pub events: u64,
    pub batches: u64,
    /// Packets the responses in force drop (inline) or would drop (on a mirror port).
    pub enforced: u64,
    /// TCP resets injected on a mirror port for blocked connections.
    pub resets_sent: u64,
    pub breaches_by_model: BTreeMap<String, u64>,
    /// Packets stamped earlier than one already handled (merged captures, a clock stepped
    /// back, crafted files): handled at the latest time instead, so time never runs backwards.
    pub clock_clamped: u64,
    /// What the reorder buffers in front of the sources did (replay).
    pub reorder: ReorderStats,
    pub first_packet: Option<Timestamp>,
    pub last_packet: Option<Timestamp>,
}

impl PipelineStats {
    pub fn breaches(&self) -> u64 {
        self.breaches_by_model.values().sum()
    }

    /// Why no frame could be decoded, when frames came and none was (a capture of a link type
    /// not decoded here, or with no IP in it): such a run has shown nothing, and says so.
    pub fn undecodable(&self) -> Option<String> {
        if self.packets == 0 || self.decoded > 0 {
            return None;
        }
        let mut reasons: Vec<String> = self
            .unsupported_link_types
            .iter()
            .map(|(&link_type, n)| {
                let name = crate::decode::link::name(pcap_parser::Linktype(link_type));
                format!("{n} of unsupported link type {link_type} ({name})")
            })
            .collect();
        reasons.extend(
            self.skipped
                .iter()
                .filter(|(reason, _)| *reason != Skip::UnsupportedLinkType)
                .map(|(reason, n)| format!("{n} {reason}")),
        );
        let skipped: u64 = self.skipped.iter().map(|(_, n)| n).sum();
        let held = self.packets.saturating_sub(skipped);
        if held > 0 {
            reasons.push(format!("{held} fragments never reassembled"));
        }
        Some(format!(
            "none of the {} frames could be decoded: {}",
            self.packets,
            reasons.join(", ")
        ))
    }
}

pub struct Pipeline {
    /// Decode, flows and parsers: the sensors, one per worker ([`Pipeline::set_workers`]).
    shards: Shards,
    /// How the sensors are set up, to set them up again.
    sensor_config: SensorConfig,
    /// The protocol logs, written with the sensors' lines in packet order.
    logs: Option<ProtocolLogs>,
    /// The next packet's number: its place in the capture's order ([`Tag`]).
    seq: u64,
    /// A sensed chunk waiting for detection: the sensors' emissions and the chunk's marks
    /// (see [`Pipeline::run`]), and the merged order (reused).
    outs: Vec<Emissions>,
    marks: Vec<Mark>,
    sensed: bool,
    order: Vec<(Tag, Step)>,
    /// Devices whose blocked connections are to be reset once the sensors' flow tables are at
    /// hand (detection may run while the sensors work).
    reset_devices: Vec<(std::net::IpAddr, u64)>,
    host: PluginHost,
    /// Installed bundles, for installs while running and the host's rollbacks.
    store: Option<BundleStore>,
    /// Requests from the management API, answered between packets.
    control: Option<mpsc::Receiver<Control>>,
    /// The live source's queue counters, taken every few thousand packets and when idle (a
    /// system call each), for `/metrics`.
    queues: Vec<QueueCounters>,
    /// The responses requested and in force (`DATA_DIR/actions.json`).
    actions: Option<Actions>,
    /// Decides which requested actions may come in force without an operator.
    guard: ResponseGuard,
    /// On a live mirror port: reset blocked TCP connections through the source.
    tap_resets: bool,
    /// RST frames waiting to go out through the source ([`Pipeline::take_resets`]).
    resets: Vec<Vec<u8>>,
    devices: DeviceTable,
    batch: EventBatch,
    batch_size: usize,
    /// Sees every batch the plugins are handed ([`Pipeline::tap_batches`]).
    tap: Option<BatchTap>,
    sink: Box<dyn Sink>,
    stats: PipelineStats,
    next_tick: Option<Timestamp>,
    /// The latest time handled (packets and idle ticks): packets stamped earlier are handled
    /// at it.
    clock: Option<Timestamp>,
    recent: Vec<Emitted>,
    incidents: std::collections::BTreeMap<u64, EmittedIncident>,
    /// Where and how often what was learned is saved while running.
    checkpoints: Option<Checkpoints>,
    /// The fleet exporter's heartbeat: plugin versions after an install, capture drops (last
    /// reported at the instant kept beside it).
    fleet: Option<(Outlet, std::time::Instant)>,
}

/// Periodic checkpoints of learned state, on the wall clock (in a replay too: what a kill
/// loses is wall-clock work).
struct Checkpoints {
    data_dir: PathBuf,
    every: Duration,
    last: Instant,
}

impl Pipeline {
    pub fn new(
        flow: FlowConfig,
        streams: StreamConfig,
        host: PluginHost,
        devices: DeviceTable,
        batch_size: usize,
        sink: Box<dyn Sink>,
        logs: Option<ProtocolLogs>,
    ) -> Pipeline {
        let sensor_config = SensorConfig {
            flow,
            streams,
            fragments: FragmentConfig::default(),
            keep_logs: logs.is_some(),
        };
        Pipeline {
            shards: Shards::new(&sensor_config, 1).expect("one sensor runs on the caller's thread"),
            sensor_config,
            logs,
            seq: 0,
            outs: Vec::new(),
            marks: Vec::new(),
            sensed: false,
            order: Vec::new(),
            reset_devices: Vec::new(),
            host,
            store: None,
            control: None,
            queues: Vec::new(),
            actions: None,
            guard: ResponseGuard::new(Default::default())
                .expect("the default guard config names no networks"),
            tap_resets: false,
            resets: Vec::new(),
            devices,
            batch: EventBatch::new(),
            batch_size: batch_size.max(1),
            tap: None,
            sink,
            stats: PipelineStats::default(),
            next_tick: None,
            clock: None,
            recent: Vec::new(),
            incidents: std::collections::BTreeMap::new(),
            checkpoints: None,
            fleet: None,
        }
    }

    /// A pipeline set up as `config` says: flow table, streams, fragment reassembly, batch size,
    /// sensor workers. Fails only if the workers' threads cannot be made.
    pub fn from_config(
        config: &Config,
        host: PluginHost,
        devices: DeviceTable,
        sink: Box<dyn Sink>,
        logs: Option<ProtocolLogs>,
    ) -> io::Result<Pipeline> {
        let mut pipeline = Pipeline::new(
            config.flow.clone(),
            config.stream.clone(),
            host,
            devices,
            config.pipeline.batch_size,
            sink,
            logs,
        );
        pipeline.sensor_config.fragments = config.fragments.clone();
        pipeline.set_workers(config.pipeline.workers)?;
        Ok(pipeline)
    }

    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// Saves what was learned into `data_dir` every `every` of wall clock while running
    /// ([`Pipeline::save_learned`]), so a kill -9 loses at most that much.
    pub fn enable_checkpoints(&mut self, data_dir: &Path, every: Duration) {
        self.checkpoints = Some(Checkpoints {
            data_dir: data_dir.to_path_buf(),
            every,
            last: Instant::now(),
        });
    }

    fn checkpoint_if_due(&mut self) {
        let Some(checkpoints) = self.checkpoints.as_mut() else {
            return;
        };
        if checkpoints.last.elapsed() < checkpoints.every {
            return;
        }
        checkpoints.last = Instant::now();
        let data_dir = checkpoints.data_dir.clone();
        self.save_learned(&data_dir);
    }

    /// Keeps what was learned: every plugin's state, the device table, and the actions if their
    /// last write failed, each written atomically. A file that cannot be written is counted
    /// ([`health`]) and written by the next checkpoint: never an error that stops the daemon.
    pub fn save_learned(&mut self, data_dir: &Path) {
        crate::plugin_dir::save_state(&mut self.host, data_dir);
        let now = self.stats.last_packet.unwrap_or_default();
        let path = store::devices::devices_path(data_dir);
        match store::devices::save(data_dir, &self.devices, now) {
            Ok(()) => health::write_ok(&path),
            Err(err) => health::write_failed(&path, &err, 1),
        }
        if let Some(actions) = self.actions.as_mut() {
            actions.save_if_unsaved();
        }
        health::checkpointed(unix_now());
    }

    /// Shows `tap` every batch just before the plugins get it, so a plugin run outside the host
    /// (`crate::plugin_replay`) sees the very batches the host's plugins do.
    pub fn tap_batches(&mut self, tap: BatchTap) {
        self.tap = Some(tap);
    }

    /// Reassembles fragments within `config`'s bounds instead of the defaults. Call before the
    /// first packet: what the sensors hold is dropped.
    pub fn set_fragments(&mut self, config: FragmentConfig) {
        self.sensor_config.fragments = config;
        self.shards = Shards::new(&self.sensor_config, self.shards.sensors().len())
            .expect("as many sensors as already run");
    }

    /// Splits the traffic over `workers` sensors, each on its own thread (see
    /// [`crate::sensor::shards`]), sharing the configured bounds. What comes out does not depend
    /// on the number. Call before the first packet: what the sensors hold is dropped.
    pub fn set_workers(&mut self, workers: usize) -> io::Result<()> {
        self.shards = Shards::new(&self.sensor_config, workers)?;
        Ok(())
    }

    pub fn workers(&self) -> usize {
        self.shards.sensors().len()
    }

    pub fn flow_stats(&self) -> FlowStats {
        let mut stats = FlowStats::default();
        for sensor in self.shards.sensors() {
            stats += sensor.flow_stats();
        }
        stats
    }

    /// Frames held for flows not yet attributed, released to the parsers or dropped.
    pub fn held_stats(&self) -> HeldStats {
        let mut stats = HeldStats::default();
        for sensor in self.shards.sensors() {
            stats += sensor.held_stats();
        }
        stats
    }

    /// What the parsers counted, over every sensor.
    pub fn analysis(&self) -> Analysis {
        let mut analysis = Analysis::default();
        for sensor in self.shards.sensors() {
            analysis.add(sensor.analyzer());
        }
        analysis
    }

    pub fn host(&self) -> &PluginHost {
        &self.host
    }

    pub fn host_mut(&mut self) -> &mut PluginHost {
        &mut self.host
    }

    pub fn devices(&self) -> &DeviceTable {
        &self.devices
    }

    /// Lets the pipeline install bundles while it runs ([`Pipeline::install`]).
    pub fn attach_store(&mut self, store: BundleStore) {
        self.store = Some(store);
    }

    /// Records responder plugins' actions and enforces those in force, autonomously where
    /// `guard` lets them.
    pub fn attach_actions(&mut self, actions: Actions, guard: ResponseGuard) {
        self.actions = Some(actions);
        self.guard = guard;
    }

    pub fn guard(&self) -> &ResponseGuard {
        &self.guard
    }

    /// Tears blocked TCP connections down with injected resets (tap mode on a live port): every
    /// established one the moment an action comes in force, and any that sends a blocked segment
    /// afterwards.
    pub fn enable_tap_resets(&mut self) {
        self.tap_resets = true;
    }

    /// The RST frames decided since the last call, for the caller to inject.
    pub fn take_resets(&mut self) -> std::vec::Drain<'_, Vec<u8>> {
        self.resets.drain(..)
    }

    /// Queues resets for the established TCP connections of `device` that the responses in force
    /// at `now` (Unix seconds) block, in either direction, as soon as the sensors' flow tables
    /// are at hand ([`Pipeline::reset_queued`]).
    fn reset_connections_of(&mut self, device: std::net::IpAddr, now: u64) {
        if self.tap_resets && self.actions.is_some() {
            self.reset_devices.push((device, now));
        }
    }

    fn reset_queued(&mut self) {
        let Some(actions) = self.actions.as_ref() else {
            return;
        };
        for (device, now) in self.reset_devices.drain(..) {
            for sensor in self.shards.sensors() {
                reset::reset_blocked(
                    sensor.flows(),
                    actions.table(),
                    device,
                    now,
                    &mut self.resets,
                );
            }
        }
    }

    /// Takes in an operator's confirmations and clearings made while running, resetting what a
    /// confirmed action blocks.
    fn take_in_operator_changes(&mut self, now: Timestamp) {
        let Some(actions) = self.actions.as_mut() else {
            return;
        };
        match actions.reload_if_changed() {
            Ok(activated) => {
                for device in activated {
                    self.reset_connections_of(device, now.micros() / 1_000_000);
                }
            }
            Err(err) => tracing::error!("reading the operator's changes to actions: {err}"),
        }
    }

    /// The live source's queue counters as last taken.
    pub fn queue_counters(&self) -> &[QueueCounters] {
        &self.queues
    }

    pub fn actions(&self) -> Option<&Actions> {
        self.actions.as_ref()
    }

    /// Takes requests from the management API while running ([`Pipeline::run`]).
    /// Keeps the fleet's heartbeat current (versions, capture drops).
    pub fn attach_fleet(&mut self, outlet: Outlet) {
        outlet.set_plugins(plugin_versions(&self.host));
        self.fleet = Some((outlet, std::time::Instant::now()));
    }

    /// About once a second (wall clock): reading the drops is a system call.
    fn report_capture(&mut self, source: &dyn Source) {
        if let Some((fleet, reported)) = &mut self.fleet {
            if reported.elapsed() >= std::time::Duration::from_secs(1) {
                fleet.set_capture(self.stats.packets, source.capture_drops());
                *reported = std::time::Instant::now();
            }
        }
    }

    pub fn attach_control(&mut self, control: mpsc::Receiver<Control>) {
        self.control = Some(control);
    }

    /// Answers what the management API asked since the last call. Loops that handle packets
    /// call it as [`ControlCadence`] says.
    pub fn serve_control(&mut self) {
        let Some(control) = self.control.take() else {
            return;
        };
        while let Ok(Control { request, reply }) = control.try_recv() {
            let answer = match request {
                Request::Install(bytes) => match self.install(&bytes) {
                    Ok(installed) => Answer {
                        status: 200,
                        body: serde_json::json!({ "installed": installed.describe() }),
                    },
                    Err(err) => refused_bundle("bundle pushed through the API", err),
                },
                Request::RollBack(name) => match self.roll_back(&name) {
                    Ok(done) => {
                        tracing::warn!("{done} through the API");
                        Answer {
                            status: 200,
                            body: serde_json::json!({ "rolled_back": done }),
                        }
                    }
                    Err(err) => refused_bundle(&format!("rolling {name} back"), err),
                },
                Request::ListActions => match &self.actions {
                    Some(actions) => Answer {
                        status: 200,
                        body: serde_json::to_value(actions.list().collect::<Vec<_>>())
                            .unwrap_or_default(),
                    },
                    None => no_actions(),
                },
                Request::Decide {
                    id,
                    decision,
                    by,
                    reason,
                } => self.decide(id, decision, &by, reason.as_deref()),
                Request::ListIncidents => Answer {
                    status: 200,
                    body: serde_json::to_value(
                        self.incidents
                            .values()
                            .map(|emitted| IncidentHeader::of(&emitted.incident))
                            .collect::<Vec<_>>(),
                    )
                    .unwrap_or_default(),
                },
                Request::ListDevices => {
                    let mut devices: Vec<_> = self.devices.devices().iter().collect();
                    devices.sort_by_key(|device| std::cmp::Reverse(device.last_seen));
                    devices.truncate(MAX_LISTED_DEVICES);
                    Answer {
                        status: 200,
                        body: serde_json::to_value(devices).unwrap_or_default(),
                    }
                }
                Request::Device(address) => match self.devices.device_of(address) {
                    Some(device) => Answer {
                        status: 200,
                        body: serde_json::to_value(device).unwrap_or_default(),
                    },
                    None => Answer {
                        status: 404,
                        body: serde_json::json!({ "error": format!("{address} is no device") }),
                    },
                },
                Request::Incident(id) => match self.incidents.get(&id) {
                    Some(emitted) => Answer {
                        status: 200,
                        body: serde_json::json!({
                            "incident": &*emitted.incident,
                            "device": self.devices.device_of(emitted.incident.device),
                        }),
                    },
                    None => Answer {
                        status: 404,
                        body: serde_json::json!({ "error": format!("no incident {id} in this run") }),
                    },
                },
                Request::Counters => Answer {
                    status: 200,
                    body: serde_json::to_value(Counters::of(self)).unwrap_or_default(),
                },
                Request::ListPlugins => Answer {
                    status: 200,
                    body: serde_json::Value::Array(
                        self.host
                            .plugins()
                            .into_iter()
                            .map(|p| {
                                serde_json::json!({
                                    "name": p.name,
                                    "version": p.version,
                                    "signer": p.signer,
                                    "kind": format!("{:?}", p.kind),
                                    "events": p.stats.events,
                                    "breaches": p.stats.breaches,
                                    "traps": p.stats.traps,
                                    "quarantined": p.quarantined,
                                })
                            })
                            .collect(),
                    ),
                },
            };
            // The client may have gone; the work is done either way.
            let _ = reply.send(answer);
        }
        self.control = Some(control);
    }

    /// An operator's confirmation or clearing through the API: recorded, and in force (or
    /// lifted) from this pass of the loop, with the connections a confirmed action blocks reset.
    fn decide(&mut self, id: u64, decision: Decision, by: &str, reason: Option<&str>) -> Answer {
        let Some(actions) = self.actions.as_mut() else {
            return no_actions();
        };
        let now = unix_now();
        let decided = actions.decide(id, decision, by, reason, now).map(|action| {
            (
                action.device,
                serde_json::to_value(action).unwrap_or_default(),
            )
        });
        match decided {
            Ok((device, action)) => {
                tracing::info!("action {id}: {decision:?} by {by} through the API");
                if decision == Decision::Confirm {
                    self.reset_connections_of(device, now);
                }
                Answer {
                    status: 200,
                    body: action,
                }
            }
            Err(err) => Answer {
                status: match err {
                    ActionError::NoSuchAction(_) => 404,
                    ActionError::NotPending { .. } | ActionError::NotActive { .. } => 409,
                    ActionError::Io { .. } | ActionError::Corrupt { .. } => 500,
                },
                body: serde_json::json!({ "error": err.to_string() }),
            },
        }
    }

    /// Installs a signed bundle while running, between batches: the events before it went to
    /// the old version, every later one goes to the new one, which took over the learned state.
    /// A refused bundle changes nothing, running or on disk.
    pub fn install(&mut self, bytes: &[u8]) -> Result<Installation, InstallError> {
        self.dispatch()
            .map_err(|err| InstallError::NotApplied(format!("writing output first: {err}")))?;
        let store = self.store.as_mut().ok_or_else(|| {
            InstallError::NotApplied("no trust store: bundles cannot be verified".into())
        })?;
        let host = &mut self.host;
        let installed = store.install(bytes, |bundle| apply(host, bundle))?;
        if let Some((fleet, _)) = &self.fleet {
            fleet.set_plugins(plugin_versions(&self.host));
        }
        Ok(installed)
    }

    /// Goes back to the version of `name` installed before the current one, between batches: on
    /// disk and running, with the learned state carried over (an operator's rollback).
    pub fn roll_back(&mut self, name: &str) -> Result<String, InstallError> {
        self.dispatch()
            .map_err(|err| InstallError::NotApplied(format!("writing output first: {err}")))?;
        let store = self.store.as_mut().ok_or_else(|| {
            InstallError::NotApplied("no trust store: bundles cannot be verified".into())
        })?;
        let bundle = store.rollback(name)?;
        let version = bundle.manifest.version.to_string();
        apply(&mut self.host, &bundle).map_err(|err| {
            InstallError::NotApplied(format!(
                "{name} {version} is installed but did not start ({err}); it runs from the next start"
            ))
        })?;
        if let Some((fleet, _)) = &self.fleet {
            fleet.set_plugins(plugin_versions(&self.host));
        }
        Ok(format!("{name} rolled back to {version}"))
    }

    /// Breaches raised so far (the most recent [`RECENT_BREACHES`]).
    pub fn breaches(&self) -> &[Emitted] {
        &self.recent
    }

    /// Handles one frame; true when the responses in force drop it (an inline bridge then does
    /// not forward it).
    pub fn handle(&mut self, packet: &Packet<'_>) -> io::Result<bool> {
        let index = self.admit(packet);
        let result = self.process();
        let dropped = self.shards.dropped(index);
        self.shards.clear();
        result.map(|()| dropped)
    }

    /// Numbers a frame and adds it to the sensors' chunk, after the tick it makes due.
    fn admit(&mut self, packet: &Packet<'_>) -> usize {
        // Flow timeouts, ticks and the plugins' windows only move forwards.
        let packet = &match self.clock {
            Some(latest) if packet.ts < latest => {
                self.stats.clock_clamped += 1;
                Packet {
                    ts: latest,
                    ..*packet
                }
            }
            _ => *packet,
        };
        self.stats.packets += 1;
        self.stats.bytes += u64::from(packet.wire_len);
        self.stats.first_packet.get_or_insert(packet.ts);
        self.stats.last_packet = Some(packet.ts);
        self.clock = Some(packet.ts);
        self.mark_tick_if_due(packet.ts);
        let index = self.shards.push(self.seq, packet);
        self.seq += 1;
        index
    }

    /// A tick once per second of packet time; one however long the gap: a capture that skips a
    /// night needs no 30,000 ticks.
    fn mark_tick_if_due(&mut self, now: Timestamp) {
        if self.next_tick.is_some_and(|next| now < next) {
            return;
        }
        self.shards.mark(Mark {
            seq: self.seq,
            now,
            kind: MarkKind::Tick,
        });
        self.next_tick = Some(Timestamp((now.micros() / TICK_MICROS + 1) * TICK_MICROS));
    }

    /// Senses the chunk and detects over it, after whatever was sensed before it. The caller
    /// clears the chunk after (having read its drops).
    fn process(&mut self) -> io::Result<()> {
        self.detect_sensed()?;
        if !self.shards.is_empty() {
            let enforcement = self.actions.as_ref().map(Actions::snapshot);
            self.shards.run(enforcement.as_deref());
            self.sensed();
        }
        let detected = self.detect_sensed();
        self.reset_queued();
        detected
    }

    /// The pipelined step of [`Pipeline::run`]: the sensors take the chunk just read while
    /// detection takes in the one before, on the caller's thread, when the sensors have threads
    /// of their own (one after the other otherwise). Either way the merged order, and so
    /// everything detected, is the same; only the responses in force that the sensors see can be
    /// a chunk older.
    fn sense_and_detect(&mut self) -> io::Result<()> {
        let mut shards = std::mem::take(&mut self.shards);
        let detected = if shards.threaded() {
            let enforcement = self.actions.as_ref().map(Actions::snapshot);
            std::thread::scope(|scope| {
                let sensing = scope.spawn(|| shards.run(enforcement.as_deref()));
                let detected = self.detect_sensed();
                if let Err(panic) = sensing.join() {
                    std::panic::resume_unwind(panic);
                }
                detected
            })
        } else {
            let detected = self.detect_sensed();
            let enforcement = self.actions.as_ref().map(Actions::snapshot);
            shards.run(enforcement.as_deref());
            detected
        };
        self.shards = shards;
        self.sensed();
        self.shards.clear();
        self.reset_queued();
        detected
    }

    /// The chunk was sensed: its counts added up, resets for what it dropped on a mirror port
    /// queued, its emissions and marks kept for detection.
    fn sensed(&mut self) {
        self.add_up_sensor_stats();
        if self.tap_resets {
            // A mirror port cannot drop: a blocked TCP connection is reset instead. Resets are
            // built as Ethernet frames, for the Ethernet port they go out on.
            for packet in self.shards.dropped_packets() {
                if packet.link_type == pcap_parser::Linktype::ETHERNET {
                    self.resets.extend(reset::resets(packet.data));
                }
            }
        }
        self.shards.swap_emissions(&mut self.outs);
        self.marks.clear();
        self.marks.extend_from_slice(self.shards.marks());
        self.sensed = true;
    }

    /// Detection over the sensed chunk, if one waits: its emissions merged into packet order
    /// with its ticks, into the device table, the response guard, the protocol logs and the
    /// plugins' batch, handed over every `batch_size` events at a packet's end.
    fn detect_sensed(&mut self) -> io::Result<()> {
        if !std::mem::take(&mut self.sensed) {
            return Ok(());
        }
        let mut outs = std::mem::take(&mut self.outs);
        let mut order = std::mem::take(&mut self.order);
        merge_with_ticks(&outs, &self.marks, &mut order);
        let result = self.detect(&mut outs, &mut order);
        order.clear();
        self.order = order;
        self.outs = outs;
        result
    }

    fn detect(&mut self, outs: &mut [Emissions], order: &mut [(Tag, Step)]) -> io::Result<()> {
        let mut packet = None;
        for &mut (tag, step) in order {
            if packet.is_some_and(|seq| seq != tag.seq) {
                self.packet_done()?;
            }
            packet = Some(tag.seq);
            match step {
                Step::Tick(now) => self.tick(now)?,
                Step::Emitted { sensor, index } => self.take_in(&mut outs[sensor], index),
            }
        }
        if packet.is_some() {
            self.packet_done()?;
        }
        Ok(())
    }

    /// At a packet's end (all it caused merged): the plugins get a full batch.
    fn packet_done(&mut self) -> io::Result<()> {
        if self.batch.len() >= self.batch_size {
            self.dispatch()?;
        }
        Ok(())
    }

    /// One thing a sensor emitted, in its place.
    fn take_in(&mut self, out: &mut Emissions, index: usize) {
        match &mut out.items[index].what {
            Sensed::Event {
                entry,
                learned,
                server,
            } => {
                self.stats.events += 1;
                self.devices.learn(learned);
                if let Some(server) = *server {
                    self.guard.observe_server(server);
                }
                if let Some(entry) = *entry {
                    self.batch.copy_from(&out.events, entry);
                }
            }
            Sensed::Dhcp { ts, payload } => {
                self.devices.dhcp(*ts, &out.bytes[payload.clone()]);
            }
            Sensed::Log { log, record } => {
                if let Some(logs) = self.logs.as_mut() {
                    logs.write(log, std::mem::take(record));
                }
            }
        }
    }

    /// The counts the sensors keep, added up into the pipeline's.
    fn add_up_sensor_stats(&mut self) {
        let mut decoded = 0;
        let mut enforced = 0;
        let mut skipped = SkipCounts::default();
        let mut fragments = FragmentStats::default();
        let mut unsupported = BTreeMap::new();
        for sensor in self.shards.sensors() {
            let stats = sensor.stats();
            decoded += stats.decoded;
            enforced += stats.enforced;
            skipped += &stats.skipped;
            fragments += sensor.fragment_stats();
            for (link_type, n) in &stats.unsupported_link_types {
                *unsupported.entry(*link_type).or_default() += n;
            }
        }
        self.stats.decoded = decoded;
        self.stats.enforced = enforced;
        self.stats.skipped = skipped;
        self.stats.fragments = fragments;
        self.stats.unsupported_link_types = unsupported;
    }

    /// Lets time pass without traffic (live capture on a quiet link): ticks, expires flows and
    /// hands plugins what is waiting.
    pub fn idle(&mut self, now: Timestamp) -> io::Result<()> {
        // The wall clock may lag the packets' stamps: it never takes time back.
        let now = self.clock.map_or(now, |latest| now.max(latest));
        self.clock = Some(now);
        self.mark_tick_if_due(now);
        let result = self.process();
        self.shards.clear();
        result?;
        self.dispatch()?;
        self.serve_control();
        Ok(())
    }

    /// The tick's own part, after the flows it expired: operator changes and expired actions
    /// taken in, the tick event, the sink's and the checkpoints' turn.
    fn tick(&mut self, now: Timestamp) -> io::Result<()> {
        self.take_in_operator_changes(now);
        if let Some(actions) = self.actions.as_mut() {
            if let Err(err) = actions.expire(now.micros() / 1_000_000) {
                tracing::error!("recording expired actions: {err}");
            }
        }
        self.batch.push(&tick(now));
        self.stats.events += 1;
        self.sink.tick()?;
        self.checkpoint_if_due();
        Ok(())
    }

    /// Hands the waiting events to the plugins and their breaches and incidents to the sink.
    pub fn dispatch(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.stats.batches += 1;
        if let Some(tap) = self.tap.as_mut() {
            tap(&self.batch);
        }
        let emitted = self.host.dispatch(&self.batch);
        self.batch.clear();
        // The breaches of this batch back (or fail to back) the actions requested on them.
        for breach in &emitted {
            self.guard.observe_breach(&breach.breach, breach.hop);
        }
        let requests = self.host.take_actions();
        if let (Some(first), true) = (requests.first(), self.actions.is_some()) {
            // An operator's change must not be overwritten by the file written below.
            self.take_in_operator_changes(first.action.ts);
        }
        for emitted in requests {
            let Some(actions) = self.actions.as_mut() else {
                continue;
            };
            let by = format!("{} {}", emitted.plugin, emitted.plugin_version);
            // The pattern of life as it was before the incident: an hour before the decision.
            let allowed = match emitted.action.response {
                vigil_plugin_sdk::Response::EnforcePatternOfLife => self.devices.services_before(
                    emitted.action.device,
                    Timestamp(
                        emitted
                            .action
                            .ts
                            .micros()
                            .saturating_sub(PATTERN_HORIZON_MICROS),
                    ),
                ),
                _ => Vec::new(),
            };
            let at = emitted.action.ts.micros() / 1_000_000;
            let autonomous = !emitted.action.needs_confirmation;
            let held = autonomous
                .then(|| self.guard.hold(&emitted.action))
                .flatten();
            match actions.request(&emitted.action, &by, at, allowed, held.as_ref()) {
                Ok(requested) => {
                    if requested.new && autonomous {
                        self.guard.record(held.as_ref(), emitted.action.ts);
                    }
                    if let (true, Some(why)) = (requested.new, &held) {
                        tracing::warn!(
                            "action {} on {} held for an operator: {why}",
                            requested.id,
                            emitted.action.device
                        );
                    }
                    // The responder asks again on every new version of an incident.
                    if requested.new {
                        tracing::info!(
                            "action {}: {:?} on {} ({})",
                            requested.id,
                            emitted.action.response,
                            emitted.action.device,
                            emitted.action.reason
                        );
                    }
                    if requested.activated {
                        self.reset_connections_of(emitted.action.device, at);
                    }
                }
                Err(err) => tracing::error!("recording an action: {err}"),
            }
        }
        for rollback in self.host.take_rollbacks() {
            if let Some(store) = self.store.as_mut() {
                if let Err(err) = store.revert(&rollback.plugin, &rollback.failed_version) {
                    tracing::error!("recording the rollback of {}: {err}", rollback.plugin);
                }
            }
        }
        let incidents = self.host.take_incidents();
        let any = !emitted.is_empty() || !incidents.is_empty();
        for breach in emitted {
            self.devices.breached(&breach.breach);
            let device = self.devices.device_of(breach.breach.device.ip);
            self.sink.breach(&breach, device)?;
            *self
                .stats
                .breaches_by_model
                .entry(breach.breach.model.clone())
                .or_default() += 1;
            if self.recent.len() < RECENT_BREACHES {
                self.recent.push(breach);
            }
        }
        for incident in incidents {
            let device = self.devices.device_of(incident.incident.device);
            self.sink.incident(&incident, device)?;
            if self.incidents.len() < RECENT_BREACHES
                || self.incidents.contains_key(&incident.incident.id)
            {
                self.incidents.insert(incident.incident.id, incident);
            }
        }
        if any {
            // Alerts reach disk (and whoever tails eve.json) as soon as they are raised.
            self.sink.flush()?;
        }
        Ok(())
    }

    /// The latest version of each incident written during this run (the first
    /// [`RECENT_BREACHES`]).
    pub fn incidents(&self) -> impl Iterator<Item = &EmittedIncident> {
        self.incidents.values()
    }

    /// Runs `source` until it ends or `stop` is set. Live sources (`live`) tick on the wall clock
    /// while the link is quiet.
    pub fn run(
        &mut self,
        source: &mut dyn Source,
        stop: &AtomicBool,
        live: bool,
        mut progress: impl FnMut(&PipelineStats),
    ) -> Result<(), RunError> {
        let mut since_progress = 0;
        let mut control = ControlCadence::default();
        while !stop.load(Ordering::Relaxed) {
            // A chunk: what the source has now, up to CHUNK_PACKETS.
            let mut then = Then::More;
            let mut last = None;
            while self.shards.packets() < CHUNK_PACKETS {
                match source.next_packet() {
                    Ok(Next::Packet(packet)) => {
                        last = Some(packet.ts);
                        self.admit(&packet);
                    }
                    Ok(Next::Idle) => {
                        then = Then::Idle;
                        break;
                    }
                    Ok(Next::End) => {
                        then = Then::End;
                        break;
                    }
                    Err(err) => {
                        self.stats.reorder += source.reorder_stats();
                        return Err(err.into());
                    }
                }
            }
            let handled = self.shards.packets();
            self.sense_and_detect()?;
            if let Some(last) = last {
                if control.due(last) {
                    self.serve_control();
                    self.report_capture(source);
                }
                since_progress += handled;
                if since_progress >= 4096 {
                    since_progress = 0;
                    progress(&self.stats);
                    self.queues = source.queue_counters();
                    self.checkpoint_if_due();
                }
            }
            match then {
                Then::More => {}
                Then::Idle => {
                    self.queues = source.queue_counters();
                    if live {
                        self.report_capture(source);
                        self.idle(wall_clock())?;
                    } else {
                        self.detect_sensed()?;
                        self.serve_control();
                    }
                }
                Then::End => break,
            }
            for frame in self.resets.drain(..) {
                if source.inject(&frame)? {
                    self.stats.resets_sent += 1;
                }
            }
        }
        // What the last step sensed.
        self.detect_sensed()?;
        self.reset_queued();
        self.stats.reorder += source.reorder_stats();
        progress(&self.stats);
        Ok(())
    }

    /// Ends every open flow, hands the plugins what is left and flushes the sink. Call at the
    /// end of a replay or on shutdown.
    pub fn finish(&mut self) -> io::Result<()> {
        self.shards.mark(Mark {
            seq: self.seq,
            now: self.stats.last_packet.unwrap_or_default(),
            kind: MarkKind::End,
        });
        let result = self.process();
        self.shards.clear();
        result?;
        self.dispatch()?;
        if let Some(logs) = self.logs.as_mut() {
            logs.flush();
        }
        self.sink.finish()
    }
}

/// Why a chunk ended: it was full, the source had nothing now, or it ended.
enum Then {
    More,
    Idle,
    End,
}

/// One step of detection, in the capture's order.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Item `index` of sensor number `sensor`'s emissions.
    Emitted { sensor: usize, index: usize },
    /// A tick's own part ([`Pipeline::tick`]).
    Tick(Timestamp),
}

/// The sensors' emissions merged in tag order, with the chunk's ticks in their place, into
/// `order`.
fn merge_with_ticks(outs: &[Emissions], marks: &[Mark], order: &mut Vec<(Tag, Step)>) {
    let mut ticks = marks
        .iter()
        .filter(|mark| mark.kind == MarkKind::Tick)
        .map(|mark| {
            let tag = Tag {
                seq: mark.seq,
                stage: Stage::Tick,
                flow: 0,
            };
            (tag, Step::Tick(mark.now))
        })
        .peekable();
    for (sensor, index, tag) in Merge::new(outs) {
        while let Some(tick) = ticks.next_if(|(at, _)| *at < tag) {
            order.push(tick);
        }
        order.push((tag, Step::Emitted { sensor, index }));
    }
    order.extend(ticks);
}

/// The packet-time heartbeat event.
pub fn tick(now: Timestamp) -> Event<'static> {
    let nowhere = Endpoint {
        ip: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        port: 0,
        mac: [0; 6],
    };
    Event {
        ts: now,
        flow: 0,
        proto: Transport::Other(0),
        src: nowhere,
        dst: nowhere,
        kind: EventKind::Tick,
    }
}

pub fn wall_clock() -> Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(since_epoch.as_micros() as u64)
}

/// Why a run stopped early: the capture (input) or our own output.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Capture(#[from] CaptureError),
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

/// The answer to an install or rollback that did not happen: the bundle's fault (422) or the
/// appliance's (500).
fn refused_bundle(what: &str, err: InstallError) -> Answer {
    tracing::warn!("{what} refused: {err}");
    let status = match err {
        InstallError::Store(_) | InstallError::Io { .. } => 500,
        _ => 422,
    };
    Answer {
        status,
        body: serde_json::json!({ "error": err.to_string() }),
    }
}

/// The answer to an actions request when this pipeline keeps none (no data directory).
fn no_actions() -> Answer {
    Answer {
        status: 503,
        body: serde_json::json!({ "error": "this appliance keeps no actions (no data directory)" }),
    }
}
