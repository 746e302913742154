//! DHCP for device identity: one datagram's payload, parsed, then fed to a device table as the
//! pipeline does. Whatever it says, the table stays within its bounds and names stay printable.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::devices::{DeviceConfig, DeviceTable};
use vigil::proto::dhcp;
use vigil_plugin_sdk::Timestamp;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = dhcp::parse(data) {
        if let Some(name) = &message.host_name {
            assert!(!name.is_empty() && name.len() <= 255);
            assert!(name.bytes().all(|b| b.is_ascii_graphic()));
        }
    }
    let mut table = DeviceTable::new(DeviceConfig {
        max_devices: 4,
        ..DeviceConfig::default()
    })
    .expect("default config");
    for (i, chunk) in data.chunks(300).enumerate() {
        table.dhcp(Timestamp::from_secs(i as u64), chunk);
    }
    assert!(table.stats().devices <= 4);
});
