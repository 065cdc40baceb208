//! gshare ↔ gshare PseudoTCP over real UDP sockets on loopback: bulk data
//! checked by SHA-256, simultaneous open with data both ways, hyper running
//! over the stream, and errors surfacing as `io::Error`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use gshare::net::raise_buffers;
use std::time::Duration;

use gshare::pseudotcp::sim::ByteStream;
use gshare::pseudotcp::{Config, Open, PseudoTcpStream};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

fn udp_pair() -> (UdpSocket, UdpSocket) {
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    a.connect(b.local_addr().unwrap()).unwrap();
    b.connect(a.local_addr().unwrap()).unwrap();
    for s in [&a, &b] {
        // Several MiB, or PseudoTCP's large windows overflow the kernel's
        // ≈208 KiB default (docs/protocol.md §F.1).
        raise_buffers(s, 8 << 20);
        s.set_nonblocking(true).unwrap();
    }
    (
        UdpSocket::from_std(a).unwrap(),
        UdpSocket::from_std(b).unwrap(),
    )
}

async fn send_all(s: &mut PseudoTcpStream, total: usize, seed: u64) -> Vec<u8> {
    let mut pattern = ByteStream::new(seed);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len());
        pattern.fill(&mut buf[..n]);
        hash.update(&buf[..n]);
        s.write_all(&buf[..n]).await.unwrap();
        left -= n;
    }
    s.shutdown().await.unwrap();
    hash.finalize().to_vec()
}

async fn recv_all(s: &mut PseudoTcpStream, total: usize) -> Vec<u8> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = total;
    while left > 0 {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "unexpected end of stream with {left} bytes to go");
        hash.update(&buf[..n]);
        left -= n;
    }
    hash.finalize().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_over_loopback_udp() {
    const TOTAL: usize = 64 << 20;
    let (ua, ub) = udp_pair();
    let accept = tokio::spawn(PseudoTcpStream::accept(ub, Config::default()));
    let mut a = PseudoTcpStream::connect(ua, Config::default())
        .await
        .unwrap();
    let mut b = accept.await.unwrap().unwrap();
    assert!(a.peer_is_gshare() && b.peer_is_gshare());
    assert_eq!(a.mss(), 65507 - 24);
    let recv = tokio::spawn(async move {
        let h = recv_all(&mut b, TOTAL).await;
        (h, b)
    });
    let sent = send_all(&mut a, TOTAL, 64).await;
    let (got, b) = tokio::time::timeout(Duration::from_secs(120), recv)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hex::encode(&sent), hex::encode(&got));
    // Large segments were used: far fewer than at libnice's mss of 1284.
    let segs = a.stats().data_segments_sent as usize;
    assert!(
        segs >= TOTAL.div_ceil(a.mss()) && segs < TOTAL / 1284 / 10,
        "{segs}"
    );
    drop(b);
}

#[tokio::test]
async fn simultaneous_open_and_both_directions_at_once() {
    const TOTAL: usize = 8 << 20;
    let (ua, ub) = udp_pair();
    let a = PseudoTcpStream::new(ua, Config::default(), Open::Active);
    let b = PseudoTcpStream::new(ub, Config::default(), Open::Active);
    tokio::try_join!(a.established(), b.established()).unwrap();
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let t = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(
            async {
                let mut g = ByteStream::new(1);
                let mut buf = vec![0u8; 100_000];
                let mut left = TOTAL;
                while left > 0 {
                    let n = left.min(buf.len());
                    g.fill(&mut buf[..n]);
                    aw.write_all(&buf[..n]).await.unwrap();
                    left -= n;
                }
            },
            async {
                let mut g = ByteStream::new(2);
                let mut buf = vec![0u8; 33_333];
                let mut left = TOTAL;
                while left > 0 {
                    let n = left.min(buf.len());
                    g.fill(&mut buf[..n]);
                    bw.write_all(&buf[..n]).await.unwrap();
                    left -= n;
                }
            },
            async {
                let mut g = ByteStream::new(1);
                let mut buf = vec![0u8; 50_000];
                let mut left = TOTAL;
                while left > 0 {
                    let n = br.read(&mut buf).await.unwrap();
                    assert!(n > 0);
                    assert_eq!(g.verify(&buf[..n]), Ok(()));
                    left -= n;
                }
            },
            async {
                let mut g = ByteStream::new(2);
                let mut buf = vec![0u8; 70_000];
                let mut left = TOTAL;
                while left > 0 {
                    let n = ar.read(&mut buf).await.unwrap();
                    assert!(n > 0);
                    assert_eq!(g.verify(&buf[..n]), Ok(()));
                    left -= n;
                }
            },
        )
    });
    t.await.unwrap();
}

#[tokio::test]
async fn hyper_serves_a_get_over_the_stream() {
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;

    const BODY: usize = 4 << 20;
    let (ua, ub) = udp_pair();
    let server = tokio::spawn(async move {
        let s = PseudoTcpStream::accept(ub, Config::default())
            .await
            .unwrap();
        let svc =
            hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                assert_eq!(req.uri().path(), "/temporary/abc/file.bin");
                let mut body = vec![0u8; BODY];
                ByteStream::new(9).fill(&mut body);
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                    body,
                ))))
            });
        hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(s), svc)
            .await
    });
    let s = PseudoTcpStream::connect(ua, Config::default())
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(s))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    for _ in 0..2 {
        // Two requests on one connection (keep-alive, as libjingle does).
        let req = hyper::Request::get("/temporary/abc/file.bin")
            .header("Host", "romeo@localhost/pcp:0")
            .body(Empty::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), BODY);
        assert_eq!(ByteStream::new(9).verify(&body), Ok(()));
    }
    drop(send);
    conn.await.unwrap().unwrap();
    // Client side dropped: the server's stream never sees EOF (no FIN), so
    // it is still serving; stop it.
    server.abort();
}

#[tokio::test]
async fn dead_peer_surfaces_as_an_error_not_a_hang() {
    let (ua, ub) = udp_pair();
    // Connecting to a socket nobody drives: nothing answers the CONNECT.
    let cfg = Config {
        initial_rto: Duration::from_millis(10),
        min_rto: Duration::from_millis(10),
        max_rto: Duration::from_millis(20),
        ..Config::default()
    };
    let s = PseudoTcpStream::new(ua, cfg, Open::Active);
    let t0 = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(60), s.established())
        .await
        .unwrap();
    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::ConnectionAborted);
    // 30 CONNECTs at ≤ 20 ms apart.
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(s.stats().segments_sent, 30);
    drop(ub);
}

#[tokio::test]
async fn abort_resets_the_peer() {
    let (ua, ub) = udp_pair();
    let accept = tokio::spawn(PseudoTcpStream::accept(ub, Config::default()));
    let a = PseudoTcpStream::connect(ua, Config::default())
        .await
        .unwrap();
    let mut b = accept.await.unwrap().unwrap();
    a.abort();
    let mut buf = [0u8; 10];
    let e = tokio::time::timeout(Duration::from_secs(10), b.read(&mut buf))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    let mut a = a;
    let e = a.write(b"x").await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotConnected);
}

/// An in-memory datagram path with a fixed one-way delay, timed by tokio's
/// clock: with paused time it runs in virtual time. `deaf` drops everything
/// sent on it.
struct MemLink {
    rx: tokio::sync::mpsc::UnboundedReceiver<(tokio::time::Instant, Vec<u8>)>,
    tx: tokio::sync::mpsc::UnboundedSender<(tokio::time::Instant, Vec<u8>)>,
    delay: Duration,
    head: Option<(tokio::time::Instant, Vec<u8>)>,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    deaf: bool,
}

fn mem_pair(delay: Duration) -> (MemLink, MemLink) {
    let (tx_ab, rx_ab) = tokio::sync::mpsc::unbounded_channel();
    let (tx_ba, rx_ba) = tokio::sync::mpsc::unbounded_channel();
    let link = |rx, tx| MemLink {
        rx,
        tx,
        delay,
        head: None,
        sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        deaf: false,
    };
    (link(rx_ba, tx_ab), link(rx_ab, tx_ba))
}

impl gshare::pseudotcp::DatagramIo for MemLink {
    fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future;
        use std::task::Poll;
        loop {
            if self.head.is_none() {
                match self.rx.poll_recv(cx) {
                    Poll::Ready(Some(d)) => self.head = Some(d),
                    _ => return Poll::Pending,
                }
            }
            let at = self.head.as_ref().unwrap().0;
            if at > tokio::time::Instant::now() {
                self.sleep.as_mut().reset(at);
                if self.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            let (_, d) = self.head.take().unwrap();
            if !self.deaf {
                buf.put_slice(&d);
                return Poll::Ready(Ok(()));
            }
        }
    }

    fn poll_send(
        &mut self,
        _cx: &mut std::task::Context<'_>,
        datagram: &[u8],
    ) -> std::task::Poll<std::io::Result<()>> {
        let at = tokio::time::Instant::now() + self.delay;
        let _ = self.tx.send((at, datagram.to_vec()));
        std::task::Poll::Ready(Ok(()))
    }
}

/// Issue 17 item 5: the PseudoTCP driver reads tokio's clock (the ICE
/// driver's), so with paused time its retransmission timers run in virtual
/// time: 30 unanswered CONNECTs with the default backoff (about 80 s) end
/// the connection at once in real time. On the std clock the engine would
/// not see its deadlines pass and the driver would spin for real minutes.
#[tokio::test(start_paused = true)]
async fn paused_tokio_time_drives_the_retransmission_limit() {
    let (a, mut b) = mem_pair(Duration::from_millis(25));
    b.deaf = true;
    let s = PseudoTcpStream::new(a, Config::default(), Open::Active);
    let real = std::time::Instant::now();
    let virt = tokio::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(600), s.established())
        .await
        .unwrap();
    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::ConnectionAborted);
    assert_eq!(s.stats().segments_sent, 30);
    let v = virt.elapsed();
    assert!(
        v > Duration::from_secs(30) && v < Duration::from_secs(300),
        "{v:?}"
    );
    assert!(
        real.elapsed() < Duration::from_secs(10),
        "{:?}",
        real.elapsed()
    );
    drop(b);
}

/// Same clock, a working link: the handshake takes one virtual round trip
/// (2 × 50 ms) and a transfer completes with its bytes intact.
#[tokio::test(start_paused = true)]
async fn paused_tokio_time_drives_a_transfer_over_a_delayed_link() {
    const TOTAL: usize = 2 << 20;
    let (la, lb) = mem_pair(Duration::from_millis(50));
    let t0 = tokio::time::Instant::now();
    let accept = tokio::spawn(PseudoTcpStream::accept(lb, Config::default()));
    let mut a = PseudoTcpStream::connect(la, Config::default())
        .await
        .unwrap();
    let rtt = t0.elapsed();
    assert!(
        rtt >= Duration::from_millis(100) && rtt < Duration::from_millis(110),
        "{rtt:?}"
    );
    let mut b = accept.await.unwrap().unwrap();
    let recv = tokio::spawn(async move { recv_all(&mut b, TOTAL).await });
    let sent = send_all(&mut a, TOTAL, 5).await;
    let got = recv.await.unwrap();
    assert_eq!(sent, got);
    assert_eq!(a.stats().timeouts, 0);
}
