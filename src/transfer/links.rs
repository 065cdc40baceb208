//! `gshare receive` for files announced by link (the upload method, issue
//! 16): a message with an SFS `<file-sharing>`, a `jabber:x:oob` URL or a
//! body that is exactly an https URL ([`crate::upload::parse_announcement`]).
//! The receive job applies the same `--from`, `--auto-accept`/prompt and
//! concurrency rules as for offers; this module checks the link and fetches
//! it into a `.part` file ([`super::files::PartFile`]) under a safe name
//! ([`super::names`]), reporting to the receive job.

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_xmpp::parsers::jid::Jid;
use tokio_xmpp::parsers::message::{Message, MessageType};

use super::fetch::Output;
use super::files::PartFile;
use super::names::safe_file_name;
use crate::upload::{Announcement, DownloadLimits, HttpsClient, check_url, parse_announcement};

/// The largest file fetched from a link that announces no size (a link is
/// peer-driven: without a bound a contact's link could fill the disk). An
/// announced size is the bound when there is one.
pub const MAX_UNANNOUNCED_SIZE: u64 = 64 << 30;

/// A link offer, checked enough to be shown and asked about.
#[derive(Debug, Clone)]
pub(super) struct LinkOffer {
    pub from: Jid,
    pub announcement: Announcement,
    /// The safe local name.
    pub name: String,
}

/// Why a message's link is not offered to the user.
pub(super) enum Examined {
    /// Not an announcement (chat, receipts, errors).
    Nothing,
    Refused {
        from: Jid,
        reason: String,
    },
    Offer(LinkOffer),
}

/// Reads a message: is it a file announcement we may take?
pub(super) fn examine(msg: &Message) -> Examined {
    // gshare joins no rooms; a groupchat message is nobody's file for us.
    if msg.type_ == MessageType::Groupchat {
        return Examined::Nothing;
    }
    let Some(a) = parse_announcement(msg) else {
        return Examined::Nothing;
    };
    let Some(from) = msg.from.clone() else {
        return Examined::Nothing;
    };
    if let Err(e) = check_url(&a.url, from.domain().as_str()) {
        return Examined::Refused {
            from,
            reason: e.to_string(),
        };
    }
    match safe_file_name(&a.suggested_name()) {
        Ok(name) => Examined::Offer(LinkOffer {
            from,
            announcement: a,
            name,
        }),
        Err(e) => Examined::Refused {
            from,
            reason: e.to_string(),
        },
    }
}

/// What a link fetch reports.
#[derive(Debug)]
pub(super) enum LinkEvent {
    Started {
        expected: Option<u64>,
    },
    Progress {
        bytes: u64,
    },
    Done {
        path: Option<std::path::PathBuf>,
        size: u64,
        sha256: String,
    },
    Failed(String),
}

/// Fetches one link into `output`; every outcome is reported on `tx` tagged
/// with `id`.
pub(super) async fn fetch_link(
    client: HttpsClient,
    offer: LinkOffer,
    output: Output,
    id: u64,
    tx: mpsc::UnboundedSender<(u64, LinkEvent)>,
) {
    let send = |ev| {
        let _ = tx.send((id, ev));
    };
    match fetch_inner(&client, &offer, &output, &send).await {
        Ok(done) => send(done),
        Err(reason) => send(LinkEvent::Failed(reason)),
    }
}

async fn fetch_inner(
    client: &HttpsClient,
    offer: &LinkOffer,
    output: &Output,
    send: &impl Fn(LinkEvent),
) -> Result<LinkEvent, String> {
    let a = &offer.announcement;
    let limits = DownloadLimits {
        expected_size: a.size,
        sha256: a.sha256,
        max_size: a.size.unwrap_or(MAX_UNANNOUNCED_SIZE),
    };
    let mut d = client
        .get(&a.url, offer.from.domain().as_str(), limits)
        .await
        .map_err(|e| e.to_string())?;
    send(LinkEvent::Started {
        expected: d.expected_size(),
    });
    match output {
        Output::Stdout => {
            let mut out = tokio::io::stdout();
            while let Some(chunk) = d.chunk().await.map_err(|e| e.to_string())? {
                out.write_all(&chunk)
                    .await
                    .map_err(|e| format!("writing to standard output: {e}"))?;
                send(LinkEvent::Progress {
                    bytes: d.received(),
                });
            }
            out.flush()
                .await
                .map_err(|e| format!("writing to standard output: {e}"))?;
            let done = d.finished().ok_or("the download did not end")?;
            Ok(LinkEvent::Done {
                path: None,
                size: done.size,
                sha256: hex::encode(done.sha256),
            })
        }
        Output::Dir { dir, overwrite } => {
            let mut part = PartFile::create(dir, &offer.name, d.expected_size())
                .await
                .map_err(|e| format!("{:?}: {e}", offer.name))?;
            // Dropping `part` on any error below removes the temporary file:
            // nothing is kept under the final name.
            while let Some(chunk) = d.chunk().await.map_err(|e| e.to_string())? {
                part.write(&chunk)
                    .await
                    .map_err(|e| format!("{:?}: {e}", offer.name))?;
                send(LinkEvent::Progress {
                    bytes: part.written(),
                });
            }
            let finished = if *overwrite {
                part.finish(&dir.join(&offer.name), true).await
            } else {
                part.finish_unique(dir, &offer.name).await
            }
            .map_err(|e| format!("{:?}: {e}", offer.name))?;
            Ok(LinkEvent::Done {
                path: Some(finished.path),
                size: finished.size,
                sha256: finished.sha256,
            })
        }
    }
}
