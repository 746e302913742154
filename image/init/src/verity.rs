//! Maps a root slot through dm-verity with the device-mapper ioctls, then reads it end to end
//! once so that an altered block stops the boot here rather than surfacing later as a crash.
//!
//! Written by hand on `libc::ioctl`: three calls (create, load, resume) of a stable kernel ABI
//! (`linux/dm-ioctl.h`), where the crates that wrap it would bring a dozen dependencies into PID 1.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use crate::cmdline::Verity;

const BLOCK: u64 = 4096;
const SECTOR: u64 = 512;

/// `struct dm_ioctl`: 312 bytes, then the payload.
const DM_IOCTL_SIZE: usize = 312;
const DM_NAME_OFFSET: usize = 48;
const DM_NAME_LEN: usize = 128;
/// `struct dm_target_spec`: sector_start, length, status, next, target_type[16].
const DM_TARGET_SPEC_SIZE: usize = 40;

const DM_DEV_CREATE: u64 = 3;
const DM_DEV_SUSPEND: u64 = 6;
const DM_TABLE_LOAD: u64 = 9;
const DM_READONLY_FLAG: u32 = 1;

/// `_IOWR(0xfd, nr, struct dm_ioctl)`.
fn dm_request(nr: u64) -> u64 {
    (3 << 30) | ((DM_IOCTL_SIZE as u64) << 16) | (0xfd << 8) | nr
}

/// The verity table line for the kernel (`Documentation/admin-guide/device-mapper/verity.rst`):
/// version 1, data and hashes on the same partition, 4 KiB blocks, SHA-256.
pub fn table(device: &str, verity: &Verity) -> String {
    format!(
        "1 {device} {device} {BLOCK} {BLOCK} {} {} sha256 {} {}",
        verity.data_blocks, verity.hash_start, verity.root_hash, verity.salt
    )
}

fn header(name: &str, data_size: usize, flags: u32) -> Vec<u8> {
    let mut buf = vec![0u8; data_size];
    // version 4.0.0: the kernel accepts any minor of major 4.
    buf[0..4].copy_from_slice(&4u32.to_ne_bytes());
    buf[12..16].copy_from_slice(&(data_size as u32).to_ne_bytes());
    buf[16..20].copy_from_slice(&(DM_IOCTL_SIZE as u32).to_ne_bytes());
    buf[28..32].copy_from_slice(&flags.to_ne_bytes());
    let name = name.as_bytes();
    let len = name.len().min(DM_NAME_LEN - 1);
    buf[DM_NAME_OFFSET..DM_NAME_OFFSET + len].copy_from_slice(&name[..len]);
    buf
}

fn call(control: &File, nr: u64, buf: &mut [u8], what: &str) -> io::Result<()> {
    // SAFETY: `buf` is a live, writable buffer at least DM_IOCTL_SIZE long whose header's
    // data_size says how long it is; the kernel reads and writes only within it.
    let rc = unsafe { libc::ioctl(control.as_raw_fd(), dm_request(nr) as _, buf.as_mut_ptr()) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!("device-mapper {what}: {err}"),
        ));
    }
    Ok(())
}

/// Creates `/dev/mapper/NAME`-style device `name` over `device` (e.g. `/dev/vda2`) as a
/// read-only verity target; returns the block device node to mount.
pub fn open(name: &str, device: &str, verity: &Verity) -> io::Result<PathBuf> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")?;

    let mut create = header(name, DM_IOCTL_SIZE, 0);
    call(&control, DM_DEV_CREATE, &mut create, "create")?;
    let dev = u64::from_ne_bytes(create[40..48].try_into().expect("8 bytes"));

    let params = table(device, verity);
    // The spec and its NUL-terminated parameters, padded to 8 bytes as the kernel expects.
    let spec_len = (DM_TARGET_SPEC_SIZE + params.len() + 1).next_multiple_of(8);
    let mut load = header(name, DM_IOCTL_SIZE + spec_len, DM_READONLY_FLAG);
    load[20..24].copy_from_slice(&1u32.to_ne_bytes()); // target_count
    let spec = &mut load[DM_IOCTL_SIZE..];
    let sectors = verity.data_blocks * (BLOCK / SECTOR);
    spec[8..16].copy_from_slice(&sectors.to_ne_bytes());
    spec[20..24].copy_from_slice(&(spec_len as u32).to_ne_bytes());
    spec[24..30].copy_from_slice(b"verity");
    spec[DM_TARGET_SPEC_SIZE..DM_TARGET_SPEC_SIZE + params.len()]
        .copy_from_slice(params.as_bytes());
    call(&control, DM_TABLE_LOAD, &mut load, "table load")?;

    // DM_DEV_SUSPEND without DM_SUSPEND_FLAG resumes: the loaded table goes live.
    let mut resume = header(name, DM_IOCTL_SIZE, 0);
    call(&control, DM_DEV_SUSPEND, &mut resume, "resume")?;

    // new_decode_dev: minor is bits 0-7 and 20-31, major bits 8-19.
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    Ok(PathBuf::from(format!("/dev/dm-{minor}")))
}

/// Reads every block of the verified device; verity answers a block whose hash does not chain
/// up to the root hash with EIO, which becomes the error naming the offset.
pub fn check_all(node: &PathBuf) -> io::Result<u64> {
    let mut file = File::open(node)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(offset),
            Ok(n) => offset += n as u64,
            Err(err) => {
                return Err(io::Error::new(
                    err.kind(),
                    format!("reading byte {offset} of the verified root: {err}"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_the_kernel_header() {
        // DM_DEV_CREATE and DM_TABLE_LOAD as the C macros expand them on x86_64.
        assert_eq!(dm_request(DM_DEV_CREATE), 0xc138_fd03);
        assert_eq!(dm_request(DM_TABLE_LOAD), 0xc138_fd09);
    }

    #[test]
    fn table_names_both_devices_and_the_hash() {
        let verity = Verity {
            data_blocks: 7,
            hash_start: 8,
            root_hash: "ab".repeat(32),
            salt: "cd".repeat(32),
        };
        let line = table("/dev/vda2", &verity);
        assert!(line.starts_with("1 /dev/vda2 /dev/vda2 4096 4096 7 8 sha256 abab"));
        assert!(line.ends_with(&"cd".repeat(32)));
    }
}
