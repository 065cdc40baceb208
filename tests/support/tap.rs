//! A UDP relay between two peers on loopback that records every datagram
//! and can alter one: an attacker on the peer-to-peer path.
//!
//! Wiring as tests/support/impair.rs (with gshare's hidden `--advertise`):
//! the relay owns PA and PB on 127.0.0.1; peer A announces PA, peer B
//! announces PB. A datagram arriving at PB comes from A: the relay learns
//! A's real address from it and forwards it to B from PA (and the mirror
//! image). Until both real addresses are known, datagrams are dropped (ICE
//! retries them).
//!
//! Hooks: every forwarded datagram is appended to the capture (both
//! directions); `flip_after` makes the relay flip one byte in the middle of
//! the first datagram of at least `flip_min_len` bytes that travels after
//! that many such datagrams have passed, so the change lands in stream data
//! (STUN checks are small) rather than in a handshake.
#![allow(dead_code)]

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the relay does besides forwarding.
#[derive(Debug, Clone, Copy, Default)]
pub struct TapConfig {
    /// Flip one byte of one large datagram after this many large ones.
    pub flip_after: Option<u64>,
    /// "Large": at least this many bytes (default 1000 when flipping).
    pub flip_min_len: usize,
    /// Keep a copy of every forwarded datagram.
    pub capture: bool,
}

/// A running relay; stopped (thread joined) on drop.
pub struct Tap {
    pub port_a: u16,
    pub port_b: u16,
    captured: Arc<Mutex<Vec<Vec<u8>>>>,
    flipped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn bind() -> io::Result<UdpSocket> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    let sock = socket2::SockRef::from(&s);
    let _ = sock.set_recv_buffer_size(16 << 20);
    let _ = sock.set_send_buffer_size(16 << 20);
    s.set_read_timeout(Some(Duration::from_millis(5)))?;
    Ok(s)
}

impl Tap {
    pub fn start(config: TapConfig) -> io::Result<Tap> {
        let a = bind()?;
        let b = bind()?;
        let port_a = a.local_addr()?.port();
        let port_b = b.local_addr()?.port();
        let captured = Arc::new(Mutex::new(Vec::new()));
        let flipped = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (cap, fl, st) = (captured.clone(), flipped.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("tap-relay".into())
            .spawn(move || run(config, a, b, cap, fl, st))?;
        Ok(Tap {
            port_a,
            port_b,
            captured,
            flipped,
            stop,
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:PA`, for peer A's `--advertise`.
    pub fn addr_a(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port_a))
    }

    /// `127.0.0.1:PB`, for peer B's `--advertise`.
    pub fn addr_b(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port_b))
    }

    /// Every datagram forwarded so far (when capturing).
    pub fn captured(&self) -> Vec<Vec<u8>> {
        self.captured.lock().unwrap().clone()
    }

    /// How many bytes were flipped (0 or 1).
    pub fn flipped(&self) -> u64 {
        self.flipped.load(Ordering::Relaxed)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    config: TapConfig,
    a: UdpSocket,
    b: UdpSocket,
    captured: Arc<Mutex<Vec<Vec<u8>>>>,
    flipped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let min_len = if config.flip_min_len == 0 {
        1000
    } else {
        config.flip_min_len
    };
    let mut real_a: Option<SocketAddr> = None;
    let mut real_b: Option<SocketAddr> = None;
    let mut large = 0u64;
    let mut buf = vec![0u8; 65536];
    let a2 = a.try_clone().unwrap();
    let b2 = b.try_clone().unwrap();
    a2.set_nonblocking(true).unwrap();
    b2.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::Relaxed) {
        let mut any = false;
        // at_b: arrived at PB, so it comes from A and goes to B.
        for (at_b, sock) in [(true, &b2), (false, &a2)] {
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                any = true;
                if at_b {
                    real_a = Some(from);
                } else {
                    real_b = Some(from);
                }
                let (Some(ra), Some(rb)) = (real_a, real_b) else {
                    continue;
                };
                let data = &mut buf[..n];
                if n >= min_len
                    && let Some(after) = config.flip_after
                {
                    if large == after && flipped.load(Ordering::Relaxed) == 0 {
                        data[n / 2] ^= 0x20;
                        flipped.store(1, Ordering::Relaxed);
                    }
                    large += 1;
                }
                if config.capture {
                    captured.lock().unwrap().push(data.to_vec());
                }
                let (out, to) = if at_b { (&a, rb) } else { (&b, ra) };
                let _ = out.send_to(data, to);
            }
        }
        if !any {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}
