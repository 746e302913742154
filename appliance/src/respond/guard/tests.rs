use vigil_plugin_sdk::{Endpoint, Response};

use super::*;

const DEVICE: [u8; 4] = [10, 0, 0, 7];
const SECOND: u64 = 1_000_000;

fn endpoint(ip: [u8; 4], port: u16) -> Endpoint {
    Endpoint {
        ip: IpAddr::from(ip),
        port,
        mac: [0; 6],
    }
}

fn breach(device: [u8; 4], model: &str, secs: u64) -> Breach {
    Breach {
        model: model.to_string(),
        ts: Timestamp(secs * SECOND),
        device: endpoint(device, 40000),
        dest: endpoint([10, 0, 0, 1], 445),
        proto: Transport::Tcp,
        score: 70,
        mitre: Vec::new(),
        destinations: Vec::new(),
        ports: Vec::new(),
        evidence: Vec::new(),
    }
}

fn request(device: [u8; 4], incident: Option<u64>, secs: u64) -> ActionRequest {
    ActionRequest {
        response: Response::BlockEgress,
        device: IpAddr::from(device),
        ts: Timestamp(secs * SECOND),
        reason: "test".into(),
        incident,
        duration_secs: 3600,
        needs_confirmation: false,
    }
}

fn served(server: [u8; 4], proto: Transport, port: u16) -> Event<'static> {
    Event {
        ts: Timestamp(SECOND),
        flow: 1,
        proto,
        src: endpoint([10, 0, 0, 50], 50000),
        dst: endpoint(server, port),
        kind: EventKind::FlowEnd {
            orig_bytes: 40,
            resp_bytes: 90,
            orig_packets: 1,
            resp_packets: 1,
            duration_us: 100,
            state: FlowState::Established,
        },
    }
}

fn guard(config: GuardConfig) -> ResponseGuard {
    ResponseGuard::new(config).expect("valid config")
}

#[test]
fn an_action_with_no_breach_from_the_device_waits_for_an_operator() {
    let mut guard = guard(GuardConfig::default());
    // Someone else's breach backs nothing against DEVICE.
    guard.observe_breach(&breach([10, 0, 0, 8], "Device / Network Scan", 10), 0);
    assert_eq!(
        guard.hold(&request(DEVICE, None, 11)),
        Some(Hold::Evidence {
            models: 0,
            needed: 1
        })
    );
    guard.observe_breach(&breach(DEVICE, "Device / Network Scan", 10), 0);
    assert_eq!(guard.hold(&request(DEVICE, None, 11)), None);
}

#[test]
fn an_incident_needs_two_kinds_of_traffic_evidence_and_meta_breaches_do_not_count() {
    let mut guard = guard(GuardConfig::default());
    guard.observe_breach(&breach(DEVICE, "Device / RDP Scan", 10), 0);
    guard.observe_breach(
        &breach(DEVICE, "Device / Large Number of Model Breaches", 10),
        1,
    );
    guard.observe_breach(&breach(DEVICE, "Device / RDP Scan", 12), 0);
    assert_eq!(
        guard.hold(&request(DEVICE, Some(1), 13)),
        Some(Hold::Evidence {
            models: 1,
            needed: 2
        })
    );
    guard.observe_breach(&breach(DEVICE, "Device / Reverse DNS Sweep", 14), 0);
    assert_eq!(guard.hold(&request(DEVICE, Some(1), 15)), None);
}

#[test]
fn evidence_older_than_the_window_backs_nothing() {
    let mut guard = guard(GuardConfig::default());
    guard.observe_breach(&breach(DEVICE, "Device / Network Scan", 10), 0);
    let later = 10 + EVIDENCE_WINDOW_MICROS / SECOND;
    assert!(matches!(
        guard.hold(&request(DEVICE, None, later)),
        Some(Hold::Evidence { models: 0, .. })
    ));
}

#[test]
fn configured_and_learned_infrastructure_is_never_blocked_autonomously() {
    let mut guard = guard(GuardConfig {
        protected: vec!["10.0.0.7".into(), "10.9.0.0/16".into()],
        ..GuardConfig::default()
    });
    for device in [DEVICE, [10, 9, 3, 4], [10, 0, 0, 53]] {
        guard.observe_breach(&breach(device, "Device / Network Scan", 10), 0);
        guard.observe_breach(&breach(device, "Device / RDP Scan", 10), 0);
    }
    assert_eq!(
        guard.hold(&request(DEVICE, None, 11)),
        Some(Hold::Protected("10.0.0.7".into()))
    );
    assert_eq!(
        guard.hold(&request([10, 9, 3, 4], Some(2), 11)),
        Some(Hold::Protected("10.9.0.0/16".into()))
    );
    assert_eq!(guard.hold(&request([10, 0, 0, 53], None, 11)), None);
    guard.observe_flow_end(&served([10, 0, 0, 53], Transport::Udp, 53));
    assert_eq!(
        guard.hold(&request([10, 0, 0, 53], None, 11)),
        Some(Hold::Infrastructure(53))
    );
    assert_eq!(guard.infrastructure_devices(), 1);
}

#[test]
fn an_unanswered_or_ordinary_service_makes_nobody_infrastructure() {
    let mut guard = guard(GuardConfig::default());
    let mut unanswered = served([10, 0, 0, 53], Transport::Udp, 53);
    unanswered.kind = EventKind::FlowEnd {
        orig_bytes: 40,
        resp_bytes: 0,
        orig_packets: 1,
        resp_packets: 0,
        duration_us: 0,
        state: FlowState::HalfOpen,
    };
    guard.observe_flow_end(&unanswered);
    guard.observe_flow_end(&served([10, 0, 0, 80], Transport::Tcp, 80));
    // DNS is UDP or TCP; Kerberos too; LDAP is TCP only here.
    guard.observe_flow_end(&served([10, 0, 0, 99], Transport::Udp, 389));
    assert_eq!(guard.infrastructure_devices(), 0);
}

#[test]
fn past_the_rate_limit_actions_wait_and_are_counted_until_the_minute_passes() {
    let mut guard = guard(GuardConfig {
        max_autonomous_per_minute: 2,
        ..GuardConfig::default()
    });
    let devices: Vec<[u8; 4]> = (1..=4).map(|i| [10, 0, 1, i]).collect();
    for device in &devices {
        guard.observe_breach(&breach(*device, "Device / Network Scan", 10), 0);
    }
    for (i, device) in devices.iter().enumerate() {
        let request = request(*device, None, 20 + i as u64);
        let hold = guard.hold(&request);
        guard.record(hold.as_ref(), request.ts);
        let expected = (i >= 2).then_some(Hold::RateLimited { per_minute: 2 });
        assert_eq!(hold, expected, "action {i}");
    }
    assert_eq!(guard.stats().rate_limited, 2);
    assert_eq!(guard.hold(&request(devices[3], None, 20 + 61)), None);
}

#[test]
fn a_protected_entry_that_is_not_an_address_is_refused_with_its_text() {
    let err = ResponseGuard::new(GuardConfig {
        protected: vec!["10.0.0.0/40".into()],
        ..GuardConfig::default()
    })
    .err()
    .expect("refused");
    assert!(err.contains("10.0.0.0/40"), "{err}");
}
