//! gshare → gshare through the impairment relay with 10 % packet loss and
//! reordering each way (issue 9): the transfer completes and the file is
//! intact, both for gshare's large loopback segments and for 1400-byte
//! segments on an emulated 1500-byte-MTU path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/files.rs"]
mod files;
#[path = "support/impair.rs"]
mod impair;
#[path = "support/prosody.rs"]
mod prosody;

use std::process::Stdio;
use std::time::Duration;

use files::{sha256_file, write_random};
use impair::{ImpairConfig, LinkDirection, Relay};
use prosody::Prosody;

fn lossy(seed: u64, mtu: Option<usize>) -> ImpairConfig {
    let dir = LinkDirection {
        delay: Duration::from_millis(2),
        loss: 0.10,
        reorder: 0.10,
        reorder_delay: Duration::from_millis(3),
        ..LinkDirection::default()
    };
    ImpairConfig {
        a_to_b: dir.clone(),
        b_to_a: dir,
        seed,
        mtu,
        clamp_datagram: mtu.map(|_| 1400),
    }
}

fn transfer_through(config: ImpairConfig, size: u64) {
    let p = Prosody::start(&[("romeo", "r0meo"), ("juliet", "jul1et")]);
    let relay = Relay::start(config).expect("relay");
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("lossy.bin");
    write_random(&f, size, 77);
    let out = tempfile::tempdir().unwrap();
    let recv = p
        .gshare("juliet", "jul1et")
        .args([
            "receive",
            "--once",
            "--auto-accept",
            "--bind",
            "127.0.0.1",
            "--advertise",
        ])
        .arg(relay.addr_b().to_string())
        .arg("-o")
        .arg(out.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sent = p
        .gshare("romeo", "r0meo")
        .args(["send", "--bind", "127.0.0.1", "--advertise"])
        .arg(relay.addr_a().to_string())
        .arg(&f)
        .arg("juliet@localhost")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let r = recv.wait_with_output().unwrap();
    let stats = relay.stats();
    assert_eq!(
        sent.status.code(),
        Some(0),
        "sender: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert_eq!(
        r.status.code(),
        Some(0),
        "receiver: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(sha256_file(&f), sha256_file(&out.path().join("lossy.bin")));
    // The path really was lossy, and everything went through the relay.
    assert!(stats.a_to_b.lost > 0 && stats.b_to_a.lost > 0, "{stats:?}");
    assert!(
        stats.a_to_b.delivered > 0 && stats.b_to_a.delivered > 0,
        "{stats:?}"
    );
}

#[test]
fn ten_percent_loss_and_reordering_large_segments() {
    transfer_through(lossy(11, None), 8 << 20);
}

#[test]
fn ten_percent_loss_and_reordering_1400_byte_datagrams() {
    // Slow: ~40 KB/s here (RTO-bound at 10 % loss each way), so keep it small.
    transfer_through(lossy(12, Some(1500)), 1 << 20);
}
