//! SMB sessions, SMB1 and SMB2 alike: the dialect the server picks, tree connects paired with
//! their responses by message id, and NTLM logins inside session setups with the status that
//! answers them (every `STATUS_LOGON_FAILURE` is counted). Encrypted SMB3 is recognised and
//! passed over quietly.

use std::collections::HashMap;

use serde_json::json;
use vigil_plugin_sdk::ntstatus::NtStatus;
use vigil_plugin_sdk::{AuthResult, EventKind, Timestamp};

use super::ntlm::Exchange;
use super::{framed, Progress, Report, MAX_PENDING_PER_FLOW};
use crate::proto::smb1::{self, Login};
use crate::proto::{ntlm, smb2};
use smb2::{command, status, Body, HeaderRepr, Repr};

/// The dialect value events use for SMB1.
const DIALECT_SMB1: u16 = 0x0001;

#[derive(Default)]
pub(crate) struct Session {
    /// Tree connects waiting for their response, by message id.
    trees: HashMap<u64, (Timestamp, String)>,
    ntlm: Exchange,
}

fn auth_result(code: u32) -> AuthResult {
    if code == status::SUCCESS {
        AuthResult::Success
    } else {
        AuthResult::Failure(code)
    }
}

impl Session {
    pub fn stream(&mut self, data: &[u8], max_frame: usize, report: &mut Report<'_>) -> Progress {
        let frame_len = |buf: &[u8]| smb2::frame_len(buf).map_err(smb2::Error::name);
        framed(data, max_frame, frame_len, |bytes| {
            let frame = match smb2::Frame::new_checked(bytes) {
                Ok(frame) if frame.is_session_message() => frame,
                // NetBIOS session requests and keep-alives carry no SMB.
                Ok(_) => return,
                Err(err) => return report.error(err.name()),
            };
            for message in smb2::messages(frame.payload()) {
                match message {
                    Ok(repr) => self.message(repr, report),
                    Err(err) => report.error(err.name()),
                }
            }
        })
    }

    fn message(&mut self, repr: Repr, report: &mut Report<'_>) {
        match repr {
            Repr::Smb2 { header, body } => self.smb2(header, body, report),
            Repr::Smb1(message) => self.smb1(message, report),
            Repr::Encrypted { .. } | Repr::Compressed => report.count("encrypted_message"),
        }
    }

    fn smb1(&mut self, message: smb1::Repr, report: &mut Report<'_>) {
        let header = message.header;
        for command in message.commands {
            match command {
                smb1::Command::NegotiateResponse => negotiated(DIALECT_SMB1, report),
                smb1::Command::SessionSetupRequest(Login::Ntlmssp(Some(token))) => {
                    self.ntlm.message(token, report);
                }
                smb1::Command::SessionSetupRequest(Login::WithoutExtendedSecurity {
                    user,
                    domain,
                    anonymous,
                }) => {
                    // No workstation travels in this form.
                    self.ntlm
                        .authenticate(user, domain, String::new(), anonymous, report);
                }
                smb1::Command::SessionSetupResponse { ntlm } => {
                    self.session_setup_answered(header.status, ntlm, report);
                }
                smb1::Command::TreeConnectRequest { path } => {
                    self.tree_requested(header.mid.into(), path, report);
                }
                smb1::Command::TreeConnectResponse { share_type } => {
                    self.tree_answered(header.mid.into(), share_type, header.status, report);
                }
                _ => {}
            }
        }
    }

    fn smb2(&mut self, header: HeaderRepr, body: Body, report: &mut Report<'_>) {
        match body {
            Body::NegotiateResponse { dialect } => negotiated(dialect, report),
            Body::SessionSetupRequest { ntlm: Some(token) } => self.ntlm.message(token, report),
            Body::SessionSetupResponse { ntlm } if header.command == command::SESSION_SETUP => {
                self.session_setup_answered(header.status, ntlm, report);
            }
            Body::TreeConnectRequest { path } => {
                self.tree_requested(header.message_id, path, report);
            }
            Body::TreeConnectResponse { share_type } => {
                self.tree_answered(header.message_id, share_type, header.status, report);
            }
            _ => {}
        }
    }

    /// A session setup's answer: the CHALLENGE while more processing is required, else the
    /// login's result.
    fn session_setup_answered(
        &mut self,
        code: u32,
        ntlm: Option<Result<ntlm::Message, ntlm::Error>>,
        report: &mut Report<'_>,
    ) {
        if code == status::MORE_PROCESSING_REQUIRED {
            if let Some(challenge) = ntlm {
                self.ntlm.message(challenge, report);
            }
            return;
        }
        if code == status::LOGON_FAILURE {
            report.count("logon_failure");
        }
        self.ntlm.result(auth_result(code), report);
    }

    fn tree_requested(&mut self, message_id: u64, path: String, report: &mut Report<'_>) {
        if self.trees.len() < MAX_PENDING_PER_FLOW {
            self.trees.insert(message_id, (report.ts, path));
        } else {
            report.error("too_many_pending");
        }
    }

    fn tree_answered(
        &mut self,
        message_id: u64,
        share_type: Option<u8>,
        code: u32,
        report: &mut Report<'_>,
    ) {
        if let Some((ts, path)) = self.trees.remove(&message_id) {
            tree(report, ts, &path, share_type, Some(code));
        }
    }

    pub fn ended(&mut self, report: &mut Report<'_>) {
        for (_, (ts, path)) in std::mem::take(&mut self.trees) {
            tree(report, ts, &path, None, None);
        }
        self.ntlm.ended(report);
    }
}

fn negotiated(dialect: u16, report: &mut Report<'_>) {
    let ts = report.ts;
    report.event(ts, EventKind::SmbNegotiate { dialect });
    report.log("smb", ts, |record| {
        record.insert("action".into(), json!("negotiate"));
        record.insert("dialect".into(), json!(format!("0x{dialect:04x}")));
    });
}

/// A tree connect and its answer (`status` is `None` when none came).
fn tree(
    report: &mut Report<'_>,
    ts: Timestamp,
    path: &str,
    share_type: Option<u8>,
    code: Option<u32>,
) {
    let result = code.map_or(AuthResult::Unknown, auth_result);
    report.event(
        ts,
        EventKind::SmbTree {
            share: path,
            result,
        },
    );
    // Zeek's smb_mapping fields, with the status added.
    report.log("smb", ts, |record| {
        record.insert("action".into(), json!("tree_connect"));
        record.insert("path".into(), json!(path));
        record.insert(
            "share_type".into(),
            json!(share_type.map(smb2::share_type_name)),
        );
        record.insert(
            "status".into(),
            json!(code.map(|code| NtStatus(code).to_string())),
        );
    });
}
