//! A million-packet SYN flood from random internal addresses to random ports admits no device:
//! the device table takes in only hosts that answered or completed an exchange. So after the lab's
//! normal week and the flood, the attack that follows still carries the attacker's identity (its
//! device, host names and MAC) in every alert, and devices.json stays as small as the real
//! network it describes.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Instant;

use serde_json::Value;
use vigil_tests::lab::{self, committed_labs, fixture, ground_truth};
use vigil_tests::pcap::{self, Rng};
use vigil_tests::workspace::{eve_records, replay_ok, summary_value, TempDir};

const FLOOD_SYNS: u32 = 1_000_000;
/// One SYN every 100 us: the flood lasts 100 s of packet time.
const SYN_GAP_MICROS: u64 = 100;
/// Every 16th SYN goes to the lab's file server, which answers: a RST from a closed port, or a
/// SYN-ACK that the forged source never acknowledges.
const ANSWERED_EVERY: u32 = 16;
/// devices.json of the lab's five devices is a few KiB; a flood must not grow it past this.
const DEVICES_JSON_BOUND: u64 = 64 * 1024;

fn devices(data_dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(data_dir.join("devices.json")).expect("devices.json");
    let saved: Value = serde_json::from_str(&text).expect("JSON");
    saved["devices"].as_array().cloned().unwrap_or_default()
}

fn holding<'a>(devices: &'a [Value], address: &str) -> &'a Value {
    let holders: Vec<&Value> = devices
        .iter()
        .filter(|d| {
            d["addresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|s| s["value"] == address))
        })
        .collect();
    assert_eq!(holders.len(), 1, "one device holds {address}: {devices:#?}");
    holders[0]
}

fn parse_mac(text: &str) -> [u8; 6] {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("hex"))
        .collect();
    bytes.try_into().expect("six bytes")
}

/// One's-complement sum of 16-bit words (RFC 1071).
fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for chunk in chunks {
        for pair in chunk.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// An Ethernet/IPv4/TCP segment without payload, checksums filled in.
fn segment(
    (src_mac, src, src_port): ([u8; 6], Ipv4Addr, u16),
    (dst_mac, dst, dst_port): ([u8; 6], Ipv4Addr, u16),
    (seq, ack): (u32, u32),
    flags: u8,
) -> Vec<u8> {
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let ip_sum = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&src_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&dst_port.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&64_240u16.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let tcp_sum = checksum(&[&pseudo, &tcp]);
    tcp[16..18].copy_from_slice(&tcp_sum.to_be_bytes());
    let mut frame = Vec::with_capacity(54);
    frame.extend_from_slice(&dst_mac);
    frame.extend_from_slice(&src_mac);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&tcp);
    frame
}

/// A 10.0.0.0/8 address outside the lab's /24 for each `i`, all distinct: `i` times an odd
/// constant is a bijection of the 24 host bits; the lab's own 256 are skipped.
fn flood_addresses(lab_net: [u8; 3]) -> impl Iterator<Item = Ipv4Addr> {
    (0u32..1 << 24)
        .map(|i| i.wrapping_mul(0x9e37_79b1) & 0x00ff_ffff)
        .map(|host| Ipv4Addr::from(0x0a00_0000 | host))
        .filter(move |a| a.octets()[..3] != lab_net)
}

/// Writes the flood: FLOOD_SYNS SYNs from distinct forged sources, from `start`; the answers of
/// `server` to those aimed at it. Returns the packets written.
fn write_flood(out: &Path, lab_net: [u8; 3], server: (Ipv4Addr, [u8; 6]), start: u64) -> u64 {
    let mut rng = Rng::new(0x5eed_f100d);
    let mut writer = pcap::Writer::create(out);
    let mut packets = 0;
    let mut targets = flood_addresses(lab_net).skip(FLOOD_SYNS as usize);
    for (i, source) in flood_addresses(lab_net)
        .take(FLOOD_SYNS as usize)
        .enumerate()
    {
        let i = i as u32;
        let ts = start + u64::from(i) * SYN_GAP_MICROS;
        let [_, b, c, d] = source.octets();
        let src_mac = [0x02, 0xf1, b, c, d, 0x01];
        let src_port = 1024 + rng.below(60_000) as u16;
        let dst_port = 1 + rng.below(65_535) as u16;
        let seq = rng.next_u64() as u32;
        let answered = i.is_multiple_of(ANSWERED_EVERY);
        let (dst, dst_mac) = if answered {
            server
        } else {
            let target = targets.next().expect("enough addresses");
            let [_, b, c, d] = target.octets();
            (target, [0x02, 0xf2, b, c, d, 0x01])
        };
        let from = (src_mac, source, src_port);
        let to = (dst_mac, dst, dst_port);
        writer.frame(ts, &segment(from, to, (seq, 0), SYN));
        packets += 1;
        if answered {
            let flags = if dst_port.is_multiple_of(2) {
                RST | ACK
            } else {
                SYN | ACK
            };
            let reply = segment(
                to,
                from,
                (rng.next_u64() as u32, seq.wrapping_add(1)),
                flags,
            );
            writer.frame(ts + SYN_GAP_MICROS / 2, &reply);
            packets += 1;
        }
    }
    writer.finish();
    packets
}

#[test]
fn a_random_source_syn_flood_admits_no_device_and_the_attack_keeps_its_identity() {
    for lab in committed_labs() {
        let attacker = ground_truth(&lab)[0].source.to_string();
        let net: Vec<u8> = lab::param(&lab, "LAB_NET")
            .split('.')
            .map(|o| o.parse().expect("octet"))
            .collect();
        let lab_net: [u8; 3] = net.try_into().expect("a /24 prefix");
        let server_ip = format!(
            "{}.{}",
            lab::param(&lab, "LAB_NET"),
            lab::param(&lab, "FS_OCTET")
        );
        let data = TempDir::new("flood");

        replay_ok(data.path(), &[&fixture(&lab, "baseline.pcap")]);
        let known = devices(data.path());
        let ids: Vec<&Value> = known.iter().map(|d| &d["id"]).collect();
        let victim = holding(&known, &attacker).clone();
        let victim_macs = victim["macs"].clone();
        let server = holding(&known, &server_ip);
        let server_mac = parse_mac(server["macs"][0]["value"].as_str().expect("server MAC"));

        // The flood ends two minutes before the attack starts.
        let attack_start = pcap::read(&fixture(&lab, "attack.pcap"))[0].ts_micros;
        let flood_len = u64::from(FLOOD_SYNS) * SYN_GAP_MICROS;
        let flood_start = attack_start - 120_000_000 - flood_len;
        let flood = data.path().join("flood.pcap");
        let server = (server_ip.parse().expect("server address"), server_mac);
        let packets = write_flood(&flood, lab_net, server, flood_start);
        assert_eq!(packets, 1_000_000 + 1_000_000 / u64::from(ANSWERED_EVERY));

        let began = Instant::now();
        let out = replay_ok(data.path(), &[&flood]);
        let took = began.elapsed();
        let size = std::fs::metadata(data.path().join("devices.json"))
            .expect("devices.json")
            .len();
        eprintln!(
            "{lab}: {packets} flood packets replayed in {:.2} s; devices.json {size} bytes",
            took.as_secs_f64()
        );
        assert_eq!(summary_value(&out.stdout, "packets"), Some(packets));
        // Every SYN came from an address nobody had seen: each was counted, none admitted.
        assert_eq!(
            summary_value(
                &out.stdout,
                "sightings of unknown addresses without evidence"
            ),
            Some(u64::from(FLOOD_SYNS)),
            "{lab}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(
            summary_value(&out.stdout, "devices"),
            Some(known.len() as u64)
        );
        assert_eq!(
            summary_value(
                &out.stdout,
                "devices evicted (table full, least recently seen)"
            ),
            None
        );
        let after_flood = devices(data.path());
        assert_eq!(
            after_flood.iter().map(|d| &d["id"]).collect::<Vec<_>>(),
            ids,
            "{lab}: the flood added or removed devices"
        );
        // The server answered during the flood: it was seen, not replaced.
        let server_seen = holding(&after_flood, &server_ip)["last_seen"]
            .as_u64()
            .expect("last_seen");
        assert!(server_seen >= flood_start, "{lab}: {server_seen}");
        assert!(
            size <= DEVICES_JSON_BOUND,
            "{lab}: devices.json {size} bytes"
        );

        // The attack, next: its alerts still name the attacker's device as the week knew it.
        replay_ok(data.path(), &[&fixture(&lab, "attack.pcap")]);
        let legit = lab::param(&lab, "LEGIT_WS");
        let alerts: Vec<Value> = eve_records(data.path())
            .into_iter()
            .filter(|r| r["event_type"] == "alert" && r["src_ip"] == attacker.as_str())
            .collect();
        assert!(!alerts.is_empty(), "{lab}: no alert for the attacker");
        for alert in &alerts {
            let identity = &alert["vigil"]["identity"];
            assert_eq!(identity["device_id"], victim["id"], "{lab}: {alert:#}");
            let names: Vec<&str> = identity["host_names"]
                .as_array()
                .expect("host names")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(names.contains(&legit.as_str()), "{lab}: {alert:#}");
            for mac in victim_macs.as_array().expect("MACs") {
                assert!(
                    identity["macs"]
                        .as_array()
                        .is_some_and(|m| m.contains(&mac["value"])),
                    "{lab}: {alert:#}"
                );
            }
        }
        let hostname_alert = alerts
            .iter()
            .find(|r| r["alert"]["signature"] == "Device / Unusual NTLM Hostname")
            .expect("the attacker's NTLM hostname alert");
        assert_eq!(
            hostname_alert["vigil"]["identity"]["host_names"][0],
            lab::param(&lab, "ATTACK_WS"),
            "{lab}"
        );
        let size = std::fs::metadata(data.path().join("devices.json"))
            .expect("devices.json")
            .len();
        assert!(
            size <= DEVICES_JSON_BOUND,
            "{lab}: devices.json {size} bytes"
        );
    }
}
