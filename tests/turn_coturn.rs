//! The sans-IO TURN client against a real coturn on loopback: allocation
//! with long-term and TURN REST credentials, permissions, channel binding,
//! relaying to a local UDP echo, refresh (also through a stale nonce),
//! release, and the failures a user must be told about clearly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/coturn.rs"]
mod coturn;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use coturn::{Auth, Coturn};
use gshare::turn::{TurnClient, TurnConfig, TurnError, TurnEvent};
use hmac::Mac;
use tokio::net::UdpSocket;

/// Drives one client over one UDP socket, optionally with the client's
/// clock running `offset` ahead of the real one (to reach refresh times).
struct Harness {
    client: TurnClient,
    sock: UdpSocket,
    offset: Duration,
    events: Vec<TurnEvent>,
    received: Vec<(SocketAddr, Vec<u8>)>,
    /// Every datagram sent to the server.
    sent: Vec<Vec<u8>>,
}

impl Harness {
    async fn new(config: TurnConfig) -> Harness {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Harness {
            client: TurnClient::new(config, Instant::now()),
            sock,
            offset: Duration::ZERO,
            events: Vec::new(),
            received: Vec::new(),
            sent: Vec::new(),
        }
    }

    fn now(&self) -> Instant {
        Instant::now() + self.offset
    }

    async fn flush(&mut self) {
        while let Some(t) = self.client.poll_transmit() {
            self.sock.send_to(&t.contents, t.destination).await.unwrap();
            self.sent.push(t.contents);
        }
        while let Some(e) = self.client.poll_event() {
            self.events.push(e);
        }
    }

    /// Runs until `done` holds or `limit` passes; returns whether it held.
    async fn run_until(&mut self, limit: Duration, done: impl Fn(&Harness) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let mut buf = vec![0u8; 65536];
        loop {
            self.flush().await;
            if done(self) {
                return true;
            }
            let wake = self
                .client
                .poll_timeout()
                .map(|t| tokio::time::Instant::from_std(t.checked_sub(self.offset).unwrap()))
                .unwrap_or(deadline)
                .min(deadline);
            tokio::select! {
                r = self.sock.recv_from(&mut buf) => {
                    let (n, from) = r.unwrap();
                    if from == self.client.server() {
                        let now = self.now();
                        if let Some(d) = self.client.handle_datagram(&buf[..n], now) {
                            self.received.push(d);
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= deadline {
                        self.flush().await;
                        return done(self);
                    }
                    let now = self.now();
                    self.client.handle_timeout(now);
                }
            }
        }
    }

    fn allocated(&self) -> Option<SocketAddr> {
        self.events.iter().find_map(|e| match e {
            TurnEvent::Allocated { relayed, .. } => Some(*relayed),
            _ => None,
        })
    }

    fn failed(&self) -> Option<TurnError> {
        self.events.iter().find_map(|e| match e {
            TurnEvent::Failed(err) => Some(err.clone()),
            _ => None,
        })
    }

    fn has(&self, f: impl Fn(&TurnEvent) -> bool) -> bool {
        self.events.iter().any(f)
    }
}

/// A UDP echo on loopback that also records who sent to it.
async fn echo() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<SocketAddr>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = tx.send(from);
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    (addr, rx)
}

fn fast(mut c: TurnConfig) -> TurnConfig {
    c.rto = Duration::from_millis(100);
    c.max_transmissions = 4;
    c
}

async fn allocate(server: &Coturn, user: &str, password: &str) -> Harness {
    let mut h = Harness::new(fast(TurnConfig::new(server.addr, user, password))).await;
    let ok = h
        .run_until(Duration::from_secs(5), |h| {
            h.allocated().is_some() || h.failed().is_some()
        })
        .await;
    assert!(ok, "no answer to Allocate: {}", server.log_tail());
    h
}

#[tokio::test]
async fn allocate_permit_bind_relay_refresh_release() {
    let server = Coturn::start(Auth::Users(&[("alice", "s3cret")]), &[]);
    let mut h = allocate(&server, "alice", "s3cret").await;
    let relayed = h.allocated().unwrap_or_else(|| panic!("{:?}", h.events));
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    assert_ne!(relayed.port(), server.addr.port());
    assert!(h.client.is_allocated());
    let mapped = h.events.iter().find_map(|e| match e {
        TurnEvent::Allocated { mapped, .. } => *mapped,
        _ => None,
    });
    assert_eq!(mapped, Some(h.sock.local_addr().unwrap()));

    // Nobody is reachable before the caller allows them.
    let (peer, mut seen) = echo().await;
    assert_eq!(
        h.client.send_to(peer, b"x"),
        Err(TurnError::NotPermitted { peer })
    );

    // Permission first, data through a Send indication (the channel may
    // not be bound yet), the answer back as Data or ChannelData.
    let now = h.now();
    h.client.allow_peer(peer, now).unwrap();
    assert!(
        h.run_until(Duration::from_secs(5), |h| h
            .has(|e| matches!(e, TurnEvent::PermissionCreated(_))))
            .await,
        "{:?}",
        h.events
    );
    h.client.send_to(peer, b"via send indication").unwrap();
    assert!(
        h.run_until(Duration::from_secs(5), |h| !h.received.is_empty())
            .await
    );
    assert_eq!(h.received[0], (peer, b"via send indication".to_vec()));
    // The echo saw the relayed address, not ours.
    assert_eq!(seen.recv().await, Some(relayed));

    // Channel bound: many datagrams round-trip as ChannelData.
    assert!(
        h.run_until(Duration::from_secs(5), |h| h
            .has(|e| matches!(e, TurnEvent::ChannelBound { .. })))
            .await
    );
    h.received.clear();
    // Paced in bursts of ten so that the echo (same runtime) keeps up: a
    // loopback socket buffer holds only about a hundred such datagrams.
    for burst in 0..20u32 {
        for i in burst * 10..burst * 10 + 10 {
            let mut payload = i.to_be_bytes().to_vec();
            payload.resize(1000, i as u8);
            h.client.send_to(peer, &payload).unwrap();
        }
        let want = (burst as usize + 1) * 10;
        h.run_until(Duration::from_secs(5), |h| h.received.len() >= want)
            .await;
    }
    assert_eq!(h.received.len(), 200);
    let mut order: Vec<u32> = h
        .received
        .iter()
        .map(|(_, d)| u32::from_be_bytes(d[..4].try_into().unwrap()))
        .collect();
    order.sort_unstable();
    assert_eq!(order, (0..200).collect::<Vec<_>>());
    assert!(
        h.received
            .iter()
            .all(|(from, d)| *from == peer && d.len() == 1000)
    );

    // Ten minutes later (client clock), the allocation, permission and
    // channel are all refreshed and the relay still works.
    h.offset = Duration::from_secs(590);
    h.events.clear();
    let now = h.now();
    h.client.handle_timeout(now);
    assert!(
        h.run_until(Duration::from_secs(5), |h| h
            .has(|e| matches!(e, TurnEvent::Refreshed { .. })))
            .await,
        "{:?} {}",
        h.events,
        server.log_tail()
    );
    assert!(h.failed().is_none(), "{:?}", h.events);
    h.received.clear();
    h.client.send_to(peer, b"after refresh").unwrap();
    assert!(
        h.run_until(Duration::from_secs(5), |h| !h.received.is_empty())
            .await
    );

    // While allocated, coturn holds the relayed port.
    assert!(std::net::UdpSocket::bind(relayed).is_err());

    // Release: the server confirms and closes the relayed port.
    let now = h.now();
    h.client.release(now);
    assert!(
        h.run_until(Duration::from_secs(5), |h| h
            .has(|e| *e == TurnEvent::Released))
            .await
    );
    assert!(h.client.is_done());
    assert_eq!(h.client.send_to(peer, b"x"), Err(TurnError::NotAllocated));
    let deadline = Instant::now() + Duration::from_secs(3);
    while std::net::UdpSocket::bind(relayed).is_err() {
        assert!(Instant::now() < deadline, "coturn still holds {relayed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn wrong_password_is_a_clear_credential_error() {
    let server = Coturn::start(Auth::Users(&[("alice", "s3cret")]), &[]);
    let h = allocate(&server, "alice", "wrong").await;
    let err = h.failed().unwrap_or_else(|| panic!("{:?}", h.events));
    assert!(matches!(err, TurnError::Unauthorized { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("rejected the credentials"), "{text}");
    assert!(text.contains("alice"), "{text}");
    assert!(
        !text.contains("wrong"),
        "the password must not be shown: {text}"
    );
}

fn rest_credentials(secret: &str, valid_for: Duration) -> (String, String) {
    let expiry = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + valid_for;
    let user = format!("{}:gshare", expiry.as_secs());
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(user.as_bytes());
    let pass = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (user, pass)
}

#[tokio::test]
async fn rest_shared_secret_credentials_allocate_and_relay() {
    let server = Coturn::start(Auth::Secret("t0p-secret"), &[]);
    let (user, pass) = rest_credentials("t0p-secret", Duration::from_secs(3600));
    let mut h = allocate(&server, &user, &pass).await;
    assert!(h.allocated().is_some(), "{:?}", h.events);
    let (peer, _seen) = echo().await;
    let now = h.now();
    h.client.allow_peer(peer, now).unwrap();
    h.run_until(Duration::from_secs(5), |h| {
        h.has(|e| matches!(e, TurnEvent::ChannelBound { .. }))
    })
    .await;
    h.client.send_to(peer, b"rest").unwrap();
    assert!(
        h.run_until(Duration::from_secs(5), |h| !h.received.is_empty())
            .await
    );
    assert_eq!(h.received[0].1, b"rest");

    // Another secret, or expired credentials, are refused.
    let (user, pass) = rest_credentials("other", Duration::from_secs(3600));
    let h = allocate(&server, &user, &pass).await;
    assert!(
        matches!(h.failed(), Some(TurnError::Unauthorized { .. })),
        "{:?}",
        h.events
    );
    let expiry = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() - Duration::from_secs(60);
    let user = expiry.as_secs().to_string();
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"t0p-secret").unwrap();
    mac.update(user.as_bytes());
    let pass = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let h = allocate(&server, &user, &pass).await;
    assert!(
        matches!(h.failed(), Some(TurnError::Unauthorized { .. })),
        "{:?}",
        h.events
    );
}

#[tokio::test]
async fn stale_nonce_is_renewed_transparently() {
    // Nonces live 1 s: the refresh two seconds later meets 438 first.
    let server = Coturn::start(Auth::Users(&[("bob", "b0b")]), &["--stale-nonce=1"]);
    let mut h = allocate(&server, "bob", "b0b").await;
    assert!(h.allocated().is_some(), "{:?}", h.events);
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.offset = Duration::from_secs(580);
    let now = h.now();
    h.client.handle_timeout(now);
    assert!(
        h.run_until(Duration::from_secs(5), |h| h
            .has(|e| matches!(e, TurnEvent::Refreshed { .. })))
            .await,
        "{:?} {}",
        h.events,
        server.log_tail()
    );
    assert!(h.failed().is_none());
    // Two Refresh transactions (distinct ids): the first met 438.
    let mut refreshes: Vec<&[u8]> = h
        .sent
        .iter()
        .filter(|d| d[..2] == [0x00, 0x04])
        .map(|d| &d[8..20])
        .collect();
    refreshes.dedup();
    assert!(
        refreshes.len() >= 2,
        "one refresh only: {}",
        server.log_tail()
    );
}

#[tokio::test]
async fn silent_server_is_unreachable_after_bounded_retransmissions() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let started = Instant::now();
    let mut h = Harness::new(fast(TurnConfig::new(addr, "u", "p"))).await;
    h.run_until(Duration::from_secs(10), |h| h.failed().is_some())
        .await;
    let err = h.failed().unwrap();
    assert_eq!(
        err,
        TurnError::Unreachable {
            server: addr,
            tries: 4
        }
    );
    assert!(err.to_string().contains("did not answer"), "{err}");
    // 0.1 + 0.2 + 0.4 + 0.8 s.
    assert!(started.elapsed() < Duration::from_secs(3));
    let mut buf = [0u8; 2048];
    silent.set_nonblocking(true).unwrap();
    let mut n = 0;
    while silent.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    assert_eq!(n, 4, "exactly max_transmissions requests");
}

#[tokio::test]
async fn garbage_answers_are_reported_as_not_turn() {
    let bad = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = bad.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = bad.recv_from(&mut buf).await {
            // A mangled copy of the request, an HTTP answer, and ChannelData
            // for a channel nobody bound.
            let mut mangled = buf[..n].to_vec();
            mangled[2] ^= 0x7f;
            let _ = bad.send_to(&mangled, from).await;
            let _ = bad.send_to(b"HTTP/1.1 400 Bad Request\r\n\r\n", from).await;
            let _ = bad.send_to(&[0x40, 0x00, 0x00, 0x02, 1, 2], from).await;
        }
    });
    let mut h = Harness::new(fast(TurnConfig::new(addr, "u", "p"))).await;
    h.run_until(Duration::from_secs(10), |h| h.failed().is_some())
        .await;
    let err = h.failed().unwrap();
    assert_eq!(err, TurnError::Garbage { server: addr });
    assert!(err.to_string().contains("not STUN/TURN"), "{err}");
    assert!(h.received.is_empty());
}

#[tokio::test]
async fn restarted_server_means_allocation_lost() {
    let mut server = Coturn::start(Auth::Users(&[("carol", "c4rol")]), &[]);
    let mut h = allocate(&server, "carol", "c4rol").await;
    assert!(h.allocated().is_some(), "{:?}", h.events);
    server.restart();
    // At refresh time the new server knows neither the nonce nor the
    // allocation: after the nonce dance it answers 437.
    h.offset = Duration::from_secs(590);
    let now = h.now();
    h.client.handle_timeout(now);
    h.run_until(Duration::from_secs(5), |h| h.failed().is_some())
        .await;
    let err = h.failed().unwrap_or_else(|| panic!("{:?}", h.events));
    assert!(matches!(err, TurnError::AllocationLost { .. }), "{err:?}");
    assert!(
        err.to_string().contains("lost our relay allocation"),
        "{err}"
    );
    assert!(h.client.is_done());

    // A server that is gone entirely: the refresh goes unanswered.
    let mut h = allocate(&server, "carol", "c4rol").await;
    assert!(h.allocated().is_some(), "{:?}", h.events);
    server.kill();
    h.offset = Duration::from_secs(590);
    let now = h.now();
    h.client.handle_timeout(now);
    h.run_until(Duration::from_secs(5), |h| h.failed().is_some())
        .await;
    let err = h.failed().unwrap_or_else(|| panic!("{:?}", h.events));
    assert!(matches!(err, TurnError::AllocationLost { .. }), "{err:?}");
    assert!(err.to_string().contains("did not answer"), "{err}");
}

/// gshare's relay datagram cap (`RELAY_MAX_DATAGRAM`) is coturn's UDP read
/// buffer, 16 KiB: ChannelData of exactly that size crosses both ways,
/// one byte more from the client is dropped, and a peer's longer datagram
/// is cut to the buffer less the 4-byte ChannelData header. Sent one at a
/// time, so socket buffers play no part.
#[tokio::test]
async fn relayed_datagram_limit_is_coturns_16_kib_buffer() {
    use gshare::ice::driver::RELAY_MAX_DATAGRAM;
    let server = Coturn::start(Auth::Users(&[("alice", "s3cret")]), &[]);
    let mut h = allocate(&server, "alice", "s3cret").await;
    let relayed = h.allocated().unwrap_or_else(|| panic!("{:?}", h.events));
    let peer_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer = peer_sock.local_addr().unwrap();
    let now = h.now();
    h.client.allow_peer(peer, now).unwrap();
    assert!(
        h.run_until(Duration::from_secs(5), |h| h
            .has(|e| matches!(e, TurnEvent::ChannelBound { .. })))
            .await
    );
    let most = RELAY_MAX_DATAGRAM - 4;
    let mut buf = vec![0u8; 65536];
    for (size, up, down) in [
        (most, Some(most), most),
        (most + 1, None, most),
        (60000, None, most),
    ] {
        h.client.send_to(peer, &vec![7u8; size]).unwrap();
        h.flush().await;
        let got = tokio::time::timeout(Duration::from_millis(500), peer_sock.recv_from(&mut buf))
            .await
            .ok()
            .map(|r| r.unwrap().0);
        assert_eq!(got, up, "client → peer, {size} bytes");
        peer_sock.send_to(&vec![9u8; size], relayed).await.unwrap();
        h.received.clear();
        h.run_until(Duration::from_secs(2), |h| !h.received.is_empty())
            .await;
        let got = h.received.first().map(|(_, d)| d.len());
        assert_eq!(got, Some(down), "peer → client, {size} bytes");
    }
}
