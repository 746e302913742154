//! mDNS, LLMNR and NetBIOS name service datagrams (see [`LocalNames`]), each on its own: their
//! questions go to the whole link and are answered by whoever holds the name, often on another
//! flow (mDNS answers to the group, LLMNR from the responder's port), so nothing is paired.
//!
//! Every question and every answer or additional record goes to the `dns` log with its
//! protocol. Only the records by which a host claims its name reach the plugins (and so the
//! device table) as `Dns` events: mDNS and LLMNR A/AAAA answers, NBNS NB records of unique names
//! in answers, registrations and refreshes. Questions do not: they ask the link, not a DNS
//! server, so they are not lookups a model of DNS use (the reverse DNS sweep) should count; nor
//! do PTR and service records, which would read as a reverse lookup by the host answering.
//!
//! [`LocalNames`]: crate::proto::local_names::LocalNames

use vigil_plugin_sdk::EventKind;

use super::dns::Logged;
use super::log::Record as LogRecord;
use super::{Protocol, Report};
use crate::proto::dns::{self, qtype, Message, Record};
use crate::proto::nbns;

/// NBNS opcodes (RFC 1002 §4.2.1.1) whose records are the sender's claim on a name.
const NBNS_REGISTRATION: u8 = 5;
const NBNS_REFRESH: u8 = 8;
/// RFC 1002 gives refresh two codes; Samba and Windows send 8, some stacks 9.
const NBNS_REFRESH_ALT: u8 = 9;

pub(crate) fn datagram(payload: &[u8], report: &mut Report<'_>) {
    let message = match Message::new_checked(payload) {
        Ok(message) => message,
        Err(err) => return report.error(err.name()),
    };
    let mut question = String::new();
    let (qtype, after) = match message.first_question(&mut question) {
        Ok(Some((qtype, after))) => (Some(qtype), after),
        Ok(None) => (None, dns::HEADER_LEN),
        Err(err) => return report.error(err.name()),
    };
    let records = match message.answers_and_additionals(after) {
        Ok(records) => records,
        Err(err) => return report.error(err.name()),
    };
    let mut lines = Vec::with_capacity(records.len() + 1);
    // A question is its own line unless a record of the same name says more (an answer, or an
    // NBNS registration's record for the name it registers).
    let answered = records
        .iter()
        .any(|(owner, _)| owner.eq_ignore_ascii_case(&question));
    if let Some(qtype) = qtype.filter(|_| !answered) {
        match name_text(report.protocol, &question) {
            Ok(query) => lines.push(Line {
                query,
                qtype,
                answers: Vec::new(),
                claim: None,
            }),
            Err(reason) => return report.error(reason),
        }
    }
    for (owner, record) in &records {
        match line(report.protocol, &message, owner, record) {
            Ok(line) => lines.push(line),
            Err(reason) => return report.error(reason),
        }
    }
    let claims = claims_names(report.protocol, &message);
    let rcode = message.is_response().then(|| message.rcode());
    let (protocol, transport, ts) = (report.protocol, report.observed.transport, report.ts);
    for line in &lines {
        let logged = Logged {
            id: message.id(),
            query: &line.query,
            qtype: line.qtype,
            qtype_name: type_name(protocol, line.qtype),
            rcode,
            answers: &line.answers,
        };
        let fill = |record: &mut LogRecord| logged.fill(protocol, transport, record);
        match line.claim.as_ref().filter(|_| claims) {
            Some(addresses) => {
                report.event(
                    ts,
                    EventKind::Dns {
                        query: &line.query,
                        qtype: line.qtype,
                        // An NBNS registration is a request, its rcode field zero: the claim
                        // stands as an answer would.
                        rcode: Some(message.rcode()),
                        answers: addresses.iter().map(String::as_str).collect(),
                    },
                );
                report.log("dns", ts, fill);
            }
            None => report.log_without_event("dns", ts, fill),
        }
    }
}

/// One `dns` log line: a question or one record.
struct Line {
    query: String,
    qtype: u16,
    answers: Vec<String>,
    /// The addresses the record says hold the name, when it is a host's claim on it.
    claim: Option<Vec<String>>,
}

/// Whether the message's records are the sender's own claims: an answer (mDNS announces with
/// answers too), or an NBNS registration or refresh (RFC 1002 puts the claimed record in the
/// additional section of a request). An mDNS query's known answers are the asker's cache.
fn claims_names(protocol: Protocol, message: &Message<'_>) -> bool {
    message.is_response()
        || (protocol == Protocol::Nbns
            && matches!(
                message.opcode(),
                NBNS_REGISTRATION | NBNS_REFRESH | NBNS_REFRESH_ALT
            ))
}

fn name_text(protocol: Protocol, name: &str) -> Result<String, &'static str> {
    if protocol == Protocol::Nbns {
        nbns::decode_name(name)
            .map(|name| name.to_string())
            .map_err(nbns::Error::name)
    } else {
        Ok(name.to_string())
    }
}

fn type_name(protocol: Protocol, rtype: u16) -> String {
    if protocol == Protocol::Nbns {
        nbns::rtype_name(rtype)
    } else {
        dns::qtype_name(rtype)
    }
}

fn line(
    protocol: Protocol,
    message: &Message<'_>,
    owner: &str,
    record: &Record,
) -> Result<Line, &'static str> {
    let query = name_text(protocol, owner)?;
    let (answers, claim) = if protocol == Protocol::Nbns {
        nbns_answers(message.rdata(record), record.rtype)?
    } else {
        let text = message.rdata_text(record).map_err(dns::Error::name)?;
        let claim = matches!(record.rtype, qtype::A | qtype::AAAA).then(|| vec![text.clone()]);
        (vec![text], claim)
    };
    Ok(Line {
        query,
        qtype: record.rtype,
        answers,
        claim,
    })
}

/// An NB record's addresses (claimed when the name is unique: a group name, a workgroup, is
/// held by many hosts and names none), an NBSTAT record's names, or another type's size.
fn nbns_answers(
    rdata: &[u8],
    rtype: u16,
) -> Result<(Vec<String>, Option<Vec<String>>), &'static str> {
    match rtype {
        nbns::rtype::NB => {
            let entries = nbns::nb_addresses(rdata).map_err(nbns::Error::name)?;
            let all = entries.iter().map(|e| e.address.to_string()).collect();
            let unique: Vec<String> = entries
                .iter()
                .filter(|e| !e.group)
                .map(|e| e.address.to_string())
                .collect();
            Ok((all, Some(unique).filter(|u| !u.is_empty())))
        }
        nbns::rtype::NBSTAT => {
            let names = nbns::status_names(rdata).map_err(nbns::Error::name)?;
            Ok((
                names.iter().map(|(name, _)| name.to_string()).collect(),
                None,
            ))
        }
        other => Ok((vec![dns::unread_rdata(other, rdata.len())], None)),
    }
}
