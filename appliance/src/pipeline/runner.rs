//! [`Pipeline::run`] and [`Pipeline::run_inline`]: a capture thread and detection, joined by a
//! bounded queue.
//!
//! The capture thread owns the wire (a capture file, a mirror port, or the two ports of an inline
//! bridge) and the front (numbering, the clock, the sensors): it reads a chunk, senses it (an
//! inline bridge then forwards what the responses in force did not drop) and queues what the
//! sensors emitted. Detection runs on the caller's
//! thread: the device table, the plugins, the sinks, the actions and the management API, which
//! it answers between chunks and, when none comes, every [`CONTROL_WAIT`]. A replay waits for
//! room in the queue, so everything is detected and the result is exact. Live capture never
//! waits: a chunk the queue has no room for is shed and counted ([`Shed`]), its ticks kept for
//! the next chunk, so the rings keep draining and time keeps moving while the plugins catch up.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{wall_clock, Pipeline, PipelineStats, RunError};
use crate::analyzer::Analysis;
use crate::capture::bridge::Bridge;
use crate::capture::{CaptureError, Next, QueueCounters, Source};
use crate::flow::held::HeldStats;
use crate::flow::FlowStats;
use crate::respond::{reset, EnforcementTable};
use crate::sensor::front::{Front, FrontCounts};
use crate::sensor::shards::Mark;
use crate::sensor::{Emissions, Sensed, Sensor};

/// Live: packets read before the sensors take them together (fewer when the rings run dry),
/// enough to keep several workers busy for a while, few enough that detection never waits long;
/// and the sensed chunks that may wait for detection before capture sheds.
const LIVE_CHUNK_PACKETS: usize = 2048;
const LIVE_QUEUED_CHUNKS: usize = 4;
/// Inline: frames wait for their chunk to be sensed before they go on, so chunks stay small.
const INLINE_CHUNK_PACKETS: usize = 256;
/// Replay: smaller chunks handed over one at a time, so the capture thread senses at most one
/// chunk ahead of detection and a response decided at one packet is in force a few hundred
/// packets later, as it would be live.
const REPLAY_CHUNK_PACKETS: usize = 256;
/// Live: how long the capture thread waits on quiet rings before it looks at what detection
/// asked (resets for a device just blocked) and lets time pass.
const LIVE_WAIT_MS: i32 = 5;
/// How long detection waits for a chunk before it answers the API anyway.
const CONTROL_WAIT: Duration = Duration::from_millis(20);
/// How often the capture thread reports its sensors, queues and drops (wall clock).
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How often shedding is logged, at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What live capture shed because detection was behind: chunks the queue had no room for,
/// with their packets (tracked by the sensors all the same), the events the plugins and the
/// device table never got, and the protocol log lines never written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shed {
    pub chunks: u64,
    pub packets: u64,
    pub events: u64,
    pub log_lines: u64,
}

impl Shed {
    fn add(&mut self, chunk: &Chunk) {
        self.chunks += 1;
        self.packets += chunk.packets as u64;
        for item in chunk.outs.iter().flat_map(|out| &out.items) {
            match item.what {
                Sensed::Event { .. } | Sensed::Dhcp { .. } => self.events += 1,
                Sensed::Log { .. } => self.log_lines += 1,
            }
        }
    }
}

/// What the sensors say of themselves, added up.
#[derive(Debug, Clone, Default)]
pub struct SensorReport {
    pub flows: FlowStats,
    pub held: HeldStats,
    pub analysis: Analysis,
}

impl SensorReport {
    pub fn of(sensors: &[Sensor]) -> SensorReport {
        let mut report = SensorReport::default();
        for sensor in sensors {
            report.flows += sensor.flow_stats();
            report.held += sensor.held_stats();
            report.analysis.add(sensor.analyzer());
        }
        report
    }
}

/// Resets for the chunk's packets the responses in force dropped, on a mirror port (which cannot
/// drop): built as Ethernet frames, for the Ethernet port they go out on.
pub(super) fn tap_resets(front: &Front, resets: &mut Vec<Vec<u8>>) {
    for (packet, _) in front.sensed().filter(|(_, dropped)| *dropped) {
        if packet.link_type == pcap_parser::Linktype::ETHERNET {
            resets.extend(reset::resets(packet.data));
        }
    }
}

/// One sensed chunk on its way to detection (and, its buffers, back).
#[derive(Default)]
struct Chunk {
    outs: Vec<Emissions>,
    marks: Vec<Mark>,
    packets: usize,
    /// The capture side's counts after it, and its totals so far.
    counts: FrontCounts,
    shed: Shed,
    resets_sent: u64,
    /// The link went quiet: what waits goes to the plugins now.
    idle: bool,
    /// About once a second: the sensors' report, the queues' counters and the capture drops.
    report: Option<(SensorReport, Vec<QueueCounters>, u64)>,
}

/// Why reading a chunk stopped: it was full, the source had nothing now, or it ended.
#[derive(PartialEq, Eq)]
enum Then {
    More,
    Idle,
    End,
}

/// The responses in force as detection last published them, for the capture thread.
pub(super) type Published = Mutex<Option<Arc<EnforcementTable>>>;

impl Pipeline {
    /// Runs `source` until it ends or `stop` is set, the capture on a thread of its own and
    /// detection on this one (see the module). Live sources (`live`) tick on the wall clock
    /// while the link is quiet, and shed rather than wait for detection.
    pub fn run(
        &mut self,
        source: &mut dyn Source,
        stop: &AtomicBool,
        live: bool,
        progress: impl FnMut(&PipelineStats),
    ) -> Result<(), RunError> {
        if live {
            source.set_wait(LIVE_WAIT_MS);
        }
        let result = self.run_on(&mut Wire::Tap(&mut *source), stop, live, progress);
        self.stats.reorder += source.reorder_stats();
        result
    }

    /// Bridges `bridge`'s two ports until `stop` is set: every frame goes on unless the
    /// responses in force drop it (see the module).
    pub fn run_inline(&mut self, bridge: &mut Bridge, stop: &AtomicBool) -> Result<(), RunError> {
        let mut wire = Wire::Inline {
            bridge,
            sides: Vec::new(),
        };
        self.run_on(&mut wire, stop, true, |_| {})
    }

    fn run_on(
        &mut self,
        wire: &mut Wire<'_>,
        stop: &AtomicBool,
        live: bool,
        mut progress: impl FnMut(&PipelineStats),
    ) -> Result<(), RunError> {
        let mut front = std::mem::take(&mut self.front);
        self.away = Some(SensorReport::of(front.sensors()));
        let (queue, queued) = mpsc::sync_channel(if live { LIVE_QUEUED_CHUNKS } else { 0 });
        let (spares, spare) = mpsc::channel();
        let (ask_reset, reset_asked) = mpsc::channel();
        self.publish_enforcement();
        let published = Arc::clone(&self.published);
        let quit = AtomicBool::new(false);
        let capture = Capture {
            front: &mut front,
            wire,
            stop,
            quit: &quit,
            live,
            tap_resets: self.tap_resets,
            queue,
            spare,
            reset_asked,
            published: &published,
        };
        let (captured, detected) = std::thread::scope(|scope| {
            let capturing = std::thread::Builder::new()
                .name("vigil-capture".into())
                .spawn_scoped(scope, move || capture.run());
            let capturing = match capturing {
                Ok(capturing) => capturing,
                Err(err) => return (Ok((Shed::default(), 0)), Err(RunError::Output(err))),
            };
            let detected = self.detect_queued(&queued, &spares, &ask_reset, &mut progress);
            quit.store(true, Ordering::Relaxed);
            // A capture thread waiting for room in the queue gives up.
            drop(queued);
            match capturing.join() {
                Ok(captured) => (captured, detected),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        });
        self.front = front;
        self.away = None;
        self.stats.take_front(self.front.counts());
        let captured = captured.map(|(shed, resets_sent)| {
            self.stats.shed = shed;
            self.stats.resets_sent = resets_sent;
        });
        progress(&self.stats);
        detected?;
        captured.map_err(RunError::from)
    }

    /// Publishes the responses in force for the capture thread.
    pub(super) fn publish_enforcement(&self) {
        if let Some(actions) = &self.actions {
            *self
                .published
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(actions.snapshot());
        }
    }

    /// Detection's side of [`Pipeline::run`]: each queued chunk in turn, until the capture
    /// thread is done; the API meanwhile.
    fn detect_queued(
        &mut self,
        queued: &Receiver<Chunk>,
        spares: &Sender<Chunk>,
        ask_reset: &Sender<(IpAddr, u64)>,
        progress: &mut impl FnMut(&PipelineStats),
    ) -> Result<(), RunError> {
        let mut progressed = self.stats.packets;
        loop {
            let mut chunk = match queued.recv_timeout(CONTROL_WAIT) {
                Ok(chunk) => chunk,
                Err(RecvTimeoutError::Timeout) => {
                    self.serve_control();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            self.stats.take_front(&chunk.counts);
            self.stats.shed = chunk.shed;
            self.stats.resets_sent = chunk.resets_sent;
            if let Some((report, queues, drops)) = chunk.report.take() {
                self.away = Some(report);
                self.queues = queues;
                if let Some(fleet) = &self.fleet {
                    fleet.set_capture(self.stats.packets, drops);
                }
            }
            std::mem::swap(&mut self.outs, &mut chunk.outs);
            std::mem::swap(&mut self.marks, &mut chunk.marks);
            let mut detected = self.detect_taken();
            if chunk.idle && detected.is_ok() {
                detected = self.dispatch();
            }
            std::mem::swap(&mut self.outs, &mut chunk.outs);
            // The capture thread may be gone; the buffers are only a saving.
            let _ = spares.send(chunk);
            detected?;
            // The responses in force as they are now (operators' changes and expiries
            // included), then the resets asked for under them.
            self.publish_enforcement();
            for asked in self.reset_devices.drain(..) {
                let _ = ask_reset.send(asked);
            }
            self.serve_control();
            if self.stats.packets - progressed >= 4096 {
                progressed = self.stats.packets;
                progress(&self.stats);
            }
            self.checkpoint_if_due();
        }
    }
}

/// The capture thread's side of [`Pipeline::run`].
struct Capture<'a, 'w> {
    front: &'a mut Front,
    wire: &'a mut Wire<'w>,
    stop: &'a AtomicBool,
    /// Detection stopped (its output failed).
    quit: &'a AtomicBool,
    live: bool,
    tap_resets: bool,
    queue: SyncSender<Chunk>,
    /// Buffers detection is done with.
    spare: Receiver<Chunk>,
    reset_asked: Receiver<(IpAddr, u64)>,
    published: &'a Published,
}

impl Capture<'_, '_> {
    /// Reads, senses and queues chunks until the source ends, `stop` is set or detection quits;
    /// what was shed and the resets sent.
    fn run(self) -> Result<(Shed, u64), CaptureError> {
        let Capture {
            front,
            wire,
            stop,
            quit,
            live,
            tap_resets,
            queue,
            spare,
            reset_asked,
            published,
        } = self;
        let mut shed = Shed::default();
        let mut resets_sent = 0;
        let mut resets = Vec::new();
        // Ticks of shed chunks, for the next chunk that gets through.
        let mut carried: Vec<Mark> = Vec::new();
        let mut kept: Option<Chunk> = None;
        let mut reported: Option<Instant> = None;
        let mut warned: Option<Instant> = None;
        // Whether detection heard of the link going quiet since the last packets: it hands the
        // plugins what waits then, and needs no word again until a tick or new packets.
        let mut told_quiet = false;
        let mut asked: Vec<(IpAddr, u64)> = Vec::new();
        let chunk_packets = match (&*wire, live) {
            (Wire::Inline { .. }, _) => INLINE_CHUNK_PACKETS,
            (Wire::Tap(_), true) => LIVE_CHUNK_PACKETS,
            (Wire::Tap(_), false) => REPLAY_CHUNK_PACKETS,
        };
        while !stop.load(Ordering::Relaxed) && !quit.load(Ordering::Relaxed) {
            let then = wire.read(front, chunk_packets)?;
            let idle = live && then == Then::Idle;
            if idle {
                front.idle(wall_clock());
            }
            let packets = front.packets();
            // Resets asked for under the responses detection published before asking.
            asked.extend(reset_asked.try_iter());
            if front.is_empty() && asked.is_empty() && (!idle || told_quiet) {
                if then == Then::End {
                    break;
                }
                continue;
            }
            told_quiet = idle;
            let enforcement = published
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            front.sense(enforcement.as_deref());
            if tap_resets {
                tap_resets_of(front, &asked, enforcement.as_deref(), &mut resets);
            }
            asked.clear();
            resets_sent += wire.after_sensing(front, &mut resets)?;
            let mut chunk = kept
                .take()
                .or_else(|| spare.try_recv().ok())
                .unwrap_or_default();
            front.take(&mut chunk.outs, &mut chunk.marks);
            if !carried.is_empty() {
                carried.append(&mut chunk.marks);
                std::mem::swap(&mut carried, &mut chunk.marks);
            }
            chunk.packets = packets;
            chunk.counts = front.counts().clone();
            chunk.idle = idle;
            chunk.shed = shed;
            chunk.resets_sent = resets_sent;
            chunk.report = None;
            if reported.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
                reported = Some(Instant::now());
                let (queues, drops) = wire.counters();
                chunk.report = Some((SensorReport::of(front.sensors()), queues, drops));
            }
            if live {
                match queue.try_send(chunk) {
                    Ok(()) => {}
                    Err(TrySendError::Full(mut chunk)) => {
                        shed.add(&chunk);
                        std::mem::swap(&mut carried, &mut chunk.marks);
                        if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                            warned = Some(Instant::now());
                            tracing::warn!(
                                "detection is behind: shed {} packets' events so far ({} events, \
                                 {} log lines); capture goes on",
                                shed.packets,
                                shed.events,
                                shed.log_lines
                            );
                        }
                        kept = Some(chunk);
                    }
                    Err(TrySendError::Disconnected(_)) => break,
                }
            } else if queue.send(chunk).is_err() {
                break;
            }
            if then == Then::End {
                break;
            }
        }
        Ok((shed, resets_sent))
    }
}

/// What the capture thread reads: a tap (a capture file or a mirror port, where blocked
/// connections are reset), or an inline bridge, which forwards what the sensors did not drop.
enum Wire<'w> {
    Tap(&'w mut dyn Source),
    /// `sides`: the side each packet of the chunk came in on.
    Inline {
        bridge: &'w mut Bridge,
        sides: Vec<usize>,
    },
}

impl Wire<'_> {
    /// Reads up to `max` packets into the front's chunk; why it stopped.
    fn read(&mut self, front: &mut Front, max: usize) -> Result<Then, CaptureError> {
        match self {
            Wire::Tap(source) => {
                while front.packets() < max {
                    match source.next_packet()? {
                        Next::Packet(packet) => {
                            front.admit(&packet);
                        }
                        Next::Idle => return Ok(Then::Idle),
                        Next::End => return Ok(Then::End),
                    }
                }
                Ok(Then::More)
            }
            Wire::Inline { bridge, sides } => {
                sides.clear();
                let read = bridge.read(max, &mut |side, packet| {
                    front.admit(packet);
                    sides.push(side);
                })?;
                if read > 0 {
                    return Ok(Then::More);
                }
                bridge.wait(LIVE_WAIT_MS)?;
                Ok(Then::Idle)
            }
        }
    }

    /// After the chunk was sensed: a tap sends `resets`, an inline bridge forwards what was not
    /// dropped. The resets sent.
    fn after_sensing(
        &mut self,
        front: &Front,
        resets: &mut Vec<Vec<u8>>,
    ) -> Result<u64, CaptureError> {
        match self {
            Wire::Tap(source) => {
                let mut sent = 0;
                for frame in resets.drain(..) {
                    if source.inject(&frame)? {
                        sent += 1;
                    }
                }
                Ok(sent)
            }
            Wire::Inline { bridge, sides } => {
                resets.clear();
                for ((packet, dropped), side) in front.sensed().zip(sides.iter()) {
                    bridge.forward(*side, packet.data, dropped)?;
                }
                bridge.flush()?;
                Ok(0)
            }
        }
    }

    /// The queues' counters and the frames the kernel lost.
    fn counters(&self) -> (Vec<QueueCounters>, u64) {
        match self {
            Wire::Tap(source) => (source.queue_counters(), source.capture_drops()),
            Wire::Inline { bridge, .. } => {
                let (a, b) = bridge.sides();
                let mut queues = a.queue_counters();
                queues.extend(b.queue_counters());
                (queues, a.capture_drops() + b.capture_drops())
            }
        }
    }
}

/// On a mirror port: resets for the chunk's dropped packets, and for the connections of the
/// devices detection asked about that the responses in force block.
fn tap_resets_of(
    front: &Front,
    asked: &[(IpAddr, u64)],
    enforcement: Option<&EnforcementTable>,
    resets: &mut Vec<Vec<u8>>,
) {
    tap_resets(front, resets);
    let Some(table) = enforcement else {
        return;
    };
    for &(device, now) in asked {
        for sensor in front.sensors() {
            reset::reset_blocked(sensor.flows(), table, device, now, resets);
        }
    }
}
