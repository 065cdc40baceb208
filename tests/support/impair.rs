//! An impairment relay for pairs of UDP peers on loopback: one-way delay, random
//! loss, reordering and a bandwidth cap (token bucket + drop-tail queue) per
//! direction, all decided by a seeded generator, so benchmarks and tests can
//! put a wide-area link between two real processes.
//!
//! Wiring (with gshare's hidden `--advertise IP:PORT`, or by rewriting the
//! candidates handed to a libnice peer): the relay owns two UDP ports, PA and
//! PB, on 127.0.0.1. Peer A announces PA, peer B announces PB. A packet that
//! arrives at PB comes from A (A sends to B's announced address): the relay
//! learns A's real address from it and forwards it to B's real address *from
//! PA*, so B sees it come from A's announced address; the other direction is
//! the mirror image. Until both real addresses are known, packets are dropped
//! (counted as `unrouted`).
//!
//! Per packet, in order: MTU check (a datagram that would not fit the
//! emulated link is dropped, as a router would), random loss (like netem, at
//! enqueue), the bottleneck (a GCRA token bucket of `rate` with `burst` bytes
//! of depth feeding a FIFO of at most `queue` bytes; a packet that finds the
//! queue full is dropped), serialization at `rate`, the one-way `delay`, and
//! with probability `reorder` an extra `reorder_delay` so that later packets
//! overtake it. The link rate is charged for IP+UDP headers (28 bytes).
//!
//! MSS clamping: gshare peers agree on segments as large as their local route
//! allows (64 KiB on loopback). A relay on loopback would otherwise carry
//! 64 KiB datagrams no wide-area path carries, so — like a router clamping
//! the TCP MSS — the relay lowers the "largest datagram" field of gshare's
//! private PseudoTCP CONNECT option to `clamp_datagram` (1400, what gshare
//! picks itself on a 1500-byte-MTU route).
//!
//! Several flows through one link ([`MultiRelay`]): N pairs of ports, each
//! pair wired and learning its real addresses as above, all of them through
//! ONE bottleneck per direction (the same token bucket, drop-tail queue,
//! delay and loss draws), with counters per flow and the time each packet
//! waited in the shared queue (fairness between real processes). [`Relay`]
//! is the one-flow case.
//!
//! Timing: a dedicated thread sleeps in `ppoll` until the next packet is due
//! (microsecond timers, no runtime), so delays are exact to a few tens of µs.
#![allow(dead_code)]

use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// IPv4 + UDP header bytes charged per datagram on the emulated link.
pub const IP_UDP_OVERHEAD: usize = 28;

/// Impairments of one direction of the link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkDirection {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Probability that a packet is lost (0..=1).
    pub loss: f64,
    /// Probability that a packet is held back by `reorder_delay`.
    pub reorder: f64,
    /// Extra delay of a reordered packet.
    pub reorder_delay: Duration,
    /// Bottleneck rate in bits per second (IP bytes); `None`: unlimited.
    pub rate_bps: Option<u64>,
    /// Token bucket depth in bytes (what may leave back to back at once).
    pub burst: usize,
    /// Most bytes waiting for the bottleneck; a packet that does not fit is
    /// dropped (drop-tail).
    pub queue: usize,
}

impl Default for LinkDirection {
    fn default() -> Self {
        LinkDirection {
            delay: Duration::ZERO,
            loss: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(2),
            rate_bps: None,
            burst: 3000,
            queue: usize::MAX,
        }
    }
}

/// The whole relay's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ImpairConfig {
    /// Packets from A to B (arriving at PB).
    pub a_to_b: LinkDirection,
    /// Packets from B to A (arriving at PA).
    pub b_to_a: LinkDirection,
    /// Seed of the loss and reordering decisions.
    pub seed: u64,
    /// Link MTU (IP bytes); a bigger datagram is dropped. `None`: no limit.
    pub mtu: Option<usize>,
    /// Lower gshare's PseudoTCP "largest datagram" CONNECT field to this.
    pub clamp_datagram: Option<u16>,
}

impl ImpairConfig {
    /// No impairment at all (a plain forwarder).
    pub fn transparent(seed: u64) -> Self {
        ImpairConfig {
            a_to_b: LinkDirection::default(),
            b_to_a: LinkDirection::default(),
            seed,
            mtu: None,
            clamp_datagram: None,
        }
    }

    /// A symmetric wide-area link: `rate_bps` each way, round-trip time
    /// `rtt` (half each way), random `loss` each way, MTU 1500 with gshare's
    /// segments clamped to 1400-byte datagrams, and a drop-tail queue of one
    /// bandwidth-delay product.
    pub fn wan(rate_bps: u64, rtt: Duration, loss: f64, seed: u64) -> Self {
        let bdp = (rate_bps as f64 / 8.0 * rtt.as_secs_f64()) as usize;
        let dir = LinkDirection {
            delay: rtt / 2,
            loss,
            rate_bps: Some(rate_bps),
            burst: 3000,
            queue: bdp.max(64 * 1024),
            ..LinkDirection::default()
        };
        ImpairConfig {
            a_to_b: dir.clone(),
            b_to_a: dir,
            seed,
            mtu: Some(1500),
            clamp_datagram: Some(1400),
        }
    }
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams that arrived (before any decision).
    pub received: u64,
    /// Datagrams sent on to the other peer.
    pub delivered: u64,
    /// Payload bytes sent on.
    pub delivered_bytes: u64,
    /// Dropped before both real addresses were known.
    pub unrouted: u64,
    /// Dropped by the random loss.
    pub lost: u64,
    /// Dropped because the bottleneck queue was full.
    pub queue_drops: u64,
    /// Dropped for exceeding the MTU.
    pub oversize: u64,
    /// Held back to be overtaken.
    pub reordered: u64,
    /// CONNECT segments whose gshare option was clamped.
    pub clamped: u64,
    /// Largest datagram delivered (UDP payload bytes).
    pub max_datagram: usize,
    /// Most bytes ever waiting in the bottleneck queue.
    pub max_queue: usize,
    /// Datagrams that went through the bottleneck (admitted, to be
    /// delivered): what `queue_delay` is summed over.
    pub shaped: u64,
    /// Sum over those datagrams of the time the bottleneck added: leaving
    /// the queue minus arriving (waiting for tokens; serialization and the
    /// propagation delay are not counted).
    pub queue_delay: Duration,
    /// The longest such wait since the start or the last
    /// [`MultiRelay::reset_max`].
    pub max_queue_delay: Duration,
}

impl DirectionStats {
    /// Mean time the bottleneck added per datagram.
    pub fn mean_queue_delay(&self) -> Duration {
        match u32::try_from(self.shaped) {
            Ok(0) => Duration::ZERO,
            Ok(n) => self.queue_delay / n,
            Err(_) => Duration::from_secs_f64(self.queue_delay.as_secs_f64() / self.shaped as f64),
        }
    }

    /// Adds `o`'s counters to these (maxima: the larger).
    pub fn add(&mut self, o: &DirectionStats) {
        self.received += o.received;
        self.delivered += o.delivered;
        self.delivered_bytes += o.delivered_bytes;
        self.unrouted += o.unrouted;
        self.lost += o.lost;
        self.queue_drops += o.queue_drops;
        self.oversize += o.oversize;
        self.reordered += o.reordered;
        self.clamped += o.clamped;
        self.max_datagram = self.max_datagram.max(o.max_datagram);
        self.max_queue = self.max_queue.max(o.max_queue);
        self.shaped += o.shaped;
        self.queue_delay += o.queue_delay;
        self.max_queue_delay = self.max_queue_delay.max(o.max_queue_delay);
    }
}

/// Counters of both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub a_to_b: DirectionStats,
    pub b_to_a: DirectionStats,
}

impl RelayStats {
    /// The sum of several flows' counters (maxima: the largest).
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a RelayStats>) -> RelayStats {
        let mut t = RelayStats::default();
        for s in all {
            t.a_to_b.add(&s.a_to_b);
            t.b_to_a.add(&s.b_to_a);
        }
        t
    }
}

/// A running relay for one pair of peers; stopped (thread joined) on drop.
/// The one-flow case of [`MultiRelay`].
pub struct Relay {
    /// The port peer A announces (packets for A arrive here from B).
    pub port_a: u16,
    /// The port peer B announces.
    pub port_b: u16,
    inner: MultiRelay,
}

impl Relay {
    /// Binds PA and PB on 127.0.0.1 and starts forwarding on its own thread.
    pub fn start(config: ImpairConfig) -> io::Result<Relay> {
        let inner = MultiRelay::start(config, 1)?;
        let (port_a, port_b) = inner.ports(0);
        Ok(Relay {
            port_a,
            port_b,
            inner,
        })
    }

    /// `(PA, PB)`.
    pub fn ports(&self) -> (u16, u16) {
        (self.port_a, self.port_b)
    }

    /// `127.0.0.1:PA`, for peer A's `--advertise`.
    pub fn addr_a(&self) -> SocketAddr {
        self.inner.addr_a(0)
    }

    /// `127.0.0.1:PB`, for peer B's `--advertise`.
    pub fn addr_b(&self) -> SocketAddr {
        self.inner.addr_b(0)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> RelayStats {
        self.inner.total()
    }
}

/// A running relay for `N` pairs of peers (flows) through ONE bottleneck
/// per direction: flow `i` has its own ports PA/PB and learns its own real
/// addresses exactly like [`Relay`], but every flow's packets from A to B
/// go through the same [`Shaper`] (token bucket, drop-tail queue, delay,
/// loss), and likewise from B to A — a shared link. Counters are kept per
/// flow. Stopped (thread joined) on drop.
pub struct MultiRelay {
    /// `(PA, PB)` of each flow.
    ports: Vec<(u16, u16)>,
    stats: Arc<Mutex<Vec<RelayStats>>>,
    stop: Arc<AtomicBool>,
    reset_max: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MultiRelay {
    /// Binds `flows` pairs of ports on 127.0.0.1 and starts forwarding on
    /// its own thread.
    pub fn start(config: ImpairConfig, flows: usize) -> io::Result<MultiRelay> {
        let mut socks = Vec::with_capacity(flows);
        let mut ports = Vec::with_capacity(flows);
        for _ in 0..flows.max(1) {
            let a = bind_loopback()?;
            let b = bind_loopback()?;
            ports.push((a.local_addr()?.port(), b.local_addr()?.port()));
            socks.push((a, b));
        }
        let stats = Arc::new(Mutex::new(vec![RelayStats::default(); ports.len()]));
        let stop = Arc::new(AtomicBool::new(false));
        let reset_max = Arc::new(AtomicBool::new(false));
        let mut engine = Engine::new(config, socks, stats.clone(), reset_max.clone());
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("impair-relay".into())
            .spawn(move || engine.run(&stop2))?;
        Ok(MultiRelay {
            ports,
            stats,
            stop,
            reset_max,
            thread: Some(thread),
        })
    }

    /// How many flows.
    pub fn flows(&self) -> usize {
        self.ports.len()
    }

    /// `(PA, PB)` of flow `i`.
    pub fn ports(&self, i: usize) -> (u16, u16) {
        self.ports[i]
    }

    /// `127.0.0.1:PA` of flow `i`, for its peer A's `--advertise`.
    pub fn addr_a(&self, i: usize) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports[i].0))
    }

    /// `127.0.0.1:PB` of flow `i`, for its peer B's `--advertise`.
    pub fn addr_b(&self, i: usize) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports[i].1))
    }

    /// A snapshot of every flow's counters, in flow order.
    pub fn stats(&self) -> Vec<RelayStats> {
        match self.stats.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// All flows' counters added up (the shared link's).
    pub fn total(&self) -> RelayStats {
        RelayStats::sum(&self.stats())
    }

    /// Starts the `max_queue_delay` counters afresh (e.g. at the start of
    /// a measuring window). Returns once the relay has done it (within one
    /// wake-up, ≤ 50 ms), so every datagram sent afterwards counts.
    pub fn reset_max(&self) {
        self.reset_max.store(true, Ordering::Release);
        let until = Instant::now() + Duration::from_secs(1);
        while self.reset_max.load(Ordering::Acquire) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for MultiRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bind_loopback() -> io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    // Loopback senders burst far faster than the emulated link: the relay,
    // not the kernel, must decide what is dropped.
    let _ = s.set_recv_buffer_size(16 << 20);
    let _ = s.set_send_buffer_size(16 << 20);
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

// SplitMix64 for loss decisions: the library's seeded generator, the same
// one the PseudoTCP simulator draws from.
use gshare::pseudotcp::sim::Rng as SplitMix;

/// What happens to one arriving packet in one direction (pure, for tests).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Oversize,
    Lost,
    QueueFull,
    /// Deliver at this time; `true` if it was picked for reordering.
    Deliver(Instant, bool),
}

/// The per-direction model: decisions and bottleneck state, no sockets.
/// Flow-blind: sharing one `Shaper` among several flows is what makes them
/// share a link.
#[derive(Debug)]
pub struct Shaper {
    cfg: LinkDirection,
    mtu: Option<usize>,
    rng: SplitMix,
    /// GCRA theoretical arrival time.
    tat: Option<Instant>,
    /// (departure, bytes) of packets still waiting for the bottleneck.
    waiting: VecDeque<(Instant, usize)>,
    waiting_bytes: usize,
    /// How long the last delivered packet waited in the queue.
    last_wait: Duration,
}

impl Shaper {
    pub fn new(cfg: LinkDirection, mtu: Option<usize>, seed: u64) -> Self {
        Shaper {
            cfg,
            mtu,
            rng: SplitMix::new(seed),
            tat: None,
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            last_wait: Duration::ZERO,
        }
    }

    /// Bytes waiting for the bottleneck at `now`.
    pub fn backlog(&mut self, now: Instant) -> usize {
        while let Some(&(t, n)) = self.waiting.front() {
            if t > now {
                break;
            }
            self.waiting.pop_front();
            self.waiting_bytes -= n;
        }
        self.waiting_bytes
    }

    /// How long the packet of the last `Verdict::Deliver` waits in the
    /// queue for the bottleneck (leaving the queue minus arriving; zero
    /// when it finds enough tokens, or without a rate limit).
    pub fn last_queue_delay(&self) -> Duration {
        self.last_wait
    }

    /// Decides the fate of a `len`-byte datagram arriving at `now`.
    pub fn admit(&mut self, now: Instant, len: usize) -> Verdict {
        let wire = len + IP_UDP_OVERHEAD;
        if self.mtu.is_some_and(|m| wire > m) {
            return Verdict::Oversize;
        }
        // Both draws are made for every packet, so one decision does not
        // shift the random sequence of the others.
        let lose = self.rng.unit() < self.cfg.loss;
        let reorder = self.rng.unit() < self.cfg.reorder;
        if lose {
            return Verdict::Lost;
        }
        let mut at = now;
        self.last_wait = Duration::ZERO;
        if let Some(bps) = self.cfg.rate_bps.filter(|&r| r > 0) {
            let per_byte = 8.0 / bps as f64;
            let service = Duration::from_secs_f64(wire as f64 * per_byte);
            let tau = Duration::from_secs_f64(self.cfg.burst as f64 * per_byte);
            if self.backlog(now) + wire > self.cfg.queue {
                return Verdict::QueueFull;
            }
            let tat = self.tat.unwrap_or(now).max(now);
            // Leaves when the bucket holds enough tokens.
            let depart = now.max(tat.checked_sub(tau).unwrap_or(now));
            self.tat = Some(tat + service);
            if depart > now {
                self.waiting.push_back((depart, wire));
                self.waiting_bytes += wire;
            }
            self.last_wait = depart - now;
            at = depart + service;
        }
        at += self.cfg.delay;
        if reorder {
            at += self.cfg.reorder_delay;
        }
        Verdict::Deliver(at, reorder)
    }
}

/// A packet waiting for its delivery time (min-heap by time, then order).
struct Pending {
    at: Instant,
    seq: u64,
    flow: usize,
    to_b: bool,
    data: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// One flow's sockets and the real addresses it learned.
struct Flow {
    sock_a: UdpSocket,
    sock_b: UdpSocket,
    /// Real address of A (learned at PB) and of B (learned at PA).
    real_a: Option<SocketAddr>,
    real_b: Option<SocketAddr>,
}

struct Engine {
    flows: Vec<Flow>,
    /// The shared bottleneck of each direction.
    to_b: Shaper,
    to_a: Shaper,
    clamp: Option<u16>,
    heap: BinaryHeap<Pending>,
    seq: u64,
    local: Vec<RelayStats>,
    shared: Arc<Mutex<Vec<RelayStats>>>,
    reset_max: Arc<AtomicBool>,
    spare: Vec<Vec<u8>>,
    /// The flow whose sockets are read first on the next wake-up.
    first: usize,
}

impl Engine {
    fn new(
        cfg: ImpairConfig,
        socks: Vec<(UdpSocket, UdpSocket)>,
        shared: Arc<Mutex<Vec<RelayStats>>>,
        reset_max: Arc<AtomicBool>,
    ) -> Self {
        let seed = cfg.seed;
        let n = socks.len();
        Engine {
            flows: socks
                .into_iter()
                .map(|(sock_a, sock_b)| Flow {
                    sock_a,
                    sock_b,
                    real_a: None,
                    real_b: None,
                })
                .collect(),
            to_b: Shaper::new(cfg.a_to_b, cfg.mtu, seed ^ 0xA2B),
            to_a: Shaper::new(cfg.b_to_a, cfg.mtu, seed ^ 0xB2A),
            clamp: cfg.clamp_datagram,
            heap: BinaryHeap::new(),
            seq: 0,
            local: vec![RelayStats::default(); n],
            shared,
            reset_max,
            spare: Vec::new(),
            first: 0,
        }
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut buf = vec![0u8; 65536];
        let mut fds: Vec<libc::pollfd> = self
            .flows
            .iter()
            .flat_map(|f| [f.sock_a.as_raw_fd(), f.sock_b.as_raw_fd()])
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let n = self.flows.len();
        // Sockets that may still hold datagrams: (flow, at_b).
        let mut open: Vec<(usize, bool)> = Vec::with_capacity(2 * n);
        while !stop.load(Ordering::Relaxed) {
            if self.reset_max.load(Ordering::Acquire) {
                for s in &mut self.local {
                    s.a_to_b.max_queue_delay = Duration::ZERO;
                    s.b_to_a.max_queue_delay = Duration::ZERO;
                }
                self.publish();
                self.reset_max.store(false, Ordering::Release);
            }
            let now = Instant::now();
            let wait = self
                .heap
                .peek()
                .map(|p| p.at.saturating_duration_since(now))
                .unwrap_or(Duration::from_millis(50))
                .min(Duration::from_millis(50));
            if !wait.is_zero() {
                poll_all(&mut fds, wait);
            }
            let mut changed = false;
            // Round-robin, one datagram per socket per turn, starting with
            // a different flow each wake-up: no flow's backlog in the
            // kernel gets to the shared queue ahead of the others'.
            open.clear();
            for k in 0..n {
                let i = (self.first + k) % n;
                open.push((i, true));
                open.push((i, false));
            }
            self.first = (self.first + 1) % n;
            while !open.is_empty() {
                open.retain(|&(i, at_b)| {
                    let f = &self.flows[i];
                    let sock = if at_b { &f.sock_b } else { &f.sock_a };
                    match sock.recv_from(&mut buf) {
                        Ok((len, from)) => {
                            self.arrive(i, at_b, from, &mut buf[..len]);
                            changed = true;
                            true
                        }
                        // WouldBlock, or an ICMP port unreachable from an
                        // earlier send, etc.
                        Err(_) => false,
                    }
                });
            }
            changed |= self.deliver_due();
            if changed {
                self.publish();
            }
        }
        self.publish();
    }

    fn publish(&self) {
        match self.shared.lock() {
            Ok(mut s) => s.clone_from(&self.local),
            Err(p) => p.into_inner().clone_from(&self.local),
        }
    }

    /// A packet of flow `i` arrived at its PB (`at_b`: from A, for B) or at
    /// its PA (from B).
    fn arrive(&mut self, i: usize, at_b: bool, from: SocketAddr, data: &mut [u8]) {
        let now = Instant::now();
        let flow = &mut self.flows[i];
        if at_b {
            flow.real_a = Some(from);
        } else {
            flow.real_b = Some(from);
        }
        let routed = flow.real_a.is_some() && flow.real_b.is_some();
        let (shaper, stats) = if at_b {
            (&mut self.to_b, &mut self.local[i].a_to_b)
        } else {
            (&mut self.to_a, &mut self.local[i].b_to_a)
        };
        stats.received += 1;
        if !routed {
            stats.unrouted += 1;
            return;
        }
        if let Some(limit) = self.clamp
            && clamp_gshare_connect(data, limit)
        {
            stats.clamped += 1;
        }
        match shaper.admit(now, data.len()) {
            Verdict::Oversize => stats.oversize += 1,
            Verdict::Lost => stats.lost += 1,
            Verdict::QueueFull => stats.queue_drops += 1,
            Verdict::Deliver(at, reordered) => {
                if reordered {
                    stats.reordered += 1;
                }
                let waited = shaper.last_queue_delay();
                stats.shaped += 1;
                stats.queue_delay += waited;
                stats.max_queue_delay = stats.max_queue_delay.max(waited);
                stats.max_queue = stats.max_queue.max(shaper.waiting_bytes);
                let mut v = self.spare.pop().unwrap_or_default();
                v.clear();
                v.extend_from_slice(data);
                self.seq += 1;
                self.heap.push(Pending {
                    at,
                    seq: self.seq,
                    flow: i,
                    to_b: at_b,
                    data: v,
                });
            }
        }
    }

    /// Sends every packet that is due; whether there was one.
    fn deliver_due(&mut self) -> bool {
        let now = Instant::now();
        let mut any = false;
        while self.heap.peek().is_some_and(|p| p.at <= now) {
            let Some(p) = self.heap.pop() else { break };
            let flow = &self.flows[p.flow];
            // To B: from PA to B's real address; to A: from PB to A's.
            let (sock, dest, stats) = if p.to_b {
                (&flow.sock_a, flow.real_b, &mut self.local[p.flow].a_to_b)
            } else {
                (&flow.sock_b, flow.real_a, &mut self.local[p.flow].b_to_a)
            };
            if let Some(dest) = dest
                && sock.send_to(&p.data, dest).is_ok()
            {
                stats.delivered += 1;
                stats.delivered_bytes += p.data.len() as u64;
                stats.max_datagram = stats.max_datagram.max(p.data.len());
            }
            if self.spare.len() < 4096 {
                self.spare.push(p.data);
            }
            any = true;
        }
        any
    }
}

/// Waits until any socket is readable or `wait` passes (µs precision).
fn poll_all(fds: &mut [libc::pollfd], wait: Duration) {
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `fds` is a valid slice of pollfds of that length, a valid
    // timespec, no signal mask change.
    unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        );
    }
}

/// If `datagram` is a PseudoTCP CONNECT (conversation 0, control flag,
/// control code 0) carrying gshare's private option (kind 0x67, length 4:
/// version, features, max datagram u16 BE), lowers its max datagram to
/// `limit`. Returns whether it changed the packet.
pub fn clamp_gshare_connect(datagram: &mut [u8], limit: u16) -> bool {
    const HEADER: usize = 24;
    const FLAG_CTL: u8 = 0x02;
    const OPT_GSHARE: u8 = 0x67;
    if datagram.len() <= HEADER || datagram[..4] != [0, 0, 0, 0] {
        return false;
    }
    if datagram[13] & FLAG_CTL == 0 || datagram[HEADER] != 0 {
        return false;
    }
    let mut i = HEADER + 1;
    while i < datagram.len() {
        let kind = datagram[i];
        match kind {
            0 => return false,
            1 => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = datagram.get(i + 1) else {
            return false;
        };
        let body = i + 2;
        let end = body + usize::from(len);
        if end > datagram.len() {
            return false;
        }
        if kind == OPT_GSHARE && len >= 4 {
            let v = u16::from_be_bytes([datagram[body + 2], datagram[body + 3]]);
            if v > limit {
                datagram[body + 2..body + 4].copy_from_slice(&limit.to_be_bytes());
                return true;
            }
            return false;
        }
        i = end;
    }
    false
}
