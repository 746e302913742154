//! Pattern-of-life building blocks: per-device sliding windows of distinct things.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::episode;
use crate::{Duration, Timestamp};

/// A full [`FanOut`] forgets this fraction of its devices at once.
const FORGET_FRACTION: usize = 64;

/// When a [`FanOut`] fires. Each scan-style model carries one of these in its config, so a signed
/// model update can retune it without new code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FanOutConfig {
    /// How long a target counts after it was last touched.
    #[serde(rename = "window_secs")]
    pub window: Duration,
    /// Distinct targets within the window that make a breach.
    pub threshold: usize,
    /// After a breach the device's episode continues, and stays silent, until it touches no new
    /// target for this long; the next burst is then a new episode, counted from zero, and can
    /// breach again. Touching targets it already touched does not prolong the episode, so a
    /// second sweep of the same range soon after the first is still seen.
    #[serde(rename = "rearm_quiet_secs")]
    pub rearm_quiet: Duration,
    /// Devices tracked at once; the least recently active is forgotten first. Bounds memory.
    pub max_devices: usize,
}

impl Default for FanOutConfig {
    fn default() -> Self {
        FanOutConfig {
            window: Duration::from_secs(60),
            threshold: 32,
            rearm_quiet: Duration::from_secs(2),
            max_devices: 4096,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DeviceWindow<K: Ord> {
    /// Target -> when it was last touched.
    last_seen: BTreeMap<K, Timestamp>,
    /// Touches in time order, to expire the oldest first. May hold stale duplicates; an entry
    /// only removes its target when the times match.
    order: VecDeque<(Timestamp, K)>,
    /// When the device last touched a target it had not touched within the window.
    last_new_target: Timestamp,
    /// Set while an episode that already breached is running.
    fired: bool,
}

/// Counts, per device, the distinct targets (hosts, ports, host-port pairs...) it touched in a
/// sliding window of packet time, and says when the count reaches the threshold: once per episode
/// of activity.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FanOut<D: Ord, K: Ord> {
    devices: BTreeMap<D, DeviceWindow<K>>,
    /// The window's targets handed to `accept`, reused so that judging a window that does not
    /// breach allocates nothing (a wide sweep is judged on every new target). Not state.
    #[serde(skip, default = "Vec::new")]
    judged: Vec<K>,
}

impl<D: Ord + Clone, K: Ord + Clone> FanOut<D, K> {
    pub fn new() -> Self {
        FanOut {
            devices: BTreeMap::new(),
            judged: Vec::new(),
        }
    }

    /// Records that `device` touched `target` at `now`. Returns the distinct targets of the window,
    /// in order, when this touch makes the device breach.
    pub fn observe(
        &mut self,
        config: &FanOutConfig,
        now: Timestamp,
        device: D,
        target: K,
    ) -> Option<Vec<K>> {
        self.observe_where(config, now, device, target, |_| true)
    }

    /// As [`FanOut::observe`], but the episode only breaches once `accept` also holds for the
    /// window's targets (e.g. "at least three distinct ports").
    pub fn observe_where(
        &mut self,
        config: &FanOutConfig,
        now: Timestamp,
        device: D,
        target: K,
        accept: impl FnOnce(&[K]) -> bool,
    ) -> Option<Vec<K>> {
        if !self.devices.contains_key(&device) && self.devices.len() >= config.max_devices {
            self.forget_least_active();
        }
        let window = self.devices.entry(device).or_insert_with(|| DeviceWindow {
            last_seen: BTreeMap::new(),
            order: VecDeque::new(),
            last_new_target: now,
            fired: false,
        });
        expire(window, config, now);
        if episode::rearm(
            &mut window.fired,
            window.last_new_target,
            now,
            config.rearm_quiet,
        ) {
            // A new episode starts from nothing: what the last one touched was already reported.
            window.last_seen.clear();
            window.order.clear();
        }
        if window.last_seen.insert(target.clone(), now).is_none() {
            window.last_new_target = now;
        }
        window.order.push_back((now, target));
        if window.fired || window.last_seen.len() < config.threshold {
            return None;
        }
        self.judged.clear();
        self.judged.extend(window.last_seen.keys().cloned());
        if !accept(&self.judged) {
            return None;
        }
        window.fired = true;
        Some(self.judged.clone())
    }

    /// Drops expired targets and idle devices; call on `Tick`.
    pub fn expire_all(&mut self, config: &FanOutConfig, now: Timestamp) {
        self.devices.retain(|_, window| {
            expire(window, config, now);
            !window.last_seen.is_empty()
        });
    }

    /// Whether `device` has a window.
    pub fn contains(&self, device: &D) -> bool {
        self.devices.contains_key(device)
    }

    /// Whether `device` is in an episode that already breached.
    pub fn fired(&self, device: &D) -> bool {
        self.devices.get(device).is_some_and(|w| w.fired)
    }

    /// The distinct targets in `device`'s window, in order.
    pub fn window(&self, device: &D) -> impl Iterator<Item = &K> {
        self.devices
            .get(device)
            .into_iter()
            .flat_map(|w| w.last_seen.keys())
    }

    /// Distinct targets currently in `device`'s window.
    pub fn count(&self, device: &D) -> usize {
        self.devices.get(device).map_or(0, |w| w.last_seen.len())
    }

    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// Forgets the least recently active 1/64 of the devices at once (at least one): a flood
    /// of new sources then costs one pass per 64 newcomers, not a scan of every device for each.
    fn forget_least_active(&mut self) {
        let count = (self.devices.len() / FORGET_FRACTION).max(1);
        let mut activity: Vec<(Option<Timestamp>, &D)> = self
            .devices
            .iter()
            .map(|(device, w)| (w.order.back().map(|(t, _)| *t), device))
            .collect();
        if activity.is_empty() {
            return;
        }
        let count = count.min(activity.len());
        activity.select_nth_unstable(count - 1);
        let forgotten: Vec<D> = activity[..count]
            .iter()
            .map(|(_, device)| (*device).clone())
            .collect();
        for device in forgotten {
            self.devices.remove(&device);
        }
    }
}

fn expire<K: Ord>(window: &mut DeviceWindow<K>, config: &FanOutConfig, now: Timestamp) {
    while let Some((touched, _)) = window.order.front() {
        if now.elapsed_since(*touched) < config.window {
            break;
        }
        if let Some((touched, target)) = window.order.pop_front() {
            if window.last_seen.get(&target) == Some(&touched) {
                window.last_seen.remove(&target);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{IpAddr, Ipv4Addr};

    const DEVICE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

    fn config(threshold: usize) -> FanOutConfig {
        FanOutConfig {
            window: Duration::from_secs(10),
            threshold,
            rearm_quiet: Duration::from_secs(2),
            max_devices: 2,
        }
    }

    #[test]
    fn fires_once_when_distinct_targets_reach_threshold() {
        let cfg = config(3);
        let mut fan: FanOut<IpAddr, u16> = FanOut::new();
        let t = Timestamp::from_secs(100);
        assert_eq!(fan.observe(&cfg, t, DEVICE, 1u16), None);
        assert_eq!(
            fan.observe(&cfg, t, DEVICE, 1u16),
            None,
            "repeats do not count"
        );
        assert_eq!(fan.observe(&cfg, t, DEVICE, 2u16), None);
        assert_eq!(
            fan.observe(&cfg, t, DEVICE, 3u16),
            Some(alloc::vec![1, 2, 3])
        );
        assert_eq!(fan.observe(&cfg, t, DEVICE, 4u16), None, "same episode");
    }

    #[test]
    fn targets_older_than_the_window_do_not_count() {
        let cfg = config(3);
        let mut fan: FanOut<IpAddr, u16> = FanOut::new();
        fan.observe(&cfg, Timestamp::from_secs(0), DEVICE, 1u16);
        fan.observe(&cfg, Timestamp::from_secs(5), DEVICE, 2u16);
        assert_eq!(
            fan.observe(&cfg, Timestamp::from_secs(11), DEVICE, 3u16),
            None
        );
        assert_eq!(fan.count(&DEVICE), 2);
    }

    #[test]
    fn a_new_burst_after_a_quiet_gap_breaches_again() {
        let cfg = config(2);
        let mut fan: FanOut<IpAddr, u16> = FanOut::new();
        fan.observe(&cfg, Timestamp::from_secs(0), DEVICE, 1u16);
        assert!(fan
            .observe(&cfg, Timestamp::from_secs(0), DEVICE, 2u16)
            .is_some());
        assert!(fan
            .observe(&cfg, Timestamp::from_secs(1), DEVICE, 3u16)
            .is_none());
        assert!(fan
            .observe(&cfg, Timestamp::from_secs(4), DEVICE, 4u16)
            .is_none());
        assert_eq!(
            fan.observe(&cfg, Timestamp::from_secs(4), DEVICE, 5u16),
            Some(alloc::vec![4, 5])
        );
    }

    #[test]
    fn device_count_is_bounded() {
        let cfg = config(100);
        let mut fan: FanOut<IpAddr, u16> = FanOut::new();
        for i in 0..10u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, i));
            fan.observe(&cfg, Timestamp::from_secs(u64::from(i)), ip, 1u16);
        }
        assert_eq!(fan.devices(), 2);
    }

    #[test]
    fn a_full_window_forgets_the_least_active_sixty_fourth_at_once() {
        let cfg = FanOutConfig {
            max_devices: 128,
            window: Duration::from_secs(1000),
            ..config(100)
        };
        let mut fan: FanOut<u32, u16> = FanOut::new();
        for device in 0..128u32 {
            fan.observe(&cfg, Timestamp::from_secs(u64::from(device)), device, 1u16);
        }
        // Device 0 comes back: 1 and 2 are now the least active.
        fan.observe(&cfg, Timestamp::from_secs(200), 0, 2u16);
        fan.observe(&cfg, Timestamp::from_secs(201), 500, 1u16);
        assert_eq!(fan.devices(), 127);
        assert_eq!((fan.count(&0), fan.count(&1), fan.count(&2)), (2, 0, 0));
        assert_eq!((fan.count(&3), fan.count(&500)), (1, 1));
    }
}
