//! Application protocols, one module each, as zero-copy views over complete messages (the
//! stream layer below cuts TCP streams into messages).

pub mod dcerpc;
pub mod dhcp;
pub mod dns;
pub mod http;
pub mod kerberos;
pub mod ldap;
pub mod local_names;
pub mod nbns;
pub mod ntlm;
pub mod rdp;
pub mod smb1;
pub mod smb2;

/// Whether a message plausibly begins at the front of some bytes, as a framer that lost its
/// place in a stream (picked up mid-connection, after a gap or a framing error) judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Yes,
    No,
    /// Too few bytes to tell yet.
    Undecided,
}

/// Where a framer that lost its place finds the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// A message plausibly starts this many bytes in; the bytes before it are not parseable.
    At(usize),
    /// No start yet: the first `discard` bytes cannot begin a message, the rest may once more
    /// bytes arrive.
    NotYet { discard: usize },
}

/// The first offset of `data` at which `starts` sees a message begin. Each check reads a
/// bounded header, so a scan costs a few comparisons per byte.
pub fn next_boundary(data: &[u8], starts: impl Fn(&[u8]) -> Start) -> Boundary {
    for at in 0..data.len() {
        match starts(&data[at..]) {
            Start::Yes => return Boundary::At(at),
            Start::No => {}
            // A later offset has fewer bytes still: wait for more before judging them.
            Start::Undecided => return Boundary::NotYet { discard: at },
        }
    }
    Boundary::NotYet {
        discard: data.len(),
    }
}
