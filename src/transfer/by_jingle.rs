//! `gshare send` by Jingle file transfer (issue 18; XEP-0234 over XEP-0260
//! SOCKS5 or XEP-0261 IBB; docs/protocol.md §H.4). One session, one content
//! per file (a folder is one file: its tar, spooled, with gshare's folder
//! marker); each content negotiates S5B (our host candidates and the
//! server's XEP-0065 proxy against the peer's), falls back to IBB by
//! `transport-replace`, sends the file, then its SHA-256 in a `checksum`
//! session-info; the receiver ends the session with `success`.
//!
//! Nothing here is encrypted by gshare (`--require-encryption` refuses this
//! method before it gets here).
//!
//! Also the helpers the receive job shares: candidates, the proxy, and the
//! IQ plumbing between the XMPP task and the sans-IO machines.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use minidom::Element;
use minidom::rxml::xml_ncname;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::jid::{FullJid, Jid};
use tracing::debug;

use super::report::{Reporter, TransferReport, describe_items, human_rate, human_size};
use super::{CommonOptions, Exit, Failure, JingleTransports};
use crate::bytestreams::ibb::{DEFAULT_BLOCK_SIZE, IbbSender};
use crate::bytestreams::ibb_stream::ibb_writer;
use crate::bytestreams::proxy::{self, StreamHost};
use crate::bytestreams::s5b::{DIRECT_LOCAL_PREF, Outcome, Report, S5bNegotiation, priority};
use crate::bytestreams::socks5::{self, DirectListener};
use crate::bytestreams::{dst_addr, s5b};
use crate::http::SourceMsg;
use crate::jingle::{
    Candidate, CandidateType, Config, FileDesc, Hash, IbbStanza, IbbTransport, JingleEvent,
    JingleSession, Reason, ReasonKind, S5bPayload, S5bTransport, Transport, file_offer,
};
use crate::session::envelope::{IqIn, IqOut, IqPayload};
use crate::xmpp::{Incoming, IqRequest, Xmpp};

const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// How long the server may take to answer each discovery query.
const DISCO_WAIT: Duration = Duration::from_secs(5);
/// Server items asked whether they are a proxy, at most.
const MAX_DISCO_ITEMS: usize = 12;
/// Host candidates offered at most.
const MAX_HOSTS: usize = 6;
/// IBB blocks in flight (Libervia acknowledges one at a time anyway).
pub(super) const IBB_WINDOW: usize = 4;
/// How long the peer's SOCKS5 connection to our candidate may take once
/// the negotiation chose it.
const INCOMING_WAIT: Duration = Duration::from_secs(15);

/// Why `--require-encryption` rules out Jingle.
pub(super) const JINGLE_NOT_ENCRYPTED: &str = "Jingle file transfer is not encrypted by gshare \
     (the bytes go over a plain TCP connection, your server's proxy or in-band through \
     the servers), and encryption is required";

/// The warning said once per Jingle transfer.
pub(super) fn not_encrypted_warning(peer: &str) -> String {
    format!("the transfer with {peer} uses Jingle file transfer, which gshare does not encrypt")
}

/// An incoming XMPP IQ as the machines take it (our server speaks without
/// `from`: that is our own account).
pub(super) fn iq_in(iq: Iq, own: &FullJid) -> Option<IqIn> {
    let mut el = Element::from(iq);
    if el.attr("from").is_none() {
        el.set_attr(
            minidom::rxml::Namespace::NONE,
            xml_ncname!("from").into(),
            own.to_bare().to_string(),
        );
    }
    IqIn::from_element(&el)
}

/// Sends an IQ a machine produced.
pub(super) async fn send_iq(xmpp: &Xmpp, out: IqOut) {
    match Iq::try_from(out.to_element(None)) {
        Ok(iq) => {
            if let Err(e) = xmpp.send(iq).await {
                debug!(%e, "could not send a Jingle IQ");
            }
        }
        Err(e) => debug!(%e, "a Jingle machine produced an IQ that does not parse"),
    }
}

/// A channel whose IQs a task sends (the IBB drivers write into it).
pub(super) fn iq_sender(xmpp: &Xmpp) -> mpsc::Sender<IqOut> {
    let (tx, mut rx) = mpsc::channel::<IqOut>(64);
    let xmpp = xmpp.clone();
    tokio::spawn(async move {
        while let Some(o) = rx.recv().await {
            send_iq(&xmpp, o).await;
        }
    });
    tx
}

fn identity_is_proxy(info: &Element) -> bool {
    info.children().any(|i| {
        i.is("identity", NS_DISCO_INFO)
            && i.attr("category") == Some("proxy")
            && i.attr("type") == Some("bytestreams")
    })
}

/// The server's XEP-0065 proxy: disco#items of our domain, the first item
/// whose disco#info says `proxy`/`bytestreams`, then its streamhost. Every
/// query is bounded; no proxy is fine (host candidates and IBB remain).
pub(super) async fn discover_proxy(xmpp: &Xmpp) -> Option<StreamHost> {
    let domain = Jid::from(xmpp.jid().domain().to_owned());
    let items = xmpp
        .iq(
            Some(domain),
            IqRequest::Get(Element::bare("query", NS_DISCO_ITEMS)),
            DISCO_WAIT,
        )
        .await
        .ok()
        .flatten()?;
    let jids: Vec<Jid> = items
        .children()
        .filter(|c| c.is("item", NS_DISCO_ITEMS) && c.attr("node").is_none())
        .filter_map(|c| Jid::new(c.attr("jid")?).ok())
        .take(MAX_DISCO_ITEMS)
        .collect();
    for jid in jids {
        let info = xmpp
            .iq(
                Some(jid.clone()),
                IqRequest::Get(Element::bare("query", NS_DISCO_INFO)),
                DISCO_WAIT,
            )
            .await;
        let Ok(Some(info)) = info else { continue };
        if !identity_is_proxy(&info) {
            continue;
        }
        let hosts = xmpp
            .iq(
                Some(jid.clone()),
                IqRequest::Get(proxy::discovery_query()),
                DISCO_WAIT,
            )
            .await;
        if let Ok(Some(q)) = hosts
            && let Some(h) = proxy::parse_streamhosts(&q).into_iter().next()
        {
            debug!(proxy = %h.jid, addr = %h.addr, "found a SOCKS5 proxy");
            return Some(h);
        }
    }
    None
}

/// What we can offer as S5B candidates: a listener on every IPv4 address,
/// its host addresses, and the server's proxy.
pub(super) struct Local {
    pub listener: DirectListener,
    hosts: Vec<IpAddr>,
    pub proxy: Option<StreamHost>,
    kinds: JingleTransports,
}

impl Local {
    /// Binds the listener and finds the proxy.
    pub(super) async fn gather(xmpp: &Xmpp, kinds: JingleTransports) -> Result<Local, Failure> {
        let listener = DirectListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
            .await
            .map_err(|e| {
                Failure::new(
                    Exit::Failure,
                    format!("cannot listen for SOCKS5 connections: {e}"),
                )
            })?;
        let mut hosts: Vec<IpAddr> = crate::ice::driver::interface_addresses()
            .unwrap_or_default()
            .into_iter()
            .filter(IpAddr::is_ipv4)
            .take(MAX_HOSTS)
            .collect();
        // Last and least preferred: a peer on the same machine.
        hosts.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let proxy = match kinds {
            JingleTransports::IbbOnly => None,
            _ => discover_proxy(xmpp).await,
        };
        if kinds != JingleTransports::Any {
            hosts.clear();
        }
        Ok(Local {
            listener,
            hosts,
            proxy,
            kinds,
        })
    }

    /// The peer's candidates we try (all, unless `--jingle-transport`
    /// narrows them).
    pub(super) fn usable(&self, theirs: &[Candidate]) -> Vec<Candidate> {
        theirs
            .iter()
            .filter(|c| match self.kinds {
                JingleTransports::Any => true,
                JingleTransports::ProxyOnly => c.kind == CandidateType::Proxy,
                JingleTransports::IbbOnly => false,
            })
            .cloned()
            .collect()
    }

    /// Our candidates for one content (`tag` keeps cids unique).
    pub(super) fn candidates(&self, own: &FullJid, tag: &str) -> Vec<Candidate> {
        let port = self.listener.local_addr().port();
        let mut v: Vec<Candidate> = self
            .hosts
            .iter()
            .enumerate()
            .map(|(n, ip)| Candidate {
                cid: format!("{tag}h{n}"),
                host: ip.to_string(),
                jid: Jid::from(own.clone()),
                port,
                priority: priority(
                    CandidateType::Direct,
                    DIRECT_LOCAL_PREF.saturating_sub(n as u16),
                ),
                kind: CandidateType::Direct,
            })
            .collect();
        if let Some(p) = &self.proxy {
            v.push(Candidate {
                cid: format!("{tag}p"),
                host: p.addr.ip().to_string(),
                jid: p.jid.clone(),
                port: p.addr.port(),
                priority: priority(CandidateType::Proxy, 0),
                kind: CandidateType::Proxy,
            });
        }
        v
    }
}

/// A fresh random id.
pub(super) fn random_id(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

/// Copies `size` bytes of `path` into `w`, reporting the count, then shuts
/// `w` down. Returns the bytes written.
pub(super) async fn write_file<W: AsyncWrite + Unpin>(
    mut w: W,
    path: PathBuf,
    size: u64,
    stall: Duration,
    progress: impl Fn(u64),
) -> Result<u64, String> {
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut file = file.take(size);
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        match tokio::time::timeout(stall, w.write_all(&buf[..n])).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("the connection broke: {e}")),
            Err(_) => {
                return Err(format!(
                    "the receiver took nothing for {}s",
                    stall.as_secs()
                ));
            }
        }
        done += n as u64;
        progress(done);
    }
    w.shutdown()
        .await
        .map_err(|e| format!("the connection broke at the end: {e}"))?;
    if done != size {
        return Err(format!(
            "{} changed while it was sent ({done} of {size} bytes)",
            path.display()
        ));
    }
    Ok(done)
}

/// Connects to the proxy with `dst` and asks it to activate `sid` for
/// `target`.
pub(super) async fn activate_proxy(
    xmpp: &Xmpp,
    proxy_jid: Jid,
    addr: SocketAddr,
    dst: &str,
    sid: &str,
    target: &Jid,
) -> Result<TcpStream, String> {
    let s = socks5::connect(addr, dst)
        .await
        .map_err(|e| format!("cannot connect to the SOCKS5 proxy {proxy_jid}: {e}"))?;
    xmpp.iq(
        Some(proxy_jid.clone()),
        IqRequest::Set(proxy::activate_query(sid, target)),
        DISCO_WAIT,
    )
    .await
    .map_err(|e| format!("the SOCKS5 proxy {proxy_jid} did not activate the stream: {e}"))?;
    Ok(s)
}

/// One file to send.
pub(super) struct JingleItem {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: [u8; 32],
    /// The file is a folder's tar stream ([`spool_folder`]): offered as
    /// `application/x-tar` with gshare's folder marker.
    pub folder: bool,
}

/// A folder written as one tar stream into a temporary file.
pub(super) struct SpooledFolder {
    /// Removed when dropped (after the transfer, or on failure).
    pub path: tempfile::TempPath,
    /// Bytes of the tar stream.
    pub size: u64,
    /// SHA-256 of the tar stream.
    pub sha256: [u8; 32],
}

/// Writes the folder at `root` as a tar stream (the Google share folder
/// layout: every entry under `name/`) into a temporary file in `dir`, so
/// that the Jingle offer can carry its exact size and the checksum its
/// digest (docs/protocol.md §H.4).
pub(super) async fn spool_folder(
    root: PathBuf,
    name: String,
    dir: &std::path::Path,
) -> Result<SpooledFolder, String> {
    let named = tempfile::Builder::new()
        .prefix(".gshare-folder-")
        .suffix(".tar")
        .tempfile_in(dir)
        .map_err(|e| format!("cannot create a temporary file in {}: {e}", dir.display()))?;
    let (file, path) = named.into_parts();
    let mut out = tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::from_std(file));
    let mut rx = crate::http::spawn_tar(root, name, true);
    let mut size = 0u64;
    let sha256 = loop {
        match rx.recv().await {
            Some(SourceMsg::Data(bytes, _)) => {
                out.write_all(&bytes)
                    .await
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                size += bytes.len() as u64;
            }
            Some(SourceMsg::Done(Some(d))) => break d,
            Some(SourceMsg::Done(None)) => {
                return Err("the tar writer gave no digest".into());
            }
            Some(SourceMsg::Failed(e)) => return Err(e.to_string()),
            None => return Err("the tar writer stopped before the end".into()),
        }
    };
    out.flush()
        .await
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    debug!(path = %path.display(), size, "folder spooled");
    Ok(SpooledFolder { path, size, sha256 })
}

/// What the spawned tasks report.
enum Note {
    /// Our connection attempt to the peer's candidates ended.
    Connected(usize, Option<(Candidate, TcpStream)>),
    /// We activated our proxy candidate `cid`.
    Activated(usize, String),
    Progress(usize, u64),
    Written(usize, Result<u64, String>),
}

/// One content.
struct Lane {
    content: String,
    tsid: String,
    neg: S5bNegotiation,
    incoming: Option<oneshot::Receiver<TcpStream>>,
    outgoing: Option<TcpStream>,
    /// Waiting for the peer to activate its proxy before writing.
    awaiting_activation: Option<TcpStream>,
    started: bool,
    replaced: bool,
    ibb_in: Option<mpsc::Sender<IqIn>>,
    bytes: u64,
    done: bool,
    /// How the bytes went, for the `item` event.
    via: &'static str,
}

/// Sends `items` to `peer` in one Jingle session. `accept_wait` bounds the
/// wait for the answer (a person may be asked), `--timeout` every other
/// step.
pub(super) async fn send_by_jingle(
    xmpp: &Xmpp,
    mut incoming: mpsc::Receiver<Incoming>,
    peer: FullJid,
    items: &[JingleItem],
    report: &Reporter,
    common: &CommonOptions,
    accept_wait: Duration,
) -> Result<(), Failure> {
    let (timeout, kinds) = (common.timeout, common.jingle_transports);
    let own = xmpp.jid().clone();
    let peer_s = peer.to_string();
    let local = Local::gather(xmpp, kinds).await?;
    let mut lanes = Vec::with_capacity(items.len());
    let mut contents = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let content = format!("f{i}");
        let tsid = random_id("gs");
        let ours = local.candidates(&own, &format!("c{i}"));
        let dst = dst_addr(&tsid, &own.to_string(), &peer_s);
        let rx = local.listener.expect(&dst).ok();
        let file = FileDesc {
            name: Some(it.name.clone()),
            size: Some(it.size),
            media_type: Some(
                if it.folder {
                    "application/x-tar"
                } else {
                    "application/octet-stream"
                }
                .into(),
            ),
            // Other clients skip the marker and save a plain .tar.
            folder: it.folder,
            // The digest follows in a checksum: Libervia 0.9 cannot parse
            // a spec-form <hash> in the offer (docs/protocol.md §H.4).
            hash_used: vec!["sha-256".into()],
            ..FileDesc::default()
        };
        // An empty file goes in-band from the start: there is nothing to
        // stream, and Libervia 0.9 never ends a SOCKS5 stream that carried
        // no byte (docs/protocol.md §H.4).
        let empty = it.size == 0;
        let transport = if empty {
            Transport::Ibb(IbbTransport {
                sid: tsid.clone(),
                block_size: DEFAULT_BLOCK_SIZE,
                stanza: IbbStanza::Iq,
            })
        } else {
            Transport::S5b(S5bTransport {
                sid: tsid.clone(),
                dstaddr: Some(dst),
                payload: S5bPayload::Candidates(ours.clone()),
            })
        };
        contents.push(file_offer(&content, file, transport));
        lanes.push(Lane {
            content,
            tsid,
            neg: S5bNegotiation::new(true, ours),
            incoming: if empty { None } else { rx },
            outgoing: None,
            awaiting_activation: None,
            started: false,
            replaced: empty,
            ibb_in: None,
            bytes: 0,
            done: false,
            via: "ibb",
        });
    }
    let config = Config {
        iq_timeout: timeout,
        offer_timeout: accept_wait.max(timeout),
    };
    let mut s = JingleSession::initiate(
        Instant::now(),
        config,
        own.clone(),
        peer.clone(),
        random_id("gs"),
        contents,
    );
    let names: Vec<String> = items.iter().map(|i| i.name.clone()).collect();
    let total: u64 = items.iter().map(|i| i.size).sum();
    report.say(format!(
        "Offering {} ({}) to {peer} by Jingle file transfer",
        describe_items(&names),
        human_size(total)
    ));
    report.event(
        "offer",
        json!({"to": peer_s, "total": total, "method": "jingle",
               "items": items.iter().map(|i| json!({"name": i.name, "size": i.size,
                   "kind": if i.folder { "folder" } else { "file" }})).collect::<Vec<_>>()}),
    );
    let mut job = SendJob {
        xmpp: xmpp.clone(),
        own,
        peer,
        peer_s,
        items,
        lanes,
        report,
        bars: TransferReport::new(None, "total"),
        total,
        notes: mpsc::unbounded_channel(),
        iq_out: iq_sender(xmpp),
        accepted: false,
        local,
        finishing: None,
        negotiating: None,
        timeout,
    };
    let outcome = job.run(&mut s, &mut incoming).await;
    job.bars.finish(report);
    // Whatever happened, tell the peer (no-op once ended).
    let _ = s.terminate(
        Instant::now(),
        Reason::new(if outcome.is_ok() {
            ReasonKind::Success
        } else {
            ReasonKind::Cancel
        }),
    );
    while let Some(o) = s.poll_transmit() {
        send_iq(xmpp, o).await;
    }
    let elapsed = job.bars.elapsed();
    let bytes: u64 = job.lanes.iter().map(|l| l.bytes).sum();
    match &outcome {
        Ok(()) => {
            report.say(format!(
                "Sent {} ({}) to {} in {:.1}s, {} (Jingle, not encrypted)",
                describe_items(&names),
                human_size(bytes),
                job.peer_s,
                elapsed.as_secs_f64(),
                human_rate(bytes, elapsed)
            ));
            report.event(
                "done",
                json!({"bytes": bytes, "seconds": elapsed.as_secs_f64(), "method": "jingle"}),
            );
        }
        Err(f) => report.event(
            "failed",
            json!({"reason": f.message, "exit": f.exit.code()}),
        ),
    }
    outcome
}

struct SendJob<'a> {
    xmpp: Xmpp,
    own: FullJid,
    peer: FullJid,
    peer_s: String,
    items: &'a [JingleItem],
    lanes: Vec<Lane>,
    report: &'a Reporter,
    bars: TransferReport,
    total: u64,
    notes: (mpsc::UnboundedSender<Note>, mpsc::UnboundedReceiver<Note>),
    iq_out: mpsc::Sender<IqOut>,
    accepted: bool,
    local: Local,
    /// Every file is out and checksummed: the peer has until then to end.
    finishing: Option<tokio::time::Instant>,
    /// Set on accept: every file must be moving by then.
    negotiating: Option<tokio::time::Instant>,
    timeout: Duration,
}

impl SendJob<'_> {
    async fn run(
        &mut self,
        s: &mut JingleSession,
        incoming: &mut mpsc::Receiver<Incoming>,
    ) -> Result<(), Failure> {
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            loop {
                while let Some(o) = s.poll_transmit() {
                    send_iq(&self.xmpp, o).await;
                }
                while let Some(ev) = s.poll_event() {
                    if let Some(end) = self.on_event(s, ev) {
                        return end;
                    }
                }
                for i in 0..self.lanes.len() {
                    self.decide(s, i)?;
                }
                if s.is_drained() {
                    break;
                }
            }
            let timer = s.poll_timeout().map(tokio::time::Instant::from);
            let wake = [timer, self.finishing, self.negotiating]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                item = incoming.recv() => match item {
                    Some(Incoming::Iq(iq)) => {
                        if let Some(iq) = iq_in(*iq, &self.own) {
                            self.route(s, iq);
                        }
                    }
                    Some(Incoming::Presence(p)) => {
                        if p.from.as_ref() == Some(&Jid::from(self.peer.clone()))
                            && p.type_ == tokio_xmpp::parsers::presence::Type::Unavailable
                        {
                            return Err(Failure::new(
                                Exit::TransferFailed,
                                format!("{} went offline during the transfer", self.peer_s),
                            ));
                        }
                    }
                    Some(Incoming::Disconnected(e)) => {
                        return Err(Failure::new(
                            Exit::Failure,
                            format!("lost the XMPP connection while sending to {}: {e}", self.peer_s),
                        ));
                    }
                    Some(Incoming::Message(_)) => {}
                    None => {
                        return Err(Failure::new(
                            Exit::Failure,
                            format!("lost the XMPP connection while sending to {}", self.peer_s),
                        ));
                    }
                },
                Some(note) = self.notes.1.recv() => self.on_note(s, note)?,
                _ = super::send::sleep_until_opt(wake) => {
                    let now = tokio::time::Instant::now();
                    if self.negotiating.is_some_and(|t| now >= t) {
                        if self.lanes.iter().any(|l| !l.started) {
                            return Err(self.fail(format!(
                                "no way to move the bytes (SOCKS5 direct, proxy or in-band) \
                                 worked within {}s",
                                self.timeout.as_secs()
                            )));
                        }
                        self.negotiating = None;
                    }
                    if self.finishing.is_some_and(|t| now >= t) {
                        return Err(Failure::new(
                            Exit::TransferFailed,
                            format!(
                                "{} received every byte but did not confirm the transfer in time",
                                self.peer_s
                            ),
                        ));
                    }
                    s.handle_timeout(Instant::now());
                }
                _ = &mut ctrl_c => {
                    return Err(Failure::new(
                        Exit::Cancelled,
                        format!("cancelled; {} was told", self.peer_s),
                    ));
                }
            }
        }
    }

    /// An incoming IQ: the session's, else an IBB stream's.
    fn route(&mut self, s: &mut JingleSession, iq: IqIn) {
        let for_ibb = match &iq.payload {
            IqPayload::Set(el) | IqPayload::Get(el) => el.ns() == crate::bytestreams::ibb::NS_IBB,
            IqPayload::Result(_) | IqPayload::Error { .. } => true,
        };
        if !matches!(iq.payload, IqPayload::Set(ref el) if el.ns() == crate::bytestreams::ibb::NS_IBB)
            && s.handle_iq(Instant::now(), iq.clone())
        {
            return;
        }
        if for_ibb {
            for l in &self.lanes {
                if let Some(tx) = &l.ibb_in {
                    let _ = tx.try_send(iq.clone());
                }
            }
        }
    }

    fn lane(&self, content: &str) -> Option<usize> {
        self.lanes.iter().position(|l| l.content == content)
    }

    fn fail(&self, why: String) -> Failure {
        Failure::new(
            Exit::TransferFailed,
            format!("the transfer to {} failed: {why}", self.peer_s),
        )
    }

    fn on_event(&mut self, s: &mut JingleSession, ev: JingleEvent) -> Option<Result<(), Failure>> {
        let now = Instant::now();
        match ev {
            JingleEvent::Accepted { contents } => {
                self.accepted = true;
                // Two S5B attempts (direct, then after the replace IBB)
                // and a proxy activation fit in twice the timeout.
                self.negotiating = Some(tokio::time::Instant::now() + 2 * self.timeout);
                self.report.say(format!("{} accepted", self.peer_s));
                self.report.warn(not_encrypted_warning(&self.peer_s));
                self.report.event(
                    "accepted",
                    json!({"peer": self.peer_s, "encrypted": false, "method": "jingle"}),
                );
                self.bars.start(self.report, self.total);
                for c in contents {
                    let Some(i) = self.lane(&c.name) else {
                        continue;
                    };
                    match &c.transport {
                        Some(Transport::S5b(t)) => {
                            if let S5bPayload::Candidates(cands) = &t.payload {
                                let usable = self.local.usable(cands);
                                self.lanes[i].neg.set_remote(usable);
                            } else {
                                self.lanes[i].neg.remote_payload(&t.payload);
                            }
                            self.connect(i);
                        }
                        Some(Transport::Ibb(t)) if self.lanes[i].replaced => {
                            if !self.lanes[i].started {
                                self.start_ibb(i, t);
                            }
                        }
                        _ => {
                            // An answer without S5B candidates: try none.
                            self.connect(i);
                        }
                    }
                }
            }
            JingleEvent::TransportInfo {
                content,
                transport: Transport::S5b(t),
            } => {
                let i = self.lane(&content)?;
                match &t.payload {
                    S5bPayload::Activated(_) => {
                        if let Some(stream) = self.lanes[i].awaiting_activation.take() {
                            self.start_writing(i, stream);
                        }
                    }
                    S5bPayload::ProxyError => {
                        if self.lanes[i].awaiting_activation.take().is_some() {
                            self.replace(s, i);
                        }
                    }
                    p => {
                        self.lanes[i].neg.remote_payload(p);
                    }
                }
            }
            JingleEvent::TransportInfo { .. } => {}
            JingleEvent::TransportReplace { content, transport } => {
                let i = self.lane(&content)?;
                match transport {
                    Transport::Ibb(t) if !self.lanes[i].started => {
                        if s.transport_accept(now, &content, Transport::Ibb(t.clone()))
                            .is_ok()
                        {
                            self.lanes[i].replaced = true;
                            self.start_ibb(i, &t);
                        }
                    }
                    _ => {
                        let _ = s.transport_reject(now, &content);
                    }
                }
            }
            JingleEvent::TransportAccepted {
                content,
                transport: Transport::Ibb(t),
            } => {
                let i = self.lane(&content)?;
                if !self.lanes[i].started {
                    self.start_ibb(i, &t);
                }
            }
            JingleEvent::TransportAccepted { content, .. }
            | JingleEvent::TransportRejected { content } => {
                return Some(Err(self.fail(format!(
                    "{} refused every way to move the bytes of content {content}",
                    self.peer_s
                ))));
            }
            JingleEvent::ContentRemoved { content } => {
                let i = self.lane(&content)?;
                let name = &self.items[i].name;
                self.report.warn(format!("{} declined {name}", self.peer_s));
                self.lanes[i].done = true;
                self.lanes[i].started = true;
                self.check_finished();
            }
            JingleEvent::Checksum { .. } | JingleEvent::Received { .. } => {}
            JingleEvent::Offered { .. } => {}
            JingleEvent::Terminated { reason, by_peer } => {
                debug!(?reason, by_peer, "Jingle session ended");
                let all = self.lanes.iter().all(|l| l.done);
                return Some(match reason.kind {
                    ReasonKind::Success if all => Ok(()),
                    ReasonKind::Decline if !self.accepted => Err(Failure::new(
                        Exit::Declined,
                        format!("{} declined the offer", self.peer_s),
                    )),
                    ReasonKind::Busy if !self.accepted => Err(Failure::new(
                        Exit::Declined,
                        format!("{} is busy and declined the offer", self.peer_s),
                    )),
                    ReasonKind::Timeout if !self.accepted => Err(Failure::new(
                        Exit::Unreachable,
                        format!("{} did not answer the offer in time", self.peer_s),
                    )),
                    _ if !by_peer && !self.accepted => Err(Failure::new(
                        Exit::Unreachable,
                        format!(
                            "{} did not take the Jingle offer ({})",
                            self.peer_s,
                            reason.kind.as_str()
                        ),
                    )),
                    ReasonKind::Cancel | ReasonKind::Decline if by_peer => Err(Failure::new(
                        Exit::Cancelled,
                        format!(
                            "{} cancelled the transfer before it was complete",
                            self.peer_s
                        ),
                    )),
                    kind => Err(self.fail(format!(
                        "the session ended with {}{}",
                        kind.as_str(),
                        reason
                            .text
                            .as_deref()
                            .map(|t| format!(" ({t})"))
                            .unwrap_or_default()
                    ))),
                });
            }
        }
        None
    }

    /// Tries the peer's candidates for lane `i` in a task.
    fn connect(&mut self, i: usize) {
        let order = self.lanes[i].neg.connect_order();
        let dst = dst_addr(&self.lanes[i].tsid, &self.peer_s, &self.own.to_string());
        let tx = self.notes.0.clone();
        tokio::spawn(async move {
            let r = s5b::connect_first(&order, &dst).await;
            let _ = tx.send(Note::Connected(i, r));
        });
    }

    fn replace(&mut self, s: &mut JingleSession, i: usize) {
        let l = &mut self.lanes[i];
        if l.replaced {
            return;
        }
        l.replaced = true;
        debug!(content = %l.content, "S5B failed, replacing with IBB");
        let t = Transport::Ibb(IbbTransport {
            sid: l.tsid.clone(),
            block_size: DEFAULT_BLOCK_SIZE,
            stanza: IbbStanza::Iq,
        });
        if let Err(e) = s.transport_replace(Instant::now(), &l.content, t) {
            debug!(%e, "transport-replace failed");
        }
    }

    /// Acts on a finished negotiation.
    fn decide(&mut self, s: &mut JingleSession, i: usize) -> Result<(), Failure> {
        let l = &mut self.lanes[i];
        if l.started || l.replaced || l.awaiting_activation.is_some() {
            return Ok(());
        }
        let Some(outcome) = l.neg.outcome() else {
            return Ok(());
        };
        match outcome {
            Outcome::Fallback => self.replace(s, i),
            Outcome::UseOutgoing { candidate } => {
                let Some(stream) = l.outgoing.take() else {
                    self.replace(s, i);
                    return Ok(());
                };
                if candidate.kind == CandidateType::Proxy {
                    // The peer's proxy: it activates, then says so.
                    l.awaiting_activation = Some(stream);
                    l.via = "socks5-proxy";
                } else {
                    self.start_writing(i, stream);
                }
            }
            Outcome::UseIncoming { candidate } if candidate.kind == CandidateType::Proxy => {
                l.started = true;
                l.via = "socks5-proxy";
                let Some(p) = self.local.proxy.clone() else {
                    return Err(self.fail("the proxy vanished".into()));
                };
                let (xmpp, tx, tsid) = (self.xmpp.clone(), self.notes.0.clone(), l.tsid.clone());
                let dst = dst_addr(&tsid, &self.own.to_string(), &self.peer_s);
                let target = Jid::from(self.peer.clone());
                let it = &self.items[i];
                let (path, size, stall) = (it.path.clone(), it.size, self.timeout);
                let cid = candidate.cid.clone();
                tokio::spawn(async move {
                    match activate_proxy(&xmpp, p.jid, p.addr, &dst, &tsid, &target).await {
                        Ok(stream) => {
                            let _ = tx.send(Note::Activated(i, cid));
                            let ptx = tx.clone();
                            let r = write_file(stream, path, size, stall, move |n| {
                                let _ = ptx.send(Note::Progress(i, n));
                            })
                            .await;
                            let _ = tx.send(Note::Written(i, r));
                        }
                        Err(e) => {
                            let _ = tx.send(Note::Written(i, Err(e)));
                        }
                    }
                });
            }
            Outcome::UseIncoming { .. } => {
                l.started = true;
                l.via = "socks5";
                let Some(rx) = l.incoming.take() else {
                    return Err(self.fail("the peer's connection to us was lost".into()));
                };
                let tx = self.notes.0.clone();
                let it = &self.items[i];
                let (path, size, stall) = (it.path.clone(), it.size, self.timeout);
                tokio::spawn(async move {
                    let r = match tokio::time::timeout(INCOMING_WAIT, rx).await {
                        Ok(Ok(stream)) => {
                            let ptx = tx.clone();
                            write_file(stream, path, size, stall, move |n| {
                                let _ = ptx.send(Note::Progress(i, n));
                            })
                            .await
                        }
                        _ => Err("the peer did not connect to our SOCKS5 candidate".into()),
                    };
                    let _ = tx.send(Note::Written(i, r));
                });
            }
        }
        Ok(())
    }

    fn start_writing(&mut self, i: usize, stream: TcpStream) {
        self.lanes[i].started = true;
        if self.lanes[i].via == "ibb" {
            self.lanes[i].via = "socks5";
        }
        let _ = stream.set_nodelay(true);
        let tx = self.notes.0.clone();
        let it = &self.items[i];
        let (path, size, stall) = (it.path.clone(), it.size, self.timeout);
        tokio::spawn(async move {
            let ptx = tx.clone();
            let r = write_file(stream, path, size, stall, move |n| {
                let _ = ptx.send(Note::Progress(i, n));
            })
            .await;
            let _ = tx.send(Note::Written(i, r));
        });
    }

    fn start_ibb(&mut self, i: usize, t: &IbbTransport) {
        let l = &mut self.lanes[i];
        l.started = true;
        let (in_tx, in_rx) = mpsc::channel(64);
        l.ibb_in = Some(in_tx);
        let sender = IbbSender::open(
            Instant::now(),
            Jid::from(self.peer.clone()),
            t.sid.clone(),
            t.block_size.min(DEFAULT_BLOCK_SIZE),
            IBB_WINDOW,
        );
        let (w, task) = ibb_writer(sender, in_rx, self.iq_out.clone());
        let tx = self.notes.0.clone();
        let it = &self.items[i];
        let (path, size, stall) = (it.path.clone(), it.size, self.timeout);
        tokio::spawn(async move {
            let ptx = tx.clone();
            let mut r = write_file(w, path, size, stall, move |n| {
                let _ = ptx.send(Note::Progress(i, n));
            })
            .await;
            if r.is_ok() {
                r = match task.await {
                    Ok(Ok(_)) => r,
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(format!("the IBB task failed: {e}")),
                };
            } else {
                task.abort();
            }
            let _ = tx.send(Note::Written(i, r));
        });
    }

    fn on_note(&mut self, s: &mut JingleSession, note: Note) -> Result<(), Failure> {
        let now = Instant::now();
        match note {
            Note::Connected(i, r) => {
                let l = &mut self.lanes[i];
                let report = r
                    .as_ref()
                    .map_or(Report::Error, |(c, _)| Report::Used(c.cid.clone()));
                l.outgoing = r.map(|(_, st)| st);
                let payload = l.neg.local_result(report);
                let t = Transport::S5b(S5bTransport {
                    sid: l.tsid.clone(),
                    dstaddr: None,
                    payload,
                });
                let content = l.content.clone();
                if let Err(e) = s.transport_info(now, &content, t) {
                    debug!(%e, "cannot send our S5B report");
                }
            }
            Note::Activated(i, cid) => {
                let l = &self.lanes[i];
                let t = Transport::S5b(S5bTransport {
                    sid: l.tsid.clone(),
                    dstaddr: None,
                    payload: S5bPayload::Activated(cid),
                });
                let content = l.content.clone();
                if let Err(e) = s.transport_info(now, &content, t) {
                    debug!(%e, "cannot send activated");
                }
            }
            Note::Progress(i, n) => {
                let was = self.lanes[i].bytes;
                if was == 0 && n > 0 {
                    self.bars.item_started(
                        self.report,
                        &self.items[i].name,
                        Some(self.items[i].size),
                    );
                }
                self.lanes[i].bytes = n;
                let sum = self.lanes.iter().map(|l| l.bytes).sum();
                let it = &self.items[i];
                self.bars
                    .progress(self.report, &it.name, n, Some(it.size), sum, self.total);
            }
            Note::Written(i, Ok(n)) => {
                self.lanes[i].bytes = n;
                self.lanes[i].done = true;
                let it = &self.items[i];
                let file = FileDesc {
                    hashes: vec![Hash {
                        algo: "sha-256".into(),
                        digest: it.sha256.to_vec(),
                    }],
                    ..FileDesc::default()
                };
                let content = self.lanes[i].content.clone();
                if let Err(e) = s.checksum(now, &content, file) {
                    debug!(%e, "cannot send the checksum");
                }
                self.report.event(
                    "item",
                    json!({"name": it.name, "size": n, "sha256": hex::encode(it.sha256),
                           "kind": if it.folder { "folder" } else { "file" },
                           "transport": self.lanes[i].via}),
                );
                self.check_finished();
            }
            Note::Written(i, Err(e)) => {
                return Err(self.fail(format!("sending {}: {e}", self.items[i].name)));
            }
        }
        Ok(())
    }

    fn check_finished(&mut self) {
        if self.finishing.is_none() && self.lanes.iter().all(|l| l.done) {
            self.finishing = Some(tokio::time::Instant::now() + self.timeout);
        }
    }
}
