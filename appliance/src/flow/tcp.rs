//! TCP connection state, as far as an observer on the wire can tell it.

use vigil_plugin_sdk::FlowState;

use super::Direction;
use crate::decode::TcpFlags;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TcpState {
    /// The originator's SYN, no answer yet.
    SynSent,
    /// The responder answered with SYN-ACK.
    SynReceived,
    Established,
    /// The capture began after the handshake.
    Midstream,
    /// A FIN was seen from one side or both.
    Closing {
        orig_fin: bool,
        resp_fin: bool,
    },
    /// Over: the flow has been ended with this state.
    Closed(FlowState),
}

/// The sequence number after a segment: its payload, plus one for SYN and one for FIN.
pub fn segment_end(seq: u32, flags: TcpFlags, payload_len: usize) -> u32 {
    // Sequence numbers wrap; a frame's payload is far below 4 GiB, so the cast keeps it whole.
    seq.wrapping_add(payload_len as u32)
        .wrapping_add(u32::from(flags.has(TcpFlags::SYN)))
        .wrapping_add(u32::from(flags.has(TcpFlags::FIN)))
}

/// Who opened the connection, judged from the first packet seen of it.
pub(super) fn sender_is_originator(flags: TcpFlags, src_port: u16, dst_port: u16) -> bool {
    if flags.has(TcpFlags::SYN) {
        // SYN opens; SYN-ACK answers, so its receiver is the originator.
        return !flags.has(TcpFlags::ACK);
    }
    // Mid-connection: the client is the side on the ephemeral (higher) port.
    src_port >= dst_port
}

impl TcpState {
    pub(super) fn initial(sender_is_orig: bool, flags: TcpFlags) -> TcpState {
        match (flags.has(TcpFlags::SYN), flags.has(TcpFlags::ACK)) {
            (true, false) if sender_is_orig => TcpState::SynSent,
            (true, true) => TcpState::SynReceived,
            _ => TcpState::Midstream,
        }
    }

    pub(super) fn advance(self, direction: Direction, flags: TcpFlags) -> TcpState {
        let from_resp = direction == Direction::FromResponder;
        if flags.has(TcpFlags::RST) {
            return TcpState::Closed(match self {
                TcpState::SynSent if from_resp => FlowState::Rejected,
                // The originator gave up on its own unanswered SYN.
                TcpState::SynSent => FlowState::HalfOpen,
                TcpState::Closed(state) => state,
                _ => FlowState::Reset,
            });
        }
        match self {
            TcpState::SynSent
                if from_resp && flags.has(TcpFlags::SYN) && flags.has(TcpFlags::ACK) =>
            {
                TcpState::SynReceived
            }
            TcpState::SynReceived if !from_resp && flags.has(TcpFlags::ACK) => {
                Self::after_fin(TcpState::Established, from_resp, flags)
            }
            TcpState::Established | TcpState::Midstream | TcpState::Closing { .. } => {
                Self::after_fin(self, from_resp, flags)
            }
            other => other,
        }
    }

    fn after_fin(state: TcpState, from_resp: bool, flags: TcpFlags) -> TcpState {
        if !flags.has(TcpFlags::FIN) {
            return state;
        }
        let (orig_fin, resp_fin) = match state {
            TcpState::Closing { orig_fin, resp_fin } => (orig_fin, resp_fin),
            _ => (false, false),
        };
        let (orig_fin, resp_fin) = (orig_fin || !from_resp, resp_fin || from_resp);
        if orig_fin && resp_fin {
            TcpState::Closed(FlowState::Established)
        } else {
            TcpState::Closing { orig_fin, resp_fin }
        }
    }

    pub(super) fn final_state(self) -> Option<FlowState> {
        match self {
            TcpState::Closed(state) => Some(state),
            _ => None,
        }
    }

    /// How a connection that went quiet is reported.
    pub(super) fn state_if_abandoned(self, answered: bool) -> FlowState {
        match self {
            TcpState::Closed(state) => state,
            TcpState::SynSent => FlowState::HalfOpen,
            TcpState::Midstream if !answered => FlowState::HalfOpen,
            _ => FlowState::Established,
        }
    }
}
