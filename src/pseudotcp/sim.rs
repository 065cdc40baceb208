//! A deterministic simulated network for PseudoTCP in virtual time: two
//! engines joined by two one-way links with delay, jitter (reordering), loss,
//! duplication, a bandwidth cap and a drop-tail queue. All randomness comes
//! from a seeded generator, and time only moves when [`Sim::step`] jumps to
//! the next event, so a 100 MiB lossy transfer runs in seconds and every run
//! is identical. Used by the tests and the benchmark.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::engine::{Config, Error, PseudoTcp, State};

/// SplitMix64: tiny, fast, good enough for simulation and test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// A reproducible stream of pseudo-random bytes: the writer fills from one,
/// the reader checks against an identical one.
#[derive(Debug, Clone)]
pub struct ByteStream {
    rng: Rng,
    word: [u8; 8],
    used: usize,
    /// Bytes produced so far.
    pub position: u64,
}

impl ByteStream {
    /// Stream for `seed`.
    pub fn new(seed: u64) -> ByteStream {
        ByteStream {
            rng: Rng::new(seed),
            word: [0; 8],
            used: 8,
            position: 0,
        }
    }

    /// Fills `out` with the next bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut i = 0;
        while i < out.len() && self.used < 8 {
            out[i] = self.word[self.used];
            self.used += 1;
            i += 1;
        }
        let rest = &mut out[i..];
        let mut chunks = rest.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            self.word = self.rng.next_u64().to_le_bytes();
            let n = tail.len();
            tail.copy_from_slice(&self.word[..n]);
            self.used = n;
        }
        self.position += out.len() as u64;
    }

    /// Checks that `data` are the next bytes; returns the offset of the
    /// first mismatch.
    pub fn verify(&mut self, data: &[u8]) -> Result<(), u64> {
        let mut expect = [0u8; 4096];
        for chunk in data.chunks(expect.len()) {
            let start = self.position;
            let e = &mut expect[..chunk.len()];
            self.fill(e);
            if e != chunk {
                let i = e.iter().zip(chunk).position(|(a, b)| a != b);
                return Err(start + i.unwrap_or(0) as u64);
            }
        }
        Ok(())
    }
}

/// One direction of the simulated path.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Extra delay, uniform in `[0, jitter]`, per datagram (reorders).
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back by `reorder_delay` (and so
    /// overtaken by the ones behind it).
    pub reorder: f64,
    /// Extra delay of a reordered datagram.
    pub reorder_delay: Duration,
    /// Bottleneck rate in bytes per second (`None`: unlimited).
    pub bandwidth: Option<u64>,
    /// Bytes the bottleneck queue holds before it drops (drop-tail).
    pub queue_limit: usize,
    /// ACK aggregation: every datagram is handed over at the next multiple
    /// of this period (counted from the link's first datagram), as a busy
    /// receiver, a batching relay or a Wi-Fi hop releases a burst of what
    /// came in over a few milliseconds at once. Zero: none. Acknowledgments
    /// that arrive bunched make delivery-rate samples over-read the
    /// bottleneck (the real relay of `scripts/bench` does this).
    pub aggregate: Duration,
}

impl Default for LinkConfig {
    fn default() -> LinkConfig {
        LinkConfig {
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(5),
            bandwidth: None,
            queue_limit: usize::MAX,
            aggregate: Duration::ZERO,
        }
    }
}

impl LinkConfig {
    /// A link of `rate` bytes/s with `rtt`/2 one-way delay and a queue of one
    /// bandwidth-delay product (a common router sizing).
    pub fn bottleneck(rate: u64, rtt: Duration, loss: f64) -> LinkConfig {
        let bdp = (rate as f64 * rtt.as_secs_f64()) as usize;
        LinkConfig {
            delay: rtt / 2,
            loss,
            bandwidth: Some(rate),
            queue_limit: bdp.max(64 * 1024),
            ..LinkConfig::default()
        }
    }
}

/// Counters of one link.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkStats {
    /// Datagrams handed to the link.
    pub sent: u64,
    /// Datagrams handed to the receiver (duplicates included).
    pub delivered: u64,
    /// Random losses.
    pub lost: u64,
    /// Drops because the bottleneck queue was full.
    pub queue_drops: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
}

#[derive(Debug)]
struct InFlight {
    at: Instant,
    id: u64,
    data: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.id) == (o.at, o.id)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for InFlight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.id).cmp(&(o.at, o.id))
    }
}

/// A one-way link.
#[derive(Debug)]
pub struct Link {
    /// Its behaviour; may be changed at any time (e.g. to cut the path).
    pub cfg: LinkConfig,
    rng: Rng,
    heap: BinaryHeap<Reverse<InFlight>>,
    busy_until: Option<Instant>,
    /// The first datagram's time: the origin of `aggregate`'s periods.
    epoch: Option<Instant>,
    next_id: u64,
    pool: Vec<Vec<u8>>,
    /// Counters.
    pub stats: LinkStats,
}

impl Link {
    /// A link with its own random stream.
    pub fn new(cfg: LinkConfig, seed: u64) -> Link {
        Link {
            cfg,
            rng: Rng::new(seed),
            heap: BinaryHeap::new(),
            busy_until: None,
            epoch: None,
            next_id: 0,
            pool: Vec::new(),
            stats: LinkStats::default(),
        }
    }

    /// Offer a datagram to the link at `now`.
    pub fn send(&mut self, now: Instant, datagram: &[u8]) {
        self.stats.sent += 1;
        let mut depart = now;
        if let Some(rate) = self.cfg.bandwidth.filter(|&r| r > 0) {
            let start = self.busy_until.map_or(now, |b| b.max(now));
            let backlog = start.saturating_duration_since(now).as_secs_f64() * rate as f64;
            if backlog as usize + datagram.len() > self.cfg.queue_limit {
                self.stats.queue_drops += 1;
                return;
            }
            let tx = Duration::from_secs_f64(datagram.len() as f64 / rate as f64);
            depart = start + tx;
            self.busy_until = Some(depart);
        }
        if self.rng.chance(self.cfg.loss) {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.rng.chance(self.cfg.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = depart + self.cfg.delay;
            if !self.cfg.jitter.is_zero() {
                at += self.cfg.jitter.mul_f64(self.rng.unit());
            }
            if self.rng.chance(self.cfg.reorder) {
                at += self.cfg.reorder_delay;
            }
            if !self.cfg.aggregate.is_zero() {
                let epoch = *self.epoch.get_or_insert(now);
                let period = self.cfg.aggregate.as_nanos();
                let since = at.saturating_duration_since(epoch).as_nanos();
                let up = since.div_ceil(period) * period;
                at = epoch + Duration::from_nanos(u64::try_from(up).unwrap_or(u64::MAX));
            }
            let mut data = self.pool.pop().unwrap_or_default();
            data.clear();
            data.extend_from_slice(datagram);
            self.next_id += 1;
            self.heap.push(Reverse(InFlight {
                at,
                id: self.next_id,
                data,
            }));
        }
    }

    /// When the next datagram arrives.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.heap.peek().map(|r| r.0.at)
    }

    /// Hands every datagram due by `now` to `f`, in arrival order.
    pub fn deliver_due(&mut self, now: Instant, mut f: impl FnMut(&[u8])) {
        while self.heap.peek().is_some_and(|r| r.0.at <= now) {
            if let Some(Reverse(d)) = self.heap.pop() {
                self.stats.delivered += 1;
                f(&d.data);
                self.pool.push(d.data);
            }
        }
    }

    /// Datagrams still on the wire.
    pub fn in_flight(&self) -> usize {
        self.heap.len()
    }
}

/// Two engines, `a` and `b`, joined by `ab` (a→b) and `ba` (b→a).
#[derive(Debug)]
pub struct Sim {
    /// Virtual now.
    pub now: Instant,
    /// Where the simulation started.
    pub start: Instant,
    /// One end.
    pub a: PseudoTcp,
    /// The other end.
    pub b: PseudoTcp,
    /// Link from `a` to `b`.
    pub ab: Link,
    /// Link from `b` to `a`.
    pub ba: Link,
    buf: Vec<u8>,
}

impl Sim {
    /// New engines (both in LISTEN) and links; nothing is opened yet.
    pub fn new(a: Config, b: Config, ab: LinkConfig, ba: LinkConfig, seed: u64) -> Sim {
        let now = Instant::now();
        Sim {
            now,
            start: now,
            a: PseudoTcp::new(a, now),
            b: PseudoTcp::new(b, now),
            ab: Link::new(ab, seed ^ 0xa5a5_a5a5),
            ba: Link::new(ba, seed.rotate_left(17) ^ 0x5a5a),
            buf: Vec::with_capacity(65536),
        }
    }

    /// Virtual time elapsed.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Moves everything both engines want to send onto the links.
    pub fn flush(&mut self) {
        while self.a.poll_transmit(self.now, &mut self.buf).is_some() {
            self.ab.send(self.now, &self.buf);
        }
        while self.b.poll_transmit(self.now, &mut self.buf).is_some() {
            self.ba.send(self.now, &self.buf);
        }
    }

    /// The next instant anything happens.
    pub fn next_event(&self) -> Option<Instant> {
        [
            self.a.poll_timeout(),
            self.b.poll_timeout(),
            self.ab.next_arrival(),
            self.ba.next_arrival(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Flushes, then jumps to the next event (or `wake`, if earlier) and
    /// processes everything due then. Returns false when nothing at all is
    /// scheduled (and `wake` is `None`).
    pub fn step(&mut self, wake: Option<Instant>) -> bool {
        self.flush();
        let Some(t) = [self.next_event(), wake].into_iter().flatten().min() else {
            return false;
        };
        self.now = self.now.max(t);
        let now = self.now;
        let (a, b) = (&mut self.a, &mut self.b);
        self.ab.deliver_due(now, |d| b.handle_datagram(now, d));
        self.ba.deliver_due(now, |d| a.handle_datagram(now, d));
        for e in [&mut self.a, &mut self.b] {
            if e.poll_timeout().is_some_and(|d| d <= now) {
                e.handle_timeout(now);
            }
        }
        self.flush();
        true
    }

    /// Steps until both ends are established (or `limit` passes).
    pub fn run_until_established(&mut self, limit: Duration) -> bool {
        let deadline = self.now + limit;
        while self.now < deadline {
            if self.a.state() == State::Established && self.b.state() == State::Established {
                return true;
            }
            if !self.step(Some(deadline)) {
                break;
            }
        }
        self.a.state() == State::Established && self.b.state() == State::Established
    }
}

/// What a [`transfer`] should do.
#[derive(Debug, Clone)]
pub struct TransferSpec {
    /// Bytes from `a` to `b`.
    pub a_to_b: u64,
    /// Bytes from `b` to `a`.
    pub b_to_a: u64,
    /// Application write sizes (chosen uniformly per write).
    pub write_size: (usize, usize),
    /// Application read sizes.
    pub read_size: (usize, usize),
    /// If set, `b`'s reader reads only once per this interval (slow reader).
    pub b_read_interval: Option<Duration>,
    /// Same for `a`.
    pub a_read_interval: Option<Duration>,
    /// Give up after this much virtual time.
    pub time_limit: Duration,
    /// Seed for data and sizes.
    pub seed: u64,
}

impl Default for TransferSpec {
    fn default() -> TransferSpec {
        TransferSpec {
            a_to_b: 1 << 20,
            b_to_a: 0,
            write_size: (64 * 1024, 64 * 1024),
            read_size: (64 * 1024, 64 * 1024),
            b_read_interval: None,
            a_read_interval: None,
            time_limit: Duration::from_secs(600),
            seed: 1,
        }
    }
}

/// Outcome of a [`transfer`].
#[derive(Debug, Clone)]
pub struct TransferReport {
    /// Virtual time from start until the last byte was read (each way).
    pub a_to_b_time: Option<Duration>,
    /// As above for the other direction.
    pub b_to_a_time: Option<Duration>,
    /// Virtual time the whole run took.
    pub elapsed: Duration,
}

/// Why a [`transfer`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferError {
    /// Received data differ from what was sent at this offset.
    Corrupt {
        /// Direction ("a->b" / "b->a").
        dir: &'static str,
        /// First bad byte.
        offset: u64,
    },
    /// Nothing scheduled any more, but the transfer is incomplete.
    Deadlock,
    /// `time_limit` passed.
    TimeLimit,
    /// An engine closed.
    Closed(Option<Error>),
}

struct Side {
    writer: ByteStream,
    to_write: u64,
    reader: ByteStream,
    to_read: u64,
    next_read: Option<Instant>,
    done_at: Option<Duration>,
}

/// Moves `spec`'s bytes both ways through an established [`Sim`], checking
/// every byte. Data are pseudo-random, reproducible from `spec.seed`.
pub fn transfer(sim: &mut Sim, spec: &TransferSpec) -> Result<TransferReport, TransferError> {
    let mut rng = Rng::new(spec.seed);
    let start = sim.now;
    let deadline = start + spec.time_limit;
    let mut sides = [
        Side {
            writer: ByteStream::new(spec.seed ^ 1),
            to_write: spec.a_to_b,
            reader: ByteStream::new(spec.seed ^ 2),
            to_read: spec.b_to_a,
            next_read: spec.a_read_interval.map(|_| start),
            done_at: None,
        },
        Side {
            writer: ByteStream::new(spec.seed ^ 2),
            to_write: spec.b_to_a,
            reader: ByteStream::new(spec.seed ^ 1),
            to_read: spec.a_to_b,
            next_read: spec.b_read_interval.map(|_| start),
            done_at: None,
        },
    ];
    let intervals = [spec.a_read_interval, spec.b_read_interval];
    let mut chunk = vec![0u8; spec.read_size.1.max(1)];
    // Written but not yet accepted by send(), per side: buffer, start, end.
    let wmax = spec.write_size.1.max(1);
    let mut pending = [(vec![0u8; wmax], 0usize, 0usize), (vec![0u8; wmax], 0, 0)];
    loop {
        for i in 0..2 {
            let eng = if i == 0 { &mut sim.a } else { &mut sim.b };
            if eng.state() == State::Closed {
                let mut reason = None;
                while let Some(ev) = eng.poll_event() {
                    if let super::engine::Event::Closed(r) = ev {
                        reason = r;
                    }
                }
                return Err(TransferError::Closed(reason));
            }
            while eng.poll_event().is_some() {}
            let side = &mut sides[i];
            // Write.
            loop {
                let (buf, start, end) = &mut pending[i];
                if start == end {
                    if side.to_write == 0 {
                        break;
                    }
                    let n = (rng.range(spec.write_size.0, spec.write_size.1) as u64)
                        .min(side.to_write) as usize;
                    side.writer.fill(&mut buf[..n]);
                    side.to_write -= n as u64;
                    (*start, *end) = (0, n);
                }
                match eng.send(&buf[*start..*end]) {
                    Ok(n) => *start += n,
                    Err(_) => break,
                }
            }
            // Read.
            let may_read = side.next_read.is_none_or(|t| t <= sim.now);
            if may_read && side.to_read > 0 {
                let mut reads = 0;
                loop {
                    let n = rng.range(spec.read_size.0, spec.read_size.1);
                    match eng.recv(&mut chunk[..n]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            side.reader.verify(&chunk[..n]).map_err(|offset| {
                                TransferError::Corrupt {
                                    dir: if i == 0 { "b->a" } else { "a->b" },
                                    offset,
                                }
                            })?;
                            side.to_read -= n as u64;
                            reads += 1;
                        }
                    }
                    if intervals[i].is_some() && reads >= 1 {
                        break;
                    }
                }
                if side.to_read == 0 && side.done_at.is_none() {
                    side.done_at = Some(sim.now - start);
                }
                if let Some(iv) = intervals[i] {
                    side.next_read = Some(sim.now + iv);
                }
            } else if side.to_read == 0 && side.done_at.is_none() {
                side.done_at = Some(sim.now - start);
            }
        }
        let done = sides
            .iter()
            .zip(&pending)
            .all(|(s, p)| s.to_read == 0 && s.to_write == 0 && p.1 == p.2);
        if done {
            break;
        }
        if sim.now >= deadline {
            return Err(TransferError::TimeLimit);
        }
        let wake = sides
            .iter()
            .filter(|s| s.to_read > 0)
            .filter_map(|s| s.next_read)
            .filter(|&t| t > sim.now)
            .min();
        if !sim.step(wake) {
            return Err(TransferError::Deadlock);
        }
    }
    Ok(TransferReport {
        a_to_b_time: sides[1].done_at,
        b_to_a_time: sides[0].done_at,
        elapsed: sim.now - start,
    })
}

/// Several connections whose a→b directions share one bottleneck link (the
/// b→a directions each have their own, unconstrained): for fairness and
/// queueing measurements. Datagrams carry their flow's index in a byte the
/// simulator adds and strips.
#[derive(Debug)]
pub struct SharedBottleneck {
    /// Virtual now.
    pub now: Instant,
    /// Where the simulation started.
    pub start: Instant,
    /// The connections (`.0` sends through the bottleneck to `.1`).
    pub flows: Vec<(PseudoTcp, PseudoTcp)>,
    /// The shared a→b link.
    pub fwd: Link,
    /// Each flow's b→a link.
    pub back: Vec<Link>,
    /// Sum and count of the queueing delay seen by datagrams entering the
    /// bottleneck (for the mean added delay).
    pub queue_delay_sum: Duration,
    /// Datagrams over which `queue_delay_sum` was taken.
    pub queue_samples: u64,
    buf: Vec<u8>,
    tagged: Vec<u8>,
}

impl SharedBottleneck {
    /// `configs` pairs (sender, receiver); nothing is opened yet.
    pub fn new(
        configs: Vec<(Config, Config)>,
        fwd: LinkConfig,
        back: LinkConfig,
        seed: u64,
    ) -> Self {
        let now = Instant::now();
        let n = configs.len();
        SharedBottleneck {
            now,
            start: now,
            flows: configs
                .into_iter()
                .map(|(a, b)| (PseudoTcp::new(a, now), PseudoTcp::new(b, now)))
                .collect(),
            fwd: Link::new(fwd, seed ^ 0xa5a5_a5a5),
            back: (0..n)
                .map(|i| Link::new(back.clone(), seed.rotate_left(17) ^ i as u64))
                .collect(),
            queue_delay_sum: Duration::ZERO,
            queue_samples: 0,
            buf: Vec::with_capacity(65536),
            tagged: Vec::with_capacity(65536),
        }
    }

    /// Opens flow `i` (its sender connects).
    pub fn open(&mut self, i: usize) {
        let now = self.now;
        let _ = self.flows[i].0.connect(now);
    }

    fn flush(&mut self) {
        let now = self.now;
        for (i, (a, b)) in self.flows.iter_mut().enumerate() {
            while a.poll_transmit(now, &mut self.buf).is_some() {
                self.tagged.clear();
                self.tagged.push(i as u8);
                self.tagged.extend_from_slice(&self.buf);
                let backlog = self
                    .fwd
                    .busy_until
                    .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
                self.queue_delay_sum += backlog;
                self.queue_samples += 1;
                self.fwd.send(now, &self.tagged);
            }
            while b.poll_transmit(now, &mut self.buf).is_some() {
                self.back[i].send(now, &self.buf);
            }
        }
    }

    /// Mean queueing delay at the bottleneck so far.
    pub fn mean_queue_delay(&self) -> Duration {
        if self.queue_samples == 0 {
            return Duration::ZERO;
        }
        self.queue_delay_sum / self.queue_samples as u32
    }

    /// Runs until `until`: senders' buffers are kept full (`sending[i]`
    /// says which flows send), receivers read everything. Returns the
    /// bytes each receiver read.
    pub fn run(&mut self, until: Instant, sending: &[bool]) -> Vec<u64> {
        let fill = vec![0u8; 256 * 1024];
        let mut read = vec![0u64; self.flows.len()];
        while self.now < until {
            for (i, (a, b)) in self.flows.iter_mut().enumerate() {
                if sending.get(i).copied().unwrap_or(false) && a.state() == State::Established {
                    while a.send(&fill).is_ok_and(|n| n > 0) {}
                }
                while let Ok(n) = b.recv_with(usize::MAX, |_| {}) {
                    if n == 0 {
                        break;
                    }
                    read[i] += n as u64;
                }
            }
            self.flush();
            let next = self
                .flows
                .iter()
                .flat_map(|(a, b)| [a.poll_timeout(), b.poll_timeout()])
                .chain([self.fwd.next_arrival()])
                .chain(self.back.iter().map(|l| l.next_arrival()))
                .flatten()
                .min();
            let t = next.map_or(until, |t| t.min(until));
            self.now = self.now.max(t);
            let now = self.now;
            let flows = &mut self.flows;
            self.fwd.deliver_due(now, |d| {
                if let Some((&i, rest)) = d.split_first()
                    && let Some(f) = flows.get_mut(usize::from(i))
                {
                    f.1.handle_datagram(now, rest);
                }
            });
            for (i, l) in self.back.iter_mut().enumerate() {
                let a = &mut flows[i].0;
                l.deliver_due(now, |d| a.handle_datagram(now, d));
            }
            for (a, b) in flows.iter_mut() {
                for e in [a, b] {
                    if e.poll_timeout().is_some_and(|d| d <= now) {
                        e.handle_timeout(now);
                    }
                }
            }
        }
        read
    }
}
