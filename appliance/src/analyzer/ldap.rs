//! LDAP sessions: binds (simple, or SASL with the NTLM exchange inside them) and searches,
//! paired with their results by message id; search entries are counted. Logs follow Zeek's
//! `ldap.log` (binds, unbinds) and `ldap_search.log`.

use std::collections::HashMap;

use serde_json::json;
use vigil_plugin_sdk::{AuthResult, EventKind, LdapFilter, Timestamp};

use super::ntlm::Exchange;
use super::{framed, Progress, Report, MAX_PENDING_PER_FLOW};
use crate::proto::ldap::{self, Auth, Op};

/// `saslBindInProgress`: the bind goes on with another round trip.
const SASL_BIND_IN_PROGRESS: u32 = 14;

enum Pending {
    Bind {
        ts: Timestamp,
        version: u8,
        name: String,
        /// `simple`, or the SASL mechanism (`GSS-SPNEGO`, `NTLM`...).
        mechanism: String,
    },
    Search {
        ts: Timestamp,
        base: String,
        scope: &'static str,
        filter: LdapFilter<'static>,
        attributes: Vec<String>,
        entries: u32,
    },
}

#[derive(Default)]
pub(crate) struct Session {
    pending: HashMap<u32, Pending>,
    ntlm: Exchange,
}

/// Zeek's names for LDAP result codes (RFC 4511 §4.1.9).
fn result_name(code: u32) -> &'static str {
    match code {
        0 => "success",
        1 => "operations error",
        2 => "protocol error",
        3 => "time limit exceeded",
        4 => "size limit exceeded",
        7 => "auth method not supported",
        8 => "stronger auth required",
        10 => "referral",
        11 => "admin limit exceeded",
        13 => "confidentiality required",
        14 => "SASL bind in progress",
        16 => "no such attribute",
        32 => "no such object",
        34 => "invalid DN syntax",
        48 => "inappropriate authentication",
        49 => "invalid credentials",
        50 => "insufficient access rights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwilling to perform",
        _ => "other",
    }
}

fn auth_result(code: u32) -> AuthResult {
    if code == 0 {
        AuthResult::Success
    } else {
        AuthResult::Failure(code)
    }
}

impl Session {
    pub fn stream(&mut self, data: &[u8], max_frame: usize, report: &mut Report<'_>) -> Progress {
        let frame_len = |buf: &[u8]| ldap::frame_len(buf).map_err(ldap::Error::name);
        framed(
            data,
            max_frame,
            frame_len,
            |message| match ldap::Repr::parse(message) {
                Ok(repr) => self.message(repr, report),
                Err(err) => report.error(err.name()),
            },
        )
    }

    fn message(&mut self, repr: ldap::Repr, report: &mut Report<'_>) {
        let id = repr.message_id;
        match repr.op {
            Op::BindRequest {
                version,
                name,
                auth,
            } => {
                let mechanism = match auth {
                    Auth::Simple { .. } => "simple".to_owned(),
                    Auth::Sasl { mechanism, ntlm } => {
                        if let Some(token) = ntlm {
                            self.ntlm.message(token, report);
                        }
                        mechanism
                    }
                };
                let ts = report.ts;
                self.expect(
                    id,
                    Pending::Bind {
                        ts,
                        version,
                        name,
                        mechanism,
                    },
                    report,
                );
            }
            Op::BindResponse { result_code, ntlm } => {
                if let Some(token) = ntlm {
                    self.ntlm.message(token, report);
                }
                if let Some(Pending::Bind {
                    ts,
                    version,
                    name,
                    mechanism,
                }) = self.pending.remove(&id)
                {
                    bind(
                        report,
                        id,
                        ts,
                        version,
                        &name,
                        &mechanism,
                        Some(result_code),
                    );
                }
                if result_code != SASL_BIND_IN_PROGRESS {
                    self.ntlm.result(auth_result(result_code), report);
                }
            }
            Op::SearchRequest {
                base,
                scope,
                filter,
                attributes,
            } => {
                let ts = report.ts;
                let search = Pending::Search {
                    ts,
                    base,
                    scope,
                    filter,
                    attributes,
                    entries: 0,
                };
                self.expect(id, search, report);
            }
            Op::SearchResultEntry { .. } => {
                if let Some(Pending::Search { entries, .. }) = self.pending.get_mut(&id) {
                    *entries += 1;
                }
            }
            Op::SearchResultDone { result_code } => {
                if let Some(search) = self.pending.remove(&id) {
                    done(report, id, search, Some(result_code));
                }
            }
            Op::UnbindRequest => {
                let ts = report.ts;
                report.log("ldap", ts, |record| {
                    record.insert("message_id".into(), json!(id));
                    record.insert("opcode".into(), json!("unbind"));
                });
            }
            Op::Other { .. } => {}
        }
    }

    fn expect(&mut self, id: u32, pending: Pending, report: &mut Report<'_>) {
        if self.pending.len() < MAX_PENDING_PER_FLOW {
            self.pending.insert(id, pending);
        } else {
            report.error("too_many_pending");
        }
    }

    pub fn ended(&mut self, report: &mut Report<'_>) {
        let mut unanswered: Vec<_> = std::mem::take(&mut self.pending).into_iter().collect();
        unanswered.sort_by_key(|(id, _)| *id);
        for (id, pending) in unanswered {
            done(report, id, pending, None);
        }
        self.ntlm.ended(report);
    }
}

/// Reports a finished (or abandoned, `code` `None`) request.
fn done(report: &mut Report<'_>, id: u32, pending: Pending, code: Option<u32>) {
    match pending {
        Pending::Bind {
            ts,
            version,
            name,
            mechanism,
        } => bind(report, id, ts, version, &name, &mechanism, code),
        Pending::Search {
            ts,
            base,
            scope,
            filter,
            attributes,
            entries,
        } => {
            let text = filter.to_string();
            report.event(
                ts,
                EventKind::LdapSearchTree {
                    base: &base,
                    scope,
                    filter,
                    entries,
                    result: code.map_or(AuthResult::Unknown, auth_result),
                },
            );
            report.log("ldap_search", ts, |record| {
                record.insert("message_id".into(), json!(id));
                record.insert("scope".into(), json!(scope));
                record.insert("base_object".into(), json!(base));
                record.insert("result_count".into(), json!(entries));
                record.insert("result".into(), json!(code.map(result_name)));
                record.insert("filter".into(), json!(text));
                record.insert("attributes".into(), json!(attributes));
            });
        }
    }
}

fn bind(
    report: &mut Report<'_>,
    id: u32,
    ts: Timestamp,
    version: u8,
    name: &str,
    mechanism: &str,
    code: Option<u32>,
) {
    // An intermediate SASL step is logged (as Zeek does) but is not yet a bind outcome.
    if code != Some(SASL_BIND_IN_PROGRESS) {
        report.event(
            ts,
            EventKind::LdapBind {
                name,
                mechanism,
                result: code.map_or(AuthResult::Unknown, auth_result),
            },
        );
    }
    let simple = mechanism == "simple";
    report.log("ldap", ts, |record| {
        record.insert("message_id".into(), json!(id));
        record.insert("version".into(), json!(version));
        record.insert(
            "opcode".into(),
            json!(if simple { "bind simple" } else { "bind SASL" }),
        );
        record.insert("result".into(), json!(code.map(result_name)));
        record.insert("object".into(), json!(Some(name).filter(|n| !n.is_empty())));
        // Zeek puts the SASL mechanism here; a simple bind's password is never logged.
        record.insert(
            "argument".into(),
            json!(if simple { "REDACTED" } else { mechanism }),
        );
    });
}
