//! `gshare send`: offer, wait, serve, report.
//!
//! [`run`] sets up (files, login, recipient, offer) and then drives a
//! [`Sender`]: one method per input (a session signal, a channel message,
//! the lost-connection timer, Ctrl-C), each returning `Some(outcome)` when
//! the job is over.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::by_jingle::{JINGLE_NOT_ENCRYPTED, JingleItem, send_by_jingle, spool_folder};
use super::by_upload::{UploadItem, send_by_upload};
use super::channel::{ChannelEvent, ChannelMsg, ChannelSpec, Channels, Negotiated};
use super::report::{Reporter, TransferReport, describe_items, human_rate, human_size};
use super::resolve::{Via, Want, resolve_peer};
use super::signalling::{Signal, Signalling};
use super::{Exit, Failure, SendMethod, SendOptions, login, parse_target, resolve_target};
use crate::config::Settings;
use crate::http::{Catalog, ServeEvent, ServeOptions};
use crate::secure::{Identity, TlsRole};
use crate::session::{
    self, Extension, Manifest, ManifestItem, SessionEvent, SessionHandle, SessionManager,
    TerminateReason,
};
use crate::xmpp::ConnectOptions;

/// One offered item and where its bytes come from.
struct Offered {
    name: String,
    path: PathBuf,
    folder: bool,
    size: u64,
    /// SHA-256 of a file's `size` bytes, taken before the offer (announced
    /// to gshare peers, who check it); `None` for folders.
    sha256: Option<[u8; 32]>,
    /// Keeps a spooled standard input alive until the end.
    _spool: Option<tempfile::TempPath>,
}

fn collect(files: &[String], name_for_stdin: Option<&str>) -> Result<Vec<Offered>, Failure> {
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        if f == "-" {
            let spooled = super::files::spool_stdin(&std::env::temp_dir()).map_err(|e| {
                Failure::new(Exit::Failure, format!("cannot read standard input: {e}"))
            })?;
            out.push(Offered {
                name: name_for_stdin.unwrap_or("stdin").to_string(),
                path: spooled.path.clone(),
                folder: false,
                size: spooled.size,
                sha256: Some(spooled.sha256),
                _spool: spooled.spool,
            });
            continue;
        }
        let path = PathBuf::from(f);
        let meta =
            std::fs::metadata(&path).map_err(|e| Failure::new(Exit::Usage, format!("{f}: {e}")))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty() && n != "." && n != "..")
            .or_else(|| {
                std::fs::canonicalize(&path)
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            })
            .ok_or_else(|| Failure::new(Exit::Usage, format!("{f}: cannot tell its name")))?;
        if meta.is_dir() {
            let size = crate::http::folder_size(&path)
                .map_err(|e| Failure::new(Exit::Failure, format!("{f}: {e}")))?;
            out.push(Offered {
                name,
                path,
                folder: true,
                size,
                sha256: None,
                _spool: None,
            });
        } else if meta.is_file() {
            out.push(Offered {
                name,
                path,
                folder: false,
                size: meta.len(),
                sha256: None,
                _spool: None,
            });
        } else {
            return Err(Failure::new(
                Exit::Usage,
                format!("{f}: not a regular file or folder (use `-` for a pipe)"),
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for o in &out {
        if !seen.insert(o.name.as_str()) {
            return Err(Failure::new(
                Exit::Usage,
                format!(
                    "two items would be offered under the same name {:?}",
                    o.name
                ),
            ));
        }
    }
    Ok(out)
}

/// Why the upload method cannot take these items: it stores files only (a
/// folder has no single file to store; tar it first).
fn folder_refusal(offered: &[Offered]) -> Option<String> {
    offered.iter().find(|o| o.folder).map(|folder| {
        format!(
            "{:?} is a folder; the upload method sends files only (tar it first: \
             tar c DIR | gshare send - --name DIR.tar JID)",
            folder.name
        )
    })
}

/// Sends every item by upload.
async fn upload_all(
    settings: &Settings,
    xmpp: &crate::xmpp::Xmpp,
    to: &tokio_xmpp::parsers::jid::BareJid,
    offered: &[Offered],
    report: &Reporter,
    why: Option<String>,
) -> Result<(), Failure> {
    if let Some(why) = folder_refusal(offered) {
        // Only the automatic fallback gets here (`--method upload` checks
        // before logging in): the recipient stays unreachable.
        return Err(Failure::new(Exit::Unreachable, why));
    }
    let items: Vec<UploadItem<'_>> = offered
        .iter()
        .map(|o| UploadItem {
            name: &o.name,
            path: &o.path,
            size: o.size,
        })
        .collect();
    send_by_upload(xmpp, settings.ca_file.as_deref(), to, &items, report, why).await
}

/// Sends every item over Jingle to `peer` (the method chosen for it).
async fn jingle_all(
    xmpp: &crate::xmpp::Xmpp,
    incoming: mpsc::Receiver<crate::xmpp::Incoming>,
    peer: tokio_xmpp::parsers::jid::FullJid,
    opts: &SendOptions,
    offered: &[Offered],
    report: &Reporter,
    require_encryption: bool,
) -> Result<(), Failure> {
    let outcome = async {
        if require_encryption {
            return Err(Failure::new(
                Exit::NotEncrypted,
                format!("{peer} can receive only by Jingle file transfer; {JINGLE_NOT_ENCRYPTED}"),
            ));
        }
        // A folder goes as one tar stream, spooled first for its size and
        // digest (README, Jingle; docs/protocol.md §H.4). The spools are
        // removed when this returns, sent or not.
        let mut spools = Vec::new();
        let mut items = Vec::with_capacity(offered.len());
        for o in offered {
            if o.folder {
                let s = spool_folder(o.path.clone(), o.name.clone(), &std::env::temp_dir())
                    .await
                    .map_err(|e| {
                        Failure::new(
                            Exit::Failure,
                            format!("cannot pack the folder {:?} for Jingle: {e}", o.name),
                        )
                    })?;
                items.push(JingleItem {
                    name: format!("{}.tar", o.name),
                    path: s.path.to_path_buf(),
                    size: s.size,
                    sha256: s.sha256,
                    folder: true,
                });
                spools.push(s.path);
            } else {
                items.push(JingleItem {
                    name: o.name.clone(),
                    path: o.path.clone(),
                    size: o.size,
                    sha256: o.sha256.unwrap_or_default(),
                    folder: false,
                });
            }
        }
        let accept_wait = opts.common.timeout.max(opts.wait);
        let sent = send_by_jingle(
            xmpp,
            incoming,
            peer,
            &items,
            report,
            &opts.common,
            accept_wait,
        )
        .await;
        drop(spools);
        sent
    }
    .await;
    xmpp.close().await;
    outcome
}

/// Why `--require-encryption` rules out the upload method.
const UPLOAD_NOT_ENCRYPTED: &str = "the upload method stores the file on your server, which can \
     read it (HTTPS protects only the way there), and encryption is required";

/// Runs `gshare send`.
pub async fn run(settings: &Settings, opts: &SendOptions) -> Result<(), Failure> {
    let report = Reporter::new(opts.common.json, opts.common.quiet);
    let target = parse_target(&opts.target)?;
    let mut offered = collect(&opts.files, opts.stdin_name.as_deref())?;
    if opts.method == SendMethod::Upload
        && let Some(why) = folder_refusal(&offered)
    {
        return Err(Failure::new(Exit::Usage, why));
    }
    let require_encryption = opts.common.require_encryption || settings.require_encryption;
    if opts.method == SendMethod::Upload && require_encryption {
        return Err(Failure::new(Exit::NotEncrypted, UPLOAD_NOT_ENCRYPTED));
    }
    if opts.method == SendMethod::Jingle && require_encryption {
        return Err(Failure::new(Exit::NotEncrypted, JINGLE_NOT_ENCRYPTED));
    }
    // Files are hashed on blocking threads while we log in.
    let hashing: Vec<_> = offered
        .iter()
        .map(|o| {
            (!o.folder && o.sha256.is_none())
                .then(|| tokio::spawn(super::files::digest_file(o.path.clone(), o.size)))
        })
        .collect();

    let options = ConnectOptions {
        forward_namespaces: vec![
            session::stanza::NS_SESSION,
            crate::jingle::codec::NS_JINGLE,
            crate::bytestreams::ibb::NS_IBB,
        ],
        ..ConnectOptions::default()
    };
    let (xmpp, mut incoming) = login(settings, options).await?;
    let by_upload = |why: Option<String>| {
        let xmpp = xmpp.clone();
        let to = target.to_bare();
        let offered = &offered;
        let report = &report;
        async move {
            let outcome = upload_all(settings, &xmpp, &to, offered, report, why).await;
            xmpp.close().await;
            outcome
        }
    };
    let (peer, via) = match opts.method {
        SendMethod::Upload => return by_upload(None).await,
        SendMethod::Google => (
            resolve_target(&xmpp, &target, opts.wait).await?,
            Via::Google,
        ),
        SendMethod::Jingle => {
            resolve_peer(&xmpp, &mut incoming, &target, opts.wait, Want::Jingle).await?
        }
        SendMethod::P2p => {
            resolve_peer(&xmpp, &mut incoming, &target, opts.wait, Want::Either).await?
        }
        SendMethod::Auto => {
            match resolve_peer(&xmpp, &mut incoming, &target, opts.wait, Want::Either).await {
                Ok(peer) => peer,
                // A bare JID with no resource that can receive peer to peer
                // within --wait: store the files on our server instead.
                Err(f)
                    if f.exit == Exit::Unreachable
                        && target.resource().is_none()
                        && require_encryption =>
                {
                    return Err(Failure::new(
                        Exit::NotEncrypted,
                        format!("{}; no fallback: {UPLOAD_NOT_ENCRYPTED}", f.message),
                    ));
                }
                Err(f) if f.exit == Exit::Unreachable && target.resource().is_none() => {
                    let why = format!(
                        "{} has no online resource that can receive files peer to peer; \
                     sending by upload instead",
                        target.to_bare()
                    );
                    return match by_upload(Some(why)).await {
                        // No upload service either: say both.
                        Err(u) if u.exit == Exit::Unreachable => Err(Failure::new(
                            Exit::Unreachable,
                            format!("{}; no fallback: {}", f.message, u.message),
                        )),
                        other => other,
                    };
                }
                Err(f) => return Err(f),
            }
        }
    };
    for (o, task) in offered.iter_mut().zip(hashing) {
        if let Some(task) = task {
            let digest = task
                .await
                .map_err(|e| Failure::new(Exit::Failure, format!("{}: {e}", o.name)))?
                .map_err(|e| Failure::new(Exit::Failure, format!("{}: {e}", o.path.display())))?;
            o.sha256 = Some(digest);
        }
    }
    if via == Via::Jingle {
        return jingle_all(
            &xmpp,
            incoming,
            peer,
            opts,
            &offered,
            &report,
            require_encryption,
        )
        .await;
    }

    let manifest = Manifest {
        items: offered
            .iter()
            .map(|o| {
                if o.folder {
                    ManifestItem::folder(o.name.clone(), o.size)
                } else {
                    ManifestItem::file(o.name.clone(), o.size)
                }
            })
            .collect(),
    };
    let total = manifest.total_size();
    let timeout = opts.common.timeout;
    let config = session::Config {
        session_timeout: timeout,
        iq_timeout: timeout,
        // A person may be answering a prompt: at least the session timeout.
        accept_timeout: timeout.max(Duration::from_secs(opts.wait.as_secs())),
        ..session::Config::default()
    };
    let machine = SessionManager::new(xmpp.jid().clone(), config);
    let mut sig = Signalling::new(xmpp.clone(), incoming, machine);
    // A fresh key and certificate for this transfer (src/secure says why
    // per session); its fingerprint, the items' digests, and that we answer
    // Range requests go into our extension (docs/protocol.md §H.2). Classic
    // receivers skip it.
    let identity = if opts.common.no_encryption {
        None
    } else {
        Some(Arc::new(
            Identity::generate().map_err(|e| Failure::new(Exit::Failure, e.to_string()))?,
        ))
    };
    let extension = Extension {
        fingerprint: identity.as_ref().map(|i| i.fingerprint()),
        digests: offered.iter().map(|o| o.sha256).collect(),
        resume: true,
    };
    let handle = sig
        .machine
        .initiate_with(Instant::now(), peer.clone(), manifest, Some(extension))
        .map_err(|e| Failure::new(Exit::Failure, format!("cannot offer: {e}")))?;
    let source_path = sig
        .machine
        .info(handle)
        .map(|i| i.source_path.clone())
        .unwrap_or_default();
    let mut catalog = Catalog::new(source_path);
    for o in &offered {
        if o.folder {
            catalog.push_folder(o.name.clone(), o.path.clone());
        } else {
            catalog.push_file(o.name.clone(), o.path.clone(), o.size);
        }
    }
    let names: Vec<String> = offered.iter().map(|o| o.name.clone()).collect();
    report.say(format!(
        "Offering {} ({}) to {peer}",
        describe_items(&names),
        human_size(total)
    ));
    report.event(
        "offer",
        json!({"to": peer.to_string(), "total": total, "method": Via::Google.as_str(),
               "items": offered.iter().map(|o| json!({"name": o.name, "size": o.size,
                   "kind": if o.folder { "folder" } else { "file" }})).collect::<Vec<_>>()}),
    );

    let spec = ChannelSpec::new(settings, &opts.common, &xmpp).await?;
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
    let mut job = Sender {
        sig,
        report,
        bars: TransferReport::new(None, "total"),
        peer: peer.to_string(),
        handle,
        spec,
        catalog: Arc::new(catalog),
        served: vec![0; offered.len()],
        offered,
        names,
        total,
        channels: Channels::default(),
        ctl: ctl_tx,
        complete: false,
        peer_sends_complete: false,
        serve_options: ServeOptions::default(),
        lost_deadline: None,
        identity,
        require_encryption,
        negotiated: Negotiated::default(),
    };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let outcome = loop {
        let step = tokio::select! {
            _ = sleep_until_opt(job.lost_deadline) => job.on_lost_deadline(),
            signal = job.sig.next(), if !job.sig.is_lost() => job.on_signal(signal),
            Some(msg) = ctl_rx.recv() => job.on_channel(msg),
            _ = &mut ctrl_c => job.on_ctrl_c().await,
        };
        if let Some(outcome) = step {
            break outcome;
        }
    };
    job.end(outcome).await
}

/// The running offer: everything the inputs change.
struct Sender {
    sig: Signalling,
    report: Reporter,
    bars: TransferReport,
    /// The recipient's full JID, for messages.
    peer: String,
    handle: SessionHandle,
    spec: ChannelSpec,
    catalog: Arc<Catalog>,
    offered: Vec<Offered>,
    names: Vec<String>,
    total: u64,
    /// Bytes served per item (bounded by the manifest: one entry per item).
    served: Vec<u64>,
    channels: Channels,
    ctl: mpsc::UnboundedSender<ChannelMsg<ServeEvent>>,
    /// The receiver sent `<complete/>`.
    complete: bool,
    /// libjingle and gabble may terminate without `<complete/>`; then every
    /// byte served counts as complete (docs/protocol.md §A.7). gshare always
    /// sends it, so from a gshare peer a terminate without it means the
    /// transfer failed on its side (disk full, bad name, …) even if we
    /// wrote every byte.
    peer_sends_complete: bool,
    /// The HTTP additions the receiver's extension switched on (none for
    /// classic receivers: they see exactly the classic bytes).
    serve_options: ServeOptions,
    /// Set once the XMPP connection is lost and every byte is out.
    lost_deadline: Option<tokio::time::Instant>,
    /// Our certificate for this transfer (`None` with `--no-encryption`).
    identity: Option<Arc<Identity>>,
    /// `--require-encryption` or the config key.
    require_encryption: bool,
    /// Set from the receiver's accept; every channel uses it.
    negotiated: Negotiated,
}

/// `Some(outcome)` ends the job.
type Step = Option<Result<(), Failure>>;

impl Sender {
    fn all_served(&self) -> bool {
        self.served
            .iter()
            .zip(&self.offered)
            .all(|(s, o)| *s >= o.size)
    }

    /// Gives the last segments time to be acknowledged once the XMPP
    /// connection is gone and every byte is out.
    fn arm_lost_deadline(&mut self) {
        if self.sig.is_lost() && self.all_served() {
            self.lost_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(3));
        }
    }

    fn on_lost_deadline(&mut self) -> Step {
        Some(Err(Failure::new(
            Exit::Failure,
            format!(
                "lost the XMPP connection; every byte was sent, but {} could not confirm",
                self.peer
            ),
        )))
    }

    fn on_signal(&mut self, signal: Signal) -> Step {
        match signal {
            Signal::Lost(e) => {
                if self.channels.is_empty() {
                    return Some(Err(Failure::new(
                        Exit::Failure,
                        format!(
                            "lost the XMPP connection while sending to {}: {e}",
                            self.peer
                        ),
                    )));
                }
                self.report.warn(format!(
                    "lost the XMPP connection ({e}); the transfer goes on over the direct path"
                ));
                self.arm_lost_deadline();
                None
            }
            Signal::PeerOffline(_) => {
                if self.complete {
                    return Some(Ok(()));
                }
                let _ = self.sig.machine.terminate(Instant::now(), self.handle);
                Some(Err(Failure::new(
                    Exit::TransferFailed,
                    format!("{} went offline during the transfer", self.peer),
                )))
            }
            Signal::Session(ev) => self.on_session(ev),
            // Messages and other IQs carry nothing for a Google sender.
            Signal::Message(_) | Signal::Iq(_) => None,
        }
    }

    fn on_session(&mut self, ev: SessionEvent) -> Step {
        match ev {
            SessionEvent::Accepted { extension, .. } => {
                if let Some(ext) = &extension {
                    self.serve_options = ServeOptions {
                        ranges: ext.resume,
                        digest_trailers: true,
                    };
                }
                self.negotiated =
                    Negotiated::secure(self.identity.as_ref(), extension.as_ref(), TlsRole::Server);
                let encrypted = self.negotiated.protection.is_encrypted();
                if !encrypted && self.require_encryption {
                    // Before any channel exists: not a byte has moved.
                    let _ = self.sig.machine.terminate(Instant::now(), self.handle);
                    return Some(Err(Failure::new(
                        Exit::NotEncrypted,
                        format!(
                            "{} cannot encrypt the transfer (not gshare, or encryption is off there); nothing was sent because encryption is required",
                            self.peer
                        ),
                    )));
                }
                let security = self.negotiated.describe_security();
                self.report
                    .say(format!("{} accepted ({security})", self.peer));
                if !encrypted {
                    self.report.warn(format!(
                        "the transfer to {} is not encrypted: the peer does not support it",
                        self.peer
                    ));
                }
                let mut fields = self.negotiated.security_json();
                fields.insert("peer".into(), self.peer.clone().into());
                self.report.event("accepted", fields.into());
                self.bars.start(&self.report, self.total);
            }
            SessionEvent::ChannelRequested { name, .. } => {
                debug!(%name, "peer opened a channel");
                let catalog = self.catalog.clone();
                let options = self.serve_options;
                self.channels.start(
                    self.handle,
                    self.spec.clone().named(&name),
                    self.negotiated.clone(),
                    self.ctl.clone(),
                    move |stream, link, progress| {
                        super::serve::serve(stream, link, catalog, options, progress)
                    },
                );
            }
            SessionEvent::ChannelGone { handle, name } => self.channels.stop(handle, &name),
            SessionEvent::RemoteCandidates {
                handle,
                channel,
                candidates,
            } => self.channels.add_remote(handle, &channel, candidates),
            SessionEvent::Complete { .. } => {
                self.complete = true;
                debug!("receiver reported complete");
            }
            SessionEvent::Terminated { reason, .. } => {
                let done = self.complete || (self.all_served() && !self.peer_sends_complete);
                if !done
                    && self.peer_sends_complete
                    && self.all_served()
                    && matches!(reason, TerminateReason::PeerTerminated { .. })
                {
                    // Every byte went out, but a gshare receiver that ends
                    // without <complete/> did not keep the files: its check
                    // (digest, size, disk) failed.
                    return Some(Err(Failure::new(
                        Exit::TransferFailed,
                        format!(
                            "{} received every byte but did not confirm the transfer: \
                             its check of what arrived failed, and nothing was saved there",
                            self.peer
                        ),
                    )));
                }
                return Some(finish(reason, done, &self.peer));
            }
            SessionEvent::Offer { handle: other, .. } => {
                // We are sending, not receiving.
                let _ = self.sig.machine.reject(Instant::now(), other);
            }
        }
        None
    }

    fn on_channel(&mut self, msg: ChannelMsg<ServeEvent>) -> Step {
        if !self.channels.admit(&msg) {
            return None;
        }
        match msg.event {
            ChannelEvent::LocalCandidates(candidates) => {
                if let Err(e) = self.sig.machine.send_candidates(
                    Instant::now(),
                    self.handle,
                    &msg.name,
                    candidates,
                ) {
                    debug!(%e, "cannot send candidates");
                }
            }
            ChannelEvent::Connected(link) => {
                info!(name = %msg.name, peer_is_gshare = link.peer_is_gshare, "transport connected");
                self.peer_sends_complete |= link.peer_is_gshare;
                let _ = self.sig.machine.transport_connected(self.handle);
            }
            ChannelEvent::Progress(ev) => self.on_serve(ev),
            ChannelEvent::Failed(error) => {
                if !self.complete {
                    let _ = self.sig.machine.terminate(Instant::now(), self.handle);
                    return Some(Err(Failure::new(
                        Exit::TransferFailed,
                        format!("the connection to {} failed: {error}", self.peer),
                    )));
                }
            }
            ChannelEvent::Finished => {}
        }
        None
    }

    fn on_serve(&mut self, ev: ServeEvent) {
        match ev {
            ServeEvent::Started { item } => {
                if let Some(o) = self.offered.get(item) {
                    self.bars.item_started(&self.report, &o.name, Some(o.size));
                }
            }
            ServeEvent::Progress { item, bytes } => {
                if let Some(s) = self.served.get_mut(item) {
                    *s = bytes;
                }
                let sum = self.served.iter().sum();
                if let Some(o) = self.offered.get(item) {
                    self.bars
                        .progress(&self.report, &o.name, bytes, Some(o.size), sum, self.total);
                }
            }
            ServeEvent::Served { item, bytes } => {
                if let Some(s) = self.served.get_mut(item) {
                    *s = bytes;
                }
                if let Some(o) = self.offered.get(item) {
                    self.report
                        .event("item", json!({"name": o.name, "size": bytes}));
                }
                self.arm_lost_deadline();
            }
            ServeEvent::Failed { item, error } => {
                let name = self
                    .offered
                    .get(item)
                    .map(|o| o.name.as_str())
                    .unwrap_or("?");
                self.report.warn(format!("serving {name} failed: {error}"));
            }
            ServeEvent::NotFound { request } => {
                debug!(%request, "answered 404");
            }
        }
    }

    async fn on_ctrl_c(&mut self) -> Step {
        let _ = self.sig.machine.terminate(Instant::now(), self.handle);
        self.sig.flush().await;
        Some(Err(Failure::new(
            Exit::Cancelled,
            format!("cancelled; {} was told", self.peer),
        )))
    }

    /// Stops the channels, reports the outcome and says goodbye.
    async fn end(mut self, outcome: Result<(), Failure>) -> Result<(), Failure> {
        self.channels.stop_all();
        self.bars.finish(&self.report);
        let bytes: u64 = self.served.iter().sum();
        let elapsed = self.bars.elapsed();
        match &outcome {
            Ok(()) => {
                self.report.say(format!(
                    "Sent {} ({}) to {} in {:.1}s, {}",
                    describe_items(&self.names),
                    human_size(bytes),
                    self.peer,
                    elapsed.as_secs_f64(),
                    human_rate(bytes, elapsed)
                ));
                self.report.event(
                    "done",
                    json!({"bytes": bytes, "seconds": elapsed.as_secs_f64()}),
                );
            }
            Err(f) => self.report.event(
                "failed",
                json!({"reason": f.message, "exit": f.exit.code()}),
            ),
        }
        self.sig.flush().await;
        self.sig.xmpp.close().await;
        outcome
    }
}

/// Sleeps until `t`, or forever.
pub(super) async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn finish(reason: TerminateReason, all_served: bool, peer: &str) -> Result<(), Failure> {
    use crate::session::TimeoutKind;
    debug!(?reason, all_served, "session ended");
    match reason {
        TerminateReason::Completed => Ok(()),
        TerminateReason::PeerTerminated { .. } if all_served => Ok(()),
        TerminateReason::PeerTerminated { .. } => Err(Failure::new(
            Exit::Cancelled,
            format!("{peer} cancelled the transfer before every byte was sent"),
        )),
        TerminateReason::Declined { .. } => Err(Failure::new(
            Exit::Declined,
            format!("{peer} declined the offer"),
        )),
        TerminateReason::Timeout(TimeoutKind::NoAccept)
        | TerminateReason::Timeout(TimeoutKind::NoReply(_)) => Err(Failure::new(
            Exit::Unreachable,
            format!("{peer} did not answer the offer in time"),
        )),
        TerminateReason::Timeout(TimeoutKind::NoTransport) => Err(Failure::new(
            Exit::TransferFailed,
            format!("no working network path to {peer} was found in time"),
        )),
        TerminateReason::Timeout(other) => Err(Failure::new(
            Exit::TransferFailed,
            format!(
                "the session with {peer} timed out: {}",
                super::explain::timeout(&other)
            ),
        )),
        TerminateReason::PeerError {
            action,
            condition,
            text,
            ..
        } => Err(Failure::new(
            Exit::Unreachable,
            format!(
                "{peer} refused our {} message: {}{}",
                action.as_str(),
                condition.as_str(),
                text.map(|t| format!(" ({t})")).unwrap_or_default()
            ),
        )),
        TerminateReason::Redirected => Err(Failure::new(
            Exit::Failure,
            format!("{peer} redirected the session, which gshare does not support"),
        )),
        TerminateReason::LocalTerminate | TerminateReason::LocalReject => {
            Err(Failure::new(Exit::Cancelled, "cancelled"))
        }
    }
}
