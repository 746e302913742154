//! The capture rate of a live `vigil run` with its console open and refreshing, as a ratio to
//! the rate with no console client, in the same run. A signed-in client (curl over HTTPS, pinned
//! to the appliance's certificate) fetches the live parts of all six pages twice a second: ten
//! times what six open browser tabs ask for (each refreshes every 5 s). The capture loop answers
//! the pages' questions between packets, so that is the cost measured. UDP datagrams from a peer
//! namespace, as fast as the sender can, alternating with and without the console. Needs root.
//!
//! `cargo bench -p vigil-tests --bench console_load` (after ./setup.sh).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vigil_tests::live::{LiveVigil, API_HTTPS_URL};
use vigil_tests::load::udp_flood;
use vigil_tests::netns::{skip_without_root, unique_name, Netns, VethPair};
use vigil_tests::workspace::TempDir;

const SECONDS: u64 = 3;
const ROUNDS: usize = 3;
const TOKEN: &str = "bench-console-token-51e0aa";
const PAGES: [&str; 6] = [
    "incidents",
    "alerts",
    "devices",
    "actions",
    "plugins",
    "system",
];
const REFRESH: Duration = Duration::from_millis(500);

/// curl inside the appliance's namespace, trusting only the appliance's certificate and keeping
/// the console's session cookie.
struct Console {
    ns: String,
    cert: PathBuf,
    jar: PathBuf,
}

impl Console {
    fn curl(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "curl", "-sS", "--fail", "--cacert",
            ])
            .arg(&self.cert)
            .arg("-b")
            .arg(&self.jar)
            .arg("-c")
            .arg(&self.jar)
            .args(args)
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn sign_in(&self) {
        let url = format!("{API_HTTPS_URL}/console/signin");
        self.curl(&["-d", &format!("token={TOKEN}"), &url]);
    }

    /// Every page's live part, in one connection.
    fn refresh_all(&self) {
        let urls: Vec<String> = PAGES
            .iter()
            .map(|page| format!("{API_HTTPS_URL}/console/{page}?part=1"))
            .collect();
        let args: Vec<&str> = urls.iter().map(String::as_str).collect();
        self.curl(&args);
    }

    /// Frames the appliance captured so far, from its status.
    fn captured(&self) -> u64 {
        let auth = format!("Authorization: Bearer {TOKEN}");
        let status = self.curl(&["-H", &auth, &format!("{API_HTTPS_URL}/api/v1/status")]);
        let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
        let queues = status["capture"]["queues"].as_array().cloned();
        let queues = queues.unwrap_or_else(|| panic!("capture.queues in {status:#}"));
        queues.iter().filter_map(|q| q["packets"].as_u64()).sum()
    }
}

/// Refreshes the console's pages every [`REFRESH`] until `stop`; counts the refreshes.
fn keep_refreshing(console: Arc<Console>, stop: Arc<AtomicBool>, count: Arc<AtomicU64>) {
    while !stop.load(Ordering::Relaxed) {
        console.refresh_all();
        count.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(REFRESH);
    }
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn main() {
    if skip_without_root() {
        return;
    }
    let appliance = Netns::unique().expect("namespace");
    let sender = Netns::unique().expect("namespace");
    let if_a = unique_name();
    let pair = VethPair::new(
        &appliance,
        &if_a,
        &sender,
        &unique_name(),
        "10.216.0.1/24",
        "10.216.0.2/24",
    )
    .expect("veth pair");
    pair.pin_neighbours().expect("neighbours");
    let work = TempDir::new("bench-console");
    let vigil = LiveVigil::with_https_api_and(&appliance, &if_a, work.path(), TOKEN, "");
    let console = Arc::new(Console {
        ns: appliance.name().to_string(),
        cert: work.path().join("data/tls/cert.pem"),
        jar: work.path().join("cookies.txt"),
    });
    console.sign_in();
    let rate = |with_console: bool| {
        let stop = Arc::new(AtomicBool::new(false));
        let refreshes = Arc::new(AtomicU64::new(0));
        let client = with_console.then(|| {
            let (console, stop, refreshes) = (
                Arc::clone(&console),
                Arc::clone(&stop),
                Arc::clone(&refreshes),
            );
            std::thread::spawn(move || keep_refreshing(console, stop, refreshes))
        });
        let before = console.captured();
        let sent = udp_flood(
            &sender,
            pair.ip_b(),
            pair.ip_a(),
            None,
            Duration::from_secs(SECONDS),
        );
        // The capture counters are published every 250 ms.
        std::thread::sleep(Duration::from_millis(600));
        let captured = console.captured() - before;
        stop.store(true, Ordering::Relaxed);
        if let Some(client) = client {
            client.join().expect("console client");
        }
        let pages = refreshes.load(Ordering::Relaxed) * PAGES.len() as u64;
        (captured as f64 / SECONDS as f64, sent, pages)
    };
    let (mut closed, mut open) = (Vec::new(), Vec::new());
    let mut pages_served = 0;
    for _ in 0..ROUNDS {
        closed.push(rate(false).0);
        let (captured, _, pages) = rate(true);
        open.push(captured);
        pages_served += pages;
    }
    let (closed, open) = (median(closed), median(open));
    println!(
        "live capture (generic XDP, one queue), UDP flood, {SECONDS} s per run, median of {ROUNDS}"
    );
    println!("{:<52} {:>12.0} packets/s", "console closed", closed);
    println!(
        "{:<52} {:>12.0} packets/s  = {:.2}x closed ({pages_served} page parts served)",
        "console open, six pages refreshed every 0.5 s",
        open,
        open / closed
    );
    assert!(vigil.stop().success());
}
