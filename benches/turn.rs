//! PseudoTCP through a TURN relay (coturn on loopback) against the direct
//! loopback path, same stack otherwise (ICE driver, PseudoTCP streams).
//! Run: `cargo bench --bench turn` (add `-- quick` for a short run).
//! Needs coturn (`scripts/install-deps`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/coturn.rs"]
mod coturn;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use coturn::{Auth, Coturn};
use gshare::ice::{CandidateType, GatherConfig, IceChannel, TurnServer};
use gshare::pseudotcp::{Config, DatagramIo, PseudoTcpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MB: f64 = 1e6;

struct IceIo(IceChannel);

impl DatagramIo for IceIo {
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

fn loopback() -> GatherConfig {
    let mut c = GatherConfig::new("private-1");
    c.bind = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    c
}

/// One transfer of `total` bytes A → B; MB/s as B timed it, and whether A
/// sent through the relay.
async fn run(total: usize, relay: Option<&Coturn>) -> (f64, bool) {
    let turn = relay
        .map(|s| {
            vec![TurnServer {
                server: s.addr,
                username: "alice".into(),
                password: "s3cret".into(),
            }]
        })
        .unwrap_or_default();
    let mut a = IceChannel::gather_with_relays(loopback(), turn)
        .await
        .unwrap();
    let mut b = IceChannel::gather(loopback()).await.unwrap();
    let ca = a.local_candidates();
    if relay.is_some() {
        // B learns only A's relay candidate: the relay is the only path.
        for c in ca.iter().filter(|c| c.kind == CandidateType::Relay) {
            b.add_remote_candidate(c.clone());
        }
    } else {
        for c in ca {
            b.add_remote_candidate(c);
        }
    }
    for c in b.local_candidates() {
        a.add_remote_candidate(c);
    }
    let receiver = tokio::spawn(async move {
        b.connected(Duration::from_secs(10)).await.unwrap();
        let mut s = PseudoTcpStream::accept(IceIo(b), Config::default())
            .await
            .unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        let mut started = None;
        while got < total {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "stream ended early");
            started.get_or_insert_with(Instant::now);
            got += n;
        }
        started.unwrap().elapsed()
    });
    a.connected(Duration::from_secs(10)).await.unwrap();
    let relayed = a.is_relayed();
    let mut s = PseudoTcpStream::connect(IceIo(a), Config::default())
        .await
        .unwrap();
    let chunk = vec![0x5au8; 1 << 16];
    let mut sent = 0;
    while sent < total {
        let n = chunk.len().min(total - sent);
        s.write_all(&chunk[..n]).await.unwrap();
        sent += n;
    }
    s.flush().await.unwrap();
    let took = receiver.await.unwrap();
    (total as f64 / took.as_secs_f64() / MB, relayed)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick" || a == "smoke");
    let total = if quick { 8 << 20 } else { 128 << 20 };
    let runs = if quick { 1 } else { 3 };
    let server = Coturn::start(Auth::Users(&[("alice", "s3cret")]), &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "PseudoTCP over ICE on loopback, {} MiB, median of {runs}:",
        total >> 20
    );
    let direct = median(
        (0..runs)
            .map(|_| {
                let (mbps, relayed) = rt.block_on(run(total, None));
                assert!(!relayed);
                mbps
            })
            .collect(),
    );
    let relayed = median(
        (0..runs)
            .map(|_| {
                let (mbps, relayed) = rt.block_on(run(total, Some(&server)));
                assert!(relayed, "the relay was not used");
                mbps
            })
            .collect(),
    );
    println!("  direct                      : {direct:9.1} MB/s");
    println!("  through coturn (TURN relay) : {relayed:9.1} MB/s");
    println!("  relay / direct              : {:9.2}", relayed / direct);
}
