//! The management API of a live `vigil run` under hostile clients: huge bodies without a token
//! are refused unread, authorised bodies are capped on disk, thousands of idle connections do not
//! shut out a good request, token guessing is slowed to a stop, and `/alerts` answers from the
//! tail of a large eve.json.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vigil_tests::http::{post_generated, request, Answer};
use vigil_tests::live::{skip_live, LiveVigil, API_ADDR};
use vigil_tests::netns::{unique_name, Netns, VethPair};
use vigil_tests::workspace::TempDir;

const TOKEN: &str = "api-limits-token-5c81e2";
/// What the daemon enforces (appliance/src/api/gate.rs and server.rs).
const MAX_FAILURES: usize = 10;
const MAX_CONNECTIONS: usize = 64;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A `vigil run` with its API, in a namespace of its own; dropped in field order, daemon first.
struct Appliance {
    vigil: LiveVigil,
    _pair: VethPair,
    ns: Netns,
    work: TempDir,
}

impl Appliance {
    /// Starts one; `prepare` may put files into its data dir first.
    fn start(subnet: u8, prepare: impl FnOnce(&Path)) -> Appliance {
        let ns = Netns::unique().expect("namespace");
        let peer = Netns::unique().expect("namespace");
        let pair = VethPair::new(
            &ns,
            &unique_name(),
            &peer,
            &unique_name(),
            &format!("10.204.{subnet}.1/24"),
            &format!("10.204.{subnet}.2/24"),
        )
        .expect("veth pair");
        let work = TempDir::new("api-limits");
        std::fs::create_dir_all(work.path().join("data")).expect("data dir");
        prepare(&work.path().join("data"));
        let vigil = LiveVigil::with_api(&ns, pair.if_a(), work.path(), TOKEN);
        Appliance {
            vigil,
            _pair: pair,
            ns,
            work,
        }
    }

    fn data(&self) -> PathBuf {
        self.work.path().join("data")
    }

    /// Runs `f` on a thread inside the appliance's namespace, where the API listens.
    fn inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.ns.thread(f).join().expect("client thread")
    }

    fn get(&self, path: &'static str, token: Option<&'static str>) -> Answer {
        self.inside(move || request(API_ADDR, "GET", path, token, b"").expect("request"))
    }

    /// `GET /api/v1/status` with the token, and how long its answer took.
    fn timed_status(&self) -> (Answer, Duration) {
        self.inside(|| {
            let started = Instant::now();
            let answer =
                request(API_ADDR, "GET", "/api/v1/status", Some(TOKEN), b"").expect("status");
            (answer, started.elapsed())
        })
    }

    fn uploads_left(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.data().join("uploads")) {
            Ok(entries) => entries.flatten().map(|entry| entry.path()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[test]
fn a_500_mb_body_without_a_token_is_refused_unread_and_an_authorised_one_is_capped_on_disk() {
    if skip_live() {
        return;
    }
    let appliance = Appliance::start(1, |_| {});
    // Settle what the API allocates on first use before measuring.
    for _ in 0..3 {
        assert_eq!(appliance.get("/api/v1/status", Some(TOKEN)).status, 200);
    }
    const HUGE: u64 = 500 * 1024 * 1024;
    let before = appliance.vigil.rss_kib();
    let declared = appliance.inside(|| {
        post_generated(API_ADDR, "/api/v1/image", None, HUGE, false).expect("declared length")
    });
    let chunked = appliance
        .inside(|| post_generated(API_ADDR, "/api/v1/plugins", None, HUGE, true).expect("chunked"));
    let after = appliance.vigil.rss_kib();
    assert_eq!(declared.status, 401, "{declared:?}");
    assert_eq!(chunked.status, 401, "{chunked:?}");
    assert!(
        after < before + 1024,
        "the daemon grew from {before} KiB to {after} KiB on refused bodies"
    );

    // With the token, a bundle over the default cap (32 MiB) is refused once it passes it, and
    // what was received is gone from disk.
    const OVER_CAP: u64 = 33 * 1024 * 1024;
    let streamed = appliance.inside(|| {
        post_generated(API_ADDR, "/api/v1/plugins", Some(TOKEN), OVER_CAP, true).expect("streamed")
    });
    assert_eq!(streamed.status, 413, "{streamed:?}");
    assert!(streamed.json()["error"]
        .as_str()
        .is_some_and(|e| e.contains("larger than")));
    let declared = appliance.inside(|| {
        post_generated(API_ADDR, "/api/v1/plugins", Some(TOKEN), OVER_CAP, false).expect("declared")
    });
    assert_eq!(declared.status, 413, "{declared:?}");
    assert_eq!(appliance.uploads_left(), Vec::<PathBuf>::new());
    assert!(appliance.vigil.stop().success());
}

#[test]
fn two_thousand_idle_connections_do_not_keep_a_good_request_waiting() {
    if skip_live() {
        return;
    }
    let mut appliance = Appliance::start(2, |_| {});
    // The connections are this process's descriptors too.
    let raised = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            "--nofile=16384:16384",
        ])
        .status()
        .expect("prlimit");
    assert!(raised.success());
    let (answer, took) = appliance.timed_status();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(took < Duration::from_secs(1), "answered in {took:?}");
    let files_before = appliance.vigil.open_files();
    // Fewer descriptors left than the API's connection limit, as on a machine whose limit is low:
    // accepting then fails with EMFILE too, and the API must ride it out.
    let scarce = files_before + MAX_CONNECTIONS / 2;
    let lowered = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &appliance.vigil.pid().to_string(),
            &format!("--nofile={scarce}:{scarce}"),
        ])
        .status()
        .expect("prlimit");
    assert!(lowered.success());

    let idle: Vec<TcpStream> = appliance.inside(|| {
        (0..2000)
            .map(|n| {
                TcpStream::connect_timeout(
                    &API_ADDR.parse().expect("address"),
                    Duration::from_secs(10),
                )
                .unwrap_or_else(|err| panic!("idle connection {n}: {err}"))
            })
            .collect()
    });
    let (answer, took) = appliance.timed_status();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        took < Duration::from_secs(1),
        "with 2,000 idle connections open, answered in {took:?}"
    );
    let files_during = appliance.vigil.open_files();
    assert!(
        files_during <= files_before + MAX_CONNECTIONS,
        "the daemon held {files_during} descriptors ({files_before} before the idle connections)"
    );

    drop(idle);
    let (answer, took) = appliance.timed_status();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        took < Duration::from_secs(1),
        "after the idle connections closed, answered in {took:?}"
    );
    assert_eq!(answer.json()["api"]["restarts"], 0, "{answer:?}");
    let log = appliance.vigil.log().join("\n");
    assert!(
        log.contains("accepting a connection failed: Too many open files"),
        "{log}"
    );
    assert!(appliance.vigil.stop().success());
}

#[test]
fn a_wrong_token_flood_gets_429_after_the_limit_even_once_it_guesses_right() {
    if skip_live() {
        return;
    }
    let appliance = Appliance::start(3, |_| {});
    let answers: Vec<u16> = (0..MAX_FAILURES + 5)
        .map(|_| {
            appliance
                .get("/api/v1/status", Some("a-wrong-guess-of-the-token"))
                .status
        })
        .collect();
    let mut expected = vec![401; MAX_FAILURES];
    expected.extend([429; 5]);
    assert_eq!(answers, expected);
    let right = appliance.get("/api/v1/status", Some(TOKEN));
    assert_eq!(right.status, 429, "{right:?}");
    assert!(appliance.vigil.stop().success());
}

/// Writes an eve.json of about `bytes` where alerts and other records alternate, each with its
/// index; returns the newest 500 alerts as reading the whole file forwards finds them.
fn write_large_eve(data: &Path, bytes: u64) -> Vec<serde_json::Value> {
    let path = data.join("eve.json");
    let mut eve = std::io::BufWriter::new(std::fs::File::create(&path).expect("eve.json"));
    let mut n = 0u64;
    let mut written = 0u64;
    while written < bytes {
        let event_type = if n % 3 == 2 { "flow" } else { "alert" };
        let line = serde_json::json!({
            "timestamp": "2026-12-07T08:00:00.000000+0000",
            "event_type": event_type,
            "src_ip": format!("10.9.{}.{}", (n / 250) % 250, n % 250),
            "alert": {"signature": "Device / Network Scan", "n": n},
            "padding": "p".repeat((n % 200) as usize),
        })
        .to_string();
        writeln!(eve, "{line}").expect("write");
        written += line.len() as u64 + 1;
        n += 1;
    }
    eve.flush().expect("flush");
    drop(eve);
    let text = std::fs::read_to_string(&path).expect("read back");
    let alerts: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("json"))
        .filter(|record| record["event_type"] == "alert")
        .collect();
    alerts[alerts.len() - 500..].to_vec()
}

#[test]
fn alerts_of_a_large_eve_json_are_the_newest_500_read_from_its_tail() {
    if skip_live() {
        return;
    }
    const EVE_BYTES: u64 = 64 * 1024 * 1024;
    let mut newest = Vec::new();
    let appliance = Appliance::start(4, |data| newest = write_large_eve(data, EVE_BYTES));
    assert_eq!(appliance.get("/api/v1/status", Some(TOKEN)).status, 200);
    let before = appliance.vigil.rss_kib();
    let answer = appliance.get("/api/v1/alerts", Some(TOKEN));
    let after = appliance.vigil.rss_kib();
    assert_eq!(answer.status, 200);
    let alerts = answer.json();
    assert_eq!(alerts.as_array().map(Vec::len), Some(500));
    assert_eq!(alerts, serde_json::Value::Array(newest));
    // Reading the whole 64 MiB file would take at least that much.
    assert!(
        after < before + 16 * 1024,
        "answering grew the daemon from {before} KiB to {after} KiB"
    );
    assert!(appliance.vigil.stop().success());
}

#[test]
fn a_client_that_trickles_its_headers_is_cut_off_at_the_header_timeout() {
    if skip_live() {
        return;
    }
    let appliance = Appliance::start(5, |_| {});
    let held_for = appliance.inside(|| {
        let mut stream = TcpStream::connect(API_ADDR).expect("connect");
        let started = Instant::now();
        stream
            .write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: vigil\r\n")
            .expect("request line");
        // One byte of a header every second, never finishing it: only a deadline on the whole
        // head ends this.
        for byte in b"X-Slow: ".iter().cycle() {
            if stream.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
            if started.elapsed() > 3 * HEADER_TIMEOUT {
                break;
            }
        }
        started.elapsed()
    });
    assert!(
        held_for < HEADER_TIMEOUT + Duration::from_secs(5),
        "the connection stayed open {held_for:?}"
    );
    // The API goes on answering.
    assert_eq!(appliance.get("/api/v1/status", Some(TOKEN)).status, 200);
    assert!(appliance.vigil.stop().success());
}
