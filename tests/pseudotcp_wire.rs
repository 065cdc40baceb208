//! Byte-exact exchanges with hand-crafted libjingle 0.4 and libnice segments
//! (docs/protocol.md §C): what gshare answers, and how it reads the peer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use gshare::pseudotcp::segment::{FLAG_CTL, FLAG_FIN, FLAG_RST, Header};
use gshare::pseudotcp::{Config, Error, Event, PseudoTcp, State};

fn seg(seq: u32, ack: u32, flags: u8, wnd: u16, ts: u32, tsecr: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Header {
        conv: 0,
        seq,
        ack,
        flags,
        wnd,
        tsval: ts,
        tsecr,
    }
    .encode()
    .to_vec();
    v.extend_from_slice(payload);
    v
}

fn drain(t: &mut PseudoTcp, now: Instant) -> Vec<(Header, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while t.poll_transmit(now, &mut buf).is_some() {
        let (h, p) = Header::decode(&buf).unwrap();
        out.push((h, p.to_vec()));
    }
    out
}

#[test]
fn passive_open_from_libjingle_04() {
    let now = Instant::now();
    let mut t = PseudoTcp::new(Config::default(), now);
    // LJ04 CONNECT: payload is the single byte 00, window 61440, ts 5000.
    t.handle_datagram(now, &seg(0, 0, FLAG_CTL, 61440, 5000, 0, &[0]));
    assert_eq!(t.state(), State::SynReceived);
    let out = drain(&mut t, now);
    assert_eq!(out.len(), 1);
    let (h, p) = &out[0];
    assert_eq!((h.conv, h.seq, h.ack, h.flags), (0, 0, 1, FLAG_CTL));
    // No scaling with LJ04: the 4 MiB buffer shows as 65535.
    assert_eq!(h.wnd, 65535);
    assert_eq!(h.tsecr, 5000);
    // Our CONNECT: 00, window scale 7, gshare option (LJ04 reads only 00).
    assert_eq!(p, &[0, 3, 1, 7, 0x67, 4, 1, 1, 0x05, 0x78]);
    assert!(!p.contains(&254), "never offer NICE's FIN-ACK option");

    // LJ04 acks our 10 control bytes and sends a request right away.
    let req = b"GET /temporary/abc/x HTTP/1.1\r\n\r\n";
    t.handle_datagram(now, &seg(1, 10, 0, 61440, 5010, h.tsval, req));
    assert_eq!(t.state(), State::Established);
    assert_eq!(t.poll_event(), Some(Event::Connected));
    assert_eq!(t.poll_event(), Some(Event::Readable));
    assert!(!t.peer_is_gshare());
    assert_eq!(t.mss(), 1284);
    let mut buf = [0u8; 100];
    assert_eq!(t.recv(&mut buf), Ok(req.len()));
    assert_eq!(&buf[..req.len()], req);

    // Our answer: seq continues after our CONNECT, acks their bytes, and a
    // short request segment is acked immediately (LJ04 runs Nagle).
    assert_eq!(t.send(b"HTTP/1.1 200 OK\r\n"), Ok(17));
    let out = drain(&mut t, now);
    assert_eq!(out.len(), 1);
    let (h, p) = &out[0];
    assert_eq!((h.seq, h.ack, h.flags), (10, 1 + req.len() as u32, 0));
    assert_eq!(h.tsecr, 5010);
    assert_eq!(p, b"HTTP/1.1 200 OK\r\n");
    assert!(out.iter().all(|(h, _)| h.flags & FLAG_FIN == 0));
}

#[test]
fn active_open_towards_libjingle_04() {
    let now = Instant::now();
    let mut t = PseudoTcp::new(Config::default(), now);
    t.connect(now).unwrap();
    let out = drain(&mut t, now);
    assert_eq!(out.len(), 1);
    // Before the peer's CONNECT our window is already scaled by our offer
    // (NICE applies the scale from the same segment); LJ04 reads 32768.
    assert_eq!(out[0].0.wnd, 32768);
    // LJ04 passive reply: its own bare CONNECT, acking our 10 bytes.
    t.handle_datagram(now, &seg(0, 10, FLAG_CTL, 61440, 77, out[0].0.tsval, &[0]));
    assert_eq!(t.state(), State::Established);
    assert_eq!(t.window_scales(), (0, 0));
    // Our ack of its CONNECT goes out at once, window unscaled now.
    let out = drain(&mut t, now);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0.seq, out[0].0.ack, out[0].0.wnd), (10, 1, 65535));
    assert_eq!(out[0].1.len(), 0);
}

#[test]
fn libnice_connect_options_are_honoured() {
    let now = Instant::now();
    let mut t = PseudoTcp::new(Config::default(), now);
    t.connect(now).unwrap();
    let ours = drain(&mut t, now);
    // NICE (simultaneous open): 00 03 01 02 FE 01 00, i.e. scale 2 + FIN-ACK.
    t.handle_datagram(
        now,
        &seg(0, 0, FLAG_CTL, 1000, 1, 0, &[0, 3, 1, 2, 0xfe, 1, 0]),
    );
    assert_eq!(t.state(), State::Established);
    assert_eq!(t.window_scales(), (7, 2));
    assert!(!t.peer_is_gshare());
    // It acks our CONNECT with a window field of 1000 → 4000 bytes.
    t.handle_datagram(now, &seg(7, 10, 0, 1000, 2, ours[0].0.tsval, &[]));
    let _ = drain(&mut t, now);
    assert_eq!(t.send(&[1u8; 10_000]), Ok(10_000));
    let out = drain(&mut t, now);
    let sent: usize = out.iter().map(|(_, p)| p.len()).sum();
    // Three 1284-byte segments fit in 4000; the 148-byte rest would be a
    // silly window.
    assert_eq!(sent, 3 * 1284);
    for (h, _) in &out {
        assert_eq!(h.ack, 7);
        assert_eq!(h.wnd, (4 << 20 >> 7) as u16);
    }
    // NICE never sends FIN to us (we did not offer 254); a stray one is
    // ignored rather than closing anything.
    t.handle_datagram(now, &seg(7, 10, FLAG_FIN, 1000, 3, 0, &[]));
    assert_eq!(t.state(), State::Established);
}

#[test]
fn malformed_and_foreign_segments_change_nothing() {
    let now = Instant::now();
    let mut t = PseudoTcp::new(Config::default(), now);
    // Unknown control code.
    t.handle_datagram(now, &seg(0, 0, FLAG_CTL, 100, 1, 0, &[9]));
    // Another conversation.
    let mut other = seg(0, 0, FLAG_CTL, 100, 1, 0, &[0]);
    other[3] = 1;
    t.handle_datagram(now, &other);
    // Truncated header, empty datagram, oversized datagram.
    t.handle_datagram(now, &[0u8; 23]);
    t.handle_datagram(now, &[]);
    t.handle_datagram(now, &vec![0u8; 70_000]);
    // Data before any CONNECT.
    t.handle_datagram(now, &seg(1, 0, 0, 100, 1, 0, b"hello"));
    // RST while listening.
    t.handle_datagram(now, &seg(0, 0, FLAG_RST, 100, 1, 0, &[]));
    assert_eq!(t.state(), State::Listen);
    assert!(drain(&mut t, now).is_empty());
    assert_eq!(t.poll_event(), None);
    // A CONNECT with garbage options is still a CONNECT.
    t.handle_datagram(now, &seg(0, 0, FLAG_CTL, 100, 1, 0, &[0, 0x99, 200, 1]));
    assert_eq!(t.state(), State::SynReceived);
}

#[test]
fn random_garbage_never_panics() {
    let now = Instant::now();
    let mut rng = gshare::pseudotcp::sim::Rng::new(99);
    for open in [false, true] {
        let mut t = PseudoTcp::new(Config::default(), now);
        if open {
            t.connect(now).unwrap();
        }
        let mut buf = Vec::new();
        for i in 0..20_000u32 {
            let len = rng.range(0, 200);
            let mut d: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if d.len() >= 24 && i % 2 == 0 {
                d[..4].copy_from_slice(&[0; 4]); // our conversation
                d[13] &= 0x03; // no RST: keep the engine alive
            }
            let at = now + Duration::from_millis(u64::from(i));
            t.handle_datagram(at, &d);
            t.handle_timeout(at);
            while t.poll_transmit(at, &mut buf).is_some() {}
            let _ = t.send(&d);
            let mut r = [0u8; 64];
            let _ = t.recv(&mut r);
        }
    }
}

#[test]
fn rst_from_peer_is_connection_reset() {
    let now = Instant::now();
    let mut t = PseudoTcp::new(Config::default(), now);
    t.handle_datagram(now, &seg(0, 0, FLAG_CTL, 61440, 1, 0, &[0]));
    drain(&mut t, now);
    t.handle_datagram(now, &seg(1, 10, 0, 61440, 2, 0, &[]));
    assert_eq!(t.state(), State::Established);
    t.handle_datagram(now, &seg(1, 10, FLAG_RST, 0, 3, 0, &[]));
    assert_eq!(t.state(), State::Closed);
    let evs: Vec<_> = std::iter::from_fn(|| t.poll_event()).collect();
    assert_eq!(
        evs.last(),
        Some(&Event::Closed(Some(Error::ConnectionReset)))
    );
    let e: std::io::Error = Error::ConnectionReset.into();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
}
