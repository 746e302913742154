//! The trait a plugin implements, and where its output goes.

use alloc::string::String;
use alloc::vec::Vec;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::state::OldState;
use crate::{
    ActionRequest, Breach, Event, EventKind, FlowFilter, Incident, Manifest, PluginKind,
    Subscriptions, Timestamp,
};

/// The release of a plugin: its crate's version. [`crate::export_plugin!`] implements it from
/// the calling crate's `Cargo.toml`, so a plugin never writes its version by hand.
pub trait Release {
    const VERSION: &'static str;
}

/// A Vigil plugin. Implement this on a struct and call [`crate::export_plugin!`] on it.
///
/// The host calls [`Plugin::new`] once per instance with the operator's config (missing fields
/// take their defaults), then [`Plugin::on_event`] for every subscribed event in packet-time
/// order. Learned state ([`Plugin::State`]) is carried across restarts and plugin updates in a
/// versioned envelope (see [`crate::state`]): a plugin hands it out and takes it back, and
/// never writes snapshot bytes itself.
pub trait Plugin: Sized + Release {
    /// Model configuration: thresholds, windows, learning periods. Parsed from JSON; mark the struct
    /// `#[serde(default)]` so an operator only writes what they change.
    type Config: Serialize + DeserializeOwned + Default;

    /// What the plugin learns and must not lose to a restart or an upgrade; `()` for none. A
    /// field added in a later version needs `#[serde(default)]` (old snapshots lack it); any
    /// other change bumps [`Plugin::STATE_VERSION`] and converts in [`Plugin::migrate`].
    type State: Serialize + DeserializeOwned;

    /// The schema version of [`Plugin::State`], written into every snapshot.
    const STATE_VERSION: u32 = 1;

    const NAME: &'static str;
    const KIND: PluginKind;
    const SUBSCRIPTIONS: Subscriptions;
    /// Narrows the subscribed events before they reach the plugin (see [`FlowFilter`]). Every
    /// event the plugin's learning looks at must pass: a scan model that learns how long it has
    /// known a device from every flow start cannot filter by port.
    const FILTER: FlowFilter = FlowFilter::ANY;

    fn new(config: Self::Config) -> Self;

    /// Every subscribed event but `Tick`.
    fn on_event(&mut self, event: &Event<'_>, out: &mut Output);

    /// Packet time reached `now` (a `Tick`: once per second of capture time, to a plugin
    /// subscribed to [`crate::EventClass::Tick`]), so windows that went quiet can close. The
    /// default does nothing.
    fn on_tick(&mut self, _now: Timestamp, _out: &mut Output) {}

    /// The learned state to snapshot; `None` (the default) for a plugin that learns nothing.
    fn state(&self) -> Option<&Self::State> {
        None
    }

    /// Takes back a state restored from a snapshot (its own, an older version's after
    /// [`Plugin::migrate`], or a newer one's that only added fields).
    fn set_state(&mut self, _state: Self::State) {}

    /// Converts the state an older version wrote (`from_version` < [`Plugin::STATE_VERSION`])
    /// into this version's; an `Err` refuses the snapshot, and the swap or restart with it,
    /// before anything changes. Version 0 is a snapshot from before the envelope (postcard):
    /// the default reads it as today's `State`, and refuses any other version.
    fn migrate(from_version: u32, old: OldState) -> Result<Self::State, String> {
        match from_version {
            0 => old.decode(),
            _ => Err(alloc::format!(
                "no migration from state version {from_version}"
            )),
        }
    }

    /// Learned state to persist, as a versioned envelope ([`crate::state::seal`]).
    fn snapshot(&self) -> Vec<u8> {
        crate::state::seal(self)
    }

    /// Puts back what [`Plugin::snapshot`] returned (possibly from another version); nothing
    /// changes unless the whole state is read. An empty snapshot (a plugin that had no state)
    /// restores nothing.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        if snapshot.is_empty() {
            return Ok(());
        }
        let state = crate::state::open::<Self>(snapshot)?;
        self.set_state(state);
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreError(pub String);

/// Hands `event` to `plugin`: a `Tick` to [`Plugin::on_tick`], the rest to [`Plugin::on_event`].
/// The wasm runtime and the harness both deliver through here.
pub fn deliver<P: Plugin>(plugin: &mut P, event: &Event<'_>, out: &mut Output) {
    if matches!(event.kind, EventKind::Tick) {
        plugin.on_tick(event.ts, out);
    } else {
        plugin.on_event(event, out);
    }
}

/// Builds the manifest a plugin reports through `vigil_manifest`.
pub fn manifest_of<P: Plugin>() -> Manifest {
    Manifest {
        name: String::from(P::NAME),
        version: String::from(P::VERSION),
        kind: P::KIND,
        subscriptions: P::SUBSCRIPTIONS,
        default_config: serde_json::to_string(&P::Config::default()).unwrap_or_default(),
        filter: P::FILTER,
    }
}

/// Parses a JSON config; an empty input means "all defaults".
pub fn parse_config<P: Plugin>(json: &[u8]) -> Result<P::Config, serde_json::Error> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(P::Config::default());
    }
    serde_json::from_slice(json)
}

/// What a plugin produces while handling events. The wasm glue forwards it to the host after each
/// batch; the native harness collects it for assertions.
#[derive(Debug, Default)]
pub struct Output {
    pub(crate) breaches: Vec<Breach>,
    pub(crate) incidents: Vec<Incident>,
    pub(crate) actions: Vec<ActionRequest>,
    pub(crate) logs: Vec<(i32, String)>,
}

impl Output {
    pub fn breach(&mut self, breach: Breach) {
        self.breaches.push(breach);
    }

    /// A new incident, or a new version of one (same `id`), from an analyst plugin.
    pub fn incident(&mut self, incident: Incident) {
        self.incidents.push(incident);
    }

    /// Asks the core to enforce a response (responder plugins only: the host refuses and counts
    /// the requests of any other kind).
    pub fn request_action(&mut self, action: ActionRequest) {
        self.actions.push(action);
    }

    pub fn take_actions(&mut self) -> Vec<ActionRequest> {
        core::mem::take(&mut self.actions)
    }

    pub fn take_incidents(&mut self) -> Vec<Incident> {
        core::mem::take(&mut self.incidents)
    }

    pub fn log(&mut self, level: i32, message: String) {
        self.logs.push((level, message));
    }

    pub fn take_breaches(&mut self) -> Vec<Breach> {
        core::mem::take(&mut self.breaches)
    }

    pub fn take_logs(&mut self) -> Vec<(i32, String)> {
        core::mem::take(&mut self.logs)
    }
}
