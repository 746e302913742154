//! One AF_XDP socket with a UMEM of its own: the memory area, the fill and completion rings that
//! lend frames to the kernel and take them back, and the RX and TX rings, built with `xdpilone`.
//!
//! This type knows nothing about BPF or about capture: [`super::XdpSource`] puts it in an XSKMAP
//! and reads from it; an inline bridge will put two of them side by side and forward between them.
//!
//! Frame ownership is the whole safety story. Every UMEM frame is at any moment either the
//! kernel's (in the fill ring, being received into, on the RX ring not yet read, on the TX ring or
//! not yet completed) or ours (read from the RX ring and not yet refilled, or a free TX frame). We
//! only form slices over frames that are ours, so the kernel never writes behind a slice.

use std::io;
use std::num::NonZeroU32;
use std::ptr::NonNull;
use std::thread;
use std::time::Duration;

use xdpilone::xdp::XdpDesc;
use xdpilone::{
    DeviceQueue, Errno, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig, User,
};

/// How long to keep retrying a bind refused with EBUSY: a queue stays busy briefly after the
/// previous socket on it closed (its teardown is deferred in the kernel).
const BIND_RETRY_FOR: Duration = Duration::from_secs(2);
const BIND_RETRY_EVERY: Duration = Duration::from_millis(50);
/// At most this many frames (and never more than an eighth of the UMEM) are kept for TX.
const MAX_TX_FRAMES: u32 = 1024;

/// Sizes of one socket's UMEM and rings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct XskSizes {
    /// Frames in the UMEM; a power of two, at least 64.
    pub(crate) frames: u32,
    /// Bytes per frame; a power of two from 2048 to the page size (the kernel's aligned mode).
    pub(crate) frame_size: u32,
}

impl XskSizes {
    pub(crate) fn check(&self) -> Result<(), String> {
        // SAFETY: sysconf only reads a system constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = u32::try_from(page).unwrap_or(4096);
        if !self.frame_size.is_power_of_two() || !(2048..=page).contains(&self.frame_size) {
            return Err(format!(
                "frame size {} must be a power of two from 2048 to the page size ({page})",
                self.frame_size
            ));
        }
        if !self.frames.is_power_of_two() || self.frames < 64 {
            return Err(format!(
                "UMEM frames {} must be a power of two of at least 64 (ring sizes are powers of two)",
                self.frames
            ));
        }
        if u64::from(self.frames) * u64::from(self.frame_size) > 1 << 32 {
            return Err("the UMEM may not exceed 4 GiB".to_string());
        }
        Ok(())
    }

    fn tx_frames(&self) -> u32 {
        (self.frames / 8).min(MAX_TX_FRAMES)
    }

    fn rx_frames(&self) -> u32 {
        self.frames - self.tx_frames()
    }
}

/// Why the socket could not be set up: the step and the kernel's answer.
#[derive(Debug)]
pub(crate) struct XskError {
    pub(crate) step: &'static str,
    pub(crate) error: io::Error,
}

impl std::fmt::Display for XskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.error)
    }
}

fn errno(step: &'static str) -> impl FnOnce(Errno) -> XskError {
    // xdpilone reports some of its own checks as negative errno values.
    move |e| XskError {
        step,
        error: io::Error::from_raw_os_error(e.get_raw().abs()),
    }
}

/// The UMEM: anonymous memory we map, and unmap only after the socket (and with it the kernel's
/// registration) is gone.
struct UmemArea {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the area is plain memory owned by this value alone; moving it to another thread moves
// that ownership. It is not Sync: frames are handed out through `&mut` paths only.
unsafe impl Send for UmemArea {}

impl UmemArea {
    fn map(len: usize) -> io::Result<UmemArea> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected. MAP_POPULATE
        // faults the pages in now rather than in the receive path.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(UmemArea { ptr, len })
    }

    fn as_nonnull_slice(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }

    /// `len` bytes at UMEM offset `addr`, or `None` when that range is not inside the area.
    ///
    /// # Safety
    /// The frame holding the range must be ours (see the module comment) for as long as the
    /// returned slice lives.
    unsafe fn bytes(&self, addr: u64, len: u32) -> Option<&[u8]> {
        let start = usize::try_from(addr).ok()?;
        let end = start.checked_add(len as usize)?;
        if end > self.len {
            return None;
        }
        // SAFETY: `start..end` lies inside our mapping (checked above) and the caller promises the
        // kernel does not write to it while the slice lives.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start), len as usize) })
    }

    /// As [`Self::bytes`], writable.
    ///
    /// # Safety
    /// As for [`Self::bytes`].
    unsafe fn bytes_mut(&mut self, addr: u64, len: u32) -> Option<&mut [u8]> {
        let start = usize::try_from(addr).ok()?;
        let end = start.checked_add(len as usize)?;
        if end > self.len {
            return None;
        }
        // SAFETY: in bounds (checked above); `&mut self` excludes other slices of ours and the
        // caller promises the kernel does not touch the frame.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(start), len as usize) })
    }
}

impl Drop for UmemArea {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range in `map` and nothing refers to it any more: the
        // rings and the socket are dropped before the area (field order of `Xsk`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Kernel ring counters of one socket (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RingCounters {
    pub(crate) rx_dropped: u64,
    pub(crate) rx_invalid_descs: u64,
    pub(crate) tx_invalid_descs: u64,
    pub(crate) rx_ring_full: u64,
    pub(crate) fill_ring_empty: u64,
}

/// Frames the kernel sends per `sendto()` in copy mode (`TX_BATCH_SIZE` in net/xdp/xsk.c); past
/// it the call fails with EAGAIN and the rest wait for the next one.
const COPY_MODE_TX_BUDGET: u32 = 32;

/// One bound AF_XDP socket in copy mode with its own UMEM.
///
/// Field order is drop order: the rings and socket close before the UMEM is unmapped.
pub(crate) struct Xsk {
    rx: RingRx,
    tx: RingTx,
    /// Fill and completion rings.
    fcq: DeviceQueue,
    user: User,
    /// RX frames that are ours, waiting to go back to the fill ring. Capacity for every RX frame
    /// is reserved up front, so pushing never allocates.
    free_rx: Vec<u64>,
    /// TX frames not in flight.
    free_tx: Vec<u64>,
    /// Frames on the TX ring since the last `sendto()` ([`Xsk::kick`]).
    unkicked: u32,
    tx_frames: u32,
    frame_size: u32,
    ifindex: u32,
    area: UmemArea,
}

impl Xsk {
    /// Creates the UMEM and socket and binds it to `iface` queue `queue` in copy mode, with every
    /// RX frame already on the fill ring. Frames arrive once a program redirects to the socket.
    pub(crate) fn open(iface: &str, queue: u32, sizes: XskSizes) -> Result<Xsk, XskError> {
        sizes.check().map_err(|reason| XskError {
            step: "checking the UMEM sizes",
            error: io::Error::new(io::ErrorKind::InvalidInput, reason),
        })?;
        let name = std::ffi::CString::new(iface).map_err(|_| XskError {
            step: "reading the interface name",
            error: io::Error::new(io::ErrorKind::InvalidInput, "contains a NUL byte"),
        })?;
        let mut info = IfInfo::invalid();
        info.from_name(&name)
            .map_err(errno("looking up the interface"))?;
        info.set_queue(queue);

        let len = sizes.frames as usize * sizes.frame_size as usize;
        let area = UmemArea::map(len).map_err(|error| XskError {
            step: "mapping the UMEM",
            error,
        })?;
        let config = UmemConfig {
            fill_size: sizes.frames,
            complete_size: sizes.tx_frames(),
            frame_size: sizes.frame_size,
            // The kernel still reserves XDP_PACKET_HEADROOM before the data; the RX descriptor's
            // address points past it.
            headroom: 0,
            flags: 0,
        };
        // SAFETY: the area is page aligned (fresh mmap), `frames * frame_size` bytes long, and
        // outlives every ring: `Xsk` drops it last.
        let umem = unsafe { Umem::new(config, area.as_nonnull_slice()) }.map_err(errno(
            "registering the UMEM (XDP_UMEM_REG; needs CAP_IPC_LOCK or memlock)",
        ))?;
        // One descriptor carries the UMEM, the fill/completion rings and the RX/TX rings.
        let socket =
            Socket::with_shared(&info, &umem).map_err(errno("creating the AF_XDP socket"))?;
        let mut fcq = umem
            .fq_cq(&socket)
            .map_err(errno("creating the fill and completion rings"))?;
        let user = umem
            .rx_tx(
                &socket,
                &SocketConfig {
                    rx_size: NonZeroU32::new(sizes.frames),
                    tx_size: NonZeroU32::new(sizes.tx_frames()),
                    // Copy mode works on every driver (veth, virtio_net); zero-copy is refused
                    // by most of the NICs this runs on and buys little at our rates.
                    bind_flags: SocketConfig::XDP_BIND_COPY,
                },
            )
            .map_err(errno("creating the RX and TX rings"))?;
        let rx = user.map_rx().map_err(errno("mapping the RX ring"))?;
        let tx = user.map_tx().map_err(errno("mapping the TX ring"))?;

        // Lend every RX frame to the kernel before binding, so the first frames find room.
        let rx_frames = sizes.rx_frames();
        let mut free_rx = Vec::with_capacity(rx_frames as usize);
        free_rx.extend((0..rx_frames).map(|i| u64::from(i) * u64::from(sizes.frame_size)));
        let free_tx = (rx_frames..sizes.frames)
            .map(|i| u64::from(i) * u64::from(sizes.frame_size))
            .collect();
        {
            let mut fill = fcq.fill(rx_frames);
            fill.insert(free_rx.drain(..));
            fill.commit();
        }

        let mut waited = Duration::ZERO;
        loop {
            match umem.bind(&user) {
                Ok(()) => break,
                Err(e) if e.get_raw() == libc::EBUSY && waited < BIND_RETRY_FOR => {
                    tracing::debug!("{iface}:{queue}: queue busy, retrying the bind");
                    thread::sleep(BIND_RETRY_EVERY);
                    waited += BIND_RETRY_EVERY;
                }
                Err(e) => {
                    return Err(errno(
                        "binding the socket to the queue (does the queue exist? is it in use?)",
                    )(e))
                }
            }
        }
        // `umem` may go now: the kernel's UMEM lives with the socket descriptor, which the rings
        // share, and the memory with `area`.
        Ok(Xsk {
            rx,
            tx,
            fcq,
            user,
            free_rx,
            free_tx,
            unkicked: 0,
            tx_frames: sizes.tx_frames(),
            frame_size: sizes.frame_size,
            ifindex: info.ifindex(),
            area,
        })
    }

    pub(crate) fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The socket descriptor (for the XSKMAP and poll). Still owned by `self`.
    pub(crate) fn raw_fd(&self) -> libc::c_int {
        self.user.as_raw_fd()
    }

    /// Moves up to `out.len()` received descriptors out of the RX ring. The frames they name are
    /// ours until given back with [`Self::recycle`].
    pub(crate) fn receive(&mut self, out: &mut [XdpDesc]) -> usize {
        let Ok(max) = u32::try_from(out.len()) else {
            return 0;
        };
        if max == 0 {
            return 0;
        }
        let mut reader = self.rx.receive(max);
        let mut n = 0;
        for slot in out.iter_mut() {
            match reader.read() {
                Some(desc) => {
                    *slot = desc;
                    n += 1;
                }
                None => break,
            }
        }
        reader.release();
        n
    }

    /// Whether a received descriptor names bytes inside the UMEM (the kernel guarantees it; we
    /// check rather than trust memory safety to it).
    pub(crate) fn in_umem(&self, desc: &XdpDesc) -> bool {
        desc.addr
            .checked_add(u64::from(desc.len))
            .is_some_and(|end| end <= self.area.len as u64)
    }

    /// The frame bytes a received descriptor names, or `None` if it points outside the UMEM.
    ///
    /// # Safety
    /// `desc` must come from [`Self::receive`] and not have been recycled yet.
    pub(crate) unsafe fn received(&self, desc: &XdpDesc) -> Option<&[u8]> {
        // SAFETY: the caller guarantees the frame is ours until it is recycled.
        unsafe { self.area.bytes(desc.addr, desc.len) }
    }

    /// Takes back the frame a received descriptor names (any address inside the frame will do).
    /// It returns to the kernel with the next [`Self::refill`].
    pub(crate) fn recycle(&mut self, addr: u64) {
        let start = addr - addr % u64::from(self.frame_size);
        self.free_rx.push(start);
    }

    /// Puts every recycled frame back on the fill ring, keeping it full.
    pub(crate) fn refill(&mut self) {
        if self.free_rx.is_empty() {
            return;
        }
        let Ok(want) = u32::try_from(self.free_rx.len()) else {
            return;
        };
        let mut fill = self.fcq.fill(want);
        // The fill ring holds every RX frame, so this is all of them; any left over stay for the
        // next call.
        let take = (fill.capacity() as usize).min(self.free_rx.len());
        let from = self.free_rx.len() - take;
        fill.insert(self.free_rx.drain(from..));
        fill.commit();
    }

    /// Copies `frame` (starting at the Ethernet header) into a free TX frame and queues it; the
    /// kernel sends it at the next [`Xsk::kick`], so a burst costs one system call. `Ok(false)`:
    /// every TX frame is in flight, even after a kick, and nothing was queued.
    pub(crate) fn queue(&mut self, frame: &[u8]) -> io::Result<bool> {
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|&len| len <= self.frame_size)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a frame of {} bytes does not fit a {}-byte UMEM frame",
                        frame.len(),
                        self.frame_size
                    ),
                )
            })?;
        self.reap_completions();
        if self.free_tx.is_empty() && self.unkicked > 0 {
            // Our own queued frames hold them: send those, and take back what already went.
            self.kick()?;
            self.reap_completions();
        }
        let Some(addr) = self.free_tx.pop() else {
            return Ok(false);
        };
        // SAFETY: `addr` came off `free_tx`, so no ring holds this frame.
        match unsafe { self.area.bytes_mut(addr, len) } {
            Some(buf) => buf.copy_from_slice(frame),
            None => {
                self.free_tx.push(addr);
                return Err(io::Error::other("TX frame outside the UMEM"));
            }
        }
        let queued = {
            let mut writer = self.tx.transmit(1);
            let queued = writer.insert_once(XdpDesc {
                addr,
                len,
                options: 0,
            });
            writer.commit();
            queued
        };
        if !queued {
            self.free_tx.push(addr);
            return Ok(false);
        }
        self.unkicked += 1;
        Ok(true)
    }

    /// In copy mode the kernel transmits only when asked, with a `sendto()`: once for the frames
    /// queued since the last time (a call per `COPY_MODE_TX_BUDGET` of them, which is as many as
    /// the kernel sends per call). Nothing to do when none was queued.
    pub(crate) fn kick(&mut self) -> io::Result<()> {
        for _ in 0..self.unkicked.div_ceil(COPY_MODE_TX_BUDGET) {
            // SAFETY: a zero-length sendto with no buffer or address on our own socket descriptor.
            let ret = unsafe {
                libc::sendto(
                    self.raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if ret >= 0 {
                self.unkicked = 0;
                return Ok(());
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                // The budget ran out with frames left on the ring: go on.
                Some(libc::EAGAIN) => continue,
                // Busy or out of buffers right now: the frames stay queued for the next kick.
                Some(libc::EBUSY | libc::ENOBUFS) => return Ok(()),
                _ => return Err(error),
            }
        }
        Ok(())
    }

    /// Takes back TX frames the kernel has finished with.
    fn reap_completions(&mut self) {
        let mut reader = self.fcq.complete(self.tx_frames);
        for addr in reader.by_ref() {
            self.free_tx.push(addr - addr % u64::from(self.frame_size));
        }
        reader.release();
    }

    pub(crate) fn counters(&self) -> io::Result<RingCounters> {
        let s = self
            .user
            .statistics_v2()
            .map_err(|e| io::Error::from_raw_os_error(e.get_raw().abs()))?;
        Ok(RingCounters {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            fill_ring_empty: s.rx_fill_ring_empty_descs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_split_the_umem_between_rx_and_tx() {
        let sizes = XskSizes {
            frames: 4096,
            frame_size: 4096,
        };
        assert!(sizes.check().is_ok());
        assert_eq!(sizes.tx_frames(), 512);
        assert_eq!(sizes.rx_frames(), 3584);
        let big = XskSizes {
            frames: 1 << 16,
            frame_size: 2048,
        };
        assert_eq!(big.tx_frames(), MAX_TX_FRAMES);
    }

    #[test]
    fn sizes_the_kernel_would_refuse_are_refused_with_a_reason() {
        for (frames, frame_size) in [
            (4096, 1000),
            (4096, 1024),
            (4096, 1 << 20),
            (100, 4096),
            (32, 4096),
        ] {
            let err = XskSizes { frames, frame_size }
                .check()
                .expect_err("refused");
            assert!(err.contains("power of two"), "{err}");
        }
    }
}
