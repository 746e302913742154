//! DNS messages as carried in one UDP datagram.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::proto::dns::{self, Message, Repr};

const HEADER: usize = 12;
/// A name is cut once its text passes 4 × 255 bytes (every byte escaped as `\ddd`), so one
/// label (up to 63 bytes, escaped) and its dot may go past that, no more.
const MAX_NAME_TEXT: usize = 4 * dns::MAX_NAME_LEN + 1 + 4 * 63;

fuzz_target!(|data: &[u8]| {
    let message = match Message::new_checked(data) {
        Ok(message) => message,
        Err(e) => {
            assert!(data.len() < HEADER, "a {}-byte message refused", data.len());
            assert_eq!(e, dns::Error::Truncated);
            return;
        }
    };
    let mut name = String::new();
    if let Ok(Some((_, after))) = message.first_question(&mut name) {
        assert!(
            after <= data.len(),
            "question section ends past the message"
        );
    }
    if let Ok(Some(repr)) = Repr::parse(&message) {
        assert_eq!(repr.response, message.is_response());
        assert!(!repr.query.is_empty(), "the root is `.`, not empty");
        assert!(
            repr.query.len() <= MAX_NAME_TEXT,
            "name of {}",
            repr.query.len()
        );
        assert!(repr.answers.len() <= dns::MAX_ANSWERS);
        assert!(repr.response || repr.answers.is_empty());
        let _ = (dns::qtype_name(repr.qtype), dns::rcode_name(repr.rcode));
    }
});
