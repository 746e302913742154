//! `Fixture / New Internal Peers`, the model the three versions of the `evolving` test plugin
//! share: a device past its day of learning which internal hosts it talks to reaches
//! [`NEW_PEERS`] hosts it never talked to within a minute. Without what it learned, every
//! device is new and nothing fires, so a version that lost its predecessor's state shows it.
//!
//! The versions differ only in how their `State` holds these two parts (see each `lib.rs`).

use core::net::IpAddr;

use vigil_plugin_sdk::evidence::listed;
use vigil_plugin_sdk::scan::{is_internal, is_scannable};
use vigil_plugin_sdk::{
    BoundedMap, Breach, Duration, Event, EventKind, Model, Novelty, ProfileConfig, Profiles,
    RateWindow,
};

pub const NAME: &str = "evolving";

const MODEL: Model = Model {
    name: "Fixture / New Internal Peers",
    score: 50,
    mitre: &["T1046"],
};

/// New peers within [`WINDOW`] that make a breach.
pub const NEW_PEERS: u64 = 20;
const WINDOW: Duration = Duration::from_secs(60);
/// Devices whose window of new peers is kept; the least recently active is forgotten first.
const DEVICES: usize = 4096;

/// Each device's internal peers, learned for a day from its first flow.
pub type UsualPeers = Profiles<IpAddr, IpAddr>;
/// Each device's new peers in the last minute.
pub type NewPeers = BoundedMap<IpAddr, RateWindow>;

/// Learns the flow `event` starts and judges it: a breach on the new peer that makes
/// [`NEW_PEERS`] in a window.
pub fn observe(usual: &mut UsualPeers, new: &mut NewPeers, event: &Event<'_>) -> Option<Breach> {
    let peer = event.dst.ip;
    if !matches!(event.kind, EventKind::FlowStart) || !is_scannable(&peer) || !is_internal(&peer) {
        return None;
    }
    let device = event.src.ip;
    let Novelty::Unusual { known } =
        usual.observe(&ProfileConfig::default(), event.ts, device, peer)
    else {
        return None;
    };
    let window = new.touch(DEVICES, event.ts, device, RateWindow::default);
    // Equal, not at least: one breach per burst, not one per peer past the threshold.
    (window.add(WINDOW, event.ts, 1) == NEW_PEERS).then(|| {
        MODEL
            .breach(event)
            .with_evidence("usual_peers", listed(&known, 8))
    })
}
