//! Sensor workers pinned one to a core where the process has cores to spare: a worker then
//! keeps its share of the flow table, streams and fragments in one core's caches.
//!
//! Only with at least two cores per worker: detection (the plugins) runs beside the workers all
//! the time, and a worker pinned to the core it needs cannot make room for it. Measured on two
//! cores with two workers, pinning them made the 1 M-packet SYN flood's replay 1.15x slower.

use core_affinity::CoreId;

/// The core each of `workers` workers is pinned to (worker `i` to the `i`th core this process
/// may use), or why they are left to the scheduler.
pub fn cores_for(workers: usize) -> Result<Vec<CoreId>, String> {
    let cores = core_affinity::get_core_ids()
        .ok_or_else(|| "the cores this process may use cannot be read".to_string())?;
    placement(workers, cores)
}

fn placement(workers: usize, cores: Vec<CoreId>) -> Result<Vec<CoreId>, String> {
    if cores.len() < 2 * workers {
        let plural = if cores.len() == 1 { "" } else { "s" };
        return Err(format!(
            "{workers} workers and detection share the {} core{plural} this process may use",
            cores.len()
        ));
    }
    Ok(cores.into_iter().take(workers).collect())
}

/// Pins the calling thread, sensor worker `index`, to its core in `cores` (none: not pinned).
pub fn pin_worker(cores: &[CoreId], index: usize) {
    if let Some(core) = cores.get(index) {
        if !core_affinity::set_for_current(*core) {
            tracing::warn!(
                "sensor worker {index}: could not pin it to core {}",
                core.id
            );
        }
    }
}

/// How the workers' placement reads in the log.
pub fn describe(placement: &Result<Vec<CoreId>, String>) -> String {
    match placement {
        Ok(cores) => {
            let ids: Vec<String> = cores.iter().map(|core| core.id.to_string()).collect();
            format!("pinned to cores {}", ids.join(","))
        }
        Err(why) => format!("not pinned: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cores(ids: &[usize]) -> Vec<CoreId> {
        ids.iter().map(|&id| CoreId { id }).collect()
    }

    #[test]
    fn workers_are_pinned_only_with_a_core_to_spare_for_detection_each() {
        let pinned = placement(2, cores(&[3, 5, 6, 7])).expect("four cores for two workers");
        assert_eq!(
            pinned,
            cores(&[3, 5]),
            "the first cores the process may use"
        );
        assert_eq!(describe(&Ok(pinned)), "pinned to cores 3,5");
        let shared = placement(2, cores(&[0, 1]));
        assert_eq!(
            describe(&shared),
            "not pinned: 2 workers and detection share the 2 cores this process may use"
        );
        assert!(placement(1, cores(&[0])).is_err());
    }

    #[test]
    fn this_machine_gets_an_answer_and_a_worker_thread_can_be_pinned_to_its_core() {
        let Some(all) = core_affinity::get_core_ids() else {
            return;
        };
        let first = all
            .first()
            .copied()
            .expect("a process may use at least one core");
        let pinned = std::thread::spawn(move || {
            pin_worker(&[first], 0);
            core_affinity::get_core_ids()
        })
        .join()
        .expect("the worker ran");
        assert_eq!(
            pinned,
            Some(vec![first]),
            "the thread runs on its core alone"
        );
        assert!(
            cores_for(all.len() / 2 + 1).is_err(),
            "more workers than half the cores"
        );
    }
}
