//! The model on a real capture: the Vigil lab's attack (nmap, smbclient, ldapsearch... run in
//! network namespaces), replayed through the appliance's own decode, flows and parsers.

use std::net::IpAddr;
use std::path::Path;

use vigil_plugin_sdk::harness::Harness;

use {{crate}}::NewHosts;

#[test]
fn the_lab_attackers_sweep_raises_many_new_hosts() {
    let attack = Path::new("{{checkout}}/tests/fixtures/lab/attack.pcap");
    let mut harness: Harness<NewHosts> = Harness::new();
    let breaches = vigil::plugin_replay::replay(&mut harness, &[attack]).expect("replays");
    // The lab's attacker (ground-truth.tsv) sweeps 10.77.0.1-254.
    let attacker = IpAddr::from([10, 77, 0, 50]);
    let caught: Vec<_> = breaches
        .iter()
        .filter(|b| b.device.ip == attacker)
        .collect();
    assert_eq!(caught.len(), 1, "one breach per burst: {breaches:#?}");
    assert_eq!(caught[0].model, "Device / Many New Hosts");
}
