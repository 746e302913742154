//! Kerberos KDC messages: the input as one UDP datagram, and as a TCP stream of record-marked
//! messages cut as the analyzer does.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::proto::kerberos::{self, Repr};
use vigil_fuzz::{frames, Framing};

const RECORD_MARK: usize = 4;

fuzz_target!(|data: &[u8]| {
    check(data);
    let framing = Framing {
        header: RECORD_MARK,
        min: RECORD_MARK,
        max: RECORD_MARK + kerberos::MAX_MESSAGE_LEN,
    };
    for frame in frames(data, framing, kerberos::frame_len) {
        let message = kerberos::tcp_payload(frame).expect("a whole frame has a payload");
        assert_eq!(message.len(), frame.len() - RECORD_MARK);
        check(message);
    }
});

fn check(message: &[u8]) {
    if let Ok(Repr::Error { code, name, .. }) = Repr::parse(message) {
        assert_eq!(name, kerberos::error_name(code));
    }
}
