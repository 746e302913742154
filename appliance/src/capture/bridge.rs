//! Inline mode: two AF_XDP sockets on two ports, every frame received on one sent out of the
//! other unless the caller's verdict drops it. The pipeline's runner reads a chunk (copying each
//! frame out of the receiving UMEM), has the sensors judge it, then forwards it (copying each
//! frame into a TX frame of the other socket), a kick per side per chunk; ARP and everything
//! else that is not IP is forwarded like the rest, so hosts on both sides see each other as on
//! one wire.

use super::xdp::{wait_any, XdpSource};
use super::{CaptureError, Next, Packet, Source};

/// Frames read per side per turn ([`Bridge::read`]), so one busy side cannot starve the other.
const BURST: usize = 64;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Frames forwarded A -> B and B -> A.
    pub forwarded: [u64; 2],
    /// Frames the verdict dropped, by the side they came in on.
    pub dropped: [u64; 2],
    /// Frames lost because the other side's TX frames were all in flight.
    pub tx_full: u64,
}

pub struct Bridge {
    a: XdpSource,
    b: XdpSource,
    stats: BridgeStats,
}

impl Bridge {
    /// Bridges two open ports (each reading any number of queues).
    pub fn new(mut a: XdpSource, mut b: XdpSource) -> Bridge {
        // The bridge waits on both ports at once (`wait`), never on one alone.
        a.set_poll_timeout(0);
        b.set_poll_timeout(0);
        Bridge {
            a,
            b,
            stats: BridgeStats::default(),
        }
    }

    pub fn sides(&self) -> (&XdpSource, &XdpSource) {
        (&self.a, &self.b)
    }

    pub fn stats(&self) -> BridgeStats {
        self.stats
    }

    /// Reads a burst from each side in turn, handing every frame to `take` with the side it came
    /// in on (0: A, 1: B), until `max` frames were read or both sides are empty. Returns how
    /// many; 0 means both sides were empty (see [`Bridge::wait`]). The caller then decides each
    /// frame's fate with [`Bridge::forward`], in the order read.
    pub fn read(
        &mut self,
        max: usize,
        take: &mut dyn FnMut(usize, &Packet<'_>),
    ) -> Result<usize, CaptureError> {
        let mut read = 0;
        loop {
            let before = read;
            for (side, rx) in [&mut self.a, &mut self.b].into_iter().enumerate() {
                for _ in 0..BURST.min(max - read) {
                    let Next::Packet(packet) = rx.next_packet()? else {
                        break;
                    };
                    take(side, &packet);
                    read += 1;
                }
            }
            if read == before || read == max {
                return Ok(read);
            }
        }
    }

    /// Sends `frame`, read on `side`, out of the other side, unless the verdict `dropped` it.
    pub fn forward(
        &mut self,
        side: usize,
        frame: &[u8],
        dropped: bool,
    ) -> Result<(), CaptureError> {
        if dropped {
            self.stats.dropped[side] += 1;
            return Ok(());
        }
        let tx = if side == 0 { &mut self.b } else { &mut self.a };
        if tx.queue(frame)? {
            self.stats.forwarded[side] += 1;
        } else {
            self.stats.tx_full += 1;
        }
        Ok(())
    }

    /// Sends what [`Bridge::forward`] queued: one kick per side (also retrying one the kernel was
    /// too busy for).
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        self.a.flush()?;
        self.b.flush()
    }

    /// Waits up to `timeout_ms` for frames on either side.
    pub fn wait(&self, timeout_ms: i32) -> Result<(), CaptureError> {
        wait_any(&[&self.a, &self.b], timeout_ms).map_err(|e| CaptureError::Xdp {
            source: format!("{} + {}", self.a.describe(), self.b.describe()),
            reason: format!("waiting for frames: {e}"),
        })
    }
}
