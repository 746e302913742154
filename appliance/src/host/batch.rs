//! Event batches: events encoded once, then sliced per plugin by subscription.

use std::ops::Range;

use vigil_plugin_sdk::{Event, EventClass, Subscriptions};

/// Postcard-encoded events back to back, with each event's class, reused across batches so the
/// hot path allocates nothing once the buffers have grown.
#[derive(Debug, Default)]
pub struct EventBatch {
    bytes: Vec<u8>,
    entries: Vec<(EventClass, Range<usize>)>,
}

impl EventBatch {
    pub fn new() -> EventBatch {
        EventBatch::default()
    }

    pub fn push(&mut self, event: &Event) {
        let start = self.bytes.len();
        // Writing into a Vec cannot fail; an event postcard cannot encode would be a bug in the
        // SDK's types, and is dropped rather than half-written.
        if postcard::to_io(event, &mut self.bytes).is_ok() {
            self.entries.push((event.class(), start..self.bytes.len()));
        } else {
            self.bytes.truncate(start);
        }
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

    /// Copies the events of the subscribed classes into `out` (cleared first); returns how many.
    pub fn select(&self, subscriptions: Subscriptions, out: &mut Vec<u8>) -> usize {
        out.clear();
        let mut count = 0;
        for (class, range) in &self.entries {
            if subscriptions.contains(*class) {
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
        assert_eq!(batch.select(flows, &mut out), 2);
        let (first, rest): (Event, &[u8]) = postcard::take_from_bytes(&out).expect("decodes");
        let (second, rest): (Event, &[u8]) = postcard::take_from_bytes(rest).expect("decodes");
        assert!(rest.is_empty());
        assert_eq!(first.proto, Transport::Tcp);
        assert_eq!(second.proto, Transport::Udp);
        assert_eq!(batch.select(Subscriptions::NONE, &mut out), 0);
        assert!(out.is_empty());
    }
}
