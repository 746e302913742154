//! `vigil-init`: PID 1 of the Vigil appliance image. It loads the few kernel modules the
//! appliance needs, maps the booted root slot through dm-verity with the root hash its boot
//! entry carries and reads it whole (an altered root stops the boot here), mounts it read-only
//! with the data partition and the EFI system partition, configures the ports, and runs
//! `vigil run` without root. There is no shell and no login: the console only shows what
//! happens. See image/README.md.

mod boot_count;
mod cmdline;
mod net;
mod settings;
mod supervise;
mod system;
mod verity;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vigil_boot_contract::{READY_FILE, RUN_DIR};

const NEW_ROOT: &str = "/newroot";
const DATA_DIR: &str = "/var/lib/vigil";
const ESP_DIR: &str = "/efi";
const MODULE_LIST: &str = "/lib/modules/load.list";

fn main() {
    if std::process::id() != 1 {
        eprintln!("vigil-init is PID 1 of the appliance image; it does nothing elsewhere");
        std::process::exit(2);
    }
    let Err(err) = boot();
    println!("\nvigil-init: BOOT STOPPED: {err}");
    println!("vigil-init: nothing was started; fix or reflash the appliance");
    system::halt()
}

fn boot() -> Result<Infallible, String> {
    let start = Instant::now();
    system::early().map_err(|err| format!("early mounts: {err}"))?;
    println!("vigil-init: starting");
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|err| format!("reading /proc/cmdline: {err}"))?;
    let boot = cmdline::parse(&cmdline)?;
    let modules = system::load_modules(Path::new(MODULE_LIST))
        .map_err(|err| format!("kernel modules: {err}"))?;
    println!(
        "vigil-init: loaded {modules} kernel modules; booting slot {}",
        boot.slot
    );

    let wait = Duration::from_secs(30);
    let name = boot.slot.root_partition();
    let root_part = system::partition(&name, wait).map_err(|err| err.to_string())?;
    let data_part = system::partition("vigil-data", wait).map_err(|err| err.to_string())?;
    let esp_part = system::partition("esp", wait).map_err(|err| err.to_string())?;

    let root_dev = root_part.display().to_string();
    let verified = verity::open("vigil-root", &root_dev, &boot.verity)
        .map_err(|err| format!("setting up dm-verity on {root_dev}: {err}"))?;
    system::wait_for(&verified, Duration::from_secs(5)).map_err(|err| err.to_string())?;
    let checked = verity::check_all(&verified).map_err(|err| {
        format!(
            "root slot {} ({root_dev}) failed dm-verity verification: {err}. The root \
             filesystem does not match the root hash of its boot entry: it was altered",
            boot.slot
        )
    })?;
    println!(
        "vigil-init: slot {} verified by dm-verity: {checked} bytes match root hash {}",
        boot.slot, boot.verity.root_hash
    );

    let ro = libc::MS_RDONLY | libc::MS_NODEV | libc::MS_NOSUID;
    let verified_dev = verified.display().to_string();
    system::mount(&verified_dev, NEW_ROOT, "erofs", ro, "").map_err(|err| format!("{err}"))?;
    let data_flags = libc::MS_NODEV | libc::MS_NOSUID | libc::MS_NOEXEC;
    system::mount(
        &data_part.display().to_string(),
        &format!("{NEW_ROOT}{DATA_DIR}"),
        "ext4",
        data_flags,
        "",
    )
    .map_err(|err| format!("the data partition: {err}"))?;
    // The daemon writes the other slot's boot entry on a core update; init renames entries.
    let esp_options = format!(
        "uid={},gid={},fmask=0077,dmask=0077",
        supervise::VIGIL_UID,
        supervise::VIGIL_GID
    );
    system::mount(
        &esp_part.display().to_string(),
        &format!("{NEW_ROOT}{ESP_DIR}"),
        "vfat",
        data_flags,
        &esp_options,
    )
    .map_err(|err| format!("the EFI system partition: {err}"))?;
    system::switch_root(NEW_ROOT).map_err(|err| format!("switching root: {err}"))?;
    println!("vigil-init: root mounted read-only from {verified_dev}");

    let settings = settings::load(&Path::new(DATA_DIR).join("appliance.toml"))?;
    bring_up_ports(&settings)?;

    // A core update writes the slot not booted.
    let inactive = system::partition(&boot.slot.other().root_partition(), wait)
        .map_err(|err| err.to_string())?;
    system::chown(&inactive, supervise::VIGIL_UID, supervise::VIGIL_GID)
        .map_err(|err| err.to_string())?;
    std::fs::create_dir_all(RUN_DIR).map_err(|err| format!("{RUN_DIR}: {err}"))?;
    system::chown(
        Path::new(RUN_DIR),
        supervise::VIGIL_UID,
        supervise::VIGIL_GID,
    )
    .map_err(|err| err.to_string())?;
    println!(
        "vigil-init: system ready {:.1} s after init started",
        start.elapsed().as_secs_f64()
    );

    let daemon = supervise::Daemon {
        program: PathBuf::from("/usr/bin/vigil"),
        args: [
            "run",
            "--iface",
            &settings.capture,
            "--data-dir",
            DATA_DIR,
            "--config",
            &format!("{DATA_DIR}/vigil.toml"),
            // From the verified root, whatever the (unverified) data partition's config says.
            "--plugins",
            "/usr/lib/vigil/plugins",
            "--trust",
            "/etc/vigil/trust",
            "--ready-file",
            READY_FILE,
        ]
        .map(String::from)
        .to_vec(),
    };
    let trial = supervise::Trial {
        slot: boot.slot,
        esp: PathBuf::from(ESP_DIR),
        health_timeout: Duration::from_secs(boot.health_timeout_secs),
    };
    supervise::run(&daemon, &trial)
}

fn bring_up_ports(settings: &settings::ApplianceSettings) -> Result<(), String> {
    let wait = Duration::from_secs(30);
    net::configure("lo", std::net::Ipv4Addr::LOCALHOST, 8).map_err(|err| err.to_string())?;
    system::wait_for(&Path::new("/sys/class/net").join(&settings.capture), wait)
        .map_err(|err| format!("capture port: {err}"))?;
    net::raise_flags(&settings.capture, libc::IFF_UP | libc::IFF_PROMISC)
        .map_err(|err| err.to_string())?;
    println!(
        "vigil-init: capture port {} up (promiscuous)",
        settings.capture
    );
    if let Some(management) = &settings.management {
        system::wait_for(&Path::new("/sys/class/net").join(&management.iface), wait)
            .map_err(|err| format!("management port: {err}"))?;
        let (addr, prefix) = net::parse_cidr(&management.address)
            .ok_or_else(|| format!("bad management address {}", management.address))?;
        net::configure(&management.iface, addr, prefix).map_err(|err| err.to_string())?;
        println!(
            "vigil-init: management port {} at {}",
            management.iface, management.address
        );
    }
    Ok(())
}
