//! Live AF_XDP capture on a veth pair between two network namespaces: real UDP datagrams and a
//! TCP SYN sent by namespace B's kernel arrive in an `XdpSource` bound in namespace A, in native
//! and in generic mode; and a frame sent through the socket reaches B's stack.
//!
//! Frames redirected to the socket never reach A's kernel, so A answers nothing (no ARP, no
//! SYN-ACK): the pair gets static neighbour entries and the tests assert on captured frames only.
//! Needs root; skipped otherwise.

use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vigil::capture::xdp::{Queues, XdpConfig, XdpMode, XdpSource, XdpStats};
use vigil::capture::{Next, Source};
use vigil_tests::netns::{self, Netns, VethPair};

const UDP_PORT: u16 = 47_001;
const TCP_PORT: u16 = 47_002;
const DATAGRAMS: usize = 5;
/// Longest a capture thread runs if the frames it waits for never come.
const CAPTURE_DEADLINE: Duration = Duration::from_secs(10);

/// The parts of a captured IPv4 frame the tests look at.
#[derive(Debug, Clone)]
struct Ipv4Frame {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    src_port: u16,
    dst_port: u16,
    tcp_flags: u8,
    payload: Vec<u8>,
    /// The whole Ethernet frame, for building replies.
    raw: Vec<u8>,
    ts_micros: u64,
}

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

/// Ethernet + IPv4 + UDP/TCP, just enough to recognise the test's traffic; `None` for anything
/// else (IPv6 router solicitations from B also arrive).
fn parse_ipv4(frame: &[u8], ts_micros: u64) -> Option<Ipv4Frame> {
    if be16(frame, 12)? != 0x0800 {
        return None;
    }
    let ip = frame.get(14..)?;
    if ip.first()? >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(be16(ip, 2)?);
    let protocol = *ip.get(9)?;
    let src = Ipv4Addr::from(<[u8; 4]>::try_from(ip.get(12..16)?).ok()?);
    let dst = Ipv4Addr::from(<[u8; 4]>::try_from(ip.get(16..20)?).ok()?);
    let l4 = ip.get(ihl..total)?;
    let (src_port, dst_port) = (be16(l4, 0)?, be16(l4, 2)?);
    let (tcp_flags, payload) = match protocol {
        17 => (0, l4.get(8..)?),
        6 => {
            let data_offset = usize::from(l4.get(12)? >> 4) * 4;
            (*l4.get(13)?, l4.get(data_offset..)?)
        }
        _ => return None,
    };
    Some(Ipv4Frame {
        src,
        dst,
        protocol,
        src_port,
        dst_port,
        tcp_flags,
        payload: payload.to_vec(),
        raw: frame.to_vec(),
        ts_micros,
    })
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A UDP datagram answering `request` (addresses and ports swapped), as an Ethernet frame.
/// The UDP checksum is left 0 ("none"), which IPv4 allows.
fn udp_reply(request: &Ipv4Frame, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(42 + payload.len());
    frame.extend_from_slice(&request.raw[6..12]);
    frame.extend_from_slice(&request.raw[0..6]);
    frame.extend_from_slice(&[0x08, 0x00]);
    let total = u16::try_from(20 + 8 + payload.len()).expect("small payload");
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&request.dst.octets());
    ip[16..20].copy_from_slice(&request.src.octets());
    let checksum = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&request.dst_port.to_be_bytes());
    frame.extend_from_slice(&request.src_port.to_be_bytes());
    frame.extend_from_slice(&(total - 20).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(payload);
    frame
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// Two namespaces joined by a veth pair, A's end named for the capture.
struct Lab {
    // Field order is drop order: the pair goes before the namespaces.
    veth: VethPair,
    b: Netns,
    a: Netns,
}

fn lab(subnet: u8) -> Lab {
    let a = Netns::unique().expect("namespace A");
    let b = Netns::unique().expect("namespace B");
    let veth = VethPair::new(
        &a,
        &netns::unique_name(),
        &b,
        &netns::unique_name(),
        &format!("10.231.{subnet}.1/24"),
        &format!("10.231.{subnet}.2/24"),
    )
    .expect("veth pair");
    veth.pin_neighbours().expect("static neighbours");
    Lab { veth, b, a }
}

/// What a capture thread hands back.
struct Captured {
    frames: Vec<Ipv4Frame>,
    stats: XdpStats,
}

/// Opens an `XdpSource` on a thread inside namespace A and reads frames until `done(frames)` holds,
/// `stop` is set or the deadline passes. `on_frame` may transmit through the source. The mode
/// actually attached (or the open error) arrives on the returned channel first.
fn start_capture<D, F>(
    lab: &Lab,
    mode: XdpMode,
    stop: Arc<AtomicBool>,
    done: D,
    mut on_frame: F,
) -> (
    mpsc::Receiver<Result<XdpMode, String>>,
    thread::JoinHandle<Captured>,
)
where
    D: Fn(&[Ipv4Frame]) -> bool + Send + 'static,
    F: FnMut(&mut XdpSource, &Ipv4Frame) + Send + 'static,
{
    let (ready_tx, ready_rx) = mpsc::channel();
    let iface = lab.veth.if_a().to_string();
    let handle = lab.a.thread(move || {
        let mut frames = Vec::new();
        let mut source = match XdpSource::open(XdpConfig {
            iface,
            queues: Queues::List(vec![0]),
            mode,
            ..XdpConfig::default()
        }) {
            Ok(source) => source,
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return Captured {
                    frames,
                    stats: XdpStats::default(),
                };
            }
        };
        let _ = ready_tx.send(Ok(source.attached_mode()));
        let deadline = Instant::now() + CAPTURE_DEADLINE;
        while !stop.load(Ordering::Relaxed) && !done(&frames) && Instant::now() < deadline {
            let parsed = match source.next_packet().expect("next_packet") {
                Next::Packet(packet) => {
                    assert_eq!(packet.wire_len as usize, packet.data.len());
                    parse_ipv4(packet.data, packet.ts.micros())
                }
                Next::Idle => None,
                Next::End => panic!("a live source never ends"),
            };
            if let Some(frame) = parsed {
                on_frame(&mut source, &frame);
                frames.push(frame);
            }
        }
        Captured {
            frames,
            stats: source.stats(),
        }
    });
    (ready_rx, handle)
}

fn wait_ready(ready: &mpsc::Receiver<Result<XdpMode, String>>) -> XdpMode {
    match ready.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(mode)) => mode,
        Ok(Err(e)) => panic!("opening the XDP source: {e}"),
        Err(e) => panic!("the capture thread did not report ({e}); it panicked?"),
    }
}

fn is_test_datagram(f: &Ipv4Frame, ip_a: Ipv4Addr, ip_b: Ipv4Addr, tag: &str) -> bool {
    f.protocol == 17
        && f.src == ip_b
        && f.dst == ip_a
        && f.dst_port == UDP_PORT
        && f.payload.starts_with(tag.as_bytes())
}

fn is_test_syn(f: &Ipv4Frame, ip_a: Ipv4Addr, ip_b: Ipv4Addr) -> bool {
    f.protocol == 6
        && f.src == ip_b
        && f.dst == ip_a
        && f.dst_port == TCP_PORT
        && f.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// B sends five UDP datagrams and tries one TCP connection to A; A's source must capture them all.
fn captures_traffic_from_the_peer(mode: XdpMode, subnet: u8) {
    if netns::skip_without_root() {
        return;
    }
    let lab = lab(subnet);
    let (ip_a, ip_b) = (lab.veth.ip_a(), lab.veth.ip_b());
    let tag = format!("vigil-xdp-{mode:?}-");
    let started = now_micros();

    let expect_tag = tag.clone();
    let (ready, capture) = start_capture(
        &lab,
        mode,
        Arc::new(AtomicBool::new(false)),
        move |frames| {
            frames
                .iter()
                .filter(|f| is_test_datagram(f, ip_a, ip_b, &expect_tag))
                .count()
                >= DATAGRAMS
                && frames.iter().any(|f| is_test_syn(f, ip_a, ip_b))
        },
        |_, _| {},
    );
    let attached = wait_ready(&ready);

    let send_tag = tag.clone();
    let sender = lab.b.thread(move || {
        let socket = UdpSocket::bind((ip_b, 0)).expect("UDP socket in B");
        for i in 0..DATAGRAMS {
            socket
                .send_to(format!("{send_tag}{i}").as_bytes(), (ip_a, UDP_PORT))
                .expect("send from B");
            thread::sleep(Duration::from_millis(100));
        }
        // Nothing in A answers (its frames all go to the socket): the SYN is captured and the
        // attempt times out.
        let attempt = TcpStream::connect_timeout(
            &SocketAddr::from((ip_a, TCP_PORT)),
            Duration::from_millis(300),
        );
        assert!(attempt.is_err(), "nothing in A should accept a connection");
    });
    sender.join().expect("sender thread");
    let captured = capture.join().expect("capture thread");
    let finished = now_micros();

    assert_eq!(attached, mode, "the requested mode is the attached mode");
    let datagrams: Vec<&Ipv4Frame> = captured
        .frames
        .iter()
        .filter(|f| is_test_datagram(f, ip_a, ip_b, &tag))
        .collect();
    let payloads: Vec<String> = datagrams
        .iter()
        .map(|f| String::from_utf8_lossy(&f.payload).into_owned())
        .collect();
    let expected: Vec<String> = (0..DATAGRAMS).map(|i| format!("{tag}{i}")).collect();
    assert_eq!(payloads, expected, "every datagram from B, in order, once");
    for f in &datagrams {
        assert_eq!(f.raw[0..6], lab.veth.mac_a(), "to A's MAC");
        assert_eq!(f.raw[6..12], lab.veth.mac_b(), "from B's MAC");
        assert!(
            (started..=finished).contains(&f.ts_micros),
            "stamped with the receive time: {} not in {started}..={finished}",
            f.ts_micros
        );
    }
    assert!(
        captured.frames.iter().any(|f| is_test_syn(f, ip_a, ip_b)),
        "the SYN of B's connection attempt: {:?}",
        captured.frames
    );
    let stats = captured.stats;
    assert!(stats.received >= (DATAGRAMS + 1) as u64, "{stats:?}");
    assert_eq!(stats.bad_descs, 0, "{stats:?}");
    assert_eq!(stats.rx_dropped, 0, "{stats:?}");
    eprintln!("{mode:?}: {stats:?}");
}

#[test]
fn native_mode_captures_udp_and_tcp_sent_by_the_peer_namespace() {
    captures_traffic_from_the_peer(XdpMode::Native, 1);
}

#[test]
fn generic_mode_captures_udp_and_tcp_sent_by_the_peer_namespace() {
    captures_traffic_from_the_peer(XdpMode::Generic, 2);
}

/// A answers B's datagram by writing a frame into the socket's TX ring; B's UDP socket gets it.
#[test]
fn frame_sent_through_the_socket_reaches_the_peer_stack() {
    if netns::skip_without_root() {
        return;
    }
    let lab = lab(3);
    let (ip_a, ip_b) = (lab.veth.ip_a(), lab.veth.ip_b());
    let stop = Arc::new(AtomicBool::new(false));
    let (ready, capture) = start_capture(
        &lab,
        XdpMode::Auto,
        Arc::clone(&stop),
        |_| false,
        move |source, frame| {
            if is_test_datagram(frame, ip_a, ip_b, "vigil-xdp-request") {
                let reply = udp_reply(frame, b"vigil-xdp-reply");
                assert!(source.send(&reply).expect("send"), "a TX frame was free");
            }
        },
    );
    let attached = wait_ready(&ready);

    let peer = lab.b.thread(move || {
        let socket = UdpSocket::bind((ip_b, 0)).expect("UDP socket in B");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        // Ask a few times: the first request may beat the program's attachment.
        for _ in 0..25 {
            socket
                .send_to(b"vigil-xdp-request", (ip_a, UDP_PORT))
                .expect("send from B");
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                return Some((buf[..n].to_vec(), from));
            }
        }
        None
    });
    let reply = peer.join().expect("peer thread");
    stop.store(true, Ordering::Relaxed);
    let captured = capture.join().expect("capture thread");

    assert_ne!(attached, XdpMode::Auto, "auto resolves to a concrete mode");
    let (payload, from) = reply.expect("B received the frame A transmitted");
    assert_eq!(payload, b"vigil-xdp-reply");
    assert_eq!(from, SocketAddr::from((ip_a, UDP_PORT)));
    assert!(captured.stats.sent >= 1, "{:?}", captured.stats);
    eprintln!("{attached:?}: {:?}", captured.stats);
}

/// A queue stays busy for a moment after its socket closes; opening it again straight away waits
/// that out instead of failing with EBUSY.
#[test]
fn queue_can_be_reopened_right_after_the_source_is_dropped() {
    if netns::skip_without_root() {
        return;
    }
    let lab = lab(4);
    let iface = lab.veth.if_a().to_string();
    let opened = lab.a.thread(move || {
        let mut modes = Vec::new();
        for mode in [XdpMode::Native, XdpMode::Generic, XdpMode::Native] {
            let source = XdpSource::open(XdpConfig {
                iface: iface.clone(),
                mode,
                ..XdpConfig::default()
            })
            .map_err(|e| e.to_string())?;
            modes.push(source.attached_mode());
        }
        Ok::<_, String>(modes)
    });
    let modes = opened.join().expect("thread").expect("every open succeeds");
    assert_eq!(modes, [XdpMode::Native, XdpMode::Generic, XdpMode::Native]);
}

/// Loopback has no native XDP: native mode is refused with the kernel's reason, auto falls back
/// to generic mode.
#[test]
fn auto_mode_falls_back_to_generic_where_the_driver_has_no_xdp() {
    if netns::skip_without_root() {
        return;
    }
    let ns = Netns::unique().expect("namespace");
    let outcome = ns.thread(|| {
        let open = |mode| {
            XdpSource::open(XdpConfig {
                iface: "lo".to_string(),
                mode,
                ..XdpConfig::default()
            })
        };
        let native = open(XdpMode::Native).map(|s| s.attached_mode());
        let auto = open(XdpMode::Auto).map(|s| s.attached_mode());
        (
            native.map_err(|e| e.to_string()),
            auto.map_err(|e| e.to_string()),
        )
    });
    let (native, auto) = outcome.join().expect("thread");
    let refusal = native.expect_err("lo has no native XDP");
    assert!(
        refusal.contains("lo:0")
            && refusal.contains("native mode")
            && refusal.contains("BPF_LINK_CREATE"),
        "{refusal}"
    );
    assert_eq!(auto, Ok(XdpMode::Generic));
}

#[test]
fn unknown_interface_is_reported_by_name() {
    if netns::skip_without_root() {
        return;
    }
    let ns = Netns::unique().expect("namespace");
    let err = ns
        .thread(|| {
            XdpSource::open(XdpConfig {
                iface: "vgl-missing0".to_string(),
                ..XdpConfig::default()
            })
            .err()
            .map(|e| e.to_string())
        })
        .join()
        .expect("thread")
        .expect("opening a missing interface fails");
    assert!(
        err.starts_with("vgl-missing0:0: AF_XDP: looking up the interface"),
        "{err}"
    );
}

#[test]
fn a_queue_the_interface_does_not_have_is_refused_by_name() {
    if netns::skip_without_root() {
        return;
    }
    let lab = lab(5);
    let iface = lab.veth.if_a().to_string();
    let err = lab
        .a
        .thread(move || {
            XdpSource::open(XdpConfig {
                iface,
                queues: Queues::List(vec![0, 5]),
                mode: XdpMode::Generic,
                ..XdpConfig::default()
            })
            .err()
            .map(|e| e.to_string())
        })
        .join()
        .expect("thread")
        .expect("queue 5 of a one-queue veth does not exist");
    assert_eq!(
        err,
        format!(
            "{0}:5: AF_XDP: no such queue: {0} has 1 RX queues",
            lab.veth.if_a()
        )
    );
}
