//! Frames of flows not yet attributed, kept so the parsers see them once the flow is.
//!
//! A capture that begins mid-connection may see the responder speak first (a DCE/RPC bind
//! answered on two dynamic ports, an LDAP result, an NTLM challenge). Until the originator sends,
//! those frames are evidence against nobody and reach no parser (see the module above), yet the
//! parsers need them to read the exchange. So they are kept, copied, within a byte budget, and
//! handed back when the flow is attributed. Forged "answers" that never draw a reply are dropped
//! oldest flow first when the budget is full, and counted: holding costs memory, never blame.

use std::collections::{HashMap, VecDeque};

use pcap_parser::Linktype;
use vigil_plugin_sdk::Timestamp;

use super::Direction;

/// All held frames together stay under this many bytes.
const BUDGET_BYTES: usize = 1 << 20;
/// One flow holds at most this many frames: enough for the responder's side of a handshake.
const FRAMES_PER_FLOW: usize = 8;

/// A frame as it was captured, to be decoded again when its flow is attributed.
pub struct HeldFrame {
    pub ts: Timestamp,
    pub direction: Direction,
    pub link_type: Linktype,
    pub data: Box<[u8]>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeldStats {
    /// Frames handed back to the parsers when their flow was attributed.
    pub released: u64,
    /// Frames dropped: the budget was full, or their flow held its share already.
    pub dropped: u64,
}

impl std::ops::AddAssign for HeldStats {
    fn add_assign(&mut self, other: HeldStats) {
        self.released += other.released;
        self.dropped += other.dropped;
    }
}

#[derive(Default)]
pub struct HeldFrames {
    by_flow: HashMap<u64, Vec<HeldFrame>>,
    /// Flows in the order they first held a frame; ids already released are skipped (and
    /// compacted away) when the oldest is dropped.
    order: VecDeque<u64>,
    bytes: usize,
    stats: HeldStats,
}

impl HeldFrames {
    pub fn stats(&self) -> HeldStats {
        self.stats
    }

    /// Keeps a copy of `data` for `flow` until [`release`](Self::release) or until the budget
    /// needs the room.
    pub fn hold(
        &mut self,
        flow: u64,
        frame: (Timestamp, Direction),
        link_type: Linktype,
        data: &[u8],
    ) {
        let (ts, direction) = frame;
        if data.len() > BUDGET_BYTES
            || self
                .by_flow
                .get(&flow)
                .is_some_and(|frames| frames.len() >= FRAMES_PER_FLOW)
        {
            self.stats.dropped += 1;
            return;
        }
        while self.bytes + data.len() > BUDGET_BYTES {
            self.drop_oldest_flow();
        }
        let frames = self.by_flow.entry(flow).or_insert_with(|| {
            self.order.push_back(flow);
            Vec::new()
        });
        frames.push(HeldFrame {
            ts,
            direction,
            link_type,
            data: data.into(),
        });
        self.bytes += data.len();
    }

    /// The frames held for `flow`, oldest first, which it no longer holds.
    pub fn release(&mut self, flow: u64) -> Vec<HeldFrame> {
        let Some(frames) = self.take(flow) else {
            return Vec::new();
        };
        self.stats.released += frames.len() as u64;
        // Released ids linger in `order`; keep it proportional to what is held.
        if self.order.len() > 2 * self.by_flow.len() + 64 {
            let by_flow = &self.by_flow;
            self.order.retain(|id| by_flow.contains_key(id));
        }
        frames
    }

    fn drop_oldest_flow(&mut self) {
        while let Some(flow) = self.order.pop_front() {
            if let Some(frames) = self.take(flow) {
                self.stats.dropped += frames.len() as u64;
                return;
            }
        }
    }

    /// Removes `flow`'s frames from the budget.
    fn take(&mut self, flow: u64) -> Option<Vec<HeldFrame>> {
        let frames = self.by_flow.remove(&flow)?;
        self.bytes -= frames.iter().map(|f| f.data.len()).sum::<usize>();
        Some(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETHERNET: Linktype = Linktype(1);

    #[test]
    fn frames_come_back_in_order_once_and_only_for_their_flow() {
        let mut held = HeldFrames::default();
        held.hold(
            1,
            (Timestamp::from_micros(1), Direction::FromResponder),
            ETHERNET,
            b"bind",
        );
        held.hold(
            2,
            (Timestamp::from_micros(2), Direction::FromResponder),
            ETHERNET,
            b"other",
        );
        held.hold(
            1,
            (Timestamp::from_micros(3), Direction::FromResponder),
            ETHERNET,
            b"challenge",
        );
        let frames: Vec<_> = held.release(1).into_iter().map(|f| f.data).collect();
        assert_eq!(frames, vec![b"bind"[..].into(), b"challenge"[..].into()]);
        assert!(held.release(1).is_empty());
        assert_eq!(held.release(2).len(), 1);
        assert_eq!(held.stats().released, 3);
        assert_eq!(held.bytes, 0);
    }

    #[test]
    fn a_flood_of_unanswered_flows_stays_within_the_budget_oldest_dropped_first() {
        let mut held = HeldFrames::default();
        let frame = vec![0u8; 1500];
        let flows = 2 * BUDGET_BYTES / frame.len();
        for flow in 0..flows as u64 {
            held.hold(
                flow,
                (Timestamp::from_micros(flow), Direction::FromResponder),
                ETHERNET,
                &frame,
            );
            assert!(held.bytes <= BUDGET_BYTES);
        }
        assert!(held.release(0).is_empty(), "the oldest flow made room");
        assert_eq!(held.release(flows as u64 - 1).len(), 1);
        assert_eq!(
            held.stats().dropped + held.by_flow.len() as u64 + 1,
            flows as u64
        );
        assert!(held.order.len() <= 2 * held.by_flow.len() + 64 + 1);
    }

    #[test]
    fn one_flow_holds_at_most_its_share() {
        let mut held = HeldFrames::default();
        for i in 0..FRAMES_PER_FLOW as u64 + 3 {
            held.hold(
                7,
                (Timestamp::from_micros(i), Direction::FromResponder),
                ETHERNET,
                b"x",
            );
        }
        assert_eq!(held.release(7).len(), FRAMES_PER_FLOW);
        assert_eq!(held.stats().dropped, 3);
    }
}
