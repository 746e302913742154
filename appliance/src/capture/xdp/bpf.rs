//! The kernel side of AF_XDP capture: an XSKMAP, a hand-assembled XDP program that redirects every
//! frame of a queue into the socket stored under that queue's index, and a BPF link attaching the
//! program to the interface. Everything goes through the raw `bpf()` syscall: no libbpf, no C, so
//! the static musl build carries it.
//!
//! The link (not the older netlink attach) is used because the kernel detaches the program when
//! the last descriptor to the link closes: a crashed appliance or test leaves no program behind.

use std::ffi::c_long;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

// `enum bpf_cmd` (include/uapi/linux/bpf.h; note BPF_PROG_RUN aliases BPF_PROG_TEST_RUN, so it
// does not shift the numbering).
const BPF_MAP_CREATE: c_long = 0;
const BPF_MAP_UPDATE_ELEM: c_long = 2;
const BPF_PROG_LOAD: c_long = 5;
const BPF_LINK_CREATE: c_long = 28;

const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`: BPF_XDP.
const BPF_XDP: u32 = 37;
/// Map update flag: create or replace.
const BPF_ANY: u64 = 0;

const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `enum xdp_action`: drop the frame.
const XDP_DROP: i32 = 1;
/// `enum xdp_action`: hand the frame to the kernel's network stack.
const XDP_PASS: i32 = 2;
/// Helper number of `long bpf_redirect_map(map, key, flags)`.
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
/// `offsetof(struct xdp_md, rx_queue_index)`: data, data_end, data_meta, ingress_ifindex come first.
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;

// Instruction classes and fields (include/uapi/linux/bpf_common.h, bpf.h).
const BPF_LD: u8 = 0x00;
const BPF_LDX: u8 = 0x01;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_DW: u8 = 0x18;
const BPF_IMM: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_MOV: u8 = 0xb0;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;
/// `src_reg` of a 64-bit immediate load meaning "the immediate is a map fd; patch in the map".
const BPF_PSEUDO_MAP_FD: u8 = 1;

/// bpf_redirect_map is not a GPL-only helper, so the program needs no GPL-compatible licence;
/// it is this project's code, so it carries this project's licence.
const LICENSE: &[u8] = b"Apache-2.0\0";
/// Verifier log size when a load fails; our program's log is a few hundred bytes.
const LOG_SIZE: usize = 64 * 1024;

/// One eBPF instruction, `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    /// `dst_reg:4` in the low nibble, `src_reg:4` in the high one (little-endian bitfields).
    regs: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (src << 4) | (dst & 0x0f),
            off,
            imm,
        }
    }

    /// The instruction as the kernel reads it (the in-memory form is the same on little-endian
    /// hosts; the tests compare both).
    #[cfg(test)]
    fn to_bytes(self) -> [u8; 8] {
        let off = self.off.to_le_bytes();
        let imm = self.imm.to_le_bytes();
        [
            self.code, self.regs, off[0], off[1], imm[0], imm[1], imm[2], imm[3],
        ]
    }
}

/// The whole XDP program, five instructions in six slots (a 64-bit load takes two):
///
/// ```text
/// r2 = *(u32 *)(r1 + 16)      ; ctx->rx_queue_index: the key
/// r1 = map[fd] ll             ; the XSKMAP
/// r3 = XDP_PASS               ; flags: the action when no socket sits at the key
/// call bpf_redirect_map
/// exit                        ; r0 = XDP_REDIRECT, or XDP_PASS from the fallback
/// ```
///
/// Frames of queues without a socket therefore still reach the kernel stack.
pub(crate) fn redirect_program(map_fd: RawFd) -> [Insn; 6] {
    [
        Insn::new(BPF_LDX | BPF_MEM | BPF_W, 2, 1, XDP_MD_RX_QUEUE_INDEX, 0),
        Insn::new(BPF_LD | BPF_DW | BPF_IMM, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        // Second half of the 64-bit immediate: the upper 32 bits, zero for a map fd.
        Insn::new(0, 0, 0, 0, 0),
        Insn::new(BPF_ALU64 | BPF_MOV | BPF_K, 3, 0, 0, XDP_PASS),
        Insn::new(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        Insn::new(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
    ]
}

/// A failed `bpf()` call: which step, the kernel's errno and, for a program load, the verifier's
/// explanation.
#[derive(Debug)]
pub(crate) struct BpfError {
    pub(crate) step: &'static str,
    pub(crate) error: io::Error,
    pub(crate) verifier_log: Option<String>,
}

impl fmt::Display for BpfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.error)?;
        if let Some(log) = &self.verifier_log {
            write!(f, "; verifier log:\n{log}")?;
        }
        Ok(())
    }
}

/// The leading fields of `union bpf_attr` for BPF_MAP_CREATE. The kernel zero-fills the fields
/// after the size we pass, so only what we set is declared.
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// `union bpf_attr` for BPF_MAP_*_ELEM; the explicit pad keeps every byte initialised.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD (no implicit padding: 72 bytes).
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The leading fields of `union bpf_attr` for BPF_LINK_CREATE.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// `bpf(cmd, attr, sizeof attr)`, returning the new descriptor or zero.
///
/// # Safety
/// `T` must be a `repr(C)` prefix of `union bpf_attr` as `cmd` defines it, fully initialised, and
/// every pointer it holds must be valid for what `cmd` does with it (read or, for the log, write)
/// for the duration of the call.
unsafe fn sys_bpf<T>(cmd: c_long, attr: &mut T) -> io::Result<i64> {
    let size = std::mem::size_of::<T>() as libc::c_uint;
    // SAFETY: the caller guarantees `attr` is a valid bpf_attr prefix of `size` bytes whose
    // pointers are live; the kernel reads at most `size` bytes of it.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Wraps a descriptor the kernel just returned.
fn owned_fd(ret: i64, step: &'static str) -> Result<OwnedFd, BpfError> {
    let fd = RawFd::try_from(ret).map_err(|_| BpfError {
        step,
        error: io::Error::other(format!("kernel returned {ret}, not a descriptor")),
        verifier_log: None,
    })?;
    // SAFETY: a successful map-create/prog-load/link-create returns a new descriptor that nothing
    // else owns; `OwnedFd` closes it exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn object_name(name: &str) -> [u8; 16] {
    // The kernel accepts up to 15 bytes of [A-Za-z0-9_.] plus a NUL; ours are constants.
    let mut out = [0u8; 16];
    for (dst, src) in out.iter_mut().zip(name.bytes().take(15)) {
        *dst = src;
    }
    out
}

/// An XSKMAP: queue index -> AF_XDP socket.
#[derive(Debug)]
pub(crate) struct XskMap {
    fd: OwnedFd,
}

impl XskMap {
    /// A map with keys `0..entries`. Keys are queue indices, so `entries` must exceed the queue.
    pub(crate) fn create(entries: u32) -> Result<XskMap, BpfError> {
        let mut attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_XSKMAP,
            key_size: 4,
            value_size: 4,
            max_entries: entries,
            map_flags: 0,
            inner_map_fd: 0,
            numa_node: 0,
            map_name: object_name("vigil_xsks"),
        };
        // SAFETY: MapCreateAttr is the bpf_attr prefix for BPF_MAP_CREATE and holds no pointers.
        let ret = unsafe { sys_bpf(BPF_MAP_CREATE, &mut attr) }.map_err(|error| BpfError {
            step: "creating the XSKMAP (BPF_MAP_CREATE)",
            error,
            verifier_log: None,
        })?;
        Ok(XskMap {
            fd: owned_fd(ret, "creating the XSKMAP (BPF_MAP_CREATE)")?,
        })
    }

    /// Stores the AF_XDP socket `xsk_fd` under `queue`; frames of that queue go to it from now on.
    pub(crate) fn insert(&self, queue: u32, xsk_fd: RawFd) -> Result<(), BpfError> {
        let key = queue;
        let value = xsk_fd as u32;
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            pad: 0,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            flags: BPF_ANY,
        };
        // SAFETY: MapElemAttr is the bpf_attr layout for BPF_MAP_UPDATE_ELEM; `key` and `value`
        // point at live u32s (the map's key and value size) for the duration of the call.
        unsafe { sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map_err(|error| BpfError {
            step: "storing the socket in the XSKMAP (BPF_MAP_UPDATE_ELEM)",
            error,
            verifier_log: None,
        })?;
        Ok(())
    }
}

/// `r0 = XDP_DROP; exit`: drops every frame, the least work any XDP program can do.
pub(crate) fn drop_program() -> [Insn; 2] {
    [
        Insn::new(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_DROP),
        Insn::new(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
    ]
}

/// A loaded XDP program: the redirect program (which holds a reference to its map, so the map
/// outlives it) or the drop program.
#[derive(Debug)]
pub(crate) struct XdpProgram {
    fd: OwnedFd,
}

impl XdpProgram {
    pub(crate) fn load(map: &XskMap) -> Result<XdpProgram, BpfError> {
        let insns = redirect_program(map.fd.as_raw_fd());
        Ok(XdpProgram {
            fd: Self::load_insns(&insns, "vigil_xsk_redir")?,
        })
    }

    pub(crate) fn load_drop() -> Result<XdpProgram, BpfError> {
        Ok(XdpProgram {
            fd: Self::load_insns(&drop_program(), "vigil_drop")?,
        })
    }

    fn load_insns(insns: &[Insn], name: &str) -> Result<OwnedFd, BpfError> {
        const STEP: &str = "loading the XDP program (BPF_PROG_LOAD)";
        if let Ok(ret) = Self::load_with_log(insns, name, None) {
            return owned_fd(ret, STEP);
        }
        // Load again with the verifier log on, as libbpf does: the first attempt stays cheap and
        // the log is only paid for when someone needs to read it.
        let mut log = vec![0u8; LOG_SIZE];
        let error = match Self::load_with_log(insns, name, Some(&mut log)) {
            // A transient failure that did not repeat: keep the program.
            Ok(ret) => return owned_fd(ret, STEP),
            Err(error) => error,
        };
        let text = String::from_utf8_lossy(&log);
        let text = text.trim_end_matches('\0').trim();
        Err(BpfError {
            step: STEP,
            error,
            verifier_log: (!text.is_empty()).then(|| text.to_string()),
        })
    }

    fn load_with_log(insns: &[Insn], name: &str, log: Option<&mut [u8]>) -> io::Result<i64> {
        let (log_level, log_size, log_buf) = match log {
            Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
            None => (0, 0, 0),
        };
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            log_level,
            log_size,
            log_buf,
            kern_version: 0,
            prog_flags: 0,
            prog_name: object_name(name),
            prog_ifindex: 0,
            expected_attach_type: BPF_XDP,
        };
        // The verifier can be interrupted and asks to be called again (libbpf retries too).
        let mut attempts = 0;
        loop {
            // SAFETY: ProgLoadAttr is the bpf_attr prefix for BPF_PROG_LOAD; `insns` (`insn_cnt`
            // `struct bpf_insn`), the NUL-terminated licence and the log buffer of `log_size`
            // bytes all outlive the call.
            match unsafe { sys_bpf(BPF_PROG_LOAD, &mut attr) } {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && attempts < 5 => attempts += 1,
                other => return other,
            }
        }
    }
}

/// How the program is attached to the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttachMode {
    /// In the driver's receive path, before an skb exists (`XDP_FLAGS_DRV_MODE`).
    Driver,
    /// In the generic receive path, on skbs, for any device (`XDP_FLAGS_SKB_MODE`).
    Skb,
}

/// The program attached to an interface; closing the descriptor detaches it.
#[derive(Debug)]
pub(crate) struct XdpLink {
    _fd: OwnedFd,
}

impl XdpLink {
    pub(crate) fn attach(
        program: &XdpProgram,
        ifindex: u32,
        mode: AttachMode,
    ) -> Result<XdpLink, BpfError> {
        const STEP: &str = "attaching the XDP program (BPF_LINK_CREATE)";
        let mut attr = LinkCreateAttr {
            prog_fd: program.fd.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags: match mode {
                AttachMode::Driver => XDP_FLAGS_DRV_MODE,
                AttachMode::Skb => XDP_FLAGS_SKB_MODE,
            },
        };
        // SAFETY: LinkCreateAttr is the bpf_attr prefix for BPF_LINK_CREATE and holds no pointers.
        let ret = unsafe { sys_bpf(BPF_LINK_CREATE, &mut attr) }.map_err(|error| {
            // The usual cause, worth naming: a program attached some other way (ip link, a
            // crashed tool using netlink) that no link owns.
            let error = match error.raw_os_error() {
                Some(libc::EBUSY | libc::EEXIST) => io::Error::new(
                    error.kind(),
                    format!("{error}; another XDP program is attached to this interface"),
                ),
                _ => error,
            };
            BpfError {
                step: STEP,
                error,
                verifier_log: None,
            }
        })?;
        Ok(XdpLink {
            _fd: owned_fd(ret, STEP)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_program_encodes_the_five_instructions() {
        let bytes: Vec<[u8; 8]> = redirect_program(7).iter().map(|i| i.to_bytes()).collect();
        assert_eq!(
            bytes,
            vec![
                // ldxw r2, [r1 + 16]
                [0x61, 0x12, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00],
                // lddw r1, map_fd 7 (src_reg = BPF_PSEUDO_MAP_FD)
                [0x18, 0x11, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00],
                [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
                // mov64 r3, XDP_PASS
                [0xb7, 0x03, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00],
                // call bpf_redirect_map
                [0x85, 0x00, 0x00, 0x00, 0x33, 0x00, 0x00, 0x00],
                // exit
                [0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
            ]
        );
    }

    #[test]
    fn instruction_layout_matches_struct_bpf_insn() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::size_of::<MapElemAttr>(), 32);
        // The in-memory form handed to the kernel is the encoded form (x86_64 and aarch64 are
        // little-endian, like the bitfield order the kernel header assumes).
        let insn = Insn::new(BPF_LDX | BPF_MEM | BPF_W, 2, 1, 16, -2);
        // SAFETY: Insn is repr(C) with four integer fields and no padding (size checked above).
        let raw: [u8; 8] = unsafe { std::mem::transmute(insn) };
        assert_eq!(raw, insn.to_bytes());
    }

    #[test]
    fn object_names_are_truncated_and_nul_terminated() {
        let name = object_name("a_very_long_program_name");
        assert_eq!(&name[..15], b"a_very_long_pro");
        assert_eq!(name[15], 0);
    }

    /// The verifier accepts the programs (needs CAP_BPF; skipped without it).
    #[test]
    fn verifier_accepts_the_redirect_and_drop_programs() {
        let map = match XskMap::create(4) {
            Ok(map) => map,
            Err(e) if e.error.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipping: BPF needs CAP_BPF ({e})");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        if let Err(e) = XdpProgram::load(&map) {
            panic!("{e}");
        }
        if let Err(e) = XdpProgram::load_drop() {
            panic!("{e}");
        }
    }

    /// A rejected program's error carries the verifier's reason (needs CAP_BPF).
    #[test]
    fn rejected_program_reports_the_verifier_log() {
        // `exit` with r0 never written: the verifier refuses to return an unset value.
        let exit_only = [Insn::new(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)];
        match XdpProgram::load_insns(&exit_only, "vigil_test") {
            Ok(_) => panic!("the verifier accepted a program returning an unset r0"),
            Err(e) if e.error.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipping: BPF needs CAP_BPF ({e})");
            }
            Err(e) => {
                assert_eq!(e.error.raw_os_error(), Some(libc::EACCES), "{e}");
                let log = e.verifier_log.as_deref().unwrap_or_default();
                assert!(log.contains("R0 !read_ok"), "{log}");
                assert!(e.to_string().contains("verifier log:"), "{e}");
            }
        }
    }
}
