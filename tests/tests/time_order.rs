//! Packet time that goes backwards. The lab's attack with its packets shuffled within 50 ms (as a
//! merge of two taps writes them, stamps kept with their packets) gives exactly the breaches of
//! the capture in order: the replay's reorder buffer puts them back. A clock stepped back, or
//! time running backwards throughout, is clamped and counted, and no alert is stamped before the
//! time already reached.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use serde_json::Value;
use vigil_tests::lab::{committed_labs, eve_epoch, fixture};
use vigil_tests::pcap::{self, Record, Rng};
use vigil_tests::workspace::{eve_records, replay_with, summary_value, TempDir};

const REORDERED: &str = "packets put back in time order";
const LATE: &str = "packets too late to put back in order";
const CLAMPED: &str = "packets stamped back in time (handled at the latest time)";

/// A breach as the analyst compares them: model, device (address and table id), destinations,
/// ports and time.
type Breach = (String, String, String, BTreeSet<String>, String, String);

fn breaches(data_dir: &Path) -> Vec<Breach> {
    let set = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|x| x.to_string())
            .collect()
    };
    let mut breaches: Vec<Breach> = eve_records(data_dir)
        .iter()
        .filter(|r| r["event_type"] == "alert")
        .map(|r| {
            (
                r["alert"]["signature"].as_str().expect("model").to_string(),
                r["src_ip"].as_str().expect("device").to_string(),
                r["vigil"]["identity"]["device_id"].to_string(),
                set(&r["vigil"]["destinations"]),
                r["vigil"]["ports"].to_string(),
                r["timestamp"].as_str().expect("timestamp").to_string(),
            )
        })
        .collect();
    breaches.sort();
    breaches
}

fn replay_ok(data_dir: &Path, config: Option<&str>, pcap: &Path) -> Output {
    let mut options = Vec::new();
    let path = data_dir.with_extension("toml");
    if let Some(config) = config {
        std::fs::write(&path, config).expect("config");
        options = vec!["--config", path.to_str().expect("utf-8 path")];
    }
    let out = replay_with(data_dir, &options, &[pcap]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    out
}

/// Packets stamped before the latest stamp read before them.
fn behind(records: &[Record]) -> u64 {
    let mut latest = 0;
    let mut behind = 0;
    for record in records {
        if record.ts_micros < latest {
            behind += 1;
        }
        latest = latest.max(record.ts_micros);
    }
    behind
}

/// The capture with its packets shuffled within each `bucket_micros` of time, stamps kept with
/// their packets. Packets sharing one stamp move together, in their order: nothing in a file
/// could tell their order otherwise.
fn shuffled_within(records: &[Record], bucket_micros: u64, seed: u64) -> Vec<Record> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(records.len());
    let mut at = 0;
    while at < records.len() {
        let bucket = records[at].ts_micros / bucket_micros;
        let mut groups: Vec<&[Record]> = Vec::new();
        while at < records.len() && records[at].ts_micros / bucket_micros == bucket {
            let ts = records[at].ts_micros;
            let len = records[at..]
                .iter()
                .take_while(|r| r.ts_micros == ts)
                .count();
            groups.push(&records[at..at + len]);
            at += len;
        }
        for i in (1..groups.len()).rev() {
            groups.swap(i, rng.below(i + 1));
        }
        out.extend(groups.into_iter().flatten().cloned());
    }
    out
}

#[test]
fn a_capture_shuffled_within_50_ms_gives_exactly_the_breaches_of_the_capture_in_order() {
    for lab in committed_labs() {
        let attack = fixture(&lab, "attack.pcap");
        let records = pcap::read(&attack);
        assert_eq!(behind(&records), 0, "{lab}: the lab capture is in order");
        let shuffled = shuffled_within(&records, 50_000, 13);
        let moved = behind(&shuffled);
        assert!(moved > 0, "{lab}: the shuffle moved nothing");
        let work = TempDir::new("time-shuffled");
        let shuffled_pcap = work.path().join("shuffled.pcap");
        pcap::write(&shuffled_pcap, &shuffled);

        let in_order = work.path().join("in-order");
        let out = replay_ok(&in_order, None, &attack);
        assert_eq!(summary_value(&out.stdout, REORDERED), None, "{lab}");
        let expected = breaches(&in_order);
        assert!(!expected.is_empty(), "{lab}: the attack raises breaches");

        let reordered = work.path().join("shuffled");
        let out = replay_ok(&reordered, None, &shuffled_pcap);
        assert_eq!(
            summary_value(&out.stdout, REORDERED),
            Some(moved),
            "{lab}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(summary_value(&out.stdout, LATE), None, "{lab}");
        assert_eq!(summary_value(&out.stdout, CLAMPED), None, "{lab}");
        assert_eq!(breaches(&reordered), expected, "{lab}");
    }
}

#[test]
fn a_clock_stepped_back_is_clamped_and_counted_and_no_alert_goes_back_in_time() {
    for lab in committed_labs() {
        let mut records = pcap::read(&fixture(&lab, "attack.pcap"));
        // Halfway through, the capturing clock steps back an hour.
        let step = records.len() / 2;
        for record in &mut records[step..] {
            record.ts_micros -= 3600 * 1_000_000;
        }
        let (first, reached) = (records[0].ts_micros, records[step - 1].ts_micros);
        let work = TempDir::new("time-stepped");
        let stepped = work.path().join("stepped.pcap");
        pcap::write(&stepped, &records);
        let data = work.path().join("data");
        let out = replay_ok(&data, None, &stepped);
        let after_step = (records.len() - step) as u64;
        assert_eq!(
            summary_value(&out.stdout, CLAMPED),
            Some(after_step),
            "{lab}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(summary_value(&out.stdout, LATE), Some(1), "{lab}");
        let alerts = eve_records(&data);
        assert!(!alerts.is_empty(), "{lab}");
        for alert in alerts.iter().filter(|r| r["event_type"] == "alert") {
            let at = micros(&alert["timestamp"]);
            assert!(
                (first..=reached).contains(&at),
                "{lab}: alert stamped outside the time reached: {alert:#}"
            );
        }
    }
}

#[test]
fn time_running_backwards_throughout_is_held_at_the_latest_time() {
    for lab in committed_labs() {
        let mut records = pcap::read(&fixture(&lab, "attack.pcap"));
        // The same packets in the same order, each stamped as far before the end as it was
        // after the start.
        let (start, end) = (records[0].ts_micros, records[records.len() - 1].ts_micros);
        for record in &mut records {
            record.ts_micros = start + end - record.ts_micros;
        }
        let work = TempDir::new("time-backwards");
        let backwards = work.path().join("backwards.pcap");
        pcap::write(&backwards, &records);
        // No reorder window: every packet meets the clamp itself.
        let data = work.path().join("data");
        let out = replay_ok(
            &data,
            Some("[capture]\nreorder_window_ms = 0\n"),
            &backwards,
        );
        assert_eq!(
            summary_value(&out.stdout, CLAMPED),
            Some(behind(&records)),
            "{lab}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(summary_value(&out.stdout, REORDERED), None, "{lab}");
        // Everything happened at the first packet's time, the latest there was.
        let alerts: Vec<Value> = eve_records(&data)
            .into_iter()
            .filter(|r| r["event_type"] == "alert")
            .collect();
        assert!(!alerts.is_empty(), "{lab}");
        for alert in &alerts {
            assert_eq!(micros(&alert["timestamp"]), end, "{lab}: {alert:#}");
        }
    }
}

/// An EVE timestamp in microseconds since the epoch.
fn micros(ts: &Value) -> u64 {
    (eve_epoch(ts.as_str().expect("timestamp")) * 1e6).round() as u64
}
