//! The early system: console, pseudo filesystems, kernel modules, partitions by name, mounts.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn cstring(text: &str) -> io::Result<CString> {
    CString::new(text).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
}

fn check(rc: libc::c_int, what: impl FnOnce() -> String) -> io::Result<()> {
    if rc < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("{}: {err}", what())));
    }
    Ok(())
}

/// `mount(2)`.
pub fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    fs::create_dir_all(target)?;
    let (c_source, c_target, c_fstype, c_data) = (
        cstring(source)?,
        cstring(target)?,
        cstring(fstype)?,
        cstring(data)?,
    );
    // SAFETY: every pointer is a live NUL-terminated string for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c_source.as_ptr(),
            c_target.as_ptr(),
            c_fstype.as_ptr(),
            flags,
            c_data.as_ptr().cast(),
        )
    };
    check(rc, || format!("mounting {source} on {target} ({fstype})"))
}

/// Mounts /proc, /sys, /dev and /run and points stdio at the console, which the kernel may
/// not have opened for us (the initramfs carries no /dev/console node).
pub fn early() -> io::Result<()> {
    let nodev = libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV;
    mount("proc", "/proc", "proc", nodev, "")?;
    mount("sysfs", "/sys", "sysfs", nodev, "")?;
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755")?;
    mount("tmpfs", "/run", "tmpfs", nodev, "mode=0755")?;
    let console = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")?;
    for fd in 0..3 {
        // SAFETY: both descriptors are open; dup2 only replaces fd.
        check(unsafe { libc::dup2(console.as_raw_fd(), fd) }, || {
            "console".into()
        })?;
    }
    Ok(())
}

/// Loads the kernel modules listed (in dependency order, by the image build) in `list`. A
/// module that will not load is reported and skipped: drivers for hardware that is absent
/// (crc32c-intel on a CPU without SSE4.2) refuse, and what the boot truly needs fails later
/// with its own message.
pub fn load_modules(list: &Path) -> io::Result<usize> {
    let text = fs::read_to_string(list)?;
    let mut loaded = 0;
    for path in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let module = File::open(path)?;
        let params = cstring("")?;
        // SAFETY: finit_module reads the open module file and the empty parameter string.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                module.as_raw_fd(),
                params.as_ptr(),
                0,
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            // EEXIST: built in, or pulled in already.
            if err.raw_os_error() != Some(libc::EEXIST) {
                println!("vigil-init: module {path} not loaded: {err}");
            }
            continue;
        }
        loaded += 1;
    }
    Ok(loaded)
}

/// The `/dev` node of the GPT partition named `name`, waiting up to `wait` for the disk to
/// appear (virtio_blk probes asynchronously).
pub fn partition(name: &str, wait: Duration) -> io::Result<PathBuf> {
    let start = Instant::now();
    loop {
        if let Some(node) = find_partition(name)? {
            return Ok(node);
        }
        if start.elapsed() > wait {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no partition named {name} appeared within {wait:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn find_partition(name: &str) -> io::Result<Option<PathBuf>> {
    for entry in fs::read_dir("/sys/class/block")? {
        let entry = entry?;
        let Ok(uevent) = fs::read_to_string(entry.path().join("uevent")) else {
            continue;
        };
        let wanted = format!("PARTNAME={name}");
        if uevent.lines().any(|line| line == wanted) {
            let dev = entry.file_name();
            let node = Path::new("/dev").join(dev);
            wait_for(&node, Duration::from_secs(5))?;
            return Ok(Some(node));
        }
    }
    Ok(None)
}

/// devtmpfs creates nodes shortly after the kernel announces them.
pub fn wait_for(node: &Path, wait: Duration) -> io::Result<()> {
    let start = Instant::now();
    while !node.exists() {
        if start.elapsed() > wait {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} did not appear", node.display()),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Moves the early mounts under `new_root` and makes it `/`, as switch_root does. The
/// initramfs stays in memory (a few MB) since nothing of it is needed again.
pub fn switch_root(new_root: &str) -> io::Result<()> {
    for early in ["/dev", "/proc", "/sys", "/run"] {
        let target = format!("{new_root}{early}");
        mount(early, &target, "", libc::MS_MOVE, "")?;
    }
    std::env::set_current_dir(new_root)?;
    mount(".", "/", "", libc::MS_MOVE, "")?;
    let dot = cstring(".")?;
    // SAFETY: a NUL-terminated path; chroot changes only this process's root.
    check(unsafe { libc::chroot(dot.as_ptr()) }, || "chroot".into())?;
    std::env::set_current_dir("/")
}

/// Gives `uid` ownership of a device node (the inactive slot, which updates write).
pub fn chown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|err| io::Error::new(err.kind(), format!("chown {}: {err}", path.display())))
}

/// Flushes filesystems and restarts the machine.
pub fn reboot() -> ! {
    // SAFETY: sync and reboot take no pointers; as PID 1 we may reboot.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    halt()
}

/// Stops here for good: PID 1 must not exit (the kernel would panic and, with a watchdog or
/// panic=N, reboot into the same failure).
pub fn halt() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
