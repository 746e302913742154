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

fn table() -> DeviceTable {
    DeviceTable::new(DeviceConfig::default()).expect("default config")
}

fn names(table: &DeviceTable, address: IpAddr) -> Vec<String> {
    table
        .device_of(address)
        .map(|d| d.names().into_iter().map(str::to_string).collect())
        .unwrap_or_default()
}

#[test]
fn a_static_address_keeps_one_device_whose_names_and_macs_accumulate() {
    let mut t = table();
    t.observe(&event(1, (ip(50), LAPTOP), EventKind::FlowStart));
    t.observe(&event(2, (ip(50), LAPTOP), ntlm("LAPTOP-ALICE")));
    // The phished credential from a new machine on the same static address.
    t.observe(&event(100, (ip(50), NEW_MACHINE), EventKind::FlowStart));
    t.observe(&event(101, (ip(50), NEW_MACHINE), ntlm("DESKTOP-7Q2M1X")));
    let device = t.device_of(ip(50)).expect("device");
    assert_eq!(device.names(), ["DESKTOP-7Q2M1X", "LAPTOP-ALICE"]);
    assert_eq!(device.macs.len(), 2);
    assert_eq!(t.stats().devices, 1);
}

#[test]
fn a_mac_with_a_second_address_is_a_router_and_identifies_nobody() {
    let mut t = table();
    for host in [60, 61, 62] {
        t.observe(&event(
            u64::from(host),
            (ip(host), ROUTER),
            EventKind::FlowStart,
        ));
    }
    assert_eq!(
        t.stats().devices,
        3,
        "one device per address behind a router"
    );
    assert_ne!(
        t.device_of(ip(60)).map(|d| d.id),
        t.device_of(ip(61)).map(|d| d.id)
    );
    // A dual-stack host: one IPv4 and one IPv6 address behind one MAC is one device.
    let v6: IpAddr = "fd00::50".parse().expect("literal");
    t.observe(&event(70, (ip(50), LAPTOP), EventKind::FlowStart));
    t.observe(&event(71, (v6, LAPTOP), EventKind::FlowStart));
    assert_eq!(
        t.device_of(ip(50)).map(|d| d.id),
        t.device_of(v6).map(|d| d.id)
    );
}

#[test]
fn a_dhcp_lease_moves_the_address_to_the_device_that_took_it() {
    let mut t = table();
    t.observe(&event(1, (ip(50), LAPTOP), EventKind::FlowStart));
    let laptop = t.device_of(ip(50)).map(|d| d.id);
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
    assert_eq!(names(&t, ip(51)), ["laptop-alice"]);
}

#[test]
fn kerberos_machine_accounts_and_dns_answers_name_devices() {
    let mut t = table();
    t.observe(&event(1, (ip(20), SERVER), EventKind::FlowStart));
    t.observe(&event(
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
    t.observe(&event(
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
    t.observe(&event(
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
    t.observe(&event(
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
fn only_internal_addresses_that_speak_become_devices() {
    let mut t = table();
    let public = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    t.observe(&event(1, (public, LAPTOP), EventKind::FlowStart));
    // A scanned address that never answered is not a device.
    let mut unanswered = event(2, (ip(50), LAPTOP), EventKind::FlowStart);
    unanswered.dst = endpoint(ip(77), [0; 6]);
    t.observe(&unanswered);
    let mut end = event(
        3,
        (ip(50), LAPTOP),
        EventKind::FlowEnd {
            orig_bytes: 60,
            resp_bytes: 0,
            orig_packets: 1,
            resp_packets: 0,
            duration_us: 0,
            state: FlowState::HalfOpen,
        },
    );
    end.dst = endpoint(ip(77), [0; 6]);
    t.observe(&end);
    assert!(t.device_of(public).is_none());
    assert!(t.device_of(ip(77)).is_none());
    assert_eq!(t.stats().devices, 1);
}

#[test]
fn a_full_table_counts_what_it_refuses() {
    let mut t = DeviceTable::new(DeviceConfig {
        max_devices: 2,
        ..DeviceConfig::default()
    })
    .expect("config");
    for host in 1..=5 {
        t.observe(&event(1, (ip(host), [0; 6]), EventKind::FlowStart));
    }
    assert_eq!(t.stats().devices, 2);
    assert_eq!(t.stats().refused, 3);
}

#[test]
fn saving_and_restoring_keeps_identity_ids_and_router_macs() {
    let mut t = table();
    t.observe(&event(1, (ip(50), LAPTOP), EventKind::FlowStart));
    t.observe(&event(2, (ip(50), LAPTOP), ntlm("LAPTOP-ALICE")));
    t.observe(&event(3, (ip(60), ROUTER), EventKind::FlowStart));
    t.observe(&event(4, (ip(61), ROUTER), EventKind::FlowStart));
    let json = serde_json::to_string(&t.to_saved(Timestamp::from_secs(5))).expect("json");
    let saved: SavedDevices = serde_json::from_str(&json).expect("parse");
    let mut restored = DeviceTable::restore(DeviceConfig::default(), saved).expect("restore");
    assert_eq!(
        restored.device_of(ip(50)).map(|d| d.id),
        t.device_of(ip(50)).map(|d| d.id)
    );
    assert_eq!(names(&restored, ip(50)), ["LAPTOP-ALICE"]);
    restored.observe(&event(10, (ip(62), ROUTER), EventKind::FlowStart));
    assert_eq!(restored.stats().devices, 4, "the router MAC stays shared");
    // Long gone devices are forgotten at save time.
    let later = Timestamp::from_secs(200 * 86_400);
    assert!(restored.to_saved(later).devices.is_empty());
}

#[test]
fn home_nets_come_from_config_and_bad_ones_are_refused() {
    let config = DeviceConfig {
        home_nets: vec!["192.0.2.0/24".into()],
        ..DeviceConfig::default()
    };
    let mut t = DeviceTable::new(config).expect("config");
    t.observe(&event(
        1,
        (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), LAPTOP),
        EventKind::FlowStart,
    ));
    t.observe(&event(1, (ip(50), NEW_MACHINE), EventKind::FlowStart));
    assert_eq!(t.stats().devices, 1);
    let bad = DeviceConfig {
        home_nets: vec!["10.0.0.0/33".into()],
        ..DeviceConfig::default()
    };
    assert!(DeviceTable::new(bad).is_err());
}
