//! The receiver's job on one open channel: GET every item of the manifest
//! over one keep-alive HTTP connection (docs/protocol.md §A.6) and save it
//! through `.part` files ([`super::files`]) or the folder unpacker
//! ([`super::tar`]), reporting progress to the receive job.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::channel::{Link, Progress};
use super::files::PartFile;
use super::names::safe_file_name;
use crate::secure::SecureError;
use crate::session::{ItemKind, Manifest};

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
pub enum Output {
    Dir { dir: PathBuf, overwrite: bool },
    Stdout,
}

/// What a fetch job needs.
pub struct FetchJob {
    pub sender: String,
    /// No byte for this long ends the transfer.
    pub stall: std::time::Duration,
    pub manifest: Manifest,
    pub source_path: String,
    pub output: Output,
}

/// The receiver's job on an open stream: GET every item in manifest order
/// over one keep-alive connection and save it.
///
/// `stream` is whatever carries the bytes: the PseudoTCP stream of a
/// classic session, or that stream wrapped in TLS when `link.negotiated`
/// says so.
pub async fn fetch<S>(
    stream: S,
    link: Link,
    job: FetchJob,
    progress: Progress<FetchEvent>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tracing::debug!(
        peer_is_gshare = link.peer_is_gshare,
        classic = link.negotiated.is_classic(),
        "fetching over the channel"
    );
    let send = |ev| progress.send(ev);
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
            Err(e) => {
                return Err(match SecureError::refusal_in(&e) {
                    Some(tls) => tls.to_string(),
                    None => format!("requesting {:?}: {e}", item.name),
                });
            }
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
        Ok(r) => r.map_err(|e| match SecureError::refusal_in(&e) {
            Some(tls) => format!("receiving {name:?}: {tls}"),
            None => format!("receiving {name:?}: {e}"),
        }),
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
