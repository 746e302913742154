//! Who may talk to the API: the bearer token, checked from the headers alone before any body is
//! read, and a per-source limit on failures so the token cannot be guessed at speed.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};

use super::failures::{same_secret, FailureLimit};

/// Failed requests a source may make in one [`FAILURE_WINDOW`] before it is refused outright.
pub const MAX_FAILURES: u32 = 10;
/// How long a source's failures count; a source over the limit is refused until it ends.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// What a request asks for: `/metrics` also takes the metrics token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Api,
    Metrics,
}

/// What the gate says of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No token or a wrong one (counted against the source).
    Unauthorised,
    /// The source failed too often lately; its token is not even looked at.
    TooManyFailures,
}

pub struct Gate {
    token: String,
    /// A token good for `/metrics` only, so a scraper holds no power over the appliance.
    metrics_token: Option<String>,
    failures: FailureLimit,
}

impl Gate {
    pub fn new(token: String, metrics_token: Option<String>) -> Gate {
        Gate {
            token,
            metrics_token,
            failures: FailureLimit::new(MAX_FAILURES, FAILURE_WINDOW),
        }
    }

    /// Judges a request from `source` for `scope` by its headers, at `now`.
    pub fn check(
        &self,
        source: IpAddr,
        headers: &HeaderMap,
        scope: Scope,
        now: Instant,
    ) -> Verdict {
        if self.failures.refused(source, now) {
            return Verdict::TooManyFailures;
        }
        if self.authorised(headers, scope) {
            return Verdict::Allowed;
        }
        self.failures.fail(source, now);
        Verdict::Unauthorised
    }

    fn authorised(&self, headers: &HeaderMap, scope: Scope) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
        else {
            return false;
        };
        let metrics_token = match scope {
            Scope::Metrics => self.metrics_token.as_deref(),
            Scope::Api => None,
        };
        same_secret(given, &self.token) || metrics_token.is_some_and(|m| same_secret(given, m))
    }
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
        assert!(same_secret(TOKEN, TOKEN));
        assert!(!same_secret("correct horse batterx", TOKEN));
        assert!(!same_secret("correct", TOKEN));
        assert!(!same_secret("", TOKEN));
    }

    #[test]
    fn a_source_that_fails_too_often_is_refused_until_its_window_ends_and_others_are_not() {
        let gate = Gate::new(TOKEN.into(), None);
        let now = Instant::now();
        let (guesser, operator): (IpAddr, IpAddr) = (
            "10.0.0.9".parse().expect("address"),
            "10.0.0.1".parse().expect("address"),
        );
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                gate.check(guesser, &bearer("a wrong guess"), Scope::Api, now),
                Verdict::Unauthorised
            );
        }
        assert_eq!(
            gate.check(guesser, &HeaderMap::new(), Scope::Api, now),
            Verdict::TooManyFailures
        );
        // Even the right token: a guesser that found it must not learn so.
        assert_eq!(
            gate.check(guesser, &bearer(TOKEN), Scope::Api, now),
            Verdict::TooManyFailures
        );
        assert_eq!(
            gate.check(operator, &bearer(TOKEN), Scope::Api, now),
            Verdict::Allowed
        );
        let later = now + FAILURE_WINDOW;
        assert_eq!(
            gate.check(guesser, &bearer(TOKEN), Scope::Api, later),
            Verdict::Allowed
        );
    }

    #[test]
    fn the_metrics_token_opens_metrics_only() {
        const METRICS: &str = "a token for the scraper";
        let gate = Gate::new(TOKEN.into(), Some(METRICS.into()));
        let now = Instant::now();
        let scraper: IpAddr = "10.0.0.7".parse().expect("address");
        let check = |token, scope| gate.check(scraper, &bearer(token), scope, now);
        assert_eq!(check(METRICS, Scope::Metrics), Verdict::Allowed);
        assert_eq!(check(TOKEN, Scope::Metrics), Verdict::Allowed);
        assert_eq!(check(METRICS, Scope::Api), Verdict::Unauthorised);
    }
}
