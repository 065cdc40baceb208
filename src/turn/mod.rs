//! A sans-IO TURN client (RFC 8656, UDP to the server, UDP relay).
//!
//! One [`TurnClient`] owns one allocation on one server: it is fed the
//! datagrams that came from the server ([`TurnClient::handle_datagram`]) and
//! the time ([`TurnClient::handle_timeout`]), and is asked for datagrams to
//! send to the server ([`TurnClient::poll_transmit`]), events
//! ([`TurnClient::poll_event`]) and its next deadline
//! ([`TurnClient::poll_timeout`]). It never touches a socket or a clock; the
//! ICE driver owns both (docs/protocol.md §B).
//!
//! What it does: Allocate with the long-term credential dance (401 gives
//! REALM and NONCE, 438 gives a fresh NONCE), Refresh before the allocation
//! expires, CreatePermission and ChannelBind only for the peers the caller
//! allows (the session peer's candidates), Send indications until a
//! peer's channel is bound and ChannelData after, and release with a Refresh
//! of lifetime 0. Every request is retransmitted a bounded number of times.
//!
//! Hand-written because the Rust TURN clients either own their sockets and
//! runtime (webrtc-rs `turn`) or speak only the server side; gshare needs a
//! client it can drive from the same socket as its Google-dialect checks.
//! The STUN wire format is `crate::ice::stun`'s RFC 5389 codec.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use thiserror::Error;
use tracing::{debug, trace};

use crate::ice::stun::{
    ATTR_CHANNEL_NUMBER, ATTR_DATA, ATTR_LIFETIME, ATTR_NONCE, ATTR_REALM,
    ATTR_REQUESTED_TRANSPORT, ATTR_USERNAME, ATTR_XOR_MAPPED_ADDRESS, ATTR_XOR_PEER_ADDRESS,
    ATTR_XOR_RELAYED_ADDRESS, Class, Method, StunBuilder, StunMessage, channel_data, long_term_key,
};

/// Permission lifetime on the server (RFC 8656 §9: 300 s, not negotiable);
/// refreshed a minute early.
pub const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// Channel binding lifetime on the server (RFC 8656 §12: 600 s); rebound a
/// minute early.
pub const CHANNEL_REFRESH: Duration = Duration::from_secs(540);
/// Most peers (transport addresses) one allocation serves. Peers come from
/// the session peer's candidates, which the ICE agent bounds already; this
/// bound keeps a hostile candidate list from binding the server's 4096
/// channels.
pub const MAX_PEERS: usize = 64;
/// How often one request may meet 438 Stale Nonce in a row before the
/// server is considered broken.
pub const MAX_STALE_NONCE: u32 = 3;
/// Longest wait between two transmissions of one request.
const MAX_RTO: Duration = Duration::from_secs(8);

/// Where and who.
#[derive(Clone)]
pub struct TurnConfig {
    /// The TURN server (UDP).
    pub server: SocketAddr,
    /// Long-term credential user (for the TURN REST scheme: `EXPIRY[:NAME]`).
    pub username: String,
    /// Long-term credential password.
    pub password: String,
    /// Allocation lifetime to ask for (the server may choose another).
    pub lifetime: Duration,
    /// First retransmission timeout; doubled per retransmission up to 8 s.
    pub rto: Duration,
    /// Transmissions of one request before giving up.
    pub max_transmissions: u32,
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl TurnConfig {
    /// Defaults of RFC 8489 §6.2.1 (RTO 500 ms) with six transmissions
    /// (0.5 + 1 + 2 + 4 + 8 + 8 s: 23.5 s before "unreachable") and the
    /// default allocation lifetime of 10 minutes.
    pub fn new(server: SocketAddr, username: &str, password: &str) -> Self {
        TurnConfig {
            server,
            username: username.to_owned(),
            password: password.to_owned(),
            lifetime: Duration::from_secs(600),
            rto: Duration::from_millis(500),
            max_transmissions: 6,
        }
    }
}

/// Why the relay cannot be used (or one peer cannot be reached through it).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum TurnError {
    /// 401 to a request that carried our credentials.
    #[error("the TURN server {server} rejected the credentials of user \"{user}\"")]
    Unauthorized {
        /// The server.
        server: SocketAddr,
        /// The user name we sent.
        user: String,
    },
    /// No answer at all.
    #[error("the TURN server {server} did not answer ({tries} attempts)")]
    Unreachable {
        /// The server.
        server: SocketAddr,
        /// Requests sent.
        tries: u32,
    },
    /// Only datagrams that are not TURN came back.
    #[error("the TURN server {server} answered with data that is not STUN/TURN")]
    Garbage {
        /// The server.
        server: SocketAddr,
    },
    /// The allocation is gone (refresh refused or unanswered).
    #[error("the TURN server {server} lost our relay allocation: {reason}")]
    AllocationLost {
        /// The server.
        server: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// An error response other than the credential dance.
    #[error("the TURN server {server} refused {what}: {code} {reason}")]
    Refused {
        /// The server.
        server: SocketAddr,
        /// "the allocation", "a permission for 192.0.2.1", …
        what: String,
        /// ERROR-CODE number.
        code: u16,
        /// ERROR-CODE reason phrase.
        reason: String,
    },
    /// The caller tried to relay to a peer it never allowed.
    #[error("{peer} is not an allowed peer of the relay")]
    NotPermitted {
        /// The peer.
        peer: SocketAddr,
    },
    /// Sending before the allocation exists or after it ended.
    #[error("the relay allocation is not active")]
    NotAllocated,
    /// Too many peers.
    #[error("the relay serves at most {MAX_PEERS} peers")]
    TooManyPeers,
}

/// What the client reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEvent {
    /// The relay exists: `relayed` is the address peers send to, `mapped`
    /// our address as the server saw it (a server-reflexive candidate).
    Allocated {
        /// XOR-RELAYED-ADDRESS.
        relayed: SocketAddr,
        /// XOR-MAPPED-ADDRESS, if the server sent one.
        mapped: Option<SocketAddr>,
        /// Lifetime granted.
        lifetime: Duration,
    },
    /// The allocation was refreshed.
    Refreshed {
        /// Lifetime granted.
        lifetime: Duration,
    },
    /// The server installed a permission for this peer address.
    PermissionCreated(IpAddr),
    /// The peer's channel is bound; data now goes as ChannelData.
    ChannelBound {
        /// The peer.
        peer: SocketAddr,
        /// Its channel number.
        channel: u16,
    },
    /// A permission or channel for one peer failed; the allocation lives on.
    PeerFailed {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        error: TurnError,
    },
    /// The allocation failed or was lost; the client is finished.
    Failed(TurnError),
    /// The allocation was released (or the release went unanswered).
    Released,
}

/// A datagram for the TURN server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Always the configured server.
    pub destination: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Allocate,
    Refresh { lifetime: u32 },
    Permission { peer: SocketAddr },
    ChannelBind { peer: SocketAddr, channel: u16 },
}

#[derive(Debug)]
struct Transaction {
    request: Request,
    bytes: Vec<u8>,
    sent: u32,
    next: Instant,
    wait: Duration,
    /// Whether the request carried MESSAGE-INTEGRITY (then the answer must too).
    authenticated: bool,
    stale_nonces: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Allocating,
    Allocated,
    Releasing,
    Done,
}

#[derive(Debug)]
struct Peer {
    channel: u16,
    bound: bool,
    /// A ChannelBind or CreatePermission for it is in flight.
    pending: bool,
    /// When to rebind the channel.
    rebind_at: Option<Instant>,
}

#[derive(Debug)]
struct PermissionState {
    pending: bool,
    refresh_at: Option<Instant>,
}

/// One TURN allocation, sans-IO.
#[derive(Debug)]
pub struct TurnClient {
    config: TurnConfig,
    state: State,
    realm: Option<String>,
    nonce: Option<String>,
    key: Option<[u8; 16]>,
    relayed: Option<SocketAddr>,
    refresh_at: Option<Instant>,
    /// In flight, keyed by transaction id; at most one per peer plus the
    /// allocation's own, so bounded by [`MAX_PEERS`] * 2 + 1.
    transactions: HashMap<[u8; 12], Transaction>,
    /// Allowed peers, at most [`MAX_PEERS`].
    peers: HashMap<SocketAddr, Peer>,
    /// Permissions by IP (one per allowed peer IP).
    permissions: HashMap<IpAddr, PermissionState>,
    channels: HashMap<u16, SocketAddr>,
    next_channel: u16,
    /// Datagrams from the server that were neither STUN nor ChannelData.
    garbage: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TurnEvent>,
}

impl TurnClient {
    /// Starts allocating: the first Allocate (without credentials, to learn
    /// the realm and nonce) is ready in [`poll_transmit`](Self::poll_transmit).
    pub fn new(config: TurnConfig, now: Instant) -> Self {
        let mut c = TurnClient {
            config,
            state: State::Allocating,
            realm: None,
            nonce: None,
            key: None,
            relayed: None,
            refresh_at: None,
            transactions: HashMap::new(),
            peers: HashMap::new(),
            permissions: HashMap::new(),
            channels: HashMap::new(),
            next_channel: channel_data::FIRST_CHANNEL,
            garbage: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        c.start(Request::Allocate, now, 0);
        c
    }

    /// The server this client talks to.
    pub fn server(&self) -> SocketAddr {
        self.config.server
    }

    /// The relayed address, once allocated.
    pub fn relayed_address(&self) -> Option<SocketAddr> {
        self.relayed.filter(|_| self.state == State::Allocated)
    }

    /// Whether the allocation exists (packets may be relayed).
    pub fn is_allocated(&self) -> bool {
        self.state == State::Allocated
    }

    /// Whether the client has finished (failed or released).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Allows relaying to and from `peer`: installs a permission for its IP
    /// and binds a channel. Peers not allowed here are never reachable
    /// through the relay. Calling it again for a known peer does nothing.
    pub fn allow_peer(&mut self, peer: SocketAddr, now: Instant) -> Result<(), TurnError> {
        if self.peers.contains_key(&peer) {
            return Ok(());
        }
        if self.state == State::Done || self.state == State::Releasing {
            return Err(TurnError::NotAllocated);
        }
        if self.peers.len() >= MAX_PEERS || self.next_channel > channel_data::LAST_CHANNEL {
            return Err(TurnError::TooManyPeers);
        }
        let channel = self.next_channel;
        self.next_channel += 1;
        self.peers.insert(
            peer,
            Peer {
                channel,
                bound: false,
                pending: false,
                rebind_at: None,
            },
        );
        self.channels.insert(channel, peer);
        self.permissions
            .entry(peer.ip())
            .or_insert(PermissionState {
                pending: false,
                refresh_at: None,
            });
        if self.state == State::Allocated {
            self.install_peer(peer, now);
        }
        Ok(())
    }

    /// Whether `peer` was allowed.
    pub fn is_allowed(&self, peer: SocketAddr) -> bool {
        self.peers.contains_key(&peer)
    }

    fn install_peer(&mut self, peer: SocketAddr, now: Instant) {
        let ip = peer.ip();
        if let Some(p) = self.permissions.get_mut(&ip)
            && !p.pending
            && p.refresh_at.is_none()
        {
            p.pending = true;
            self.start(Request::Permission { peer }, now, 0);
        }
        if let Some(p) = self.peers.get_mut(&peer)
            && !p.pending
        {
            p.pending = true;
            let channel = p.channel;
            self.start(Request::ChannelBind { peer, channel }, now, 0);
        }
    }

    /// Relays `data` to `peer` (an allowed peer): ChannelData once the
    /// channel is bound, a Send indication before.
    pub fn send_to(&mut self, peer: SocketAddr, data: &[u8]) -> Result<(), TurnError> {
        if self.state != State::Allocated {
            return Err(TurnError::NotAllocated);
        }
        // A peer is reachable when its IP has a permission (RFC 8656 §9):
        // peer-reflexive addresses of an allowed IP go as Send indications.
        let channel = match self.peers.get(&peer) {
            Some(p) => p.bound.then_some(p.channel),
            None if self.permissions.contains_key(&peer.ip()) => None,
            None => return Err(TurnError::NotPermitted { peer }),
        };
        let contents = if let Some(channel) = channel {
            channel_data::encode(channel, data)
        } else {
            StunBuilder::new(Method::Send, Class::Indication, rand::random())
                .xor_address(ATTR_XOR_PEER_ADDRESS, peer)
                .attribute(ATTR_DATA, data)
                .finish()
        };
        self.transmits.push_back(Transmit {
            destination: self.config.server,
            contents,
        });
        Ok(())
    }

    /// Ends the allocation with a Refresh of lifetime 0;
    /// [`TurnEvent::Released`] follows when the server answers (or does not).
    pub fn release(&mut self, now: Instant) {
        match self.state {
            State::Allocated => {
                self.transactions.clear();
                self.state = State::Releasing;
                self.start(Request::Refresh { lifetime: 0 }, now, 0);
            }
            State::Allocating => {
                self.transactions.clear();
                self.finish(TurnEvent::Released);
            }
            State::Releasing | State::Done => {}
        }
    }

    /// The 4-byte ChannelData header for `len` bytes to `peer`, if its
    /// channel is bound: the caller sends header and payload as one
    /// datagram to [`server`](Self::server) (a vectored send, so the payload
    /// is never copied into a framed buffer). `None` before the channel is
    /// bound, for a peer not allowed, or for more than 65535 bytes: then
    /// [`send_to`](Self::send_to) frames it.
    pub fn channel_header(&self, peer: SocketAddr, len: usize) -> Option<[u8; 4]> {
        if self.state != State::Allocated {
            return None;
        }
        let p = self.peers.get(&peer).filter(|p| p.bound)?;
        let len = u16::try_from(len).ok()?;
        let [c0, c1] = p.channel.to_be_bytes();
        let [l0, l1] = len.to_be_bytes();
        Some([c0, c1, l0, l1])
    }

    /// A datagram that came from the server. Returns a relayed datagram
    /// (peer address, payload) if it carried one from an allowed peer.
    pub fn handle_datagram(&mut self, data: &[u8], now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        let mut buf = data.to_vec();
        let (peer, len) = self.handle_datagram_in_place(&mut buf, now)?;
        buf.truncate(len);
        Some((peer, buf))
    }

    /// Like [`handle_datagram`](Self::handle_datagram), without allocating:
    /// a relayed payload is moved to the front of `buf` (it is always
    /// shorter than the datagram that carried it) and its length returned
    /// with the peer's address. `buf` is scratch either way.
    pub fn handle_datagram_in_place(
        &mut self,
        buf: &mut [u8],
        now: Instant,
    ) -> Option<(SocketAddr, usize)> {
        if channel_data::looks_like(buf) {
            let Some((channel, payload)) = channel_data::decode(buf) else {
                self.garbage += 1;
                return None;
            };
            let len = payload.len();
            let peer = *self.channels.get(&channel)?;
            buf.copy_within(channel_data::HEADER..channel_data::HEADER + len, 0);
            return Some((peer, len));
        }
        let data: &[u8] = buf;
        let msg = match StunMessage::parse(data) {
            Ok(m) => m,
            Err(e) => {
                self.garbage += 1;
                debug!("ignoring a datagram from the TURN server: {e}");
                return None;
            }
        };
        match msg.class {
            Class::Indication => {
                if msg.method != Method::Data {
                    return None;
                }
                let peer = msg.xor_address(ATTR_XOR_PEER_ADDRESS)?;
                let payload = msg.get(ATTR_DATA)?;
                // The server only forwards permitted IPs; check anyway.
                if !self.permissions.contains_key(&peer.ip()) {
                    return None;
                }
                // DATA lies inside the message: it fits.
                let out = buf.get_mut(..payload.len())?;
                out.copy_from_slice(payload);
                Some((peer, payload.len()))
            }
            Class::Request => None,
            Class::Success | Class::Error => {
                self.handle_response(&msg, now);
                None
            }
        }
    }

    fn handle_response(&mut self, msg: &StunMessage, now: Instant) {
        let Some(tx) = self.transactions.get(&msg.transaction_id) else {
            trace!("TURN response to an unknown transaction");
            return;
        };
        if tx.authenticated {
            // A response to an authenticated request must prove it knows
            // the key, except a 401/438 (which carries none); forged
            // answers are dropped and the request keeps retransmitting.
            let code = msg.error_code().map(|e| e.code);
            let dance = msg.class == Class::Error && matches!(code, Some(401) | Some(438));
            let key = self.key.unwrap_or_default();
            if !dance && !msg.verify_integrity(&key) {
                debug!("dropping a TURN response without valid MESSAGE-INTEGRITY");
                return;
            }
        }
        let Some(tx) = self.transactions.remove(&msg.transaction_id) else {
            return;
        };
        if msg.class == Class::Success {
            self.on_success(tx.request, msg, now);
            return;
        }
        let error = msg.error_code().unwrap_or(crate::ice::stun::ErrorCode {
            code: 0,
            reason: "error response without ERROR-CODE".into(),
        });
        match error.code {
            401 if !tx.authenticated
                || (msg.text(ATTR_NONCE) != self.nonce && tx.stale_nonces < MAX_STALE_NONCE) =>
            {
                // The challenge, or a new nonce (perhaps a new realm): retry
                // with credentials, a bounded number of times.
                if !self.learn_nonce(msg) {
                    self.fail_request(tx.request, "a 401 without REALM and NONCE", error, now);
                    return;
                }
                let retries = tx.stale_nonces + u32::from(tx.authenticated);
                self.start(tx.request, now, retries);
            }
            438 if tx.stale_nonces < MAX_STALE_NONCE && self.learn_nonce(msg) => {
                self.start(tx.request, now, tx.stale_nonces + 1);
            }
            401 => {
                let err = TurnError::Unauthorized {
                    server: self.config.server,
                    user: self.config.username.clone(),
                };
                self.fail_request_with(tx.request, err, now);
            }
            _ => self.fail_request(tx.request, "", error, now),
        }
    }

    /// Takes REALM and NONCE from a 401/438; false if the NONCE is missing.
    fn learn_nonce(&mut self, msg: &StunMessage) -> bool {
        let Some(nonce) = msg.text(ATTR_NONCE) else {
            return false;
        };
        if let Some(realm) = msg.text(ATTR_REALM) {
            self.realm = Some(realm);
        }
        let Some(realm) = &self.realm else {
            return false;
        };
        self.key = Some(long_term_key(
            &self.config.username,
            realm,
            &self.config.password,
        ));
        self.nonce = Some(nonce);
        true
    }

    fn on_success(&mut self, request: Request, msg: &StunMessage, now: Instant) {
        match request {
            Request::Allocate => {
                let Some(relayed) = msg.xor_address(ATTR_XOR_RELAYED_ADDRESS) else {
                    let err = TurnError::Garbage {
                        server: self.config.server,
                    };
                    self.finish(TurnEvent::Failed(err));
                    return;
                };
                let lifetime = self.granted(msg);
                self.relayed = Some(relayed);
                self.state = State::Allocated;
                self.refresh_at = Some(now + refresh_after(lifetime));
                self.events.push_back(TurnEvent::Allocated {
                    relayed,
                    mapped: msg.xor_address(ATTR_XOR_MAPPED_ADDRESS),
                    lifetime,
                });
                let peers: Vec<SocketAddr> = self.peers.keys().copied().collect();
                for peer in peers {
                    self.install_peer(peer, now);
                }
            }
            Request::Refresh { lifetime: 0 } => self.finish(TurnEvent::Released),
            Request::Refresh { .. } => {
                let lifetime = self.granted(msg);
                self.refresh_at = Some(now + refresh_after(lifetime));
                self.events.push_back(TurnEvent::Refreshed { lifetime });
            }
            Request::Permission { peer } => {
                if let Some(p) = self.permissions.get_mut(&peer.ip()) {
                    let first = p.refresh_at.is_none();
                    p.pending = false;
                    p.refresh_at = Some(now + PERMISSION_REFRESH);
                    if first {
                        self.events
                            .push_back(TurnEvent::PermissionCreated(peer.ip()));
                    }
                }
            }
            Request::ChannelBind { peer, channel } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    let first = !p.bound;
                    p.bound = true;
                    p.pending = false;
                    p.rebind_at = Some(now + CHANNEL_REFRESH);
                    if first {
                        self.events
                            .push_back(TurnEvent::ChannelBound { peer, channel });
                    }
                }
            }
        }
    }

    fn granted(&self, msg: &StunMessage) -> Duration {
        msg.lifetime()
            .map(|s| Duration::from_secs(u64::from(s)))
            .unwrap_or(self.config.lifetime)
    }

    fn fail_request(
        &mut self,
        request: Request,
        note: &str,
        error: crate::ice::stun::ErrorCode,
        now: Instant,
    ) {
        let what = match request {
            Request::Allocate => "the allocation".to_owned(),
            Request::Refresh { .. } => "the refresh".to_owned(),
            Request::Permission { peer } => format!("a permission for {}", peer.ip()),
            Request::ChannelBind { peer, .. } => format!("a channel to {peer}"),
        };
        let reason = if note.is_empty() {
            error.reason
        } else {
            format!("{} ({note})", error.reason)
        };
        let err = match (request, error.code) {
            (Request::Refresh { .. }, 437) => TurnError::AllocationLost {
                server: self.config.server,
                reason: "the server no longer knows it (437)".into(),
            },
            _ => TurnError::Refused {
                server: self.config.server,
                what,
                code: error.code,
                reason,
            },
        };
        self.fail_request_with(request, err, now);
    }

    fn fail_request_with(&mut self, request: Request, err: TurnError, _now: Instant) {
        match request {
            Request::Allocate => self.finish(TurnEvent::Failed(err)),
            Request::Refresh { lifetime: 0 } => self.finish(TurnEvent::Released),
            Request::Refresh { .. } => {
                let err = match err {
                    e @ TurnError::AllocationLost { .. } => e,
                    e => TurnError::AllocationLost {
                        server: self.config.server,
                        reason: e.to_string(),
                    },
                };
                self.finish(TurnEvent::Failed(err));
            }
            Request::Permission { peer } => {
                if let Some(p) = self.permissions.get_mut(&peer.ip()) {
                    p.pending = false;
                }
                self.events
                    .push_back(TurnEvent::PeerFailed { peer, error: err });
            }
            Request::ChannelBind { peer, .. } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.pending = false;
                    p.bound = false;
                }
                self.events
                    .push_back(TurnEvent::PeerFailed { peer, error: err });
            }
        }
    }

    fn finish(&mut self, event: TurnEvent) {
        if self.state == State::Done {
            return;
        }
        self.state = State::Done;
        self.transactions.clear();
        self.refresh_at = None;
        self.events.push_back(event);
    }

    fn start(&mut self, request: Request, now: Instant, stale_nonces: u32) {
        let tid: [u8; 12] = rand::random();
        let (method, mut b) = match request {
            Request::Allocate => {
                let mut b = StunBuilder::new(Method::Allocate, Class::Request, tid);
                // 17: UDP (RFC 8656 §18.11).
                b.attribute(ATTR_REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
                let secs = u32::try_from(self.config.lifetime.as_secs()).unwrap_or(u32::MAX);
                b.attribute(ATTR_LIFETIME, &secs.to_be_bytes());
                (Method::Allocate, b)
            }
            Request::Refresh { lifetime } => {
                let mut b = StunBuilder::new(Method::Refresh, Class::Request, tid);
                b.attribute(ATTR_LIFETIME, &lifetime.to_be_bytes());
                (Method::Refresh, b)
            }
            Request::Permission { peer } => {
                let mut b = StunBuilder::new(Method::CreatePermission, Class::Request, tid);
                b.xor_address(ATTR_XOR_PEER_ADDRESS, peer);
                (Method::CreatePermission, b)
            }
            Request::ChannelBind { peer, channel } => {
                let mut b = StunBuilder::new(Method::ChannelBind, Class::Request, tid);
                let [hi, lo] = channel.to_be_bytes();
                b.attribute(ATTR_CHANNEL_NUMBER, &[hi, lo, 0, 0]);
                b.xor_address(ATTR_XOR_PEER_ADDRESS, peer);
                (Method::ChannelBind, b)
            }
        };
        let authenticated = match (&self.key, &self.realm, &self.nonce) {
            (Some(key), Some(realm), Some(nonce)) => {
                b.attribute(ATTR_USERNAME, self.config.username.as_bytes())
                    .attribute(ATTR_REALM, realm.as_bytes())
                    .attribute(ATTR_NONCE, nonce.as_bytes())
                    .integrity(key);
                true
            }
            _ => false,
        };
        b.fingerprint();
        trace!("TURN {method:?} request");
        let bytes = b.finish();
        self.transmits.push_back(Transmit {
            destination: self.config.server,
            contents: bytes.clone(),
        });
        self.transactions.insert(
            tid,
            Transaction {
                request,
                bytes,
                sent: 1,
                next: now + self.config.rto,
                wait: self.config.rto,
                authenticated,
                stale_nonces,
            },
        );
    }

    /// Retransmits, refreshes and gives up as time says.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<[u8; 12]> = self
            .transactions
            .iter()
            .filter(|(_, t)| t.next <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(tx) = self.transactions.get_mut(&id) else {
                continue;
            };
            if tx.sent >= self.config.max_transmissions {
                let tries = tx.sent;
                let request = tx.request;
                self.transactions.remove(&id);
                let err = if self.garbage > 0 {
                    TurnError::Garbage {
                        server: self.config.server,
                    }
                } else {
                    TurnError::Unreachable {
                        server: self.config.server,
                        tries,
                    }
                };
                self.fail_request_with(request, err, now);
                continue;
            }
            tx.sent += 1;
            tx.wait = (tx.wait * 2).min(MAX_RTO);
            tx.next = now + tx.wait;
            self.transmits.push_back(Transmit {
                destination: self.config.server,
                contents: tx.bytes.clone(),
            });
        }
        if self.state != State::Allocated {
            return;
        }
        let busy =
            |c: &Self, f: &dyn Fn(&Request) -> bool| c.transactions.values().any(|t| f(&t.request));
        if self.refresh_at.is_some_and(|t| t <= now)
            && !busy(self, &|r| matches!(r, Request::Refresh { .. }))
        {
            self.refresh_at = None;
            let secs = u32::try_from(self.config.lifetime.as_secs()).unwrap_or(u32::MAX);
            self.start(Request::Refresh { lifetime: secs }, now, 0);
        }
        let due_permissions: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, p)| !p.pending && p.refresh_at.is_some_and(|t| t <= now))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due_permissions {
            let Some(peer) = self.peers.keys().find(|p| p.ip() == ip).copied() else {
                continue;
            };
            if let Some(p) = self.permissions.get_mut(&ip) {
                p.pending = true;
            }
            self.start(Request::Permission { peer }, now, 0);
        }
        let due_channels: Vec<(SocketAddr, u16)> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.pending && p.rebind_at.is_some_and(|t| t <= now))
            .map(|(a, p)| (*a, p.channel))
            .collect();
        for (peer, channel) in due_channels {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.pending = true;
            }
            self.start(Request::ChannelBind { peer, channel }, now, 0);
        }
    }

    /// The next datagram for the server.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let tx = self.transactions.values().map(|t| t.next);
        if self.state != State::Allocated {
            return tx.min();
        }
        let perms = self
            .permissions
            .values()
            .filter(|p| !p.pending)
            .filter_map(|p| p.refresh_at);
        let chans = self
            .peers
            .values()
            .filter(|p| !p.pending)
            .filter_map(|p| p.rebind_at);
        tx.chain(self.refresh_at).chain(perms).chain(chans).min()
    }
}

/// When to refresh an allocation of this lifetime: a minute early, or at
/// half-time for lifetimes of two minutes or less.
fn refresh_after(lifetime: Duration) -> Duration {
    if lifetime > Duration::from_secs(120) {
        lifetime - Duration::from_secs(60)
    } else {
        lifetime / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ice::stun::ATTR_MESSAGE_INTEGRITY;

    const SERVER: &str = "192.0.2.1:3478";

    fn client(now: Instant) -> TurnClient {
        TurnClient::new(TurnConfig::new(SERVER.parse().unwrap(), "u", "p"), now)
    }

    fn request(c: &mut TurnClient) -> StunMessage {
        let t = c.poll_transmit().expect("a request");
        assert_eq!(t.destination, SERVER.parse().unwrap());
        StunMessage::parse(&t.contents).expect("parses")
    }

    fn challenge(req: &StunMessage, nonce: &str) -> Vec<u8> {
        StunBuilder::new(req.method, Class::Error, req.transaction_id)
            .error_code(401, "Unauthorized")
            .attribute(ATTR_REALM, b"r")
            .attribute(ATTR_NONCE, nonce.as_bytes())
            .finish()
    }

    fn allocated(req: &StunMessage, key: &[u8]) -> Vec<u8> {
        StunBuilder::new(Method::Allocate, Class::Success, req.transaction_id)
            .xor_address(ATTR_XOR_RELAYED_ADDRESS, "192.0.2.1:50000".parse().unwrap())
            .xor_address(
                ATTR_XOR_MAPPED_ADDRESS,
                "198.51.100.2:4000".parse().unwrap(),
            )
            .attribute(ATTR_LIFETIME, &600u32.to_be_bytes())
            .integrity(key)
            .finish()
    }

    #[test]
    fn retransmissions_are_bounded_and_back_off() {
        let t0 = Instant::now();
        let mut c = client(t0);
        let mut sends = vec![t0];
        assert!(c.poll_transmit().is_some());
        while let Some(at) = c.poll_timeout() {
            c.handle_timeout(at);
            if c.poll_transmit().is_some() {
                sends.push(at);
            }
        }
        let gaps: Vec<u64> = sends
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis() as u64)
            .collect();
        assert_eq!(gaps, [500, 1000, 2000, 4000, 8000]);
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::Failed(TurnError::Unreachable {
                server: SERVER.parse().unwrap(),
                tries: 6
            }))
        );
        assert!(c.is_done() && c.poll_timeout().is_none());
    }

    #[test]
    fn credential_dance_and_forged_answers() {
        let now = Instant::now();
        let mut c = client(now);
        let first = request(&mut c);
        assert!(first.get(ATTR_MESSAGE_INTEGRITY).is_none());
        assert!(c.handle_datagram(&challenge(&first, "n1"), now).is_none());
        let second = request(&mut c);
        assert_ne!(second.transaction_id, first.transaction_id);
        assert_eq!(second.text(ATTR_USERNAME).as_deref(), Some("u"));
        assert_eq!(second.text(ATTR_NONCE).as_deref(), Some("n1"));
        let key = long_term_key("u", "r", "p");
        assert!(second.verify_integrity(&key));
        // A success keyed with something else is dropped; the real one counts.
        c.handle_datagram(&allocated(&second, b"forged"), now);
        assert_eq!(c.poll_event(), None);
        c.handle_datagram(&allocated(&second, &key), now);
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::Allocated {
                relayed: "192.0.2.1:50000".parse().unwrap(),
                mapped: Some("198.51.100.2:4000".parse().unwrap()),
                lifetime: Duration::from_secs(600),
            })
        );
        // Refresh is due a minute before expiry.
        assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(540)));
    }

    #[test]
    fn endless_new_nonces_end_as_unauthorized() {
        let now = Instant::now();
        let mut c = client(now);
        for i in 0..10 {
            let Some(t) = c.poll_transmit() else { break };
            let req = StunMessage::parse(&t.contents).unwrap();
            c.handle_datagram(&challenge(&req, &format!("n{i}")), now);
        }
        assert!(matches!(
            c.poll_event(),
            Some(TurnEvent::Failed(TurnError::Unauthorized { .. }))
        ));
        assert!(c.is_done());
    }

    #[test]
    fn relayed_data_only_from_allowed_peers() {
        let now = Instant::now();
        let mut c = client(now);
        let peer: SocketAddr = "203.0.113.5:7000".parse().unwrap();
        c.allow_peer(peer, now).unwrap();
        let first = request(&mut c);
        c.handle_datagram(&challenge(&first, "n"), now);
        let second = request(&mut c);
        let key = long_term_key("u", "r", "p");
        c.handle_datagram(&allocated(&second, &key), now);
        assert!(matches!(c.poll_event(), Some(TurnEvent::Allocated { .. })));
        // The allowed peer gets a permission and a channel at once.
        let perm = request(&mut c);
        assert_eq!(perm.method, Method::CreatePermission);
        assert_eq!(perm.xor_address(ATTR_XOR_PEER_ADDRESS), Some(peer));
        let bind = request(&mut c);
        assert_eq!(bind.method, Method::ChannelBind);
        assert_eq!(bind.get(ATTR_CHANNEL_NUMBER), Some(&[0x40, 0x00, 0, 0][..]));

        let data = |from: SocketAddr| {
            StunBuilder::new(Method::Data, Class::Indication, [3; 12])
                .xor_address(ATTR_XOR_PEER_ADDRESS, from)
                .attribute(ATTR_DATA, b"hi")
                .finish()
        };
        assert_eq!(
            c.handle_datagram(&data(peer), now),
            Some((peer, b"hi".to_vec()))
        );
        // In place: the payload moves to the front of the buffer.
        let mut buf = data(peer);
        assert_eq!(c.handle_datagram_in_place(&mut buf, now), Some((peer, 2)));
        assert_eq!(&buf[..2], b"hi");
        let stranger: SocketAddr = "203.0.113.9:7000".parse().unwrap();
        assert_eq!(c.handle_datagram(&data(stranger), now), None);
        // Before the bind answer data goes as a Send indication, after as
        // ChannelData; unknown channels are dropped.
        assert_eq!(c.channel_header(peer, 1), None);
        c.send_to(peer, b"x").unwrap();
        let send = request(&mut c);
        assert_eq!((send.method, send.class), (Method::Send, Class::Indication));
        let ok = StunBuilder::new(Method::ChannelBind, Class::Success, bind.transaction_id)
            .integrity(&key)
            .finish();
        c.handle_datagram(&ok, now);
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::ChannelBound {
                peer,
                channel: 0x4000
            })
        );
        c.send_to(peer, b"x").unwrap();
        assert_eq!(c.poll_transmit().unwrap().contents, [0x40, 0, 0, 1, b'x']);
        // The same header for a vectored send; none for a stranger or for
        // more than ChannelData can frame.
        assert_eq!(c.channel_header(peer, 1), Some([0x40, 0, 0, 1]));
        assert_eq!(c.channel_header(peer, 16336), Some([0x40, 0, 0x3f, 0xd0]));
        assert_eq!(c.channel_header(stranger, 1), None);
        assert_eq!(c.channel_header(peer, 65536), None);
        assert_eq!(
            c.handle_datagram(&channel_data::encode(0x4000, b"yo"), now),
            Some((peer, b"yo".to_vec()))
        );
        // In place, with TCP-style padding after the payload.
        let mut buf = channel_data::encode(0x4000, b"yo!");
        buf.push(0);
        assert_eq!(c.handle_datagram_in_place(&mut buf, now), Some((peer, 3)));
        assert_eq!(&buf[..3], b"yo!");
        let mut short = vec![0x40, 0, 0, 9, 1, 2];
        assert_eq!(c.handle_datagram_in_place(&mut short, now), None);
        assert_eq!(
            c.handle_datagram(&channel_data::encode(0x4001, b"yo"), now),
            None
        );
        assert_eq!(
            c.send_to(stranger, b"x"),
            Err(TurnError::NotPermitted { peer: stranger })
        );
        // A permission refusal affects that peer only.
        let refused = StunBuilder::new(Method::CreatePermission, Class::Error, perm.transaction_id)
            .error_code(403, "Forbidden")
            .integrity(&key)
            .finish();
        c.handle_datagram(&refused, now);
        assert!(matches!(c.poll_event(), Some(TurnEvent::PeerFailed { .. })));
        assert!(c.is_allocated());
    }
}
