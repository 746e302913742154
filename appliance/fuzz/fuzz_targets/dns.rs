//! DNS messages as carried in one UDP datagram: ordinary DNS, DNS recognised by content on an
//! odd port, and the local name protocols (mDNS, LLMNR, and NBNS with its encoded names and
//! records) as the analyzer reads them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::proto::dns::{self, Message, Repr};
use vigil::proto::nbns;

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
    let after = match message.first_question(&mut name) {
        Ok(Some((_, after))) => {
            assert!(
                after <= data.len(),
                "question section ends past the message"
            );
            netbios_name(&name);
            after
        }
        Ok(None) => dns::HEADER_LEN,
        Err(_) => {
            assert!(!dns::looks_like_dns(data), "DNS by content that does not parse");
            return;
        }
    };
    if dns::looks_like_dns(data) {
        assert_eq!(message.question_count(), 1);
        assert_eq!(message.opcode(), 0);
    }
    if let Ok(records) = message.answers_and_additionals(after) {
        assert!(records.len() <= dns::MAX_ANSWERS);
        for (owner, record) in &records {
            assert!(record.rdata.start >= after && record.rdata.end <= data.len());
            let _ = message.rdata_text(record);
            netbios_name(owner);
            let rdata = message.rdata(record);
            if let Ok(entries) = nbns::nb_addresses(rdata) {
                assert_eq!(entries.len() * 6, rdata.len());
            }
            if let Ok(names) = nbns::status_names(rdata) {
                assert!(names.len() * 18 < rdata.len());
            }
        }
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

/// A name decoded as NetBIOS reads back from its display form (`WS01<20>`), as the device table
/// reads it from an event.
fn netbios_name(dotted: &str) {
    if let Ok(name) = nbns::decode_name(dotted) {
        assert_eq!(nbns::parse_display(&name.to_string()), Some(name));
    }
}
