//! Kerberos 5 KDC exchanges (RFC 4120 §5.4, §5.9): AS and TGS requests and replies and
//! KRB-ERROR, decoded with rusticata's `kerberos-parser` (as Suricata does). Over UDP the message
//! is the datagram; over TCP each message follows a 4-byte big-endian length ([`frame_len`]).
//! Only names and error codes are read: tickets and encrypted parts stay opaque.

use kerberos_parser::krb5::{KdcRep, KdcReq, PrincipalName};
use kerberos_parser::krb5_parser;

mod field {
    use std::ops::Range;
    /// TCP record mark (RFC 4120 §7.2.2): the high bit is reserved and must be zero.
    pub const RECORD_MARK: Range<usize> = 0..4;
    /// The first byte of a message: an APPLICATION-class constructed tag.
    pub const TAG: usize = 0;
}

/// A KDC message larger than this is not one (real ones stay well under 64 KiB).
pub const MAX_MESSAGE_LEN: usize = 1 << 20;

/// Application tags (RFC 4120 §5.10) as their first BER byte (class APPLICATION, constructed).
mod tag {
    pub const AS_REQ: u8 = 0x6a;
    pub const AS_REP: u8 = 0x6b;
    pub const TGS_REQ: u8 = 0x6c;
    pub const TGS_REP: u8 = 0x6d;
    pub const KRB_ERROR: u8 = 0x7e;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    Truncated,
    /// The first byte is not a KDC message tag (AP-REQ, KRB-PRIV etc. are not read here).
    NotKdcMessage,
    /// The TCP record mark has the reserved bit set or exceeds [`MAX_MESSAGE_LEN`].
    BadRecordMark,
    /// The DER inside did not decode.
    Malformed,
}

impl Error {
    pub const fn name(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::NotKdcMessage => "not_kdc_message",
            Error::BadRecordMark => "bad_record_mark",
            Error::Malformed => "malformed",
        }
    }
}

/// The length of the TCP-framed message at the start of `buf`, record mark included: `Ok(None)`
/// until the 4-byte mark is there, then `Ok(Some(len))` (which may exceed `buf.len()`).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, Error> {
    let Some(mark) = buf.get(field::RECORD_MARK) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([mark[0], mark[1], mark[2], mark[3]]);
    if len & 0x8000_0000 != 0 || len as usize > MAX_MESSAGE_LEN {
        return Err(Error::BadRecordMark);
    }
    Ok(Some(field::RECORD_MARK.end + len as usize))
}

/// The message inside a whole TCP frame (after the record mark).
pub fn tcp_payload(frame: &[u8]) -> Result<&[u8], Error> {
    match frame_len(frame)? {
        Some(len) => frame
            .get(field::RECORD_MARK.end..len)
            .ok_or(Error::Truncated),
        None => Err(Error::Truncated),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    As,
    Tgs,
}

impl Kind {
    /// Zeek's `request_type`.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::As => "AS",
            Kind::Tgs => "TGS",
        }
    }
}

/// The meaning of one KDC message. Principals are `name/instance` (components joined by `/`),
/// realms separate; Zeek's `client` is `{client}/{realm}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repr {
    Request {
        kind: Kind,
        /// Absent in TGS requests (the client is inside the encrypted ticket).
        client: Option<String>,
        realm: String,
        /// e.g. `krbtgt/VLADG.NET`.
        service: Option<String>,
    },
    Reply {
        kind: Kind,
        client: String,
        realm: String,
        service: String,
    },
    Error {
        code: i32,
        /// The RFC 4120 name, e.g. `KDC_ERR_PREAUTH_REQUIRED`, or "UNKNOWN".
        name: &'static str,
        /// The KDC's `e-text` (MIT sends e.g. `CLIENT_NOT_FOUND`; Zeek logs it as error_msg).
        text: Option<String>,
        client: Option<String>,
        realm: String,
        service: String,
    },
}

fn principal(name: &PrincipalName) -> String {
    name.name_string.join("/")
}

impl Repr {
    /// Parses one message (a UDP datagram, or a TCP frame's [`tcp_payload`]).
    pub fn parse(msg: &[u8]) -> Result<Repr, Error> {
        let first = *msg.get(field::TAG).ok_or(Error::Truncated)?;
        let request = |kind, req: KdcReq<'_>| Repr::Request {
            kind,
            client: req.req_body.cname.as_ref().map(principal),
            realm: req.req_body.realm.0.clone(),
            service: req.req_body.sname.as_ref().map(principal),
        };
        let reply = |kind, rep: KdcRep<'_>| Repr::Reply {
            kind,
            client: principal(&rep.cname),
            realm: rep.crealm.0.clone(),
            service: principal(&rep.ticket.sname),
        };
        let repr = match first {
            tag::AS_REQ => krb5_parser::parse_as_req(msg).map(|(_, r)| request(Kind::As, r)),
            tag::TGS_REQ => krb5_parser::parse_tgs_req(msg).map(|(_, r)| request(Kind::Tgs, r)),
            tag::AS_REP => krb5_parser::parse_as_rep(msg).map(|(_, r)| reply(Kind::As, r)),
            tag::TGS_REP => krb5_parser::parse_tgs_rep(msg).map(|(_, r)| reply(Kind::Tgs, r)),
            tag::KRB_ERROR => {
                // The free function is deprecated in favour of the `FromDer` trait, which would
                // need asn1-rs as a direct dependency for one call.
                #[allow(deprecated)]
                let parsed = krb5_parser::parse_krb_error(msg);
                parsed.map(|(_, e)| Repr::Error {
                    code: e.error_code.0,
                    name: error_name(e.error_code.0),
                    text: e.etext.clone(),
                    client: e.cname.as_ref().map(principal),
                    realm: e.realm.0.clone(),
                    service: principal(&e.sname),
                })
            }
            _ => return Err(Error::NotKdcMessage),
        };
        repr.map_err(|e| {
            if e.is_incomplete() {
                Error::Truncated
            } else {
                Error::Malformed
            }
        })
    }
}

/// RFC 4120 §7.5.9 and RFC 4556 names, as Zeek's `KRB::error_msg` table has them.
pub const fn error_name(code: i32) -> &'static str {
    match code {
        0 => "KDC_ERR_NONE",
        1 => "KDC_ERR_NAME_EXP",
        2 => "KDC_ERR_SERVICE_EXP",
        3 => "KDC_ERR_BAD_PVNO",
        4 => "KDC_ERR_C_OLD_MAST_KVNO",
        5 => "KDC_ERR_S_OLD_MAST_KVNO",
        6 => "KDC_ERR_C_PRINCIPAL_UNKNOWN",
        7 => "KDC_ERR_S_PRINCIPAL_UNKNOWN",
        8 => "KDC_ERR_PRINCIPAL_NOT_UNIQUE",
        9 => "KDC_ERR_NULL_KEY",
        10 => "KDC_ERR_CANNOT_POSTDATE",
        11 => "KDC_ERR_NEVER_VALID",
        12 => "KDC_ERR_POLICY",
        13 => "KDC_ERR_BADOPTION",
        14 => "KDC_ERR_ETYPE_NOSUPP",
        15 => "KDC_ERR_SUMTYPE_NOSUPP",
        16 => "KDC_ERR_PADATA_TYPE_NOSUPP",
        17 => "KDC_ERR_TRTYPE_NOSUPP",
        18 => "KDC_ERR_CLIENT_REVOKED",
        19 => "KDC_ERR_SERVICE_REVOKED",
        20 => "KDC_ERR_TGT_REVOKED",
        21 => "KDC_ERR_CLIENT_NOTYET",
        22 => "KDC_ERR_SERVICE_NOTYET",
        23 => "KDC_ERR_KEY_EXPIRED",
        24 => "KDC_ERR_PREAUTH_FAILED",
        25 => "KDC_ERR_PREAUTH_REQUIRED",
        26 => "KDC_ERR_SERVER_NOMATCH",
        27 => "KDC_ERR_MUST_USE_USER2USER",
        28 => "KDC_ERR_PATH_NOT_ACCEPTED",
        29 => "KDC_ERR_SVC_UNAVAILABLE",
        31 => "KRB_AP_ERR_BAD_INTEGRITY",
        32 => "KRB_AP_ERR_TKT_EXPIRED",
        33 => "KRB_AP_ERR_TKT_NYV",
        34 => "KRB_AP_ERR_REPEAT",
        35 => "KRB_AP_ERR_NOT_US",
        36 => "KRB_AP_ERR_BADMATCH",
        37 => "KRB_AP_ERR_SKEW",
        38 => "KRB_AP_ERR_BADADDR",
        39 => "KRB_AP_ERR_BADVERSION",
        40 => "KRB_AP_ERR_MSG_TYPE",
        41 => "KRB_AP_ERR_MODIFIED",
        42 => "KRB_AP_ERR_BADORDER",
        44 => "KRB_AP_ERR_BADKEYVER",
        45 => "KRB_AP_ERR_NOKEY",
        46 => "KRB_AP_ERR_MUT_FAIL",
        47 => "KRB_AP_ERR_BADDIRECTION",
        48 => "KRB_AP_ERR_METHOD",
        49 => "KRB_AP_ERR_BADSEQ",
        50 => "KRB_AP_ERR_INAPP_CKSUM",
        51 => "KRB_AP_PATH_NOT_ACCEPTED",
        52 => "KRB_ERR_RESPONSE_TOO_BIG",
        60 => "KRB_ERR_GENERIC",
        61 => "KRB_ERR_FIELD_TOOLONG",
        62 => "KDC_ERROR_CLIENT_NOT_TRUSTED",
        63 => "KDC_ERROR_KDC_NOT_TRUSTED",
        64 => "KDC_ERROR_INVALID_SIG",
        65 => "KDC_ERR_KEY_TOO_WEAK",
        66 => "KDC_ERR_CERTIFICATE_MISMATCH",
        67 => "KRB_AP_ERR_NO_TGT",
        68 => "KDC_ERR_WRONG_REALM",
        69 => "KRB_AP_ERR_USER_TO_USER_REQUIRED",
        70 => "KDC_ERR_CANT_VERIFY_CERTIFICATE",
        71 => "KDC_ERR_INVALID_CERTIFICATE",
        72 => "KDC_ERR_REVOKED_CERTIFICATE",
        73 => "KDC_ERR_REVOCATION_STATUS_UNKNOWN",
        74 => "KDC_ERR_REVOCATION_STATUS_UNAVAILABLE",
        75 => "KDC_ERR_CLIENT_NAME_MISMATCH",
        76 => "KDC_ERR_KDC_NAME_MISMATCH",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::smb2::test_streams;

    /// DER TLV with the shortest length form up to two bytes.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if content.len() < 0x80 {
            out.push(content.len() as u8);
        } else if content.len() <= 0xff {
            out.extend_from_slice(&[0x81, content.len() as u8]);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(content.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(content);
        out
    }

    fn ctx(n: u8, content: &[u8]) -> Vec<u8> {
        tlv(0xa0 | n, content)
    }

    fn int(v: u8) -> Vec<u8> {
        tlv(0x02, &[v])
    }

    fn gstr(s: &str) -> Vec<u8> {
        tlv(0x1b, s.as_bytes())
    }

    fn principal_der(parts: &[&str]) -> Vec<u8> {
        let names: Vec<u8> = parts.iter().flat_map(|p| gstr(p)).collect();
        tlv(
            0x30,
            &[ctx(0, &int(1)), ctx(1, &tlv(0x30, &names))].concat(),
        )
    }

    /// An AS-REQ as kinit sends it, without padata.
    fn as_req(client: &str, realm: &str) -> Vec<u8> {
        let body = tlv(
            0x30,
            &[
                ctx(0, &tlv(0x03, &[0, 0x40, 0, 0, 0x10])),
                ctx(1, &principal_der(&[client])),
                ctx(2, &gstr(realm)),
                ctx(3, &principal_der(&["krbtgt", realm])),
                ctx(5, &tlv(0x18, b"20370913024805Z")),
                ctx(7, &int(42)),
                ctx(8, &tlv(0x30, &int(18))),
            ]
            .concat(),
        );
        let req = tlv(
            0x30,
            &[ctx(1, &int(5)), ctx(2, &int(10)), ctx(4, &body)].concat(),
        );
        tlv(tag::AS_REQ, &req)
    }

    fn krb_error(code: u8, text: &str) -> Vec<u8> {
        let err = tlv(
            0x30,
            &[
                ctx(0, &int(5)),
                ctx(1, &int(30)),
                ctx(4, &tlv(0x18, b"20150119225459Z")),
                ctx(5, &int(1)),
                ctx(6, &int(code)),
                ctx(8, &principal_der(&["bob"])),
                ctx(9, &gstr("CORP.EXAMPLE")),
                ctx(10, &principal_der(&["krbtgt", "CORP.EXAMPLE"])),
                ctx(11, &gstr(text)),
            ]
            .concat(),
        );
        tlv(tag::KRB_ERROR, &err)
    }

    #[test]
    fn as_req_gives_client_realm_and_service() {
        assert_eq!(
            Repr::parse(&as_req("alice", "CORP.EXAMPLE")),
            Ok(Repr::Request {
                kind: Kind::As,
                client: Some("alice".into()),
                realm: "CORP.EXAMPLE".into(),
                service: Some("krbtgt/CORP.EXAMPLE".into()),
            })
        );
    }

    #[test]
    fn krb_error_gives_code_name_and_text() {
        assert_eq!(
            Repr::parse(&krb_error(25, "NEEDED_PREAUTH")),
            Ok(Repr::Error {
                code: 25,
                name: "KDC_ERR_PREAUTH_REQUIRED",
                text: Some("NEEDED_PREAUTH".into()),
                client: Some("bob".into()),
                realm: "CORP.EXAMPLE".into(),
                service: "krbtgt/CORP.EXAMPLE".into(),
            })
        );
    }

    #[test]
    fn tcp_record_mark_frames_and_hostile_input_never_panics() {
        let msg = as_req("alice", "CORP.EXAMPLE");
        let mut frame = (msg.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&msg);
        assert_eq!(frame_len(&frame), Ok(Some(frame.len())));
        assert_eq!(tcp_payload(&frame), Ok(&msg[..]));
        assert_eq!(frame_len(&[0, 0]), Ok(None));
        assert_eq!(frame_len(&[0x80, 0, 0, 1]), Err(Error::BadRecordMark));
        assert_eq!(frame_len(&[0, 0x7f, 0, 0]), Err(Error::BadRecordMark));
        for len in 0..frame.len() {
            let _ = frame_len(&frame[..len]);
            assert!(tcp_payload(&frame[..len]).is_err());
            if len < msg.len() {
                assert!(Repr::parse(&msg[..len]).is_err(), "prefix {len} accepted");
            }
        }
        let err = krb_error(6, "CLIENT_NOT_FOUND");
        for len in 0..err.len() {
            assert!(Repr::parse(&err[..len]).is_err());
        }
        assert_eq!(Repr::parse(&[]), Err(Error::Truncated));
        assert_eq!(Repr::parse(&[0x30, 0]), Err(Error::NotKdcMessage));
        // A length far past the end, and deep nesting under the application tag.
        assert!(Repr::parse(&[tag::AS_REQ, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x30]).is_err());
        let mut deep = vec![];
        for _ in 0..10_000 {
            deep.extend_from_slice(&[0x30, 0x80]);
        }
        deep.insert(0, 0x80);
        deep.insert(0, tag::AS_REQ);
        assert!(Repr::parse(&deep).is_err());
    }

    /// The TLVs directly inside `content` as (tag, content); stops at the first that does not fit.
    fn children(mut content: &[u8]) -> Vec<(u8, &[u8])> {
        let mut out = Vec::new();
        while let [tag, first, rest @ ..] = content {
            let (len, rest) = if first & 0x80 == 0 {
                (usize::from(*first), rest)
            } else {
                let n = usize::from(first & 0x7f);
                let Some(bytes) = rest.get(..n) else { break };
                let len = bytes.iter().fold(0, |len, b| len << 8 | usize::from(*b));
                (len, &rest[n..])
            };
            let Some(value) = rest.get(..len) else { break };
            out.push((*tag, value));
            content = &rest[len..];
        }
        out
    }

    /// The context tag numbers of a KDC request's KDC-REQ-BODY fields.
    fn body_fields(req: &[u8]) -> Vec<u8> {
        let [(_, outer)] = children(req)[..] else {
            panic!("one application TLV");
        };
        let [(0x30, fields)] = children(outer)[..] else {
            panic!("a KDC-REQ sequence");
        };
        let Some((_, body)) = children(fields).into_iter().find(|(tag, _)| *tag == 0xa4) else {
            panic!("a req-body");
        };
        let [(0x30, body)] = children(body)[..] else {
            panic!("a KDC-REQ-BODY sequence");
        };
        children(body).iter().map(|(tag, _)| tag & 0x1f).collect()
    }

    /// `req` (an AS-REQ or TGS-REQ) re-encoded without the KDC-REQ-BODY fields tagged `drop`.
    fn without_body_fields(req: &[u8], drop: &[u8]) -> Vec<u8> {
        let [(app, outer)] = children(req)[..] else {
            panic!("one application TLV");
        };
        let [(0x30, fields)] = children(outer)[..] else {
            panic!("a KDC-REQ sequence");
        };
        let fields: Vec<u8> = children(fields)
            .into_iter()
            .flat_map(|(tag, value)| {
                if tag != 0xa4 {
                    return tlv(tag, value);
                }
                let [(0x30, body)] = children(value)[..] else {
                    panic!("a KDC-REQ-BODY sequence");
                };
                let kept: Vec<u8> = children(body)
                    .into_iter()
                    .filter(|(tag, _)| !drop.contains(&(tag & 0x1f)))
                    .flat_map(|(tag, value)| tlv(tag, value))
                    .collect();
                ctx(4, &tlv(0x30, &kept))
            })
            .collect();
        tlv(app, &tlv(0x30, &fields))
    }

    #[test]
    fn kinit_requests_without_their_optional_body_fields_still_parse() {
        let Some(dir) = test_streams::pcap_dir() else {
            return;
        };
        let path = dir.join("krb/kinit.pcap");
        let request = test_streams::udp_datagrams(&path, 88)
            .into_iter()
            .find(|(to_server, m)| *to_server && m.first() == Some(&tag::AS_REQ))
            .map(|(_, m)| m)
            .expect("kinit sends an AS-REQ");
        let Ok(Repr::Request { realm, .. }) = Repr::parse(&request) else {
            panic!("the real AS-REQ parses");
        };
        // The request re-encodes to itself, so what changes below is only what was dropped.
        assert_eq!(without_body_fields(&request, &[]), request);
        // Of KDC-REQ-BODY's OPTIONAL fields (RFC 4120 §5.4.1) kinit already leaves out from (4),
        // rtime (6), addresses (9), enc-authorization-data (10) and additional-tickets (11);
        // cname (1) and sname (3) are dropped here, one at a time and together.
        const CNAME: u8 = 1;
        const SNAME: u8 = 3;
        assert_eq!(body_fields(&request), [0, CNAME, 2, SNAME, 5, 7, 8]);
        for dropped in [&[CNAME][..], &[SNAME], &[CNAME, SNAME]] {
            let stripped = without_body_fields(&request, dropped);
            match Repr::parse(&stripped) {
                Ok(Repr::Request {
                    kind: Kind::As,
                    client,
                    realm: stripped_realm,
                    service,
                }) => {
                    assert_eq!(stripped_realm, realm);
                    assert_eq!(client.is_none(), dropped.contains(&CNAME), "{dropped:?}");
                    assert_eq!(service.is_none(), dropped.contains(&SNAME), "{dropped:?}");
                }
                other => panic!("without {dropped:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn kinit_capture_matches_zeek_kerberos_log() {
        let Some(dir) = test_streams::pcap_dir() else {
            return;
        };
        let path = dir.join("krb/kinit.pcap");
        let mut messages: Vec<Vec<u8>> = test_streams::udp_datagrams(&path, 88)
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        for conv in test_streams::tcp_conversations(&path, 88) {
            for stream in [&conv.to_server, &conv.to_client] {
                for frame in test_streams::cut(stream, frame_len) {
                    messages.push(tcp_payload(frame).expect("whole frame").to_vec());
                }
            }
        }
        let reprs: Vec<Repr> = messages
            .iter()
            .map(|m| Repr::parse(m).expect("every KDC message decodes"))
            .collect();
        let requests: Vec<(String, String)> = reprs
            .iter()
            .filter_map(|r| match r {
                Repr::Request {
                    kind: Kind::As,
                    client: Some(c),
                    realm,
                    service: Some(s),
                } => Some((format!("{c}/{realm}"), s.clone())),
                _ => None,
            })
            .collect();
        // kerberos.log's (client, service) pairs for AS requests.
        for (client, service) in [
            ("valid_client_principal/VLADG.NET", "krbtgt/VLADG.NET"),
            (
                "expired_password_client_principal/VLADG.NET",
                "kadmin/changepw",
            ),
            (
                "valid_client_principal/VLADG.NET",
                "invalid_service_principal/test.vladg.net",
            ),
            ("WELLKNOWN/ANONYMOUS/VLADG.NET", "krbtgt/VLADG.NET"),
        ] {
            assert!(
                requests.iter().any(|(c, s)| c == client && s == service),
                "{client} -> {service} missing from {requests:?}"
            );
        }
        // Its error_msg values are MIT's e-text; the codes behind them are RFC 4120's.
        let errors: Vec<(&str, Option<&str>)> = reprs
            .iter()
            .filter_map(|r| match r {
                Repr::Error { name, text, .. } => Some((*name, text.as_deref())),
                _ => None,
            })
            .collect();
        assert!(errors.contains(&("KDC_ERR_C_PRINCIPAL_UNKNOWN", Some("CLIENT_NOT_FOUND"))));
        // MIT answers a wrong password with code 31 and the text PREAUTH_FAILED.
        assert!(errors.contains(&("KRB_AP_ERR_BAD_INTEGRITY", Some("PREAUTH_FAILED"))));
        assert!(errors.contains(&("KDC_ERR_CLIENT_REVOKED", Some("LOCKED_OUT"))));
        assert!(errors.contains(&("KDC_ERR_S_PRINCIPAL_UNKNOWN", Some("SERVER_NOT_FOUND"))));
        assert!(errors.contains(&("KDC_ERR_PREAUTH_REQUIRED", Some("NEEDED_PREAUTH"))));
        // The replies name the client too.
        assert!(reprs.iter().any(|r| matches!(
            r,
            Repr::Reply { kind: Kind::As, client, realm, .. }
                if client == "valid_client_principal" && realm == "VLADG.NET"
        )));
    }
}
