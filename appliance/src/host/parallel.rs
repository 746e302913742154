//! Runs the plugins of one dispatch round on several threads.
//!
//! Each plugin has its own wasmtime store, so plugins are independent within a round: the round
//! can run them concurrently, one thread per instance at a time, and the host merges what each
//! raised in plugin order afterwards, so the result is that of running them one after another.
//!
//! Rounds are frequent (one per batch of a few hundred events, plus one per breach hop), so the
//! threads are created once with the host and kept: rayon's pool (already built for wasmtime's
//! parallel compilation) lends each thread a plugin for the length of the round, and its work
//! stealing hands the next plugin to whichever thread is free, so one slow plugin does not hold
//! back the plugins queued behind it.

use std::panic::{catch_unwind, AssertUnwindSafe};

use rayon::prelude::*;

/// A plugin's work that panicked instead of returning; the panic's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panicked(pub String);

/// Where a round's plugins run: on the caller's thread one after another, or on a pool.
pub enum Rounds {
    Sequential,
    Pool(rayon::ThreadPool),
}

impl Rounds {
    /// `threads` threads for the plugins; 1 (or 0) runs them on the caller's thread, with no
    /// thread created.
    pub fn new(threads: usize) -> anyhow::Result<Rounds> {
        if threads <= 1 {
            return Ok(Rounds::Sequential);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("vigil-plugins-{i}"))
            .build()?;
        Ok(Rounds::Pool(pool))
    }

    /// `work` on every item, each item on one thread at a time; the results in item order. A
    /// panic in `work` is caught and returned for its item alone, so the other items' results
    /// stand and no thread of the pool is lost.
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
        match self {
            // A pool for a single item would only add the hand-over to another thread.
            Rounds::Pool(pool) if items.len() > 1 => pool.install(|| {
                items
                    .par_iter_mut()
                    // One item per task: plugins differ widely in cost.
                    .with_max_len(1)
                    .map(guarded)
                    .collect()
            }),
            _ => items.iter_mut().map(guarded).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_item_order_whatever_thread_finished_first() {
        let rounds = Rounds::new(4).expect("pool starts");
        // The first items take longest, so they finish last.
        let mut items: Vec<u64> = (0..16).collect();
        let results = rounds.run(&mut items, |item| {
            let index = *item;
            std::thread::sleep(std::time::Duration::from_millis(16 - index));
            *item += 100;
            (index, std::thread::current().name().map(str::to_string))
        });
        let order: Vec<u64> = results
            .iter()
            .map(|r| r.as_ref().expect("no panic").0)
            .collect();
        assert_eq!(order, (0..16).collect::<Vec<_>>());
        assert_eq!(items, (100..116).collect::<Vec<_>>());
        let on_pool = results
            .iter()
            .filter_map(|r| r.as_ref().ok()?.1.clone())
            .filter(|name| name.starts_with("vigil-plugins-"))
            .count();
        assert_eq!(on_pool, 16, "every item ran on the pool");
    }

    #[test]
    fn a_panicking_item_is_returned_as_such_and_the_pool_keeps_working() {
        for threads in [1, 2] {
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
