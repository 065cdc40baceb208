//! `gshare receive`: wait for offers, fetch accepted items, save them safely.
//!
//! [`run`] sets up (output, allow list, login) and then drives a
//! [`Receiver`]: one method per input (a session signal, a channel message,
//! a user's decision, Ctrl-C), each returning `Some(outcome)` when the run
//! is over. Several transfers may run at once, from different senders, each
//! with its own session, channel, bars and events (every event carries
//! `from`); [`ReceiveOptions::max_concurrent`] bounds them.

use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tokio::sync::mpsc;
use tokio_xmpp::parsers::jid::{BareJid, Jid};
use tracing::{debug, info};

use super::channel::{ChannelEvent, ChannelMsg, ChannelSpec, Channels, Negotiated};
use super::fetch::{FetchEvent, FetchJob, Integrity, Output};
use super::report::{Reporter, TransferReport, describe_items, human_rate, human_size};
use super::signalling::{Signal, Signalling};
use super::{Exit, Failure, ReceiveOptions, login};
use crate::config::Settings;
use crate::secure::{Identity, TlsRole};
use crate::session::{
    self, Extension, ItemKind, Manifest, SessionEvent, SessionHandle, SessionManager,
    TerminateReason,
};
use crate::upload::HttpsClient;
use crate::xmpp::ConnectOptions;

mod by_jingle;
mod by_link;

/// One offer being decided on or received.
struct Transfer {
    peer: Jid,
    manifest: Manifest,
    source_path: String,
    /// Bytes received per item (one entry per manifest item).
    received: Vec<u64>,
    /// The sender's `<secure>` extension, from its offer.
    extension: Option<Extension>,
    all_done: bool,
    failure: Option<String>,
    /// Declined here (it cannot fit, or it would not be encrypted and
    /// `--require-encryption` is on): how the transfer ends.
    refused: Option<Failure>,
    bars: TransferReport,
}

/// Runs `gshare receive`.
pub async fn run(settings: &Settings, opts: &ReceiveOptions) -> Result<(), Failure> {
    let report = Reporter::new(opts.common.json, opts.common.quiet);
    let output = if opts.output == "-" {
        if opts.common.json {
            return Err(Failure::new(
                Exit::Usage,
                "--json and -o - both want standard output; pick one",
            ));
        }
        Output::Stdout
    } else {
        let dir = PathBuf::from(&opts.output);
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Failure::new(
                    Exit::Usage,
                    format!("-o {}: not a directory", dir.display()),
                ));
            }
            Err(e) => {
                return Err(Failure::new(
                    Exit::Usage,
                    format!("-o {}: {e}", dir.display()),
                ));
            }
        }
        // Partials of transfers that were never resumed go after a while.
        if !opts.no_resume {
            let (d, age) = (dir.clone(), opts.resume_max_age);
            match tokio::task::spawn_blocking(move || super::files::remove_stale_partials(&d, age))
                .await
            {
                Ok(Ok(n)) if n > 0 => info!(n, "removed partial files older than the resume age"),
                Ok(Err(e)) => debug!(%e, "cannot look for old partial files"),
                _ => {}
            }
        }
        Output::Dir {
            dir,
            overwrite: opts.overwrite,
        }
    };
    let allow: Vec<Jid> = opts
        .from
        .iter()
        .map(|s| {
            s.parse::<Jid>()
                .map_err(|e| Failure::new(Exit::Usage, format!("--from {s:?} is not a JID: {e}")))
        })
        .collect::<Result<_, _>>()?;
    if opts.auto_accept && allow.is_empty() {
        report.warn("--auto-accept without --from accepts files from anyone who knows your JID");
    }
    let interactive =
        !opts.auto_accept && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    // Standard output takes one file at a time, and --once ends with the
    // first transfer, so neither takes a second one alongside.
    let bound = if matches!(output, Output::Stdout) || opts.once {
        1
    } else {
        opts.max_concurrent.max(1)
    };

    let options = ConnectOptions {
        forward_namespaces: vec![
            session::stanza::NS_SESSION,
            crate::jingle::codec::NS_JINGLE,
            crate::bytestreams::ibb::NS_IBB,
        ],
        presence_allow: (!allow.is_empty())
            .then(|| allow.iter().map(|j| j.to_bare()).collect::<Vec<BareJid>>()),
        ..ConnectOptions::default()
    };
    let (xmpp, incoming) = login(settings, options).await?;
    let spec = ChannelSpec::new(settings, &opts.common, &xmpp).await?;
    let timeout = opts.common.timeout;
    let jingle = by_jingle::JingleIn::new(&xmpp, timeout, opts.common.jingle_transports).await?;
    let config = session::Config {
        session_timeout: timeout,
        iq_timeout: timeout,
        // An offer waits for the person at the prompt; keep it a while.
        accept_timeout: timeout.max(std::time::Duration::from_secs(300)),
        ..session::Config::default()
    };
    let machine = SessionManager::new(xmpp.jid().clone(), config);
    let sig = Signalling::new(xmpp.clone(), incoming, machine);
    report.say(format!("Waiting for offers as {}", xmpp.jid()));
    report.event("ready", json!({"jid": xmpp.jid().to_string()}));

    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
    let (decision_tx, mut decision_rx) = mpsc::unbounded_channel();
    let (link_tx, mut link_rx) = mpsc::unbounded_channel();
    let (link_decision_tx, mut link_decision_rx) = mpsc::unbounded_channel();
    let https = HttpsClient::new(settings.ca_file.as_deref())?;
    let mut job = Receiver {
        sig,
        report,
        spec,
        output,
        allow,
        interactive,
        auto_accept: opts.auto_accept,
        max_size: opts.max_size,
        once: opts.once,
        no_resume: opts.no_resume,
        stall: timeout,
        bound,
        transfers: HashMap::new(),
        channels: Channels::default(),
        ctl: ctl_tx,
        decisions: decision_tx,
        prompting: None,
        questions: VecDeque::new(),
        links: by_link::Links::new(https, link_tx, link_decision_tx),
        last_error: None,
        require_encryption: opts.common.require_encryption || settings.require_encryption,
        no_encryption: opts.common.no_encryption,
        jingle,
    };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let outcome = loop {
        let jingle_deadline = job.jingle.deadline();
        let step = tokio::select! {
            signal = job.sig.next(), if !job.sig.is_lost() => job.on_signal(signal),
            Some((handle, yes)) = decision_rx.recv() => job.on_decision(handle, yes),
            Some(msg) = ctl_rx.recv() => job.on_channel(msg),
            Some((id, yes)) = link_decision_rx.recv() => job.on_link_decision(id, yes),
            Some((id, ev)) = link_rx.recv() => job.on_link_event(id, ev),
            Some(note) = job.jingle.notes.1.recv() => job.on_jingle_note(note),
            Some((key, yes)) = job.jingle.decisions.1.recv() => {
                job.on_jingle_decision(key, yes);
                None
            }
            _ = super::send::sleep_until_opt(jingle_deadline) => {
                job.on_jingle_timer();
                None
            }
            _ = &mut ctrl_c => job.on_ctrl_c().await,
        };
        if let Some(outcome) = step {
            break outcome;
        }
        if let Some(outcome) = job.jingle_pump().await {
            break outcome;
        }
    };
    job.end(outcome).await
}

/// The receiving side: every input changes this.
struct Receiver {
    sig: Signalling,
    report: Reporter,
    spec: ChannelSpec,
    output: Output,
    allow: Vec<Jid>,
    /// Offers are asked about on the terminal.
    interactive: bool,
    auto_accept: bool,
    /// Auto-accept takes nothing larger.
    max_size: Option<u64>,
    once: bool,
    /// `--no-resume`: neither continue nor keep partial files.
    no_resume: bool,
    /// No byte for this long ends a transfer.
    stall: std::time::Duration,
    /// At most this many transfers (offers waiting for a decision count):
    /// peer-driven state, so further offers are declined as busy.
    bound: usize,
    transfers: HashMap<SessionHandle, Transfer>,
    channels: Channels,
    ctl: mpsc::UnboundedSender<ChannelMsg<FetchEvent>>,
    decisions: mpsc::UnboundedSender<(SessionHandle, bool)>,
    /// The offer asked about on the terminal (one question at a time).
    prompting: Option<SessionHandle>,
    /// Offers waiting for their question, in arrival order, with it. Each
    /// is in `transfers`, so `bound` bounds this too.
    questions: VecDeque<(SessionHandle, String)>,
    /// Files announced by link (the upload method).
    links: by_link::Links,
    /// The last transfer that failed (the run's exit code without --once).
    last_error: Option<Failure>,
    /// `--require-encryption` or the config key: decline classic offers.
    require_encryption: bool,
    /// Hidden `--no-encryption`: answer without a certificate (benchmarks).
    no_encryption: bool,
    /// Jingle file transfer offers and transfers.
    jingle: by_jingle::JingleIn,
}

/// `Some(outcome)` ends the run.
type Step = Option<Result<(), Failure>>;

impl Receiver {
    fn on_signal(&mut self, signal: Signal) -> Step {
        match signal {
            Signal::Message(m) => self.on_message(&m),
            Signal::Iq(iq) => {
                self.on_jingle_iq(iq);
                None
            }
            Signal::Lost(e) => {
                if !self.channels.is_empty() || !self.links.running.is_empty() {
                    self.report.warn(format!(
                        "lost the XMPP connection ({e}); the transfer goes on over the direct path"
                    ));
                    return None;
                }
                Some(Err(Failure::new(
                    Exit::Failure,
                    format!("lost the XMPP connection: {e}"),
                )))
            }
            Signal::PeerOffline(handle) => {
                let t = self.transfers.get_mut(&handle)?;
                t.failure = Some(format!("{} went offline", t.peer));
                let _ = self.sig.machine.terminate(Instant::now(), handle);
                self.end_transfer(handle, TerminateReason::LocalTerminate)
            }
            Signal::Session(ev) => match ev {
                SessionEvent::Offer {
                    handle,
                    from,
                    manifest,
                    source_path,
                    extension,
                    ..
                } => {
                    self.on_offer(handle, from, manifest, source_path, extension);
                    None
                }
                SessionEvent::RemoteCandidates {
                    handle,
                    channel,
                    candidates,
                } => {
                    debug!(%channel, n = candidates.len(), "remote candidates");
                    self.channels.add_remote(handle, &channel, candidates);
                    None
                }
                SessionEvent::Terminated { handle, reason } => {
                    if self.prompting == Some(handle)
                        && let Some(t) = self.transfers.get(&handle)
                    {
                        // The question stays until it is answered: its
                        // thread owns the terminal's input until then.
                        self.report.say(format!(
                            "{} withdrew the offer; press Enter to go on",
                            t.peer
                        ));
                    }
                    self.end_transfer(handle, reason)
                }
                SessionEvent::Accepted { .. }
                | SessionEvent::ChannelRequested { .. }
                | SessionEvent::ChannelGone { .. }
                | SessionEvent::Complete { .. } => None,
            },
        }
    }

    /// Declines an offer, saying why.
    fn decline(&mut self, handle: SessionHandle, from: &Jid, what: &str, why: &str, reason: &str) {
        info!(%from, reason, "offer rejected");
        self.report
            .say(format!("Rejected {what} from {from}: {why}"));
        self.report.event(
            "rejected",
            json!({"from": from.to_string(), "reason": reason}),
        );
        let _ = self.sig.machine.reject(Instant::now(), handle);
    }

    fn on_offer(
        &mut self,
        handle: SessionHandle,
        from: Jid,
        manifest: Manifest,
        source_path: String,
        extension: Option<Extension>,
    ) {
        let what = describe_offer(&manifest);
        if !allowed(&self.allow, &from) {
            self.decline(handle, &from, &what, "not in --from", "not allowed");
            return;
        }
        if self.transfers.len() + self.links.running.len() + self.jingle.len() >= self.bound {
            self.decline(handle, &from, &what, "busy with another transfer", "busy");
            return;
        }
        let prompt = !self.auto_accept && self.interactive;
        if matches!(self.output, Output::Stdout)
            && !(manifest.items.len() == 1 && manifest.items[0].kind == ItemKind::File)
        {
            self.report.say(format!(
                "Rejected {what} from {from}: -o - takes a single file"
            ));
            let _ = self.sig.machine.reject(Instant::now(), handle);
            return;
        }
        let refused = self.cannot_fit(&manifest);
        if let Some((reason, why)) = &refused {
            info!(%from, reason, "offer declined: it cannot fit");
            self.report
                .say(format!("Declined {what} from {from}: {why}"));
            self.report.event(
                "rejected",
                json!({"from": from.to_string(), "reason": reason, "detail": why,
                       "total": manifest.total_size()}),
            );
        } else {
            self.report.event("offer", offer_event(&from, &manifest));
        }
        let label = from
            .node()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "total".into());
        self.transfers.insert(
            handle,
            Transfer {
                bars: TransferReport::new(Some(("from", from.to_string())), label),
                peer: from.clone(),
                received: vec![0; manifest.items.len()],
                manifest,
                source_path,
                extension,
                all_done: false,
                failure: None,
                refused: refused.map(|(_, why)| {
                    Failure::new(
                        Exit::TransferFailed,
                        format!("declined {what} from {from}: {why}"),
                    )
                }),
            },
        );
        if self
            .transfers
            .get(&handle)
            .is_some_and(|t| t.refused.is_some())
        {
            // Ends as a failed transfer (exit 7; with --once, the run).
            let _ = self.decisions.send((handle, false));
            return;
        }
        let can_encrypt = self
            .transfers
            .get(&handle)
            .and_then(|t| t.extension.as_ref())
            .is_some_and(|e| e.fingerprint.is_some());
        if !can_encrypt && self.require_encryption {
            let why = "it would not be encrypted (the sender is not gshare, or encryption is off \
                       there) and encryption is required";
            self.report
                .say(format!("Declined {what} from {from}: {why}"));
            self.report.event(
                "rejected",
                json!({"from": from.to_string(), "reason": "not encrypted"}),
            );
            if let Some(t) = self.transfers.get_mut(&handle) {
                t.refused = Some(Failure::new(
                    Exit::NotEncrypted,
                    format!("declined the offer from {from}: {why}"),
                ));
            }
            let _ = self.sig.machine.reject(Instant::now(), handle);
            return;
        }
        if self.auto_accept {
            let _ = self.decisions.send((handle, true));
        } else if prompt {
            if self.asking() {
                self.report.say(format!(
                    "\n{what} from {from} waits for your answer to the question before"
                ));
            }
            self.questions
                .push_back((handle, format!("Accept {what} from {from}? [y/N] ")));
            self.ask_next();
        } else {
            self.report.say(format!(
                "Declined {what} from {from}: no terminal to ask on (use --auto-accept)"
            ));
            let _ = self.decisions.send((handle, false));
        }
    }

    /// Why an offer cannot be taken, if it cannot: larger than the free
    /// space of the output directory (less what the running transfers still
    /// need), or, for auto-accept, larger than --max-size. `(reason for
    /// the JSON event, sentence)`.
    fn cannot_fit(&self, manifest: &Manifest) -> Option<(&'static str, String)> {
        let total = manifest.total_size();
        if self.auto_accept
            && let Some(max) = self.max_size
            && total > max
        {
            return Some((
                "too large",
                format!(
                    "it is larger than --max-size ({} > {})",
                    human_size(total),
                    human_size(max)
                ),
            ));
        }
        let Output::Dir { dir, .. } = &self.output else {
            return None;
        };
        let free = super::space::free_space(dir)?;
        let promised: u64 = self
            .transfers
            .values()
            .map(|t| {
                t.manifest
                    .total_size()
                    .saturating_sub(t.received.iter().sum())
            })
            .sum();
        let available = free.saturating_sub(promised);
        (total > available).then(|| {
            (
                "no space",
                format!(
                    "no space for it: it needs {}, and {} has {} free",
                    human_size(total),
                    dir.display(),
                    human_size(available)
                ),
            )
        })
    }

    /// Asks the next waiting question, unless one is open: one question at
    /// a time on the terminal.
    /// Whether a question is open on the terminal (about a session offer,
    /// a link or a Jingle offer): one at a time, since the asking thread
    /// owns the terminal's input until it is answered.
    fn asking(&self) -> bool {
        self.prompting.is_some()
            || self.links.prompting.is_some()
            || self.jingle.prompting.is_some()
    }

    /// Asks the next queued session offer's question once none is open;
    /// every answer, of whatever kind, calls this.
    fn ask_next(&mut self) {
        if self.asking() {
            return;
        }
        while let Some((handle, question)) = self.questions.pop_front() {
            if !self.transfers.contains_key(&handle) {
                continue; // withdrawn while it waited
            }
            self.prompting = Some(handle);
            let tx = self.decisions.clone();
            tokio::task::spawn_blocking(move || {
                let _ = tx.send((handle, ask(&question)));
            });
            return;
        }
    }

    fn on_decision(&mut self, handle: SessionHandle, yes: bool) -> Step {
        if self.prompting == Some(handle) {
            self.prompting = None;
        }
        let step = self.decide(handle, yes);
        self.ask_next();
        step
    }

    fn decide(&mut self, handle: SessionHandle, yes: bool) -> Step {
        let t = self.transfers.get_mut(&handle)?;
        let now = Instant::now();
        if !yes {
            let _ = self.sig.machine.reject(now, handle);
            return None;
        }
        // A fresh certificate for this transfer when the sender offered
        // one of its own (src/secure says why per session).
        let identity = match t.extension.as_ref().and_then(|e| e.fingerprint) {
            Some(_) if !self.no_encryption => match Identity::generate() {
                Ok(i) => Some(Arc::new(i)),
                Err(e) => {
                    t.failure = Some(e.to_string());
                    let _ = self.sig.machine.terminate(now, handle);
                    return None;
                }
            },
            _ => None,
        };
        let negotiated =
            Negotiated::secure(identity.as_ref(), t.extension.as_ref(), TlsRole::Client);
        // A classic sender gets exactly the classic accept: our extension
        // answers only an offer that carried one (docs/protocol.md §H.2); we
        // can resume unless told not to.
        let ours = t.extension.as_ref().map(|_| Extension {
            fingerprint: identity.as_ref().map(|i| i.fingerprint()),
            resume: !self.no_resume,
            ..Extension::default()
        });
        if let Err(e) = self.sig.machine.accept_with(now, handle, ours) {
            debug!(%e, "cannot accept (the offer is gone?)");
            return None;
        }
        let security = negotiated.describe_security();
        self.report.say(format!(
            "Receiving {} from {} ({security})",
            describe_offer(&t.manifest),
            t.peer
        ));
        if !negotiated.protection.is_encrypted() {
            self.report.warn(format!(
                "the transfer from {} is not encrypted: the sender does not support it",
                t.peer
            ));
        }
        t.bars
            .event(&self.report, "accepted", negotiated.security_json().into());
        t.bars.start(&self.report, t.manifest.total_size());
        let name = match self.sig.machine.open_channel(now, handle) {
            Ok(n) => n,
            Err(e) => {
                t.failure = Some(format!("cannot open a channel: {e}"));
                let _ = self.sig.machine.terminate(now, handle);
                return None;
            }
        };
        let job = FetchJob {
            sender: t.peer.to_string(),
            stall: self.stall,
            manifest: t.manifest.clone(),
            source_path: t.source_path.clone(),
            output: self.output.clone(),
            integrity: t.extension.as_ref().map(|ext| Integrity {
                sender: t.peer.to_bare().to_string(),
                digests: ext.digests.clone(),
                resume: ext.resume && !self.no_resume,
                no_resume: self.no_resume,
            }),
        };
        self.channels.start(
            handle,
            self.spec.clone().named(&name),
            negotiated,
            self.ctl.clone(),
            move |stream, link, progress| super::fetch::fetch(stream, link, job, progress),
        );
        None
    }

    fn on_channel(&mut self, msg: ChannelMsg<FetchEvent>) -> Step {
        if !self.channels.admit(&msg) {
            return None;
        }
        let handle = msg.tag.session;
        let t = self.transfers.get_mut(&handle)?;
        let now = Instant::now();
        match msg.event {
            ChannelEvent::LocalCandidates(candidates) => {
                if let Err(e) = self
                    .sig
                    .machine
                    .send_candidates(now, handle, &msg.name, candidates)
                {
                    debug!(%e, "cannot send candidates");
                }
            }
            ChannelEvent::Connected(_) => {
                let _ = self.sig.machine.transport_connected(handle);
            }
            ChannelEvent::Progress(ev) => return self.on_fetch(handle, ev),
            ChannelEvent::Failed(error) => {
                t.failure = Some(error);
                if self.sig.is_lost() {
                    // No terminate can be said, and none will come back.
                    return self.end_transfer(handle, TerminateReason::LocalTerminate);
                }
                let _ = self.sig.machine.terminate(now, handle);
            }
            ChannelEvent::Finished => {}
        }
        None
    }

    fn on_fetch(&mut self, handle: SessionHandle, ev: FetchEvent) -> Step {
        let t = self.transfers.get_mut(&handle)?;
        let r = &self.report;
        match ev {
            FetchEvent::ItemStarted { index } => {
                if let Some(item) = t.manifest.items.get(index) {
                    t.bars.item_started(r, &item.name, item.size);
                }
            }
            FetchEvent::Progress { index, bytes } => {
                if let Some(n) = t.received.get_mut(index) {
                    *n = bytes;
                }
                let sum = t.received.iter().sum();
                if let Some(item) = t.manifest.items.get(index) {
                    t.bars.progress(
                        r,
                        &item.name,
                        bytes,
                        item.size,
                        sum,
                        t.manifest.total_size(),
                    );
                }
            }
            FetchEvent::ItemDone {
                index,
                path,
                size,
                sha256,
                verified,
                resumed_from,
            } => {
                if let Some(n) = t.received.get_mut(index) {
                    *n = size;
                }
                let name = t
                    .manifest
                    .items
                    .get(index)
                    .map(|i| i.name.clone())
                    .unwrap_or_default();
                if let Some(p) = &path {
                    r.say(format!("Saved {}", p.display()));
                }
                t.bars.event(
                    r,
                    "item",
                    json!({"name": name, "size": size, "sha256": sha256,
                        "verified": verified, "resumed_from": resumed_from,
                        "path": path.map(|p| p.display().to_string())}),
                );
            }
            FetchEvent::ItemSkipped { index, reason } => {
                let name = t
                    .manifest
                    .items
                    .get(index)
                    .map(|i| i.name.clone())
                    .unwrap_or_default();
                r.warn(format!("{name:?} from {}: {reason}", t.peer));
                t.bars
                    .event(r, "skipped", json!({"name": name, "reason": reason}));
            }
            FetchEvent::AllDone => {
                t.all_done = true;
                if self.sig.is_lost() {
                    // Every byte is here and saved; only the goodbye cannot
                    // be said.
                    let bytes: u64 = t.received.iter().sum();
                    t.bars.finish(r);
                    r.warn(format!(
                        "received everything from {}, but could not tell it (no XMPP connection)",
                        t.peer
                    ));
                    t.bars.event(
                        r,
                        "done",
                        json!({"bytes": bytes, "seconds": t.bars.elapsed().as_secs_f64()}),
                    );
                    self.transfers.remove(&handle);
                    self.channels.stop_session(handle);
                    // Without XMPP no new offer can come: the run ends with
                    // the last running transfer.
                    return self.channels.is_empty().then_some(Ok(()));
                }
                let _ = self.sig.machine.complete(Instant::now(), handle);
            }
        }
        None
    }

    /// A transfer's session ended: tell the user, and end the run with
    /// --once (or when the XMPP connection is gone and nothing else runs).
    fn end_transfer(&mut self, handle: SessionHandle, reason: TerminateReason) -> Step {
        let mut t = self.transfers.remove(&handle)?;
        self.channels.stop_session(handle);
        let result = conclude(&t, reason);
        report_end(&self.report, &mut t, &result);
        if self.once {
            return Some(result.map(|_| ()));
        }
        if let Err(f) = result {
            self.last_error = Some(f);
        }
        if self.sig.is_lost() && self.channels.is_empty() {
            return Some(Ok(()));
        }
        None
    }

    async fn on_ctrl_c(&mut self) -> Step {
        let now = Instant::now();
        let mut told = Vec::new();
        for (handle, t) in &self.transfers {
            let _ = self.sig.machine.terminate(now, *handle);
            told.push(t.peer.to_string());
        }
        told.extend(self.jingle.terminate_all());
        self.jingle.flush().await;
        self.channels.stop_all();
        self.links.abort_all();
        self.sig.flush().await;
        Some(Err(match told.as_slice() {
            [] => Failure::new(Exit::Cancelled, "cancelled"),
            [one] => Failure::new(Exit::Cancelled, format!("cancelled; {one} was told")),
            many => Failure::new(
                Exit::Cancelled,
                format!("cancelled; {} were told", many.join(", ")),
            ),
        }))
    }

    /// Stops everything and says goodbye.
    async fn end(mut self, outcome: Result<(), Failure>) -> Result<(), Failure> {
        self.channels.stop_all();
        self.links.abort_all();
        for t in self.transfers.values_mut() {
            t.bars.finish(&self.report);
        }
        self.sig.flush().await;
        self.jingle.flush().await;
        self.sig.xmpp.close().await;
        match (outcome, self.last_error) {
            (Ok(()), Some(f)) if !self.once => Err(f),
            (o, _) => o,
        }
    }
}

/// The `offer` event: who offers what.
fn offer_event(from: &Jid, manifest: &Manifest) -> serde_json::Value {
    let items: Vec<_> = manifest
        .items
        .iter()
        .map(|i| {
            let kind = if i.kind == ItemKind::Folder {
                "folder"
            } else {
                "file"
            };
            json!({"name": i.name, "size": i.size, "kind": kind})
        })
        .collect();
    json!({"from": from.to_string(), "total": manifest.total_size(), "method": "google",
           "items": items})
}

/// Tells the user how a received session ended.
fn report_end(report: &Reporter, t: &mut Transfer, result: &Result<u64, Failure>) {
    t.bars.finish(report);
    let elapsed = t.bars.elapsed();
    match result {
        Ok(bytes) => {
            report.say(format!(
                "Received {} from {} in {:.1}s, {}",
                describe_offer(&t.manifest),
                t.peer,
                elapsed.as_secs_f64(),
                human_rate(*bytes, elapsed)
            ));
            t.bars.event(
                report,
                "done",
                json!({"bytes": bytes, "seconds": elapsed.as_secs_f64()}),
            );
        }
        Err(f) => {
            report.warn(&f.message);
            t.bars.event(
                report,
                "failed",
                json!({"reason": f.message, "exit": f.exit.code()}),
            );
        }
    }
}

fn allowed(allow: &[Jid], from: &Jid) -> bool {
    allow.is_empty()
        || allow.iter().any(|a| match a.resource() {
            Some(_) => a == from,
            None => a.to_bare() == from.to_bare(),
        })
}

fn describe_offer(m: &Manifest) -> String {
    let names: Vec<String> = m.items.iter().map(|i| i.name.clone()).collect();
    match names.as_slice() {
        [one] => format!("{one:?} ({})", human_size(m.total_size())),
        _ => format!(
            "{} ({})",
            describe_items(&names),
            human_size(m.total_size())
        ),
    }
}

/// Asks on the terminal; anything but y/yes is no.
fn ask(question: &str) -> bool {
    use std::io::{BufRead, Write};
    let mut err = std::io::stderr();
    let _ = err.write_all(question.as_bytes());
    let _ = err.flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// How a received session ended, for the exit code.
fn conclude(a: &Transfer, reason: TerminateReason) -> Result<u64, Failure> {
    debug!(?reason, peer = %a.peer, "session ended");
    let bytes: u64 = a.received.iter().sum();
    if let Some(f) = &a.refused {
        return Err(Failure::new(f.exit, f.message.clone()));
    }
    if a.all_done
        && matches!(
            reason,
            TerminateReason::Completed | TerminateReason::PeerTerminated { .. }
        )
    {
        return Ok(bytes);
    }
    let why = match (&a.failure, reason) {
        (Some(f), _) => f.clone(),
        (None, TerminateReason::LocalReject) => {
            return Err(Failure::new(
                Exit::Declined,
                format!("declined the offer from {}", a.peer),
            ));
        }
        (None, TerminateReason::PeerTerminated { .. }) => {
            format!("{} cancelled the transfer", a.peer)
        }
        (None, TerminateReason::Timeout(k)) => {
            format!("the session timed out: {}", super::explain::timeout(&k))
        }
        (None, other) => format!("the session ended: {}", super::explain::reason(&other)),
    };
    Err(Failure::new(
        Exit::TransferFailed,
        format!(
            "transfer from {} failed after {}: {why}; nothing was saved under its name",
            a.peer,
            human_size(bytes)
        ),
    ))
}
