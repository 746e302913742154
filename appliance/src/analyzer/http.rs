//! HTTP sessions: request heads queue up until their response heads come (HTTP/1.1 pipelining
//! keeps them in order), bodies are skipped by length, and an NTLM login carried in
//! `Authorization` / `WWW-Authenticate` headers is followed to the status that answers it.

use std::collections::VecDeque;

use base64::Engine;
use serde_json::json;
use vigil_plugin_sdk::{AuthResult, EventKind, Timestamp};

use super::ntlm::Exchange;
use super::{Progress, Report, MAX_PENDING_PER_FLOW};
use crate::proto::{http, ntlm};

/// Longest head buffered before it counts as hostile.
const MAX_HEAD: usize = 64 * 1024;

#[derive(Default)]
pub(crate) struct Session {
    pending: VecDeque<(Timestamp, http::Request)>,
    ntlm: Exchange,
}

/// The NTLMSSP message in an `NTLM <base64>` or `Negotiate <base64>` header value.
fn ntlm_token(value: &str) -> Option<Result<ntlm::Message, ntlm::Error>> {
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("ntlm") && !scheme.eq_ignore_ascii_case("negotiate") {
        return None;
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    ntlm::find(&blob).map(ntlm::Message::parse)
}

impl Session {
    /// Parses one head; its body (by length) is left for the caller to skip.
    pub fn stream(&mut self, data: &[u8], report: &mut Report<'_>) -> Progress {
        if report.is_from_originator() {
            match http::parse_request(data, MAX_HEAD) {
                Ok(http::Parsed::Complete(request, used)) => {
                    let skip = request.body_len;
                    if let Some(token) = request.authorization.as_deref().and_then(ntlm_token) {
                        self.ntlm.message(token, report);
                    }
                    if self.pending.len() < MAX_PENDING_PER_FLOW {
                        self.pending.push_back((report.ts, request));
                    } else {
                        report.error("too_many_pending");
                    }
                    Progress::Used { used, skip }
                }
                Ok(http::Parsed::Partial) => Progress::Used { used: 0, skip: 0 },
                Err(err) => Progress::Lost {
                    used: 0,
                    reason: err.name(),
                },
            }
        } else {
            match http::parse_response(data, MAX_HEAD) {
                Ok(http::Parsed::Complete(response, used)) => {
                    self.response(&response, report);
                    // A body of unknown length runs to the end of the connection.
                    let skip = response.body_len.unwrap_or(usize::MAX);
                    Progress::Used { used, skip }
                }
                Ok(http::Parsed::Partial) => Progress::Used { used: 0, skip: 0 },
                Err(err) => Progress::Lost {
                    used: 0,
                    reason: err.name(),
                },
            }
        }
    }

    fn response(&mut self, response: &http::Response, report: &mut Report<'_>) {
        match response.www_authenticate.as_deref().and_then(ntlm_token) {
            Some(challenge) => self.ntlm.message(challenge, report),
            None if self.ntlm.awaiting_result() => {
                let result = if response.status == 401 || response.status == 403 {
                    AuthResult::Failure(u32::from(response.status))
                } else {
                    AuthResult::Success
                };
                self.ntlm.result(result, report);
            }
            None => {}
        }
        // 1xx responses are interim: the request is still waiting for its final answer.
        if response.status >= 200 {
            if let Some((ts, request)) = self.pending.pop_front() {
                emit(report, ts, &request, Some(response.status));
            }
        }
    }

    pub fn ended(&mut self, report: &mut Report<'_>) {
        for (ts, request) in std::mem::take(&mut self.pending) {
            emit(report, ts, &request, None);
        }
        self.ntlm.ended(report);
    }
}

fn emit(report: &mut Report<'_>, ts: Timestamp, request: &http::Request, status: Option<u16>) {
    report.event(
        ts,
        EventKind::Http {
            method: &request.method,
            uri: &request.uri_decoded,
            uri_raw: &request.uri,
            host: request.host.as_deref(),
            user_agent: request.user_agent.as_deref(),
            status,
        },
    );
    report.log("http", ts, |record| {
        record.insert("method".into(), json!(request.method));
        record.insert("host".into(), json!(request.host));
        record.insert("uri".into(), json!(request.uri));
        record.insert("uri_decoded".into(), json!(request.uri_decoded));
        record.insert("version".into(), json!(request.version));
        record.insert("user_agent".into(), json!(request.user_agent));
        record.insert("status_code".into(), json!(status));
    });
}
