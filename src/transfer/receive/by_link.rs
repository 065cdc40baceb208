//! The receive job's side of file links (the upload method): the same
//! `--from`, `--auto-accept`/prompt, concurrency and `--once` rules as for
//! offers, the same events (`offer` with `"method": "upload"`, `accepted`,
//! `progress`, `item`, `done`, `failed`, `rejected`). The fetch itself is
//! [`crate::transfer::links`].

use std::collections::HashMap;

use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_xmpp::parsers::message::Message;
use tracing::debug;

use super::super::links::{Examined, LinkEvent, LinkOffer, examine, fetch_link};
use super::super::report::{TransferReport, human_rate, human_size};
use super::{Receiver, Step, allowed, ask};
use crate::transfer::{Exit, Failure};
use crate::upload::HttpsClient;

/// One link being decided on or fetched.
pub(super) struct LinkTransfer {
    offer: LinkOffer,
    bars: TransferReport,
    /// Size once known (announced or served).
    expected: Option<u64>,
    task: Option<JoinHandle<()>>,
}

/// The receive job's link state.
pub(super) struct Links {
    pub https: HttpsClient,
    /// Links being decided on or fetched; they count against the job's
    /// concurrency bound together with the sessions.
    pub running: HashMap<u64, LinkTransfer>,
    next_id: u64,
    events: mpsc::UnboundedSender<(u64, LinkEvent)>,
    decisions: mpsc::UnboundedSender<(u64, bool)>,
    /// The link asked about on the terminal.
    pub prompting: Option<u64>,
}

impl Links {
    pub fn new(
        https: HttpsClient,
        events: mpsc::UnboundedSender<(u64, LinkEvent)>,
        decisions: mpsc::UnboundedSender<(u64, bool)>,
    ) -> Self {
        Self {
            https,
            running: HashMap::new(),
            next_id: 0,
            events,
            decisions,
            prompting: None,
        }
    }

    /// Stops every fetch (their `.part` files are removed as they drop).
    pub fn abort_all(&mut self) {
        for t in self.running.values_mut() {
            if let Some(h) = t.task.take() {
                h.abort();
            }
        }
    }
}

fn describe(offer: &LinkOffer) -> String {
    match offer.announcement.size {
        Some(s) => format!("{:?} ({})", offer.name, human_size(s)),
        None => format!("{:?}", offer.name),
    }
}

impl Receiver {
    /// A message: a file link is offered like a session offer; a Jingle
    /// Message Initiation proposal goes to the Jingle side.
    pub(super) fn on_message(&mut self, msg: &Message) -> Step {
        if let Some(p) = crate::jingle::jmi::propose(msg) {
            self.on_jingle_propose(p);
            return None;
        }
        let offer = match examine(msg) {
            Examined::Nothing => return None,
            Examined::Refused { from, reason } => {
                if allowed(&self.allow, &from) {
                    self.report
                        .say(format!("Refused a link from {from}: {reason}"));
                    self.report.event(
                        "rejected",
                        json!({"from": from.to_string(), "reason": reason, "method": "upload"}),
                    );
                } else {
                    debug!(%from, %reason, "ignored a link from someone not in --from");
                }
                return None;
            }
            Examined::Offer(o) => o,
        };
        let from = offer.from.clone();
        let what = describe(&offer);
        let reject = |this: &mut Receiver, why: &str, reason: &str| {
            this.report
                .say(format!("Ignored the link to {what} from {from}: {why}"));
            this.report.event(
                "rejected",
                json!({"from": from.to_string(), "reason": reason, "method": "upload"}),
            );
        };
        if !allowed(&self.allow, &from) {
            reject(self, "not in --from", "not allowed");
            return None;
        }
        if self.require_encryption {
            // The file sat on a server that could read it.
            reject(
                self,
                "a link is not end-to-end encrypted and encryption is required",
                "not encrypted",
            );
            return None;
        }
        if self.transfers.len() + self.links.running.len() >= self.bound {
            reject(self, "busy with another transfer", "busy");
            return None;
        }
        let prompt = !self.auto_accept && self.interactive;
        if prompt && self.asking() {
            reject(self, "busy asking about another offer", "busy");
            return None;
        }
        let a = &offer.announcement;
        self.report.event(
            "offer",
            json!({"from": from.to_string(), "total": a.size, "method": "upload",
                   "url": a.url,
                   "items": [{"name": offer.name, "size": a.size, "kind": "file"}]}),
        );
        let label = from
            .node()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "total".into());
        let id = self.links.next_id;
        self.links.next_id += 1;
        self.links.running.insert(
            id,
            LinkTransfer {
                bars: TransferReport::new(Some(("from", from.to_string())), label),
                expected: a.size,
                offer: offer.clone(),
                task: None,
            },
        );
        if self.auto_accept {
            let _ = self.links.decisions.send((id, true));
        } else if prompt {
            self.links.prompting = Some(id);
            let question = format!("Accept {what} from {from} (a link to its server)? [y/N] ");
            let tx = self.links.decisions.clone();
            tokio::task::spawn_blocking(move || {
                let _ = tx.send((id, ask(&question)));
            });
        } else {
            self.report.say(format!(
                "Declined {what} from {from}: no terminal to ask on (use --auto-accept)"
            ));
            let _ = self.links.decisions.send((id, false));
        }
        None
    }

    pub(super) fn on_link_decision(&mut self, id: u64, yes: bool) -> Step {
        if self.links.prompting == Some(id) {
            self.links.prompting = None;
            // Session offers that waited for this question.
            self.ask_next();
        }
        let t = self.links.running.get_mut(&id)?;
        let from = t.offer.from.clone();
        if !yes {
            return self.end_link(
                id,
                Err(Failure::new(
                    Exit::Declined,
                    format!("declined the link from {from}"),
                )),
            );
        }
        self.report
            .say(format!("Receiving {} from {from}", describe(&t.offer)));
        t.bars.event(&self.report, "accepted", json!({}));
        t.bars.start(&self.report, t.expected.unwrap_or(0));
        let fetch = fetch_link(
            self.links.https.clone(),
            t.offer.clone(),
            self.output.clone(),
            id,
            self.links.events.clone(),
        );
        t.task = Some(tokio::spawn(fetch));
        None
    }

    pub(super) fn on_link_event(&mut self, id: u64, ev: LinkEvent) -> Step {
        let t = self.links.running.get_mut(&id)?;
        let r = &self.report;
        match ev {
            LinkEvent::Started { expected } => {
                t.expected = expected;
                t.bars.item_started(r, &t.offer.name, expected);
                None
            }
            LinkEvent::Progress { bytes } => {
                let total = t.expected.unwrap_or(bytes);
                t.bars
                    .progress(r, &t.offer.name, bytes, t.expected, bytes, total);
                None
            }
            LinkEvent::Done { path, size, sha256 } => {
                if let Some(p) = &path {
                    r.say(format!("Saved {}", p.display()));
                }
                t.bars.event(
                    r,
                    "item",
                    json!({"name": t.offer.name, "size": size, "sha256": sha256,
                        "path": path.map(|p| p.display().to_string())}),
                );
                self.end_link(id, Ok(size))
            }
            LinkEvent::Failed(reason) => {
                let msg = format!(
                    "download of {:?} from {} failed: {reason}; nothing partial was kept",
                    t.offer.name, t.offer.from
                );
                self.end_link(id, Err(Failure::new(Exit::TransferFailed, msg)))
            }
        }
    }

    /// A link transfer ended: tell the user; end the run with --once.
    fn end_link(&mut self, id: u64, result: Result<u64, Failure>) -> Step {
        let mut t = self.links.running.remove(&id)?;
        let r = &self.report;
        t.bars.finish(r);
        let elapsed = t.bars.elapsed();
        match &result {
            Ok(bytes) => {
                r.say(format!(
                    "Received {} from {} in {:.1}s, {}",
                    describe(&t.offer),
                    t.offer.from,
                    elapsed.as_secs_f64(),
                    human_rate(*bytes, elapsed)
                ));
                t.bars.event(
                    r,
                    "done",
                    json!({"bytes": bytes, "seconds": elapsed.as_secs_f64(), "method": "upload"}),
                );
            }
            Err(f) => {
                r.warn(&f.message);
                t.bars.event(
                    r,
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
        if self.sig.is_lost() && self.channels.is_empty() && self.links.running.is_empty() {
            return Some(Ok(()));
        }
        None
    }
}
