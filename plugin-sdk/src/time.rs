//! Packet time. All plugin logic runs on the capture's clock, never the wall clock, so a replayed
//! pcap raises exactly the breaches it raised live.

use core::fmt;
use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch, taken from the packet that caused the event.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const fn from_secs(secs: u64) -> Self {
        Timestamp(secs * 1_000_000)
    }

    pub const fn from_micros(micros: u64) -> Self {
        Timestamp(micros)
    }

    pub const fn micros(self) -> u64 {
        self.0
    }

    pub fn secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// Time elapsed since `earlier`, in microseconds; zero if `earlier` is later (packet clocks
    /// can step backwards slightly between merged captures).
    pub const fn since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    pub const fn plus_secs(self, secs: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(secs * 1_000_000))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}
