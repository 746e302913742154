//! What the NIC says about its receive queues, asked with the ethtool ioctl (`SIOCETHTOOL`) on a
//! socket of the caller's network namespace (sysfs would show the namespace it was mounted in):
//! how many RX queues it spreads traffic over, and whether its RSS hash can put both directions of
//! a flow on one queue.

use std::ffi::c_void;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `include/uapi/linux/sockios.h`; typed as this libc's request (an int on musl, where the
/// image's daemon is built, an unsigned long on glibc).
const SIOCETHTOOL: libc::Ioctl = 0x8946;
// Commands of `include/uapi/linux/ethtool.h`.
const ETHTOOL_GCHANNELS: u32 = 0x3c;
const ETHTOOL_GRSSH: u32 = 0x46;
const ETHTOOL_SRSSH: u32 = 0x47;
/// `ethtool_rxfh.input_xfrm`: XOR source and destination before hashing, so both directions of
/// a flow hash alike (Linux 6.8+).
const RXH_XFRM_SYM_XOR: u8 = 1 << 0;
/// `ethtool_rxfh.indir_size` meaning "leave the indirection table as it is".
const ETH_RXFH_INDIR_NO_CHANGE: u32 = 0xffff_ffff;

/// `struct ethtool_channels`.
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// `struct ethtool_rxfh` without its trailing indirection table and key: we pass sizes of zero
/// (read) or "no change" (write), so the kernel reads and writes only this header.
#[repr(C)]
#[derive(Default)]
struct EthtoolRxfh {
    cmd: u32,
    rss_context: u32,
    indir_size: u32,
    key_size: u32,
    hfunc: u8,
    input_xfrm: u8,
    rsvd8: [u8; 2],
    rsvd32: u32,
}

/// `struct ifreq` with the `ifr_data` member, padded to the kernel's 40 bytes.
#[repr(C)]
struct IfreqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut c_void,
    _pad: [u8; 16],
}

/// Runs one ethtool command on `iface`; `cmd` is read and written in place by the kernel.
fn ethtool<T>(iface: &str, cmd: &mut T) -> io::Result<()> {
    let bytes = iface.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{iface:?} is not an interface name"),
        ));
    }
    let mut request = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: (cmd as *mut T).cast(),
        _pad: [0; 16],
    };
    for (slot, &byte) in request.name.iter_mut().zip(bytes) {
        *slot = byte as libc::c_char;
    }
    // SAFETY: a plain datagram socket, no pointers involved.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `request` is a valid ifreq naming the interface, whose data pointer points at a
    // live `T` of the layout the command's number tells the kernel to read and write.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL, &mut request) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How many RX queues `iface` receives on now (ethtool's "RX" plus "Combined" channels).
pub fn rx_queue_count(iface: &str) -> io::Result<u32> {
    let mut channels = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    ethtool(iface, &mut channels)?;
    Ok(channels.rx_count + channels.combined_count)
}

/// Whether both directions of a flow reach the same RX queue.
#[derive(Debug)]
pub enum RssSymmetry {
    /// The NIC already hashed symmetrically.
    AlreadySymmetric,
    /// We switched the NIC's hash to symmetric-xor.
    MadeSymmetric,
    /// The NIC has no RSS hash we can read or change (veth, most virtual NICs) or refused
    /// symmetric-xor; the directions of a flow may arrive on different queues.
    NotAvailable(io::Error),
}

impl fmt::Display for RssSymmetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RssSymmetry::AlreadySymmetric => write!(f, "the NIC's RSS hash is symmetric"),
            RssSymmetry::MadeSymmetric => write!(f, "the NIC's RSS hash was made symmetric-xor"),
            RssSymmetry::NotAvailable(err) => {
                write!(f, "the NIC's RSS hash cannot be made symmetric ({err})")
            }
        }
    }
}

/// Asks `iface` to hash both directions of a flow alike (ETHTOOL_SRSSH with symmetric-xor,
/// what `ethtool -X IF hfunc toeplitz symmetric-xor` does), keeping its hash function, key and
/// indirection table.
pub fn make_rss_symmetric(iface: &str) -> RssSymmetry {
    let mut current = EthtoolRxfh {
        cmd: ETHTOOL_GRSSH,
        ..Default::default()
    };
    if let Err(err) = ethtool(iface, &mut current) {
        return RssSymmetry::NotAvailable(err);
    }
    if current.input_xfrm & RXH_XFRM_SYM_XOR != 0 {
        return RssSymmetry::AlreadySymmetric;
    }
    let mut change = EthtoolRxfh {
        cmd: ETHTOOL_SRSSH,
        indir_size: ETH_RXFH_INDIR_NO_CHANGE,
        input_xfrm: RXH_XFRM_SYM_XOR,
        ..Default::default()
    };
    match ethtool(iface, &mut change) {
        Ok(()) => RssSymmetry::MadeSymmetric,
        Err(err) => RssSymmetry::NotAvailable(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<EthtoolChannels>(), 36);
        assert_eq!(std::mem::size_of::<EthtoolRxfh>(), 24);
        assert_eq!(std::mem::size_of::<IfreqData>(), 40);
    }

    #[test]
    fn a_name_too_long_for_the_kernel_is_refused_before_asking() {
        let err = rx_queue_count("an-interface-name-too-long").expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn loopback_has_no_rss_hash_to_make_symmetric() {
        assert!(matches!(
            make_rss_symmetric("lo"),
            RssSymmetry::NotAvailable(_)
        ));
    }
}
