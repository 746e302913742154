//! One RX queue's AF_XDP socket with the batch of frames taken off its ring and its counters.
//! Everything a reader of one queue needs and nothing shared with other queues, so a worker
//! thread can own one.

use vigil_plugin_sdk::Timestamp;
use xdpilone::xdp::XdpDesc;

use super::socket::Xsk;
use crate::capture::{CaptureError, Packet};

/// Descriptors taken off the RX ring at once. Their frames go back to the fill ring together
/// when the batch has been handed out, so at most this many frames are out of the kernel's hands.
const BATCH: usize = 64;

/// One queue's counters, ours and the kernel's, as the summary and the status API show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    pub queue: u32,
    /// Frames and bytes handed to the caller.
    pub packets: u64,
    pub bytes: u64,
    /// Received descriptors naming memory outside the UMEM (a kernel bug if ever non-zero);
    /// skipped.
    pub bad_descs: u64,
    /// The kernel's `XDP_STATISTICS`: frames it dropped for this socket (e.g. larger than a
    /// frame), lost to a full RX ring (we did not keep up) or to an empty fill ring (no free
    /// frame to receive into), and invalid descriptors on our rings.
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
}

pub(crate) struct XdpQueue {
    pub(crate) xsk: Xsk,
    queue: u32,
    /// `iface:queue`, for errors and logs.
    name: String,
    /// Descriptors taken off the RX ring; `batch[..next]` have been handed out.
    batch: [XdpDesc; BATCH],
    batch_len: usize,
    next: usize,
    received: u64,
    bytes: u64,
    bad_descs: u64,
}

impl XdpQueue {
    pub(crate) fn new(xsk: Xsk, iface: &str, queue: u32) -> XdpQueue {
        XdpQueue {
            xsk,
            queue,
            name: format!("{iface}:{queue}"),
            batch: [XdpDesc::default(); BATCH],
            batch_len: 0,
            next: 0,
            received: 0,
            bytes: 0,
            bad_descs: 0,
        }
    }

    pub(crate) fn id(&self) -> u32 {
        self.queue
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Gives the frames of the batch handed out back to the kernel and takes the next batch off
    /// the RX ring, without waiting. Returns how many descriptors it took.
    pub(crate) fn fetch(&mut self) -> usize {
        // Every frame of the previous batch has been handed out, and the `&mut self` of this
        // call ends the borrow of the last one: all of them go back to the kernel now.
        for desc in &self.batch[..self.batch_len] {
            self.xsk.recycle(desc.addr);
        }
        self.xsk.refill();
        self.batch_len = self.xsk.receive(&mut self.batch);
        self.next = 0;
        self.batch_len
    }

    /// Whether a frame is ready for [`Self::take`], skipping (and counting) descriptors that name
    /// memory outside the UMEM.
    pub(crate) fn has_frame(&mut self) -> bool {
        while self.next < self.batch_len {
            if self.xsk.in_umem(&self.batch[self.next]) {
                return true;
            }
            self.bad_descs += 1;
            self.next += 1;
        }
        false
    }

    /// The next frame of the batch; call only after [`Self::has_frame`] said there is one.
    pub(crate) fn take(&mut self, ts: Timestamp) -> Result<Packet<'_>, CaptureError> {
        let desc = self.batch[self.next];
        self.next += 1;
        // SAFETY: `desc` came from `receive` in `fetch` and is recycled only by the next
        // `fetch`, which needs `&mut self` and so cannot run while this borrow lives.
        let data = unsafe { self.xsk.received(&desc) }.ok_or_else(|| CaptureError::Xdp {
            source: self.name.clone(),
            reason: "a received descriptor left the UMEM".to_string(),
        })?;
        self.received += 1;
        self.bytes += u64::from(desc.len);
        Ok(Packet {
            ts,
            data,
            wire_len: desc.len,
            // A mirror port or an inline bridge port is Ethernet.
            link_type: pcap_parser::Linktype::ETHERNET,
        })
    }

    /// Our counters and the kernel's ring statistics (zero where the kernel would not say).
    pub(crate) fn stats(&self) -> QueueStats {
        let kernel = self.xsk.counters().unwrap_or_else(|e| {
            tracing::debug!("{}: XDP_STATISTICS: {e}", self.name);
            Default::default()
        });
        QueueStats {
            queue: self.queue,
            packets: self.received,
            bytes: self.bytes,
            bad_descs: self.bad_descs,
            rx_dropped: kernel.rx_dropped,
            rx_ring_full: kernel.rx_ring_full,
            rx_fill_ring_empty_descs: kernel.fill_ring_empty,
            rx_invalid_descs: kernel.rx_invalid_descs,
            tx_invalid_descs: kernel.tx_invalid_descs,
        }
    }
}
