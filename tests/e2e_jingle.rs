//! Jingle file transfer end to end with real processes (issue 18):
//! `gshare send --method jingle` → `gshare receive` through the tests'
//! Prosody with `mod_proxy65` (0 bytes to a few MiB, compared by SHA-256,
//! events with `"method": "jingle"`; a folder as one tar, unpacked and its
//! tree compared), the `gshare` CLI against Libervia
//! (`li file receive` and `li file send`, 0 bytes and a few MiB, every file
//! compared; `li file send` to gshare's bare JID through Jingle Message
//! Initiation), and `--require-encryption` refusing Jingle on both sides.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/files.rs"]
mod files;
#[path = "support/libervia.rs"]
mod libervia;
#[path = "support/prosody.rs"]
mod prosody;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use files::{sha256_file, write_random};
use libervia::Libervia;
use prosody::{Options, Prosody};

const ROMEO: (&str, &str) = ("romeo", "r0meo-pw");
const JULIET: (&str, &str) = ("juliet", "jul1et-pw");
const MIB: u64 = 1 << 20;

fn server() -> Prosody {
    Prosody::start_with(
        &[ROMEO, JULIET],
        Options {
            proxy65: true,
            ..Options::default()
        },
    )
}

/// A running `gshare receive --json` (as juliet), with its event lines.
struct Receiver {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Receiver {
    fn start(p: &Prosody, out: &Path, extra: &[&str]) -> Receiver {
        let mut cmd = p.gshare(JULIET.0, JULIET.1);
        cmd.args(["receive", "--json", "-o"])
            .arg(out)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn receiver");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut r = Receiver {
            child,
            lines,
            seen: Vec::new(),
        };
        r.wait_for("\"ready\"", Duration::from_secs(30));
        r
    }

    fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.seen.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => {
                    let _ = self.child.kill();
                    let mut err = String::new();
                    if let Some(mut e) = self.child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!(
                        "receiver never printed {needle}; saw {:#?}\n{err}",
                        self.seen
                    )
                }
            }
        }
    }

    /// Waits for a `--once` receiver to exit.
    fn finish(mut self, timeout: Duration) -> (i32, Vec<serde_json::Value>, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("receiver did not exit; events {:#?}", self.seen);
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
        let evs = self
            .seen
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (status.code().unwrap_or(-1), evs, err)
    }
}

fn send(p: &Prosody, files: &[&Path], extra: &[&str]) -> Output {
    let mut cmd = p.gshare(ROMEO.0, ROMEO.1);
    cmd.args(["send", "--json"]).args(extra);
    for f in files {
        cmd.arg(f);
    }
    cmd.arg(Prosody::jid(JULIET.0)).stdin(Stdio::null());
    cmd.output().expect("run sender")
}

/// Waits for a child for at most `timeout` (killed then).
fn wait_child(mut c: Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn events(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn event<'a>(evs: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
    evs.iter().filter(|e| e["event"] == name).collect()
}

#[test]
fn gshare_to_gshare_by_jingle_0_bytes_to_mib_intact() {
    let p = server();
    let src = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = Vec::new();
    for (name, len) in [
        ("empty.bin", 0u64),
        ("one.bin", 1),
        ("three mebi.bin", 3 * MIB + 5),
    ] {
        let f = src.path().join(name);
        write_random(&f, len, len + 17);
        files.push(f);
    }
    let out = tempfile::tempdir().unwrap();
    let recv = Receiver::start(
        &p,
        out.path(),
        &["--auto-accept", "--from", "romeo@localhost", "--once"],
    );
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let sent = send(&p, &refs, &["--method", "jingle", "--wait", "20"]);
    let (code, revs, rerr) = recv.finish(Duration::from_secs(60));
    let sevs = events(&sent);
    assert!(
        sent.status.success(),
        "sender failed: {:?}\n{}\n{}\nreceiver: {revs:#?}\n{rerr}",
        sent.status,
        String::from_utf8_lossy(&sent.stdout),
        String::from_utf8_lossy(&sent.stderr)
    );
    assert_eq!(code, 0, "receiver: {revs:#?}\n{rerr}");
    let offer = event(&sevs, "offer");
    assert_eq!(offer.len(), 1, "{sevs:#?}");
    assert_eq!(offer[0]["method"], "jingle");
    let sitems = event(&sevs, "item");
    assert_eq!(sitems.len(), files.len(), "{sevs:#?}");
    // The empty file in-band from the offer, the others over direct SOCKS5.
    for i in &sitems {
        let want = if i["size"] == 0 { "ibb" } else { "socks5" };
        assert_eq!(i["transport"], want, "{sevs:#?}");
    }
    assert_eq!(event(&sevs, "done")[0]["method"], "jingle");
    let roffer = event(&revs, "offer");
    assert_eq!(roffer[0]["method"], "jingle", "{revs:#?}");
    assert_eq!(event(&revs, "accepted")[0]["encrypted"], false);
    let items = event(&revs, "item");
    assert_eq!(items.len(), files.len(), "{revs:#?}");
    assert!(items.iter().all(|i| i["verified"] == true), "{revs:#?}");
    assert_eq!(event(&revs, "done").len(), 1, "{revs:#?}");
    for f in &files {
        let got = out.path().join(f.file_name().unwrap());
        assert_eq!(
            sha256_file(f),
            sha256_file(&got),
            "{} differs",
            got.display()
        );
    }
    // Nothing else (no part files) in the output folder.
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), files.len());
    // Both said it is not encrypted.
    assert!(String::from_utf8_lossy(&sent.stderr).contains("not encrypt"));
    assert!(rerr.contains("not encrypt"), "{rerr}");
}

/// One file each way through a narrowed transport (hidden
/// `--jingle-transport` on both sides): `proxy` goes through Prosody's
/// `mod_proxy65` (the receiver activates its own proxy candidate, the
/// sender's choice), `ibb` has no SOCKS5 candidate, so both report
/// `candidate-error`, the sender replaces the transport with IBB.
fn narrowed(kind: &str, len: u64, transport: &str) {
    let p = server();
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join(format!("{kind}.bin"));
    write_random(&f, len, len + 1);
    let out = tempfile::tempdir().unwrap();
    let recv = Receiver::start(
        &p,
        out.path(),
        &["--auto-accept", "--once", "--jingle-transport", kind],
    );
    let sent = send(
        &p,
        &[&f],
        &["--method", "jingle", "--jingle-transport", kind],
    );
    let (code, revs, rerr) = recv.finish(Duration::from_secs(120));
    assert!(
        sent.status.success(),
        "{kind}: {:?}\n{}\n{}\nreceiver: {revs:#?}\n{rerr}",
        sent.status,
        String::from_utf8_lossy(&sent.stdout),
        String::from_utf8_lossy(&sent.stderr)
    );
    assert_eq!(code, 0, "{revs:#?}\n{rerr}");
    let sevs = events(&sent);
    assert_eq!(event(&sevs, "item")[0]["transport"], transport, "{sevs:#?}");
    let items = event(&revs, "item");
    assert_eq!(items.len(), 1, "{revs:#?}");
    assert_eq!(items[0]["verified"], true);
    let got = out.path().join(f.file_name().unwrap());
    assert_eq!(sha256_file(&f), sha256_file(&got), "{kind} differs");
}

#[test]
fn jingle_through_the_servers_socks5_proxy() {
    narrowed("proxy", 2 * MIB + 3, "socks5-proxy");
}

#[test]
fn jingle_falls_back_to_ibb_when_no_socks5_candidate_works() {
    narrowed("ibb", 300 * 1024 + 1, "ibb");
}

#[test]
fn require_encryption_refuses_jingle_on_both_sides() {
    let p = server();
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("secret.bin");
    write_random(&f, 1000, 3);
    // The sender: exit 8 before anything is offered.
    let sent = send(
        &p,
        &[&f],
        &["--method", "jingle", "--require-encryption", "--wait", "5"],
    );
    assert_eq!(
        sent.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    // A folder is no longer refused as such (it goes as one tar): with
    // --require-encryption it is refused like a file (8), before login.
    let dir = src.path().join("folder");
    std::fs::create_dir(&dir).unwrap();
    let sent = send(
        &p,
        &[&dir],
        &["--method", "jingle", "--require-encryption", "--wait", "5"],
    );
    assert_eq!(
        sent.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(!String::from_utf8_lossy(&sent.stderr).contains("tar it"));
    // The receiver declines a Jingle offer: the sender is declined (5).
    let out = tempfile::tempdir().unwrap();
    let recv = Receiver::start(
        &p,
        out.path(),
        &["--auto-accept", "--require-encryption", "--once"],
    );
    let sent = send(&p, &[&f], &["--method", "jingle", "--wait", "20"]);
    assert_eq!(
        sent.status.code(),
        Some(5),
        "{}\n{}",
        String::from_utf8_lossy(&sent.stdout),
        String::from_utf8_lossy(&sent.stderr)
    );
    let mut recv = recv;
    recv.wait_for("\"rejected\"", Duration::from_secs(10));
    let rejected: Vec<serde_json::Value> = recv
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["event"] == "rejected")
        .collect();
    assert_eq!(rejected[0]["reason"], "not encrypted", "{rejected:#?}");
    assert_eq!(rejected[0]["method"], "jingle");
    // With --once the declined offer ends the run, with exit 8 as for a
    // classic Google offer.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = recv.child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = recv.child.kill();
            panic!("the --once receiver did not end after declining");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(8));
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

/// Every entry under `root`, sorted: its path relative to `root` and, for a
/// file, its SHA-256 (`"dir"` for a folder).
fn tree(root: &Path) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                out.push((rel, "dir".into()));
                walk(root, &path, out);
            } else {
                assert!(ft.is_file(), "{} is not a file", path.display());
                out.push((rel, sha256_file(&path)));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// A folder (nested subfolders, an empty file, an empty subfolder, KiB to
/// MiB files) sent with `--method jingle` to `gshare receive
/// --auto-accept` goes as one `tree.tar` content with gshare's folder
/// marker and is unpacked as `tree`: same names, same bytes, same empty
/// folder; `item` says `kind: "folder"` on both sides; the sender's spool
/// (in its TMPDIR) is gone afterwards; nothing else in the output folder.
#[test]
fn a_folder_round_trips_gshare_to_gshare_over_jingle() {
    let p = server();
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("tree");
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::fs::create_dir_all(root.join("with space/é")).unwrap();
    write_random(&root.join("top.bin"), 70_000, 1);
    write_random(&root.join("a/kib.bin"), 4096, 2);
    write_random(&root.join("a/b/c/deep.bin"), 2 * MIB + 3, 3);
    write_random(&root.join("with space/é/odd name.txt"), 513, 4);
    std::fs::write(root.join("a/empty.txt"), b"").unwrap();
    let spool_dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let recv = Receiver::start(
        &p,
        out.path(),
        &["--auto-accept", "--from", "romeo@localhost", "--once"],
    );
    let mut cmd = p.gshare(ROMEO.0, ROMEO.1);
    cmd.args(["send", "--json", "--method", "jingle", "--wait", "20"])
        .arg(&root)
        .arg(Prosody::jid(JULIET.0))
        .env("TMPDIR", spool_dir.path())
        .stdin(Stdio::null());
    let sent = cmd.output().expect("run sender");
    let (code, revs, rerr) = recv.finish(Duration::from_secs(60));
    let sevs = events(&sent);
    assert!(
        sent.status.success(),
        "sender failed: {:?}\n{}\n{}\nreceiver: {revs:#?}\n{rerr}",
        sent.status,
        String::from_utf8_lossy(&sent.stdout),
        String::from_utf8_lossy(&sent.stderr)
    );
    assert_eq!(code, 0, "receiver: {revs:#?}\n{rerr}");
    let offer = event(&sevs, "offer");
    assert_eq!(offer[0]["items"][0]["name"], "tree.tar", "{sevs:#?}");
    assert_eq!(offer[0]["items"][0]["kind"], "folder", "{sevs:#?}");
    let sitems = event(&sevs, "item");
    assert_eq!(sitems.len(), 1, "{sevs:#?}");
    assert_eq!(sitems[0]["kind"], "folder", "{sevs:#?}");
    let ritems = event(&revs, "item");
    assert_eq!(ritems.len(), 1, "{revs:#?}");
    assert_eq!(ritems[0]["kind"], "folder", "{revs:#?}");
    assert_eq!(ritems[0]["name"], "tree", "{revs:#?}");
    assert_eq!(ritems[0]["verified"], true, "{revs:#?}");
    // The receiver checked the sender's digest of the tar stream.
    assert_eq!(ritems[0]["sha256"], sitems[0]["sha256"], "{revs:#?}");
    assert_eq!(event(&revs, "offer")[0]["items"][0]["kind"], "folder");
    let got = out.path().join("tree");
    assert_eq!(tree(&root), tree(&got));
    assert!(got.join("empty-dir").is_dir());
    assert_eq!(std::fs::metadata(got.join("a/empty.txt")).unwrap().len(), 0);
    // Only the folder in the output, and the sender's spool is gone.
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);
    assert_eq!(
        std::fs::read_dir(spool_dir.path()).unwrap().count(),
        0,
        "the sender left its spool behind"
    );
}

/// The sizes exchanged with Libervia.
const LIBERVIA_SIZES: [(&str, u64); 3] = [
    ("empty.bin", 0),
    ("mebi-plus.bin", 3 * MIB + 7),
    ("fifty.bin", 50 * MIB),
];

/// `gshare send --method jingle` (the CLI, as romeo) to Libervia's
/// `li file receive` (as juliet), one file per session as `file receive`
/// takes one; Libervia saves each, and its copy is compared.
#[test]
fn gshare_cli_sends_to_libervia_file_receive() {
    let p = server();
    let lib = Libervia::start(&p.cert());
    let peer = lib.login(JULIET.0, JULIET.1, p.port);
    assert!(peer.starts_with("juliet@localhost/"), "{peer}");
    let src = tempfile::tempdir().unwrap();
    let recv_dir = lib.dir.path().join("recv");
    std::fs::create_dir_all(&recv_dir).unwrap();
    for (name, len) in LIBERVIA_SIZES {
        let f = src.path().join(name);
        write_random(&f, len, len + 5);
        let receiver = lib
            .cmd("/usr/bin/libervia-cli")
            .args([
                "file",
                "receive",
                "-p",
                JULIET.0,
                "--path",
                recv_dir.to_str().unwrap(),
                "romeo@localhost",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let the CLI register for the backend's actions.
        std::thread::sleep(Duration::from_secs(3));
        // The first by --method jingle, the others by the default (auto):
        // Libervia's disco#info lists Jingle file transfer, not the share.
        let method = if len == 0 { "jingle" } else { "auto" };
        let mut cmd = p.gshare(ROMEO.0, ROMEO.1);
        cmd.args(["send", "--json", "--method", method, "--wait", "20"])
            .arg(&f)
            .arg(&peer)
            .stdin(Stdio::null());
        let sent = cmd.output().unwrap();
        assert!(
            sent.status.success(),
            "{name}: {:?}\n{}\n{}\n{}",
            sent.status,
            String::from_utf8_lossy(&sent.stdout),
            String::from_utf8_lossy(&sent.stderr),
            lib.backend_log()
        );
        let sevs = events(&sent);
        assert_eq!(event(&sevs, "offer")[0]["method"], "jingle");
        let status = wait_child(receiver, Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "li file receive did not finish well for {name}: {status:?}\n{}",
            lib.backend_log()
        );
        let got = recv_dir.join(name);
        assert_eq!(sha256_file(&f), sha256_file(&got), "{name} differs");
    }
}

/// Libervia's `li file send` (as romeo) to `gshare receive` (the CLI, as
/// juliet, by its full JID, so without Jingle Message Initiation: see
/// the next test for the bare JID); every file saved, verified and compared.
#[test]
fn libervia_file_send_to_gshare_receive_cli() {
    let p = server();
    let lib = Libervia::start(&p.cert());
    lib.login(ROMEO.0, ROMEO.1, p.port);
    let out = tempfile::tempdir().unwrap();
    let mut recv = Receiver::start(
        &p,
        out.path(),
        &["--auto-accept", "--from", "romeo@localhost"],
    );
    let ready: serde_json::Value = recv
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "ready")
        .unwrap();
    let gjid = ready["jid"].as_str().unwrap().to_owned();
    let src = tempfile::tempdir().unwrap();
    for (n, (name, len)) in LIBERVIA_SIZES.into_iter().enumerate() {
        let f = src.path().join(name);
        write_random(&f, len, len + 9);
        let sender = lib
            .cmd("/usr/bin/libervia-cli")
            .args(["file", "send", "-p", ROMEO.0, f.to_str().unwrap(), &gjid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let status = wait_child(sender, Duration::from_secs(60));
        assert!(
            status.is_some_and(|s| s.success()),
            "li file send {name} did not finish well: {status:?}; gshare saw {:#?}\n{}",
            recv.seen,
            lib.backend_log()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while recv.seen.iter().filter(|l| l.contains("\"done\"")).count() < n + 1 {
            assert!(
                Instant::now() < deadline,
                "no done for {name}: {:#?}",
                recv.seen
            );
            if let Ok(l) = recv.lines.recv_timeout(Duration::from_millis(200)) {
                recv.seen.push(l);
            }
        }
        let got = out.path().join(name);
        assert_eq!(sha256_file(&f), sha256_file(&got), "{name} differs");
    }
    let evs: Vec<serde_json::Value> = recv
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let offers = event(&evs, "offer");
    assert!(offers.iter().all(|o| o["method"] == "jingle"), "{evs:#?}");
    let items = event(&evs, "item");
    assert_eq!(items.len(), LIBERVIA_SIZES.len(), "{evs:#?}");
    // Libervia's checksum (base64 of the hex digest) was checked.
    assert!(items.iter().all(|i| i["verified"] == true), "{evs:#?}");
    let _ = recv.child.kill();
    let _ = recv.child.wait();
}

/// Libervia's `li file send` (as romeo) to gshare's BARE JID: Libervia
/// proposes the session with Jingle Message Initiation (XEP-0353), `gshare
/// receive` answers `<proceed/>` from its full JID, and the Jingle offer
/// that follows is auto-accepted like any other; the file is saved intact.
#[test]
fn libervia_file_send_to_gshare_bare_jid_by_jmi() {
    let p = server();
    let lib = Libervia::start(&p.cert());
    lib.login(ROMEO.0, ROMEO.1, p.port);
    let out = tempfile::tempdir().unwrap();
    let mut recv = Receiver::start(
        &p,
        out.path(),
        &["--auto-accept", "--from", "romeo@localhost"],
    );
    let src = tempfile::tempdir().unwrap();
    let name = "proposed.bin";
    let f = src.path().join(name);
    write_random(&f, 2 * MIB + 3, 353);
    let bare = Prosody::jid(JULIET.0);
    let sender = lib
        .cmd("/usr/bin/libervia-cli")
        .args(["file", "send", "-p", ROMEO.0, f.to_str().unwrap(), &bare])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_child(sender, Duration::from_secs(90));
    assert!(
        status.is_some_and(|s| s.success()),
        "li file send to {bare} did not finish well: {status:?}; gshare saw {:#?}\n{}",
        recv.seen,
        lib.backend_log()
    );
    recv.wait_for("\"done\"", Duration::from_secs(30));
    let got = out.path().join(name);
    assert_eq!(sha256_file(&f), sha256_file(&got), "{name} differs");
    let evs: Vec<serde_json::Value> = recv
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let offers = event(&evs, "offer");
    assert_eq!(offers.len(), 1, "{evs:#?}");
    assert_eq!(offers[0]["method"], "jingle", "{evs:#?}");
    let _ = recv.child.kill();
    let _ = recv.child.wait();
}

/// A Jingle sender (the library, by hand, as romeo) whose offer carries a
/// wrong SHA-256: `gshare receive --once` takes every byte over IBB, then
/// refuses the file (exit 7, a `failed` event) and leaves nothing in the
/// output folder, not even a part file; the sender is told `media-error`.
#[tokio::test]
async fn a_jingle_file_whose_hash_differs_is_not_saved() {
    tampered(false).await;
}

/// The same for a folder (a valid tar stream with gshare's folder marker):
/// every entry is unpacked into the hidden temporary folder, then the
/// SHA-256 differs: exit 7 and nothing under `tampered` (nor the hidden
/// folder) in the output.
#[tokio::test]
async fn a_jingle_folder_whose_hash_differs_is_not_saved() {
    tampered(true).await;
}

async fn tampered(folder: bool) {
    use gshare::bytestreams::ibb::{IbbSender, NS_IBB};
    use gshare::bytestreams::ibb_stream::ibb_writer;
    use gshare::jingle::codec::NS_JINGLE;
    use gshare::jingle::{
        Config, FileDesc, Hash, IbbStanza, IbbTransport, JingleEvent, JingleSession, ReasonKind,
        Transport, file_offer,
    };
    use gshare::session::envelope::{IqIn, IqOut};
    use gshare::xmpp::{Account, ConnectOptions, Incoming, Xmpp};
    use tokio::io::AsyncWriteExt;
    use xmpp_parsers::iq::Iq;

    let p = server();
    let out = tempfile::tempdir().unwrap();
    let recv = Receiver::start(&p, out.path(), &["--auto-accept", "--once"]);
    let ready: serde_json::Value = recv
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "ready")
        .unwrap();
    let peer: jid::FullJid = ready["jid"].as_str().unwrap().parse().unwrap();
    let account = Account {
        jid: "romeo@localhost".parse().unwrap(),
        password: ROMEO.1.into(),
        resource: None,
        server: Some(p.server()),
        ca_file: Some(p.cert()),
    };
    let opts = ConnectOptions {
        forward_namespaces: vec![NS_JINGLE, NS_IBB],
        ..ConnectOptions::default()
    };
    let (xmpp, mut rx) = Xmpp::connect(&account, opts).await.expect("login");
    let me = xmpp.jid().clone();
    let mut payload: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
    if folder {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, "tampered/", std::io::empty())
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(payload.len() as u64);
        b.append_data(&mut h, "tampered/x.bin", payload.as_slice())
            .unwrap();
        payload = b.into_inner().unwrap();
    }
    let file = FileDesc {
        name: Some(
            if folder {
                "tampered.tar"
            } else {
                "tampered.bin"
            }
            .into(),
        ),
        folder,
        size: Some(payload.len() as u64),
        hashes: vec![Hash {
            algo: "sha-256".into(),
            digest: vec![7u8; 32],
        }],
        ..FileDesc::default()
    };
    let ibb = IbbTransport {
        sid: "ibb-t1".into(),
        block_size: 4096,
        stanza: IbbStanza::Iq,
    };
    let mut s = JingleSession::initiate(
        Instant::now(),
        Config::default(),
        me.clone(),
        peer.clone(),
        "s-tampered".into(),
        vec![file_offer("f0", file, Transport::Ibb(ibb))],
    );
    let (ibb_in_tx, ibb_in) = tokio::sync::mpsc::channel::<IqIn>(64);
    let mut ibb_in = Some(ibb_in);
    let (ibb_out, mut ibb_out_rx) = tokio::sync::mpsc::channel::<IqOut>(64);
    {
        let xmpp = xmpp.clone();
        tokio::spawn(async move {
            while let Some(o) = ibb_out_rx.recv().await {
                let _ = xmpp.send(Iq::try_from(o.to_element(None)).unwrap()).await;
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ended = None;
    while ended.is_none() {
        while let Some(o) = s.poll_transmit() {
            xmpp.send(Iq::try_from(o.to_element(None)).unwrap())
                .await
                .unwrap();
        }
        while let Some(ev) = s.poll_event() {
            match ev {
                JingleEvent::Accepted { contents } => {
                    let Some(Transport::Ibb(t)) = &contents[0].transport else {
                        panic!("{contents:?}")
                    };
                    let tx = IbbSender::open(
                        Instant::now(),
                        jid::Jid::from(peer.clone()),
                        t.sid.clone(),
                        t.block_size,
                        4,
                    );
                    let (mut w, task) = ibb_writer(tx, ibb_in.take().unwrap(), ibb_out.clone());
                    let data = payload.clone();
                    tokio::spawn(async move {
                        w.write_all(&data).await.unwrap();
                        w.shutdown().await.unwrap();
                        let _ = task.await;
                    });
                }
                JingleEvent::Terminated { reason, by_peer } => ended = Some((reason, by_peer)),
                _ => {}
            }
        }
        assert!(Instant::now() < deadline, "no end in time");
        let item = match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            Ok(Some(i)) => i,
            Ok(None) => panic!("xmpp closed"),
            Err(_) => continue,
        };
        let Incoming::Iq(iq) = item else { continue };
        let Some(iq) = IqIn::from_element(&minidom::Element::from(*iq)) else {
            continue;
        };
        if !s.handle_iq(Instant::now(), iq.clone()) {
            let _ = ibb_in_tx.try_send(iq);
        }
    }
    let (reason, by_peer) = ended.unwrap();
    assert!(by_peer);
    assert_eq!(reason.kind, ReasonKind::MediaError);
    xmpp.close().await;
    let (code, evs, err) = recv.finish(Duration::from_secs(30));
    assert_eq!(code, 7, "{evs:#?}\n{err}");
    let failed = event(&evs, "failed");
    assert_eq!(failed.len(), 1, "{evs:#?}");
    assert!(
        failed[0]["reason"].as_str().unwrap().contains("SHA-256"),
        "{failed:#?}"
    );
    assert!(event(&evs, "item").is_empty(), "{evs:#?}");
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "something was left in the output folder"
    );
}
