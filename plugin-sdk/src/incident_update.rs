//! Incidents cross the ABI as updates: the incident's header and, in timeline order, either a
//! timeline entry the host has not been sent yet or the `seq` of one it already holds. A long
//! incident's every new version then costs what changed, not its whole timeline (an attack of
//! hundreds of breaches made the analyst re-send, and the host re-read, its bounded timeline of
//! ~130 entries with their evidence on every breach).
//!
//! Both ends keep what was last sent per incident in the same [`Recent`] book (same capacity, same
//! eviction), and see the same updates in the same order, so they always agree on what the host
//! holds. An incident the book forgot is simply sent whole again. A plugin instance and its
//! decoder start and end together (a hot swap or a restart after a trap makes both anew).

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::IpAddr;
use serde::{Deserialize, Serialize};

use crate::incident::{Phase, TimelineEntry};
use crate::{BoundedMap, Incident, Timestamp};

/// Incidents whose last version each end remembers: as many as the analyst keeps open by default.
pub const REMEMBERED: usize = 1024;

/// A bounded book of the incidents last sent, by id: past [`REMEMBERED`], the one updated least
/// recently is forgotten. A [`BoundedMap`] touched at a count of updates rather than a time, so
/// that both ends, seeing the same updates, forget the same one.
#[derive(Debug)]
struct Recent<V> {
    entries: BoundedMap<u64, V>,
    updates: u64,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Recent {
            entries: BoundedMap::new(),
            updates: 0,
        }
    }
}

impl<V> Recent<V> {
    fn get(&self, id: u64) -> Option<&V> {
        self.entries.get(&id)
    }

    fn put(&mut self, id: u64, value: V) {
        self.updates += 1;
        // Taken out first, so an incident already in the book never makes another one go.
        self.entries.remove(&id);
        self.entries
            .touch(REMEMBERED, Timestamp(self.updates), id, || value);
    }
}

/// Postcard is positional: [`UpdateOut`] (borrowing, for the plugin) and [`UpdateIn`] (owned,
/// for the host) are one wire format, checked by the tests below.
#[derive(Serialize)]
struct UpdateOut<'a> {
    id: u64,
    device: IpAddr,
    first: Timestamp,
    last: Timestamp,
    score: u8,
    phases: &'a [Phase],
    breaches: u32,
    by_model: &'a [(String, u32)],
    unusual: u32,
    learning: u32,
    summary: &'a str,
    timeline: Vec<ItemOut<'a>>,
}

#[derive(Serialize)]
enum ItemOut<'a> {
    Held(u32),
    New(&'a TimelineEntry),
}

#[derive(Deserialize)]
struct UpdateIn {
    id: u64,
    device: IpAddr,
    first: Timestamp,
    last: Timestamp,
    score: u8,
    phases: Vec<Phase>,
    breaches: u32,
    by_model: Vec<(String, u32)>,
    unusual: u32,
    learning: u32,
    summary: String,
    timeline: Vec<ItemIn>,
}

#[derive(Deserialize)]
enum ItemIn {
    Held(u32),
    New(TimelineEntry),
}

/// The plugin's end: turns each new version of an incident into its update.
#[derive(Debug, Default)]
pub struct UpdateEncoder {
    /// Per incident, the sorted `seq`s of the timeline last sent.
    sent: Recent<Vec<u32>>,
}

impl UpdateEncoder {
    pub fn encode(&mut self, incident: &Incident) -> Result<Vec<u8>, postcard::Error> {
        let mut seqs: Vec<u32> = incident.timeline.iter().map(|t| t.seq).collect();
        seqs.sort_unstable();
        // Entries are named by `seq`; a timeline that does not number its entries apart is sent
        // whole every time.
        let numbered = seqs.windows(2).all(|pair| pair[0] != pair[1]);
        let held = self.sent.get(incident.id).filter(|_| numbered);
        let timeline = incident
            .timeline
            .iter()
            .map(|entry| match held {
                Some(held) if held.binary_search(&entry.seq).is_ok() => ItemOut::Held(entry.seq),
                _ => ItemOut::New(entry),
            })
            .collect();
        let bytes = postcard::to_allocvec(&UpdateOut {
            id: incident.id,
            device: incident.device,
            first: incident.first,
            last: incident.last,
            score: incident.score,
            phases: &incident.phases,
            breaches: incident.breaches,
            by_model: &incident.by_model,
            unusual: incident.unusual,
            learning: incident.learning,
            summary: &incident.summary,
            timeline,
        })?;
        self.sent
            .put(incident.id, if numbered { seqs } else { Vec::new() });
        Ok(bytes)
    }
}

/// Why an update could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateError {
    /// Not a postcard incident update.
    Malformed,
    /// It names a timeline entry (by `seq`) that the last version of the incident did not hold.
    UnknownEntry { incident: u64, seq: u32 },
}

impl core::fmt::Display for UpdateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            UpdateError::Malformed => f.write_str("not a postcard incident update"),
            UpdateError::UnknownEntry { incident, seq } => write!(
                f,
                "incident {incident}: the update keeps timeline entry {seq}, which its last \
                 version did not hold"
            ),
        }
    }
}

/// The host's end: rebuilds each whole incident from its update and the last version.
#[derive(Debug, Default)]
pub struct UpdateDecoder {
    last: Recent<Arc<Incident>>,
}

impl UpdateDecoder {
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Arc<Incident>, UpdateError> {
        let update: UpdateIn = postcard::from_bytes(bytes).map_err(|_| UpdateError::Malformed)?;
        let mut before: Vec<(u32, &Arc<TimelineEntry>)> = self
            .last
            .get(update.id)
            .map(|last| last.timeline.iter().map(|t| (t.seq, t)).collect())
            .unwrap_or_default();
        before.sort_unstable_by_key(|(seq, _)| *seq);
        let timeline = update
            .timeline
            .into_iter()
            .map(|item| match item {
                ItemIn::New(entry) => Ok(Arc::new(entry)),
                ItemIn::Held(seq) => before
                    .binary_search_by_key(&seq, |(seq, _)| *seq)
                    .map(|at| Arc::clone(before[at].1))
                    .map_err(|_| UpdateError::UnknownEntry {
                        incident: update.id,
                        seq,
                    }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let incident = Arc::new(Incident {
            id: update.id,
            device: update.device,
            first: update.first,
            last: update.last,
            score: update.score,
            phases: update.phases,
            breaches: update.breaches,
            by_model: update.by_model,
            unusual: update.unusual,
            learning: update.learning,
            timeline,
            summary: update.summary,
        });
        self.last.put(incident.id, Arc::clone(&incident));
        Ok(incident)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Evidence;
    use alloc::string::ToString;
    use alloc::vec;

    fn entry(seq: u32, ts: u64) -> Arc<TimelineEntry> {
        Arc::new(TimelineEntry {
            seq,
            ts: Timestamp(ts),
            model: "Device / Network Scan".to_string(),
            score: 60,
            phase: "Discovery".to_string(),
            destinations: vec![IpAddr::from([10, 0, 0, 2])],
            ports: vec![445],
            evidence: vec![Evidence {
                name: "ports".to_string(),
                value: "445".to_string(),
            }],
        })
    }

    fn incident(id: u64, timeline: Vec<Arc<TimelineEntry>>) -> Incident {
        Incident {
            id,
            device: IpAddr::from([10, 0, 0, 1]),
            first: Timestamp(1),
            last: Timestamp(timeline.len() as u64),
            score: 60,
            phases: vec![Phase {
                name: "Discovery".to_string(),
                tactic: "TA0007".to_string(),
                techniques: vec!["T1046".to_string()],
                first: Timestamp(1),
            }],
            breaches: timeline.len() as u32,
            by_model: vec![("Device / Network Scan".to_string(), timeline.len() as u32)],
            unusual: 0,
            learning: 1,
            timeline,
            summary: "A scan.".to_string(),
        }
    }

    #[test]
    fn versions_that_grow_trim_and_reorder_are_rebuilt_whole_from_small_updates() {
        let (mut encoder, mut decoder) = (UpdateEncoder::default(), UpdateDecoder::default());
        let mut timeline = Vec::new();
        let (mut update_bytes, mut whole_bytes) = (0, 0);
        for seq in 1..=200u32 {
            // Out-of-order time puts some new entries in the middle; the bound drops the oldest.
            let ts = if seq % 7 == 0 {
                u64::from(seq) - 3
            } else {
                u64::from(seq)
            };
            timeline.push(entry(seq, ts));
            timeline.sort_by_key(|t| t.ts);
            if timeline.len() > 50 {
                timeline.remove(10);
            }
            let version = incident(9, timeline.clone());
            let bytes = encoder.encode(&version).expect("encodes");
            update_bytes = bytes.len();
            whole_bytes = postcard::to_allocvec(&version).expect("encodes").len();
            assert_eq!(*decoder.decode(&bytes).expect("decodes"), version);
        }
        // The last update carries one new entry and the seqs of the 49 it keeps.
        assert!(
            update_bytes * 10 < whole_bytes,
            "{update_bytes} bytes against {whole_bytes} for the whole incident"
        );
    }

    #[test]
    fn a_forgotten_or_unnumbered_incident_is_sent_whole() {
        let (mut encoder, mut decoder) = (UpdateEncoder::default(), UpdateDecoder::default());
        let first = incident(0, vec![entry(1, 1)]);
        decoder
            .decode(&encoder.encode(&first).expect("encodes"))
            .expect("decodes");
        for id in 1..=REMEMBERED as u64 {
            let other = incident(id, vec![entry(1, 1)]);
            decoder
                .decode(&encoder.encode(&other).expect("encodes"))
                .expect("decodes");
        }
        let again = incident(0, vec![entry(1, 1), entry(2, 2)]);
        let rebuilt = decoder
            .decode(&encoder.encode(&again).expect("encodes"))
            .expect("both ends forgot incident 0 together");
        assert_eq!(*rebuilt, again);
        let unnumbered = incident(5, vec![entry(0, 1), entry(0, 2)]);
        for _ in 0..2 {
            let bytes = encoder.encode(&unnumbered).expect("encodes");
            assert_eq!(*decoder.decode(&bytes).expect("decodes"), unnumbered);
        }
    }

    #[test]
    fn an_update_naming_an_entry_the_host_lacks_is_refused() {
        let mut encoder = UpdateEncoder::default();
        encoder
            .encode(&incident(3, vec![entry(1, 1)]))
            .expect("encodes");
        let bytes = encoder
            .encode(&incident(3, vec![entry(1, 1), entry(2, 2)]))
            .expect("encodes");
        // A decoder that never saw the first version (not the one paired with this encoder).
        let mut stranger = UpdateDecoder::default();
        assert_eq!(
            stranger.decode(&bytes),
            Err(UpdateError::UnknownEntry {
                incident: 3,
                seq: 1
            })
        );
        assert_eq!(stranger.decode(&[0xff; 3]), Err(UpdateError::Malformed));
    }
}
