//! Version 3 of `evolving` (see versions 1 and 2): a version that cannot take over what the
//! one before learned. Its `migrate` refuses, so the appliance refuses the update and keeps
//! version 2 running with its state, rather than starting version 3 with nothing learned.

#[path = "../../peers.rs"]
mod peers;

use peers::{NewPeers, UsualPeers};
use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::state::OldState;
use vigil_plugin_sdk::{
    export_plugin, Event, EventClass, Output, Plugin, PluginKind, Subscriptions,
};

/// What version 3 learns (state version 3).
#[derive(Default, Serialize, Deserialize)]
pub struct State {
    pub usual_peers: UsualPeers,
    pub new_peers: NewPeers,
}

pub struct Evolving {
    state: State,
}

impl Plugin for Evolving {
    type Config = ();
    type State = State;
    const STATE_VERSION: u32 = 3;
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
            out.breach(breach);
        }
    }

    fn state(&self) -> Option<&State> {
        Some(&self.state)
    }

    fn set_state(&mut self, state: State) {
        self.state = state;
    }

    fn migrate(from_version: u32, _: OldState) -> Result<State, String> {
        Err(format!(
            "state version {from_version} counted peers of flows that never completed; \
             version 3 must learn again"
        ))
    }
}

export_plugin!(Evolving);
