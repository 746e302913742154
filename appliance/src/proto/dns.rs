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
    pub const NSCOUNT: Range<usize> = 8..10;
    pub const ARCOUNT: Range<usize> = 10..12;
    pub const HEADER_END: usize = 12;
}

/// The fixed header; the question section starts here.
pub const HEADER_LEN: usize = field::HEADER_END;

/// Longest name on the wire (RFC 1035 §2.3.4), and the most labels one can hold.
pub const MAX_NAME_LEN: usize = 255;
const MAX_LABELS: usize = 128;
/// Answers read from one message; more are counted but not decoded.
pub const MAX_ANSWERS: usize = 32;
/// Class IN, and the top bit mDNS borrows from a class (RFC 6762 §5.4, §10.2: the question's
/// unicast-response bit, the record's cache-flush bit).
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;
const MDNS_CLASS_BIT: u16 = 0x8000;

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

    pub fn authority_count(&self) -> u16 {
        self.header(field::NSCOUNT)
    }

    pub fn additional_count(&self) -> u16 {
        self.header(field::ARCOUNT)
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
            let record = self.record_at(pos, &mut owner)?;
            answers.push(self.rdata_text(&record)?);
            pos = record.end();
        }
        Ok(answers)
    }

    /// The resource record at `at`, its owner name decompressed into `owner`.
    pub fn record_at(&self, at: usize, owner: &mut String) -> Result<Record> {
        let pos = self.read_name(at, owner)?;
        let rtype = be16(self.buf, pos)?;
        let class = be16(self.buf, pos + 2)?;
        let rdlen = usize::from(be16(self.buf, pos + 8)?);
        let rdata = pos + 10..pos + 10 + rdlen;
        if rdata.end > self.buf.len() {
            return Err(Error::Truncated);
        }
        Ok(Record {
            rtype,
            class,
            rdata,
        })
    }

    /// A record's data, whose bounds [`Message::record_at`] checked.
    pub fn rdata(&self, record: &Record) -> &'a [u8] {
        &self.buf[record.rdata.clone()]
    }

    /// A record's data as text: addresses, names (decompressed against this message), or its
    /// type and size for the types not read here.
    pub fn rdata_text(&self, record: &Record) -> Result<String> {
        let rdata = self.rdata(record);
        Ok(match (record.rtype, rdata.len()) {
            (qtype::A, 4) => Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]).to_string(),
            (qtype::AAAA, 16) => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(rdata);
                Ipv6Addr::from(octets).to_string()
            }
            (qtype::PTR | qtype::CNAME | qtype::NS, _) => {
                let mut name = String::new();
                self.read_name(record.rdata.start, &mut name)?;
                name
            }
            (qtype::SRV, len) if len > 6 => {
                let mut name = String::new();
                self.read_name(record.rdata.start + 6, &mut name)?;
                format!("{name}:{}", be16(rdata, 4)?)
            }
            (other, len) => unread_rdata(other, len),
        })
    }

    /// The records of the answer and additional sections after the questions, each with its
    /// owner name, up to [`MAX_ANSWERS`] in all. Authority records are skipped: in a referral
    /// they name servers, in an mDNS probe they are names proposed, not yet held.
    pub fn answers_and_additionals(&self, after_questions: usize) -> Result<Vec<(String, Record)>> {
        let mut pos = after_questions;
        let mut records = Vec::new();
        let sections = [
            (self.answer_count(), true),
            (self.authority_count(), false),
            (self.additional_count(), true),
        ];
        for (count, keep) in sections {
            for _ in 0..count {
                if records.len() == MAX_ANSWERS {
                    return Ok(records);
                }
                let mut owner = String::new();
                let record = self.record_at(pos, &mut owner)?;
                pos = record.end();
                if keep {
                    records.push((owner, record));
                }
            }
        }
        Ok(records)
    }
}

/// How a record whose data is not read here shows in a log.
pub fn unread_rdata(rtype: u16, len: usize) -> String {
    format!("<type {rtype}, {len} bytes>")
}

/// One resource record's fixed fields, and where its data lies in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub rtype: u16,
    /// The class as sent, mDNS's cache-flush bit included.
    pub class: u16,
    pub rdata: std::ops::Range<usize>,
}

impl Record {
    /// The offset just past the record.
    pub fn end(&self) -> usize {
        self.rdata.end
    }
}

/// Whether a datagram on a port no protocol claims is DNS: one question (a name that parses,
/// class IN or ANY, mDNS's unicast-response bit aside), a standard query's opcode, and for a
/// query no answer or authority records. What a resolver sends to a server on an odd port
/// passes; random bytes rarely get past a count of exactly one and a name ending in bounds.
pub fn looks_like_dns(buf: &[u8]) -> bool {
    let Ok(message) = Message::new_checked(buf) else {
        return false;
    };
    let query_shape =
        message.is_response() || (message.answer_count() == 0 && message.authority_count() == 0);
    if message.question_count() != 1 || message.opcode() != 0 || !query_shape {
        return false;
    }
    let mut name = String::new();
    let Ok(end) = message.read_name(field::HEADER_END, &mut name) else {
        return false;
    };
    be16(buf, end + 2).is_ok_and(|class| matches!(class & !MDNS_CLASS_BIT, CLASS_IN | CLASS_ANY))
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

    #[test]
    fn dns_is_recognised_by_its_shape() {
        let query_bytes = query("fileserver.lab", qtype::A);
        assert!(looks_like_dns(&query_bytes));
        // mDNS's unicast-response bit in the question's class.
        let mut unicast = query_bytes.clone();
        let class_at = unicast.len() - 2;
        unicast[class_at] = 0x80;
        assert!(looks_like_dns(&unicast));
        let mut two_questions = query_bytes.clone();
        two_questions[5] = 2;
        assert!(!looks_like_dns(&two_questions));
        let mut query_with_answers = query_bytes.clone();
        query_with_answers[7] = 1;
        assert!(!looks_like_dns(&query_with_answers));
        let mut chaos = query_bytes.clone();
        chaos[class_at + 1] = 3;
        assert!(!looks_like_dns(&chaos));
        assert!(!looks_like_dns(&query_bytes[..query_bytes.len() - 1]));
        assert!(!looks_like_dns(b"M-SEARCH * HTTP/1.1\r\n\r\n"));
    }
}
