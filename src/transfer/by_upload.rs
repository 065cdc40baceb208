//! `gshare send` by upload (issue 16): when the recipient has no online
//! resource that can receive peer to peer within `--wait`, or with
//! `--method upload`, each file is stored on our server's XEP-0363 upload
//! service and announced to the recipient's bare JID in a message
//! ([`crate::upload`]). One upload and one message per file; a file over the
//! service's `max-file-size` is refused before any byte of any file moves.

use std::path::Path;

use serde_json::json;
use tokio_xmpp::parsers::jid::BareJid;

use super::report::{Reporter, TransferReport, describe_items, human_rate, human_size};
use super::{Exit, Failure};
use crate::upload::{UploadError, Uploader};
use crate::xmpp::Xmpp;

/// One file to upload.
pub(super) struct UploadItem<'a> {
    pub name: &'a str,
    pub path: &'a Path,
    pub size: u64,
}

/// The exit code of an upload failure (documented in `gshare --help`).
pub(super) fn upload_failure(e: UploadError) -> Failure {
    let exit = match &e {
        // No way to reach an offline recipient at all.
        UploadError::NoService { .. } => Exit::Unreachable,
        UploadError::Xmpp(x) => return Failure::from(x.clone()),
        // Refused (too large, quota) or broken mid-way: nothing announced.
        UploadError::TooLarge { .. }
        | UploadError::SlotRefused { .. }
        | UploadError::PutRefused { .. }
        | UploadError::PutFailed { .. } => Exit::TransferFailed,
        // Local I/O, connection, TLS, or a server that answers nonsense.
        UploadError::Read { .. }
        | UploadError::Connect { .. }
        | UploadError::Url(_)
        | UploadError::BadSlot { .. } => Exit::Failure,
    };
    Failure::new(exit, e.to_string())
}

/// Uploads and announces every item to `to`; `why` is said first (the
/// reason for this method). Ctrl-C stops before the next announcement.
pub(super) async fn send_by_upload(
    xmpp: &Xmpp,
    ca_file: Option<&Path>,
    to: &BareJid,
    items: &[UploadItem<'_>],
    report: &Reporter,
    why: Option<String>,
) -> Result<(), Failure> {
    let uploader = Uploader::new(xmpp, ca_file).await.map_err(upload_failure)?;
    for it in items {
        uploader
            .check_size(it.name, it.size)
            .map_err(upload_failure)?;
    }
    if let Some(why) = why {
        report.say(why);
    }
    let names: Vec<String> = items.iter().map(|i| i.name.to_string()).collect();
    let total: u64 = items.iter().map(|i| i.size).sum();
    report.say(format!(
        "Uploading {} ({}) for {to}",
        describe_items(&names),
        human_size(total)
    ));
    report.event(
        "offer",
        json!({"to": to.to_string(), "total": total, "method": "upload",
               "items": items.iter().map(|i| json!({"name": i.name, "size": i.size,
                   "kind": "file"})).collect::<Vec<_>>()}),
    );
    let mut bars = TransferReport::new(None, "total");
    bars.start(report, total);
    let mut before = 0u64;
    let work = async {
        for it in items {
            bars.item_started(report, it.name, Some(it.size));
            let announcement = {
                let bars = &mut bars;
                let mut progress =
                    |n: u64| bars.progress(report, it.name, n, Some(it.size), before + n, total);
                uploader
                    .upload(it.path, it.name, it.size, &mut progress)
                    .await
                    .map_err(upload_failure)?
            };
            uploader
                .announce(to, &announcement)
                .await
                .map_err(upload_failure)?;
            before += it.size;
            report.event(
                "item",
                json!({"name": it.name, "size": it.size, "url": announcement.url,
                       "sha256": announcement.sha256.map(hex::encode)}),
            );
        }
        Ok::<(), Failure>(())
    };
    let outcome = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(Failure::new(
            Exit::Cancelled,
            "cancelled; the files announced so far stay announced",
        )),
    };
    bars.finish(report);
    let elapsed = bars.elapsed();
    match &outcome {
        Ok(()) => {
            report.say(format!(
                "Uploaded {} ({}) for {to} in {:.1}s, {}; {to} got one link per file",
                describe_items(&names),
                human_size(total),
                elapsed.as_secs_f64(),
                human_rate(total, elapsed)
            ));
            report.event(
                "done",
                json!({"bytes": total, "seconds": elapsed.as_secs_f64(), "method": "upload"}),
            );
        }
        Err(f) => report.event(
            "failed",
            json!({"reason": f.message, "exit": f.exit.code()}),
        ),
    }
    outcome
}
