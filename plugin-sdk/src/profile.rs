//! Pattern of life: what each entity (a device, a credential, a static address) has been seen
//! with (hostnames, peers, ports, protocols), learned over packet time, forgotten when it goes
//! stale, and bounded. A model asks [`Profiles::observe`] whether something is new *for this
//! entity*, which is the question behind "an unusual hostname for this user".
//!
//! Everything here is serde, so a plugin's learned state is its profiles, snapshotted through the
//! ABI into the data dir and restored on the next start.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::Timestamp;

const DAY_SECS: u64 = 24 * 3600;

/// How a [`Profiles`] learns and forgets. Part of each model's config, so a signed model update
/// can retune it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProfileConfig {
    /// After an entity is first seen, what it does for this long is learned, never anomalous.
    pub learning_secs: u64,
    /// A value not seen again for this long is forgotten (decay): coming back is new again.
    pub forget_after_secs: u64,
    /// Entities tracked at once; the least recently seen is forgotten first.
    pub max_entities: usize,
    /// Values kept per entity; the least recently seen is forgotten first.
    pub max_values: usize,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            learning_secs: DAY_SECS,
            forget_after_secs: 30 * DAY_SECS,
            max_entities: 16_384,
            max_values: 64,
        }
    }
}

/// One value in an entity's pattern of life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    pub first: Timestamp,
    pub last: Timestamp,
    pub count: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entity<V: Ord> {
    first_seen: Timestamp,
    last_seen: Timestamp,
    values: BTreeMap<V, Sighting>,
}

/// What an observation means for the entity's pattern of life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Novelty<V> {
    /// The entity itself was never seen (or was forgotten): nothing can be unusual for it yet.
    NewEntity,
    /// Still inside the entity's learning period: the value is learned.
    Learning,
    /// Seen before with this value.
    Familiar(Sighting),
    /// A value this entity, past its learning period, was never seen with: `known` is what it
    /// has been seen with (most recent first), the evidence an analyst needs.
    Unusual { known: Vec<V> },
}

/// Per-entity sets of values with first/last seen and counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profiles<K: Ord, V: Ord> {
    entities: BTreeMap<K, Entity<V>>,
}

impl<K: Ord, V: Ord> Default for Profiles<K, V> {
    fn default() -> Self {
        Profiles {
            entities: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone, V: Ord + Clone> Profiles<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `entity` was seen with `value` at `now` and says whether that is usual.
    pub fn observe(
        &mut self,
        config: &ProfileConfig,
        now: Timestamp,
        entity: K,
        value: V,
    ) -> Novelty<V> {
        if !self.entities.contains_key(&entity) {
            self.make_room(config);
            let mut values = BTreeMap::new();
            values.insert(
                value,
                Sighting {
                    first: now,
                    last: now,
                    count: 1,
                },
            );
            self.entities.insert(
                entity,
                Entity {
                    first_seen: now,
                    last_seen: now,
                    values,
                },
            );
            return Novelty::NewEntity;
        }
        let Some(known) = self.entities.get_mut(&entity) else {
            return Novelty::NewEntity;
        };
        known.last_seen = known.last_seen.max(now);
        // Decay: what has not been seen for too long no longer counts as known.
        let forget = config.forget_after_secs;
        known
            .values
            .retain(|_, sighting| now.since(sighting.last) <= forget * 1_000_000);
        if let Some(sighting) = known.values.get_mut(&value) {
            sighting.last = sighting.last.max(now);
            sighting.count = sighting.count.saturating_add(1);
            return Novelty::Familiar(*sighting);
        }
        let learning = now.since(known.first_seen) < config.learning_secs * 1_000_000;
        let mut recent: Vec<(&V, &Sighting)> = known.values.iter().collect();
        recent.sort_by_key(|(_, sighting)| core::cmp::Reverse(sighting.last));
        let previous: Vec<V> = recent.into_iter().map(|(v, _)| v.clone()).collect();
        if known.values.len() >= config.max_values.max(1) {
            if let Some(oldest) = previous.last().cloned() {
                known.values.remove(&oldest);
            }
        }
        known.values.insert(
            value,
            Sighting {
                first: now,
                last: now,
                count: 1,
            },
        );
        if learning {
            Novelty::Learning
        } else {
            Novelty::Unusual { known: previous }
        }
    }

    /// What `entity` has been seen with, if anything.
    pub fn values(&self, entity: &K) -> impl Iterator<Item = (&V, &Sighting)> {
        self.entities
            .get(entity)
            .into_iter()
            .flat_map(|e| e.values.iter())
    }

    /// Whether `entity` is known and past its learning period at `now`.
    pub fn is_learned(&self, config: &ProfileConfig, now: Timestamp, entity: &K) -> bool {
        self.entities
            .get(entity)
            .is_some_and(|e| now.since(e.first_seen) >= config.learning_secs * 1_000_000)
    }

    pub fn len(&self) -> usize {
        self.entities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    fn make_room(&mut self, config: &ProfileConfig) {
        while self.entities.len() >= config.max_entities.max(1) {
            let stalest = self
                .entities
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| k.clone());
            match stalest {
                Some(key) => self.entities.remove(&key),
                None => break,
            };
        }
    }
}

/// A count of events in a sliding window of packet time, in one-second buckets, with the
/// highest count it has reached: "how many searches in the last five minutes, and is that more
/// than this device has ever done".
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RateWindow {
    buckets: VecDeque<(u64, u32)>,
    total: u64,
    peak: u64,
}

impl RateWindow {
    /// Adds `n` at `now` and returns the window's count (within `window_secs` of `now`).
    pub fn add(&mut self, window_secs: u64, now: Timestamp, n: u32) -> u64 {
        let second = now.micros() / 1_000_000;
        self.expire(window_secs, second);
        match self.buckets.back_mut() {
            Some((at, count)) if *at == second => *count = count.saturating_add(n),
            _ => self.buckets.push_back((second, n)),
        }
        self.total += u64::from(n);
        self.peak = self.peak.max(self.total);
        self.total
    }

    /// The window's count at `now`, without adding anything.
    pub fn count(&mut self, window_secs: u64, now: Timestamp) -> u64 {
        self.expire(window_secs, now.micros() / 1_000_000);
        self.total
    }

    /// The highest window count ever reached (what the entity has shown it normally does).
    pub fn peak(&self) -> u64 {
        self.peak
    }

    fn expire(&mut self, window_secs: u64, second: u64) {
        while let Some(&(at, count)) = self.buckets.front() {
            if second.saturating_sub(at) < window_secs.max(1) {
                break;
            }
            self.total -= u64::from(count);
            self.buckets.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn day(n: u64) -> Timestamp {
        Timestamp::from_secs(1_700_000_000 + n * DAY_SECS)
    }

    #[test]
    fn values_are_learned_then_new_ones_are_unusual_with_what_was_known() {
        let config = ProfileConfig::default();
        let mut hosts: Profiles<&str, &str> = Profiles::new();
        assert_eq!(
            hosts.observe(&config, day(0), "alice", "LAPTOP-ALICE"),
            Novelty::NewEntity
        );
        assert_eq!(
            hosts.observe(&config, day(0).plus_secs(60), "alice", "VDI-07"),
            Novelty::Learning
        );
        assert!(matches!(
            hosts.observe(&config, day(3), "alice", "LAPTOP-ALICE"),
            Novelty::Familiar(Sighting { count: 2, .. })
        ));
        assert_eq!(
            hosts.observe(&config, day(4), "alice", "DESKTOP-7Q2M1X"),
            Novelty::Unusual {
                known: alloc::vec!["LAPTOP-ALICE", "VDI-07"]
            }
        );
        // Now it is known.
        assert!(matches!(
            hosts.observe(&config, day(4).plus_secs(1), "alice", "DESKTOP-7Q2M1X"),
            Novelty::Familiar(_)
        ));
        assert!(hosts.is_learned(&config, day(4), &"alice"));
        assert!(!hosts.is_learned(&config, day(4), &"bob"));
    }

    #[test]
    fn stale_values_decay_and_bounds_hold() {
        let config = ProfileConfig {
            forget_after_secs: 7 * DAY_SECS,
            max_entities: 3,
            max_values: 2,
            ..ProfileConfig::default()
        };
        let mut peers: Profiles<u32, u32> = Profiles::new();
        peers.observe(&config, day(0), 1, 10);
        assert!(matches!(
            peers.observe(&config, day(20), 1, 10),
            Novelty::Unusual { .. }
        ));
        for value in 0..10 {
            peers.observe(&config, day(21), 1, value);
        }
        assert_eq!(peers.values(&1).count(), 2);
        for entity in 2..10 {
            peers.observe(&config, day(22).plus_secs(entity.into()), entity, 1);
        }
        assert_eq!(peers.len(), 3);
        assert!(
            peers.values(&1).next().is_none(),
            "the stalest entity went first"
        );
    }

    #[test]
    fn rate_window_slides_and_remembers_its_peak() {
        let mut rate = RateWindow::default();
        let t0 = Timestamp::from_secs(1000);
        for s in 0..10 {
            rate.add(5, t0.plus_secs(s), 2);
        }
        assert_eq!(rate.count(5, t0.plus_secs(9)), 10);
        assert_eq!(rate.count(5, t0.plus_secs(100)), 0);
        assert_eq!(rate.peak(), 10);
    }

    #[test]
    fn profiles_survive_a_snapshot() {
        let config = ProfileConfig::default();
        let mut hosts: Profiles<alloc::string::String, alloc::string::String> = Profiles::new();
        hosts.observe(&config, day(0), "alice".into(), "LAPTOP-ALICE".into());
        let bytes = postcard::to_allocvec(&hosts).expect("serialises");
        let mut back: Profiles<alloc::string::String, alloc::string::String> =
            postcard::from_bytes(&bytes).expect("deserialises");
        assert!(matches!(
            back.observe(&config, day(2), "alice".into(), "LAPTOP-ALICE".into()),
            Novelty::Familiar(_)
        ));
    }
}
