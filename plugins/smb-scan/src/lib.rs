//! `Device / Suspicious SMB Scanning Activity`: a device tries SMB (tcp/445, tcp/139) on many
//! distinct hosts within a short window, looking for shares and for hosts to move to.

use vigil_plugin_sdk::scan::{ServiceSweep, SweepSpec};
use vigil_plugin_sdk::{export_plugin, Model};

const MODEL: Model = Model {
    name: "Device / Suspicious SMB Scanning Activity",
    score: 70,
    mitre: &["T1135", "T1046"],
};

/// The service this model watches.
pub struct Smb;

impl SweepSpec for Smb {
    const NAME: &'static str = "smb-scan";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const MODEL: Model = MODEL;
    const PORTS: &'static [u16] = &[445, 139];
    const THRESHOLD: usize = 10;
}

pub type SmbScan = ServiceSweep<Smb>;

export_plugin!(SmbScan);

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::IpAddr;
    use vigil_plugin_sdk::harness::{events::*, Harness};
    use vigil_plugin_sdk::{Event, Transport};

    #[test]
    fn smb_to_many_hosts_raises_smb_scanning() {
        let mut h: Harness<SmbScan> = Harness::new();
        let src = IpAddr::from([10, 3, 0, 50]);
        let events: Vec<Event<'static>> = (1..=60u8)
            .filter(|i| *i != 50)
            .map(|i| flow_start(1.0, Transport::Tcp, src, IpAddr::from([10, 3, 0, i]), 445))
            .collect();
        let breaches = h.feed_all(&events);
        assert_eq!(breaches.len(), 1);
        assert_eq!(
            breaches[0].model,
            "Device / Suspicious SMB Scanning Activity"
        );
        assert_eq!(breaches[0].ports, vec![445]);
    }

    #[test]
    fn logging_in_to_two_file_servers_is_normal() {
        let mut h: Harness<SmbScan> = Harness::new();
        let src = IpAddr::from([10, 3, 0, 50]);
        let events: Vec<Event<'static>> = (0..30)
            .map(|i| {
                let server = IpAddr::from([10, 3, 0, 10 + (i % 2) as u8 * 10]);
                flow_start(f64::from(i) * 0.4, Transport::Tcp, src, server, 445)
            })
            .collect();
        assert!(h.feed_all(&events).is_empty());
    }
}
