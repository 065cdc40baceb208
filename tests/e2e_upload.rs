//! The upload method end to end with real processes: `gshare send` →
//! Prosody `mod_http_file_share` → `gshare receive` (0 bytes to 50 MiB,
//! compared byte for byte, several files and standard input), the automatic
//! fallback for an offline recipient whose link works later (for curl and for
//! `gshare receive`), go-sendxmpp → `gshare receive`, and a file over the
//! server's limit refused before any byte moves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/files.rs"]
mod files;
#[path = "support/prosody.rs"]
mod prosody;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use files::{sha256_file, write_random};
use prosody::{Options, Prosody, Upload};

const ROMEO: (&str, &str) = ("romeo", "r0meo-pw");
const JULIET: (&str, &str) = ("juliet", "jul1et-pw");
const MERCUTIO: (&str, &str) = ("mercutio", "m3rcutio-pw");
const MIB: u64 = 1 << 20;

fn server(size_limit: u64) -> Prosody {
    let options = Options {
        upload: Some(Upload {
            size_limit,
            ..Upload::default()
        }),
        offline: true,
        ..Options::default()
    };
    Prosody::start_with(&[ROMEO, JULIET, MERCUTIO], options)
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
        cmd.args(["receive", "--json", "--bind", "127.0.0.1", "-o"])
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
        r.wait_for("\"ready\"", 1, Duration::from_secs(20));
        r
    }

    /// Waits until `count` event lines contain `needle`.
    fn wait_for(&mut self, needle: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.seen.iter().filter(|l| l.contains(needle)).count() < count {
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
                        "receiver never printed {count} x {needle}; saw {:#?}\n{err}",
                        self.seen
                    )
                }
            }
        }
    }

    /// Stops a receiver that runs without --once.
    fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.seen
    }

    /// Waits for a `--once` receiver to exit.
    fn finish(mut self, timeout: Duration) -> (i32, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "receiver did not exit; events {:#?}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(l);
        }
        (status.code().unwrap_or(-1), self.seen)
    }
}

fn send(p: &Prosody, files: &[&Path], extra: &[&str]) -> Output {
    let mut cmd = p.gshare(ROMEO.0, ROMEO.1);
    cmd.args(["send", "--json", "--bind", "127.0.0.1"])
        .args(extra);
    for f in files {
        cmd.arg(f);
    }
    cmd.arg(Prosody::jid(JULIET.0)).stdin(Stdio::null());
    cmd.output().expect("run sender")
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

fn check_same(src: &Path, dst: &Path) {
    assert_eq!(
        sha256_file(src),
        sha256_file(dst),
        "{} differs",
        dst.display()
    );
}

#[test]
fn gshare_to_gshare_by_upload_0_bytes_to_50_mib_intact() {
    let p = server(64 * MIB);
    let src = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = Vec::new();
    for (name, len) in [
        ("empty.bin", 0u64),
        ("one.bin", 1),
        ("mebi plus.bin", MIB + 3),
        ("fifty.bin", 50 * MIB),
    ] {
        let f = src.path().join(name);
        write_random(&f, len, len + 11);
        files.push(f);
    }
    let out = tempfile::tempdir().unwrap();
    let mut recv = Receiver::start(
        &p,
        out.path(),
        &["--auto-accept", "--from", "romeo@localhost"],
    );
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let sent = send(&p, &refs, &["--method", "upload"]);
    let err = String::from_utf8_lossy(&sent.stderr).into_owned();
    assert_eq!(sent.status.code(), Some(0), "sender failed: {err}");
    let evs = events(&sent);
    let offer = event(&evs, "offer");
    assert_eq!(offer.len(), 1, "{evs:#?}");
    assert_eq!(offer[0]["method"], "upload");
    assert_eq!(offer[0]["total"], 51 * MIB + 4);
    // One upload and one message per file.
    assert_eq!(event(&evs, "item").len(), 4, "{evs:#?}");
    assert!(!event(&evs, "progress").is_empty(), "{evs:#?}");
    recv.wait_for("\"done\"", 4, Duration::from_secs(120));
    let seen = recv.stop();
    for f in &files {
        check_same(f, &out.path().join(f.file_name().unwrap()));
    }
    // The receiver's events say which method and carry its own SHA-256.
    let fifty = seen
        .iter()
        .find(|l| l.contains("\"item\"") && l.contains("fifty.bin"))
        .unwrap();
    assert!(fifty.contains(&sha256_file(&files[3])), "{fifty}");
    assert!(
        seen.iter()
            .any(|l| l.contains("\"offer\"") && l.contains("\"upload\"")),
        "{seen:#?}"
    );
    // Nothing but the four files (no .part leftovers).
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 4);
}

#[test]
fn standard_input_goes_by_upload_too() {
    let p = server(64 * MIB);
    let out = tempfile::tempdir().unwrap();
    let recv = Receiver::start(
        &p,
        out.path(),
        &["--auto-accept", "--from", "romeo@localhost", "--once"],
    );
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut child = p
        .gshare(ROMEO.0, ROMEO.1)
        .args(["send", "--method", "upload", "--name", "piped.bin", "-"])
        .arg(Prosody::jid(JULIET.0))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let sent = child.wait_with_output().unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let (code, seen) = recv.finish(Duration::from_secs(60));
    assert_eq!(code, 0, "{seen:#?}");
    assert!(std::fs::read(out.path().join("piped.bin")).unwrap() == data);
}

#[test]
fn an_offline_recipient_gets_a_link_that_works_later() {
    let p = server(64 * MIB);
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("report.pdf");
    write_random(&f, 3 * MIB + 1, 5);
    // Nobody is online as juliet: after --wait the upload takes over.
    let started = Instant::now();
    let sent = send(&p, &[&f], &["--wait", "2"]);
    let err = String::from_utf8_lossy(&sent.stderr).into_owned();
    assert_eq!(sent.status.code(), Some(0), "sender failed: {err}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    let evs = events(&sent);
    let offer = event(&evs, "offer");
    assert_eq!(offer.len(), 1, "{evs:#?}");
    assert_eq!(offer[0]["method"], "upload");
    let url = event(&evs, "item")[0]["url"].as_str().unwrap().to_string();

    // Fetched afterwards by URL, by an independent client...
    let fetched = src.path().join("fetched");
    let status = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--cacert"])
        .arg(p.cert())
        .arg("--output")
        .arg(&fetched)
        .arg(&url)
        .status()
        .expect("curl is not installed: run scripts/install-deps");
    assert!(status.success());
    check_same(&f, &fetched);

    // ... and by gshare receive when juliet comes online (offline storage).
    let out = tempfile::tempdir().unwrap();
    let recv = Receiver::start(
        &p,
        out.path(),
        &["--auto-accept", "--from", "romeo@localhost", "--once"],
    );
    let (code, seen) = recv.finish(Duration::from_secs(60));
    assert_eq!(code, 0, "{seen:#?}");
    check_same(&f, &out.path().join("report.pdf"));
}

#[test]
fn a_file_uploaded_by_go_sendxmpp_is_received_and_saved() {
    let p = server(64 * MIB);
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("from-go.bin");
    write_random(&f, 5 * MIB + 5, 9);
    let out = tempfile::tempdir().unwrap();
    // A file of that name is already there: it stays, the new one gets
    // another name (the same rule as for peer-to-peer offers).
    std::fs::write(out.path().join("from-go.bin"), b"keep me").unwrap();
    let recv = Receiver::start(
        &p,
        out.path(),
        &["--auto-accept", "--from", "mercutio@localhost", "--once"],
    );
    let status = std::process::Command::new("go-sendxmpp")
        .env("SSL_CERT_FILE", p.cert())
        .env("HOME", src.path())
        .args(["-u", "mercutio@localhost", "-p", MERCUTIO.1, "-j"])
        .arg(p.server())
        .arg("--http-upload")
        .arg(&f)
        .arg(Prosody::jid(JULIET.0))
        .status()
        .expect("go-sendxmpp is not installed: run scripts/install-deps");
    assert!(status.success());
    let (code, seen) = recv.finish(Duration::from_secs(60));
    assert_eq!(code, 0, "{seen:#?}");
    assert_eq!(
        std::fs::read(out.path().join("from-go.bin")).unwrap(),
        b"keep me"
    );
    check_same(&f, &out.path().join("from-go (1).bin"));
    let item = seen.iter().find(|l| l.contains("\"item\"")).unwrap();
    assert!(item.contains(&sha256_file(&f)), "{item}");
    assert!(
        seen.iter()
            .any(|l| l.contains("\"offer\"") && l.contains("\"method\":\"upload\"")),
        "{seen:#?}"
    );
}

#[test]
fn a_file_over_the_servers_limit_is_refused_before_any_byte_moves() {
    let p = server(MIB);
    let src = tempfile::tempdir().unwrap();
    let small = src.path().join("small.bin");
    write_random(&small, 1000, 1);
    let big = src.path().join("big.bin");
    write_random(&big, MIB + 1, 2);
    let sent = send(&p, &[&small, &big], &["--method", "upload"]);
    let err = String::from_utf8_lossy(&sent.stderr).into_owned();
    assert_eq!(sent.status.code(), Some(7), "{err}");
    assert!(
        err.contains(
            "big.bin is 1048577 bytes, but the upload service accepts at most 1048576 bytes"
        ),
        "{err}"
    );
    // Not even the small file went: no slot was issued at all.
    let log = std::fs::read_to_string(p.dir().join("prosody.log")).unwrap();
    assert!(!log.contains("Issuing upload slot"), "a slot was issued");
}

#[test]
fn links_that_are_not_https_or_point_into_the_receivers_network_are_refused() {
    let p = server(64 * MIB);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut recv = Receiver::start(
        &p,
        out.path(),
        &["--auto-accept", "--from", "mercutio@localhost", "--once"],
    );
    // mercutio's server is `localhost`; 127.0.0.1 and 10.0.0.1 are not it.
    for body in [
        "https://127.0.0.1:9/secret.txt",
        "https://10.0.0.1/intranet.txt",
        "https://localhost.:9/x y",
    ] {
        let mut child = std::process::Command::new("go-sendxmpp")
            .env("SSL_CERT_FILE", p.cert())
            .env("HOME", src.path())
            .args(["-u", "mercutio@localhost", "-p", MERCUTIO.1, "-j"])
            .arg(p.server())
            .arg(Prosody::jid(JULIET.0))
            .stdin(Stdio::piped())
            .spawn()
            .expect("go-sendxmpp is not installed: run scripts/install-deps");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
    recv.wait_for("\"rejected\"", 2, Duration::from_secs(30));
    let rejected: Vec<&String> = recv
        .seen
        .iter()
        .filter(|l| l.contains("\"rejected\""))
        .collect();
    assert!(rejected[0].contains("loopback"), "{rejected:#?}");
    assert!(rejected[1].contains("private"), "{rejected:#?}");
    // A body with a space is chat, not a link: nothing happened, and the
    // receiver still waits; a real file then ends the --once run.
    let f = src.path().join("after.bin");
    write_random(&f, 1234, 3);
    let status = std::process::Command::new("go-sendxmpp")
        .env("SSL_CERT_FILE", p.cert())
        .env("HOME", src.path())
        .args(["-u", "mercutio@localhost", "-p", MERCUTIO.1, "-j"])
        .arg(p.server())
        .arg("--http-upload")
        .arg(&f)
        .arg(Prosody::jid(JULIET.0))
        .status()
        .unwrap();
    assert!(status.success());
    let (code, seen) = recv.finish(Duration::from_secs(60));
    assert_eq!(code, 0, "{seen:#?}");
    assert_eq!(
        seen.iter().filter(|l| l.contains("\"rejected\"")).count(),
        2,
        "{seen:#?}"
    );
    check_same(&f, &out.path().join("after.bin"));
    // Only the real file is there.
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);
}

#[test]
fn without_an_upload_service_or_with_method_p2p_an_offline_recipient_is_unreachable() {
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("x.bin");
    write_random(&f, 100, 1);
    // A server without mod_http_file_share: nothing to fall back on.
    let plain = Prosody::start(&[ROMEO, JULIET]);
    let sent = send(&plain, &[&f], &["--wait", "1"]);
    let err = String::from_utf8_lossy(&sent.stderr).into_owned();
    assert_eq!(sent.status.code(), Some(4), "{err}");
    assert!(err.contains("juliet@localhost is offline"), "{err}");
    assert!(err.contains("offers no HTTP file upload"), "{err}");
    // With the service but --method p2p: no upload either.
    let p = server(64 * MIB);
    let sent = send(&p, &[&f], &["--wait", "1", "--method", "p2p"]);
    let err = String::from_utf8_lossy(&sent.stderr).into_owned();
    assert_eq!(sent.status.code(), Some(4), "{err}");
    assert!(!err.contains("upload"), "{err}");
    let log = std::fs::read_to_string(p.dir().join("prosody.log")).unwrap();
    assert!(!log.contains("Issuing upload slot"), "a slot was issued");
}

#[test]
fn folders_are_not_uploaded() {
    let p = server(64 * MIB);
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("photos");
    std::fs::create_dir(&dir).unwrap();
    write_random(&dir.join("a.jpg"), 100, 1);
    // Asked for: a usage error before logging in.
    let sent = send(&p, &[&dir], &["--method", "upload"]);
    let err = String::from_utf8_lossy(&sent.stderr).into_owned();
    assert_eq!(sent.status.code(), Some(2), "{err}");
    assert!(err.contains("\"photos\" is a folder"), "{err}");
    // As the fallback for an offline recipient: still unreachable, with both reasons.
    let sent = send(&p, &[&dir], &["--wait", "1"]);
    let err = String::from_utf8_lossy(&sent.stderr).into_owned();
    assert_eq!(sent.status.code(), Some(4), "{err}");
    assert!(
        err.contains("offline") && err.contains("is a folder"),
        "{err}"
    );
    let log = std::fs::read_to_string(p.dir().join("prosody.log")).unwrap();
    assert!(!log.contains("Issuing upload slot"), "a slot was issued");
}

/// A contact's announcement that lies about the size: refused while the
/// bytes arrive, exit 7, nothing under the final name and no `.part` left.
#[test]
fn an_announcement_that_lies_about_the_size_saves_nothing() {
    let p = server(64 * MIB);
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("real.bin");
    write_random(&f, 200_000, 4);
    // Romeo uploads the file (to mercutio, who is offline: only the URL matters).
    let mut cmd = p.gshare(ROMEO.0, ROMEO.1);
    cmd.args(["send", "--json", "--method", "upload"])
        .arg(&f)
        .arg(Prosody::jid(MERCUTIO.0))
        .stdin(Stdio::null());
    let sent = cmd.output().unwrap();
    assert!(sent.status.success());
    let evs = events(&sent);
    let url = event(&evs, "item")[0]["url"].as_str().unwrap().to_string();
    let out = tempfile::tempdir().unwrap();
    let recv = Receiver::start(
        &p,
        out.path(),
        &["--auto-accept", "--from", "mercutio@localhost", "--once"],
    );
    // Mercutio forwards the link, claiming 100 bytes more than it has.
    let raw = format!(
        "<message to='juliet@localhost' type='chat'><body>{url}</body>\
         <file-sharing xmlns='urn:xmpp:sfs:0'><file xmlns='urn:xmpp:file:metadata:0'>\
         <name>lie.bin</name><size>200100</size></file><sources>\
         <url-data xmlns='http://jabber.org/protocol/url-data' target='{url}'/>\
         </sources></file-sharing></message>"
    );
    let mut child = std::process::Command::new("go-sendxmpp")
        .env("SSL_CERT_FILE", p.cert())
        .env("HOME", src.path())
        .args(["-u", "mercutio@localhost", "-p", MERCUTIO.1, "-j"])
        .arg(p.server())
        .args(["--raw", "juliet@localhost"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("go-sendxmpp is not installed: run scripts/install-deps");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(raw.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let (code, seen) = recv.finish(Duration::from_secs(60));
    assert_eq!(code, 7, "{seen:#?}");
    let failed = seen.iter().find(|l| l.contains("\"failed\"")).unwrap();
    assert!(
        failed.contains("announced as 200100 bytes but the server serves 200000 bytes"),
        "{failed}"
    );
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "something was kept"
    );
}

/// The server dies during the PUT: exit 7, the byte count in the message,
/// and no announcement was sent.
#[test]
fn an_upload_broken_mid_way_exits_7() {
    let mut p = server(64 * MIB);
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("big.bin");
    write_random(&f, 48 * MIB, 6);
    let mut child = p
        .gshare(ROMEO.0, ROMEO.1)
        .args(["send", "--json", "--method", "upload"])
        .arg(&f)
        .arg(Prosody::jid(JULIET.0))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("\"progress\"") {
            break;
        }
    }
    assert!(seen.iter().any(|l| l.contains("\"progress\"")), "{seen:#?}");
    p.kill();
    seen.extend(lines.map_while(Result::ok));
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("the upload of big.bin failed after "), "{err}");
    assert!(!seen.iter().any(|l| l.contains("\"item\"")), "{seen:#?}");
}

#[test]
fn require_encryption_rules_the_upload_method_out_on_both_sides() {
    let p = server(64 * MIB);
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("secret.txt");
    write_random(&f, 4096, 8);
    // --method upload: refused before login, nothing stored.
    let sent = send(&p, &[&f], &["--method", "upload", "--require-encryption"]);
    let err = String::from_utf8_lossy(&sent.stderr).into_owned();
    assert_eq!(sent.status.code(), Some(8), "{err}");
    assert!(err.contains("encryption is required"), "{err}");
    assert!(event(&events(&sent), "offer").is_empty());
    // The automatic fallback for an offline recipient: exit 8, no upload.
    let sent = send(&p, &[&f], &["--wait", "1", "--require-encryption"]);
    let err = String::from_utf8_lossy(&sent.stderr).into_owned();
    assert_eq!(sent.status.code(), Some(8), "{err}");
    assert!(event(&events(&sent), "item").is_empty(), "{err}");
    // A receiver that requires encryption ignores an announced link (sent
    // here by an upload without the flag) and keeps nothing.
    let out = tempfile::tempdir().unwrap();
    let mut recv = Receiver::start(
        &p,
        out.path(),
        &[
            "--auto-accept",
            "--from",
            "romeo@localhost",
            "--require-encryption",
        ],
    );
    let sent = send(&p, &[&f], &["--method", "upload"]);
    assert_eq!(
        sent.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    recv.wait_for("\"rejected\"", 1, Duration::from_secs(30));
    let seen = recv.stop();
    let rejected = seen.iter().find(|l| l.contains("\"rejected\"")).unwrap();
    assert!(rejected.contains("not encrypted"), "{rejected}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}
