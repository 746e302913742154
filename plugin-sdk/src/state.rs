//! Learned state that survives its own plugin's upgrades.
//!
//! A plugin declares [`crate::Plugin::State`] (serde) and hands it out through
//! [`crate::Plugin::state`] / [`crate::Plugin::set_state`]; the SDK writes it as a versioned
//! envelope ([`seal`]) and reads it back ([`open`]), so no plugin writes snapshot bytes itself.
//!
//! The envelope names the plugin, its version and the state's schema version
//! ([`crate::Plugin::STATE_VERSION`]), and holds the state in CBOR. CBOR because it describes
//! itself (field names travel with the values, unlike postcard), so a new version whose state
//! struct adds a `#[serde(default)]` field restores an old snapshot, and one that drops a field
//! ignores it; and because `ciborium` is `no_std` + `alloc` and, unlike JSON, takes any map key
//! (the models key their maps by `(IpAddr, u16)` and other tuples). A real change of meaning
//! bumps `STATE_VERSION` and converts in [`crate::Plugin::migrate`], which gets the old state as
//! an [`OldState`] to decode into the old struct.
//!
//! Snapshots written before the envelope existed (a bare postcard struct) are version 0: the
//! default `migrate` decodes them as today's `State`, which is what they were.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::plugin::RestoreError;
use crate::Plugin;

/// Marks the envelope's first bytes so a snapshot from before it is told apart at once.
const MAGIC: &str = "vigil-state";

#[derive(Serialize)]
struct Sealed<'a, S> {
    magic: &'a str,
    plugin: &'a str,
    plugin_version: &'a str,
    schema: u32,
    state: &'a S,
}

/// The envelope without its state, read first: the state is then decoded straight into the
/// plugin's type, never through an intermediate tree (which would take several times the
/// state's memory inside the plugin's sandbox), except for a migration.
#[derive(Deserialize)]
struct Header {
    magic: String,
    plugin: String,
    plugin_version: String,
    schema: u32,
}

#[derive(Deserialize)]
struct Body<S> {
    state: S,
}

/// A state as an older version of the plugin wrote it, for [`crate::Plugin::migrate`].
#[derive(Debug, Clone)]
pub enum OldState {
    /// From an envelope: decode it into the struct of that version.
    Described(ciborium::Value),
    /// A snapshot from before the envelope (state version 0): postcard, which only the exact
    /// struct that wrote it can read.
    Postcard(Vec<u8>),
}

impl OldState {
    /// The old state as `T` (the struct the old version had), tolerating fields `T` does not
    /// name and defaulting `#[serde(default)]` ones it lacks.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, String> {
        match self {
            OldState::Described(value) => value.deserialized().map_err(|e| e.to_string()),
            OldState::Postcard(bytes) => postcard::from_bytes(bytes).map_err(|e| e.to_string()),
        }
    }
}

/// The plugin's learned state as an envelope; empty when it has none.
pub fn seal<P: Plugin>(plugin: &P) -> Vec<u8> {
    match plugin.state() {
        Some(state) => seal_as::<P, _>(P::STATE_VERSION, state),
        None => Vec::new(),
    }
}

/// `state` in the envelope `P` writes, but as state version `schema`: what an older version of
/// `P` wrote, for the tests of its `migrate`.
pub(crate) fn seal_as<P: Plugin, S: Serialize>(schema: u32, state: &S) -> Vec<u8> {
    let sealed = Sealed {
        magic: MAGIC,
        plugin: P::NAME,
        plugin_version: P::VERSION,
        schema,
        state,
    };
    let mut bytes = Vec::new();
    // Writing into a Vec fails only if the state's own Serialize fails; an empty snapshot then
    // restores as "nothing learned", as it would for a plugin without state.
    if ciborium::into_writer(&sealed, &mut bytes).is_err() {
        bytes.clear();
    }
    bytes
}

/// Reads a snapshot (an envelope of any state version, or a pre-envelope one) into the
/// plugin's `State`, or says why not, naming both versions. Nothing in the plugin changes
/// unless this succeeds.
pub fn open<P: Plugin>(bytes: &[u8]) -> Result<P::State, RestoreError> {
    let refuse = |from: &str, schema: u32, reason: String| {
        RestoreError(format!(
            "{} {} (state version {}) cannot restore state version {schema} written by {from}: \
             {reason}",
            P::NAME,
            P::VERSION,
            P::STATE_VERSION,
        ))
    };
    let Ok(opened) = ciborium::from_reader::<Header, _>(bytes) else {
        // Not an envelope: what the plugins wrote before it, postcard of the state struct.
        return P::migrate(0, OldState::Postcard(bytes.to_vec()))
            .map_err(|reason| refuse("an unversioned snapshot", 0, reason));
    };
    let from = format!("{} {}", opened.plugin, opened.plugin_version);
    if opened.magic != MAGIC {
        return Err(refuse(&from, opened.schema, "not a Vigil state".into()));
    }
    if opened.plugin != P::NAME {
        return Err(refuse(
            &from,
            opened.schema,
            "another plugin's state".into(),
        ));
    }
    let typed = || {
        ciborium::from_reader::<Body<P::State>, _>(bytes)
            .map(|body| body.state)
            .map_err(|e| e.to_string())
    };
    let result = if opened.schema == P::STATE_VERSION {
        typed()
    } else if opened.schema > P::STATE_VERSION {
        // A newer version's state (a rollback): readable while it only added fields.
        typed().map_err(|reason| {
            format!(
                "state version {} is newer than this plugin's {}: {reason}",
                opened.schema,
                P::STATE_VERSION
            )
        })
    } else {
        ciborium::from_reader::<Body<ciborium::Value>, _>(bytes)
            .map_err(|e| e.to_string())
            .and_then(|body| P::migrate(opened.schema, OldState::Described(body.state)))
    };
    result.map_err(|reason| refuse(&from, opened.schema, reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, Output, PluginKind, Release, Subscriptions};
    use alloc::collections::BTreeMap;
    use alloc::string::String;
    use core::net::IpAddr;

    /// Version 1 of a model: counts per (device, port).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    struct CountsV1 {
        counts: BTreeMap<(IpAddr, u16), u32>,
    }

    /// Version 2 adds a field (defaulted: old snapshots restore) and keeps the rest.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    struct CountsV2 {
        counts: BTreeMap<(IpAddr, u16), u32>,
        #[serde(default)]
        first_seen: u64,
    }

    /// Version 3 renames `counts` (a real change): migrate converts.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    struct CountsV3 {
        per_service: BTreeMap<(IpAddr, u16), u32>,
        #[serde(default)]
        first_seen: u64,
    }

    macro_rules! model {
        ($name:ident, $version:literal, $state:ty, $schema:literal, $migrate:expr) => {
            struct $name(Option<$state>);
            impl Release for $name {
                const VERSION: &'static str = $version;
            }
            impl Plugin for $name {
                type Config = ();
                type State = $state;
                const NAME: &'static str = "counter";
                const STATE_VERSION: u32 = $schema;
                const KIND: PluginKind = PluginKind::Detector;
                const SUBSCRIPTIONS: Subscriptions = Subscriptions::NONE;
                fn new(_: ()) -> Self {
                    $name(Some(<$state>::default()))
                }
                fn on_event(&mut self, _: &Event<'_>, _: &mut Output) {}
                fn state(&self) -> Option<&$state> {
                    self.0.as_ref()
                }
                fn set_state(&mut self, state: $state) {
                    self.0 = Some(state);
                }
                fn migrate(from: u32, old: OldState) -> Result<$state, String> {
                    ($migrate)(from, old)
                }
            }
        };
    }

    fn no_migration<S>(from: u32, _: OldState) -> Result<S, String> {
        Err(format!("no migration from {from}"))
    }

    model!(V1, "1.0.0", CountsV1, 1, no_migration);
    model!(V2, "1.1.0", CountsV2, 1, no_migration);
    model!(V3, "2.0.0", CountsV3, 2, |from: u32,
                                      old: OldState|
     -> Result<CountsV3, String> {
        assert_eq!(from, 1, "migrate is told the old version");
        let old: CountsV2 = old.decode()?;
        Ok(CountsV3 {
            per_service: old.counts,
            first_seen: old.first_seen,
        })
    });
    model!(V4, "3.0.0", CountsV3, 3, |from: u32,
                                      _: OldState|
     -> Result<CountsV3, String> {
        Err(format!("version {from} counted something else"))
    });

    fn learned() -> V1 {
        let mut counts = BTreeMap::new();
        counts.insert((IpAddr::from([10, 0, 0, 7]), 445), 40);
        V1(Some(CountsV1 { counts }))
    }

    #[test]
    fn an_old_snapshot_with_fewer_fields_restores_with_the_new_field_defaulted() {
        let bytes = seal(&learned());
        let state = open::<V2>(&bytes).expect("restores");
        assert_eq!(state.counts, learned().0.expect("state").counts);
        assert_eq!(state.first_seen, 0);
        // And the other way (a rollback): the field v1 does not know is ignored.
        let newer = V2(Some(CountsV2 {
            first_seen: 99,
            ..state
        }));
        assert_eq!(
            open::<V1>(&seal(&newer)).expect("restores"),
            learned().0.expect("state")
        );
    }

    #[test]
    fn migrate_is_called_with_the_old_version_for_a_real_change() {
        let state = open::<V3>(&seal(&learned())).expect("migrates");
        assert_eq!(
            state.per_service.get(&(IpAddr::from([10, 0, 0, 7]), 445)),
            Some(&40)
        );
    }

    #[test]
    fn a_failing_migrate_is_refused_naming_plugin_versions_and_reason() {
        let err = open::<V4>(&seal(&learned())).expect_err("refused");
        assert_eq!(
            err.0,
            "counter 3.0.0 (state version 3) cannot restore state version 1 written by \
             counter 1.0.0: version 1 counted something else"
        );
    }

    #[test]
    fn a_snapshot_from_before_the_envelope_restores_as_version_0() {
        // What plugins wrote themselves before: postcard of the state struct.
        let legacy = postcard::to_allocvec(&learned().0.expect("state")).expect("encodes");
        struct Legacy;
        impl Release for Legacy {
            const VERSION: &'static str = "1.0.0";
        }
        impl Plugin for Legacy {
            type Config = ();
            type State = CountsV1;
            const NAME: &'static str = "counter";
            const KIND: PluginKind = PluginKind::Detector;
            const SUBSCRIPTIONS: Subscriptions = Subscriptions::NONE;
            fn new(_: ()) -> Self {
                Legacy
            }
            fn on_event(&mut self, _: &Event<'_>, _: &mut Output) {}
        }
        assert_eq!(
            open::<Legacy>(&legacy).expect("default migrate reads postcard"),
            learned().0.expect("state")
        );
        let err = open::<Legacy>(b"\x01\x02garbage").expect_err("refused");
        assert!(
            err.0.starts_with(
                "counter 1.0.0 (state version 1) cannot restore state version 0 written by an \
                 unversioned snapshot: "
            ),
            "{}",
            err.0
        );
    }

    #[test]
    fn another_plugins_state_is_refused() {
        struct Other;
        impl Release for Other {
            const VERSION: &'static str = "1.0.0";
        }
        impl Plugin for Other {
            type Config = ();
            type State = CountsV1;
            const NAME: &'static str = "other";
            const KIND: PluginKind = PluginKind::Detector;
            const SUBSCRIPTIONS: Subscriptions = Subscriptions::NONE;
            fn new(_: ()) -> Self {
                Other
            }
            fn on_event(&mut self, _: &Event<'_>, _: &mut Output) {}
        }
        let err = open::<Other>(&seal(&learned())).expect_err("refused");
        assert_eq!(
            err.0,
            "other 1.0.0 (state version 1) cannot restore state version 1 written by counter \
             1.0.0: another plugin's state"
        );
    }
}
