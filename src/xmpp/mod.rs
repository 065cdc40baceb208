//! XMPP: login, presence with the Google share caps, resource resolution and
//! an IQ layer, on top of tokio-xmpp.
//!
//! One task owns the [`StanzaStream`]; the rest of gshare talks to it through
//! a cloneable [`Xmpp`] handle (commands in) and an [`Incoming`] channel
//! (events out). The task answers what every client must answer by itself
//! (disco#info for the share caps, ping, `service-unavailable` for unknown
//! IQs, presence back to whoever sent us directed presence) and forwards IQs
//! of the namespaces the caller registered (the session layer).
//!
//! tokio-xmpp retries a failed login forever and never says why
//! (docs/crates.md §1.5), so the login is driven here through
//! [`StanzaStream::new`] with our own connector closure, which reports the
//! first failure and stops.

mod connector;
pub mod extdisco;
mod presence;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use minidom::Element;
use rand::Rng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::stanzastream::{Connection, Event, StanzaStream, StreamEvent};
use tokio_xmpp::xmlstream::{StreamHeader, Timeouts};
use tokio_xmpp::{Stanza, connect::ServerConnector};
use tracing::{debug, info, trace, warn};

pub use connector::StartTlsConnector;
pub(crate) use connector::tls_config;
pub use presence::{
    CAPS_NODE, FEATURE_SHARE, MAX_ACCOUNTS, MAX_ANSWERED, MAX_RESOURCES_PER_ACCOUNT, NS_CAPS,
    PresenceBook, ResourceInfo, ResourceTable, caps_element,
};

/// Errors of the XMPP layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum XmppError {
    /// The account settings cannot work (bad JID, unreadable CA file, …).
    #[error("{0}")]
    Config(String),
    /// The server refused our credentials.
    #[error("login as {jid} failed: {reason}")]
    Auth { jid: String, reason: String },
    /// TCP, TLS or stream-level failure while connecting.
    #[error("cannot connect to the XMPP server for {jid}: {reason}")]
    Connect { jid: String, reason: String },
    /// No answer in time.
    #[error("{0}")]
    Timeout(String),
    /// The connection was lost after login.
    #[error("XMPP connection lost: {0}")]
    Disconnected(String),
    /// The peer answered an IQ with an error.
    #[error("{0}")]
    IqError(IqRefusal),
}

/// An IQ answered with an error, in the names the XMPP RFCs use, so callers
/// can tell conditions apart without reading the words for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IqRefusal {
    /// The condition's XML name (`service-unavailable`).
    pub condition: String,
    /// The error type's XML name (`cancel`).
    pub kind: String,
    /// The answer's text, if it had one.
    pub text: Option<String>,
}

impl IqRefusal {
    /// The refusal a parsed stanza error carries.
    pub fn new(e: &StanzaError) -> Self {
        IqRefusal {
            condition: xml_name(&format!("{:?}", e.defined_condition)),
            kind: xml_name(&format!("{:?}", e.type_)),
            text: e.texts.values().next().filter(|t| !t.is_empty()).cloned(),
        }
    }
}

impl std::fmt::Display for IqRefusal {
    /// `service-unavailable (cancel)`, then `: text` if there is one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.condition, self.kind)?;
        match &self.text {
            Some(t) => write!(f, ": {t}"),
            None => Ok(()),
        }
    }
}

/// Who logs in, and where.
#[derive(Debug, Clone)]
pub struct Account {
    pub jid: BareJid,
    pub password: String,
    pub resource: Option<String>,
    /// `HOST:PORT` instead of the SRV lookup.
    pub server: Option<String>,
    pub ca_file: Option<PathBuf>,
}

/// How we present ourselves.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Advertise `ext="share-v1"` and the share disco feature.
    pub share: bool,
    pub priority: i8,
    /// IQ payload namespaces forwarded to [`Incoming::Iq`] (gets and sets).
    pub forward_namespaces: Vec<&'static str>,
    /// Answer directed presence only from these bare JIDs (None: anyone).
    pub presence_allow: Option<Vec<BareJid>>,
    /// How long the login may take.
    pub login_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            share: true,
            priority: 0,
            forward_namespaces: Vec::new(),
            presence_allow: None,
            login_timeout: Duration::from_secs(20),
        }
    }
}

/// What the XMPP task hands up.
#[derive(Debug)]
pub enum Incoming {
    /// An IQ get/set in a forwarded namespace, or a result/error for an IQ
    /// this layer did not send through [`Xmpp::iq`].
    Iq(Box<Iq>),
    /// Any presence (the resource table is kept up to date already).
    Presence(Box<Presence>),
    /// Any message (file announcements travel in messages: the upload
    /// method, `src/upload`).
    Message(Box<Message>),
    /// The connection is gone and will not come back.
    Disconnected(XmppError),
}

/// An IQ request.
#[derive(Debug, Clone)]
pub enum IqRequest {
    Get(Element),
    Set(Element),
}

type IqWaiter = oneshot::Sender<Result<Option<Element>, XmppError>>;

enum Command {
    Send(Box<Stanza>, Option<oneshot::Sender<()>>),
    Iq {
        to: Option<Jid>,
        request: IqRequest,
        reply: oneshot::Sender<Result<Option<Element>, XmppError>>,
    },
    Close(oneshot::Sender<()>),
}

/// Handle to the connected account.
#[derive(Clone)]
pub struct Xmpp {
    jid: FullJid,
    share: bool,
    priority: i8,
    commands: mpsc::Sender<Command>,
    resources: watch::Receiver<ResourceTable>,
}

impl Xmpp {
    /// Logs in, binds a resource, sends available presence with the caps and
    /// starts the task. Fails with the server's reason instead of retrying.
    pub async fn connect(
        account: &Account,
        options: ConnectOptions,
    ) -> Result<(Xmpp, mpsc::Receiver<Incoming>), XmppError> {
        let jid_text = account.jid.to_string();
        if account.jid.node().is_none() {
            return Err(XmppError::Config(format!(
                "{jid_text} is not an account JID (expected user@domain)"
            )));
        }
        let identity: Jid = match &account.resource {
            Some(r) => Jid::from(
                account
                    .jid
                    .with_resource_str(r)
                    .map_err(|e| XmppError::Config(format!("resource {r:?} is not valid: {e}")))?,
            ),
            None => Jid::from(account.jid.clone()),
        };
        let connector = StartTlsConnector::new(
            account.jid.domain().as_str(),
            account.server.as_deref(),
            account.ca_file.as_deref(),
        )?;
        let (outcome_tx, mut outcome_rx) = mpsc::unbounded_channel::<Result<(), XmppError>>();
        let password = account.password.clone();
        let reconnector = Box::new(
            move |_preferred: Option<String>, slot: oneshot::Sender<Connection>| {
                let connector = connector.clone();
                let identity = identity.clone();
                let password = password.clone();
                let outcome_tx = outcome_tx.clone();
                tokio::spawn(async move {
                    match login(&connector, &identity, &password).await {
                        Ok(conn) => {
                            let _ = slot.send(conn);
                            let _ = outcome_tx.send(Ok(()));
                        }
                        Err(e) => {
                            let _ = outcome_tx.send(Err(e));
                            // Keep the slot: dropping it makes the stream
                            // worker panic. We report and never retry.
                            let _slot = slot;
                            std::future::pending::<()>().await;
                        }
                    }
                });
            },
        );
        let mut stream = StanzaStream::new(reconnector, 64);

        // Wait for the first stream reset (= bound) or a login failure.
        let deadline = tokio::time::sleep(options.login_timeout);
        tokio::pin!(deadline);
        let bound = loop {
            tokio::select! {
                outcome = outcome_rx.recv() => {
                    if let Some(Err(e)) = outcome { return Err(e); }
                }
                ev = stream.next() => match ev {
                    Some(Event::Stream(StreamEvent::Reset { bound_jid, .. })) => break bound_jid,
                    Some(other) => debug!(?other, "event before login completed"),
                    None => return Err(XmppError::Connect {
                        jid: jid_text, reason: "the stream closed during login".into() }),
                },
                _ = &mut deadline => return Err(XmppError::Timeout(format!(
                    "login as {jid_text} did not complete within {:?}", options.login_timeout))),
            }
        };
        let jid = match bound.try_into_full() {
            Ok(full) => full,
            Err(bare) => {
                return Err(XmppError::Connect {
                    jid: bare.to_string(),
                    reason: "the server bound no resource".into(),
                });
            }
        };
        info!(%jid, "logged in");

        let (commands, command_rx) = mpsc::channel(64);
        let (incoming_tx, incoming_rx) = mpsc::channel(256);
        let (resources_tx, resources) = watch::channel(ResourceTable::default());
        let (share, priority) = (options.share, options.priority);
        let presence_allow = options
            .presence_allow
            .as_ref()
            .map(|list| list.iter().cloned().collect());
        let mut task = Task {
            jid: jid.clone(),
            options,
            stream,
            incoming: incoming_tx,
            resources: resources_tx,
            pending_iqs: HashMap::new(),
            presence_book: PresenceBook::default(),
            presence_allow,
            outcome_rx,
            id_prefix: random_id(),
            next_id: 0,
        };
        task.send(presence::initial_presence(
            task.options.share,
            task.options.priority,
        ))
        .await;
        tokio::spawn(task.run(command_rx));
        Ok((
            Xmpp {
                jid,
                share,
                priority,
                commands,
                resources,
            },
            incoming_rx,
        ))
    }

    /// Our bound full JID.
    pub fn jid(&self) -> &FullJid {
        &self.jid
    }

    /// Sends a stanza; resolves once it is handed to the stream.
    pub async fn send(&self, stanza: impl Into<Stanza>) -> Result<(), XmppError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Send(Box::new(stanza.into()), Some(tx)))
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())
    }

    /// Sends an IQ and waits for its result payload (or error) for at most
    /// `timeout`.
    pub async fn iq(
        &self,
        to: Option<Jid>,
        request: IqRequest,
        timeout: Duration,
    ) -> Result<Option<Element>, XmppError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Iq {
                to: to.clone(),
                request,
                reply,
            })
            .await
            .map_err(|_| closed())?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(closed()),
            Err(_) => Err(XmppError::Timeout(format!(
                "no answer from {} within {timeout:?}",
                to.map(|j| j.to_string())
                    .unwrap_or_else(|| "the server".into())
            ))),
        }
    }

    /// Sends directed available presence (with our caps) to `to` and a probe,
    /// so that a contact who has not subscribed to us still learns we are
    /// here and answers with its own presence.
    pub async fn announce_to(&self, to: &BareJid) -> Result<(), XmppError> {
        let caps = presence::initial_presence(self.share, self.priority);
        self.send(caps.with_to(to.clone())).await?;
        self.send(Presence::probe().with_to(to.clone())).await
    }

    /// Waits until `bare` has an available resource that can receive files
    /// and returns the best one (highest priority), or `None` after `wait`.
    pub async fn resolve_share_resource(&self, bare: &BareJid, wait: Duration) -> Option<FullJid> {
        let mut rx = self.resources.clone();
        let pick = |table: &ResourceTable| table.best(bare);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(j) = pick(&rx.borrow_and_update()) {
                return Some(j);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return pick(&rx.borrow()),
            }
        }
    }

    /// Is `jid` currently available (any presence seen and not withdrawn)?
    pub fn is_available(&self, jid: &FullJid) -> bool {
        self.resources.borrow().contains(jid)
    }

    /// Sends unavailable presence and closes the stream.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Close(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), rx).await;
        }
    }
}

fn closed() -> XmppError {
    XmppError::Disconnected("the XMPP task has stopped".into())
}

/// IQ id prefix, from the operating system's RNG.
fn random_id() -> String {
    let n: u64 = crate::rng::SecretRng::Os.random();
    format!("{n:016x}")
}

/// Connect, authenticate (SCRAM-SHA-256, SCRAM-SHA-1, then PLAIN — only ever
/// over TLS, as the connector refuses plaintext) and restart the stream.
async fn login(
    connector: &StartTlsConnector,
    identity: &Jid,
    password: &str,
) -> Result<Connection, XmppError> {
    let jid_text = identity.to_bare().to_string();
    let connect_err = |reason: String| XmppError::Connect {
        jid: jid_text.clone(),
        reason,
    };
    let timeouts = Timeouts::tight();
    let (pending, channel_binding) = connector
        .connect(identity, tokio_xmpp::parsers::ns::JABBER_CLIENT, timeouts)
        .await
        .map_err(|e| {
            let detail = connector
                .last_error
                .lock()
                .ok()
                .and_then(|s| s.clone())
                .unwrap_or_else(|| e.to_string());
            connect_err(describe_connect_error(&detail))
        })?;
    let (features, stream) = pending
        .recv_features()
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let username = identity.node().map(|n| n.to_string()).unwrap_or_default();
    let creds = sasl::common::Credentials::default()
        .with_username(username)
        .with_password(password.to_string())
        .with_channel_binding(channel_binding);
    let stream = tokio_xmpp::client_login(stream, features.sasl_mechanisms.clone(), creds)
        .await
        .map_err(|e| match e {
            tokio_xmpp::Error::Auth(a) => XmppError::Auth {
                jid: jid_text.clone(),
                reason: match a {
                    tokio_xmpp::error::AuthError::Fail(c) => {
                        format!(
                            "the server said {} (wrong user name or password?)",
                            xml_name(&format!("{c:?}"))
                        )
                    }
                    other => other.to_string(),
                },
            },
            other => connect_err(other.to_string()),
        })?;
    let stream = stream
        .send_header(StreamHeader {
            to: Some(std::borrow::Cow::Owned(identity.domain().to_string())),
            from: None,
            id: None,
        })
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let (features, stream) = stream
        .recv_features()
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    Ok(Connection {
        stream: stream.box_stream(),
        features,
        identity: identity.clone(),
    })
}

fn describe_connect_error(detail: &str) -> String {
    if detail.contains("invalid peer certificate") || detail.contains("certificate") {
        format!(
            "{detail}: the server's TLS certificate is not trusted \
             (pass --ca-file with its certificate or CA to trust it)"
        )
    } else {
        detail.to_string()
    }
}

struct Task {
    jid: FullJid,
    options: ConnectOptions,
    stream: StanzaStream,
    incoming: mpsc::Sender<Incoming>,
    resources: watch::Sender<ResourceTable>,
    /// IQs sent through [`Xmpp::iq`]: id → (addressee, waiter).
    pending_iqs: HashMap<String, (Option<Jid>, IqWaiter)>,
    /// Whom we already answered with directed presence (bounded, see
    /// [`MAX_ANSWERED`]); the resource table itself is in `resources`.
    presence_book: PresenceBook,
    /// `options.presence_allow` as a set (the user's list, not peer-driven).
    presence_allow: Option<HashSet<BareJid>>,
    outcome_rx: mpsc::UnboundedReceiver<Result<(), XmppError>>,
    id_prefix: String,
    next_id: u64,
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            tokio::select! {
                ev = self.stream.next() => match ev {
                    None => {
                        self.disconnected(XmppError::Disconnected("the stream ended".into())).await;
                        return;
                    }
                    Some(Event::Stream(StreamEvent::Reset { bound_jid, .. })) => {
                        warn!(%bound_jid, "XMPP stream was re-established; session state may be lost");
                        self.presence_book.reset();
                        let p = presence::initial_presence(self.options.share, self.options.priority);
                        self.send(p).await;
                    }
                    Some(Event::Stream(StreamEvent::Suspended)) => {
                        warn!("XMPP connection interrupted; reconnecting");
                    }
                    Some(Event::Stream(StreamEvent::Resumed)) => info!("XMPP connection resumed"),
                    Some(Event::Stanza(stanza)) => self.handle_stanza(stanza).await,
                },
                outcome = self.outcome_rx.recv() => {
                    if let Some(Err(e)) = outcome {
                        self.disconnected(XmppError::Disconnected(e.to_string())).await;
                        return;
                    }
                }
                cmd = commands.recv() => match cmd {
                    None => { self.shutdown().await; return; }
                    Some(Command::Send(stanza, done)) => {
                        self.send(*stanza).await;
                        if let Some(done) = done { let _ = done.send(()); }
                    }
                    Some(Command::Iq { to, request, reply }) => {
                        self.next_id += 1;
                        let id = format!("gs{}-{}", self.id_prefix, self.next_id);
                        let iq = match request {
                            IqRequest::Get(payload) => Iq::Get { from: None, to: to.clone(), id: id.clone(), payload },
                            IqRequest::Set(payload) => Iq::Set { from: None, to: to.clone(), id: id.clone(), payload },
                        };
                        self.pending_iqs.retain(|_, (_, s)| !s.is_closed());
                        self.pending_iqs.insert(id, (to, reply));
                        self.send(iq).await;
                    }
                    Some(Command::Close(done)) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                }
            }
        }
    }

    async fn shutdown(self) {
        let mut this = self;
        this.send(Presence::unavailable()).await;
        this.stream.close().await;
    }

    async fn disconnected(&mut self, error: XmppError) {
        warn!(%error, "XMPP disconnected");
        for (_, (_, reply)) in self.pending_iqs.drain() {
            let _ = reply.send(Err(error.clone()));
        }
        let _ = self.incoming.send(Incoming::Disconnected(error)).await;
    }

    async fn send(&mut self, stanza: impl Into<Stanza>) {
        let stanza = stanza.into();
        if tracing::enabled!(target: "gshare::xmpp::stanza", tracing::Level::TRACE) {
            trace!(target: "gshare::xmpp::stanza", "SEND {}", stanza_xml(&stanza));
        }
        self.stream.send(Box::new(stanza)).await;
    }

    async fn forward(&mut self, item: Incoming) {
        if self.incoming.send(item).await.is_err() {
            debug!("nobody listens to incoming XMPP stanzas any more");
        }
    }

    async fn handle_stanza(&mut self, stanza: Stanza) {
        if tracing::enabled!(target: "gshare::xmpp::stanza", tracing::Level::TRACE) {
            trace!(target: "gshare::xmpp::stanza", "RECV {}", stanza_xml(&stanza));
        }
        match stanza {
            Stanza::Iq(iq) => self.handle_iq(iq).await,
            Stanza::Presence(p) => self.handle_presence(p).await,
            Stanza::Message(m) => self.forward(Incoming::Message(Box::new(m))).await,
        }
    }

    async fn handle_presence(&mut self, p: Presence) {
        if p.from.is_none() {
            return;
        }
        let own = self.jid.to_bare();
        let allow = &self.presence_allow;
        let book = &mut self.presence_book;
        let mut answer = None;
        self.resources.send_if_modified(|table| {
            let (changed, to) = book.observe(
                table,
                &own,
                |bare| allow.as_ref().is_none_or(|set| set.contains(bare)),
                &p,
            );
            answer = to;
            changed
        });
        if let Some(to) = answer {
            let reply =
                presence::initial_presence(self.options.share, self.options.priority).with_to(to);
            self.send(reply).await;
        }
        self.forward(Incoming::Presence(Box::new(p))).await;
    }

    async fn handle_iq(&mut self, iq: Iq) {
        match iq {
            Iq::Result {
                ref id, ref from, ..
            }
            | Iq::Error {
                ref id, ref from, ..
            } if self.pending_iqs.contains_key(id.as_str()) => {
                let id = id.clone();
                let from = from.clone();
                let expected = self.pending_iqs.get(&id).and_then(|(to, _)| to.clone());
                if !self.response_from_matches(expected.as_ref(), from.as_ref()) {
                    debug!(?from, "ignoring IQ response from an unexpected sender");
                    return;
                }
                if let Some((_, reply)) = self.pending_iqs.remove(&id) {
                    let result = match iq {
                        Iq::Result { payload, .. } => Ok(payload),
                        Iq::Error { error, .. } => Err(XmppError::IqError(IqRefusal::new(&error))),
                        _ => return,
                    };
                    let _ = reply.send(result);
                }
            }
            Iq::Result { .. } | Iq::Error { .. } => self.forward(Incoming::Iq(Box::new(iq))).await,
            Iq::Get { ref payload, .. } | Iq::Set { ref payload, .. }
                if self
                    .options
                    .forward_namespaces
                    .contains(&payload.ns().as_str()) =>
            {
                self.forward(Incoming::Iq(Box::new(iq))).await
            }
            Iq::Get {
                from, id, payload, ..
            } => {
                let reply = match presence::answer_get(&payload, self.options.share) {
                    Some(answer) => Iq::Result {
                        from: None,
                        to: from,
                        id,
                        payload: answer,
                    },
                    None => service_unavailable(from, id, payload),
                };
                self.send(reply).await;
            }
            Iq::Set {
                from, id, payload, ..
            } => {
                let reply = service_unavailable(from, id, payload);
                self.send(reply).await;
            }
        }
    }

    fn response_from_matches(&self, expected: Option<&Jid>, from: Option<&Jid>) -> bool {
        match (expected, from) {
            (Some(e), Some(f)) => e == f,
            (Some(e), None) => {
                e.node() == self.jid.node()
                    && e.domain() == self.jid.domain()
                    && e.resource().is_none()
            }
            (None, None) => true,
            (None, Some(f)) => {
                f.to_bare() == self.jid.to_bare() || f.as_str() == self.jid.domain().as_str()
            }
        }
    }
}

/// Stanzas as XML text for `-vv`. SASL never passes through here (it is
/// negotiated below the stanza stream), so nothing needs censoring.
fn stanza_xml(stanza: &Stanza) -> String {
    let el = match stanza {
        Stanza::Iq(iq) => Element::from(iq.clone()),
        Stanza::Presence(p) => Element::from(p.clone()),
        Stanza::Message(m) => Element::from(m.clone()),
    };
    String::from(&el)
}

fn service_unavailable(to: Option<Jid>, id: String, payload: Element) -> Iq {
    Iq::Error {
        from: None,
        to,
        id,
        error: StanzaError::new(
            ErrorType::Cancel,
            DefinedCondition::ServiceUnavailable,
            "en",
            "",
        ),
        payload: Some(payload),
    }
}

/// The XML name of a parsed condition or type from its Rust variant name:
/// `ServiceUnavailable` → `service-unavailable` (a variant's fields, as in
/// `Gone { .. }`, are dropped). xmpp-parsers gives these enums no
/// `Display`, and users should see the names the XMPP RFCs use.
fn xml_name(variant: &str) -> String {
    let mut out = String::new();
    for c in variant.chars().take_while(|c| c.is_ascii_alphanumeric()) {
        if c.is_ascii_uppercase() {
            if !out.is_empty() {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanza_errors_read_with_their_xml_names() {
        let e = StanzaError::new(
            ErrorType::Cancel,
            DefinedCondition::ServiceUnavailable,
            "en",
            "",
        );
        assert_eq!(
            IqRefusal::new(&e).to_string(),
            "service-unavailable (cancel)"
        );
        let e = StanzaError::new(
            ErrorType::Auth,
            DefinedCondition::NotAuthorized,
            "en",
            "go away",
        );
        assert_eq!(
            IqRefusal::new(&e).to_string(),
            "not-authorized (auth): go away"
        );
        assert_eq!(xml_name("Gone { new_address: None }"), "gone");
    }
}
