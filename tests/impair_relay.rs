//! The impairment relay (tests/support/impair.rs) that benchmarks put
//! between two peers: its per-packet model (loss, bottleneck, queue,
//! reordering, MTU) in virtual time, its MSS clamping on real gshare CONNECT
//! segments, and its forwarding rules over real loopback sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/impair.rs"]
mod impair;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use gshare::pseudotcp::segment::{
    ConnectOptions, FLAG_CTL, GSHARE_OPT_VERSION, GshareOption, HEADER_SIZE, Header,
    connect_payload,
};
use impair::{ImpairConfig, LinkDirection, Relay, Shaper, Verdict, clamp_gshare_connect};

fn connect_segment(max_datagram: u16) -> Vec<u8> {
    let h = Header {
        flags: FLAG_CTL,
        wnd: 65535,
        ..Header::default()
    };
    let mut d = h.encode().to_vec();
    d.extend(connect_payload(
        Some(6),
        Some(GshareOption {
            version: GSHARE_OPT_VERSION,
            features: 1,
            max_datagram,
        }),
    ));
    d
}

#[test]
fn clamps_the_gshare_connect_option_and_nothing_else() {
    let mut d = connect_segment(65507);
    assert!(clamp_gshare_connect(&mut d, 1400));
    let (h, payload) = Header::decode(&d).expect("still a segment");
    assert_eq!(h.flags, FLAG_CTL);
    let opts = ConnectOptions::parse(&payload[1..]);
    assert_eq!(opts.window_scale, Some(6));
    assert_eq!(opts.gshare.map(|g| g.max_datagram), Some(1400));

    // Already small enough: untouched.
    let mut small = connect_segment(1200);
    let before = small.clone();
    assert!(!clamp_gshare_connect(&mut small, 1400));
    assert_eq!(small, before);

    // A data segment whose payload happens to look like the option.
    let mut data = Header::default().encode().to_vec();
    data.extend(connect_payload(
        None,
        Some(GshareOption {
            version: 1,
            features: 0,
            max_datagram: 9000,
        }),
    ));
    let before = data.clone();
    assert!(!clamp_gshare_connect(&mut data, 1400));
    assert_eq!(data, before);

    // A STUN binding request (type 0x0001) and truncated junk.
    let mut stun = vec![0x00, 0x01, 0x00, 0x00];
    stun.extend([0x21; 16]);
    assert!(!clamp_gshare_connect(&mut stun, 1400));
    let mut cut = connect_segment(65507);
    cut.truncate(HEADER_SIZE + 5);
    assert!(!clamp_gshare_connect(&mut cut, 1400));
}

#[test]
fn loss_follows_the_seed_and_the_rate() {
    let dir = LinkDirection {
        loss: 0.01,
        ..LinkDirection::default()
    };
    let count = |seed| {
        let mut s = Shaper::new(dir.clone(), None, seed);
        let t = Instant::now();
        (0..100_000)
            .filter(|_| s.admit(t, 1000) == Verdict::Lost)
            .count()
    };
    let a = count(7);
    assert_eq!(a, count(7), "same seed, same losses");
    assert_ne!(a, count(8), "another seed, other losses");
    assert!((800..1200).contains(&a), "{a} losses of 100000 at 1 %");
}

#[test]
fn bottleneck_serializes_queues_and_drops_tail() {
    // 100 Mbit/s: a 1400-byte IP packet takes 112 µs. Burst 2800 bytes:
    // the first packet and two more leave at once. Queue 14000 bytes: ten
    // more may wait.
    let dir = LinkDirection {
        delay: Duration::from_millis(25),
        rate_bps: Some(100_000_000),
        burst: 2800,
        queue: 14_000,
        ..LinkDirection::default()
    };
    let mut s = Shaper::new(dir, Some(1500), 1);
    let t0 = Instant::now();
    let service = Duration::from_micros(112);
    let mut delivered = Vec::new();
    let mut dropped = 0;
    for _ in 0..20 {
        match s.admit(t0, 1400 - 28) {
            Verdict::Deliver(at, false) => delivered.push(at),
            Verdict::QueueFull => dropped += 1,
            v => panic!("unexpected {v:?}"),
        }
    }
    // 3 at once + 10 queued.
    assert_eq!(delivered.len(), 13, "delivered {delivered:?}");
    assert_eq!(dropped, 7);
    assert_eq!(delivered[0], delivered[2]);
    let base = t0 + Duration::from_millis(25);
    for (i, at) in delivered.iter().enumerate() {
        let off = at.duration_since(base);
        assert!(off >= service, "packet {i} at {off:?}");
    }
    // Back-to-back spacing of one service time once the bucket is empty.
    for w in delivered[2..].windows(2) {
        let gap = w[1].duration_since(w[0]);
        assert!(
            gap.abs_diff(service) < Duration::from_micros(2),
            "gap {gap:?}"
        );
    }
    // The queue drains at the link rate: later the whole queue is free again.
    let later = t0 + Duration::from_millis(10);
    assert_eq!(s.backlog(later), 0);
    assert!(matches!(s.admit(later, 1372), Verdict::Deliver(..)));
    // Bigger than the MTU: dropped.
    assert_eq!(s.admit(later, 1500), Verdict::Oversize);
}

#[test]
fn reordered_packets_are_overtaken() {
    let dir = LinkDirection {
        delay: Duration::from_millis(5),
        reorder: 0.5,
        reorder_delay: Duration::from_millis(3),
        ..LinkDirection::default()
    };
    let mut s = Shaper::new(dir, None, 3);
    let t0 = Instant::now();
    let mut held = 0;
    for i in 0..1000u32 {
        let t = t0 + Duration::from_micros(u64::from(i) * 100);
        match s.admit(t, 100) {
            Verdict::Deliver(at, true) => {
                held += 1;
                assert_eq!(at, t + Duration::from_millis(8));
            }
            Verdict::Deliver(at, false) => assert_eq!(at, t + Duration::from_millis(5)),
            v => panic!("unexpected {v:?}"),
        }
    }
    assert!((400..600).contains(&held), "{held} of 1000 reordered");
}

fn recv(s: &UdpSocket) -> (Vec<u8>, std::net::SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = s.recv_from(&mut buf).expect("a datagram through the relay");
    (buf[..n].to_vec(), from)
}

#[test]
fn relay_forwards_from_the_announced_port_after_learning_both_peers() {
    let delay = Duration::from_millis(20);
    let dir = LinkDirection {
        delay,
        ..LinkDirection::default()
    };
    let relay = Relay::start(ImpairConfig {
        a_to_b: dir.clone(),
        b_to_a: dir,
        ..ImpairConfig::transparent(9)
    })
    .expect("relay");
    let a = UdpSocket::bind("127.0.0.1:0").expect("bind a");
    let b = UdpSocket::bind("127.0.0.1:0").expect("bind b");
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
    }
    // A talks to B's announced address before B has said anything: the
    // relay learns A but cannot deliver yet.
    a.send_to(b"early", relay.addr_b()).expect("send");
    std::thread::sleep(Duration::from_millis(50));
    let st = relay.stats();
    assert_eq!(st.a_to_b.received, 1);
    assert_eq!(st.a_to_b.unrouted, 1);

    // B answers to A's announced address: now both are known.
    let t = Instant::now();
    b.send_to(b"hello A", relay.addr_a()).expect("send");
    let (data, from) = recv(&a);
    assert!(t.elapsed() >= delay, "{:?}", t.elapsed());
    assert_eq!(data, b"hello A");
    assert_eq!(from, relay.addr_b(), "A sees B's announced address");

    let t = Instant::now();
    a.send_to(b"hello B", relay.addr_b()).expect("send");
    let (data, from) = recv(&b);
    assert!(t.elapsed() >= delay, "{:?}", t.elapsed());
    assert_eq!(data, b"hello B");
    assert_eq!(from, relay.addr_a(), "B sees A's announced address");

    std::thread::sleep(Duration::from_millis(50));
    let st = relay.stats();
    assert_eq!(st.a_to_b.delivered, 1);
    assert_eq!(st.b_to_a.delivered, 1);
    assert_eq!(st.a_to_b.max_datagram, 7);
}

#[test]
fn relay_clamps_connect_segments_in_flight() {
    let relay = Relay::start(ImpairConfig {
        clamp_datagram: Some(1400),
        ..ImpairConfig::transparent(1)
    })
    .expect("relay");
    let a = UdpSocket::bind("127.0.0.1:0").expect("bind a");
    let b = UdpSocket::bind("127.0.0.1:0").expect("bind b");
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
    }
    b.send_to(b"learn B", relay.addr_a()).expect("send");
    // Let the relay see B first (within one wake-up it reads PB first).
    std::thread::sleep(Duration::from_millis(50));
    a.send_to(&connect_segment(65507), relay.addr_b())
        .expect("send");
    let (data, _) = recv(&b);
    let (_, payload) = Header::decode(&data).expect("segment");
    let opts = ConnectOptions::parse(&payload[1..]);
    assert_eq!(opts.gshare.map(|g| g.max_datagram), Some(1400));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(relay.stats().a_to_b.clamped, 1);
}
