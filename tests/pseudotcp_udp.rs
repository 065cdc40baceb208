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
    assert_eq!(a.mss(), 65507 - 116);
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
