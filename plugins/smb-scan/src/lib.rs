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
    const MODEL: Model = MODEL;
    const PORTS: &'static [u16] = &[445, 139];
    const THRESHOLD: usize = 10;
}

pub type SmbScan = ServiceSweep<Smb>;

export_plugin!(ServiceSweep<Smb>);

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

    mod pattern_of_life {
        use super::*;
        use vigil_plugin_sdk::harness::nights::{flows, hosts};
        use vigil_plugin_sdk::Breach;

        const BACKUP: [u8; 4] = [10, 3, 0, 200];

        /// The backup server's night: the same 40 file servers on tcp/445, one a second.
        fn backup_night(night: u64) -> Vec<Event<'static>> {
            let servers = hosts([10, 3, 1], 40);
            flows(
                night,
                1.0,
                Transport::Tcp,
                IpAddr::from(BACKUP),
                &servers,
                &[445],
            )
        }

        fn learned() -> Harness<SmbScan> {
            let mut h: Harness<SmbScan> = Harness::new();
            for night in 0..5 {
                h.feed_all(&backup_night(night));
            }
            h
        }

        fn evidence<'b>(breach: &'b Breach, name: &str) -> &'b str {
            breach.evidence(name).unwrap_or("<missing>")
        }

        #[test]
        fn learning_nights_breach_on_the_floor_marked_as_learning() {
            let mut h: Harness<SmbScan> = Harness::new();
            let first = h.feed_all(&backup_night(0));
            assert_eq!(first.len(), 1);
            assert_eq!(evidence(&first[0], "pattern.state"), "learning");
            assert_eq!(evidence(&first[0], "pattern.since"), "2026-11-23T02:00:00Z");
            assert_eq!(evidence(&first[0], "pattern.until"), "2026-11-27T02:00:00Z");
            assert_eq!(evidence(&first[0], "pattern.unusual"), "true");
            assert_eq!(first[0].score, 70);
            // The second night repeats the first: still a floor breach while learning, but
            // one its pattern includes, and scored as such.
            let second = h.feed_all(&backup_night(1));
            assert_eq!(second.len(), 1);
            assert_eq!(evidence(&second[0], "pattern.state"), "learning");
            assert_eq!(evidence(&second[0], "pattern.unusual"), "false");
            assert_eq!(second[0].score, 35);
            assert_eq!(
                evidence(&second[0], "pattern.seen"),
                "10 targets in 60 s, 0 new for this device (none)"
            );
        }

        #[test]
        fn the_backup_servers_sixth_identical_night_raises_nothing() {
            let mut h = learned();
            assert_eq!(h.feed_all(&backup_night(5)), Vec::new());
            // And it survives a restart.
            let mut h = h.restart().expect("state restores");
            assert_eq!(h.feed_all(&backup_night(6)), Vec::new());
        }

        #[test]
        fn a_second_backup_server_doing_the_same_job_is_compared_with_the_first() {
            let mut h = learned();
            let second = IpAddr::from([10, 3, 0, 201]);
            let servers = hosts([10, 3, 1], 40);
            let night = flows(5, 1.0, Transport::Tcp, second, &servers, &[445]);
            assert_eq!(h.feed_all(&night), Vec::new(), "it behaves like its peer");
            // A new device sweeping hosts no peer reaches is held to the floor, as learning.
            let newcomer = IpAddr::from([10, 3, 0, 202]);
            let others = hosts([10, 3, 3], 40);
            let breaches = h.feed_all(&flows(5, 1.0, Transport::Tcp, newcomer, &others, &[445]));
            assert_eq!(breaches.len(), 1);
            assert_eq!(breaches[0].device.ip, newcomer);
            assert_eq!(evidence(&breaches[0], "pattern.state"), "learning");
            assert_eq!(evidence(&breaches[0], "pattern.unusual"), "true");
        }

        #[test]
        fn many_new_hosts_beyond_its_usual_servers_breach_naming_expected_and_seen() {
            let mut h = learned();
            let mut night = backup_night(5);
            let strangers = hosts([10, 3, 2], 40);
            night.extend(
                flows(
                    5,
                    1.0,
                    Transport::Tcp,
                    IpAddr::from(BACKUP),
                    &strangers,
                    &[445],
                )
                .into_iter()
                .map(|mut e| {
                    e.ts = e.ts.plus_secs(40);
                    e
                }),
            );
            let breaches = h.feed_all(&night);
            assert_eq!(breaches.len(), 1, "{breaches:#?}");
            let b = &breaches[0];
            assert_eq!(b.model, "Device / Suspicious SMB Scanning Activity");
            assert_eq!(evidence(b, "pattern.state"), "learned");
            assert_eq!(evidence(b, "pattern.since"), "2026-11-27T02:00:00Z");
            assert_eq!(evidence(b, "pattern.unusual"), "true");
            assert_eq!(
                evidence(b, "pattern.expected"),
                "40 usual targets (10.3.1.1, 10.3.1.2, 10.3.1.3, 10.3.1.4, 10.3.1.5, 10.3.1.6, \
                 10.3.1.7, 10.3.1.8 and 32 more), at most 40 in 60 s"
            );
            assert_eq!(
                evidence(b, "pattern.seen"),
                "50 targets in 60 s, 10 new for this device (10.3.2.1, 10.3.2.2, 10.3.2.3, \
                 10.3.2.4, 10.3.2.5, 10.3.2.6, 10.3.2.7, 10.3.2.8 and 2 more)"
            );
            // 10 of 50 targets new: 35 of 50 weighted.
            assert_eq!(b.score, 49);
            assert_eq!(b.ports, vec![445]);
        }
    }
}
