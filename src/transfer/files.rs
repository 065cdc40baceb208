//! Receiving a file safely: bytes go to a hidden part file in the target directory, are
//! counted against the manifest size and hashed (SHA-256), and only a complete file — whose
//! digest matches the sender's when the sender gave one — is fsynced and renamed into place,
//! without replacing an existing file unless asked to (`renameat2(RENAME_NOREPLACE)`, with a
//! hard-link fallback, via `tempfile`'s `persist_noclobber`).
//!
//! Two kinds of part file:
//! - **Temporary** (`.<name>.gshare-part-XXXXXX`): the item has no sender digest (classic
//!   peers, folders). Removed on any failure and on drop.
//! - **Resumable** (`.<name>.gshare-resume-<key>`, [`ResumeKey`]): the sender gave the item's
//!   SHA-256. The name is derived from (sender bare JID, name, size, digest), so the same item
//!   offered again by the same sender finds it ([`partial_offset`]) and continues with an HTTP
//!   `Range` request, while a changed source (other digest) or another sender never does. It
//!   is kept when the transfer is interrupted (error, peer gone, Ctrl-C, or the receiver killed:
//!   the bytes are written in stream order, so whatever is on disk is a prefix of the item). It
//!   is removed when the final check fails: the whole file (the prefix found on disk plus the
//!   new bytes) is hashed and compared with the sender's digest *before* the rename, and a
//!   mismatch leaves nothing under the final name. [`remove_stale_partials`] drops partials
//!   older than a configurable age ([`DEFAULT_RESUME_MAX_AGE`]).
//!
//! Writing and hashing run on a blocking worker thread fed through a bounded channel, so the
//! task that drains the socket only hands over `Bytes` and never waits for SHA-256 or the disk
//! (unless the worker is [`WORKER_DEPTH`] chunks behind: then it is backpressure, by design).
//!
//! Also: [`spool_stdin`], which turns standard input into something with a known size and
//! digest for the sender's manifest, [`digest_file`] for the sender's per-item SHA-256,
//! [`StreamHasher`] for hashing a stream (a folder's tar) off the socket's task, and
//! [`rename_noreplace`] for directories.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tempfile::TempPath;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::transfer::names::{MAX_NAME_BYTES, unique_path};

/// Write buffer in front of the part file (on the worker thread).
const WRITE_BUFFER: usize = 256 * 1024;
/// Chunks queued for the worker thread. Bound on memory: this many chunks of at most hyper's
/// read buffer (≤ 400 KiB each) per file being received.
pub const WORKER_DEPTH: usize = 32;
/// Read size when hashing from disk.
const HASH_READ: usize = 1024 * 1024;
/// Bytes of the item name kept in a part file name (it is only a hint for humans).
const TEMP_NAME_HINT: usize = 100;
/// Marker in the names of temporary part files.
const TEMP_MARKER: &str = ".gshare-part-";
/// Marker in the names of resumable partials.
const RESUME_MARKER: &str = ".gshare-resume-";
/// Hex digits of the [`ResumeKey`] hash in a partial's name (128 bits: no accidental clash).
const KEY_HEX: usize = 32;
/// How long a partial waits for its transfer to be resumed, unless configured otherwise.
pub const DEFAULT_RESUME_MAX_AGE: Duration = Duration::from_secs(3 * 24 * 3600);

/// Why receiving a file failed. A temporary part file has been (or will be, on drop) removed;
/// a resumable partial is kept unless said otherwise. Nothing is ever left at the final path.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The peer sent more bytes than the manifest announced.
    #[error("received more than the announced {expected} bytes")]
    TooLong {
        /// Announced size.
        expected: u64,
    },
    /// The body ended before the announced size.
    #[error("received {received} of the announced {expected} bytes")]
    TooShort {
        /// Announced size.
        expected: u64,
        /// Bytes received.
        received: u64,
    },
    /// The received file is not what the sender hashed when it offered it (altered on the way,
    /// or the source changed since): nothing was saved and the part file was removed.
    #[error(
        "the received file does not match the sender's SHA-256 (expected {expected}, got {actual}); nothing was saved"
    )]
    DigestMismatch {
        /// The sender's digest, lowercase hex.
        expected: String,
        /// The digest of what arrived, lowercase hex.
        actual: String,
    },
    /// Another gshare process is receiving into the same partial.
    #[error("{0} is being written by another gshare process")]
    Busy(PathBuf),
    /// The final path exists and overwriting was not requested.
    #[error("{0} already exists")]
    Exists(PathBuf),
    /// A filesystem operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl FileError {
    fn io(what: &'static str, path: &Path, source: io::Error) -> Self {
        FileError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}

/// A completed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Where the file now is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its contents, lowercase hex.
    pub sha256: String,
    /// Whether `sha256` was compared with (and equals) the sender's digest.
    pub verified: bool,
    /// Bytes that were already on disk from an earlier, interrupted transfer.
    pub resumed_from: u64,
}

/// What identifies a resumable partial: the same sender offering the same content under the
/// same name. Only items with a sender digest have one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeKey {
    /// The sender's bare JID (resources change between runs; the account does not).
    pub sender: String,
    /// The item name as offered (before any local renaming).
    pub name: String,
    /// The manifest size.
    pub size: u64,
    /// The sender's SHA-256 of the item.
    pub sha256: [u8; 32],
}

impl ResumeKey {
    /// The partial's file name: `.<name hint>.gshare-resume-<32 hex>`, the hex being a SHA-256
    /// over all four fields (length-prefixed, so no two keys share an encoding).
    pub fn file_name(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"gshare-resume-1");
        for field in [self.sender.as_bytes(), self.name.as_bytes()] {
            h.update((field.len() as u64).to_be_bytes());
            h.update(field);
        }
        h.update(self.size.to_be_bytes());
        h.update(self.sha256);
        let key = hex::encode(h.finalize().as_slice());
        format!(
            ".{}{RESUME_MARKER}{}",
            name_hint(&self.name),
            &key[..KEY_HEX]
        )
    }

    /// The partial's path in `dir`.
    pub fn partial_path(&self, dir: &Path) -> PathBuf {
        dir.join(self.file_name())
    }
}

/// The start of `name`, at most [`TEMP_NAME_HINT`] bytes, cut at a character boundary.
fn name_hint(name: &str) -> &str {
    let mut hint = name.len().min(TEMP_NAME_HINT);
    while !name.is_char_boundary(hint) {
        hint -= 1;
    }
    &name[..hint]
}

/// Where the resumable partial for `key` in `dir` lets the transfer continue: the number of
/// bytes it holds, capped at `size - 1` so that at least one byte is always fetched (the sender
/// then sees the item requested and served, and the `206` is the same path as any resume).
/// 0 if there is none, it is not a regular file, or it is larger than the item (then it is
/// removed). Blocking.
pub fn partial_offset(dir: &Path, key: &ResumeKey) -> u64 {
    let path = key.partial_path(dir);
    let Ok(meta) = path.symlink_metadata() else {
        return 0;
    };
    if !meta.is_file() {
        return 0;
    }
    if meta.len() > key.size {
        debug!(path = %path.display(), "partial larger than the item; removing it");
        let _ = std::fs::remove_file(&path);
        return 0;
    }
    meta.len().min(key.size.saturating_sub(1))
}

/// Removes the resumable partial for `key` in `dir`, if any (`--no-resume`: start over and keep
/// nothing). Blocking.
pub fn remove_partial(dir: &Path, key: &ResumeKey) {
    let path = key.partial_path(dir);
    if path.symlink_metadata().is_ok_and(|m| m.is_file()) {
        match std::fs::remove_file(&path) {
            Ok(()) => debug!(path = %path.display(), "partial removed (no resume)"),
            Err(e) => debug!(path = %path.display(), error = %e, "cannot remove partial"),
        }
    }
}

/// Removes part files in `dir` (resumable partials, and temporary part files a killed receiver
/// left behind) whose last change is more than `max_age` ago. Returns how many were removed.
/// Blocking; run when `receive` starts.
pub fn remove_stale_partials(dir: &Path, max_age: Duration) -> io::Result<usize> {
    remove_stale_partials_at(dir, max_age, SystemTime::now())
}

fn remove_stale_partials_at(dir: &Path, max_age: Duration, now: SystemTime) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.as_bytes();
        let ours = name.starts_with(b".")
            && [RESUME_MARKER, TEMP_MARKER]
                .iter()
                .any(|m| name.windows(m.len()).any(|w| w == m.as_bytes()));
        if !ours {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue }; // lstat
        let old = meta
            .modified()
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > max_age);
        if meta.is_file() && old {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    debug!(path = %entry.path().display(), "removed stale part file");
                    removed += 1;
                }
                Err(e) => debug!(path = %entry.path().display(), error = %e, "cannot remove"),
            }
        }
    }
    Ok(removed)
}

/// SHA-256 of the first `size` bytes of the file at `path` (fails if it is shorter): the
/// sender's digest of an item, computed before the offer. Blocking; see [`digest_file`].
pub fn hash_file(path: &Path, size: u64) -> io::Result<[u8; 32]> {
    let mut file = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; HASH_READ];
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} is shorter than {size} bytes", path.display()),
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(h.finalize().into())
}

/// [`hash_file`] on a blocking thread (never on the async workers).
pub async fn digest_file(path: PathBuf, size: u64) -> io::Result<[u8; 32]> {
    tokio::task::spawn_blocking(move || hash_file(&path, size))
        .await
        .map_err(io::Error::other)?
}

/// Hashes the prefix `[0, len)` of an open file (positional reads; the file offset is untouched).
fn hash_prefix(file: &File, len: u64, h: &mut Sha256) -> io::Result<()> {
    let mut buf = vec![0u8; HASH_READ];
    let mut at = 0u64;
    while at < len {
        let want = usize::try_from(len - at).map_or(buf.len(), |l| l.min(buf.len()));
        let n = match file.read_at(&mut buf[..want], at) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "partial file shrank",
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(())
}

/// SHA-256 of a stream (e.g. a folder's tar bytes as received), computed on a blocking thread
/// so the task draining the socket only hands `Bytes` over. Memory: [`WORKER_DEPTH`] chunks.
pub struct StreamHasher {
    tx: mpsc::Sender<Bytes>,
    worker: JoinHandle<[u8; 32]>,
}

impl StreamHasher {
    /// Starts the hashing thread.
    pub fn new() -> Self {
        let (tx, mut rx) = mpsc::channel::<Bytes>(WORKER_DEPTH);
        let worker = tokio::task::spawn_blocking(move || {
            let mut h = Sha256::new();
            while let Some(chunk) = rx.blocking_recv() {
                h.update(&chunk);
            }
            h.finalize().into()
        });
        StreamHasher { tx, worker }
    }

    /// Hashes `data` next (waits only if the thread is [`WORKER_DEPTH`] chunks behind).
    pub async fn update(&self, data: Bytes) {
        // The thread only stops when the sender is dropped.
        let _ = self.tx.send(data).await;
    }

    /// The digest of everything passed to [`StreamHasher::update`].
    pub async fn finish(self) -> io::Result<[u8; 32]> {
        drop(self.tx);
        self.worker.await.map_err(io::Error::other)
    }
}

impl Default for StreamHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a part file lives.
enum Location {
    /// Removed when dropped.
    Temp(TempPath),
    /// A resumable partial: kept when dropped.
    Kept(PathBuf),
}

impl Location {
    fn path(&self) -> &Path {
        match self {
            Location::Temp(t) => t,
            Location::Kept(p) => p,
        }
    }

    /// Renames to `target` (not replacing an existing file unless `overwrite`); on failure
    /// hands the location back.
    fn persist(self, target: &Path, overwrite: bool) -> Result<(), (Location, io::Error)> {
        match self {
            Location::Temp(t) if overwrite => t
                .persist(target)
                .map_err(|e| (Location::Temp(e.path), e.error)),
            Location::Temp(t) => t
                .persist_noclobber(target)
                .map_err(|e| (Location::Temp(e.path), e.error)),
            Location::Kept(p) => {
                let r = if overwrite {
                    std::fs::rename(&p, target)
                } else {
                    rename_noreplace(&p, target)
                };
                r.map_err(|e| (Location::Kept(p), e))
            }
        }
    }
}

/// What the worker thread hands back: the file (for the fsync) and the digest of its contents.
struct WorkerDone {
    file: File,
    digest: [u8; 32],
}

/// The worker thread: hashes the `prefix` bytes already in the file, then writes and hashes
/// every chunk in order. Stops at the first error (the channel closes, the next `write` sees it).
fn run_worker(file: File, prefix: u64, mut rx: mpsc::Receiver<Bytes>) -> io::Result<WorkerDone> {
    let mut h = Sha256::new();
    hash_prefix(&file, prefix, &mut h)?;
    {
        let mut w = io::BufWriter::with_capacity(WRITE_BUFFER, &file);
        while let Some(chunk) = rx.blocking_recv() {
            w.write_all(&chunk)?;
            h.update(&chunk);
        }
        w.flush()?;
    }
    Ok(WorkerDone {
        file,
        digest: h.finalize().into(),
    })
}

/// A file being received (see the module doc). Dropping it before [`PartFile::finish`]
/// removes a temporary part file and keeps a resumable partial.
pub struct PartFile {
    /// `None` once the writing ended (finish, or the worker failed).
    tx: Option<mpsc::Sender<Bytes>>,
    worker: Option<JoinHandle<io::Result<WorkerDone>>>,
    /// `None` once handed to the final rename.
    location: Option<Location>,
    expected: Option<u64>,
    /// The sender's SHA-256: checked before the rename.
    expected_digest: Option<[u8; 32]>,
    /// Bytes already on disk when this started.
    resumed_from: u64,
    /// Position reached in the item (`resumed_from` plus bytes handed to the worker).
    written: u64,
    failed: bool,
}

impl PartFile {
    /// Creates a temporary `.<name>.gshare-part-XXXXXX` in `dir` (same directory as the final
    /// file, so the final rename is atomic). `expected` is the manifest size, if the manifest
    /// gave one; writing past it fails at once.
    pub async fn create(
        dir: &Path,
        name: &str,
        expected: Option<u64>,
    ) -> Result<PartFile, FileError> {
        let prefix = format!(".{}{TEMP_MARKER}", name_hint(name));
        let builder_dir = dir.to_owned();
        let named = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new()
                .prefix(&prefix)
                .rand_bytes(8)
                .tempfile_in(&builder_dir)
        })
        .await
        .map_err(|e| FileError::io("create part file in", dir, io::Error::other(e)))?
        .map_err(|e| FileError::io("create part file in", dir, e))?;
        let (file, temp) = named.into_parts();
        debug!(path = %temp.display(), "part file created");
        Ok(Self::start(file, Location::Temp(temp), expected, 0))
    }

    /// Opens (or creates) the resumable partial for `key` in `dir` and continues it at
    /// `offset` (from [`partial_offset`], or 0 to start over, e.g. `--no-resume` or when the
    /// sender answered with the whole item). The partial must hold at least `offset` bytes;
    /// anything after `offset` is cut off. The result checks size and digest against `key`.
    pub async fn resume(dir: &Path, key: &ResumeKey, offset: u64) -> Result<PartFile, FileError> {
        let path = key.partial_path(dir);
        let opened = tokio::task::spawn_blocking({
            let path = path.clone();
            move || open_partial(&path, offset)
        })
        .await
        .map_err(|e| FileError::io("open partial file", &path, io::Error::other(e)))??;
        debug!(path = %path.display(), offset, "resumable partial opened");
        let mut part = Self::start(opened, Location::Kept(path), Some(key.size), offset);
        part.expected_digest = Some(key.sha256);
        Ok(part)
    }

    fn start(file: File, location: Location, expected: Option<u64>, offset: u64) -> PartFile {
        let (tx, rx) = mpsc::channel(WORKER_DEPTH);
        let worker = tokio::task::spawn_blocking(move || run_worker(file, offset, rx));
        PartFile {
            tx: Some(tx),
            worker: Some(worker),
            location: Some(location),
            expected,
            expected_digest: None,
            resumed_from: offset,
            written: offset,
            failed: false,
        }
    }

    /// Checks the finished file against the sender's SHA-256 before the rename (a resumable
    /// partial already has it from its key).
    pub fn verify_against(&mut self, sha256: [u8; 32]) {
        self.expected_digest = Some(sha256);
    }

    /// The part file's path (empty once finished).
    pub fn temp_path(&self) -> &Path {
        self.location.as_ref().map_or(Path::new(""), Location::path)
    }

    /// Position reached in the item: bytes resumed from plus bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes that were already on disk from an earlier transfer.
    pub fn resumed_from(&self) -> u64 {
        self.resumed_from
    }

    /// Appends `data` (copied; see [`PartFile::write_bytes`]).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), FileError> {
        self.write_bytes(Bytes::copy_from_slice(data)).await
    }

    /// Appends `data`: hands it to the worker thread. Fails (and poisons the part file) if
    /// this would exceed the announced size (nothing past it is written) or if an earlier
    /// write failed on disk.
    pub async fn write_bytes(&mut self, data: Bytes) -> Result<(), FileError> {
        if self.failed {
            return Err(FileError::io(
                "write",
                self.temp_path(),
                io::Error::other("part file already failed"),
            ));
        }
        let total = self.written.saturating_add(data.len() as u64);
        if let Some(expected) = self.expected
            && total > expected
        {
            self.failed = true;
            return Err(FileError::TooLong { expected });
        }
        let sent = match &self.tx {
            Some(tx) => tx.send(data).await.is_ok(),
            None => false,
        };
        if !sent {
            // The worker stopped: it failed; its error says why.
            self.failed = true;
            let error = match self.join_worker().await {
                Err(e) => e,
                Ok(_) => FileError::io("write", self.temp_path(), io::Error::other("writer gone")),
            };
            return Err(error);
        }
        self.written = total;
        Ok(())
    }

    /// Ends the writing and waits for the worker's result.
    async fn join_worker(&mut self) -> Result<WorkerDone, FileError> {
        self.tx = None;
        let path = self.temp_path().to_owned();
        let Some(worker) = self.worker.take() else {
            return Err(FileError::io(
                "write",
                &path,
                io::Error::other("writer gone"),
            ));
        };
        worker
            .await
            .map_err(|e| FileError::io("write", &path, io::Error::other(e)))?
            .map_err(|e| FileError::io("write", &path, e))
    }

    /// Completes the file: checks the byte count against the announced size and the digest
    /// against the sender's, fsyncs, and renames to `final_path` — refusing to replace an
    /// existing file unless `overwrite`. On error a temporary part file is removed; a
    /// resumable partial is removed only when its digest is wrong.
    pub async fn finish(
        mut self,
        final_path: &Path,
        overwrite: bool,
    ) -> Result<Finished, FileError> {
        let (location, finished) = self.seal().await?;
        let persisted = tokio::task::spawn_blocking({
            let final_path = final_path.to_owned();
            move || match location.persist(&final_path, overwrite) {
                Ok(()) => Ok(()),
                Err((_, e)) if e.kind() == io::ErrorKind::AlreadyExists => {
                    Err(FileError::Exists(final_path))
                }
                Err((_, e)) => Err(FileError::io("rename to", &final_path, e)),
            }
        })
        .await
        .map_err(|e| FileError::io("rename to", final_path, io::Error::other(e)))?;
        persisted?;
        sync_parent(final_path).await;
        Ok(Finished {
            path: final_path.to_owned(),
            ..finished
        })
    }

    /// Like [`PartFile::finish`] without overwriting, but picks a free name
    /// ([`unique_path`]): `dir/name`, else `dir/name (1).ext`, … retrying if a name is taken
    /// between the check and the rename.
    pub async fn finish_unique(mut self, dir: &Path, name: &str) -> Result<Finished, FileError> {
        let (mut location, finished) = self.seal().await?;
        for _ in 0..100 {
            let candidate = unique_path(dir, name);
            let result = tokio::task::spawn_blocking({
                let candidate = candidate.clone();
                move || location.persist(&candidate, false)
            })
            .await
            .map_err(|e| FileError::io("rename to", dir, io::Error::other(e)))?;
            match result {
                Ok(()) => {
                    sync_parent(&candidate).await;
                    return Ok(Finished {
                        path: candidate,
                        ..finished
                    });
                }
                Err((back, e)) if e.kind() == io::ErrorKind::AlreadyExists => location = back,
                Err((_, e)) => return Err(FileError::io("rename to", &candidate, e)),
            }
        }
        Err(FileError::Exists(dir.join(name)))
    }

    /// Ends the writing, checks size and digest, fsyncs; hands back the location (a temporary
    /// one still auto-removed on drop) and the result without its final path.
    async fn seal(&mut self) -> Result<(Location, Finished), FileError> {
        let path = self.temp_path().to_owned();
        if self.failed {
            return Err(FileError::io(
                "finish",
                &path,
                io::Error::other("part file failed"),
            ));
        }
        if let Some(expected) = self.expected
            && self.written != expected
        {
            return Err(FileError::TooShort {
                expected,
                received: self.written,
            });
        }
        let done = self.join_worker().await?;
        if let Some(expected) = self.expected_digest
            && expected != done.digest
        {
            // Nothing of this may be resumed onto or saved.
            if let Some(Location::Kept(p)) = self.location.take() {
                let _ = tokio::fs::remove_file(&p).await;
            }
            debug!(path = %path.display(), "digest mismatch; part file removed");
            return Err(FileError::DigestMismatch {
                expected: hex::encode(expected),
                actual: hex::encode(done.digest),
            });
        }
        tokio::task::spawn_blocking(move || done.file.sync_all())
            .await
            .map_err(|e| FileError::io("fsync", &path, io::Error::other(e)))?
            .map_err(|e| FileError::io("fsync", &path, e))?;
        let location = self
            .location
            .take()
            .ok_or_else(|| FileError::io("finish", &path, io::Error::other("already finished")))?;
        Ok((
            location,
            Finished {
                path: PathBuf::new(),
                size: self.written,
                sha256: hex::encode(done.digest),
                verified: self.expected_digest.is_some(),
                resumed_from: self.resumed_from,
            },
        ))
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        // Closing the channel lets the worker flush what it has and close the file.
        match &self.location {
            Some(Location::Temp(temp)) => {
                // The TempPath itself unlinks the file.
                debug!(path = %temp.display(), "removing unfinished part file");
            }
            Some(Location::Kept(path)) => {
                debug!(path = %path.display(), bytes = self.written, "keeping partial for resume");
            }
            None => {}
        }
    }
}

/// Opens the partial at `path` for writing at `offset`: never through a symlink, only a
/// regular file, locked against a second gshare, cut to `offset`, positioned there.
fn open_partial(path: &Path, offset: u64) -> Result<File, FileError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| FileError::io("open partial file", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| FileError::io("inspect partial file", path, e))?;
    if !meta.is_file() {
        return Err(FileError::io(
            "open partial file",
            path,
            io::Error::other("not a regular file"),
        ));
    }
    // SAFETY: the descriptor is open for the duration of the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(FileError::Busy(path.to_owned()));
    }
    if meta.len() < offset {
        return Err(FileError::io(
            "resume partial file",
            path,
            io::Error::other(format!("it holds {} bytes, not {offset}", meta.len())),
        ));
    }
    file.set_len(offset)
        .map_err(|e| FileError::io("truncate partial file", path, e))?;
    io::Seek::seek(&mut file, io::SeekFrom::Start(offset))
        .map_err(|e| FileError::io("seek in partial file", path, e))?;
    Ok(file)
}

/// fsyncs the directory holding `path` so the rename survives a crash (best effort).
async fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Ok(dir) = tokio::fs::File::open(parent).await {
            let _ = dir.sync_all().await;
        }
    }
}

/// Renames `from` to `to` atomically, failing with `AlreadyExists` if `to` exists. On Linux
/// this is one `renameat2(RENAME_NOREPLACE)`; where that is not available (another OS, or a
/// filesystem without the flag) it falls back to check-then-rename, which has a small race
/// window. Works for directories.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let c_from = CString::new(from.as_os_str().as_bytes())?;
        let c_to = CString::new(to.as_os_str().as_bytes())?;
        // SAFETY: both arguments are valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                c_from.as_ptr(),
                libc::AT_FDCWD,
                c_to.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if !matches!(
            err.raw_os_error(),
            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
        ) {
            return Err(err);
        }
    }
    rename_noreplace_portable(from, to)
}

/// [`rename_noreplace`] without `renameat2`: check, then rename.
fn rename_noreplace_portable(from: &Path, to: &Path) -> io::Result<()> {
    if to.symlink_metadata().is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "destination exists",
        ));
    }
    std::fs::rename(from, to)
}

#[cfg(test)]
mod rename_tests {
    use super::*;

    #[test]
    fn portable_rename_refuses_to_replace_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        std::fs::create_dir(&a).unwrap();
        std::fs::write(&b, b"kept").unwrap();
        let err = rename_noreplace_portable(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&b).unwrap(), b"kept");
        rename_noreplace_portable(&a, &c).unwrap();
        assert!(c.is_dir() && !a.exists());
        let err = rename_noreplace_portable(&b, &c).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }
}

/// Standard input made into a sendable file.
#[derive(Debug)]
pub struct StdinSource {
    /// A path the HTTP server can open: `/proc/self/fd/0` for a redirected regular file, or a
    /// temporary spool file.
    pub path: PathBuf,
    /// Its size in bytes (the manifest size).
    pub size: u64,
    /// SHA-256 of those bytes (computed while spooling, or by reading the redirected file).
    pub sha256: [u8; 32],
    /// The spool file, deleted when this is dropped; `None` when stdin is used directly.
    pub spool: Option<TempPath>,
}

/// Prepares standard input for sending. A regular file on stdin (`< file`) is used directly:
/// the server reopens it through `/proc/self/fd/0` (from its start) and its size comes from
/// `stat`. Anything else (pipe, terminal, socket) is copied to a temporary file in `spool_dir`
/// (e.g. `std::env::temp_dir()`), since the manifest needs the size before sending. Either way
/// the SHA-256 is computed on the way. Blocking: call it before starting the transfer, or in
/// `spawn_blocking`.
pub fn spool_stdin(spool_dir: &Path) -> io::Result<StdinSource> {
    spool_fd(Path::new("/proc/self/fd/0"), spool_dir)
}

/// [`spool_stdin`] for any open descriptor, named by its `/proc/self/fd/N` path.
fn spool_fd(fd_path: &Path, spool_dir: &Path) -> io::Result<StdinSource> {
    let meta = std::fs::metadata(fd_path)?;
    if meta.is_file() {
        return Ok(StdinSource {
            path: fd_path.to_owned(),
            size: meta.len(),
            sha256: hash_file(fd_path, meta.len())?,
            spool: None,
        });
    }
    spool_reader(&mut File::open(fd_path)?, spool_dir)
}

/// Copies `reader` to a temporary file in `spool_dir`, hashing it on the way; returns its
/// path, size and digest.
pub fn spool_reader(reader: &mut impl Read, spool_dir: &Path) -> io::Result<StdinSource> {
    let mut named = tempfile::Builder::new()
        .prefix(".gshare-stdin-")
        .tempfile_in(spool_dir)?;
    let mut h = Sha256::new();
    let mut size = 0u64;
    {
        let mut w = io::BufWriter::with_capacity(WRITE_BUFFER, named.as_file_mut());
        let mut buf = vec![0u8; WRITE_BUFFER];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            w.write_all(&buf[..n])?;
            h.update(&buf[..n]);
            size += n as u64;
        }
        w.flush()?;
    }
    let path = named.into_temp_path();
    debug!(path = %path.display(), size, "stdin spooled");
    Ok(StdinSource {
        path: path.to_path_buf(),
        size,
        sha256: h.finalize().into(),
        spool: Some(path),
    })
}

// Keep the name-length limit visible here: part-file names stay below it.
const _: () = assert!(TEMP_NAME_HINT + RESUME_MARKER.len() + KEY_HEX + 1 < MAX_NAME_BYTES);

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn complete_file_is_renamed_with_hash() {
        let dir = tempfile::tempdir().unwrap();
        let mut part = PartFile::create(dir.path(), "a.txt", Some(11))
            .await
            .unwrap();
        let temp = part.temp_path().to_owned();
        assert!(
            temp.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(".a.txt.gshare-part-")
        );
        part.write(b"hello ").await.unwrap();
        part.write(b"world").await.unwrap();
        let done = part.finish(&dir.path().join("a.txt"), false).await.unwrap();
        assert_eq!(done.size, 11);
        assert_eq!(
            done.sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(
            std::fs::read(dir.path().join("a.txt")).unwrap(),
            b"hello world"
        );
        assert_eq!(leftovers(dir.path()), ["a.txt"]);
    }

    #[tokio::test]
    async fn too_long_fails_immediately_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut part = PartFile::create(dir.path(), "a", Some(4)).await.unwrap();
        part.write(b"abc").await.unwrap();
        assert!(matches!(
            part.write(b"de").await,
            Err(FileError::TooLong { expected: 4 })
        ));
        assert_eq!(part.written(), 3);
        assert!(part.write(b"d").await.is_err(), "poisoned after overflow");
        assert!(part.finish(&dir.path().join("a"), false).await.is_err());
        assert!(leftovers(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn too_short_fails_at_finish_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut part = PartFile::create(dir.path(), "a", Some(10)).await.unwrap();
        part.write(b"abc").await.unwrap();
        let err = part.finish(&dir.path().join("a"), false).await.unwrap_err();
        assert!(
            matches!(
                err,
                FileError::TooShort {
                    expected: 10,
                    received: 3
                }
            ),
            "{err}"
        );
        assert!(leftovers(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn dropped_part_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut part = PartFile::create(dir.path(), "a", None).await.unwrap();
        part.write(&[1u8; 100_000]).await.unwrap();
        assert_eq!(leftovers(dir.path()).len(), 1);
        drop(part);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn no_overwrite_without_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a");
        std::fs::write(&target, b"old").unwrap();
        let mut part = PartFile::create(dir.path(), "a", Some(3)).await.unwrap();
        part.write(b"new").await.unwrap();
        let err = part.finish(&target, false).await.unwrap_err();
        assert!(matches!(err, FileError::Exists(_)), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(leftovers(dir.path()), ["a"]);

        let mut part = PartFile::create(dir.path(), "a", Some(3)).await.unwrap();
        part.write(b"new").await.unwrap();
        part.finish(&target, true).await.unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(leftovers(dir.path()), ["a"]);
    }

    #[tokio::test]
    async fn finish_unique_picks_a_free_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"old").unwrap();
        let mut part = PartFile::create(dir.path(), "a.txt", None).await.unwrap();
        part.write(b"new").await.unwrap();
        let done = part.finish_unique(dir.path(), "a.txt").await.unwrap();
        assert_eq!(done.path, dir.path().join("a (1).txt"));
        assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"old");
        assert_eq!(std::fs::read(&done.path).unwrap(), b"new");
        assert_eq!(leftovers(dir.path()), ["a (1).txt", "a.txt"]);
    }

    #[tokio::test]
    async fn long_names_still_make_valid_part_files() {
        let dir = tempfile::tempdir().unwrap();
        let name = "ü".repeat(127);
        let mut part = PartFile::create(dir.path(), &name, Some(1)).await.unwrap();
        part.write(b"x").await.unwrap();
        let done = part.finish_unique(dir.path(), &name).await.unwrap();
        assert_eq!(done.path, dir.path().join(&name));
    }

    #[test]
    fn rename_noreplace_for_directories() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let err = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        rename_noreplace(&a, &dir.path().join("c")).unwrap();
        assert!(dir.path().join("c").is_dir());
        assert!(!a.exists());
    }

    #[test]
    fn regular_file_descriptor_is_used_directly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input");
        std::fs::write(&path, b"redirected").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        use std::os::fd::AsRawFd;
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let src = spool_fd(&fd_path, dir.path()).unwrap();
        assert_eq!((src.path.as_path(), src.size), (fd_path.as_path(), 10));
        assert!(src.spool.is_none());
        assert_eq!(std::fs::read(&src.path).unwrap(), b"redirected");
    }

    #[test]
    fn pipe_descriptor_is_spooled() {
        let dir = tempfile::tempdir().unwrap();
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        use std::os::fd::FromRawFd;
        // SAFETY: both descriptors were just created and are owned here.
        let (read_end, mut write_end) = unsafe {
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        };
        io::Write::write_all(&mut write_end, b"piped data").unwrap();
        drop(write_end);
        use std::os::fd::AsRawFd;
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", read_end.as_raw_fd()));
        let src = spool_fd(&fd_path, dir.path()).unwrap();
        assert_eq!(src.size, 10);
        assert!(src.spool.is_some());
        assert!(src.path.starts_with(dir.path()));
        assert_eq!(std::fs::read(&src.path).unwrap(), b"piped data");
    }

    #[test]
    fn spooled_reader_has_size_and_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![5u8; 300_000];
        let src = spool_reader(&mut data.as_slice(), dir.path()).unwrap();
        assert_eq!(src.size, 300_000);
        assert_eq!(std::fs::read(&src.path).unwrap(), data);
        let path = src.path.clone();
        drop(src);
        assert!(!path.exists());
    }

    fn key(data: &[u8]) -> ResumeKey {
        ResumeKey {
            sender: "alice@example.com".into(),
            name: "big.bin".into(),
            size: data.len() as u64,
            sha256: Sha256::digest(data).into(),
        }
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[tokio::test]
    async fn interrupted_partial_is_kept_and_resumed_with_whole_file_check() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(3_000_000);
        let key = key(&data);
        assert_eq!(partial_offset(dir.path(), &key), 0);

        let mut part = PartFile::resume(dir.path(), &key, 0).await.unwrap();
        part.write_bytes(Bytes::copy_from_slice(&data[..1_234_567]))
            .await
            .unwrap();
        drop(part); // peer gone, Ctrl-C, …
        // The worker flushes in the background after the drop.
        let partial = key.partial_path(dir.path());
        for _ in 0..100 {
            if partial.metadata().map(|m| m.len()).unwrap_or(0) == 1_234_567 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(leftovers(dir.path()), [key.file_name()]);
        assert!(key.file_name().starts_with(".big.bin.gshare-resume-"));
        assert_eq!(partial_offset(dir.path(), &key), 1_234_567);

        let mut part = PartFile::resume(dir.path(), &key, 1_234_567).await.unwrap();
        assert_eq!(
            (part.resumed_from(), part.written()),
            (1_234_567, 1_234_567)
        );
        for chunk in data[1_234_567..].chunks(70_000) {
            part.write(chunk).await.unwrap();
        }
        let done = part.finish_unique(dir.path(), "big.bin").await.unwrap();
        assert!(done.verified);
        assert_eq!(done.resumed_from, 1_234_567);
        assert_eq!(done.size, data.len() as u64);
        assert_eq!(done.sha256, hex::encode(key.sha256));
        assert_eq!(std::fs::read(dir.path().join("big.bin")).unwrap(), data);
        assert_eq!(leftovers(dir.path()), ["big.bin"]);
    }

    #[tokio::test]
    async fn receiver_killed_leaves_a_prefix_that_resumes() {
        // A SIGKILLed receiver runs no destructor: what is on disk is whatever the worker
        // wrote, a prefix of the item. Simulate with a partial written directly.
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(500_000);
        let key = key(&data);
        std::fs::write(key.partial_path(dir.path()), &data[..200_000]).unwrap();
        let offset = partial_offset(dir.path(), &key);
        assert_eq!(offset, 200_000);
        let mut part = PartFile::resume(dir.path(), &key, offset).await.unwrap();
        part.write(&data[200_000..]).await.unwrap();
        let done = part.finish(&dir.path().join("out"), false).await.unwrap();
        assert!(done.verified);
        assert_eq!(std::fs::read(dir.path().join("out")).unwrap(), data);
    }

    #[tokio::test]
    async fn corrupted_prefix_fails_the_check_and_nothing_is_saved() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(400_000);
        let key = key(&data);
        let mut bad = data[..100_000].to_vec();
        bad[5] ^= 1;
        std::fs::write(key.partial_path(dir.path()), &bad).unwrap();
        let mut part = PartFile::resume(dir.path(), &key, 100_000).await.unwrap();
        part.write(&data[100_000..]).await.unwrap();
        let err = part
            .finish(&dir.path().join("out"), false)
            .await
            .unwrap_err();
        assert!(matches!(err, FileError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains("nothing was saved"));
        assert!(
            leftovers(dir.path()).is_empty(),
            "partial removed, no final file"
        );
        assert_eq!(partial_offset(dir.path(), &key), 0);
    }

    #[tokio::test]
    async fn temporary_part_file_with_sender_digest_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut part = PartFile::create(dir.path(), "a", Some(5)).await.unwrap();
        part.verify_against(Sha256::digest(b"hello").into());
        part.write(b"hellp").await.unwrap();
        let err = part.finish_unique(dir.path(), "a").await.unwrap_err();
        assert!(matches!(err, FileError::DigestMismatch { .. }), "{err}");
        assert!(leftovers(dir.path()).is_empty());

        let mut part = PartFile::create(dir.path(), "a", Some(5)).await.unwrap();
        part.verify_against(Sha256::digest(b"hello").into());
        part.write(b"hello").await.unwrap();
        let done = part.finish_unique(dir.path(), "a").await.unwrap();
        assert!(done.verified);
        let mut part = PartFile::create(dir.path(), "b", Some(5)).await.unwrap();
        part.write(b"hello").await.unwrap();
        assert!(!part.finish_unique(dir.path(), "b").await.unwrap().verified);
    }

    #[tokio::test]
    async fn another_digest_or_sender_is_not_resumed_onto() {
        let dir = tempfile::tempdir().unwrap();
        let old = pattern(100_000);
        let k_old = key(&old);
        std::fs::write(k_old.partial_path(dir.path()), &old[..50_000]).unwrap();
        let mut changed = old.clone();
        changed[99_999] ^= 0xff; // same name, same size, other content
        let k_new = key(&changed);
        assert_ne!(k_new.file_name(), k_old.file_name());
        assert_eq!(partial_offset(dir.path(), &k_new), 0);
        let k_other = ResumeKey {
            sender: "mallory@example.com".into(),
            ..k_old.clone()
        };
        assert_eq!(partial_offset(dir.path(), &k_other), 0);
        assert_eq!(partial_offset(dir.path(), &k_old), 50_000);
        remove_partial(dir.path(), &k_new);
        assert_eq!(partial_offset(dir.path(), &k_old), 50_000);
        remove_partial(dir.path(), &k_old);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn full_or_oversized_partials() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(1000);
        let k = key(&data);
        std::fs::write(k.partial_path(dir.path()), &data).unwrap();
        assert_eq!(
            partial_offset(dir.path(), &k),
            999,
            "one byte is always fetched"
        );
        let mut part = PartFile::resume(dir.path(), &k, 999).await.unwrap();
        part.write(&data[999..]).await.unwrap();
        part.finish(&dir.path().join("x"), false).await.unwrap();
        std::fs::write(k.partial_path(dir.path()), [&data[..], b"extra"].concat()).unwrap();
        assert_eq!(partial_offset(dir.path(), &k), 0);
        assert!(
            !k.partial_path(dir.path()).exists(),
            "oversized partial removed"
        );
        // A symlink under the partial's name is never followed.
        std::os::unix::fs::symlink(dir.path().join("x"), k.partial_path(dir.path())).unwrap();
        assert_eq!(partial_offset(dir.path(), &k), 0);
        assert!(PartFile::resume(dir.path(), &k, 0).await.is_err());
        assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), data);
    }

    #[tokio::test]
    async fn no_resume_starts_over_and_a_busy_partial_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(10_000);
        let k = key(&data);
        std::fs::write(k.partial_path(dir.path()), b"garbage garbage").unwrap();
        let mut part = PartFile::resume(dir.path(), &k, 0).await.unwrap();
        let busy = PartFile::resume(dir.path(), &k, 0).await;
        assert!(matches!(busy, Err(FileError::Busy(_))));
        part.write(&data).await.unwrap();
        let done = part.finish(&dir.path().join("y"), false).await.unwrap();
        assert_eq!(done.resumed_from, 0);
        assert_eq!(std::fs::read(dir.path().join("y")).unwrap(), data);
    }

    #[tokio::test]
    async fn partial_is_kept_when_the_peer_overruns_or_the_body_is_short() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(10_000);
        let k = key(&data);
        let mut part = PartFile::resume(dir.path(), &k, 0).await.unwrap();
        part.write(&data[..6000]).await.unwrap();
        let err = part.finish(&dir.path().join("z"), false).await.unwrap_err();
        assert!(matches!(err, FileError::TooShort { .. }), "{err}");
        assert!(!dir.path().join("z").exists());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(partial_offset(dir.path(), &k), 6000);
    }

    #[test]
    fn stale_partials_are_removed_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(b"abc");
        std::fs::write(k.partial_path(dir.path()), b"ab").unwrap();
        std::fs::write(dir.path().join(".x.gshare-part-12345678"), b"a").unwrap();
        std::fs::write(dir.path().join("keep.gshare-resume-me"), b"a").unwrap();
        std::fs::write(dir.path().join("plain"), b"a").unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        assert_eq!(
            remove_stale_partials_at(dir.path(), 3 * day, now).unwrap(),
            0
        );
        assert_eq!(leftovers(dir.path()).len(), 4);
        let later = now + 4 * day;
        assert_eq!(
            remove_stale_partials_at(dir.path(), 3 * day, later).unwrap(),
            2
        );
        assert_eq!(leftovers(dir.path()), ["keep.gshare-resume-me", "plain"]);
        assert_eq!(DEFAULT_RESUME_MAX_AGE, 3 * day);
    }

    #[tokio::test]
    async fn digests_of_files_streams_and_spooled_input() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(2_500_000);
        let path = dir.path().join("f");
        std::fs::write(&path, &data).unwrap();
        let want: [u8; 32] = Sha256::digest(&data).into();
        assert_eq!(
            digest_file(path.clone(), data.len() as u64).await.unwrap(),
            want
        );
        let prefix: [u8; 32] = Sha256::digest(&data[..10]).into();
        assert_eq!(hash_file(&path, 10).unwrap(), prefix);
        assert!(hash_file(&path, data.len() as u64 + 1).is_err());

        let hasher = StreamHasher::new();
        for chunk in data.chunks(100_000) {
            hasher.update(Bytes::copy_from_slice(chunk)).await;
        }
        assert_eq!(hasher.finish().await.unwrap(), want);

        let src = spool_reader(&mut data.as_slice(), dir.path()).unwrap();
        assert_eq!((src.size, src.sha256), (data.len() as u64, want));
        let file = std::fs::File::open(&path).unwrap();
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let src = spool_fd(&fd_path, dir.path()).unwrap();
        assert_eq!(src.sha256, want);
    }
}
