//! Integrity and resume between two gshare peers (issue 13 items 4 and 5), with real
//! processes and the tests' own Prosody. The UDP path goes through the impairment relay capped
//! at 160 Mbit/s, so a 200 MiB transfer takes long enough to be cut at about half, and the
//! relay's byte counters say how much really crossed the path in each run.
//!
//! - The sender, or separately the receiver, is SIGKILLed at about half; the second run
//!   resumes (HTTP `Range`), moves less than 60 % of the bytes, and the saved file is intact
//!   and verified against the sender's digest.
//! - A source changed in place (same name, same size) is not resumed onto.
//! - A source rewritten between the offer (when the sender hashed it) and the serving: the
//!   receiver's check fails, exit 7, nothing under the final name, and the sender does not
//!   report success either (exit 7).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/files.rs"]
mod files;
#[path = "support/impair.rs"]
mod impair;
#[path = "support/prosody.rs"]
mod prosody;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use files::{sha256_file, write_random};
use impair::{ImpairConfig, Relay};
use prosody::Prosody;

const ROMEO: (&str, &str) = ("romeo", "r0meo-pw");
const JULIET: (&str, &str) = ("juliet", "jul1et-pw");
const BIG: u64 = 200 << 20;

fn relay() -> Relay {
    Relay::start(ImpairConfig::wan(
        160_000_000,
        Duration::from_millis(4),
        0.0,
        13,
    ))
    .expect("relay")
}

/// A child with its stdout lines (JSON events) on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(mut cmd: std::process::Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gshare");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for an event line for which `pred` holds.
    fn wait(&mut self, what: &str, timeout: Duration, pred: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if serde_json::from_str(&l).is_ok_and(|v| pred(&v)) {
                        return;
                    }
                }
                Err(_) => panic!("never saw {what}; saw {:#?}", self.seen),
            }
        }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }

    /// Exit code, stderr and every event line, waiting at most `timeout`.
    fn finish(mut self, timeout: Duration) -> (i32, String, Vec<serde_json::Value>) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("did not exit within {timeout:?}; events {:#?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(300)) {
            self.seen.push(l);
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let events = self
            .seen
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (status.code().unwrap_or(-1), err, events)
    }
}

fn receiver(p: &Prosody, relay: &Relay, out: &Path, extra: &[&str]) -> Proc {
    let mut cmd = p.gshare(JULIET.0, JULIET.1);
    cmd.args([
        "receive",
        "--json",
        "--once",
        "--auto-accept",
        "--from",
        "romeo@localhost",
        "--timeout",
        "20",
        "--bind",
        "127.0.0.1",
        "--advertise",
    ])
    .arg(relay.addr_b().to_string())
    .arg("-o")
    .arg(out)
    .args(extra);
    let mut r = Proc::spawn(cmd);
    r.wait("ready", Duration::from_secs(20), |v| v["event"] == "ready");
    r
}

fn sender(p: &Prosody, relay: &Relay, files: &[&Path], extra: &[&str]) -> Proc {
    let mut cmd = p.gshare(ROMEO.0, ROMEO.1);
    cmd.args([
        "send",
        "--json",
        "--timeout",
        "20",
        "--bind",
        "127.0.0.1",
        "--advertise",
    ])
    .arg(relay.addr_a().to_string())
    .args(extra)
    .args(files)
    .arg("juliet@localhost");
    Proc::spawn(cmd)
}

/// Names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The one hidden resumable partial of `name` in `dir`, and its length.
fn the_partial(dir: &Path, name: &str) -> (PathBuf, u64) {
    let all = names(dir);
    assert!(
        !all.iter().any(|n| n == name),
        "{name} exists under its final name"
    );
    assert_eq!(all.len(), 1, "expected one partial: {all:?}");
    assert!(
        all[0].starts_with(&format!(".{name}.gshare-resume-")),
        "{all:?}"
    );
    let path = dir.join(&all[0]);
    let len = path.metadata().unwrap().len();
    (path, len)
}

fn item_event<'a>(events: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    events
        .iter()
        .find(|v| v["event"] == "item" && v["name"] == name)
        .unwrap_or_else(|| panic!("no item event for {name}: {events:#?}"))
}

/// First run cut at about half by killing `which` ("sender" or "receiver"); returns the
/// server, the source and the output directory with its partial.
fn interrupted(which: &str) -> (Prosody, tempfile::TempDir, tempfile::TempDir, u64) {
    let p = Prosody::start(&[ROMEO, JULIET]);
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("big.bin");
    write_random(&f, BIG, 21);
    let out = tempfile::tempdir().unwrap();
    let relay = relay();
    let mut recv = receiver(&p, &relay, out.path(), &[]);
    let mut send = sender(&p, &relay, &[&f], &[]);
    recv.wait("progress past half", Duration::from_secs(120), |v| {
        v["event"] == "progress" && v["item_bytes"].as_u64().unwrap_or(0) * 100 >= BIG * 50
    });
    let (survivor, code_want) = if which == "sender" {
        send.kill();
        (recv, 7)
    } else {
        recv.kill();
        (send, 7)
    };
    let (code, err, _) = survivor.finish(Duration::from_secs(60));
    assert_eq!(
        code, code_want,
        "the other side after the {which} was killed: {err}"
    );
    let (_, len) = the_partial(out.path(), "big.bin");
    assert!(len > BIG / 3, "only {len} bytes kept");
    (p, src, out, len)
}

/// Second run: completes, moves < 60 % of the bytes, file intact and verified.
fn resumed_run(p: &Prosody, src: &Path, out: &Path, kept: u64) {
    let f = src.join("big.bin");
    let relay = relay();
    let recv = receiver(p, &relay, out, &[]);
    let send = sender(p, &relay, &[&f], &[]);
    let (scode, serr, _) = send.finish(Duration::from_secs(120));
    let (rcode, rerr, events) = recv.finish(Duration::from_secs(60));
    assert_eq!(scode, 0, "sender: {serr}\nreceiver: {rerr}");
    assert_eq!(rcode, 0, "receiver: {rerr}");
    assert_eq!(names(out), ["big.bin"], "the partial became the file");
    assert_eq!(sha256_file(&out.join("big.bin")), sha256_file(&f));
    let item = item_event(&events, "big.bin");
    assert_eq!(item["verified"], true, "{item}");
    assert_eq!(item["sha256"], sha256_file(&f).as_str(), "{item}");
    let resumed = item["resumed_from"].as_u64().unwrap();
    assert!(
        resumed > 0 && resumed <= kept,
        "resumed from {resumed}, kept {kept}"
    );
    // What crossed the path: the relay's count of sender → receiver payload bytes.
    let moved = relay.stats().a_to_b.delivered_bytes;
    assert!(
        moved * 100 < BIG * 60,
        "the second run moved {moved} bytes of {BIG}"
    );
    println!(
        "resumed at {resumed} of {BIG} bytes; the second run moved {moved} bytes ({:.0} %)",
        moved as f64 * 100.0 / BIG as f64
    );
}

#[test]
fn sender_killed_at_half_then_the_transfer_resumes() {
    let (p, src, out, kept) = interrupted("sender");
    resumed_run(&p, src.path(), out.path(), kept);
}

#[test]
fn receiver_killed_at_half_then_the_transfer_resumes() {
    let (p, src, out, kept) = interrupted("receiver");
    resumed_run(&p, src.path(), out.path(), kept);
}

#[test]
fn a_changed_source_with_the_same_name_and_size_is_not_resumed_onto() {
    let (p, src, out, _) = interrupted("sender");
    let f = src.path().join("big.bin");
    // Same name, same size, other content (the start, which the partial holds, changes).
    write_random(&f, BIG, 22);
    let relay = relay();
    let recv = receiver(&p, &relay, out.path(), &[]);
    let send = sender(&p, &relay, &[&f], &[]);
    let (scode, serr, _) = send.finish(Duration::from_secs(120));
    let (rcode, rerr, events) = recv.finish(Duration::from_secs(60));
    assert_eq!((scode, rcode), (0, 0), "sender: {serr}\nreceiver: {rerr}");
    assert_eq!(sha256_file(&out.path().join("big.bin")), sha256_file(&f));
    let item = item_event(&events, "big.bin");
    assert_eq!(item["resumed_from"], 0, "{item}");
    assert_eq!(item["verified"], true, "{item}");
    assert!(relay.stats().a_to_b.delivered_bytes >= BIG);
}

#[test]
fn no_resume_starts_over_and_keeps_no_partial() {
    let (p, src, out, _) = interrupted("sender");
    let f = src.path().join("big.bin");
    let relay = relay();
    let recv = receiver(&p, &relay, out.path(), &["--no-resume"]);
    let send = sender(&p, &relay, &[&f], &[]);
    let (scode, serr, _) = send.finish(Duration::from_secs(120));
    let (rcode, rerr, events) = recv.finish(Duration::from_secs(60));
    assert_eq!((scode, rcode), (0, 0), "sender: {serr}\nreceiver: {rerr}");
    assert_eq!(names(out.path()), ["big.bin"], "old partial removed");
    assert_eq!(sha256_file(&out.path().join("big.bin")), sha256_file(&f));
    assert_eq!(item_event(&events, "big.bin")["resumed_from"], 0);
    assert!(relay.stats().a_to_b.delivered_bytes >= BIG);
}

#[test]
fn a_source_rewritten_after_the_offer_fails_the_check_on_both_sides() {
    let p = Prosody::start(&[ROMEO, JULIET]);
    let src = tempfile::tempdir().unwrap();
    let first = src.path().join("first.bin");
    let second = src.path().join("second.bin");
    write_random(&first, 64 << 20, 31);
    write_random(&second, 4 << 20, 32);
    let out = tempfile::tempdir().unwrap();
    let relay = relay();
    let mut recv = receiver(&p, &relay, out.path(), &[]);
    let send = sender(&p, &relay, &[&first, &second], &[]);
    // The offer (with second.bin's digest) is out and first.bin is flowing: rewrite
    // second.bin in place, same size, before it is served.
    recv.wait("first.bin under way", Duration::from_secs(60), |v| {
        v["event"] == "progress" && v["name"] == "first.bin"
    });
    let mut data = std::fs::read(&second).unwrap();
    data[1000] ^= 0x55;
    std::fs::write(&second, &data).unwrap();
    let (rcode, rerr, events) = recv.finish(Duration::from_secs(120));
    let (scode, serr, sevents) = send.finish(Duration::from_secs(60));
    assert_eq!(rcode, 7, "receiver: {rerr}");
    assert!(rerr.contains("second.bin"), "{rerr}");
    assert!(rerr.contains("SHA-256"), "{rerr}");
    assert_eq!(scode, 7, "the sender must not report success: {serr}");
    assert!(
        !sevents.iter().any(|v| v["event"] == "done"),
        "{sevents:#?}"
    );
    assert!(!events.iter().any(|v| v["event"] == "done"), "{events:#?}");
    assert!(
        !out.path().join("second.bin").exists(),
        "nothing under the final name"
    );
    assert!(
        !names(out.path()).iter().any(|n| n.contains("second.bin")),
        "no partial of a mismatching file: {:?}",
        names(out.path())
    );
    // first.bin arrived whole and verified before the failure.
    assert_eq!(
        sha256_file(&out.path().join("first.bin")),
        sha256_file(&first)
    );
    assert_eq!(item_event(&events, "first.bin")["verified"], true);
}

#[test]
fn a_folder_and_standard_input_are_verified_too() {
    let p = Prosody::start(&[ROMEO, JULIET]);
    let src = tempfile::tempdir().unwrap();
    let folder = src.path().join("stuff");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    write_random(&folder.join("a.bin"), 300_000, 41);
    write_random(&folder.join("sub/b.bin"), 5, 42);
    let out = tempfile::tempdir().unwrap();
    let relay = relay();
    let recv = receiver(&p, &relay, out.path(), &[]);
    let mut cmd = p.gshare(ROMEO.0, ROMEO.1);
    cmd.args(["send", "--json", "--bind", "127.0.0.1", "--advertise"])
        .arg(relay.addr_a().to_string())
        .args(["--name", "piped.txt"])
        .arg(&folder)
        .arg("-")
        .arg("juliet@localhost")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"spooled and hashed on the way\n").unwrap();
    }
    let sent = child.wait_with_output().unwrap();
    let (rcode, rerr, events) = recv.finish(Duration::from_secs(60));
    assert_eq!(
        sent.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert_eq!(rcode, 0, "{rerr}");
    let folder_item = item_event(&events, "stuff");
    assert_eq!(folder_item["verified"], true, "{folder_item}");
    let piped = item_event(&events, "piped.txt");
    assert_eq!(piped["verified"], true, "{piped}");
    assert_eq!(
        std::fs::read(out.path().join("piped.txt")).unwrap(),
        b"spooled and hashed on the way\n"
    );
    assert_eq!(
        sha256_file(&out.path().join("stuff/a.bin")),
        sha256_file(&folder.join("a.bin"))
    );
}
