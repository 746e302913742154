//! Event batches: events encoded once, then sliced per plugin by subscription and by the ABI
//! minor it was built for (an event whose form changed is encoded in both forms).

use std::ops::Range;

use vigil_plugin_sdk::abi::LDAP_FILTER_TREE_MINOR;
use vigil_plugin_sdk::{Event, EventClass, EventKind, FilterKey, FlowFilter, Subscriptions};

/// Room for one encoded event: the largest (a `FlowEnd` between IPv6 endpoints, every varint at
/// its longest) is under 160 bytes.
const MAX_EVENT_BYTES: usize = 192;

/// Postcard-encoded events back to back, each with what selecting it needs: its class, what
/// event filters look at, and (for a breach passed on) the index of the plugin that raised it.
/// Reused across batches so the hot path allocates nothing once the buffers have grown.
#[derive(Debug, Default)]
pub struct EventBatch {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    class: EventClass,
    key: FilterKey,
    origin: Option<usize>,
    range: Range<usize>,
    /// The form plugins built before [`LDAP_FILTER_TREE_MINOR`] decode, when it differs.
    legacy: Option<Range<usize>>,
}

impl EventBatch {
    pub fn new() -> EventBatch {
        EventBatch::default()
    }

    /// Encodes `event` onto the end of the batch. Allocates only while the buffers grow.
    pub fn push(&mut self, event: &Event) {
        self.push_from(event, None);
    }

    /// As [`EventBatch::push`], for an event that plugin number `origin` caused (its breach):
    /// that plugin is not handed it back.
    pub fn push_from(&mut self, event: &Event, origin: Option<usize>) {
        let Some(range) = self.encode(event) else {
            return;
        };
        let legacy = self.encode_legacy(event);
        self.entries.push(Entry {
            class: event.class(),
            key: FilterKey::of(event),
            origin,
            range,
            legacy,
        });
    }

    /// Appends `event` as plugins built before [`LDAP_FILTER_TREE_MINOR`] know it, if that
    /// differs: an LDAP search with its filter rendered to RFC 4515 text.
    fn encode_legacy(&mut self, event: &Event) -> Option<Range<usize>> {
        let EventKind::LdapSearchTree {
            base,
            scope,
            filter,
            entries,
            result,
        } = &event.kind
        else {
            return None;
        };
        let text = filter.to_string();
        self.encode(&Event {
            ts: event.ts,
            flow: event.flow,
            proto: event.proto,
            src: event.src,
            dst: event.dst,
            kind: EventKind::LdapSearch {
                base,
                scope,
                filter: &text,
                entries: *entries,
                result: *result,
            },
        })
    }

    /// Appends `event` in postcard; where it lies, or `None` if it could not be encoded.
    fn encode(&mut self, event: &Event) -> Option<Range<usize>> {
        let start = self.bytes.len();
        // Encoding into a slice is several times faster than through `io::Write`; every event
        // fits in `MAX_EVENT_BYTES`, and one that somehow did not takes the slow path.
        self.bytes.resize(start + MAX_EVENT_BYTES, 0);
        let encoded = postcard::to_slice(event, &mut self.bytes[start..]).map(|used| used.len());
        let written = match encoded {
            Ok(len) => {
                self.bytes.truncate(start + len);
                true
            }
            Err(_) => {
                self.bytes.truncate(start);
                postcard::to_io(event, &mut self.bytes).is_ok()
            }
        };
        if written {
            Some(start..self.bytes.len())
        } else {
            // Only an event postcard cannot encode gets here (a bug in the SDK's types): it is
            // dropped rather than half-written.
            self.bytes.truncate(start);
            None
        }
    }

    /// Appends event number `index` of `other` as it was encoded there (a shard's batch into
    /// the one the plugins get).
    pub fn copy_from(&mut self, other: &EventBatch, index: usize) {
        let Some(entry) = other.entries.get(index) else {
            return;
        };
        let mut copy = |range: &Range<usize>| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(&other.bytes[range.clone()]);
            start..self.bytes.len()
        };
        let range = copy(&entry.range);
        let legacy = entry.legacy.as_ref().map(&mut copy);
        self.entries.push(Entry {
            range,
            legacy,
            ..entry.clone()
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }

    /// Copies the events of the subscribed classes that `filter` admits into `out` (cleared
    /// first), in the form a plugin built for ABI minor `abi_minor` decodes, except those plugin
    /// number `reader` caused; returns how many.
    pub fn select(
        &self,
        subscriptions: Subscriptions,
        filter: &FlowFilter,
        reader: Option<usize>,
        abi_minor: u16,
        out: &mut Vec<u8>,
    ) -> usize {
        out.clear();
        let mut count = 0;
        for entry in &self.entries {
            let own = entry.origin.is_some() && entry.origin == reader;
            if subscriptions.contains(entry.class) && !own && filter.admits_key(&entry.key) {
                let range = match &entry.legacy {
                    Some(legacy) if abi_minor < LDAP_FILTER_TREE_MINOR => legacy,
                    _ => &entry.range,
                };
                out.extend_from_slice(&self.bytes[range.clone()]);
                count += 1;
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_plugin_sdk::abi::ABI_MINOR;
    use vigil_plugin_sdk::harness::events::{flow_start, tick};
    use vigil_plugin_sdk::Transport;

    #[test]
    fn plugins_get_only_their_classes_in_order() {
        let ip = std::net::IpAddr::from([10, 0, 0, 1]);
        let mut batch = EventBatch::new();
        batch.push(&flow_start(1.0, Transport::Tcp, ip, ip, 80));
        batch.push(&tick(1.0));
        batch.push(&flow_start(2.0, Transport::Udp, ip, ip, 53));
        let mut out = Vec::new();
        let flows = Subscriptions::NONE.with(EventClass::Flow);
        assert_eq!(
            batch.select(flows, &FlowFilter::ANY, None, ABI_MINOR, &mut out),
            2
        );
        let (first, rest): (Event, &[u8]) = postcard::take_from_bytes(&out).expect("decodes");
        let (second, rest): (Event, &[u8]) = postcard::take_from_bytes(rest).expect("decodes");
        assert!(rest.is_empty());
        assert_eq!(first.proto, Transport::Tcp);
        assert_eq!(second.proto, Transport::Udp);
        assert_eq!(
            batch.select(
                Subscriptions::NONE,
                &FlowFilter::ANY,
                None,
                ABI_MINOR,
                &mut out
            ),
            0
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_filter_narrows_traffic_but_never_ticks() {
        let ip = std::net::IpAddr::from([10, 0, 0, 1]);
        let mut batch = EventBatch::new();
        batch.push(&flow_start(1.0, Transport::Tcp, ip, ip, 3389));
        batch.push(&flow_start(1.0, Transport::Tcp, ip, ip, 445));
        batch.push(&flow_start(1.0, Transport::Udp, ip, ip, 3389));
        batch.push(&tick(1.0));
        let subscriptions = Subscriptions::NONE
            .with(EventClass::Flow)
            .with(EventClass::Tick);
        let rdp = FlowFilter::ANY.transport(Transport::Tcp).port(3389);
        let mut out = Vec::new();
        assert_eq!(
            batch.select(subscriptions, &rdp, None, ABI_MINOR, &mut out),
            2
        );
        let (first, rest): (Event, &[u8]) = postcard::take_from_bytes(&out).expect("decodes");
        let (second, _): (Event, &[u8]) = postcard::take_from_bytes(rest).expect("decodes");
        assert_eq!((first.proto, first.dst.port), (Transport::Tcp, 3389));
        assert_eq!(second.class(), EventClass::Tick);
    }

    #[test]
    fn a_breach_passed_on_never_returns_to_the_plugin_that_raised_it() {
        use vigil_plugin_sdk::{Breach, Endpoint, Timestamp};
        let device = Endpoint {
            ip: std::net::IpAddr::from([10, 0, 0, 9]),
            port: 0,
            mac: [0; 6],
        };
        let breach = Breach {
            model: "Device / Network Scan".into(),
            ts: Timestamp::from_secs(5),
            device,
            dest: device,
            proto: Transport::Tcp,
            score: 60,
            mitre: vec!["T1046".into()],
            destinations: Vec::new(),
            ports: vec![445],
            evidence: Vec::new(),
        };
        let mut batch = EventBatch::new();
        batch.push_from(&breach.to_event("network-scan", 0), Some(3));
        let breaches = Subscriptions::NONE.with(EventClass::Breach);
        let mut out = Vec::new();
        assert_eq!(
            batch.select(breaches, &FlowFilter::ANY, Some(3), ABI_MINOR, &mut out),
            0
        );
        assert_eq!(
            batch.select(breaches, &FlowFilter::ANY, Some(4), ABI_MINOR, &mut out),
            1
        );
        let (event, _): (Event, &[u8]) = postcard::take_from_bytes(&out).expect("decodes");
        assert_eq!(event.src, device);
        assert!(matches!(
            event.kind,
            vigil_plugin_sdk::EventKind::Breach {
                model: "Device / Network Scan",
                hop: 0,
                ..
            }
        ));
    }

    #[test]
    fn largest_event_fits_the_fast_path_and_round_trips() {
        use vigil_plugin_sdk::{Endpoint, EventKind, FlowState, Timestamp};
        let far = Endpoint {
            ip: std::net::IpAddr::from([0xffff_u16; 8]),
            port: u16::MAX,
            mac: [0xff; 6],
        };
        let event = Event {
            ts: Timestamp(u64::MAX),
            flow: u64::MAX,
            proto: Transport::Other(255),
            src: far,
            dst: far,
            kind: EventKind::FlowEnd {
                orig_bytes: u64::MAX,
                resp_bytes: u64::MAX,
                orig_packets: u64::MAX,
                resp_packets: u64::MAX,
                duration_us: u64::MAX,
                state: FlowState::HalfOpen,
            },
        };
        let encoded = postcard::to_allocvec(&event).expect("encodes");
        assert!(encoded.len() <= MAX_EVENT_BYTES, "{} bytes", encoded.len());
        let mut batch = EventBatch::new();
        batch.push(&event);
        batch.push(&tick(1.0));
        let mut out = Vec::new();
        assert_eq!(
            batch.select(
                Subscriptions::NONE.with(EventClass::Flow),
                &FlowFilter::ANY,
                None,
                ABI_MINOR,
                &mut out
            ),
            1
        );
        assert_eq!(out, encoded);
        let (decoded, rest): (Event, &[u8]) = postcard::take_from_bytes(&out).expect("decodes");
        assert_eq!(decoded, event);
        assert!(rest.is_empty());
    }
}
