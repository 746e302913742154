use super::*;
use crate::decode::decode;
use crate::decode::tests::frames::*;

const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];
const SYN: u8 = TcpFlags::SYN;
const SYN_ACK: u8 = TcpFlags::SYN | TcpFlags::ACK;
const ACK: u8 = TcpFlags::ACK;
const RST_ACK: u8 = TcpFlags::RST | TcpFlags::ACK;
const FIN_ACK: u8 = TcpFlags::FIN | TcpFlags::ACK;

struct Run {
    table: FlowTable,
    events: Vec<Event<'static>>,
}

impl Run {
    fn new(config: FlowConfig) -> Run {
        Run {
            table: FlowTable::new(config),
            events: Vec::new(),
        }
    }

    fn packet(&mut self, secs: f64, frame: &[u8]) {
        let decoded = decode(frame).expect("test frames are valid");
        let events = &mut self.events;
        self.table
            .observe(Timestamp((secs * 1e6) as u64), &decoded, &mut |e| {
                events.push(e)
            });
    }

    fn expire(&mut self, secs: f64) {
        let events = &mut self.events;
        self.table
            .expire(Timestamp((secs * 1e6) as u64), &mut |e| events.push(e));
    }

    fn ends(&self) -> Vec<FlowState> {
        self.events
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::FlowEnd { state, .. } => Some(state),
                _ => None,
            })
            .collect()
    }

    fn starts(&self) -> usize {
        self.events
            .iter()
            .filter(|e| e.kind == EventKind::FlowStart)
            .count()
    }
}

#[test]
fn handshake_then_fins_is_one_established_flow_with_counts() {
    let mut run = Run::new(FlowConfig::default());
    run.packet(0.0, &tcp4(A, 40000, B, 445, SYN));
    run.packet(0.1, &tcp4(B, 445, A, 40000, SYN_ACK));
    run.packet(0.2, &tcp4(A, 40000, B, 445, ACK));
    run.packet(0.3, &tcp4(A, 40000, B, 445, FIN_ACK));
    run.packet(0.4, &tcp4(B, 445, A, 40000, FIN_ACK));
    run.packet(0.5, &tcp4(A, 40000, B, 445, ACK));
    assert_eq!(run.starts(), 1, "the last ACK must not start a new flow");
    assert_eq!(run.ends(), vec![FlowState::Established]);
    let start = &run.events[0];
    assert_eq!(start.src.ip, IpAddr::from(A));
    assert_eq!((start.src.port, start.dst.port), (40000, 445));
    match run.events[1].kind {
        EventKind::FlowEnd {
            orig_packets,
            resp_packets,
            duration_us,
            ..
        } => assert_eq!((orig_packets, resp_packets, duration_us), (3, 2, 400_000)),
        ref other => panic!("expected FlowEnd, got {other:?}"),
    }
}

#[test]
fn syn_answered_by_rst_is_rejected_at_once() {
    let mut run = Run::new(FlowConfig::default());
    run.packet(0.0, &tcp4(A, 40000, B, 3389, SYN));
    run.packet(0.001, &tcp4(B, 3389, A, 40000, RST_ACK));
    assert_eq!(run.ends(), vec![FlowState::Rejected]);
}

#[test]
fn syn_scan_of_an_open_port_is_reset() {
    let mut run = Run::new(FlowConfig::default());
    run.packet(0.0, &tcp4(A, 40000, B, 445, SYN));
    run.packet(0.001, &tcp4(B, 445, A, 40000, SYN_ACK));
    run.packet(0.002, &tcp4(A, 40000, B, 445, TcpFlags::RST));
    assert_eq!(run.ends(), vec![FlowState::Reset]);
}

#[test]
fn unanswered_syn_becomes_half_open_after_the_timeout_in_packet_time() {
    let mut run = Run::new(FlowConfig::default());
    run.packet(10.0, &tcp4(A, 40000, B, 9401, SYN));
    run.packet(11.0, &tcp4(A, 40000, B, 9401, SYN));
    run.expire(15.5);
    assert!(
        run.ends().is_empty(),
        "5 s after the last SYN, not the first"
    );
    run.expire(16.0);
    assert_eq!(run.ends(), vec![FlowState::HalfOpen]);
    assert_eq!(run.table.stats().active, 0);
}

#[test]
fn icmp_port_unreachable_rejects_the_udp_flow_it_quotes() {
    let mut run = Run::new(FlowConfig::default());
    let probe = udp4(A, 50000, B, 161, b"probe");
    run.packet(0.0, &probe);
    let refused = &probe[14..];
    run.packet(0.001, &icmp4(B, A, 3, 0, refused));
    assert_eq!(run.ends(), vec![FlowState::Rejected]);
}

#[test]
fn echo_request_and_reply_are_one_icmp_flow_reported_as_type_and_code() {
    let mut run = Run::new(FlowConfig::default());
    run.packet(0.0, &icmp4(A, B, 8, 42, &[0; 8]));
    run.packet(0.01, &icmp4(B, A, 0, 42, &[0; 8]));
    run.expire(100.0);
    assert_eq!(run.starts(), 1);
    assert_eq!(run.ends(), vec![FlowState::Established]);
    assert_eq!((run.events[0].src.port, run.events[0].dst.port), (8, 0));
    assert_eq!(run.events[0].proto, Transport::Icmp);
}

#[test]
fn a_reply_seen_first_starts_the_flow_only_when_the_client_speaks_and_names_it() {
    let mut run = Run::new(FlowConfig::default());
    run.packet(0.0, &udp4(B, 53, A, 51000, b"answer"));
    run.packet(0.1, &tcp4(B, 445, A, 40001, ACK));
    assert_eq!(
        run.starts(),
        0,
        "answers alone blame nobody: {:?}",
        run.events
    );
    run.packet(0.2, &udp4(A, 51000, B, 53, b"query"));
    run.packet(0.3, &tcp4(A, 40001, B, 445, ACK));
    assert_eq!(run.starts(), 2);
    for start in run.events.iter().filter(|e| e.kind == EventKind::FlowStart) {
        assert_eq!(start.src.ip, IpAddr::from(A), "{start:?}");
        assert_eq!(
            start.ts,
            Timestamp(if start.proto == Transport::Udp {
                200_000
            } else {
                300_000
            })
        );
    }
}

#[test]
fn forged_answers_to_a_workstation_raise_no_event_and_are_counted_as_unsolicited() {
    let mut run = Run::new(FlowConfig::default());
    // Made-up neighbours "answer" the workstation A, which never asked; A's kernel RSTs the
    // unexpected SYN-ACKs, which proves nothing either.
    for (i, port) in [445u16, 3389, 139, 22, 80].into_iter().enumerate() {
        let neighbour = [10, 0, 9, i as u8 + 1];
        run.packet(
            0.01 * i as f64,
            &tcp4(neighbour, port, A, 40000 + port, SYN_ACK),
        );
        run.packet(
            0.01 * i as f64 + 0.001,
            &tcp4(A, 40000 + port, neighbour, port, TcpFlags::RST),
        );
        run.packet(
            0.01 * i as f64 + 0.002,
            &tcp4(neighbour, port, A, 50000 + port, RST_ACK),
        );
    }
    for (i, port) in [53u16, 161, 137].into_iter().enumerate() {
        run.packet(
            0.1 + 0.01 * i as f64,
            &udp4([10, 0, 8, i as u8 + 1], port, A, 33000, b"x"),
        );
    }
    run.packet(0.2, &icmp4(B, A, 0, 7, &[0, 1]));
    run.expire(100.0);
    assert!(run.events.is_empty(), "{:?}", run.events);
    let stats = run.table.stats();
    assert_eq!((stats.started, stats.ended), (0, 0));
    assert_eq!(stats.unsolicited, 14);
    assert_eq!(stats.active, 0);
}

#[test]
fn a_flow_that_ended_unattributed_stays_unattributed_while_it_lingers() {
    let mut run = Run::new(FlowConfig::default());
    // A SYN-ACK nobody asked for, refused: ended, unsolicited, lingering.
    run.packet(0.0, &tcp4(B, 445, A, 40001, SYN_ACK));
    run.packet(0.1, &tcp4(A, 40001, B, 445, TcpFlags::RST));
    // The addressee's stragglers within the linger start nothing that could never end.
    run.packet(0.2, &tcp4(A, 40001, B, 445, ACK));
    run.expire(100.0);
    assert!(run.events.is_empty(), "{:?}", run.events);
    let stats = run.table.stats();
    assert_eq!((stats.started, stats.ended, stats.active), (0, 0, 0));
    assert_eq!(stats.unsolicited, 1);
}

#[test]
fn a_syn_blames_its_sender_at_once() {
    let mut run = Run::new(FlowConfig::default());
    run.packet(0.0, &tcp4(A, 40000, B, 445, SYN));
    assert_eq!(run.starts(), 1);
    assert_eq!(run.events[0].src.ip, IpAddr::from(A));
}

#[test]
fn a_flood_of_unique_flows_stays_within_capacity_and_counts_evictions() {
    let config = FlowConfig {
        capacity: 1024,
        ..FlowConfig::default()
    };
    let mut run = Run::new(config);
    let capacity = run.table.capacity();
    let flows = 20_000u32;
    for i in 0..flows {
        let [_, _, hi, lo] = i.to_be_bytes();
        let src = [10, 1, hi, lo];
        run.packet(f64::from(i) * 1e-4, &tcp4(src, 40000, B, 80, SYN));
        run.events.clear();
    }
    let stats = run.table.stats();
    assert_eq!(run.table.capacity(), capacity, "the table never grows");
    assert_eq!(stats.started, u64::from(flows));
    assert!(stats.active <= capacity as u64);
    assert_eq!(stats.evicted, stats.started - stats.active);
    assert!(stats.evicted >= u64::from(flows) - capacity as u64);
}
