//! ICE through a TURN relay (coturn on loopback): a relay-only path
//! connects and carries datagrams and PseudoTCP, a direct pair that starts
//! working later replaces it, and dropping the channel releases the relay.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/coturn.rs"]
mod coturn;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use coturn::{Auth, Coturn};
use gshare::ice::driver::{RELAY_MAX_DATAGRAM, RELAY_OVERHEAD};
use gshare::ice::{Candidate, CandidateType, GatherConfig, IceChannel, TurnServer};

fn loopback(name: &str) -> GatherConfig {
    let mut c = GatherConfig::new(name);
    c.bind = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    c
}

fn turn(server: &Coturn) -> Vec<TurnServer> {
    vec![TurnServer {
        server: server.addr,
        username: "alice".into(),
        password: "s3cret".into(),
    }]
}

fn of_kind(c: &[Candidate], kind: CandidateType) -> Vec<Candidate> {
    c.iter().filter(|c| c.kind == kind).cloned().collect()
}

/// A and B where B only ever learns A's relay candidate: A's host checks
/// reach B under a username B does not know (430), so the only working
/// path is A's relay ↔ B's host.
async fn relay_only(server: &Coturn) -> (IceChannel, IceChannel, Candidate) {
    let mut a = IceChannel::gather_with_relays(loopback("private-1"), turn(server))
        .await
        .unwrap();
    let mut b = IceChannel::gather(loopback("private-1")).await.unwrap();
    let ca = a.local_candidates();
    let relay = of_kind(&ca, CandidateType::Relay);
    assert_eq!(relay.len(), 1, "{ca:?}");
    let relay = relay[0].clone();
    assert_eq!(relay.preference, 0.5);
    assert_eq!(a.relayed_addresses(), vec![relay.address]);
    assert_ne!(relay.address, ca[0].address);
    b.add_remote_candidate(relay.clone());
    for c in b.local_candidates() {
        a.add_remote_candidate(c);
    }
    let host_a = of_kind(&ca, CandidateType::Local).remove(0);
    (a, b, host_a)
}

#[tokio::test]
async fn relay_only_path_connects_and_carries_pseudotcp() {
    let server = Coturn::start(Auth::Users(&[("alice", "s3cret")]), &[]);
    let (mut a, mut b, _) = relay_only(&server).await;
    let task = tokio::spawn(async move {
        b.connected(Duration::from_secs(10)).await.unwrap();
        let mut buf = vec![0u8; 65536];
        let mut sizes = Vec::new();
        for _ in 0..3 {
            let n = b.recv(&mut buf).await.unwrap();
            sizes.push(n);
            b.send(&buf[..n]).await.unwrap();
        }
        (b.selected().unwrap(), sizes)
    });
    a.connected(Duration::from_secs(10)).await.unwrap();
    assert!(a.is_relayed());
    let max = a.max_datagram_size();
    // Loopback: coturn's 16 KiB read buffer less TURN framing.
    assert_eq!(max, RELAY_MAX_DATAGRAM - RELAY_OVERHEAD);
    let msgs = [b"\0\0hello".to_vec(), vec![7u8; max], b"\0\0bye".to_vec()];
    let mut buf = vec![0u8; 65536];
    for m in &msgs {
        a.send(m).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), a.recv(&mut buf))
            .await
            .expect("echo through the relay")
            .unwrap();
        assert_eq!(&buf[..n], &m[..]);
    }
    let (b_selected, sizes) = task.await.unwrap();
    assert_eq!(sizes, msgs.iter().map(|m| m.len()).collect::<Vec<_>>());
    // B talks to A's relayed address: every datagram went through coturn.
    assert_eq!(b_selected.1, a.relayed_addresses()[0]);
}

#[tokio::test]
async fn later_direct_pair_replaces_the_relay() {
    let server = Coturn::start(Auth::Users(&[("alice", "s3cret")]), &[]);
    let (mut a, mut b, host_a) = relay_only(&server).await;
    let sink = b.remote_candidates_sink();
    let task = tokio::spawn(async move {
        b.connected(Duration::from_secs(10)).await.unwrap();
        let first = b.selected().unwrap();
        let mut buf = vec![0u8; 65536];
        // Echo until A says stop.
        loop {
            let n = b.recv(&mut buf).await.unwrap();
            b.send(&buf[..n]).await.unwrap();
            if &buf[..n] == b"\0\0stop" {
                break;
            }
        }
        (first, b.selected().unwrap())
    });
    a.connected(Duration::from_secs(10)).await.unwrap();
    assert!(a.is_relayed());
    let relayed_remote = a.selected().unwrap().1;
    // Now B learns A's host candidate: the direct pair becomes writable and
    // wins (preference 1.0 against 0.5). Traffic keeps flowing meanwhile.
    sink.send(host_a.clone()).unwrap();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0u32;
    while a.is_relayed() {
        assert!(Instant::now() < deadline, "still relayed");
        let msg = [&[0u8, 0][..], &i.to_be_bytes()].concat();
        a.send(&msg).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(200), a.recv(&mut buf)).await;
        i += 1;
    }
    let direct = a.selected().unwrap();
    assert_eq!(direct.0, host_a.address);
    assert_eq!(direct.1, relayed_remote);
    a.send(b"\0\0stop").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), a.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"\0\0stop");
    let (first, last) = task.await.unwrap();
    assert_eq!(first.1, a.relayed_addresses()[0]);
    assert_eq!(last.1, host_a.address);
}

#[tokio::test]
async fn dropping_the_channel_releases_the_allocation() {
    let server = Coturn::start(Auth::Users(&[("alice", "s3cret")]), &[]);
    let a = IceChannel::gather_with_relays(loopback("private-1"), turn(&server))
        .await
        .unwrap();
    let relayed = a.relayed_addresses()[0];
    assert!(
        std::net::UdpSocket::bind(relayed).is_err(),
        "coturn holds it"
    );
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(3);
    while std::net::UdpSocket::bind(relayed).is_err() {
        assert!(Instant::now() < deadline, "coturn still holds {relayed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn unusable_turn_server_does_not_stop_gathering() {
    let server = Coturn::start(Auth::Users(&[("alice", "s3cret")]), &[]);
    let mut bad = turn(&server);
    bad[0].password = "wrong".into();
    let started = Instant::now();
    let a = IceChannel::gather_with_relays(loopback("private-1"), bad)
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    let c = a.local_candidates();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].kind, CandidateType::Local);
    assert!(a.relayed_addresses().is_empty());
}

/// Relay-only gathering (hidden `--relay-only`): even with a STUN server
/// and both peers exchanging everything they gathered, A's only candidate
/// is its relayed address, so the pair that connects goes through coturn.
#[tokio::test]
async fn relay_only_gathering_announces_only_the_relay() {
    let server = Coturn::start(Auth::Users(&[("alice", "s3cret")]), &[]);
    let mut cfg = loopback("private-1");
    // coturn answers binding requests too: a plain gather would add a
    // server-reflexive candidate from it.
    cfg.stun = vec![server.addr];
    let mut a = IceChannel::gather_relay_only(cfg, turn(&server))
        .await
        .unwrap();
    let mut b = IceChannel::gather(loopback("private-1")).await.unwrap();
    let ca = a.local_candidates();
    assert_eq!(ca.len(), 1, "{ca:?}");
    assert_eq!(ca[0].kind, CandidateType::Relay);
    assert_eq!(a.relayed_addresses(), vec![ca[0].address]);
    for c in ca {
        b.add_remote_candidate(c);
    }
    for c in b.local_candidates() {
        a.add_remote_candidate(c);
    }
    let task = tokio::spawn(async move {
        b.connected(Duration::from_secs(10)).await.unwrap();
        let mut buf = vec![0u8; 2048];
        let n = b.recv(&mut buf).await.unwrap();
        b.send(&buf[..n]).await.unwrap();
        b.selected().unwrap()
    });
    a.connected(Duration::from_secs(10)).await.unwrap();
    assert!(a.is_relayed());
    a.send(b"\0\0ping").await.unwrap();
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(5), a.recv(&mut buf))
        .await
        .expect("echo through the relay")
        .unwrap();
    assert_eq!(&buf[..n], b"\0\0ping");
    let b_selected = task.await.unwrap();
    assert_eq!(b_selected.1, a.relayed_addresses()[0]);
    // Still only the relay candidate after connecting (no
    // server-reflexive one from the allocation's mapped address).
    assert_eq!(a.local_candidates().len(), 1);
}

#[tokio::test]
async fn relay_only_without_an_allocation_is_an_error() {
    let server = Coturn::start(Auth::Users(&[("alice", "s3cret")]), &[]);
    let mut bad = turn(&server);
    bad[0].password = "wrong".into();
    let err = IceChannel::gather_relay_only(loopback("private-1"), bad)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("relay-only"), "{err}");
    let err = IceChannel::gather_relay_only(loopback("private-1"), Vec::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("relay-only"), "{err}");
}

struct IceIo(IceChannel);

impl gshare::pseudotcp::DatagramIo for IceIo {
    fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.0.poll_recv(cx, buf)
    }

    fn poll_send(
        &mut self,
        cx: &mut std::task::Context<'_>,
        datagram: &[u8],
    ) -> std::task::Poll<std::io::Result<()>> {
        self.0.poll_send(cx, datagram)
    }

    fn max_datagram_size(&self) -> usize {
        self.0.max_datagram_size()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pseudotcp_stream_through_the_relay() {
    use gshare::pseudotcp::{Config, PseudoTcpStream};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SIZE: usize = 32 << 20;
    let server = Coturn::start(Auth::Users(&[("alice", "s3cret")]), &[]);
    let (mut a, mut b, _) = relay_only(&server).await;
    let accept = tokio::spawn(async move {
        b.connected(Duration::from_secs(10)).await.unwrap();
        let mut s = PseudoTcpStream::accept(IceIo(b), Config::default())
            .await
            .unwrap();
        let mut got = vec![0u8; SIZE];
        s.read_exact(&mut got).await.unwrap();
        got
    });
    a.connected(Duration::from_secs(10)).await.unwrap();
    assert!(a.is_relayed());
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 7 % 251) as u8).collect();
    let mut s = PseudoTcpStream::connect(IceIo(a), Config::default())
        .await
        .unwrap();
    let started = Instant::now();
    s.write_all(&data).await.unwrap();
    s.flush().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(60), accept)
        .await
        .expect("transfer through the relay in time")
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(got == data, "relayed stream corrupted");
    eprintln!(
        "{} MiB of PseudoTCP through coturn on loopback: {secs:.2} s, {:.1} MiB/s",
        SIZE >> 20,
        SIZE as f64 / secs / 1048576.0
    );
}
