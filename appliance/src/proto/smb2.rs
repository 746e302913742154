//! SMB over TCP (445, and 139 after a NetBIOS session request): the NetBIOS session service
//! framing (RFC 1002 §4.3), SMB2/3 messages (MS-SMB2 §2.2) with their compound chains, SMB1
//! messages (read in [`super::smb1`]), and SMB3 transform headers, which mark an encrypted message
//! we recognise and skip.
//!
//! [`frame_len`] cuts the stream into NetBIOS frames; [`Frame`] is a view over one; [`messages`]
//! walks the SMB messages inside it, each a [`Repr`]. Only what a detector needs is decoded:
//! dialects, NTLMSSP inside session setups, tree paths and share types, and every header's status.

use super::{next_boundary, ntlm, smb1, Boundary, Start};

mod field {
    use std::ops::Range;
    // NetBIOS session service header
    pub const NB_TYPE: usize = 0;
    pub const NB_LENGTH: Range<usize> = 1..4;
    pub const NB_END: usize = 4;
    // SMB2 header (MS-SMB2 §2.2.1), offsets from its first byte
    pub const PROTOCOL: Range<usize> = 0..4;
    pub const STRUCTURE_SIZE: usize = 4;
    pub const STATUS: usize = 8;
    pub const COMMAND: usize = 12;
    pub const FLAGS: usize = 16;
    pub const NEXT_COMMAND: usize = 20;
    pub const MESSAGE_ID: usize = 24;
    pub const TREE_ID: usize = 36;
    pub const SESSION_ID: usize = 40;
    pub const HEADER_END: usize = 64;
    // Bodies, offsets from the body's first byte
    pub const NEGOTIATE_REQ_DIALECT_COUNT: usize = 2;
    pub const NEGOTIATE_REQ_DIALECTS: usize = 36;
    pub const NEGOTIATE_RSP_DIALECT: usize = 4;
    pub const SESSION_SETUP_REQ_BUFFER: usize = 12;
    pub const SESSION_SETUP_RSP_BUFFER: usize = 4;
    pub const TREE_CONNECT_REQ_PATH: usize = 4;
    pub const TREE_CONNECT_RSP_SHARE_TYPE: usize = 2;
    // SMB3 transform header (§2.2.41)
    pub const TRANSFORM_ORIGINAL_SIZE: usize = 36;
    pub const TRANSFORM_SESSION_ID: usize = 44;
    pub const TRANSFORM_END: usize = 52;
}

const PROTOCOL_SMB2: &[u8] = b"\xfeSMB";
const PROTOCOL_TRANSFORM: &[u8] = b"\xfdSMB";
const PROTOCOL_COMPRESSED: &[u8] = b"\xfcSMB";
const HEADER_STRUCTURE_SIZE: u16 = 64;
const FLAG_SERVER_TO_REDIR: u32 = 0x0000_0001;
/// NetBIOS session message; the others (0x81 request, 0x82/0x83 responses, 0x84 retarget,
/// 0x85 keep-alive) are framing only.
pub const NETBIOS_SESSION_MESSAGE: u8 = 0x00;
const NETBIOS_TYPES: [u8; 6] = [0x00, 0x81, 0x82, 0x83, 0x84, 0x85];
/// Tree paths longer than this (in bytes of UTF-16) are not paths.
const MAX_PATH_LEN: usize = 2048;

/// SMB2 command codes (MS-SMB2 §2.2.1.2).
pub mod command {
    pub const NEGOTIATE: u16 = 0;
    pub const SESSION_SETUP: u16 = 1;
    pub const LOGOFF: u16 = 2;
    pub const TREE_CONNECT: u16 = 3;
    pub const TREE_DISCONNECT: u16 = 4;
    pub const CREATE: u16 = 5;
}

/// NTSTATUS values, named once in the SDK for the core and the plugins alike.
pub use vigil_plugin_sdk::ntstatus as status;

/// The name Zeek's smb_mapping.log gives a share type.
pub const fn share_type_name(share_type: u8) -> &'static str {
    match share_type {
        1 => "DISK",
        2 => "PIPE",
        3 => "PRINT",
        _ => "UNKNOWN",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    Truncated,
    /// A NetBIOS message type that does not exist: the stream is not SMB (or lost sync).
    NotNetbios,
    /// The message starts with none of the SMB protocol ids.
    NotSmb,
    /// An SMB2 header whose structure size is not 64.
    BadHeader,
    /// A compound `NextCommand` that is unaligned, shorter than a header or past the frame.
    BadNextCommand,
    /// A body's offset/length pair points outside the message.
    FieldOutOfBounds,
    /// An SMB1 AndX offset that does not move forward.
    BadAndXOffset,
}

impl Error {
    pub const fn name(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::NotNetbios => "not_netbios",
            Error::NotSmb => "not_smb",
            Error::BadHeader => "bad_header",
            Error::BadNextCommand => "bad_next_command",
            Error::FieldOutOfBounds => "field_out_of_bounds",
            Error::BadAndXOffset => "bad_andx_offset",
        }
    }
}

fn le16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn le32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn le64(buf: &[u8], at: usize) -> Option<u64> {
    let b = buf.get(at..at.checked_add(8)?)?;
    let mut bytes = [0; 8];
    bytes.copy_from_slice(b);
    Some(u64::from_le_bytes(bytes))
}

/// The length of the NetBIOS frame at the start of `buf`, header included: `Ok(None)` until the
/// 4-byte header is there, then `Ok(Some(len))` (which may exceed `buf.len()`: wait for more).
/// An unknown message type means the stream is not SMB and cannot be cut.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, Error> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    if !NETBIOS_TYPES.contains(&kind) {
        return Err(Error::NotNetbios);
    }
    let Some(len) = buf.get(field::NB_LENGTH) else {
        return Ok(None);
    };
    // Direct TCP (445) uses all 24 bits; RFC 1002's 17-bit limit is a subset of that.
    let len = u32::from_be_bytes([0, len[0], len[1], len[2]]) as usize;
    Ok(Some(field::NB_END + len))
}

/// Whether a stream's first bytes are a NetBIOS session message carrying SMB (any version), for
/// SMB on a port other than 445 and 139.
pub fn looks_like_smb(start: &[u8]) -> bool {
    start.first() == Some(&NETBIOS_SESSION_MESSAGE)
        && matches!(
            start.get(field::NB_END..field::NB_END + 4),
            Some(id) if id == PROTOCOL_SMB2 || id == smb1::PROTOCOL || id == PROTOCOL_TRANSFORM
        )
}

/// Where the next NetBIOS frame carrying SMB plausibly starts in `data` (see [`starts_message`]).
pub fn next_message(data: &[u8]) -> Boundary {
    next_boundary(data, starts_message)
}

/// Whether a NetBIOS session message carrying SMB plausibly starts at the front of `buf`: type
/// 0x00, a length that holds at least the SMB header, then an SMB protocol id (and, for SMB2,
/// its fixed header size). For a stream picked up, or resumed after a gap, inside a message.
fn starts_message(buf: &[u8]) -> Start {
    let Some(header) = buf.get(..field::NB_END + field::STRUCTURE_SIZE + 2) else {
        return if buf.first().is_some_and(|&t| t != NETBIOS_SESSION_MESSAGE) {
            Start::No
        } else {
            Start::Undecided
        };
    };
    let len = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
    let smb = &header[field::NB_END..];
    let protocol = &smb[field::PROTOCOL];
    let plausible = header[field::NB_TYPE] == NETBIOS_SESSION_MESSAGE
        && if protocol == PROTOCOL_SMB2 {
            le16(smb, field::STRUCTURE_SIZE) == Some(HEADER_STRUCTURE_SIZE)
                && len >= field::HEADER_END
        } else if protocol == PROTOCOL_TRANSFORM {
            len >= field::TRANSFORM_END
        } else {
            protocol == smb1::PROTOCOL && len >= smb1::field::HEADER_END
        };
    if plausible {
        Start::Yes
    } else {
        Start::No
    }
}

/// A view over one NetBIOS session service frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Checks the type and that the whole frame is present; bytes after it are ignored.
    pub fn new_checked(buffer: T) -> Result<Frame<T>, Error> {
        match frame_len(buffer.as_ref())? {
            Some(len) if len <= buffer.as_ref().len() => Ok(Frame { buffer }),
            _ => Err(Error::Truncated),
        }
    }

    pub fn message_type(&self) -> u8 {
        self.buffer
            .as_ref()
            .get(field::NB_TYPE)
            .copied()
            .unwrap_or(0)
    }

    /// The frame carries SMB (the other types are session setup and keep-alives).
    pub fn is_session_message(&self) -> bool {
        self.message_type() == NETBIOS_SESSION_MESSAGE
    }

    pub fn payload(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        let end = frame_len(buf).ok().flatten().unwrap_or(field::NB_END);
        buf.get(field::NB_END..end).unwrap_or(&[])
    }
}

/// A view over one SMB2 message: its 64-byte header and the body up to the next compound
/// message (or the end of the frame).
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    /// From the header's first byte to the end of this message.
    buf: &'a [u8],
}

impl<'a> Header<'a> {
    /// Checks the protocol id, the structure size and that the header fits. A `NextCommand`
    /// past the end of `buf` is refused.
    pub fn new_checked(buf: &'a [u8]) -> Result<Header<'a>, Error> {
        if buf.len() < field::HEADER_END {
            return Err(Error::Truncated);
        }
        if buf.get(field::PROTOCOL) != Some(PROTOCOL_SMB2) {
            return Err(Error::NotSmb);
        }
        if le16(buf, field::STRUCTURE_SIZE) != Some(HEADER_STRUCTURE_SIZE) {
            return Err(Error::BadHeader);
        }
        let next = le32(buf, field::NEXT_COMMAND).ok_or(Error::Truncated)? as usize;
        let end = match next {
            0 => buf.len(),
            n if n < field::HEADER_END || n % 8 != 0 || n > buf.len() => {
                return Err(Error::BadNextCommand)
            }
            n => n,
        };
        Ok(Header {
            buf: buf.get(..end).ok_or(Error::BadNextCommand)?,
        })
    }

    pub fn status(&self) -> u32 {
        le32(self.buf, field::STATUS).unwrap_or(0)
    }

    pub fn command(&self) -> u16 {
        le16(self.buf, field::COMMAND).unwrap_or(0)
    }

    pub fn flags(&self) -> u32 {
        le32(self.buf, field::FLAGS).unwrap_or(0)
    }

    pub fn is_response(&self) -> bool {
        self.flags() & FLAG_SERVER_TO_REDIR != 0
    }

    /// Offset of the next message in a compound chain, from this header; 0 for the last.
    pub fn next_command(&self) -> u32 {
        le32(self.buf, field::NEXT_COMMAND).unwrap_or(0)
    }

    pub fn message_id(&self) -> u64 {
        le64(self.buf, field::MESSAGE_ID).unwrap_or(0)
    }

    /// The tree id of a synchronous message (async messages carry an async id there instead).
    pub fn tree_id(&self) -> u32 {
        le32(self.buf, field::TREE_ID).unwrap_or(0)
    }

    pub fn session_id(&self) -> u64 {
        le64(self.buf, field::SESSION_ID).unwrap_or(0)
    }

    /// The whole message, header included: body offsets are counted from its start.
    pub fn message(&self) -> &'a [u8] {
        self.buf
    }

    pub fn body(&self) -> &'a [u8] {
        self.buf.get(field::HEADER_END..).unwrap_or(&[])
    }

    /// A buffer given as (offset from the header, length) at `at` in the body.
    fn buffer_at(&self, at: usize) -> Result<&'a [u8], Error> {
        let body = self.body();
        let offset = usize::from(le16(body, at).ok_or(Error::Truncated)?);
        let len = usize::from(le16(body, at + 2).ok_or(Error::Truncated)?);
        if len == 0 {
            return Ok(&[]);
        }
        self.buf
            .get(offset..offset + len)
            .ok_or(Error::FieldOutOfBounds)
    }
}

/// The fields every SMB2 header gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRepr {
    pub command: u16,
    pub status: u32,
    pub is_response: bool,
    pub message_id: u64,
    pub session_id: u64,
    pub tree_id: u32,
}

/// What an SMB2 message body says, for the commands a detector needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    NegotiateRequest {
        /// Dialect revisions offered, e.g. 0x0202, 0x0210, 0x0300, 0x0302, 0x0311.
        dialects: Vec<u16>,
    },
    NegotiateResponse {
        dialect: u16,
    },
    SessionSetupRequest {
        /// The NTLMSSP message in the security blob (NEGOTIATE, then AUTHENTICATE), or `None`
        /// when the blob carries none (Kerberos, or empty).
        ntlm: Option<Result<ntlm::Message, ntlm::Error>>,
    },
    SessionSetupResponse {
        /// The server's NTLMSSP CHALLENGE, present while the status is MORE_PROCESSING_REQUIRED.
        ntlm: Option<Result<ntlm::Message, ntlm::Error>>,
    },
    TreeConnectRequest {
        /// The UNC path, e.g. `\\10.77.0.10\IPC$`.
        path: String,
    },
    TreeConnectResponse {
        /// 1 DISK, 2 PIPE, 3 PRINT (see [`share_type_name`]); `None` in an error response.
        share_type: Option<u8>,
    },
    /// Any other command, or an error response to one of the above: the header says which.
    Other,
}

/// One SMB message inside a NetBIOS frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repr {
    Smb2 {
        header: HeaderRepr,
        body: Body,
    },
    Smb1(smb1::Repr),
    /// An SMB3 transform header: the rest of the frame is encrypted and skipped.
    Encrypted {
        session_id: u64,
        original_size: u32,
    },
    /// An SMB 3.1.1 compression transform: skipped, not decompressed.
    Compressed,
}

/// Iterates the SMB messages in one NetBIOS frame's payload: every message of an SMB2 compound
/// chain, or the single SMB1 / transformed message. Stops after the first error.
pub fn messages(payload: &[u8]) -> Messages<'_> {
    Messages {
        rest: payload,
        done: payload.is_empty(),
    }
}

pub struct Messages<'a> {
    rest: &'a [u8],
    done: bool,
}

impl Iterator for Messages<'_> {
    type Item = Result<Repr, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let buf = self.rest;
        let protocol = buf.get(field::PROTOCOL);
        if protocol != Some(PROTOCOL_SMB2) {
            // Everything but SMB2 fills the frame alone.
            self.done = true;
            return Some(match protocol {
                Some(smb1::PROTOCOL) => smb1::Repr::parse(buf).map(Repr::Smb1),
                Some(PROTOCOL_TRANSFORM) => parse_transform(buf),
                Some(PROTOCOL_COMPRESSED) => Ok(Repr::Compressed),
                Some(_) => Err(Error::NotSmb),
                None => Err(Error::Truncated),
            });
        }
        let header = match Header::new_checked(buf) {
            Ok(header) => header,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        match header.next_command() as usize {
            0 => self.done = true,
            next => self.rest = buf.get(next..).unwrap_or(&[]),
        }
        Some(Repr::parse(&header))
    }
}

impl Repr {
    /// The meaning of one SMB2 message.
    pub fn parse(header: &Header<'_>) -> Result<Repr, Error> {
        let head = HeaderRepr {
            command: header.command(),
            status: header.status(),
            is_response: header.is_response(),
            message_id: header.message_id(),
            session_id: header.session_id(),
            tree_id: header.tree_id(),
        };
        let body = header.body();
        // Error responses (other than MORE_PROCESSING_REQUIRED) carry the 9-byte error body.
        let failed = head.is_response
            && head.status != status::SUCCESS
            && head.status != status::MORE_PROCESSING_REQUIRED;
        let body = match (head.command, head.is_response) {
            (command::NEGOTIATE, false) => {
                let count =
                    le16(body, field::NEGOTIATE_REQ_DIALECT_COUNT).ok_or(Error::Truncated)?;
                let start = field::NEGOTIATE_REQ_DIALECTS;
                let bytes = body
                    .get(start..start + 2 * usize::from(count))
                    .ok_or(Error::FieldOutOfBounds)?;
                Body::NegotiateRequest {
                    dialects: bytes
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .collect(),
                }
            }
            (command::NEGOTIATE, true) if !failed => Body::NegotiateResponse {
                dialect: le16(body, field::NEGOTIATE_RSP_DIALECT).ok_or(Error::Truncated)?,
            },
            (command::SESSION_SETUP, false) => Body::SessionSetupRequest {
                ntlm: ntlm_in(header.buffer_at(field::SESSION_SETUP_REQ_BUFFER)?),
            },
            (command::SESSION_SETUP, true) if !failed => Body::SessionSetupResponse {
                ntlm: ntlm_in(header.buffer_at(field::SESSION_SETUP_RSP_BUFFER)?),
            },
            (command::SESSION_SETUP, true) => Body::SessionSetupResponse { ntlm: None },
            (command::TREE_CONNECT, false) => {
                let path = header.buffer_at(field::TREE_CONNECT_REQ_PATH)?;
                if path.len() > MAX_PATH_LEN {
                    return Err(Error::FieldOutOfBounds);
                }
                Body::TreeConnectRequest { path: utf16(path) }
            }
            (command::TREE_CONNECT, true) => Body::TreeConnectResponse {
                share_type: if failed {
                    None
                } else {
                    Some(
                        *body
                            .get(field::TREE_CONNECT_RSP_SHARE_TYPE)
                            .ok_or(Error::Truncated)?,
                    )
                },
            },
            _ => Body::Other,
        };
        Ok(Repr::Smb2 { header: head, body })
    }
}

/// The NTLMSSP message in a session setup's security blob, raw or inside SPNEGO.
pub(super) fn ntlm_in(blob: &[u8]) -> Option<Result<ntlm::Message, ntlm::Error>> {
    ntlm::find(blob).map(ntlm::Message::parse)
}

fn utf16(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

fn parse_transform(buf: &[u8]) -> Result<Repr, Error> {
    if buf.len() < field::TRANSFORM_END {
        return Err(Error::Truncated);
    }
    Ok(Repr::Encrypted {
        session_id: le64(buf, field::TRANSFORM_SESSION_ID).ok_or(Error::Truncated)?,
        original_size: le32(buf, field::TRANSFORM_ORIGINAL_SIZE).ok_or(Error::Truncated)?,
    })
}

/// Test scaffolding shared by the protocol modules' conformance tests: reads a capture with the
/// product's own pcap reader and decoder and glues TCP payloads per direction in capture order.
/// The Zeek captures are small and in order; this is not the product's reassembly.
#[cfg(test)]
pub(crate) mod test_streams {
    use std::net::IpAddr;
    use std::path::{Path, PathBuf};

    use crate::capture::pcap::PcapSource;
    use crate::capture::{Next, Source};
    use crate::decode::{decode, Transport};
    use crate::proto::Boundary;

    /// `../shared/pcaps/zeek` next to the workspace, or `None` (and a note) when absent.
    pub fn pcap_dir() -> Option<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps/zeek");
        if dir.is_dir() {
            Some(dir)
        } else {
            println!("skipping: ../shared/pcaps not here");
            None
        }
    }

    /// One TCP connection to `server_port`, each direction's payload glued together.
    #[derive(Debug, Default)]
    pub struct Conversation {
        pub client: Option<(IpAddr, u16)>,
        pub to_server: Vec<u8>,
        pub to_client: Vec<u8>,
        next_seq: [Option<u32>; 2],
    }

    impl Conversation {
        fn push(&mut self, to_server: bool, seq: u32, payload: &[u8]) {
            let dir = usize::from(!to_server);
            // Skip what a retransmission repeats; keep whatever it adds.
            let skip = match self.next_seq[dir] {
                Some(next) => next.wrapping_sub(seq) as usize,
                None => 0,
            };
            if skip >= payload.len() && self.next_seq[dir].is_some() {
                return;
            }
            self.next_seq[dir] = Some(seq.wrapping_add(payload.len() as u32));
            let data = &payload[skip.min(payload.len())..];
            if to_server {
                self.to_server.extend_from_slice(data);
            } else {
                self.to_client.extend_from_slice(data);
            }
        }
    }

    fn each_packet(path: &Path, mut f: impl FnMut(IpAddr, IpAddr, &Transport<'_>)) {
        let mut source = PcapSource::open(path).expect("capture opens");
        while let Next::Packet(packet) = source.next_packet().expect("capture reads") {
            if let Ok(decoded) = decode(packet.data) {
                f(decoded.src, decoded.dst, &decoded.transport);
            }
        }
    }

    /// TCP connections with `server_port`, in order of their first packet.
    pub fn tcp_conversations(path: &Path, server_port: u16) -> Vec<Conversation> {
        let mut conversations: Vec<Conversation> = Vec::new();
        each_packet(path, |src, dst, transport| {
            let Transport::Tcp {
                src_port,
                dst_port,
                seq,
                payload,
                ..
            } = *transport
            else {
                return;
            };
            let (client, to_server) = if dst_port == server_port {
                ((src, src_port), true)
            } else if src_port == server_port {
                ((dst, dst_port), false)
            } else {
                return;
            };
            let at = match conversations.iter().position(|c| c.client == Some(client)) {
                Some(at) => at,
                None => {
                    conversations.push(Conversation {
                        client: Some(client),
                        ..Conversation::default()
                    });
                    conversations.len() - 1
                }
            };
            if !payload.is_empty() {
                conversations[at].push(to_server, seq, payload);
            }
        });
        conversations
    }

    /// UDP payloads to or from `server_port`, with `true` for client-to-server.
    pub fn udp_datagrams(path: &Path, server_port: u16) -> Vec<(bool, Vec<u8>)> {
        let mut out = Vec::new();
        each_packet(path, |_, _, transport| {
            if let Transport::Udp {
                src_port,
                dst_port,
                payload,
            } = *transport
            {
                if dst_port == server_port || src_port == server_port {
                    out.push((dst_port == server_port, payload.to_vec()));
                }
            }
        });
        out
    }

    /// Cuts `stream` with `frame_len`; stops at the first error or partial message.
    /// Where the messages [`cut`] finds start.
    pub fn message_starts<E: std::fmt::Debug>(
        stream: &[u8],
        frame_len: impl Fn(&[u8]) -> Result<Option<usize>, E>,
    ) -> Vec<usize> {
        cut(stream, frame_len)
            .iter()
            .scan(0, |at, message| {
                let start = *at;
                *at += message.len();
                Some(start)
            })
            .collect()
    }

    /// Asserts what a framer that lost its place in `stream` finds from every offset: the next
    /// of `starts_at` (where messages really start, ascending), and no start past the last.
    /// A scan from just after each start vouches for every offset up to the next one.
    pub fn assert_resyncs_on_each_next_start(
        stream: &[u8],
        starts_at: &[usize],
        next: fn(&[u8]) -> Boundary,
    ) {
        assert!(!starts_at.is_empty(), "the stream holds messages");
        for (i, &at) in starts_at.iter().enumerate() {
            assert_eq!(next(&stream[at..]), Boundary::At(0), "the message at {at}");
            let found = next(&stream[at + 1..]);
            match starts_at.get(i + 1) {
                Some(&next) => assert_eq!(
                    found,
                    Boundary::At(next - at - 1),
                    "after the message at {at}"
                ),
                None => assert!(
                    matches!(found, Boundary::NotYet { .. }),
                    "after the last message, at {at}: {found:?}"
                ),
            }
        }
    }

    pub fn cut<E: std::fmt::Debug>(
        stream: &[u8],
        frame_len: impl Fn(&[u8]) -> Result<Option<usize>, E>,
    ) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut rest = stream;
        while let Ok(Some(len)) = frame_len(rest) {
            if len == 0 || len > rest.len() {
                break;
            }
            out.push(&rest[..len]);
            rest = &rest[len..];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16le(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    fn header(cmd: u16, status: u32, response: bool, next: u32) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(PROTOCOL_SMB2);
        h[4..6].copy_from_slice(&64u16.to_le_bytes());
        h[8..12].copy_from_slice(&status.to_le_bytes());
        h[12..14].copy_from_slice(&cmd.to_le_bytes());
        h[16..20].copy_from_slice(&u32::from(response).to_le_bytes());
        h[20..24].copy_from_slice(&next.to_le_bytes());
        h[24..32].copy_from_slice(&7u64.to_le_bytes());
        h[36..40].copy_from_slice(&5u32.to_le_bytes());
        h[40..48].copy_from_slice(&0x1122_3344u64.to_le_bytes());
        h
    }

    fn netbios(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes().to_vec();
        out[0] = 0;
        out.extend_from_slice(payload);
        out
    }

    fn tree_connect(path: &str) -> Vec<u8> {
        let p = utf16le(path);
        let mut m = header(command::TREE_CONNECT, 0, false, 0);
        m.extend_from_slice(&9u16.to_le_bytes());
        m.extend_from_slice(&0u16.to_le_bytes());
        m.extend_from_slice(&72u16.to_le_bytes());
        m.extend_from_slice(&(p.len() as u16).to_le_bytes());
        m.extend_from_slice(&p);
        m
    }

    fn session_setup_request(blob: &[u8]) -> Vec<u8> {
        let mut m = header(command::SESSION_SETUP, 0, false, 0);
        let mut body = vec![0u8; 24];
        body[0..2].copy_from_slice(&25u16.to_le_bytes());
        body[12..14].copy_from_slice(&88u16.to_le_bytes());
        body[14..16].copy_from_slice(&(blob.len() as u16).to_le_bytes());
        m.extend_from_slice(&body);
        m.extend_from_slice(blob);
        m
    }

    /// An NTLMSSP AUTHENTICATE as Windows lays it out (see ntlm.rs's tests).
    fn authenticate(domain: &str, user: &str, workstation: &str) -> Vec<u8> {
        let (d, u, w) = (utf16le(domain), utf16le(user), utf16le(workstation));
        let nt = vec![0xab; 24];
        let mut msg = b"NTLMSSP\0".to_vec();
        msg.extend_from_slice(&3u32.to_le_bytes());
        let mut offset = 64u32;
        let mut payload = Vec::new();
        for part in [&[][..], &nt, &d, &u, &w, &[]] {
            msg.extend_from_slice(&(part.len() as u16).to_le_bytes());
            msg.extend_from_slice(&(part.len() as u16).to_le_bytes());
            msg.extend_from_slice(&offset.to_le_bytes());
            offset += part.len() as u32;
            payload.extend_from_slice(part);
        }
        msg.extend_from_slice(&1u32.to_le_bytes());
        msg.extend_from_slice(&payload);
        msg
    }

    fn all(frame: &[u8]) -> Vec<Result<Repr, Error>> {
        let frame = Frame::new_checked(frame).expect("whole frame");
        messages(frame.payload()).collect()
    }

    #[test]
    fn tree_connect_request_gives_the_unc_path() {
        let frame = netbios(&tree_connect(r"\\10.77.0.10\IPC$"));
        assert_eq!(frame_len(&frame), Ok(Some(frame.len())));
        let reprs = all(&frame);
        assert_eq!(
            reprs,
            vec![Ok(Repr::Smb2 {
                header: HeaderRepr {
                    command: command::TREE_CONNECT,
                    status: 0,
                    is_response: false,
                    message_id: 7,
                    session_id: 0x1122_3344,
                    tree_id: 5
                },
                body: Body::TreeConnectRequest {
                    path: r"\\10.77.0.10\IPC$".into()
                }
            })]
        );
    }

    #[test]
    fn session_setup_with_ntlm_gives_user_domain_workstation() {
        // SPNEGO's wrapping is irrelevant: ntlm::find scans for the signature.
        let mut blob = vec![0xa1, 0x81, 0x90, 0x30, 0x81, 0x8d];
        blob.extend(authenticate("CORP", "alice", "WS01"));
        let reprs = all(&netbios(&session_setup_request(&blob)));
        match &reprs[..] {
            [Ok(Repr::Smb2 {
                body:
                    Body::SessionSetupRequest {
                        ntlm:
                            Some(Ok(ntlm::Message::Authenticate {
                                domain,
                                user,
                                workstation,
                                ..
                            })),
                    },
                ..
            })] => assert_eq!(
                (domain.as_str(), user.as_str(), workstation.as_str()),
                ("CORP", "alice", "WS01")
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn logon_failure_response_keeps_its_status() {
        let mut m = header(command::SESSION_SETUP, status::LOGON_FAILURE, true, 0);
        m.extend_from_slice(&[9, 0, 0, 0, 0, 0, 0, 0, 0]);
        match &all(&netbios(&m))[..] {
            [Ok(Repr::Smb2 { header, body })] => {
                assert_eq!(header.status, status::LOGON_FAILURE);
                assert!(header.is_response);
                assert_eq!(body, &Body::SessionSetupResponse { ntlm: None });
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn compound_chain_yields_every_message() {
        let mut first = header(command::NEGOTIATE, 0, true, 0);
        first.extend_from_slice(&[65, 0, 1, 0, 0x11, 0x03, 0, 0]);
        // Pad to an 8-byte boundary, as NextCommand must be.
        let next = first.len().next_multiple_of(8);
        first.resize(next, 0);
        first[20..24].copy_from_slice(&(next as u32).to_le_bytes());
        let mut second = header(command::TREE_CONNECT, 0, true, 0);
        second.extend_from_slice(&[16, 0, 2, 0, 0, 0, 0, 0]);
        first.extend(second);
        let reprs = all(&netbios(&first));
        assert_eq!(reprs.len(), 2);
        assert!(matches!(
            reprs[0],
            Ok(Repr::Smb2 {
                body: Body::NegotiateResponse { dialect: 0x0311 },
                ..
            })
        ));
        assert!(matches!(
            reprs[1],
            Ok(Repr::Smb2 {
                body: Body::TreeConnectResponse {
                    share_type: Some(2)
                },
                ..
            })
        ));
    }

    #[test]
    fn negotiate_request_lists_dialects() {
        let mut m = header(command::NEGOTIATE, 0, false, 0);
        let mut body = vec![0u8; 36];
        body[0..2].copy_from_slice(&36u16.to_le_bytes());
        body[2..4].copy_from_slice(&3u16.to_le_bytes());
        m.extend(body);
        for d in [0x0202u16, 0x0210, 0x0311] {
            m.extend_from_slice(&d.to_le_bytes());
        }
        assert!(matches!(
            &all(&netbios(&m))[..],
            [Ok(Repr::Smb2 { body: Body::NegotiateRequest { dialects }, .. })]
                if dialects == &[0x0202, 0x0210, 0x0311]
        ));
    }

    #[test]
    fn smb1_negotiate_and_transform_header_are_recognised() {
        let mut m = vec![0u8; 32];
        m[..4].copy_from_slice(smb1::PROTOCOL);
        m[4] = smb1::command::NEGOTIATE;
        let dialects = b"\x02NT LM 0.12\0\x02SMB 2.002\0\x02SMB 2.???\0";
        m.push(0);
        m.extend_from_slice(&(dialects.len() as u16).to_le_bytes());
        m.extend_from_slice(dialects);
        assert_eq!(
            all(&netbios(&m)),
            vec![Ok(Repr::Smb1(smb1::Repr {
                header: smb1::HeaderRepr {
                    command: smb1::command::NEGOTIATE,
                    status: 0,
                    is_response: false,
                    mid: 0,
                },
                commands: vec![smb1::Command::NegotiateRequest {
                    dialects: vec!["NT LM 0.12".into(), "SMB 2.002".into(), "SMB 2.???".into()]
                }]
            }))]
        );
        let mut t = vec![0xaa; 52 + 100];
        t[..4].copy_from_slice(PROTOCOL_TRANSFORM);
        t[36..40].copy_from_slice(&100u32.to_le_bytes());
        t[44..52].copy_from_slice(&9u64.to_le_bytes());
        assert_eq!(
            all(&netbios(&t)),
            vec![Ok(Repr::Encrypted {
                session_id: 9,
                original_size: 100
            })]
        );
    }

    #[test]
    fn hostile_lengths_are_refused_and_truncations_never_panic() {
        let mut blob = b"\x60\x48".to_vec();
        blob.extend(authenticate("CORP", "alice", "WS01"));
        let frame = netbios(&session_setup_request(&blob));
        for len in 0..frame.len() {
            let _ = frame_len(&frame[..len]);
            assert!(Frame::new_checked(&frame[..len]).is_err());
            // The messages themselves cut short anywhere.
            let _: Vec<_> = messages(&frame[4..len.max(4)]).collect();
        }
        // Security buffer offset past the end.
        let mut bad = session_setup_request(&blob);
        bad[64 + 12..64 + 14].copy_from_slice(&0xfff0u16.to_le_bytes());
        assert_eq!(all(&netbios(&bad)), vec![Err(Error::FieldOutOfBounds)]);
        // NextCommand pointing past the frame, backwards, or unaligned.
        for next in [0x10000u32, 8, 65] {
            let mut m = tree_connect("x");
            m[20..24].copy_from_slice(&next.to_le_bytes());
            assert_eq!(all(&netbios(&m)), vec![Err(Error::BadNextCommand)]);
        }
        // Dialect count far beyond the body.
        let mut m = header(command::NEGOTIATE, 0, false, 0);
        m.extend_from_slice(&[36, 0, 0xff, 0xff]);
        assert_eq!(all(&netbios(&m)), vec![Err(Error::FieldOutOfBounds)]);
        // Zero-length frame (a keep-alive) and a non-NetBIOS stream.
        assert_eq!(frame_len(&[0x85, 0, 0, 0]), Ok(Some(4)));
        assert_eq!(all(&[0, 0, 0, 0]), vec![]);
        assert_eq!(frame_len(b"GET / HTTP/1.1"), Err(Error::NotNetbios));
        assert_eq!(all(&netbios(b"junkjunk")), vec![Err(Error::NotSmb)]);
    }

    /// Every SMB Repr in a stream, cut into NetBIOS frames.
    fn stream_reprs(stream: &[u8]) -> Vec<Result<Repr, Error>> {
        test_streams::cut(stream, frame_len)
            .into_iter()
            .filter_map(|f| Frame::new_checked(f).ok())
            .filter(|f| f.is_session_message())
            .flat_map(|f| messages(f.payload()).collect::<Vec<_>>())
            .collect()
    }

    fn tree_paths(reprs: &[Result<Repr, Error>]) -> Vec<String> {
        reprs
            .iter()
            .filter_map(|r| match r {
                Ok(Repr::Smb2 {
                    body: Body::TreeConnectRequest { path },
                    ..
                }) => Some(path.clone()),
                _ => None,
            })
            .collect()
    }

    fn share_types(reprs: &[Result<Repr, Error>]) -> Vec<&'static str> {
        reprs
            .iter()
            .filter_map(|r| match r {
                Ok(Repr::Smb2 {
                    body:
                        Body::TreeConnectResponse {
                            share_type: Some(t),
                        },
                    ..
                }) => Some(share_type_name(*t)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn resync_finds_every_next_netbios_frame_in_real_smb_streams() {
        let Some(dir) = test_streams::pcap_dir() else {
            return;
        };
        for capture in ["smb/smb2.pcap", "smb/smb3.pcap"] {
            for conv in test_streams::tcp_conversations(&dir.join(capture), 445) {
                for stream in [&conv.to_server, &conv.to_client] {
                    let starts = test_streams::message_starts(stream, frame_len);
                    test_streams::assert_resyncs_on_each_next_start(stream, &starts, next_message);
                }
            }
        }
    }

    #[test]
    fn smb2_capture_matches_zeek_mapping_and_ntlm() {
        let Some(dir) = test_streams::pcap_dir() else {
            return;
        };
        let convs = test_streams::tcp_conversations(&dir.join("smb/smb2.pcap"), 445);
        assert_eq!(convs.len(), 1);
        let requests = stream_reprs(&convs[0].to_server);
        let responses = stream_reprs(&convs[0].to_client);
        assert!(requests.iter().all(Result::is_ok), "{requests:?}");
        assert!(responses.iter().all(Result::is_ok), "{responses:?}");
        // smb_mapping.log: \\10.0.0.12\smb2 (DISK) then \\10.0.0.12\IPC$ (PIPE).
        let paths = tree_paths(&requests);
        assert_eq!(paths, [r"\\10.0.0.12\smb2", r"\\10.0.0.12\IPC$"]);
        assert_eq!(share_types(&responses), ["DISK", "PIPE"]);
        // The README: CONTOSO\Administrator from SERVER01.
        let auth = requests.iter().find_map(|r| match r {
            Ok(Repr::Smb2 {
                body:
                    Body::SessionSetupRequest {
                        ntlm:
                            Some(Ok(ntlm::Message::Authenticate {
                                domain,
                                user,
                                workstation,
                                ..
                            })),
                    },
                ..
            }) => Some((domain.clone(), user.clone(), workstation.clone())),
            _ => None,
        });
        assert_eq!(
            auth,
            Some(("CONTOSO".into(), "Administrator".into(), "SERVER01".into()))
        );
        // The negotiate picked a dialect and the session setup ended in success.
        assert!(responses.iter().any(|r| matches!(
            r,
            Ok(Repr::Smb2 {
                body: Body::NegotiateResponse { .. },
                ..
            })
        )));
        assert!(responses.iter().any(|r| matches!(
            r,
            Ok(Repr::Smb2 { header, .. })
                if header.command == command::SESSION_SETUP && header.status == status::SUCCESS
        )));
    }

    #[test]
    fn smb3_capture_maps_trees_then_encrypts_without_errors() {
        let Some(dir) = test_streams::pcap_dir() else {
            return;
        };
        let convs = test_streams::tcp_conversations(&dir.join("smb/smb3.pcap"), 445);
        let mut paths = Vec::new();
        let mut encrypted = 0;
        for conv in &convs {
            for stream in [&conv.to_server, &conv.to_client] {
                let reprs = stream_reprs(stream);
                assert!(reprs.iter().all(Result::is_ok), "{reprs:?}");
                encrypted += reprs
                    .iter()
                    .filter(|r| matches!(r, Ok(Repr::Encrypted { .. })))
                    .count();
                paths.extend(tree_paths(&reprs));
            }
        }
        // smb_mapping.log: \\WS2016\encrypted and \\10.160.65.202\IPC$; the stdout baseline lists
        // the transform headers Zeek saw.
        for expected in [r"\\WS2016\encrypted", r"\\10.160.65.202\IPC$"] {
            assert!(paths.iter().any(|p| p == expected), "{paths:?}");
        }
        assert!(encrypted > 0);
    }
}
