//! Pattern of life: what each entity (a device, a credential, a static address) has been seen
//! with (hostnames, peers, ports, protocols), learned over packet time, forgotten when it goes
//! stale, and bounded. A model asks [`Profiles::observe`] whether something is new *for this
//! entity*, which is the question behind "an unusual hostname for this user".
//!
//! Everything here is serde, so a plugin's learned state is its profiles, snapshotted through the
//! ABI into the data dir and restored on the next start.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Duration, Timestamp};

const DAY_SECS: u64 = 24 * 3600;

/// How a [`Profiles`] learns and forgets. Part of each model's config, so a signed model update
/// can retune it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProfileConfig {
    /// After an entity is first seen, what it does for this long is learned, never anomalous.
    #[serde(rename = "learning_secs")]
    pub learning: Duration,
    /// A value not seen again for this long is forgotten (decay): coming back is new again.
    #[serde(rename = "forget_after_secs")]
    pub forget_after: Duration,
    /// Entities tracked at once; the least recently seen is forgotten first.
    pub max_entities: usize,
    /// Values kept per entity; the least recently seen is forgotten first.
    pub max_values: usize,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            learning: Duration::from_secs(DAY_SECS),
            forget_after: Duration::from_secs(30 * DAY_SECS),
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
#[derive(Debug, Clone)]
pub struct Profiles<K: Ord, V: Ord> {
    /// Touched when each entity is seen (as its `last_seen`): past `max_entities` the least
    /// recently seen is forgotten first.
    entities: BoundedMap<K, Entity<V>>,
}

impl<K: Ord, V: Ord> Default for Profiles<K, V> {
    fn default() -> Self {
        Profiles {
            entities: BoundedMap::default(),
        }
    }
}

/// How [`Profiles`] are saved: each entity already holds when it was last seen, so the layout is
/// the plain map models have saved since before [`BoundedMap`], and their snapshots restore.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Profiles")]
struct SavedProfiles<E> {
    entities: E,
}

impl<K: Ord + Clone + Serialize, V: Ord + Serialize> Serialize for Profiles<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let entities = MapOf(|| self.entities.iter().map(|(k, _, entity)| (k, entity)));
        SavedProfiles { entities }.serialize(serializer)
    }
}

impl<'de, K, V> Deserialize<'de> for Profiles<K, V>
where
    K: Ord + Clone + Deserialize<'de>,
    V: Ord + Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let saved = SavedProfiles::<BTreeMap<K, Entity<V>>>::deserialize(deserializer)?;
        let entities = saved.entities.into_iter();
        Ok(Profiles {
            entities: entities.map(|(k, e)| (k, e.last_seen, e)).collect(),
        })
    }
}

/// Serialises the pairs its function yields as a map, without collecting them first.
struct MapOf<F>(F);

impl<F, I, K, V> Serialize for MapOf<F>
where
    F: Fn() -> I,
    I: Iterator<Item = (K, V)>,
    K: Serialize,
    V: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map((self.0)())
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
        let is_new = !self.entities.contains_key(&entity);
        let known = self
            .entities
            .touch(config.max_entities, now, entity, || Entity {
                first_seen: now,
                last_seen: now,
                values: BTreeMap::new(),
            });
        if is_new {
            let sighting = Sighting {
                first: now,
                last: now,
                count: 1,
            };
            known.values.insert(value, sighting);
            return Novelty::NewEntity;
        }
        known.last_seen = known.last_seen.max(now);
        // Decay: what has not been seen for too long no longer counts as known.
        let forget = config.forget_after;
        known
            .values
            .retain(|_, sighting| now.elapsed_since(sighting.last) <= forget);
        if let Some(sighting) = known.values.get_mut(&value) {
            sighting.last = sighting.last.max(now);
            sighting.count = sighting.count.saturating_add(1);
            return Novelty::Familiar(*sighting);
        }
        let learning = now.elapsed_since(known.first_seen) < config.learning;
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
            .is_some_and(|e| now.elapsed_since(e.first_seen) >= config.learning)
    }

    pub fn len(&self) -> usize {
        self.entities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
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
    /// Adds `n` at `now` and returns the window's count (within `window` of `now`).
    pub fn add(&mut self, window: Duration, now: Timestamp, n: u32) -> u64 {
        let second = now.secs();
        self.expire(window.secs(), second);
        match self.buckets.back_mut() {
            Some((at, count)) if *at == second => *count = count.saturating_add(n),
            _ => self.buckets.push_back((second, n)),
        }
        self.total += u64::from(n);
        self.peak = self.peak.max(self.total);
        self.total
    }

    /// The window's count at `now`, without adding anything.
    pub fn count(&mut self, window: Duration, now: Timestamp) -> u64 {
        self.expire(window.secs(), now.secs());
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

/// A map that holds at most `capacity` entries and forgets the least recently touched first:
/// each entry carries when it was last touched, and an index orders the touches.
/// Serialised as the entries alone; the index is rebuilt on the way back.
///
/// The index is lazy, because a scan model touches an entry per flow: a touch appends
/// `(when, key)` (at the back, as packet time moves forward) and leaves the entry's older pair
/// in place. A pair is stale when its entry has been touched since or removed; eviction skips
/// those, and the index is rebuilt from the entries once stale pairs outnumber them. Which
/// entry goes first is exactly the least `(last touch, key)`, as a sorted set would give.
#[derive(Debug, Clone)]
pub struct BoundedMap<K: Ord, V> {
    entries: BTreeMap<K, (Timestamp, V)>,
    /// Every entry's `(last touch, key)` and some stale ones, in ascending order.
    by_touch: VecDeque<(Timestamp, K)>,
}

impl<K: Ord, V> Default for BoundedMap<K, V> {
    fn default() -> Self {
        BoundedMap {
            entries: BTreeMap::new(),
            by_touch: VecDeque::new(),
        }
    }
}

/// Stale index pairs allowed beyond the entries' count before the index is rebuilt.
const STALE_SLACK: usize = 32;

impl<K: Ord + Clone, V> BoundedMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry for `key`, touched at `now` (made by `make` if absent, after forgetting the
    /// least recently touched entries that would exceed `capacity`).
    pub fn touch(
        &mut self,
        capacity: usize,
        now: Timestamp,
        key: K,
        make: impl FnOnce() -> V,
    ) -> &mut V {
        self.rebuild_index_if_stale();
        // Only a full map must make room, and only for a new key: most touches skip the lookup.
        if self.entries.len() >= capacity.max(1) && !self.entries.contains_key(&key) {
            while self.entries.len() >= capacity.max(1) {
                if self.evict_stalest().is_none() {
                    break;
                }
            }
        }
        let mut made = false;
        let slot = self.entries.entry(key.clone()).or_insert_with(|| {
            made = true;
            (now, make())
        });
        // Packet clocks can step back slightly between merged captures: keep the latest touch.
        if made || now > slot.0 {
            slot.0 = now;
            let pair = (now, key);
            match self.by_touch.back() {
                Some(last) if *last > pair => {
                    let at = self.by_touch.partition_point(|p| *p < pair);
                    self.by_touch.insert(at, pair);
                }
                _ => self.by_touch.push_back(pair),
            }
        }
        &mut slot.1
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(_, value)| value)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key).map(|(_, value)| value)
    }

    /// When `key` was last touched.
    pub fn touched(&self, key: &K) -> Option<Timestamp> {
        self.entries.get(key).map(|(at, _)| *at)
    }

    /// Forgets the least recently touched entry, and returns it.
    pub fn evict_stalest(&mut self) -> Option<(K, V)> {
        while let Some((at, key)) = self.by_touch.pop_front() {
            if self.touched(&key) == Some(at) {
                let (_, value) = self.entries.remove(&key)?;
                return Some((key, value));
            }
        }
        None
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Keeps only the entries `keep` says yes to (given each one's key, when it was last
    /// touched, and its value).
    pub fn retain(&mut self, mut keep: impl FnMut(&K, Timestamp, &mut V) -> bool) {
        self.entries
            .retain(|key, (at, value)| keep(key, *at, value));
        self.rebuild_index_if_stale();
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let (_, value) = self.entries.remove(key)?;
        self.rebuild_index_if_stale();
        Some(value)
    }

    /// Entries in key order, with when each was last touched.
    pub fn iter(&self) -> impl Iterator<Item = (&K, Timestamp, &V)> {
        self.entries.iter().map(|(k, (at, v))| (k, *at, v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops the stale pairs once they outnumber the entries (amortised O(log n) a touch).
    fn rebuild_index_if_stale(&mut self) {
        if self.by_touch.len() > 2 * self.entries.len() + STALE_SLACK {
            self.by_touch = index_of(&self.entries);
        }
    }
}

/// The touch index of `entries`, with no stale pair.
fn index_of<K: Ord + Clone, V>(entries: &BTreeMap<K, (Timestamp, V)>) -> VecDeque<(Timestamp, K)> {
    let mut pairs: Vec<(Timestamp, K)> = entries
        .iter()
        .map(|(key, (at, _))| (*at, key.clone()))
        .collect();
    pairs.sort_unstable();
    pairs.into()
}

/// A map from entries and when each was last touched: what a plugin's `migrate` builds from the
/// plain map an older version kept.
impl<K: Ord + Clone, V> FromIterator<(K, Timestamp, V)> for BoundedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, Timestamp, V)>>(entries: I) -> Self {
        let entries: BTreeMap<K, (Timestamp, V)> = entries
            .into_iter()
            .map(|(key, at, value)| (key, (at, value)))
            .collect();
        let by_touch = index_of(&entries);
        BoundedMap { entries, by_touch }
    }
}

impl<K: Ord + Serialize, V: Serialize> Serialize for BoundedMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.entries.serialize(serializer)
    }
}

impl<'de, K, V> Deserialize<'de> for BoundedMap<K, V>
where
    K: Ord + Clone + Deserialize<'de>,
    V: Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = BTreeMap::<K, (Timestamp, V)>::deserialize(deserializer)?;
        let by_touch = index_of(&entries);
        Ok(BoundedMap { entries, by_touch })
    }
}

/// How a [`FanOutProfiles`] learns each device's usual fan-out. Part of each scan model's config
/// (`pattern`), so a signed model update can retune it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PatternConfig {
    /// From when a model starts, and from when it first sees a device, this long is learning:
    /// the model's fixed threshold decides alone, and its breaches say they were raised while
    /// learning. Four days: the labs' five-day baselines end past it, and a weekly job is seen
    /// at least once before it ends only if the network was watched a week; raise it for that.
    #[serde(rename = "learning_secs")]
    pub learning: Duration,
    /// A target, or a peak, not seen again for this long is forgotten (decay).
    #[serde(rename = "forget_after_secs")]
    pub forget_after: Duration,
    /// Devices whose pattern is kept; the least recently active is forgotten first.
    pub max_devices: usize,
    /// Usual targets kept per device; the least recently touched is forgotten first.
    pub max_targets: usize,
    /// Usual targets kept in all, across devices (about 100 bytes each in the plugin's memory):
    /// past it the least recently active devices are forgotten whole. The per-device bounds
    /// alone would allow far more than a plugin's memory limit.
    pub max_targets_total: usize,
    /// A window with this many times the device's learned peak of distinct targets is "well
    /// over" its usual rate, even when every target is one it knows.
    pub peak_factor: u32,
    /// `false`: nothing is learned and the fixed threshold alone decides, as before models
    /// learned (breaches carry no pattern evidence); the benchmark's baseline.
    pub learn: bool,
}

impl Default for PatternConfig {
    fn default() -> Self {
        PatternConfig {
            learning: Duration::from_secs(4 * DAY_SECS),
            forget_after: Duration::from_secs(30 * DAY_SECS),
            max_devices: 16_384,
            max_targets: 1024,
            max_targets_total: 200_000,
            peak_factor: 3,
            learn: true,
        }
    }
}

/// Where a device's (and the model's) pattern of life stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Learning {
    /// Still learning since `since` (the later of the model's start and the device's first
    /// sighting), until `until`.
    Learning { since: Timestamp, until: Timestamp },
    /// Learned since `since`.
    Learned { since: Timestamp },
    /// The model does not learn ([`PatternConfig::learn`] is off): its threshold decides.
    Off,
}

impl Learning {
    /// A pattern learned for `period` from `since`, as it stands at `now`.
    pub fn from(since: Timestamp, period: Duration, now: Timestamp) -> Learning {
        let until = since.plus(period);
        if now >= until {
            Learning::Learned { since: until }
        } else {
            Learning::Learning { since, until }
        }
    }

    pub fn is_learned(&self) -> bool {
        matches!(self, Learning::Learned { .. })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(
    serialize = "T: Serialize",
    deserialize = "T: Ord + Clone + Deserialize<'de>"
))]
struct DeviceFanOut<T: Ord> {
    first_seen: Timestamp,
    /// Usual targets, each with when it was first seen (since it was last forgotten).
    targets: BoundedMap<T, Timestamp>,
    /// The most distinct targets one window held, and when it was last reached.
    peak: u32,
    peak_at: Timestamp,
}

/// What a window of a device's targets is, against the device's learned fan-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanOutVerdict<K, T> {
    pub learning: Learning,
    /// For a device still learning: a learned device whose usual targets hold most of the
    /// window (its peer group), which it was compared with instead of the fixed floor.
    pub peer: Option<K>,
    /// Distinct targets in the window.
    pub seen: usize,
    /// The window's targets the device was not seen with before this window.
    pub new: Vec<T>,
    /// The device's learned peak of distinct targets per window (0: none yet).
    pub peak: u32,
    /// Beyond the device's own pattern: at least the model's floor of new targets, or a window
    /// `peak_factor` times its learned peak; for a learning device with a peer, at least the
    /// floor of targets its peer was never seen with.
    pub unusual: bool,
}

impl<K, T> FanOutVerdict<K, T> {
    /// Whether the window breaches: during learning the floor alone decides (the caller only
    /// asks once the floor is reached) unless the device behaves like a learned peer; past
    /// learning, or with a peer, only what is unusual decides.
    pub fn breaches(&self) -> bool {
        (!self.learning.is_learned() && self.peer.is_none()) || self.unusual
    }

    /// `score` scaled by how far beyond the device's pattern the window is: the whole score
    /// when at least half of its targets are new, down to half of it when none is.
    pub fn score(&self, score: u8) -> u8 {
        let seen = self.seen.max(1);
        let weight = (seen / 2 + self.new.len()).min(seen);
        u8::try_from(usize::from(score) * weight / seen).unwrap_or(score)
    }
}

/// Per device, the targets (hosts, ports, host:port pairs) it usually touches and its usual
/// fan-out per window, learned on packet time with decay and bounds: what a scan model needs to
/// tell a device doing its usual job from one doing something new.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize, T: Serialize",
    deserialize = "K: Ord + Clone + Deserialize<'de>, T: Ord + Clone + Deserialize<'de>"
))]
pub struct FanOutProfiles<K: Ord, T: Ord> {
    /// When the model saw its first event: nothing is learned before that.
    started: Option<Timestamp>,
    devices: BoundedMap<K, DeviceFanOut<T>>,
    /// Usual targets kept, over all devices.
    targets_total: usize,
}

impl<K: Ord, T: Ord> Default for FanOutProfiles<K, T> {
    fn default() -> Self {
        FanOutProfiles {
            started: None,
            devices: BoundedMap::default(),
            targets_total: 0,
        }
    }
}

impl<K: Ord + Clone, T: Ord + Clone> FanOutProfiles<K, T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that the model is running and `device` is active at `now` (any event of it, not
    /// only those it counts: a device's age is how long it has been watched).
    pub fn seen(&mut self, config: &PatternConfig, now: Timestamp, device: &K) {
        self.start(now);
        if !self.devices.contains_key(device) {
            while self.devices.len() >= config.max_devices.max(1) {
                self.forget_stalest_device();
            }
        }
        self.devices
            .touch(config.max_devices, now, device.clone(), || DeviceFanOut {
                first_seen: now,
                targets: BoundedMap::new(),
                peak: 0,
                peak_at: now,
            });
    }

    /// Notes that the model is running at `now` (its first event starts its learning).
    pub fn start(&mut self, now: Timestamp) {
        self.started.get_or_insert(now);
    }

    /// Whether `device` has a pattern kept.
    pub fn knows(&self, device: &K) -> bool {
        self.devices.contains_key(device)
    }

    /// Whether `device`'s pattern (and the model's) is still being learned at `now`.
    pub fn learning(&self, config: &PatternConfig, now: Timestamp, device: &K) -> Learning {
        let model = self.started.unwrap_or(now);
        let device = self.devices.get(device).map_or(now, |d| d.first_seen);
        Learning::from(model.max(device), config.learning, now)
    }

    /// Judges `device`'s current window of `targets` (distinct, `window_secs` long) against
    /// what it learned before this window; `floor` is the model's threshold.
    pub fn judge(
        &self,
        config: &PatternConfig,
        now: Timestamp,
        window: Duration,
        device: &K,
        targets: &[T],
        floor: usize,
    ) -> FanOutVerdict<K, T> {
        let new: Vec<T> = targets
            .iter()
            .filter(|t| !self.is_usual(now, window, device, t))
            .cloned()
            .collect();
        let peak = self.peak(config, now, device);
        let over_peak = peak > 0
            && u64::try_from(targets.len()).unwrap_or(u64::MAX)
                >= u64::from(peak) * u64::from(config.peak_factor.max(1));
        let learning = self.learning(config, now, device);
        let peer = if learning.is_learned() {
            None
        } else {
            self.peer_for(config, now, window, device, targets)
        };
        let unusual = match &peer {
            Some((_, covered)) => targets.len().saturating_sub(*covered) >= floor.max(1),
            None => new.len() >= floor.max(1) || over_peak,
        };
        FanOutVerdict {
            learning,
            peer: peer.map(|(peer, _)| peer),
            seen: targets.len(),
            unusual,
            new,
            peak,
        }
    }

    /// A learned device that behaves like `device` does in this window: at least four fifths
    /// of the window are its usual targets, and the window is under `peak_factor` times its
    /// peak. The one covering most, with how many it covers. (A new backup server doing what
    /// the old one does every night is doing the same job.)
    fn peer_for(
        &self,
        config: &PatternConfig,
        now: Timestamp,
        window: Duration,
        device: &K,
        targets: &[T],
    ) -> Option<(K, usize)> {
        let seen = u64::try_from(targets.len()).unwrap_or(u64::MAX);
        let factor = u64::from(config.peak_factor.max(1));
        self.devices
            .iter()
            .filter(|(peer, ..)| *peer != device)
            // Cheap checks first: only devices that fan out about this wide are compared.
            .filter(|(peer, ..)| u64::from(self.peak(config, now, peer)) * factor > seen)
            .filter(|(peer, ..)| self.learning(config, now, peer).is_learned())
            .map(|(peer, ..)| {
                let covered = targets
                    .iter()
                    .filter(|t| self.is_usual(now, window, peer, t))
                    .count();
                (peer, covered)
            })
            .filter(|(_, covered)| covered * 5 >= targets.len() * 4)
            .fold(
                None,
                |best: Option<(&K, usize)>, (peer, covered)| match best {
                    Some((_, most)) if most >= covered => best,
                    _ => Some((peer, covered)),
                },
            )
            .map(|(peer, covered)| (peer.clone(), covered))
    }

    /// Whether `device` was seen with `target` before the window of `window_secs` that ends at
    /// `now` (and has not forgotten it since: [`FanOutProfiles::learn`] makes a target touched
    /// after `forget_after_secs` new again).
    pub fn is_usual(&self, now: Timestamp, window: Duration, device: &K, target: &T) -> bool {
        self.devices
            .get(device)
            .and_then(|d| d.targets.get(target))
            .is_some_and(|first| now.elapsed_since(*first) >= window)
    }

    /// `device`'s learned peak of distinct targets per window at `now` (0: none, or forgotten).
    pub fn peak(&self, config: &PatternConfig, now: Timestamp, device: &K) -> u32 {
        self.devices
            .get(device)
            .filter(|d| now.elapsed_since(d.peak_at) <= config.forget_after)
            .map_or(0, |d| d.peak)
    }

    /// The targets `device` is known for at `now` (learned before the current window, not
    /// forgotten), for evidence.
    pub fn usual(
        &self,
        config: &PatternConfig,
        now: Timestamp,
        window: Duration,
        device: &K,
    ) -> Vec<T> {
        let forget = config.forget_after;
        self.devices
            .get(device)
            .into_iter()
            .flat_map(|d| d.targets.iter())
            .filter(|(_, touched, first)| {
                now.elapsed_since(*touched) <= forget && now.elapsed_since(**first) >= window
            })
            .map(|(target, ..)| target.clone())
            .collect()
    }

    /// Learns that `device` touched `target` at `now`, its window then holding `in_window`
    /// distinct targets. A target not seen for `forget_after_secs` is new again.
    pub fn learn(
        &mut self,
        config: &PatternConfig,
        now: Timestamp,
        device: &K,
        target: T,
        in_window: usize,
    ) {
        // When the target was last touched, if it is known: one lookup answers both questions.
        let touched = self
            .devices
            .get(device)
            .and_then(|d| d.targets.touched(&target));
        if touched.is_none() {
            // Room for one more target in all: the least recently active devices go first
            // (never `device` itself, the most recently active).
            while self.targets_total >= config.max_targets_total.max(1) && self.devices.len() > 1 {
                self.forget_stalest_device();
            }
        }
        let Some(known) = self.devices.get_mut(device) else {
            return;
        };
        let before = known.targets.len();
        let forget = config.forget_after;
        let stale = touched.is_some_and(|touched| now.elapsed_since(touched) > forget);
        let first = known.targets.touch(config.max_targets, now, target, || now);
        if stale {
            *first = now;
        }
        self.targets_total = (self.targets_total + known.targets.len()).saturating_sub(before);
        if now.elapsed_since(known.peak_at) > forget {
            known.peak = 0;
        }
        let in_window = u32::try_from(in_window).unwrap_or(u32::MAX);
        if in_window >= known.peak {
            known.peak = in_window;
            known.peak_at = now;
        }
    }

    /// Unlearns `targets` for `device`: an anomaly does not become the device's pattern by
    /// being seen once.
    pub fn forget(&mut self, device: &K, targets: &[T]) {
        if let Some(known) = self.devices.get_mut(device) {
            for target in targets {
                if known.targets.remove(target).is_some() {
                    self.targets_total = self.targets_total.saturating_sub(1);
                }
            }
        }
    }

    fn forget_stalest_device(&mut self) {
        if let Some((_, gone)) = self.devices.evict_stalest() {
            self.targets_total = self.targets_total.saturating_sub(gone.targets.len());
        }
    }

    /// Usual targets kept, over all devices.
    pub fn targets_total(&self) -> usize {
        self.targets_total
    }

    /// Devices whose pattern is kept.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Usual targets kept for `device`.
    pub fn targets(&self, device: &K) -> usize {
        self.devices.get(device).map_or(0, |d| d.targets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

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
            forget_after: Duration::from_secs(7 * DAY_SECS),
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
    fn profiles_saved_as_a_plain_map_restore_and_forget_the_least_recently_seen_first() {
        // The layout before the entities were a BoundedMap, which saved models still hold.
        #[derive(Serialize)]
        struct PlainProfiles {
            entities: BTreeMap<u32, Entity<u32>>,
        }
        let entity = |last: u64| Entity {
            first_seen: day(0),
            last_seen: day(last),
            values: [(
                7,
                Sighting {
                    first: day(0),
                    last: day(last),
                    count: 2,
                },
            )]
            .into(),
        };
        let plain = PlainProfiles {
            entities: [(1, entity(5)), (2, entity(3)), (3, entity(4))].into(),
        };
        let mut cbor = Vec::new();
        ciborium::into_writer(&plain, &mut cbor).expect("encodes");
        let postcard = postcard::to_allocvec(&plain).expect("encodes");
        let from_cbor: Profiles<u32, u32> = ciborium::from_reader(&cbor[..]).expect("decodes");
        let from_postcard: Profiles<u32, u32> = postcard::from_bytes(&postcard).expect("decodes");
        for mut restored in [from_cbor, from_postcard] {
            assert_eq!(postcard::to_allocvec(&restored).expect("encodes"), postcard);
            let config = ProfileConfig {
                max_entities: 3,
                ..ProfileConfig::default()
            };
            assert!(matches!(
                restored.observe(&config, day(6), 1, 7),
                Novelty::Familiar(Sighting { count: 3, .. })
            ));
            restored.observe(&config, day(6), 4, 7);
            let kept: Vec<u32> = restored.entities.iter().map(|(k, ..)| *k).collect();
            assert_eq!(kept, [1, 3, 4], "2 was seen least recently");
        }
    }

    #[test]
    fn rate_window_slides_and_remembers_its_peak() {
        let mut rate = RateWindow::default();
        let t0 = Timestamp::from_secs(1000);
        for s in 0..10 {
            rate.add(Duration::from_secs(5), t0.plus_secs(s), 2);
        }
        assert_eq!(rate.count(Duration::from_secs(5), t0.plus_secs(9)), 10);
        assert_eq!(rate.count(Duration::from_secs(5), t0.plus_secs(100)), 0);
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

    #[test]
    fn bounded_map_forgets_the_least_recently_touched_and_survives_a_snapshot() {
        let mut map: BoundedMap<u32, &str> = BoundedMap::new();
        for (key, secs) in [(1, 10), (2, 20), (3, 30)] {
            map.touch(3, Timestamp::from_secs(secs), key, || "v");
        }
        // Touching 1 again makes 2 the stalest.
        map.touch(3, Timestamp::from_secs(40), 1, || "unused");
        map.touch(3, Timestamp::from_secs(50), 4, || "w");
        let keys: Vec<u32> = map.iter().map(|(k, ..)| *k).collect();
        assert_eq!(keys, [1, 3, 4]);
        assert_eq!(map.touched(&1), Some(Timestamp::from_secs(40)));
        assert_eq!(map.get(&1), Some(&"v"), "a touch keeps the value");
        let bytes = postcard::to_allocvec(&map).expect("encodes");
        let mut back: BoundedMap<u32, alloc::string::String> =
            postcard::from_bytes(&bytes).expect("decodes");
        back.touch(3, Timestamp::from_secs(60), 5, Default::default);
        let keys: Vec<u32> = back.iter().map(|(k, ..)| *k).collect();
        assert_eq!(
            keys,
            [1, 4, 5],
            "the rebuilt index still knows 3 was stalest"
        );
    }

    #[test]
    fn bounded_map_retains_and_is_built_from_touched_entries() {
        let mut map: BoundedMap<u32, u32> = [(1, 10), (2, 20), (3, 30), (4, 5)]
            .into_iter()
            .map(|(key, secs)| (key, Timestamp::from_secs(secs), key * 100))
            .collect();
        assert_eq!(map.touched(&4), Some(Timestamp::from_secs(5)));
        map.retain(|key, at, value| {
            *value += 1;
            *key != 2 && at > Timestamp::from_secs(1)
        });
        assert_eq!(map.len(), 3);
        assert_eq!(map.get(&3), Some(&301), "retain may change what it keeps");
        // The index lost 2 with its entry: 4, then 1, are the stalest.
        assert_eq!(map.evict_stalest(), Some((4, 401)));
        assert_eq!(map.evict_stalest(), Some((1, 101)));
        assert_eq!(map.evict_stalest(), Some((3, 301)));
        assert_eq!(map.evict_stalest(), None);
    }

    #[test]
    fn bounded_map_evicts_exactly_the_least_touch_and_key_under_any_order_of_operations() {
        // A reference that searches every entry for the least (last touch, key) at each
        // eviction, against the lazy index, over touches that go back in time, share
        // timestamps, and mix with removals, retains and snapshots.
        let mut map: BoundedMap<u8, u32> = BoundedMap::new();
        let mut reference: BTreeMap<u8, (Timestamp, u32)> = BTreeMap::new();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        let least = |reference: &BTreeMap<u8, (Timestamp, u32)>| {
            reference
                .iter()
                .map(|(key, (at, _))| (*at, *key))
                .min()
                .map(|(_, key)| key)
        };
        let mut clock = 1_000u64;
        for step in 0..20_000u32 {
            // Mostly forward, sometimes the same instant, sometimes a little back.
            clock = (clock + next(3)).saturating_sub(if next(10) == 0 { 2 } else { 0 });
            let now = Timestamp::from_secs(clock);
            let key = u8::try_from(next(40)).expect("under 40");
            match next(20) {
                0 => assert_eq!(map.remove(&key), reference.remove(&key).map(|(_, v)| v)),
                1 => {
                    let expected = least(&reference).map(|key| {
                        let (_, value) = reference.remove(&key).expect("least is held");
                        (key, value)
                    });
                    assert_eq!(map.evict_stalest(), expected, "step {step}");
                }
                2 => {
                    map.retain(|key, _, _| key % 7 != 0);
                    reference.retain(|key, _| key % 7 != 0);
                }
                3 => {
                    let bytes = postcard::to_allocvec(&map).expect("encodes");
                    map = postcard::from_bytes(&bytes).expect("decodes");
                }
                _ => {
                    let capacity = 24;
                    if reference.len() >= capacity && !reference.contains_key(&key) {
                        while reference.len() >= capacity {
                            let stalest = least(&reference).expect("full");
                            reference.remove(&stalest);
                        }
                    }
                    let slot = reference.entry(key).or_insert((now, step));
                    slot.0 = slot.0.max(now);
                    let value = map.touch(capacity, now, key, || step);
                    assert_eq!(*value, slot.1, "step {step}");
                }
            }
            let held: Vec<(u8, Timestamp)> = map.iter().map(|(k, at, _)| (*k, at)).collect();
            let expected: Vec<(u8, Timestamp)> =
                reference.iter().map(|(k, (at, _))| (*k, *at)).collect();
            assert_eq!(held, expected, "step {step}");
            assert!(
                map.by_touch.len() <= 2 * map.len() + STALE_SLACK + 1,
                "the index stays bounded by the entries"
            );
        }
    }

    fn window(
        profiles: &mut FanOutProfiles<u8, u16>,
        config: &PatternConfig,
        night: u64,
        targets: &[u16],
    ) {
        let now = day(night);
        profiles.seen(config, now, &1);
        for (i, target) in targets.iter().enumerate() {
            profiles.learn(config, now, &1, *target, i + 1);
        }
    }

    #[test]
    fn fan_out_is_judged_against_the_devices_usual_targets_and_peak() {
        let config = PatternConfig::default();
        let mut profiles: FanOutProfiles<u8, u16> = FanOutProfiles::new();
        let usual: Vec<u16> = (1..=40).collect();
        for night in 0..5 {
            // A different 10 of its 40 usual targets each night, after one night of all 40.
            let targets: Vec<u16> = if night == 0 {
                usual.clone()
            } else {
                usual
                    .iter()
                    .copied()
                    .skip(night as usize * 8)
                    .take(10)
                    .collect()
            };
            window(&mut profiles, &config, night, &targets);
        }
        let now = day(5);
        assert_eq!(
            profiles.learning(&config, now, &1),
            Learning::Learned { since: day(4) }
        );
        assert_eq!(profiles.peak(&config, now, &1), 40);
        let judged = profiles.judge(&config, now, MINUTE, &1, &usual[..12], 10);
        assert!(judged.new.is_empty() && !judged.unusual && !judged.breaches());
        let mixed: Vec<u16> = (35..=50).collect();
        let judged = profiles.judge(&config, now, MINUTE, &1, &mixed, 10);
        assert_eq!(judged.new, (41..=50).collect::<Vec<u16>>());
        assert!(judged.unusual && judged.breaches());
        assert_eq!(judged.score(70), 70, "10 new of 16: over half");

        // A device never seen, on a learned model, is learning from its first sighting.
        profiles.seen(&config, now, &2);
        assert_eq!(
            profiles.learning(&config, now, &2),
            Learning::Learning {
                since: now,
                until: now.plus_secs(4 * DAY_SECS)
            }
        );
    }

    #[test]
    fn a_window_well_over_the_learned_peak_is_unusual_even_on_usual_targets() {
        let config = PatternConfig::default();
        let mut profiles: FanOutProfiles<u8, u16> = FanOutProfiles::new();
        // 100 usual targets, 10 a night.
        for night in 0..10 {
            let targets: Vec<u16> = (night as u16 * 10 + 1..=night as u16 * 10 + 10).collect();
            window(&mut profiles, &config, night, &targets);
        }
        let now = day(11);
        assert_eq!(profiles.peak(&config, now, &1), 10);
        let all: Vec<u16> = (1..=100).collect();
        let judged = profiles.judge(&config, now, MINUTE, &1, &all[..29], 10);
        assert!(
            judged.new.is_empty() && !judged.unusual,
            "under 3x its peak"
        );
        let judged = profiles.judge(&config, now, MINUTE, &1, &all[..30], 10);
        assert!(judged.new.is_empty() && judged.unusual, "3x its peak");
        assert_eq!(judged.score(60), 30, "nothing new: half the score");
    }

    #[test]
    fn usual_targets_decay_and_are_bounded() {
        let config = PatternConfig {
            forget_after: Duration::from_secs(7 * DAY_SECS),
            max_targets: 5,
            max_devices: 2,
            ..PatternConfig::default()
        };
        let mut profiles: FanOutProfiles<u8, u16> = FanOutProfiles::new();
        window(&mut profiles, &config, 0, &[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(profiles.targets(&1), 5);
        assert!(
            !profiles.is_usual(day(1), MINUTE, &1, &1),
            "the least recent went"
        );
        assert!(profiles.is_usual(day(1), MINUTE, &1, &7));
        // Seen again after the forget period: new again, and the stale peak is forgotten.
        window(&mut profiles, &config, 20, &[7]);
        assert!(!profiles.is_usual(day(20), MINUTE, &1, &7));
        assert_eq!(profiles.peak(&config, day(20), &1), 1);
        assert!(profiles.is_usual(day(21), MINUTE, &1, &7));
        for device in 2..5 {
            profiles.seen(&config, day(21), &device);
        }
        assert_eq!(profiles.len(), 2, "devices are bounded too");
        assert_eq!(
            profiles.targets_total(),
            0,
            "device 1 went with its targets"
        );
    }

    #[test]
    fn usual_targets_are_bounded_in_all_by_forgetting_the_stalest_devices() {
        let config = PatternConfig {
            max_targets_total: 25,
            ..PatternConfig::default()
        };
        let mut profiles: FanOutProfiles<u8, u16> = FanOutProfiles::new();
        for device in 0..5u8 {
            let now = day(0).plus_secs(device.into());
            profiles.seen(&config, now, &device);
            for target in 0..10 {
                profiles.learn(&config, now, &device, target, 1);
            }
        }
        // Devices 0, 1 and 2 made room for 3 and 4 in turn.
        assert_eq!(profiles.targets_total(), 20);
        assert_eq!(profiles.len(), 2);
        assert_eq!(profiles.targets(&4), 10);
        assert_eq!(profiles.targets(&0), 0);
    }
}
