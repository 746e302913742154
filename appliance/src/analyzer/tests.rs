//! The analyzer on hostile and awkward streams, frame by frame through decode and the flow
//! table as in the pipeline: what must come out, what must be counted, what must stay bounded.

use vigil_plugin_sdk::{AuthResult, EventKind, Timestamp};

use super::*;
use crate::decode::decode;
use crate::decode::tests::frames::{ethernet, ipv4, tcp, udp4};
use crate::flow::{FlowConfig, FlowTable};
use crate::proto::smb2::test_streams;

const CLIENT: [u8; 4] = [10, 0, 0, 1];
const SERVER: [u8; 4] = [10, 0, 0, 2];
const PSH_ACK: u8 = 0x18;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

struct Harness {
    flows: FlowTable,
    analyzer: Analyzer,
    /// Debug renderings of the application events, in order.
    events: Vec<String>,
    now: u64,
}

impl Harness {
    fn new(streams: StreamConfig) -> Harness {
        Harness {
            flows: FlowTable::new(FlowConfig::default()),
            analyzer: Analyzer::new(streams, false),
            events: Vec::new(),
            now: 1_000_000,
        }
    }

    fn frame(&mut self, frame: &[u8]) {
        self.now += 1000;
        let ts = Timestamp(self.now);
        let decoded = decode(frame).expect("test frames decode");
        let observed = self.flows.observe(ts, &decoded, &mut |_| {});
        let events = &mut self.events;
        if let Some(observed) = observed {
            self.analyzer.packet(ts, &decoded, &observed, &mut |e| {
                events.push(format!("{:?}", e.kind))
            });
        }
    }

    /// A TCP segment from the client (`to_server`) or the server, on `port`.
    fn segment(&mut self, port: u16, to_server: bool, flags: u8, seq: u32, payload: &[u8]) {
        let (src, dst, sport, dport) = if to_server {
            (CLIENT, SERVER, 40000, port)
        } else {
            (SERVER, CLIENT, port, 40000)
        };
        self.frame(&ethernet(
            0x0800,
            &ipv4(src, dst, 6, &tcp(sport, dport, flags, seq, payload)),
        ));
    }

    /// Ends every flow, as the end of a capture does: what never got an answer is reported.
    fn end_all(&mut self) {
        let mut ended = Vec::new();
        self.flows.flush(&mut |event| ended.push(event));
        let events = &mut self.events;
        for event in ended {
            self.analyzer.flow_ended(event.ts, &event, &mut |e| {
                events.push(format!("{:?}", e.kind))
            });
        }
    }

    /// The id of the only flow a test opened.
    fn only_flow(&self) -> u64 {
        *self.analyzer.flows.keys().next().expect("one flow")
    }

    fn error(&self, protocol: &str, reason: &str) -> u64 {
        self.analyzer
            .analysis()
            .errors()
            .get(&(protocol, reason))
            .copied()
            .unwrap_or(0)
    }
}

#[test]
fn out_of_order_and_overlapping_segments_still_give_the_request() {
    let mut h = Harness::new(StreamConfig::default());
    let request = b"GET /nice%20ports%2C/Trinity.txt.bak HTTP/1.0\r\nHost: web01\r\n\r\n";
    h.segment(80, true, SYN, 99, &[]);
    // Third piece first, then the first, then the second overlapping both neighbours.
    h.segment(80, true, PSH_ACK, 100 + 40, &request[40..]);
    h.segment(80, true, PSH_ACK, 100, &request[..20]);
    h.segment(80, true, PSH_ACK, 100 + 10, &request[10..45]);
    h.segment(
        80,
        false,
        PSH_ACK,
        500,
        b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(h.events.len(), 1, "{:?}", h.events);
    assert!(
        h.events[0].contains("uri: \"/nice ports,/Trinity.txt.bak\""),
        "{:?}",
        h.events
    );
    assert!(h.events[0].contains("status: Some(404)"), "{:?}", h.events);
    assert!(h.analyzer.analysis().stream_stats().overlap_bytes > 0);
}

#[test]
fn a_megabyte_of_header_is_refused_once_and_never_buffered_past_the_bounds() {
    let streams = StreamConfig::default();
    let bound = streams.max_direction_bytes;
    let mut h = Harness::new(streams);
    h.segment(80, true, SYN, 0, &[]);
    let mut seq = 1u32;
    h.segment(80, true, PSH_ACK, seq, b"GET / HTTP/1.1\r\nX-Pad: ");
    seq += 23;
    let chunk = vec![b'a'; 1400];
    for _ in 0..(1 << 20) / chunk.len() {
        h.segment(80, true, PSH_ACK, seq, &chunk);
        seq = seq.wrapping_add(chunk.len() as u32);
        let buffered = h.analyzer.streams.data(h.only_flow(), true).len();
        assert!(buffered <= bound, "{buffered} bytes buffered");
    }
    assert_eq!(h.error("http", "head_too_large"), 1);
    assert!(h.events.is_empty());
}

/// An SMB2 header (MS-SMB2 §2.2.1.2) for `command`, from the server when `response`.
fn smb2(command: u16, status: u32, response: bool, message_id: u64, body: &[u8]) -> Vec<u8> {
    let mut m = b"\xfeSMB".to_vec();
    m.extend_from_slice(&64u16.to_le_bytes());
    m.extend_from_slice(&[0; 2]);
    m.extend_from_slice(&status.to_le_bytes());
    m.extend_from_slice(&command.to_le_bytes());
    m.extend_from_slice(&[1, 0]);
    m.extend_from_slice(&u32::from(response).to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes());
    m.extend_from_slice(&message_id.to_le_bytes());
    m.extend_from_slice(&[0; 24]);
    m.extend_from_slice(body);
    let mut frame = vec![0];
    frame.extend_from_slice(&(m.len() as u32).to_be_bytes()[1..]);
    frame.extend(m);
    frame
}

#[test]
fn an_smb_frame_too_large_to_keep_is_skipped_and_parsing_resumes_after_it() {
    let mut h = Harness::new(StreamConfig::default());
    h.segment(445, true, SYN, 0, &[]);
    h.segment(445, false, SYN | 0x10, 0, &[]);
    // A 1 MB READ response in 1400-byte segments, then a failed session setup.
    let big = 1 << 20;
    let mut seq = 1u32;
    let mut stream = vec![0, (big >> 16) as u8, (big >> 8) as u8, big as u8];
    stream.extend(b"\xfeSMB");
    stream.resize(4 + big, 0);
    stream.extend(smb2(1, 0xC000_006D, true, 7, &[9, 0, 0, 0, 0, 0, 0, 0, 0]));
    for piece in stream.chunks(1400) {
        h.segment(445, false, PSH_ACK, seq, piece);
        seq = seq.wrapping_add(piece.len() as u32);
    }
    assert_eq!(
        h.analyzer
            .analysis()
            .counts()
            .get(&("smb", "logon_failure")),
        Some(&1),
        "{:?} {:?}",
        h.analyzer.analysis().counts(),
        h.analyzer.analysis().errors()
    );
    assert!(
        h.analyzer.analysis().errors().is_empty(),
        "{:?}",
        h.analyzer.analysis().errors()
    );
}

#[test]
fn an_ldap_bind_split_across_segments_is_paired_with_its_result() {
    let mut h = Harness::new(StreamConfig::default());
    // bindRequest v3, name "cn=alice", simple password "pw"; bindResponse invalidCredentials.
    let request = b"\x30\x16\x02\x01\x01\x60\x11\x02\x01\x03\x04\x08cn=alice\x80\x02pw";
    let response = b"\x30\x0c\x02\x01\x01\x61\x07\x0a\x01\x31\x04\x00\x04\x00";
    h.segment(389, true, SYN, 0, &[]);
    h.segment(389, true, PSH_ACK, 1, &request[..9]);
    h.segment(389, true, PSH_ACK, 10, &request[9..]);
    h.segment(389, false, PSH_ACK, 1, response);
    let expected = format!(
        "{:?}",
        EventKind::LdapBind {
            name: "cn=alice",
            mechanism: "simple",
            result: AuthResult::Failure(49),
        }
    );
    assert_eq!(h.events, vec![expected]);
}

#[test]
fn a_dns_compression_loop_is_counted_by_reason() {
    let mut h = Harness::new(StreamConfig::default());
    // A response whose question name points at itself.
    let mut message = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
    message.extend_from_slice(&[0xc0, 12, 0, 12, 0, 1]);
    h.frame(&udp4(SERVER, 53, CLIENT, 40000, &message));
    h.frame(&udp4(CLIENT, 40001, SERVER, 53, &message));
    let loops: u64 = h
        .analyzer
        .analysis()
        .errors()
        .iter()
        .filter(|((protocol, _), _)| *protocol == "dns")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(loops, 2, "{:?}", h.analyzer.analysis().errors());
    assert!(h.events.is_empty());
}

#[test]
fn frames_are_cut_whole_skipped_when_too_large_and_lost_on_bad_framing() {
    let len2 = |b: &[u8]| Ok(b.first().map(|&n| usize::from(n)));
    let mut seen = Vec::new();
    let progress = framed(&[2, 9, 3, 7, 7, 5], 4, len2, |f| seen.push(f.to_vec()));
    assert_eq!(seen, vec![vec![2, 9], vec![3, 7, 7]]);
    assert!(matches!(progress, Progress::Used { used: 6, skip: 4 }));
    let progress = framed(&[0, 1], 4, len2, |_| {});
    assert!(matches!(
        progress,
        Progress::Lost {
            used: 0,
            reason: "empty_frame"
        }
    ));
    // Frames cut before the framing broke are reported used, so they are not parsed twice.
    let progress = framed(&[2, 9, 0, 1], 4, len2, |_| {});
    assert!(matches!(
        progress,
        Progress::Lost {
            used: 2,
            reason: "empty_frame"
        }
    ));
    let progress = framed(&[1, 2], 4, |_| Err("bad"), |_| {});
    assert!(matches!(
        progress,
        Progress::Lost {
            used: 0,
            reason: "bad"
        }
    ));
}

#[test]
fn a_protocol_given_flows_it_cannot_read_is_silent_until_it_makes_a_record() {
    let mut h = Harness::new(StreamConfig::default());
    // An SSH banner on an HTTP port: a flow for HTTP, no HTTP record.
    h.segment(8080, true, SYN, 99, &[]);
    h.segment(8080, true, PSH_ACK, 100, b"SSH-2.0-OpenSSH_9.2p1\r\n");
    let silent: Vec<_> = h.analyzer.analysis().silent_protocols().collect();
    assert_eq!(
        silent,
        [(
            Protocol::Http,
            Traffic {
                flows: 1,
                records: 0
            }
        )]
    );
    // A real exchange on another connection is a record: HTTP is no longer silent.
    let request = b"GET / HTTP/1.1\r\nHost: web01\r\n\r\n";
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    h.frame(&ethernet(
        0x0800,
        &ipv4(CLIENT, SERVER, 6, &tcp(40001, 80, SYN, 499, &[])),
    ));
    h.frame(&ethernet(
        0x0800,
        &ipv4(CLIENT, SERVER, 6, &tcp(40001, 80, PSH_ACK, 500, request)),
    ));
    h.frame(&ethernet(
        0x0800,
        &ipv4(SERVER, CLIENT, 6, &tcp(80, 40001, PSH_ACK, 900, response)),
    ));
    assert_eq!(h.analyzer.analysis().silent_protocols().count(), 0);
    let http: Vec<_> = h.analyzer.analysis().traffic().collect();
    assert_eq!(http.len(), 1);
    assert_eq!(http[0].0, Protocol::Http);
    assert_eq!(http[0].1.flows, 2);
    assert_eq!(http[0].1.records, 1, "{:?}", h.events);
    assert_eq!(h.events.len(), 1);
}

/// A DNS query for `name` (type A) with transaction id 0x1234.
fn dns_query(name: &str) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

#[test]
fn dns_on_an_odd_udp_port_is_recognised_by_content_and_other_datagrams_are_not() {
    let mut h = Harness::new(StreamConfig::default());
    let query = dns_query("fileserver.lab");
    let mut answer = query.clone();
    answer[2] = 0x81;
    answer[3] = 0x80;
    answer[7] = 1;
    answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 20]);
    h.frame(&udp4(CLIENT, 40000, SERVER, 5300, &query));
    h.frame(&udp4(SERVER, 5300, CLIENT, 40000, &answer));
    // SSDP on an unclaimed port: not DNS, no record and no error.
    h.frame(&udp4(
        CLIENT,
        40001,
        SERVER,
        1900,
        b"M-SEARCH * HTTP/1.1\r\n\r\n",
    ));
    assert_eq!(h.events.len(), 1, "{:?}", h.events);
    assert!(h.events[0].contains("10.0.0.20"), "{:?}", h.events);
    let traffic: Vec<_> = h.analyzer.analysis().traffic().collect();
    assert_eq!(
        traffic,
        [(
            Protocol::Dns,
            Traffic {
                flows: 1,
                records: 1
            }
        )]
    );
    assert!(
        h.analyzer.analysis().errors().is_empty(),
        "{:?}",
        h.analyzer.analysis().errors()
    );
}

#[test]
fn a_local_name_question_is_a_record_but_no_event() {
    let mut h = Harness::new(StreamConfig::default());
    let mut question = dns_query("ws07.local");
    question[..2].copy_from_slice(&[0, 0]);
    h.frame(&udp4(CLIENT, 5353, [224, 0, 0, 251], 5353, &question));
    assert!(h.events.is_empty(), "{:?}", h.events);
    assert_eq!(h.analyzer.analysis().silent_protocols().count(), 0);
    let traffic: Vec<_> = h.analyzer.analysis().traffic().collect();
    assert_eq!(
        traffic,
        [(
            Protocol::Mdns,
            Traffic {
                flows: 1,
                records: 1
            }
        )]
    );
}

/// A bare acknowledgement of `ack` (the test frames' own carry none).
fn tcp_ack(sport: u16, dport: u16, seq: u32, ack: u32) -> Vec<u8> {
    const ACK_NUMBER: std::ops::Range<usize> = 8..12;
    let mut segment = tcp(sport, dport, ACK, seq, &[]);
    segment[ACK_NUMBER].copy_from_slice(&ack.to_be_bytes());
    segment
}

/// A real connection replayed on `port`, each direction from `from[side]` bytes on, the client's
/// stream first, in segments of at most `MSS`; with its handshake only when it starts at 0.
fn replay_connection(port: u16, to_server: &[u8], to_client: &[u8], from: [usize; 2]) -> Harness {
    const MSS: usize = 1400;
    const CLIENT_ISN: u32 = 1000;
    const SERVER_ISN: u32 = 5000;
    let mut h = Harness::new(StreamConfig::default());
    if from == [0, 0] {
        h.segment(port, true, SYN, CLIENT_ISN - 1, &[]);
        h.segment(port, false, SYN | ACK, SERVER_ISN - 1, &[]);
    }
    for (to_srv, stream, isn, start) in [
        (true, to_server, CLIENT_ISN, from[0]),
        (false, to_client, SERVER_ISN, from[1]),
    ] {
        let mut seq = isn.wrapping_add(start as u32);
        for piece in stream.get(start..).unwrap_or(&[]).chunks(MSS) {
            h.segment(port, to_srv, PSH_ACK, seq, piece);
            seq = seq.wrapping_add(piece.len() as u32);
        }
    }
    h.end_all();
    h
}

/// Picks a real connection up in the middle of the first message of each direction (no SYN
/// seen): every event but `lost` (the first message's, when it makes one) still comes out,
/// and each direction resynchronises once, on its second message. Returns those events.
fn assert_picked_up_mid_message_loses_only_the_first(
    (protocol, port): (Protocol, u16),
    to_server: &[u8],
    to_client: &[u8],
    starts: [&[usize]; 2],
    lost: Option<&str>,
) -> Vec<String> {
    let whole = replay_connection(port, to_server, to_client, [0, 0]);
    let mut expected = whole.events.clone();
    if let Some(lost) = lost {
        let at = expected
            .iter()
            .position(|e| e.starts_with(lost))
            .unwrap_or_else(|| panic!("no {lost} in {expected:?}"));
        expected.remove(at);
    }
    let middle = |s: &[usize]| (s[0] + s[1]) / 2;
    let cut = [middle(starts[0]), middle(starts[1])];
    let picked = replay_connection(port, to_server, to_client, cut);
    assert_eq!(picked.events, expected);
    let resyncs: Vec<_> = picked.analyzer.analysis().resyncs().collect();
    let skipped = (starts[0][1] - cut[0] + starts[1][1] - cut[1]) as u64;
    assert_eq!(
        resyncs,
        [(
            protocol,
            Resyncs {
                found: 2,
                skipped_bytes: skipped
            }
        )]
    );
    assert!(
        picked.analyzer.analysis().errors().is_empty(),
        "{:?}",
        picked.analyzer.analysis().errors()
    );
    picked.events
}

#[test]
fn an_ldap_connection_picked_up_inside_its_bind_still_gives_every_search() {
    let Some(dir) = test_streams::pcap_dir() else {
        return;
    };
    let conv = &test_streams::tcp_conversations(&dir.join("ldap/simpleauth.pcap"), 3268)[0];
    let starts = [
        test_streams::message_starts(&conv.to_server, proto::ldap::frame_len),
        test_streams::message_starts(&conv.to_client, proto::ldap::frame_len),
    ];
    let events = assert_picked_up_mid_message_loses_only_the_first(
        (Protocol::Ldap, 3268),
        &conv.to_server,
        &conv.to_client,
        [&starts[0], &starts[1]],
        Some("LdapBind"),
    );
    assert!(
        events.iter().any(|e| e.starts_with("LdapSearch")),
        "{events:?}"
    );
}

#[test]
fn an_smb_connection_picked_up_inside_its_negotiate_still_gives_the_login_and_trees() {
    let Some(dir) = test_streams::pcap_dir() else {
        return;
    };
    let conv = &test_streams::tcp_conversations(&dir.join("smb/smb2.pcap"), 445)[0];
    let starts = [
        test_streams::message_starts(&conv.to_server, proto::smb2::frame_len),
        test_streams::message_starts(&conv.to_client, proto::smb2::frame_len),
    ];
    let events = assert_picked_up_mid_message_loses_only_the_first(
        (Protocol::Smb, 445),
        &conv.to_server,
        &conv.to_client,
        [&starts[0], &starts[1]],
        Some("SmbNegotiate"),
    );
    assert!(
        events.iter().any(|e| e.contains("user: \"Administrator\"")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.starts_with("SmbTree")),
        "{events:?}"
    );
}

#[test]
fn a_dcerpc_connection_picked_up_inside_its_bind_still_gives_the_ntlm_login() {
    let Some(dir) = test_streams::pcap_dir() else {
        return;
    };
    // The DCOM connection of the capture, replayed on the endpoint mapper's port so that it is
    // DCE/RPC by port (a dynamic port is only recognised by a bind at the front).
    let conv = &test_streams::tcp_conversations(&dir.join("dce-rpc/dce_rpc_ntlm.pcapng"), 58772)[0];
    let starts = [
        test_streams::message_starts(&conv.to_server, proto::dcerpc::frame_len),
        test_streams::message_starts(&conv.to_client, proto::dcerpc::frame_len),
    ];
    let events = assert_picked_up_mid_message_loses_only_the_first(
        (Protocol::DceRpc, 135),
        &conv.to_server,
        &conv.to_client,
        [&starts[0], &starts[1]],
        None,
    );
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("NtlmAuth") && e.contains("user: \"Administrator\"")),
        "{events:?}"
    );
}

#[test]
fn an_http_client_stream_picked_up_inside_a_request_gives_the_next_one() {
    let Some(dir) = test_streams::pcap_dir() else {
        return;
    };
    // Two real requests of the capture, one after the other on one connection.
    let convs = test_streams::tcp_conversations(&dir.join("http/methods.pcap"), 80);
    let mut requests = convs
        .iter()
        .map(|c| c.to_server.as_slice())
        .filter(|r| r.starts_with(b"GET ") || r.starts_with(b"HEAD "));
    let (first, second) = (
        requests.next().expect("a GET"),
        requests.next().expect("another"),
    );
    let stream = [first, second].concat();
    let starts = [0, first.len(), stream.len()];
    let whole = replay_connection(80, &stream, &[], [0, 0]);
    assert_eq!(whole.events.len(), 2, "{:?}", whole.events);
    let picked = replay_connection(80, &stream, &[], [first.len() / 2, 0]);
    assert_eq!(picked.events, whole.events[1..]);
    let resyncs: Vec<_> = picked.analyzer.analysis().resyncs().collect();
    assert_eq!(
        resyncs,
        [(
            Protocol::Http,
            Resyncs {
                found: 1,
                skipped_bytes: (starts[1] - first.len() / 2) as u64
            }
        )]
    );
}

#[test]
fn a_gap_inside_ldap_search_results_loses_only_the_entries_it_cut_into() {
    let Some(dir) = test_streams::pcap_dir() else {
        return;
    };
    let conv = &test_streams::tcp_conversations(&dir.join("ldap/sasl-ntlm.pcap"), 389)[0];
    // Two bind responses, then nine search entries and the search's result.
    let starts = test_streams::message_starts(&conv.to_client, proto::ldap::frame_len);
    assert_eq!(starts.len(), 12);
    let whole = replay_connection(389, &conv.to_server, &conv.to_client, [0, 0]);
    let mut h = Harness::new(StreamConfig::default());
    h.segment(389, true, SYN, 999, &[]);
    h.segment(389, false, SYN | ACK, 4999, &[]);
    h.segment(389, true, PSH_ACK, 1000, &conv.to_server);
    // The server's bytes from inside the second entry to inside the third never reach the
    // capture; the client acknowledges past them, so the hole is given up at once.
    let (hole_from, hole_to) = ((starts[3] + starts[4]) / 2, (starts[4] + starts[5]) / 2);
    h.segment(389, false, PSH_ACK, 5000, &conv.to_client[..hole_from]);
    h.segment(
        389,
        false,
        PSH_ACK,
        5000 + hole_to as u32,
        &conv.to_client[hole_to..],
    );
    let acked = 5000 + conv.to_client.len() as u32;
    h.frame(&ethernet(
        0x0800,
        &ipv4(CLIENT, SERVER, 6, &tcp_ack(40000, 389, 1000, acked)),
    ));
    h.end_all();
    assert_eq!(h.error("ldap", "stream_gap"), 1);
    assert_eq!(h.analyzer.analysis().stream_stats().gaps, 1);
    let resyncs: Vec<_> = h.analyzer.analysis().resyncs().collect();
    let skipped = (starts[5] - hole_to) as u64;
    assert_eq!(
        resyncs,
        [(
            Protocol::Ldap,
            Resyncs {
                found: 1,
                skipped_bytes: skipped
            }
        )]
    );
    let expected: Vec<String> = whole
        .events
        .iter()
        .map(|e| e.replace("entries: 9", "entries: 7"))
        .collect();
    assert_ne!(expected, whole.events, "the search had 9 entries");
    assert_eq!(h.events, expected);
}
