//! The appliance image booted in qemu (TCG: no KVM here) with UEFI firmware, a virtio disk and
//! two virtio NICs joined to tap devices in a namespace the test made: `vtap0` feeds the capture
//! port, `vtap1` reaches the management API. The serial console is kept in a file the test reads.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// The guest's capture port MAC, which the namespace pins as the scanned host's neighbour.
pub const CAPTURE_MAC: &str = "52:54:00:00:00:10";
/// The management addresses: the namespace's end and the appliance's (image/build.sh default).
pub const HOST_MGMT: &str = "10.77.0.1/24";
pub const APPLIANCE_MGMT: &str = "10.77.0.2";
/// The mirror port's subnet as the namespace sees it.
pub const HOST_CAPTURE: &str = "10.88.0.1/24";
pub const SCANNED: &str = "10.88.0.2";

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Debian's OVMF build with Secure Boot, and variables with Secure Boot on and one "snakeoil"
/// certificate enrolled as PK, KEK and db: an owner's keys, whose private half Debian ships
/// (passphrase `snakeoil`, see the ovmf package's README.Debian).
const OVMF_SECURE_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const OVMF_SECURE_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";
pub const SNAKEOIL_KEY: &str = "/usr/share/ovmf/PkKek-1-snakeoil.key";
pub const SNAKEOIL_CERT: &str = "/usr/share/ovmf/PkKek-1-snakeoil.pem";
pub const SNAKEOIL_PASSPHRASE: &str = "snakeoil";

/// The UEFI firmware a VM boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// Runs any boot loader.
    Plain,
    /// Runs only what the snakeoil db key signed.
    SecureBoot,
}

/// Whether qemu and the UEFI firmware are installed (./setup.sh installs them).
pub fn qemu_available() -> bool {
    Path::new(OVMF_CODE).exists()
        && Command::new("qemu-system-x86_64")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// The namespace's two tap devices and addresses.
pub fn wire(ns: &Netns) {
    for (tap, addr) in [("vtap0", HOST_CAPTURE), ("vtap1", HOST_MGMT)] {
        ns.run("ip", &["tuntap", "add", tap, "mode", "tap"])
            .expect("tap");
        ns.run("ip", &["addr", "add", addr, "dev", tap])
            .expect("addr");
        ns.run("ip", &["link", "set", tap, "up"]).expect("up");
    }
    // The capture port takes every frame (ARP included), so the scanned address never answers
    // ARP: pin it, as the live tests do for their veth pairs.
    ns.run(
        "ip",
        &[
            "neigh",
            "replace",
            SCANNED,
            "lladdr",
            CAPTURE_MAC,
            "dev",
            "vtap0",
            "nud",
            "permanent",
        ],
    )
    .expect("neighbour");
}

pub struct Vm {
    child: Child,
    console: PathBuf,
    started: Instant,
}

impl Vm {
    /// Boots `disk` (written to in place) with fresh firmware variables kept in `work`.
    pub fn boot(ns: &Netns, disk: &Path, work: &Path, firmware: Firmware) -> Vm {
        let (code, vars_template) = match firmware {
            Firmware::Plain => (OVMF_CODE, OVMF_VARS),
            Firmware::SecureBoot => (OVMF_SECURE_CODE, OVMF_SECURE_VARS),
        };
        let vars = work.join("OVMF_VARS.fd");
        std::fs::copy(vars_template, &vars).expect("firmware variables");
        let console = work.join("console.log");
        let _ = std::fs::remove_file(&console);
        let flash = |file: &Path, readonly: bool| {
            format!(
                "if=pflash,format=raw,unit={},readonly={},file={}",
                u8::from(!readonly),
                if readonly { "on" } else { "off" },
                file.display()
            )
        };
        let mut qemu = Command::new("ip");
        qemu.args(["netns", "exec", ns.name(), "qemu-system-x86_64"]);
        match firmware {
            Firmware::Plain => qemu.args(["-machine", "q35"]),
            // The Secure Boot build keeps its variables behind SMM, where the OS cannot write.
            Firmware::SecureBoot => qemu.args([
                "-machine",
                "q35,smm=on",
                "-global",
                "driver=cfi.pflash01,property=secure,value=on",
            ]),
        };
        let child = qemu
            .args(["-accel", "tcg", "-cpu", "max", "-m", "1536"])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-drive", &flash(Path::new(code), true)])
            .args(["-drive", &flash(&vars, false)])
            .args([
                "-drive",
                &format!("if=virtio,format=raw,file={}", disk.display()),
            ])
            .args([
                "-netdev",
                "tap,id=capture,ifname=vtap0,script=no,downscript=no",
            ])
            .args([
                "-device",
                &format!("virtio-net-pci,netdev=capture,mac={CAPTURE_MAC},romfile="),
            ])
            .args([
                "-netdev",
                "tap,id=mgmt,ifname=vtap1,script=no,downscript=no",
            ])
            .args(["-device", "virtio-net-pci,netdev=mgmt,romfile="])
            .args(["-serial", &format!("file:{}", console.display())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu starts");
        Vm {
            child,
            console,
            started: Instant::now(),
        }
    }

    /// Everything the console printed so far (across reboots).
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// Waits until `text` has appeared on the console `count` times in all; returns the time
    /// since power-on. Panics with the console's tail after `wait`.
    pub fn wait_for(&mut self, text: &str, count: usize, wait: Duration) -> Duration {
        let deadline = Instant::now() + wait;
        loop {
            let console = self.console();
            if console.matches(text).count() >= count {
                return self.started.elapsed();
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("qemu exited ({exit}) before {text:?}:\n{}", tail(&console));
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} (x{count}) on the console within {wait:?}:\n{}",
                tail(&console)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn tail(console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
