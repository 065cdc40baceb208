//! Sans-IO agent for Google's legacy ICE dialect (docs/protocol.md §B.3–§B.6).
//!
//! The agent owns candidates and candidate pairs ("connections" in
//! libjingle), answers and sends connectivity checks, learns server-
//! reflexive candidates from STUN servers and picks the connection to send
//! data on. It never touches a socket or a clock: datagrams and time go in
//! through [`IceAgent::handle_datagram`] / [`IceAgent::handle_timeout`], STUN
//! datagrams come out through [`IceAgent::poll_transmit`], state changes
//! through [`IceAgent::poll_event`], and [`IceAgent::poll_timeout`] says when
//! to call again. Sockets are named by the caller's index.
//!
//! The dialect has no roles, no nomination and no integrity: each side pings
//! every pair, a pair is *writable* once one of our checks is answered and
//! *readable* once a valid check from the peer arrives, and each side sends
//! on its own best writable pair (libjingle 0.4 `p2ptransportchannel.cc`).
//! libnice in Google mode behaves compatibly (it nominates on every check),
//! but drops checks with an unknown username where libjingle answers 430;
//! both are handled because unanswered checks are simply repeated.
//!
//! Hand-written: webrtc-ice and str0m speak RFC 8445 (integrity, roles,
//! nomination) and cannot be configured into this dialect (docs/crates.md §4).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use tracing::{debug, trace};

use crate::rng::SecretRng;

use super::candidate::{Candidate, CandidateType};
use super::stun::{ERROR_BAD_REQUEST, ERROR_STALE_CREDENTIALS, ErrorCode, Message, MessageType};

/// Tunables. Defaults are libjingle 0.4's constants (§B.6) plus bounds
/// against hostile peers.
#[derive(Debug, Clone)]
pub struct IceConfig {
    /// Transport channel name, put on server-reflexive candidates we learn.
    pub name: String,
    /// Where transaction ids and candidate fragments come from: `None` is
    /// the operating system's RNG (production, [`IceConfig::with_os_rng`]);
    /// `Some(seed)` a seeded generator, for deterministic simulations only.
    pub seed: Option<u64>,
    /// Check pacing while no pair is writable (`UNWRITABLE_DELAY`, 50 ms).
    pub unwritable_delay: Duration,
    /// Check pacing once a pair is writable (`WRITABLE_DELAY`, 480 ms).
    pub writable_delay: Duration,
    /// The selected pair is re-pinged at least this often
    /// (`MAX_CURRENT_WRITABLE_DELAY`, 900 ms); these pings are the keepalives.
    pub keepalive_interval: Duration,
    /// A check is sent once and forgotten after this long
    /// (`CONNECTION_RESPONSE_TIMEOUT`, 5 s).
    pub response_timeout: Duration,
    /// A writable pair turns "connecting" after this many unanswered pings…
    /// (`CONNECTION_WRITE_CONNECT_FAILURES`, 5)
    pub write_connect_failures: usize,
    /// …spanning more than this (`CONNECTION_WRITE_CONNECT_TIMEOUT`, 5 s).
    pub write_connect_timeout: Duration,
    /// A pair with no answer for this long is write-timed-out and no longer
    /// pinged (`CONNECTION_WRITE_TIMEOUT`, 15 s).
    pub write_timeout: Duration,
    /// A pair stops being readable this long after the last valid check
    /// (`CONNECTION_READ_TIMEOUT`, 30 s). Divergence from libjingle: data
    /// received on a readable pair also counts, because libnice only sends
    /// keepalive checks every 25 s.
    pub read_timeout: Duration,
    /// Give up on a STUN server after this long (libjingle keeps trying for
    /// 50 s; gathering should not wait that long).
    pub stun_server_timeout: Duration,
    /// Remote candidates kept, signalled and peer-reflexive together.
    pub max_remote_candidates: usize,
    /// Candidate pairs kept.
    pub max_pairs: usize,
    /// Error responses (400/430) sent per second at most: floods of checks
    /// with bad usernames are not reflected at full rate.
    pub max_error_responses_per_second: u32,
    /// STUN datagrams queued for sending at most.
    pub max_queued_transmits: usize,
}

impl IceConfig {
    /// libjingle 0.4 defaults for a channel called `name`, with secrets
    /// from the operating system's RNG: what production uses.
    pub fn with_os_rng(name: &str) -> Self {
        IceConfig {
            seed: None,
            ..IceConfig::new(name, 0)
        }
    }

    /// libjingle 0.4 defaults for a channel called `name`, with a seeded
    /// generator: deterministic, for simulations and tests only (a 64-bit
    /// seed does not make secrets; production uses
    /// [`IceConfig::with_os_rng`]).
    pub fn new(name: &str, seed: u64) -> Self {
        IceConfig {
            name: name.to_owned(),
            seed: Some(seed),
            unwritable_delay: Duration::from_millis(50),
            writable_delay: Duration::from_millis(480),
            keepalive_interval: Duration::from_millis(900),
            response_timeout: Duration::from_secs(5),
            write_connect_failures: 5,
            write_connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(30),
            stun_server_timeout: Duration::from_secs(3),
            max_remote_candidates: 64,
            max_pairs: 256,
            max_error_responses_per_second: 50,
            max_queued_transmits: 256,
        }
    }
}

/// What a datagram was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Payload for the layer above (it came from a readable pair).
    Data,
    /// A STUN message, consumed by the agent.
    Stun,
    /// Neither valid STUN nor data from a readable pair: ignored.
    Dropped,
}

/// A STUN datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Index of the local socket to send from.
    pub socket: usize,
    /// Where to.
    pub destination: SocketAddr,
    /// The datagram.
    pub payload: Vec<u8>,
}

/// State changes reported to the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum IceEvent {
    /// A server-reflexive candidate was learned (already added as ours);
    /// tell the peer.
    LocalCandidate(Candidate),
    /// Every STUN server request added so far has finished.
    GatheringComplete,
    /// Data now goes from `socket` to `remote`.
    SelectedPairChanged {
        /// Local socket index.
        socket: usize,
        /// Local candidate address (a server-reflexive one if that pair won).
        local: SocketAddr,
        /// Remote address.
        remote: SocketAddr,
    },
    /// Some pair became writable (first time, or again after `Disconnected`).
    Writable,
    /// No pair is writable any more; checks go on and it may recover.
    Disconnected,
    /// Every pair has timed out both ways; only new candidates or checks
    /// from the peer can revive the channel.
    Failed,
}

/// Outcome of [`IceAgent::add_remote_candidate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddRemote {
    /// New candidate; pairs were created.
    Added,
    /// Equivalent to one already known (§B.1): ignored.
    Duplicate,
    /// Not used, with the reason.
    Rejected(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum WriteState {
    /// No response ever, or too long without one: not pinged any more.
    Timeout,
    /// Never answered yet (libjingle's initial WRITE_CONNECT).
    Init,
    /// Was writable, several pings unanswered (WRITE_CONNECT again).
    Connecting,
    /// A check was answered recently.
    Writable,
}

#[derive(Debug)]
struct Local {
    socket: usize,
    cand: Candidate,
}

#[derive(Debug)]
struct Remote {
    cand: Candidate,
    /// Learned from a check, not signalled.
    prflx: bool,
}

#[derive(Debug)]
struct Pair {
    id: u64,
    local: usize,
    socket: usize,
    remote_addr: SocketAddr,
    remote_username: String,
    generation: u32,
    /// Local × remote preference (§B.5).
    preference: f32,
    /// USERNAME of our checks: remote fragment ‖ local fragment (§B.3).
    request_username: Vec<u8>,
    write: WriteState,
    readable: bool,
    last_received: Option<Instant>,
    /// Send times of pings since the last response (bounded).
    unanswered: VecDeque<Instant>,
    last_ping_sent: Option<Instant>,
    rtt: Option<Duration>,
    /// A check from the peer arrived while we could not write: ping soon.
    triggered: bool,
    /// Ranked below a writable selected pair on the same socket: not pinged.
    pruned: bool,
}

impl Pair {
    fn pingable(&self) -> bool {
        self.write != WriteState::Timeout && !self.pruned
    }

    fn usable(&self) -> bool {
        matches!(self.write, WriteState::Writable | WriteState::Connecting)
    }

    /// Ordering for "best": writability, then preference, then RTT.
    fn better_than(&self, other: &Pair) -> bool {
        if self.write != other.write {
            return self.write > other.write;
        }
        if self.preference != other.preference {
            return self.preference > other.preference;
        }
        let a = self.rtt.unwrap_or(Duration::MAX);
        let b = other.rtt.unwrap_or(Duration::MAX);
        a < b
    }
}

#[derive(Debug, Clone, Copy)]
enum TxnKind {
    Ping { pair: u64 },
    Server { index: usize },
}

#[derive(Debug, Clone, Copy)]
struct Txn {
    kind: TxnKind,
    sent_at: Instant,
}

#[derive(Debug)]
struct ServerRequest {
    socket: usize,
    server: SocketAddr,
    tid: [u8; 16],
    started: Instant,
    next_send: Instant,
    interval: Duration,
    done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChannelState {
    New,
    Writable,
    Disconnected,
    Failed,
}

/// The Google-dialect ICE agent for one transport channel.
#[derive(Debug)]
pub struct IceAgent {
    config: IceConfig,
    /// Usernames, passwords and transaction ids (docs/protocol.md §B.1):
    /// the OS RNG unless the config asks for a seeded simulation.
    rng: SecretRng,
    locals: Vec<Local>,
    remotes: Vec<Remote>,
    pairs: Vec<Pair>,
    next_pair_id: u64,
    max_generation: u32,
    txns: HashMap<[u8; 16], Txn>,
    servers: Vec<ServerRequest>,
    gathering_reported: bool,
    transmits: VecDeque<Transmit>,
    events: VecDeque<IceEvent>,
    /// Id of the pair data is sent on.
    selected: Option<u64>,
    /// (socket, remote) of the selected pair, for the send path.
    selected_route: Option<(usize, SocketAddr)>,
    state: ChannelState,
    /// Next ping tick; `None` while there is nothing to ping or time out.
    next_tick: Option<Instant>,
    last_ping_sent: Option<Instant>,
    /// Hot-path cache: (socket, from) → index of a readable pair.
    data_cache: Option<(usize, SocketAddr, usize)>,
    error_window_start: Option<Instant>,
    errors_in_window: u32,
}

impl IceAgent {
    /// A new agent with no candidates.
    pub fn new(config: IceConfig, now: Instant) -> Self {
        let _ = now;
        let rng = match config.seed {
            Some(seed) => SecretRng::seeded(seed),
            None => SecretRng::Os,
        };
        IceAgent {
            config,
            rng,
            locals: Vec::new(),
            remotes: Vec::new(),
            pairs: Vec::new(),
            next_pair_id: 0,
            max_generation: 0,
            txns: HashMap::new(),
            servers: Vec::new(),
            gathering_reported: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            selected: None,
            selected_route: None,
            state: ChannelState::New,
            next_tick: None,
            last_ping_sent: None,
            data_cache: None,
            error_window_start: None,
            errors_in_window: 0,
        }
    }

    /// Makes a fresh candidate of ours (random fragments from the agent's
    /// generator) without adding it.
    pub fn make_local_candidate(&mut self, address: SocketAddr, kind: CandidateType) -> Candidate {
        Candidate::new_local(&self.config.name, address, kind, &mut self.rng)
    }

    /// Adds one of our candidates, reachable through socket `socket`.
    pub fn add_local_candidate(&mut self, socket: usize, cand: Candidate) {
        let local = self.locals.len();
        self.locals.push(Local { socket, cand });
        for r in 0..self.remotes.len() {
            self.create_pair(local, r);
        }
    }

    /// Our candidates, in the order added.
    pub fn local_candidates(&self) -> impl Iterator<Item = &Candidate> {
        self.locals.iter().map(|l| &l.cand)
    }

    /// Number of remote candidates kept (signalled and peer-reflexive).
    pub fn remote_candidate_count(&self) -> usize {
        self.remotes.len()
    }

    /// Number of candidate pairs.
    pub fn pair_count(&self) -> usize {
        self.pairs.len()
    }

    /// Asks `server` for our mapped address from `socket`; a server-reflexive
    /// candidate is reported as [`IceEvent::LocalCandidate`].
    pub fn add_stun_server(&mut self, now: Instant, socket: usize, server: SocketAddr) {
        let tid = self.random_tid();
        let index = self.servers.len();
        self.servers.push(ServerRequest {
            socket,
            server,
            tid,
            started: now,
            next_send: now,
            interval: Duration::from_millis(100),
            done: false,
        });
        self.txns.insert(
            tid,
            Txn {
                kind: TxnKind::Server { index },
                sent_at: now,
            },
        );
        self.gathering_reported = false;
        self.service_servers(now);
    }

    /// True once every STUN server request has finished.
    pub fn gathering_complete(&self) -> bool {
        self.servers.iter().all(|s| s.done)
    }

    /// Adds a candidate signalled by the peer. Dedupes per §B.1, honours
    /// generations, and keeps at most `max_remote_candidates`.
    pub fn add_remote_candidate(&mut self, now: Instant, cand: Candidate) -> AddRemote {
        if !cand.protocol.eq_ignore_ascii_case("udp") {
            return AddRemote::Rejected("not udp");
        }
        let ip = cand.address.ip();
        if cand.address.port() == 0 || ip.is_unspecified() || ip.is_multicast() {
            return AddRemote::Rejected("unusable address");
        }
        if cand.generation < self.max_generation {
            return AddRemote::Rejected("older generation");
        }
        if cand.generation > self.max_generation {
            self.drop_generations_below(cand.generation);
        }
        if self
            .remotes
            .iter()
            .any(|r| !r.prflx && r.cand.is_equivalent(&cand))
        {
            return AddRemote::Duplicate;
        }
        if self
            .remotes
            .iter()
            .any(|r| !r.prflx && r.cand.address == cand.address && r.cand.name == cand.name)
        {
            // libjingle: "Attempt to change a remote candidate".
            return AddRemote::Rejected("changes a known remote candidate");
        }
        // A peer-reflexive candidate now signalled: adopt the signalled data.
        if let Some(r) = self.remotes.iter().position(|r| {
            r.prflx
                && same_endpoint(r.cand.address, cand.address)
                && r.cand.username == cand.username
        }) {
            let pref = cand.preference;
            self.remotes[r] = Remote { cand, prflx: false };
            let (addr, user) = (
                self.remotes[r].cand.address,
                self.remotes[r].cand.username.clone(),
            );
            for p in &mut self.pairs {
                if same_endpoint(p.remote_addr, addr) && p.remote_username == user {
                    p.preference =
                        self.locals.get(p.local).map_or(0.0, |l| l.cand.preference) * pref;
                }
            }
            return AddRemote::Added;
        }
        if self.remotes.len() >= self.config.max_remote_candidates {
            debug!(address = %cand.address, "too many remote candidates, dropping");
            return AddRemote::Rejected("too many remote candidates");
        }
        debug!(address = %cand.address, username = %cand.username, "remote candidate");
        self.remotes.push(Remote { cand, prflx: false });
        let r = self.remotes.len() - 1;
        for l in 0..self.locals.len() {
            self.create_pair(l, r);
        }
        self.schedule_soon(now);
        AddRemote::Added
    }

    /// The route data should be sent on: (socket index, remote address).
    pub fn selected(&self) -> Option<(usize, SocketAddr)> {
        self.selected_route
    }

    /// True while some pair is writable.
    pub fn is_writable(&self) -> bool {
        self.state == ChannelState::Writable
    }

    /// True after [`IceEvent::Failed`] until something revives the channel.
    pub fn is_failed(&self) -> bool {
        self.state == ChannelState::Failed
    }

    /// Feeds one received datagram. Returns [`Received::Data`] when the
    /// caller should pass `data` up (it is not copied here).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        socket: usize,
        from: SocketAddr,
        data: &[u8],
    ) -> Received {
        if !Message::looks_like_stun(data) {
            return self.check_data(now, socket, from);
        }
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(e) => {
                trace!(%from, error = %e, "unparseable STUN dropped");
                return Received::Dropped;
            }
        };
        match msg.kind {
            MessageType::BindingRequest => self.handle_request(now, socket, from, msg),
            MessageType::BindingResponse | MessageType::BindingErrorResponse => {
                self.handle_response(now, from, msg)
            }
        }
        self.update_state(now);
        Received::Stun
    }

    /// Runs timers: pings, timeouts, STUN server retransmissions.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.service_servers(now);
        let Some(tick) = self.next_tick else {
            return;
        };
        if now < tick {
            return;
        }
        let timeout = self.config.response_timeout;
        self.txns.retain(|_, t| match t.kind {
            TxnKind::Ping { .. } => now.saturating_duration_since(t.sent_at) < timeout,
            TxnKind::Server { .. } => true,
        });
        self.update_timeouts(now);
        self.update_state(now);
        if let Some(i) = self.next_ping(now) {
            self.send_ping(now, i);
        }
        self.next_tick = self.tick_after(now);
    }

    /// When [`IceAgent::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let servers = self
            .servers
            .iter()
            .filter(|s| !s.done)
            .map(|s| s.next_send.min(s.started + self.config.stun_server_timeout))
            .min();
        match (self.next_tick, servers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Next STUN datagram to send.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let _ = now;
        self.transmits.pop_front()
    }

    /// Next state change.
    pub fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }

    // ----- internals -------------------------------------------------------

    fn random_tid(&mut self) -> [u8; 16] {
        let mut tid = [0u8; 16];
        self.rng.fill(&mut tid);
        tid
    }

    fn queue(&mut self, t: Transmit) {
        if self.transmits.len() >= self.config.max_queued_transmits {
            trace!("transmit queue full, dropping STUN datagram");
            return;
        }
        self.transmits.push_back(t);
    }

    fn create_pair(&mut self, local: usize, remote: usize) -> Option<usize> {
        let l = self.locals.get(local)?;
        let r = self.remotes.get(remote)?;
        if l.cand.address.is_ipv4() != r.cand.address.is_ipv4() {
            return None;
        }
        if self.pairs.len() >= self.config.max_pairs {
            debug!("too many candidate pairs, not pairing");
            return None;
        }
        let mut request_username = r.cand.username.as_bytes().to_vec();
        request_username.extend_from_slice(l.cand.username.as_bytes());
        let pair = Pair {
            id: self.next_pair_id,
            local,
            socket: l.socket,
            remote_addr: reached_from(r.cand.address, l.cand.address),
            remote_username: r.cand.username.clone(),
            generation: r.cand.generation,
            preference: l.cand.preference * r.cand.preference,
            request_username,
            write: WriteState::Init,
            readable: false,
            last_received: None,
            unanswered: VecDeque::new(),
            last_ping_sent: None,
            rtt: None,
            triggered: false,
            pruned: false,
        };
        self.next_pair_id += 1;
        self.pairs.push(pair);
        Some(self.pairs.len() - 1)
    }

    fn drop_generations_below(&mut self, generation: u32) {
        self.max_generation = generation;
        self.remotes.retain(|r| r.cand.generation >= generation);
        let selected = self.selected;
        self.pairs
            .retain(|p| p.generation >= generation || Some(p.id) == selected);
        self.data_cache = None;
    }

    /// Brings the next ping forward to now, respecting check pacing.
    fn schedule_soon(&mut self, now: Instant) {
        let earliest = match self.last_ping_sent {
            Some(t) => (t + self.config.unwritable_delay).max(now),
            None => now,
        };
        self.next_tick = Some(match self.next_tick {
            Some(t) => t.min(earliest),
            None => earliest,
        });
    }

    fn tick_after(&self, now: Instant) -> Option<Instant> {
        let active = self
            .pairs
            .iter()
            .any(|p| p.write != WriteState::Timeout || p.readable);
        if !active {
            return None;
        }
        let delay = if self.state == ChannelState::Writable {
            self.config.writable_delay
        } else {
            self.config.unwritable_delay
        };
        Some(now + delay)
    }

    fn service_servers(&mut self, now: Instant) {
        let timeout = self.config.stun_server_timeout;
        let mut out = Vec::new();
        for (index, s) in self.servers.iter_mut().enumerate() {
            if s.done {
                continue;
            }
            if now.saturating_duration_since(s.started) >= timeout {
                debug!(server = %s.server, "STUN server did not answer");
                s.done = true;
                continue;
            }
            if now >= s.next_send {
                let msg = Message::new(MessageType::BindingRequest, s.tid);
                out.push((index, s.socket, s.server, msg.encode()));
                s.next_send = now + s.interval;
                s.interval = (s.interval * 2).min(Duration::from_millis(800));
            }
        }
        for (index, socket, server, payload) in out {
            trace!(%server, index, "STUN server binding request");
            self.queue(Transmit {
                socket,
                destination: server,
                payload,
            });
        }
        self.txns.retain(|_, t| match t.kind {
            TxnKind::Server { index } => !self.servers.get(index).is_none_or(|s| s.done),
            TxnKind::Ping { .. } => true,
        });
        self.report_gathering();
    }

    fn report_gathering(&mut self) {
        if !self.gathering_reported && !self.servers.is_empty() && self.gathering_complete() {
            self.gathering_reported = true;
            self.events.push_back(IceEvent::GatheringComplete);
        }
    }

    fn check_data(&mut self, now: Instant, socket: usize, from: SocketAddr) -> Received {
        if let Some((s, a, i)) = self.data_cache
            && s == socket
            && a == from
            && let Some(p) = self.pairs.get_mut(i)
            && p.readable
        {
            p.last_received = Some(now);
            return Received::Data;
        }
        let found = self
            .pairs
            .iter()
            .position(|p| p.readable && p.socket == socket && same_endpoint(p.remote_addr, from));
        match found {
            Some(i) => {
                self.data_cache = Some((socket, from, i));
                self.pairs[i].last_received = Some(now);
                Received::Data
            }
            None => {
                trace!(%from, "data from a pair that is not readable dropped");
                Received::Dropped
            }
        }
    }

    fn error_allowed(&mut self, now: Instant) -> bool {
        match self.error_window_start {
            Some(start) if now.saturating_duration_since(start) < Duration::from_secs(1) => {}
            _ => {
                self.error_window_start = Some(now);
                self.errors_in_window = 0;
            }
        }
        if self.errors_in_window >= self.config.max_error_responses_per_second {
            return false;
        }
        self.errors_in_window += 1;
        true
    }

    fn send_error(
        &mut self,
        now: Instant,
        socket: usize,
        to: SocketAddr,
        req: &Message,
        code: u16,
        reason: &str,
    ) {
        if !self.error_allowed(now) {
            trace!(%to, code, "error response suppressed (rate limit)");
            return;
        }
        let mut msg = Message::new(MessageType::BindingErrorResponse, req.transaction_id);
        msg.username = req.username.clone();
        msg.error = Some(ErrorCode {
            code,
            reason: reason.to_owned(),
        });
        self.queue(Transmit {
            socket,
            destination: to,
            payload: msg.encode(),
        });
    }

    fn handle_request(&mut self, now: Instant, socket: usize, from: SocketAddr, req: Message) {
        let Some(username) = req.username.as_deref() else {
            self.send_error(now, socket, from, &req, ERROR_BAD_REQUEST, "BAD REQUEST");
            return;
        };
        // §B.3: the USERNAME starts with the fragment of one of our
        // candidates on this socket; the rest is the peer's fragment.
        let local = self.locals.iter().position(|l| {
            l.socket == socket
                && !l.cand.username.is_empty()
                && username.starts_with(l.cand.username.as_bytes())
        });
        let Some(local) = local else {
            trace!(%from, "check for none of our fragments");
            self.send_error(now, socket, from, &req, ERROR_BAD_REQUEST, "BAD REQUEST");
            return;
        };
        let remote_part = &username[self.locals[local].cand.username.len()..];
        let existing = self.pairs.iter().position(|p| {
            p.local == local
                && same_endpoint(p.remote_addr, from)
                && p.remote_username.as_bytes() == remote_part
        });
        let pair = match existing {
            Some(i) => i,
            None => {
                let Some(known) = self
                    .remotes
                    .iter()
                    .position(|r| r.cand.username.as_bytes() == remote_part)
                else {
                    // libjingle answers 430 so the peer retries once the
                    // candidates have arrived over XMPP (§B.3).
                    trace!(%from, "check from an unknown remote username");
                    self.send_error(
                        now,
                        socket,
                        from,
                        &req,
                        ERROR_STALE_CREDENTIALS,
                        "STALE CREDENTIALS",
                    );
                    return;
                };
                let local_addr = self.locals[local].cand.address;
                let remote = match self.remotes.iter().position(|r| {
                    same_endpoint(reached_from(r.cand.address, local_addr), from)
                        && r.cand.username.as_bytes() == remote_part
                }) {
                    Some(r) => r,
                    None => {
                        // Peer-reflexive: known username, new address.
                        if self.remotes.len() >= self.config.max_remote_candidates {
                            trace!(%from, "too many remote candidates, peer-reflexive dropped");
                            return;
                        }
                        let mut cand = self.remotes[known].cand.clone();
                        cand.address = from;
                        cand.kind = CandidateType::Stun;
                        cand.preference = CandidateType::Stun.default_preference();
                        debug!(%from, "peer-reflexive remote candidate");
                        self.remotes.push(Remote { cand, prflx: true });
                        self.remotes.len() - 1
                    }
                };
                match self.create_pair(local, remote) {
                    Some(i) => i,
                    None => return,
                }
            }
        };
        let p = &mut self.pairs[pair];
        if !p.readable {
            debug!(remote = %from, socket, "pair readable");
        }
        p.readable = true;
        p.last_received = Some(now);
        if p.write == WriteState::Timeout {
            p.write = WriteState::Init;
            p.unanswered.clear();
        }
        if p.write != WriteState::Writable {
            p.triggered = true;
            p.pruned = false;
            self.schedule_soon(now);
        }
        let mut resp = Message::new(MessageType::BindingResponse, req.transaction_id);
        resp.username = req.username;
        resp.mapped_address = Some(from);
        self.queue(Transmit {
            socket,
            destination: from,
            payload: resp.encode(),
        });
        if self.next_tick.is_none() {
            self.next_tick = self.tick_after(now);
        }
    }

    fn handle_response(&mut self, now: Instant, from: SocketAddr, msg: Message) {
        let Some(txn) = self.txns.get(&msg.transaction_id).copied() else {
            trace!(%from, "response to no outstanding request");
            return;
        };
        match txn.kind {
            TxnKind::Server { index } => {
                let Some(s) = self.servers.get(index) else {
                    return;
                };
                if s.server != from || s.done {
                    return;
                }
                self.txns.remove(&msg.transaction_id);
                let socket = s.socket;
                if let Some(s) = self.servers.get_mut(index) {
                    s.done = true;
                }
                match (msg.kind, msg.mapped_address) {
                    (MessageType::BindingResponse, Some(mapped)) => {
                        self.learn_server_reflexive(now, socket, mapped)
                    }
                    _ => debug!(server = %from, error = ?msg.error, "STUN server refused"),
                }
                self.report_gathering();
            }
            TxnKind::Ping { pair } => {
                let Some(i) = self.pairs.iter().position(|p| p.id == pair) else {
                    return;
                };
                // Compared with the scope: an IPv6 link-local answer comes
                // from `fe80::…%if`, the signalled candidate had no scope.
                if !same_endpoint(self.pairs[i].remote_addr, from) {
                    trace!(%from, "response from the wrong address");
                    return;
                }
                // §B.3: a response's USERNAME ends with our fragment.
                let local_user = self
                    .locals
                    .get(self.pairs[i].local)
                    .map(|l| l.cand.username.as_bytes().to_vec())
                    .unwrap_or_default();
                if let Some(u) = &msg.username
                    && !u.ends_with(&local_user)
                {
                    trace!(%from, "response with a foreign USERNAME");
                    return;
                }
                self.txns.remove(&msg.transaction_id);
                let p = &mut self.pairs[i];
                match msg.kind {
                    MessageType::BindingResponse => {
                        let sample = now.saturating_duration_since(txn.sent_at);
                        p.rtt = Some(match p.rtt {
                            Some(r) => (r * 3 + sample) / 4,
                            None => sample,
                        });
                        if p.write != WriteState::Writable {
                            debug!(remote = %from, socket = p.socket, rtt = ?sample, "pair writable");
                        }
                        p.write = WriteState::Writable;
                        p.unanswered.clear();
                        p.triggered = false;
                    }
                    _ => {
                        let code = msg.error.as_ref().map_or(0, |e| e.code);
                        // libjingle retries "recoverable" codes and the 430
                        // race; anything else ends the pair.
                        if !matches!(code, 401 | 420 | 430 | 500) {
                            debug!(remote = %from, code, "check refused, pair timed out");
                            p.write = WriteState::Timeout;
                        } else {
                            trace!(remote = %from, code, "check answered with a retryable error");
                        }
                    }
                }
            }
        }
    }

    fn learn_server_reflexive(&mut self, _now: Instant, socket: usize, mapped: SocketAddr) {
        if self.locals.iter().any(|l| l.cand.address == mapped) {
            debug!(%mapped, "STUN server sees a host address: no NAT");
            return;
        }
        let cand = self.make_local_candidate(mapped, CandidateType::Stun);
        debug!(%mapped, socket, "server-reflexive candidate");
        self.events
            .push_back(IceEvent::LocalCandidate(cand.clone()));
        self.add_local_candidate(socket, cand);
    }

    fn update_timeouts(&mut self, now: Instant) {
        let c = &self.config;
        for p in &mut self.pairs {
            if p.readable
                && p.last_received
                    .is_none_or(|t| now.saturating_duration_since(t) >= c.read_timeout)
            {
                debug!(remote = %p.remote_addr, "pair read timeout");
                p.readable = false;
            }
            let oldest = p.unanswered.front().copied();
            let waited = oldest.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            if p.write == WriteState::Writable
                && p.unanswered.len() >= c.write_connect_failures
                && waited > c.write_connect_timeout
            {
                debug!(remote = %p.remote_addr, "pair no longer writable");
                p.write = WriteState::Connecting;
            }
            if matches!(p.write, WriteState::Connecting | WriteState::Init)
                && waited > c.write_timeout
            {
                debug!(remote = %p.remote_addr, "pair write timeout");
                p.write = WriteState::Timeout;
            }
        }
        self.data_cache = None;
    }

    fn next_ping(&mut self, now: Instant) -> Option<usize> {
        if let Some(id) = self.selected
            && let Some(i) = self.pairs.iter().position(|p| p.id == id)
        {
            let p = &self.pairs[i];
            let due = p
                .last_ping_sent
                .is_none_or(|t| now.saturating_duration_since(t) >= self.config.keepalive_interval);
            if p.usable() && due {
                return Some(i);
            }
        }
        let mut best: Option<usize> = None;
        for (i, p) in self.pairs.iter().enumerate() {
            if !p.pingable() || Some(p.id) == self.selected {
                continue;
            }
            let Some(b) = best else {
                best = Some(i);
                continue;
            };
            let q = &self.pairs[b];
            let better = match (p.triggered, q.triggered) {
                (true, false) => true,
                (false, true) => false,
                _ => match (p.last_ping_sent, q.last_ping_sent) {
                    (None, Some(_)) => true,
                    (Some(_), None) => false,
                    (Some(a), Some(b)) if a != b => a < b,
                    _ => p.preference > q.preference,
                },
            };
            if better {
                best = Some(i);
            }
        }
        best.or_else(|| {
            // Nothing else to check: keep the selected pair alive anyway.
            self.selected
                .and_then(|id| self.pairs.iter().position(|p| p.id == id))
                .filter(|&i| self.pairs[i].pingable() && self.state != ChannelState::Writable)
        })
    }

    fn send_ping(&mut self, now: Instant, i: usize) {
        let tid = self.random_tid();
        let p = &mut self.pairs[i];
        let mut msg = Message::new(MessageType::BindingRequest, tid);
        msg.username = Some(p.request_username.clone());
        p.last_ping_sent = Some(now);
        p.triggered = false;
        if p.unanswered.len() < 64 {
            p.unanswered.push_back(now);
        }
        let t = Transmit {
            socket: p.socket,
            destination: p.remote_addr,
            payload: msg.encode(),
        };
        trace!(remote = %p.remote_addr, socket = p.socket, "check");
        self.txns.insert(
            tid,
            Txn {
                kind: TxnKind::Ping { pair: p.id },
                sent_at: now,
            },
        );
        self.last_ping_sent = Some(now);
        self.queue(t);
    }

    /// Re-sorts, switches the selected pair and reports channel state.
    fn update_state(&mut self, now: Instant) {
        let _ = now;
        let top = (0..self.pairs.len()).fold(None::<usize>, |best, i| match best {
            Some(b) if !self.pairs[i].better_than(&self.pairs[b]) => Some(b),
            _ => Some(i),
        });
        let current = self
            .selected
            .and_then(|id| self.pairs.iter().position(|p| p.id == id))
            .filter(|&i| self.pairs[i].usable());
        let new = match (current, top) {
            (_, Some(t)) if self.pairs[t].write != WriteState::Writable => current,
            (None, t) => t,
            (Some(c), Some(t)) => {
                let (cp, tp) = (&self.pairs[c], &self.pairs[t]);
                // Switch only for a real gain, not for RTT jitter.
                if cp.write != WriteState::Writable || tp.preference > cp.preference {
                    Some(t)
                } else {
                    Some(c)
                }
            }
            (c, None) => c,
        };
        let new_id = new.map(|i| self.pairs[i].id);
        if new_id != self.selected {
            self.selected = new_id;
            for p in &mut self.pairs {
                p.pruned = false;
            }
            match new {
                Some(i) => {
                    let p = &self.pairs[i];
                    let local = self.locals.get(p.local).map(|l| l.cand.address);
                    self.selected_route = Some((p.socket, p.remote_addr));
                    debug!(remote = %p.remote_addr, socket = p.socket, "selected pair");
                    if let Some(local) = local {
                        self.events.push_back(IceEvent::SelectedPairChanged {
                            socket: p.socket,
                            local,
                            remote: p.remote_addr,
                        });
                    }
                }
                None => self.selected_route = None,
            }
        }
        // Prune pairs on the selected pair's socket that cannot beat it.
        if let Some(i) = new
            && self.pairs[i].write == WriteState::Writable
        {
            let (socket, pref, id) = (
                self.pairs[i].socket,
                self.pairs[i].preference,
                self.pairs[i].id,
            );
            for p in &mut self.pairs {
                if p.id != id && p.socket == socket && p.preference <= pref && !p.pruned {
                    p.pruned = true;
                    if p.write == WriteState::Writable {
                        // Unpinged from now on: its state will go stale.
                        p.write = WriteState::Init;
                    }
                    p.unanswered.clear();
                }
            }
        } else {
            for p in &mut self.pairs {
                p.pruned = false;
            }
        }

        let writable = self.pairs.iter().any(|p| p.write == WriteState::Writable);
        let dead = !self.pairs.is_empty()
            && self
                .pairs
                .iter()
                .all(|p| p.write == WriteState::Timeout && !p.readable);
        let state = if writable {
            ChannelState::Writable
        } else if dead {
            ChannelState::Failed
        } else if self.state == ChannelState::Writable {
            ChannelState::Disconnected
        } else if self.state == ChannelState::Failed {
            // Revived by a new candidate or a check from the peer: checking
            // again, reported by the next Writable or Failed.
            ChannelState::New
        } else {
            self.state
        };
        if state != self.state {
            self.state = state;
            match state {
                ChannelState::Writable => self.events.push_back(IceEvent::Writable),
                ChannelState::Disconnected => self.events.push_back(IceEvent::Disconnected),
                ChannelState::Failed => self.events.push_back(IceEvent::Failed),
                ChannelState::New => {}
            }
        }
    }
}

/// `addr` as reached from our candidate `local`. A remote IPv6 link-local
/// address means nothing without the link it is on, and candidates parsed
/// from XML never carry one (the zone is not part of the wire form,
/// docs/protocol.md §B.1): such an address takes the interface (scope id)
/// of the local socket when that socket is itself bound to a link.
fn reached_from(addr: SocketAddr, local: SocketAddr) -> SocketAddr {
    match (addr, local) {
        (SocketAddr::V6(mut a), SocketAddr::V6(l))
            if a.scope_id() == 0 && is_link_local(a.ip()) && l.scope_id() != 0 =>
        {
            a.set_scope_id(l.scope_id());
            SocketAddr::V6(a)
        }
        _ => addr,
    }
}

/// The same transport address: IP and port equal, and for IPv6 the same
/// scope where both sides know it (0 = not known, as for a remote candidate
/// paired with a socket bound to a routable address, whose checks the
/// kernel routed). The flow label is not part of the address. A strict `==`
/// on `SocketAddr` compares both, so a response from `[fe80::…%4]` never
/// matched the pair to the signalled `fe80::…`.
pub(crate) fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    match (a, b) {
        (SocketAddr::V6(a), SocketAddr::V6(b)) => {
            a.ip() == b.ip()
                && a.port() == b.port()
                && (a.scope_id() == b.scope_id() || a.scope_id() == 0 || b.scope_id() == 0)
        }
        _ => a == b,
    }
}

/// fe80::/10.
fn is_link_local(ip: &std::net::Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}
#[cfg(test)]
mod rng_tests {
    use super::*;

    /// Production agents draw fragments and transaction ids from the OS
    /// RNG; seeded ones (simulations) repeat themselves.
    #[test]
    fn production_config_uses_the_os_rng() {
        let now = Instant::now();
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let config = IceConfig::with_os_rng("private-1");
        assert_eq!(config.seed, None);
        let mut a = IceAgent::new(config.clone(), now);
        assert!(a.rng.is_os());
        let mut b = IceAgent::new(config, now);
        let ca = a.make_local_candidate(addr, CandidateType::Local);
        let cb = b.make_local_candidate(addr, CandidateType::Local);
        assert_ne!(ca.username, cb.username);
        assert_ne!(ca.password, cb.password);
        assert_ne!(a.random_tid(), b.random_tid());

        let mut s1 = IceAgent::new(IceConfig::new("private-1", 42), now);
        let mut s2 = IceAgent::new(IceConfig::new("private-1", 42), now);
        assert!(!s1.rng.is_os());
        assert_eq!(
            s1.make_local_candidate(addr, CandidateType::Local).username,
            s2.make_local_candidate(addr, CandidateType::Local).username
        );
    }
}
