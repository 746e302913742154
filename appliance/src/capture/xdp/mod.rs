//! Live capture with AF_XDP: frames of an interface's RX queues land in our own memory (the
//! UMEM) without passing the kernel's network stack.
//!
//! Five pieces: [`bpf`] loads a five-instruction XDP program that redirects every frame into the
//! XSKMAP entry of the queue it arrived on and attaches it with a BPF link; `socket` owns one
//! AF_XDP socket, its UMEM and its four rings; `queue` reads one queue's socket; [`nic`] asks the
//! NIC how many queues it has and for a symmetric RSS hash; [`XdpSource`] binds a socket per
//! queue, puts them all in the map and reads them in turn behind [`Source`]. [`DropAll`]
//! attaches a program dropping every frame: the baseline the live-capture benchmark measures
//! Vigil against.
//!
//! What the caller may assume:
//! - Frames redirected to the sockets never reach the kernel stack of this interface: the host
//!   does not answer ARP or pings on it. That is what a sensor port wants. Frames of a queue
//!   without a socket (one left out of [`Queues::List`]) still do.
//! - The program is attached with a BPF link, so it is detached when the source is dropped or the
//!   process dies; nothing is left on the interface.
//! - `next_packet` does not allocate. It blocks for at most [`POLL_TIMEOUT_MS`] before returning
//!   [`Next::Idle`], so a shutdown flag is seen within that time.
//! - Queues are read a batch at a time in turn, so a busy queue cannot starve the others, and
//!   frames are stamped when handed out: timestamps never go back.
//! - Frames longer than a UMEM frame minus the kernel's 256-byte headroom (e.g. 64 KiB GSO frames
//!   in generic mode when the sender has TSO/GSO on) are dropped by the kernel and counted in
//!   [`QueueStats::rx_dropped`], never silently.

mod bpf;
pub mod nic;
mod queue;
mod socket;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use vigil_plugin_sdk::Timestamp;

use self::bpf::{AttachMode, XdpLink, XdpProgram, XskMap};
pub use self::queue::QueueStats;
use self::queue::XdpQueue;
use self::socket::{Xsk, XskSizes};
use super::{CaptureError, Next, QueueCounters, Source};

/// The longest `next_packet` waits for a frame before reporting [`Next::Idle`].
pub const POLL_TIMEOUT_MS: i32 = 100;
/// How often the per-queue counters are published to a [`QueueBoard`]: reading the kernel's
/// statistics is a system call per queue, too dear per batch.
const PUBLISH_EVERY_MS: u128 = 250;

/// Where the XDP program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Native mode if the driver supports it, otherwise generic mode (with a warning).
    #[default]
    Auto,
    /// In the driver, before the kernel allocates an skb: the fast path. Fails on drivers
    /// without XDP support.
    Native,
    /// In the kernel's generic receive path, on skbs: works on every interface, slower.
    Generic,
}

/// Which RX queues get a socket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Queues {
    /// Every queue the NIC receives on now (its ethtool channel count; queue 0 alone if the
    /// driver does not say).
    #[default]
    Every,
    /// These queues only; frames of the others reach the kernel stack unseen by us.
    List(Vec<u32>),
}

/// What to capture and how much memory to give it.
#[derive(Debug, Clone)]
pub struct XdpConfig {
    /// Interface name, e.g. `eth1`.
    pub iface: String,
    pub queues: Queues,
    pub mode: XdpMode,
    /// UMEM frames per queue: a power of two, at least 64. An eighth (at most 1024) is kept for
    /// TX.
    pub frames: u32,
    /// Bytes per frame: a power of two from 2048 to the page size. The kernel keeps 256 bytes of
    /// headroom, so 4096 holds any frame up to 3840 bytes.
    pub frame_size: u32,
}

impl Default for XdpConfig {
    fn default() -> Self {
        XdpConfig {
            iface: String::new(),
            queues: Queues::Every,
            mode: XdpMode::Auto,
            frames: 4096,
            frame_size: 4096,
        }
    }
}

/// Counters of one source, summed over its queues: ours and the kernel's (`XDP_STATISTICS`).
/// Kernel counters read as zero if the kernel would not report them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Frames handed to the caller.
    pub received: u64,
    /// Frames queued for transmission by [`XdpSource::send`].
    pub sent: u64,
    /// Received descriptors naming memory outside the UMEM (a kernel bug if ever non-zero);
    /// skipped.
    pub bad_descs: u64,
    /// Frames the kernel dropped for this socket (e.g. larger than a frame).
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    /// Frames lost because the RX ring was full: the caller did not keep up.
    pub rx_ring_full: u64,
    /// Frames lost because the fill ring was empty: no free frame to receive into.
    pub fill_ring_empty: u64,
    pub tx_invalid_descs: u64,
}

/// The per-queue counters of a running capture, each port's published by the thread reading it
/// for readers on others (the management API's status). Locked only to copy a few numbers in or
/// out.
#[derive(Debug, Clone, Default)]
pub struct QueueBoard(Arc<Mutex<BTreeMap<String, Vec<QueueStats>>>>);

/// One queue's counters on the [`QueueBoard`], with the interface it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PortQueueStats {
    pub iface: String,
    #[serde(flatten)]
    pub stats: QueueStats,
}

impl QueueBoard {
    fn publish(&self, iface: &str, stats: Vec<QueueStats>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(iface.to_string(), stats);
    }

    /// Every port's queues as last published (every [`PUBLISH_EVERY_MS`] while capturing), by
    /// interface name then queue.
    pub fn snapshot(&self) -> Vec<PortQueueStats> {
        let ports = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        ports
            .iter()
            .flat_map(|(iface, queues)| {
                queues.iter().map(|&stats| PortQueueStats {
                    iface: iface.clone(),
                    stats,
                })
            })
            .collect()
    }
}

/// Frames from the RX queues of one interface, one AF_XDP socket per queue.
///
/// Field order is drop order: the program is detached first, then the sockets closed.
pub struct XdpSource {
    _link: XdpLink,
    _program: XdpProgram,
    _map: XskMap,
    queues: Vec<XdpQueue>,
    /// The queue being read: `queues[current]` until its batch is used up.
    current: usize,
    iface: String,
    /// `iface:queue,queue,...`.
    name: String,
    mode: XdpMode,
    sent: u64,
    /// How long `next_packet` waits on empty rings; 0 for a caller that polls several sources.
    poll_timeout_ms: i32,
    board: Option<QueueBoard>,
    published: Instant,
}

impl XdpSource {
    /// Binds an AF_XDP socket (copy mode) to each of `config.queues` of `config.iface`, loads
    /// and attaches the redirect program, and starts receiving. Needs root (CAP_NET_ADMIN,
    /// CAP_BPF, CAP_IPC_LOCK). Must be called in the network namespace of the interface: in
    /// tests, from a thread that entered it with `setns()`.
    pub fn open(config: XdpConfig) -> Result<XdpSource, CaptureError> {
        let iface = config.iface.as_str();
        let ids = queue_ids(iface, &config.queues)?;
        let sizes = XskSizes {
            frames: config.frames,
            frame_size: config.frame_size,
        };
        let mut queues = Vec::with_capacity(ids.len());
        for &id in &ids {
            let xsk = Xsk::open(iface, id, sizes).map_err(|e| CaptureError::Xdp {
                source: format!("{iface}:{id}"),
                reason: e.to_string(),
            })?;
            queues.push(XdpQueue::new(xsk, iface, id));
        }
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        let name = format!("{iface}:{}", ids.join(","));
        let fail = |reason: String| CaptureError::Xdp {
            source: name.clone(),
            reason,
        };
        // Keys are queue indices; frames of queues past the map's end fall back to XDP_PASS.
        let last = queues.iter().map(XdpQueue::id).max().unwrap_or(0);
        let entries = last
            .checked_add(1)
            .ok_or_else(|| fail(format!("queue {last} is out of range")))?;
        let map = XskMap::create(entries).map_err(|e| fail(e.to_string()))?;
        let program = XdpProgram::load(&map).map_err(|e| fail(e.to_string()))?;
        for queue in &queues {
            map.insert(queue.id(), queue.xsk.raw_fd())
                .map_err(|e| fail(format!("queue {}: {e}", queue.id())))?;
        }

        let (link, mode) = attach(&program, queues[0].xsk.ifindex(), config.mode, &name)?;
        Ok(XdpSource {
            _link: link,
            _program: program,
            _map: map,
            queues,
            current: 0,
            iface: iface.to_string(),
            name,
            mode,
            sent: 0,
            poll_timeout_ms: POLL_TIMEOUT_MS,
            board: None,
            published: Instant::now(),
        })
    }

    /// How long `next_packet` waits for a frame before [`Next::Idle`]; 0 returns at once (an
    /// inline bridge polls both of its sources with [`wait_any`] instead).
    pub fn set_poll_timeout(&mut self, ms: i32) {
        self.poll_timeout_ms = ms;
    }

    /// Publishes the per-queue counters to `board` while capturing.
    pub fn publish_to(&mut self, board: QueueBoard) {
        board.publish(&self.iface, self.queue_stats());
        self.board = Some(board);
    }

    /// The mode the program actually runs in: `Native` or `Generic`, never `Auto`.
    pub fn attached_mode(&self) -> XdpMode {
        self.mode
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The queues bound, in the order they are read.
    pub fn queue_ids(&self) -> Vec<u32> {
        self.queues.iter().map(XdpQueue::id).collect()
    }

    /// Each queue's counters and the kernel's ring statistics.
    pub fn queue_stats(&self) -> Vec<QueueStats> {
        self.queues.iter().map(XdpQueue::stats).collect()
    }

    /// Our counters and the kernel's ring statistics, summed over the queues.
    pub fn stats(&self) -> XdpStats {
        let mut total = XdpStats {
            sent: self.sent,
            ..XdpStats::default()
        };
        for queue in self.queue_stats() {
            total.received += queue.packets;
            total.bad_descs += queue.bad_descs;
            total.rx_dropped += queue.rx_dropped;
            total.rx_invalid_descs += queue.rx_invalid_descs;
            total.rx_ring_full += queue.rx_ring_full;
            total.fill_ring_empty += queue.rx_fill_ring_empty_descs;
            total.tx_invalid_descs += queue.tx_invalid_descs;
        }
        total
    }

    /// Transmits one frame (starting at the Ethernet header) out of this interface, for TCP
    /// resets and inline forwarding. The frame is copied into the UMEM, so the caller's buffer is
    /// free on return. `Ok(false)` when every TX frame is still in flight: nothing was sent, and
    /// the caller should count the loss.
    pub fn send(&mut self, frame: &[u8]) -> Result<bool, CaptureError> {
        let queued = self.queue(frame)?;
        self.flush()?;
        Ok(queued)
    }

    /// Queues one frame like [`XdpSource::send`] but sends it only at the next
    /// [`XdpSource::flush`], so a burst of frames costs one system call instead of one each.
    /// Frames leave through the first queue's socket: which TX queue sends them does not matter
    /// on the wire.
    pub fn queue(&mut self, frame: &[u8]) -> Result<bool, CaptureError> {
        let queued = self.queues[0]
            .xsk
            .queue(frame)
            .map_err(|e| self.tx_error(e))?;
        if queued {
            self.sent += 1;
        }
        Ok(queued)
    }

    /// Sends what [`XdpSource::queue`] left on the TX ring.
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        self.queues[0].xsk.kick().map_err(|e| self.tx_error(e))
    }

    fn tx_error(&self, err: std::io::Error) -> CaptureError {
        CaptureError::Xdp {
            source: self.queues[0].name().to_string(),
            reason: format!("transmitting: {err}"),
        }
    }

    fn publish_if_due(&mut self) {
        if let Some(board) = &self.board {
            if self.published.elapsed().as_millis() >= PUBLISH_EVERY_MS {
                board.publish(&self.iface, self.queue_stats());
                self.published = Instant::now();
            }
        }
    }

    /// Moves on to the next queue with frames, round robin, waiting up to the poll timeout once
    /// if every ring is empty. Returns whether `queues[current]` now has a frame.
    fn advance(&mut self) -> Result<bool, CaptureError> {
        self.publish_if_due();
        let mut waited = false;
        loop {
            for _ in 0..self.queues.len() {
                self.current = (self.current + 1) % self.queues.len();
                let queue = &mut self.queues[self.current];
                if queue.fetch() > 0 && queue.has_frame() {
                    return Ok(true);
                }
            }
            if waited || self.poll_timeout_ms == 0 {
                return Ok(false);
            }
            wait_any(&[self], self.poll_timeout_ms).map_err(|e| CaptureError::Xdp {
                source: self.describe(),
                reason: format!("waiting for frames: {e}"),
            })?;
            waited = true;
        }
    }
}

/// Attaches `program` to the interface `ifindex` (`name` in errors) in `mode`; returns the link
/// and the mode it runs in.
fn attach(
    program: &XdpProgram,
    ifindex: u32,
    mode: XdpMode,
    name: &str,
) -> Result<(XdpLink, XdpMode), CaptureError> {
    let fail = |reason: String| CaptureError::Xdp {
        source: name.to_string(),
        reason,
    };
    match mode {
        XdpMode::Native => Ok((
            XdpLink::attach(program, ifindex, AttachMode::Driver)
                .map_err(|e| fail(format!("native mode: {e}")))?,
            XdpMode::Native,
        )),
        XdpMode::Generic => Ok((
            XdpLink::attach(program, ifindex, AttachMode::Skb)
                .map_err(|e| fail(format!("generic mode: {e}")))?,
            XdpMode::Generic,
        )),
        XdpMode::Auto => match XdpLink::attach(program, ifindex, AttachMode::Driver) {
            Ok(link) => Ok((link, XdpMode::Native)),
            Err(native) => {
                tracing::warn!(
                    "{name}: native XDP refused ({native}); falling back to generic (SKB) \
                     mode, which is slower"
                );
                let link =
                    XdpLink::attach(program, ifindex, AttachMode::Skb).map_err(|generic| {
                        fail(format!("native mode: {native}; generic mode: {generic}"))
                    })?;
                Ok((link, XdpMode::Generic))
            }
        },
    }
}

/// An XDP program dropping every frame of an interface (`XDP_DROP`), attached until dropped:
/// the least work any XDP consumer can do per frame, the baseline a live-capture benchmark
/// holds Vigil's rate against.
pub struct DropAll {
    _link: XdpLink,
    _program: XdpProgram,
    mode: XdpMode,
}

impl DropAll {
    pub fn attach(iface: &str, mode: XdpMode) -> Result<DropAll, CaptureError> {
        let fail = |reason: String| CaptureError::Xdp {
            source: iface.to_string(),
            reason,
        };
        let name =
            std::ffi::CString::new(iface).map_err(|_| fail("contains a NUL byte".to_string()))?;
        // SAFETY: `name` is a NUL-terminated string alive for the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(fail(format!(
                "looking up the interface: {}",
                std::io::Error::last_os_error()
            )));
        }
        let program = XdpProgram::load_drop().map_err(|e| fail(e.to_string()))?;
        let (link, mode) = attach(&program, ifindex, mode, iface)?;
        Ok(DropAll {
            _link: link,
            _program: program,
            mode,
        })
    }

    /// The mode the program actually runs in: `Native` or `Generic`, never `Auto`.
    pub fn attached_mode(&self) -> XdpMode {
        self.mode
    }
}

/// The queues `wanted` names on `iface`, sorted, each once.
fn queue_ids(iface: &str, wanted: &Queues) -> Result<Vec<u32>, CaptureError> {
    let mut ids = match wanted {
        Queues::List(ids) => {
            // Name a queue past the NIC's count plainly; the bind would only say EINVAL. Queue
            // 0 always exists, whatever count a driver reports.
            if let (Ok(count), Some(&past)) = (nic::rx_queue_count(iface), ids.iter().max()) {
                if past >= count.max(1) {
                    return Err(CaptureError::Xdp {
                        source: format!("{iface}:{past}"),
                        reason: format!("no such queue: {iface} has {count} RX queues"),
                    });
                }
            }
            ids.clone()
        }
        Queues::Every => match nic::rx_queue_count(iface) {
            Ok(n) => (0..n.max(1)).collect(),
            Err(err) => {
                tracing::warn!(
                    "{iface}: the driver does not say how many RX queues it has ({err}); \
                     capturing on queue 0 only (give --queues to choose)"
                );
                vec![0]
            }
        },
    };
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Err(CaptureError::Xdp {
            source: iface.to_string(),
            reason: "no queue to capture on".to_string(),
        });
    }
    Ok(ids)
}

/// Waits up to `timeout_ms` until a queue of one of `sources` has frames to read. A signal ends
/// the wait early without an error, so the caller can look at its shutdown flag.
pub fn wait_any(sources: &[&XdpSource], timeout_ms: i32) -> std::io::Result<()> {
    let mut fds: Vec<libc::pollfd> = sources
        .iter()
        .flat_map(|s| &s.queues)
        .map(|q| libc::pollfd {
            fd: q.xsk.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a valid array of pollfds that outlives the call.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if ret < 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            return Err(error);
        }
        return Ok(());
    }
    if let Some(broken) = fds
        .iter()
        .find(|p| p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0)
    {
        return Err(std::io::Error::other(format!(
            "a socket reports an error (poll revents {:#x}); was the interface removed?",
            broken.revents
        )));
    }
    Ok(())
}

fn now() -> Timestamp {
    // A clock before 1970 would be a broken host; stamp it as 0 rather than fail the capture.
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    Timestamp::from_micros(micros)
}

impl Source for XdpSource {
    fn next_packet(&mut self) -> Result<Next<'_>, CaptureError> {
        if !self.queues[self.current].has_frame() && !self.advance()? {
            return Ok(Next::Idle);
        }
        self.queues[self.current].take(now()).map(Next::Packet)
    }

    fn set_wait(&mut self, ms: i32) {
        self.set_poll_timeout(ms);
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn inject(&mut self, frame: &[u8]) -> Result<bool, CaptureError> {
        self.send(frame)
    }

    fn queue_counters(&self) -> Vec<QueueCounters> {
        self.queue_stats()
            .into_iter()
            .map(|stats| QueueCounters {
                interface: self.iface.clone(),
                queue: stats.queue,
                packets: stats.packets,
                bytes: stats.bytes,
                kernel_dropped: stats.rx_dropped,
                rx_ring_full: stats.rx_ring_full,
                fill_ring_empty: stats.rx_fill_ring_empty_descs,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_can_move_to_its_capture_thread() {
        fn send<T: Send>() {}
        send::<XdpSource>();
    }

    #[test]
    fn default_config_is_auto_mode_with_16_mib_of_umem() {
        let config = XdpConfig::default();
        assert_eq!(config.mode, XdpMode::Auto);
        assert_eq!(
            u64::from(config.frames) * u64::from(config.frame_size),
            16 << 20
        );
    }
}
