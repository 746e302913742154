//! How often a loop busy with packets stops to answer the management API (the requests waiting
//! on the pipeline's control channel): every [`EVERY_PACKETS`] packets or [`EVERY_MICROS`] of
//! packet time, whichever comes first. Live packets are stamped with the wall clock as they are
//! taken from the ring, so the time bound costs no clock read of its own; it holds under a
//! trickle too, where the packet count alone would keep a request waiting for seconds.

use vigil_plugin_sdk::Timestamp;

/// Packets handled between two looks at the control channel, at most.
pub const EVERY_PACKETS: u32 = 64;
/// Packet time (µs) between two looks at the control channel, at most.
pub const EVERY_MICROS: u64 = 5_000;

#[derive(Debug, Default)]
pub struct ControlCadence {
    packets: u32,
    last: u64,
}

impl ControlCadence {
    /// Counts a packet stamped `ts`; true when the control channel is due a look.
    pub fn due(&mut self, ts: Timestamp) -> bool {
        self.packets += 1;
        let now = ts.micros();
        // A stamp earlier than the last look (replayed captures out of order) waits for the
        // count.
        if self.packets < EVERY_PACKETS && now.saturating_sub(self.last) < EVERY_MICROS {
            return false;
        }
        self.packets = 0;
        self.last = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn looks(cadence: &mut ControlCadence, stamps: impl Iterator<Item = u64>) -> usize {
        stamps
            .filter(|&micros| cadence.due(Timestamp::from_micros(micros)))
            .count()
    }

    #[test]
    fn a_burst_is_served_every_so_many_packets() {
        let mut cadence = ControlCadence::default();
        cadence.due(Timestamp::from_micros(1_000_000));
        // 640 packets within one microsecond-spaced millisecond: the count decides.
        let stamps = (0..640).map(|n| 1_000_000 + n);
        assert_eq!(looks(&mut cadence, stamps), 10);
    }

    #[test]
    fn a_trickle_is_served_every_few_milliseconds() {
        let mut cadence = ControlCadence::default();
        cadence.due(Timestamp::from_micros(1_000_000));
        // One packet a millisecond for 50 ms: the time decides, long before 64 packets.
        let stamps = (1..=50).map(|n| 1_000_000 + n * 1_000);
        assert_eq!(looks(&mut cadence, stamps), 10);
    }

    #[test]
    fn stamps_going_back_fall_back_on_the_count() {
        let mut cadence = ControlCadence::default();
        cadence.due(Timestamp::from_micros(9_000_000));
        // 128 packets a millisecond apart, 8 s before the last look: the 64th packet is looked
        // at, then every fifth millisecond after it (12 more).
        let stamps = (0..128).map(|n| 1_000_000 + n * 1_000);
        assert_eq!(looks(&mut cadence, stamps), 13);
    }
}
