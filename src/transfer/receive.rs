//! `gshare receive`: wait for offers, fetch accepted items, save them safely.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_xmpp::parsers::jid::{BareJid, Jid};
use tracing::{debug, info};

use super::channel::{self, ChannelMsg, ChannelSpec};
use super::files::PartFile;
use super::names::safe_file_name;
use super::report::{Reporter, human_rate, human_size};
use super::send::describe_items;
use super::signalling::{Signal, Signalling};
use super::{Failure, login};
use crate::cli::{Exit, GlobalArgs, ReceiveArgs};
use crate::config::Settings;
use crate::pseudotcp::PseudoTcpStream;
use crate::session::{
    self, ItemKind, Manifest, SessionEvent, SessionHandle, SessionManager, TerminateReason,
};
use crate::xmpp::ConnectOptions;

/// Progress of a fetch job.
#[derive(Debug)]
pub enum FetchEvent {
    ItemStarted {
        index: usize,
    },
    Progress {
        index: usize,
        bytes: u64,
    },
    ItemDone {
        index: usize,
        path: Option<PathBuf>,
        size: u64,
        sha256: Option<String>,
    },
    ItemSkipped {
        index: usize,
        reason: String,
    },
    AllDone,
}

/// Where accepted bytes go.
#[derive(Debug, Clone)]
enum Output {
    Dir { dir: PathBuf, overwrite: bool },
    Stdout,
}

/// What a fetch job needs.
struct FetchJob {
    sender: String,
    /// No byte for this long ends the transfer.
    stall: std::time::Duration,
    manifest: Manifest,
    source_path: String,
    output: Output,
}

/// The transfer being received.
struct Active {
    handle: SessionHandle,
    peer: Jid,
    manifest: Manifest,
    source_path: String,
    channel: Option<channel::Handle>,
    received: Vec<u64>,
    all_done: bool,
    failure: Option<String>,
}

/// Runs `gshare receive`.
pub async fn run(
    global: &GlobalArgs,
    settings: &Settings,
    args: &ReceiveArgs,
) -> Result<(), Failure> {
    let mut report = Reporter::new(global.json, global.quiet);
    let output = if args.output == "-" {
        if global.json {
            return Err(Failure::new(
                Exit::Usage,
                "--json and -o - both want standard output; pick one",
            ));
        }
        Output::Stdout
    } else {
        let dir = PathBuf::from(&args.output);
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
        Output::Dir {
            dir,
            overwrite: args.overwrite,
        }
    };
    let allow: Vec<Jid> = args
        .from
        .iter()
        .map(|s| {
            s.parse::<Jid>()
                .map_err(|e| Failure::new(Exit::Usage, format!("--from {s:?} is not a JID: {e}")))
        })
        .collect::<Result<_, _>>()?;
    if args.auto_accept && allow.is_empty() {
        report.warn("--auto-accept without --from accepts files from anyone who knows your JID");
    }
    let interactive =
        !args.auto_accept && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();

    let options = ConnectOptions {
        forward_namespaces: vec![session::stanza::NS_SESSION],
        presence_allow: (!allow.is_empty())
            .then(|| allow.iter().map(|j| j.to_bare()).collect::<Vec<BareJid>>()),
        ..ConnectOptions::default()
    };
    let (xmpp, incoming) = login(settings, options).await?;
    let spec = ChannelSpec::new(settings, global, &xmpp).await?;
    let config = session::Config {
        session_timeout: std::time::Duration::from_secs(global.timeout),
        iq_timeout: std::time::Duration::from_secs(global.timeout),
        // An offer waits for the person at the prompt; keep it a while.
        accept_timeout: std::time::Duration::from_secs(global.timeout.max(300)),
        ..session::Config::default()
    };
    let machine = SessionManager::new(xmpp.jid().clone(), config);
    let mut sig = Signalling::new(xmpp.clone(), incoming, machine);
    report.say(format!("Waiting for offers as {}", xmpp.jid()));
    report.event("ready", json!({"jid": xmpp.jid().to_string()}));

    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<ChannelMsg>();
    let (decision_tx, mut decision_rx) = mpsc::unbounded_channel::<(SessionHandle, bool)>();
    let mut active: Option<Active> = None;
    let mut pending_prompt: Option<SessionHandle> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut last_error: Option<Failure> = None;

    let outcome: Result<(), Failure> = loop {
        tokio::select! {
            signal = sig.next(), if !sig.is_lost() => match signal {
                Signal::Lost(e) => {
                    if active.as_ref().is_some_and(|a| a.channel.is_some()) {
                        report.warn(format!("lost the XMPP connection ({e}); the transfer goes on over the direct path"));
                        continue;
                    }
                    break Err(Failure::new(Exit::Failure, format!("lost the XMPP connection: {e}")));
                }
                Signal::PeerOffline(handle) => {
                    let Some(mut a) = active.take_if(|a| a.handle == handle) else { continue };
                    if let Some(ch) = &a.channel { ch.abort(); }
                    let _ = sig.machine.terminate(Instant::now(), handle);
                    a.failure = Some(format!("{} went offline", a.peer));
                    let result = conclude(&a, TerminateReason::LocalTerminate);
                    report_end(&mut report, &a, &result);
                    if args.once {
                        break result.map(|_| ());
                    }
                    if let Err(f) = result { last_error = Some(f); }
                }
                Signal::Session(ev) => match ev {
                    SessionEvent::Offer { handle, from, manifest, source_path, .. } => {
                        let what = describe_offer(&manifest);
                        if !allowed(&allow, &from) {
                            info!(%from, "offer rejected: not in --from");
                            report.say(format!("Rejected {what} from {from}: not in --from"));
                            report.event("rejected", json!({"from": from.to_string(), "reason": "not allowed"}));
                            let _ = sig.machine.reject(Instant::now(), handle);
                            continue;
                        }
                        if active.is_some() || pending_prompt.is_some() {
                            report.say(format!("Rejected {what} from {from}: busy with another transfer"));
                            let _ = sig.machine.reject(Instant::now(), handle);
                            continue;
                        }
                        if matches!(output, Output::Stdout) && !(manifest.items.len() == 1 && manifest.items[0].kind == ItemKind::File) {
                            report.say(format!("Rejected {what} from {from}: -o - takes a single file"));
                            let _ = sig.machine.reject(Instant::now(), handle);
                            continue;
                        }
                        report.event("offer", json!({"from": from.to_string(), "total": manifest.total_size(),
                            "items": manifest.items.iter().map(|i| json!({"name": i.name, "size": i.size,
                                "kind": if i.kind == ItemKind::Folder { "folder" } else { "file" }})).collect::<Vec<_>>()}));
                        active = Some(Active {
                            handle, peer: from.clone(), received: vec![0; manifest.items.len()],
                            manifest, source_path, channel: None, all_done: false, failure: None,
                        });
                        if args.auto_accept {
                            let _ = decision_tx.send((handle, true));
                        } else if interactive {
                            pending_prompt = Some(handle);
                            let question = format!("Accept {what} from {from}? [y/N] ");
                            let tx = decision_tx.clone();
                            tokio::task::spawn_blocking(move || {
                                let _ = tx.send((handle, ask(&question)));
                            });
                        } else {
                            report.say(format!("Declined {what} from {from}: no terminal to ask on (use --auto-accept)"));
                            let _ = decision_tx.send((handle, false));
                        }
                    }
                    SessionEvent::RemoteCandidates { handle, channel, candidates } => {
                        if let Some(a) = active.as_ref().filter(|a| a.handle == handle)
                            && let Some(ch) = &a.channel
                        {
                            debug!(%channel, n = candidates.len(), "remote candidates");
                            ch.add_remote(candidates);
                        }
                    }
                    SessionEvent::Terminated { handle, reason } => {
                        if pending_prompt == Some(handle) { pending_prompt = None; }
                        let Some(a) = active.take_if(|a| a.handle == handle) else { continue };
                        if let Some(ch) = &a.channel { ch.abort(); }
                        let result = conclude(&a, reason);
                        report_end(&mut report, &a, &result);
                        if args.once {
                            break result.map(|_| ());
                        }
                        if let Err(f) = result { last_error = Some(f); }
                    }
                    SessionEvent::Accepted { .. } | SessionEvent::ChannelRequested { .. }
                    | SessionEvent::ChannelGone { .. } | SessionEvent::Complete { .. } => {}
                },
            },
            Some((handle, yes)) = decision_rx.recv() => {
                if pending_prompt == Some(handle) { pending_prompt = None; }
                let Some(a) = active.as_mut().filter(|a| a.handle == handle) else { continue };
                let now = Instant::now();
                if !yes {
                    let _ = sig.machine.reject(now, handle);
                    continue;
                }
                if let Err(e) = sig.machine.accept(now, handle) {
                    debug!(%e, "cannot accept (the offer is gone?)");
                    continue;
                }
                report.say(format!("Receiving {} from {}",
                    describe_offer(&a.manifest), a.peer));
                report.event("accepted", json!({"from": a.peer.to_string()}));
                report.start(a.manifest.total_size());
                let name = match sig.machine.open_channel(now, handle) {
                    Ok(n) => n,
                    Err(e) => { a.failure = Some(format!("cannot open a channel: {e}")); let _ = sig.machine.terminate(now, handle); continue; }
                };
                let job = FetchJob {
                    sender: a.peer.to_string(),
                    stall: std::time::Duration::from_secs(global.timeout),
                    manifest: a.manifest.clone(),
                    source_path: a.source_path.clone(),
                    output: output.clone(),
                };
                a.channel = Some(channel::spawn(spec.clone().named(&name), ctl_tx.clone(),
                    move |stream, ctl| fetch(stream, job, ctl)));
            }
            Some(msg) = ctl_rx.recv() => {
                let Some(a) = active.as_mut() else { continue };
                let now = Instant::now();
                match msg {
                    ChannelMsg::LocalCandidates { name, candidates } => {
                        if let Err(e) = sig.machine.send_candidates(now, a.handle, &name, candidates) {
                            debug!(%e, "cannot send candidates");
                        }
                    }
                    ChannelMsg::Connected { .. } => {
                        let _ = sig.machine.transport_connected(a.handle);
                    }
                    ChannelMsg::Fetch(ev) => match ev {
                        FetchEvent::ItemStarted { index } => {
                            if let Some(item) = a.manifest.items.get(index) { report.item_started(&item.name, item.size); }
                        }
                        FetchEvent::Progress { index, bytes } => {
                            if let Some(r) = a.received.get_mut(index) { *r = bytes; }
                            let sum = a.received.iter().sum();
                            if let Some(item) = a.manifest.items.get(index) {
                                report.progress(&item.name, bytes, item.size, sum, a.manifest.total_size());
                            }
                        }
                        FetchEvent::ItemDone { index, path, size, sha256 } => {
                            if let Some(r) = a.received.get_mut(index) { *r = size; }
                            let name = a.manifest.items.get(index).map(|i| i.name.clone()).unwrap_or_default();
                            if let Some(p) = &path { report.say(format!("Saved {}", p.display())); }
                            report.event("item", json!({"name": name, "size": size, "sha256": sha256,
                                "path": path.map(|p| p.display().to_string())}));
                        }
                        FetchEvent::ItemSkipped { index, reason } => {
                            let name = a.manifest.items.get(index).map(|i| i.name.clone()).unwrap_or_default();
                            report.warn(format!("{name:?} from {}: {reason}", a.peer));
                            report.event("skipped", json!({"name": name, "reason": reason}));
                        }
                        FetchEvent::AllDone => {
                            a.all_done = true;
                            if sig.is_lost() {
                                // Every byte is here and saved; only the
                                // goodbye cannot be said.
                                let bytes: u64 = a.received.iter().sum();
                                report.finish();
                                report.warn(format!("received everything from {}, but could not tell it (no XMPP connection)", a.peer));
                                report.event("done", json!({"from": a.peer.to_string(), "bytes": bytes,
                                    "seconds": report.elapsed().as_secs_f64()}));
                                if let Some(ch) = &a.channel { ch.abort(); }
                                break Ok(());
                            }
                            let _ = sig.machine.complete(now, a.handle);
                        }
                    },
                    ChannelMsg::Failed { error, .. } => {
                        a.failure = Some(error);
                        let _ = sig.machine.terminate(now, a.handle);
                    }
                    ChannelMsg::Serve(_) | ChannelMsg::Finished { .. } => {}
                }
            }
            _ = &mut ctrl_c => {
                if let Some(a) = active.take() {
                    if let Some(ch) = a.channel { ch.abort(); }
                    let _ = sig.machine.terminate(Instant::now(), a.handle);
                    sig.flush().await;
                    break Err(Failure::new(Exit::Cancelled, format!("cancelled; {} was told", a.peer)));
                }
                break Err(Failure::new(Exit::Cancelled, "cancelled"));
            }
        }
    };
    report.finish();
    sig.flush().await;
    xmpp.close().await;
    match (outcome, last_error) {
        (Ok(()), Some(f)) if !args.once => Err(f),
        (o, _) => o,
    }
}

/// Tells the user how a received session ended.
fn report_end(report: &mut Reporter, a: &Active, result: &Result<u64, Failure>) {
    report.finish();
    match result {
        Ok(bytes) => {
            report.say(format!(
                "Received {} from {} in {:.1}s, {}",
                describe_offer(&a.manifest),
                a.peer,
                report.elapsed().as_secs_f64(),
                human_rate(*bytes, report.elapsed())
            ));
            report.event(
                "done",
                json!({"from": a.peer.to_string(), "bytes": bytes,
                       "seconds": report.elapsed().as_secs_f64()}),
            );
        }
        Err(f) => {
            report.warn(&f.message);
            report.event(
                "failed",
                json!({"from": a.peer.to_string(), "reason": f.message, "exit": f.exit as u8}),
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
fn conclude(a: &Active, reason: TerminateReason) -> Result<u64, Failure> {
    let bytes: u64 = a.received.iter().sum();
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
        (None, TerminateReason::Timeout(k)) => format!("the session timed out ({k:?})"),
        (None, other) => format!("the session ended: {other:?}"),
    };
    Err(Failure::new(
        Exit::TransferFailed,
        format!(
            "transfer from {} failed after {}: {why}; nothing partial was kept",
            a.peer,
            human_size(bytes)
        ),
    ))
}

/// The receiver's job on an open stream: GET every item in manifest order
/// over one keep-alive connection and save it.
async fn fetch(
    stream: PseudoTcpStream,
    job: FetchJob,
    ctl: mpsc::UnboundedSender<ChannelMsg>,
) -> Result<(), String> {
    let send = |ev| {
        let _ = ctl.send(ChannelMsg::Fetch(ev));
    };
    let mut client = crate::http::Client::handshake(stream, job.sender.clone())
        .await
        .map_err(|e| e.to_string())?;
    for (index, item) in job.manifest.items.iter().enumerate() {
        let path = crate::http::request_path(&job.source_path, &item.name);
        let got = tokio::time::timeout(job.stall, client.get(&path))
            .await
            .map_err(|_| format!("no answer for {:?} in {}s", item.name, job.stall.as_secs()))?;
        let mut response = match got {
            Ok(r) => r,
            Err(crate::http::ClientError::NotFound) => {
                send(FetchEvent::ItemSkipped {
                    index,
                    reason: "the sender does not have it (404)".into(),
                });
                continue;
            }
            Err(e) => return Err(format!("requesting {:?}: {e}", item.name)),
        };
        send(FetchEvent::ItemStarted { index });
        let done = match (&job.output, item.kind) {
            (Output::Stdout, _) => {
                let mut out = tokio::io::stdout();
                let mut n = 0u64;
                while let Some(chunk) = next_chunk(&mut response, job.stall, &item.name).await? {
                    n += chunk.len() as u64;
                    if item.size.is_some_and(|s| n > s) {
                        return Err(format!(
                            "{:?}: the sender sent more than the announced {} bytes",
                            item.name,
                            item.size.unwrap_or(0)
                        ));
                    }
                    out.write_all(&chunk)
                        .await
                        .map_err(|e| format!("writing to standard output: {e}"))?;
                    send(FetchEvent::Progress { index, bytes: n });
                }
                out.flush()
                    .await
                    .map_err(|e| format!("writing to standard output: {e}"))?;
                if let Some(s) = item.size
                    && n != s
                {
                    return Err(format!(
                        "{:?}: received {n} of the announced {s} bytes",
                        item.name
                    ));
                }
                FetchEvent::ItemDone {
                    index,
                    path: None,
                    size: n,
                    sha256: None,
                }
            }
            (Output::Dir { dir, overwrite }, ItemKind::File) => {
                save_file(
                    &mut response,
                    job.stall,
                    dir,
                    *overwrite,
                    &item.name,
                    item.size,
                    index,
                    &send,
                )
                .await?
            }
            (Output::Dir { dir, .. }, ItemKind::Folder) => {
                save_folder(
                    &mut response,
                    job.stall,
                    dir,
                    &item.name,
                    item.size,
                    index,
                    &send,
                )
                .await?
            }
        };
        send(done);
    }
    send(FetchEvent::AllDone);
    // Keep the connection (and the PseudoTCP stream) open until the session
    // ends: the sender may still be reading our last ACKs.
    std::future::pending::<()>().await;
    Ok(())
}

/// The next piece of a body; silence for `stall` is an error.
async fn next_chunk(
    response: &mut crate::http::Response,
    stall: std::time::Duration,
    name: &str,
) -> Result<Option<bytes::Bytes>, String> {
    match tokio::time::timeout(stall, response.chunk()).await {
        Ok(r) => r.map_err(|e| format!("receiving {name:?}: {e}")),
        Err(_) => Err(format!(
            "receiving {name:?}: nothing arrived for {}s",
            stall.as_secs()
        )),
    }
}

#[allow(clippy::too_many_arguments)]
async fn save_file(
    response: &mut crate::http::Response,
    stall: std::time::Duration,
    dir: &Path,
    overwrite: bool,
    peer_name: &str,
    size: Option<u64>,
    index: usize,
    send: &impl Fn(FetchEvent),
) -> Result<FetchEvent, String> {
    let name = safe_file_name(peer_name).map_err(|e| e.to_string())?;
    let mut part = PartFile::create(dir, &name, size)
        .await
        .map_err(|e| format!("{peer_name:?}: {e}"))?;
    while let Some(chunk) = next_chunk(response, stall, peer_name).await? {
        part.write(&chunk)
            .await
            .map_err(|e| format!("{peer_name:?}: {e}"))?;
        send(FetchEvent::Progress {
            index,
            bytes: part.written(),
        });
    }
    let finished = if overwrite {
        part.finish(&dir.join(&name), true).await
    } else {
        part.finish_unique(dir, &name).await
    }
    .map_err(|e| format!("{peer_name:?}: {e}"))?;
    Ok(FetchEvent::ItemDone {
        index,
        path: Some(finished.path),
        size: finished.size,
        sha256: Some(finished.sha256),
    })
}

async fn save_folder(
    response: &mut crate::http::Response,
    stall: std::time::Duration,
    dir: &Path,
    peer_name: &str,
    size: Option<u64>,
    index: usize,
    send: &impl Fn(FetchEvent),
) -> Result<FetchEvent, String> {
    let name = safe_file_name(peer_name).map_err(|e| e.to_string())?;
    let mut unpacker = super::tar::TarUnpacker::new(dir, &name, size)
        .await
        .map_err(|e| e.to_string())?;
    while let Some(chunk) = next_chunk(response, stall, peer_name).await? {
        unpacker
            .push(chunk)
            .await
            .map_err(|e| format!("{peer_name:?}: {e}"))?;
        send(FetchEvent::Progress {
            index,
            bytes: unpacker.content_bytes(),
        });
    }
    let finished = unpacker
        .finish()
        .await
        .map_err(|e| format!("{peer_name:?}: {e}"))?;
    Ok(FetchEvent::ItemDone {
        index,
        path: Some(finished.path),
        size: finished.size,
        sha256: None,
    })
}
