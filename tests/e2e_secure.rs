//! gshare → gshare encryption with real processes and the tests' own
//! Prosody, with a relay on the peer-to-peer path (tests/support/tap.rs,
//! wired with the hidden `--advertise`): the path carries no plaintext, a
//! flipped byte fails the transfer, both sides print the same short code,
//! and `--require-encryption` refuses a peer that would send in the clear
//! (played by gshare's hidden `--no-encryption`, which offers no
//! certificate, exactly like a classic peer as far as TLS goes).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/files.rs"]
mod files;
#[path = "support/prosody.rs"]
mod prosody;
#[path = "support/tap.rs"]
mod tap;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use files::sha256_file;
use prosody::Prosody;
use serde_json::Value;
use tap::{Tap, TapConfig};

const ROMEO: (&str, &str) = ("romeo", "r0meo-pw");
const JULIET: (&str, &str) = ("juliet", "jul1et-pw");
const PHRASE: &str = "Wherefore art thou Romeo? Deny thy father and refuse thy name";

fn server() -> Prosody {
    Prosody::start(&[ROMEO, JULIET])
}

/// A text file of about `len` bytes made of numbered lines holding PHRASE.
fn text_file(dir: &Path, len: usize) -> PathBuf {
    let p = dir.join("balcony.txt");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    let mut n = 0usize;
    let mut written = 0usize;
    while written < len {
        let line = format!("{n:08} {PHRASE}\n");
        f.write_all(line.as_bytes()).unwrap();
        written += line.len();
        n += 1;
    }
    f.flush().unwrap();
    p
}

fn receiver(p: &Prosody, out: &Path, extra: &[&str]) -> Child {
    let mut cmd = p.gshare(JULIET.0, JULIET.1);
    cmd.args([
        "receive",
        "--json",
        "--once",
        "--auto-accept",
        "--bind",
        "127.0.0.1",
        "--timeout",
        "20",
        "-o",
    ])
    .arg(out)
    .args(extra)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn receiver");
    // Give it time to log in and announce itself.
    std::thread::sleep(Duration::from_millis(300));
    child
}

fn sender(p: &Prosody, file: &Path, extra: &[&str]) -> Child {
    let mut cmd = p.gshare(ROMEO.0, ROMEO.1);
    cmd.args(["send", "--json", "--bind", "127.0.0.1", "--timeout", "20"])
        .args(extra)
        .arg(file)
        .arg(Prosody::jid(JULIET.0))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("spawn sender")
}

/// Waits for a child with a deadline; its exit code, stdout, stderr.
fn finish(child: Child, timeout: Duration) -> (i32, String, String) {
    let deadline = Instant::now() + timeout;
    let mut child = child;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// The JSON event named `name` from `--json` output.
fn event(stdout: &str, name: &str) -> Option<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == name)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Sender and receiver through a tap; (sender, receiver) results.
#[allow(clippy::type_complexity)]
fn through_tap(
    tap: &Tap,
    file: &Path,
    out: &Path,
    send_extra: &[&str],
    recv_extra: &[&str],
) -> ((i32, String, String), (i32, String, String)) {
    let p = server();
    let a = tap.addr_a().to_string();
    let b = tap.addr_b().to_string();
    let mut r_args = vec!["--advertise", b.as_str()];
    r_args.extend_from_slice(recv_extra);
    let mut s_args = vec!["--advertise", a.as_str()];
    s_args.extend_from_slice(send_extra);
    let r = receiver(&p, out, &r_args);
    let s = sender(&p, file, &s_args);
    let s = finish(s, Duration::from_secs(90));
    let r = finish(r, Duration::from_secs(30));
    (s, r)
}

#[test]
fn encrypted_transfer_carries_no_plaintext_and_both_sides_show_the_same_code() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = text_file(src.path(), 2 << 20);
    let tap = Tap::start(TapConfig {
        capture: true,
        ..TapConfig::default()
    })
    .unwrap();
    let ((sc, so, se), (rc, ro, re)) = through_tap(&tap, &file, out.path(), &[], &[]);
    assert_eq!(sc, 0, "sender: {se}\nreceiver: {re}");
    assert_eq!(rc, 0, "receiver: {re}\nsender: {se}");
    assert_eq!(
        sha256_file(&file),
        sha256_file(&out.path().join("balcony.txt"))
    );
    let sa = event(&so, "accepted").expect("sender accepted event");
    let ra = event(&ro, "accepted").expect("receiver accepted event");
    assert_eq!(sa["encrypted"], true, "{sa}");
    assert_eq!(ra["encrypted"], true, "{ra}");
    let code = sa["short_code"].as_str().unwrap();
    assert_eq!(code.len(), 14, "{sa}");
    assert_eq!(ra["short_code"], code);
    // Each side's own fingerprint is the other's peer fingerprint.
    assert_eq!(sa["fingerprint"], ra["peer_fingerprint"]);
    assert_eq!(ra["fingerprint"], sa["peer_fingerprint"]);
    assert!(!se.contains("not encrypted") && !re.contains("not encrypted"));

    let captured = tap.captured();
    let bytes: usize = captured.iter().map(Vec::len).sum();
    assert!(bytes > 2 << 20, "the relay saw only {bytes} bytes");
    let needle = &PHRASE.as_bytes()[..24];
    for d in &captured {
        assert!(!contains(d, needle), "plaintext on the path");
    }
    assert!(!contains(&captured.concat(), needle));
}

#[test]
fn a_flipped_byte_on_the_path_fails_the_transfer_with_exit_7() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = text_file(src.path(), 4 << 20);
    let tap = Tap::start(TapConfig {
        flip_after: Some(5),
        ..TapConfig::default()
    })
    .unwrap();
    let ((sc, _so, se), (rc, ro, re)) = through_tap(&tap, &file, out.path(), &[], &[]);
    assert_eq!(tap.flipped(), 1, "the relay flipped nothing");
    assert_eq!(rc, 7, "receiver: {re}\nevents: {ro}\nsender: {se}");
    assert_ne!(sc, 0, "the sender reported success: {se}");
    assert!(
        !out.path().join("balcony.txt").exists(),
        "the altered file was saved under its name"
    );
    assert!(event(&ro, "done").is_none(), "{ro}");
}

#[test]
fn a_plaintext_peer_gets_a_notice_and_the_transfer_works() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = text_file(src.path(), 256 << 10);
    let tap = Tap::start(TapConfig {
        capture: true,
        ..TapConfig::default()
    })
    .unwrap();
    let ((sc, so, se), (rc, ro, re)) =
        through_tap(&tap, &file, out.path(), &["--no-encryption"], &[]);
    assert_eq!(sc, 0, "sender: {se}\nreceiver: {re}");
    assert_eq!(rc, 0, "receiver: {re}\nsender: {se}");
    assert_eq!(
        sha256_file(&file),
        sha256_file(&out.path().join("balcony.txt"))
    );
    for events in [&so, &ro] {
        let a = event(events, "accepted").unwrap();
        assert_eq!(a["encrypted"], false, "{a}");
        assert!(a.get("short_code").is_none(), "{a}");
    }
    assert_eq!(re.matches("is not encrypted").count(), 1, "{re}");
    assert_eq!(se.matches("is not encrypted").count(), 1, "{se}");
    // Plaintext, as a classic peer would see it: the phrase is on the path.
    assert!(contains(&tap.captured().concat(), PHRASE.as_bytes()));
}

#[test]
fn require_encryption_declines_a_plaintext_sender_without_a_byte() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = text_file(src.path(), 256 << 10);
    let tap = Tap::start(TapConfig {
        capture: true,
        ..TapConfig::default()
    })
    .unwrap();
    let ((sc, _so, se), (rc, ro, re)) = through_tap(
        &tap,
        &file,
        out.path(),
        &["--no-encryption"],
        &["--require-encryption"],
    );
    assert_eq!(rc, 8, "receiver: {re}\nevents: {ro}");
    assert_eq!(sc, 5, "sender: {se}");
    let rejected = event(&ro, "rejected").unwrap();
    assert_eq!(rejected["reason"], "not encrypted");
    assert!(tap.captured().is_empty(), "datagrams moved");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

#[test]
fn require_encryption_cancels_on_the_sending_side_without_a_byte() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = text_file(src.path(), 256 << 10);
    let tap = Tap::start(TapConfig {
        capture: true,
        ..TapConfig::default()
    })
    .unwrap();
    let ((sc, so, se), (rc, _ro, re)) = through_tap(
        &tap,
        &file,
        out.path(),
        &["--require-encryption"],
        &["--no-encryption"],
    );
    assert_eq!(sc, 8, "sender: {se}\nevents: {so}");
    assert!(se.contains("encryption is required"), "{se}");
    assert_ne!(rc, 0, "receiver: {re}");
    assert!(
        !tap.captured()
            .iter()
            .any(|d| contains(d, &PHRASE.as_bytes()[..24])),
        "file bytes moved"
    );
    assert!(!out.path().join("balcony.txt").exists());
}
