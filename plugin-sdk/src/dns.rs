//! DNS names as plugins and the core read them.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// DNS query type PTR.
pub const PTR: u16 = 12;

/// The address a reverse-lookup name stands for: `4.3.2.1.in-addr.arpa` is 1.2.3.4, and 32
/// nibble labels before `ip6.arpa` are an IPv6 address. Names of whole networks (fewer labels)
/// and anything malformed are not addresses.
pub fn reverse_address(name: &str) -> Option<IpAddr> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if let Some(labels) = strip_suffix_ignore_case(name, ".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let mut labels = labels.split('.');
        for octet in octets.iter_mut().rev() {
            let label = labels.next()?;
            if label.is_empty() || label.len() > 3 || !label.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *octet = label.parse().ok()?;
        }
        return match labels.next() {
            None => Some(IpAddr::V4(Ipv4Addr::from(octets))),
            Some(_) => None,
        };
    }
    let labels = strip_suffix_ignore_case(name, ".ip6.arpa")?;
    let mut value: u128 = 0;
    let mut nibbles = 0u32;
    for label in labels.split('.') {
        let [digit] = label.as_bytes() else {
            return None;
        };
        let nibble = char::from(*digit).to_digit(16)?;
        if nibbles >= 32 {
            return None;
        }
        // The first label is the lowest nibble.
        value |= u128::from(nibble) << (4 * nibbles);
        nibbles += 1;
    }
    (nibbles == 32).then(|| IpAddr::V6(Ipv6Addr::from(value)))
}

fn strip_suffix_ignore_case<'a>(name: &'a str, suffix: &str) -> Option<&'a str> {
    let split = name.len().checked_sub(suffix.len())?;
    let tail = name.get(split..)?;
    tail.eq_ignore_ascii_case(suffix).then(|| &name[..split])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names_parse_to_addresses() {
        let v4 = |s: &str| reverse_address(s);
        assert_eq!(
            v4("60.0.77.10.in-addr.arpa"),
            Some(IpAddr::from([10, 77, 0, 60]))
        );
        assert_eq!(
            v4("60.0.77.10.IN-ADDR.ARPA."),
            Some(IpAddr::from([10, 77, 0, 60]))
        );
        assert_eq!(v4("0.77.10.in-addr.arpa"), None, "a network, not a host");
        assert_eq!(v4("1.60.0.77.10.in-addr.arpa"), None);
        assert_eq!(v4("256.0.77.10.in-addr.arpa"), None);
        assert_eq!(v4("+1.0.77.10.in-addr.arpa"), None);
        assert_eq!(v4("example.com"), None);
        let ula = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
        assert_eq!(
            reverse_address(ula),
            Some(IpAddr::V6("fd00::1".parse().expect("literal")))
        );
        assert_eq!(reverse_address("0.d.f.ip6.arpa"), None);
        assert_eq!(reverse_address("10.d.f.ip6.arpa"), None);
    }
}
