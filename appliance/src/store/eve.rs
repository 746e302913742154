//! Breaches as Suricata EVE `alert` records (JSON lines), so existing SIEM pipelines that read
//! Suricata's `eve.json` take Vigil's alerts unchanged; Vigil's own fields sit under `vigil`.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vigil_plugin_sdk::{Breach, Timestamp};

use super::incidents::IncidentFile;
use super::lines::{LineLog, LogLimits};
use super::Sink;
use crate::devices::{format_mac, Device};
use crate::fleet::export::Exporter;
use crate::fleet::outbox::Kind;
use crate::host::{Emitted, EmittedIncident};

/// Appends alerts (and incident updates, `event_type: "incident"`) to `DATA_DIR/eve.json`,
/// rotated within its budget, and keeps `DATA_DIR/incidents.json` current. What cannot be
/// written is dropped and counted ([`super::health`]): no error here stops the capture.
pub struct EveFile {
    out: LineLog,
    incidents: IncidentFile,
    synced_at: Instant,
    /// Where every record also goes, when the fleet is on.
    fleet: Option<Exporter>,
}

/// How often alerts handed to the OS are synced to disk: what a power cut can lose at most.
const SYNC_EVERY: Duration = Duration::from_secs(1);

impl EveFile {
    pub fn open(data_dir: &Path, limits: LogLimits) -> io::Result<EveFile> {
        std::fs::create_dir_all(data_dir)?;
        Ok(EveFile {
            out: LineLog::open(&eve_path(data_dir), limits),
            incidents: IncidentFile::open(data_dir)?,
            synced_at: Instant::now(),
            fleet: None,
        })
    }

    /// Tees every record to the fleet, each with an id made from its content (see
    /// [`content_id`]).
    pub fn export_to(&mut self, exporter: Exporter) {
        self.fleet = Some(exporter);
    }

    fn write(&mut self, kind: Kind, record: &Value) {
        self.out.push(record);
        if let Some(fleet) = &self.fleet {
            let line = record.to_string();
            let id = format!("eve.{}", content_id(&line));
            fleet.outlet().send(kind, &id, line);
        }
    }

    pub fn path(&self) -> &Path {
        self.out.path()
    }
}

/// A record's id in the fleet: its content's digest, the same whenever it is resent (after a
/// crash, from the outbox), so the stream drops the copy; an offset would repeat once the file
/// rotates.
fn content_id(line: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(line.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn eve_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("eve.json")
}

impl Sink for EveFile {
    fn breach(&mut self, emitted: &Emitted, device: Option<&Device>) -> io::Result<()> {
        self.write(Kind::Alert, &alert_record(emitted, device));
        Ok(())
    }

    fn incident(&mut self, emitted: &EmittedIncident, device: Option<&Device>) -> io::Result<()> {
        let record = json!({
            "timestamp": eve_timestamp(emitted.incident.last),
            "event_type": "incident",
            "src_ip": emitted.incident.device.to_string(),
            "incident": self.incidents.update(emitted, device),
        });
        self.write(Kind::Incident, &record);
        Ok(())
    }

    /// Hands what was written to the OS (a reader tailing the file, or a process killed next,
    /// loses nothing); the disk itself is synced at most once a second ([`EveFile::tick`]).
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush();
        Ok(())
    }

    fn tick(&mut self) -> io::Result<()> {
        if self.synced_at.elapsed() >= SYNC_EVERY {
            self.out.sync();
            self.synced_at = Instant::now();
        }
        self.incidents.flush_due();
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush();
        self.out.sync();
        if let Some(fleet) = &mut self.fleet {
            fleet.finish();
        }
        self.incidents.flush();
        Ok(())
    }
}

/// A stable signature id per model name (FNV-1a), in the range Suricata leaves to local rules.
fn signature_id(model: &str) -> u32 {
    let hash = model.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    1_000_000_000 + hash % 1_000_000_000
}

pub fn alert_record(emitted: &Emitted, device: Option<&Device>) -> Value {
    let b: &Breach = &emitted.breach;
    // The device's pattern of life (what was expected, what was seen, learning or learned) is
    // its own object, `vigil.pattern`, beside the model's evidence.
    let mut evidence: BTreeMap<&str, &str> = BTreeMap::new();
    let mut pattern: BTreeMap<&str, &str> = BTreeMap::new();
    for e in &b.evidence {
        match e.name.strip_prefix(vigil_plugin_sdk::scan::pattern::PREFIX) {
            Some(name) => pattern.insert(name, e.value.as_str()),
            None => evidence.insert(e.name.as_str(), e.value.as_str()),
        };
    }
    json!({
        "timestamp": eve_timestamp(b.ts),
        "flow_id": 0,
        "event_type": "alert",
        "src_ip": b.device.ip.to_string(),
        "src_port": b.device.port,
        "dest_ip": b.dest.ip.to_string(),
        "dest_port": b.dest.port,
        "proto": b.proto.name(),
        "ether": { "src_mac": format_mac(b.device.mac), "dest_mac": format_mac(b.dest.mac) },
        "alert": {
            "action": "allowed",
            "gid": 1,
            "signature_id": signature_id(&b.model),
            "rev": 1,
            "signature": b.model,
            "category": "Vigil model breach",
            "severity": b.severity(),
        },
        "vigil": {
            "model": b.model,
            "score": b.score,
            "mitre": b.mitre,
            "plugin": emitted.plugin,
            "plugin_version": emitted.plugin_version,
            "device": b.device.ip.to_string(),
            "destinations": b.destinations.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
            "ports": b.ports,
            "evidence": evidence,
            "pattern": if pattern.is_empty() { Value::Null } else { json!(pattern) },
            "identity": identity(device),
        },
    })
}

/// The device table's view of a device, for alerts and incidents: `null` when the address is
/// not a device (outside the home networks).
pub fn identity(device: Option<&Device>) -> Value {
    match device {
        Some(device) => json!({
            "device_id": device.id,
            "host_names": device.names(),
            "macs": device.macs.iter().map(|m| m.value.as_str()).collect::<Vec<_>>(),
            "first_seen": eve_timestamp(device.first_seen),
        }),
        None => Value::Null,
    }
}

/// `2026-11-28T04:42:33.304350+0000`, as Suricata writes it (UTC).
pub fn eve_timestamp(ts: Timestamp) -> String {
    let micros = ts.micros();
    let secs = micros / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}+0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        micros % 1_000_000
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm). Written
/// here rather than pulling a date crate in for one conversion.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_suricatas_format() {
        // 1795840953.304350 is the first packet of the lab's attack.pcap (tshark agrees).
        assert_eq!(
            eve_timestamp(Timestamp(1_795_840_953_304_350)),
            "2026-11-28T04:42:33.304350+0000"
        );
        assert_eq!(
            eve_timestamp(Timestamp(0)),
            "1970-01-01T00:00:00.000000+0000"
        );
        assert_eq!(
            eve_timestamp(Timestamp::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000000+0000"
        );
    }

    #[test]
    fn signature_ids_are_stable_per_model() {
        assert_eq!(
            signature_id("Device / Network Scan"),
            signature_id("Device / Network Scan")
        );
        assert_ne!(
            signature_id("Device / Network Scan"),
            signature_id("Device / RDP Scan")
        );
    }
}
