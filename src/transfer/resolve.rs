//! Which resource of the recipient gets the files, and by which protocol
//! (issue 18): Google share where the resource advertises `share-v1`,
//! otherwise Jingle file transfer where its disco#info lists
//! `urn:xmpp:jingle:apps:file-transfer:5`; highest priority first.
//!
//! Presences are read from the connection's incoming queue before the job
//! starts (nothing else is expected there yet); each available resource
//! without `share-v1` is asked for its disco#info once (bounded wait).

use std::collections::HashMap;
use std::time::Duration;

use minidom::Element;
use tokio::sync::mpsc;
use tokio_xmpp::parsers::jid::{FullJid, Jid};
use tokio_xmpp::parsers::presence::Type as PresenceType;
use tracing::debug;

use super::{Exit, Failure};
use crate::jingle::codec::NS_JINGLE_FT;
use crate::xmpp::{FEATURE_SHARE, Incoming, IqRequest, NS_CAPS, Xmpp};

const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// How long one resource may take to answer disco#info.
const DISCO_WAIT: Duration = Duration::from_secs(5);
/// Presences of other resources arriving within this after the first
/// usable one are still considered (they come together after a probe).
const SETTLE: Duration = Duration::from_millis(500);
/// Resources of the recipient remembered at most.
const MAX_RESOURCES: usize = 32;

/// The protocol chosen for a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    Google,
    Jingle,
}

impl Via {
    /// The name in `--json` events.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Via::Google => "google",
            Via::Jingle => "jingle",
        }
    }
}

/// Which protocols the caller accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    Either,
    Jingle,
}

#[derive(Debug, Clone, Copy)]
struct Known {
    priority: i8,
    google: bool,
    jingle: bool,
}

fn features(query: &Element) -> (bool, bool) {
    let has = |var: &str| {
        query
            .children()
            .any(|f| f.is("feature", NS_DISCO_INFO) && f.attr("var") == Some(var))
    };
    (has(FEATURE_SHARE), has(NS_JINGLE_FT))
}

async fn disco(xmpp: &Xmpp, jid: &FullJid, wait: Duration) -> (bool, bool) {
    let query = Element::bare("query", NS_DISCO_INFO);
    match xmpp
        .iq(
            Some(Jid::from(jid.clone())),
            IqRequest::Get(query),
            wait.min(DISCO_WAIT),
        )
        .await
    {
        Ok(Some(q)) => features(&q),
        Ok(None) => (false, false),
        Err(e) => {
            debug!(%jid, %e, "disco#info failed");
            (false, false)
        }
    }
}

fn pick(known: &HashMap<FullJid, Known>, want: Want) -> Option<(FullJid, Via)> {
    known
        .iter()
        .filter_map(|(j, k)| {
            let via = match want {
                Want::Either if k.google => Via::Google,
                Want::Either | Want::Jingle if k.jingle => Via::Jingle,
                _ => return None,
            };
            Some((j, k.priority, via))
        })
        .max_by(|(ja, pa, va), (jb, pb, vb)| {
            pa.cmp(pb)
                .then_with(|| (*va == Via::Google).cmp(&(*vb == Via::Google)))
                .then_with(|| jb.resource().as_str().cmp(ja.resource().as_str()))
        })
        .map(|(j, _, via)| (j.clone(), via))
}

/// A full JID is asked for its disco#info (no answer: the Google share, as
/// before Jingle existed); a bare JID waits up to `wait` for a resource that
/// can receive by a wanted protocol. Directed presence and a probe are sent
/// (and repeated while waiting).
pub(super) async fn resolve_peer(
    xmpp: &Xmpp,
    incoming: &mut mpsc::Receiver<Incoming>,
    target: &Jid,
    wait: Duration,
    want: Want,
) -> Result<(FullJid, Via), Failure> {
    const REANNOUNCE: Duration = Duration::from_secs(2);
    let bare = target.to_bare();
    xmpp.announce_to(&bare).await?;
    if let Ok(full) = target.clone().try_into_full() {
        let (google, jingle) = disco(xmpp, &full, wait.max(DISCO_WAIT)).await;
        let via = match want {
            Want::Jingle => Via::Jingle,
            Want::Either if jingle && !google => Via::Jingle,
            Want::Either => Via::Google,
        };
        return Ok((full, via));
    }
    let start = tokio::time::Instant::now();
    let deadline = start + wait;
    let mut next_announce = start + REANNOUNCE;
    let mut known: HashMap<FullJid, Known> = HashMap::new();
    let mut settle: Option<tokio::time::Instant> = None;
    loop {
        if let Some(s) = settle
            && tokio::time::Instant::now() >= s
            && let Some(found) = pick(&known, want)
        {
            return Ok(found);
        }
        let wake = [Some(deadline), Some(next_announce), settle]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(deadline);
        tokio::select! {
            item = incoming.recv() => match item {
                Some(Incoming::Presence(p)) => {
                    let Some(Ok(from)) = p.from.clone().map(|f| f.try_into_full()) else {
                        continue;
                    };
                    if from.to_bare() != bare {
                        continue;
                    }
                    if p.type_ != PresenceType::None {
                        known.remove(&from);
                        continue;
                    }
                    let share = p.payloads.iter().any(|el| {
                        el.is("c", NS_CAPS)
                            && el
                                .attr("ext")
                                .is_some_and(|ext| ext.split_whitespace().any(|t| t == "share-v1"))
                    });
                    let info = Known { priority: p.priority.0, google: share, jingle: false };
                    if !known.contains_key(&from) && known.len() >= MAX_RESOURCES {
                        continue;
                    }
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let jingle = match known.get(&from) {
                        Some(k) => k.jingle,
                        // Google share needs no disco: caps say it.
                        None if info.google && want == Want::Either => false,
                        None => disco(xmpp, &from, left.max(Duration::from_secs(1))).await.1,
                    };
                    known.insert(from, Known { jingle, ..info });
                    if settle.is_none() && pick(&known, want).is_some() {
                        settle = Some(tokio::time::Instant::now() + SETTLE);
                    }
                }
                Some(Incoming::Disconnected(e)) => return Err(Failure::from(e)),
                Some(_) => {}
                None => break,
            },
            _ = tokio::time::sleep_until(wake) => {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    if let Some(found) = pick(&known, want) {
                        return Ok(found);
                    }
                    break;
                }
                if now >= next_announce {
                    xmpp.announce_to(&bare).await?;
                    next_announce = now + REANNOUNCE;
                }
            }
        }
    }
    let what = match want {
        Want::Either => "no resource that can receive files",
        Want::Jingle => "no resource that can receive files by Jingle",
    };
    Err(Failure::new(
        Exit::Unreachable,
        format!(
            "{bare} is offline or has {what} \
             (waited {}s; is `gshare receive` running there?)",
            wait.as_secs()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_first_at_equal_priority_and_priority_wins() {
        let mut k = HashMap::new();
        let a: FullJid = "a@x/j".parse().unwrap_or_else(|_| unreachable!());
        let b: FullJid = "a@x/g".parse().unwrap_or_else(|_| unreachable!());
        k.insert(
            a.clone(),
            Known {
                priority: 0,
                google: false,
                jingle: true,
            },
        );
        k.insert(
            b.clone(),
            Known {
                priority: 0,
                google: true,
                jingle: true,
            },
        );
        assert_eq!(pick(&k, Want::Either), Some((b.clone(), Via::Google)));
        assert_eq!(pick(&k, Want::Jingle).map(|p| p.1), Some(Via::Jingle));
        if let Some(x) = k.get_mut(&a) {
            x.priority = 5;
        }
        assert_eq!(pick(&k, Want::Either), Some((a, Via::Jingle)));
    }
}
