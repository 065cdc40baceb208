//! One transport channel, start to finish: gather candidates, exchange
//! them through the session, find a working pair, open PseudoTCP over it and
//! hand the stream to a job (the HTTP server of [`super::serve`] or the HTTP
//! client of [`super::fetch`]). Every message a run sends back is tagged
//! with its session and run ([`ChannelTag`]); [`Channels`] admits only the
//! current runs' messages.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use minidom::Element;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::{CommonOptions, Exit, Failure};
use crate::config::Settings;
use crate::ice::{Candidate, GatherConfig, IceChannel, TurnServer};
use crate::pseudotcp::{self, DatagramIo, PseudoTcpStream};
use crate::secure::{self, Identity, Protection, Stream, TlsRole};
use crate::session::Extension;
use crate::session::SessionHandle;
use crate::session::extension::format_fingerprint;
use crate::xmpp::{IqRequest, Xmpp};

const NS_JINGLEINFO: &str = "google:jingleinfo";

/// How to build a channel.
#[derive(Debug, Clone)]
pub struct ChannelSpec {
    pub name: String,
    pub bind: Option<IpAddr>,
    pub stun: Vec<SocketAddr>,
    /// TURN servers for relay candidates: `--turn`, then the XMPP server's.
    pub turn: Vec<TurnServer>,
    /// How long finding a working pair and opening PseudoTCP may take.
    pub connect_timeout: Duration,
    /// `--advertise`: the one address announced instead of ours.
    pub advertise: Option<SocketAddr>,
    /// `--relay-only`: only relay candidates (needs a TURN server).
    pub relay_only: bool,
    /// `--classic-sender`: the classic Reno-family PseudoTCP sender instead
    /// of the model-based one.
    pub classic_sender: bool,
}

impl ChannelSpec {
    /// From the settings; STUN servers from `--stun`, or else from the
    /// server's `google:jingleinfo` answer when it gives one (§B.7).
    pub async fn new(
        settings: &Settings,
        common: &CommonOptions,
        xmpp: &Xmpp,
    ) -> Result<Self, Failure> {
        let mut stun = Vec::new();
        for s in &settings.stun {
            let addrs = tokio::net::lookup_host(s.as_str())
                .await
                .map_err(|e| Failure::new(Exit::Usage, format!("--stun {s}: {e}")))?;
            stun.extend(addrs.filter(|a| a.is_ipv4()).take(1));
        }
        if stun.is_empty() {
            stun = jingleinfo_stun(xmpp).await;
        }
        let mut turn = Vec::new();
        if let Some(t) = &settings.turn {
            let server = tokio::net::lookup_host(t.server.as_str())
                .await
                .ok()
                .and_then(|mut a| a.find(|a| a.is_ipv4()))
                .ok_or_else(|| {
                    Failure::new(Exit::Usage, format!("--turn {}: no IPv4 address", t.server))
                })?;
            turn.push(TurnServer {
                server,
                username: t.username.clone(),
                password: t.password.clone(),
            });
        }
        let (found_stun, found_turn) = extdisco_servers(xmpp).await;
        for s in found_stun {
            if !stun.contains(&s) {
                stun.push(s);
            }
        }
        for t in found_turn {
            if !turn.contains(&t) {
                turn.push(t);
            }
        }
        if common.relay_only && turn.is_empty() {
            return Err(Failure::new(
                Exit::Usage,
                "--relay-only needs a TURN server (--turn, or the XMPP server's)",
            ));
        }
        Ok(Self {
            name: String::new(),
            bind: settings.bind,
            stun,
            turn,
            connect_timeout: common.timeout,
            advertise: common.advertise,
            relay_only: common.relay_only,
            classic_sender: common.classic_sender,
        })
    }

    /// The same settings for channel `name`.
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }
}

/// Asks our server for STUN and TURN servers (XEP-0215, with TURN
/// credentials); an error or silence means none. Only UDP services with an
/// IPv4 address are kept.
async fn extdisco_servers(xmpp: &Xmpp) -> (Vec<SocketAddr>, Vec<TurnServer>) {
    use crate::xmpp::extdisco::{self, ServiceKind};
    let Ok(domain) = tokio_xmpp::parsers::jid::Jid::new(xmpp.jid().domain().as_str()) else {
        return (Vec::new(), Vec::new());
    };
    let services = match extdisco::discover(xmpp, domain, Duration::from_secs(3)).await {
        Ok(s) => s,
        Err(e) => {
            debug!(%e, "no external services from the server");
            return (Vec::new(), Vec::new());
        }
    };
    let (mut stun, mut turn) = (Vec::new(), Vec::new());
    for s in services.iter().filter(|s| s.is_udp()) {
        let Some(addr) = tokio::net::lookup_host(s.host_port())
            .await
            .ok()
            .and_then(|mut a| a.find(|a| a.is_ipv4()))
        else {
            continue;
        };
        match (&s.kind, &s.username, &s.password) {
            (ServiceKind::Stun, _, _) => stun.push(addr),
            (ServiceKind::Turn, Some(user), Some(pass)) => turn.push(TurnServer {
                server: addr,
                username: user.clone(),
                password: pass.clone(),
            }),
            _ => {}
        }
    }
    debug!(
        ?stun,
        turn = turn.len(),
        "external services from the server"
    );
    (stun, turn)
}

/// Asks our server for STUN servers; an error or silence means none.
async fn jingleinfo_stun(xmpp: &Xmpp) -> Vec<SocketAddr> {
    let query = Element::builder("query", NS_JINGLEINFO).build();
    let answer = match xmpp
        .iq(None, IqRequest::Get(query), Duration::from_secs(3))
        .await
    {
        Ok(Some(a)) => a,
        Ok(None) => return Vec::new(),
        Err(e) => {
            debug!(%e, "no google:jingleinfo from the server");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for stun in answer.children().filter(|c| c.name() == "stun") {
        for server in stun.children().filter(|c| c.name() == "server") {
            let (Some(host), Some(port)) = (server.attr("host"), server.attr("udp")) else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            if let Ok(mut addrs) = tokio::net::lookup_host((host, port)).await
                && let Some(a) = addrs.find(|a| a.is_ipv4())
            {
                out.push(a);
            }
        }
    }
    debug!(?out, "STUN servers from google:jingleinfo");
    out
}

/// Which run of a channel a message comes from: the session it serves and
/// a number no other channel run of this process shares. A late message
/// from an aborted run (its task may have queued it just before the abort)
/// carries an old tag and is dropped by [`Channels::admit`], so it can never
/// be applied to the next session or to a restarted channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelTag {
    pub session: SessionHandle,
    pub generation: u64,
}

/// What a channel task reports to the job's owner. `P` is the job's own
/// progress: [`crate::http::ServeEvent`] for the sender's serve job,
/// [`super::fetch::FetchEvent`] for the receiver's fetch job.
#[derive(Debug)]
pub struct ChannelMsg<P> {
    pub tag: ChannelTag,
    /// The channel's name in the session (`transport-info` needs it).
    pub name: String,
    pub event: ChannelEvent<P>,
}

/// One thing a channel run has to say.
#[derive(Debug)]
pub enum ChannelEvent<P> {
    /// Send these in a transport-info for this channel.
    LocalCandidates(Vec<Candidate>),
    /// A working pair was found and PseudoTCP is open.
    Connected(Link),
    /// The job's progress.
    Progress(P),
    /// The channel failed: a sentence for the user.
    Failed(String),
    /// The job ended normally.
    Finished,
}

/// What the channel learned, handed to the job together with the stream.
#[derive(Debug, Clone, Default)]
pub struct Link {
    /// The peer announced gshare's PseudoTCP option, so it also always
    /// sends `<complete/>` when it received everything.
    pub peer_is_gshare: bool,
    /// What the session negotiated beyond the classic protocol.
    pub negotiated: Negotiated,
}

/// The seam for the private extension (`urn:gshare:secure:1`,
/// docs/protocol.md §H.2, §H.3): the job state fills this from the session's
/// `Offer`/`Accepted` events and passes it to [`Channels::start`]; the serve
/// and fetch jobs read it to wrap the stream (TLS) and to check digests or
/// resume. A classic session negotiates nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// Plaintext, or TLS with the peer's certificate pinned: set up by the
    /// channel right after PseudoTCP connects and before the job runs, so
    /// the sender's HTTP server cannot answer before the handshake is done.
    pub protection: crate::secure::Protection,
}

impl Negotiated {
    /// Nothing beyond the classic protocol: plain HTTP on the stream.
    pub fn is_classic(&self) -> bool {
        *self == Self::default()
    }

    /// TLS when we have a certificate and the peer's extension carries a
    /// fingerprint (both ends are gshare with encryption on); plaintext
    /// otherwise.
    pub fn secure(
        identity: Option<&Arc<Identity>>,
        peer: Option<&Extension>,
        role: TlsRole,
    ) -> Self {
        let protection = match (identity, peer.and_then(|e| e.fingerprint)) {
            (Some(identity), Some(peer)) => Protection::Tls {
                identity: identity.clone(),
                peer,
                role,
            },
            _ => Protection::Plain,
        };
        Negotiated { protection }
    }

    /// The security fields of the `accepted` JSON event: `encrypted`, and
    /// when encrypted both fingerprints (XEP-0320 form) and the short code.
    pub fn security_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("encrypted".into(), self.protection.is_encrypted().into());
        if let Some((ours, theirs)) = self.protection.fingerprints() {
            m.insert("fingerprint".into(), format_fingerprint(&ours).into());
            m.insert(
                "peer_fingerprint".into(),
                format_fingerprint(&theirs).into(),
            );
        }
        if let Some(code) = self.protection.short_code() {
            m.insert("short_code".into(), code.into());
        }
        m
    }

    /// Logs both fingerprints and the code (shown with `-v`) and returns
    /// the words for the "accepted" line.
    pub fn describe_security(&self) -> String {
        match (self.protection.fingerprints(), self.protection.short_code()) {
            (Some((ours, theirs)), Some(code)) => {
                info!(
                    fingerprint = %format_fingerprint(&ours),
                    peer_fingerprint = %format_fingerprint(&theirs),
                    short_code = %code,
                    "encrypted (TLS 1.3, certificates pinned to the XMPP fingerprints)"
                );
                format!("encrypted; code to compare with the peer: {code}")
            }
            _ => "not encrypted".to_string(),
        }
    }
}

/// Sends the job's progress to the owner, tagged with the channel run.
pub struct Progress<P> {
    tag: ChannelTag,
    name: String,
    tx: mpsc::UnboundedSender<ChannelMsg<P>>,
}

impl<P> Progress<P> {
    /// Reports `p`; a gone owner is ignored (the job is being torn down).
    pub fn send(&self, p: P) {
        self.report(ChannelEvent::Progress(p));
    }

    fn report(&self, event: ChannelEvent<P>) {
        let _ = self.tx.send(ChannelMsg {
            tag: self.tag,
            name: self.name.clone(),
            event,
        });
    }
}

impl<P> Clone for Progress<P> {
    fn clone(&self) -> Self {
        Self {
            tag: self.tag,
            name: self.name.clone(),
            tx: self.tx.clone(),
        }
    }
}

/// The running channels of a job, by session and name.
///
/// Bound: at most one run per (session, channel name); starting a channel
/// of the same name aborts the old run. The sessions themselves are bounded
/// by the job (one for `send`, `--max-concurrent` for `receive`).
#[derive(Default)]
pub struct Channels {
    runs: HashMap<(SessionHandle, String), (u64, Handle)>,
    next_generation: u64,
}

impl Channels {
    /// Starts channel `spec.name` for `session`; the job gets the open
    /// stream: plaintext PseudoTCP for a classic peer, or that stream inside
    /// the TLS session `negotiated.protection` asked for (handshake done).
    pub fn start<P, F, Fut>(
        &mut self,
        session: SessionHandle,
        spec: ChannelSpec,
        negotiated: Negotiated,
        ctl: mpsc::UnboundedSender<ChannelMsg<P>>,
        job: F,
    ) -> ChannelTag
    where
        P: Send + 'static,
        F: FnOnce(Stream<PseudoTcpStream>, Link, Progress<P>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.next_generation += 1;
        let tag = ChannelTag {
            session,
            generation: self.next_generation,
        };
        let name = spec.name.clone();
        let handle = spawn(spec, tag, negotiated, ctl, job);
        self.insert(tag, name, handle);
        tag
    }

    fn insert(&mut self, tag: ChannelTag, name: String, handle: Handle) {
        if let Some((_, old)) = self
            .runs
            .insert((tag.session, name), (tag.generation, handle))
        {
            old.abort();
        }
    }

    /// Whether `msg` comes from a run that is still current. A `Failed` or
    /// `Finished` from the current run also ends that run here.
    pub fn admit<P>(&mut self, msg: &ChannelMsg<P>) -> bool {
        let key = (msg.tag.session, msg.name.clone());
        let current = self
            .runs
            .get(&key)
            .is_some_and(|(generation, _)| *generation == msg.tag.generation);
        if !current {
            debug!(channel = %msg.name, session = %msg.tag.session, "dropped a message from an ended channel run");
            return false;
        }
        if matches!(msg.event, ChannelEvent::Failed(_) | ChannelEvent::Finished) {
            self.runs.remove(&key);
        }
        true
    }

    /// Feeds the peer's candidates to channel `name` of `session`.
    pub fn add_remote(&self, session: SessionHandle, name: &str, candidates: Vec<Candidate>) {
        match self.runs.get(&(session, name.to_string())) {
            Some((_, h)) => h.add_remote(candidates),
            None => debug!(%name, "candidates for a channel we do not run"),
        }
    }

    /// Stops channel `name` of `session`.
    pub fn stop(&mut self, session: SessionHandle, name: &str) {
        if let Some((_, h)) = self.runs.remove(&(session, name.to_string())) {
            h.abort();
        }
    }

    /// Stops every channel of `session`.
    pub fn stop_session(&mut self, session: SessionHandle) {
        self.runs.retain(|(s, _), (_, h)| {
            if *s == session {
                h.abort();
                false
            } else {
                true
            }
        });
    }

    /// Whether `session` has a running channel.
    #[cfg(test)]
    fn has_session(&self, session: SessionHandle) -> bool {
        self.runs.keys().any(|(s, _)| *s == session)
    }

    /// Whether any channel runs.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Stops everything.
    pub fn stop_all(&mut self) {
        for (_, (_, h)) in self.runs.drain() {
            h.abort();
        }
    }
}

/// The running channel.
struct Handle {
    remote: mpsc::UnboundedSender<Candidate>,
    task: tokio::task::AbortHandle,
}

impl Handle {
    /// Feeds the peer's candidates to the ICE agent.
    fn add_remote(&self, candidates: Vec<Candidate>) {
        for c in candidates {
            let _ = self.remote.send(c);
        }
    }

    /// Stops the channel.
    fn abort(&self) {
        self.task.abort();
    }
}

/// The ICE channel as PseudoTCP's datagram path.
struct IceIo(IceChannel);

impl DatagramIo for IceIo {
    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.0.poll_recv(cx, buf)
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, datagram: &[u8]) -> Poll<std::io::Result<()>> {
        self.0.poll_send(cx, datagram)
    }

    fn max_datagram_size(&self) -> usize {
        self.0.max_datagram_size()
    }
}

/// Runs channel `spec.name`: gather, exchange, connect, then the job.
fn spawn<P, F, Fut>(
    spec: ChannelSpec,
    tag: ChannelTag,
    negotiated: Negotiated,
    ctl: mpsc::UnboundedSender<ChannelMsg<P>>,
    job: F,
) -> Handle
where
    P: Send + 'static,
    F: FnOnce(Stream<PseudoTcpStream>, Link, Progress<P>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let (remote_tx, mut remote_rx) = mpsc::unbounded_channel::<Candidate>();
    let out = Progress {
        tag,
        name: spec.name.clone(),
        tx: ctl,
    };
    let task = tokio::spawn(async move {
        let result = async {
            let config = GatherConfig {
                name: spec.name.clone(),
                bind: spec.bind,
                stun: spec.stun.clone(),
            };
            let mut ice = if spec.relay_only {
                IceChannel::gather_relay_only(config, spec.turn.clone())
                    .await
                    .map_err(|e| format!("cannot gather relay candidates: {e}"))?
            } else {
                IceChannel::gather_with_relays(config, spec.turn.clone())
                    .await
                    .map_err(|e| format!("cannot open UDP sockets: {e}"))?
            };
            let mut candidates = ice.local_candidates();
            if let Some(addr) = spec.advertise {
                candidates.truncate(1);
                for c in &mut candidates {
                    c.address = addr;
                }
            }
            out.report(ChannelEvent::LocalCandidates(candidates));
            let sink = ice.remote_candidates_sink();
            tokio::spawn(async move {
                while let Some(c) = remote_rx.recv().await {
                    if sink.send(c).is_err() {
                        break;
                    }
                }
            });
            ice.connected(spec.connect_timeout)
                .await
                .map_err(|e| format!("no working network path: {e}"))?;
            let stream = tokio::time::timeout(
                spec.connect_timeout,
                PseudoTcpStream::connect(
                    IceIo(ice),
                    pseudotcp::Config {
                        model_based: !spec.classic_sender,
                        ..pseudotcp::Config::default()
                    },
                ),
            )
            .await
            .map_err(|_| "PseudoTCP did not connect in time".to_string())?
            .map_err(|e| format!("PseudoTCP failed to connect: {e}"))?;
            let peer_is_gshare = stream.peer_is_gshare();
            // Nothing is read or written on the stream before this: a
            // mismatch or a failed handshake ends the channel here.
            let stream = secure::establish(stream, &negotiated.protection, spec.connect_timeout)
                .await
                .map_err(|e| e.to_string())?;
            let link = Link {
                peer_is_gshare,
                negotiated,
            };
            out.report(ChannelEvent::Connected(link.clone()));
            job(stream, link, out.clone()).await
        }
        .await;
        out.report(match result {
            Ok(()) => ChannelEvent::Finished,
            Err(error) => ChannelEvent::Failed(error),
        });
    });
    Handle {
        remote: remote_tx,
        task: task.abort_handle(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Config, Manifest, ManifestItem, SessionManager};

    fn two_sessions() -> (SessionHandle, SessionHandle) {
        let me = "juliet@capulet.lit/balcony".parse().unwrap();
        let mut m = SessionManager::new(me, Config::default());
        let manifest = Manifest {
            items: vec![ManifestItem::file("a.txt", 1)],
        };
        let now = std::time::Instant::now();
        let a = m
            .initiate(
                now,
                "romeo@montague.lit/a".parse().unwrap(),
                manifest.clone(),
            )
            .unwrap();
        let b = m
            .initiate(now, "romeo@montague.lit/b".parse().unwrap(), manifest)
            .unwrap();
        (a, b)
    }

    /// A run whose task never ends, as a spawned channel would be.
    fn idle_handle() -> Handle {
        let (remote, _) = mpsc::unbounded_channel();
        let task = tokio::spawn(std::future::pending::<()>());
        Handle {
            remote,
            task: task.abort_handle(),
        }
    }

    fn failed(tag: ChannelTag, name: &str) -> ChannelMsg<()> {
        ChannelMsg {
            tag,
            name: name.into(),
            event: ChannelEvent::Failed("the old path broke".into()),
        }
    }

    #[tokio::test]
    async fn a_stale_failed_from_an_aborted_session_cannot_end_the_next_one() {
        let (first, next) = two_sessions();
        let mut channels = Channels::default();
        // Session `first` runs channel "gshare-0", then is aborted; its task
        // had already queued a Failed.
        let old = ChannelTag {
            session: first,
            generation: 1,
        };
        channels.insert(old, "gshare-0".into(), idle_handle());
        channels.stop_session(first);
        let stale = failed(old, "gshare-0");
        // The next session runs a channel of the same name.
        let new = ChannelTag {
            session: next,
            generation: 2,
        };
        channels.insert(new, "gshare-0".into(), idle_handle());
        assert!(!channels.admit(&stale), "a stale Failed was admitted");
        assert!(
            channels.has_session(next),
            "the next session lost its channel"
        );
        // The same message tagged with the next session's run is admitted
        // and ends that run.
        assert!(channels.admit(&failed(new, "gshare-0")));
        assert!(!channels.has_session(next));
    }

    #[tokio::test]
    async fn a_restarted_channel_ignores_its_previous_run() {
        let (session, _) = two_sessions();
        let mut channels = Channels::default();
        let first = ChannelTag {
            session,
            generation: 1,
        };
        channels.insert(first, "gshare-0".into(), idle_handle());
        let second = ChannelTag {
            session,
            generation: 2,
        };
        // Starting the same channel again replaces (and aborts) the first run.
        channels.insert(second, "gshare-0".into(), idle_handle());
        assert!(!channels.admit(&failed(first, "gshare-0")));
        assert!(channels.has_session(session));
        let progress = ChannelMsg {
            tag: second,
            name: "gshare-0".into(),
            event: ChannelEvent::Progress(()),
        };
        assert!(channels.admit(&progress));
        assert!(channels.has_session(session), "progress does not end a run");
    }
}
