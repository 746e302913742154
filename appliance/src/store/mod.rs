//! What the appliance keeps: alerts in `eve.json`, learned plugin state, all under one data dir.

// `files`, `health` and `lines` (plain std, which the bundle trust store and the protocol logs
// use) are built without the host.
#[cfg(feature = "plugin-host")]
pub mod devices;
#[cfg(feature = "plugin-host")]
pub mod eve;
pub mod files;
pub mod health;
#[cfg(feature = "plugin-host")]
pub mod incidents;
pub mod lines;

#[cfg(feature = "plugin-host")]
use std::io;

#[cfg(feature = "plugin-host")]
use crate::devices::Device;
#[cfg(feature = "plugin-host")]
use crate::host::{Emitted, EmittedIncident};

/// Where breaches and incidents go. The file sink is the only one today; a broker sink (Kafka, NATS) for a
/// fleet plugs in here without touching the pipeline.
#[cfg(feature = "plugin-host")]
pub trait Sink {
    /// A breach, with what the device table knows of the breaching device.
    fn breach(&mut self, emitted: &Emitted, device: Option<&Device>) -> io::Result<()>;
    /// A new incident or a new version of one.
    fn incident(&mut self, emitted: &EmittedIncident, device: Option<&Device>) -> io::Result<()>;
    /// Hands what was written to whoever reads it (after every batch that raised something).
    fn flush(&mut self) -> io::Result<()>;
    /// About once a second of packet time: work held back to bound its cost (syncs to disk,
    /// rewrites of whole files).
    fn tick(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// End of a run or shutdown: everything held back, now.
    fn finish(&mut self) -> io::Result<()> {
        self.flush()
    }
}

/// Keeps nothing: for runs that read the pipeline's output some other way (the bench's
/// in-process figures, `crate::plugin_replay`).
#[cfg(feature = "plugin-host")]
pub struct NullSink;

#[cfg(feature = "plugin-host")]
impl Sink for NullSink {
    fn breach(&mut self, _: &Emitted, _: Option<&Device>) -> io::Result<()> {
        Ok(())
    }

    fn incident(&mut self, _: &EmittedIncident, _: Option<&Device>) -> io::Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
