//! The secure channel (src/secure): TLS 1.3 with both certificates pinned
//! to the fingerprints exchanged over XMPP, over an in-memory pipe and over
//! a real PseudoTCP connection on loopback UDP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gshare::pseudotcp::sim::ByteStream;
use gshare::pseudotcp::{Config, PseudoTcpStream};
use gshare::secure::{self, Identity, Protection, SecureError, TlsRole};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::UdpSocket;

async fn copy_pattern<W: AsyncWrite + Unpin>(w: &mut W, total: usize, seed: u64) -> [u8; 32] {
    let mut pattern = ByteStream::new(seed);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len());
        pattern.fill(&mut buf[..n]);
        hash.update(&buf[..n]);
        w.write_all(&buf[..n]).await.unwrap();
        left -= n;
    }
    w.flush().await.unwrap();
    hash.finalize().into()
}

async fn hash_all<R: AsyncRead + Unpin>(r: &mut R, total: usize) -> [u8; 32] {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = total;
    while left > 0 {
        let n = r.read(&mut buf[..left.min(64 * 1024)]).await.unwrap();
        assert!(n > 0, "stream ended with {left} bytes to go");
        hash.update(&buf[..n]);
        left -= n;
    }
    hash.finalize().into()
}

#[tokio::test]
async fn mutual_handshake_over_a_pipe_and_data_both_ways() {
    let sender = Identity::generate().unwrap();
    let receiver = Identity::generate().unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (s_fp, r_fp) = (sender.fingerprint(), receiver.fingerprint());
    let (server, client) = tokio::join!(
        secure::accept(a, &sender, r_fp),
        secure::connect(b, &receiver, s_fp)
    );
    let mut server = server.unwrap();
    let mut client = client.unwrap();
    assert_eq!(
        server.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        client.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    // Each side saw exactly the other's certificate.
    let peer_cert = |c: Option<&[rustls::pki_types::CertificateDer<'_>]>| {
        secure::fingerprint(c.unwrap().first().unwrap())
    };
    assert_eq!(peer_cert(server.get_ref().1.peer_certificates()), r_fp);
    assert_eq!(peer_cert(client.get_ref().1.peer_certificates()), s_fp);

    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    client.flush().await.unwrap();
    let mut req = [0u8; 18];
    server.read_exact(&mut req).await.unwrap();
    assert_eq!(&req, b"GET / HTTP/1.1\r\n\r\n");
    let (sent, got) = tokio::join!(
        copy_pattern(&mut server, 1 << 20, 3),
        hash_all(&mut client, 1 << 20)
    );
    assert_eq!(sent, got);
    // Both people read the same short code.
    assert_eq!(
        secure::short_code(&s_fp, &r_fp),
        secure::short_code(&s_fp, &r_fp)
    );
}

#[tokio::test]
async fn receiver_refuses_a_sender_certificate_that_does_not_match() {
    let sender = Identity::generate().unwrap();
    let receiver = Identity::generate().unwrap();
    let impostor = Identity::generate().unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    // The receiver expects the impostor's fingerprint, the sender shows its
    // own certificate.
    let (server, client) = tokio::join!(
        async {
            let r = secure::accept(a, &sender, receiver.fingerprint()).await;
            match r {
                // The server may finish before the client's verdict arrives;
                // then its first read must fail.
                Ok(mut s) => {
                    let mut buf = [0u8; 1];
                    let e = s.read(&mut buf).await;
                    assert!(!matches!(e, Ok(n) if n > 0), "server read data");
                    Err::<(), ()>(())
                }
                Err(_) => Err(()),
            }
        },
        secure::connect(b, &receiver, impostor.fingerprint())
    );
    assert!(server.is_err());
    let e = client.unwrap_err();
    assert!(matches!(e, SecureError::FingerprintMismatch), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("does not match the fingerprint"), "{text}");
    assert!(!text.contains("InvalidCertificate"), "{text}");
}

#[tokio::test]
async fn sender_refuses_a_receiver_certificate_that_does_not_match() {
    let sender = Identity::generate().unwrap();
    let receiver = Identity::generate().unwrap();
    let impostor = Identity::generate().unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (server, client) =
        tokio::join!(secure::accept(a, &sender, impostor.fingerprint()), async {
            // TLS 1.3: the client may finish its side before the server has
            // judged the client certificate; its first read then fails with
            // the server's alert, and it never gets a byte.
            let mut c = secure::connect(b, &receiver, sender.fingerprint()).await?;
            c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.ok();
            c.flush().await.ok();
            let mut buf = [0u8; 16];
            match c.read(&mut buf).await {
                Ok(n) => panic!("client read {n} bytes from a server that refused it"),
                Err(e) => Err::<(), _>(SecureError::from_io(e)),
            }
        });
    let e = server.unwrap_err();
    assert!(matches!(e, SecureError::FingerprintMismatch), "{e:?}");
    let e = client.unwrap_err();
    assert!(matches!(e, SecureError::RefusedByPeer), "{e:?}");
    assert!(
        e.to_string()
            .contains("refused this side's TLS certificate")
    );
}

#[tokio::test]
async fn plaintext_peer_is_a_handshake_error_not_a_hang() {
    let receiver = Identity::generate().unwrap();
    let (a, b) = tokio::io::duplex(4096);
    let peer = tokio::spawn(async move {
        let mut a = a;
        // An HTTP server that does not speak TLS.
        let mut buf = vec![0u8; 4096];
        let _ = a.read(&mut buf).await;
        a.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await
            .unwrap();
        a.shutdown().await.unwrap();
    });
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        secure::connect(b, &receiver, [0; 32]),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(e, SecureError::Handshake(_)), "{e:?}");
    peer.await.unwrap();
}

fn udp_pair() -> (UdpSocket, UdpSocket) {
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    a.connect(b.local_addr().unwrap()).unwrap();
    b.connect(a.local_addr().unwrap()).unwrap();
    for s in [&a, &b] {
        let sock = socket2::SockRef::from(s);
        let _ = sock.set_recv_buffer_size(8 << 20);
        let _ = sock.set_send_buffer_size(8 << 20);
        s.set_nonblocking(true).unwrap();
    }
    (
        UdpSocket::from_std(a).unwrap(),
        UdpSocket::from_std(b).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_over_pseudotcp_on_loopback_udp_moves_four_mib() {
    const TOTAL: usize = 4 << 20;
    let sender = Identity::generate().unwrap();
    let receiver = Identity::generate().unwrap();
    let (s_fp, r_fp) = (sender.fingerprint(), receiver.fingerprint());
    let (ua, ub) = udp_pair();
    let accept = tokio::spawn(PseudoTcpStream::accept(ub, Config::default()));
    let ptcp_client = PseudoTcpStream::connect(ua, Config::default())
        .await
        .unwrap();
    let ptcp_server = accept.await.unwrap().unwrap();
    let run = async {
        let (server, client) = tokio::join!(
            secure::accept(ptcp_server, &sender, r_fp),
            secure::connect(ptcp_client, &receiver, s_fp)
        );
        let mut server = server.unwrap();
        let mut client = client.unwrap();
        let (sent, got) = tokio::join!(
            async {
                let h = copy_pattern(&mut server, TOTAL, 11).await;
                server.shutdown().await.unwrap();
                h
            },
            hash_all(&mut client, TOTAL)
        );
        assert_eq!(sent, got);
        // Clean end: close_notify, then EOF.
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    };
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap();
}

/// Copies `from` to `to`, appending every byte to `log`.
async fn tap<R, W>(mut from: R, mut to: W, log: Arc<Mutex<Vec<u8>>>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 8192];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            let _ = to.shutdown().await;
            break;
        }
        log.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// Two stream ends joined by a relay that records both directions.
fn tapped_pipe() -> (DuplexStream, DuplexStream, Arc<Mutex<Vec<u8>>>) {
    let (near, r1) = tokio::io::duplex(1 << 16);
    let (far, r2) = tokio::io::duplex(1 << 16);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (r1r, r1w) = tokio::io::split(r1);
    let (r2r, r2w) = tokio::io::split(r2);
    tokio::spawn(tap(r1r, r2w, log.clone()));
    tokio::spawn(tap(r2r, r1w, log.clone()));
    (near, far, log)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn establish_plain_passes_bytes_through_and_tls_hides_them() {
    const PHRASE: &[u8] = b"the quick brown fox jumps over the lazy dog";
    let t = Duration::from_secs(10);
    // Plain: the phrase crosses as written.
    let (a, b, log) = tapped_pipe();
    let (s, c) = tokio::join!(
        secure::establish(a, &Protection::Plain, t),
        secure::establish(b, &Protection::Plain, t)
    );
    let (mut s, mut c) = (s.unwrap(), c.unwrap());
    assert!(!s.is_encrypted() && !c.is_encrypted());
    s.write_all(PHRASE).await.unwrap();
    let mut buf = vec![0u8; PHRASE.len()];
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, PHRASE);
    assert!(contains(&log.lock().unwrap(), PHRASE));

    // TLS: the same exchange, and the relay never sees the phrase.
    let sender = Arc::new(Identity::generate().unwrap());
    let receiver = Arc::new(Identity::generate().unwrap());
    let server_p = Protection::Tls {
        identity: sender.clone(),
        peer: receiver.fingerprint(),
        role: TlsRole::Server,
    };
    let client_p = Protection::Tls {
        identity: receiver.clone(),
        peer: sender.fingerprint(),
        role: TlsRole::Client,
    };
    let (a, b, log) = tapped_pipe();
    let (s, c) = tokio::join!(
        secure::establish(a, &server_p, t),
        secure::establish(b, &client_p, t)
    );
    let (mut s, mut c) = (s.unwrap(), c.unwrap());
    assert!(s.is_encrypted() && c.is_encrypted());
    for _ in 0..100 {
        s.write_all(PHRASE).await.unwrap();
        c.write_all(PHRASE).await.unwrap();
    }
    s.flush().await.unwrap();
    c.flush().await.unwrap();
    let mut buf = vec![0u8; PHRASE.len() * 100];
    c.read_exact(&mut buf).await.unwrap();
    assert!(buf.chunks(PHRASE.len()).all(|p| p == PHRASE));
    s.read_exact(&mut buf).await.unwrap();
    assert!(buf.chunks(PHRASE.len()).all(|p| p == PHRASE));
    let seen = log.lock().unwrap().clone();
    assert!(seen.len() > PHRASE.len() * 200, "{}", seen.len());
    assert!(!contains(&seen, PHRASE));
    assert!(!contains(&seen, &PHRASE[..12]));
}

#[tokio::test]
async fn establish_times_out_against_a_silent_peer() {
    let receiver = Arc::new(Identity::generate().unwrap());
    let (a, _silent) = tokio::io::duplex(4096);
    let p = Protection::Tls {
        identity: receiver,
        peer: [9; 32],
        role: TlsRole::Client,
    };
    let e = secure::establish(a, &p, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(e, SecureError::Timeout(_)), "{e:?}");
}

#[tokio::test]
async fn a_refusal_is_found_through_wrapping_errors() {
    let sender = Identity::generate().unwrap();
    let receiver = Identity::generate().unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (_server, client) = tokio::join!(secure::accept(a, &sender, [0; 32]), async {
        let mut c = secure::connect(b, &receiver, sender.fingerprint())
            .await
            .unwrap();
        c.write_all(b"x").await.ok();
        c.flush().await.ok();
        let mut buf = [0u8; 1];
        c.read(&mut buf).await.unwrap_err()
    });
    // Wrapped the way a caller would (an io::Error inside another error).
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("request failed")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let outer = Outer(client);
    assert!(matches!(
        SecureError::refusal_in(&outer),
        Some(SecureError::RefusedByPeer)
    ));
    let unrelated = std::io::Error::other("connection reset");
    assert!(SecureError::refusal_in(&unrelated).is_none());
}

/// The channel's order (establish, then HTTP) over a real PseudoTCP pair,
/// with the sender pinned to a fingerprint that is not the receiver's (as
/// if the accept had been rewritten on the way): the handshake is refused,
/// the HTTP server never runs, and the receiver gets no byte of the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_fingerprint_is_refused_before_any_file_byte() {
    use gshare::http::{Catalog, Client, ServeEvent, request_path, serve};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret.txt");
    std::fs::write(&file, b"attack at dawn\n".repeat(1000)).unwrap();
    let mut catalog = Catalog::new("/temporary/abc/");
    catalog.push_file("secret.txt", &file, 15_000);
    let catalog = Arc::new(catalog);

    for sender_side_wrong in [true, false] {
        let sender = Arc::new(Identity::generate().unwrap());
        let receiver = Arc::new(Identity::generate().unwrap());
        let impostor = Identity::generate().unwrap().fingerprint();
        let (server_pin, client_pin) = if sender_side_wrong {
            (impostor, sender.fingerprint())
        } else {
            (receiver.fingerprint(), impostor)
        };
        let (ua, ub) = udp_pair();
        let accept = tokio::spawn(PseudoTcpStream::accept(ub, Config::default()));
        let ptcp_client = PseudoTcpStream::connect(ua, Config::default())
            .await
            .unwrap();
        let ptcp_server = accept.await.unwrap().unwrap();
        let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel::<ServeEvent>();
        let server_p = Protection::Tls {
            identity: sender.clone(),
            peer: server_pin,
            role: TlsRole::Server,
        };
        let client_p = Protection::Tls {
            identity: receiver.clone(),
            peer: client_pin,
            role: TlsRole::Client,
        };
        let cat = catalog.clone();
        let t = Duration::from_secs(10);
        let server = tokio::spawn(async move {
            let s = secure::establish(ptcp_server, &server_p, t).await?;
            // Only reached after a good handshake.
            let _ = serve(s, cat, events_tx).await;
            Ok::<(), SecureError>(())
        });
        let client = async {
            let s = secure::establish(ptcp_client, &client_p, t).await?;
            let mut c = Client::handshake(s, "romeo@localhost".into())
                .await
                .map_err(|e| SecureError::refusal_in(&e).unwrap())?;
            let path = request_path("/temporary/abc/", "secret.txt");
            match c.get(&path).await {
                Ok(mut r) => {
                    let first = r.chunk().await;
                    panic!(
                        "the receiver got a response: {:?}",
                        first.map(|c| c.map(|b| b.len()))
                    )
                }
                Err(e) => Err(SecureError::refusal_in(&e).expect("a TLS verdict")),
            }
        };
        let client: Result<(), SecureError> = client.await;
        let server = server.await.unwrap();
        if sender_side_wrong {
            assert!(
                matches!(server, Err(SecureError::FingerprintMismatch)),
                "{server:?}"
            );
            assert!(
                matches!(client, Err(SecureError::RefusedByPeer)),
                "{client:?}"
            );
        } else {
            assert!(
                matches!(client, Err(SecureError::FingerprintMismatch)),
                "{client:?}"
            );
            // The refused side learns of it from the alert or, if that is
            // lost with the closing stream, from the handshake timeout; in
            // the tool the receiver's terminate ends the session first.
            assert!(server.is_err(), "{server:?}");
        }
        // The server never saw a request, let alone served a byte.
        assert!(events_rx.try_recv().is_err());
    }
}
