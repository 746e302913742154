//! The attack lab's captures and ground truth (tests/fixtures/lab*, made by run-lab.sh).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use crate::workspace::root;

pub fn fixture(lab: &str, file: &str) -> PathBuf {
    root().join("tests").join("fixtures").join(lab).join(file)
}

/// `KEY=value` from the lab's parameter file (`lab-params.env`, what run-lab.sh ran with).
pub fn param(lab: &str, key: &str) -> String {
    let path = fixture(lab, "lab-params.env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{lab}: no {key} in lab-params.env"))
        .to_string()
}

/// One row of `ground-truth.tsv`.
#[derive(Debug, Clone)]
pub struct Step {
    pub step: String,
    pub detections: Vec<String>,
    pub also_acceptable: Vec<String>,
    pub source: IpAddr,
    pub destinations: Vec<IpAddr>,
    /// TCP/UDP ports named by the step; empty when the step names none precisely.
    pub ports: Vec<u16>,
    pub start_s: f64,
    pub end_s: f64,
}

fn list(field: &str) -> Vec<String> {
    field
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// `10.77.0.10`, `10.77.0.10, 10.77.0.20`, `10.77.0.1-254`, `10.77.0.1-60 (not .50)`.
pub fn parse_destinations(field: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for part in field.split(',').map(str::trim) {
        let (range, excluded) = match part.split_once(" (not .") {
            Some((range, rest)) => (range, rest.trim_end_matches(')').parse::<u8>().ok()),
            None => (part, None),
        };
        let Some((prefix, last)) = range.rsplit_once('.') else {
            continue;
        };
        let octets: Vec<u8> = prefix.split('.').filter_map(|o| o.parse().ok()).collect();
        if octets.len() != 3 {
            continue;
        }
        let (first, end) = match last.split_once('-') {
            Some((a, b)) => (a.parse::<u8>(), b.parse::<u8>()),
            None => (last.parse::<u8>(), last.parse::<u8>()),
        };
        let (Ok(first), Ok(end)) = (first, end) else {
            continue;
        };
        for host in first..=end {
            if Some(host) != excluded {
                out.push(IpAddr::V4(Ipv4Addr::new(
                    octets[0], octets[1], octets[2], host,
                )));
            }
        }
    }
    out
}

/// `tcp/445`, `tcp/445,3389,9401`; anything vaguer (`udp/top-100`, ICMP) names no ports.
pub fn parse_ports(field: &str) -> Vec<u16> {
    field
        .split(", ")
        .filter_map(|p| p.strip_prefix("tcp/").or_else(|| p.strip_prefix("udp/")))
        .flat_map(|list| list.split(',').map(|p| p.trim().parse::<u16>()))
        .collect::<Result<Vec<u16>, _>>()
        .unwrap_or_default()
}

/// The committed labs: the default one always, variants where present (each a directory of
/// `tests/fixtures` holding a `ground-truth.tsv`).
pub fn committed_labs() -> Vec<String> {
    let dir = root().join("tests").join("fixtures");
    let mut labs: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("ground-truth.tsv").is_file())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    labs.sort();
    assert!(
        labs.iter().any(|l| l == "lab"),
        "tests/fixtures/lab is committed"
    );
    labs
}

/// Each step's `(begin, end)` in epoch seconds, from `attack-steps.tsv` (same clock as the pcap).
pub fn step_windows(lab: &str) -> std::collections::BTreeMap<String, (f64, f64)> {
    let path = fixture(lab, "attack-steps.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut windows = std::collections::BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let (Some(step), Some(edge), Some(t)) = (f.first(), f.get(1), f.get(2)) else {
            continue;
        };
        let Ok(t) = t.parse::<f64>() else { continue };
        let entry = windows.entry(step.to_string()).or_insert((t, t));
        match *edge {
            "begin" => entry.0 = t,
            _ => entry.1 = t,
        }
    }
    windows
}

/// Epoch seconds of an EVE timestamp (`2026-11-28T04:42:33.304350+0000`, always UTC here).
pub fn eve_epoch(ts: &str) -> f64 {
    let field = |range: std::ops::Range<usize>| -> i64 {
        ts.get(range)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("EVE timestamp {ts}"))
    };
    let (y, m, d) = (field(0..4), field(5..7), field(8..10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs: f64 = ts
        .get(17..26)
        .and_then(|s| s.parse().ok())
        .expect("seconds");
    (days * 86_400 + field(11..13) * 3600 + field(14..16) * 60) as f64 + secs
}

pub fn ground_truth(lab: &str) -> Vec<Step> {
    let path = fixture(lab, "ground-truth.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert!(f.len() >= 9, "malformed ground truth line: {line}");
            Step {
                step: f[0].to_string(),
                detections: list(f[1]),
                also_acceptable: list(f[2]),
                source: f[3].parse().expect("source address"),
                destinations: parse_destinations(f[4]),
                ports: parse_ports(f[5]),
                start_s: f[6].parse().expect("start offset"),
                end_s: f[7].parse().expect("end offset"),
            }
        })
        .collect()
}

/// `pcap` with every packet `secs` later, written to `out` (editcap): the same traffic on
/// another day.
pub fn shifted(pcap: &Path, secs: u64, out: &Path) {
    let status = std::process::Command::new("editcap")
        .args(["-t", &secs.to_string()])
        .arg(pcap)
        .arg(out)
        .status()
        .expect("editcap runs (./setup.sh installs tshark's tools)");
    assert!(status.success(), "editcap -t {secs} {}", pcap.display());
}

/// `pcap` without the frames `frames` lists (editcap's numbering from 1: `7`, `1-186`), written
/// to `out`: a capture started later, or one that missed segments.
pub fn without_frames(pcap: &Path, frames: &[String], out: &Path) {
    let status = std::process::Command::new("editcap")
        .arg(pcap)
        .arg(out)
        .args(frames)
        .status()
        .expect("editcap runs (./setup.sh installs tshark's tools)");
    assert!(status.success(), "editcap {} {frames:?}", pcap.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_ranges_expand_with_exclusions() {
        let hosts = parse_destinations("10.77.0.1-60 (not .50)");
        assert_eq!(hosts.len(), 59);
        assert!(!hosts.contains(&IpAddr::from([10, 77, 0, 50])));
        assert_eq!(parse_destinations("10.77.0.10, 10.77.0.20").len(), 2);
    }

    #[test]
    fn eve_timestamps_become_epoch_seconds() {
        assert_eq!(eve_epoch("1970-01-01T00:00:01.500000+0000"), 1.5);
        assert_eq!(
            eve_epoch("2026-11-28T04:42:33.000000+0000"),
            1_795_840_953.0
        );
    }

    #[test]
    fn only_precise_port_lists_are_parsed() {
        assert_eq!(parse_ports("tcp/445,3389,9401"), vec![445, 3389, 9401]);
        assert!(parse_ports("udp/top-100").is_empty());
        assert!(parse_ports("icmp echo+timestamp, tcp/443 SYN, tcp/80 ACK").is_empty());
    }
}
