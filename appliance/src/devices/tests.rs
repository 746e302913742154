use std::net::{IpAddr, Ipv4Addr};

use vigil_plugin_sdk::{AuthResult, Endpoint, Event, EventKind, FlowState, Timestamp, Transport};

use super::*;

const LAPTOP: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const NEW_MACHINE: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const ROUTER: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const SERVER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 77, 0, last))
}

fn endpoint(ip: IpAddr, mac: [u8; 6]) -> Endpoint {
    Endpoint { ip, port: 0, mac }
}

fn event<'a>(secs: u64, src: (IpAddr, [u8; 6]), kind: EventKind<'a>) -> Event<'a> {
    Event {
        ts: Timestamp::from_secs(secs),
        flow: 1,
        proto: Transport::Tcp,
        src: endpoint(src.0, src.1),
        dst: endpoint(ip(10), SERVER),
        kind,
    }
}

fn ntlm(workstation: &str) -> EventKind<'_> {
    EventKind::NtlmAuth {
        carrier: "smb",
        user: "alice",
        domain: "CORP",
        workstation,
        anonymous: false,
        result: AuthResult::Success,
    }
}

/// A flow from `src` to `dst` that ended as `state` after these packets each way.
fn flow_end<'a>(
    secs: u64,
    proto: Transport,
    src: (IpAddr, [u8; 6]),
    dst: (IpAddr, [u8; 6]),
    (orig_packets, resp_packets): (u64, u64),
    state: FlowState,
) -> Event<'a> {
    Event {
        ts: Timestamp::from_secs(secs),
        flow: 1,
        proto,
        src: endpoint(src.0, src.1),
        dst: endpoint(dst.0, dst.1),
        kind: EventKind::FlowEnd {
            orig_bytes: 60 * orig_packets,
            resp_bytes: 60 * resp_packets,
            orig_packets,
            resp_packets,
            duration_us: 1000,
            state,
        },
    }
}

/// A TCP connection from `src` to the server, handshake completed and closed.
fn connection<'a>(secs: u64, src: (IpAddr, [u8; 6])) -> Event<'a> {
    flow_end(
        secs,
        Transport::Tcp,
        src,
        (ip(10), SERVER),
        (5, 4),
        FlowState::Established,
    )
}

fn table() -> DeviceTable {
    DeviceTable::new(DeviceConfig::default()).expect("default config")
}

fn names(table: &DeviceTable, address: IpAddr) -> Vec<String> {
    table
        .device_of(address)
        .map(|d| d.names().into_iter().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Every index entry points at a device that lists what it was found by, and every MAC a device
/// owns leads back to it.
fn assert_consistent(t: &DeviceTable) {
    for (address, &index) in &t.by_address {
        let device = t.devices.get(index).expect("address index in range");
        assert!(
            device.addresses.iter().any(|a| a.value == *address),
            "{address} leads to device {} which does not list it",
            device.id
        );
    }
    for (mac, owner) in &t.by_mac {
        if let MacOwner::Device(index) = owner {
            let device = t.devices.get(*index).expect("MAC index in range");
            assert!(
                device.macs.iter().any(|m| m.value == format_mac(*mac)),
                "{} leads to device {} which does not list it",
                format_mac(*mac),
                device.id
            );
        }
    }
    let ids: std::collections::BTreeSet<u32> = t.devices.iter().map(|d| d.id).collect();
    assert_eq!(ids.len(), t.devices.len(), "ids are unique");
}

fn mac_of(host: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 1, host]
}

#[test]
fn a_lone_syn_from_an_unknown_address_admits_nothing() {
    let mut t = table();
    t.observe(&event(1, (ip(50), LAPTOP), EventKind::FlowStart));
    t.observe(&flow_end(
        6,
        Transport::Tcp,
        (ip(50), LAPTOP),
        (ip(77), [0; 6]),
        (1, 0),
        FlowState::HalfOpen,
    ));
    // A forged source's SYN that a real server answered with a SYN-ACK nobody acknowledged:
    // the flow table calls it established when it times out. The server answered; the source
    // proved nothing.
    t.observe(&event(7, (ip(51), NEW_MACHINE), EventKind::FlowStart));
    t.observe(&flow_end(
        12,
        Transport::Tcp,
        (ip(51), NEW_MACHINE),
        (ip(10), SERVER),
        (1, 1),
        FlowState::Established,
    ));
    assert!(t.device_of(ip(50)).is_none());
    assert!(t.device_of(ip(51)).is_none());
    assert!(t.device_of(ip(77)).is_none());
    assert_eq!(
        t.device_of(ip(10)).map(|d| d.macs.len()),
        Some(1),
        "the server answered"
    );
    assert_eq!(t.stats().devices, 1);
    assert_eq!(t.stats().unproven, 2);
    // A lone request's NTLM message names nobody either, without its answer.
    t.observe(&event(13, (ip(52), NEW_MACHINE), ntlm("FORGED-01")));
    assert!(t.device_of(ip(52)).is_none());
    assert_eq!(t.stats().devices, 1);
}

#[test]
fn an_answered_flow_admits_both_ends() {
    let mut t = table();
    t.observe(&connection(1, (ip(50), LAPTOP)));
    let laptop = t
        .device_of(ip(50))
        .expect("the originator completed the handshake");
    assert_eq!(laptop.macs[0].value, format_mac(LAPTOP));
    assert_eq!(laptop.services[0].value, (ip(10), 0), "its first service");
    assert!(t.device_of(ip(10)).is_some(), "the responder answered");
    // A SYN scan's probe: SYN, SYN-ACK, the scanner's RST.
    t.observe(&flow_end(
        2,
        Transport::Tcp,
        (ip(60), NEW_MACHINE),
        (ip(20), ROUTER),
        (2, 1),
        FlowState::Reset,
    ));
    assert!(t.device_of(ip(60)).is_some());
    // A RST answering a SYN proves the refusing host, not the sender.
    t.observe(&flow_end(
        3,
        Transport::Tcp,
        (ip(61), [0x02, 0, 0, 0, 0, 0x61]),
        (ip(30), [0x02, 0, 0, 0, 0, 0x30]),
        (1, 1),
        FlowState::Rejected,
    ));
    assert!(t.device_of(ip(61)).is_none());
    assert!(t.device_of(ip(30)).is_some());
    // An answered datagram proves its sender.
    t.observe(&flow_end(
        4,
        Transport::Udp,
        (ip(62), [0x02, 0, 0, 0, 0, 0x62]),
        (ip(30), [0x02, 0, 0, 0, 0, 0x30]),
        (1, 1),
        FlowState::Established,
    ));
    assert!(t.device_of(ip(62)).is_some());
    assert_eq!(t.stats().devices, 6);
    assert_consistent(&t);
}

#[test]
fn an_answered_ntlm_login_admits_and_names_its_device() {
    let mut t = table();
    t.observe_answer(&event(2, (ip(50), LAPTOP), ntlm("LAPTOP-ALICE")));
    assert_eq!(names(&t, ip(50)), ["LAPTOP-ALICE"]);
    assert_eq!(
        t.device_of(ip(50)).map(|d| d.macs[0].value.clone()),
        Some(format_mac(LAPTOP))
    );
    assert!(
        t.device_of(ip(10)).is_some(),
        "the server that gave the verdict"
    );
}

#[test]
fn a_lone_syn_refreshes_a_known_device_and_cannot_take_another_ones_mac() {
    let mut t = table();
    t.observe(&connection(1, (ip(50), LAPTOP)));
    t.observe(&connection(2, (ip(51), NEW_MACHINE)));
    t.observe(&event(100, (ip(50), LAPTOP), EventKind::FlowStart));
    assert_eq!(
        t.device_of(ip(50)).map(|d| d.last_seen),
        Some(Timestamp::from_secs(100))
    );
    // A forged SYN from .50 with .51's MAC: .51's MAC still names .51 only.
    t.observe(&event(101, (ip(50), NEW_MACHINE), EventKind::FlowStart));
    let owner = t.by_address.get(&ip(51)).map(|&i| MacOwner::Device(i));
    assert_eq!(t.by_mac.get(&NEW_MACHINE), owner.as_ref());
    assert_eq!(t.device_of(ip(50)).map(|d| d.macs.len()), Some(1));
    assert_eq!(t.stats().unproven, 0);
}

#[test]
fn a_static_address_keeps_one_device_whose_names_and_macs_accumulate() {
    let mut t = table();
    t.observe(&event(1, (ip(50), LAPTOP), EventKind::FlowStart));
    t.observe_answer(&event(2, (ip(50), LAPTOP), ntlm("LAPTOP-ALICE")));
    // The phished credential from a new machine on the same static address.
    t.observe(&event(100, (ip(50), NEW_MACHINE), EventKind::FlowStart));
    t.observe_answer(&event(101, (ip(50), NEW_MACHINE), ntlm("DESKTOP-7Q2M1X")));
    let device = t.device_of(ip(50)).expect("device");
    assert_eq!(device.names(), ["DESKTOP-7Q2M1X", "LAPTOP-ALICE"]);
    assert_eq!(device.macs.len(), 2);
    assert_eq!(
        t.stats().devices,
        2,
        "the laptop and the server it logged in to"
    );
}

#[test]
fn a_mac_with_a_second_address_is_a_router_and_identifies_nobody() {
    let mut t = table();
    for host in [60, 61, 62] {
        t.observe(&connection(u64::from(host), (ip(host), ROUTER)));
    }
    assert_eq!(
        t.stats().devices,
        4,
        "one device per address behind a router, and the server"
    );
    assert_ne!(
        t.device_of(ip(60)).map(|d| d.id),
        t.device_of(ip(61)).map(|d| d.id)
    );
    // A dual-stack host: one IPv4 and one IPv6 address behind one MAC is one device.
    let v6: IpAddr = "fd00::50".parse().expect("literal");
    t.observe(&connection(70, (ip(50), LAPTOP)));
    t.observe(&flow_end(
        71,
        Transport::Tcp,
        (v6, LAPTOP),
        ("fd00::10".parse().expect("literal"), SERVER),
        (5, 4),
        FlowState::Established,
    ));
    assert_eq!(
        t.device_of(ip(50)).map(|d| d.id),
        t.device_of(v6).map(|d| d.id)
    );
    assert_consistent(&t);
}

#[test]
fn a_dhcp_lease_moves_the_address_to_the_device_that_took_it() {
    let mut t = table();
    t.observe(&connection(1, (ip(50), LAPTOP)));
    let laptop = t.device_of(ip(50)).map(|d| d.id);
    assert!(laptop.is_some());
    // The laptop moves to .51 by DHCP; another machine gets .50.
    t.lease(
        Timestamp::from_secs(10),
        &crate::proto::dhcp::DhcpMessage {
            message_type: smoltcp::wire::DhcpMessageType::Ack,
            client_mac: LAPTOP,
            bound_address: Some(Ipv4Addr::new(10, 77, 0, 51)),
            requested_address: None,
            host_name: Some("laptop-alice".into()),
        },
    );
    t.lease(
        Timestamp::from_secs(11),
        &crate::proto::dhcp::DhcpMessage {
            message_type: smoltcp::wire::DhcpMessageType::Ack,
            client_mac: NEW_MACHINE,
            bound_address: Some(Ipv4Addr::new(10, 77, 0, 50)),
            requested_address: None,
            host_name: None,
        },
    );
    assert_eq!(t.device_of(ip(51)).map(|d| d.id), laptop);
    assert_ne!(t.device_of(ip(50)).map(|d| d.id), laptop);
    assert!(t.device_of(ip(50)).is_some(), "a lease admits its taker");
    assert_eq!(names(&t, ip(51)), ["laptop-alice"]);
    assert_consistent(&t);
}

#[test]
fn kerberos_machine_accounts_and_dns_answers_name_devices() {
    let mut t = table();
    t.observe_answer(&event(
        2,
        (ip(20), SERVER),
        EventKind::Kerberos {
            request: "AS",
            client: "FILESRV01$",
            realm: "CORP.EXAMPLE",
            service: "krbtgt/CORP.EXAMPLE",
            error: None,
        },
    ));
    t.observe_answer(&event(
        3,
        (ip(50), LAPTOP),
        EventKind::Dns {
            query: "20.0.77.10.in-addr.arpa",
            qtype: 12,
            rcode: Some(0),
            answers: vec!["filesrv01.corp.example."],
        },
    ));
    // A user account in Kerberos is not a host; an answer for an unseen address makes no device.
    t.observe_answer(&event(
        4,
        (ip(20), SERVER),
        EventKind::Kerberos {
            request: "AS",
            client: "alice",
            realm: "CORP.EXAMPLE",
            service: "krbtgt/CORP.EXAMPLE",
            error: None,
        },
    ));
    t.observe_answer(&event(
        5,
        (ip(50), LAPTOP),
        EventKind::Dns {
            query: "printer.corp.example",
            qtype: 1,
            rcode: Some(0),
            answers: vec!["10.77.0.99"],
        },
    ));
    let device = t.device_of(ip(20)).expect("device");
    let sources: Vec<(&str, NameSource)> = device
        .host_names
        .iter()
        .map(|n| (n.name.as_str(), n.source))
        .collect();
    assert_eq!(
        sources,
        [
            ("FILESRV01", NameSource::Kerberos),
            ("filesrv01.corp.example", NameSource::Dns)
        ]
    );
    assert!(t.device_of(ip(99)).is_none());
}

#[test]
fn only_internal_addresses_become_devices() {
    let mut t = table();
    let public = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    t.observe(&flow_end(
        1,
        Transport::Tcp,
        (public, LAPTOP),
        (ip(10), SERVER),
        (5, 4),
        FlowState::Established,
    ));
    t.observe(&flow_end(
        2,
        Transport::Tcp,
        (ip(50), NEW_MACHINE),
        (public, ROUTER),
        (5, 4),
        FlowState::Established,
    ));
    assert!(t.device_of(public).is_none());
    assert!(t.device_of(ip(10)).is_some());
    assert!(t.device_of(ip(50)).is_some());
    assert_eq!(t.stats().devices, 2);
}

#[test]
fn a_full_table_evicts_the_least_recently_seen() {
    let mut t = DeviceTable::new(DeviceConfig {
        max_devices: 4,
        ..DeviceConfig::default()
    })
    .expect("config");
    // Four devices seen at 1..4 s (each a UDP exchange with an outside resolver).
    let resolver = (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53)), ROUTER);
    let answered = |secs: u64, host: u8| {
        flow_end(
            secs,
            Transport::Udp,
            (ip(host), mac_of(host)),
            resolver,
            (1, 1),
            FlowState::Established,
        )
    };
    for host in 1..=4 {
        t.observe(&answered(u64::from(host), host));
    }
    let second = t.device_of(ip(2)).map(|d| d.id).expect("device .2");
    // .1 is active again; .2 is now the least recently seen.
    t.observe(&event(10, (ip(1), mac_of(1)), EventKind::FlowStart));
    t.observe(&answered(11, 5));
    assert_eq!(t.stats().devices, 4);
    assert_eq!(t.stats().evicted, 1);
    assert!(t.device_of(ip(2)).is_none());
    for host in [1, 3, 4, 5] {
        let device = t.device_of(ip(host)).expect("kept");
        assert_eq!(device.macs[0].value, format_mac(mac_of(host)));
    }
    assert!(!t.by_mac.contains_key(&mac_of(2)));
    assert_consistent(&t);
    // Its address and MAC come back as a new device (now .3 makes room).
    t.observe(&answered(12, 2));
    let back = t.device_of(ip(2)).expect("back");
    assert_ne!(back.id, second);
    assert_eq!(back.first_seen, Timestamp::from_secs(12));
    assert_eq!(
        t.by_mac.get(&mac_of(2)),
        t.by_address
            .get(&ip(2))
            .map(|&i| MacOwner::Device(i))
            .as_ref()
    );
    assert!(t.device_of(ip(3)).is_none());
    assert_eq!(t.stats().evicted, 2);
    assert_consistent(&t);
}

#[test]
fn a_large_full_table_evicts_a_sixty_fourth_at_once() {
    let mut t = DeviceTable::new(DeviceConfig {
        max_devices: 256,
        ..DeviceConfig::default()
    })
    .expect("config");
    // 256 devices behind a router (their MAC shared) and 256 on their own MACs, every one seen
    // at its own second: the oldest four go at each eviction.
    let address = |n: u32| IpAddr::V4(Ipv4Addr::from(0x0a_00_00_00 | n));
    let mut second = 0;
    for n in 0..512u32 {
        second += 1;
        let mac = if n % 2 == 0 {
            ROUTER
        } else {
            [0x02, 0, 0, 0, (n >> 8) as u8, n as u8]
        };
        t.observe(&flow_end(
            second,
            Transport::Tcp,
            (address(n + 1000), mac),
            (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), SERVER),
            (3, 2),
            FlowState::Established,
        ));
        assert!(t.stats().devices <= 256);
        assert_consistent(&t);
    }
    // Full at 256; each later device past a full table evicts 4: 252 + 4 per round of 4.
    assert_eq!(t.stats().evicted, 256);
    assert_eq!(t.stats().devices, 256);
    // The 256 most recent are kept, the rest gone.
    for n in 0..512u32 {
        assert_eq!(t.device_of(address(n + 1000)).is_some(), n >= 256, "{n}");
    }
    assert_eq!(t.by_mac.get(&ROUTER), Some(&MacOwner::Shared));
}

#[test]
fn saving_and_restoring_keeps_identity_ids_and_router_macs() {
    let mut t = table();
    t.observe(&connection(1, (ip(50), LAPTOP)));
    t.observe_answer(&event(2, (ip(50), LAPTOP), ntlm("LAPTOP-ALICE")));
    t.observe(&connection(3, (ip(60), ROUTER)));
    t.observe(&connection(4, (ip(61), ROUTER)));
    let json = serde_json::to_string(&t.to_saved(Timestamp::from_secs(5))).expect("json");
    let saved: SavedDevices = serde_json::from_str(&json).expect("parse");
    assert_eq!(saved.shared_macs, [format_mac(ROUTER)]);
    let mut restored = DeviceTable::restore(DeviceConfig::default(), saved).expect("restore");
    assert_eq!(
        restored.device_of(ip(50)).map(|d| d.id),
        t.device_of(ip(50)).map(|d| d.id)
    );
    assert_eq!(names(&restored, ip(50)), ["LAPTOP-ALICE"]);
    restored.observe(&connection(10, (ip(62), ROUTER)));
    assert_eq!(restored.stats().devices, 5, "the router MAC stays shared");
    assert_consistent(&restored);
    // Restored under a smaller limit, the most recently seen are kept.
    let json = serde_json::to_string(&restored.to_saved(Timestamp::from_secs(11))).expect("json");
    let small = DeviceTable::restore(
        DeviceConfig {
            max_devices: 2,
            ..DeviceConfig::default()
        },
        serde_json::from_str(&json).expect("parse"),
    )
    .expect("restore");
    let mut kept: Vec<IpAddr> = small
        .devices()
        .iter()
        .flat_map(|d| d.addresses.iter().map(|a| a.value))
        .collect();
    kept.sort();
    assert_eq!(kept, [ip(10), ip(62)]);
    assert_consistent(&small);
    // Long gone devices are forgotten at save time.
    let later = Timestamp::from_secs(200 * 86_400);
    assert!(restored.to_saved(later).devices.is_empty());
    assert!(restored.to_saved(later).shared_macs.is_empty());
}

#[test]
fn home_nets_and_the_limit_come_from_config_and_bad_ones_are_refused() {
    let config = DeviceConfig {
        home_nets: vec!["192.0.2.0/24".into()],
        ..DeviceConfig::default()
    };
    let mut t = DeviceTable::new(config).expect("config");
    t.observe(&flow_end(
        1,
        Transport::Tcp,
        (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), LAPTOP),
        (IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), SERVER),
        (5, 4),
        FlowState::Established,
    ));
    t.observe(&connection(1, (ip(50), NEW_MACHINE)));
    assert_eq!(t.stats().devices, 1);
    let bad = DeviceConfig {
        home_nets: vec!["10.0.0.0/33".into()],
        ..DeviceConfig::default()
    };
    assert!(DeviceTable::new(bad).is_err());
    let none = DeviceConfig {
        max_devices: 0,
        ..DeviceConfig::default()
    };
    assert!(DeviceTable::new(none).is_err());
}

/// A `Dns` event on UDP between these ports, as the analyzer reports a local name claim.
fn udp_dns<'a>(
    secs: u64,
    (sport, dport): (u16, u16),
    query: &'a str,
    qtype: u16,
    answers: Vec<&'a str>,
) -> Event<'a> {
    Event {
        ts: Timestamp::from_secs(secs),
        flow: 2,
        proto: Transport::Udp,
        src: Endpoint {
            ip: ip(20),
            port: sport,
            mac: SERVER,
        },
        dst: Endpoint {
            ip: IpAddr::V4(Ipv4Addr::new(224, 0, 0, 251)),
            port: dport,
            mac: [0x01, 0, 0x5e, 0, 0, 0xfb],
        },
        kind: EventKind::Dns {
            query,
            qtype,
            rcode: Some(0),
            answers,
        },
    }
}

#[test]
fn local_name_claims_name_a_known_device_by_their_protocol() {
    let mut t = table();
    t.observe(&connection(1, (ip(20), LAPTOP)));
    t.observe(&udp_dns(
        2,
        (5353, 5353),
        "ws07.local",
        1,
        vec!["10.77.0.20"],
    ));
    t.observe(&udp_dns(3, (5355, 49152), "ws07", 1, vec!["10.77.0.20"]));
    // NetBIOS: the workstation and server names are the host's; its messenger name (<03>) and
    // anything on another port is not NetBIOS's to name.
    for (secs, query) in [(4, "WS07<00>"), (5, "WS07<20>"), (6, "WS07<03>")] {
        t.observe(&udp_dns(secs, (137, 137), query, 0x20, vec!["10.77.0.20"]));
    }
    t.observe(&udp_dns(
        7,
        (40000, 5300),
        "WS99<00>",
        0x20,
        vec!["10.77.0.20"],
    ));
    let device = t.device_of(ip(20)).expect("device");
    let mut sources: Vec<(&str, NameSource)> = device
        .host_names
        .iter()
        .map(|n| (n.name.as_str(), n.source))
        .collect();
    sources.sort();
    assert_eq!(
        sources,
        [
            ("WS07", NameSource::Nbns),
            ("ws07", NameSource::Llmnr),
            ("ws07.local", NameSource::Mdns),
        ]
    );
}

#[test]
fn a_local_name_claim_for_an_unknown_address_makes_no_device() {
    let mut t = table();
    t.observe(&udp_dns(
        1,
        (5353, 5353),
        "ws07.local",
        1,
        vec!["10.77.0.20"],
    ));
    t.observe(&udp_dns(
        2,
        (137, 137),
        "WS07<00>",
        0x20,
        vec!["10.77.0.20"],
    ));
    assert!(t.devices().is_empty());
}
