//! Inline mode: two AF_XDP sockets on two ports, every frame received on one sent out of the
//! other unless the caller's verdict drops it. Frames are copied once, from the receiving UMEM
//! into a TX frame of the other socket, and sent a burst at a time; ARP and everything else that is not IP is forwarded like
//! the rest, so hosts on both sides see each other as on one wire.

use super::xdp::{wait_any, XdpSource};
use super::{CaptureError, Next, Packet, Source};

/// Frames moved per side per [`Bridge::step`], so one busy side cannot starve the other.
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

    /// Moves up to a burst of frames each way. `verdict` sees every frame first (the pipeline
    /// analyses it) and returns true to drop it. Returns how many frames it handled; 0 means
    /// both sides were empty (see [`Bridge::wait`]).
    pub fn step<E>(
        &mut self,
        verdict: &mut dyn FnMut(&Packet<'_>) -> Result<bool, E>,
    ) -> Result<usize, BridgeError<E>> {
        let mut handled = 0;
        for side in 0..2 {
            let (rx, tx) = if side == 0 {
                (&mut self.a, &mut self.b)
            } else {
                (&mut self.b, &mut self.a)
            };
            for _ in 0..BURST {
                let Next::Packet(packet) = rx.next_packet().map_err(BridgeError::Capture)? else {
                    break;
                };
                handled += 1;
                if verdict(&packet).map_err(BridgeError::Verdict)? {
                    self.stats.dropped[side] += 1;
                    continue;
                }
                if tx.queue(packet.data).map_err(BridgeError::Capture)? {
                    self.stats.forwarded[side] += 1;
                } else {
                    self.stats.tx_full += 1;
                }
            }
            // One kick for the burst (also retrying one the kernel was too busy for).
            tx.flush().map_err(BridgeError::Capture)?;
        }
        Ok(handled)
    }

    /// Waits up to `timeout_ms` for frames on either side.
    pub fn wait(&self, timeout_ms: i32) -> Result<(), CaptureError> {
        wait_any(&[&self.a, &self.b], timeout_ms).map_err(|e| CaptureError::Xdp {
            source: format!("{} + {}", self.a.describe(), self.b.describe()),
            reason: format!("waiting for frames: {e}"),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError<E> {
    #[error(transparent)]
    Capture(CaptureError),
    #[error("{0}")]
    Verdict(E),
}
