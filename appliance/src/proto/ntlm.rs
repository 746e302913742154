//! NTLMSSP messages (MS-NLMP §2.2) wherever they appear: inside SMB2 session setups (in SPNEGO),
//! LDAP SASL binds, HTTP `Authorization: NTLM` and DCE/RPC auth trailers. A view over the message
//! bytes; the carrier finds the message with [`find`].

mod field {
    pub const SIGNATURE: &[u8] = b"NTLMSSP\0";
    pub const MESSAGE_TYPE: usize = 8;
    // NEGOTIATE
    pub const NEGOTIATE_FLAGS: usize = 12;
    pub const NEGOTIATE_DOMAIN: usize = 16;
    pub const NEGOTIATE_WORKSTATION: usize = 24;
    // CHALLENGE
    pub const CHALLENGE_TARGET: usize = 12;
    pub const CHALLENGE_FLAGS: usize = 20;
    pub const CHALLENGE_TARGET_INFO: usize = 40;
    // AUTHENTICATE
    pub const AUTH_NT_RESPONSE: usize = 20;
    pub const AUTH_DOMAIN: usize = 28;
    pub const AUTH_USER: usize = 36;
    pub const AUTH_WORKSTATION: usize = 44;
    pub const AUTH_FLAGS: usize = 60;
    pub const AUTH_MIN_LEN: usize = 64;
}

const NEGOTIATE_UNICODE: u32 = 0x0000_0001;
const NEGOTIATE_OEM_DOMAIN_SUPPLIED: u32 = 0x0000_1000;
const NEGOTIATE_OEM_WORKSTATION_SUPPLIED: u32 = 0x0000_2000;
/// Names longer than this are not names.
const MAX_FIELD_LEN: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    Truncated,
    NotNtlmssp,
    UnknownType(u32),
    FieldOutOfBounds,
}

impl Error {
    pub const fn name(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::NotNtlmssp => "not_ntlmssp",
            Error::UnknownType(_) => "unknown_message_type",
            Error::FieldOutOfBounds => "field_out_of_bounds",
        }
    }
}

/// The meaning of one NTLMSSP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Negotiate {
        flags: u32,
        domain: Option<String>,
        workstation: Option<String>,
    },
    Challenge {
        flags: u32,
        target: String,
        server: ServerNames,
    },
    Authenticate {
        flags: u32,
        domain: String,
        user: String,
        workstation: String,
        /// An anonymous (NULL session) login: no user and an empty NT response.
        anonymous: bool,
    },
}

/// The names a server gives of itself in a CHALLENGE's target info (MS-NLMP §2.2.2.1 AV pairs);
/// Zeek logs them as `server_*_name`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerNames {
    pub nb_computer: Option<String>,
    pub nb_domain: Option<String>,
    pub dns_computer: Option<String>,
    pub dns_domain: Option<String>,
    pub dns_tree: Option<String>,
}

impl ServerNames {
    /// Reads the AV pairs up to `MsvAvEOL`; a list that runs past its buffer is refused.
    fn parse(mut info: &[u8]) -> Result<ServerNames, Error> {
        let mut names = ServerNames::default();
        while info.len() >= 4 {
            let id = le16(info, 0)?;
            let len = usize::from(le16(info, 2)?);
            let value = info.get(4..4 + len).ok_or(Error::FieldOutOfBounds)?;
            let slot = match id {
                0 => break,
                1 => &mut names.nb_computer,
                2 => &mut names.nb_domain,
                3 => &mut names.dns_computer,
                4 => &mut names.dns_domain,
                5 => &mut names.dns_tree,
                _ => {
                    info = &info[4 + len..];
                    continue;
                }
            };
            *slot = Some(string(value, true));
            info = &info[4 + len..];
        }
        Ok(names)
    }
}

/// Where an NTLMSSP message starts inside a carrier's blob (SPNEGO wraps it in ASN.1; the
/// signature is unambiguous, so scanning for it is what every carrier can share).
pub fn find(blob: &[u8]) -> Option<&[u8]> {
    blob.windows(field::SIGNATURE.len())
        .position(|w| w == field::SIGNATURE)
        .map(|at| &blob[at..])
}

fn le16(buf: &[u8], at: usize) -> Result<u16, Error> {
    let b = buf.get(at..at + 2).ok_or(Error::Truncated)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn le32(buf: &[u8], at: usize) -> Result<u32, Error> {
    let b = buf.get(at..at + 4).ok_or(Error::Truncated)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A security buffer (len, max len, offset) pointing into the message.
fn security_buffer(msg: &[u8], at: usize) -> Result<&[u8], Error> {
    let len = usize::from(le16(msg, at)?);
    let offset = le32(msg, at + 4)? as usize;
    if len == 0 {
        return Ok(&[]);
    }
    if len > MAX_FIELD_LEN {
        return Err(Error::FieldOutOfBounds);
    }
    msg.get(offset..offset + len).ok_or(Error::FieldOutOfBounds)
}

fn string(bytes: &[u8], unicode: bool) -> String {
    if unicode {
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        // OEM code page: ASCII is what matters for names; anything else is shown, not guessed.
        String::from_utf8_lossy(bytes).into_owned()
    }
}

impl Message {
    pub fn parse(msg: &[u8]) -> Result<Message, Error> {
        if msg.len() < 12 {
            return Err(Error::Truncated);
        }
        if !msg.starts_with(field::SIGNATURE) {
            return Err(Error::NotNtlmssp);
        }
        match le32(msg, field::MESSAGE_TYPE)? {
            1 => {
                let flags = le32(msg, field::NEGOTIATE_FLAGS)?;
                let optional = |supplied: u32, at: usize| -> Result<Option<String>, Error> {
                    if flags & supplied == 0 || msg.len() < at + 8 {
                        return Ok(None);
                    }
                    Ok(Some(string(security_buffer(msg, at)?, false)))
                };
                Ok(Message::Negotiate {
                    flags,
                    domain: optional(NEGOTIATE_OEM_DOMAIN_SUPPLIED, field::NEGOTIATE_DOMAIN)?,
                    workstation: optional(
                        NEGOTIATE_OEM_WORKSTATION_SUPPLIED,
                        field::NEGOTIATE_WORKSTATION,
                    )?,
                })
            }
            2 => {
                let flags = le32(msg, field::CHALLENGE_FLAGS)?;
                let target = security_buffer(msg, field::CHALLENGE_TARGET)?;
                // Target info is optional (absent in NTLMv1-era challenges).
                let server = if msg.len() >= field::CHALLENGE_TARGET_INFO + 8 {
                    ServerNames::parse(security_buffer(msg, field::CHALLENGE_TARGET_INFO)?)?
                } else {
                    ServerNames::default()
                };
                Ok(Message::Challenge {
                    flags,
                    target: string(target, flags & NEGOTIATE_UNICODE != 0),
                    server,
                })
            }
            3 => {
                if msg.len() < field::AUTH_MIN_LEN {
                    return Err(Error::Truncated);
                }
                let flags = le32(msg, field::AUTH_FLAGS)?;
                let unicode = flags & NEGOTIATE_UNICODE != 0;
                let user = string(security_buffer(msg, field::AUTH_USER)?, unicode);
                let nt_response = security_buffer(msg, field::AUTH_NT_RESPONSE)?;
                Ok(Message::Authenticate {
                    flags,
                    domain: string(security_buffer(msg, field::AUTH_DOMAIN)?, unicode),
                    anonymous: user.is_empty() && nt_response.is_empty(),
                    user,
                    workstation: string(security_buffer(msg, field::AUTH_WORKSTATION)?, unicode),
                })
            }
            other => Err(Error::UnknownType(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    /// An AUTHENTICATE message laid out as Samba's smbclient sends it.
    fn authenticate(domain: &str, user: &str, workstation: &str) -> Vec<u8> {
        let (d, u, w) = (utf16(domain), utf16(user), utf16(workstation));
        let nt = vec![0xab; 24];
        let mut msg = b"NTLMSSP\0".to_vec();
        msg.extend_from_slice(&3u32.to_le_bytes());
        let mut offset = 64u32;
        let mut fields = Vec::new();
        let mut payload = Vec::new();
        for part in [&[][..], &nt, &d, &u, &w, &[]] {
            fields.extend_from_slice(&(part.len() as u16).to_le_bytes());
            fields.extend_from_slice(&(part.len() as u16).to_le_bytes());
            fields.extend_from_slice(&offset.to_le_bytes());
            offset += part.len() as u32;
            payload.extend_from_slice(part);
        }
        msg.extend_from_slice(&fields);
        msg.extend_from_slice(&(NEGOTIATE_UNICODE | 0x0008_0000).to_le_bytes());
        msg.extend_from_slice(&payload);
        msg
    }

    #[test]
    fn authenticate_gives_user_domain_and_workstation() {
        let mut blob = vec![0xa1, 0x81, 0x90, 0x30];
        blob.extend(authenticate("CORP", "alice", "DESKTOP-7Q2M1X"));
        let message = Message::parse(find(&blob).expect("signature")).expect("valid");
        assert_eq!(
            message,
            Message::Authenticate {
                flags: NEGOTIATE_UNICODE | 0x0008_0000,
                domain: "CORP".into(),
                user: "alice".into(),
                workstation: "DESKTOP-7Q2M1X".into(),
                anonymous: false,
            }
        );
    }

    #[test]
    fn challenge_target_info_gives_the_server_names() {
        let mut info = Vec::new();
        for (id, value) in [
            (2u16, "CORP"),
            (1, "DC01"),
            (3, "dc01.corp.local"),
            (7, "x"),
        ] {
            let value = utf16(value);
            info.extend_from_slice(&id.to_le_bytes());
            info.extend_from_slice(&(value.len() as u16).to_le_bytes());
            info.extend(value);
        }
        info.extend_from_slice(&[0; 4]);
        let target = utf16("CORP");
        let mut msg = b"NTLMSSP\0".to_vec();
        msg.extend_from_slice(&2u32.to_le_bytes());
        let target_at = 48u32;
        let info_at = target_at + target.len() as u32;
        msg.extend_from_slice(&(target.len() as u16).to_le_bytes());
        msg.extend_from_slice(&(target.len() as u16).to_le_bytes());
        msg.extend_from_slice(&target_at.to_le_bytes());
        msg.extend_from_slice(&NEGOTIATE_UNICODE.to_le_bytes());
        msg.extend_from_slice(&[0; 16]); // challenge + reserved
        msg.extend_from_slice(&(info.len() as u16).to_le_bytes());
        msg.extend_from_slice(&(info.len() as u16).to_le_bytes());
        msg.extend_from_slice(&info_at.to_le_bytes());
        msg.extend(target);
        msg.extend(&info);
        let Ok(Message::Challenge { target, server, .. }) = Message::parse(&msg) else {
            panic!("a challenge");
        };
        assert_eq!(target, "CORP");
        assert_eq!(server.nb_computer.as_deref(), Some("DC01"));
        assert_eq!(server.nb_domain.as_deref(), Some("CORP"));
        assert_eq!(server.dns_computer.as_deref(), Some("dc01.corp.local"));
        assert_eq!(server.dns_tree, None);
        // An AV pair claiming more bytes than remain is refused, shorter inputs never panic.
        let claim = msg.len() - info.len() + 2;
        msg[claim..claim + 2].copy_from_slice(&500u16.to_le_bytes());
        assert_eq!(Message::parse(&msg), Err(Error::FieldOutOfBounds));
        for len in 0..msg.len() {
            let _ = Message::parse(&msg[..len]);
        }
    }

    #[test]
    fn offsets_past_the_end_are_refused_and_truncations_never_panic() {
        let mut msg = authenticate("CORP", "alice", "WS");
        for len in 0..msg.len() {
            let _ = Message::parse(&msg[..len]);
        }
        msg[40..44].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert_eq!(Message::parse(&msg), Err(Error::FieldOutOfBounds));
    }
}
