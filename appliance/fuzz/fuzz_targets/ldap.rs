//! LDAP over TCP: the input is one direction of a stream, cut into BER messages as the analyzer
//! does; each message, and the input as one message, is parsed; and the input as a stream
//! picked up mid-message, from where the framer finds its place again. A search's filter tree
//! is rendered and round-tripped through postcard.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::proto::ldap::{self, Op, Repr};
use vigil_plugin_sdk::LdapFilter;
use vigil_fuzz::{frames, resync, Framing};

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
    // The input as a stream picked up mid-message: a start found is one the framer can measure.
    if let Some(rest) = resync(data, ldap::next_message) {
        assert!(
            matches!(ldap::frame_len(rest), Ok(Some(_))),
            "unframeable start"
        );
        for message in frames(rest, framing, ldap::frame_len) {
            check(message);
        }
    }
});

/// A search's filter tree renders as one parenthesised filter and
/// crosses the plugin boundary (postcard, as in a batch) unchanged.
fn check(message: &[u8]) {
    if let Ok(Repr {
        op: Op::SearchRequest { filter, .. },
        ..
    }) = Repr::parse(message)
    {
        let text = filter.to_string();
        assert!(text.starts_with('(') && text.ends_with(')'), "{text}");
        let wire = postcard::to_allocvec(&filter).expect("a filter encodes");
        let decoded: LdapFilter = postcard::from_bytes(&wire).expect("a filter decodes");
        assert_eq!(decoded, filter);
    }
}
