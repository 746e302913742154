//! What a plugin says about itself: name, version, kind, subscriptions and default config.

use alloc::string::String;
use serde::{Deserialize, Serialize};

use crate::EventClass;

/// What a plugin is allowed to do. The host enforces it: only a responder may request actions, and
/// a plugin only ever receives the event classes it subscribed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PluginKind {
    /// Protocol events in, breaches out.
    Detector,
    /// Breaches in, incidents out.
    Analyst,
    /// Breaches and incidents in, action requests out.
    Responder,
}

/// A set of [`EventClass`]es as a bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Subscriptions(pub u64);

impl Subscriptions {
    pub const NONE: Subscriptions = Subscriptions(0);

    pub const fn with(self, class: EventClass) -> Subscriptions {
        Subscriptions(self.0 | (1 << class as u8))
    }

    pub const fn contains(self, class: EventClass) -> bool {
        self.0 & (1 << class as u8) != 0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    /// Semantic version, `MAJOR.MINOR.PATCH`.
    pub version: String,
    pub kind: PluginKind,
    pub subscriptions: Subscriptions,
    /// The plugin's default configuration as JSON, so an operator can see and override it.
    pub default_config: String,
}
