//! Failed attempts per source address within a window, so a secret cannot be guessed at speed:
//! the bearer token ([`super::gate`]) and the console's sign-in share it, each with its own limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sources remembered at once; past it the oldest window is forgotten first, so a flood from
/// many addresses costs bounded memory.
const MAX_SOURCES: usize = 4096;

/// One source's failures in its current window.
struct Failures {
    since: Instant,
    count: u32,
}

pub struct FailureLimit {
    /// Failures a source may make in one window before it is refused outright.
    max: u32,
    /// How long a source's failures count; a source over the limit is refused until it ends.
    pub window: Duration,
    sources: Mutex<HashMap<IpAddr, Failures>>,
}

impl FailureLimit {
    pub fn new(max: u32, window: Duration) -> FailureLimit {
        FailureLimit {
            max,
            window,
            sources: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.sources
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// True while `source` has used up its failures in a window that has not ended at `now`.
    pub fn refused(&self, source: IpAddr, now: Instant) -> bool {
        let mut sources = self.lock();
        match sources.get(&source) {
            Some(seen) if now.duration_since(seen.since) >= self.window => {
                sources.remove(&source);
                false
            }
            Some(seen) => seen.count >= self.max,
            None => false,
        }
    }

    /// Counts a failure of `source` at `now`.
    pub fn fail(&self, source: IpAddr, now: Instant) {
        let mut sources = self.lock();
        if !sources.contains_key(&source) && sources.len() >= MAX_SOURCES {
            self.forget_oldest(&mut sources, now);
        }
        sources
            .entry(source)
            .or_insert(Failures {
                since: now,
                count: 0,
            })
            .count += 1;
    }

    /// Drops the windows that ended, or if none did, the oldest one.
    fn forget_oldest(&self, sources: &mut HashMap<IpAddr, Failures>, now: Instant) {
        sources.retain(|_, seen| now.duration_since(seen.since) < self.window);
        if sources.len() < MAX_SOURCES {
            return;
        }
        if let Some(oldest) = sources
            .iter()
            .min_by_key(|(_, seen)| seen.since)
            .map(|(source, _)| *source)
        {
            sources.remove(&oldest);
        }
    }
}

/// Compares in time independent of where the strings differ.
pub fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
