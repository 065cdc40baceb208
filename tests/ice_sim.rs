//! The Google-dialect ICE agent on virtual time: two agents connected
//! through a simulated network with latency, loss, a NAT and dying paths.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gshare::ice::stun::{Message, MessageType};
use gshare::ice::{AddRemote, Candidate, CandidateType, IceAgent, IceConfig, IceEvent, Received};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Node {
    agent: IceAgent,
    /// Real address of each socket.
    sockets: Vec<SocketAddr>,
    events: Vec<(Duration, IceEvent)>,
    data: Vec<(SocketAddr, Vec<u8>)>,
    sent_errors: Vec<u16>,
}

/// (node, socket, visible source, payload).
type InFlight = (usize, usize, SocketAddr, Vec<u8>);

type DropRule = Box<dyn FnMut(Duration, SocketAddr, SocketAddr, &[u8]) -> bool>;

struct Net {
    start: Instant,
    now: Instant,
    nodes: Vec<Node>,
    /// deliver_at → (node, socket, from, payload); the u64 keeps FIFO order.
    in_flight: BTreeMap<(Instant, u64), InFlight>,
    seq: u64,
    latency: Box<dyn Fn(SocketAddr, SocketAddr) -> Duration>,
    drop: DropRule,
    /// (internal, external) source NAT mappings.
    nat: Vec<(SocketAddr, SocketAddr)>,
}

impl Net {
    fn new(node_sockets: &[&[&str]], seed: u64) -> Net {
        let start = Instant::now();
        let nodes = node_sockets
            .iter()
            .enumerate()
            .map(|(n, socks)| {
                let mut agent = IceAgent::new(IceConfig::new("private-1", seed + n as u64), start);
                let sockets: Vec<SocketAddr> = socks.iter().map(|s| addr(s)).collect();
                for (i, a) in sockets.iter().enumerate() {
                    let c = agent.make_local_candidate(*a, CandidateType::Local);
                    agent.add_local_candidate(i, c);
                }
                Node {
                    agent,
                    sockets,
                    events: Vec::new(),
                    data: Vec::new(),
                    sent_errors: Vec::new(),
                }
            })
            .collect();
        Net {
            start,
            now: start,
            nodes,
            in_flight: BTreeMap::new(),
            seq: 0,
            latency: Box::new(|_, _| Duration::from_millis(10)),
            drop: Box::new(|_, _, _, _| false),
            nat: Vec::new(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn candidates(&self, n: usize) -> Vec<Candidate> {
        self.nodes[n].agent.local_candidates().cloned().collect()
    }

    /// Gives node `to` all of node `from`'s candidates.
    fn signal(&mut self, from: usize, to: usize) {
        let now = self.now;
        for c in self.candidates(from) {
            assert_eq!(
                self.nodes[to].agent.add_remote_candidate(now, c),
                AddRemote::Added
            );
        }
    }

    fn route(&mut self, node: usize, socket: usize, dest: SocketAddr, payload: Vec<u8>) {
        let src = self.nodes[node].sockets[socket];
        let elapsed = self.elapsed();
        if (self.drop)(elapsed, src, dest, &payload) {
            return;
        }
        let visible_src = self
            .nat
            .iter()
            .find(|(i, _)| *i == src)
            .map_or(src, |(_, e)| *e);
        let real_dest = self
            .nat
            .iter()
            .find(|(_, e)| *e == dest)
            .map_or(dest, |(i, _)| *i);
        let target = self.nodes.iter().enumerate().find_map(|(n, node)| {
            node.sockets
                .iter()
                .position(|s| *s == real_dest)
                .map(|s| (n, s))
        });
        if let Some((n, s)) = target {
            let at = self.now + (self.latency)(src, real_dest);
            self.seq += 1;
            self.in_flight
                .insert((at, self.seq), (n, s, visible_src, payload));
        }
    }

    fn flush(&mut self) {
        for n in 0..self.nodes.len() {
            while let Some(t) = self.nodes[n].agent.poll_transmit(self.now) {
                if let Ok(m) = Message::parse(&t.payload)
                    && m.kind == MessageType::BindingErrorResponse
                {
                    let code = m.error.map_or(0, |e| e.code);
                    self.nodes[n].sent_errors.push(code);
                }
                self.route(n, t.socket, t.destination, t.payload);
            }
            while let Some(e) = self.nodes[n].agent.poll_event() {
                let at = self.elapsed();
                self.nodes[n].events.push((at, e));
            }
        }
    }

    /// Sends one data datagram from node `n` on its selected pair.
    fn send_data(&mut self, n: usize, payload: &[u8]) -> bool {
        match self.nodes[n].agent.selected() {
            Some((socket, dest)) => {
                self.route(n, socket, dest, payload.to_vec());
                true
            }
            None => false,
        }
    }

    /// Runs until `elapsed() >= until`.
    fn run_until(&mut self, until: Duration) {
        let deadline = self.start + until;
        loop {
            self.flush();
            let mut next = self.in_flight.keys().next().map(|k| k.0);
            for node in &self.nodes {
                if let Some(t) = node.agent.poll_timeout() {
                    next = Some(next.map_or(t, |n: Instant| n.min(t)));
                }
            }
            let Some(next) = next.filter(|t| *t <= deadline) else {
                self.now = deadline;
                return;
            };
            self.now = self.now.max(next);
            while let Some(entry) = self.in_flight.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let (n, s, from, payload) = entry.remove();
                let now = self.now;
                if self.nodes[n].agent.handle_datagram(now, s, from, &payload) == Received::Data {
                    self.nodes[n].data.push((from, payload));
                }
            }
            for node in &mut self.nodes {
                if node.agent.poll_timeout().is_some_and(|t| t <= self.now) {
                    node.agent.handle_timeout(self.now);
                }
            }
        }
    }

    fn first_event(&self, n: usize, pred: impl Fn(&IceEvent) -> bool) -> Option<Duration> {
        self.nodes[n]
            .events
            .iter()
            .find(|(_, e)| pred(e))
            .map(|(t, _)| *t)
    }
}

fn connected_pair() -> Net {
    let mut net = Net::new(&[&["10.0.0.1:1000"], &["10.0.0.2:2000"]], 1);
    net.signal(0, 1);
    net.signal(1, 0);
    net
}

/// Data datagrams in the tests start with two zero bytes, like PseudoTCP.
fn data(i: u32) -> Vec<u8> {
    let mut v = vec![0, 0, 0, 0];
    v.extend_from_slice(&i.to_be_bytes());
    v.extend_from_slice(&[0xab; 30]);
    v
}

#[test]
fn two_agents_connect_and_exchange_data() {
    let mut net = connected_pair();
    net.run_until(Duration::from_secs(1));
    for n in 0..2 {
        let agent = &net.nodes[n].agent;
        assert!(agent.is_writable(), "node {n} not writable");
        let t = net
            .first_event(n, |e| *e == IceEvent::Writable)
            .expect("Writable event");
        assert!(t < Duration::from_millis(200), "took {t:?}");
    }
    assert_eq!(
        net.nodes[0].agent.selected(),
        Some((0, addr("10.0.0.2:2000")))
    );
    assert_eq!(
        net.nodes[1].agent.selected(),
        Some((0, addr("10.0.0.1:1000")))
    );
    assert!(matches!(
        net.nodes[0].events.iter().find(|(_, e)| matches!(e, IceEvent::SelectedPairChanged { .. })),
        Some((_, IceEvent::SelectedPairChanged { socket: 0, local, remote }))
            if *local == addr("10.0.0.1:1000") && *remote == addr("10.0.0.2:2000")
    ));

    for i in 0..10 {
        assert!(net.send_data(0, &data(i)));
        assert!(net.send_data(1, &data(100 + i)));
    }
    net.run_until(Duration::from_secs(2));
    assert_eq!(net.nodes[1].data.len(), 10);
    assert_eq!(net.nodes[0].data.len(), 10);
    assert_eq!(net.nodes[1].data[3], (addr("10.0.0.1:1000"), data(3)));
    assert_eq!(net.nodes[0].data[3], (addr("10.0.0.2:2000"), data(103)));
}

#[test]
fn checks_are_google_dialect_on_the_wire() {
    let mut net = connected_pair();
    let a = net.candidates(0)[0].clone();
    let b = net.candidates(1)[0].clone();
    assert_eq!(a.username.len(), 16);
    assert!(
        a.username
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
    );
    assert_eq!(a.password.len(), 16);
    assert_eq!(
        (
            a.kind,
            a.preference,
            a.protocol.as_str(),
            a.network.as_str()
        ),
        (CandidateType::Local, 1.0, "udp", "0")
    );

    let now = net.now;
    net.nodes[0].agent.handle_timeout(now);
    let check = net.nodes[0].agent.poll_transmit(now).expect("a check");
    assert_eq!(check.destination, b.address);
    // Header + USERNAME(32) only: no PRIORITY, integrity, fingerprint, roles.
    assert_eq!(check.payload.len(), 20 + 4 + 32);
    let m = Message::parse(&check.payload).unwrap();
    assert_eq!(m.kind, MessageType::BindingRequest);
    assert_eq!(
        m.username,
        Some(format!("{}{}", b.username, a.username).into_bytes())
    );
    // No RFC 5389 cookie except by chance; two checks differ in all 16 bytes' worth.
    assert_ne!(m.transaction_id[..4], [0x21, 0x12, 0xa4, 0x42]);

    let r = net.nodes[1]
        .agent
        .handle_datagram(now, 0, a.address, &check.payload);
    assert_eq!(r, Received::Stun);
    let resp = net.nodes[1].agent.poll_transmit(now).expect("a response");
    assert_eq!(resp.destination, a.address);
    let m2 = Message::parse(&resp.payload).unwrap();
    assert_eq!(m2.kind, MessageType::BindingResponse);
    assert_eq!(m2.transaction_id, m.transaction_id);
    assert_eq!(m2.username, m.username);
    assert_eq!(m2.mapped_address, Some(a.address));
    assert_eq!(resp.payload.len(), 20 + 36 + 12);
}

#[test]
fn keepalives_are_paced_once_writable() {
    let mut net = connected_pair();
    net.run_until(Duration::from_secs(2));
    // Count checks through a drop rule that drops nothing.
    let counter = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let c2 = counter.clone();
    net.drop = Box::new(move |_, _, _, p| {
        if Message::parse(p).is_ok_and(|m| m.kind == MessageType::BindingRequest) {
            c2.set(c2.get() + 1);
        }
        false
    });
    net.run_until(Duration::from_secs(12));
    // One keepalive per ~0.9–1 s per side (docs/protocol.md §B.6): about 20 in 10 s.
    let n = counter.get();
    assert!((16..=24).contains(&n), "{n} checks in 10 s");
    assert!(net.nodes[0].agent.is_writable() && net.nodes[1].agent.is_writable());
}

#[test]
fn random_loss_still_connects() {
    let mut net = connected_pair();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    net.drop = Box::new(move |_, _, _, _| rng.random_bool(0.4));
    net.run_until(Duration::from_secs(3));
    assert!(net.nodes[0].agent.is_writable());
    assert!(net.nodes[1].agent.is_writable());
}

#[test]
fn one_way_blackhole_never_connects_and_fails() {
    let mut net = connected_pair();
    // Everything from node 0 to node 1 is lost.
    net.drop = Box::new(|_, src, _, _| src == addr("10.0.0.1:1000"));
    net.run_until(Duration::from_secs(10));
    assert!(!net.nodes[0].agent.is_writable());
    assert!(!net.nodes[1].agent.is_writable());
    assert!(net.nodes[1].agent.selected().is_none());
    // Node 1 never hears anything: its pair write-times-out after 15 s.
    net.run_until(Duration::from_secs(17));
    let t1 = net
        .first_event(1, |e| *e == IceEvent::Failed)
        .expect("node 1 Failed");
    assert!(
        t1 >= Duration::from_secs(15) && t1 < Duration::from_secs(16),
        "{t1:?}"
    );
    // Node 0 is readable until 30 s after node 1's last check.
    assert!(net.first_event(0, |e| *e == IceEvent::Failed).is_none());
    net.run_until(Duration::from_secs(50));
    let t0 = net
        .first_event(0, |e| *e == IceEvent::Failed)
        .expect("node 0 Failed");
    assert!(t0 > Duration::from_secs(44), "{t0:?}");
    // Once both gave up, nothing more is sent: no timers left.
    assert!(net.nodes[0].agent.poll_timeout().is_none());
    assert!(net.nodes[1].agent.poll_timeout().is_none());
}

#[test]
fn nat_rewrite_makes_peer_reflexive_pair() {
    // Node 0 sits behind a NAT and only knows its private address.
    let mut net = Net::new(&[&["10.0.0.1:1000"], &["198.51.100.2:2000"]], 3);
    net.nat = vec![(addr("10.0.0.1:1000"), addr("203.0.113.1:40000"))];
    // The private address is unreachable from outside.
    net.drop = Box::new(|_, _, dst, _| dst == addr("10.0.0.1:1000"));
    net.signal(0, 1);
    net.signal(1, 0);
    net.run_until(Duration::from_secs(2));
    assert!(net.nodes[0].agent.is_writable());
    assert!(net.nodes[1].agent.is_writable());
    assert_eq!(
        net.nodes[1].agent.selected(),
        Some((0, addr("203.0.113.1:40000")))
    );
    assert_eq!(net.nodes[1].agent.remote_candidate_count(), 2);
    assert!(net.send_data(1, &data(7)));
    assert!(net.send_data(0, &data(8)));
    net.run_until(Duration::from_secs(3));
    assert_eq!(
        net.nodes[0].data,
        vec![(addr("198.51.100.2:2000"), data(7))]
    );
    assert_eq!(
        net.nodes[1].data,
        vec![(addr("203.0.113.1:40000"), data(8))]
    );
}

#[test]
fn late_candidates_with_430_answers() {
    // Node 1 has no candidates of node 0 yet: node 0's checks get 430.
    let mut net = Net::new(&[&["10.0.0.1:1000"], &["10.0.0.2:2000"]], 1);
    net.signal(1, 0);
    net.run_until(Duration::from_secs(2));
    assert!(!net.nodes[0].agent.is_writable());
    let stale = net.nodes[1]
        .sent_errors
        .iter()
        .filter(|c| **c == 430)
        .count();
    assert!(stale >= 5, "{stale} 430s");
    // Rate limit: no more than 50 per second even though checks repeat.
    assert!(stale <= 100);
    net.signal(0, 1);
    net.run_until(Duration::from_millis(2300));
    assert!(
        net.nodes[0].agent.is_writable(),
        "node 0 recovers after 430s"
    );
    assert!(net.nodes[1].agent.is_writable());
}

#[test]
fn late_candidates_with_dropped_checks_like_libnice() {
    let mut net = Net::new(&[&["10.0.0.1:1000"], &["10.0.0.2:2000"]], 5);
    // The network eats every error response: node 1 behaves like libnice,
    // which drops checks with unknown usernames.
    net.drop = Box::new(|_, _, _, p| {
        Message::parse(p).is_ok_and(|m| m.kind == MessageType::BindingErrorResponse)
    });
    net.signal(1, 0);
    net.run_until(Duration::from_secs(2));
    assert!(!net.nodes[0].agent.is_writable());
    net.signal(0, 1);
    net.run_until(Duration::from_millis(2300));
    assert!(net.nodes[0].agent.is_writable());
    assert!(net.nodes[1].agent.is_writable());
}

#[test]
fn selected_path_dies_and_agent_switches_then_fails() {
    // Node 0 has two interfaces; the second path is slower.
    let mut net = Net::new(
        &[&["10.0.0.1:1000", "10.1.0.1:1001"], &["10.0.0.2:2000"]],
        7,
    );
    net.latency = Box::new(|s, d| {
        if s.port() == 1001 || d.port() == 1001 {
            Duration::from_millis(40)
        } else {
            Duration::from_millis(10)
        }
    });
    net.signal(0, 1);
    net.signal(1, 0);
    net.run_until(Duration::from_secs(3));
    assert_eq!(
        net.nodes[0].agent.selected(),
        Some((0, addr("10.0.0.2:2000")))
    );
    assert_eq!(
        net.nodes[1].agent.selected(),
        Some((0, addr("10.0.0.1:1000")))
    );

    // The fast path dies at t = 3 s.
    let dead = std::rc::Rc::new(std::cell::Cell::new(1u16));
    let d2 = dead.clone();
    net.drop = Box::new(move |_, s, d, _| {
        let port = d2.get();
        s.port() == 1000
            || d.port() == 1000
            || (port == 1001 && (s.port() == 1001 || d.port() == 1001))
    });
    net.run_until(Duration::from_secs(12));
    assert_eq!(
        net.nodes[0].agent.selected(),
        Some((1, addr("10.0.0.2:2000")))
    );
    assert_eq!(
        net.nodes[1].agent.selected(),
        Some((0, addr("10.1.0.1:1001")))
    );
    for n in 0..2 {
        let switches: Vec<Duration> = net.nodes[n]
            .events
            .iter()
            .filter(|(_, e)| matches!(e, IceEvent::SelectedPairChanged { .. }))
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(switches.len(), 2, "node {n}: {switches:?}");
        assert!(
            switches[1] < Duration::from_secs(10),
            "node {n} switched at {:?}",
            switches[1]
        );
    }
    assert!(net.send_data(0, &data(1)));
    assert!(net.send_data(1, &data(2)));
    net.run_until(Duration::from_secs(13));
    assert_eq!(
        net.nodes[1].data.last(),
        Some(&(addr("10.1.0.1:1001"), data(1)))
    );
    assert_eq!(
        net.nodes[0].data.last(),
        Some(&(addr("10.0.0.2:2000"), data(2)))
    );

    // Now the second path dies too.
    dead.set(1001);
    net.run_until(Duration::from_secs(70));
    for n in 0..2 {
        // Node 1 may have had a short Disconnected during the first switch
        // (its backup pair was pruned); look at the last one.
        let disc = net.nodes[n]
            .events
            .iter()
            .rev()
            .find(|(_, e)| *e == IceEvent::Disconnected)
            .map(|(t, _)| *t)
            .expect("Disconnected");
        let failed = net
            .first_event(n, |e| *e == IceEvent::Failed)
            .expect("Failed");
        assert!(
            failed < Duration::from_secs(60),
            "node {n} failed at {failed:?}"
        );
        assert!(
            disc > Duration::from_secs(13) && disc < Duration::from_secs(21),
            "node {n} {disc:?}"
        );
        assert!(failed > disc, "node {n}");
        assert!(!net.nodes[n].agent.is_writable());
        assert!(net.nodes[n].agent.selected().is_none());
    }
}

#[test]
fn thousands_of_remote_candidates_are_bounded() {
    let mut net = connected_pair();
    let template = net.candidates(1)[0].clone();
    let now = net.now;
    let mut added = 0;
    for i in 0..5000u32 {
        let mut c = template.clone();
        c.address = SocketAddr::from(([10, 9, (i >> 8) as u8, i as u8], 3000));
        c.username = format!("user{i:012}");
        if net.nodes[0].agent.add_remote_candidate(now, c) == AddRemote::Added {
            added += 1;
        }
    }
    assert!(added < 64, "{added}");
    assert!(net.nodes[0].agent.remote_candidate_count() <= 64);
    assert!(net.nodes[0].agent.pair_count() <= 256);
    // The real peer still connects among all that noise.
    net.run_until(Duration::from_secs(20));
    assert!(net.nodes[0].agent.is_writable());
    assert_eq!(
        net.nodes[0].agent.selected(),
        Some((0, addr("10.0.0.2:2000")))
    );
    // Duplicates and changes are refused (docs/protocol.md §B.1).
    let dup = net.candidates(1)[0].clone();
    assert_eq!(
        net.nodes[0].agent.add_remote_candidate(now, dup.clone()),
        AddRemote::Duplicate
    );
    let mut changed = dup;
    changed.username = "AAAAAAAAAAAAAAAA".into();
    assert!(matches!(
        net.nodes[0].agent.add_remote_candidate(now, changed),
        AddRemote::Rejected(_)
    ));
}

#[test]
fn garbage_and_floods_are_dropped_and_bounded() {
    let mut net = connected_pair();
    net.run_until(Duration::from_secs(1));
    let mut rng = ChaCha8Rng::seed_from_u64(1234);
    let b = net.candidates(1)[0].clone();
    let a = net.candidates(0)[0].clone();
    let start = net.now;
    let mut stun_err_before = net.nodes[0].sent_errors.len();
    for round in 0..20 {
        let now = start + Duration::from_millis(round * 50);
        for i in 0..1000u32 {
            let from = SocketAddr::from(([172, 16, (i >> 8) as u8, i as u8], 5000 + round as u16));
            let kind = i % 5;
            let payload: Vec<u8> = match kind {
                0 => (0..rng.random_range(0..200))
                    .map(|_| rng.random())
                    .collect(),
                1 => {
                    // Truncated check.
                    let mut m = Message::new(MessageType::BindingRequest, rng.random());
                    m.username = Some(format!("{}{}", a.username, b.username).into_bytes());
                    let mut v = m.encode();
                    v.truncate(rng.random_range(0..v.len()));
                    v
                }
                2 => {
                    // Valid check, unknown username: 430 (rate limited).
                    let mut m = Message::new(MessageType::BindingRequest, rng.random());
                    m.username = Some(format!("{}{:016}", a.username, i).into_bytes());
                    m.encode()
                }
                3 => {
                    // Valid check with the peer's username from new
                    // addresses: peer-reflexive flood.
                    let mut m = Message::new(MessageType::BindingRequest, rng.random());
                    m.username = Some(format!("{}{}", a.username, b.username).into_bytes());
                    m.encode()
                }
                _ => {
                    // Responses to nothing, and oversized attributes.
                    let mut v = vec![0x01, 0x01, 0xff, 0xf0];
                    v.extend_from_slice(&[7u8; 16]);
                    v.extend_from_slice(&[0x00, 0x06, 0xff, 0xec]);
                    v.resize(20 + 0xfff0, 0x41);
                    v
                }
            };
            let r = net.nodes[0].agent.handle_datagram(now, 0, from, &payload);
            assert_ne!(r, Received::Data, "kind {kind}");
        }
        let mut errors = 0;
        let mut queued = 0;
        while let Some(t) = net.nodes[0].agent.poll_transmit(now) {
            queued += 1;
            if Message::parse(&t.payload).is_ok_and(|m| m.kind == MessageType::BindingErrorResponse)
            {
                errors += 1;
            }
        }
        assert!(queued <= 256, "{queued} queued");
        stun_err_before += errors;
        assert!(net.nodes[0].agent.remote_candidate_count() <= 64);
        assert!(net.nodes[0].agent.pair_count() <= 256);
    }
    // ≤ 50 error responses per second of virtual time (1 s here).
    assert!(stun_err_before <= 2 * 50 + 10, "{stun_err_before} errors");
    net.now = start + Duration::from_secs(1);
    // The real pair keeps working.
    net.run_until(Duration::from_secs(4));
    assert!(net.nodes[0].agent.is_writable());
    assert!(net.send_data(1, &data(5)));
    net.run_until(Duration::from_secs(5));
    assert_eq!(
        net.nodes[0].data.last(),
        Some(&(addr("10.0.0.2:2000"), data(5)))
    );
}

#[test]
fn data_from_unknown_or_unreadable_address_is_dropped() {
    let mut net = connected_pair();
    let now = net.now;
    // Before any check arrived the pair is not readable.
    assert_eq!(
        net.nodes[0]
            .agent
            .handle_datagram(now, 0, addr("10.0.0.2:2000"), &data(1)),
        Received::Dropped
    );
    net.run_until(Duration::from_secs(1));
    let now = net.now;
    assert_eq!(
        net.nodes[0]
            .agent
            .handle_datagram(now, 0, addr("10.0.0.2:2000"), &data(1)),
        Received::Data
    );
    assert_eq!(
        net.nodes[0]
            .agent
            .handle_datagram(now, 0, addr("10.0.0.3:2000"), &data(1)),
        Received::Dropped
    );
}

#[test]
fn newer_generation_replaces_older_candidates() {
    let mut net = connected_pair();
    let now = net.now;
    let mut c = net.candidates(1)[0].clone();
    c.generation = 1;
    c.address = addr("10.0.0.2:2001");
    assert_eq!(
        net.nodes[0].agent.add_remote_candidate(now, c.clone()),
        AddRemote::Added
    );
    assert_eq!(net.nodes[0].agent.remote_candidate_count(), 1);
    let mut old = c;
    old.generation = 0;
    old.address = addr("10.0.0.2:2002");
    assert!(matches!(
        net.nodes[0].agent.add_remote_candidate(now, old),
        AddRemote::Rejected(_)
    ));
}

#[test]
fn failed_channel_revives_on_new_candidate() {
    let mut net = Net::new(&[&["10.0.0.1:1000"], &["10.0.0.2:2000"]], 11);
    // Node 0 only knows a wrong address for node 1.
    let mut wrong = net.candidates(1)[0].clone();
    wrong.address = addr("10.0.0.9:9");
    let now = net.now;
    net.nodes[0].agent.add_remote_candidate(now, wrong);
    net.run_until(Duration::from_secs(20));
    assert!(net.nodes[0].agent.is_failed());
    assert!(
        net.nodes[0].agent.poll_timeout().is_none(),
        "idle once failed"
    );
    // The right candidate arrives (a newer generation, as a restart would).
    let mut right = net.candidates(1)[0].clone();
    right.generation = 1;
    let now = net.now;
    assert_eq!(
        net.nodes[0].agent.add_remote_candidate(now, right),
        AddRemote::Added
    );
    net.signal(0, 1);
    net.run_until(Duration::from_secs(21));
    assert!(!net.nodes[0].agent.is_failed());
    assert!(net.nodes[0].agent.is_writable());
    assert!(net.nodes[1].agent.is_writable());
}
