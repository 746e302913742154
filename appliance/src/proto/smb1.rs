//! SMB1 (CIFS) messages ([MS-CIFS] §2.2, [MS-SMB] §2.2): the 32-byte header, the AndX chain that
//! puts several commands in one message, and the commands a detector needs: NEGOTIATE's dialect
//! strings, SESSION_SETUP_ANDX logins and TREE_CONNECT_ANDX paths and services.
//!
//! A login comes in two forms. With extended security the NTLMSSP message travels in a security
//! blob, wrapped in SPNEGO or raw; before it (Samba's `client use spnego = no`, old clients) the
//! account and domain travel in clear beside the LM and NT responses.

use super::ntlm;
use super::smb2::{ntlm_in, Error};

pub(super) mod field {
    use std::ops::Range;
    // Header ([MS-CIFS] §2.2.3.1)
    pub const PROTOCOL: Range<usize> = 0..4;
    pub const COMMAND: usize = 4;
    pub const STATUS: usize = 5;
    pub const FLAGS: usize = 9;
    pub const FLAGS2: usize = 10;
    pub const MID: usize = 30;
    /// The first command's WordCount.
    pub const HEADER_END: usize = 32;
    // The words every AndX command starts with
    pub const ANDX_COMMAND: usize = 0;
    pub const ANDX_OFFSET: usize = 2;
    // SESSION_SETUP_ANDX request words: extended security (12 words), NT LM 0.12 (13 words)
    pub const SETUP_SECURITY_BLOB_LEN: usize = 14;
    pub const SETUP_OEM_PASSWORD_LEN: usize = 14;
    pub const SETUP_UNICODE_PASSWORD_LEN: usize = 16;
    // SESSION_SETUP_ANDX response words (extended security, 4 words)
    pub const SETUP_RSP_SECURITY_BLOB_LEN: usize = 6;
    // TREE_CONNECT_ANDX words
    pub const TREE_PASSWORD_LEN: usize = 6;
    pub const TREE_RSP_OPTIONAL_SUPPORT: usize = 4;
}

pub const PROTOCOL: &[u8] = b"\xffSMB";
const FLAG_REPLY: u8 = 0x80;
const FLAGS2_UNICODE: u16 = 0x8000;
const SETUP_WORDS_EXTENDED: usize = 12;
const SETUP_WORDS_NT_LM: usize = 13;
const SETUP_RSP_WORDS_EXTENDED: usize = 4;
/// AndXCommand's "no further commands".
const ANDX_NONE: u8 = 0xff;
/// Commands of one chain read; real clients chain two or three.
const MAX_CHAIN: usize = 8;
/// SMB1 dialect strings read from one negotiate; a real client sends about ten.
const MAX_DIALECTS: usize = 64;
/// Strings (names, paths) are cut at this many characters.
const MAX_STRING_CHARS: usize = 1024;

/// SMB1 command codes ([MS-CIFS] §2.2.2.1).
pub mod command {
    pub const LOCKING_ANDX: u8 = 0x24;
    pub const OPEN_ANDX: u8 = 0x2d;
    pub const READ_ANDX: u8 = 0x2e;
    pub const WRITE_ANDX: u8 = 0x2f;
    pub const NEGOTIATE: u8 = 0x72;
    pub const SESSION_SETUP_ANDX: u8 = 0x73;
    pub const LOGOFF_ANDX: u8 = 0x74;
    pub const TREE_CONNECT_ANDX: u8 = 0x75;
    pub const NT_CREATE_ANDX: u8 = 0xa2;
}

/// Commands whose words start with the AndX block, so another command may follow.
const ANDX_COMMANDS: [u8; 8] = [
    command::LOCKING_ANDX,
    command::OPEN_ANDX,
    command::READ_ANDX,
    command::WRITE_ANDX,
    command::SESSION_SETUP_ANDX,
    command::LOGOFF_ANDX,
    command::TREE_CONNECT_ANDX,
    command::NT_CREATE_ANDX,
];

fn le16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn le32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The fields of the header every command of the chain shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRepr {
    /// The first command of the chain.
    pub command: u8,
    /// An NTSTATUS when the client asked for them (every NT client does); otherwise the DOS
    /// error class and code as the same four bytes, which are still zero only on success.
    pub status: u32,
    pub is_response: bool,
    /// Pairs a response with its request.
    pub mid: u16,
}

/// How a SESSION_SETUP_ANDX request logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// Extended security: the NTLMSSP message in the security blob (raw or inside SPNEGO), or
    /// `None` when the blob carries none (Kerberos).
    Ntlmssp(Option<Result<ntlm::Message, ntlm::Error>>),
    /// NT LM 0.12 without extended security: the names in clear beside the LM and NT responses.
    WithoutExtendedSecurity {
        user: String,
        domain: String,
        /// No account and no NT response: a NULL session.
        anonymous: bool,
    },
}

/// What one command of a chain says, for the commands a detector needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    NegotiateRequest {
        /// e.g. "NT LM 0.12", "SMB 2.002", "SMB 2.???".
        dialects: Vec<String>,
    },
    NegotiateResponse,
    SessionSetupRequest(Login),
    SessionSetupResponse {
        /// The server's NTLMSSP CHALLENGE, present while the status is MORE_PROCESSING_REQUIRED.
        ntlm: Option<Result<ntlm::Message, ntlm::Error>>,
    },
    TreeConnectRequest {
        /// The UNC path, e.g. `\\10.77.0.10\IPC$`.
        path: String,
    },
    TreeConnectResponse {
        /// The share type SMB2 would give (see [`super::smb2::share_type_name`]); `None` in an
        /// error response.
        share_type: Option<u8>,
    },
    Other(u8),
}

/// One SMB1 message: its header and the commands of its AndX chain, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr {
    pub header: HeaderRepr,
    pub commands: Vec<Command>,
}

/// One command's parameter and data blocks inside the message.
struct Block<'a> {
    words: &'a [u8],
    /// Offset of the data block from the header's first byte: strings align to it.
    bytes_at: usize,
    bytes: &'a [u8],
}

impl<'a> Block<'a> {
    /// The block whose WordCount is at `at`; both blocks must be inside `msg`.
    fn new(msg: &'a [u8], at: usize) -> Result<Block<'a>, Error> {
        let word_count = usize::from(*msg.get(at).ok_or(Error::Truncated)?);
        let words_end = at + 1 + 2 * word_count;
        let words = msg.get(at + 1..words_end).ok_or(Error::Truncated)?;
        let byte_count = usize::from(le16(msg, words_end).ok_or(Error::Truncated)?);
        let bytes_at = words_end + 2;
        let bytes = msg
            .get(bytes_at..bytes_at + byte_count)
            .ok_or(Error::FieldOutOfBounds)?;
        Ok(Block {
            words,
            bytes_at,
            bytes,
        })
    }

    fn word(&self, at: usize) -> Result<usize, Error> {
        le16(self.words, at)
            .map(usize::from)
            .ok_or(Error::Truncated)
    }

    /// `len` bytes of the data block from `from`.
    fn data(&self, from: usize, len: usize) -> Result<&'a [u8], Error> {
        self.bytes
            .get(from..from + len)
            .ok_or(Error::FieldOutOfBounds)
    }

    /// The NUL-terminated strings of the data block from `from` on.
    fn strings(&self, from: usize, unicode: bool) -> Strings<'a> {
        Strings {
            bytes: self.bytes,
            bytes_at: self.bytes_at,
            at: from,
            unicode,
        }
    }
}

/// Reads consecutive NUL-terminated strings; past the end of the block they are empty.
struct Strings<'a> {
    bytes: &'a [u8],
    bytes_at: usize,
    at: usize,
    unicode: bool,
}

impl Strings<'_> {
    fn next_string(&mut self) -> String {
        if self.unicode {
            // UTF-16 strings start on an even offset from the header ([MS-CIFS] §2.2.1.1).
            self.at += (self.bytes_at + self.at) % 2;
            let rest = self.bytes.get(self.at..).unwrap_or(&[]);
            let units: Vec<u16> = rest
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            self.at += 2 * (units.len() + 1);
            let units = units.get(..MAX_STRING_CHARS).unwrap_or(&units);
            String::from_utf16_lossy(units)
        } else {
            let rest = self.bytes.get(self.at..).unwrap_or(&[]);
            let len = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            self.at += len + 1;
            let text = rest.get(..len.min(MAX_STRING_CHARS)).unwrap_or(rest);
            String::from_utf8_lossy(text).into_owned()
        }
    }
}

impl Repr {
    /// Parses one SMB1 message (a NetBIOS frame's payload starting with `\xffSMB`).
    pub fn parse(msg: &[u8]) -> Result<Repr, Error> {
        if msg.get(field::PROTOCOL) != Some(PROTOCOL) {
            return Err(if msg.len() < PROTOCOL.len() {
                Error::Truncated
            } else {
                Error::NotSmb
            });
        }
        let byte = |at: usize| msg.get(at).copied().ok_or(Error::Truncated);
        let word = |at: usize| le16(msg, at).ok_or(Error::Truncated);
        let header = HeaderRepr {
            command: byte(field::COMMAND)?,
            status: le32(msg, field::STATUS).ok_or(Error::Truncated)?,
            is_response: byte(field::FLAGS)? & FLAG_REPLY != 0,
            mid: word(field::MID)?,
        };
        let unicode = word(field::FLAGS2)? & FLAGS2_UNICODE != 0;
        let mut commands = Vec::new();
        let mut code = header.command;
        let mut at = field::HEADER_END;
        loop {
            let block = Block::new(msg, at)?;
            commands.push(Command::parse(code, header.is_response, &block, unicode)?);
            // Error responses carry no words, so no AndX block either.
            if !ANDX_COMMANDS.contains(&code) || block.words.is_empty() {
                break;
            }
            let next = *block
                .words
                .get(field::ANDX_COMMAND)
                .ok_or(Error::Truncated)?;
            if next == ANDX_NONE || commands.len() == MAX_CHAIN {
                break;
            }
            let offset = block.word(field::ANDX_OFFSET)?;
            // Each link must move forward, so the walk ends.
            if offset <= at {
                return Err(Error::BadAndXOffset);
            }
            code = next;
            at = offset;
        }
        Ok(Repr { header, commands })
    }
}

impl Command {
    fn parse(
        code: u8,
        is_response: bool,
        block: &Block<'_>,
        unicode: bool,
    ) -> Result<Command, Error> {
        Ok(match (code, is_response) {
            (command::NEGOTIATE, false) => Command::NegotiateRequest {
                dialects: dialects(block.bytes),
            },
            (command::NEGOTIATE, true) => Command::NegotiateResponse,
            (command::SESSION_SETUP_ANDX, false) => match block.words.len() / 2 {
                SETUP_WORDS_EXTENDED => {
                    let len = block.word(field::SETUP_SECURITY_BLOB_LEN)?;
                    Command::SessionSetupRequest(Login::Ntlmssp(ntlm_in(block.data(0, len)?)))
                }
                SETUP_WORDS_NT_LM => {
                    Command::SessionSetupRequest(login_without_extended_security(block, unicode)?)
                }
                // The LAN Manager 1.0 form (10 words) is not read.
                _ => Command::Other(code),
            },
            (command::SESSION_SETUP_ANDX, true) => Command::SessionSetupResponse {
                // Only the extended-security response has a blob; error responses have no words.
                ntlm: if block.words.len() / 2 == SETUP_RSP_WORDS_EXTENDED {
                    let len = block.word(field::SETUP_RSP_SECURITY_BLOB_LEN)?;
                    ntlm_in(block.data(0, len)?)
                } else {
                    None
                },
            },
            (command::TREE_CONNECT_ANDX, false) => {
                let password_len = block.word(field::TREE_PASSWORD_LEN)?;
                Command::TreeConnectRequest {
                    path: block.strings(password_len, unicode).next_string(),
                }
            }
            (command::TREE_CONNECT_ANDX, true) => Command::TreeConnectResponse {
                // Error responses have no words. The service name is always OEM ([MS-CIFS]
                // §2.2.4.55.2).
                share_type: (block.words.len() > field::TREE_RSP_OPTIONAL_SUPPORT)
                    .then(|| share_type(&block.strings(0, false).next_string())),
            },
            (other, _) => Command::Other(other),
        })
    }
}

/// The NT LM 0.12 login: OEM and Unicode passwords (the LM and NT responses), then the account
/// and primary domain ([MS-CIFS] §2.2.4.53.1).
fn login_without_extended_security(block: &Block<'_>, unicode: bool) -> Result<Login, Error> {
    let oem_len = block.word(field::SETUP_OEM_PASSWORD_LEN)?;
    let unicode_len = block.word(field::SETUP_UNICODE_PASSWORD_LEN)?;
    block.data(0, oem_len + unicode_len)?;
    let mut strings = block.strings(oem_len + unicode_len, unicode);
    let user = strings.next_string();
    let domain = strings.next_string();
    Ok(Login::WithoutExtendedSecurity {
        // A NULL session sends an empty account and at most a one-byte LM response.
        anonymous: user.is_empty() && unicode_len == 0,
        user,
        domain,
    })
}

/// The dialect strings of a NEGOTIATE request: each 0x02 and a NUL-terminated string.
fn dialects(mut bytes: &[u8]) -> Vec<String> {
    let mut dialects = Vec::new();
    while let [0x02, rest @ ..] = bytes {
        if dialects.len() == MAX_DIALECTS {
            break;
        }
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let name = rest.get(..end).unwrap_or(rest);
        dialects.push(String::from_utf8_lossy(name).into_owned());
        bytes = rest.get(end + 1..).unwrap_or(&[]);
    }
    dialects
}

/// SMB2's share type code for a TREE_CONNECT_ANDX response's service name.
fn share_type(service: &str) -> u8 {
    match service {
        "A:" => 1,
        "IPC" => 2,
        "LPT1:" => 3,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::smb2::status;

    fn hex(text: &[&str]) -> Vec<u8> {
        let text: String = text.concat();
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
            .collect()
    }

    // Messages (NetBIOS header removed) of Samba 4.17's smbclient and smbd speaking NT1, as
    // tcpdump captured them in the namespaces of tests/tests/smb1_ntlm.rs.

    /// `client use spnego = no`: LABDOM\alice, a 24-byte LM and 64-byte NTLMv2 response.
    fn setup_without_extended_security() -> Vec<u8> {
        hex(&[
            "ff534d4273000000001843c000000000000000000000000000004a6c000001000dff000000ffff02004a6c4d6c00",
            "00180040000000000054c0000089000000000000000000000000000000000000000000000000005a63209c66bfd4",
            "eaf9a3e94c158779cc010100000000000010d8c8eaef85dd01cca636adcd140cd70000000002000c004c00410042",
            "0044004f004d00000000000061006c0069006300650000004c004100420044004f004d00000055006e0069007800",
            "0000530061006d00620061000000",
        ])
    }

    /// Extended security: SPNEGO's negTokenResp carrying the NTLMSSP AUTHENTICATE.
    fn spnego_setup() -> Vec<u8> {
        hex(&[
            "ff534d4273000000001843c80000000000000000000000000000426c489202000cff000000ffff02000100000000",
            "00a4010000000054c00080bb01a18201a03082019ca2820184048201804e544c4d53535000030000001800180058",
            "000000dc00dc00700000000c000c004c0100000a000a00580100000e000e00620100001000100070010000158208",
            "62060100000000000fbf1751d3f08320a024b62ac7660d428e000000000000000000000000000000000000000000",
            "0000006340decca664a84dac6491f6b1d110ee010100000000000068ddaceaef85dd01e170cdac1f1ca1f3000000",
            "0002000e00460049004c00450053005200560001000e00460049004c004500530052005600040000000300040076",
            "006d000700080068ddaceaef85dd01060004000200000008003000300000000000000000000000000000008d6742",
            "d4b8d517bfe6882d7675b01533121500d3af681fdaf6e098c006af90f80a00100000000000000000000000000000",
            "00000009001c0063006900660073002f00310030002e00390031002e0030002e003100000000004c004100420044",
            "004f004d0061006c00690063006500570053002d0053004d004200310011fabc144ba0e013c9c46f377e14868fa3",
            "120410010000004986537036f7109d000000000055006e00690078000000530061006d00620061000000",
        ])
    }

    fn tree_connect_request() -> Vec<u8> {
        hex(&[
            "ff534d4275000000001843c8000000000000000000000000ffff426c4892060004ff0000000c000100270000",
            "5c005c00310030002e00390031002e0030002e0031005c0050005500420000003f3f3f3f3f00",
        ])
    }

    fn tree_connect_response() -> Vec<u8> {
        hex(&[
            "ff534d4275000000008803c8000000000000000000000000707c426c4892060007ff0000000100a9001f0000",
            "0000000d00413a004e005400460053000000",
        ])
    }

    fn logon_failure() -> Vec<u8> {
        hex(&["ff534d42736d0000c08803c000000000000000000000000000004e6c00000100000000"])
    }

    fn only_command(msg: &[u8]) -> Command {
        let repr = Repr::parse(msg).expect("parses");
        let [command] = &repr.commands[..] else {
            panic!("one command: {repr:?}");
        };
        command.clone()
    }

    #[test]
    fn session_setup_without_extended_security_gives_account_and_domain() {
        let repr = Repr::parse(&setup_without_extended_security()).expect("parses");
        assert_eq!(
            repr.header,
            HeaderRepr {
                command: command::SESSION_SETUP_ANDX,
                status: 0,
                is_response: false,
                mid: 1,
            }
        );
        assert_eq!(
            repr.commands,
            [Command::SessionSetupRequest(
                Login::WithoutExtendedSecurity {
                    user: "alice".into(),
                    domain: "LABDOM".into(),
                    anonymous: false,
                }
            )]
        );
    }

    fn authenticate_names(command: &Command) -> Option<(&str, &str, &str)> {
        match command {
            Command::SessionSetupRequest(Login::Ntlmssp(Some(Ok(
                ntlm::Message::Authenticate {
                    user,
                    domain,
                    workstation,
                    ..
                },
            )))) => Some((user, domain, workstation)),
            _ => None,
        }
    }

    #[test]
    fn spnego_session_setup_gives_the_ntlmssp_authenticate() {
        let command = only_command(&spnego_setup());
        assert_eq!(
            authenticate_names(&command),
            Some(("alice", "LABDOM", "WS-SMB1"))
        );
    }

    /// Some tools put the NTLMSSP message in the blob without SPNEGO (smbclient cannot: without
    /// SPNEGO it drops extended security), so the real blob is unwrapped here.
    #[test]
    fn raw_ntlmssp_blob_is_read_like_a_spnego_one() {
        let msg = spnego_setup();
        let words = field::HEADER_END + 1;
        let blob_len_at = words + field::SETUP_SECURITY_BLOB_LEN;
        let blob_len = usize::from(le16(&msg, blob_len_at).expect("blob length"));
        let bytes_at = words + 2 * SETUP_WORDS_EXTENDED + 2;
        let blob = &msg[bytes_at..bytes_at + blob_len];
        let raw = ntlm::find(blob).expect("NTLMSSP inside");
        let strings = &msg[bytes_at + blob_len..];
        let mut unwrapped = msg[..bytes_at].to_vec();
        unwrapped[blob_len_at..blob_len_at + 2].copy_from_slice(&(raw.len() as u16).to_le_bytes());
        let byte_count = (raw.len() + strings.len()) as u16;
        unwrapped[bytes_at - 2..bytes_at].copy_from_slice(&byte_count.to_le_bytes());
        unwrapped.extend_from_slice(raw);
        unwrapped.extend_from_slice(strings);
        assert_eq!(
            authenticate_names(&only_command(&unwrapped)),
            Some(("alice", "LABDOM", "WS-SMB1"))
        );
    }

    #[test]
    fn tree_connect_andx_gives_path_and_service_share_type() {
        assert_eq!(
            only_command(&tree_connect_request()),
            Command::TreeConnectRequest {
                path: r"\\10.91.0.1\PUB".into()
            }
        );
        let response = Repr::parse(&tree_connect_response()).expect("parses");
        assert!(response.header.is_response);
        assert_eq!(
            response.commands,
            [Command::TreeConnectResponse {
                share_type: Some(1)
            }]
        );
    }

    #[test]
    fn logon_failure_response_keeps_its_status_and_has_no_blob() {
        let repr = Repr::parse(&logon_failure()).expect("parses");
        assert_eq!(repr.header.status, status::LOGON_FAILURE);
        assert!(repr.header.is_response);
        assert_eq!(
            repr.commands,
            [Command::SessionSetupResponse { ntlm: None }]
        );
    }

    /// The login and the tree connect in one message, as Windows clients chain them.
    fn chained() -> Vec<u8> {
        let mut msg = setup_without_extended_security();
        let next = msg.len();
        let andx = field::HEADER_END + 1;
        msg[andx + field::ANDX_COMMAND] = command::TREE_CONNECT_ANDX;
        msg[andx + field::ANDX_OFFSET..andx + field::ANDX_OFFSET + 2]
            .copy_from_slice(&(next as u16).to_le_bytes());
        msg.extend_from_slice(&tree_connect_request()[field::HEADER_END..]);
        msg
    }

    #[test]
    fn andx_chain_yields_each_command_and_offsets_must_move_forward() {
        let msg = chained();
        let repr = Repr::parse(&msg).expect("parses");
        assert_eq!(repr.commands.len(), 2);
        assert!(matches!(
            repr.commands[0],
            Command::SessionSetupRequest(Login::WithoutExtendedSecurity { .. })
        ));
        assert_eq!(
            repr.commands[1],
            Command::TreeConnectRequest {
                path: r"\\10.91.0.1\PUB".into()
            }
        );
        // Pointing back at itself or before it would loop forever.
        let offset = field::HEADER_END + 1 + field::ANDX_OFFSET;
        for back in [field::HEADER_END as u16, 4] {
            let mut looped = msg.clone();
            looped[offset..offset + 2].copy_from_slice(&back.to_le_bytes());
            assert_eq!(Repr::parse(&looped), Err(Error::BadAndXOffset));
        }
        // Past the end.
        let mut past = msg.clone();
        past[offset..offset + 2].copy_from_slice(&0xfff0u16.to_le_bytes());
        assert_eq!(Repr::parse(&past), Err(Error::Truncated));
    }

    #[test]
    fn hostile_counts_are_refused_and_truncations_never_panic() {
        for msg in [
            setup_without_extended_security(),
            spnego_setup(),
            tree_connect_request(),
            tree_connect_response(),
            logon_failure(),
            chained(),
        ] {
            for len in 0..msg.len() {
                let _ = Repr::parse(&msg[..len]);
            }
        }
        // A password length past the data block.
        let mut msg = setup_without_extended_security();
        let at = field::HEADER_END + 1 + field::SETUP_UNICODE_PASSWORD_LEN;
        msg[at..at + 2].copy_from_slice(&0xfff0u16.to_le_bytes());
        assert_eq!(Repr::parse(&msg), Err(Error::FieldOutOfBounds));
        // A ByteCount past the message.
        let mut msg = tree_connect_request();
        let at = field::HEADER_END + 1 + 8;
        msg[at..at + 2].copy_from_slice(&0xfff0u16.to_le_bytes());
        assert_eq!(Repr::parse(&msg), Err(Error::FieldOutOfBounds));
        assert_eq!(Repr::parse(b"\xffSM"), Err(Error::Truncated));
        assert_eq!(Repr::parse(b"\xfeSMB...."), Err(Error::NotSmb));
    }
}
