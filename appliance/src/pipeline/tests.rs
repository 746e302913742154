//! The runner: live capture sheds what detection cannot keep up with, counts it and goes on; a
//! replay waits and detects everything.

use std::sync::atomic::AtomicBool;

use pcap_parser::Linktype;
use vigil_plugin_sdk::Timestamp;

use super::*;
use crate::capture::{CaptureError, Next, Packet, Source};
use crate::decode::tests::frames::tcp4;
use crate::devices::{DeviceConfig, DeviceTable};
use crate::host::{HostConfig, PluginHost};
use crate::store::NullSink;

/// SYNs, each opening a flow of its own, 10 µs of packet time apart, as fast as it is asked.
struct Flood {
    frame: Vec<u8>,
    sent: usize,
    total: usize,
}

impl Flood {
    fn new(total: usize) -> Flood {
        Flood {
            frame: Vec::new(),
            sent: 0,
            total,
        }
    }
}

impl Source for Flood {
    fn next_packet(&mut self) -> Result<Next<'_>, CaptureError> {
        if self.sent == self.total {
            return Ok(Next::End);
        }
        let at = self.sent;
        self.sent += 1;
        let [_, high, low, port] = (at as u32).to_be_bytes();
        self.frame = tcp4(
            [10, 1, high, low],
            40000 + u16::from(port),
            [10, 2, 0, 1],
            80,
            0x02,
        );
        let data = &self.frame;
        Ok(Next::Packet(Packet {
            ts: Timestamp(1_000_000 + at as u64 * 10),
            data,
            link_type: Linktype::ETHERNET,
            wire_len: data.len() as u32,
        }))
    }

    fn describe(&self) -> String {
        "a SYN flood".into()
    }
}

/// A pipeline whose one plugin takes a few milliseconds over every batch.
fn slow_pipeline() -> Pipeline {
    let mut host = PluginHost::new(HostConfig {
        plugin_threads: 1,
        batch_deadline_ms: 5_000,
        ..HostConfig::default()
    })
    .expect("host starts");
    host.load(
        &crate::host::tests::slow_detector("slow", 10_000_000),
        "slow.wasm",
        None,
    )
    .expect("the slow plugin loads");
    let devices = DeviceTable::new(DeviceConfig::default()).expect("device table");
    Pipeline::new(
        FlowConfig::default(),
        StreamConfig::default(),
        host,
        devices,
        256,
        Box::new(NullSink),
        None,
    )
}

fn run(live: bool, packets: usize) -> PipelineStats {
    let mut pipeline = slow_pipeline();
    let mut flood = Flood::new(packets);
    pipeline
        .run(&mut flood, &AtomicBool::new(false), live, |_| {})
        .expect("runs");
    pipeline.stats().clone()
}

#[test]
fn live_capture_sheds_what_detection_cannot_keep_up_with_and_a_replay_waits() {
    const PACKETS: usize = 40_000;
    let replayed = run(false, PACKETS);
    assert_eq!(replayed.packets, PACKETS as u64);
    assert_eq!(replayed.shed, Shed::default(), "a replay sheds nothing");
    let live = run(true, PACKETS);
    // Capture went on to the end, every packet tracked.
    assert_eq!(live.packets, PACKETS as u64);
    assert_eq!(live.decoded, replayed.decoded);
    assert!(
        live.shed.chunks > 0 && live.shed.packets > 0,
        "{:?}",
        live.shed
    );
    assert!(live.shed.events > 0, "{:?}", live.shed);
    // Every event sensed was either detected or counted as shed, and the tick (the flood lasts
    // under a second of packet time: one tick) was kept.
    for stats in [&replayed, &live] {
        assert_eq!(
            stats.events + stats.shed.events,
            stats.events_sensed + 1,
            "{stats:?}"
        );
    }
    assert!(live.events < replayed.events);
}
