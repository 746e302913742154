//! HTTP request heads at the start of a reassembled client stream, and after the next request
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
    let parsed = http::parse_request(data, MAX_HEAD);
    match &parsed {
        Ok(Parsed::Complete(request, len)) => {
            assert!(*len > 0 && *len <= data.len(), "head of {len} bytes");
            // A head ends where it says: alone it parses the same.
            assert_eq!(
                http::parse_request(&data[..*len], MAX_HEAD),
                Ok(Parsed::Complete(request.clone(), *len))
            );
        }
        Ok(Parsed::Partial) => assert!(data.len() <= MAX_HEAD),
        Err(Error::HeadTooLarge) => assert!(data.len() > MAX_HEAD),
        Err(_) => {}
    }
    // The limit only turns "need more" into "too large".
    let small = http::parse_request(data, SMALL_HEAD);
    match parsed {
        Ok(Parsed::Partial) if data.len() > SMALL_HEAD => {
            assert_eq!(small, Err(Error::HeadTooLarge))
        }
        other => assert_eq!(small, other),
    }
    let _ = http::looks_like_request(data);
    // The input as a client stream picked up mid-message, from the next request line.
    if let Some(rest) = resync(data, http::next_request) {
        let _ = http::parse_request(rest, MAX_HEAD);
    }
});
