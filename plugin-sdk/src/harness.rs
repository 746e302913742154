//! Runs a plugin natively, without wasm, for fast unit tests of a model.
//!
//! Every event is encoded and decoded with postcard on the way in, and every breach on the way
//! out, exactly as across the wasm boundary (incidents as updates, rebuilt as the host rebuilds
//! them), so a test here also proves the plugin's types cross the ABI.

use alloc::string::String;
use alloc::vec::Vec;
use core::net::IpAddr;

use crate::incident_update::{UpdateDecoder, UpdateEncoder};
use crate::plugin::{parse_config, RestoreError};
use crate::{
    ActionRequest, Breach, Endpoint, Event, EventKind, FlowState, Incident, Output, Plugin,
    Timestamp, Transport,
};

pub struct Harness<P: Plugin> {
    plugin: P,
    output: Output,
    breaches: Vec<Breach>,
    incidents: Vec<Incident>,
    /// The two ends of the incident updates, as the wasm glue and the host hold them.
    incident_updates: (UpdateEncoder, UpdateDecoder),
    actions: Vec<ActionRequest>,
}

impl<P: Plugin> Harness<P> {
    /// A plugin with its default config.
    pub fn new() -> Self {
        Self::with_plugin(P::new(P::Config::default()))
    }

    /// A plugin configured from JSON, as the host would (missing fields default).
    pub fn with_config_json(json: &str) -> Result<Self, serde_json::Error> {
        Ok(Self::with_plugin(P::new(parse_config::<P>(
            json.as_bytes(),
        )?)))
    }

    /// A plugin built by the test (e.g. with a state put back by hand).
    pub fn from_plugin(plugin: P) -> Self {
        Self::with_plugin(plugin)
    }

    fn with_plugin(plugin: P) -> Self {
        Harness {
            plugin,
            output: Output::default(),
            breaches: Vec::new(),
            incidents: Vec::new(),
            incident_updates: Default::default(),
            actions: Vec::new(),
        }
    }

    /// Feeds one event; returns the breaches it raised.
    pub fn feed(&mut self, event: &Event<'_>) -> Vec<Breach> {
        let wire = postcard::to_allocvec(event).expect("events always encode");
        let event: Event = postcard::from_bytes(&wire).expect("events always decode");
        if P::SUBSCRIPTIONS.contains(event.class()) && P::FILTER.admits(&event) {
            crate::plugin::deliver(&mut self.plugin, &event, &mut self.output);
        }
        let raised: Vec<Breach> = self
            .output
            .take_breaches()
            .into_iter()
            .map(|breach| {
                let wire = postcard::to_allocvec(&breach).expect("breaches always encode");
                postcard::from_bytes(&wire).expect("breaches always decode")
            })
            .collect();
        self.breaches.extend(raised.iter().cloned());
        let (encoder, decoder) = &mut self.incident_updates;
        for incident in self.output.take_incidents() {
            let wire = encoder.encode(&incident).expect("incidents always encode");
            let rebuilt = decoder
                .decode(&wire)
                .expect("incident updates always rebuild");
            self.incidents.push(Incident::clone(&rebuilt));
        }
        for action in self.output.take_actions() {
            let wire = postcard::to_allocvec(&action).expect("actions always encode");
            self.actions
                .push(postcard::from_bytes(&wire).expect("actions always decode"));
        }
        raised
    }

    /// Feeds a batch as the host hands it to a plugin: events encoded back to back with
    /// postcard (what `vigil::plugin_replay` records from a capture). Returns the breaches it
    /// raised, or the decode error of the first event that is not one (events before it were fed).
    pub fn feed_batch(&mut self, mut batch: &[u8]) -> Result<Vec<Breach>, postcard::Error> {
        let mut raised = Vec::new();
        while !batch.is_empty() {
            let (event, rest) = postcard::take_from_bytes::<Event>(batch)?;
            raised.extend(self.feed(&event));
            batch = rest;
        }
        Ok(raised)
    }

    /// Every action the plugin requested so far, in order. (The harness does not enforce the
    /// plugin kind; the host does.)
    pub fn actions(&self) -> &[ActionRequest] {
        &self.actions
    }

    /// Every incident (and incident update) written so far, in order.
    pub fn incidents(&self) -> &[Incident] {
        &self.incidents
    }

    /// Feeds events in order; returns every breach raised.
    pub fn feed_all<'e, 'a: 'e>(
        &mut self,
        events: impl IntoIterator<Item = &'e Event<'a>>,
    ) -> Vec<Breach> {
        events.into_iter().flat_map(|e| self.feed(e)).collect()
    }

    /// Every breach raised so far.
    pub fn breaches(&self) -> &[Breach] {
        &self.breaches
    }

    /// Log lines the plugin wrote.
    pub fn logs(&mut self) -> Vec<(i32, String)> {
        self.output.take_logs()
    }

    pub fn plugin(&self) -> &P {
        &self.plugin
    }

    /// Snapshots the plugin and restores the state into a fresh instance with the same defaults,
    /// as a restart or a hot swap does.
    pub fn restart(self) -> Result<Self, RestoreError> {
        let snapshot = self.plugin.snapshot();
        let mut fresh = Self::new();
        fresh.plugin.restore(&snapshot)?;
        Ok(fresh)
    }
}

/// The snapshot an older version of `P` wrote of its `state` (the old layout, state version
/// `schema`), sealed as the SDK seals it: what a test of `P`'s `migrate` restores.
pub fn old_snapshot<P: Plugin, S: serde::Serialize>(schema: u32, state: &S) -> Vec<u8> {
    crate::state::seal_as::<P, S>(schema, state)
}

impl<P: Plugin> Default for Harness<P> {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds events for tests.
pub mod events {
    use super::*;

    pub fn endpoint(ip: IpAddr, port: u16) -> Endpoint {
        Endpoint {
            ip,
            port,
            mac: [0; 6],
        }
    }

    /// A new flow from `src` to `dst:port` at `secs` seconds of packet time.
    pub fn flow_start(
        secs: f64,
        proto: Transport,
        src: IpAddr,
        dst: IpAddr,
        dst_port: u16,
    ) -> Event<'static> {
        Event {
            ts: Timestamp((secs * 1e6) as u64),
            flow: 0,
            proto,
            src: endpoint(src, 40000),
            dst: endpoint(dst, dst_port),
            kind: EventKind::FlowStart,
        }
    }

    /// The end of a flow with `state`, one packet each way unless half-open or rejected.
    pub fn flow_end(
        secs: f64,
        proto: Transport,
        src: IpAddr,
        dst: IpAddr,
        dst_port: u16,
        state: FlowState,
    ) -> Event<'static> {
        let answered = matches!(state, FlowState::Established | FlowState::Reset);
        Event {
            kind: EventKind::FlowEnd {
                orig_bytes: 60,
                resp_bytes: if answered { 60 } else { 0 },
                orig_packets: 1,
                resp_packets: u64::from(answered),
                duration_us: 0,
                state,
            },
            ..flow_start(secs, proto, src, dst, dst_port)
        }
    }

    pub fn tick(secs: f64) -> Event<'static> {
        let nowhere = endpoint(IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED), 0);
        Event {
            ts: Timestamp((secs * 1e6) as u64),
            flow: 0,
            proto: Transport::Other(0),
            src: nowhere,
            dst: nowhere,
            kind: EventKind::Tick,
        }
    }
}

/// A device's recurring job, for tests of learned patterns: the same flows night after night.
pub mod nights {
    use super::*;

    /// Midnight UTC of the first night (a Monday, 2026-11-23).
    pub const DAY0: u64 = 1_795_392_000;

    /// Packet time, in seconds, of `secs` after 02:00 on night `night`.
    pub fn at(night: u64, secs: f64) -> f64 {
        (DAY0 + night * 86_400 + 2 * 3600) as f64 + secs
    }

    /// Flow starts from `src` to every host on every port (host by host), `step` seconds apart,
    /// from 02:00 on night `night`.
    pub fn flows(
        night: u64,
        step: f64,
        proto: Transport,
        src: IpAddr,
        hosts: &[IpAddr],
        ports: &[u16],
    ) -> Vec<Event<'static>> {
        hosts
            .iter()
            .flat_map(|host| ports.iter().map(move |port| (*host, *port)))
            .enumerate()
            .map(|(i, (host, port))| {
                events::flow_start(at(night, step * i as f64), proto, src, host, port)
            })
            .collect()
    }

    /// `count` addresses `a.b.c.1`, `a.b.c.2`...
    pub fn hosts(net: [u8; 3], count: u8) -> Vec<IpAddr> {
        (1..=count)
            .map(|i| IpAddr::from([net[0], net[1], net[2], i]))
            .collect()
    }
}
