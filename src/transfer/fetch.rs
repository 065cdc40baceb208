//! The receiver's job on one open channel: GET every item of the manifest
//! over one keep-alive HTTP connection (docs/protocol.md §D.3) and save it
//! through `.part` files ([`super::files`]) or the folder unpacker
//! ([`super::tar`]), reporting progress to the receive job.
//!
//! Between gshare peers ([`Integrity`], from the session extension,
//! docs/protocol.md §H.3) every file is checked against the sender's SHA-256
//! before it is renamed into place, a folder against the digest trailer of
//! its tar stream, and a file with a resumable partial on disk is asked for
//! from where the partial ends (`Range`). A mismatch fails the job: nothing
//! is saved under the item's name and the receive job ends the session
//! without `<complete/>`, so the sender fails too.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::channel::{Link, Progress};
use super::files::{PartFile, ResumeKey, StreamHasher, partial_offset, remove_partial};
use super::names::safe_file_name;
use crate::http::GetOptions;
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
        /// `sha256` equals the sender's digest (false with classic peers).
        verified: bool,
        /// Bytes that were already on disk from an interrupted transfer.
        resumed_from: u64,
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
    /// Digests and resume, when the sender is gshare and sent the extension;
    /// `None` with classic peers (nothing to check against).
    pub integrity: Option<Integrity>,
}

/// What the session extension lets the receiver check and resume.
#[derive(Debug, Clone, Default)]
pub struct Integrity {
    /// The sender's bare JID (part of the resume key).
    pub sender: String,
    /// The sender's SHA-256 per manifest index.
    pub digests: Vec<Option<[u8; 32]>>,
    /// Both sides said `<resume/>` and resuming is not switched off here:
    /// partials are kept and continued with `Range`.
    pub resume: bool,
    /// `--no-resume`: start over (an old partial of the item is removed) and
    /// keep nothing when interrupted.
    pub no_resume: bool,
}

impl Integrity {
    fn digest(&self, index: usize) -> Option<[u8; 32]> {
        self.digests.get(index).copied().flatten()
    }
}

/// How one file item is saved: checked against a digest, perhaps resumed.
struct FilePlan {
    digest: Option<[u8; 32]>,
    /// Set when the item is kept in a resumable partial.
    key: Option<ResumeKey>,
    /// Bytes of the partial to continue from (0: from the start).
    offset: u64,
}

/// Decides how to save file item `index` into `dir` (blocking: one `lstat`).
fn plan_file(job: &FetchJob, index: usize, dir: &Path, name: &str, size: Option<u64>) -> FilePlan {
    let Some(integrity) = &job.integrity else {
        return FilePlan {
            digest: None,
            key: None,
            offset: 0,
        };
    };
    let digest = integrity.digest(index);
    let key = digest.zip(size).map(|(sha256, size)| ResumeKey {
        sender: integrity.sender.clone(),
        name: name.to_owned(),
        size,
        sha256,
    });
    match key {
        Some(key) if integrity.resume && !integrity.no_resume => FilePlan {
            digest,
            offset: partial_offset(dir, &key),
            key: Some(key),
        },
        Some(key) => {
            if integrity.no_resume {
                remove_partial(dir, &key);
            }
            FilePlan {
                digest,
                key: None,
                offset: 0,
            }
        }
        None => FilePlan {
            digest,
            key: None,
            offset: 0,
        },
    }
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
        let plan = match (&job.output, item.kind) {
            (Output::Dir { dir, .. }, ItemKind::File) => {
                let name = safe_file_name(&item.name).map_err(|e| e.to_string())?;
                Some(plan_file(&job, index, dir, &name, item.size))
            }
            _ => None,
        };
        let options = GetOptions {
            range_from: plan.as_ref().map(|p| p.offset).filter(|&n| n > 0),
            // A folder's digest comes as a trailer (docs/protocol.md §H.3).
            trailers: job.integrity.is_some() && item.kind == ItemKind::Folder,
        };
        let got = tokio::time::timeout(job.stall, client.get_with(&path, options))
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
        let digest = job.integrity.as_ref().and_then(|i| i.digest(index));
        let done = match (&job.output, item.kind) {
            (Output::Stdout, _) => {
                let mut out = tokio::io::stdout();
                let mut n = 0u64;
                // Bytes on standard output cannot be taken back; a mismatch
                // still fails the transfer (exit 7) instead of claiming it.
                let hasher = digest.map(|_| StreamHasher::new());
                while let Some(chunk) = next_chunk(&mut response, job.stall, &item.name).await? {
                    if let Some(h) = &hasher {
                        h.update(chunk.clone()).await;
                    }
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
                let sha256 = match (hasher, digest) {
                    (Some(h), Some(want)) => {
                        let got = h
                            .finish()
                            .await
                            .map_err(|e| format!("{:?}: {e}", item.name))?;
                        check_digest(&item.name, want, got)?;
                        Some(hex::encode(got))
                    }
                    _ => None,
                };
                FetchEvent::ItemDone {
                    index,
                    path: None,
                    size: n,
                    verified: sha256.is_some(),
                    sha256,
                    resumed_from: 0,
                }
            }
            (Output::Dir { dir, overwrite }, ItemKind::File) => {
                let plan = plan.unwrap_or(FilePlan {
                    digest,
                    key: None,
                    offset: 0,
                });
                save_file(
                    &mut response,
                    job.stall,
                    dir,
                    *overwrite,
                    &item.name,
                    item.size,
                    index,
                    plan,
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
                    job.integrity.is_some(),
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

/// Fails with one sentence naming the item when `got` is not the sender's
/// digest `want`.
fn check_digest(name: &str, want: [u8; 32], got: [u8; 32]) -> Result<(), String> {
    if want == got {
        return Ok(());
    }
    Err(format!(
        "{name:?}: what arrived does not match the sender's SHA-256 (expected {}, got {}); \
         nothing was saved under its name",
        hex::encode(want),
        hex::encode(got)
    ))
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
    plan: FilePlan,
    send: &impl Fn(FetchEvent),
) -> Result<FetchEvent, String> {
    let name = safe_file_name(peer_name).map_err(|e| e.to_string())?;
    let mut part = match &plan.key {
        // A `200` instead of the `206` asked for starts over (offset 0).
        Some(key) => PartFile::resume(dir, key, response.offset()).await,
        None => PartFile::create(dir, &name, size).await,
    }
    .map_err(|e| format!("{peer_name:?}: {e}"))?;
    if let Some(digest) = plan.digest {
        part.verify_against(digest);
    }
    if part.resumed_from() > 0 {
        tracing::info!(name = %peer_name, offset = part.resumed_from(), "resuming");
    }
    while let Some(chunk) = next_chunk(response, stall, peer_name).await? {
        part.write_bytes(chunk)
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
        verified: finished.verified,
        resumed_from: finished.resumed_from,
    })
}

/// Unpacks a folder's tar stream. With `verify` (a gshare sender), the
/// stream is hashed off this task and compared with the sender's digest
/// trailer before the folder is renamed into place; `sha256` is then that
/// verified stream digest.
#[allow(clippy::too_many_arguments)]
async fn save_folder(
    response: &mut crate::http::Response,
    stall: std::time::Duration,
    dir: &Path,
    peer_name: &str,
    size: Option<u64>,
    index: usize,
    verify: bool,
    send: &impl Fn(FetchEvent),
) -> Result<FetchEvent, String> {
    let name = safe_file_name(peer_name).map_err(|e| e.to_string())?;
    let mut unpacker = super::tar::TarUnpacker::new(dir, &name, size)
        .await
        .map_err(|e| e.to_string())?;
    let hasher = verify.then(StreamHasher::new);
    while let Some(chunk) = next_chunk(response, stall, peer_name).await? {
        if let Some(h) = &hasher {
            h.update(chunk.clone()).await;
        }
        unpacker
            .push(chunk)
            .await
            .map_err(|e| format!("{peer_name:?}: {e}"))?;
        send(FetchEvent::Progress {
            index,
            bytes: unpacker.content_bytes(),
        });
    }
    let sha256 = match hasher {
        Some(h) => {
            let got = h
                .finish()
                .await
                .map_err(|e| format!("{peer_name:?}: {e}"))?;
            let want = response.digest_trailer().ok_or_else(|| {
                format!(
                    "{peer_name:?}: the sender did not send the folder's SHA-256; \
                     nothing was saved under its name"
                )
            })?;
            // Dropping the unpacker removes the hidden staging folder.
            check_digest(peer_name, want, got)?;
            Some(hex::encode(got))
        }
        None => None,
    };
    let finished = unpacker
        .finish()
        .await
        .map_err(|e| format!("{peer_name:?}: {e}"))?;
    Ok(FetchEvent::ItemDone {
        index,
        path: Some(finished.path),
        size: finished.size,
        verified: sha256.is_some(),
        sha256,
        resumed_from: 0,
    })
}
