//! The flashable image (issue 7), built by `image/build.sh` and booted in qemu under software
//! emulation with UEFI firmware: twice-built bytes are identical; the appliance boots from a
//! dm-verity-checked read-only root, captures a real nmap scan on its virtio port in AF_XDP copy
//! mode and serves the breach over its management API (HTTPS only, known by the certificate
//! fingerprint it logs on the console) and its console, signed in to in a headless Chromium; refused core updates write nothing; an
//! update that never comes up healthy falls back to slot A on the next boot; a good one boots
//! from slot B; a root with one byte flipped never starts anything; under Secure Boot with an
//! owner's keys enrolled, an image signed with them boots and one boot entry swapped for an
//! unsigned one does not. A boot takes about 25 s to capturing on an idle machine (UEFI firmware
//! under TCG is most of it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::browser::{spki_sha256_base64, Browser};
use vigil_tests::live::{nmap_available, syn_scan};
use vigil_tests::netns::{skip_without_root, Netns};
use vigil_tests::vm::{self, qemu_available, Firmware, Vm, APPLIANCE_MGMT, SCANNED};
use vigil_tests::workspace::{root, target_dir, vigil_bin};

const TOKEN: &str = "image-test-token-0123456789";
/// Fixed, so that two builds can be compared byte for byte.
const SOURCE_DATE_EPOCH: &str = "1790000000";
const BOOT: Duration = Duration::from_secs(600);

fn skip() -> bool {
    if skip_without_root() || !qemu_available() || !nmap_available() {
        eprintln!(
            "skipping: needs root, qemu-system-x86, ovmf and nmap (./setup.sh installs them)"
        );
        return true;
    }
    false
}

/// `image/build.sh` into `out`; returns how long it took.
fn build(out: &Path, version: &str, extra: &[&str]) -> Duration {
    build_signed(out, version, extra, None)
}

/// [`build`], with every EFI binary signed for Secure Boot by `db` (key, certificate) if given.
fn build_signed(out: &Path, version: &str, extra: &[&str], db: Option<(&Path, &Path)>) -> Duration {
    let started = Instant::now();
    let mut command = Command::new(root().join("image/build.sh"));
    if let Some((key, cert)) = db {
        command.env("VIGIL_SB_KEY", key).env("VIGIL_SB_CERT", cert);
    }
    let output = command
        .args(["--out", &out.display().to_string(), "--version", version])
        .args(["--api-token", TOKEN])
        .args(extra)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .output()
        .expect("build.sh runs");
    assert!(
        output.status.success(),
        "build.sh {version} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    started.elapsed()
}

struct Builds {
    base: PathBuf,
    /// 0.2.0: its daemon cannot start (a dynamically linked program where the static one
    /// belongs, as a broken vendor build would be).
    broken: PathBuf,
    good: PathBuf,
}

/// The three builds the boot tests share, made once per test binary.
fn builds() -> &'static Builds {
    static BUILDS: OnceLock<Builds> = OnceLock::new();
    BUILDS.get_or_init(|| {
        let dir = target_dir().join("image-test");
        let builds = Builds {
            base: dir.join("0.1.0"),
            broken: dir.join("0.2.0-broken"),
            good: dir.join("0.3.0"),
        };
        let took = build(&builds.base, "0.1.0", &[]);
        eprintln!("image build: {:.1} s", took.as_secs_f64());
        build(&builds.broken, "0.2.0", &["--vigil", "/bin/false"]);
        build(&builds.good, "0.3.0", &[]);
        builds
    })
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn two_builds_from_the_same_inputs_are_byte_identical() {
    if skip() {
        return;
    }
    let dir = target_dir().join("image-repro");
    let first = build(&dir.join("one"), "0.1.0", &[]);
    let second = build(&dir.join("two"), "0.1.0", &[]);
    for file in ["vigil-appliance.img", "vigil-core-0.1.0.vupdate"] {
        let (a, b) = (dir.join("one").join(file), dir.join("two").join(file));
        assert_eq!(sha256(&a), sha256(&b), "{file} differs between two builds");
    }
    let size = std::fs::metadata(dir.join("one/vigil-appliance.img"))
        .expect("image")
        .len();
    eprintln!(
        "image: {} MiB; builds took {:.1} s and {:.1} s",
        size >> 20,
        first.as_secs_f64(),
        second.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A partition of the disk image: (byte offset, byte length), from its GPT.
fn partition(disk: &Path, name: &str) -> (u64, u64) {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(disk)
        .output()
        .expect("sfdisk");
    let table: Value = serde_json::from_slice(&out.stdout).expect("sfdisk json");
    let parts = table["partitiontable"]["partitions"]
        .as_array()
        .expect("partitions");
    let part = parts
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no partition {name}"));
    let sectors = |key: &str| part[key].as_u64().expect("sectors") * 512;
    (sectors("start"), sectors("size"))
}

/// The file names in the ESP's EFI/Linux, read from the disk file with mtools.
fn boot_entries(disk: &Path) -> Vec<String> {
    let (offset, _) = partition(disk, "esp");
    let out = Command::new("mdir")
        .args([
            "-b",
            "-i",
            &format!("{}@@{offset}", disk.display()),
            "::/EFI/Linux",
        ])
        .output()
        .expect("mdir");
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.rsplit('/').next().map(str::to_string))
        .filter(|name| !name.is_empty())
        .collect();
    names.sort();
    names
}

/// Whether every byte of a slot is still zero (never written).
fn slot_untouched(disk: &Path, name: &str) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let (offset, len) = partition(disk, name);
    let mut file = std::fs::File::open(disk).expect("disk");
    file.seek(SeekFrom::Start(offset)).expect("seek");
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..n]).expect("read");
        if buf[..n].iter().any(|&b| b != 0) {
            return false;
        }
        left -= n as u64;
    }
    true
}

/// The booted appliance's management API, reached over HTTPS from `ns` and known by the
/// certificate fingerprint it logged on the console.
struct Api<'a> {
    ns: &'a Netns,
    fingerprint: String,
}

impl Api<'_> {
    /// The API of the appliance booted in `vm`, once it logged its certificate's fingerprint.
    fn of<'a>(ns: &'a Netns, vm: &Vm) -> Api<'a> {
        let console = vm.console();
        let fingerprint = console
            .lines()
            .filter_map(|line| line.split_once("certificate SHA-256 fingerprint "))
            .map(|(_, fingerprint)| fingerprint.trim().to_string())
            .next_back()
            .unwrap_or_else(|| panic!("no certificate fingerprint on the console:\n{console}"));
        Api { ns, fingerprint }
    }

    fn vigil(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", self.ns.name()])
            .arg(vigil_bin())
            .args(args)
            .args([
                "--to",
                &format!("https://{APPLIANCE_MGMT}:8470"),
                "--fingerprint",
                &self.fingerprint,
                "--token",
                TOKEN,
            ])
            .output()
            .expect("vigil runs")
    }

    fn status(&self) -> Value {
        let out = self.vigil(&["image", "status"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    fn apply(&self, update: &Path) -> Output {
        self.vigil(&["image", "apply", &update.display().to_string()])
    }

    /// The appliance's newest alerts.
    fn alerts(&self) -> Vec<Value> {
        let out = self.vigil(&["alerts"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .collect()
    }
}

impl Api<'_> {
    /// The certificate the appliance serves, fetched over the wire, checked against the logged
    /// fingerprint, and kept in `work` as PEM.
    fn served_certificate(&self, work: &Path) -> PathBuf {
        let pem = work.join("served-cert.pem");
        let script = "openssl s_client -connect \"$1\" </dev/null 2>/dev/null \
                      | openssl x509 -outform pem > \"$2\" \
                      && openssl x509 -in \"$2\" -noout -fingerprint -sha256";
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.ns.name(),
                "sh",
                "-c",
                script,
                "served",
            ])
            .arg(format!("{APPLIANCE_MGMT}:8470"))
            .arg(&pem)
            .output()
            .expect("openssl runs");
        let printed = String::from_utf8_lossy(&out.stdout);
        let served = printed.trim().rsplit('=').next().unwrap_or_default();
        assert!(
            served.eq_ignore_ascii_case(&self.fingerprint),
            "served {printed:?}, logged {}",
            self.fingerprint
        );
        pem
    }

    /// Signs in to the console over HTTPS in a headless Chromium trusting only the served
    /// certificate's key, and returns the text of the alerts page.
    fn console_alerts(&self, work: &Path) -> String {
        let spki = spki_sha256_base64(&self.served_certificate(work));
        let console = format!("https://{APPLIANCE_MGMT}:8470/console/");
        self.ns
            .thread(move || {
                let browser = Browser::start(&[spki]);
                browser.open(&console).expect("the console opens");
                browser
                    .find("#signin-token")
                    .and_then(|field| field.fill(TOKEN))
                    .expect("the sign-in form");
                browser
                    .find("#signin-submit")
                    .and_then(|button| button.click())
                    .expect("sign in");
                // The sign-in's own navigation may still be under way: the alerts page is
                // asked for until it is the one shown (its table).
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    browser
                        .open(&format!("{console}alerts"))
                        .expect("the alerts page");
                    if browser.find("#alerts").is_ok() || Instant::now() >= deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                browser
                    .find("body")
                    .and_then(|body| body.text())
                    .expect("the page's text")
            })
            .join()
            .expect("browser thread")
    }
}

/// Scans `ports` from the namespace, again every few seconds, until `found` picks its answer
/// out of the appliance's alerts; panics with `what` after `wait`.
fn scan_until<T>(
    api: &Api,
    ports: &str,
    wait: Duration,
    what: &str,
    found: impl Fn(&[Value]) -> Option<T>,
) -> T {
    let deadline = Instant::now() + wait;
    loop {
        syn_scan(api.ns, SCANNED, ports);
        if let Some(answer) = found(&api.alerts()) {
            return answer;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// An empty work directory for one test under the build's target dir.
fn fresh_work_dir(name: &str) -> PathBuf {
    let work = target_dir().join("image-test").join(name);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    work
}

fn assert_verified_root(status: &Value, slot: &str, partition: &str, version: &str) {
    let system = &status["system"];
    assert_eq!(system["slot"], slot, "{status}");
    assert_eq!(system["version"], version, "{status}");
    let root = &system["root"];
    assert_eq!(root["read_only"], true, "{status}");
    assert_eq!(root["fstype"], "erofs", "{status}");
    assert_eq!(root["mapper"], "vigil-root", "{status}");
    assert_eq!(root["over"], serde_json::json!([partition]), "{status}");
    assert_eq!(status["capture"]["bind"], "copy", "{status}");
    assert_eq!(
        status["capture"]["ports"],
        serde_json::json!(["eth0"]),
        "{status}"
    );
}

#[test]
fn appliance_boots_verified_catches_a_scan_and_takes_signed_ab_updates() {
    if skip() {
        return;
    }
    let builds = builds();
    let work = fresh_work_dir("boot");
    let disk = work.join("disk.img");
    disk_from(&builds.base.join("vigil-appliance.img"), &disk);
    let ns = Netns::unique().expect("namespace");
    vm::wire(&ns);
    let mut vm = Vm::boot(&ns, &disk, &work, Firmware::Plain);

    // Boot 1: slot A.
    let up = vm.wait_for("vigil reports healthy", 1, BOOT);
    eprintln!("power-on to capturing (slot A): {:.0} s", up.as_secs_f64());
    let console = vm.console();
    assert!(
        console.contains("vigil-init: slot a verified by dm-verity"),
        "{console}"
    );
    assert!(console.contains("started vigil (pid"), "{console}");
    assert!(console.contains("without root"), "{console}");
    let api = Api::of(&ns, &vm);
    let status = api.status();
    assert_verified_root(&status, "a", "vda2", "0.1.0");
    assert_eq!(
        status["api"]["tls"]["fingerprint_sha256"],
        api.fingerprint.as_str()
    );
    let breach = scan_until(
        &api,
        "1-200",
        Duration::from_secs(120),
        "no breach over the API",
        |alerts| {
            alerts
                .iter()
                .find(|alert| alert["vigil"]["model"] == "Device / Network Scan")
                .cloned()
        },
    );
    assert_eq!(breach["src_ip"], "10.88.0.1", "{breach}");
    // The operator's console on the booted image: signed in over HTTPS, the breach is there.
    let alerts_page = api.console_alerts(&work);
    assert!(alerts_page.contains("Sign out"), "{alerts_page}");
    assert!(
        alerts_page.contains("Device / Network Scan") && alerts_page.contains("10.88.0.1"),
        "{alerts_page}"
    );

    // Refused: unsigned, older, tampered. Nothing is written.
    let root_of = |build: &Path, file: &str| {
        std::fs::read(build.join("work").join(file)).expect("build part")
    };
    let unsigned = vigil::image::update::pack(
        "0.4.0".parse().expect("version"),
        "1,1,00,00",
        &root_of(&builds.good, "slot.img"),
        [
            &root_of(&builds.good, "uki-a.efi"),
            &root_of(&builds.good, "uki-b.efi"),
        ],
        &[],
    )
    .expect("pack");
    let unsigned_path = work.join("unsigned.vupdate");
    std::fs::write(&unsigned_path, unsigned).expect("write");
    let older = work.join("older.vupdate");
    let pack = Command::new(vigil_bin())
        .args([
            "image",
            "pack",
            "--version",
            "0.0.9",
            "--verity",
            "1,1,00,00",
        ])
        .arg("--root")
        .arg(builds.base.join("work/slot.img"))
        .arg("--uki-a")
        .arg(builds.base.join("work/uki-a.efi"))
        .arg("--uki-b")
        .arg(builds.base.join("work/uki-b.efi"))
        .arg("--key")
        .arg(target_dir().join("dev-keys/core.key"))
        .arg("--out")
        .arg(&older)
        .output()
        .expect("pack");
    assert!(
        pack.status.success(),
        "{}",
        String::from_utf8_lossy(&pack.stderr)
    );
    let tampered = work.join("tampered.vupdate");
    let mut bytes = std::fs::read(builds.good.join("vigil-core-0.3.0.vupdate")).expect("update");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&tampered, bytes).expect("write");
    let entries_before = boot_entries(&disk);
    assert_eq!(entries_before, ["vigil-a.efi"]);
    for (update, reason) in [
        (&unsigned_path, "unsigned"),
        (&older, "not newer than 0.1.0"),
        (&tampered, "altered"),
    ] {
        let out = api.apply(update);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{} was accepted", update.display());
        assert!(
            stderr.contains("HTTP 422") && stderr.contains(reason),
            "{stderr}"
        );
    }
    assert_eq!(
        boot_entries(&disk),
        entries_before,
        "a refused update wrote a boot entry"
    );
    assert!(
        slot_untouched(&disk, "vigil-root-b"),
        "a refused update wrote slot B"
    );

    // A signed update whose daemon never comes up: tried once in slot B, then back to A.
    let out = api.apply(&builds.broken.join("vigil-core-0.2.0.vupdate"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    vm.wait_for("slot b is on trial", 1, BOOT);
    vm.wait_for("rebooting into the previous slot", 1, BOOT);
    vm.wait_for("vigil reports healthy", 2, BOOT);
    assert_verified_root(&api.status(), "a", "vda2", "0.1.0");

    // A good update boots from slot B, is blessed, and captures.
    let out = api.apply(&builds.good.join("vigil-core-0.3.0.vupdate"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    vm.wait_for("slot b is on trial", 2, BOOT);
    vm.wait_for("vigil reports healthy", 3, BOOT);
    vm.wait_for("slot b blessed", 1, Duration::from_secs(30));
    assert_verified_root(&api.status(), "b", "vda3", "0.3.0");
    let before = api.alerts().len();
    scan_until(
        &api,
        "201-400",
        Duration::from_secs(180),
        "slot B raised no breach",
        |alerts| (alerts.len() > before).then_some(()),
    );
    drop(vm);
    // systemd-boot counted the broken entry down to no tries; slot B's good entry is blessed.
    assert_eq!(boot_entries(&disk), ["vigil-a.efi", "vigil-b.efi"]);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn a_flipped_byte_in_the_root_stops_the_boot_before_anything_runs() {
    if skip() {
        return;
    }
    let builds = builds();
    let work = fresh_work_dir("tampered");
    let disk = work.join("disk.img");
    disk_from(&builds.base.join("vigil-appliance.img"), &disk);
    // A byte in the middle of slot A's root filesystem (its hash tree follows it), flipped in
    // place rather than by rewriting the whole 482 MiB image.
    let (offset, _) = partition(&disk, "vigil-root-a");
    let root_bytes = std::fs::metadata(builds.base.join("work/root.erofs"))
        .expect("root")
        .len();
    flip_byte(&disk, offset + root_bytes / 2);
    let ns = Netns::unique().expect("namespace");
    vm::wire(&ns);
    let mut vm = Vm::boot(&ns, &disk, &work, Firmware::Plain);
    vm.wait_for("BOOT STOPPED", 1, BOOT);
    // Give a runaway boot the chance to prove itself wrong.
    std::thread::sleep(Duration::from_secs(5));
    let console = vm.console();
    assert!(
        console.contains("root slot a (/dev/vda2) failed dm-verity verification"),
        "{console}"
    );
    assert!(!console.contains("root mounted"), "{console}");
    assert!(!console.contains("started vigil"), "{console}");
    drop(vm);
    let _ = std::fs::remove_dir_all(&work);
}

/// XORs the byte at `at` of `file` with 1.
fn flip_byte(file: &Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut disk = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .expect("disk");
    let mut byte = [0u8; 1];
    disk.seek(SeekFrom::Start(at)).expect("seek");
    disk.read_exact(&mut byte).expect("read");
    byte[0] ^= 0x01;
    disk.seek(SeekFrom::Start(at)).expect("seek");
    disk.write_all(&byte).expect("write");
}

/// A copy of `image` made sparse, to boot without touching the build.
fn disk_from(image: &Path, disk: &Path) {
    let copy = Command::new("cp")
        .args(["--sparse=always"])
        .arg(image)
        .arg(disk)
        .status()
        .expect("cp");
    assert!(copy.success(), "copying {}", image.display());
}

#[test]
fn secure_boot_starts_only_entries_signed_with_the_owners_key() {
    if skip() {
        return;
    }
    let work = fresh_work_dir("secure-boot");
    // The owner's db key (Debian's snakeoil pair, enrolled in the firmware's variables), without
    // its passphrase, as sbsign wants it.
    let key = work.join("db.key");
    let decrypt = Command::new("openssl")
        .args(["pkey", "-in", vm::SNAKEOIL_KEY, "-passin"])
        .arg(format!("pass:{}", vm::SNAKEOIL_PASSPHRASE))
        .arg("-out")
        .arg(&key)
        .status()
        .expect("openssl");
    assert!(decrypt.success(), "decrypting the snakeoil key");
    let signed = work.join("signed");
    let took = build_signed(
        &signed,
        "0.1.0",
        &[],
        Some((&key, Path::new(vm::SNAKEOIL_CERT))),
    );
    eprintln!("signed image build: {:.1} s", took.as_secs_f64());

    // Signed with the enrolled key: boots, with the kernel seeing Secure Boot on.
    let disk = work.join("disk.img");
    disk_from(&signed.join("vigil-appliance.img"), &disk);
    let ns = Netns::unique().expect("namespace");
    vm::wire(&ns);
    let mut vm = Vm::boot(&ns, &disk, &work, Firmware::SecureBoot);
    let up = vm.wait_for("vigil reports healthy", 1, BOOT);
    eprintln!(
        "power-on to capturing under Secure Boot: {:.0} s",
        up.as_secs_f64()
    );
    let console = vm.console();
    assert!(
        console.contains("secureboot: Secure boot enabled"),
        "{console}"
    );
    assert!(
        console.contains("vigil-init: slot a verified by dm-verity"),
        "{console}"
    );
    assert_verified_root(&Api::of(&ns, &vm).status(), "a", "vda2", "0.1.0");
    drop(vm);

    // The same disk with slot A's entry swapped for one nobody signed (as someone would to
    // boot another command line): the signed loader refuses it and nothing starts.
    let unsigned_entry = work.join("unsigned-uki-a.efi");
    std::fs::copy(signed.join("work/uki-a.efi"), &unsigned_entry).expect("entry");
    let strip = Command::new("sbattach")
        .arg("--remove")
        .arg(&unsigned_entry)
        .status()
        .expect("sbattach");
    assert!(strip.success(), "removing the entry's signature");
    disk_from(&signed.join("vigil-appliance.img"), &disk);
    let (esp, _) = partition(&disk, "esp");
    let swap = Command::new("mcopy")
        .args(["-o", "-i", &format!("{}@@{esp}", disk.display())])
        .arg(&unsigned_entry)
        .arg("::/EFI/Linux/vigil-a.efi")
        .status()
        .expect("mcopy");
    assert!(swap.success(), "swapping the boot entry");
    let mut vm = Vm::boot(&ns, &disk, &work, Firmware::SecureBoot);
    vm.wait_for(
        "Error loading \\EFI\\Linux\\vigil-a.efi: Access Denied",
        1,
        BOOT,
    );
    // The loader gave up and the firmware moves on (to network boot, which never ends here).
    vm.wait_for("BdsDxe: failed to start", 1, BOOT);
    let console = vm.console();
    assert!(!console.contains("Linux version"), "{console}");
    assert!(!console.contains("vigil-init"), "{console}");
    drop(vm);
    let _ = std::fs::remove_dir_all(&work);
}
