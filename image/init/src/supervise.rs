//! Runs the daemon as an unprivileged user with only the capabilities capture needs, restarts
//! it if it dies, and settles the A/B trial: bless on healthy, fall back when it never is.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use caps::{CapSet, Capability, CapsHashSet};

use vigil_boot_contract::{Slot, READY_FILE, REBOOT_FILE};

use crate::boot_count;
use crate::system;

/// The daemon's user and group (no name: the image carries no /etc/passwd).
pub const VIGIL_UID: u32 = 990;
pub const VIGIL_GID: u32 = 990;

/// Each one is needed (measured by tests/tests/daemon_capabilities.rs): AF_XDP sockets need
/// NET_RAW, attaching XDP NET_ADMIN, creating the XSKMAP BPF, pinning the UMEM IPC_LOCK.
pub const DAEMON_CAPS: [Capability; 4] = [
    Capability::CAP_NET_RAW,
    Capability::CAP_NET_ADMIN,
    Capability::CAP_BPF,
    Capability::CAP_IPC_LOCK,
];

pub struct Daemon {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Where the boot stands.
pub struct Trial {
    pub slot: Slot,
    pub esp: PathBuf,
    pub health_timeout: Duration,
}

/// The daemon's open-file limit, soft and hard. The kernel's default soft limit (1024) is what a
/// flood of idle management connections used to exhaust; the API bounds its connections, and
/// capture, outputs and plugins need their descriptors besides.
const DAEMON_OPEN_FILES: libc::rlim_t = 65_536;

fn drop_privileges() -> io::Result<()> {
    // Raised while still root: an unprivileged process cannot raise its hard limit.
    let open_files = libc::rlimit {
        rlim_cur: DAEMON_OPEN_FILES,
        rlim_max: DAEMON_OPEN_FILES,
    };
    // SAFETY: setrlimit only reads `open_files`, which lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &open_files) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let wanted: CapsHashSet = DAEMON_CAPS.into_iter().collect();
    let last_cap: u8 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(40);
    let fail = |err: caps::errors::CapsError| io::Error::other(err.to_string());
    // The bounding set first, while CAP_SETPCAP is still ours: nothing the daemon execs can
    // regain what is dropped here.
    for cap in caps::all() {
        if !wanted.contains(&cap) && cap.index() <= last_cap {
            caps::drop(None, CapSet::Bounding, cap).map_err(fail)?;
        }
    }
    caps::securebits::set_keepcaps(true).map_err(fail)?;
    // SAFETY: plain id syscalls in the forked child; a failure aborts the exec.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) < 0
            || libc::setgid(VIGIL_GID) < 0
            || libc::setuid(VIGIL_UID) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    caps::set(None, CapSet::Permitted, &wanted).map_err(fail)?;
    caps::set(None, CapSet::Inheritable, &wanted).map_err(fail)?;
    caps::set(None, CapSet::Effective, &wanted).map_err(fail)?;
    // Ambient: what survives exec for a non-root user without file capabilities.
    for cap in DAEMON_CAPS {
        caps::raise(None, CapSet::Ambient, cap).map_err(fail)?;
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn spawn(daemon: &Daemon) -> io::Result<i32> {
    let mut command = Command::new(&daemon.program);
    command
        .args(&daemon.args)
        .env_clear()
        .env("PATH", "/usr/bin")
        .env("RUST_LOG", "info")
        // The console is a serial line, not a terminal.
        .env("NO_COLOR", "1")
        .current_dir("/var/lib/vigil");
    // SAFETY: init is single-threaded, so the forked child may allocate; the closure only
    // changes the child's own credentials before exec.
    unsafe {
        command.pre_exec(drop_privileges);
    }
    let child = command.spawn()?;
    Ok(child.id() as i32)
}

/// Reaps every exited process (init adopts orphans); tells whether `pid` was among them.
fn reap(pid: i32) -> bool {
    let mut ours = false;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only `status`.
        let reaped = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if reaped <= 0 {
            return ours;
        }
        if reaped == pid {
            ours = true;
            println!("vigil-init: vigil exited (wait status {status})");
        }
    }
}

fn fall_back(trial: &Trial, why: &str) -> ! {
    println!(
        "vigil-init: slot {} {why}; rebooting into the previous slot",
        trial.slot
    );
    system::reboot()
}

/// Never returns: the daemon runs until the machine reboots.
pub fn run(daemon: &Daemon, trial: &Trial) -> ! {
    let started = Instant::now();
    let mut on_trial = match boot_count::entry_on_trial(&trial.esp, trial.slot) {
        Ok(entry) => entry,
        Err(err) => {
            println!("vigil-init: cannot read the boot entries: {err}");
            None
        }
    };
    if on_trial.is_some() {
        println!(
            "vigil-init: slot {} is on trial: it must report healthy within {:?}",
            trial.slot, trial.health_timeout
        );
    }
    let mut healthy = false;
    let mut backoff = Duration::from_secs(1);
    loop {
        let pid = match spawn(daemon) {
            Ok(pid) => pid,
            Err(err) if !healthy && on_trial.is_some() => {
                fall_back(trial, &format!("cannot start vigil: {err}"))
            }
            Err(err) => {
                println!("vigil-init: cannot start vigil: {err}; retrying in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        println!("vigil-init: started vigil (pid {pid}) without root");
        loop {
            std::thread::sleep(Duration::from_millis(250));
            if !healthy && Path::new(READY_FILE).exists() {
                healthy = true;
                backoff = Duration::from_secs(1);
                println!(
                    "vigil-init: vigil reports healthy {:.1} s after start",
                    started.elapsed().as_secs_f64()
                );
                if let Some(entry) = on_trial.take() {
                    match boot_count::bless(&entry, trial.slot) {
                        Ok(blessed) => println!(
                            "vigil-init: slot {} blessed as {}",
                            trial.slot,
                            blessed.display()
                        ),
                        Err(err) => println!("vigil-init: could not bless the boot: {err}"),
                    }
                }
            }
            if Path::new(REBOOT_FILE).exists() {
                println!("vigil-init: vigil asked for a reboot (core update installed)");
                system::reboot();
            }
            if !healthy && on_trial.is_some() && started.elapsed() > trial.health_timeout {
                fall_back(trial, "did not report healthy in time");
            }
            if reap(pid) {
                break;
            }
        }
        if !healthy && on_trial.is_some() {
            fall_back(trial, "lost vigil before it reported healthy");
        }
        println!("vigil-init: restarting vigil in {backoff:?}");
        let _ = std::fs::remove_file(READY_FILE);
        healthy = false;
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}
