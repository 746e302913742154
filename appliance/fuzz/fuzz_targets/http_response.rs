//! HTTP response heads at the start of a reassembled server stream, and after the next status
//! line of one picked up mid-message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::proto::http::{self, Error, Parsed};
use vigil_fuzz::resync;

/// The analyzer's limit.
const MAX_HEAD: usize = 64 * 1024;
/// A small limit, so the fuzzer reaches `HeadTooLarge` with small inputs.
const SMALL_HEAD: usize = 64;

fuzz_target!(|data: &[u8]| {
    let parsed = http::parse_response(data, MAX_HEAD);
    match &parsed {
        Ok(Parsed::Complete(response, len)) => {
            assert!(*len > 0 && *len <= data.len(), "head of {len} bytes");
            // A head ends where it says: alone it parses the same.
            assert_eq!(
                http::parse_response(&data[..*len], MAX_HEAD),
                Ok(Parsed::Complete(response.clone(), *len))
            );
        }
        Ok(Parsed::Partial) => assert!(data.len() <= MAX_HEAD),
        Err(Error::HeadTooLarge) => assert!(data.len() > MAX_HEAD),
        Err(_) => {}
    }
    // The limit only turns "need more" into "too large".
    let small = http::parse_response(data, SMALL_HEAD);
    match parsed {
        Ok(Parsed::Partial) if data.len() > SMALL_HEAD => {
            assert_eq!(small, Err(Error::HeadTooLarge))
        }
        other => assert_eq!(small, other),
    }
    // The input as a server stream picked up mid-message, from the next status line.
    if let Some(rest) = resync(data, http::next_response) {
        let _ = http::parse_response(rest, MAX_HEAD);
    }
});
