//! `pseudotcp_segment`: a connected pair of PseudoTCP engines on a
//! deterministic virtual network; one side (the victim) also gets fuzz
//! datagrams interleaved with the real traffic, and the fuzzer drives the
//! applications, the clock and network faults.
//!
//! Input: two config bytes, then operations `[tag][len: u16 le][len bytes
//! if the tag carries data]` (see [`run`]).
//!
//! Invariants: no panic; every datagram an engine emits decodes, is of our
//! conversation and fits its datagram limit; the non-victim side receives
//! exactly a prefix of what the victim's application sent (it only ever sees
//! real traffic); the victim receives no more bytes than the peer sent plus
//! the payload bytes injected into it; states only move forward (Listen →
//! SynSent/SynReceived → Established → Closed); `Connected` at most once and
//! only once established, `Closed` exactly once and only in Closed; after
//! `handle_timeout(now)` no timer is due at or before `now`; a closed engine
//! has no timer and sends nothing but (once) an RST.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use gshare::pseudotcp::segment::Header;
use gshare::pseudotcp::sim::ByteStream;
use gshare::pseudotcp::{Config, Error, Event, PseudoTcp, State};

const LATENCY: Duration = Duration::from_millis(10);
const MAX_OPS: usize = 512;
const DATAGRAM_LIMITS: [usize; 4] = [1400, 576, 9000, 65507];

fn rank(s: State) -> u8 {
    match s {
        State::Listen => 0,
        State::SynSent | State::SynReceived => 1,
        State::Established => 2,
        State::Closed => 3,
    }
}

struct End {
    name: &'static str,
    tcp: PseudoTcp,
    cfg: Config,
    /// What this side's application sent (generator) and how much.
    tx: ByteStream,
    sent: u64,
    /// Checker for what it receives (a mirror of the peer's generator).
    rx: ByteStream,
    received: u64,
    /// Forged payload bytes fed to this side.
    injected: u64,
    victim: bool,
    last_state: State,
    connected_events: u32,
    closed_events: u32,
    rst_after_close: u32,
}

impl End {
    fn new(name: &'static str, cfg: Config, now: Instant, tx_seed: u64, rx_seed: u64) -> End {
        End {
            name,
            tcp: PseudoTcp::new(cfg.clone(), now),
            cfg,
            tx: ByteStream::new(tx_seed),
            sent: 0,
            rx: ByteStream::new(rx_seed),
            received: 0,
            injected: 0,
            victim: false,
            last_state: State::Listen,
            connected_events: 0,
            closed_events: 0,
            rst_after_close: 0,
        }
    }

    fn check(&mut self) {
        let s = self.tcp.state();
        assert!(
            rank(s) >= rank(self.last_state),
            "{}: state went back from {:?} to {s:?}",
            self.name,
            self.last_state
        );
        self.last_state = s;
        while let Some(e) = self.tcp.poll_event() {
            match e {
                Event::Connected => {
                    self.connected_events += 1;
                    assert_eq!(self.connected_events, 1, "{}: Connected twice", self.name);
                    assert!(
                        matches!(s, State::Established | State::Closed),
                        "{}: Connected in {s:?}",
                        self.name
                    );
                }
                Event::Closed(_) => {
                    self.closed_events += 1;
                    assert_eq!(self.closed_events, 1, "{}: Closed twice", self.name);
                    assert_eq!(s, State::Closed, "{}: Closed event in {s:?}", self.name);
                }
                Event::Readable | Event::Writable => {}
            }
        }
        if s == State::Closed {
            assert_eq!(self.closed_events, 1, "{}: closed without event", self.name);
            assert_eq!(
                self.tcp.poll_timeout(),
                None,
                "{}: closed with a timer",
                self.name
            );
        }
        assert!(
            self.tcp.send_buffered() <= self.cfg.send_buffer.max(1024),
            "{}: send buffer over capacity",
            self.name
        );
    }

    fn write(&mut self, n: usize) {
        let mut buf = vec![0u8; n.min(65536)];
        let before = self.tx.clone();
        self.tx.fill(&mut buf);
        match self.tcp.send(&buf) {
            Ok(k) => {
                assert!(k <= buf.len(), "{}: send took more than given", self.name);
                // Rewind the generator to what was actually taken.
                self.tx = before;
                let mut taken = vec![0u8; k];
                self.tx.fill(&mut taken);
                self.sent += k as u64;
            }
            Err(Error::WouldBlock | Error::NotConnected) => self.tx = before,
            Err(e) => panic!("{}: send failed with {e:?}", self.name),
        }
    }

    /// Reads up to `n` bytes; returns how many.
    fn read(&mut self, n: usize, peer_sent: u64) -> usize {
        let mut buf = vec![0u8; n.clamp(1, 65536)];
        let Ok(k) = self.tcp.recv(&mut buf) else {
            return 0;
        };
        assert!(k <= buf.len());
        self.received += k as u64;
        assert!(
            self.received <= peer_sent + self.injected,
            "{}: received {} bytes, peer sent {peer_sent}, {} injected",
            self.name,
            self.received,
            self.injected
        );
        if !self.victim
            && let Err(at) = self.rx.verify(&buf[..k])
        {
            panic!("{}: received stream corrupt at byte {at}", self.name);
        }
        k
    }
}

struct Net {
    now: Instant,
    a: End,
    b: End,
    /// In flight a→b and b→a: (arrival, datagram).
    ab: VecDeque<(Instant, Vec<u8>)>,
    ba: VecDeque<(Instant, Vec<u8>)>,
    buf: Vec<u8>,
    /// Last real datagram towards the victim (template for splicing).
    last_to_victim: Vec<u8>,
}

impl Net {
    fn victim_is_b(&self) -> bool {
        self.b.victim
    }

    fn flush(&mut self) {
        for a_side in [true, false] {
            let (end, link) = if a_side {
                (&mut self.a, &mut self.ab)
            } else {
                (&mut self.b, &mut self.ba)
            };
            let mut count = 0;
            while let Some(n) = end.tcp.poll_transmit(self.now, &mut self.buf) {
                count += 1;
                assert!(count < 100_000, "{}: endless poll_transmit", end.name);
                assert_eq!(
                    n,
                    self.buf.len(),
                    "{}: length differs from buffer",
                    end.name
                );
                assert!(
                    n <= end.cfg.max_datagram_size.max(end.cfg.compat_mtu),
                    "{}: {n}-byte datagram over the limit {}",
                    end.name,
                    end.cfg.max_datagram_size
                );
                let (h, _) = Header::decode(&self.buf)
                    .unwrap_or_else(|| panic!("{}: emitted a malformed segment", end.name));
                assert_eq!(h.conv, end.cfg.conversation);
                if end.tcp.state() == State::Closed {
                    end.rst_after_close += 1;
                    assert!(end.rst_after_close <= 1, "{}: sends after close", end.name);
                }
                link.push_back((self.now + LATENCY, self.buf.clone()));
            }
            end.check();
        }
    }

    /// Delivers what is due and runs due timers, at `now`.
    fn process(&mut self) {
        self.flush();
        let now = self.now;
        while self.ab.front().is_some_and(|(t, _)| *t <= now) {
            let Some((_, d)) = self.ab.pop_front() else {
                break;
            };
            if self.b.victim {
                self.last_to_victim.clone_from(&d);
            }
            self.b.tcp.handle_datagram(now, &d);
            self.b.check();
        }
        while self.ba.front().is_some_and(|(t, _)| *t <= now) {
            let Some((_, d)) = self.ba.pop_front() else {
                break;
            };
            if self.a.victim {
                self.last_to_victim.clone_from(&d);
            }
            self.a.tcp.handle_datagram(now, &d);
            self.a.check();
        }
        for end in [&mut self.a, &mut self.b] {
            if end.tcp.poll_timeout().is_some_and(|t| t <= now) {
                end.tcp.handle_timeout(now);
                if let Some(t) = end.tcp.poll_timeout() {
                    assert!(
                        t > now,
                        "{}: timer still due after handle_timeout",
                        end.name
                    );
                }
                end.check();
            }
        }
        self.flush();
    }

    fn next_event(&self) -> Option<Instant> {
        [
            self.a.tcp.poll_timeout(),
            self.b.tcp.poll_timeout(),
            self.ab.front().map(|x| x.0),
            self.ba.front().map(|x| x.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs events until `until` (inclusive) or nothing is scheduled.
    fn advance(&mut self, until: Instant) {
        for _ in 0..10_000 {
            self.process();
            match self.next_event() {
                Some(t) if t <= until => self.now = self.now.max(t),
                _ => break,
            }
        }
        self.now = self.now.max(until);
        self.process();
    }

    fn victim(&mut self) -> &mut End {
        if self.b.victim {
            &mut self.b
        } else {
            &mut self.a
        }
    }

    fn inject(&mut self, d: &[u8]) {
        let now = self.now;
        let payload = d.len().saturating_sub(24) as u64;
        let v = self.victim();
        v.injected += payload;
        v.tcp.handle_datagram(now, d);
        v.check();
    }

    fn link_mut(&mut self, to_victim: bool) -> (&mut VecDeque<(Instant, Vec<u8>)>, bool) {
        let to_b = to_victim == self.victim_is_b();
        if to_b {
            (&mut self.ab, to_victim)
        } else {
            (&mut self.ba, to_victim)
        }
    }

    fn read_both(&mut self, n: usize) {
        let (a_sent, b_sent) = (self.a.sent, self.b.sent);
        while self.a.read(n, b_sent) > 0 {}
        while self.b.read(n, a_sent) > 0 {}
    }
}

fn config(flags: u8, gshare: bool, limit: usize) -> Config {
    let mut c = Config {
        gshare_option: gshare,
        sack: flags & 0x08 == 0,
        window_scaling: flags & 0x40 == 0,
        nagle: flags & 0x80 != 0,
        max_datagram_size: limit,
        ..Config::default()
    };
    if flags & 0x20 != 0 {
        c.send_buffer = 8192;
        c.recv_buffer = 4096;
    } else {
        c.send_buffer = 256 * 1024;
        c.recv_buffer = 128 * 1024;
    }
    c
}

/// The fuzz target body.
///
/// Config byte 0: bit0/bit1 a/b offer gshare's option, bit2 victim is b
/// (else a), bit3 no SACK, bit4 fuzz from the first datagram (no connected
/// start), bit5 small buffers, bit6 no window scaling, bit7 Nagle. Byte 1:
/// datagram limits of a (bits 0-1) and b (bits 2-3), bit4 simultaneous open.
///
/// Operations, `tag % 9`: 0 inject the bytes into the victim; 1 advance
/// `len` ms; 2/3 a/b application writes `len` bytes; 4/5 a/b reads up to
/// `len`; 6 network fault on the next datagram in flight (len bit0: towards
/// the victim or the other way; bits1-2: drop, duplicate, move to the back,
/// corrupt byte `len >> 3` — corruption only towards the victim); 7 close
/// (bit0 force, bit1 b else a); 8 splice: XOR the bytes onto the last real
/// datagram towards the victim and inject that.
pub fn run(data: &[u8]) {
    let [f0, f1, rest @ ..] = data else {
        return;
    };
    let (f0, f1) = (*f0, *f1);
    let now = Instant::now();
    let ca = config(f0, f0 & 1 != 0, DATAGRAM_LIMITS[usize::from(f1 & 3)]);
    let cb = config(f0, f0 & 2 != 0, DATAGRAM_LIMITS[usize::from((f1 >> 2) & 3)]);
    let mut net = Net {
        now,
        a: End::new("a", ca, now, 1, 2),
        b: End::new("b", cb, now, 2, 1),
        ab: VecDeque::new(),
        ba: VecDeque::new(),
        buf: Vec::with_capacity(65536),
        last_to_victim: Vec::new(),
    };
    if f0 & 4 != 0 {
        net.b.victim = true;
    } else {
        net.a.victim = true;
    }
    assert!(net.a.tcp.connect(now).is_ok());
    if f1 & 0x10 != 0 {
        assert!(net.b.tcp.connect(now).is_ok());
    }
    if f0 & 0x10 == 0 {
        net.advance(now + Duration::from_secs(10));
        assert_eq!(net.a.tcp.state(), State::Established, "a did not connect");
        assert_eq!(net.b.tcp.state(), State::Established, "b did not connect");
    }

    let mut input = rest;
    for _ in 0..MAX_OPS {
        let [tag, l0, l1, tail @ ..] = input else {
            break;
        };
        let len = usize::from(u16::from_le_bytes([*l0, *l1]));
        input = tail;
        match tag % 9 {
            0 => {
                let n = len.min(input.len());
                let (d, tail) = input.split_at(n);
                input = tail;
                net.inject(d);
            }
            1 => {
                let until = net.now + Duration::from_millis(len as u64);
                net.advance(until);
            }
            2 => net.a.write(len),
            3 => net.b.write(len),
            4 => {
                let b_sent = net.b.sent;
                net.a.read(len, b_sent);
            }
            5 => {
                let a_sent = net.a.sent;
                net.b.read(len, a_sent);
            }
            6 => {
                let to_victim = len & 1 != 0;
                let now = net.now;
                let mut forged = 0;
                let (link, to_victim) = net.link_mut(to_victim);
                match (len >> 1) & 3 {
                    0 => {
                        link.pop_front();
                    }
                    1 => {
                        if let Some(x) = link.front().cloned() {
                            link.push_back(x);
                        }
                    }
                    2 => {
                        if let Some((_, d)) = link.pop_front() {
                            let t = link.back().map_or(now, |x| x.0);
                            link.push_back((t, d));
                        }
                    }
                    _ => {
                        if to_victim
                            && let Some((_, d)) = link.front_mut()
                            && !d.is_empty()
                        {
                            let i = (len >> 3) % d.len();
                            d[i] ^= 0x5a;
                            forged = d.len().saturating_sub(24) as u64;
                        }
                    }
                }
                net.victim().injected += forged;
            }
            7 => {
                let end = if len & 2 != 0 { &mut net.b } else { &mut net.a };
                end.tcp.close(len & 1 != 0);
                end.check();
                net.flush();
            }
            _ => {
                let n = len.min(input.len());
                let (x, tail) = input.split_at(n);
                input = tail;
                let mut d = net.last_to_victim.clone();
                for (i, b) in x.iter().enumerate() {
                    if let Some(slot) = d.get_mut(i) {
                        *slot ^= b;
                    } else {
                        d.push(*b);
                    }
                }
                net.inject(&d);
            }
        }
        net.process();
    }
    // Quiet phase: no more forgery; both applications read everything.
    for _ in 0..64 {
        net.read_both(65536);
        let until = net.now + Duration::from_millis(500);
        net.advance(until);
    }
    net.read_both(65536);
    net.a.check();
    net.b.check();
}
