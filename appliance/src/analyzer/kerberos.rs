//! Kerberos sessions: each KDC request (AS, TGS) waits for its reply or KRB-ERROR, then one
//! event and one Zeek-style `kerberos.log` record say who asked for what and how it went.

use std::collections::VecDeque;

use serde_json::json;
use vigil_plugin_sdk::{EventKind, Timestamp};

use super::{framed, Progress, Report, MAX_PENDING_PER_FLOW};
use crate::proto::kerberos::{self, Kind, Repr};

/// RFC 4120 §7.5.9.
const KDC_ERR_PREAUTH_REQUIRED: i32 = 25;

struct Request {
    ts: Timestamp,
    kind: Kind,
    client: Option<String>,
    realm: String,
    service: Option<String>,
}

/// What the KDC answered.
enum Outcome {
    Reply { client: String, realm: String },
    Error { code: i32, message: String },
    None,
}

#[derive(Default)]
pub(crate) struct Session {
    /// KDC exchanges are strictly request then answer, so a queue pairs them.
    pending: VecDeque<Request>,
}

impl Session {
    pub fn stream(&mut self, data: &[u8], max_frame: usize, report: &mut Report<'_>) -> Progress {
        let frame_len = |buf: &[u8]| kerberos::frame_len(buf).map_err(kerberos::Error::name);
        framed(
            data,
            max_frame,
            frame_len,
            |frame| match kerberos::tcp_payload(frame) {
                Ok(message) => self.message(message, report),
                Err(err) => report.error(err.name()),
            },
        )
    }

    pub fn message(&mut self, message: &[u8], report: &mut Report<'_>) {
        let repr = match Repr::parse(message) {
            Ok(repr) => repr,
            Err(err) => return report.error(err.name()),
        };
        match repr {
            Repr::Request {
                kind,
                client,
                realm,
                service,
            } => {
                if self.pending.len() >= MAX_PENDING_PER_FLOW {
                    return report.error("too_many_pending");
                }
                let ts = report.ts;
                self.pending.push_back(Request {
                    ts,
                    kind,
                    client,
                    realm,
                    service,
                });
            }
            Repr::Reply {
                kind,
                client,
                realm,
                service,
            } => {
                let request = self.pending.pop_front().unwrap_or(Request {
                    ts: report.ts,
                    kind,
                    client: None,
                    realm: realm.clone(),
                    service: None,
                });
                let outcome = Outcome::Reply { client, realm };
                emit(report, request, Some(service), outcome);
            }
            // The KDC asking for pre-authentication is a step of a normal login, not its
            // outcome: the client asks again with it (Zeek does not log it either).
            Repr::Error {
                code: KDC_ERR_PREAUTH_REQUIRED,
                ..
            } => {
                self.pending.pop_front();
                report.count("preauth_required");
            }
            Repr::Error {
                code,
                name,
                text,
                client,
                realm,
                service,
            } => {
                let mut request = self.pending.pop_front().unwrap_or(Request {
                    ts: report.ts,
                    kind: Kind::As,
                    client: None,
                    realm,
                    service: None,
                });
                request.client = request.client.or(client);
                // MIT's e-text says more than the code's name ("CLIENT EXPIRED"); Zeek logs it.
                let message = text.unwrap_or_else(|| name.to_owned());
                emit(
                    report,
                    request,
                    Some(service),
                    Outcome::Error { code, message },
                );
            }
        }
    }

    pub fn ended(&mut self, report: &mut Report<'_>) {
        for request in std::mem::take(&mut self.pending) {
            emit(report, request, None, Outcome::None);
        }
    }
}

fn emit(
    report: &mut Report<'_>,
    request: Request,
    answered_service: Option<String>,
    outcome: Outcome,
) {
    // The reply names the client of a TGS request, whose own client is inside the ticket; an
    // AS request names its client itself (the reply may canonicalise it, e.g. anonymous).
    let (client, realm) = match (&outcome, request.kind) {
        (Outcome::Reply { client, realm }, Kind::Tgs) => (Some(client.as_str()), realm.as_str()),
        _ => (request.client.as_deref(), request.realm.as_str()),
    };
    let service = request
        .service
        .as_deref()
        .or(answered_service.as_deref())
        .unwrap_or("");
    let (error, success, error_msg) = match &outcome {
        Outcome::Reply { .. } => (None, Some(true), None),
        Outcome::Error { code, message } => {
            (Some(*code as u32), Some(false), Some(message.as_str()))
        }
        Outcome::None => (None, None, None),
    };
    report.event(
        request.ts,
        EventKind::Kerberos {
            request: request.kind.name(),
            client: client.unwrap_or(""),
            realm,
            service,
            error,
        },
    );
    report.log("kerberos", request.ts, |record| {
        record.insert("request_type".into(), json!(request.kind.name()));
        record.insert(
            "client".into(),
            json!(client.map(|c| format!("{c}/{realm}"))),
        );
        record.insert(
            "service".into(),
            json!(Some(service).filter(|s| !s.is_empty())),
        );
        record.insert("success".into(), json!(success));
        record.insert("error_msg".into(), json!(error_msg));
    });
}
