//! gshare → gshare through a real Prosody: the whole stack (XMPP, session,
//! Google ICE, PseudoTCP, HTTP) with real processes, real sockets and real
//! files. SHA-256 compared on both sides.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/files.rs"]
mod files;
#[path = "support/prosody.rs"]
mod prosody;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Output, Stdio};
use std::time::{Duration, Instant};

use files::{sha256_file, sparse, write_random};
use prosody::Prosody;
use sha2::{Digest, Sha256};

const ROMEO: (&str, &str) = ("romeo", "r0meo-pw");
const JULIET: (&str, &str) = ("juliet", "jul1et-pw");
const MERCUTIO: (&str, &str) = ("mercutio", "m3rcutio-pw");

fn server() -> Prosody {
    Prosody::start(&[ROMEO, JULIET])
}

/// A running `gshare receive --json`, with its event lines.
struct Receiver {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Receiver {
    fn start(p: &Prosody, out: &Path, extra: &[&str]) -> Receiver {
        Receiver::start_with(p, out, &["--once"], extra)
    }

    /// Without `--once`: the receiver keeps taking offers.
    fn start_many(p: &Prosody, out: &Path, extra: &[&str]) -> Receiver {
        Receiver::start_with(p, out, &[], extra)
    }

    fn start_with(p: &Prosody, out: &Path, mode: &[&str], extra: &[&str]) -> Receiver {
        let mut cmd = p.gshare(JULIET.0, JULIET.1);
        cmd.args(["receive", "--json"])
            .args(mode)
            .args(["--bind", "127.0.0.1", "-o"])
            .arg(out)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn receiver");
        let stdout: ChildStdout = child.stdout.take().unwrap();
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
        r.wait_for("\"ready\"", Duration::from_secs(20));
        r
    }

    /// Waits for an event line containing `needle`.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("receiver never printed {needle}; saw {:#?}", self.seen),
            }
        }
    }

    fn finish(mut self, timeout: Duration) -> (i32, String, Vec<String>) {
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
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(l);
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status.code().unwrap_or(-1), err, self.seen)
    }
}

fn send(p: &Prosody, args: &[&Path], extra: &[&str]) -> Output {
    let mut cmd = p.gshare(ROMEO.0, ROMEO.1);
    cmd.args(["send", "--bind", "127.0.0.1"]).args(extra);
    for a in args {
        cmd.arg(a);
    }
    cmd.arg(Prosody::jid(JULIET.0)).stdin(Stdio::null());
    cmd.output().expect("run sender")
}

fn transfer_ok(files: &[PathBuf]) -> (tempfile::TempDir, Vec<String>) {
    let p = server();
    let out = tempfile::tempdir().unwrap();
    let recv = Receiver::start(
        &p,
        out.path(),
        &["--auto-accept", "--from", "romeo@localhost"],
    );
    let refs: Vec<&Path> = files.iter().map(|f| f.as_path()).collect();
    let sent = send(&p, &refs, &[]);
    let sender_err = String::from_utf8_lossy(&sent.stderr).into_owned();
    let (code, recv_err, events) = recv.finish(Duration::from_secs(120));
    assert_eq!(
        sent.status.code(),
        Some(0),
        "sender failed: {sender_err}\nreceiver: {recv_err}"
    );
    assert_eq!(
        code, 0,
        "receiver failed: {recv_err}\nsender: {sender_err}\nevents {events:#?}"
    );
    (out, events)
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
fn sizes_0_1_1mib_each_arrive_intact() {
    let src = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, len) in [("empty.bin", 0u64), ("one.bin", 1), ("mebi.bin", 1 << 20)] {
        let f = src.path().join(name);
        write_random(&f, len, len + 7);
        files.push(f);
    }
    // Three files in one offer, too.
    let (out, events) = transfer_ok(&files);
    for f in &files {
        check_same(f, &out.path().join(f.file_name().unwrap()));
    }
    let items = events.iter().filter(|e| e.contains("\"item\"")).count();
    assert_eq!(items, 3, "{events:#?}");
    // The item events carry the SHA-256 the receiver computed while writing.
    let one = events
        .iter()
        .find(|e| e.contains("one.bin") && e.contains("sha256"))
        .unwrap();
    assert!(one.contains(&sha256_file(&files[1])), "{one}");
}

#[test]
fn a_200_mib_file_arrives_intact() {
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("big.bin");
    write_random(&f, 200 << 20, 42);
    let (out, _) = transfer_ok(std::slice::from_ref(&f));
    check_same(&f, &out.path().join("big.bin"));
}

#[test]
fn awkward_names_arrive_under_their_names() {
    let src = tempfile::tempdir().unwrap();
    let names = [
        "with space.txt",
        "café ünïcödé.txt",
        "100% sure.txt",
        "a+b=c.txt",
    ];
    let files: Vec<PathBuf> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let f = src.path().join(n);
            write_random(&f, 1000 + i as u64, i as u64);
            f
        })
        .collect();
    let (out, _) = transfer_ok(&files);
    for f in &files {
        check_same(f, &out.path().join(f.file_name().unwrap()));
    }
}

#[test]
fn a_folder_with_nested_folders_and_empty_files() {
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("tree");
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    write_random(&root.join("top.bin"), 70_000, 1);
    write_random(&root.join("a/b/c/deep.bin"), 300_000, 2);
    std::fs::write(root.join("a/empty.txt"), b"").unwrap();
    let (out, _) = transfer_ok(std::slice::from_ref(&root));
    let got = out.path().join("tree");
    check_same(&root.join("top.bin"), &got.join("top.bin"));
    check_same(&root.join("a/b/c/deep.bin"), &got.join("a/b/c/deep.bin"));
    assert_eq!(std::fs::metadata(got.join("a/empty.txt")).unwrap().len(), 0);
    assert!(got.join("empty-dir").is_dir());
}

#[test]
fn existing_files_are_not_overwritten() {
    let p = server();
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("report.txt");
    write_random(&f, 5000, 3);
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("report.txt"), b"keep me").unwrap();
    let recv = Receiver::start(&p, out.path(), &["--auto-accept"]);
    let sent = send(&p, &[&f], &[]);
    let (code, err, _) = recv.finish(Duration::from_secs(60));
    assert_eq!(
        sent.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(out.path().join("report.txt")).unwrap(),
        b"keep me"
    );
    check_same(&f, &out.path().join("report (1).txt"));
}

#[test]
fn stdin_is_offered_under_its_name_and_stdout_receives_it() {
    let p = server();
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("data.bin");
    write_random(&f, 300_000, 9);
    // Receiver writes to stdout: no --json (stdout is data).
    let recv = p
        .gshare(JULIET.0, JULIET.1)
        .args([
            "receive",
            "--once",
            "--auto-accept",
            "--bind",
            "127.0.0.1",
            "-o",
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sender = p
        .gshare(ROMEO.0, ROMEO.1)
        .args([
            "send",
            "--bind",
            "127.0.0.1",
            "--name",
            "piped.bin",
            "-",
            "juliet@localhost",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain the receiver's stdout while the transfer runs (a pipe holds
    // only 64 KiB).
    let recv = std::thread::spawn(move || recv.wait_with_output().unwrap());
    let data = std::fs::read(&f).unwrap();
    {
        let mut stdin = sender.stdin.take().unwrap();
        stdin.write_all(&data).unwrap();
    }
    let s = sender.wait_with_output().unwrap();
    let r = recv.join().unwrap();
    assert_eq!(
        s.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&s.stderr)
    );
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(
        hex::encode(Sha256::digest(&r.stdout)),
        hex::encode(Sha256::digest(&data))
    );
}

#[test]
fn an_offer_from_outside_the_allow_list_is_rejected_and_the_sender_exits_5() {
    let p = server();
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("x.bin");
    write_random(&f, 100, 1);
    let out = tempfile::tempdir().unwrap();
    let recv = Receiver::start(
        &p,
        out.path(),
        &["--auto-accept", "--from", "nurse@localhost"],
    );
    let sent = send(&p, &[&f], &["--wait", "5"]);
    let stderr = String::from_utf8_lossy(&sent.stderr);
    // The receiver does not even answer presence from romeo, so romeo cannot
    // find a share resource: unreachable (4). Either way nothing is written.
    assert!(matches!(sent.status.code(), Some(4) | Some(5)), "{stderr}");
    drop(recv);
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

#[test]
fn declined_without_a_terminal_exits_5() {
    let p = server();
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("x.bin");
    write_random(&f, 100, 1);
    let out = tempfile::tempdir().unwrap();
    // No --auto-accept and no terminal: the receiver declines.
    let recv = Receiver::start(&p, out.path(), &[]);
    let sent = send(&p, &[&f], &[]);
    let stderr = String::from_utf8_lossy(&sent.stderr);
    assert_eq!(sent.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("juliet@localhost"), "{stderr}");
    let (code, _, _) = recv.finish(Duration::from_secs(30));
    assert_ne!(code, 0);
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

fn interrupt(child: &Child) {
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
}

fn no_final_file(dir: &Path, name: &str) {
    assert!(
        !dir.join(name).exists(),
        "{name} exists under its final name"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

/// A 1 GiB transfer that is flowing (the receiver reported progress):
/// (server, source dir, output dir, receiver, sender).
fn big_transfer_under_way() -> (
    Prosody,
    tempfile::TempDir,
    tempfile::TempDir,
    Receiver,
    Child,
) {
    let p = server();
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("huge.bin");
    sparse(&f, 1 << 30);
    let out = tempfile::tempdir().unwrap();
    let mut recv = Receiver::start(&p, out.path(), &["--auto-accept"]);
    let sender = p
        .gshare(ROMEO.0, ROMEO.1)
        .args(["send", "--bind", "127.0.0.1"])
        .arg(&f)
        .arg("juliet@localhost")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    recv.wait_for("\"progress\"", Duration::from_secs(60));
    (p, src, out, recv, sender)
}

#[test]
fn receiver_cancels_mid_transfer_sender_exits_nonzero_and_nothing_is_kept() {
    let (_p, _src, out, recv, sender) = big_transfer_under_way();
    interrupt(&recv.child);
    let (code, _, _) = recv.finish(Duration::from_secs(30));
    assert_eq!(code, 6);
    let s = sender.wait_with_output().unwrap();
    assert_ne!(
        s.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&s.stderr)
    );
    no_final_file(out.path(), "huge.bin");
}

#[test]
fn sender_cancels_mid_transfer_receiver_exits_7_and_nothing_is_kept() {
    let (_p, _src, out, recv, sender) = big_transfer_under_way();
    interrupt(&sender);
    let s = sender.wait_with_output().unwrap();
    assert_eq!(
        s.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&s.stderr)
    );
    let (code, err, _) = recv.finish(Duration::from_secs(30));
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("romeo@localhost"), "{err}");
    no_final_file(out.path(), "huge.bin");
}

#[test]
fn unwritable_output_is_a_clear_error_and_the_sender_is_told() {
    let p = server();
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("x.bin");
    write_random(&f, 10_000, 1);
    let out = tempfile::tempdir().unwrap();
    let ro = out.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    // Root ignores permission bits, so make the directory unusable another
    // way for everyone: replace it by a directory on which writes fail.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
    let writable_anyway = std::fs::File::create(ro.join(".probe")).is_ok();
    let target = if writable_anyway {
        // Running as root: use a read-only bind of /proc instead — any path
        // where creating a file fails.
        let _ = std::fs::remove_file(ro.join(".probe"));
        PathBuf::from("/proc/self")
    } else {
        ro.clone()
    };
    let recv = Receiver::start(&p, &target, &["--auto-accept"]);
    let sent = send(&p, &[&f], &[]);
    let (code, err, _) = recv.finish(Duration::from_secs(60));
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("x.bin"), "{err}");
    assert_ne!(
        sent.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
}

/// A recipient that is online with the share caps but never answers the
/// offer (its IQs are swallowed, or acknowledged and never accepted).
async fn silent_juliet(p: &Prosody, ack: bool) -> tokio::task::JoinHandle<()> {
    use gshare::xmpp::{Account, ConnectOptions, Incoming, Xmpp};
    let account = Account {
        jid: Prosody::jid(JULIET.0).parse().unwrap(),
        password: JULIET.1.into(),
        resource: Some("silent".into()),
        server: Some(p.server()),
        ca_file: Some(p.cert()),
    };
    let options = ConnectOptions {
        forward_namespaces: vec!["http://www.google.com/session"],
        ..ConnectOptions::default()
    };
    let (xmpp, mut incoming) = Xmpp::connect(&account, options).await.unwrap();
    tokio::spawn(async move {
        while let Some(item) = incoming.recv().await {
            if let Incoming::Iq(iq) = item
                && ack
                && let tokio_xmpp::parsers::iq::Iq::Set {
                    from: Some(from),
                    id,
                    ..
                } = *iq
            {
                let _ = xmpp
                    .send(tokio_xmpp::parsers::iq::Iq::empty_result(from, id))
                    .await;
            }
        }
    })
}

async fn send_to_silent_peer(ack: bool) {
    let p = server();
    let _juliet = silent_juliet(&p, ack).await;
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("x.bin");
    write_random(&f, 100, 1);
    let started = Instant::now();
    let out = tokio::process::Command::from(p.gshare(ROMEO.0, ROMEO.1))
        .args(["send", "--wait", "2", "--timeout", "3"])
        .arg(&f)
        .arg("juliet@localhost")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("juliet@localhost/silent"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_peer_that_never_acknowledges_the_offer_exits_4() {
    send_to_silent_peer(false).await;
}

#[tokio::test]
async fn a_peer_that_never_accepts_the_offer_exits_4() {
    send_to_silent_peer(true).await;
}

/// `gshare send` of one big sparse file from romeo to juliet, running.
fn spawn_big_send(p: &Prosody, file: &Path) -> Child {
    p.gshare(ROMEO.0, ROMEO.1)
        .args(["send", "--bind", "127.0.0.1"])
        .arg(file)
        .arg(Prosody::jid(JULIET.0))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `gshare send` from mercutio to juliet, to the end.
fn send_as_mercutio(p: &Prosody, file: &Path) -> Output {
    p.gshare(MERCUTIO.0, MERCUTIO.1)
        .args(["send", "--bind", "127.0.0.1"])
        .arg(file)
        .arg(Prosody::jid(JULIET.0))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn two_senders_at_once_each_get_their_own_transfer_and_events() {
    let p = Prosody::start(&[ROMEO, JULIET, MERCUTIO]);
    let src = tempfile::tempdir().unwrap();
    let huge = src.path().join("huge.bin");
    sparse(&huge, 1 << 30);
    let small = src.path().join("small.bin");
    write_random(&small, 200_000, 5);
    let out = tempfile::tempdir().unwrap();
    let mut recv = Receiver::start_many(&p, out.path(), &["--auto-accept"]);
    let romeo = spawn_big_send(&p, &huge);
    recv.wait_for("\"progress\"", Duration::from_secs(60));
    // While romeo's gigabyte flows, mercutio's offer is taken and finishes
    // first.
    let sent = send_as_mercutio(&p, &small);
    assert_eq!(
        sent.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let first_done = recv.wait_for("\"done\"", Duration::from_secs(60));
    assert!(first_done.contains("mercutio@localhost"), "{first_done}");
    let second_done = recv.wait_for("\"done\"", Duration::from_secs(600));
    assert!(second_done.contains("romeo@localhost"), "{second_done}");
    let r = romeo.wait_with_output().unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    check_same(&small, &out.path().join("small.bin"));
    check_same(&huge, &out.path().join("huge.bin"));
    interrupt(&recv.child);
    let (code, err, events) = recv.finish(Duration::from_secs(30));
    assert_eq!(code, 6, "{err}");
    // Both were accepted, and every event of a transfer says whose it is.
    for who in ["romeo@localhost", "mercutio@localhost"] {
        assert!(
            events
                .iter()
                .any(|e| e.contains("\"accepted\"") && e.contains(who)),
            "{who} was not accepted: {events:#?}"
        );
    }
    for e in &events {
        if [
            "\"progress\"",
            "\"item\"",
            "\"done\"",
            "\"accepted\"",
            "\"offer\"",
        ]
        .iter()
        .any(|kind| e.contains(kind))
        {
            assert!(e.contains("\"from\""), "an event without from: {e}");
        }
    }
    // The two transfers overlapped: mercutio's began after romeo's and
    // ended before it.
    let pos = |needle: &dyn Fn(&String) -> bool| events.iter().position(needle).unwrap();
    let romeo_done = pos(&|e| e.contains("\"done\"") && e.contains("romeo@localhost"));
    let mercutio_accepted =
        pos(&|e| e.contains("\"accepted\"") && e.contains("mercutio@localhost"));
    assert!(mercutio_accepted < romeo_done, "{events:#?}");
}

#[test]
fn over_max_concurrent_an_offer_is_declined_as_busy() {
    let p = Prosody::start(&[ROMEO, JULIET, MERCUTIO]);
    let src = tempfile::tempdir().unwrap();
    let huge = src.path().join("huge.bin");
    sparse(&huge, 1 << 30);
    let small = src.path().join("small.bin");
    write_random(&small, 1000, 6);
    let out = tempfile::tempdir().unwrap();
    let mut recv =
        Receiver::start_many(&p, out.path(), &["--auto-accept", "--max-concurrent", "1"]);
    let romeo = spawn_big_send(&p, &huge);
    recv.wait_for("\"progress\"", Duration::from_secs(60));
    let sent = send_as_mercutio(&p, &small);
    assert_eq!(
        sent.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let rejected = recv.wait_for("\"rejected\"", Duration::from_secs(30));
    assert!(rejected.contains("mercutio@localhost"), "{rejected}");
    assert!(rejected.contains("\"busy\""), "{rejected}");
    assert!(!out.path().join("small.bin").exists());
    // romeo's transfer was not disturbed: it is still running.
    recv.wait_for("\"progress\"", Duration::from_secs(30));
    interrupt(&recv.child);
    let (code, err, _) = recv.finish(Duration::from_secs(30));
    assert_eq!(code, 6, "{err}");
    let r = romeo.wait_with_output().unwrap();
    assert_ne!(r.status.code(), Some(0));
    no_final_file(out.path(), "huge.bin");
}
