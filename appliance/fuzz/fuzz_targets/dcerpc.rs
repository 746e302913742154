//! DCE/RPC over TCP: the input is one direction of a stream, cut into PDUs as the analyzer does;
//! the auth token of each is read and, when it carries one, its NTLMSSP message parsed; and the
//! input as a stream picked up mid-PDU, from where the framer finds its place again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::proto::{dcerpc, ntlm};
use vigil_fuzz::{frames, resync, Framing};

const HEADER: usize = 16;

fuzz_target!(|data: &[u8]| {
    // Fragment lengths are 16 bits.
    let framing = Framing {
        header: HEADER,
        min: HEADER,
        max: usize::from(u16::MAX),
    };
    for bytes in frames(data, framing, dcerpc::frame_len) {
        let pdu = dcerpc::Pdu::new_checked(bytes).expect("a whole fragment is a PDU");
        check(bytes, &pdu);
    }
    // A PDU with bytes after it: they belong to the next one and are ignored.
    if let Ok(pdu) = dcerpc::Pdu::new_checked(data) {
        check(data, &pdu);
    }
    let _ = dcerpc::looks_like_bind(data);
    // The input as a stream picked up mid-PDU: a start found is one the framer can measure.
    if let Some(rest) = resync(data, dcerpc::next_message) {
        assert!(
            matches!(dcerpc::frame_len(rest), Ok(Some(_))),
            "unframeable start"
        );
        for bytes in frames(rest, framing, dcerpc::frame_len) {
            let pdu = dcerpc::Pdu::new_checked(bytes).expect("a whole fragment is a PDU");
            check(bytes, &pdu);
        }
    }
});

fn check(bytes: &[u8], pdu: &dcerpc::Pdu<'_>) {
    let _ = (pdu.ptype(), pdu.reject_reason());
    if let Ok(Some(token)) = pdu.auth_token() {
        // The token is the fragment's tail, after the header and the auth verifier's own.
        let span = bytes.as_ptr_range();
        let tail = token.as_ptr_range();
        assert!(
            span.start <= tail.start && tail.end <= span.end,
            "token outside the PDU"
        );
        assert!(token.len() <= bytes.len() - HEADER - 8);
        if let Some(message) = ntlm::find(token) {
            let _ = ntlm::Message::parse(message);
        }
    }
}
