//! LDAP over TCP: the input is one direction of a stream, cut into BER messages as the analyzer
//! does; each message, and the input as one message, is parsed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::proto::ldap::{self, Op, Repr};
use vigil_fuzz::{frames, Framing};

fuzz_target!(|data: &[u8]| {
    // Tag, then a length of at most 1 + 4 bytes.
    let framing = Framing {
        header: 6,
        min: 2,
        max: 6 + ldap::MAX_MESSAGE_LEN,
    };
    for message in frames(data, framing, ldap::frame_len) {
        check(message);
    }
    check(data);
});

fn check(message: &[u8]) {
    if let Ok(Repr {
        op: Op::SearchRequest { filter, .. },
        ..
    }) = Repr::parse(message)
    {
        assert!(filter.starts_with('(') && filter.ends_with(')'), "{filter}");
    }
}
