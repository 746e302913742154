//! RDP connection setup: the input is one direction of a stream, cut into TPKTs as the analyzer
//! does, and also read as a single TPKT with trailing bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::proto::rdp::{self, Packet, Repr};
use vigil_fuzz::{frames, Framing};

const TPKT_HEADER: usize = 4;
/// The cookie is cut at 256 bytes; lossy UTF-8 never yields more characters than bytes.
const MAX_COOKIE_CHARS: usize = 256;

fuzz_target!(|data: &[u8]| {
    // TPKT lengths are 16 bits.
    let framing = Framing {
        header: TPKT_HEADER,
        min: TPKT_HEADER,
        max: usize::from(u16::MAX),
    };
    for tpkt in frames(data, framing, rdp::frame_len) {
        if let Ok(packet) = Packet::new_checked(tpkt) {
            assert_eq!(packet.tpkt_length(), tpkt.len());
            check(&packet);
        }
    }
    if let Ok(packet) = Packet::new_checked(data) {
        assert!(packet.tpkt_length() <= data.len());
        check(&packet);
    }
});

fn check(packet: &Packet<&[u8]>) {
    assert!(packet.user_data().len() <= packet.tpkt_length());
    match Repr::parse(packet) {
        Ok(Repr::ConnectionRequest {
            cookie: Some(cookie),
            ..
        }) => assert!(cookie.chars().count() <= MAX_COOKIE_CHARS),
        Ok(Repr::ConnectionConfirm {
            selected_protocol,
            failure_code,
        }) => assert!(
            selected_protocol.is_none() || failure_code.is_none(),
            "a confirm both selects and fails"
        ),
        _ => {}
    }
}
