//! LDAP messages (RFC 4511), decoded with rusticata's `ldap-parser` (as Suricata does): binds
//! (simple, or SASL carrying NTLMSSP), searches with their filter rendered as RFC 4515 text,
//! search results and unbinds. [`frame_len`] cuts a TCP stream at BER message boundaries.
//!
//! Simple-bind passwords are never kept: the [`Auth::Simple`] variant has no field for one.

use std::borrow::Cow;

use ldap_parser::filter::{AttributeValueAssertion, Filter, Substring};
use ldap_parser::ldap::{AuthenticationChoice, LdapMessage, ProtocolOp};
use ldap_parser::FromBer;

pub use vigil_plugin_sdk::ldap::MAX_FILTER_DEPTH;
use vigil_plugin_sdk::ldap::{self as sdk, Assertion, Extensible, LdapFilter, Substrings};

use super::{next_boundary, ntlm, Boundary, Start};

mod field {
    pub const TAG: usize = 0;
    pub const LENGTH: usize = 1;
}

/// An LDAPMessage is a SEQUENCE.
const TAG_SEQUENCE: u8 = 0x30;
/// Messages larger than this are refused rather than buffered.
pub const MAX_MESSAGE_LEN: usize = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    Truncated,
    /// Not a BER SEQUENCE, or an indefinite or oversized length.
    BadFraming,
    /// A filter nested deeper than [`MAX_FILTER_DEPTH`].
    TooDeep,
    /// The BER inside did not decode as an LDAPMessage.
    Malformed,
}

impl Error {
    pub const fn name(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::BadFraming => "bad_framing",
            Error::TooDeep => "filter_too_deep",
            Error::Malformed => "malformed",
        }
    }
}

/// The length of the BER message at the start of `buf`, header included: `Ok(None)` until the
/// tag and length are there, then `Ok(Some(len))` (which may exceed `buf.len()`).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, Error> {
    let Some(&tag) = buf.get(field::TAG) else {
        return Ok(None);
    };
    if tag != TAG_SEQUENCE {
        return Err(Error::BadFraming);
    }
    let Some((header, len)) = definite_length(buf.get(field::LENGTH..).unwrap_or(&[]))? else {
        return Ok(None);
    };
    if len > MAX_MESSAGE_LEN {
        return Err(Error::BadFraming);
    }
    Ok(Some(1 + header + len))
}

/// A BER definite length at the front of `buf`: `(bytes it takes, value)`, `Ok(None)` until
/// those bytes are there. 0x80 (indefinite) is not allowed in LDAP, and more than 4 length
/// bytes is past any sane message.
fn definite_length(buf: &[u8]) -> Result<Option<(usize, usize)>, Error> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first < 0x80 {
        return Ok(Some((1, usize::from(first))));
    }
    let count = usize::from(first & 0x7f);
    if count == 0 || count > 4 {
        return Err(Error::BadFraming);
    }
    let Some(bytes) = buf.get(1..1 + count) else {
        return Ok(None);
    };
    let len = bytes
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    Ok(Some((1 + count, len)))
}

/// Whether `tag` is a protocolOp of RFC 4511 §4.2: `[APPLICATION n]`, constructed (0x60 | n)
/// except the primitive UnbindRequest (2), DelRequest (10) and AbandonRequest (16).
fn is_protocol_op(tag: u8) -> bool {
    matches!(
        tag,
        0x60 | 0x61 | 0x42 | 0x63..=0x69 | 0x4a | 0x6b..=0x6f | 0x50 | 0x73 | 0x77..=0x79
    )
}

/// Where the next LDAPMessage plausibly starts in `data` (see [`starts_message`]).
pub fn next_message(data: &[u8]) -> Boundary {
    next_boundary(data, starts_message)
}

/// Whether an LDAPMessage plausibly starts at the front of `buf`: a SEQUENCE of sane length
/// holding a non-negative INTEGER message id and then a known protocolOp that fits inside it.
/// For a stream picked up, or resumed after a gap, inside a message.
fn starts_message(buf: &[u8]) -> Start {
    const TAG_INTEGER: u8 = 0x02;
    let judge = || -> Result<Option<bool>, Error> {
        let Some(&tag) = buf.get(field::TAG) else {
            return Ok(None);
        };
        if tag != TAG_SEQUENCE {
            return Ok(Some(false));
        }
        let rest = buf.get(field::LENGTH..).unwrap_or(&[]);
        let Some((seq_header, seq_len)) = definite_length(rest)? else {
            return Ok(None);
        };
        let id_at = field::LENGTH + seq_header;
        let (Some(&id_tag), Some(&id_len)) = (buf.get(id_at), buf.get(id_at + 1)) else {
            return Ok(None);
        };
        // Message ids are 0..2^31-1: one to four content bytes, the first without its sign bit.
        if id_tag != TAG_INTEGER || !(1..=4).contains(&id_len) {
            return Ok(Some(false));
        }
        let Some(&id_first) = buf.get(id_at + 2) else {
            return Ok(None);
        };
        let op_at = id_at + 2 + usize::from(id_len);
        let Some(&op_tag) = buf.get(op_at) else {
            return Ok(None);
        };
        if id_first & 0x80 != 0 || !is_protocol_op(op_tag) {
            return Ok(Some(false));
        }
        let Some((op_header, op_len)) = definite_length(buf.get(op_at + 1..).unwrap_or(&[]))?
        else {
            return Ok(None);
        };
        // Both lengths come off the wire (up to 2^32 - 1): compare without overflowing.
        let end = (field::LENGTH + seq_header).saturating_add(seq_len);
        let op_end = (op_at + 1 + op_header).saturating_add(op_len);
        Ok(Some(seq_len <= MAX_MESSAGE_LEN && op_end <= end))
    };
    match judge() {
        Ok(Some(true)) => Start::Yes,
        Ok(None) => Start::Undecided,
        Ok(Some(false)) | Err(_) => Start::No,
    }
}

/// How a bind authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A simple bind; the password is deliberately not kept.
    Simple { anonymous: bool },
    Sasl {
        mechanism: String,
        /// The NTLMSSP message in the credentials (GSS-SPNEGO, NTLM, or any blob carrying one).
        ntlm: Option<Result<ntlm::Message, ntlm::Error>>,
    },
}

/// What one LDAPMessage says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    BindRequest {
        version: u8,
        name: String,
        auth: Auth,
    },
    BindResponse {
        result_code: u32,
        /// The server's NTLMSSP CHALLENGE in serverSaslCreds, if any.
        ntlm: Option<Result<ntlm::Message, ntlm::Error>>,
    },
    SearchRequest {
        base: String,
        /// Zeek's names: "base", "one", "tree" (or "unknown").
        scope: &'static str,
        /// Its `Display` is the RFC 4515 text, e.g. `(&(objectclass=*)(sAMAccountName=bob))`.
        filter: LdapFilter<'static>,
        attributes: Vec<String>,
    },
    SearchResultEntry {
        dn: String,
    },
    SearchResultDone {
        result_code: u32,
    },
    UnbindRequest,
    /// Any other operation, by its protocolOp tag.
    Other {
        tag: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr {
    pub message_id: u32,
    pub op: Op,
}

pub const fn scope_name(scope: u32) -> &'static str {
    match scope {
        0 => "base",
        1 => "one",
        2 => "tree",
        _ => "unknown",
    }
}

fn ntlm_in(blob: Option<&[u8]>) -> Option<Result<ntlm::Message, ntlm::Error>> {
    ntlm::find(blob?).map(ntlm::Message::parse)
}

impl Repr {
    /// Parses one whole message (as cut by [`frame_len`]).
    pub fn parse(msg: &[u8]) -> Result<Repr, Error> {
        let (_, message) = LdapMessage::from_ber(msg).map_err(|e| match e {
            ldap_parser::Err::Incomplete(_) => Error::Truncated,
            ldap_parser::Err::Error(ldap_parser::error::LdapError::FilterMaxDepth)
            | ldap_parser::Err::Failure(ldap_parser::error::LdapError::FilterMaxDepth) => {
                Error::TooDeep
            }
            _ => Error::Malformed,
        })?;
        let op = match &message.protocol_op {
            ProtocolOp::BindRequest(bind) => Op::BindRequest {
                version: bind.version,
                name: bind.name.0.to_string(),
                auth: match &bind.authentication {
                    AuthenticationChoice::Simple(password) => Auth::Simple {
                        anonymous: password.is_empty(),
                    },
                    AuthenticationChoice::Sasl(sasl) => Auth::Sasl {
                        mechanism: sasl.mechanism.0.to_string(),
                        ntlm: ntlm_in(sasl.credentials.as_deref()),
                    },
                },
            },
            ProtocolOp::BindResponse(rsp) => Op::BindResponse {
                result_code: rsp.result.result_code.0,
                ntlm: ntlm_in(rsp.server_sasl_creds.as_deref()),
            },
            ProtocolOp::SearchRequest(search) => {
                let filter = tree(&search.filter, 0)?;
                Op::SearchRequest {
                    base: search.base_object.0.to_string(),
                    scope: scope_name(search.scope.0),
                    filter,
                    attributes: search.attributes.iter().map(|a| a.0.to_string()).collect(),
                }
            }
            ProtocolOp::SearchResultEntry(entry) => Op::SearchResultEntry {
                dn: entry.object_name.0.to_string(),
            },
            ProtocolOp::SearchResultDone(result) => Op::SearchResultDone {
                result_code: result.result_code.0,
            },
            ProtocolOp::UnbindRequest => Op::UnbindRequest,
            other => Op::Other { tag: other.tag().0 },
        };
        Ok(Repr {
            message_id: message.message_id.0,
            op,
        })
    }
}

/// The SDK's tree for `filter`, refused when nested deeper than [`MAX_FILTER_DEPTH`] (the root is
/// depth 0), so that no tree the core keeps, encodes or renders is deeper.
fn tree(filter: &Filter<'_>, depth: usize) -> Result<LdapFilter<'static>, Error> {
    if depth >= MAX_FILTER_DEPTH {
        return Err(Error::TooDeep);
    }
    let text = |s: &str| Cow::Owned(s.to_string());
    let bytes = |v: &[u8]| Cow::Owned(v.to_vec());
    let assertion = |ava: &AttributeValueAssertion<'_>| Assertion {
        attribute: text(&ava.attribute_desc.0),
        value: bytes(&ava.assertion_value),
    };
    let list = |items: &[Filter<'_>]| -> Result<Vec<LdapFilter<'static>>, Error> {
        items.iter().map(|item| tree(item, depth + 1)).collect()
    };
    Ok(match filter {
        Filter::And(items) => LdapFilter::And(list(items)?),
        Filter::Or(items) => LdapFilter::Or(list(items)?),
        Filter::Not(inner) => LdapFilter::Not(Box::new(tree(inner, depth + 1)?)),
        Filter::EqualityMatch(ava) => LdapFilter::Equality(assertion(ava)),
        Filter::GreaterOrEqual(ava) => LdapFilter::GreaterOrEqual(assertion(ava)),
        Filter::LessOrEqual(ava) => LdapFilter::LessOrEqual(assertion(ava)),
        Filter::ApproxMatch(ava) => LdapFilter::Approx(assertion(ava)),
        Filter::Present(attribute) => LdapFilter::Present(text(&attribute.0)),
        Filter::Substrings(sub) => LdapFilter::Substrings(Substrings {
            attribute: text(&sub.filter_type.0),
            parts: sub
                .substrings
                .iter()
                .map(|part| match part {
                    Substring::Initial(v) => sdk::Substring::Initial(bytes(&v.0)),
                    Substring::Any(v) => sdk::Substring::Any(bytes(&v.0)),
                    Substring::Final(v) => sdk::Substring::Final(bytes(&v.0)),
                })
                .collect(),
        }),
        Filter::ExtensibleMatch(m) => LdapFilter::Extensible(Extensible {
            rule: m.matching_rule.as_ref().map(|rule| text(&rule.0)),
            attribute: m.rule_type.as_ref().map(|attribute| text(&attribute.0)),
            value: bytes(&m.assertion_value.0),
            dn_attributes: m.dn_attributes == Some(true),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::smb2::test_streams;

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if content.len() < 0x80 {
            out.push(content.len() as u8);
        } else {
            out.push(0x84);
            out.extend_from_slice(&(content.len() as u32).to_be_bytes());
        }
        out.extend_from_slice(content);
        out
    }

    fn message(id: u8, op: &[u8]) -> Vec<u8> {
        tlv(0x30, &[tlv(0x02, &[id]), op.to_vec()].concat())
    }

    fn simple_bind(name: &str, password: &str) -> Vec<u8> {
        let body = [
            tlv(0x02, &[3]),
            tlv(0x04, name.as_bytes()),
            tlv(0x80, password.as_bytes()),
        ]
        .concat();
        message(1, &tlv(0x60, &body))
    }

    fn search(base: &str, filter: &[u8]) -> Vec<u8> {
        let body = [
            tlv(0x04, base.as_bytes()),
            tlv(0x0a, &[2]),
            tlv(0x0a, &[0]),
            tlv(0x02, &[0]),
            tlv(0x02, &[0]),
            tlv(0x01, &[0]),
            filter.to_vec(),
            tlv(0x30, &tlv(0x04, b"cn")),
        ]
        .concat();
        message(2, &tlv(0x63, &body))
    }

    fn equality(attr: &str, value: &str) -> Vec<u8> {
        tlv(
            0xa3,
            &[tlv(0x04, attr.as_bytes()), tlv(0x04, value.as_bytes())].concat(),
        )
    }

    fn present(attr: &str) -> Vec<u8> {
        tlv(0x87, attr.as_bytes())
    }

    #[test]
    fn simple_bind_gives_the_name_and_never_the_password() {
        let msg = simple_bind("cn=admin,dc=example,dc=com", "hunter2");
        assert_eq!(frame_len(&msg), Ok(Some(msg.len())));
        let repr = Repr::parse(&msg).unwrap();
        assert_eq!(
            repr,
            Repr {
                message_id: 1,
                op: Op::BindRequest {
                    version: 3,
                    name: "cn=admin,dc=example,dc=com".into(),
                    auth: Auth::Simple { anonymous: false },
                }
            }
        );
        assert!(!format!("{repr:?}").contains("hunter2"));
    }

    #[test]
    fn search_filter_is_rendered_as_rfc4515_text() {
        let filter = tlv(
            0xa0,
            &[equality("a", "b"), tlv(0xa2, &present("c"))].concat(),
        );
        let repr = Repr::parse(&search("dc=example,dc=com", &filter)).unwrap();
        let Op::SearchRequest {
            base,
            scope,
            filter,
            attributes,
        } = repr.op
        else {
            panic!("{:?}", repr.op)
        };
        assert_eq!((base.as_str(), scope), ("dc=example,dc=com", "tree"));
        assert_eq!(filter.to_string(), "(&(a=b)(!(c=*)))");
        assert_eq!(
            filter,
            LdapFilter::And(vec![
                LdapFilter::Equality(Assertion {
                    attribute: "a".into(),
                    value: b"b".as_slice().into(),
                }),
                LdapFilter::Not(Box::new(LdapFilter::Present("c".into()))),
            ])
        );
        assert_eq!(attributes, ["cn"]);
        let repr = Repr::parse(&search("", &equality("objectClass", "us(e)r*"))).unwrap();
        assert!(matches!(repr.op, Op::SearchRequest { filter, .. }
            if filter.to_string() == r"(objectClass=us\28e\29r\2a)"));
    }

    #[test]
    fn sasl_bind_with_ntlmssp_is_decoded() {
        let mut ntlm_negotiate = b"NTLMSSP\0".to_vec();
        ntlm_negotiate.extend_from_slice(&1u32.to_le_bytes());
        ntlm_negotiate.extend_from_slice(&0x0000_0207u32.to_le_bytes());
        let sasl = tlv(
            0xa3,
            &[tlv(0x04, b"GSS-SPNEGO"), tlv(0x04, &ntlm_negotiate)].concat(),
        );
        let body = [tlv(0x02, &[3]), tlv(0x04, b""), sasl].concat();
        let repr = Repr::parse(&message(1, &tlv(0x60, &body))).unwrap();
        assert!(matches!(repr.op, Op::BindRequest {
            auth: Auth::Sasl { mechanism, ntlm: Some(Ok(ntlm::Message::Negotiate { .. })) }, ..
        } if mechanism == "GSS-SPNEGO"));
    }

    #[test]
    fn hostile_input_is_refused_and_truncations_never_panic() {
        let filter = tlv(0xa0, &[equality("a", "b"), present("c")].concat());
        let msg = search("dc=x", &filter);
        for len in 0..msg.len() {
            let _ = frame_len(&msg[..len]);
            assert!(Repr::parse(&msg[..len]).is_err(), "prefix {len} accepted");
        }
        assert_eq!(frame_len(&[]), Ok(None));
        assert_eq!(frame_len(&[0x30]), Ok(None));
        assert_eq!(frame_len(&[0x30, 0x84, 0]), Ok(None));
        assert_eq!(frame_len(&[0x30, 0x80]), Err(Error::BadFraming));
        assert_eq!(
            frame_len(&[0x30, 0x85, 1, 1, 1, 1, 1]),
            Err(Error::BadFraming)
        );
        assert_eq!(
            frame_len(&[0x30, 0x84, 0x7f, 0, 0, 0]),
            Err(Error::BadFraming)
        );
        assert_eq!(frame_len(b"GET /"), Err(Error::BadFraming));
        assert_eq!(frame_len(&[0x30, 0]), Ok(Some(2)));
        assert!(Repr::parse(&[0x30, 0]).is_err());
        // A length past the end of the buffer.
        assert_eq!(
            Repr::parse(&[0x30, 0x84, 0, 0, 0x10, 0, 2, 1, 1]),
            Err(Error::Truncated)
        );
        // Filters nested 10 000 deep: refused, not a stack overflow.
        let mut deep = present("c");
        for _ in 0..10_000 {
            deep = tlv(0xa2, &deep);
        }
        assert_eq!(Repr::parse(&search("dc=x", &deep)), Err(Error::TooDeep));
    }

    fn reprs(stream: &[u8]) -> Vec<Repr> {
        test_streams::cut(stream, frame_len)
            .into_iter()
            .map(|m| Repr::parse(m).expect("every message decodes"))
            .collect()
    }

    #[test]
    fn resync_finds_every_next_message_in_real_ldap_streams() {
        let Some(dir) = test_streams::pcap_dir() else {
            return;
        };
        for (capture, port) in [("ldap/simpleauth.pcap", 3268), ("ldap/sasl-ntlm.pcap", 389)] {
            for conv in test_streams::tcp_conversations(&dir.join(capture), port) {
                for stream in [&conv.to_server, &conv.to_client] {
                    let starts = test_streams::message_starts(stream, frame_len);
                    test_streams::assert_resyncs_on_each_next_start(stream, &starts, next_message);
                }
            }
        }
    }

    #[test]
    fn simpleauth_capture_matches_zeek_ldap_logs() {
        let Some(dir) = test_streams::pcap_dir() else {
            return;
        };
        let convs = test_streams::tcp_conversations(&dir.join("ldap/simpleauth.pcap"), 3268);
        assert_eq!(convs.len(), 1);
        let requests = reprs(&convs[0].to_server);
        let binds: Vec<(u32, &str)> = requests
            .iter()
            .filter_map(|r| match &r.op {
                Op::BindRequest {
                    name,
                    auth: Auth::Simple { .. },
                    ..
                } => Some((r.message_id, name.as_str())),
                _ => None,
            })
            .collect();
        // ldap.log: bind simple, messages 1 and 3.
        assert_eq!(
            binds,
            [
                (1, "xxxxxxxxxxx@xx.xxx.xxxxx.net"),
                (
                    3,
                    "CN=xxxxxxxx,OU=Users,OU=Accounts,DC=xx,DC=xxx,DC=xxxxx,DC=net"
                )
            ]
        );
        // ldap_search.log: message 2, tree, base and filter. Zeek leaves `attributes` unset; the
        // request on the wire asks for one.
        assert!(requests.iter().any(|r| r.message_id == 2
            && matches!(&r.op, Op::SearchRequest { base, scope: "tree", filter, attributes }
                if base == "DC=xx,DC=xxx,DC=xxxxx,DC=net"
                    && filter.to_string() == "(&(objectclass=*)(sAMAccountName=xxxxxxxx))"
                    && attributes == &["sAMAccountName"])));
        let responses = reprs(&convs[0].to_client);
        // result_count 1, result success.
        let entries = responses
            .iter()
            .filter(|r| matches!(r.op, Op::SearchResultEntry { .. }))
            .count();
        assert_eq!(entries, 1);
        assert!(responses.contains(&Repr {
            message_id: 2,
            op: Op::SearchResultDone { result_code: 0 }
        }));
    }

    #[test]
    fn sasl_ntlm_capture_matches_zeek_ldap_and_ntlm_logs() {
        let Some(dir) = test_streams::pcap_dir() else {
            return;
        };
        let convs = test_streams::tcp_conversations(&dir.join("ldap/sasl-ntlm.pcap"), 389);
        assert_eq!(convs.len(), 1);
        let requests = reprs(&convs[0].to_server);
        // ldap.log: bind SASL NTLM (messages 1 and 2); ntlm.log: sasladmin@slapd.ldap / LOCALHOST.
        let mut auth = None;
        for r in &requests {
            if let Op::BindRequest {
                auth: Auth::Sasl { mechanism, ntlm },
                ..
            } = &r.op
            {
                assert_eq!(mechanism, "NTLM");
                if let Some(Ok(ntlm::Message::Authenticate {
                    user,
                    domain,
                    workstation,
                    ..
                })) = ntlm
                {
                    auth = Some((user.clone(), domain.clone(), workstation.clone()));
                }
            }
        }
        assert_eq!(
            auth,
            Some((
                "sasladmin@slapd.ldap".into(),
                "LOCALHOST".into(),
                String::new()
            ))
        );
        let responses = reprs(&convs[0].to_client);
        assert!(responses.iter().any(|r| matches!(
            &r.op,
            Op::BindResponse {
                result_code: 14,
                ntlm: Some(Ok(ntlm::Message::Challenge { .. }))
            }
        )));
        // ldap_search.log: message 3, tree, dc=example,dc=com, (objectclass=*), 9 results.
        assert!(requests.iter().any(|r| r.message_id == 3
            && matches!(&r.op, Op::SearchRequest { base, scope: "tree", filter, .. }
                if base == "dc=example,dc=com" && filter.to_string() == "(objectclass=*)")));
        let entries = responses
            .iter()
            .filter(|r| matches!(r.op, Op::SearchResultEntry { .. }))
            .count();
        assert_eq!(entries, 9);
        assert!(requests
            .iter()
            .any(|r| r.message_id == 4 && r.op == Op::UnbindRequest));
    }
}
