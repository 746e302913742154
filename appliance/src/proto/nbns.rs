//! NetBIOS name service (RFC 1002 §4.2): DNS's header and sections (read with
//! [`super::dns::Message`]), but names are 16 bytes (15 padded with spaces, then a suffix byte
//! saying what the name is for) in the "first-level encoding", one byte as two letters `A`..`P`,
//! and records of its own types: NB (the addresses holding a name) and NBSTAT (the names a node
//! holds).

use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;

/// Record and question types; NBSTAT's 0x21 is SRV's number in DNS, so NBNS has its own names.
pub mod rtype {
    pub const NB: u16 = 0x20;
    pub const NBSTAT: u16 = 0x21;
}

/// The suffixes that name a host: its workstation service and its file server service.
const WORKSTATION: u8 = 0x00;
const SERVER: u8 = 0x20;

/// Length of an encoded name's first label: 16 bytes, two letters each.
const ENCODED_LEN: usize = 32;
/// NB flags (RFC 1002 §4.2.1.3): a group name is shared by many nodes.
const GROUP: u16 = 0x8000;
/// One NB entry: 2 flag bytes, an IPv4 address.
const NB_ENTRY: usize = 6;
/// One NBSTAT entry: 15 name bytes, the suffix, 2 flag bytes.
const STATUS_ENTRY: usize = 18;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The first label is not 32 letters `A`..`P`.
    BadEncoding,
    /// Record data of the wrong length for its type.
    BadRecord,
}

impl Error {
    pub const fn name(self) -> &'static str {
        match self {
            Error::BadEncoding => "bad_netbios_name",
            Error::BadRecord => "bad_netbios_record",
        }
    }
}

/// A decoded NetBIOS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    /// The 15 name bytes without their padding; bytes outside printable ASCII as `\ddd`.
    pub name: String,
    pub suffix: u8,
}

impl Name {
    /// The host name this names, for a workstation or server name (`WS01<00>`, `WS01<20>`).
    pub fn host_name(&self) -> Option<&str> {
        (matches!(self.suffix, WORKSTATION | SERVER) && !self.name.is_empty())
            .then_some(self.name.as_str())
    }
}

/// As tools print it: `WS01<20>`.
impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}<{:02x}>", self.name, self.suffix)
    }
}

/// Parses `WS01<20>` back: how a NetBIOS name travels in an event's query field.
pub fn parse_display(text: &str) -> Option<Name> {
    let (name, suffix) = text.strip_suffix('>')?.rsplit_once('<')?;
    let suffix = u8::from_str_radix(suffix, 16).ok()?;
    Some(Name {
        name: name.to_string(),
        suffix,
    })
}

/// Decodes a name as [`super::dns::Message::read_name`] rendered it: the encoded label, then
/// any scope labels (ignored: every host on one link shares its scope).
pub fn decode_name(dotted: &str) -> Result<Name, Error> {
    let encoded = dotted.split('.').next().unwrap_or_default().as_bytes();
    if encoded.len() != ENCODED_LEN {
        return Err(Error::BadEncoding);
    }
    let mut raw = [0u8; ENCODED_LEN / 2];
    for (byte, pair) in raw.iter_mut().zip(encoded.chunks_exact(2)) {
        let nibble = |c: u8| match c {
            b'A'..=b'P' => Ok(c - b'A'),
            _ => Err(Error::BadEncoding),
        };
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    let (name, suffix) = raw.split_at(15);
    Ok(Name {
        name: printable(name),
        suffix: suffix[0],
    })
}

/// Name bytes without the trailing space padding; `*` (the node status wildcard) pads with NULs.
fn printable(bytes: &[u8]) -> String {
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(0, |last| last + 1);
    let mut out = String::new();
    for &b in &bytes[..end] {
        if b.is_ascii_graphic() && b != b'\\' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\{b:03}");
        }
    }
    out
}

/// One address entry of an NB record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NbAddress {
    pub group: bool,
    pub address: Ipv4Addr,
}

/// The entries of an NB record's data (6 bytes each: flags, IPv4 address).
pub fn nb_addresses(rdata: &[u8]) -> Result<Vec<NbAddress>, Error> {
    if !rdata.len().is_multiple_of(NB_ENTRY) {
        return Err(Error::BadRecord);
    }
    Ok(rdata
        .chunks_exact(NB_ENTRY)
        .map(|entry| NbAddress {
            group: u16::from_be_bytes([entry[0], entry[1]]) & GROUP != 0,
            address: Ipv4Addr::new(entry[2], entry[3], entry[4], entry[5]),
        })
        .collect())
}

/// The names an NBSTAT answer lists (a count byte, then 18-byte entries; statistics follow).
pub fn status_names(rdata: &[u8]) -> Result<Vec<(Name, bool)>, Error> {
    let (&count, entries) = rdata.split_first().ok_or(Error::BadRecord)?;
    let listed = entries
        .get(..usize::from(count) * STATUS_ENTRY)
        .ok_or(Error::BadRecord)?;
    Ok(listed
        .chunks_exact(STATUS_ENTRY)
        .map(|entry| {
            let name = Name {
                name: printable(&entry[..15]),
                suffix: entry[15],
            };
            (
                name,
                u16::from_be_bytes([entry[16], entry[17]]) & GROUP != 0,
            )
        })
        .collect())
}

/// Zeek-style names for NBNS query types.
pub fn rtype_name(rtype: u16) -> String {
    match rtype {
        rtype::NB => "NB".into(),
        rtype::NBSTAT => "NBSTAT".into(),
        other => format!("query-{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::dns::Message;

    // UDP payloads nmbd (Samba 4.17, `netbios name = WS-NBNS-07`, `workgroup = LABGROUP`) sent
    // in a namespace at 10.205.8.2, captured by tcpdump.
    /// Registration request for `WS-NBNS-07<00>`, its NB record in the additional section.
    const REGISTER_WORKSTATION: &str = "6b21291000010000000000012046484644434e454f4543454f4644434e444144484341434143414341434141410000200001c00c0020000100000000000600000acd0802";
    /// Registration request for the workgroup `LABGROUP<00>`, a group name.
    const REGISTER_WORKGROUP: &str = "6b222910000100000000000120454d4542454345484643455046464641434143414341434143414341434141410000200001c00c0020000100000000000680000acd0802";
    /// Node status answer to `nmblookup -A 10.205.8.2`.
    const NODE_STATUS: &str = "70ac8400000000010000000020434b41414141414141414141414141414141414141414141414141414141414100002100010000000000890557532d4e424e532d3037202020202000040057532d4e424e532d3037202020202003040057532d4e424e532d303720202020202004004c414247524f5550202020202020200084004c414247524f5550202020202020201e840000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

    fn bytes(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// The question's name and the first record after it (the registration's NB record).
    fn registration(hex: &str) -> (Name, Vec<NbAddress>, u8) {
        let payload = bytes(hex);
        let message = Message::new_checked(&payload).expect("header");
        let mut question = String::new();
        let (qtype, after) = message
            .first_question(&mut question)
            .expect("question")
            .expect("one");
        assert_eq!(qtype, rtype::NB);
        let records = message.answers_and_additionals(after).expect("records");
        let [(owner, record)] = &records[..] else {
            panic!("one record: {records:?}");
        };
        assert_eq!(owner, &question);
        let addresses = nb_addresses(message.rdata(record)).expect("NB data");
        (
            decode_name(&question).expect("name"),
            addresses,
            message.opcode(),
        )
    }

    #[test]
    fn a_real_registration_names_the_workstation_and_its_address() {
        let (name, addresses, opcode) = registration(REGISTER_WORKSTATION);
        assert_eq!(name.to_string(), "WS-NBNS-07<00>");
        assert_eq!(name.host_name(), Some("WS-NBNS-07"));
        assert_eq!(opcode, 5, "registration");
        assert_eq!(
            addresses,
            [NbAddress {
                group: false,
                address: Ipv4Addr::new(10, 205, 8, 2)
            }]
        );
    }

    #[test]
    fn a_real_workgroup_registration_is_a_group_name() {
        let (name, addresses, _) = registration(REGISTER_WORKGROUP);
        assert_eq!(name.to_string(), "LABGROUP<00>");
        assert!(addresses.iter().all(|a| a.group), "{addresses:?}");
    }

    #[test]
    fn a_real_node_status_lists_the_names_a_host_holds() {
        let payload = bytes(NODE_STATUS);
        let message = Message::new_checked(&payload).expect("header");
        assert_eq!(message.question_count(), 0);
        let records = message
            .answers_and_additionals(crate::proto::dns::HEADER_LEN)
            .expect("records");
        let (owner, record) = &records[0];
        assert_eq!(decode_name(owner).expect("name").to_string(), "*<00>");
        assert_eq!(record.rtype, rtype::NBSTAT);
        let names: Vec<(String, bool)> = status_names(message.rdata(record))
            .expect("NBSTAT data")
            .into_iter()
            .map(|(name, group)| (name.to_string(), group))
            .collect();
        let expected = [
            ("WS-NBNS-07<00>", false),
            ("WS-NBNS-07<03>", false),
            ("WS-NBNS-07<20>", false),
            ("LABGROUP<00>", true),
            ("LABGROUP<1e>", true),
        ];
        assert_eq!(names, expected.map(|(n, g)| (n.to_string(), g)).to_vec());
    }

    #[test]
    fn names_not_in_the_first_level_encoding_are_refused() {
        let good = "FHFDCNEOECEOFDCNDADHCACACACACAAA";
        assert!(decode_name(good).is_ok());
        assert!(
            decode_name(&format!("{good}.scope")).is_ok(),
            "scope ignored"
        );
        assert_eq!(decode_name(&good[2..]), Err(Error::BadEncoding));
        assert_eq!(
            decode_name(&good.replace('F', "Q")),
            Err(Error::BadEncoding)
        );
        assert_eq!(decode_name(&good.to_lowercase()), Err(Error::BadEncoding));
        assert_eq!(decode_name(""), Err(Error::BadEncoding));
    }

    #[test]
    fn record_data_of_the_wrong_length_is_refused() {
        assert_eq!(nb_addresses(&[0; 5]), Err(Error::BadRecord));
        assert_eq!(status_names(&[]), Err(Error::BadRecord));
        assert_eq!(status_names(&[2; 20]), Err(Error::BadRecord));
    }

    #[test]
    fn only_workstation_and_server_names_are_host_names() {
        let name = |text| parse_display(text).expect("display form");
        assert_eq!(name("WS01<20>").host_name(), Some("WS01"));
        assert_eq!(name("WS01<03>").host_name(), None);
        assert_eq!(parse_display("WS01"), None);
        assert_eq!(parse_display("WS01<zz>"), None);
    }
}
