//! RDP sessions: the X.224 Connection Request (the `mstshash` cookie and the protocols offered)
//! and the server's Connection Confirm. Everything after the first TPKT each way is TLS or
//! CredSSP, so the session stops reading there.

use serde_json::json;
use vigil_plugin_sdk::{EventKind, Timestamp};

use super::{Progress, Report};
use crate::proto::rdp::{self, protocol, Repr};

struct Request {
    ts: Timestamp,
    cookie: Option<String>,
    protocols: Option<u32>,
}

#[derive(Default)]
pub(crate) struct Session {
    request: Option<Request>,
}

impl Session {
    pub fn stream(&mut self, data: &[u8], report: &mut Report<'_>) -> Progress {
        let len = match rdp::frame_len(data) {
            Ok(Some(len)) => len,
            Ok(None) => return Progress::Used { used: 0, skip: 0 },
            Err(err) => {
                return Progress::Lost {
                    used: 0,
                    reason: err.name(),
                }
            }
        };
        let Some(tpkt) = data.get(..len) else {
            return Progress::Used { used: 0, skip: 0 };
        };
        match rdp::Packet::new_checked(tpkt).and_then(|packet| Repr::parse(&packet)) {
            Ok(Repr::ConnectionRequest {
                cookie,
                requested_protocols,
            }) => {
                let ts = report.ts;
                let protocols = requested_protocols.unwrap_or(protocol::RDP);
                let cookie_text = cookie.as_deref().unwrap_or("");
                report.event(
                    ts,
                    EventKind::Rdp {
                        cookie: cookie_text,
                        protocols,
                    },
                );
                self.request = Some(Request {
                    ts,
                    cookie,
                    protocols: requested_protocols,
                });
            }
            Ok(Repr::ConnectionConfirm {
                selected_protocol,
                failure_code,
            }) => {
                if let Some(request) = self.request.take() {
                    log(report, &request, selected_protocol, failure_code);
                }
            }
            Ok(Repr::Other { .. }) => {}
            Err(err) => report.error(err.name()),
        }
        // The rest of this direction is encrypted.
        Progress::Used {
            used: len,
            skip: usize::MAX,
        }
    }

    pub fn ended(&mut self, report: &mut Report<'_>) {
        if let Some(request) = self.request.take() {
            log(report, &request, None, None);
        }
    }
}

/// Zeek's `rdp.log`: the cookie, and how the server answered.
fn log(report: &mut Report<'_>, request: &Request, selected: Option<u32>, failure: Option<u32>) {
    let result = match (selected, failure) {
        (_, Some(_)) => Some("failed"),
        (Some(protocol::RDP), None) => Some("success"),
        (Some(_), None) => Some("encrypted"),
        (None, None) => None,
    };
    report.log("rdp", request.ts, |record| {
        record.insert("cookie".into(), json!(request.cookie));
        record.insert("requested_protocols".into(), json!(request.protocols));
        record.insert("result".into(), json!(result));
        record.insert(
            "security_protocol".into(),
            json!(selected.map(rdp::protocol_name)),
        );
        record.insert("failure_code".into(), json!(failure));
    });
}
