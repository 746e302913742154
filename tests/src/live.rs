//! `vigil run` as an operator starts it, inside a namespace a test made: started until it
//! reports capturing, its log kept for failure messages, stopped with SIGTERM (and killed if the
//! test ends first). Plus a real nmap scan to feed it.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::netns::Netns;
use crate::workspace::{plugin_dir, vigil_bin};

/// Where [`LiveVigil::with_api`] has the management API listen, in the appliance's namespace.
pub const API_ADDR: &str = "127.0.0.1:8470";
pub const API_URL: &str = "http://127.0.0.1:8470";
/// [`API_URL`] when the API serves HTTPS ([`LiveVigil::with_https_api`]).
pub const API_HTTPS_URL: &str = "https://127.0.0.1:8470";

pub struct LiveVigil {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    /// The line that said which XDP mode it captures in.
    pub capturing: String,
}

impl LiveVigil {
    /// `vigil run` on `iface` (generic XDP) with the signed development plugins, its data dir
    /// `dir/data` and its management API on 127.0.0.1:8470 with `token`.
    pub fn with_api(ns: &Netns, iface: &str, dir: &Path, token: &str) -> LiveVigil {
        LiveVigil::with_api_and(ns, iface, dir, token, "", &["--mode", "generic"])
    }

    /// Like [`LiveVigil::with_api`] with `config` (TOML sections) added to its config file and
    /// `extra` arguments instead of `--mode generic`.
    pub fn with_api_and(
        ns: &Netns,
        iface: &str,
        dir: &Path,
        token: &str,
        config: &str,
        extra: &[&str],
    ) -> LiveVigil {
        let config = api_config(dir, token, config);
        LiveVigil::with_config(ns, iface, dir, &config, extra)
    }

    /// `vigil run` on `iface` (generic XDP) with its data dir `dir/data` and its management API
    /// on 127.0.0.1:8470 with `token`, over HTTPS (see [`https_api_section`]).
    pub fn with_https_api(ns: &Netns, iface: &str, dir: &Path, token: &str) -> LiveVigil {
        LiveVigil::with_https_api_and(ns, iface, dir, token, "")
    }

    /// Like [`LiveVigil::with_https_api`] with `config` (TOML) added to its config file.
    pub fn with_https_api_and(
        ns: &Netns,
        iface: &str,
        dir: &Path,
        token: &str,
        config: &str,
    ) -> LiveVigil {
        let path = dir.join("vigil.toml");
        std::fs::write(&path, https_api_section(token) + config).expect("config");
        LiveVigil::with_config(ns, iface, dir, &path, &["--mode", "generic"])
    }

    /// `vigil run` on `iface` with the config file `config`, the signed development plugins and
    /// the data dir `dir/data`, and `extra` arguments.
    fn with_config(
        ns: &Netns,
        iface: &str,
        dir: &Path,
        config: &Path,
        extra: &[&str],
    ) -> LiveVigil {
        let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
        let (data, plugins, config) = (path(&dir.join("data")), path(&plugin_dir()), path(config));
        let mut args = vec![
            "--iface",
            iface,
            "--data-dir",
            &data,
            "--plugins",
            &plugins,
            "--config",
            &config,
        ];
        args.extend_from_slice(extra);
        LiveVigil::start(ns, &args)
    }

    /// The SHA-256 fingerprint of the API's certificate, as the appliance logged it on start.
    pub fn fingerprint(&mut self) -> String {
        let line = self
            .log()
            .iter()
            .find(|line| line.contains("SHA-256 fingerprint"))
            .cloned()
            .unwrap_or_else(|| panic!("no fingerprint logged: {:#?}", self.log()));
        line.rsplit(' ').next().expect("a word").to_string()
    }

    /// `ip netns exec NS vigil run ARGS`, waiting (up to 60 s) until it captures.
    pub fn start(ns: &Netns, args: &[&str]) -> LiveVigil {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(vigil_bin())
            .arg("run")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vigil starts");
        let stderr = child.stderr.take().expect("stderr");
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut vigil = LiveVigil {
            child,
            lines,
            log: Vec::new(),
            capturing: String::new(),
        };
        let started = Instant::now();
        loop {
            match vigil.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    let found = line.contains("capturing on");
                    vigil.log.push(line.clone());
                    if found {
                        vigil.capturing = line;
                        return vigil;
                    }
                }
                Err(_) => panic!("vigil did not start capturing: {:#?}", vigil.log),
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{:#?}",
                vigil.log
            );
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("vigil's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {status}"))
    }

    /// How many descriptors it has open now.
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("vigil's /proc fd")
            .count()
    }

    /// Everything it logged so far.
    pub fn log(&mut self) -> &[String] {
        self.log.extend(self.lines.try_iter());
        &self.log
    }

    /// SIGTERM, then waits (up to 20 s) for it to save its state and exit.
    pub fn stop(self) -> ExitStatus {
        self.stop_with_summary().0
    }

    /// [`LiveVigil::stop`], also returning what it printed on stdout: the run's summary.
    pub fn stop_with_summary(mut self) -> (ExitStatus, Vec<u8>) {
        let mut stdout = self.child.stdout.take().expect("stdout");
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(exit) = self.child.try_wait().expect("wait") {
                let mut summary = Vec::new();
                stdout.read_to_end(&mut summary).expect("reading stdout");
                return (exit, summary);
            }
            assert!(Instant::now() < deadline, "vigil ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl LiveVigil {
    /// SIGKILL, as a power cut or the kernel's OOM killer would end it: nothing saved on the
    /// way out.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
    }
}

impl Drop for LiveVigil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True (with the reason printed) when this machine cannot run the live tests: they need root
/// and the network tools `./setup.sh` installs.
/// A command's stdout then stderr as text, for assertions and their messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `GET /api/v1/status` of the `vigil run` [`LiveVigil::with_api`] started in `ns` with `token`
/// (through `vigil image status`).
pub fn api_status(ns: &Netns, token: &str) -> serde_json::Value {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(vigil_bin())
        .args(["image", "status", "--to", API_URL, "--token", token])
        .output()
        .expect("vigil image status runs");
    assert!(out.status.success(), "{}", output_text(&out));
    serde_json::from_slice(&out.stdout).expect("the status is JSON")
}

/// Writes `dir/vigil.toml` for a `vigil run` whose management API listens on loopback with
/// `token`; returns its path.
fn api_config(dir: &Path, token: &str, extra: &str) -> PathBuf {
    let config = dir.join("vigil.toml");
    std::fs::write(&config, api_section(token) + extra).expect("config");
    config
}

/// `GET path` from the management API [`LiveVigil::with_api`] started in `ns`: the status code
/// and the JSON body, or `None` when it did not answer within `wait`.
pub fn api_get(
    ns: &Netns,
    path: &str,
    token: &str,
    wait: Duration,
) -> Option<(u16, serde_json::Value)> {
    use std::io::{Read, Write};
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    );
    ns.thread(move || {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], 8470));
        let mut stream = std::net::TcpStream::connect_timeout(&address, wait).ok()?;
        stream.set_read_timeout(Some(wait)).ok()?;
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let status = answer.split(' ').nth(1)?.parse().ok()?;
        let (_, body) = answer.split_once("\r\n\r\n")?;
        Some((status, serde_json::from_str(body).ok()?))
    })
    .join()
    .ok()
    .flatten()
}

/// The config section that has the management API listen at [`API_URL`] with `token`, in
/// plain HTTP, which the appliance allows on loopback only.
pub fn api_section(token: &str) -> String {
    https_api_section(token) + "tls = false\n"
}

/// The config section that has the management API listen at [`API_ADDR`] with `token`, over
/// HTTPS (the default) with the certificate the appliance makes in `DATA/tls/`.
pub fn https_api_section(token: &str) -> String {
    format!("[api]\nlisten = \"{API_ADDR}\"\ntoken = \"{token}\"\n")
}

/// `vigil ARGS` inside `ns`, e.g. a client of the API [`LiveVigil`] serves there.
pub fn vigil_in(ns: &Netns, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(vigil_bin())
        .args(args)
        .output()
        .expect("vigil runs")
}

pub fn skip_live() -> bool {
    if crate::netns::skip_without_root() || !nmap_available() {
        eprintln!("skipping: needs root, iproute2, nmap and socat (./setup.sh installs them)");
        return true;
    }
    false
}

/// Asserts that each of `programs` is on the PATH, so a test missing a tool fails saying what to
/// run rather than with a spawn error deep inside.
pub fn require_tools(programs: &[&str]) {
    for program in programs {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(found, "{program} missing: run ./setup.sh");
    }
}

pub fn nmap_available() -> bool {
    Command::new("nmap")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `tcpdump ARGS` in `ns`, returned once it says it is listening (so nothing sent after this
/// returns is missed), with its stdout piped for a test that reads what it prints.
pub fn start_tcpdump(ns: &Netns, args: &[&str]) -> Child {
    let mut tcpdump = Command::new("ip")
        .args(["netns", "exec", ns.name(), "tcpdump"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump");
    let listening = tcpdump.stderr.take().is_some_and(|stderr| {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("listening on"))
    });
    if !listening {
        let _ = tcpdump.kill();
        let _ = tcpdump.wait();
        panic!("tcpdump exited before listening");
    }
    tcpdump
}

/// Waits until a capture file has stopped growing for half a second (tcpdump with `-U` writes
/// each frame as it comes), so a test reads all of what was captured.
pub fn wait_until_written(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = None;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let len = std::fs::metadata(path).map(|m| m.len()).ok();
        if len.is_some() && len == last {
            return;
        }
        assert!(Instant::now() < deadline, "{} kept growing", path.display());
        last = len;
    }
}

/// A real TCP SYN scan of `ports` on `target` from `ns`; returns nmap's report.
pub fn syn_scan(ns: &Netns, target: &str, ports: &str) -> String {
    // AF_XDP takes the appliance end's ARP too: nmap must use the pinned neighbour through the
    // kernel instead of resolving it on the wire itself.
    nmap_syn_scan(ns, target, ports, &["--send-ip", "--disable-arp-ping"])
}

/// A real TCP SYN scan (one try per probe) of `ports` on `targets` from `ns`, with `extra`
/// options; returns nmap's report.
pub fn nmap_syn_scan(ns: &Netns, targets: &str, ports: &str, extra: &[&str]) -> String {
    let mut args = vec!["-n", "-Pn", "-sS", "-T4", "--max-retries", "0", "-p", ports];
    args.extend_from_slice(extra);
    args.push(targets);
    let report = ns.run("nmap", &args).expect("nmap runs");
    assert!(report.contains("Nmap done"), "{report}");
    report
}

/// The alerts of `model` from `source` in `eve`, waiting up to `wait` for at least one.
pub fn wait_for_alerts(
    eve: &Path,
    model: &str,
    source: &str,
    wait: Duration,
) -> Vec<serde_json::Value> {
    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(eve)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|a| a["alert"]["signature"] == model && a["src_ip"] == source)
            .collect()
    };
    let deadline = Instant::now() + wait;
    while read().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    read()
}
