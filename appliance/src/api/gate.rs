//! Who may talk to the API: the bearer token, checked from the headers alone before any body is
//! read, and a per-source limit on failures so the token cannot be guessed at speed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};

/// Failed requests a source may make in one [`FAILURE_WINDOW`] before it is refused outright.
pub const MAX_FAILURES: u32 = 10;
/// How long a source's failures count; a source over the limit is refused until it ends.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Sources remembered at once; past it the oldest window is forgotten first, so a flood from
/// many addresses costs bounded memory.
const MAX_SOURCES: usize = 4096;

/// What the gate says of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No token or a wrong one (counted against the source).
    Unauthorised,
    /// The source failed too often lately; its token is not even looked at.
    TooManyFailures,
}

/// One source's failures in its current window.
struct Failures {
    since: Instant,
    count: u32,
}

pub struct Gate {
    token: String,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl Gate {
    pub fn new(token: String) -> Gate {
        Gate {
            token,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Judges a request from `source` by its headers, at `now`.
    pub fn check(&self, source: IpAddr, headers: &HeaderMap, now: Instant) -> Verdict {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(seen) = failures.get(&source) {
            if now.duration_since(seen.since) >= FAILURE_WINDOW {
                failures.remove(&source);
            } else if seen.count >= MAX_FAILURES {
                return Verdict::TooManyFailures;
            }
        }
        if self.authorised(headers) {
            return Verdict::Allowed;
        }
        if !failures.contains_key(&source) && failures.len() >= MAX_SOURCES {
            forget_oldest(&mut failures, now);
        }
        failures
            .entry(source)
            .or_insert(Failures {
                since: now,
                count: 0,
            })
            .count += 1;
        Verdict::Unauthorised
    }

    fn authorised(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .is_some_and(|token| same_token(token, &self.token))
    }
}

/// Drops the windows that ended, or if none did, the oldest one.
fn forget_oldest(failures: &mut HashMap<IpAddr, Failures>, now: Instant) {
    failures.retain(|_, seen| now.duration_since(seen.since) < FAILURE_WINDOW);
    if failures.len() < MAX_SOURCES {
        return;
    }
    if let Some(oldest) = failures
        .iter()
        .min_by_key(|(_, seen)| seen.since)
        .map(|(source, _)| *source)
    {
        failures.remove(&oldest);
    }
}

/// Compares in time independent of where the strings differ.
fn same_token(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "correct horse battery";

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
        headers
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(TOKEN, TOKEN));
        assert!(!same_token("correct horse batterx", TOKEN));
        assert!(!same_token("correct", TOKEN));
        assert!(!same_token("", TOKEN));
    }

    #[test]
    fn a_source_that_fails_too_often_is_refused_until_its_window_ends_and_others_are_not() {
        let gate = Gate::new(TOKEN.into());
        let now = Instant::now();
        let (guesser, operator): (IpAddr, IpAddr) = (
            "10.0.0.9".parse().expect("address"),
            "10.0.0.1".parse().expect("address"),
        );
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                gate.check(guesser, &bearer("a wrong guess"), now),
                Verdict::Unauthorised
            );
        }
        assert_eq!(
            gate.check(guesser, &HeaderMap::new(), now),
            Verdict::TooManyFailures
        );
        // Even the right token: a guesser that found it must not learn so.
        assert_eq!(
            gate.check(guesser, &bearer(TOKEN), now),
            Verdict::TooManyFailures
        );
        assert_eq!(gate.check(operator, &bearer(TOKEN), now), Verdict::Allowed);
        let later = now + FAILURE_WINDOW;
        assert_eq!(gate.check(guesser, &bearer(TOKEN), later), Verdict::Allowed);
    }
}
