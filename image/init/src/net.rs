//! Interface set-up with the classic ioctls: the capture port up and promiscuous (a mirror port
//! delivers frames addressed to others), the management port up with its address.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `struct ifreq`: 16 bytes of name, then a 24-byte union.
const IFREQ_SIZE: usize = 40;

fn ifreq(iface: &str) -> io::Result<[u8; IFREQ_SIZE]> {
    let name = iface.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{iface:?} is not an interface name"),
        ));
    }
    let mut req = [0u8; IFREQ_SIZE];
    req[..name.len()].copy_from_slice(name);
    Ok(req)
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl(
    sock: &OwnedFd,
    request: libc::c_ulong,
    req: &mut [u8; IFREQ_SIZE],
    what: &str,
) -> io::Result<()> {
    // SAFETY: `req` is a live ifreq-sized buffer the kernel reads and writes within.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request as _, req.as_mut_ptr()) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("{what}: {err}")));
    }
    Ok(())
}

/// Sets `flags` on `iface` (keeping the rest).
pub fn raise_flags(iface: &str, flags: libc::c_int) -> io::Result<()> {
    let sock = socket()?;
    let mut req = ifreq(iface)?;
    ioctl(
        &sock,
        libc::SIOCGIFFLAGS,
        &mut req,
        &format!("reading the flags of {iface}"),
    )?;
    let current = i16::from_ne_bytes([req[16], req[17]]);
    let wanted = current | flags as i16;
    req[16..18].copy_from_slice(&wanted.to_ne_bytes());
    ioctl(
        &sock,
        libc::SIOCSIFFLAGS,
        &mut req,
        &format!("bringing up {iface}"),
    )
}

fn sockaddr_in(req: &mut [u8; IFREQ_SIZE], addr: Ipv4Addr) {
    req[16..18].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    req[18..20].fill(0);
    req[20..24].copy_from_slice(&addr.octets());
}

/// Gives `iface` the address `addr/prefix` and brings it up.
pub fn configure(iface: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    if prefix > 32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "prefix longer than 32",
        ));
    }
    let sock = socket()?;
    let mut req = ifreq(iface)?;
    sockaddr_in(&mut req, addr);
    ioctl(
        &sock,
        libc::SIOCSIFADDR,
        &mut req,
        &format!("address of {iface}"),
    )?;
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    let mut req = ifreq(iface)?;
    sockaddr_in(&mut req, Ipv4Addr::from(mask));
    ioctl(
        &sock,
        libc::SIOCSIFNETMASK,
        &mut req,
        &format!("netmask of {iface}"),
    )?;
    raise_flags(iface, libc::IFF_UP)
}

/// Parses `10.0.0.2/24`.
pub fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = text.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then_some(())?;
    Some((addr.parse().ok()?, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_with_prefix() {
        assert_eq!(
            parse_cidr("10.77.0.2/24"),
            Some((Ipv4Addr::new(10, 77, 0, 2), 24))
        );
        assert_eq!(parse_cidr("10.77.0.2"), None);
        assert_eq!(parse_cidr("10.77.0.2/33"), None);
        assert_eq!(parse_cidr("host/24"), None);
    }

    #[test]
    fn refuses_names_the_kernel_would_cut() {
        assert!(ifreq("eth0").is_ok());
        assert!(ifreq("").is_err());
        assert!(ifreq("a-very-long-interface").is_err());
    }
}
