//! Network namespaces and veth pairs for live tests, as guards that delete what they made when
//! dropped, whether the test passed or panicked.
//!
//! Names come from [`unique_name`] (`vgl-<pid in hex>-<n>`): unique per process and call, so tests
//! running in parallel (or two test binaries) never collide, and at most 15 bytes, so a name also
//! fits an interface (IFNAMSIZ). Addresses must be in 10.0.0.0/8; namespaces isolate them, so two
//! tests may use the same subnet.
//!
//! A network namespace belongs to a thread, not to the process: [`Netns::thread`] runs a closure
//! on a new thread that entered the namespace with `setns()`. `/sys` is not switched by `setns()`,
//! so read interface facts with `ip -n` (or from inside [`Netns::run`]) instead.

use std::ffi::c_int;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

const CLONE_NEWNET: c_int = 0x4000_0000;
const SIGKILL: c_int = 9;
const IFNAMSIZ: usize = 16;

// The C library std already links provides these; this crate has no `libc` dependency.
unsafe extern "C" {
    fn setns(fd: c_int, nstype: c_int) -> c_int;
    fn kill(pid: c_int, sig: c_int) -> c_int;
}

/// True (after printing why) when this machine cannot run namespace tests: not root, or no `ip`.
/// Use as `if netns::skip_without_root() { return; }`.
pub fn skip_without_root() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            // "Uid:\treal\teffective\tsaved\tfs"
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false);
    let iproute2 = Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if root && iproute2 {
        return false;
    }
    eprintln!("skipping: needs root and iproute2");
    true
}

/// A fresh name, `vgl-<pid in hex>-<n>`, at most 15 bytes.
pub fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 10_000;
    // pid_max is at most 2^22 = 0x400000: six hex digits, so 4 + 6 + 1 + 4 = 15 bytes.
    format!("vgl-{:x}-{n}", std::process::id())
}

/// Runs `program args..`, returning its stdout; a failure carries the command and its stderr.
fn run(program: &str, args: &[&str]) -> io::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running {program}: {e}")))?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `program args..` inside `ns` (`ip netns exec`), returning its stdout.
pub fn run_in(ns: &Netns, program: &str, args: &[&str]) -> io::Result<String> {
    let mut full = vec!["netns", "exec", ns.name(), program];
    full.extend_from_slice(args);
    run("ip", &full)
}

fn check_name(kind: &str, name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name.len() < IFNAMSIZ
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{kind} name {name:?} must be 1-15 bytes of [A-Za-z0-9._-]"),
        ))
    }
}

/// A network namespace (`ip netns add`), deleted on drop together with the processes started in
/// it.
#[derive(Debug)]
pub struct Netns {
    name: String,
    children: Mutex<Vec<Child>>,
}

impl Netns {
    /// Creates namespace `name` with its loopback up. Prefer [`Netns::unique`] in tests.
    pub fn new(name: &str) -> io::Result<Netns> {
        check_name("namespace", name)?;
        run("ip", &["netns", "add", name])?;
        // From here on the guard deletes the namespace even if the rest fails.
        let ns = Netns {
            name: name.to_string(),
            children: Mutex::new(Vec::new()),
        };
        ns.run("ip", &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A namespace with a [`unique_name`].
    pub fn unique() -> io::Result<Netns> {
        Netns::new(&unique_name())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind mount, which `setns()` opens.
    pub fn path(&self) -> PathBuf {
        path_of(&self.name)
    }

    /// Runs `program args..` inside the namespace and waits for it; returns its stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> io::Result<String> {
        run_in(self, program, args)
    }

    /// Starts `program args..` inside the namespace without waiting. It is killed when the
    /// namespace is dropped. Returns its pid.
    pub fn spawn(&self, program: &str, args: &[&str]) -> io::Result<u32> {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting {program}: {e}")))?;
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(child);
        Ok(pid)
    }

    /// Moves the calling thread into this namespace (sockets and interface lookups made on it
    /// afterwards are the namespace's). Only this thread moves; see [`Netns::thread`].
    pub fn enter(&self) -> io::Result<()> {
        enter(&File::open(self.path())?)
    }

    /// Runs `f` on a new thread inside this namespace. The namespace is opened before the thread
    /// starts, so a missing namespace panics here rather than in the thread.
    pub fn thread<T, F>(&self, f: F) -> JoinHandle<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        thread_in(&self.name, f)
    }
}

/// The bind mount of namespace `name`.
fn path_of(name: &str) -> PathBuf {
    PathBuf::from("/var/run/netns").join(name)
}

/// [`Netns::thread`] for a namespace known by name (a helper that keeps only the name, such as a
/// server it started there).
pub fn thread_in<T, F>(name: &str, f: F) -> JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = path_of(name);
    let file = File::open(&path)
        .unwrap_or_else(|e| panic!("opening network namespace {}: {e}", path.display()));
    std::thread::Builder::new()
        .name(format!("in-{name}"))
        .spawn(move || {
            enter(&file)
                .unwrap_or_else(|e| panic!("entering network namespace {}: {e}", path.display()));
            drop(file);
            f()
        })
        .expect("spawning a thread")
}

fn enter(ns: &File) -> io::Result<()> {
    // SAFETY: setns only reads the descriptor, which `ns` keeps open for the call; CLONE_NEWNET
    // moves just the calling thread, which other threads of the process do not observe.
    if unsafe { setns(ns.as_raw_fd(), CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        let children = std::mem::take(
            &mut *self
                .children
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever else runs in the namespace (a daemon that forked away from its parent).
        let own = std::process::id();
        if let Ok(pids) = run("ip", &["netns", "pids", &self.name]) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                if pid == own {
                    continue;
                }
                if let Ok(pid) = c_int::try_from(pid) {
                    // SAFETY: kill(2) with a pid `ip netns pids` reported for our namespace;
                    // the worst a stale pid can do is name a process that already exited.
                    unsafe { kill(pid, SIGKILL) };
                }
            }
        }
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

fn parse_cidr(text: &str) -> io::Result<(Ipv4Addr, u8)> {
    let invalid = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("address {text:?}: {why}"),
        )
    };
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| invalid("expected a.b.c.d/len"))?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| invalid("not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (8..=30).contains(p))
        .ok_or_else(|| invalid("prefix length must be 8 to 30"))?;
    // Test traffic stays in private space we own: never an address that could be routed.
    if addr.octets()[0] != 10 {
        return Err(invalid("test namespaces use 10.0.0.0/8 only"));
    }
    Ok((addr, prefix))
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A veth pair between two namespaces, addressed, up, with transmit offloads off; deleted on drop.
///
/// Offloads are off on both ends because veth otherwise leaves checksums unfinished (a capture
/// sees bad checksums) and, with TSO/GSO, hands over 64 KiB super-frames instead of wire frames.
/// MACs are fixed and locally administered (`02:76:67:..`), so tests know them without asking.
#[derive(Debug)]
pub struct VethPair {
    ns_a: String,
    if_a: String,
    ns_b: String,
    if_b: String,
    mac_a: [u8; 6],
    mac_b: [u8; 6],
    ip_a: Ipv4Addr,
    ip_b: Ipv4Addr,
}

impl VethPair {
    /// Creates `if_a` in `ns_a` and its peer `if_b` in `ns_b`, with addresses like `10.9.0.1/24`.
    pub fn new(
        ns_a: &Netns,
        if_a: &str,
        ns_b: &Netns,
        if_b: &str,
        addr_a: &str,
        addr_b: &str,
    ) -> io::Result<VethPair> {
        VethPair::with_queues(ns_a, if_a, ns_b, if_b, addr_a, addr_b, 1)
    }

    /// Like [`VethPair::new`], with `queues` RX and TX queues on each end. veth hands a frame to
    /// the peer's RX queue of the TX queue it was sent on, which the sender's kernel picks by
    /// flow hash: different flows land on different queues, like RSS on a NIC.
    pub fn with_queues(
        ns_a: &Netns,
        if_a: &str,
        ns_b: &Netns,
        if_b: &str,
        addr_a: &str,
        addr_b: &str,
        queues: u32,
    ) -> io::Result<VethPair> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        check_name("interface", if_a)?;
        check_name("interface", if_b)?;
        let (ip_a, _) = parse_cidr(addr_a)?;
        let (ip_b, _) = parse_cidr(addr_b)?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes();
        let mac_a = [0x02, 0x76, 0x67, n[2], n[3], 0x0a];
        let mac_b = [0x02, 0x76, 0x67, n[2], n[3], 0x0b];
        let (mac_a_text, mac_b_text) = (mac_text(mac_a), mac_text(mac_b));
        let queues = queues.to_string();
        let end = |ifname, ns, mac| {
            [
                ifname,
                "netns",
                ns,
                "address",
                mac,
                "numrxqueues",
                &queues,
                "numtxqueues",
                &queues,
            ]
        };
        let mut args = vec!["link", "add"];
        args.extend(end(if_a, ns_a.name(), &mac_a_text));
        args.extend(["type", "veth", "peer", "name"]);
        args.extend(end(if_b, ns_b.name(), &mac_b_text));
        run("ip", &args)?;
        // From here on the guard deletes the pair even if configuring it fails.
        let pair = VethPair {
            ns_a: ns_a.name().to_string(),
            if_a: if_a.to_string(),
            ns_b: ns_b.name().to_string(),
            if_b: if_b.to_string(),
            mac_a,
            mac_b,
            ip_a,
            ip_b,
        };
        for (ns, ifname, addr) in [(ns_a, if_a, addr_a), (ns_b, if_b, addr_b)] {
            run("ip", &["-n", ns.name(), "addr", "add", addr, "dev", ifname])?;
            ns.run(
                "ethtool",
                &["-K", ifname, "tx", "off", "tso", "off", "gso", "off"],
            )?;
            run("ip", &["-n", ns.name(), "link", "set", ifname, "up"])?;
        }
        Ok(pair)
    }

    /// Adds permanent neighbour (ARP) entries on both ends. Needed when one end's stack never
    /// sees the other's ARP requests, e.g. while AF_XDP takes every frame of that end.
    pub fn pin_neighbours(&self) -> io::Result<()> {
        for (ns, ifname, ip, mac) in [
            (&self.ns_a, &self.if_a, self.ip_b, self.mac_b),
            (&self.ns_b, &self.if_b, self.ip_a, self.mac_a),
        ] {
            run(
                "ip",
                &[
                    "-n",
                    ns,
                    "neigh",
                    "replace",
                    &ip.to_string(),
                    "lladdr",
                    &mac_text(mac),
                    "dev",
                    ifname,
                    "nud",
                    "permanent",
                ],
            )?;
        }
        Ok(())
    }

    pub fn if_a(&self) -> &str {
        &self.if_a
    }

    pub fn if_b(&self) -> &str {
        &self.if_b
    }

    pub fn ip_a(&self) -> Ipv4Addr {
        self.ip_a
    }

    pub fn ip_b(&self) -> Ipv4Addr {
        self.ip_b
    }

    pub fn mac_a(&self) -> [u8; 6] {
        self.mac_a
    }

    pub fn mac_b(&self) -> [u8; 6] {
        self.mac_b
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting one end deletes both; if the namespace went first, so did the pair.
        let _ = run("ip", &["-n", &self.ns_a, "link", "del", &self.if_a]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_fit_an_interface_name() {
        let a = unique_name();
        let b = unique_name();
        assert_ne!(a, b);
        assert!(a.len() < IFNAMSIZ, "{a}");
        assert!(check_name("interface", &a).is_ok());
        // The longest possible: pid 0x400000, counter 9999.
        assert_eq!("vgl-400000-9999".len(), IFNAMSIZ - 1);
    }

    #[test]
    fn only_ten_slash_eight_addresses_are_accepted() {
        assert_eq!(
            parse_cidr("10.9.0.1/24").expect("valid"),
            (Ipv4Addr::new(10, 9, 0, 1), 24)
        );
        for bad in ["192.168.1.1/24", "10.9.0.1", "10.9.0.1/33", "x/24"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }
}
