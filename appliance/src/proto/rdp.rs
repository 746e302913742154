//! RDP connection setup (MS-RDPBCGR §2.2.1.1-2): a TPKT header (RFC 1006) carrying an X.224
//! Connection Request or Connection Confirm. Only the first exchange is in clear text: the
//! request names the user (the `mstshash` cookie) and the security protocols the client offers,
//! the confirm says which one the server picked; everything after is TLS or CredSSP.
//!
//! [`frame_len`] cuts a TCP stream at TPKT boundaries; [`Packet`] is a view over one TPKT and
//! [`Repr`] its meaning.

mod field {
    use std::ops::Range;
    // TPKT (RFC 1006 §6)
    pub const VERSION: usize = 0;
    pub const LENGTH: Range<usize> = 2..4;
    pub const TPKT_END: usize = 4;
    // X.224 TPDU header (ISO 8073): length indicator, then the code in the high nibble.
    pub const LI: usize = 4;
    pub const CODE: usize = 5;
    /// CR and CC: LI, code, DST-REF (2), SRC-REF (2), class (1).
    pub const CONNECTION_USER_DATA: usize = 11;
    // RDP_NEG_REQ / RDP_NEG_RSP / RDP_NEG_FAILURE (8 bytes each)
    pub const NEG_TYPE: usize = 0;
    pub const NEG_LENGTH: usize = 2;
    pub const NEG_VALUE: usize = 4;
    pub const NEG_LEN: usize = 8;
}

const TPKT_VERSION: u8 = 3;
const CODE_CONNECTION_REQUEST: u8 = 0xE0;
const CODE_CONNECTION_CONFIRM: u8 = 0xD0;
const NEG_REQ: u8 = 0x01;
const NEG_RSP: u8 = 0x02;
const NEG_FAILURE: u8 = 0x03;
const COOKIE_PREFIX: &[u8] = b"Cookie: mstshash=";
/// Any other first line starting so (a load balancer's routing token) is skipped, not reported.
const TOKEN_PREFIX: &[u8] = b"Cookie: ";
/// A user name longer than this is not a user name; the cookie is cut there.
const MAX_COOKIE_LEN: usize = 256;

/// `requestedProtocols` / `selectedProtocol` flags (MS-RDPBCGR §2.2.1.1.1).
pub mod protocol {
    pub const RDP: u32 = 0;
    pub const SSL: u32 = 1;
    pub const HYBRID: u32 = 2;
    pub const RDSTLS: u32 = 4;
    pub const HYBRID_EX: u32 = 8;
    pub const RDSAAD: u32 = 0x10;
}

/// The name Zeek's rdp.log gives a selected protocol (`security_protocol`).
pub const fn protocol_name(selected: u32) -> &'static str {
    match selected {
        protocol::RDP => "RDP",
        protocol::SSL => "SSL",
        protocol::HYBRID => "HYBRID",
        protocol::RDSTLS => "RDSTLS",
        protocol::HYBRID_EX => "HYBRID_EX",
        protocol::RDSAAD => "RDSAAD",
        _ => "unknown",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    Truncated,
    /// Not TPKT version 3: the stream is not RDP's slow path (or fast-path input we don't read).
    NotTpkt,
    /// The TPKT or X.224 length is smaller than its own header or larger than the message.
    BadLength,
}

impl Error {
    pub const fn name(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::NotTpkt => "not_tpkt",
            Error::BadLength => "bad_length",
        }
    }
}

fn be16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn le16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at + 2)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn le32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The length of the TPKT at the start of `buf`: `Ok(None)` until its 4-byte header is there,
/// then `Ok(Some(len))` (which may exceed `buf.len()`: wait for more). An error means the stream
/// is not TPKT framed and cannot be cut.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, Error> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    if version != TPKT_VERSION {
        return Err(Error::NotTpkt);
    }
    let Some(len) = be16(buf, field::LENGTH.start) else {
        return Ok(None);
    };
    let len = usize::from(len);
    if len < field::TPKT_END {
        return Err(Error::BadLength);
    }
    Ok(Some(len))
}

/// A view over one TPKT carrying an X.224 TPDU.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks that the TPKT and the X.224 header fit: afterwards every accessor is in bounds.
    /// Bytes past the TPKT length are ignored (they belong to the next message).
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let buf = buffer.as_ref();
        if buf.len() < field::CODE + 1 {
            return Err(Error::Truncated);
        }
        if buf[field::VERSION] != TPKT_VERSION {
            return Err(Error::NotTpkt);
        }
        let len = usize::from(be16(buf, field::LENGTH.start).ok_or(Error::Truncated)?);
        if len > buf.len() {
            return Err(Error::Truncated);
        }
        // The length indicator counts the header bytes after itself; the code byte is one.
        let li = usize::from(buf[field::LI]);
        if li == 0 || field::LI + 1 + li > len {
            return Err(Error::BadLength);
        }
        Ok(Packet { buffer })
    }

    fn buf(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn tpkt_length(&self) -> usize {
        be16(self.buf(), field::LENGTH.start).map_or(0, usize::from)
    }

    /// The X.224 TPDU code (high nibble of the second header byte; the low nibble is credit).
    pub fn tpdu_code(&self) -> u8 {
        self.buf().get(field::CODE).map_or(0, |c| c & 0xF0)
    }

    /// The bytes after the X.224 header, up to the end of the TPKT.
    pub fn user_data(&self) -> &[u8] {
        let buf = self.buf();
        let li = buf.get(field::LI).map_or(0, |&li| usize::from(li));
        buf.get(field::LI + 1 + li..self.tpkt_length())
            .unwrap_or(&[])
    }
}

/// The meaning of one TPKT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repr {
    ConnectionRequest {
        /// The `mstshash` cookie without its prefix: the user name the client typed, or a prefix
        /// of it (mstsc cuts it at 9 characters).
        cookie: Option<String>,
        /// `requestedProtocols` flags, when an RDP Negotiation Request is present (old clients
        /// send none, which means standard RDP security).
        requested_protocols: Option<u32>,
    },
    ConnectionConfirm {
        /// The protocol the server picked (see [`protocol`]).
        selected_protocol: Option<u32>,
        /// RDP_NEG_FAILURE's code, e.g. 1 SSL_REQUIRED_BY_SERVER, 5 HYBRID_REQUIRED_BY_SERVER.
        failure_code: Option<u32>,
    },
    /// Any other TPDU (data, disconnect): encrypted or uninteresting here.
    Other { tpdu_code: u8 },
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        match packet.tpdu_code() {
            CODE_CONNECTION_REQUEST => Ok(parse_request(connection_data(packet))),
            CODE_CONNECTION_CONFIRM => Ok(parse_confirm(connection_data(packet))),
            tpdu_code => Ok(Repr::Other { tpdu_code }),
        }
    }
}

/// CR and CC carry their variable part after the fixed 7-byte header; a short LI leaves none.
fn connection_data<T: AsRef<[u8]>>(packet: &Packet<T>) -> &[u8] {
    let buf = packet.buf();
    buf.get(field::CONNECTION_USER_DATA..packet.tpkt_length())
        .unwrap_or(&[])
}

/// The negotiation structure of `kind` at the start of `data`, as its 4-byte value.
fn negotiation(data: &[u8], kind: u8) -> Option<u32> {
    if data.len() < field::NEG_LEN || data.get(field::NEG_TYPE) != Some(&kind) {
        return None;
    }
    if le16(data, field::NEG_LENGTH)? != field::NEG_LEN as u16 {
        return None;
    }
    le32(data, field::NEG_VALUE)
}

fn parse_request(data: &[u8]) -> Repr {
    let mut rest = data;
    let mut cookie = None;
    if rest.starts_with(TOKEN_PREFIX) {
        // The line ends with CRLF; without one the whole remainder is the token.
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(rest.len());
        let line = rest.get(..end).unwrap_or(rest);
        if let Some(name) = line.strip_prefix(COOKIE_PREFIX) {
            let name = name.get(..MAX_COOKIE_LEN).unwrap_or(name);
            cookie = Some(String::from_utf8_lossy(name).into_owned());
        }
        rest = rest.get(end + 2..).unwrap_or(&[]);
    }
    Repr::ConnectionRequest {
        cookie,
        requested_protocols: negotiation(rest, NEG_REQ),
    }
}

fn parse_confirm(data: &[u8]) -> Repr {
    Repr::ConnectionConfirm {
        selected_protocol: negotiation(data, NEG_RSP),
        failure_code: negotiation(data, NEG_FAILURE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::smb2::test_streams;

    fn tpkt(tpdu: &[u8]) -> Vec<u8> {
        let mut out = vec![3, 0];
        out.extend_from_slice(&((tpdu.len() + 4) as u16).to_be_bytes());
        out.extend_from_slice(tpdu);
        out
    }

    fn connection(code: u8, data: &[u8]) -> Vec<u8> {
        let mut tpdu = vec![(6 + data.len()) as u8, code, 0, 0, 0x12, 0x34, 0];
        tpdu.extend_from_slice(data);
        tpkt(&tpdu)
    }

    fn neg(kind: u8, value: u32) -> Vec<u8> {
        let mut out = vec![kind, 0, 8, 0];
        out.extend_from_slice(&value.to_le_bytes());
        out
    }

    fn parse(bytes: &[u8]) -> Result<Repr, Error> {
        Repr::parse(&Packet::new_checked(bytes)?)
    }

    #[test]
    fn connection_request_gives_cookie_and_requested_protocols() {
        let mut data = b"Cookie: mstshash=alice\r\n".to_vec();
        data.extend(neg(NEG_REQ, protocol::SSL | protocol::HYBRID));
        let msg = connection(CODE_CONNECTION_REQUEST, &data);
        assert_eq!(frame_len(&msg), Ok(Some(msg.len())));
        assert_eq!(
            parse(&msg),
            Ok(Repr::ConnectionRequest {
                cookie: Some("alice".into()),
                requested_protocols: Some(3),
            })
        );
    }

    #[test]
    fn request_without_cookie_or_negotiation_is_legacy_rdp() {
        assert_eq!(
            parse(&connection(CODE_CONNECTION_REQUEST, &[])),
            Ok(Repr::ConnectionRequest {
                cookie: None,
                requested_protocols: None
            })
        );
        // A routing token is skipped, and the negotiation request after it still read.
        let mut data = b"Cookie: msts=3640205228.15629.0000\r\n".to_vec();
        data.extend(neg(NEG_REQ, protocol::HYBRID_EX));
        assert_eq!(
            parse(&connection(CODE_CONNECTION_REQUEST, &data)),
            Ok(Repr::ConnectionRequest {
                cookie: None,
                requested_protocols: Some(protocol::HYBRID_EX)
            })
        );
    }

    #[test]
    fn connection_confirm_gives_selected_protocol_or_failure() {
        assert_eq!(
            parse(&connection(CODE_CONNECTION_CONFIRM, &neg(NEG_RSP, 2))),
            Ok(Repr::ConnectionConfirm {
                selected_protocol: Some(protocol::HYBRID),
                failure_code: None
            })
        );
        assert_eq!(
            parse(&connection(CODE_CONNECTION_CONFIRM, &neg(NEG_FAILURE, 5))),
            Ok(Repr::ConnectionConfirm {
                selected_protocol: None,
                failure_code: Some(5)
            })
        );
        assert_eq!(protocol_name(2), "HYBRID");
    }

    #[test]
    fn hostile_lengths_are_refused_and_truncations_never_panic() {
        let mut data = b"Cookie: mstshash=alice\r\n".to_vec();
        data.extend(neg(NEG_REQ, 3));
        let msg = connection(CODE_CONNECTION_REQUEST, &data);
        for len in 0..msg.len() {
            let _ = frame_len(&msg[..len]);
            assert!(parse(&msg[..len]).is_err(), "prefix {len} accepted");
        }
        assert_eq!(frame_len(&[]), Ok(None));
        assert_eq!(frame_len(&[3, 0, 0]), Ok(None));
        assert_eq!(frame_len(&[3, 0, 0, 2]), Err(Error::BadLength));
        assert_eq!(frame_len(&[0x16, 3, 1, 0]), Err(Error::NotTpkt));
        // LI claims more header than the TPKT holds.
        let mut bad = msg.clone();
        bad[4] = 0xff;
        assert_eq!(parse(&bad), Err(Error::BadLength));
        // LI of zero.
        bad[4] = 0;
        assert_eq!(parse(&bad), Err(Error::BadLength));
        // A cookie with no CRLF and a huge name is cut, not trusted.
        let mut long = b"Cookie: mstshash=".to_vec();
        long.extend(vec![b'a'; 1000]);
        let mut tpdu = vec![6, CODE_CONNECTION_REQUEST, 0, 0, 0, 0, 0];
        tpdu.extend(&long);
        match parse(&tpkt(&tpdu)) {
            Ok(Repr::ConnectionRequest {
                cookie: Some(c), ..
            }) => assert_eq!(c.len(), MAX_COOKIE_LEN),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rdp_to_ssl_capture_matches_zeek_rdp_log() {
        let Some(dir) = test_streams::pcap_dir() else {
            return;
        };
        let conversations = test_streams::tcp_conversations(&dir.join("rdp/rdp-to-ssl.pcap"), 3389);
        // rdp.log: two connections, cookie AWAKECODI, security_protocol HYBRID.
        assert_eq!(conversations.len(), 2);
        for conv in &conversations {
            let len = frame_len(&conv.to_server).unwrap().unwrap();
            assert_eq!(
                parse(&conv.to_server[..len]).unwrap(),
                Repr::ConnectionRequest {
                    cookie: Some("AWAKECODI".into()),
                    requested_protocols: Some(protocol::SSL | protocol::HYBRID),
                }
            );
            let len = frame_len(&conv.to_client).unwrap().unwrap();
            match parse(&conv.to_client[..len]).unwrap() {
                Repr::ConnectionConfirm {
                    selected_protocol: Some(p),
                    failure_code: None,
                } => assert_eq!(protocol_name(p), "HYBRID"),
                other => panic!("{other:?}"),
            }
        }
    }
}
