//! DCE/RPC connection-oriented PDUs (C706 §12.6, MS-RPCE §2.2.2): just enough to cut a TCP
//! stream into PDUs and find the NTLMSSP token in an auth verifier (binds, alter contexts and
//! AUTH3 carry the login; requests after it are opaque here).

use core::ops::Range;

use super::{next_boundary, Boundary, Start};

mod field {
    use core::ops::Range;
    pub const VERSION: usize = 0;
    pub const VERSION_MINOR: usize = 1;
    pub const PTYPE: usize = 2;
    pub const DREP: usize = 4;
    pub const FRAG_LENGTH: Range<usize> = 8..10;
    pub const AUTH_LENGTH: Range<usize> = 10..12;
    pub const HEADER_END: usize = 16;
    /// The auth verifier's own header (type, level, pad, reserved, context id) before the token.
    pub const AUTH_HEADER_LEN: usize = 8;
}

/// PDU types that matter for authentication.
pub mod ptype {
    pub const REQUEST: u8 = 0;
    pub const RESPONSE: u8 = 2;
    pub const FAULT: u8 = 3;
    pub const BIND: u8 = 11;
    pub const BIND_ACK: u8 = 12;
    pub const BIND_NAK: u8 = 13;
    pub const ALTER_CONTEXT: u8 = 14;
    pub const ALTER_CONTEXT_RESP: u8 = 15;
    pub const AUTH3: u8 = 16;
}

/// Little-endian integers are flagged in the first data representation byte.
const DREP_LITTLE_ENDIAN: u8 = 0x10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    NotDceRpc,
    BadLength,
    Truncated,
}

impl Error {
    pub const fn name(self) -> &'static str {
        match self {
            Error::NotDceRpc => "not_dcerpc",
            Error::BadLength => "bad_length",
            Error::Truncated => "truncated",
        }
    }
}

fn u16_at(buf: &[u8], at: Range<usize>, little: bool) -> Option<u16> {
    let b = buf.get(at)?;
    let bytes = [b[0], b[1]];
    Some(if little {
        u16::from_le_bytes(bytes)
    } else {
        u16::from_be_bytes(bytes)
    })
}

/// Whether a stream's first bytes look like a connection-oriented bind (for DCE/RPC on the
/// dynamic ports the endpoint mapper hands out).
pub fn looks_like_bind(start: &[u8]) -> bool {
    matches!(
        start,
        [5, 0, ptype::BIND | ptype::ALTER_CONTEXT, _, drep, ..] if drep & !DREP_LITTLE_ENDIAN == 0
    )
}

/// The length of the PDU at the start of `buf`: `Ok(None)` until the fixed header is there.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, Error> {
    if buf.len() < field::HEADER_END {
        return Ok(None);
    }
    if buf[field::VERSION] != 5 || buf[field::VERSION_MINOR] > 1 {
        return Err(Error::NotDceRpc);
    }
    let little = buf[field::DREP] & DREP_LITTLE_ENDIAN != 0;
    let len = usize::from(u16_at(buf, field::FRAG_LENGTH, little).ok_or(Error::Truncated)?);
    if len < field::HEADER_END {
        return Err(Error::BadLength);
    }
    Ok(Some(len))
}

/// Where the next PDU plausibly starts in `data` (see [`starts_message`]).
pub fn next_message(data: &[u8]) -> Boundary {
    next_boundary(data, starts_message)
}

/// Whether a connection-oriented PDU plausibly starts at the front of `buf`: version 5.0 or 5.1,
/// a connection-oriented PTYPE (C706 §12.6.4), a data representation of ASCII and IEEE-style
/// floats in either byte order, and a fragment length that holds the header and the auth
/// verifier it announces. For a stream picked up, or resumed after a gap, inside a PDU.
fn starts_message(buf: &[u8]) -> Start {
    /// REQUEST, RESPONSE, FAULT, then BIND through ORPHANED.
    const CONNECTION_PTYPES: [u8; 12] = [0, 2, 3, 11, 12, 13, 14, 15, 16, 17, 18, 19];
    let Some(header) = buf.get(..field::HEADER_END) else {
        return match buf {
            [5, ..] | [] => Start::Undecided,
            _ => Start::No,
        };
    };
    let drep = &header[field::DREP..field::DREP + 4];
    let little = drep[0] & DREP_LITTLE_ENDIAN != 0;
    let plausible = header[field::VERSION] == 5
        && header[field::VERSION_MINOR] <= 1
        && CONNECTION_PTYPES.contains(&header[field::PTYPE])
        && drep[0] & !DREP_LITTLE_ENDIAN == 0
        && drep[1] <= 3
        && drep[2..] == [0, 0]
        && matches!(
            (u16_at(header, field::FRAG_LENGTH, little), u16_at(header, field::AUTH_LENGTH, little)),
            (Some(frag), Some(auth)) if usize::from(frag) >= field::HEADER_END + usize::from(auth)
        );
    if plausible {
        Start::Yes
    } else {
        Start::No
    }
}

/// A view over one whole PDU.
#[derive(Debug, Clone, Copy)]
pub struct Pdu<'a> {
    buf: &'a [u8],
}

impl<'a> Pdu<'a> {
    /// Checks the header and that the whole fragment is in `buf` (bytes after it are ignored).
    pub fn new_checked(buf: &'a [u8]) -> Result<Pdu<'a>, Error> {
        let len = frame_len(buf)?.ok_or(Error::Truncated)?;
        let buf = buf.get(..len).ok_or(Error::Truncated)?;
        Ok(Pdu { buf })
    }

    pub fn ptype(&self) -> u8 {
        self.buf[field::PTYPE]
    }

    fn little_endian(&self) -> bool {
        self.buf[field::DREP] & DREP_LITTLE_ENDIAN != 0
    }

    /// A BIND_NAK's provider reject reason (C706 §12.6.4.4).
    pub fn reject_reason(&self) -> Option<u16> {
        if self.ptype() != ptype::BIND_NAK {
            return None;
        }
        u16_at(self.buf, 16..18, self.little_endian())
    }

    /// The auth token (e.g. an NTLMSSP message) at the end of the fragment, if there is one.
    pub fn auth_token(&self) -> Result<Option<&'a [u8]>, Error> {
        let auth_len = usize::from(
            u16_at(self.buf, field::AUTH_LENGTH, self.little_endian()).ok_or(Error::Truncated)?,
        );
        if auth_len == 0 {
            return Ok(None);
        }
        let start = self
            .buf
            .len()
            .checked_sub(auth_len)
            .filter(|&at| at >= field::HEADER_END + field::AUTH_HEADER_LEN)
            .ok_or(Error::BadLength)?;
        Ok(Some(&self.buf[start..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::smb2::test_streams;

    fn pdu(ptype: u8, token: &[u8]) -> Vec<u8> {
        let body = [0u8; 12];
        let len = field::HEADER_END + body.len() + field::AUTH_HEADER_LEN + token.len();
        let mut pdu = vec![5, 0, ptype, 3, 0x10, 0, 0, 0];
        pdu.extend_from_slice(&(len as u16).to_le_bytes());
        pdu.extend_from_slice(&(token.len() as u16).to_le_bytes());
        pdu.extend_from_slice(&7u32.to_le_bytes());
        pdu.extend_from_slice(&body);
        pdu.extend_from_slice(&[10, 2, 0, 0, 0, 0, 0, 0]);
        pdu.extend_from_slice(token);
        pdu
    }

    #[test]
    fn resync_finds_every_next_pdu_in_a_real_dcerpc_stream() {
        let Some(dir) = test_streams::pcap_dir() else {
            return;
        };
        // The DCOM connection to the port the endpoint mapper handed out.
        let convs =
            test_streams::tcp_conversations(&dir.join("dce-rpc/dce_rpc_ntlm.pcapng"), 58772);
        assert_eq!(convs.len(), 1);
        for stream in [&convs[0].to_server, &convs[0].to_client] {
            let starts = test_streams::message_starts(stream, frame_len);
            test_streams::assert_resyncs_on_each_next_start(stream, &starts, next_message);
        }
    }

    #[test]
    fn bind_with_an_auth_verifier_gives_its_token() {
        let bytes = pdu(ptype::BIND, b"NTLMSSP\0\x01\0\0\0");
        assert!(looks_like_bind(&bytes));
        assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())));
        let pdu = Pdu::new_checked(&bytes).expect("whole");
        assert_eq!(pdu.ptype(), ptype::BIND);
        assert_eq!(pdu.auth_token(), Ok(Some(&b"NTLMSSP\0\x01\0\0\0"[..])));
    }

    #[test]
    fn lengths_that_do_not_fit_are_refused_and_truncations_never_panic() {
        let mut bytes = pdu(ptype::AUTH3, b"token");
        for len in 0..bytes.len() {
            let _ = Pdu::new_checked(&bytes[..len]).map(|p| p.auth_token());
        }
        bytes[10..12].copy_from_slice(&500u16.to_le_bytes());
        let pdu = Pdu::new_checked(&bytes).expect("whole");
        assert_eq!(pdu.auth_token(), Err(Error::BadLength));
        assert_eq!(
            frame_len(b"\x04\0\x0b\0\x10\0\0\0\0\0\0\0\0\0\0\0"),
            Err(Error::NotDceRpc)
        );
        assert!(!looks_like_bind(b"GET / HTTP/1.1"));
    }
}
