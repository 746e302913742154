//! DCE/RPC sessions over TCP (135, and the dynamic ports the endpoint mapper hands out): the
//! NTLM exchange in bind, alter-context and AUTH3 auth verifiers. DCE/RPC gives no login verdict
//! of its own (a bad login shows up later as a fault), so the exchange is reported when a
//! bind is refused or the connection ends.

use vigil_plugin_sdk::AuthResult;

use super::ntlm::Exchange;
use super::{framed, Progress, Report};
use crate::proto::{dcerpc, ntlm};

#[derive(Default)]
pub(crate) struct Session {
    ntlm: Exchange,
}

impl Session {
    pub fn stream(&mut self, data: &[u8], max_frame: usize, report: &mut Report<'_>) -> Progress {
        let frame_len = |buf: &[u8]| dcerpc::frame_len(buf).map_err(dcerpc::Error::name);
        framed(data, max_frame, frame_len, |bytes| {
            let token = dcerpc::Pdu::new_checked(bytes).and_then(|pdu| {
                if let Some(reason) = pdu.reject_reason() {
                    self.ntlm
                        .result(AuthResult::Failure(u32::from(reason)), report);
                }
                pdu.auth_token()
            });
            match token {
                Ok(Some(token)) => {
                    if let Some(message) = ntlm::find(token) {
                        self.ntlm.message(ntlm::Message::parse(message), report);
                    }
                }
                Ok(None) => {}
                Err(err) => report.error(err.name()),
            }
        })
    }

    pub fn ended(&mut self, report: &mut Report<'_>) {
        self.ntlm.ended(report);
    }
}
