//! NTLMSSP messages, parsed directly and as a carrier finds them inside a larger blob.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::proto::ntlm::{self, Message};

/// Security buffers longer than 1024 bytes are refused, so no name renders longer than that.
const MAX_FIELD_CHARS: usize = 1024;

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(msg) = ntlm::find(data) {
        assert!(
            msg.starts_with(b"NTLMSSP\0"),
            "find() returned a non-message"
        );
        assert!(
            data.ends_with(msg),
            "find() returned bytes outside the blob"
        );
        check(msg);
    }
});

fn check(msg: &[u8]) {
    let short = |s: &str| s.chars().count() <= MAX_FIELD_CHARS;
    match Message::parse(msg) {
        Ok(Message::Negotiate {
            domain,
            workstation,
            ..
        }) => {
            assert!(domain.as_deref().is_none_or(short));
            assert!(workstation.as_deref().is_none_or(short));
        }
        Ok(Message::Challenge { target, .. }) => assert!(short(&target)),
        Ok(Message::Authenticate {
            domain,
            user,
            workstation,
            anonymous,
            ..
        }) => {
            assert!(short(&domain) && short(&user) && short(&workstation));
            assert!(
                !anonymous || user.is_empty(),
                "an anonymous login names a user"
            );
        }
        Err(_) => {}
    }
}
