//! Fire once per burst: a model breaches at most once in an episode of activity, and the
//! episode ends after a quiet spell, so the next burst is a new episode that can breach again.
//!
//! A function over the model's own two fields (a `fired` flag and the latest activity), not a
//! type: the models' snapshots already hold those fields under their own names, and a nested
//! type would change the layout their postcard and CBOR snapshots restore from.

use crate::{Duration, Timestamp};

/// Ends a breached episode (`fired`) whose latest activity, `last`, is `quiet` or more before
/// `now`; true when it did, so the caller starts counting the next one from nothing.
pub fn rearm(fired: &mut bool, last: Timestamp, now: Timestamp, quiet: Duration) -> bool {
    let ended = *fired && now.elapsed_since(last) >= quiet;
    if ended {
        *fired = false;
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_breached_episode_rearms_only_after_quiet() {
        let t = Timestamp::from_secs;
        let quiet = Duration::from_secs(60);
        let mut fired = false;
        assert!(!rearm(&mut fired, t(0), t(1000), quiet), "never breached");
        fired = true;
        assert!(!rearm(&mut fired, t(150), t(200), quiet), "50 s of quiet");
        assert!(fired);
        assert!(rearm(&mut fired, t(150), t(210), quiet));
        assert!(!fired);
    }
}
