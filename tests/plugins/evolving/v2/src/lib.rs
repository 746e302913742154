//! Version 2 of `evolving` (see version 1): its state renames `peers` to `usual_peers`, which
//! an old snapshot cannot fill by itself, so it bumps the state version and converts in
//! `migrate`; and it adds `raised`, which an old snapshot lacks (defaulted).

#[path = "../../peers.rs"]
mod peers;

use peers::{NewPeers, UsualPeers};
use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::state::OldState;
use vigil_plugin_sdk::{
    export_plugin, Event, EventClass, Output, Plugin, PluginKind, Subscriptions,
};

/// Version 1's state as it was written, kept to read it in `migrate`.
#[derive(Deserialize)]
struct StateV1 {
    peers: UsualPeers,
    new_peers: NewPeers,
}

/// What version 2 learns (state version 2).
#[derive(Default, Serialize, Deserialize)]
pub struct State {
    pub usual_peers: UsualPeers,
    pub new_peers: NewPeers,
    /// Breaches raised so far, reported in each one's evidence.
    #[serde(default)]
    pub raised: u64,
}

pub struct Evolving {
    state: State,
}

impl Plugin for Evolving {
    type Config = ();
    type State = State;
    const STATE_VERSION: u32 = 2;
    const NAME: &'static str = peers::NAME;
    const KIND: PluginKind = PluginKind::Detector;
    const SUBSCRIPTIONS: Subscriptions = Subscriptions::NONE.with(EventClass::Flow);

    fn new(_: ()) -> Self {
        Evolving {
            state: State::default(),
        }
    }

    fn on_event(&mut self, event: &Event<'_>, out: &mut Output) {
        let state = &mut self.state;
        if let Some(breach) = peers::observe(&mut state.usual_peers, &mut state.new_peers, event) {
            state.raised += 1;
            out.breach(breach.with_evidence("raised", state.raised));
        }
    }

    fn state(&self) -> Option<&State> {
        Some(&self.state)
    }

    fn set_state(&mut self, state: State) {
        self.state = state;
    }

    fn migrate(from_version: u32, old: OldState) -> Result<State, String> {
        match from_version {
            1 => {
                let old: StateV1 = old.decode()?;
                Ok(State {
                    usual_peers: old.peers,
                    new_peers: old.new_peers,
                    raised: 0,
                })
            }
            _ => Err(format!("no migration from state version {from_version}")),
        }
    }
}

export_plugin!(Evolving);
