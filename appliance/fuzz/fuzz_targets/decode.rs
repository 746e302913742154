//! The decode path as the pipeline runs it: frames -> `decode_frame` -> fragment reassembly ->
//! the flow table, with the clocks ticking on packet time. The input is a small capture: its
//! link type picked by the first byte ([`LINK_TYPES`], 0 is Ethernet), then records of
//! `[time step: u8][frame length: u16 LE][frame]`, the last frame taking what is left.

#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use vigil::decode::fragments::{FragmentConfig, Reassembler};
use vigil::decode::link::{Linktype, DLT_RAW};
use vigil::decode::{decode_frame, Decoded, Frame, Transport};
use vigil::flow::{FlowConfig, FlowTable};
use vigil_plugin_sdk::{Event, EventKind, Timestamp};

/// Two buckets: a handful of distinct flows already forces evictions.
const CAPACITY: usize = 16;
/// The smallest fragment pool (one largest datagram) and a few slots: floods evict at once.
const FRAGMENT_BYTES: usize = 65_536;
const FRAGMENT_DATAGRAMS: usize = 8;
const SECOND: u64 = 1_000_000;
/// Where the ethertype (or the first VLAN tag) starts: after the two MAC addresses.
const ETHERTYPE_AT: usize = 12;
/// Every link type decoded, and one that is not (802.11).
const LINK_TYPES: [Linktype; 10] = [
    Linktype::ETHERNET,
    Linktype::LINUX_SLL,
    Linktype::LINUX_SLL2,
    Linktype::RAW,
    DLT_RAW,
    Linktype::IPV4,
    Linktype::IPV6,
    Linktype::NULL,
    Linktype::LOOP,
    Linktype(105),
];

/// Mostly small steps forward; two codes jump past every timeout, or back a second (capture
/// clocks step back, merged captures interleave).
fn step(now: Timestamp, code: u8) -> Timestamp {
    match code {
        0xff => Timestamp(now.0.saturating_sub(SECOND)),
        0xfe => Timestamp(now.0 + 600 * SECOND),
        n => Timestamp(now.0 + u64::from(n) * 20_000),
    }
}

/// Every flow event the table emits, checked as it arrives: a flow starts once, ends once, and
/// only after it started.
#[derive(Default)]
struct Ledger {
    open: HashSet<u64>,
    ended: HashSet<u64>,
}

impl Ledger {
    fn record(&mut self, event: &Event<'_>) {
        match event.kind {
            EventKind::FlowStart => {
                assert!(
                    !self.ended.contains(&event.flow) && self.open.insert(event.flow),
                    "flow {} started twice",
                    event.flow
                );
            }
            EventKind::FlowEnd { .. } => {
                assert!(
                    self.open.remove(&event.flow),
                    "flow {} ended while not open",
                    event.flow
                );
                self.ended.insert(event.flow);
            }
            _ => panic!("the flow table emitted {:?}", event.kind),
        }
    }

    fn started(&self, flow: u64) -> bool {
        self.open.contains(&flow) || self.ended.contains(&flow)
    }
}

/// Every slice in a decoded frame borrows the frame.
fn within(frame: &[u8], part: &[u8]) -> bool {
    let span = frame.as_ptr_range();
    let part = part.as_ptr_range();
    span.start <= part.start && part.end <= span.end
}

/// `buffer`: the frame, or for a reassembled datagram the reassembler's buffer; `whole`: the
/// frame when it held the whole datagram (a reassembled one carries its first fragment's tags,
/// not necessarily the completing frame's).
fn check_decoded(buffer: &[u8], whole: Option<&[u8]>, decoded: &Decoded<'_>) {
    match decoded.transport {
        Transport::Tcp { payload, .. } | Transport::Udp { payload, .. } => {
            assert!(within(buffer, payload), "payload outside its buffer");
        }
        Transport::Icmp { .. } | Transport::Other { .. } => {}
    }
    let vlans = decoded.vlans;
    assert!(vlans.vlan_id().is_none_or(|vlan| vlan < 4096));
    let Some(frame) = whole else {
        return;
    };
    // Re-emitted, the tags (and the ethertype after them) are the frame's own bytes: what a
    // reset sent into the same VLANs carries.
    let tags_end = ETHERTYPE_AT + vlans.wire_len();
    let ethertype = u16::from_be_bytes([frame[tags_end], frame[tags_end + 1]]);
    let mut wire = [0u8; 16];
    let written = vlans.emit(&mut wire, ethertype);
    assert_eq!(wire[..written], frame[ETHERTYPE_AT..tags_end + 2]);
}

fuzz_target!(|data: &[u8]| {
    let mut flows = FlowTable::new(FlowConfig {
        capacity: CAPACITY,
        ..FlowConfig::default()
    });
    let mut fragments = Reassembler::new(FragmentConfig {
        max_bytes: FRAGMENT_BYTES,
        max_datagrams: FRAGMENT_DATAGRAMS,
        ..FragmentConfig::default()
    });
    let mut ledger = Ledger::default();
    let mut now = Timestamp(1_700_000_000 * SECOND);
    let mut next_tick: Option<Timestamp> = None;
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let link_type = LINK_TYPES[usize::from(first) % LINK_TYPES.len()];
    while let [code, lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (frame, after) = tail.split_at(len);
        rest = after;
        now = step(now, *code);
        // The pipeline's clock: flows expire once per second of packet time.
        if next_tick.is_none_or(|next| now >= next) {
            flows.expire(now, &mut |event| ledger.record(&event));
            fragments.expire(now);
            next_tick = Some(Timestamp((now.0 / SECOND + 1) * SECOND));
        }
        let (decoded, buffer, whole) = match decode_frame(link_type, frame) {
            // The tags are checked against Ethernet's layout only.
            Ok(Frame::Whole(decoded)) if link_type == Linktype::ETHERNET => {
                (decoded, frame, Some(frame))
            }
            Ok(Frame::Whole(decoded)) => (decoded, frame, None),
            Ok(Frame::Fragment(fragment)) => {
                let Some(datagram) = fragments.push(now, &fragment) else {
                    let stats = fragments.stats();
                    assert!(stats.held_bytes <= FRAGMENT_BYTES as u64);
                    assert!(stats.in_progress <= FRAGMENT_DATAGRAMS as u64);
                    continue;
                };
                // Whole again: as long as the cap allows, never longer.
                assert!(datagram.payload.len() <= 65_535);
                let Ok(decoded) = datagram.decode() else {
                    continue;
                };
                (decoded, datagram.payload, None)
            }
            Err(_) => continue,
        };
        check_decoded(buffer, whole, &decoded);
        let observed = flows.observe(now, &decoded, &mut |event| ledger.record(&event));
        // An unattributed flow (its first packet looked like an answer) emits no events until
        // its originator sends: only attributed flows must have started.
        if let Some(observed) = observed.filter(|o| o.attributed) {
            assert!(
                ledger.started(observed.flow),
                "packet of a flow never started"
            );
        }
        // Active flows include the unattributed ones, which started nothing yet.
        let stats = flows.stats();
        assert!(stats.active >= ledger.open.len() as u64);
        assert!(stats.active <= flows.capacity() as u64);
    }
    flows.flush(&mut |event| ledger.record(&event));
    assert!(
        ledger.open.is_empty(),
        "flush left {} flows open",
        ledger.open.len()
    );
    let stats = flows.stats();
    assert_eq!(stats.active, 0);
    assert_eq!(stats.started, stats.ended);
    assert_eq!(stats.started, ledger.ended.len() as u64);
});
