//! The captures `vigil bench` measures: the lab attack repeated as one device and with shifted
//! addresses, a SYN flood built in code, and bulk HTTP made with real tools in network
//! namespaces. Each is built once and kept in the temp dir under a name made of its parameters,
//! so a second run reuses it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use smoltcp::wire::{Ipv4Address, TcpControl};

use super::bench_fragments::{ipv4, tcp};
use crate::capture::pcap::PcapSource;
use crate::capture::{Next, Source};

pub const ATTACK_PCAP: &[u8] = include_bytes!("../../../tests/fixtures/lab/attack.pcap");
/// Bumped whenever a builder writes something different, so older cached files are not reused.
const FORMAT: u32 = 1;
/// The lab attack lasts 132 s: copies 140 s apart follow each other without overlapping, close
/// enough that the analyst keeps them in one incident.
const ONE_DEVICE_GAP_MICROS: u64 = 140_000_000;
/// The flood's targets; its sources are random addresses in 10.0.0.0/8.
const FLOOD_TARGETS: [Ipv4Address; 4] = [
    Ipv4Address::new(10, 1, 0, 10),
    Ipv4Address::new(10, 1, 0, 11),
    Ipv4Address::new(10, 1, 0, 12),
    Ipv4Address::new(10, 1, 0, 13),
];
/// One SYN every 10 us: 100,000 packets a second of packet time.
const FLOOD_GAP_MICROS: u64 = 10;
const FLOOD_START_MICROS: u64 = 1_800_000_000 * 1_000_000;
const FLOOD_SEED: u64 = 0x5eed_f100d;
/// Bulk HTTP: this many fetches of a file this large.
const HTTP_FETCHES: u32 = 8;
const HTTP_MEGABYTES: usize = 20;
const HTTP_PORT: u16 = 8000;

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum CaptureKind {
    /// The lab attack repeated with the same addresses, copies 140 s apart: one long incident.
    OneDevice,
    /// The lab attack repeated, each copy with its own addresses.
    Shifted,
    /// A SYN flood from random internal sources to random ports on four targets.
    Flood,
    /// Bulk HTTP from python's http.server to curl over a veth pair (needs root).
    Http,
}

/// A capture on disk and what it holds.
pub struct Capture {
    pub title: String,
    /// How it was made, in a few words.
    pub detail: String,
    pub path: PathBuf,
    pub packets: usize,
    /// Bytes on the wire (frames as sent, whatever the snap length).
    pub wire_bytes: u64,
}

/// Builds (or finds in `dir`) the capture of `kind`; `Ok(Err(reason))` when it cannot be made
/// here (the bulk HTTP capture needs root and the tools).
pub fn capture(
    kind: CaptureKind,
    repeat: u32,
    flood_packets: u32,
    dir: &Path,
) -> anyhow::Result<Result<Capture, String>> {
    let (name, title, detail) = match kind {
        CaptureKind::OneDevice => (
            format!("attack-one-device-x{repeat}"),
            format!("lab attack x{repeat}, one device"),
            "copies 140 s apart, same addresses".to_string(),
        ),
        CaptureKind::Shifted => (
            format!("attack-shifted-x{repeat}"),
            format!("lab attack x{repeat}, shifted addresses"),
            "each copy with its own addresses".to_string(),
        ),
        CaptureKind::Flood => (
            format!("syn-flood-{flood_packets}-{FLOOD_SEED:x}"),
            "SYN flood".to_string(),
            "random 10/8 sources, random ports, 4 targets".to_string(),
        ),
        CaptureKind::Http => (
            format!("http-bulk-{HTTP_FETCHES}x{HTTP_MEGABYTES}MB"),
            "bulk HTTP".to_string(),
            format!(
                "curl fetching {HTTP_MEGABYTES} MB {HTTP_FETCHES} times from http.server over veth"
            ),
        ),
    };
    let path = dir.join(format!("{name}-v{FORMAT}.pcap"));
    if !path.exists() {
        // Built under another name and renamed, so an interrupted build is never reused.
        let partial = path.with_extension("partial");
        let built = match kind {
            CaptureKind::OneDevice => write_attack(repeat, Copies::OneDevice, &partial).map(Ok),
            CaptureKind::Shifted => write_attack(repeat, Copies::Shifted, &partial).map(Ok),
            CaptureKind::Flood => write_syn_flood(flood_packets, FLOOD_SEED, &partial).map(Ok),
            // Made by tools outside this program: whatever stops them skips the capture, with
            // the reason, rather than the whole bench.
            CaptureKind::Http => {
                write_http_bulk(&partial, dir).or_else(|err| Ok(Err(format!("{err:#}"))))
            }
        };
        match built {
            Ok(Ok(())) => std::fs::rename(&partial, &path)
                .with_context(|| format!("renaming {}", partial.display()))?,
            Ok(Err(reason)) => return Ok(Err(reason)),
            Err(err) => return Err(err.context(format!("building {}", path.display()))),
        }
    }
    let (packets, wire_bytes) = count(&path)?;
    Ok(Ok(Capture {
        title,
        detail,
        path,
        packets,
        wire_bytes,
    }))
}

/// Packets in a capture and their bytes on the wire.
pub fn count(path: &Path) -> anyhow::Result<(usize, u64)> {
    let mut source = PcapSource::open(path)?;
    let (mut packets, mut bytes) = (0, 0);
    while let Next::Packet(packet) = source.next_packet()? {
        packets += 1;
        bytes += u64::from(packet.wire_len);
    }
    Ok((packets, bytes))
}

/// A capture with no packets: `vigil replay`'s start-up and shutdown alone.
pub fn write_empty(path: &Path) -> io::Result<()> {
    PcapWriter::create(path)?.finish()
}

/// A classic pcap file (microseconds, Ethernet).
struct PcapWriter(BufWriter<File>);

impl PcapWriter {
    fn create(path: &Path) -> io::Result<PcapWriter> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0])?;
        out.write_all(&262_144u32.to_le_bytes())?;
        out.write_all(&1u32.to_le_bytes())?;
        Ok(PcapWriter(out))
    }

    fn packet(&mut self, micros: u64, frame: &[u8]) -> io::Result<()> {
        let out = &mut self.0;
        out.write_all(&((micros / 1_000_000) as u32).to_le_bytes())?;
        out.write_all(&((micros % 1_000_000) as u32).to_le_bytes())?;
        out.write_all(&(frame.len() as u32).to_le_bytes())?;
        out.write_all(&(frame.len() as u32).to_le_bytes())?;
        out.write_all(frame)
    }

    fn finish(self) -> io::Result<()> {
        self.0.into_inner().map_err(|e| e.into_error())?.sync_all()
    }
}

#[derive(Clone, Copy)]
enum Copies {
    /// Same addresses, each copy 140 s after the previous one started.
    OneDevice,
    /// The second octet of every IPv4 address moved by the copy's number, each copy a second
    /// after the previous one ended, so flows and devices do not repeat.
    Shifted,
}

/// The bundled lab attack, `copies` times.
fn write_attack(copies: u32, how: Copies, out: &Path) -> anyhow::Result<()> {
    let mut source =
        PcapSource::from_reader("bundled attack.pcap", Cursor::new(ATTACK_PCAP.to_vec()))?;
    let mut frames: Vec<(u64, Vec<u8>)> = Vec::new();
    while let Next::Packet(packet) = source.next_packet()? {
        frames.push((packet.ts.micros(), packet.data.to_vec()));
    }
    let first = frames.first().map_or(0, |f| f.0);
    let last = frames.last().map_or(0, |f| f.0);
    let gap = match how {
        Copies::OneDevice => ONE_DEVICE_GAP_MICROS,
        Copies::Shifted => last - first + 1_000_000,
    };
    let mut file = PcapWriter::create(out)?;
    for copy in 0..copies {
        for (ts, frame) in &frames {
            let mut frame = frame.clone();
            // Untagged IPv4: addresses at 26..30 and 30..34.
            if matches!(how, Copies::Shifted) && frame.len() >= 34 && frame[12..14] == [0x08, 0x00]
            {
                frame[27] = frame[27].wrapping_add(copy as u8);
                frame[31] = frame[31].wrapping_add(copy as u8);
            }
            file.packet(ts + u64::from(copy) * gap, &frame)?;
        }
    }
    file.finish()?;
    Ok(())
}

/// SplitMix64: a fixed seed gives the same flood on every machine.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// `packets` SYNs, each from a random address in 10.0.0.0/8 and a random port to a random port
/// on one of four targets, none answered.
fn write_syn_flood(packets: u32, seed: u64, out: &Path) -> anyhow::Result<()> {
    let mut rng = SplitMix64(seed);
    let mut file = PcapWriter::create(out)?;
    for i in 0..packets {
        let [a, b, c, sport_hi, sport_lo, dport_hi, dport_lo, target] = rng.next().to_be_bytes();
        let source = Ipv4Address::new(10, a, b, c);
        let target = FLOOD_TARGETS[usize::from(target) % FLOOD_TARGETS.len()];
        let src_port = u16::from_be_bytes([sport_hi, sport_lo]).max(1024);
        let dst_port = u16::from_be_bytes([dport_hi, dport_lo]).max(1);
        let syn = tcp(source, target, src_port, dst_port, TcpControl::Syn, None);
        let frame = ipv4(source, target, i as u16, 0, false, &syn);
        file.packet(FLOOD_START_MICROS + u64::from(i) * FLOOD_GAP_MICROS, &frame)?;
    }
    file.finish()?;
    Ok(())
}

/// Bulk HTTP made with real tools: python3's http.server in one network namespace, curl
/// fetching a file from it `HTTP_FETCHES` times from another over a veth pair with offloads off
/// (MTU-sized frames, finished checksums), captured by tcpdump on the client's side. Skipped
/// with a reason without root or a tool.
fn write_http_bulk(out: &Path, dir: &Path) -> anyhow::Result<Result<(), String>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(Err("needs root (network namespaces)".into()));
    }
    if let Some(tool) = ["ip", "ethtool", "tcpdump", "python3", "curl"]
        .into_iter()
        .find(|tool| !on_path(tool))
    {
        return Ok(Err(format!("{tool} not installed")));
    }
    let lab = HttpLab::new(dir)?;
    let root = dir.join(format!("http-root-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let _remove_root = RemoveDir(root.clone());
    write_random_file(&root.join("bulk.bin"), HTTP_MEGABYTES << 20)?;
    let mut dump = lab.tcpdump(out)?;
    let _server = lab.server(&root)?;
    let url = format!("http://{}:{HTTP_PORT}/bulk.bin", HttpLab::SERVER_IP);
    lab.wait_for_server()?;
    for _ in 0..HTTP_FETCHES {
        lab.run_client(&["curl", "-sSf", "-o", "/dev/null", &url])?;
    }
    dump.stop()?;
    Ok(Ok(()))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

fn write_random_file(path: &Path, bytes: usize) -> io::Result<()> {
    let mut rng = SplitMix64(bytes as u64);
    let mut out = BufWriter::new(File::create(path)?);
    for _ in 0..bytes / 8 {
        out.write_all(&rng.next().to_le_bytes())?;
    }
    out.flush()
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two network namespaces joined by a veth pair, deleted (with the pair) on drop.
struct HttpLab {
    server_ns: String,
    client_ns: String,
    client_if: String,
    logs: PathBuf,
}

impl HttpLab {
    const SERVER_IP: &str = "10.199.0.1";
    const CLIENT_IP: &str = "10.199.0.2";

    fn new(dir: &Path) -> anyhow::Result<HttpLab> {
        let id = std::process::id();
        let lab = HttpLab {
            server_ns: format!("vbench{id}s"),
            client_ns: format!("vbench{id}c"),
            client_if: format!("vb{id}c"),
            logs: dir.to_path_buf(),
        };
        let server_if = format!("vb{id}s");
        // `lab` exists already, so an error from here on deletes whatever was made.
        ip(&["netns", "add", &lab.server_ns])?;
        ip(&["netns", "add", &lab.client_ns])?;
        ip(&[
            "link",
            "add",
            &server_if,
            "netns",
            &lab.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &lab.client_if,
            "netns",
            &lab.client_ns,
        ])?;
        for (ns, iface, address) in [
            (&lab.server_ns, &server_if, Self::SERVER_IP),
            (&lab.client_ns, &lab.client_if, Self::CLIENT_IP),
        ] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                iface,
            ])?;
            ip(&["-n", ns, "link", "set", iface, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            // Without offloads veth carries MTU-sized frames with finished checksums, as a
            // mirror port shows them.
            run(
                "ip",
                &[
                    "netns", "exec", ns, "ethtool", "-K", iface, "tx", "off", "tso", "off", "gso",
                    "off", "gro", "off",
                ],
            )?;
        }
        Ok(lab)
    }

    fn exec(&self, ns: &str, args: &[&str], log: &str) -> anyhow::Result<Child> {
        let log = File::create(self.logs.join(log))?;
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", args.join(" ")))
    }

    /// tcpdump on the client's interface, writing `out` once it is listening.
    fn tcpdump(&self, out: &Path) -> anyhow::Result<Tcpdump> {
        let out_text = out.to_string_lossy();
        let child = self.exec(
            &self.client_ns,
            &[
                "tcpdump",
                "-i",
                &self.client_if,
                "-n",
                "-s",
                "0",
                "-B",
                "65536",
                "-U",
                "-w",
                &out_text,
            ],
            "tcpdump.log",
        )?;
        let dump = Tcpdump(Some(child));
        // tcpdump writes the file header once its capture is active.
        wait_until(Duration::from_secs(10), || {
            std::fs::metadata(out).is_ok_and(|m| m.len() >= 24)
        })
        .context("tcpdump did not start")?;
        Ok(dump)
    }

    fn server(&self, root: &Path) -> anyhow::Result<KillOnDrop> {
        let root = root.to_string_lossy();
        let port = HTTP_PORT.to_string();
        Ok(KillOnDrop(self.exec(
            &self.server_ns,
            &[
                "python3",
                "-m",
                "http.server",
                &port,
                "--bind",
                Self::SERVER_IP,
                "--directory",
                &root,
            ],
            "http-server.log",
        )?))
    }

    fn wait_for_server(&self) -> anyhow::Result<()> {
        let url = format!("http://{}:{HTTP_PORT}/", Self::SERVER_IP);
        wait_until(Duration::from_secs(20), || {
            self.run_client(&["curl", "-sf", "-m", "1", "-o", "/dev/null", &url])
                .is_ok()
        })
        .context("http.server did not answer")
    }

    fn run_client(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["netns", "exec", &self.client_ns];
        all.extend_from_slice(args);
        run("ip", &all).map(drop)
    }
}

impl Drop for HttpLab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and with it the pair.
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

pub(super) struct KillOnDrop(pub(super) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// tcpdump, stopped with SIGINT so it writes out what it holds.
struct Tcpdump(Option<Child>);

impl Tcpdump {
    fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.0.take() else {
            return Ok(());
        };
        // Let the last segments reach tcpdump before it stops.
        std::thread::sleep(Duration::from_millis(300));
        let pid = libc::pid_t::try_from(child.id()).context("tcpdump's pid")?;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped, so the pid
        // cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let status = child.wait()?;
        anyhow::ensure!(status.success(), "tcpdump exited with {status}");
        Ok(())
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(super) fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !ready() {
        anyhow::ensure!(start.elapsed() < limit, "not ready after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

pub(super) fn ip(args: &[&str]) -> anyhow::Result<String> {
    run("ip", args)
}

pub(super) fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args.iter().map(OsStr::new))
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::decode::{decode, TcpFlags, Transport};

    fn dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("vigil-bench-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// (micros, source address) of every decodable IPv4 packet.
    fn sources(path: &Path) -> Vec<(u64, Option<Ipv4Addr>)> {
        let mut source = PcapSource::open(path).expect("opens");
        let mut out = Vec::new();
        while let Next::Packet(packet) = source.next_packet().expect("reads") {
            let src = decode(packet.data).ok().and_then(|d| match d.src {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            });
            out.push((packet.ts.micros(), src));
        }
        out
    }

    #[test]
    fn one_device_copies_keep_the_addresses_and_follow_140_s_apart() {
        let dir = dir("one-device");
        let original = dir.join("original.pcap");
        std::fs::write(&original, ATTACK_PCAP).expect("writes");
        let capture = capture(CaptureKind::OneDevice, 40, 0, &dir)
            .expect("builds")
            .expect("no root needed");
        let (once, many) = (sources(&original), sources(&capture.path));
        assert_eq!(many.len(), 40 * once.len());
        let addresses = |packets: &[(u64, Option<Ipv4Addr>)]| {
            packets.iter().filter_map(|p| p.1).collect::<HashSet<_>>()
        };
        assert_eq!(addresses(&many), addresses(&once));
        for (i, (ts, src)) in many.iter().enumerate() {
            let (first_ts, first_src) = once[i % once.len()];
            assert_eq!(*src, first_src);
            assert_eq!(
                *ts,
                first_ts + (i / once.len()) as u64 * ONE_DEVICE_GAP_MICROS
            );
        }
        // In time order: each copy ends before the next begins.
        assert!(many.windows(2).all(|w| w[0].0 <= w[1].0));
        std::fs::remove_dir_all(dir).expect("cleans up");
    }

    #[test]
    fn shifted_copies_each_have_their_own_addresses() {
        let dir = dir("shifted");
        let capture = capture(CaptureKind::Shifted, 40, 0, &dir)
            .expect("builds")
            .expect("no root needed");
        let packets = sources(&capture.path);
        let per_copy = packets.len() / 40;
        assert_eq!(packets.len(), 40 * per_copy);
        let copies: Vec<HashSet<Ipv4Addr>> = packets
            .chunks(per_copy)
            .map(|copy| copy.iter().filter_map(|p| p.1).collect())
            .collect();
        for (i, a) in copies.iter().enumerate() {
            for b in &copies[i + 1..] {
                assert!(a.is_disjoint(b), "two copies share an address");
            }
        }
        assert!(packets.windows(2).all(|w| w[0].0 <= w[1].0));
        std::fs::remove_dir_all(dir).expect("cleans up");
    }

    #[test]
    fn flood_is_a_million_syns_from_distinct_sources_to_four_targets() {
        let dir = dir("flood");
        let capture = capture(CaptureKind::Flood, 40, 1_000_000, &dir)
            .expect("builds")
            .expect("no root needed");
        assert_eq!(capture.packets, 1_000_000);
        let mut source = PcapSource::open(&capture.path).expect("opens");
        let (mut sources, mut targets) = (HashSet::new(), HashSet::new());
        while let Next::Packet(packet) = source.next_packet().expect("reads") {
            let decoded = decode(packet.data).expect("decodes");
            let Transport::Tcp { flags, .. } = decoded.transport else {
                panic!("not TCP");
            };
            assert!(
                flags.has(TcpFlags::SYN) && !flags.has(TcpFlags::ACK),
                "only SYNs"
            );
            sources.insert(decoded.src);
            targets.insert(decoded.dst);
        }
        // 1 M draws from 2^24 addresses: about 970,000 distinct.
        assert!(sources.len() > 950_000, "{} sources", sources.len());
        assert_eq!(targets.len(), FLOOD_TARGETS.len());
        std::fs::remove_dir_all(dir).expect("cleans up");
    }
}
