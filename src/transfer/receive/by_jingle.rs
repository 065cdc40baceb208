//! The receive job's side of Jingle file transfer (issue 18; XEP-0234 over
//! XEP-0260 S5B or XEP-0261 IBB, docs/protocol.md §H.4): offers go through
//! the same rules as Google share offers (`--from`, the concurrency bound,
//! `--max-size` and free space, `--require-encryption`, `--auto-accept` or
//! the prompt), files land in part files renamed under a safe, free name
//! only once complete and, when the sender gave its SHA-256 (in the offer
//! or a `checksum`), verified. A content with gshare's folder marker is a
//! folder's tar, unpacked like a Google share folder and moved into place
//! only once its SHA-256 matches. Events are the same, with
//! `"method": "jingle"`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_xmpp::parsers::jid::{FullJid, Jid};
use tokio_xmpp::parsers::message::Message;
use tracing::debug;

use super::super::by_jingle::{
    Local, activate_proxy, iq_sender, not_encrypted_warning, random_id, send_iq,
};
use super::super::files::{Finished, PartFile, StreamHasher};
use super::super::names::safe_file_name;
use super::super::report::{TransferReport, human_rate, human_size};
use super::super::tar::TarUnpacker;
use super::super::{Exit, Failure};
use super::{Receiver, Step, allowed};
use crate::bytestreams::dst_addr;
use crate::bytestreams::ibb::{DEFAULT_BLOCK_SIZE, IbbReceiver, NS_IBB};
use crate::bytestreams::ibb_stream::ibb_reader;
use crate::bytestreams::s5b::{self, Outcome, Report, S5bNegotiation};
use crate::jingle::jmi::{self, Propose};
use crate::jingle::{
    CandidateType, Config, Content, JingleEvent, JingleSessions, Reason, ReasonKind, S5bPayload,
    S5bTransport, Transport,
};
use crate::session::envelope::{IqIn, IqOut, IqPayload};
use crate::session::{Manifest, ManifestItem};
use crate::xmpp::Xmpp;

/// After the last byte, how long the sender has to send its checksum.
const CHECKSUM_WAIT: Duration = Duration::from_secs(10);
/// How long the peer's SOCKS5 connection to our candidate may take.
const INCOMING_WAIT: Duration = Duration::from_secs(15);

type Key = (String, String);
type DecisionTx = mpsc::UnboundedSender<(Key, bool)>;

/// What the spawned tasks report.
pub(super) enum JNote {
    Connected(Key, usize, Option<(crate::jingle::Candidate, TcpStream)>),
    Activated(Key, usize, String),
    Progress(Key, usize, u64),
    Saved(Key, usize, Result<Finished, String>),
}

/// One offered file.
struct Lane {
    content: String,
    name: String,
    size: u64,
    offered_hash: Option<[u8; 32]>,
    tsid: String,
    /// Offered in-band from the start (XEP-0261 in the offer).
    ibb: Option<crate::jingle::IbbTransport>,
    neg: Option<S5bNegotiation>,
    incoming: Option<oneshot::Receiver<TcpStream>>,
    outgoing: Option<TcpStream>,
    awaiting_activation: Option<TcpStream>,
    started: bool,
    digest_tx: Option<oneshot::Sender<[u8; 32]>>,
    digest_rx: Option<oneshot::Receiver<[u8; 32]>>,
    ibb_in: Option<mpsc::Sender<IqIn>>,
    bytes: u64,
    done: bool,
    /// A gshare folder: the bytes are its tar stream, unpacked under
    /// `name` (docs/protocol.md §H.4).
    folder: bool,
}

/// One Jingle offer being decided on or received.
struct JTransfer {
    peer: FullJid,
    lanes: Vec<Lane>,
    total: u64,
    accepted: bool,
    failure: Option<Failure>,
    bars: TransferReport,
    /// Set on accept: every file must be moving by then.
    deadline: Option<tokio::time::Instant>,
}

/// Every Jingle session of the receive job.
pub(super) struct JingleIn {
    xmpp: Xmpp,
    own: FullJid,
    sessions: JingleSessions,
    transfers: HashMap<Key, JTransfer>,
    local: Local,
    pub(super) notes: (mpsc::UnboundedSender<JNote>, mpsc::UnboundedReceiver<JNote>),
    pub(super) decisions: (DecisionTx, mpsc::UnboundedReceiver<(Key, bool)>),
    iq_out: mpsc::Sender<IqOut>,
    stall: Duration,
    /// The offer asked about on the terminal (one question at a time,
    /// shared with the Google and link offers).
    pub(super) prompting: Option<Key>,
    /// XEP-0353 `<proceed/>` messages to send with the next flush (a
    /// handful at most: the flush follows every input).
    outbox: Vec<Message>,
}

impl JingleIn {
    pub(super) async fn new(
        xmpp: &Xmpp,
        timeout: Duration,
        kinds: super::super::JingleTransports,
    ) -> Result<JingleIn, Failure> {
        let config = Config {
            iq_timeout: timeout,
            ..Config::default()
        };
        Ok(JingleIn {
            xmpp: xmpp.clone(),
            own: xmpp.jid().clone(),
            sessions: JingleSessions::new(xmpp.jid().clone(), config),
            transfers: HashMap::new(),
            local: Local::gather(xmpp, kinds).await?,
            notes: mpsc::unbounded_channel(),
            decisions: mpsc::unbounded_channel(),
            iq_out: iq_sender(xmpp),
            stall: timeout,
            prompting: None,
            outbox: Vec::new(),
        })
    }

    /// Transfers running or waiting for a decision.
    pub(super) fn len(&self) -> usize {
        self.transfers.len()
    }

    /// The machines' next deadline.
    pub(super) fn deadline(&self) -> Option<tokio::time::Instant> {
        self.sessions.poll_timeout().map(tokio::time::Instant::from)
    }

    /// Ends every session (Ctrl-C, end of run).
    pub(super) fn terminate_all(&mut self) -> Vec<String> {
        let now = Instant::now();
        let mut told = Vec::new();
        for ((peer, sid), _) in self.transfers.iter() {
            if let Ok(p) = peer.parse::<FullJid>()
                && let Some(s) = self.sessions.get_mut(&p, sid)
            {
                let _ = s.terminate(now, Reason::new(ReasonKind::Cancel));
                told.push(peer.clone());
            }
        }
        told
    }

    /// Sends what the machines queued.
    pub(super) async fn flush(&mut self) {
        for m in std::mem::take(&mut self.outbox) {
            if let Err(e) = self.xmpp.send(m).await {
                debug!(%e, "could not send a Jingle Message Initiation answer");
            }
        }
        while let Some(o) = self.sessions.poll_transmit() {
            send_iq(&self.xmpp, o).await;
        }
    }
}

fn digest32(d: &[u8]) -> Option<[u8; 32]> {
    d.try_into().ok()
}

impl Receiver {
    /// An IQ the Google layer did not take.
    pub(super) fn on_jingle_iq(&mut self, iq: IqIn) {
        let j = &mut self.jingle;
        let ibb_set = matches!(&iq.payload, IqPayload::Set(el) if el.ns() == NS_IBB);
        if !ibb_set && j.sessions.handle_iq(Instant::now(), iq.clone()) {
            return;
        }
        if matches!(iq.payload, IqPayload::Set(_) | IqPayload::Get(_)) && !ibb_set {
            return;
        }
        for t in j.transfers.values() {
            for l in &t.lanes {
                if let Some(tx) = &l.ibb_in {
                    let _ = tx.try_send(iq.clone());
                }
            }
        }
    }

    /// Polls the sessions' events and sends their IQs; call after every
    /// input.
    pub(super) async fn jingle_pump(&mut self) -> Step {
        loop {
            let mut step = None;
            let mut any = false;
            while let Some((peer, sid, ev)) = self.jingle.sessions.poll_event() {
                any = true;
                if let Some(s) = self.on_jingle_event(peer, sid, ev) {
                    step = Some(s);
                }
            }
            let keys: Vec<Key> = self.jingle.transfers.keys().cloned().collect();
            for k in keys {
                self.jingle_decide(&k);
            }
            self.jingle.flush().await;
            if step.is_some() {
                return step;
            }
            if !any {
                return None;
            }
        }
    }

    pub(super) fn on_jingle_timer(&mut self) {
        self.jingle.sessions.handle_timeout(Instant::now());
        let now = tokio::time::Instant::now();
        let stall = self.jingle.stall;
        for ((peer, sid), t) in self.jingle.transfers.iter_mut() {
            if t.deadline.is_none_or(|d| now < d) {
                continue;
            }
            t.deadline = None;
            if t.lanes.iter().all(|l| l.started) {
                continue;
            }
            t.failure = Some(Failure::new(
                Exit::TransferFailed,
                format!(
                    "transfer from {peer} failed: no way to move the bytes worked within {}s; \
                     nothing was saved",
                    (2 * stall).as_secs()
                ),
            ));
            if let Ok(p) = peer.parse::<FullJid>()
                && let Some(s) = self.jingle.sessions.get_mut(&p, sid)
            {
                let _ = s.terminate(Instant::now(), Reason::new(ReasonKind::FailedTransport));
            }
        }
    }

    /// A Jingle Message Initiation `<propose/>` (XEP-0353), sent to our
    /// bare JID: answer `<proceed/>` from this resource when an offer from
    /// this sender could be taken now; the `session-initiate` that follows
    /// (to our full JID, `sid` = the propose's id) is then decided on like
    /// any Jingle offer. Otherwise stay silent: the sender gives up.
    pub(super) fn on_jingle_propose(&mut self, p: Propose) {
        let Propose {
            from,
            id,
            file_transfer,
        } = p;
        if !file_transfer {
            debug!(%from, %id, "ignored a Jingle proposal that is not a file transfer");
            return;
        }
        let Ok(peer) = FullJid::try_from(from.clone()) else {
            debug!(%from, %id, "ignored a Jingle proposal from a bare JID");
            return;
        };
        if !allowed(&self.allow, &from) {
            debug!(%from, %id, "ignored a Jingle proposal from someone not in --from");
            return;
        }
        if self.require_encryption {
            debug!(%from, %id, "ignored a Jingle proposal: encryption is required");
            self.report.say(format!(
                "Ignored a Jingle file transfer proposal from {from}: \
                 Jingle is not encrypted and encryption is required"
            ));
            self.report.event(
                "rejected",
                json!({"from": from.to_string(), "reason": "not encrypted", "method": "jingle"}),
            );
            return;
        }
        if self.output_dir().is_none() {
            debug!(%from, %id, "ignored a Jingle proposal: Jingle files are not written to -o -");
            return;
        }
        let running = self.transfers.len() + self.links.running.len() + self.jingle.len();
        if running >= self.bound {
            debug!(%from, %id, "ignored a Jingle proposal: busy with another transfer");
            return;
        }
        debug!(%from, %id, "proceeding with a Jingle proposal");
        self.jingle.outbox.push(jmi::proceed(&peer, &id));
    }

    fn jingle_reject(&mut self, peer: &FullJid, sid: &str, what: &str, why: &str, reason: &str) {
        self.report
            .say(format!("Rejected {what} from {peer}: {why}"));
        self.report.event(
            "rejected",
            json!({"from": peer.to_string(), "reason": reason, "method": "jingle"}),
        );
        if let Some(s) = self.jingle.sessions.get_mut(peer, sid) {
            let kind = if reason == "busy" {
                ReasonKind::Busy
            } else {
                ReasonKind::Decline
            };
            let _ = s.terminate(Instant::now(), Reason::new(kind));
        }
    }

    fn on_jingle_event(&mut self, peer: FullJid, sid: String, ev: JingleEvent) -> Step {
        let key = (peer.to_string(), sid.clone());
        let now = Instant::now();
        match ev {
            JingleEvent::Offered { contents } => {
                return self.on_jingle_offer(peer, sid, contents);
            }
            JingleEvent::TransportInfo {
                content,
                transport: Transport::S5b(t),
            } => {
                let t2 = self.jingle.transfers.get_mut(&key)?;
                let l = t2.lanes.iter_mut().find(|l| l.content == content)?;
                match &t.payload {
                    S5bPayload::Activated(_) => {
                        if let Some(stream) = l.awaiting_activation.take() {
                            let i = t2.lanes.iter().position(|l| l.content == content)?;
                            self.jingle_read_s5b(&key, i, stream);
                        }
                    }
                    S5bPayload::ProxyError => {
                        // The sender replaces the transport (XEP-0260).
                        l.awaiting_activation = None;
                    }
                    p => {
                        if let Some(n) = l.neg.as_mut() {
                            n.remote_payload(p);
                        }
                    }
                }
            }
            JingleEvent::TransportReplace {
                content,
                transport: Transport::Ibb(ib),
            } => {
                let t2 = self.jingle.transfers.get_mut(&key)?;
                let i = t2.lanes.iter().position(|l| l.content == content)?;
                if t2.lanes[i].started {
                    if let Some(s) = self.jingle.sessions.get_mut(&peer, &sid) {
                        let _ = s.transport_reject(now, &content);
                    }
                    return None;
                }
                let bs = ib.block_size.min(DEFAULT_BLOCK_SIZE);
                let accepted = Transport::Ibb(crate::jingle::IbbTransport {
                    block_size: bs,
                    ..ib.clone()
                });
                if let Some(s) = self.jingle.sessions.get_mut(&peer, &sid) {
                    let _ = s.transport_accept(now, &content, accepted);
                }
                self.jingle_read_ibb(&key, i, ib.sid.clone(), bs);
            }
            JingleEvent::TransportReplace { content, .. } => {
                if let Some(s) = self.jingle.sessions.get_mut(&peer, &sid) {
                    let _ = s.transport_reject(now, &content);
                }
            }
            JingleEvent::Checksum { content, file } => {
                let t2 = self.jingle.transfers.get_mut(&key)?;
                let l = t2.lanes.iter_mut().find(|l| l.content == content)?;
                if let Some(d) = file.hash("sha-256").and_then(digest32)
                    && let Some(tx) = l.digest_tx.take()
                {
                    let _ = tx.send(d);
                }
            }
            JingleEvent::Terminated { reason, by_peer } => {
                return self.end_jingle(&key, reason, by_peer);
            }
            JingleEvent::ContentRemoved { content } => {
                let t2 = self.jingle.transfers.get_mut(&key)?;
                let l = t2.lanes.iter_mut().find(|l| l.content == content)?;
                l.done = true;
            }
            JingleEvent::TransportInfo { .. }
            | JingleEvent::Accepted { .. }
            | JingleEvent::TransportAccepted { .. }
            | JingleEvent::TransportRejected { .. }
            | JingleEvent::Received { .. } => {}
        }
        None
    }

    fn on_jingle_offer(&mut self, peer: FullJid, sid: String, contents: Vec<Content>) -> Step {
        let from = Jid::from(peer.clone());
        let mut lanes = Vec::new();
        let mut items = Vec::new();
        for c in &contents {
            let Some(file) = c.file() else { continue };
            let offered = file.name.clone().unwrap_or_else(|| "file".into());
            // A gshare folder comes as `<folder>.tar`: unpacked as `<folder>`.
            let offered = match offered.strip_suffix(".tar") {
                Some(stem) if file.folder && !stem.is_empty() => stem.to_owned(),
                _ => offered,
            };
            let name = safe_file_name(&offered).unwrap_or_else(|_| "received-file".into());
            // No size: nothing to check the space or the end against.
            let Some(size) = file.size else { continue };
            items.push(if file.folder {
                ManifestItem::folder(name.clone(), size)
            } else {
                ManifestItem::file(name.clone(), size)
            });
            let tsid = match &c.transport {
                Some(Transport::S5b(t)) => t.sid.clone(),
                Some(Transport::Ibb(t)) => t.sid.clone(),
                _ => random_id("gs"),
            };
            let (dtx, drx) = oneshot::channel();
            lanes.push(Lane {
                content: c.name.clone(),
                name,
                size,
                offered_hash: file.hash("sha-256").and_then(digest32),
                tsid,
                ibb: match &c.transport {
                    Some(Transport::Ibb(t)) => Some(t.clone()),
                    _ => None,
                },
                neg: None,
                incoming: None,
                outgoing: None,
                awaiting_activation: None,
                started: false,
                digest_tx: Some(dtx),
                digest_rx: Some(drx),
                ibb_in: None,
                bytes: 0,
                done: false,
                folder: file.folder,
            });
        }
        let manifest = Manifest { items };
        let what = super::describe_offer(&manifest);
        if lanes.is_empty() || lanes.len() != contents.len() {
            self.jingle_reject(
                &peer,
                &sid,
                &what,
                "it offers no file to receive",
                "unsupported",
            );
            return None;
        }
        if !allowed(&self.allow, &from) {
            self.jingle_reject(&peer, &sid, &what, "not in --from", "not allowed");
            return None;
        }
        let running = self.transfers.len() + self.links.running.len() + self.jingle.len();
        if running >= self.bound {
            self.jingle_reject(&peer, &sid, &what, "busy with another transfer", "busy");
            return None;
        }
        let Some(dir) = self.output_dir() else {
            self.jingle_reject(
                &peer,
                &sid,
                &what,
                "Jingle files are saved to a folder only (not -o -)",
                "unsupported",
            );
            return None;
        };
        let _ = dir;
        if self.require_encryption {
            self.jingle_reject(
                &peer,
                &sid,
                &what,
                "Jingle file transfer is not encrypted and encryption is required",
                "not encrypted",
            );
            // As for a classic Google offer: exit 8 (with --once, now).
            let f = Failure::new(
                Exit::NotEncrypted,
                format!("declined the Jingle offer from {from}: it would not be encrypted"),
            );
            if self.once {
                return Some(Err(f));
            }
            self.last_error = Some(f);
            return None;
        }
        if let Some((reason, why)) = self.cannot_fit(&manifest) {
            self.report
                .say(format!("Declined {what} from {from}: {why}"));
            self.report.event(
                "rejected",
                json!({"from": from.to_string(), "reason": reason, "detail": why,
                       "total": manifest.total_size(), "method": "jingle"}),
            );
            if let Some(s) = self.jingle.sessions.get_mut(&peer, &sid) {
                let _ = s.decline(Instant::now());
            }
            return None;
        }
        let mut ev = super::offer_event(&from, &manifest);
        ev["method"] = "jingle".into();
        self.report.event("offer", ev);
        let label = peer.node().map(|n| n.to_string()).unwrap_or_default();
        let key = (peer.to_string(), sid.clone());
        self.jingle.transfers.insert(
            key.clone(),
            JTransfer {
                bars: TransferReport::new(Some(("from", peer.to_string())), label),
                peer: peer.clone(),
                total: manifest.total_size(),
                lanes,
                accepted: false,
                failure: None,
                deadline: None,
            },
        );
        // The sender's candidates, kept for the accept.
        if let Some(t) = self.jingle.transfers.get_mut(&key) {
            for (l, c) in t.lanes.iter_mut().zip(&contents) {
                if let Some(Transport::S5b(s5)) = &c.transport {
                    let mut n = S5bNegotiation::new(false, Vec::new());
                    if let S5bPayload::Candidates(cands) = &s5.payload {
                        n.set_remote(self.jingle.local.usable(cands));
                    }
                    l.neg = Some(n);
                }
            }
        }
        let prompt = !self.auto_accept && self.interactive;
        if self.auto_accept {
            let _ = self.jingle.decisions.0.send((key, true));
        } else if prompt && !self.asking() {
            self.jingle.prompting = Some(key.clone());
            let tx = self.jingle.decisions.0.clone();
            let question = format!("Accept {what} from {from} (Jingle, not encrypted)? [y/N] ");
            tokio::task::spawn_blocking(move || {
                let _ = tx.send((key, super::ask(&question)));
            });
        } else {
            let why = if prompt {
                "busy asking about another offer"
            } else {
                "no terminal to ask on (use --auto-accept)"
            };
            self.report
                .say(format!("Declined {what} from {from}: {why}"));
            if let Some(s) = self.jingle.sessions.get_mut(&peer, &sid) {
                let _ = s.decline(Instant::now());
            }
            if let Some(t) = self.jingle.transfers.get_mut(&key) {
                t.failure = Some(Failure::new(
                    Exit::Declined,
                    format!("declined the offer from {from}"),
                ));
            }
        }
        None
    }

    fn output_dir(&self) -> Option<(PathBuf, bool)> {
        match &self.output {
            super::Output::Dir { dir, overwrite } => Some((dir.clone(), *overwrite)),
            super::Output::Stdout => None,
        }
    }

    /// The user's (or auto-accept's) answer.
    pub(super) fn on_jingle_decision(&mut self, key: Key, yes: bool) {
        if self.jingle.prompting.as_ref() == Some(&key) {
            self.jingle.prompting = None;
            // Google share offers that waited for this question.
            self.ask_next();
        }
        let Ok(peer) = key.0.parse::<FullJid>() else {
            return;
        };
        let now = Instant::now();
        let own = self.jingle.own.to_string();
        let Some(t) = self.jingle.transfers.get_mut(&key) else {
            return;
        };
        let Some(s) = self.jingle.sessions.get_mut(&peer, &key.1) else {
            return;
        };
        if !yes {
            let _ = s.decline(now);
            t.failure = Some(Failure::new(
                Exit::Declined,
                format!("declined the offer from {peer}"),
            ));
            return;
        }
        let mut transports = Vec::new();
        let mut in_band = Vec::new();
        for (i, l) in t.lanes.iter_mut().enumerate() {
            if let Some(ib) = &l.ibb {
                let bs = ib.block_size.min(DEFAULT_BLOCK_SIZE);
                transports.push((
                    l.content.clone(),
                    Transport::Ibb(crate::jingle::IbbTransport {
                        block_size: bs,
                        ..ib.clone()
                    }),
                ));
                in_band.push((i, ib.sid.clone(), bs));
                continue;
            }
            let ours = self
                .jingle
                .local
                .candidates(&self.jingle.own, &format!("r{i}"));
            let dst = dst_addr(&l.tsid, &own, &key.0);
            l.incoming = self.jingle.local.listener.expect(&dst).ok();
            let remote = l
                .neg
                .as_ref()
                .map(|n| n.connect_order())
                .unwrap_or_default();
            let mut n = S5bNegotiation::new(false, ours.clone());
            n.set_remote(remote.clone());
            l.neg = Some(n);
            transports.push((
                l.content.clone(),
                Transport::S5b(S5bTransport {
                    sid: l.tsid.clone(),
                    dstaddr: Some(dst),
                    payload: S5bPayload::Candidates(ours),
                }),
            ));
            let tx = self.jingle.notes.0.clone();
            let out_dst = dst_addr(&l.tsid, &key.0, &own);
            let k = key.clone();
            tokio::spawn(async move {
                let r = s5b::connect_first(&remote, &out_dst).await;
                let _ = tx.send(JNote::Connected(k, i, r));
            });
        }
        if let Err(e) = s.accept(now, transports) {
            debug!(%e, "cannot accept the Jingle offer");
            return;
        }
        t.accepted = true;
        t.deadline = Some(tokio::time::Instant::now() + 2 * self.jingle.stall);
        self.report.say(format!(
            "Receiving {} from {peer} (Jingle file transfer, not encrypted)",
            super::super::report::describe_items(
                &t.lanes.iter().map(|l| l.name.clone()).collect::<Vec<_>>()
            )
        ));
        self.report.warn(not_encrypted_warning(&peer.to_string()));
        t.bars.event(
            &self.report,
            "accepted",
            json!({"encrypted": false, "method": "jingle"}),
        );
        t.bars.start(&self.report, t.total);
        for (i, sid, bs) in in_band {
            self.jingle_read_ibb(&key, i, sid, bs);
        }
    }

    pub(super) fn on_jingle_note(&mut self, note: JNote) -> Step {
        let now = Instant::now();
        match note {
            JNote::Connected(key, i, r) => {
                let peer: FullJid = key.0.parse().ok()?;
                let t = self.jingle.transfers.get_mut(&key)?;
                let l = t.lanes.get_mut(i)?;
                let report = r
                    .as_ref()
                    .map_or(Report::Error, |(c, _)| Report::Used(c.cid.clone()));
                l.outgoing = r.map(|(_, st)| st);
                let payload = l.neg.as_mut()?.local_result(report);
                let tr = Transport::S5b(S5bTransport {
                    sid: l.tsid.clone(),
                    dstaddr: None,
                    payload,
                });
                let content = l.content.clone();
                if let Some(s) = self.jingle.sessions.get_mut(&peer, &key.1) {
                    let _ = s.transport_info(now, &content, tr);
                }
            }
            JNote::Activated(key, i, cid) => {
                let peer: FullJid = key.0.parse().ok()?;
                let t = self.jingle.transfers.get(&key)?;
                let l = t.lanes.get(i)?;
                let tr = Transport::S5b(S5bTransport {
                    sid: l.tsid.clone(),
                    dstaddr: None,
                    payload: S5bPayload::Activated(cid),
                });
                let content = l.content.clone();
                if let Some(s) = self.jingle.sessions.get_mut(&peer, &key.1) {
                    let _ = s.transport_info(now, &content, tr);
                }
            }
            JNote::Progress(key, i, n) => {
                let t = self.jingle.transfers.get_mut(&key)?;
                if t.lanes.get(i)?.bytes == 0 && n > 0 {
                    let l = &t.lanes[i];
                    t.bars.item_started(&self.report, &l.name, Some(l.size));
                }
                t.lanes[i].bytes = n;
                let sum = t.lanes.iter().map(|l| l.bytes).sum();
                let l = &t.lanes[i];
                t.bars
                    .progress(&self.report, &l.name, n, Some(l.size), sum, t.total);
            }
            JNote::Saved(key, i, r) => {
                let peer: FullJid = key.0.parse().ok()?;
                let t = self.jingle.transfers.get_mut(&key)?;
                let l = t.lanes.get_mut(i)?;
                l.done = true;
                match r {
                    Ok(f) => {
                        l.bytes = f.size;
                        self.report.say(format!("Saved {}", f.path.display()));
                        t.bars.event(
                            &self.report,
                            "item",
                            json!({"name": l.name, "size": f.size, "sha256": f.sha256,
                                   "kind": if l.folder { "folder" } else { "file" },
                                   "verified": f.verified, "resumed_from": 0,
                                   "path": f.path.display().to_string()}),
                        );
                        if t.lanes.iter().all(|l| l.done)
                            && let Some(s) = self.jingle.sessions.get_mut(&peer, &key.1)
                        {
                            let _ = s.terminate(now, Reason::new(ReasonKind::Success));
                        }
                    }
                    Err(e) => {
                        let why = format!(
                            "transfer of {:?} from {peer} failed after {}: {e}; nothing was saved under its name",
                            l.name,
                            human_size(l.bytes)
                        );
                        t.failure = Some(Failure::new(Exit::TransferFailed, why));
                        if let Some(s) = self.jingle.sessions.get_mut(&peer, &key.1) {
                            let _ = s.terminate(now, Reason::new(ReasonKind::MediaError));
                        }
                    }
                }
            }
        }
        None
    }

    /// Acts on finished S5B negotiations.
    fn jingle_decide(&mut self, key: &Key) {
        let Some(t) = self.jingle.transfers.get_mut(key) else {
            return;
        };
        if !t.accepted {
            return;
        }
        for i in 0..t.lanes.len() {
            let Some(t) = self.jingle.transfers.get_mut(key) else {
                return;
            };
            let l = &mut t.lanes[i];
            if l.started || l.awaiting_activation.is_some() {
                continue;
            }
            let Some(outcome) = l.neg.as_ref().and_then(S5bNegotiation::outcome) else {
                continue;
            };
            match outcome {
                // The sender replaces the transport with IBB.
                Outcome::Fallback => {}
                Outcome::UseOutgoing { candidate } => {
                    let Some(stream) = l.outgoing.take() else {
                        continue;
                    };
                    if candidate.kind == CandidateType::Proxy {
                        l.awaiting_activation = Some(stream);
                    } else {
                        self.jingle_read_s5b(key, i, stream);
                    }
                }
                Outcome::UseIncoming { candidate } if candidate.kind == CandidateType::Proxy => {
                    l.started = true;
                    let Some(p) = self.jingle.local.proxy.clone() else {
                        continue;
                    };
                    let own = self.jingle.own.to_string();
                    let dst = dst_addr(&l.tsid, &own, &key.0);
                    let Ok(target) = key.0.parse::<Jid>() else {
                        continue;
                    };
                    let (xmpp, tsid, cid) = (
                        self.jingle.xmpp.clone(),
                        l.tsid.clone(),
                        candidate.cid.clone(),
                    );
                    let tx = self.jingle.notes.0.clone();
                    let k = key.clone();
                    let job = self.save_job(key, i);
                    tokio::spawn(async move {
                        match activate_proxy(&xmpp, p.jid, p.addr, &dst, &tsid, &target).await {
                            Ok(stream) => {
                                let _ = tx.send(JNote::Activated(k.clone(), i, cid));
                                if let Some(job) = job {
                                    job.run(stream).await;
                                }
                            }
                            Err(e) => {
                                let _ = tx.send(JNote::Saved(k, i, Err(e)));
                            }
                        }
                    });
                }
                Outcome::UseIncoming { .. } => {
                    l.started = true;
                    let Some(rx) = l.incoming.take() else {
                        continue;
                    };
                    let tx = self.jingle.notes.0.clone();
                    let k = key.clone();
                    let job = self.save_job(key, i);
                    tokio::spawn(async move {
                        match tokio::time::timeout(INCOMING_WAIT, rx).await {
                            Ok(Ok(stream)) => {
                                if let Some(job) = job {
                                    job.run(stream).await;
                                }
                            }
                            _ => {
                                let _ =
                                    tx.send(JNote::Saved(
                                        k,
                                        i,
                                        Err("the sender did not connect to our SOCKS5 candidate"
                                            .into()),
                                    ));
                            }
                        }
                    });
                }
            }
        }
    }

    fn jingle_read_s5b(&mut self, key: &Key, i: usize, stream: TcpStream) {
        if let Some(l) = self
            .jingle
            .transfers
            .get_mut(key)
            .and_then(|t| t.lanes.get_mut(i))
        {
            l.started = true;
        }
        if let Some(job) = self.save_job(key, i) {
            tokio::spawn(job.run(stream));
        }
    }

    fn jingle_read_ibb(&mut self, key: &Key, i: usize, sid: String, block_size: u16) {
        let Ok(peer) = key.0.parse::<Jid>() else {
            return;
        };
        let iq_out = self.jingle.iq_out.clone();
        let Some(l) = self
            .jingle
            .transfers
            .get_mut(key)
            .and_then(|t| t.lanes.get_mut(i))
        else {
            return;
        };
        l.started = true;
        let (in_tx, in_rx) = mpsc::channel(64);
        l.ibb_in = Some(in_tx);
        let rx = IbbReceiver::new(Instant::now(), peer, sid, block_size);
        let (reader, task) = ibb_reader(rx, in_rx, iq_out);
        if let Some(job) = self.save_job(key, i) {
            tokio::spawn(async move {
                job.run(reader).await;
                task.abort();
            });
        }
    }

    /// What a task needs to save lane `i`.
    fn save_job(&mut self, key: &Key, i: usize) -> Option<SaveJob> {
        let (dir, overwrite) = self.output_dir()?;
        let stall = self.jingle.stall;
        let tx = self.jingle.notes.0.clone();
        let l = self.jingle.transfers.get_mut(key)?.lanes.get_mut(i)?;
        Some(SaveJob {
            key: key.clone(),
            index: i,
            dir,
            overwrite,
            name: l.name.clone(),
            size: l.size,
            offered_hash: l.offered_hash,
            digest: l.digest_rx.take(),
            stall,
            tx,
            folder: l.folder,
        })
    }

    fn end_jingle(&mut self, key: &Key, reason: Reason, by_peer: bool) -> Step {
        let mut t = self.jingle.transfers.remove(key)?;
        t.bars.finish(&self.report);
        let elapsed = t.bars.elapsed();
        let bytes: u64 = t.lanes.iter().map(|l| l.bytes).sum();
        let all = t.lanes.iter().all(|l| l.done);
        let result = if let Some(f) = t.failure.take() {
            Err(f)
        } else if all && reason.kind == ReasonKind::Success {
            Ok(bytes)
        } else {
            let why = if by_peer {
                format!("{} ended the session ({})", t.peer, reason.kind.as_str())
            } else {
                format!("the session ended ({})", reason.kind.as_str())
            };
            Err(Failure::new(
                Exit::TransferFailed,
                format!(
                    "transfer from {} failed after {}: {why}; nothing was saved under its name",
                    t.peer,
                    human_size(bytes)
                ),
            ))
        };
        if !t.accepted && result.is_err() && matches!(&result, Err(f) if f.exit == Exit::Declined) {
            // Declined here: said already.
        }
        match &result {
            Ok(bytes) => {
                self.report.say(format!(
                    "Received {} from {} in {:.1}s, {} (Jingle, not encrypted)",
                    human_size(*bytes),
                    t.peer,
                    elapsed.as_secs_f64(),
                    human_rate(*bytes, elapsed)
                ));
                t.bars.event(
                    &self.report,
                    "done",
                    json!({"bytes": bytes, "seconds": elapsed.as_secs_f64(), "method": "jingle"}),
                );
            }
            Err(f) => {
                self.report.warn(&f.message);
                t.bars.event(
                    &self.report,
                    "failed",
                    json!({"reason": f.message, "exit": f.exit.code()}),
                );
            }
        }
        if self.once {
            return Some(result.map(|_| ()));
        }
        if let Err(f) = result {
            self.last_error = Some(f);
        }
        None
    }
}

/// Reads one file into a part file and saves it.
struct SaveJob {
    key: Key,
    index: usize,
    dir: PathBuf,
    overwrite: bool,
    name: String,
    size: u64,
    offered_hash: Option<[u8; 32]>,
    digest: Option<oneshot::Receiver<[u8; 32]>>,
    stall: Duration,
    tx: mpsc::UnboundedSender<JNote>,
    folder: bool,
}

impl SaveJob {
    async fn run<R: AsyncRead + Unpin>(self, r: R) {
        let (tx, key, index) = (self.tx.clone(), self.key.clone(), self.index);
        let result = self.save(r).await;
        let _ = tx.send(JNote::Saved(key, index, result));
    }

    async fn save<R: AsyncRead + Unpin>(self, r: R) -> Result<Finished, String> {
        if self.folder {
            return self.save_folder(r).await;
        }
        self.save_file(r).await
    }

    /// The sender's SHA-256: in the offer, or in a `checksum` after the
    /// last byte.
    async fn sender_digest(
        offered: Option<[u8; 32]>,
        rx: Option<oneshot::Receiver<[u8; 32]>>,
    ) -> Option<[u8; 32]> {
        match (offered, rx) {
            (Some(d), _) => Some(d),
            (None, Some(rx)) => tokio::time::timeout(CHECKSUM_WAIT, rx)
                .await
                .ok()
                .and_then(Result::ok),
            (None, None) => None,
        }
    }

    /// A gshare folder: the tar stream is unpacked as it arrives into a
    /// hidden temporary folder (the Google share unpacker: safe names, no
    /// overwrite) and hashed; the folder is moved into place only once
    /// the stream's SHA-256 equals the sender's.
    /// One read from the bytestream, or a sentence for a broken or
    /// stalled one (no data for `stall`).
    async fn read_some<R: AsyncRead + Unpin>(
        &self,
        r: &mut R,
        buf: &mut [u8],
    ) -> Result<usize, String> {
        match tokio::time::timeout(self.stall, r.read(buf)).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(format!("the connection broke: {e}")),
            Err(_) => Err(format!("no data for {}s", self.stall.as_secs())),
        }
    }

    async fn save_folder<R: AsyncRead + Unpin>(self, mut r: R) -> Result<Finished, String> {
        let mut unpacker = TarUnpacker::new(&self.dir, &self.name, None)
            .await
            .map_err(|e| e.to_string())?;
        let hasher = StreamHasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        loop {
            let n = self.read_some(&mut r, &mut buf).await?;
            if n == 0 {
                break;
            }
            got += n as u64;
            if got > self.size {
                return Err(format!(
                    "received more than the announced {} bytes",
                    self.size
                ));
            }
            let chunk = Bytes::copy_from_slice(&buf[..n]);
            hasher.update(chunk.clone()).await;
            unpacker.push(chunk).await.map_err(|e| e.to_string())?;
            let _ = self
                .tx
                .send(JNote::Progress(self.key.clone(), self.index, got));
        }
        if got != self.size {
            return Err(format!(
                "received {got} of the announced {} bytes",
                self.size
            ));
        }
        let digest = hasher.finish().await.map_err(|e| e.to_string())?;
        let Some(want) = Self::sender_digest(self.offered_hash, self.digest).await else {
            return Err("the sender did not send the folder's SHA-256".into());
        };
        if want != digest {
            // Dropping the unpacker removes the hidden temporary folder.
            return Err(format!(
                "the folder's SHA-256 is {} but the sender's is {}",
                hex::encode(digest),
                hex::encode(want)
            ));
        }
        let done = unpacker.finish().await.map_err(|e| e.to_string())?;
        Ok(Finished {
            path: done.path,
            size: got,
            sha256: hex::encode(digest),
            verified: true,
            resumed_from: 0,
        })
    }

    async fn save_file<R: AsyncRead + Unpin>(self, mut r: R) -> Result<Finished, String> {
        let mut part = PartFile::create(&self.dir, &self.name, Some(self.size))
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.read_some(&mut r, &mut buf).await?;
            if n == 0 {
                break;
            }
            part.write(&buf[..n]).await.map_err(|e| e.to_string())?;
            let _ = self.tx.send(JNote::Progress(
                self.key.clone(),
                self.index,
                part.written(),
            ));
        }
        if part.written() != self.size {
            return Err(format!(
                "received {} of the announced {} bytes",
                part.written(),
                self.size
            ));
        }
        if let Some(d) = Self::sender_digest(self.offered_hash, self.digest).await {
            part.verify_against(d);
        }
        let finished = if self.overwrite {
            part.finish(&self.dir.join(&self.name), true).await
        } else {
            part.finish_unique(&self.dir, &self.name).await
        };
        finished.map_err(|e| e.to_string())
    }
}
