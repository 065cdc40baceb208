//! Faults that must be survived (issue 9), against the real Prosody: a peer
//! killed mid-transfer, Prosody restarted mid-transfer, a full disk; and
//! what users must never see (passwords in logs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/files.rs"]
mod files;
#[path = "support/prosody.rs"]
mod prosody;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use files::{sha256_file, sparse, write_random};
use prosody::Prosody;

const ROMEO: (&str, &str) = ("romeo", "r0meo-secret-pw");
const JULIET: (&str, &str) = ("juliet", "jul1et-secret-pw");

/// Starts `gshare receive --json` and waits until it is logged in; returns
/// the child and a channel of its stdout lines.
fn receiver(p: &Prosody, out: &Path, extra: &[&str]) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = p
        .gshare(JULIET.0, JULIET.1)
        .args([
            "receive",
            "--json",
            "--once",
            "--auto-accept",
            "--bind",
            "127.0.0.1",
            "-o",
        ])
        .arg(out)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    wait_line(&rx, "\"ready\"", Duration::from_secs(20));
    (child, rx)
}

fn wait_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.contains(needle) => return l,
            Ok(l) => seen.push(l),
            Err(_) => panic!("never saw {needle}; saw {seen:#?}"),
        }
    }
}

fn sender(p: &Prosody, file: &Path, extra: &[&str]) -> Child {
    p.gshare(ROMEO.0, ROMEO.1)
        .args(["send", "--bind", "127.0.0.1"])
        .args(extra)
        .arg(file)
        .arg("juliet@localhost")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for exit within `timeout`; returns (code, stderr).
fn exit_of(mut child: Child, timeout: Duration) -> (i32, String) {
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("did not exit within {timeout:?}: {err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status.code().unwrap_or(-1), err)
}

/// What a person reads must be sentences: no Rust debug forms (`{ .. }` of
/// a struct, `Some(..)`) on stderr (without -v) or in a JSON event's
/// `reason`.
fn assert_for_people(who: &str, stderr: &str) {
    for line in stderr.lines() {
        assert!(
            !line.contains('{') && !line.contains("Some("),
            "{who} showed a debug form: {line}\n{stderr}"
        );
    }
}

/// The same for the `reason` of every JSON event still in `lines`.
fn assert_reasons_for_people(lines: &std::sync::mpsc::Receiver<String>) {
    while let Ok(l) = lines.recv_timeout(Duration::from_millis(200)) {
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        if let Some(reason) = v.get("reason").and_then(|r| r.as_str()) {
            assert!(
                !reason.contains('{') && !reason.contains("Some("),
                "a JSON reason with a debug form: {l}"
            );
        }
    }
}

fn assert_empty_dir(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "left behind in {}: {left:?}",
        dir.display()
    );
}

/// Nothing under `name` in `dir`, and nothing else but the hidden resumable
/// partial of `name` (issue 13: an interrupted gshare → gshare transfer keeps
/// one, `.NAME.gshare-resume-<32 hex>`).
fn assert_only_partial(dir: &Path, name: &str) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let prefix = format!(".{name}.gshare-resume-");
    assert!(
        left.len() == 1
            && left[0]
                .strip_prefix(&prefix)
                .is_some_and(|k| { k.len() == 32 && k.bytes().all(|b| b.is_ascii_hexdigit()) }),
        "expected only the hidden partial of {name} in {}: {left:?}",
        dir.display()
    );
}

#[test]
fn sender_killed_mid_transfer_receiver_exits_7_and_keeps_only_a_hidden_partial() {
    let p = Prosody::start(&[ROMEO, JULIET]);
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("big.bin");
    sparse(&f, 1 << 30);
    let out = tempfile::tempdir().unwrap();
    let (recv, lines) = receiver(&p, out.path(), &["--timeout", "20"]);
    let mut send = sender(&p, &f, &[]);
    wait_line(&lines, "\"progress\"", Duration::from_secs(60));
    send.kill().unwrap();
    let _ = send.wait();
    let killed_at = Instant::now();
    let (code, err) = exit_of(recv, Duration::from_secs(40));
    assert_eq!(code, 7, "{err}");
    assert!(
        killed_at.elapsed() < Duration::from_secs(25),
        "noticed only after {:?}",
        killed_at.elapsed()
    );
    assert!(err.contains("romeo@localhost"), "{err}");
    assert_only_partial(out.path(), "big.bin");
    assert_for_people("the receiver", &err);
    assert_reasons_for_people(&lines);
}

#[test]
fn receiver_killed_mid_transfer_sender_exits_7() {
    let p = Prosody::start(&[ROMEO, JULIET]);
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("big.bin");
    sparse(&f, 1 << 30);
    let out = tempfile::tempdir().unwrap();
    let (mut recv, lines) = receiver(&p, out.path(), &[]);
    let send = sender(&p, &f, &["--timeout", "20"]);
    wait_line(&lines, "\"progress\"", Duration::from_secs(60));
    recv.kill().unwrap();
    let _ = recv.wait();
    let killed_at = Instant::now();
    let (code, err) = exit_of(send, Duration::from_secs(40));
    assert_eq!(code, 7, "{err}");
    assert!(
        killed_at.elapsed() < Duration::from_secs(25),
        "noticed only after {:?}",
        killed_at.elapsed()
    );
    assert!(err.contains("juliet@localhost"), "{err}");
    assert_for_people("the sender", &err);
}

#[test]
fn prosody_restart_mid_transfer_reports_it_and_never_claims_a_partial_file() {
    let mut p = Prosody::start(&[ROMEO, JULIET]);
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("big.bin");
    sparse(&f, 256 << 20);
    let out = tempfile::tempdir().unwrap();
    let (recv, lines) = receiver(&p, out.path(), &["--timeout", "20"]);
    let send = sender(&p, &f, &["--timeout", "20"]);
    wait_line(&lines, "\"progress\"", Duration::from_secs(60));
    p.kill();
    std::thread::sleep(Duration::from_secs(1));
    p.restart();
    let (rcode, rerr) = exit_of(recv, Duration::from_secs(90));
    let (scode, serr) = exit_of(send, Duration::from_secs(90));
    // Each side says it lost the XMPP connection.
    assert!(rerr.contains("XMPP"), "receiver: {rerr}");
    assert!(serr.contains("XMPP"), "sender: {serr}");
    let saved = out.path().join("big.bin");
    if rcode == 0 {
        // The bytes kept flowing over UDP: the file is whole and correct.
        assert_eq!(sha256_file(&saved), sha256_file(&f));
    } else {
        assert_eq!(rcode, 7, "{rerr}");
        assert_only_partial(out.path(), "big.bin");
    }
    // The sender cannot claim success without the receiver's confirmation.
    assert_ne!(scode, 0, "{serr}");
    assert_for_people("the receiver", &rerr);
    assert_for_people("the sender", &serr);
    assert_reasons_for_people(&lines);
}

#[test]
fn a_full_disk_is_a_clear_error_and_nothing_is_left() {
    let p = Prosody::start(&[ROMEO, JULIET]);
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("four-mib.bin");
    write_random(&f, 4 << 20, 4);
    let mnt = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(mnt.path())
        .status()
        .expect("run mount");
    assert!(
        ok.success(),
        "cannot mount a small tmpfs (the tests run as root in CI)"
    );
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(mnt.path());
    let (recv, lines) = receiver(&p, mnt.path(), &[]);
    let send = sender(&p, &f, &[]);
    let (rcode, rerr) = exit_of(recv, Duration::from_secs(60));
    let (scode, serr) = exit_of(send, Duration::from_secs(60));
    assert_eq!(rcode, 7, "{rerr}");
    assert!(rerr.contains("four-mib.bin"), "{rerr}");
    assert!(rerr.to_lowercase().contains("no space"), "{rerr}");
    assert_ne!(scode, 0, "the sender was not told: {serr}");
    assert_empty_dir(mnt.path());
    assert_for_people("the receiver", &rerr);
    assert_for_people("the sender", &serr);
    assert_reasons_for_people(&lines);
}

/// A small tmpfs at `dir`, unmounted on drop.
struct SmallDisk<'a>(&'a Path);

impl<'a> SmallDisk<'a> {
    fn mount(dir: &'a Path, options: &str) -> SmallDisk<'a> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            ok.success(),
            "cannot mount a small tmpfs (the tests run as root in CI)"
        );
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn a_disk_that_fills_during_the_transfer_is_a_clear_error_and_nothing_is_left() {
    // The offer fits the free space, but the disk runs out of inodes while
    // the folder is unpacked: the write path's error, not the offer check.
    let p = Prosody::start(&[ROMEO, JULIET]);
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("many");
    std::fs::create_dir(&tree).unwrap();
    for i in 0..64 {
        std::fs::write(tree.join(format!("f{i:02}.txt")), b"x").unwrap();
    }
    let mnt = tempfile::tempdir().unwrap();
    let _disk = SmallDisk::mount(mnt.path(), "size=8m,nr_inodes=16");
    let (recv, lines) = receiver(&p, mnt.path(), &[]);
    let send = sender(&p, &tree, &[]);
    let (rcode, rerr) = exit_of(recv, Duration::from_secs(60));
    let (scode, serr) = exit_of(send, Duration::from_secs(60));
    assert_eq!(rcode, 7, "{rerr}");
    assert!(rerr.contains("many"), "{rerr}");
    assert!(rerr.to_lowercase().contains("no space"), "{rerr}");
    assert!(!rerr.contains("declined"), "the offer check fired: {rerr}");
    assert_ne!(scode, 0, "the sender was not told: {serr}");
    assert_empty_dir(mnt.path());
    assert_for_people("the receiver", &rerr);
    assert_reasons_for_people(&lines);
}

#[test]
fn an_offer_larger_than_max_size_is_declined_with_the_reason() {
    let p = Prosody::start(&[ROMEO, JULIET]);
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("two-mib.bin");
    write_random(&f, 2 << 20, 7);
    let out = tempfile::tempdir().unwrap();
    let (recv, lines) = receiver(&p, out.path(), &["--max-size", "1M"]);
    let send = sender(&p, &f, &[]);
    let (scode, serr) = exit_of(send, Duration::from_secs(60));
    let (rcode, rerr) = exit_of(recv, Duration::from_secs(60));
    assert_eq!(scode, 5, "{serr}");
    assert_eq!(rcode, 7, "{rerr}");
    assert!(
        rerr.contains("two-mib.bin") && rerr.contains("--max-size"),
        "{rerr}"
    );
    let rejected = wait_line(&lines, "\"rejected\"", Duration::from_secs(5));
    assert!(rejected.contains("\"too large\""), "{rejected}");
    assert!(rejected.contains("romeo@localhost"), "{rejected}");
    assert_empty_dir(out.path());
    assert_for_people("the receiver", &rerr);
    assert_for_people("the sender", &serr);
}

#[test]
fn an_offer_larger_than_the_free_space_is_declined_with_the_reason() {
    let p = Prosody::start(&[ROMEO, JULIET]);
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("three-mib.bin");
    write_random(&f, 3 << 20, 8);
    let mnt = tempfile::tempdir().unwrap();
    let _disk = SmallDisk::mount(mnt.path(), "size=2m");
    let (recv, lines) = receiver(&p, mnt.path(), &[]);
    let send = sender(&p, &f, &[]);
    let (scode, serr) = exit_of(send, Duration::from_secs(60));
    let (rcode, rerr) = exit_of(recv, Duration::from_secs(60));
    // Declined before a byte moved: the sender hears a decline.
    assert_eq!(scode, 5, "{serr}");
    assert_eq!(rcode, 7, "{rerr}");
    assert!(
        rerr.contains("three-mib.bin") && rerr.contains("no space"),
        "{rerr}"
    );
    let rejected = wait_line(&lines, "\"rejected\"", Duration::from_secs(5));
    assert!(rejected.contains("\"no space\""), "{rejected}");
    assert_empty_dir(mnt.path());
}

#[test]
fn very_verbose_shows_stanzas_but_never_the_password() {
    let p = Prosody::start(&[ROMEO, JULIET]);
    let out = p
        .gshare(ROMEO.0, ROMEO.1)
        .args([
            "-vv",
            "send",
            "/etc/hostname",
            "juliet@localhost",
            "--wait",
            "1",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("SEND <presence"),
        "stanzas are not shown: {err}"
    );
    assert!(!err.contains(ROMEO.1), "the password leaked");
    // Nor its SASL encodings (PLAIN would carry it base64-encoded).
    let plain = base64_plain(ROMEO.0, ROMEO.1);
    assert!(!err.contains(&plain), "the SASL PLAIN payload leaked");
    assert!(!err.contains("<auth"), "the SASL exchange is shown");
}

fn base64_plain(user: &str, pw: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pw}"))
}

#[test]
fn auto_accept_without_from_warns_once() {
    let p = Prosody::start(&[ROMEO, JULIET]);
    let out = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("a.txt");
    std::fs::write(&f, b"hello").unwrap();
    let (recv, _lines) = receiver(&p, out.path(), &[]);
    let send = sender(&p, &f, &[]);
    let (scode, serr) = exit_of(send, Duration::from_secs(60));
    let (rcode, rerr) = exit_of(recv, Duration::from_secs(60));
    assert_eq!(scode, 0, "{serr}");
    assert_eq!(rcode, 0, "{rerr}");
    assert_eq!(
        rerr.matches("--auto-accept without --from").count(),
        1,
        "{rerr}"
    );
}
