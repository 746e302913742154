//! Version 1 of `evolving`, a test plugin (not shipped) whose learned state changes shape
//! between versions, as a real plugin's does; its model is in `../../peers.rs`.

#[path = "../../peers.rs"]
mod peers;

use peers::{NewPeers, UsualPeers};
use serde::{Deserialize, Serialize};
use vigil_plugin_sdk::{
    export_plugin, Event, EventClass, Output, Plugin, PluginKind, Subscriptions,
};

/// What version 1 learns (state version 1, the default).
#[derive(Default, Serialize, Deserialize)]
pub struct State {
    pub peers: UsualPeers,
    pub new_peers: NewPeers,
}

pub struct Evolving {
    state: State,
}

impl Plugin for Evolving {
    type Config = ();
    type State = State;
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
        if let Some(breach) = peers::observe(&mut state.peers, &mut state.new_peers, event) {
            out.breach(breach);
        }
    }

    fn state(&self) -> Option<&State> {
        Some(&self.state)
    }

    fn set_state(&mut self, state: State) {
        self.state = state;
    }
}

export_plugin!(Evolving);
