//! The impairment relay (tests/support/impair.rs) that benchmarks put
//! between two peers: its per-packet model (loss, bottleneck, queue,
//! reordering, MTU) in virtual time, its MSS clamping on real gshare CONNECT
//! segments, and its forwarding rules over real loopback sockets; several
//! flows through one shared bottleneck (`MultiRelay`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/impair.rs"]
mod impair;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use gshare::pseudotcp::segment::{
    ConnectOptions, FLAG_CTL, GSHARE_OPT_VERSION, GshareOption, HEADER_SIZE, Header,
    connect_payload,
};
use impair::{
    ImpairConfig, LinkDirection, MultiRelay, Relay, Shaper, Verdict, clamp_gshare_connect,
};

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

#[test]
fn two_flows_through_one_bottleneck_share_it_and_the_queue_delay_is_measured() {
    // 100 Mbit/s, 50 ms RTT, a queue of one BDP (625 000 bytes): two flows
    // each offering 80 Mbit/s (1400-byte IP packets every 140 µs, the
    // second 70 µs later) through ONE shaper, for 3 s of virtual time.
    let rate = 100_000_000u64;
    let queue = 625_000usize;
    let delay = Duration::from_millis(25);
    let dir = LinkDirection {
        delay,
        rate_bps: Some(rate),
        burst: 3000,
        queue,
        ..LinkDirection::default()
    };
    let mut s = Shaper::new(dir, Some(1500), 5);
    let t0 = Instant::now();
    // Random gaps (uniform 0–280 µs, mean 140 µs) so that neither flow is
    // phase-locked to the departures of a full drop-tail queue.
    let mut rng = gshare::pseudotcp::sim::Rng::new(17);
    let mut next = [t0, t0 + Duration::from_micros(70)];
    let end = t0 + Duration::from_secs(3);
    let service = Duration::from_secs_f64(1400.0 * 8.0 / rate as f64);
    let mut bytes = [0u64; 2];
    let mut drops = [0u64; 2];
    // Queue delays of packets arriving in the last 2 s (queue full).
    let mut late = Vec::new();
    let mut max_wait = Duration::ZERO;
    loop {
        let flow = usize::from(next[1] < next[0]);
        let t = next[flow];
        if t >= end {
            break;
        }
        next[flow] = t + Duration::from_secs_f64(rng.unit() * 280e-6);
        match s.admit(t, 1400 - 28) {
            Verdict::Deliver(at, false) => {
                let waited = s.last_queue_delay();
                // The figure is exactly what the packet spent before
                // serialization and propagation.
                assert_eq!(at - t - delay - service, waited);
                max_wait = max_wait.max(waited);
                if t >= t0 + Duration::from_secs(1) {
                    late.push(waited);
                }
                if at <= end + delay {
                    bytes[flow] += 1400;
                }
            }
            Verdict::QueueFull => drops[flow] += 1,
            v => panic!("unexpected {v:?}"),
        }
    }
    let total = bytes[0] + bytes[1];
    // The link carries its rate (less the ≈25 ms still queued at the end)…
    let link = rate / 8 * 3;
    assert!(
        total > link * 95 / 100 && total <= link + 3000,
        "{total} of {link} bytes"
    );
    // …shared evenly between the two flows, both of which lose packets.
    let share = bytes[0] as f64 / total as f64;
    assert!((0.48..=0.52).contains(&share), "flow 0 got {share:.3}");
    assert!(drops[0] > 0 && drops[1] > 0, "drops {drops:?}");
    // A full one-BDP queue at the link rate adds one RTT: 50 ms.
    let mean = late.iter().sum::<Duration>() / late.len() as u32;
    let full = Duration::from_secs_f64(queue as f64 * 8.0 / rate as f64);
    assert!(
        mean.abs_diff(full) < Duration::from_millis(1),
        "mean queue delay {mean:?}, a full queue is {full:?}"
    );
    assert!(max_wait <= full, "max {max_wait:?}");
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

#[test]
fn multi_relay_keeps_flows_apart_and_shares_one_bottleneck() {
    // 8 Mbit/s (1 MB/s), burst 3000: 40 datagrams of 1000 bytes (1028 on
    // the link) sent at once, 20 per flow, take ≈41 ms to leave. Through a
    // shared queue the last waits ≈38 ms; with a queue per flow it would
    // wait ≈18 ms.
    let dir = LinkDirection {
        rate_bps: Some(8_000_000),
        burst: 3000,
        ..LinkDirection::default()
    };
    let relay = MultiRelay::start(
        ImpairConfig {
            a_to_b: dir.clone(),
            b_to_a: dir,
            ..ImpairConfig::transparent(4)
        },
        2,
    )
    .expect("relay");
    assert_eq!(relay.flows(), 2);
    let peers: Vec<(UdpSocket, UdpSocket)> = (0..2)
        .map(|_| {
            let a = UdpSocket::bind("127.0.0.1:0").expect("bind a");
            let b = UdpSocket::bind("127.0.0.1:0").expect("bind b");
            for s in [&a, &b] {
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
            }
            (a, b)
        })
        .collect();
    // Each B makes itself known (unrouted: A is not known yet), then each
    // A says who it is.
    for (i, (a, b)) in peers.iter().enumerate() {
        b.send_to(format!("B{i}").as_bytes(), relay.addr_a(i))
            .expect("send");
        std::thread::sleep(Duration::from_millis(30));
        a.send_to(format!("A{i}").as_bytes(), relay.addr_b(i))
            .expect("send");
    }
    for (i, (a, b)) in peers.iter().enumerate() {
        let (data, from) = recv(b);
        assert_eq!(data, format!("A{i}").as_bytes());
        assert_eq!(from, relay.addr_a(i), "B{i} sees A{i}'s announced address");
        // B's first datagram came before A was known: dropped. Again.
        b.send_to(format!("B{i}").as_bytes(), relay.addr_a(i))
            .expect("send");
        let (data, from) = recv(a);
        assert_eq!(data, format!("B{i}").as_bytes());
        assert_eq!(from, relay.addr_b(i), "A{i} sees B{i}'s announced address");
    }
    std::thread::sleep(Duration::from_millis(100));
    relay.reset_max();
    let before = relay.stats();
    // The burst: both flows at once.
    for k in 0..40 {
        let (a, _) = &peers[k % 2];
        a.send_to(&[k as u8; 1000], relay.addr_b(k % 2))
            .expect("send");
    }
    for (i, (_, b)) in peers.iter().enumerate() {
        for _ in 0..20 {
            let (data, from) = recv(b);
            assert_eq!(data.len(), 1000);
            assert_eq!(usize::from(data[0]) % 2, i, "flow {i} got another's data");
            assert_eq!(from, relay.addr_a(i));
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    let after = relay.stats();
    for i in 0..2 {
        let (x, y) = (before[i].a_to_b, after[i].a_to_b);
        assert_eq!(y.delivered - x.delivered, 20, "flow {i}: {y:?}");
        assert_eq!(y.delivered_bytes - x.delivered_bytes, 20_000);
        assert_eq!(y.shaped - x.shaped, 20);
    }
    let total = relay.total().a_to_b;
    assert_eq!(total.delivered, 42);
    assert!(
        total.max_queue_delay >= Duration::from_millis(28)
            && total.max_queue_delay < Duration::from_millis(500),
        "the last of 40 waited {:?}",
        total.max_queue_delay
    );
    assert!(total.mean_queue_delay() > Duration::from_millis(5));
}
