//! NTLM exchanges, whatever carries them (SMB, LDAP SASL, HTTP, DCE/RPC): the CHALLENGE names
//! the server, the AUTHENTICATE names the user, domain and workstation, and the carrier's next
//! response says whether the login worked. One event and one `ntlm` log record per exchange.

use serde_json::json;
use vigil_plugin_sdk::{AuthResult, EventKind, Timestamp};

use super::{Protocol, Report};
use crate::proto::ntlm::{self, ServerNames};

struct Authenticate {
    ts: Timestamp,
    user: String,
    domain: String,
    workstation: String,
    anonymous: bool,
}

#[derive(Default)]
pub(crate) struct Exchange {
    /// When the exchange began (its first message).
    started: Option<Timestamp>,
    server: ServerNames,
    authenticate: Option<Authenticate>,
}

impl Exchange {
    /// Takes the NTLMSSP message a carrier found (or failed to read) in its security blob.
    pub fn message(
        &mut self,
        message: Result<ntlm::Message, ntlm::Error>,
        report: &mut Report<'_>,
    ) {
        let message = match message {
            Ok(message) => message,
            Err(err) => {
                // Counted under NTLM, whichever protocol carried it.
                let carrier = report.protocol;
                report.protocol = Protocol::Ntlm;
                report.error(err.name());
                report.protocol = carrier;
                return;
            }
        };
        match message {
            ntlm::Message::Negotiate { .. } => {
                // A new exchange on the same connection: the last one's outcome never came.
                if self.started.is_some() {
                    self.finish(AuthResult::Unknown, report);
                }
                self.started = Some(report.ts);
            }
            ntlm::Message::Challenge { server, .. } => {
                self.started.get_or_insert(report.ts);
                self.server = server;
            }
            ntlm::Message::Authenticate {
                user,
                domain,
                workstation,
                anonymous,
                ..
            } => self.authenticate(user, domain, workstation, anonymous, report),
        }
    }

    /// The client's names and answer to the challenge: from an NTLMSSP AUTHENTICATE, or from a
    /// carrier that sends them itself (SMB1 without extended security).
    pub fn authenticate(
        &mut self,
        user: String,
        domain: String,
        workstation: String,
        anonymous: bool,
        report: &mut Report<'_>,
    ) {
        self.started.get_or_insert(report.ts);
        self.authenticate = Some(Authenticate {
            ts: report.ts,
            user,
            domain,
            workstation,
            anonymous,
        });
    }

    /// Whether an AUTHENTICATE is waiting for the carrier's verdict.
    pub fn awaiting_result(&self) -> bool {
        self.authenticate.is_some()
    }

    /// The carrier's verdict on the AUTHENTICATE (ignored when none is waiting).
    pub fn result(&mut self, result: AuthResult, report: &mut Report<'_>) {
        if self.awaiting_result() {
            self.finish(result, report);
        }
    }

    /// The connection ended: an exchange still open is reported without a verdict.
    pub fn ended(&mut self, report: &mut Report<'_>) {
        if self.started.is_some() {
            self.finish(AuthResult::Unknown, report);
        }
    }

    fn finish(&mut self, result: AuthResult, report: &mut Report<'_>) {
        let started = self.started.take().unwrap_or(report.ts);
        let server = std::mem::take(&mut self.server);
        let authenticate = self.authenticate.take();
        let carrier = report.protocol.name();
        if let Some(auth) = &authenticate {
            report.event(
                auth.ts,
                EventKind::NtlmAuth {
                    carrier,
                    user: &auth.user,
                    domain: &auth.domain,
                    workstation: &auth.workstation,
                    anonymous: auth.anonymous,
                    result,
                },
            );
        }
        // Zeek's ntlm.log, with the carrier and the refusal's status added.
        report.log("ntlm", started, |record| {
            let text = |value: Option<&String>| json!(value.filter(|v| !v.is_empty()));
            record.insert("carrier".into(), json!(carrier));
            record.insert(
                "username".into(),
                text(authenticate.as_ref().map(|a| &a.user)),
            );
            record.insert(
                "hostname".into(),
                text(authenticate.as_ref().map(|a| &a.workstation)),
            );
            record.insert(
                "domainname".into(),
                text(authenticate.as_ref().map(|a| &a.domain)),
            );
            record.insert("server_nb_computer_name".into(), json!(server.nb_computer));
            record.insert(
                "server_dns_computer_name".into(),
                json!(server.dns_computer),
            );
            record.insert("server_tree_name".into(), json!(server.dns_tree));
            let (success, status) = match result {
                AuthResult::Success => (Some(true), None),
                AuthResult::Failure(status) => (Some(false), Some(status)),
                AuthResult::Unknown => (None, None),
            };
            record.insert("success".into(), json!(success));
            record.insert("status".into(), json!(status));
        });
    }
}
