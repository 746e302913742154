//! Live capture with AF_XDP: frames of one interface queue land in our own memory (the UMEM)
//! without passing the kernel's network stack.
//!
//! Three pieces: [`bpf`] loads a five-instruction XDP program that redirects every frame of the
//! queue into an XSKMAP and attaches it with a BPF link; `socket` owns the AF_XDP socket, its UMEM
//! and its four rings; [`XdpSource`] ties them together behind [`Source`].
//!
//! What the caller may assume:
//! - Frames redirected to the socket never reach the kernel stack of this interface: the host does
//!   not answer ARP or pings on it. That is what a sensor port wants.
//! - The program is attached with a BPF link, so it is detached when the source is dropped or the
//!   process dies; nothing is left on the interface.
//! - `next_packet` does not allocate. It blocks for at most [`POLL_TIMEOUT_MS`] before returning
//!   [`Next::Idle`], so a shutdown flag is seen within that time.
//! - Frames longer than a UMEM frame minus the kernel's 256-byte headroom (e.g. 64 KiB GSO frames
//!   in generic mode when the sender has TSO/GSO on) are dropped by the kernel and counted in
//!   [`XdpStats::rx_dropped`], never silently.

mod bpf;
mod socket;

use std::time::{SystemTime, UNIX_EPOCH};

use vigil_plugin_sdk::Timestamp;
use xdpilone::xdp::XdpDesc;

use self::bpf::{AttachMode, RedirectProgram, XdpLink, XskMap};
use self::socket::{Xsk, XskSizes};
use super::{CaptureError, Next, Packet, QueueCounters, Source};

/// The longest `next_packet` waits for a frame before reporting [`Next::Idle`].
pub const POLL_TIMEOUT_MS: i32 = 100;
/// Descriptors taken off the RX ring at once. Their frames go back to the fill ring together
/// when the batch has been handed out, so at most this many frames are out of the kernel's hands.
const BATCH: usize = 64;

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

/// What to capture and how much memory to give it.
#[derive(Debug, Clone)]
pub struct XdpConfig {
    /// Interface name, e.g. `eth1`.
    pub iface: String,
    /// Receive queue; one source per queue (RSS keeps a flow on one queue).
    pub queue: u32,
    pub mode: XdpMode,
    /// UMEM frames: a power of two, at least 64. An eighth (at most 1024) is kept for TX.
    pub frames: u32,
    /// Bytes per frame: a power of two from 2048 to the page size. The kernel keeps 256 bytes of
    /// headroom, so 4096 holds any frame up to 3840 bytes.
    pub frame_size: u32,
}

impl Default for XdpConfig {
    fn default() -> Self {
        XdpConfig {
            iface: String::new(),
            queue: 0,
            mode: XdpMode::Auto,
            frames: 4096,
            frame_size: 4096,
        }
    }
}

/// Counters of one source: ours and the kernel's (`XDP_STATISTICS`). Kernel counters read as zero
/// if the kernel would not report them.
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

/// Frames from one interface queue through an AF_XDP socket.
///
/// Field order is drop order: the program is detached first, then the socket closed.
pub struct XdpSource {
    _link: XdpLink,
    _program: RedirectProgram,
    _map: XskMap,
    xsk: Xsk,
    name: String,
    iface: String,
    queue: u32,
    mode: XdpMode,
    /// Descriptors taken off the RX ring; `batch[..next]` have been handed out.
    batch: [XdpDesc; BATCH],
    batch_len: usize,
    next: usize,
    received: u64,
    received_bytes: u64,
    sent: u64,
    bad_descs: u64,
    /// How long `next_packet` waits on an empty ring; 0 for a caller that polls several.
    poll_timeout_ms: i32,
}

impl XdpSource {
    /// Binds an AF_XDP socket to `config.iface` queue `config.queue` (copy mode), loads and
    /// attaches the redirect program, and starts receiving. Needs root (CAP_NET_ADMIN, CAP_BPF,
    /// CAP_IPC_LOCK). Must be called in the network namespace of the interface: in tests, from a
    /// thread that entered it with `setns()`.
    pub fn open(config: XdpConfig) -> Result<XdpSource, CaptureError> {
        let name = format!("{}:{}", config.iface, config.queue);
        let fail = |reason: String| CaptureError::Xdp {
            source: name.clone(),
            reason,
        };
        let sizes = XskSizes {
            frames: config.frames,
            frame_size: config.frame_size,
        };
        let xsk = Xsk::open(&config.iface, config.queue, sizes).map_err(|e| fail(e.to_string()))?;
        // Keys are queue indices; frames of queues past the map's end fall back to XDP_PASS.
        let entries = config
            .queue
            .checked_add(1)
            .ok_or_else(|| fail(format!("queue {} is out of range", config.queue)))?;
        let map = XskMap::create(entries).map_err(|e| fail(e.to_string()))?;
        let program = RedirectProgram::load(&map).map_err(|e| fail(e.to_string()))?;
        map.insert(config.queue, xsk.raw_fd())
            .map_err(|e| fail(e.to_string()))?;

        let ifindex = xsk.ifindex();
        let (link, mode) = match config.mode {
            XdpMode::Native => (
                XdpLink::attach(&program, ifindex, AttachMode::Driver)
                    .map_err(|e| fail(format!("native mode: {e}")))?,
                XdpMode::Native,
            ),
            XdpMode::Generic => (
                XdpLink::attach(&program, ifindex, AttachMode::Skb)
                    .map_err(|e| fail(format!("generic mode: {e}")))?,
                XdpMode::Generic,
            ),
            XdpMode::Auto => match XdpLink::attach(&program, ifindex, AttachMode::Driver) {
                Ok(link) => (link, XdpMode::Native),
                Err(native) => {
                    tracing::warn!(
                        "{name}: native XDP refused ({native}); falling back to generic (SKB) \
                         mode, which is slower"
                    );
                    let link =
                        XdpLink::attach(&program, ifindex, AttachMode::Skb).map_err(|generic| {
                            fail(format!("native mode: {native}; generic mode: {generic}"))
                        })?;
                    (link, XdpMode::Generic)
                }
            },
        };
        Ok(XdpSource {
            _link: link,
            _program: program,
            _map: map,
            xsk,
            name,
            iface: config.iface,
            queue: config.queue,
            mode,
            batch: [XdpDesc::default(); BATCH],
            batch_len: 0,
            next: 0,
            received: 0,
            received_bytes: 0,
            sent: 0,
            bad_descs: 0,
            poll_timeout_ms: POLL_TIMEOUT_MS,
        })
    }

    /// How long `next_packet` waits for a frame before [`Next::Idle`]; 0 returns at once (an
    /// inline bridge polls both of its sockets with [`wait_any`] instead).
    pub fn set_poll_timeout(&mut self, ms: i32) {
        self.poll_timeout_ms = ms;
    }

    /// The mode the program actually runs in: `Native` or `Generic`, never `Auto`.
    pub fn attached_mode(&self) -> XdpMode {
        self.mode
    }

    /// Our counters and the kernel's ring statistics.
    pub fn stats(&self) -> XdpStats {
        let kernel = self.xsk.counters().unwrap_or_else(|e| {
            tracing::debug!("{}: XDP_STATISTICS: {e}", self.name);
            Default::default()
        });
        XdpStats {
            received: self.received,
            sent: self.sent,
            bad_descs: self.bad_descs,
            rx_dropped: kernel.rx_dropped,
            rx_invalid_descs: kernel.rx_invalid_descs,
            rx_ring_full: kernel.rx_ring_full,
            fill_ring_empty: kernel.fill_ring_empty,
            tx_invalid_descs: kernel.tx_invalid_descs,
        }
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
    pub fn queue(&mut self, frame: &[u8]) -> Result<bool, CaptureError> {
        let queued = self.xsk.queue(frame).map_err(|e| self.tx_error(e))?;
        if queued {
            self.sent += 1;
        }
        Ok(queued)
    }

    /// Sends what [`XdpSource::queue`] left on the TX ring.
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        self.xsk.kick().map_err(|e| self.tx_error(e))
    }

    fn tx_error(&self, err: std::io::Error) -> CaptureError {
        CaptureError::Xdp {
            source: self.name.clone(),
            reason: format!("transmitting: {err}"),
        }
    }

    /// Refills `batch` from the RX ring, waiting up to the poll timeout if it is empty.
    fn fetch(&mut self) -> Result<(), CaptureError> {
        // Every frame of the previous batch has been handed out, and the `&mut self` of this
        // call ends the borrow of the last one: all of them go back to the kernel now.
        for desc in &self.batch[..self.batch_len] {
            self.xsk.recycle(desc.addr);
        }
        self.batch_len = 0;
        self.next = 0;
        self.xsk.refill();
        let mut n = self.xsk.receive(&mut self.batch);
        if n == 0 && self.poll_timeout_ms > 0 {
            self.xsk
                .wait_readable(self.poll_timeout_ms)
                .map_err(|e| CaptureError::Xdp {
                    source: self.name.clone(),
                    reason: format!("waiting for frames: {e}"),
                })?;
            n = self.xsk.receive(&mut self.batch);
        }
        self.batch_len = n;
        Ok(())
    }
}

/// Waits up to `timeout_ms` until one of `sources` has frames to read.
pub fn wait_any(sources: &[&XdpSource], timeout_ms: i32) -> std::io::Result<()> {
    let mut fds: Vec<libc::pollfd> = sources
        .iter()
        .map(|s| libc::pollfd {
            fd: s.xsk.raw_fd(),
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
    fn queue_counters(&self) -> Vec<QueueCounters> {
        let stats = self.stats();
        vec![QueueCounters {
            interface: self.iface.clone(),
            queue: self.queue,
            packets: stats.received,
            bytes: self.received_bytes,
            kernel_dropped: stats.rx_dropped,
            rx_ring_full: stats.rx_ring_full,
            fill_ring_empty: stats.fill_ring_empty,
        }]
    }

    fn next_packet(&mut self) -> Result<Next<'_>, CaptureError> {
        loop {
            if self.next == self.batch_len {
                self.fetch()?;
                if self.batch_len == 0 {
                    return Ok(Next::Idle);
                }
            }
            let desc = self.batch[self.next];
            self.next += 1;
            if !self.xsk.in_umem(&desc) {
                self.bad_descs += 1;
                continue;
            }
            // SAFETY: `desc` came from `receive` in `fetch` and is recycled only by the next
            // `fetch`, which needs `&mut self` and so cannot run while this borrow lives.
            let data = unsafe { self.xsk.received(&desc) }.ok_or_else(|| CaptureError::Xdp {
                source: self.name.clone(),
                reason: "a received descriptor left the UMEM".to_string(),
            })?;
            self.received += 1;
            self.received_bytes += u64::from(desc.len);
            return Ok(Next::Packet(Packet {
                ts: now(),
                data,
                wire_len: desc.len,
                // A mirror port or an inline bridge port is Ethernet.
                link_type: pcap_parser::Linktype::ETHERNET,
            }));
        }
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn inject(&mut self, frame: &[u8]) -> Result<bool, CaptureError> {
        self.send(frame)
    }

    fn capture_drops(&self) -> u64 {
        let stats = self.stats();
        stats.rx_dropped + stats.rx_ring_full + stats.fill_ring_empty
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
