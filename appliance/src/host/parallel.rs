//! Runs the plugins of one dispatch round on several threads.
//!
//! Each plugin has its own wasmtime store, so plugins are independent within a round: the round
//! can run them concurrently, one thread per instance at a time, and the host merges what each
//! raised in plugin order afterwards, so the result is that of running them one after another.
//!
//! Rounds are frequent (one per batch of a few hundred events), so the helper threads are
//! created once with the host and kept (a rayon pool, already built for wasmtime's parallel
//! compilation, which lends them the round's plugins safely). The caller works too: it and the
//! helpers take the next plugin from a shared index until none is left, so one slow plugin does
//! not hold back those behind it, and a helper that wakes late (the cores are busy) finds the
//! round done instead of making the caller wait for the whole of it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// A plugin's work that panicked instead of returning; the panic's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panicked(pub String);

/// An item lent to a round, with the place for its result.
type Slot<'a, P, T> = Mutex<(&'a mut P, Option<Result<T, Panicked>>)>;

/// Where a round's plugins run: on the caller's thread one after another, or on it and a pool
/// of helpers.
pub enum Rounds {
    Sequential,
    Pool(rayon::ThreadPool),
}

impl Rounds {
    /// `threads` threads for the plugins, the caller's included; 1 (or 0) runs them on the
    /// caller's thread, with no thread created.
    pub fn new(threads: usize) -> anyhow::Result<Rounds> {
        if threads <= 1 {
            return Ok(Rounds::Sequential);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads - 1)
            .thread_name(|i| format!("vigil-plugins-{i}"))
            .build()?;
        Ok(Rounds::Pool(pool))
    }

    /// `work` on every item, each item on one thread at a time; the results in item order. A
    /// panic in `work` is caught and returned for its item alone, so the other items' results
    /// stand and no thread is lost.
    pub fn run<P: Send, T: Send>(
        &self,
        items: &mut [P],
        work: impl Fn(&mut P) -> T + Sync,
    ) -> Vec<Result<T, Panicked>> {
        let guarded = |item: &mut P| {
            catch_unwind(AssertUnwindSafe(|| work(item))).map_err(|payload| {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                Panicked(message)
            })
        };
        let helpers = match self {
            // For a single item a helper would only add the hand-over.
            Rounds::Pool(pool) if items.len() > 1 => pool,
            _ => return items.iter_mut().map(guarded).collect(),
        };
        let wanted = helpers.current_num_threads().min(items.len() - 1);
        // Whoever takes an index runs that item.
        let slots: Vec<Slot<P, T>> = items
            .iter_mut()
            .map(|item| Mutex::new((item, None)))
            .collect();
        let next = AtomicUsize::new(0);
        let take_until_done = || {
            while let Some(slot) = slots.get(next.fetch_add(1, Ordering::Relaxed)) {
                // `guarded` never unwinds, so the lock is never poisoned; if it were, the item
                // is still whole.
                let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
                let (item, result) = &mut *slot;
                *result = Some(guarded(item));
            }
        };
        helpers.in_place_scope(|scope| {
            for _ in 0..wanted {
                scope.spawn(|_| take_until_done());
            }
            take_until_done();
        });
        slots
            .into_iter()
            .map(|slot| {
                let (_, result) = slot.into_inner().unwrap_or_else(PoisonError::into_inner);
                // Every index was taken before the scope ended, so every item has its result.
                result.unwrap_or_else(|| Err(Panicked("the item was not run".into())))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;

    #[test]
    fn results_come_back_in_item_order_whatever_thread_finished_first() {
        for threads in [2, 4] {
            let rounds = Rounds::new(threads).expect("pool starts");
            // The first two wait for each other, so two threads run them; the first items
            // take longest, so they finish last.
            let both = Barrier::new(2);
            let mut items: Vec<u64> = (0..16).collect();
            let results = rounds.run(&mut items, |item| {
                let index = *item;
                if index < 2 {
                    both.wait();
                }
                std::thread::sleep(std::time::Duration::from_millis(16 - index));
                *item += 100;
                (index, std::thread::current().id())
            });
            let order: Vec<u64> = results
                .iter()
                .map(|r| r.as_ref().expect("no panic").0)
                .collect();
            assert_eq!(order, (0..16).collect::<Vec<_>>());
            assert_eq!(items, (100..116).collect::<Vec<_>>());
            let first_two: Vec<_> = results[..2]
                .iter()
                .map(|r| r.as_ref().expect("no panic").1)
                .collect();
            assert_ne!(first_two[0], first_two[1], "two threads at once");
        }
    }

    #[test]
    fn a_panicking_item_is_returned_as_such_and_the_pool_keeps_working() {
        for threads in [1, 2, 4] {
            let rounds = Rounds::new(threads).expect("pool starts");
            let mut items = vec![1, 2, 3];
            let results = rounds.run(&mut items, |item| {
                assert!(*item != 2, "item two");
                *item * 10
            });
            assert_eq!(results[0], Ok(10));
            assert!(matches!(&results[1], Err(Panicked(m)) if m.contains("item two")));
            assert_eq!(results[2], Ok(30));
            let again = rounds.run(&mut items, |item| *item);
            assert_eq!(again, vec![Ok(1), Ok(2), Ok(3)]);
        }
    }

    #[test]
    fn one_thread_runs_on_the_callers_thread() {
        let rounds = Rounds::new(1).expect("no pool");
        assert!(matches!(rounds, Rounds::Sequential));
        let caller = std::thread::current().id();
        let mut items = vec![(); 3];
        let results = rounds.run(&mut items, |_| std::thread::current().id());
        assert!(results.iter().all(|r| r.as_ref() == Ok(&caller)));
    }
}
