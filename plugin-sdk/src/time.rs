//! Packet time. All plugin logic runs on the capture's clock, never the wall clock, so a replayed
//! pcap raises exactly the breaches it raised live.

use core::fmt;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
        self.plus(Duration::from_secs(secs))
    }

    pub const fn plus(self, span: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(span.0))
    }

    /// Whole seconds since the epoch.
    pub const fn secs(self) -> u64 {
        self.0 / Duration::from_secs(1).0
    }

    /// Time elapsed since `earlier` (zero if `earlier` is later), to compare with a
    /// [`Duration`] from a model's config.
    pub const fn elapsed_since(self, earlier: Timestamp) -> Duration {
        Duration(self.since(earlier))
    }
}

/// A span of packet time, such as a model's window or quiet spell. In a config it is written in
/// whole seconds under a key that says so (`"window_secs": 600`), and shown in evidence the same
/// way; inside, it is microseconds like [`Timestamp`], so no model converts by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(u64);

impl Duration {
    pub const fn from_secs(secs: u64) -> Duration {
        Duration(secs.saturating_mul(1_000_000))
    }

    /// Whole seconds.
    pub const fn secs(self) -> u64 {
        self.0 / 1_000_000
    }

    pub const fn micros(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.secs())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.secs())
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_secs)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

impl Timestamp {
    /// `2026-11-23T06:48:00Z`: the form analysts read in evidence (whole seconds, UTC).
    pub fn rfc3339(self) -> alloc::string::String {
        let secs = self.0 / 1_000_000;
        let (days, rest) = (secs / 86_400, secs % 86_400);
        // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        alloc::format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            rest / 3600,
            rest / 60 % 60,
            rest % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_configured_and_shown_in_seconds() {
        let window: Duration = serde_json::from_str("600").expect("seconds");
        assert_eq!(window, Duration::from_secs(600));
        assert_eq!(serde_json::to_string(&window).expect("JSON"), "600");
        assert_eq!(alloc::format!("{window}"), "600");
        let t = Timestamp::from_secs(1000);
        assert!(t.plus_secs(600).elapsed_since(t) >= window);
        assert_eq!(t.elapsed_since(t.plus_secs(1)), Duration::default());
    }

    #[test]
    fn rfc3339_renders_utc_dates() {
        assert_eq!(Timestamp::from_secs(0).rfc3339(), "1970-01-01T00:00:00Z");
        // A November morning, and a leap day.
        assert_eq!(
            Timestamp::from_secs(1_763_880_480).rfc3339(),
            "2025-11-23T06:48:00Z"
        );
        assert_eq!(
            Timestamp::from_secs(951_782_400).rfc3339(),
            "2000-02-29T00:00:00Z"
        );
    }
}
