//! Replays every input in `tests/fuzz_regressions/<target>/` through the
//! same entry point its cargo-fuzz target calls (`gshare_fuzz::<module>::run`
//! in `fuzz/src/`, compiled here from the same files), so a finding that was
//! fixed stays fixed under plain `cargo test`, without the fuzz toolchain.
//! A directory named after no target fails the test rather than being
//! skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

#[path = "../fuzz/src/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "../fuzz/src/ptcp.rs"]
#[allow(dead_code)]
mod ptcp;
#[path = "../fuzz/src/session.rs"]
#[allow(dead_code)]
mod session;
#[path = "../fuzz/src/stun.rs"]
#[allow(dead_code)]
mod stun;
#[path = "../fuzz/src/tarfz.rs"]
#[allow(dead_code)]
mod tarfz;

/// Fuzz target name (as in `fuzz/Cargo.toml` and `scripts/fuzz`) → the
/// body its `fuzz_targets/<name>.rs` wrapper calls.
type Entry = fn(&[u8]);

const TARGETS: &[(&str, Entry)] = &[
    ("session_stanza", session::run),
    ("stun", stun::run),
    ("pseudotcp_segment", ptcp::run),
    ("http_heads", http::run),
    ("tar_reader", tarfz::run),
];

#[test]
fn every_fuzz_regression_replays_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut replayed = 0;
    let mut failures = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let Some((_, run)) = TARGETS.iter().find(|(t, _)| *t == name) else {
            panic!("{} names no fuzz target", dir.display());
        };
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            eprintln!("replaying {} ({} bytes)", file.display(), data.len());
            if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failures.push(file.display().to_string());
            }
            replayed += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "fuzz regressions fail again: {failures:?}"
    );
    assert!(
        replayed > 0,
        "no regression input found under {}",
        root.display()
    );
}

/// Every target's entry runs on the empty input, the first one libFuzzer
/// feeds, without tripping its own checks.
#[test]
fn every_entry_point_takes_the_empty_input() {
    for (name, run) in TARGETS {
        eprintln!("{name}: empty input");
        run(&[]);
    }
}
