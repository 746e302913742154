//! DNS messages (RFC 1035) as a zero-copy view: one header check in `new_checked`, then
//! questions and answers read on demand. Names are decompressed into a caller's buffer; a
//! compression pointer must point strictly backwards, so loops are impossible by construction.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

mod field {
    use std::ops::Range;
    pub const ID: Range<usize> = 0..2;
    pub const FLAGS: Range<usize> = 2..4;
    pub const QDCOUNT: Range<usize> = 4..6;
    pub const ANCOUNT: Range<usize> = 6..8;
    pub const HEADER_END: usize = 12;
}

/// Longest name on the wire (RFC 1035 §2.3.4), and the most labels one can hold.
pub const MAX_NAME_LEN: usize = 255;
const MAX_LABELS: usize = 128;
/// Answers read from one message; more are counted but not decoded.
pub const MAX_ANSWERS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    Truncated,
    /// A compression pointer that does not point strictly backwards (a loop or a forward jump).
    BadPointer,
    LabelTooLong,
    NameTooLong,
    BadLabelType,
}

impl Error {
    pub const fn name(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::BadPointer => "bad_compression_pointer",
            Error::LabelTooLong => "label_too_long",
            Error::NameTooLong => "name_too_long",
            Error::BadLabelType => "bad_label_type",
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

pub mod qtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const PTR: u16 = 12;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
}

/// A view over a DNS message.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    buf: &'a [u8],
}

fn be16(buf: &[u8], at: usize) -> Result<u16> {
    let bytes = buf.get(at..at + 2).ok_or(Error::Truncated)?;
    Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
}

impl<'a> Message<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Message<'a>> {
        if buf.len() < field::HEADER_END {
            return Err(Error::Truncated);
        }
        Ok(Message { buf })
    }

    fn header(&self, range: std::ops::Range<usize>) -> u16 {
        u16::from_be_bytes([self.buf[range.start], self.buf[range.start + 1]])
    }

    pub fn id(&self) -> u16 {
        self.header(field::ID)
    }

    pub fn is_response(&self) -> bool {
        self.header(field::FLAGS) & 0x8000 != 0
    }

    pub fn opcode(&self) -> u8 {
        ((self.header(field::FLAGS) >> 11) & 0x0f) as u8
    }

    pub fn rcode(&self) -> u8 {
        (self.header(field::FLAGS) & 0x000f) as u8
    }

    pub fn question_count(&self) -> u16 {
        self.header(field::QDCOUNT)
    }

    pub fn answer_count(&self) -> u16 {
        self.header(field::ANCOUNT)
    }

    /// Decompresses the name at `at` into `out` (dotted, no trailing dot, `.` for the root);
    /// returns the offset just past the name where it was written inline.
    pub fn read_name(&self, at: usize, out: &mut String) -> Result<usize> {
        out.clear();
        let mut pos = at;
        let mut end = None;
        // Every jump must land strictly before the previous one: a pointer can neither loop nor
        // send the reader forward into unread data.
        let mut limit = at;
        for _ in 0..MAX_LABELS {
            let len = *self.buf.get(pos).ok_or(Error::Truncated)?;
            match len & 0xc0 {
                0x00 if len == 0 => {
                    if out.is_empty() {
                        out.push('.');
                    }
                    return Ok(end.unwrap_or(pos + 1));
                }
                0x00 => {
                    let label = self
                        .buf
                        .get(pos + 1..pos + 1 + usize::from(len))
                        .ok_or(Error::Truncated)?;
                    if !out.is_empty() {
                        out.push('.');
                    }
                    for &b in label {
                        if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                            out.push(char::from(b));
                        } else {
                            let _ = write!(out, "\\{b:03}");
                        }
                    }
                    if out.len() > MAX_NAME_LEN * 4 {
                        return Err(Error::NameTooLong);
                    }
                    pos += 1 + usize::from(len);
                }
                0xc0 => {
                    let target = usize::from(be16(self.buf, pos)? & 0x3fff);
                    if target >= limit {
                        return Err(Error::BadPointer);
                    }
                    end.get_or_insert(pos + 2);
                    limit = target;
                    pos = target;
                }
                _ => return Err(Error::BadLabelType),
            }
        }
        Err(Error::NameTooLong)
    }

    /// The first question (nearly every real query has exactly one), and the offset after the
    /// question section.
    pub fn first_question(&self, name: &mut String) -> Result<Option<(u16, usize)>> {
        let mut pos = field::HEADER_END;
        let mut first = None;
        let mut scratch = String::new();
        for i in 0..self.question_count() {
            let target = if i == 0 { &mut *name } else { &mut scratch };
            pos = self.read_name(pos, target)?;
            let qtype = be16(self.buf, pos)?;
            be16(self.buf, pos + 2)?;
            pos += 4;
            if i == 0 {
                first = Some(qtype);
            }
        }
        Ok(first.map(|qtype| (qtype, pos)))
    }

    /// The answers' data rendered as text (addresses, names), up to [`MAX_ANSWERS`].
    pub fn answers(&self, after_questions: usize) -> Result<Vec<String>> {
        let mut pos = after_questions;
        let mut answers = Vec::new();
        let mut owner = String::new();
        for _ in 0..self.answer_count().min(MAX_ANSWERS as u16) {
            pos = self.read_name(pos, &mut owner)?;
            let rtype = be16(self.buf, pos)?;
            let rdlen = usize::from(be16(self.buf, pos + 8)?);
            let rdata_at = pos + 10;
            let rdata = self
                .buf
                .get(rdata_at..rdata_at + rdlen)
                .ok_or(Error::Truncated)?;
            let text = match rtype {
                qtype::A if rdlen == 4 => {
                    Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]).to_string()
                }
                qtype::AAAA if rdlen == 16 => {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(rdata);
                    Ipv6Addr::from(octets).to_string()
                }
                qtype::PTR | qtype::CNAME | qtype::NS => {
                    let mut name = String::new();
                    self.read_name(rdata_at, &mut name)?;
                    name
                }
                qtype::SRV if rdlen > 6 => {
                    let mut name = String::new();
                    self.read_name(rdata_at + 6, &mut name)?;
                    format!("{name}:{}", be16(rdata, 4)?)
                }
                other => format!("<type {other}, {rdlen} bytes>"),
            };
            answers.push(text);
            pos = rdata_at + rdlen;
        }
        Ok(answers)
    }
}

/// The meaning of one DNS message, as logged and as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr {
    pub id: u16,
    pub response: bool,
    pub query: String,
    pub qtype: u16,
    pub rcode: u8,
    pub answers: Vec<String>,
}

impl Repr {
    pub fn parse(message: &Message<'_>) -> Result<Option<Repr>> {
        let mut query = String::new();
        let Some((qtype, after)) = message.first_question(&mut query)? else {
            return Ok(None);
        };
        let answers = if message.is_response() {
            message.answers(after)?
        } else {
            Vec::new()
        };
        Ok(Some(Repr {
            id: message.id(),
            response: message.is_response(),
            query,
            qtype,
            rcode: message.rcode(),
            answers,
        }))
    }
}

/// Zeek's names for query types.
pub fn qtype_name(qtype: u16) -> String {
    match qtype {
        qtype::A => "A".into(),
        qtype::NS => "NS".into(),
        qtype::CNAME => "CNAME".into(),
        qtype::PTR => "PTR".into(),
        qtype::MX => "MX".into(),
        qtype::TXT => "TXT".into(),
        qtype::AAAA => "AAAA".into(),
        qtype::SRV => "SRV".into(),
        other => format!("query-{other}"),
    }
}

pub fn rcode_name(rcode: u8) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m
    }

    #[test]
    fn ptr_query_is_read() {
        let bytes = query("7.0.77.10.in-addr.arpa", qtype::PTR);
        let repr = Repr::parse(&Message::new_checked(&bytes).expect("header"))
            .expect("valid")
            .expect("one question");
        assert_eq!(repr.query, "7.0.77.10.in-addr.arpa");
        assert_eq!(repr.qtype, qtype::PTR);
        assert!(!repr.response);
    }

    #[test]
    fn compressed_answer_is_decompressed() {
        let mut bytes = query("dc01.corp.local", qtype::A);
        bytes[2] = 0x81;
        bytes[3] = 0x80;
        bytes[7] = 1;
        bytes.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 77, 0, 10]);
        let repr = Repr::parse(&Message::new_checked(&bytes).expect("header"))
            .expect("valid")
            .expect("question");
        assert_eq!(repr.answers, vec!["10.77.0.10".to_string()]);
    }

    #[test]
    fn compression_loops_and_forward_pointers_are_rejected() {
        let mut looped = vec![0u8; 12];
        looped[5] = 1;
        looped.extend_from_slice(&[0xc0, 12]);
        let message = Message::new_checked(&looped).expect("header");
        assert_eq!(Repr::parse(&message), Err(Error::BadPointer));
        let mut forward = vec![0u8; 12];
        forward[5] = 1;
        forward.extend_from_slice(&[0xc0, 20, 0, 0, 0, 0, 0, 0, 1, b'a', 0]);
        let message = Message::new_checked(&forward).expect("header");
        assert_eq!(Repr::parse(&message), Err(Error::BadPointer));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut bytes = query("a.b.c", qtype::A);
        bytes[2] = 0x81;
        bytes[7] = 1;
        bytes.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]);
        for len in 0..bytes.len() {
            if let Ok(message) = Message::new_checked(&bytes[..len]) {
                assert!(Repr::parse(&message).is_err(), "len {len}");
            }
        }
    }
}
