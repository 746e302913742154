//! A short run of every cargo-fuzz target in `appliance/fuzz` on its seed corpus (mutated real
//! packets): a parser that panics, overflows or breaks an invariant on them fails the suite here,
//! with libFuzzer's report. Long runs are for people (README, Fuzzing); this catches the shallow
//! crashes a change brings in.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use vigil_tests::workspace::{root, target_dir, TempDir};

/// Per target: the ten targets then take about a minute and a half in all.
const SECONDS_PER_TARGET: u32 = 8;

fn fuzz_dir() -> PathBuf {
    root().join("appliance").join("fuzz")
}

/// `cargo fuzz ...` from the appliance crate, building into the main target directory (so a
/// CI machine that keeps it keeps the instrumented build too).
fn cargo_fuzz(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO"));
    command
        .arg("fuzz")
        .args(args)
        .current_dir(root().join("appliance"))
        // cargo-fuzz passes `-Z` flags (sanitizer, coverage) to rustc; stable takes them so.
        .env("RUSTC_BOOTSTRAP", "1");
    command
}

fn fuzz_target_dir() -> String {
    target_dir().join("fuzz").to_string_lossy().into_owned()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The end of a long report: libFuzzer prints its dictionary before the summary.
fn tail(report: &str, lines: usize) -> String {
    let all: Vec<&str> = report.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A failed run's report from the panic or sanitizer error on (the mutation log before it says
/// nothing), long lines cut: cargo-fuzz prints the whole input in `Debug` form.
fn failure(report: &str) -> String {
    const MAX_LINE: usize = 300;
    let lines: Vec<&str> = report.lines().collect();
    let Some(start) = lines
        .iter()
        .position(|line| line.contains("panicked at") || line.contains("ERROR: "))
    else {
        return tail(report, 80);
    };
    lines[start..]
        .iter()
        .map(|line| match line.char_indices().nth(MAX_LINE) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// libFuzzer's `-print_final_stats` value for `name`.
fn stat(report: &str, name: &str) -> Option<u64> {
    report.lines().find_map(|line| {
        line.strip_prefix("stat::")?
            .strip_prefix(name)?
            .strip_prefix(':')?
            .trim()
            .parse()
            .ok()
    })
}

fn copy_dir(from: &Path, to: &Path) -> usize {
    let mut copied = 0;
    for entry in std::fs::read_dir(from).expect("read seeds") {
        let path = entry.expect("seed entry").path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().expect("a file name"))).expect("copy");
            copied += 1;
        }
    }
    copied
}

fn run_target(target: &str, seeds: &Path) -> Output {
    let corpus = TempDir::new(&format!("fuzz-{target}"));
    copy_dir(seeds, corpus.path());
    let corpus = corpus.path().to_string_lossy().into_owned();
    let max_time = format!("-max_total_time={SECONDS_PER_TARGET}");
    cargo_fuzz(&[
        "run",
        "--target-dir",
        &fuzz_target_dir(),
        target,
        &corpus,
        "--",
        &max_time,
        "-rss_limit_mb=2048",
        // A hang fails too, instead of stalling the suite.
        "-timeout=10",
        "-print_final_stats=1",
    ])
    .output()
    .expect("cargo fuzz runs")
}

#[test]
fn every_fuzz_target_survives_a_short_run_on_its_seeds() {
    let installed = cargo_fuzz(&["--version"]).output();
    assert!(
        installed.is_ok_and(|out| out.status.success()),
        "cargo-fuzz is not installed: run ./setup.sh (it runs `cargo install cargo-fuzz --locked`)"
    );

    let started = Instant::now();
    let build = cargo_fuzz(&["build", "--target-dir", &fuzz_target_dir()])
        .output()
        .expect("cargo fuzz build runs");
    assert!(
        build.status.success(),
        "cargo fuzz build failed:\n{}",
        tail(&text(&build.stderr), 60)
    );
    println!("fuzz build: {:.1?}", started.elapsed());

    let list = cargo_fuzz(&["list"])
        .output()
        .expect("cargo fuzz list runs");
    let targets: Vec<String> = text(&list.stdout)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(String::from)
        .collect();
    assert!(!targets.is_empty(), "no fuzz targets in {:?}", fuzz_dir());

    // One after another: each run has a core to itself and the report names every failure.
    let mut failures = Vec::new();
    for target in &targets {
        let seeds = fuzz_dir().join("seeds").join(target);
        assert!(
            seeds.is_dir(),
            "fuzz target {target} has no seeds in {seeds:?} (see seeds/generate.py)"
        );
        let started = Instant::now();
        let out = run_target(target, &seeds);
        let report = text(&out.stderr);
        println!(
            "{target}: {} runs, {} exec/s, {:.1?}",
            stat(&report, "number_of_executed_units").unwrap_or(0),
            stat(&report, "average_exec_per_sec").unwrap_or(0),
            started.elapsed()
        );
        if !out.status.success() {
            failures.push(format!(
                "== fuzz target {target} failed ({}); the input is under \
                 appliance/fuzz/artifacts/{target}/:\n{}",
                out.status,
                failure(&report)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
