//! One capture loop: frames -> decode -> flows -> event batches -> plugins -> sinks.
//!
//! Packet time drives everything here: ticks, flow timeouts and the plugins' windows, so a
//! replayed pcap produces exactly the breaches the live capture did.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use vigil_plugin_sdk::{Endpoint, Event, EventKind, Timestamp, Transport};

use crate::analyzer::{Analysis, ProtocolLogs};
use crate::api::{Answer, Control, IncidentHeader, Request, MAX_LISTED_DEVICES};
use crate::bundle::text::unix_now;
use crate::capture::reorder::ReorderStats;
use crate::capture::{CaptureError, Packet, QueueCounters};
use crate::config::Config;
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
use crate::sensor::front::{Front, FrontCounts};
use crate::sensor::shards::{Mark, MarkKind, Merge};
use crate::sensor::{Emissions, Sensed, SensorConfig, Stage, Tag};

use crate::store::{self, health, Sink};
use crate::stream::StreamConfig;

mod runner;
#[cfg(test)]
mod tests;
pub use runner::Shed;

/// What counts as a device's pattern of life when it is enforced: services it used at least this
/// long before the decision, so the attack's own connections are not among them.
const PATTERN_HORIZON_MICROS: u64 = 3600 * 1_000_000;
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
    /// Events handed to the plugins (ticks included).
    pub events: u64,
    /// Events the sensors produced.
    pub events_sensed: u64,
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
    /// What live capture shed because detection was behind (capture never waits for it).
    pub shed: Shed,
    pub first_packet: Option<Timestamp>,
    pub last_packet: Option<Timestamp>,
}

impl PipelineStats {
    /// The capture side's counts, as of its latest chunk.
    fn take_front(&mut self, front: &FrontCounts) {
        self.packets = front.packets;
        self.bytes = front.bytes;
        self.first_packet = front.first_packet;
        self.last_packet = front.last_packet;
        self.clock_clamped = front.clock_clamped;
        self.decoded = front.decoded;
        self.skipped = front.skipped.clone();
        self.unsupported_link_types = front.unsupported_link_types.clone();
        self.fragments = front.fragments;
        self.enforced = front.enforced;
        self.events_sensed = front.events_sensed;
    }

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
    /// The capture side: numbering, the clock and ticks, and the sensors (decode, flows,
    /// parsers), one per worker ([`Pipeline::set_workers`]). On the capture thread during
    /// [`Pipeline::run`], which leaves an empty one here meanwhile.
    front: Front,
    /// What the capture thread last said of its sensors, while it has them.
    away: Option<runner::SensorReport>,
    /// How the sensors are set up, to set them up again.
    sensor_config: SensorConfig,
    /// The protocol logs, written with the sensors' lines in packet order.
    logs: Option<ProtocolLogs>,
    /// A sensed chunk being detected: the sensors' emissions and the chunk's marks, and the
    /// merged order (reused).
    outs: Vec<Emissions>,
    marks: Vec<Mark>,
    order: Vec<(Tag, Step)>,
    /// Devices whose blocked connections are to be reset once the sensors' flow tables are at
    /// hand (detection may run while the capture thread has them).
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
    /// The responses in force as last published for the capture thread: after each chunk's
    /// detection, and at once when a decision brings one in force.
    published: Arc<runner::Published>,
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
    recent: Vec<Emitted>,
    incidents: std::collections::BTreeMap<u64, EmittedIncident>,
    /// Where and how often what was learned is saved while running.
    checkpoints: Option<Checkpoints>,
    /// The fleet exporter's heartbeat: plugin versions after an install, capture drops (from
    /// the capture thread's reports).
    fleet: Option<Outlet>,
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
            front: Front::new(&sensor_config, 1).expect("one sensor runs on the caller's thread"),
            away: None,
            sensor_config,
            logs,
            outs: Vec::new(),
            marks: Vec::new(),
            order: Vec::new(),
            reset_devices: Vec::new(),
            host,
            store: None,
            control: None,
            queues: Vec::new(),
            actions: None,
            published: Arc::default(),
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
        self.front = Front::new(&self.sensor_config, self.workers())
            .expect("as many sensors as already run");
    }

    /// Splits the traffic over `workers` sensors, each on its own thread (see
    /// [`crate::sensor::shards`]), sharing the configured bounds. What comes out does not depend
    /// on the number. Call before the first packet: what the sensors hold is dropped.
    pub fn set_workers(&mut self, workers: usize) -> io::Result<()> {
        self.front = Front::new(&self.sensor_config, workers)?;
        Ok(())
    }

    pub fn workers(&self) -> usize {
        self.front.sensors().len().max(1)
    }

    /// What the sensors say of themselves: here, or as the capture thread last reported.
    fn sensor_report(&self) -> runner::SensorReport {
        match &self.away {
            Some(report) => report.clone(),
            None => runner::SensorReport::of(self.front.sensors()),
        }
    }

    pub fn flow_stats(&self) -> FlowStats {
        self.sensor_report().flows
    }

    /// Frames held for flows not yet attributed, released to the parsers or dropped.
    pub fn held_stats(&self) -> HeldStats {
        self.sensor_report().held
    }

    /// What the parsers counted, over every sensor.
    pub fn analysis(&self) -> Analysis {
        self.sensor_report().analysis
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
            for sensor in self.front.sensors() {
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
        self.fleet = Some(outlet);
    }

    pub fn attach_control(&mut self, control: mpsc::Receiver<Control>) {
        self.control = Some(control);
    }

    /// Answers what the management API asked since the last call: between chunks, and every
    /// 20 ms when none comes, while [`Pipeline::run`] runs.
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
    /// lifted) from the capture thread's next chunk, with the connections a confirmed action
    /// blocks reset.
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
                self.publish_enforcement();
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
        if let Some(fleet) = &self.fleet {
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
        if let Some(fleet) = &self.fleet {
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
        let index = self.front.admit(packet);
        self.sense();
        let dropped = self.front.dropped(index);
        self.detect_chunk()?;
        Ok(dropped)
    }

    /// The sensors take the chunk, with the responses in force as they are now; on a mirror
    /// port, resets are queued for what they drop.
    fn sense(&mut self) {
        let enforcement = self.actions.as_ref().map(Actions::snapshot);
        self.front.sense(enforcement.as_deref());
        self.stats.take_front(self.front.counts());
        if self.tap_resets {
            runner::tap_resets(&self.front, &mut self.resets);
        }
    }

    /// Detection over the sensed chunk, then the resets it asked for.
    fn detect_chunk(&mut self) -> io::Result<()> {
        self.front.take(&mut self.outs, &mut self.marks);
        let detected = self.detect_taken();
        self.reset_queued();
        detected
    }

    /// Detection over the chunk taken into `outs` and `marks`: its emissions merged into packet
    /// order with its ticks, into the device table, the response guard, the protocol logs and
    /// the plugins' batch, handed over every `batch_size` events at a packet's end.
    fn detect_taken(&mut self) -> io::Result<()> {
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

    /// Lets time pass without traffic (live capture on a quiet link): ticks, expires flows and
    /// hands plugins what is waiting.
    pub fn idle(&mut self, now: Timestamp) -> io::Result<()> {
        self.front.idle(now);
        self.sense();
        self.detect_chunk()?;
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
        // What the requests brought in force (and operators' changes taken in above) is
        // enforced from the capture thread's next chunk, not after this one's detection.
        self.publish_enforcement();
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

    /// Ends every open flow, hands the plugins what is left and flushes the sink. Call at the
    /// end of a replay or on shutdown.
    pub fn finish(&mut self) -> io::Result<()> {
        self.front.end();
        self.sense();
        self.detect_chunk()?;
        self.dispatch()?;
        if let Some(logs) = self.logs.as_mut() {
            logs.flush();
        }
        self.sink.finish()
    }
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
