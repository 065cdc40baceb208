//! gshare → gshare with TURN: the relay servers come from Prosody
//! (`mod_turn_external`, XEP-0215) or from `--turn` with the password from
//! `GSHARE_TURN_PASSWORD`; both ends allocate at coturn, signal their relay
//! candidates, transfer, and release the allocations at the end. On
//! loopback the direct pair wins, as it must; the relayed path itself is
//! covered by `ice_relay` and `turn_lab`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/coturn.rs"]
mod coturn;
#[path = "support/files.rs"]
mod files;
#[path = "support/prosody.rs"]
mod prosody;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coturn::{Auth, Coturn};
use files::{sha256_file, write_random};
use prosody::{Options, Prosody};

const ROMEO: (&str, &str) = ("romeo", "r0meo-pw");
const JULIET: (&str, &str) = ("juliet", "jul1et-pw");

/// Relayed addresses the log reports (`TURN allocation … relayed=…`).
fn relayed(log: &str) -> Vec<SocketAddr> {
    log.lines()
        .filter(|l| l.contains("TURN allocation"))
        .filter_map(|l| l.split("relayed=").nth(1))
        .filter_map(|r| r.split_whitespace().next())
        .map(|r| {
            // Strip ANSI colour codes if any.
            let clean: String = r.chars().filter(|c| c.is_ascii_graphic()).collect();
            clean.trim_end_matches("\u{1b}[0m").parse().unwrap()
        })
        .collect()
}

/// Runs receive (--once) and send; returns both stderr logs.
fn transfer(p: &Prosody, extra: impl Fn(&mut Command)) -> (String, String, tempfile::TempDir) {
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("payload.bin");
    write_random(&file, 3 << 20, 15);
    let out = tempfile::tempdir().unwrap();
    let mut recv = p.gshare(JULIET.0, JULIET.1);
    recv.env("RUST_LOG", "gshare=debug")
        .env("NO_COLOR", "1")
        .args([
            "receive",
            "--json",
            "--once",
            "--auto-accept",
            "--bind",
            "127.0.0.1",
        ])
        .args(["--from", "romeo@localhost", "-o"])
        .arg(out.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    extra(&mut recv);
    let mut child = recv.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("receiver ready");
        if line.contains("\"ready\"") {
            break;
        }
    }
    let mut send = p.gshare(ROMEO.0, ROMEO.1);
    send.env("RUST_LOG", "gshare=debug")
        .env("NO_COLOR", "1")
        .args(["send", "--bind", "127.0.0.1"])
        .arg(&file)
        .arg(Prosody::jid(JULIET.0))
        .stdin(Stdio::null());
    extra(&mut send);
    let sent = send.output().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "receiver hangs"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut recv_err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut recv_err)
        .unwrap();
    let send_err = String::from_utf8_lossy(&sent.stderr).into_owned();
    assert_eq!(
        sent.status.code(),
        Some(0),
        "sender: {send_err}\nreceiver: {recv_err}"
    );
    assert_eq!(
        status.code(),
        Some(0),
        "receiver: {recv_err}\nsender: {send_err}"
    );
    assert_eq!(
        sha256_file(&file),
        sha256_file(&out.path().join("payload.bin"))
    );
    (send_err, recv_err, out)
}

fn assert_released(addrs: &[SocketAddr]) {
    for a in addrs {
        let deadline = Instant::now() + Duration::from_secs(3);
        while std::net::UdpSocket::bind(a).is_err() {
            assert!(Instant::now() < deadline, "coturn still holds {a}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn turn_servers_discovered_from_prosody_are_allocated_and_released() {
    let secret = "lab-s3cret";
    let turn = Coturn::start(Auth::Secret(secret), &[]);
    let p = Prosody::start_with(
        &[ROMEO, JULIET],
        Options {
            turn_external: Some(("127.0.0.1".into(), turn.addr.port(), secret.into())),
            ..Default::default()
        },
    );
    let (send_err, recv_err, _out) = transfer(&p, |_| {});
    let (a, b) = (relayed(&send_err), relayed(&recv_err));
    assert_eq!(a.len(), 1, "sender allocated no relay: {send_err}");
    assert_eq!(b.len(), 1, "receiver allocated no relay: {recv_err}");
    // Each side learned the other's relay candidate from the session.
    assert!(
        recv_err.contains(&format!("remote candidate address={}", a[0])),
        "{recv_err}"
    );
    assert!(
        send_err.contains(&format!("remote candidate address={}", b[0])),
        "{send_err}"
    );
    // Loopback works directly: the relay is only the fallback.
    assert!(send_err.contains("via=\"direct\""), "{send_err}");
    assert_released(&[a[0], b[0]]);
}

#[test]
fn turn_flag_with_password_from_the_environment() {
    let turn = Coturn::start(Auth::Users(&[("romeo", "t-pw"), ("juliet", "t-pw")]), &[]);
    let p = Prosody::start(&[ROMEO, JULIET]);
    let server = turn.addr.to_string();
    let (send_err, recv_err, _out) = transfer(&p, |c| {
        c.env("GSHARE_TURN_PASSWORD", "t-pw")
            .args(["--turn", &server, "--turn-user", "romeo"]);
    });
    assert_eq!(relayed(&send_err).len(), 1, "{send_err}");
    assert_eq!(relayed(&recv_err).len(), 1, "{recv_err}");
    // The password never shows in the logs.
    assert!(!send_err.contains("t-pw") && !recv_err.contains("t-pw"));
}

#[test]
fn turn_flag_without_user_or_password_is_a_usage_error() {
    let p = Prosody::start(&[ROMEO]);
    let out = p
        .gshare(ROMEO.0, ROMEO.1)
        .env_remove("GSHARE_TURN_PASSWORD")
        .args(["send", "--turn", "127.0.0.1:3478", "x", "juliet@localhost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--turn-user"), "{err}");
    let out = p
        .gshare(ROMEO.0, ROMEO.1)
        .env_remove("GSHARE_TURN_PASSWORD")
        .args(["send", "--turn", "127.0.0.1:3478", "--turn-user", "romeo"])
        .args(["x", "juliet@localhost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("GSHARE_TURN_PASSWORD"), "{err}");
}
