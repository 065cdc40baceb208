//! The sender's job on one open channel: the HTTP server of `crate::http`
//! answering the receiver's GETs from the catalog (docs/protocol.md §A.6).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::channel::{Link, Progress};
use crate::http::{Catalog, ServeEvent};

/// Serves `catalog` on `stream` until the receiver closes the connection.
///
/// `stream` is whatever carries the bytes: the PseudoTCP stream of a
/// classic session, or that stream wrapped in TLS when `link.negotiated`
/// says so. The HTTP server is the same either way.
pub async fn serve<S>(
    stream: S,
    link: Link,
    catalog: Arc<Catalog>,
    progress: Progress<ServeEvent>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tracing::debug!(
        peer_is_gshare = link.peer_is_gshare,
        classic = link.negotiated.is_classic(),
        "serving over the channel"
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let forward = tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            progress.send(ev);
        }
    });
    let r = crate::http::serve(stream, catalog, tx)
        .await
        .map_err(|e| e.to_string());
    let _ = forward.await;
    r
}
