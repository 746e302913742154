//! When flows are due to end: a timing wheel of one-second buckets on packet time, so a tick
//! costs what is due, not the table's capacity.
//!
//! Each occupied slot is filed in one bucket, the second its timeout would end it as of when it
//! was filed; buckets are lists threaded through the slots (`next`/`prev` indexes), so filing,
//! unfiling (an eviction) and taking a bucket are O(1) per flow and the wheel needs no memory
//! beyond the table's. Packets do not touch the wheel: a flow that saw traffic since it was filed
//! is found not yet due when its bucket comes round and is filed again under its new deadline,
//! at most once per timeout period.

use vigil_plugin_sdk::Timestamp;

/// Buckets, one a second. A deadline further out is filed at the far end and filed again when
/// reached, so timeouts of any length work.
const BUCKETS: u64 = 512;
const SECOND: u64 = 1_000_000;
const NIL: u32 = u32::MAX;

pub(super) struct Wheel {
    heads: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    /// The bucket a slot is filed in, or `NIL`.
    bucket: Vec<u32>,
    /// The first second not yet taken.
    hand: Option<u64>,
}

impl Wheel {
    pub fn new(slots: usize) -> Wheel {
        Wheel {
            heads: vec![NIL; BUCKETS as usize],
            next: vec![NIL; slots],
            prev: vec![NIL; slots],
            bucket: vec![NIL; slots],
            hand: None,
        }
    }

    /// Files `slot` under `deadline` (unfiling it first if it was filed). `now` is the packet
    /// time of the caller: the wheel starts turning there.
    pub fn file(&mut self, slot: usize, deadline: Timestamp, now: Timestamp) {
        self.unfile(slot);
        let hand = *self.hand.get_or_insert(now.micros() / SECOND);
        // Never behind the hand (it would wait a whole turn), never past the last bucket ahead.
        let second = (deadline.micros() / SECOND).clamp(hand, hand + BUCKETS - 1);
        let bucket = (second % BUCKETS) as u32;
        let head = self.heads[bucket as usize];
        self.next[slot] = head;
        self.prev[slot] = NIL;
        if head != NIL {
            self.prev[head as usize] = slot as u32;
        }
        self.heads[bucket as usize] = slot as u32;
        self.bucket[slot] = bucket;
    }

    /// Takes `slot` out of its bucket (it ended, or another flow took the slot).
    pub fn unfile(&mut self, slot: usize) {
        let bucket = self.bucket[slot];
        if bucket == NIL {
            return;
        }
        let (prev, next) = (self.prev[slot], self.next[slot]);
        if prev == NIL {
            self.heads[bucket as usize] = next;
        } else {
            self.next[prev as usize] = next;
        }
        if next != NIL {
            self.prev[next as usize] = prev;
        }
        self.bucket[slot] = NIL;
    }

    /// Moves every slot filed up to `now` into `due` (reused; the slots are unfiled), for the
    /// caller to end the flows that are due and file the others again.
    pub fn take_due(&mut self, now: Timestamp, due: &mut Vec<usize>) {
        let now_second = now.micros() / SECOND;
        let Some(mut second) = self.hand else {
            return;
        };
        let mut turned = 0;
        while second <= now_second && turned < BUCKETS {
            let bucket = (second % BUCKETS) as usize;
            let mut slot = std::mem::replace(&mut self.heads[bucket], NIL);
            while slot != NIL {
                due.push(slot as usize);
                self.bucket[slot as usize] = NIL;
                slot = self.next[slot as usize];
            }
            second += 1;
            turned += 1;
        }
        self.hand = Some(second.max(now_second.saturating_add(1)));
    }

    /// Forgets every filing (end of capture: the table was walked whole).
    pub fn clear(&mut self) {
        self.heads.fill(NIL);
        self.bucket.fill(NIL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Timestamp {
        Timestamp(secs * SECOND)
    }

    fn taken(wheel: &mut Wheel, now: u64) -> Vec<usize> {
        let mut due = Vec::new();
        wheel.take_due(at(now), &mut due);
        due.sort();
        due
    }

    #[test]
    fn slots_come_due_in_their_second_and_not_before() {
        let mut wheel = Wheel::new(8);
        wheel.file(1, at(105), at(100));
        wheel.file(2, at(103), at(100));
        wheel.file(3, at(105), at(100));
        assert!(taken(&mut wheel, 102).is_empty());
        assert_eq!(taken(&mut wheel, 104), [2]);
        assert_eq!(taken(&mut wheel, 105), [1, 3]);
        assert!(taken(&mut wheel, 200).is_empty());
    }

    #[test]
    fn an_unfiled_or_refiled_slot_is_taken_once_at_its_last_deadline() {
        let mut wheel = Wheel::new(8);
        wheel.file(1, at(101), at(100));
        wheel.file(2, at(101), at(100));
        wheel.file(3, at(101), at(100));
        wheel.unfile(2);
        wheel.file(3, at(110), at(100));
        assert_eq!(taken(&mut wheel, 101), [1]);
        assert_eq!(taken(&mut wheel, 110), [3]);
    }

    #[test]
    fn deadlines_beyond_one_turn_and_jumps_in_time_lose_nothing() {
        let mut wheel = Wheel::new(8);
        wheel.file(1, at(100 + 10 * BUCKETS), at(100));
        wheel.file(2, at(99), at(100));
        // A deadline in the past is due at the next tick.
        assert_eq!(taken(&mut wheel, 100), [2]);
        // A night without traffic: one pass over the wheel, the far deadline comes up to be
        // filed again.
        assert_eq!(taken(&mut wheel, 100 + 5 * BUCKETS), [1]);
        wheel.file(1, at(100 + 10 * BUCKETS), at(100 + 5 * BUCKETS));
        assert!(taken(&mut wheel, 100 + 5 * BUCKETS + 1).is_empty());
    }
}
