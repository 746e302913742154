//! What the fuzz targets share: cutting a TCP stream into messages the way the analyzer does,
//! while holding each protocol's `frame_len` to its documented contract.

use std::fmt::Debug;

use vigil::proto::Boundary;

/// The promises a `frame_len` makes, per protocol.
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    /// `Ok(None)` ("wait for the header") is only allowed while fewer bytes than this are there.
    pub header: usize,
    /// No frame is shorter than this (a zero-length frame would stall the stream).
    pub min: usize,
    /// Nor longer than this (the protocol's own limit: the analyzer buffers up to it).
    pub max: usize,
}

/// Cuts `stream` into whole frames with `frame_len`, checking on each call that the answer keeps
/// to `framing`, and that a whole frame cut out alone still measures the same (the analyzer
/// hands the cut frame back to the parser, e.g. Kerberos' `tcp_payload`). Stops at the first
/// error or incomplete frame, as the analyzer does.
pub fn frames<E: Debug + PartialEq>(
    stream: &[u8],
    framing: Framing,
    frame_len: impl Fn(&[u8]) -> Result<Option<usize>, E>,
) -> Vec<&[u8]> {
    let mut rest = stream;
    let mut out = Vec::new();
    loop {
        match frame_len(rest) {
            Err(_) => return out,
            Ok(None) => {
                assert!(
                    rest.len() < framing.header,
                    "frame_len waits for a header with {} bytes there",
                    rest.len()
                );
                return out;
            }
            Ok(Some(len)) => {
                assert!(
                    (framing.min..=framing.max).contains(&len),
                    "frame_len {len} is outside {}..={}",
                    framing.min,
                    framing.max
                );
                let Some(frame) = rest.get(..len) else {
                    return out;
                };
                assert_eq!(
                    frame_len(frame),
                    Ok(Some(len)),
                    "a whole frame measures differently alone"
                );
                out.push(frame);
                rest = &rest[len..];
            }
        }
    }
}

/// Where a framer that lost its place in `stream` (picked up mid-connection, after a gap) finds
/// the next message with `next`, checking the answer lies in the stream: the stream from that
/// message on, or `None` while no start is in sight.
pub fn resync(stream: &[u8], next: fn(&[u8]) -> Boundary) -> Option<&[u8]> {
    match next(stream) {
        Boundary::At(at) => {
            assert!(at < stream.len(), "a start at {at} of {}", stream.len());
            Some(&stream[at..])
        }
        Boundary::NotYet { discard } => {
            assert!(
                discard <= stream.len(),
                "{discard} of {} discarded",
                stream.len()
            );
            None
        }
    }
}
