//! Interop with libnice 0.1.x in Google compatibility mode (docs/protocol.md §F):
//! a libnice agent (tests/support/nice_peer.c, datagram mode, echoing) and
//! gshare's `IceChannel` exchange candidates through the test, reach a pair
//! on loopback, and move datagrams both ways. Both orders of candidate
//! delivery, libnice controlling and not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use gshare::ice::{GatherConfig, IceChannel};
use support::nice::{NiceOptions, NicePeer};

#[derive(Clone, Copy, Debug)]
enum Order {
    /// libnice gets our candidates first: its checks reach us before we
    /// know its username (we answer 430).
    NiceLearnsFirst,
    /// We get libnice's candidates first: our checks reach libnice before
    /// it knows ours (it drops them, or stores and replays them, §F.1).
    GshareLearnsFirst,
}

async fn interop(order: Order, controlling: bool) {
    let mut nice = NicePeer::spawn(&NiceOptions {
        controlling,
        echo: true,
        ..Default::default()
    })
    .await;
    let mut chan = IceChannel::gather(GatherConfig {
        name: "private-1".into(),
        bind: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        stun: Vec::new(),
    })
    .await
    .expect("gather");
    let ours = chan.local_candidates();
    let sink = chan.remote_candidates_sink();
    let theirs = nice.candidates.clone();

    // Drive our channel in its own task the whole time: it answers checks
    // only while polled. It connects, echo-tests, and returns what it got.
    let driver = tokio::spawn(async move {
        chan.connected(Duration::from_secs(10))
            .await
            .expect("gshare connects");
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        // First what libnice sends on its own (DATAGRAM line below).
        let n = tokio::time::timeout(Duration::from_secs(5), chan.recv(&mut buf))
            .await
            .expect("datagram from libnice")
            .unwrap();
        got.push(buf[..n].to_vec());
        // Then 20 datagrams of ours, echoed by libnice.
        for i in 0..20u8 {
            let msg: Vec<u8> = [0u8, 0, i]
                .iter()
                .copied()
                .chain(vec![i; 100 + usize::from(i) * 50])
                .collect();
            chan.send(&msg).await.unwrap();
            loop {
                let n = tokio::time::timeout(Duration::from_secs(5), chan.recv(&mut buf))
                    .await
                    .expect("echo from libnice")
                    .unwrap();
                if buf[..n] == msg[..] {
                    got.push(msg);
                    break;
                }
            }
        }
        (chan.selected(), got)
    });

    match order {
        Order::NiceLearnsFirst => {
            for c in &ours {
                nice.add_remote(c).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            for c in theirs {
                sink.send(c).unwrap();
            }
        }
        Order::GshareLearnsFirst => {
            for c in theirs {
                sink.send(c).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            for c in &ours {
                nice.add_remote(c).await;
            }
        }
    }
    let t0 = std::time::Instant::now();
    let connected = nice.expect("CONNECTED", Duration::from_secs(10)).await;
    println!(
        "{order:?} controlling={controlling}: libnice CONNECTED after {:?}",
        t0.elapsed()
    );
    // libnice selected our host candidate.
    let our_addr = ours[0].address;
    assert!(
        connected.ends_with(&format!("{} {}", our_addr.ip(), our_addr.port())),
        "{connected}"
    );
    nice.send_line("DATAGRAM hello-from-libnice").await;
    let (selected, got) = tokio::time::timeout(Duration::from_secs(20), driver)
        .await
        .expect("driver finishes")
        .expect("driver task");
    let (local, remote) = selected.expect("a selected pair");
    assert_eq!(local, our_addr);
    assert_eq!(remote, nice.candidates[0].address);
    assert_eq!(got.len(), 21);
    assert!(got[0].ends_with(b"hello-from-libnice"), "{:?}", got[0]);
    let echoes = nice.log.iter().filter(|l| l.starts_with("ECHO ")).count();
    assert!(echoes <= 21);
    nice.quit().await;
}

#[tokio::test]
async fn libnice_controlling_learns_candidates_first() {
    interop(Order::NiceLearnsFirst, true).await;
}

#[tokio::test]
async fn libnice_controlled_learns_candidates_first() {
    interop(Order::NiceLearnsFirst, false).await;
}

#[tokio::test]
async fn libnice_controlling_learns_candidates_last() {
    interop(Order::GshareLearnsFirst, true).await;
}

#[tokio::test]
async fn libnice_controlled_learns_candidates_last() {
    interop(Order::GshareLearnsFirst, false).await;
}

#[tokio::test]
async fn libnice_pair_reliable_transfer() {
    // libnice <-> libnice PseudoTCP, the reference figure for benchmarks.
    // GSHARE_NICE_BENCH_BYTES raises the size (64 MiB for a real figure).
    let bytes: u64 = std::env::var("GSHARE_NICE_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4 << 20);
    let (sent, received) = support::nice::libnice_pair_transfer(bytes, 42).await;
    let expected = support::nice::stream_sha256(42, bytes);
    assert_eq!(sent.sha256, expected);
    assert_eq!(received.sha256, expected);
    assert_eq!(received.bytes, bytes);
    println!(
        "libnice<->libnice reliable: {bytes} bytes in {:.3} s = {:.1} MB/s; \
         CPU s (whole process) sender {:?}, receiver {:?}",
        received.seconds,
        bytes as f64 / received.seconds / 1e6,
        sent.cpu_seconds,
        received.cpu_seconds
    );
}

#[tokio::test]
async fn libnice_reliable_pseudotcp_segments_reach_the_channel() {
    // A reliable libnice agent opens PseudoTCP as soon as it has a selected
    // pair: its CONNECT segment must come out of our channel as data (not
    // be mistaken for STUN, not be dropped as unreadable).
    let mut nice = NicePeer::spawn(&NiceOptions {
        reliable: true,
        controlling: true,
        ..Default::default()
    })
    .await;
    let mut chan = IceChannel::gather(GatherConfig {
        name: "private-1".into(),
        bind: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        stun: Vec::new(),
    })
    .await
    .expect("gather");
    for c in chan.local_candidates() {
        nice.add_remote(&c).await;
    }
    for c in nice.candidates.clone() {
        chan.add_remote_candidate(c);
    }
    let segment = tokio::spawn(async move {
        chan.connected(Duration::from_secs(10))
            .await
            .expect("connects");
        let mut buf = vec![0u8; 65536];
        let n = tokio::time::timeout(Duration::from_secs(5), chan.recv(&mut buf))
            .await
            .expect("a PseudoTCP segment from libnice")
            .unwrap();
        buf.truncate(n);
        buf
    });
    nice.expect("CONNECTED", Duration::from_secs(10)).await;
    let seg = segment.await.unwrap();
    // §C.1: conversation 0, CTL flag, payload starting with CTL_CONNECT.
    assert!(seg.len() > 24, "{seg:?}");
    assert_eq!(&seg[..4], &[0, 0, 0, 0]);
    assert_ne!(seg[13] & 0x02, 0, "CTL flag: {seg:?}");
    assert_eq!(seg[24], 0x00, "CTL_CONNECT");
    nice.quit().await;
}
