//! The protocols hosts use to name themselves on their own link, without a DNS server: mDNS
//! (RFC 6762, macOS, Linux and printers), LLMNR (RFC 4795, Windows) and the NetBIOS name
//! service (RFC 1002, Windows and Samba). Known by their UDP port on either side: answers come
//! from the port to wherever the question came from.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalNames {
    Mdns,
    Llmnr,
    Nbns,
}

impl LocalNames {
    pub const MDNS_PORT: u16 = 5353;
    pub const LLMNR_PORT: u16 = 5355;
    pub const NBNS_PORT: u16 = 137;

    /// The protocol of a UDP datagram between these ports, if it is one of these.
    pub const fn of_udp_ports(a: u16, b: u16) -> Option<LocalNames> {
        match (a, b) {
            (Self::MDNS_PORT, _) | (_, Self::MDNS_PORT) => Some(LocalNames::Mdns),
            (Self::LLMNR_PORT, _) | (_, Self::LLMNR_PORT) => Some(LocalNames::Llmnr),
            (Self::NBNS_PORT, _) | (_, Self::NBNS_PORT) => Some(LocalNames::Nbns),
            _ => None,
        }
    }
}
