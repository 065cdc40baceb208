//! tokio driver for the Google-dialect ICE agent: owns the UDP sockets, the
//! timer and the queue of remote candidates, and exposes the datagram path
//! PseudoTCP runs on (`poll_recv` / `poll_send` / `max_datagram_size`).
//!
//! Everything happens inside `poll_recv`: it reads every socket, lets the
//! agent answer and send checks, runs the agent's timer and hands up only
//! data datagrams from readable pairs, received straight into the caller's
//! buffer (no copy, no allocation per datagram).
//!
//! TURN relays (`crate::turn`, docs/protocol.md §B): each allocation is a
//! *virtual socket* of the agent, numbered after the real ones. Its relay
//! candidate (`type="relay"`, the lowest preference) is an ordinary local
//! candidate to the agent; transmits on a virtual socket are wrapped by the
//! TURN client (ChannelData or Send indication) and leave through the real
//! socket the allocation was made from; datagrams from the TURN server are
//! unwrapped and handed to the agent as if they had arrived on the virtual
//! socket from the peer. Checks and PseudoTCP thus run through the relay
//! unchanged, and the agent prefers any working direct pair over it. On a
//! bound channel data costs no more copies than direct: ChannelData goes
//! out as one vectored send (4-byte header, then the caller's datagram) and
//! comes in unwrapped where it was received.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};
use tokio::io::{Interest, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{Instant as TokioInstant, Sleep};
use tracing::{debug, trace, warn};

use super::agent::{IceAgent, IceConfig, IceEvent, Received, Transmit};
use super::candidate::{Candidate, CandidateType};
use super::stun::{StunMessage, channel_data};
use crate::turn::{TurnClient, TurnConfig, TurnEvent};

pub use crate::net::SOCKET_BUFFER_BYTES;
use crate::net::{raise_buffers, transient};

/// Largest UDP payload over IPv4 (65535 − 20 − 8).
const MAX_UDP_PAYLOAD: usize = 65507;

/// Datagram size used off loopback: libnice's PseudoTCP MTU (§F).
const DEFAULT_PATH_DATAGRAM: usize = 1400;

/// Data datagrams kept while [`IceChannel::connected`] waits (the peer may
/// open PseudoTCP as soon as its side is writable).
const MAX_EARLY_DATAGRAMS: usize = 64;

/// How long gathering waits for TURN allocations; a later allocation still
/// adds its relay candidate (the peer learns it from our checks).
pub const RELAY_GATHER_TIMEOUT: Duration = Duration::from_secs(5);

/// Most TURN servers one channel allocates on.
pub const MAX_RELAYS: usize = 2;

/// Bytes TURN adds around a relayed datagram at most (a Send indication:
/// header 20, XOR-PEER-ADDRESS 24 for IPv6, DATA header 4).
pub const RELAY_OVERHEAD: usize = 48;

/// Largest datagram (with TURN framing) sent through a relay even on
/// loopback. coturn reads every UDP datagram into a buffer of
/// `UDP_STUN_BUFFER_SIZE` = 16 KiB (a compile-time constant, the same from
/// 4.6 to 4.17, no option changes it): a ChannelData message longer than
/// that is dropped, and a peer's datagram is cut to 16380 bytes of payload
/// (measured on loopback with coturn 4.6.1, `tests/turn_coturn.rs`). With
/// [`RELAY_OVERHEAD`] taken off, PseudoTCP sends 16336-byte datagrams
/// through a relay on loopback.
pub const RELAY_MAX_DATAGRAM: usize = 16384;

/// A TURN server to allocate a relay candidate on (`--turn`, XEP-0215).
#[derive(Clone, PartialEq, Eq)]
pub struct TurnServer {
    /// Address of the server (UDP).
    pub server: SocketAddr,
    /// Long-term credential user name.
    pub username: String,
    /// Long-term credential password.
    pub password: String,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("server", &self.server)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One allocation, seen by the agent as socket `index`.
#[derive(Debug)]
struct Relay {
    client: TurnClient,
    /// The real socket its datagrams use.
    socket: usize,
    /// The virtual socket index the agent knows it by.
    index: usize,
    /// The relay candidate was added to the agent.
    added: bool,
    /// The user was told this relay failed (told once per relay).
    told: bool,
}

/// What to gather.
#[derive(Debug, Clone)]
pub struct GatherConfig {
    /// Transport channel name (`private-1`, `gabble-1`, …).
    pub name: String,
    /// Use only this local address (`--bind`); `None` or an unspecified
    /// address means every usable interface. An IPv6 link-local address is
    /// bound on the interface that has it.
    pub bind: Option<IpAddr>,
    /// STUN servers for server-reflexive candidates (`--stun`, jingleinfo).
    pub stun: Vec<SocketAddr>,
}

impl GatherConfig {
    /// A channel with no bind restriction and no STUN server.
    pub fn new(name: &str) -> Self {
        GatherConfig {
            name: name.to_owned(),
            bind: None,
            stun: Vec::new(),
        }
    }
}

/// One ICE transport channel on real UDP sockets.
pub struct IceChannel {
    agent: IceAgent,
    sockets: Vec<UdpSocket>,
    remote_tx: mpsc::UnboundedSender<Candidate>,
    remote_rx: mpsc::UnboundedReceiver<Candidate>,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<std::time::Instant>,
    next_socket: usize,
    early: VecDeque<Vec<u8>>,
    pending_tx: Option<Transmit>,
    send_waker: Option<Waker>,
    selected: Option<(SocketAddr, SocketAddr)>,
    max_datagram: usize,
    failed: bool,
    /// An agent event was seen since the last `poll_step` return.
    changed: bool,
    /// TURN allocations, at most [`MAX_RELAYS`].
    relays: Vec<Relay>,
    /// The peer's relay candidates (their relays take at most
    /// [`RELAY_MAX_DATAGRAM`] too); bounded like the agent's remote
    /// candidates, 64.
    remote_relays: Vec<SocketAddr>,
    /// Only relay candidates are ours (see [`IceChannel::gather_relay_only`]).
    relay_only: bool,
}

impl std::fmt::Debug for IceChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceChannel")
            .field("sockets", &self.sockets.len())
            .field("selected", &self.selected)
            .finish_non_exhaustive()
    }
}

/// The drivers' one clock: tokio's, converted for the sans-IO cores. The
/// PseudoTCP driver reads it too, so a test with paused tokio time drives
/// the ICE agent, the PseudoTCP engine and their timers together.
pub(crate) fn now() -> std::time::Instant {
    TokioInstant::now().into_std()
}

impl IceChannel {
    /// Opens one UDP socket per usable local address, makes a host
    /// candidate for each, and asks the STUN servers for server-reflexive
    /// ones (waiting at most the agent's STUN timeout, 3 s). IPv6 link-local
    /// addresses are used only when bound to explicitly or when the host has
    /// no routable address at all (a link with only link-local IPv6).
    pub async fn gather(config: GatherConfig) -> io::Result<IceChannel> {
        Self::gather_with_relays(config, Vec::new()).await
    }

    /// Like [`gather`](Self::gather), and allocates a relay candidate on
    /// each TURN server (at most [`MAX_RELAYS`]), waiting at most
    /// [`RELAY_GATHER_TIMEOUT`] for them. A TURN server that fails is
    /// reported in the log and skipped.
    pub async fn gather_with_relays(
        config: GatherConfig,
        turn: Vec<TurnServer>,
    ) -> io::Result<IceChannel> {
        Self::gather_inner(config, turn, false).await
    }

    /// Like [`gather_with_relays`](Self::gather_with_relays), but our only
    /// candidates are the relayed ones: the sockets are opened to reach the
    /// TURN servers, yet no host or server-reflexive candidate is made and
    /// no STUN server is asked, so every datagram goes through a relay
    /// (benchmarks and tests measure the relayed path on one host, where a
    /// direct pair would otherwise win). An error when no allocation
    /// succeeds within [`RELAY_GATHER_TIMEOUT`].
    pub async fn gather_relay_only(
        config: GatherConfig,
        turn: Vec<TurnServer>,
    ) -> io::Result<IceChannel> {
        let chan = Self::gather_inner(config, turn, true).await?;
        if chan.agent.local_candidates().next().is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "relay-only: no TURN allocation succeeded",
            ));
        }
        Ok(chan)
    }

    async fn gather_inner(
        config: GatherConfig,
        turn: Vec<TurnServer>,
        relay_only: bool,
    ) -> io::Result<IceChannel> {
        let addrs = match config.bind {
            Some(ip) if !ip.is_unspecified() => vec![bind_address(ip)?],
            _ => {
                let mut v = local_endpoints(false)?;
                if v.is_empty() {
                    v = local_endpoints(true)?;
                }
                if v.is_empty() {
                    v.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0));
                }
                v
            }
        };
        let mut agent = IceAgent::new(IceConfig::with_os_rng(&config.name), now());
        let mut sockets = Vec::new();
        for addr in addrs {
            let socket = match open_socket(addr) {
                Ok(s) => s,
                Err(e) if config.bind.is_none() => {
                    debug!(%addr, error = %e, "skipping interface");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let local = socket.local_addr()?;
            if !relay_only {
                let cand = agent.make_local_candidate(local, CandidateType::Local);
                debug!(%local, username = %cand.username, "host candidate");
                agent.add_local_candidate(sockets.len(), cand);
            }
            sockets.push(socket);
        }
        if sockets.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                "no usable local address for ICE",
            ));
        }
        let start = now();
        let stun = if relay_only {
            &[][..]
        } else {
            &config.stun[..]
        };
        for server in stun {
            for (i, s) in sockets.iter().enumerate() {
                if s.local_addr()?.is_ipv4() == server.is_ipv4() {
                    agent.add_stun_server(start, i, *server);
                }
            }
        }
        let relays: Vec<(usize, TurnServer)> = turn
            .iter()
            .take(MAX_RELAYS)
            .filter_map(|t| {
                let socket = sockets.iter().position(|s| {
                    s.local_addr()
                        .is_ok_and(|a| a.is_ipv4() == t.server.is_ipv4())
                })?;
                Some((socket, t.clone()))
            })
            .collect();
        let (remote_tx, remote_rx) = mpsc::unbounded_channel();
        let mut chan = IceChannel {
            agent,
            sockets,
            remote_tx,
            remote_rx,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            timer_at: None,
            next_socket: 0,
            early: VecDeque::new(),
            pending_tx: None,
            send_waker: None,
            selected: None,
            max_datagram: DEFAULT_PATH_DATAGRAM,
            failed: false,
            changed: false,
            relays: Vec::new(),
            remote_relays: Vec::new(),
            relay_only,
        };
        if relays.len() < turn.len().min(MAX_RELAYS) {
            warn!("a TURN server has no local address of its family; skipped");
        }
        for (socket, t) in relays {
            let index = chan.sockets.len() + chan.relays.len();
            let client =
                TurnClient::new(TurnConfig::new(t.server, &t.username, &t.password), start);
            chan.relays.push(Relay {
                client,
                socket,
                index,
                added: false,
                told: false,
            });
        }
        if !chan.relays.is_empty() {
            let mut scratch = vec![0u8; 65536];
            let wait = poll_fn(|cx| {
                loop {
                    if chan.relays.iter().all(|r| r.added || r.client.is_done()) {
                        return Poll::Ready(Ok::<(), io::Error>(()));
                    }
                    let mut buf = ReadBuf::new(&mut scratch);
                    match chan.poll_step(cx, &mut buf) {
                        Poll::Ready(Ok(_)) => continue,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            });
            match tokio::time::timeout(RELAY_GATHER_TIMEOUT, wait).await {
                Ok(r) => r?,
                Err(_) => {
                    for r in chan.relays.iter_mut().filter(|r| !r.added && !r.told) {
                        r.told = true;
                        warn!(
                            "the TURN server {} gave no relay within {} s; going on without it",
                            r.client.server(),
                            RELAY_GATHER_TIMEOUT.as_secs()
                        );
                    }
                }
            }
        }
        if !stun.is_empty() {
            let mut scratch = vec![0u8; 2048];
            poll_fn(|cx| {
                loop {
                    if chan.agent.gathering_complete() {
                        return Poll::Ready(Ok::<(), io::Error>(()));
                    }
                    let mut buf = ReadBuf::new(&mut scratch);
                    match chan.poll_step(cx, &mut buf) {
                        // Data before any remote candidate cannot come.
                        Poll::Ready(Ok(_)) => continue,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            })
            .await?;
        }
        Ok(chan)
    }

    /// Our candidates (host, then server-reflexive), to signal to the peer.
    pub fn local_candidates(&self) -> Vec<Candidate> {
        self.agent.local_candidates().cloned().collect()
    }

    /// A handle other tasks use to pass remote candidates in; they are
    /// picked up the next time this channel is polled.
    pub fn remote_candidates_sink(&self) -> mpsc::UnboundedSender<Candidate> {
        self.remote_tx.clone()
    }

    /// Adds a remote candidate directly.
    pub fn add_remote_candidate(&mut self, cand: Candidate) {
        self.note_remote(&cand);
        let r = self.agent.add_remote_candidate(now(), cand);
        trace!(?r, "remote candidate");
    }

    /// The relayed addresses of our TURN allocations that are active.
    pub fn relayed_addresses(&self) -> Vec<SocketAddr> {
        self.relays
            .iter()
            .filter_map(|r| r.client.relayed_address())
            .collect()
    }

    /// True when data goes through a TURN relay: ours, or the peer's (its
    /// relay candidate is the selected remote).
    pub fn is_relayed(&self) -> bool {
        self.agent.selected().is_some_and(|(socket, remote)| {
            socket >= self.sockets.len() || self.remote_relays.contains(&remote)
        })
    }

    /// Remembers a remote relay candidate and lets our relays reach it.
    fn note_remote(&mut self, cand: &Candidate) {
        if cand.kind == CandidateType::Relay
            && self.remote_relays.len() < 64
            && !self.remote_relays.contains(&cand.address)
        {
            self.remote_relays.push(cand.address);
        }
        self.allow_relay_peer(cand.address);
    }

    /// Lets the relays carry traffic to and from a peer's candidate: only
    /// the session peer's candidates get TURN permissions.
    fn allow_relay_peer(&mut self, peer: SocketAddr) {
        let t = now();
        for r in &mut self.relays {
            // A server on a public address cannot reach a peer's loopback,
            // private or link-local address: no permission for those (the
            // bound on permissions is spent on reachable addresses).
            let server = r.client.server().ip();
            if is_local_scope(peer.ip()) && !is_local_scope(server) {
                trace!(%peer, "no relay permission for a local-scope peer address");
                continue;
            }
            if r.client.server().is_ipv4() == peer.is_ipv4()
                && let Err(e) = r.client.allow_peer(peer, t)
            {
                debug!(%peer, error = %e, "relay permission not requested");
            }
        }
    }

    /// (local, remote) addresses of the pair data is sent on.
    pub fn selected(&self) -> Option<(SocketAddr, SocketAddr)> {
        self.selected
    }

    /// True while some pair is writable.
    pub fn is_writable(&self) -> bool {
        self.agent.is_writable()
    }

    /// True once every pair has timed out both ways (the peer is gone or
    /// unreachable); `poll_send` then fails. New candidates revive it.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Waits until some pair is writable and one is selected.
    pub async fn connected(&mut self, timeout: Duration) -> io::Result<()> {
        let mut scratch = vec![0u8; 65536];
        let fut = poll_fn(|cx| {
            loop {
                if self.agent.is_writable() && self.agent.selected().is_some() {
                    return Poll::Ready(Ok(()));
                }
                if self.failed {
                    return Poll::Ready(Err(ice_failed()));
                }
                let mut buf = ReadBuf::new(&mut scratch);
                match self.poll_step(cx, &mut buf) {
                    Poll::Ready(Ok(Step::Changed)) => {}
                    Poll::Ready(Ok(Step::Data)) => {
                        if self.early.len() < MAX_EARLY_DATAGRAMS {
                            self.early.push_back(buf.filled().to_vec());
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
        });
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no ICE connection before the timeout",
            )),
        }
    }

    /// Receives the next data datagram into `buf`, driving all ICE work
    /// meanwhile. Must be polled for checks to be answered.
    pub fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(d) = self.early.pop_front() {
            let n = d.len().min(buf.remaining());
            buf.put_slice(&d[..n]);
            return Poll::Ready(Ok(()));
        }
        loop {
            match self.poll_step(cx, buf) {
                Poll::Ready(Ok(Step::Data)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(Step::Changed)) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Sends one datagram on the selected pair; pending until one exists.
    pub fn poll_send(&mut self, cx: &mut Context<'_>, datagram: &[u8]) -> Poll<io::Result<()>> {
        let Some((socket, dest)) = self.agent.selected() else {
            if self.failed {
                return Poll::Ready(Err(ice_failed()));
            }
            self.send_waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        if socket >= self.sockets.len() {
            return self.poll_send_relayed(cx, socket, dest, datagram);
        }
        let Some(sock) = self.sockets.get(socket) else {
            return Poll::Ready(Err(io::Error::other("selected socket missing")));
        };
        match sock.poll_send_to(cx, datagram, dest) {
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(())),
            // An ICMP error from an earlier datagram: the path may recover
            // or ICE will switch; UDP loses datagrams anyway.
            Poll::Ready(Err(e)) if transient(&e) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Largest datagram worth sending on the selected path: ≈64 KiB on
    /// loopback, otherwise min(1400, route MTU − IP/UDP headers).
    pub fn max_datagram_size(&self) -> usize {
        self.max_datagram
    }

    /// Receives one data datagram (convenience for tests and tools).
    pub async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| {
            let mut rb = ReadBuf::new(buf);
            match self.poll_recv(cx, &mut rb) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Sends one data datagram (convenience for tests and tools).
    pub async fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        poll_fn(|cx| self.poll_send(cx, datagram)).await
    }

    // ----- internals -------------------------------------------------------

    /// Sends a data datagram through relay `index` (a virtual socket).
    fn poll_send_relayed(
        &mut self,
        cx: &mut Context<'_>,
        index: usize,
        dest: SocketAddr,
        datagram: &[u8],
    ) -> Poll<io::Result<()>> {
        let Some(r) = self.relays.iter_mut().find(|r| r.index == index) else {
            return Poll::Ready(Err(io::Error::other("selected relay missing")));
        };
        let Some(sock) = self.sockets.get(r.socket) else {
            return Poll::Ready(Err(io::Error::other("relay socket missing")));
        };
        if let Some(header) = r.client.channel_header(dest, datagram.len()) {
            // ChannelData framed by a vectored send: header and payload
            // leave as one datagram without being copied together first.
            let server = SockAddr::from(r.client.server());
            let parts = [IoSlice::new(&header), IoSlice::new(datagram)];
            loop {
                match sock.poll_send_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
                let sent = sock.try_io(Interest::WRITABLE, || {
                    SockRef::from(sock).send_to_vectored(&parts, &server)
                });
                return match sent {
                    // Readiness was stale: wait for it again.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Ok(_) => Poll::Ready(Ok(())),
                    Err(e) if transient(&e) => {
                        trace!(error = %e, "relay send dropped");
                        Poll::Ready(Ok(()))
                    }
                    Err(e) => Poll::Ready(Err(e)),
                };
            }
        }
        match sock.poll_send_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        if let Err(e) = r.client.send_to(dest, datagram) {
            // The relay is gone or refused: the pair will time out and the
            // agent switches; UDP loses datagrams anyway.
            trace!(error = %e, "relayed datagram not sent");
            return Poll::Ready(Ok(()));
        }
        while let Some(t) = r.client.poll_transmit() {
            match sock.try_send_to(&t.contents, t.destination) {
                Ok(_) => {}
                Err(e) if transient(&e) => trace!(error = %e, "relay send dropped"),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The next datagram for a real socket: the relays' own traffic first,
    /// then the agent's; agent transmits on a virtual socket are wrapped by
    /// that relay.
    fn next_transmit(&mut self, t: std::time::Instant) -> Option<Transmit> {
        loop {
            for r in &mut self.relays {
                if let Some(x) = r.client.poll_transmit() {
                    return Some(Transmit {
                        socket: r.socket,
                        destination: x.destination,
                        payload: x.contents,
                    });
                }
            }
            let tx = self.agent.poll_transmit(t)?;
            if tx.socket < self.sockets.len() {
                return Some(tx);
            }
            if let Some(r) = self.relays.iter_mut().find(|r| r.index == tx.socket)
                && let Err(e) = r.client.send_to(tx.destination, &tx.payload)
            {
                trace!(dest = %tx.destination, error = %e, "check not relayed");
            }
        }
    }

    /// Handles the relays' events: a new allocation becomes a relay
    /// candidate; failures are logged (the relay's pairs then time out).
    fn relay_events(&mut self) {
        for k in 0..self.relays.len() {
            while let Some(e) = self.relays[k].client.poll_event() {
                let server = self.relays[k].client.server();
                match e {
                    TurnEvent::Allocated {
                        relayed, mapped, ..
                    } => {
                        debug!(%server, %relayed, "TURN allocation");
                        if !self.relays[k].added {
                            self.relays[k].added = true;
                            // The mapped address is a server-reflexive
                            // candidate unless it is a host address.
                            if let Some(m) = mapped
                                && !self.relay_only
                                && !self.agent.local_candidates().any(|c| c.address == m)
                            {
                                let cand = self.agent.make_local_candidate(m, CandidateType::Stun);
                                debug!(mapped = %m, "server-reflexive candidate from TURN");
                                self.agent.add_local_candidate(self.relays[k].socket, cand);
                            }
                            let cand = self
                                .agent
                                .make_local_candidate(relayed, CandidateType::Relay);
                            self.agent.add_local_candidate(self.relays[k].index, cand);
                            self.changed = true;
                        }
                    }
                    TurnEvent::Failed(err) => {
                        if self.relays[k].told {
                            debug!("TURN relay unusable: {err}");
                        } else {
                            self.relays[k].told = true;
                            warn!("TURN relay unusable: {err}");
                        }
                        self.changed = true;
                    }
                    TurnEvent::PeerFailed { peer, error } => {
                        debug!(%peer, "TURN peer refused: {error}")
                    }
                    TurnEvent::Refreshed { lifetime } => {
                        trace!(%server, ?lifetime, "TURN allocation refreshed")
                    }
                    other => trace!(%server, ?other, "TURN event"),
                }
            }
        }
    }

    /// Hands a datagram from relay `k`'s server to the TURN client and, if
    /// it carried one from a peer, to the agent as received on the relay's
    /// virtual socket. The payload replaces the datagram in `buf`.
    fn relay_datagram(&mut self, k: usize, buf: &mut ReadBuf<'_>, start: usize) -> Received {
        let t = now();
        // Unwrapped where it lies: the payload moves to `start`, no copy
        // into a fresh buffer, no allocation per datagram.
        let relayed = self.relays[k]
            .client
            .handle_datagram_in_place(&mut buf.filled_mut()[start..], t);
        let Some((peer, len)) = relayed else {
            buf.set_filled(start);
            return Received::Stun;
        };
        buf.set_filled(start + len);
        let index = self.relays[k].index;
        self.agent
            .handle_datagram(t, index, peer, &buf.filled()[start..])
    }

    /// One step of work: returns when a data datagram is in `buf`, when the
    /// agent reported an event (so callers waiting on state re-check), or
    /// Pending with every waker registered.
    fn poll_step(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<Step>> {
        loop {
            self.drive(cx);
            if std::mem::take(&mut self.changed) {
                return Poll::Ready(Ok(Step::Changed));
            }
            let n = self.sockets.len();
            let mut progress = false;
            for k in 0..n {
                let i = (self.next_socket + k) % n;
                let start = buf.filled().len();
                match self.sockets[i].poll_recv_from(cx, buf) {
                    Poll::Ready(Ok(from)) => {
                        // A TURN server is often the STUN server too: its
                        // classic binding answers (no magic cookie) go to
                        // the agent, RFC 5389 messages and ChannelData to
                        // the relay.
                        let data = &buf.filled()[start..];
                        let turn = StunMessage::looks_like(data) || channel_data::looks_like(data);
                        let relay = self
                            .relays
                            .iter()
                            .position(|r| turn && r.socket == i && r.client.server() == from);
                        let r = match relay {
                            Some(k) => self.relay_datagram(k, buf, start),
                            None => {
                                self.agent
                                    .handle_datagram(now(), i, from, &buf.filled()[start..])
                            }
                        };
                        if r == Received::Data {
                            self.next_socket = (i + 1) % n;
                            return Poll::Ready(Ok(Step::Data));
                        }
                        buf.set_filled(start);
                        progress = true;
                        break;
                    }
                    Poll::Ready(Err(e)) if transient(&e) => {
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Remote candidates in, timer, STUN out, events.
    fn drive(&mut self, cx: &mut Context<'_>) {
        while let Poll::Ready(Some(c)) = self.remote_rx.poll_recv(cx) {
            self.note_remote(&c);
            let r = self.agent.add_remote_candidate(now(), c);
            trace!(?r, "remote candidate");
        }
        loop {
            let t = now();
            if self.agent.poll_timeout().is_some_and(|d| d <= t) {
                self.agent.handle_timeout(t);
            }
            for r in &mut self.relays {
                if r.client.poll_timeout().is_some_and(|d| d <= t) {
                    r.client.handle_timeout(t);
                }
            }
            self.flush(cx);
            let relays = self
                .relays
                .iter()
                .filter_map(|r| r.client.poll_timeout())
                .min();
            let next = match (self.agent.poll_timeout(), relays) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match next {
                None => {
                    self.timer_at = None;
                    break;
                }
                Some(at) => {
                    if self.timer_at != Some(at) {
                        self.timer_at = Some(at);
                        self.timer.as_mut().reset(TokioInstant::from_std(at));
                    }
                    if self.timer.as_mut().poll(cx).is_pending() {
                        break;
                    }
                    // Fired: loop to run the agent's timeout.
                    self.timer_at = None;
                }
            }
        }
    }

    fn flush(&mut self, cx: &mut Context<'_>) {
        let t = now();
        loop {
            let tx = match self.pending_tx.take() {
                Some(tx) => tx,
                None => match self.next_transmit(t) {
                    Some(tx) => tx,
                    None => break,
                },
            };
            let Some(s) = self.sockets.get(tx.socket) else {
                continue;
            };
            match s.poll_send_to(cx, &tx.payload, tx.destination) {
                Poll::Ready(Ok(_)) => {}
                // STUN is repeated by the agent: an error just loses this one.
                Poll::Ready(Err(e)) => {
                    trace!(dest = %tx.destination, error = %e, "STUN send failed")
                }
                Poll::Pending => {
                    // Not writable yet (or buffer full): keep it, woken later.
                    self.pending_tx = Some(tx);
                    break;
                }
            }
        }
        self.relay_events();
        while let Some(e) = self.agent.poll_event() {
            self.changed = true;
            match e {
                IceEvent::SelectedPairChanged {
                    socket,
                    local,
                    remote,
                } => {
                    let relay = self.relays.iter().find(|r| r.index == socket);
                    let real = relay.map_or(socket, |r| r.socket);
                    // The socket's own address (with its scope), not a
                    // server-reflexive or relayed one.
                    let mut from = self
                        .sockets
                        .get(real)
                        .and_then(|s| s.local_addr().ok())
                        .unwrap_or(local);
                    from.set_port(0);
                    self.max_datagram = match relay {
                        // The server's path counts, less TURN's framing.
                        Some(r) => path_datagram_size(from, r.client.server())
                            .min(RELAY_MAX_DATAGRAM)
                            .saturating_sub(RELAY_OVERHEAD),
                        None if self.remote_relays.contains(&remote) => {
                            path_datagram_size(from, remote)
                                .min(RELAY_MAX_DATAGRAM)
                                .saturating_sub(RELAY_OVERHEAD)
                        }
                        None => path_datagram_size(from, remote),
                    };
                    let via = if relay.is_some() {
                        "relay"
                    } else if self.remote_relays.contains(&remote) {
                        "peer relay"
                    } else {
                        "direct"
                    };
                    debug!(%local, %remote, via, max_datagram = self.max_datagram, "ICE selected pair");
                    self.selected = Some((local, remote));
                    if let Some(w) = self.send_waker.take() {
                        w.wake();
                    }
                }
                IceEvent::Writable => debug!("ICE writable"),
                IceEvent::Disconnected => debug!("ICE lost writability"),
                IceEvent::Failed => {
                    warn!("ICE failed: every candidate pair timed out");
                    if let Some(w) = self.send_waker.take() {
                        w.wake();
                    }
                }
                IceEvent::LocalCandidate(c) => {
                    debug!(address = %c.address, "server-reflexive candidate")
                }
                IceEvent::GatheringComplete => trace!("gathering complete"),
            }
        }
        if self.agent.selected().is_none() {
            self.selected = None;
        }
        self.failed = self.agent.is_failed();
    }
}

impl Drop for IceChannel {
    /// Releases the TURN allocations (a Refresh with lifetime 0, sent once
    /// without waiting: the server frees the relay at once instead of at
    /// the end of its lifetime).
    fn drop(&mut self) {
        let t = now();
        for r in &mut self.relays {
            r.client.release(t);
            let Some(sock) = self.sockets.get(r.socket) else {
                continue;
            };
            while let Some(x) = r.client.poll_transmit() {
                let _ = sock.try_send_to(&x.contents, x.destination);
            }
        }
    }
}

/// Loopback, private (RFC 1918, IPv6 ULA) or link-local: not reachable
/// from a server on the public internet.
fn is_local_scope(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// What [`IceChannel::poll_step`] produced.
enum Step {
    Data,
    Changed,
}

fn ice_failed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionRefused,
        "ICE failed: no candidate pair works",
    )
}

/// A non-blocking UDP socket on `addr` (port 0: any; an IPv6 link-local
/// address carries its interface as scope id), with large kernel buffers.
fn open_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    let (rcvbuf, sndbuf) = raise_buffers(&socket, SOCKET_BUFFER_BYTES);
    trace!(?rcvbuf, ?sndbuf, "socket buffers");
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Where to bind for `--bind ip`: port 0, and for an IPv6 link-local
/// address the interface that has it (binding without one fails).
fn bind_address(ip: IpAddr) -> io::Result<SocketAddr> {
    match ip {
        IpAddr::V6(v6) if is_link_local_v6(&v6) => local_endpoints(true)?
            .into_iter()
            .find(|a| a.ip() == ip)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    format!("no interface has the link-local address {ip}"),
                )
            }),
        _ => Ok(SocketAddr::new(ip, 0)),
    }
}

/// fe80::/10.
fn is_link_local_v6(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// Usable local addresses: up, not loopback, not IPv6 link-local; IPv4
/// first.
pub fn interface_addresses() -> io::Result<Vec<IpAddr>> {
    Ok(local_endpoints(false)?
        .into_iter()
        .map(|a| a.ip())
        .collect())
}

/// Local addresses of interfaces that are up and not loopback, as socket
/// addresses with port 0: the routable ones (IPv4 first, IPv4 link-local
/// never) or, with `link_local`, only the IPv6 link-local ones, each with
/// its interface as scope id.
fn local_endpoints(link_local: bool) -> io::Result<Vec<SocketAddr>> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a list we free below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        let flags = ifa.ifa_flags;
        if ifa.ifa_addr.is_null()
            || flags & libc::IFF_UP as libc::c_uint == 0
            || flags & libc::IFF_LOOPBACK as libc::c_uint != 0
        {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr whose
        // family says which larger struct it is.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if family == libc::AF_INET {
            // SAFETY: AF_INET addresses are sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            let addr = SocketAddr::new(IpAddr::V4(ip), 0);
            if !link_local && !ip.is_link_local() && !v4.contains(&addr) {
                v4.push(addr);
            }
        } else if family == libc::AF_INET6 {
            // SAFETY: AF_INET6 addresses are sockaddr_in6.
            let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let ll = is_link_local_v6(&ip);
            let scope = if ll {
                // Linux fills sin6_scope_id for link-local addresses; the
                // interface index is the same thing where it does not.
                match sin6.sin6_scope_id {
                    // SAFETY: ifa_name is a NUL-terminated string owned by
                    // the list.
                    0 => unsafe { libc::if_nametoindex(ifa.ifa_name) },
                    s => s,
                }
            } else {
                0
            };
            let addr = SocketAddr::V6(SocketAddrV6::new(ip, 0, 0, scope));
            // A link-local address whose interface is unknown is unusable.
            if link_local == ll && (scope != 0 || !ll) && !v6.contains(&addr) {
                v6.push(addr);
            }
        }
    }
    // SAFETY: `ifap` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(ifap) };
    v4.extend(v6);
    Ok(v4)
}

/// Datagram size for a path from `local` (port 0; with its scope) to
/// `remote`.
fn path_datagram_size(local: SocketAddr, remote: SocketAddr) -> usize {
    if remote.ip().is_loopback() {
        return MAX_UDP_PAYLOAD;
    }
    let header = if remote.is_ipv4() { 28 } else { 48 };
    match route_mtu(local, remote) {
        // Routed through `lo` (one of our own addresses).
        Some(mtu) if mtu >= 65535 => MAX_UDP_PAYLOAD,
        Some(mtu) => mtu.saturating_sub(header).clamp(536, DEFAULT_PATH_DATAGRAM),
        None => DEFAULT_PATH_DATAGRAM,
    }
}

/// IP_MTU of the route to `remote` (Linux), from a throwaway connected socket.
#[cfg(target_os = "linux")]
fn route_mtu(local: SocketAddr, remote: SocketAddr) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let s = std::net::UdpSocket::bind(local).ok()?;
    s.connect(remote).ok()?;
    let (level, opt) = if remote.is_ipv4() {
        (libc::IPPROTO_IP, libc::IP_MTU)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU)
    };
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd, out-pointer to a c_int with its size.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            level,
            opt,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (r == 0 && mtu > 0).then_some(mtu as usize)
}

#[cfg(not(target_os = "linux"))]
fn route_mtu(_local: SocketAddr, _remote: SocketAddr) -> Option<usize> {
    None
}
