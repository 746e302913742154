//! Where packets come from: pcap/pcapng files and live AF_XDP sockets, behind one [`Source`] trait.

pub mod bridge;
pub mod pcap;
pub mod reorder;
pub mod xdp;

use std::fmt;

use pcap_parser::Linktype;
use vigil_plugin_sdk::Timestamp;

/// One captured frame, borrowed from the source's buffer until the next call.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    pub ts: Timestamp,
    /// The captured bytes, starting at the link-layer header `link_type` names.
    pub data: &'a [u8],
    /// The capture's link type (AF_XDP: always Ethernet).
    pub link_type: Linktype,
    /// The length on the wire (may exceed `data.len()` when the capture was truncated).
    pub wire_len: u32,
}

/// What a source has for the caller now.
#[derive(Debug)]
pub enum Next<'a> {
    Packet(Packet<'a>),
    /// Nothing right now (live capture); call again.
    Idle,
    /// The source is exhausted (end of file).
    End,
}

/// A source of frames. Sources never allocate per packet: the returned frame borrows the source's
/// buffer (file buffer or UMEM) and is released on the next call.
pub trait Source: Send {
    fn next_packet(&mut self) -> Result<Next<'_>, CaptureError>;

    /// A short human-readable name: the file path or `iface:queue`.
    /// How long [`Source::next_packet`] may wait for a packet before it says
    /// [`Next::Idle`], for a source that waits (live capture).
    fn set_wait(&mut self, _ms: i32) {}

    fn describe(&self) -> String;

    /// Sends a frame out where the source captures (TCP resets in tap mode). `Ok(false)` when it
    /// was not sent: a file cannot, a live port whose TX frames are all in flight did not.
    fn inject(&mut self, _frame: &[u8]) -> Result<bool, CaptureError> {
        Ok(false)
    }

    /// What a reorder buffer in front of the capture did so far ([`reorder::Reorder`]);
    /// nothing for a source without one.
    fn reorder_stats(&self) -> reorder::ReorderStats {
        reorder::ReorderStats::default()
    }

    /// The counters of each live capture queue behind this source (for `/metrics`); none for
    /// a file.
    fn queue_counters(&self) -> Vec<QueueCounters> {
        Vec::new()
    }

    /// Frames the capture lost before Vigil saw them (kernel and ring drops), for the fleet's
    /// drop ratio; none for a file.
    fn capture_drops(&self) -> u64 {
        self.queue_counters()
            .iter()
            .map(|q| q.kernel_dropped + q.rx_ring_full + q.fill_ring_empty)
            .sum()
    }
}

/// What one live capture queue received, and what the kernel dropped before we saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueCounters {
    pub interface: String,
    pub queue: u32,
    /// Frames handed to the pipeline.
    pub packets: u64,
    pub bytes: u64,
    /// Frames the kernel dropped for the socket (e.g. larger than a frame).
    pub kernel_dropped: u64,
    /// Frames lost because the RX ring was full: the pipeline did not keep up.
    pub rx_ring_full: u64,
    /// Frames lost because there was no free frame to receive into.
    pub fill_ring_empty: u64,
}

/// Why a source could not go on. Input faults (the file) and system faults (the kernel) are kept
/// apart so the operator knows which to fix.
#[derive(Debug)]
pub enum CaptureError {
    /// The file is not a pcap or pcapng capture at all (or is empty).
    NotACapture { source: String, reason: String },
    /// The file is damaged at `offset`; every packet before it was delivered.
    Corrupt {
        source: String,
        offset: u64,
        reason: String,
    },
    Io {
        source: String,
        error: std::io::Error,
    },
    /// Setting up or running the AF_XDP socket failed.
    Xdp { source: String, reason: String },
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::NotACapture { source, reason } => {
                write!(f, "{source}: not a pcap or pcapng file: {reason}")
            }
            CaptureError::Corrupt {
                source,
                offset,
                reason,
            } => write!(f, "{source}: damaged at byte offset {offset}: {reason}"),
            CaptureError::Io { source, error } => write!(f, "{source}: {error}"),
            CaptureError::Xdp { source, reason } => write!(f, "{source}: AF_XDP: {reason}"),
        }
    }
}

impl std::error::Error for CaptureError {}
