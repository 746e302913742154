//! Damaged and foreign input gets a clear error naming the file (and offset), never a panic, and
//! every good packet before the damage is still processed.

use std::path::Path;
use std::process::Output;

use vigil_tests::lab::fixture;
use vigil_tests::workspace::{self, TempDir};

fn replay(data_dir: &Path, pcap: &Path) -> Output {
    workspace::replay(data_dir, &[pcap])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_no_panic(out: &Output) {
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(
        out.status.code(),
        Some(101),
        "a panic exits with 101: {stderr}"
    );
}

/// Whole records of a classic pcap: (offset of each record, offset after the last).
fn record_offsets(pcap: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().expect("4 bytes"));
        let next = at + 16 + caplen as usize;
        if next > pcap.len() {
            break;
        }
        offsets.push(at);
        at = next;
    }
    offsets
}

#[test]
fn truncated_capture_processes_the_good_records_and_names_the_offset() {
    let attack = std::fs::read(fixture("lab", "attack.pcap")).expect("lab capture");
    let offsets = record_offsets(&attack);
    // Cut in the middle of a record about two thirds in: after the scans have started.
    let cut_record = offsets.len() * 2 / 3;
    let cut_at = offsets[cut_record] + 20;
    let dir = TempDir::new("truncated");
    let pcap = dir.path().join("truncated.pcap");
    std::fs::write(&pcap, &attack[..cut_at]).expect("write");
    let data = dir.path().join("data");
    let out = replay(&data, &pcap);
    assert_no_panic(&out);
    assert!(
        !out.status.success(),
        "damage is reported in the exit status"
    );
    let stderr = text(&out.stderr);
    let expected = format!(
        "{}: damaged at byte offset {}: truncated",
        pcap.display(),
        offsets[cut_record]
    );
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in {stderr}"
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        workspace::summary_value(stdout.as_bytes(), "packets"),
        Some(cut_record as u64),
        "{stdout}"
    );
    let eve = std::fs::read_to_string(data.join("eve.json")).unwrap_or_default();
    assert!(
        eve.contains("Device / Network Range Scan"),
        "breaches from before the damage are kept"
    );
}

#[test]
fn garbage_frames_are_counted_by_reason_and_good_frames_still_count() {
    let attack = std::fs::read(fixture("lab", "attack.pcap")).expect("lab capture");
    let offsets = record_offsets(&attack);
    let mut file = attack[..24].to_vec();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut garbage = 0u64;
    for (i, at) in offsets.iter().take(400).enumerate() {
        let caplen = u32::from_le_bytes(attack[at + 8..at + 12].try_into().expect("4 bytes"));
        let record = &attack[*at..*at + 16 + caplen as usize];
        file.extend_from_slice(record);
        if i % 2 == 0 {
            // A record of the same length whose bytes are noise, but typed as IPv4.
            let mut noise: Vec<u8> = (0..caplen)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            if noise.len() > 15 {
                noise[12..15].copy_from_slice(&[0x08, 0x00, 0x4f]);
            }
            file.extend_from_slice(&record[..16]);
            file.extend_from_slice(&noise);
            garbage += 1;
        }
    }
    let dir = TempDir::new("garbage");
    let pcap = dir.path().join("garbage.pcap");
    std::fs::write(&pcap, &file).expect("write");
    let out = replay(&dir.path().join("data"), &pcap);
    assert_no_panic(&out);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(
        workspace::summary_value(stdout.as_bytes(), "packets"),
        Some(400 + garbage),
        "{stdout}"
    );
    assert!(stdout.contains("frames skipped, by reason"), "{stdout}");
    let decoded = workspace::summary_value(stdout.as_bytes(), "decoded").expect("decoded row");
    assert!(decoded >= 400 - 10, "the real frames decode: {stdout}");
}

#[test]
fn empty_and_non_capture_files_are_refused_clearly() {
    let dir = TempDir::new("foreign");
    let empty = dir.path().join("empty.pcap");
    std::fs::write(&empty, b"").expect("write");
    let text_file = dir.path().join("notes.pcap");
    std::fs::write(
        &text_file,
        b"this is a text file, not a capture\n".repeat(10),
    )
    .expect("write");
    for (file, reason) in [
        (&empty, "the file is empty"),
        (&text_file, "unrecognised magic"),
    ] {
        let out = replay(&dir.path().join("data"), file);
        assert_no_panic(&out);
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        let expected = format!("{}: not a pcap or pcapng file: {reason}", file.display());
        assert!(
            stderr.contains(&expected),
            "expected {expected:?} in {stderr}"
        );
    }
}

#[test]
fn pcapng_from_a_real_windows_host_is_read() {
    let pcapng =
        vigil_tests::workspace::root().join("../shared/pcaps/zeek/dce-rpc/dce_rpc_ntlm.pcapng");
    if !pcapng.is_file() {
        eprintln!("skipping: ../shared/pcaps is not here");
        return;
    }
    let dir = TempDir::new("pcapng");
    let out = replay(&dir.path().join("data"), &pcapng);
    assert_no_panic(&out);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let packets = workspace::summary_value(stdout.as_bytes(), "packets").expect("packets row");
    assert!(packets > 0);
    assert_eq!(
        workspace::summary_value(stdout.as_bytes(), "decoded"),
        Some(packets),
        "{stdout}"
    );
}
