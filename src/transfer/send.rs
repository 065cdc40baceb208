//! `gshare send`: offer, wait, serve, report.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::channel::{self, ChannelMsg, ChannelSpec};
use super::report::{Reporter, human_rate, human_size};
use super::signalling::{Signal, Signalling};
use super::{Failure, login, parse_target, resolve_target};
use crate::cli::{Exit, GlobalArgs, SendArgs};
use crate::config::Settings;
use crate::http::Catalog;
use crate::ice::Candidate;
use crate::session::{self, Manifest, ManifestItem, SessionEvent, SessionManager, TerminateReason};
use crate::xmpp::ConnectOptions;

/// One offered item and where its bytes come from.
struct Offered {
    name: String,
    path: PathBuf,
    folder: bool,
    size: u64,
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
                _spool: None,
            });
        } else if meta.is_file() {
            out.push(Offered {
                name,
                path,
                folder: false,
                size: meta.len(),
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

/// Runs `gshare send`.
pub async fn run(global: &GlobalArgs, settings: &Settings, args: &SendArgs) -> Result<(), Failure> {
    let mut report = Reporter::new(global.json, global.quiet);
    let (files, target) = args.files_and_target();
    let target = parse_target(target)?;
    let offered = collect(files, args.name.as_deref())?;

    let options = ConnectOptions {
        forward_namespaces: vec![session::stanza::NS_SESSION],
        ..ConnectOptions::default()
    };
    let (xmpp, incoming) = login(settings, options).await?;
    let wait = Duration::from_secs(args.wait);
    let peer = resolve_target(&xmpp, &target, wait).await?;

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
    let config = session::Config {
        session_timeout: Duration::from_secs(global.timeout),
        iq_timeout: Duration::from_secs(global.timeout),
        // A person may be answering a prompt: at least the session timeout.
        accept_timeout: Duration::from_secs(global.timeout.max(wait.as_secs())),
        ..session::Config::default()
    };
    let machine = SessionManager::new(xmpp.jid().clone(), config);
    let mut sig = Signalling::new(xmpp.clone(), incoming, machine);
    let handle = sig
        .machine
        .initiate(Instant::now(), peer.clone(), manifest)
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
    let catalog = Arc::new(catalog);
    let names: Vec<String> = offered.iter().map(|o| o.name.clone()).collect();
    report.say(format!(
        "Offering {} ({}) to {peer}",
        describe_items(&names),
        human_size(total)
    ));
    report.event(
        "offer",
        json!({"to": peer.to_string(), "total": total,
               "items": offered.iter().map(|o| json!({"name": o.name, "size": o.size,
                   "kind": if o.folder { "folder" } else { "file" }})).collect::<Vec<_>>()}),
    );

    let spec = ChannelSpec::new(settings, global, &xmpp).await?;
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<ChannelMsg>();
    let mut channels: HashMap<String, channel::Handle> = HashMap::new();
    let mut served: Vec<u64> = vec![0; offered.len()];
    let mut complete = false;
    // libjingle and gabble may terminate without <complete/>; then every
    // byte served counts as complete (§A.7). gshare always sends it, so
    // from a gshare peer a terminate without it means the transfer failed
    // on its side (disk full, bad name, …) even if we wrote every byte.
    let mut peer_sends_complete = false;
    // Set once the XMPP connection is lost and every byte is out.
    let mut lost_deadline: Option<tokio::time::Instant> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    let outcome: Result<(), Failure> = loop {
        tokio::select! {
            _ = sleep_until_opt(lost_deadline) => {
                break Err(Failure::new(Exit::Failure, format!(
                    "lost the XMPP connection; every byte was sent, but {peer} could not confirm")));
            }
            signal = sig.next(), if !sig.is_lost() => match signal {
                Signal::Lost(e) => {
                    if channels.is_empty() {
                        break Err(Failure::new(Exit::Failure, format!(
                            "lost the XMPP connection while sending to {peer}: {e}")));
                    }
                    report.warn(format!("lost the XMPP connection ({e}); the transfer goes on over the direct path"));
                    if served.iter().zip(&offered).all(|(s, o)| *s >= o.size) {
                        lost_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(3));
                    }
                }
                Signal::PeerOffline(_) => {
                    if complete {
                        break Ok(());
                    }
                    let _ = sig.machine.terminate(Instant::now(), handle);
                    break Err(Failure::new(Exit::TransferFailed, format!(
                        "{peer} went offline during the transfer")));
                }
                Signal::Session(ev) => match ev {
                    SessionEvent::Accepted { .. } => {
                        report.say(format!("{peer} accepted"));
                        report.event("accepted", json!({"peer": peer.to_string()}));
                        report.start(total);
                    }
                    SessionEvent::ChannelRequested { name, .. } => {
                        debug!(%name, "peer opened a channel");
                        let catalog = catalog.clone();
                        let h = channel::spawn(spec.clone().named(&name), ctl_tx.clone(), |stream, ctl| async move {
                            let (tx, mut rx) = mpsc::unbounded_channel();
                            let forward = tokio::spawn(async move {
                                while let Some(ev) = rx.recv().await {
                                    if ctl.send(ChannelMsg::Serve(ev)).is_err() { break; }
                                }
                            });
                            let r = crate::http::serve(stream, catalog, tx).await.map_err(|e| e.to_string());
                            let _ = forward.await;
                            r
                        });
                        if let Some(old) = channels.insert(name, h) { old.abort(); }
                    }
                    SessionEvent::ChannelGone { name, .. } => {
                        if let Some(h) = channels.remove(&name) { h.abort(); }
                    }
                    SessionEvent::RemoteCandidates { channel, candidates, .. } => {
                        forward_candidates(&channels, &channel, candidates);
                    }
                    SessionEvent::Complete { .. } => {
                        complete = true;
                        debug!("receiver reported complete");
                    }
                    SessionEvent::Terminated { reason, .. } => {
                        let all_served = served.iter().zip(&offered).all(|(s, o)| *s >= o.size);
                        let done = complete || (all_served && !peer_sends_complete);
                        break finish(reason, done, &peer.to_string());
                    }
                    SessionEvent::Offer { handle: other, .. } => {
                        // We are sending, not receiving.
                        let _ = sig.machine.reject(Instant::now(), other);
                    }
                },
            },
            msg = ctl_rx.recv() => if let Some(msg) = msg {
                match msg {
                    ChannelMsg::LocalCandidates { name, candidates } => {
                        if let Err(e) = sig.machine.send_candidates(Instant::now(), handle, &name, candidates) {
                            debug!(%e, "cannot send candidates");
                        }
                    }
                    ChannelMsg::Connected { name, peer_is_gshare } => {
                        info!(%name, peer_is_gshare, "transport connected");
                        peer_sends_complete |= peer_is_gshare;
                        let _ = sig.machine.transport_connected(handle);
                    }
                    ChannelMsg::Serve(ev) => match ev {
                        crate::http::ServeEvent::Started { item } => {
                            if let Some(o) = offered.get(item) {
                                report.item_started(&o.name, Some(o.size));
                            }
                        }
                        crate::http::ServeEvent::Progress { item, bytes } => {
                            if let Some(s) = served.get_mut(item) { *s = bytes; }
                            let sum = served.iter().sum();
                            if let Some(o) = offered.get(item) {
                                report.progress(&o.name, bytes, Some(o.size), sum, total);
                            }
                        }
                        crate::http::ServeEvent::Served { item, bytes } => {
                            if let Some(s) = served.get_mut(item) { *s = bytes; }
                            if let Some(o) = offered.get(item) {
                                report.event("item", json!({"name": o.name, "size": bytes}));
                            }
                            let all_served = served.iter().zip(&offered).all(|(s, o)| *s >= o.size);
                            if sig.is_lost() && all_served {
                                // Give the last segments time to be acknowledged.
                                lost_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(3));
                            }
                        }
                        crate::http::ServeEvent::Failed { item, error } => {
                            let name = offered.get(item).map(|o| o.name.as_str()).unwrap_or("?");
                            report.warn(format!("serving {name} failed: {error}"));
                        }
                        crate::http::ServeEvent::NotFound { request } => {
                            debug!(%request, "answered 404");
                        }
                    },
                    ChannelMsg::Failed { name, error } => {
                        channels.remove(&name);
                        if !complete {
                            let _ = sig.machine.terminate(Instant::now(), handle);
                            break Err(Failure::new(Exit::TransferFailed, format!(
                                "the connection to {peer} failed: {error}")));
                        }
                    }
                    ChannelMsg::Finished { name } => {
                        channels.remove(&name);
                    }
                    ChannelMsg::Fetch(_) => {}
                }
            },
            _ = &mut ctrl_c => {
                let _ = sig.machine.terminate(Instant::now(), handle);
                sig.flush().await;
                break Err(Failure::new(Exit::Cancelled, format!("cancelled; {peer} was told")));
            }
        }
    };
    for (_, h) in channels.drain() {
        h.abort();
    }
    report.finish();
    let bytes: u64 = served.iter().sum();
    match &outcome {
        Ok(()) => {
            report.say(format!(
                "Sent {} ({}) to {peer} in {:.1}s, {}",
                describe_items(&names),
                human_size(bytes),
                report.elapsed().as_secs_f64(),
                human_rate(bytes, report.elapsed())
            ));
            report.event(
                "done",
                json!({"bytes": bytes, "seconds": report.elapsed().as_secs_f64()}),
            );
        }
        Err(f) => report.event("failed", json!({"reason": f.message, "exit": f.exit as u8})),
    }
    sig.flush().await;
    xmpp.close().await;
    outcome
}

/// Sleeps until `t`, or forever.
pub(super) async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn forward_candidates(
    channels: &HashMap<String, channel::Handle>,
    name: &str,
    candidates: Vec<Candidate>,
) {
    match channels.get(name) {
        Some(h) => h.add_remote(candidates),
        None => debug!(%name, "candidates for a channel we do not run"),
    }
}

fn finish(reason: TerminateReason, all_served: bool, peer: &str) -> Result<(), Failure> {
    use crate::session::TimeoutKind;
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
            format!("the session with {peer} timed out ({other:?})"),
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

/// `"a.txt"`, `"a.txt" and "b.txt"`, `3 items`.
pub fn describe_items(names: &[String]) -> String {
    match names {
        [one] => format!("{one:?}"),
        [a, b] => format!("{a:?} and {b:?}"),
        many => format!("{} items", many.len()),
    }
}
