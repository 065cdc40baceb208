//! The sans-IO XEP-0166 session machine for file transfer, both roles.
//!
//! One [`JingleSession`] per `sid`. Input: [`JingleSession::handle_iq`]
//! (IQ sets whose child is a `<jingle>` with our sid from our peer, and the
//! results/errors of our own requests), [`JingleSession::handle_timeout`],
//! and the commands (`accept`, `decline`, `transport_info`, …). Output:
//! [`JingleSession::poll_transmit`], [`JingleSession::poll_event`],
//! [`JingleSession::poll_timeout`]. No sockets, no clock.
//!
//! The machine knows the session and content lifecycle; which transport is
//! used (S5B candidate choice, IBB fallback) is decided above it by
//! `crate::bytestreams` from the [`JingleEvent`]s, and fed back through the
//! transport commands.
//!
//! Peer quirks (Libervia 0.9, see tests/jingle_libervia.rs): Libervia's responder may send its
//! `transport-info` (`candidate-used` / `candidate-error`) *before* its
//! `session-accept`; the initiator acknowledges and buffers those (at most
//! [`MAX_EARLY_INFOS`]) and replays them as events right after
//! [`JingleEvent::Accepted`]. Every session ends with exactly one
//! [`JingleEvent::Terminated`].

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use jid::{FullJid, Jid};
use minidom::Element;
use tracing::debug;

use super::codec::{
    Action, CodecError, Content, Creator, FileDesc, Jingle, NS_JINGLE, NS_JINGLE_ERRORS, Reason,
    ReasonKind, SessionInfo, Transport,
};
use crate::session::envelope::{
    Condition, ErrorReply, ErrorType, IqIn, IqOut, IqOutKind, IqPayload, bounded_copy,
};

/// How long we wait for the result of one of our IQ sets (the server
/// answers for an offline peer at once; a live peer within a second).
pub const DEFAULT_IQ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an offer waits for a decision: the peer's `session-accept`
/// (initiator) or the local user's (responder). Libervia waits 120 s for
/// a JMI `proceed`; an offer is given as long.
pub const DEFAULT_OFFER_TIMEOUT: Duration = Duration::from_secs(120);
/// Most `transport-info`s buffered before `session-accept` (Libervia sends
/// one per content; more is a misbehaving peer: refused with
/// `resource-constraint`).
pub const MAX_EARLY_INFOS: usize = 16;
/// Most of our own IQ sets awaiting an answer at once (one per content and
/// step is plenty; a command beyond it fails).
pub const MAX_PENDING_IQS: usize = 64;

/// Timers.
#[derive(Debug, Clone)]
pub struct Config {
    /// See [`DEFAULT_IQ_TIMEOUT`].
    pub iq_timeout: Duration,
    /// See [`DEFAULT_OFFER_TIMEOUT`].
    pub offer_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            iq_timeout: DEFAULT_IQ_TIMEOUT,
            offer_timeout: DEFAULT_OFFER_TIMEOUT,
        }
    }
}

/// Our role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We sent `session-initiate`.
    Initiator,
    /// We received it.
    Responder,
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Initiator: offer sent, waiting for `session-accept`.
    Pending,
    /// Responder: offer received, waiting for the local decision.
    Offered,
    /// Accepted: transports and data.
    Active,
    /// Terminated (the event was emitted).
    Ended,
}

/// What the layer above learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JingleEvent {
    /// Responder: the peer offers these contents; call `accept` or `decline`.
    Offered {
        /// The offered contents (descriptions and transports).
        contents: Vec<Content>,
    },
    /// Initiator: the peer accepted (its transports inside).
    Accepted {
        /// The accepted contents.
        contents: Vec<Content>,
    },
    /// A `transport-info` for one content.
    TransportInfo {
        /// Content name.
        content: String,
        /// The transport element.
        transport: Transport,
    },
    /// The peer proposes another transport for a content.
    TransportReplace {
        /// Content name.
        content: String,
        /// The proposed transport.
        transport: Transport,
    },
    /// The peer accepted our replacement.
    TransportAccepted {
        /// Content name.
        content: String,
        /// Its transport (IBB parameters may be lowered).
        transport: Transport,
    },
    /// The peer refused our replacement.
    TransportRejected {
        /// Content name.
        content: String,
    },
    /// XEP-0234 checksum for a content.
    Checksum {
        /// Content name.
        content: String,
        /// The file element with the hashes.
        file: FileDesc,
    },
    /// XEP-0234 `received` for a content.
    Received {
        /// Content name.
        content: String,
    },
    /// The peer removed a content (declined one file of several).
    ContentRemoved {
        /// Content name.
        content: String,
    },
    /// The session is over (exactly once).
    Terminated {
        /// Why.
        reason: Reason,
        /// True if the peer ended it.
        by_peer: bool,
    },
}

/// A command that does not fit the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Wrong state for this command.
    #[error("the Jingle session is not in a state that allows this ({0})")]
    WrongState(&'static str),
    /// No content by that name.
    #[error("the Jingle session has no content named {0}")]
    NoSuchContent(String),
    /// Too many requests outstanding.
    #[error("too many Jingle requests are waiting for an answer")]
    TooManyPending,
}

/// An IQ error reply for a `<jingle>` we do not know the session of
/// (XEP-0166 §7.1: `item-not-found` + `<unknown-session/>`).
pub fn unknown_session_reply(iq: &IqIn) -> Option<IqOut> {
    match &iq.payload {
        IqPayload::Set(el) if el.is("jingle", NS_JINGLE) => Some(error_out(
            iq,
            ErrorType::Cancel,
            Condition::ItemNotFound,
            Some(Element::bare("unknown-session", NS_JINGLE_ERRORS)),
            el,
        )),
        _ => None,
    }
}

fn error_out(
    iq: &IqIn,
    error_type: ErrorType,
    condition: Condition,
    extra: Option<Element>,
    el: &Element,
) -> IqOut {
    IqOut {
        to: iq.from.clone(),
        id: iq.id.clone(),
        kind: IqOutKind::Error(ErrorReply {
            error_type,
            condition,
            text: None,
            extra,
            copied: Some(bounded_copy(el)),
        }),
    }
}

/// The `sid` of a Jingle IQ set, for routing to the right session.
pub fn jingle_sid(iq: &IqIn) -> Option<&str> {
    match &iq.payload {
        IqPayload::Set(el) if el.is("jingle", NS_JINGLE) => el.attr("sid"),
        _ => None,
    }
}

/// One Jingle session.
#[derive(Debug)]
pub struct JingleSession {
    config: Config,
    role: Role,
    state: State,
    local: FullJid,
    peer: FullJid,
    sid: String,
    /// The contents as negotiated (offer, then transports as accepted).
    contents: Vec<Content>,
    /// Initiator only: `transport-info`s received before `session-accept`
    /// (bounded by [`MAX_EARLY_INFOS`]).
    early: Vec<Jingle>,
    /// Our IQ sets awaiting an answer: id → (deadline, action); bounded by
    /// [`MAX_PENDING_IQS`].
    pending: BTreeMap<String, (Instant, Action)>,
    /// Offer deadline while `Pending` / `Offered`.
    offer_deadline: Option<Instant>,
    next_id: u64,
    transmit: VecDeque<IqOut>,
    events: VecDeque<JingleEvent>,
}

impl JingleSession {
    /// Initiator: offer `contents` to `peer` under `sid` (a fresh random
    /// id from the caller). Queues `session-initiate`.
    pub fn initiate(
        now: Instant,
        config: Config,
        local: FullJid,
        peer: FullJid,
        sid: String,
        contents: Vec<Content>,
    ) -> Self {
        let mut s = Self::new(
            config,
            Role::Initiator,
            State::Pending,
            local,
            peer,
            sid,
            contents,
        );
        s.offer_deadline = Some(now + s.config.offer_timeout);
        let mut j = s.jingle(Action::SessionInitiate);
        j.initiator = Some(Jid::from(s.local.clone()));
        j.contents = s.contents.clone();
        // The pending table is empty: this cannot fail.
        let _ = s.send(now, j);
        s
    }

    /// Responder: a `session-initiate` arrived. On success the session has
    /// queued the acknowledgement and a [`JingleEvent::Offered`]; on error,
    /// the IQ error reply to send (no session is created).
    pub fn from_initiate(
        now: Instant,
        config: Config,
        local: FullJid,
        iq: &IqIn,
    ) -> Result<Self, Box<IqOut>> {
        let IqPayload::Set(el) = &iq.payload else {
            // Only IQ sets are routed here; anything else is refused.
            return Err(Box::new(IqOut {
                to: iq.from.clone(),
                id: iq.id.clone(),
                kind: IqOutKind::Error(ErrorReply {
                    error_type: ErrorType::Cancel,
                    condition: Condition::BadRequest,
                    text: None,
                    extra: None,
                    copied: None,
                }),
            }));
        };
        let bad = |c: Condition, extra: Option<Element>| {
            Box::new(error_out(iq, ErrorType::Cancel, c, extra, el))
        };
        let j = Jingle::parse(el).map_err(|e| {
            debug!("refusing Jingle offer: {e}");
            bad(Condition::BadRequest, None)
        })?;
        let Ok(peer) = FullJid::try_from(iq.from.clone()) else {
            return Err(bad(Condition::BadRequest, None));
        };
        if j.action != Action::SessionInitiate || j.contents.is_empty() {
            return Err(bad(Condition::BadRequest, None));
        }
        let mut s = Self::new(
            config,
            Role::Responder,
            State::Offered,
            local,
            peer,
            j.sid.clone(),
            j.contents.clone(),
        );
        s.offer_deadline = Some(now + s.config.offer_timeout);
        s.ack(iq);
        s.events.push_back(JingleEvent::Offered {
            contents: j.contents,
        });
        Ok(s)
    }

    fn new(
        config: Config,
        role: Role,
        state: State,
        local: FullJid,
        peer: FullJid,
        sid: String,
        contents: Vec<Content>,
    ) -> Self {
        JingleSession {
            config,
            role,
            state,
            local,
            peer,
            sid,
            contents,
            early: Vec::new(),
            pending: BTreeMap::new(),
            offer_deadline: None,
            next_id: 0,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Session id.
    pub fn sid(&self) -> &str {
        &self.sid
    }
    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }
    /// The peer.
    pub fn peer(&self) -> &FullJid {
        &self.peer
    }
    /// The session initiator's full JID.
    pub fn initiator(&self) -> &FullJid {
        match self.role {
            Role::Initiator => &self.local,
            Role::Responder => &self.peer,
        }
    }
    /// The session responder's full JID.
    pub fn responder(&self) -> &FullJid {
        match self.role {
            Role::Initiator => &self.peer,
            Role::Responder => &self.local,
        }
    }
    /// The contents as currently negotiated.
    pub fn contents(&self) -> &[Content] {
        &self.contents
    }

    /// True when no IQ and no event is queued.
    pub fn is_drained(&self) -> bool {
        self.transmit.is_empty() && self.events.is_empty()
    }

    /// Next IQ to send.
    pub fn poll_transmit(&mut self) -> Option<IqOut> {
        self.transmit.pop_front()
    }
    /// Next event.
    pub fn poll_event(&mut self) -> Option<JingleEvent> {
        self.events.pop_front()
    }
    /// Earliest deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Ended {
            return None;
        }
        self.pending
            .values()
            .map(|(d, _)| *d)
            .chain(self.offer_deadline)
            .min()
    }

    /// Fires due timers: an unanswered IQ or an undecided offer ends the
    /// session with `timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Ended {
            return;
        }
        let expired = self
            .pending
            .values()
            .any(|(d, a)| *d <= now && *a != Action::SessionTerminate);
        let offer_expired = self.offer_deadline.is_some_and(|d| d <= now);
        self.pending.retain(|_, (d, _)| *d > now);
        if expired || offer_expired {
            let text = if offer_expired {
                "the offer was not answered in time"
            } else {
                "the peer did not answer a request in time"
            };
            self.end_local(
                now,
                Reason {
                    kind: ReasonKind::Timeout,
                    text: Some(text.into()),
                },
            );
        }
    }

    /// Handles an IQ. Returns false if it is not for this session (the
    /// caller routes it elsewhere or answers with
    /// [`unknown_session_reply`]).
    pub fn handle_iq(&mut self, now: Instant, iq: IqIn) -> bool {
        if iq.from != self.peer {
            return false;
        }
        match &iq.payload {
            IqPayload::Result(_) | IqPayload::Error { .. } => {
                let Some((_, action)) = self.pending.remove(&iq.id) else {
                    return false;
                };
                if let IqPayload::Error { error, .. } = &iq.payload
                    && self.state != State::Ended
                    && !matches!(action, Action::SessionTerminate | Action::SessionInfo)
                {
                    debug!("peer refused our {action}: {}", error.condition.as_str());
                    self.end_local(
                        now,
                        Reason {
                            kind: ReasonKind::GeneralError,
                            text: Some(format!(
                                "the peer refused our {action} ({})",
                                error.condition.as_str()
                            )),
                        },
                    );
                }
                true
            }
            IqPayload::Set(el) => {
                if jingle_sid(&iq) != Some(self.sid.as_str()) {
                    return false;
                }
                let el = el.clone();
                self.handle_set(now, &iq, &el);
                true
            }
            IqPayload::Get(_) => false,
        }
    }

    fn handle_set(&mut self, now: Instant, iq: &IqIn, el: &Element) {
        let j = match Jingle::parse(el) {
            Ok(j) => j,
            Err(CodecError::UnknownAction(a)) => {
                debug!("unknown Jingle action {a}");
                self.transmit.push_back(error_out(
                    iq,
                    ErrorType::Cancel,
                    Condition::FeatureNotImplemented,
                    None,
                    el,
                ));
                return;
            }
            Err(e) => {
                debug!("bad Jingle request: {e}");
                self.transmit.push_back(error_out(
                    iq,
                    ErrorType::Cancel,
                    Condition::BadRequest,
                    None,
                    el,
                ));
                return;
            }
        };
        let out_of_order = |s: &mut Self| {
            s.transmit.push_back(error_out(
                iq,
                ErrorType::Cancel,
                Condition::Other("unexpected-request".into()),
                Some(Element::bare("out-of-order", NS_JINGLE_ERRORS)),
                el,
            ));
        };
        if self.state == State::Ended {
            self.transmit.push_back(error_out(
                iq,
                ErrorType::Cancel,
                Condition::ItemNotFound,
                Some(Element::bare("unknown-session", NS_JINGLE_ERRORS)),
                el,
            ));
            return;
        }
        match (j.action, self.state) {
            (Action::SessionTerminate, _) => {
                self.ack(iq);
                self.state = State::Ended;
                self.events.push_back(JingleEvent::Terminated {
                    reason: j.reason.unwrap_or(Reason::new(ReasonKind::Success)),
                    by_peer: true,
                });
            }
            (Action::SessionAccept, State::Pending) if self.role == Role::Initiator => {
                self.ack(iq);
                self.state = State::Active;
                self.offer_deadline = None;
                for c in &j.contents {
                    if let Some(mine) = self.contents.iter_mut().find(|m| m.name == c.name)
                        && c.transport.is_some()
                    {
                        mine.transport = c.transport.clone();
                    }
                }
                self.events.push_back(JingleEvent::Accepted {
                    contents: j.contents,
                });
                for early in std::mem::take(&mut self.early) {
                    self.info_events(early);
                }
            }
            (Action::TransportInfo, State::Pending) => {
                if self.early.len() >= MAX_EARLY_INFOS {
                    self.transmit.push_back(error_out(
                        iq,
                        ErrorType::Wait,
                        Condition::ResourceConstraint,
                        None,
                        el,
                    ));
                } else {
                    self.ack(iq);
                    self.early.push(j);
                }
            }
            (Action::TransportInfo, State::Active | State::Offered) => {
                self.ack(iq);
                self.info_events(j);
            }
            (
                Action::TransportReplace | Action::TransportAccept | Action::TransportReject,
                State::Active,
            ) => {
                if let Some(bad) = j
                    .contents
                    .iter()
                    .find(|c| !self.contents.iter().any(|m| m.name == c.name))
                {
                    debug!("transport change for unknown content {}", bad.name);
                    self.transmit.push_back(error_out(
                        iq,
                        ErrorType::Cancel,
                        Condition::ItemNotFound,
                        None,
                        el,
                    ));
                    return;
                }
                self.ack(iq);
                for c in j.contents {
                    let ev = match (j.action, c.transport) {
                        (Action::TransportReplace, Some(t)) => JingleEvent::TransportReplace {
                            content: c.name,
                            transport: t,
                        },
                        (Action::TransportAccept, Some(t)) => {
                            if let Some(m) = self.contents.iter_mut().find(|m| m.name == c.name) {
                                m.transport = Some(t.clone());
                            }
                            JingleEvent::TransportAccepted {
                                content: c.name,
                                transport: t,
                            }
                        }
                        (Action::TransportReject, _) => {
                            JingleEvent::TransportRejected { content: c.name }
                        }
                        _ => continue,
                    };
                    self.events.push_back(ev);
                }
            }
            (Action::SessionInfo, State::Active | State::Pending | State::Offered) => {
                match j.info {
                    Some(SessionInfo::Checksum { name, file, .. }) => {
                        self.ack(iq);
                        self.events.push_back(JingleEvent::Checksum {
                            content: name,
                            file,
                        });
                    }
                    Some(SessionInfo::Received { name, .. }) => {
                        self.ack(iq);
                        self.events
                            .push_back(JingleEvent::Received { content: name });
                    }
                    Some(SessionInfo::Unsupported) => self.transmit.push_back(error_out(
                        iq,
                        ErrorType::Modify,
                        Condition::FeatureNotImplemented,
                        Some(Element::bare("unsupported-info", NS_JINGLE_ERRORS)),
                        el,
                    )),
                    Some(SessionInfo::Ping) | None => self.ack(iq),
                }
            }
            (Action::ContentRemove, State::Active | State::Pending | State::Offered) => {
                self.ack(iq);
                for c in j.contents {
                    self.contents.retain(|m| m.name != c.name);
                    self.events
                        .push_back(JingleEvent::ContentRemoved { content: c.name });
                }
                if self.contents.is_empty() {
                    // XEP-0166 §7.2.9: removing the last content ends the session.
                    self.end_local(now, Reason::new(ReasonKind::Cancel));
                }
            }
            (
                Action::ContentAdd
                | Action::ContentAccept
                | Action::ContentReject
                | Action::ContentModify
                | Action::DescriptionInfo
                | Action::SecurityInfo,
                _,
            ) => self.transmit.push_back(error_out(
                iq,
                ErrorType::Cancel,
                Condition::FeatureNotImplemented,
                None,
                el,
            )),
            _ => out_of_order(self),
        }
    }

    fn info_events(&mut self, j: Jingle) {
        for c in j.contents {
            if let Some(t) = c.transport {
                self.events.push_back(JingleEvent::TransportInfo {
                    content: c.name,
                    transport: t,
                });
            }
        }
    }

    /// Responder: accept the offer, with our transport per content (by
    /// name; contents not listed are removed first with `content-remove`
    /// would be a later step — here every offered content must be listed).
    pub fn accept(
        &mut self,
        now: Instant,
        transports: Vec<(String, Transport)>,
    ) -> Result<(), CommandError> {
        if self.role != Role::Responder || self.state != State::Offered {
            return Err(CommandError::WrongState("accept"));
        }
        for (name, _) in &transports {
            if !self.contents.iter().any(|c| &c.name == name) {
                return Err(CommandError::NoSuchContent(name.clone()));
            }
        }
        let mut j = self.jingle(Action::SessionAccept);
        j.responder = Some(Jid::from(self.local.clone()));
        for (name, t) in transports {
            if let Some(c) = self.contents.iter().find(|c| c.name == name) {
                let mut c = c.clone();
                c.transport = Some(t);
                j.contents.push(c);
            }
        }
        self.send(now, j)?;
        self.state = State::Active;
        self.offer_deadline = None;
        Ok(())
    }

    /// Responder: decline the offer (`session-terminate` / `decline`).
    pub fn decline(&mut self, now: Instant) -> Result<(), CommandError> {
        if self.state != State::Offered {
            return Err(CommandError::WrongState("decline"));
        }
        self.end_local(now, Reason::new(ReasonKind::Decline));
        Ok(())
    }

    /// Ends the session with `reason` (success, cancel, failed-transport…).
    pub fn terminate(&mut self, now: Instant, reason: Reason) -> Result<(), CommandError> {
        if self.state == State::Ended {
            return Err(CommandError::WrongState("terminate"));
        }
        self.end_local(now, reason);
        Ok(())
    }

    /// Sends a `transport-info` for one content.
    pub fn transport_info(
        &mut self,
        now: Instant,
        content: &str,
        transport: Transport,
    ) -> Result<(), CommandError> {
        if matches!(self.state, State::Ended) {
            return Err(CommandError::WrongState("transport-info"));
        }
        self.content_action(now, Action::TransportInfo, content, Some(transport))
    }

    /// Proposes another transport (`transport-replace`).
    pub fn transport_replace(
        &mut self,
        now: Instant,
        content: &str,
        transport: Transport,
    ) -> Result<(), CommandError> {
        self.require_active("transport-replace")?;
        self.content_action(now, Action::TransportReplace, content, Some(transport))
    }

    /// Accepts the peer's replacement (`transport-accept`).
    pub fn transport_accept(
        &mut self,
        now: Instant,
        content: &str,
        transport: Transport,
    ) -> Result<(), CommandError> {
        self.require_active("transport-accept")?;
        if let Some(m) = self.contents.iter_mut().find(|m| m.name == content) {
            m.transport = Some(transport.clone());
        }
        self.content_action(now, Action::TransportAccept, content, Some(transport))
    }

    /// Refuses the peer's replacement (`transport-reject`).
    pub fn transport_reject(&mut self, now: Instant, content: &str) -> Result<(), CommandError> {
        self.require_active("transport-reject")?;
        let t = self
            .contents
            .iter()
            .find(|m| m.name == content)
            .and_then(|m| m.transport.clone());
        self.content_action(now, Action::TransportReject, content, t)
    }

    /// Sends the XEP-0234 checksum of a content.
    pub fn checksum(
        &mut self,
        now: Instant,
        content: &str,
        file: FileDesc,
    ) -> Result<(), CommandError> {
        self.require_active("checksum")?;
        let creator = self.creator_of(content)?;
        let mut j = self.jingle(Action::SessionInfo);
        j.info = Some(SessionInfo::Checksum {
            creator,
            name: content.to_owned(),
            file,
        });
        self.send(now, j)
    }

    /// Sends XEP-0234 `received` for a content.
    pub fn received(&mut self, now: Instant, content: &str) -> Result<(), CommandError> {
        self.require_active("received")?;
        let creator = self.creator_of(content)?;
        let mut j = self.jingle(Action::SessionInfo);
        j.info = Some(SessionInfo::Received {
            creator,
            name: content.to_owned(),
        });
        self.send(now, j)
    }

    fn require_active(&self, what: &'static str) -> Result<(), CommandError> {
        if self.state == State::Active {
            Ok(())
        } else {
            Err(CommandError::WrongState(what))
        }
    }

    fn creator_of(&self, content: &str) -> Result<Creator, CommandError> {
        self.contents
            .iter()
            .find(|c| c.name == content)
            .map(|c| c.creator)
            .ok_or_else(|| CommandError::NoSuchContent(content.to_owned()))
    }

    fn content_action(
        &mut self,
        now: Instant,
        action: Action,
        content: &str,
        transport: Option<Transport>,
    ) -> Result<(), CommandError> {
        let c = self
            .contents
            .iter()
            .find(|c| c.name == content)
            .ok_or_else(|| CommandError::NoSuchContent(content.to_owned()))?;
        let mut c = c.clone();
        c.description = None;
        c.transport = transport;
        let mut j = self.jingle(action);
        j.contents.push(c);
        self.send(now, j)
    }

    fn jingle(&self, action: Action) -> Jingle {
        Jingle::new(action, &self.sid)
    }

    fn send(&mut self, now: Instant, j: Jingle) -> Result<(), CommandError> {
        if self.pending.len() >= MAX_PENDING_IQS {
            return Err(CommandError::TooManyPending);
        }
        self.next_id += 1;
        let id = format!("jingle-{}-{}", self.sid, self.next_id);
        self.pending
            .insert(id.clone(), (now + self.config.iq_timeout, j.action));
        self.transmit.push_back(IqOut {
            to: Jid::from(self.peer.clone()),
            id,
            kind: IqOutKind::Set(j.to_element()),
        });
        Ok(())
    }

    fn ack(&mut self, iq: &IqIn) {
        self.transmit.push_back(IqOut {
            to: iq.from.clone(),
            id: iq.id.clone(),
            kind: IqOutKind::Result,
        });
    }

    fn end_local(&mut self, now: Instant, reason: Reason) {
        if self.state == State::Ended {
            return;
        }
        let mut j = self.jingle(Action::SessionTerminate);
        j.reason = Some(reason.clone());
        // Earlier requests stay in `pending` so that their late answers are
        // still recognised; no timer runs once the session has ended.
        if self.pending.len() >= MAX_PENDING_IQS {
            self.pending.clear();
        }
        let _ = self.send(now, j);
        self.state = State::Ended;
        self.offer_deadline = None;
        self.events.push_back(JingleEvent::Terminated {
            reason,
            by_peer: false,
        });
    }
}
