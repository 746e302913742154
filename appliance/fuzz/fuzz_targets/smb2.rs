//! SMB over TCP: the input is one direction of a stream, cut into NetBIOS frames as the analyzer
//! does, then every SMB message of each frame (SMB2 compounds, SMB1 AndX chains); and the input
//! as a stream picked up mid-message, from where the framer finds its place again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::proto::smb1::{self, Command};
use vigil::proto::smb2::{self, Body, Repr};
use vigil_fuzz::{frames, resync, Framing};

const NETBIOS_HEADER: usize = 4;
const SMB2_HEADER: usize = 64;

fuzz_target!(|data: &[u8]| {
    // NetBIOS lengths are 24 bits.
    let framing = Framing {
        header: NETBIOS_HEADER,
        min: NETBIOS_HEADER,
        max: NETBIOS_HEADER + 0xff_ffff,
    };
    for bytes in frames(data, framing, smb2::frame_len) {
        let frame = smb2::Frame::new_checked(bytes).expect("a whole frame is a Frame");
        assert_eq!(frame.payload().len(), bytes.len() - NETBIOS_HEADER);
        if frame.is_session_message() {
            walk(frame.payload());
        }
    }
    let _ = smb2::looks_like_smb(data);
    // The input as a stream picked up mid-message: a start found is one the framer can measure.
    if let Some(rest) = resync(data, smb2::next_message) {
        assert!(
            matches!(smb2::frame_len(rest), Ok(Some(_))),
            "unframeable start"
        );
    }
    // The messages alone too, so mutations need not keep a NetBIOS header consistent.
    walk(data);
});

fn walk(payload: &[u8]) {
    let mut count = 0;
    for message in smb2::messages(payload) {
        count += 1;
        // Every compound link moves at least one header forward: the walk must end.
        assert!(
            count <= payload.len() / SMB2_HEADER + 1,
            "messages() stalled"
        );
        match message {
            Ok(Repr::Smb2 {
                body: Body::TreeConnectRequest { path },
                ..
            }) => {
                // At most 2048 bytes of UTF-16.
                assert!(path.chars().count() <= 1024, "tree path of {}", path.len());
            }
            Ok(Repr::Smb1(message)) => smb1_chain(&message),
            _ => {}
        }
    }
}

/// Every AndX link moves forward and the chain is bounded; strings stay bounded.
fn smb1_chain(message: &smb1::Repr) {
    assert!(message.commands.len() <= 8, "AndX chain of {}", message.commands.len());
    for command in &message.commands {
        match command {
            Command::NegotiateRequest { dialects } => assert!(dialects.len() <= 64),
            Command::TreeConnectRequest { path } => assert!(path.chars().count() <= 1024),
            _ => {}
        }
    }
}
