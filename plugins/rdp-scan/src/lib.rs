//! `Device / RDP Scan`: a device tries Remote Desktop (tcp/3389) on many distinct hosts within a
//! short window, looking for machines to move to.

use vigil_plugin_sdk::scan::{ServiceSweep, SweepSpec};
use vigil_plugin_sdk::{export_plugin, Model};

const MODEL: Model = Model {
    name: "Device / RDP Scan",
    score: 65,
    mitre: &["T1046", "T1021.001"],
};

/// The service this model watches.
pub struct Rdp;

impl SweepSpec for Rdp {
    const NAME: &'static str = "rdp-scan";
    const MODEL: Model = MODEL;
    const PORTS: &'static [u16] = &[3389];
    const THRESHOLD: usize = 10;
}

pub type RdpScan = ServiceSweep<Rdp>;

export_plugin!(ServiceSweep<Rdp>);

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::IpAddr;
    use vigil_plugin_sdk::harness::{events::*, Harness};
    use vigil_plugin_sdk::{Event, Transport};

    fn sweep(port: u16, hosts: u8) -> Vec<Event<'static>> {
        let src = IpAddr::from([10, 2, 0, 50]);
        (1..=hosts)
            .map(|i| flow_start(5.0, Transport::Tcp, src, IpAddr::from([10, 2, 0, i]), port))
            .collect()
    }

    #[test]
    fn rdp_on_many_hosts_raises_rdp_scan() {
        let mut h: Harness<RdpScan> = Harness::new();
        let breaches = h.feed_all(&sweep(3389, 40));
        assert_eq!(breaches.len(), 1);
        assert_eq!(breaches[0].model, "Device / RDP Scan");
        assert_eq!(breaches[0].ports, vec![3389]);
        assert_eq!(breaches[0].destinations.len(), 10);
    }

    #[test]
    fn other_ports_and_few_hosts_do_not() {
        let mut h: Harness<RdpScan> = Harness::new();
        assert!(h.feed_all(&sweep(445, 40)).is_empty());
        assert!(h.feed_all(&sweep(3389, 3)).is_empty());
    }

    #[test]
    fn a_device_it_is_used_to_does_not_count_twice() {
        let mut h: Harness<RdpScan> = Harness::new();
        let src = IpAddr::from([10, 2, 0, 50]);
        let events: Vec<Event<'static>> = (0..50)
            .map(|i| {
                flow_start(
                    f64::from(i),
                    Transport::Tcp,
                    src,
                    IpAddr::from([10, 2, 0, 7]),
                    3389,
                )
            })
            .collect();
        assert!(h.feed_all(&events).is_empty());
    }

    mod pattern_of_life {
        use super::*;
        use vigil_plugin_sdk::harness::nights::{flows, hosts};

        const MONITOR: [u8; 4] = [10, 2, 0, 200];

        /// The monitoring host's night: rdp to its 40 servers, one a second.
        fn rdp(night: u64, servers: &[IpAddr]) -> Vec<Event<'static>> {
            flows(
                night,
                1.0,
                Transport::Tcp,
                IpAddr::from(MONITOR),
                servers,
                &[3389],
            )
        }

        #[test]
        fn usual_rdp_checks_pass_and_new_hosts_breach() {
            let mut h: Harness<RdpScan> = Harness::new();
            for night in 0..5 {
                h.feed_all(&rdp(night, &hosts([10, 2, 1], 40)));
            }
            assert_eq!(h.feed_all(&rdp(5, &hosts([10, 2, 1], 40))), Vec::new());
            let breaches = h.feed_all(&rdp(6, &hosts([10, 2, 2], 40)));
            assert_eq!(breaches.len(), 1, "{breaches:#?}");
            let b = &breaches[0];
            assert_eq!(b.evidence("pattern.state"), Some("learned"));
            assert_eq!(b.evidence("pattern.unusual"), Some("true"));
            assert_eq!(
                b.evidence("pattern.seen"),
                Some(
                    "10 targets in 60 s, 10 new for this device (10.2.2.1, 10.2.2.2, 10.2.2.3, \
                     10.2.2.4, 10.2.2.5, 10.2.2.6, 10.2.2.7, 10.2.2.8 and 2 more)"
                )
            );
            assert_eq!(b.score, 65);
        }
    }
}
