//! What the appliance keeps: alerts in `eve.json`, learned plugin state, all under one data dir.

pub mod eve;
pub mod files;
pub mod incidents;

use std::io;

use crate::host::{Emitted, EmittedIncident};

/// Where breaches and incidents go. The file sink is the only one today; a broker sink (Kafka, NATS) for a
/// fleet plugs in here without touching the pipeline.
pub trait Sink {
    fn breach(&mut self, emitted: &Emitted) -> io::Result<()>;
    /// A new incident or a new version of one.
    fn incident(&mut self, emitted: &EmittedIncident) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}
