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

use crate::analyzer::{Analyzer, ProtocolLogs};
use crate::api::{Answer, Control, IncidentHeader, Request, MAX_LISTED_DEVICES};
use crate::bundle::text::unix_now;
use crate::capture::reorder::ReorderStats;
use crate::capture::{CaptureError, Next, Packet, QueueCounters, Source};
use crate::config::Config;
use crate::control_cadence::ControlCadence;
use crate::counters::Counters;
use crate::decode::fragments::{FragmentConfig, FragmentStats, Reassembler};
use crate::decode::{
    decode_frame, Decoded, Fragment, Frame, Skip, SkipCounts, Transport as Layer4,
};
use crate::devices::DeviceTable;
use crate::fleet::export::{plugin_versions, Outlet};
use crate::flow::held::{HeldFrames, HeldStats};
use crate::flow::{Direction, FlowConfig, FlowStats, FlowTable, Observed};
use crate::host::{Emitted, EmittedIncident, EventBatch, PluginHost};
use crate::installed::{apply, BundleStore, InstallError, Installation};
use crate::respond::{reset, ActionError, Actions, Decision, ResponseGuard};
use crate::store::{self, health, Sink};
use crate::stream::StreamConfig;

/// What counts as a device's pattern of life when it is enforced: services it used at least this
/// long before the decision, so the attack's own connections are not among them.
const PATTERN_HORIZON_MICROS: u64 = 3600 * 1_000_000;
/// DHCP's ports (RFC 2131): leases and host names for the device table.
const DHCP_SERVER: u16 = 67;
const DHCP_CLIENT: u16 = 68;
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
    /// Fragments until their datagram is whole: nothing past decode sees a fragment.
    fragments: Reassembler,
    flows: FlowTable,
    /// Frames of flows not yet attributed, for the parsers once they are.
    held: HeldFrames,
    analyzer: Analyzer,
    /// Flows that ended during the current packet, for the analyzer to close (reused).
    ended: Vec<Event<'static>>,
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
        Pipeline {
            fragments: Reassembler::default(),
            flows: FlowTable::new(flow),
            held: HeldFrames::default(),
            analyzer: Analyzer::new(streams, logs),
            ended: Vec::new(),
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

    /// A pipeline set up as `config` says: flow table, streams, fragment reassembly, batch size.
    pub fn from_config(
        config: &Config,
        host: PluginHost,
        devices: DeviceTable,
        sink: Box<dyn Sink>,
        logs: Option<ProtocolLogs>,
    ) -> Pipeline {
        let mut pipeline = Pipeline::new(
            config.flow.clone(),
            config.stream.clone(),
            host,
            devices,
            config.pipeline.batch_size,
            sink,
            logs,
        );
        pipeline.set_fragments(config.fragments.clone());
        pipeline
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
    /// first packet: datagrams in progress are dropped.
    pub fn set_fragments(&mut self, config: FragmentConfig) {
        self.fragments = Reassembler::new(config);
    }

    pub fn flow_stats(&self) -> FlowStats {
        self.flows.stats()
    }

    /// Frames held for flows not yet attributed, released to the parsers or dropped.
    pub fn held_stats(&self) -> HeldStats {
        self.held.stats()
    }

    pub fn analyzer(&self) -> &Analyzer {
        &self.analyzer
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
    /// at `now` (Unix seconds) block, in either direction.
    fn reset_connections_of(&mut self, device: std::net::IpAddr, now: u64) {
        let (true, Some(actions)) = (self.tap_resets, self.actions.as_ref()) else {
            return;
        };
        reset::reset_blocked(&self.flows, actions.table(), device, now, &mut self.resets);
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
    /// not forward it). No allocation happens here once the batch buffer has grown.
    pub fn handle(&mut self, packet: &Packet<'_>) -> io::Result<bool> {
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
        let mut dropped = false;
        self.stats.packets += 1;
        self.stats.bytes += u64::from(packet.wire_len);
        self.stats.first_packet.get_or_insert(packet.ts);
        self.stats.last_packet = Some(packet.ts);
        self.clock = Some(packet.ts);
        self.advance_clock(packet.ts)?;
        let mut reassembled = false;
        // None: a fragment held until its datagram is whole.
        let decoded = match decode_frame(packet.link_type, packet.data) {
            Ok(Frame::Whole(decoded)) => Some(Ok(decoded)),
            Ok(Frame::Fragment(fragment)) => match self.fragments.push(packet.ts, &fragment) {
                // Decoded as if it had arrived whole, with the completing fragment's time.
                Some(datagram) => {
                    reassembled = true;
                    Some(datagram.decode())
                }
                // A blocked sender's fragments are dropped as they come (a fragment past the
                // first has no port; the datagram's is judged when it completes).
                None => {
                    self.stats.fragments = *self.fragments.stats();
                    dropped = self.blocks_fragment(&fragment, packet.ts);
                    None
                }
            },
            Err(reason) => Some(Err(reason)),
        };
        match decoded {
            Some(Ok(decoded)) => {
                self.stats.decoded += 1;
                if let Some(actions) = &self.actions {
                    let port = match decoded.transport {
                        Layer4::Tcp { dst_port, .. } | Layer4::Udp { dst_port, .. } => {
                            Some(dst_port)
                        }
                        _ => None,
                    };
                    if actions.table().drops(
                        decoded.src,
                        decoded.dst,
                        port,
                        packet.ts.micros() / 1_000_000,
                    ) {
                        self.stats.enforced += 1;
                        dropped = true;
                    }
                }
                if let Layer4::Udp {
                    src_port: DHCP_SERVER | DHCP_CLIENT,
                    dst_port: DHCP_SERVER | DHCP_CLIENT,
                    payload,
                } = decoded.transport
                {
                    self.devices.dhcp(packet.ts, payload);
                }
                let batch = &mut self.batch;
                let events = &mut self.stats.events;
                let ended = &mut self.ended;
                let devices = &mut self.devices;
                let observed = self.flows.observe(packet.ts, &decoded, &mut |event| {
                    *events += 1;
                    devices.observe(&event);
                    batch.push(&event);
                    if matches!(event.kind, EventKind::FlowEnd { .. }) {
                        ended.push(event);
                    }
                });
                // An unattributed flow's packets are nobody's doing yet (see `flow`); what its
                // responder says meanwhile is held for the parsers until it is someone's.
                match observed {
                    Some(observed) if observed.attributed => {
                        let mut parsers = Parsers {
                            analyzer: &mut self.analyzer,
                            devices,
                            batch,
                            events,
                        };
                        if observed.attributed_now {
                            for frame in self.held.release(observed.flow) {
                                if let Ok(Frame::Whole(held)) =
                                    decode_frame(frame.link_type, &frame.data)
                                {
                                    let observed = Observed {
                                        direction: frame.direction,
                                        ..observed
                                    };
                                    parsers.packet(frame.ts, &held, &observed);
                                }
                            }
                        }
                        parsers.packet(packet.ts, &decoded, &observed);
                    }
                    // A reassembled datagram is not one frame: it is not held.
                    Some(observed) if !reassembled && decoded.transport.has_payload() => {
                        self.held.hold(
                            observed.flow,
                            (packet.ts, observed.direction),
                            packet.link_type,
                            packet.data,
                        );
                    }
                    _ => {}
                }
                self.close_ended(packet.ts);
            }
            Some(Err(reason)) => {
                self.stats.skipped.add(reason);
                if reason == Skip::UnsupportedLinkType {
                    *self
                        .stats
                        .unsupported_link_types
                        .entry(packet.link_type.0)
                        .or_default() += 1;
                }
            }
            None => {}
        }
        if reassembled {
            self.stats.fragments = *self.fragments.stats();
        }
        if self.batch.len() >= self.batch_size {
            self.dispatch()?;
        }
        Ok(dropped)
    }

    /// Whether the responses in force drop a fragment held for reassembly.
    fn blocks_fragment(&mut self, fragment: &Fragment<'_>, ts: Timestamp) -> bool {
        let blocked = self.actions.as_ref().is_some_and(|actions| {
            let now = ts.micros() / 1_000_000;
            actions.table().drops(fragment.src, fragment.dst, None, now)
        });
        if blocked {
            self.stats.enforced += 1;
        }
        blocked
    }

    /// Lets time pass without traffic (live capture on a quiet link): ticks, expires flows and
    /// hands plugins what is waiting.
    pub fn idle(&mut self, now: Timestamp) -> io::Result<()> {
        // The wall clock may lag the packets' stamps: it never takes time back.
        let now = self.clock.map_or(now, |latest| now.max(latest));
        self.clock = Some(now);
        self.advance_clock(now)?;
        self.dispatch()?;
        self.serve_control();
        Ok(())
    }

    fn advance_clock(&mut self, now: Timestamp) -> io::Result<()> {
        let due = match self.next_tick {
            None => true,
            Some(next) => now >= next,
        };
        if !due {
            return Ok(());
        }
        // One tick however long the gap: a capture that skips a night needs no 30,000 ticks.
        let batch = &mut self.batch;
        let events = &mut self.stats.events;
        let ended = &mut self.ended;
        let devices = &mut self.devices;
        self.flows.expire(now, &mut |event| {
            *events += 1;
            devices.observe(&event);
            batch.push(&event);
            ended.push(event);
        });
        self.close_ended(now);
        self.fragments.expire(now);
        self.stats.fragments = *self.fragments.stats();
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
        self.next_tick = Some(Timestamp((now.micros() / TICK_MICROS + 1) * TICK_MICROS));
        Ok(())
    }

    /// Lets the analyzer report what the ended flows left unanswered, and forget them.
    fn close_ended(&mut self, now: Timestamp) {
        let batch = &mut self.batch;
        let events = &mut self.stats.events;
        let devices = &mut self.devices;
        for end in self.ended.drain(..) {
            self.guard.observe_flow_end(&end);
            self.analyzer.flow_ended(now, &end, &mut |event| {
                *events += 1;
                devices.observe(event);
                batch.push(event);
            });
        }
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
        let mut since_progress = 0u32;
        let mut control = ControlCadence::default();
        while !stop.load(Ordering::Relaxed) {
            let next = match source.next_packet() {
                Ok(next) => next,
                Err(err) => {
                    self.stats.reorder += source.reorder_stats();
                    return Err(err.into());
                }
            };
            match next {
                Next::Packet(packet) => {
                    // A mirror port cannot drop: a blocked TCP connection is reset instead.
                    // Resets are built as Ethernet frames, for the Ethernet port they go out on.
                    if self.handle(&packet)?
                        && self.tap_resets
                        && packet.link_type == pcap_parser::Linktype::ETHERNET
                    {
                        self.resets.extend(reset::resets(packet.data));
                    }
                    if control.due(packet.ts) {
                        self.serve_control();
                        self.report_capture(source);
                    }
                    since_progress += 1;
                    if since_progress == 4096 {
                        since_progress = 0;
                        progress(&self.stats);
                        self.queues = source.queue_counters();
                        self.checkpoint_if_due();
                    }
                }
                Next::Idle => {
                    self.queues = source.queue_counters();
                    if live {
                        self.report_capture(source);
                        self.idle(wall_clock())?;
                    } else {
                        self.serve_control();
                    }
                }
                Next::End => break,
            }
            for frame in self.resets.drain(..) {
                if source.inject(&frame)? {
                    self.stats.resets_sent += 1;
                }
            }
        }
        self.stats.reorder += source.reorder_stats();
        progress(&self.stats);
        Ok(())
    }

    /// Ends every open flow, hands the plugins what is left and flushes the sink. Call at the
    /// end of a replay or on shutdown.
    pub fn finish(&mut self) -> io::Result<()> {
        let batch = &mut self.batch;
        let events = &mut self.stats.events;
        let ended = &mut self.ended;
        let devices = &mut self.devices;
        self.flows.flush(&mut |event| {
            *events += 1;
            devices.observe(&event);
            batch.push(&event);
            ended.push(event);
        });
        let last = self.stats.last_packet.unwrap_or_default();
        self.close_ended(last);
        self.dispatch()?;
        self.analyzer.flush_logs();
        self.sink.finish()
    }
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

/// What a packet of an attributed flow goes through above the flow table.
struct Parsers<'a> {
    analyzer: &'a mut Analyzer,
    devices: &'a mut DeviceTable,
    batch: &'a mut EventBatch,
    events: &'a mut u64,
}

impl Parsers<'_> {
    fn packet(&mut self, ts: Timestamp, decoded: &Decoded<'_>, observed: &Observed) {
        // What the responder's packet completes was answered: it proves both ends.
        let answer = observed.direction == Direction::FromResponder;
        let Parsers {
            analyzer,
            devices,
            batch,
            events,
        } = self;
        analyzer.packet(ts, decoded, observed, &mut |event| {
            **events += 1;
            if answer {
                devices.observe_answer(event);
            } else {
                devices.observe(event);
            }
            batch.push(event);
        });
    }
}
