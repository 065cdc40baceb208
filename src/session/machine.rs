//! The sans-IO session machine: both roles, several sessions at once
//! (docs/protocol.md §0, §A).
//!
//! Input: [`SessionManager::handle_iq`] (every IQ set whose child is a
//! `<session>` in the session namespace, and every IQ result/error),
//! [`SessionManager::handle_timeout`] and the commands (`initiate`,
//! `accept`, …). Output: [`SessionManager::poll_transmit`],
//! [`SessionManager::poll_event`], [`SessionManager::poll_timeout`]. No
//! sockets, no clock: time is always passed in.
//!
//! Behaviour follows LJ04 where peers differ, and accepts what gabble
//! sends: full-manifest `accept`, `terminate` as decline, `gabble-N`
//! channel names, the legacy `candidates` dialect (§A.3–§A.9). Every
//! session ends with exactly one [`SessionEvent::Terminated`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use jid::{FullJid, Jid};
use minidom::Element;
use rand::Rng;
use rand::rngs::StdRng;
use tracing::debug;

use super::envelope::{
    Condition, ErrorReply, ErrorType, IqIn, IqOut, IqOutKind, IqPayload, ReceivedError,
    bounded_copy,
};
use super::extension::Extension;
use super::stanza::{
    Action, InfoItem, MAX_MANIFEST_ITEMS, MAX_NAME_BYTES, Manifest, NS_P2P, NS_SESSION,
    SessionBody, SessionHeader, SessionMessage, ShareDescription, unknown_channel_name_element,
};
use crate::ice::Candidate;
use crate::rng::SecretRng;

/// LJ04's session timeout (50 s) used for every timer by default: an IQ
/// without answer, an offer without accept/decision, an accepted session
/// without usable transport, a completed session without `terminate`.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(50);
/// Concurrent sessions (both roles). Beyond it initiates are refused with
/// `service-unavailable`/`cancel` (a `wait` type would keep an LJ04 sender
/// waiting for an accept that never comes, §A.10) and
/// [`SessionManager::initiate`] fails.
pub const MAX_SESSIONS: usize = 32;
/// Offers received but not yet accepted or declined; beyond it initiates are
/// refused like above. Keeps an offer flood from filling [`MAX_SESSIONS`].
pub const MAX_PENDING_OFFERS: usize = 8;
/// Remote candidates remembered per session (for de-duplication); a
/// `transport-info` beyond it gets `resource-constraint`/`wait`, which LJ04
/// and gabble ignore for transport messages.
pub const MAX_CANDIDATES_PER_SESSION: usize = 256;
/// Transport channels per session. LJ04 opens a new one only when the
/// previous stream closed; 16 is generous.
pub const MAX_CHANNELS_PER_SESSION: usize = 16;

/// Outgoing session IQs whose result we track at once. A peer that never
/// answers (while cycling initiate/terminate to make us send
/// transport-accepts) could otherwise grow the table for a whole
/// `iq_timeout`; beyond the bound the entry closest to its deadline is
/// forgotten (its late reply then goes unconsumed to the caller).
pub const MAX_PENDING_IQS: usize = 4096;

/// Tunables; `Default` gives the documented values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Accepted session without usable transport; completed session
    /// without the peer's `terminate`.
    pub session_timeout: Duration,
    /// Sender: how long the peer may take to accept or decline. Receiver:
    /// how long an undecided offer is kept (raise it when a human decides).
    pub accept_timeout: Duration,
    /// An IQ set of ours without result or error.
    pub iq_timeout: Duration,
    /// See [`MAX_SESSIONS`].
    pub max_sessions: usize,
    /// See [`MAX_PENDING_OFFERS`].
    pub max_pending_offers: usize,
    /// See [`MAX_CANDIDATES_PER_SESSION`].
    pub max_candidates_per_session: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            accept_timeout: DEFAULT_SESSION_TIMEOUT,
            iq_timeout: DEFAULT_SESSION_TIMEOUT,
            max_sessions: MAX_SESSIONS,
            max_pending_offers: MAX_PENDING_OFFERS,
            max_candidates_per_session: MAX_CANDIDATES_PER_SESSION,
        }
    }
}

/// Identifies one session inside a [`SessionManager`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionHandle(u64);

impl std::fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "session#{}", self.0)
    }
}

/// Our side of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Initiator, owns the files, HTTP server.
    Sender,
    /// Responder, HTTP client.
    Receiver,
}

/// How candidates travel (§A.3, §A.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// `transport-accept` and `transport-info` (LJ04, gabble GTALK4).
    Modern,
    /// No `<transport>` in the initiate; `candidates` in the session
    /// namespace (libjingle 0.3, gabble GTALK3).
    Legacy,
}

/// Which timer ran out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeoutKind {
    /// Our IQ got neither result nor error.
    NoReply(Action),
    /// Sender: the offer was neither accepted nor declined.
    NoAccept,
    /// Receiver: the local user did not accept or reject the offer.
    NoDecision,
    /// No usable transport (see [`SessionManager::transport_connected`]).
    NoTransport,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminateReason {
    /// Local [`SessionManager::terminate`].
    LocalTerminate,
    /// Local [`SessionManager::reject`].
    LocalReject,
    /// Everything was transferred: the receiver's `<complete/>` was
    /// acknowledged (receiver), or the peer terminated after `<complete/>`
    /// or did not terminate within the session timeout after it (sender).
    Completed,
    /// Sender: the peer declined, with `reject` (LJ04) or `terminate`
    /// before accepting (gabble).
    Declined {
        /// True for `reject`, false for `terminate`.
        reject: bool,
    },
    /// The peer terminated (sender: after accept, before `<complete/>`;
    /// receiver: any time). The sender's transfer layer may still count the
    /// transfer complete from the bytes served (§A.7).
    PeerTerminated {
        /// Local names of the terminate's children (only informative).
        reasons: Vec<String>,
    },
    /// The peer redirected the session (not supported).
    Redirected,
    /// The peer answered one of our session IQs with an error (§A.10).
    PeerError {
        /// The action of our IQ.
        action: Action,
        /// Error type.
        error_type: ErrorType,
        /// Error condition.
        condition: Condition,
        /// Error text, if any.
        text: Option<String>,
    },
    /// A timer ran out.
    Timeout(TimeoutKind),
}

/// What the machine tells its user.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// Receiver: a new offer. Answer with `accept` or `reject`.
    Offer {
        /// The new session.
        handle: SessionHandle,
        /// The sender's JID (the IQ `from`).
        from: Jid,
        /// The offered items.
        manifest: Manifest,
        /// HTTP path prefix for the items (`/temporary/…/`).
        source_path: String,
        /// HTTP path prefix for previews, if offered.
        preview_path: Option<String>,
        /// The sender's `<secure>` extension; `None` for classic peers.
        extension: Option<Extension>,
    },
    /// Sender: the receiver accepted.
    Accepted {
        /// The session.
        handle: SessionHandle,
        /// The receiver's `<secure>` extension; `None` for classic peers.
        extension: Option<Extension>,
    },
    /// The peer announced a transport channel (sender: the receiver's
    /// `info <channel>`); create it and send candidates for it.
    ChannelRequested {
        /// The session.
        handle: SessionHandle,
        /// Channel name as the peer spelled it.
        name: String,
    },
    /// The peer refused candidates for this channel (unknown-channel-name):
    /// tear it down.
    ChannelGone {
        /// The session.
        handle: SessionHandle,
        /// Channel name.
        name: String,
    },
    /// New remote candidates (duplicates removed) for one channel.
    RemoteCandidates {
        /// The session.
        handle: SessionHandle,
        /// Channel name.
        channel: String,
        /// The candidates, in message order.
        candidates: Vec<Candidate>,
    },
    /// Sender: the receiver reported every item fetched. The session stays
    /// open until the peer terminates (previews may still be asked for).
    Complete {
        /// The session.
        handle: SessionHandle,
    },
    /// The session is over; its handle is no longer valid.
    Terminated {
        /// The session.
        handle: SessionHandle,
        /// Why.
        reason: TerminateReason,
    },
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The handle names no live session.
    #[error("no such session")]
    UnknownSession,
    /// The command does not fit the session's role or state.
    #[error("not possible in the session's current role or state")]
    WrongState,
    /// [`Config::max_sessions`] reached.
    #[error("too many sessions")]
    TooManySessions,
    /// The manifest cannot be offered.
    #[error("invalid manifest: {0}")]
    InvalidManifest(&'static str),
    /// Candidates for a channel neither side announced.
    #[error("unknown channel {0}")]
    UnknownChannel(String),
    /// [`MAX_CHANNELS_PER_SESSION`] reached.
    #[error("too many channels")]
    TooManyChannels,
}

/// A snapshot of one session, for the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    /// Our role.
    pub role: Role,
    /// The peer's JID.
    pub peer: Jid,
    /// Session id on the wire.
    pub sid: String,
    /// Initiator JID on the wire.
    pub initiator: Jid,
    /// Current candidate dialect.
    pub dialect: Dialect,
    /// The offered items.
    pub manifest: Manifest,
    /// HTTP source path prefix.
    pub source_path: String,
    /// HTTP preview path prefix.
    pub preview_path: Option<String>,
    /// Accepted (and not yet over).
    pub accepted: bool,
    /// Known channel names, in creation order.
    pub channels: Vec<String>,
    /// The extension we sent (initiate or accept).
    pub local_extension: Option<Extension>,
    /// The peer's extension (from its initiate or accept).
    pub remote_extension: Option<Extension>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Sender: initiate sent. Receiver: initiate received, undecided.
    Pending,
    /// Accepted; `completed` once the sender saw `<complete/>`.
    Active { completed: bool },
    /// Receiver: `<complete/>` sent, waiting for its acknowledgement before
    /// sending `terminate` (§D.3a: gabble cancels if the stream dies first).
    Closing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    Accept,
    Decision,
    Transport,
    Linger,
}

#[derive(Debug)]
struct Session {
    handle: SessionHandle,
    role: Role,
    sid: String,
    initiator: Jid,
    peer: Jid,
    state: State,
    dialect: Dialect,
    transport_accepted: bool,
    manifest: Manifest,
    source_path: String,
    preview_path: Option<String>,
    channels: Vec<String>,
    next_channel: u32,
    remote_candidates: Vec<Candidate>,
    sent_candidates: Vec<Candidate>,
    timer: Option<(Instant, TimerKind)>,
    local_extension: Option<Extension>,
    remote_extension: Option<Extension>,
}

impl Session {
    fn key(&self) -> Key {
        (self.peer.clone(), self.sid.clone(), self.initiator.clone())
    }

    /// LJ04 `CheckState` plus gabble's leniency for info/transport-info
    /// while waiting for accept (§A.2).
    fn allows(&self, action: Action) -> bool {
        match action {
            Action::Initiate => false,
            Action::Accept | Action::Reject | Action::Redirect | Action::TransportAccept => {
                self.role == Role::Sender && self.state == State::Pending
            }
            Action::Info | Action::TransportInfo | Action::Candidates | Action::Terminate => true,
        }
    }

    fn arm_transport_timer(&mut self, now: Instant, timeout: Duration) {
        if self.timer.is_none() {
            self.timer = Some((now + timeout, TimerKind::Transport));
        }
    }
}

/// (peer, session id, initiator): LJ04 keys on (id, initiator) and then
/// requires `from` to be the recorded peer; folding the peer into the key
/// makes a spoofed `from` an unknown session.
type Key = (Jid, String, Jid);

#[derive(Debug)]
struct PendingIq {
    handle: SessionHandle,
    peer: Jid,
    action: Action,
    is_complete: bool,
    deadline: Instant,
}

enum Failure {
    Error(ReceivedError),
    NoReply,
}

/// The session machine for one local JID. See the module docs.
#[derive(Debug)]
pub struct SessionManager {
    local: FullJid,
    config: Config,
    /// Session ids, HTTP source paths, candidate passwords and IQ ids: the
    /// OS RNG in production ([`SessionManager::new`]).
    rng: SecretRng,
    id_prefix: String,
    next_iq: u64,
    next_handle: u64,
    sessions: BTreeMap<SessionHandle, Session>,
    index: HashMap<Key, SessionHandle>,
    pending: BTreeMap<String, PendingIq>,
    transmits: VecDeque<IqOut>,
    events: VecDeque<SessionEvent>,
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

impl SessionManager {
    /// A manager whose randomness (session ids, paths, IQ ids) is read from
    /// the operating system's RNG on every draw.
    pub fn new(local_jid: FullJid, config: Config) -> Self {
        Self::with_secret_rng(local_jid, config, SecretRng::Os)
    }

    /// As [`SessionManager::new`] with a seeded generator: deterministic,
    /// for tests and simulations only (production uses `new`).
    pub fn with_rng(local_jid: FullJid, config: Config, rng: StdRng) -> Self {
        Self::with_secret_rng(local_jid, config, SecretRng::Seeded(Box::new(rng)))
    }

    fn with_secret_rng(local_jid: FullJid, config: Config, mut rng: SecretRng) -> Self {
        let id_prefix = format!("{:08x}", rng.random::<u32>());
        SessionManager {
            local: local_jid,
            config,
            rng,
            id_prefix,
            next_iq: 1,
            next_handle: 1,
            sessions: BTreeMap::new(),
            index: HashMap::new(),
            pending: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Our JID.
    pub fn local_jid(&self) -> &FullJid {
        &self.local
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Handles of the live sessions, oldest first.
    pub fn handles(&self) -> Vec<SessionHandle> {
        self.sessions.keys().copied().collect()
    }

    /// A snapshot of a live session.
    pub fn info(&self, handle: SessionHandle) -> Option<SessionInfo> {
        let s = self.sessions.get(&handle)?;
        Some(SessionInfo {
            role: s.role,
            peer: s.peer.clone(),
            sid: s.sid.clone(),
            initiator: s.initiator.clone(),
            dialect: s.dialect,
            manifest: s.manifest.clone(),
            source_path: s.source_path.clone(),
            preview_path: s.preview_path.clone(),
            accepted: !matches!(s.state, State::Pending),
            channels: s.channels.clone(),
            local_extension: s.local_extension.clone(),
            remote_extension: s.remote_extension.clone(),
        })
    }

    /// Next IQ to send.
    pub fn poll_transmit(&mut self) -> Option<IqOut> {
        self.transmits.pop_front()
    }

    /// Next event for the user.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Earliest deadline, if any timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sessions = self.sessions.values().filter_map(|s| s.timer.map(|t| t.0));
        let iqs = self.pending.values().map(|p| p.deadline);
        sessions.chain(iqs).min()
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Some(p) = self.pending.remove(&id) {
                debug!(id, action = %p.action, "session IQ got no reply");
                self.iq_failed(now, p, Failure::NoReply);
            }
        }
        let due: Vec<SessionHandle> = self
            .sessions
            .values()
            .filter(|s| s.timer.is_some_and(|t| t.0 <= now))
            .map(|s| s.handle)
            .collect();
        for h in due {
            let Some(s) = self.sessions.remove(&h) else {
                continue;
            };
            let Some((_, kind)) = s.timer else {
                self.sessions.insert(h, s);
                continue;
            };
            let reason = match kind {
                TimerKind::Accept => TerminateReason::Timeout(TimeoutKind::NoAccept),
                TimerKind::Decision => TerminateReason::Timeout(TimeoutKind::NoDecision),
                TimerKind::Transport => TerminateReason::Timeout(TimeoutKind::NoTransport),
                TimerKind::Linger => TerminateReason::Completed,
            };
            debug!(handle = %h, ?kind, "session timer ran out");
            self.end(now, s, reason, true);
        }
    }

    // -----------------------------------------------------------------------
    // commands

    /// Sender: offers `manifest` to `to` (a full JID that advertised
    /// share-v1). Picks a random decimal u32 session id and random
    /// `/temporary/<32 hex>/` source and preview paths.
    pub fn initiate(
        &mut self,
        now: Instant,
        to: FullJid,
        manifest: Manifest,
    ) -> Result<SessionHandle, CommandError> {
        self.initiate_with(now, to, manifest, None)
    }

    /// As [`SessionManager::initiate`], adding gshare's `<secure>`
    /// extension to the description when `extension` is `Some` (classic
    /// peers skip it, see [`super::extension`]). With `None` the initiate is
    /// byte for byte the classic one. `extension.digests` must be empty or
    /// name only existing manifest indexes; it is padded with `None` to one
    /// entry per item.
    pub fn initiate_with(
        &mut self,
        now: Instant,
        to: FullJid,
        manifest: Manifest,
        extension: Option<Extension>,
    ) -> Result<SessionHandle, CommandError> {
        if self.sessions.len() >= self.config.max_sessions {
            return Err(CommandError::TooManySessions);
        }
        if manifest.items.is_empty() {
            return Err(CommandError::InvalidManifest("no items"));
        }
        if manifest.items.len() > MAX_MANIFEST_ITEMS {
            return Err(CommandError::InvalidManifest("too many items"));
        }
        if manifest
            .items
            .iter()
            .any(|i| i.name.is_empty() || i.name.len() > MAX_NAME_BYTES)
        {
            return Err(CommandError::InvalidManifest("empty or too long name"));
        }
        let mut extension = extension;
        if let Some(ext) = &mut extension {
            if ext.digests.len() > manifest.items.len() {
                return Err(CommandError::InvalidManifest(
                    "digests for items that do not exist",
                ));
            }
            if ext.digests.iter().any(Option::is_some) {
                ext.digests.resize(manifest.items.len(), None);
            } else {
                ext.digests.clear();
            }
        }
        let peer = Jid::from(to);
        let initiator = Jid::from(self.local.clone());
        let sid = loop {
            let sid = self.rng.random::<u32>().to_string();
            if !self
                .index
                .contains_key(&(peer.clone(), sid.clone(), initiator.clone()))
            {
                break sid;
            }
        };
        let source_path = self.temporary_path();
        let preview_path = self.temporary_path();
        let handle = self.new_handle();
        let s = Session {
            handle,
            role: Role::Sender,
            sid,
            initiator,
            peer,
            state: State::Pending,
            dialect: Dialect::Modern,
            transport_accepted: false,
            manifest,
            source_path,
            preview_path: Some(preview_path),
            channels: Vec::new(),
            next_channel: 1,
            remote_candidates: Vec::new(),
            sent_candidates: Vec::new(),
            timer: Some((now + self.config.accept_timeout, TimerKind::Accept)),
            local_extension: extension,
            remote_extension: None,
        };
        let body = SessionBody::Initiate {
            description: ShareDescription {
                manifest: s.manifest.clone(),
                supports_http: true,
                source_path: Some(s.source_path.clone()),
                preview_path: s.preview_path.clone(),
                extension: s.local_extension.clone(),
            },
            p2p_transport: true,
        };
        self.send_set(now, &s, body);
        debug!(%handle, sid = s.sid, peer = %s.peer, "initiate sent");
        self.insert(s);
        Ok(handle)
    }

    /// Receiver: accepts an offer, sending the LJ04 form
    /// (`<manifest/>` + `<protocol><http/></protocol>`, §A.5).
    pub fn accept(&mut self, now: Instant, handle: SessionHandle) -> Result<(), CommandError> {
        self.accept_with(now, handle, None)
    }

    /// As [`SessionManager::accept`], adding gshare's `<secure>` extension
    /// to the answer when `extension` is `Some` (its `digests` are dropped:
    /// only the sender announces them). With `None` the accept is byte for
    /// byte the classic LJ04 form.
    pub fn accept_with(
        &mut self,
        now: Instant,
        handle: SessionHandle,
        extension: Option<Extension>,
    ) -> Result<(), CommandError> {
        let mut s = self.take(handle)?;
        if s.role != Role::Receiver || s.state != State::Pending {
            self.insert(s);
            return Err(CommandError::WrongState);
        }
        let extension = extension.map(|e| Extension {
            digests: Vec::new(),
            ..e
        });
        let body = SessionBody::Accept {
            description: ShareDescription {
                extension: extension.clone(),
                ..ShareDescription::accept_answer()
            },
            p2p_transport: false,
        };
        s.local_extension = extension;
        self.send_set(now, &s, body);
        s.state = State::Active { completed: false };
        s.timer = None;
        s.arm_transport_timer(now, self.config.session_timeout);
        self.insert(s);
        Ok(())
    }

    /// Receiver: declines an offer with `reject` (no `terminate` follows,
    /// §A.6). Ends the session.
    pub fn reject(&mut self, now: Instant, handle: SessionHandle) -> Result<(), CommandError> {
        let s = self.take(handle)?;
        if s.role != Role::Receiver || s.state != State::Pending {
            self.insert(s);
            return Err(CommandError::WrongState);
        }
        self.send_set(now, &s, SessionBody::Reject);
        self.end(now, s, TerminateReason::LocalReject, false);
        Ok(())
    }

    /// Either role, any state: sends `terminate` and ends the session.
    pub fn terminate(&mut self, now: Instant, handle: SessionHandle) -> Result<(), CommandError> {
        let s = self.take(handle)?;
        self.end(now, s, TerminateReason::LocalTerminate, true);
        Ok(())
    }

    /// Opens a transport channel `private-N` (N from 1) and announces it
    /// with `info <channel>` before any candidate on it (§A.8). Normally the
    /// receiver's job; allowed for both roles once accepted. Re-arms the
    /// transport timer if it is not running.
    pub fn open_channel(
        &mut self,
        now: Instant,
        handle: SessionHandle,
    ) -> Result<String, CommandError> {
        let mut s = self.take(handle)?;
        if !matches!(s.state, State::Active { completed: false }) {
            self.insert(s);
            return Err(CommandError::WrongState);
        }
        if s.channels.len() >= MAX_CHANNELS_PER_SESSION {
            self.insert(s);
            return Err(CommandError::TooManyChannels);
        }
        let name = loop {
            let name = format!("private-{}", s.next_channel);
            s.next_channel += 1;
            if !s.channels.contains(&name) {
                break name;
            }
        };
        self.send_set(
            now,
            &s,
            SessionBody::Info {
                items: vec![InfoItem::Channel { name: name.clone() }],
            },
        );
        s.channels.push(name.clone());
        s.arm_transport_timer(now, self.config.session_timeout);
        self.insert(s);
        Ok(name)
    }

    /// Sends local candidates for a known channel: `transport-info`, or
    /// `candidates` in the legacy dialect; at most
    /// [`super::stanza::MAX_CANDIDATES_PER_MESSAGE`] per message. Each
    /// candidate's `name` is set to `channel`; an empty password is replaced
    /// by a random one (gabble wants it non-empty, nobody checks it).
    pub fn send_candidates(
        &mut self,
        now: Instant,
        handle: SessionHandle,
        channel: &str,
        candidates: Vec<Candidate>,
    ) -> Result<(), CommandError> {
        let mut s = self.take(handle)?;
        if s.state == State::Closing {
            self.insert(s);
            return Err(CommandError::WrongState);
        }
        if !s.channels.iter().any(|c| c == channel) {
            self.insert(s);
            return Err(CommandError::UnknownChannel(channel.to_owned()));
        }
        let mut candidates = candidates;
        for c in &mut candidates {
            c.name = channel.to_owned();
            if c.password.is_empty() {
                c.password = self.random_base64(16);
            }
        }
        for chunk in candidates.chunks(super::stanza::MAX_CANDIDATES_PER_MESSAGE) {
            let body = candidates_body(s.dialect, chunk.to_vec());
            self.send_set(now, &s, body);
        }
        let room = self
            .config
            .max_candidates_per_session
            .saturating_sub(s.sent_candidates.len());
        s.sent_candidates.extend(candidates.into_iter().take(room));
        self.insert(s);
        Ok(())
    }

    /// Receiver: every item is fetched. Sends `info <complete/>`; once it is
    /// acknowledged sends `terminate` and ends the session with
    /// [`TerminateReason::Completed`] (keep the stream up until then,
    /// §D.3a).
    pub fn complete(&mut self, now: Instant, handle: SessionHandle) -> Result<(), CommandError> {
        let mut s = self.take(handle)?;
        if s.role != Role::Receiver || !matches!(s.state, State::Active { .. }) {
            self.insert(s);
            return Err(CommandError::WrongState);
        }
        self.send_set(
            now,
            &s,
            SessionBody::Info {
                items: vec![InfoItem::Complete],
            },
        );
        s.state = State::Closing;
        s.timer = None;
        self.insert(s);
        Ok(())
    }

    /// The transport of this session works: stops the no-transport timer.
    /// Opening another channel later re-arms it.
    pub fn transport_connected(&mut self, handle: SessionHandle) -> Result<(), CommandError> {
        let s = self
            .sessions
            .get_mut(&handle)
            .ok_or(CommandError::UnknownSession)?;
        if s.timer.is_some_and(|t| t.1 == TimerKind::Transport) {
            s.timer = None;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------
    // input

    /// Feeds one incoming IQ. Returns true if this layer consumed it: every
    /// `set` whose child is a `<session>` in the session namespace (it is
    /// always answered, with a result or an error), and results/errors to
    /// our own session IQs. Anything else is left to the caller.
    pub fn handle_iq(&mut self, now: Instant, iq: IqIn) -> bool {
        let IqIn { from, id, payload } = iq;
        match payload {
            IqPayload::Set(el) => self.handle_set(now, from, id, &el),
            IqPayload::Get(_) => false,
            IqPayload::Result(_) => self.handle_reply(now, &from, &id, None),
            IqPayload::Error { error, .. } => self.handle_reply(now, &from, &id, Some(error)),
        }
    }

    fn handle_reply(
        &mut self,
        now: Instant,
        from: &Jid,
        id: &str,
        error: Option<ReceivedError>,
    ) -> bool {
        match self.pending.get(id) {
            Some(p) if &p.peer == from => {}
            _ => return false,
        }
        let Some(p) = self.pending.remove(id) else {
            return false;
        };
        match error {
            None => self.iq_succeeded(now, p),
            Some(e) => {
                debug!(id, action = %p.action, condition = %e.condition, "session IQ failed");
                self.iq_failed(now, p, Failure::Error(e));
            }
        }
        true
    }

    fn iq_succeeded(&mut self, now: Instant, p: PendingIq) {
        if !p.is_complete {
            return;
        }
        let Ok(s) = self.take(p.handle) else {
            return;
        };
        if s.state == State::Closing {
            self.end(now, s, TerminateReason::Completed, true);
        } else {
            self.insert(s);
        }
    }

    fn iq_failed(&mut self, now: Instant, p: PendingIq, failure: Failure) {
        let Ok(mut s) = self.take(p.handle) else {
            return;
        };
        if p.action.is_transport_message() {
            // Ignored (LJ04 OnFailedSend), except that unknown-channel-name
            // tears that channel down (OnTransportError).
            if let Failure::Error(e) = &failure {
                let gone = e
                    .extra
                    .as_ref()
                    .filter(|x| x.is("unknown-channel-name", NS_P2P))
                    .and_then(|x| x.attr("name"));
                if let Some(name) = gone
                    && let Some(pos) = s.channels.iter().position(|c| c == name)
                {
                    let name = s.channels.remove(pos);
                    self.events.push_back(SessionEvent::ChannelGone {
                        handle: s.handle,
                        name,
                    });
                }
            }
            self.insert(s);
            return;
        }
        let reason = match failure {
            Failure::Error(e) => {
                if matches!(e.error_type, ErrorType::Continue | ErrorType::Wait) {
                    if p.is_complete && s.state == State::Closing {
                        self.end(now, s, TerminateReason::Completed, true);
                    } else {
                        self.insert(s);
                    }
                    return;
                }
                TerminateReason::PeerError {
                    action: p.action,
                    error_type: e.error_type,
                    condition: e.condition,
                    text: e.text,
                }
            }
            Failure::NoReply => TerminateReason::Timeout(TimeoutKind::NoReply(p.action)),
        };
        // Make sure the session is not ended twice by a later timer.
        s.timer = None;
        self.end(now, s, reason, true);
    }

    fn handle_set(&mut self, now: Instant, from: Jid, id: String, el: &Element) -> bool {
        if !el.is("session", NS_SESSION) {
            return false;
        }
        let header = match SessionHeader::try_from(el) {
            Ok(h) => h,
            Err(e) => {
                debug!(%from, error = %e, "malformed session envelope");
                self.reply_error(
                    &from,
                    id,
                    el,
                    ErrorType::Modify,
                    e.condition(),
                    &e.to_string(),
                    None,
                );
                return true;
            }
        };
        let key = (from.clone(), header.id.clone(), header.initiator.clone());
        let Some(handle) = self.index.get(&key).copied() else {
            if header.action() == Some(Action::Initiate) {
                self.handle_initiate(now, from, id, el, header);
            } else {
                debug!(%from, sid = header.id, "message for an unknown session");
                self.reply_error(
                    &from,
                    id,
                    el,
                    ErrorType::Modify,
                    Condition::BadRequest,
                    "unknown session",
                    None,
                );
            }
            return true;
        };
        let Some(action) = header.action() else {
            self.reply_error(
                &from,
                id,
                el,
                ErrorType::Modify,
                Condition::BadRequest,
                "unknown session message type",
                None,
            );
            return true;
        };
        let Ok(s) = self.take(handle) else {
            return true;
        };
        if !s.allows(action) {
            debug!(%handle, %action, state = ?s.state, "message not allowed in current state");
            self.insert(s);
            self.reply_error(
                &from,
                id,
                el,
                ErrorType::Modify,
                Condition::NotAllowed,
                "message not allowed in current state",
                None,
            );
            return true;
        }
        let body = match SessionBody::parse(action, el) {
            Ok(b) => b,
            Err(e) => {
                debug!(%handle, %action, error = %e, "bad session payload");
                self.insert(s);
                self.reply_error(
                    &from,
                    id,
                    el,
                    ErrorType::Modify,
                    e.condition(),
                    &e.to_string(),
                    None,
                );
                return true;
            }
        };
        self.dispatch(now, s, from, id, el, body);
        true
    }

    fn handle_initiate(
        &mut self,
        now: Instant,
        from: Jid,
        id: String,
        el: &Element,
        header: SessionHeader,
    ) {
        let refuse = |this: &mut Self, et, cond, text: &str| {
            this.reply_error(&from, id.clone(), el, et, cond, text, None);
        };
        if header.initiator.to_bare() != from.to_bare() {
            return refuse(
                self,
                ErrorType::Modify,
                Condition::BadRequest,
                "initiator does not match sender",
            );
        }
        if self.sessions.len() >= self.config.max_sessions {
            return refuse(
                self,
                ErrorType::Cancel,
                Condition::ServiceUnavailable,
                "too many sessions",
            );
        }
        let pending_offers = self
            .sessions
            .values()
            .filter(|s| s.role == Role::Receiver && s.state == State::Pending)
            .count();
        if pending_offers >= self.config.max_pending_offers {
            return refuse(
                self,
                ErrorType::Cancel,
                Condition::ServiceUnavailable,
                "too many pending offers",
            );
        }
        let (description, p2p_transport) = match SessionBody::parse(Action::Initiate, el) {
            Ok(SessionBody::Initiate {
                description,
                p2p_transport,
            }) => (description, p2p_transport),
            Ok(_) => return,
            Err(e) => {
                debug!(%from, error = %e, "initiate refused");
                return refuse(self, ErrorType::Modify, e.condition(), &e.to_string());
            }
        };
        let Some(source_path) = description.source_path else {
            return refuse(
                self,
                ErrorType::Modify,
                Condition::BadRequest,
                "missing source-path",
            );
        };
        let handle = self.new_handle();
        let s = Session {
            handle,
            role: Role::Receiver,
            sid: header.id,
            initiator: header.initiator,
            peer: from.clone(),
            state: State::Pending,
            dialect: if p2p_transport {
                Dialect::Modern
            } else {
                Dialect::Legacy
            },
            transport_accepted: p2p_transport,
            manifest: description.manifest,
            source_path,
            preview_path: description.preview_path,
            channels: Vec::new(),
            next_channel: 1,
            remote_candidates: Vec::new(),
            sent_candidates: Vec::new(),
            timer: Some((now + self.config.accept_timeout, TimerKind::Decision)),
            local_extension: None,
            remote_extension: description.extension,
        };
        self.ack(&from, id);
        if s.dialect == Dialect::Modern {
            // LJ04 ChooseTransport: answer the transport right away (§A.4).
            self.send_set(now, &s, SessionBody::TransportAccept);
        }
        debug!(%handle, sid = s.sid, %from, dialect = ?s.dialect, "offer received");
        self.events.push_back(SessionEvent::Offer {
            handle,
            from,
            manifest: s.manifest.clone(),
            source_path: s.source_path.clone(),
            preview_path: s.preview_path.clone(),
            extension: s.remote_extension.clone(),
        });
        self.insert(s);
    }

    fn dispatch(
        &mut self,
        now: Instant,
        mut s: Session,
        from: Jid,
        id: String,
        el: &Element,
        body: SessionBody,
    ) {
        match body {
            SessionBody::Initiate { .. } => {
                // Excluded by `allows`.
                self.insert(s);
            }
            SessionBody::Accept {
                p2p_transport,
                description,
            } => {
                self.ack(&from, id);
                if !s.transport_accepted && !p2p_transport {
                    // No transport-accept before the accept: an old client.
                    s.dialect = Dialect::Legacy;
                }
                s.state = State::Active { completed: false };
                s.timer = None;
                s.arm_transport_timer(now, self.config.session_timeout);
                s.remote_extension = description.extension;
                self.events.push_back(SessionEvent::Accepted {
                    handle: s.handle,
                    extension: s.remote_extension.clone(),
                });
                self.insert(s);
            }
            SessionBody::TransportAccept => {
                self.ack(&from, id);
                s.transport_accepted = true;
                self.insert(s);
            }
            SessionBody::Reject => {
                self.ack(&from, id);
                self.end(now, s, TerminateReason::Declined { reject: true }, false);
            }
            SessionBody::Redirect => {
                self.ack(&from, id);
                self.end(now, s, TerminateReason::Redirected, true);
            }
            SessionBody::Terminate { reasons } => {
                self.ack(&from, id);
                let reason = match (s.role, s.state) {
                    (Role::Sender, State::Pending) => TerminateReason::Declined { reject: false },
                    (_, State::Active { completed: true }) | (_, State::Closing) => {
                        TerminateReason::Completed
                    }
                    _ => TerminateReason::PeerTerminated { reasons },
                };
                self.end(now, s, reason, false);
            }
            SessionBody::Info { items } => {
                let new_channels = items
                    .iter()
                    .filter_map(|i| match i {
                        InfoItem::Channel { name } if !s.channels.contains(name) => Some(name),
                        _ => None,
                    })
                    .count();
                if s.channels.len() + new_channels > MAX_CHANNELS_PER_SESSION {
                    self.insert(s);
                    self.reply_error(
                        &from,
                        id,
                        el,
                        ErrorType::Wait,
                        Condition::ResourceConstraint,
                        "too many channels",
                        None,
                    );
                    return;
                }
                self.ack(&from, id);
                for item in items {
                    match item {
                        InfoItem::Channel { name } => {
                            if s.channels.contains(&name) {
                                continue;
                            }
                            s.channels.push(name.clone());
                            if matches!(s.state, State::Active { completed: false }) {
                                s.arm_transport_timer(now, self.config.session_timeout);
                            }
                            self.events.push_back(SessionEvent::ChannelRequested {
                                handle: s.handle,
                                name,
                            });
                        }
                        InfoItem::Complete => {
                            if s.role == Role::Sender
                                && s.state == (State::Active { completed: false })
                            {
                                s.state = State::Active { completed: true };
                                s.timer =
                                    Some((now + self.config.session_timeout, TimerKind::Linger));
                                self.events
                                    .push_back(SessionEvent::Complete { handle: s.handle });
                            } else {
                                debug!(handle = %s.handle, "unexpected <complete/> ignored");
                            }
                        }
                    }
                }
                self.insert(s);
            }
            SessionBody::TransportInfo { candidates } | SessionBody::Candidates { candidates } => {
                let legacy = el.attr("type") == Some(Action::Candidates.as_str());
                self.on_candidates(now, s, from, id, el, candidates, legacy);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_candidates(
        &mut self,
        now: Instant,
        mut s: Session,
        from: Jid,
        id: String,
        el: &Element,
        candidates: Vec<Candidate>,
        legacy: bool,
    ) {
        if let Some(unknown) = candidates.iter().find(|c| !s.channels.contains(&c.name)) {
            let name = unknown.name.clone();
            debug!(handle = %s.handle, channel = name, "candidate for an unknown channel");
            self.insert(s);
            self.reply_error(
                &from,
                id,
                el,
                ErrorType::Modify,
                Condition::BadRequest,
                &format!("channel named in candidate does not exist: {name}"),
                Some(unknown_channel_name_element(&name)),
            );
            return;
        }
        let mut fresh: Vec<Candidate> = Vec::new();
        for c in candidates {
            let dup = s
                .remote_candidates
                .iter()
                .chain(fresh.iter())
                .any(|k| k.is_equivalent(&c));
            if !dup {
                fresh.push(c);
            }
        }
        if s.remote_candidates.len() + fresh.len() > self.config.max_candidates_per_session {
            self.insert(s);
            self.reply_error(
                &from,
                id,
                el,
                ErrorType::Wait,
                Condition::ResourceConstraint,
                "too many candidates",
                None,
            );
            return;
        }
        self.ack(&from, id);
        if legacy && s.dialect == Dialect::Modern {
            // gabble on_transport_info: downgrade and repeat ours as
            // `candidates` (§A.9).
            debug!(handle = %s.handle, "peer uses legacy candidates; downgrading");
            s.dialect = Dialect::Legacy;
            s.transport_accepted = true;
            let ours = s.sent_candidates.clone();
            for chunk in ours.chunks(super::stanza::MAX_CANDIDATES_PER_MESSAGE) {
                self.send_set(now, &s, candidates_body(Dialect::Legacy, chunk.to_vec()));
            }
        }
        s.remote_candidates.extend(fresh.iter().cloned());
        let mut by_channel: Vec<(String, Vec<Candidate>)> = Vec::new();
        for c in fresh {
            match by_channel.iter_mut().find(|(n, _)| *n == c.name) {
                Some((_, v)) => v.push(c),
                None => by_channel.push((c.name.clone(), vec![c])),
            }
        }
        for (channel, candidates) in by_channel {
            self.events.push_back(SessionEvent::RemoteCandidates {
                handle: s.handle,
                channel,
                candidates,
            });
        }
        self.insert(s);
    }

    // -----------------------------------------------------------------------
    // plumbing

    fn new_handle(&mut self) -> SessionHandle {
        let h = SessionHandle(self.next_handle);
        self.next_handle += 1;
        h
    }

    fn take(&mut self, handle: SessionHandle) -> Result<Session, CommandError> {
        self.sessions
            .remove(&handle)
            .ok_or(CommandError::UnknownSession)
    }

    fn insert(&mut self, s: Session) {
        self.index.insert(s.key(), s.handle);
        self.sessions.insert(s.handle, s);
    }

    /// Ends a session that has been taken out of the map.
    fn end(&mut self, now: Instant, s: Session, reason: TerminateReason, send_terminate: bool) {
        if send_terminate {
            self.send_set(now, &s, SessionBody::Terminate { reasons: vec![] });
        }
        debug!(handle = %s.handle, ?reason, "session ended");
        self.index.remove(&s.key());
        self.events.push_back(SessionEvent::Terminated {
            handle: s.handle,
            reason,
        });
    }

    fn send_set(&mut self, now: Instant, s: &Session, body: SessionBody) {
        let is_complete =
            matches!(&body, SessionBody::Info { items } if items.contains(&InfoItem::Complete));
        let msg = SessionMessage {
            id: s.sid.clone(),
            initiator: s.initiator.clone(),
            body,
        };
        let id = format!("gs{}-{}", self.id_prefix, self.next_iq);
        self.next_iq += 1;
        if self.pending.len() >= MAX_PENDING_IQS {
            let oldest = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.deadline)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                debug!(id = oldest, "pending IQ table full; forgetting the oldest");
                self.pending.remove(&oldest);
            }
        }
        self.pending.insert(
            id.clone(),
            PendingIq {
                handle: s.handle,
                peer: s.peer.clone(),
                action: msg.action(),
                is_complete,
                deadline: now + self.config.iq_timeout,
            },
        );
        self.transmits.push_back(IqOut {
            to: s.peer.clone(),
            id,
            kind: IqOutKind::Set(Element::from(&msg)),
        });
    }

    fn ack(&mut self, to: &Jid, id: String) {
        self.transmits.push_back(IqOut {
            to: to.clone(),
            id,
            kind: IqOutKind::Result,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn reply_error(
        &mut self,
        to: &Jid,
        id: String,
        offending: &Element,
        error_type: ErrorType,
        condition: Condition,
        text: &str,
        extra: Option<Element>,
    ) {
        self.transmits.push_back(IqOut {
            to: to.clone(),
            id,
            kind: IqOutKind::Error(ErrorReply {
                error_type,
                condition,
                text: Some(text.to_owned()),
                extra,
                copied: Some(bounded_copy(offending)),
            }),
        });
    }

    fn temporary_path(&mut self) -> String {
        let bytes: [u8; 16] = self.rng.random();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("/temporary/{hex}/")
    }

    fn random_base64(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| {
                let i = self.rng.random_range(0..BASE64_ALPHABET.len());
                char::from(BASE64_ALPHABET.get(i).copied().unwrap_or(b'A'))
            })
            .collect()
    }
}

fn candidates_body(dialect: Dialect, candidates: Vec<Candidate>) -> SessionBody {
    match dialect {
        Dialect::Modern => SessionBody::TransportInfo { candidates },
        Dialect::Legacy => SessionBody::Candidates { candidates },
    }
}

#[cfg(test)]
mod rng_tests {
    use super::*;
    use rand::SeedableRng;

    /// Session ids and HTTP source paths come from the OS RNG in production;
    /// only `with_rng` (tests, simulations) is seeded.
    #[test]
    fn production_manager_uses_the_os_rng() {
        let jid: FullJid = "a@b.c/r".parse().unwrap();
        let mut m = SessionManager::new(jid.clone(), Config::default());
        assert!(m.rng.is_os());
        assert_ne!(m.temporary_path(), m.temporary_path());
        let seeded = SessionManager::with_rng(jid, Config::default(), StdRng::seed_from_u64(1));
        assert!(!seeded.rng.is_os());
    }
}
