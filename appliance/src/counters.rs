//! The pipeline's counters at one moment, for `/metrics`: taken between packets when the API
//! asks, from the same numbers the run's summary prints, so nothing on the packet path counts
//! twice or takes a lock.

use serde::{Deserialize, Serialize};

use crate::capture::QueueCounters;
use crate::host::{BatchDurations, BATCH_DURATION_BOUNDS};
use crate::pipeline::{Pipeline, Shed};
use crate::respond::{state_name, Status};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub queues: Vec<QueueCounters>,
    pub packets: u64,
    pub bytes: u64,
    pub decoded: u64,
    /// Frames not decoded, by reason.
    pub skipped: Vec<(String, u64)>,
    pub flows: FlowCounters,
    pub tcp_gaps: u64,
    pub tcp_out_of_order: u64,
    /// Parse errors by protocol and reason.
    pub parse_errors: Vec<(String, String, u64)>,
    pub events: u64,
    /// What live capture shed because detection was behind.
    #[serde(default)]
    pub shed: Shed,
    pub breaches_by_model: Vec<(String, u64)>,
    pub plugins: Vec<PluginCounters>,
    /// Incidents raised and kept by this run.
    pub incidents: u64,
    /// Actions by state, every state listed (zero too).
    pub actions: Vec<(String, u64)>,
    pub devices: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowCounters {
    pub active: u64,
    pub started: u64,
    pub ended: u64,
    pub evicted: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginCounters {
    pub name: String,
    pub version: String,
    /// Batches handed to the plugin (its invocations).
    pub batches: u64,
    pub events: u64,
    pub breaches: u64,
    pub traps: u64,
    /// Output it handed over that could not be read, and batches it refused.
    pub bad_output: u64,
    pub quarantined: bool,
    pub batch_seconds: Histogram,
}

/// A histogram: observations per bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// (upper bound, observations above the bound before and at most this one), bounds rising;
    /// what is above the last bound is counted only in `count`.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl From<&BatchDurations> for Histogram {
    fn from(durations: &BatchDurations) -> Histogram {
        Histogram {
            buckets: BATCH_DURATION_BOUNDS
                .iter()
                .zip(durations.in_bucket)
                .map(|(bound, n)| (bound.as_secs_f64(), n))
                .collect(),
            sum: durations.total.as_secs_f64(),
            count: durations.count,
        }
    }
}

impl Counters {
    pub fn of(pipeline: &Pipeline) -> Counters {
        let stats = pipeline.stats();
        let flows = pipeline.flow_stats();
        let streams = pipeline.analysis().stream_stats();
        let mut actions: Vec<(String, u64)> = [
            Status::Pending,
            Status::Active { since: 0, until: 0 },
            Status::Cleared { at: 0 },
            Status::Expired { at: 0 },
        ]
        .iter()
        .map(|status| (state_name(status).to_string(), 0))
        .collect();
        for action in pipeline.actions().into_iter().flat_map(|a| a.list()) {
            let state = state_name(&action.status);
            if let Some((_, n)) = actions.iter_mut().find(|(name, _)| name == state) {
                *n += 1;
            }
        }
        Counters {
            queues: pipeline.queue_counters().to_vec(),
            packets: stats.packets,
            bytes: stats.bytes,
            decoded: stats.decoded,
            skipped: stats
                .skipped
                .iter()
                .map(|(reason, n)| (reason.name().to_string(), n))
                .collect(),
            flows: FlowCounters {
                active: flows.active,
                started: flows.started,
                ended: flows.ended,
                evicted: flows.evicted,
            },
            tcp_gaps: streams.gaps,
            tcp_out_of_order: streams.out_of_order,
            parse_errors: pipeline
                .analysis()
                .errors()
                .iter()
                .map(|((protocol, reason), n)| (protocol.to_string(), reason.to_string(), *n))
                .collect(),
            events: stats.events,
            shed: stats.shed,
            breaches_by_model: stats
                .breaches_by_model
                .iter()
                .map(|(model, n)| (model.clone(), *n))
                .collect(),
            plugins: pipeline
                .host()
                .plugins()
                .into_iter()
                .map(|p| PluginCounters {
                    name: p.name,
                    version: p.version,
                    batches: p.stats.batches,
                    events: p.stats.events,
                    breaches: p.stats.breaches,
                    traps: p.stats.traps,
                    bad_output: p.stats.bad_output,
                    quarantined: p.quarantined,
                    batch_seconds: Histogram::from(&p.stats.batch_durations),
                })
                .collect(),
            incidents: pipeline.incidents().count() as u64,
            actions,
            devices: pipeline.devices().stats().devices as u64,
        }
    }
}
