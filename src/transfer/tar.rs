//! Receiving a folder: the chunked HTTP body is a tar stream (docs/protocol.md §D.2), unpacked as it
//! arrives into a hidden temporary directory in the target directory, and moved into place
//! under a safe, unused name only when the stream ended cleanly.
//!
//! The tar stream comes from the peer, so every entry is checked: no absolute paths, no `..`,
//! no symlinks or hard links (skipped: nothing is ever created that could point out of the
//! folder, and parent directories are created one component at a time and must be real
//! directories), no device files or fifos (skipped), bounded entry count, path length, depth,
//! and extension-header size. File bytes are counted against the manifest's folder `size`
//! (the sum of the file sizes, §A.3): more is an error as soon as it happens, less an error at
//! the end.
//!
//! The stream parser is hand-written (on top of `tar::Header` for field decoding) because the
//! `tar` crate's reader is pull-based and reads GNU long-name and PAX extension records of any
//! announced size into memory, which a hostile peer could use to exhaust it; and because
//! libjingle 0.4 joins the ustar prefix and name without a `/`, which only a custom reader can
//! honour. The sender's side (the tar writer) lives in the http layer; [`folder_size`] is
//! re-exported here.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

pub use crate::http::folder_size;
use crate::transfer::files::rename_noreplace;
use crate::transfer::names::{NameError, safe_file_name, unique_path};

/// tar block size.
const BLOCK: usize = 512;
/// Most headers (entries plus extension records) accepted in one folder.
pub const MAX_ENTRIES: u64 = 1_000_000;
/// Longest entry path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest single path component accepted, in bytes.
const MAX_COMPONENT_BYTES: usize = 255;
/// Deepest nesting accepted.
const MAX_DEPTH: usize = 128;
/// Largest GNU long-name or PAX extension record accepted.
const MAX_EXTENSION_BYTES: u64 = 64 * 1024;
/// Bytes tolerated after the end-of-archive block (record padding).
const MAX_TRAILING_BYTES: u64 = 1024 * 1024;
/// Body chunks queued between the connection and the unpacking thread.
const CHANNEL_DEPTH: usize = 8;
/// Write buffer per file being unpacked.
const WRITE_BUFFER: usize = 256 * 1024;

/// Why a folder could not be received. The temporary directory is removed in every case.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// The stream is not a valid tar archive.
    #[error("folder stream is not a valid tar archive: {0}")]
    Malformed(String),
    /// The stream ended inside an entry or header.
    #[error("folder stream ended in the middle of an entry")]
    Truncated,
    /// More file bytes than the manifest announced.
    #[error("folder holds more than the announced {expected} bytes")]
    TooLong {
        /// Announced folder size.
        expected: u64,
    },
    /// Fewer file bytes than the manifest announced.
    #[error("folder holds {received} of the announced {expected} bytes")]
    TooShort {
        /// Announced folder size.
        expected: u64,
        /// File bytes received.
        received: u64,
    },
    /// The folder's name cannot be made safe.
    #[error(transparent)]
    Name(#[from] NameError),
    /// Too many entries.
    #[error("folder has more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    /// The receiver was dropped or the body broke off before the end.
    #[error("folder transfer aborted")]
    Aborted,
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

impl TarError {
    fn io(what: &'static str, path: &Path, source: io::Error) -> Self {
        TarError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}

/// A folder received and moved into place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedFolder {
    /// Where the folder now is.
    pub path: PathBuf,
    /// File bytes received (comparable with the manifest size).
    pub size: u64,
    /// Regular files created.
    pub files: u64,
    /// Directories created (the folder itself not counted).
    pub dirs: u64,
    /// Entries skipped (links, devices, unsafe paths, conflicts).
    pub skipped: u64,
}

enum Input {
    Data(Bytes),
    End,
}

/// Unpacks a folder's tar body fed chunk by chunk (see the module doc). Dropping it before
/// [`TarUnpacker::finish`] aborts and removes the temporary directory.
pub struct TarUnpacker {
    tx: Option<mpsc::Sender<Input>>,
    task: Option<JoinHandle<Result<Unpacked, TarError>>>,
    content: Arc<AtomicU64>,
    dir: PathBuf,
    peer_name: String,
    local_name: String,
}

struct Unpacked {
    temp: TempDir,
    stats: Stats,
}

#[derive(Default, Clone, Copy)]
struct Stats {
    files: u64,
    dirs: u64,
    skipped: u64,
    content: u64,
}

impl TarUnpacker {
    /// Creates `.<name>.gshare-part-XXXXXX/` in `dir` and starts the unpacking thread.
    /// `name` is the manifest name: libjingle puts every entry under `<name>/`, and the folder
    /// is finally called `safe_file_name(name)` (or `… (N)` if taken). An already sanitised
    /// name works too for ordinary names. `expected` is the manifest size, if given.
    pub async fn new(
        dir: &Path,
        name: &str,
        expected: Option<u64>,
    ) -> Result<TarUnpacker, TarError> {
        let local_name = safe_file_name(name)?;
        let peer_name = name;
        let mut hint = local_name.len().min(100);
        while !local_name.is_char_boundary(hint) {
            hint -= 1;
        }
        let prefix = format!(".{}.gshare-part-", &local_name[..hint]);
        let temp_parent = dir.to_owned();
        let temp = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new()
                .prefix(&prefix)
                .rand_bytes(8)
                .tempdir_in(&temp_parent)
        })
        .await
        .map_err(|e| TarError::io("create temporary folder in", dir, io::Error::other(e)))?
        .map_err(|e| TarError::io("create temporary folder in", dir, e))?;
        debug!(path = %temp.path().display(), "unpacking folder");
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let content = Arc::new(AtomicU64::new(0));
        let progress = content.clone();
        let task = tokio::task::spawn_blocking(move || unpack(rx, temp, expected, progress));
        Ok(TarUnpacker {
            tx: Some(tx),
            task: Some(task),
            content,
            dir: dir.to_owned(),
            peer_name: peer_name.to_owned(),
            local_name,
        })
    }

    /// File bytes unpacked so far (for progress).
    pub fn content_bytes(&self) -> u64 {
        self.content.load(Ordering::Relaxed)
    }

    /// Feeds the next piece of the body. An error here is final (the temp folder is gone).
    pub async fn push(&mut self, data: Bytes) -> Result<(), TarError> {
        let sent = match &self.tx {
            Some(tx) => tx.send(Input::Data(data)).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        self.tx = None;
        Err(self.join().await.err().unwrap_or(TarError::Aborted))
    }

    /// Call when the body ended cleanly: checks the archive and the size, then moves the folder
    /// to `dir/<safe name>` or, if taken, `dir/<safe name> (N)`.
    pub async fn finish(mut self) -> Result<FinishedFolder, TarError> {
        if let Some(tx) = self.tx.take() {
            // If the thread already failed, `join` reports why.
            let _ = tx.send(Input::End).await;
        }
        let unpacked = self.join().await?;
        let dir = self.dir.clone();
        let peer_name = self.peer_name.clone();
        let local_name = self.local_name.clone();
        tokio::task::spawn_blocking(move || place(unpacked, &dir, &peer_name, &local_name))
            .await
            .map_err(|_| TarError::Aborted)?
    }

    async fn join(&mut self) -> Result<Unpacked, TarError> {
        match self.task.take() {
            Some(task) => task.await.map_err(|_| TarError::Aborted)?,
            None => Err(TarError::Aborted),
        }
    }
}

/// The unpacking thread: parse and write until `End`, then check the archive ended properly.
fn unpack(
    mut rx: mpsc::Receiver<Input>,
    temp: TempDir,
    expected: Option<u64>,
    progress: Arc<AtomicU64>,
) -> Result<Unpacked, TarError> {
    let mut parser = TarParser::default();
    let mut sink = FsSink::new(temp.path().to_owned(), expected, progress);
    loop {
        match rx.blocking_recv() {
            Some(Input::Data(data)) => parser.push(&data, &mut sink)?,
            Some(Input::End) => break,
            None => return Err(TarError::Aborted),
        }
    }
    parser.finish()?;
    sink.close_file()?;
    if let Some(expected) = expected
        && sink.stats.content != expected
    {
        return Err(TarError::TooShort {
            expected,
            received: sink.stats.content,
        });
    }
    // The folder is placed only once its bytes are on disk.
    sync_tree(temp.path()).map_err(|e| TarError::io("sync", temp.path(), e))?;
    Ok(Unpacked {
        temp,
        stats: sink.stats,
    })
}

/// Flushes everything written under `root` to disk. Linux: one `syncfs` for the filesystem
/// instead of an fsync per file; its result is checked (a write-back error means data is lost).
#[cfg(target_os = "linux")]
fn sync_tree(root: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = File::open(root)?;
    // SAFETY: syncfs only reads the descriptor, which is open for the call's duration.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Flushes everything written under `root` to disk: elsewhere, an fsync of every file and
/// directory in the tree (children before their directory).
#[cfg(not(target_os = "linux"))]
fn sync_tree(root: &Path) -> io::Result<()> {
    fsync_tree(root)
}

/// The portable [`sync_tree`], compiled everywhere so that it is tested on Linux too. Does not
/// follow symbolic links (the unpacker makes none).
#[cfg_attr(target_os = "linux", allow(dead_code))]
fn fsync_tree(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            fsync_tree(&entry?.path())?;
        }
    } else if !meta.is_file() {
        return Ok(());
    }
    File::open(path)?.sync_all()
}

#[cfg(test)]
mod sync_tests {
    use super::*;

    #[test]
    fn trees_are_synced_and_failures_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/f"), b"data").unwrap();
        fs::write(dir.path().join("g"), b"more").unwrap();
        sync_tree(dir.path()).unwrap();
        fsync_tree(dir.path()).unwrap();
        let gone = dir.path().join("missing");
        assert_eq!(
            sync_tree(&gone).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            fsync_tree(&gone).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}

/// Moves the unpacked folder into place. libjingle's layout (every entry under
/// `<peer_name>/`) yields that subfolder; an archive without that single top folder is taken
/// as the folder's contents.
fn place(
    unpacked: Unpacked,
    dir: &Path,
    peer_name: &str,
    local_name: &str,
) -> Result<FinishedFolder, TarError> {
    let Unpacked { temp, stats } = unpacked;
    let listing: Vec<_> = fs::read_dir(temp.path())
        .and_then(|rd| rd.collect::<io::Result<Vec<_>>>())
        .map_err(|e| TarError::io("list", temp.path(), e))?;
    // pcp may put a path in the name; the archive uses its last component.
    let top_name = peer_name
        .rsplit('/')
        .find(|c| !c.is_empty())
        .unwrap_or(peer_name);
    let top = match listing.as_slice() {
        [only]
            if (only.file_name().as_bytes() == clean_component(top_name.as_bytes()).as_slice()
                || only.file_name().as_bytes() == local_name.as_bytes())
                && only.file_type().is_ok_and(|t| t.is_dir()) =>
        {
            Some(only.path())
        }
        _ => None,
    };
    let dirs = stats.dirs.saturating_sub(u64::from(top.is_some()));
    let source = top.clone().unwrap_or_else(|| temp.path().to_owned());
    for _ in 0..100 {
        let candidate = unique_path(dir, local_name);
        match rename_noreplace(&source, &candidate) {
            Ok(()) => {
                // `temp` is now empty (its single child moved) and removed on drop, or it *was*
                // the folder and must not be removed.
                if top.is_none() {
                    let _ = temp.keep();
                }
                debug!(path = %candidate.display(), "folder received");
                return Ok(FinishedFolder {
                    path: candidate,
                    size: stats.content,
                    files: stats.files,
                    dirs,
                    skipped: stats.skipped,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(TarError::io("move folder to", &candidate, e)),
        }
    }
    Err(TarError::io(
        "move folder to",
        &dir.join(local_name),
        io::Error::new(io::ErrorKind::AlreadyExists, "no free name"),
    ))
}

/// What an entry is, as far as unpacking cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    /// Links, devices, fifos, and anything unknown: never created.
    Other(u8),
}

/// One entry header, extensions applied.
#[derive(Debug)]
struct EntryHead {
    path: Vec<u8>,
    kind: Kind,
    mode: u32,
    mtime: u64,
}

/// Receives what the parser finds.
trait Sink {
    /// A new entry; for `Kind::File` its data follows through `data` and ends with `end_file`.
    fn entry(&mut self, head: EntryHead) -> Result<(), TarError>;
    fn data(&mut self, data: &[u8]) -> Result<(), TarError>;
    fn end_file(&mut self) -> Result<(), TarError>;
}

#[derive(Debug, Clone, Copy, Default)]
enum State {
    /// Collecting a 512-byte header.
    #[default]
    Header,
    /// Collecting an extension record's data (GNU `L`/`K`, PAX `x`/`g`).
    Extension {
        kind: u8,
        remaining: u64,
        pad: usize,
    },
    /// A regular file's data, passed to the sink.
    FileData { remaining: u64, pad: usize },
    /// Data of an entry that is not unpacked, plus its padding.
    Skip { remaining: u64 },
    /// Zero padding after data.
    Pad { remaining: usize },
    /// After the end-of-archive block.
    End { trailing: u64 },
}

/// A push parser for tar streams: bytes in any chunking, entries out to a [`Sink`].
#[derive(Default)]
struct TarParser {
    state: State,
    header: Vec<u8>,
    extension: Vec<u8>,
    long_name: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_size: Option<u64>,
    headers: u64,
}

fn padding(size: u64) -> usize {
    let rem = (size % BLOCK as u64) as usize;
    if rem == 0 { 0 } else { BLOCK - rem }
}

/// How many of `available` bytes to take towards `remaining`.
fn take(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

impl TarParser {
    fn push(&mut self, mut input: &[u8], sink: &mut impl Sink) -> Result<(), TarError> {
        while !input.is_empty() {
            match self.state {
                State::Header => {
                    let n = (BLOCK - self.header.len()).min(input.len());
                    self.header.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if self.header.len() == BLOCK {
                        self.on_header(sink)?;
                        self.header.clear();
                    }
                }
                State::Extension {
                    kind,
                    remaining,
                    pad,
                } => {
                    let n = take(remaining, input.len());
                    self.extension.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    let remaining = remaining - n as u64;
                    self.state = State::Extension {
                        kind,
                        remaining,
                        pad,
                    };
                    if remaining == 0 {
                        self.on_extension(kind)?;
                        self.state = after_data(pad);
                    }
                }
                State::FileData { remaining, pad } => {
                    let n = take(remaining, input.len());
                    sink.data(&input[..n])?;
                    input = &input[n..];
                    let remaining = remaining - n as u64;
                    self.state = State::FileData { remaining, pad };
                    if remaining == 0 {
                        sink.end_file()?;
                        self.state = after_data(pad);
                    }
                }
                State::Skip { remaining } => {
                    let n = take(remaining, input.len());
                    input = &input[n..];
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        State::Header
                    } else {
                        State::Skip { remaining }
                    };
                }
                State::Pad { remaining } => {
                    let n = remaining.min(input.len());
                    input = &input[n..];
                    let remaining = remaining - n;
                    self.state = if remaining == 0 {
                        State::Header
                    } else {
                        State::Pad { remaining }
                    };
                }
                State::End { trailing } => {
                    let trailing = trailing.saturating_add(input.len() as u64);
                    if trailing > MAX_TRAILING_BYTES {
                        return Err(TarError::Malformed(
                            "data after the end of the archive".into(),
                        ));
                    }
                    self.state = State::End { trailing };
                    input = &[];
                }
            }
        }
        Ok(())
    }

    /// The body ended: fine at the end-of-archive block, or (tolerated) at an entry boundary.
    fn finish(&self) -> Result<(), TarError> {
        match self.state {
            State::End { .. } => Ok(()),
            State::Header if self.header.is_empty() => {
                if self.long_name.is_some() || self.pax_path.is_some() || self.pax_size.is_some() {
                    return Err(TarError::Truncated);
                }
                debug!("tar stream without end-of-archive block");
                Ok(())
            }
            _ => Err(TarError::Truncated),
        }
    }

    fn on_header(&mut self, sink: &mut impl Sink) -> Result<(), TarError> {
        let block: &[u8] = &self.header;
        if block.iter().all(|&b| b == 0) {
            if self.long_name.is_some() || self.pax_path.is_some() {
                return Err(TarError::Malformed(
                    "extension record without an entry".into(),
                ));
            }
            self.state = State::End { trailing: 0 };
            return Ok(());
        }
        self.headers += 1;
        if self.headers > MAX_ENTRIES {
            return Err(TarError::TooManyEntries);
        }
        let header = tar::Header::from_byte_slice(block);
        verify_checksum(block, header)?;
        let typeflag = block.get(156).copied().unwrap_or(0);
        let header_size = header
            .entry_size()
            .map_err(|e| TarError::Malformed(format!("bad size field: {e}")))?;
        match typeflag {
            b'L' | b'K' | b'x' | b'g' | b'X' => {
                if header_size > MAX_EXTENSION_BYTES {
                    return Err(TarError::Malformed("extension record too large".into()));
                }
                self.extension.clear();
                let pad = padding(header_size);
                self.state = State::Extension {
                    kind: typeflag,
                    remaining: header_size,
                    pad,
                };
                if header_size == 0 {
                    self.on_extension(typeflag)?;
                    self.state = after_data(pad);
                }
                return Ok(());
            }
            b'S' | b'M' => {
                return Err(TarError::Malformed(format!(
                    "unsupported entry type {:?}",
                    char::from(typeflag)
                )));
            }
            _ => {}
        }
        let size = self.pax_size.take().unwrap_or(header_size);
        let path = match (self.pax_path.take(), self.long_name.take()) {
            (Some(p), _) | (None, Some(p)) => p,
            (None, None) => header_path(block),
        };
        let kind = match typeflag {
            b'0' | b'\0' | b'7' if path.ends_with(b"/") && size == 0 => Kind::Dir,
            b'0' | b'\0' | b'7' => Kind::File,
            b'5' => Kind::Dir,
            other => Kind::Other(other),
        };
        let head = EntryHead {
            path,
            kind,
            mode: header.mode().unwrap_or(0o644),
            mtime: header.mtime().unwrap_or(0),
        };
        sink.entry(head)?;
        let pad = padding(size);
        self.state = match kind {
            Kind::File if size == 0 => {
                sink.end_file()?;
                State::Header
            }
            Kind::File => State::FileData {
                remaining: size,
                pad,
            },
            _ => {
                let remaining = size
                    .checked_add(pad as u64)
                    .ok_or_else(|| TarError::Malformed("size overflow".into()))?;
                if remaining == 0 {
                    State::Header
                } else {
                    State::Skip { remaining }
                }
            }
        };
        Ok(())
    }

    fn on_extension(&mut self, kind: u8) -> Result<(), TarError> {
        let data = std::mem::take(&mut self.extension);
        match kind {
            b'L' => {
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                self.long_name = Some(data[..end].to_vec());
            }
            b'x' | b'X' => {
                for ext in tar::PaxExtensions::new(&data) {
                    let ext = ext.map_err(|_| TarError::Malformed("bad PAX record".into()))?;
                    match ext.key_bytes() {
                        b"path" => self.pax_path = Some(ext.value_bytes().to_vec()),
                        b"size" => {
                            let size = ext
                                .value()
                                .ok()
                                .and_then(|v| v.parse::<u64>().ok())
                                .ok_or_else(|| TarError::Malformed("bad PAX size".into()))?;
                            self.pax_size = Some(size);
                        }
                        _ => {}
                    }
                }
            }
            // GNU long link names and PAX global headers carry nothing we use.
            _ => {}
        }
        Ok(())
    }
}

fn after_data(pad: usize) -> State {
    if pad == 0 {
        State::Header
    } else {
        State::Pad { remaining: pad }
    }
}

fn verify_checksum(block: &[u8], header: &tar::Header) -> Result<(), TarError> {
    let stored = header
        .cksum()
        .map_err(|_| TarError::Malformed("bad header checksum field".into()))?;
    let (mut unsigned, mut signed) = (0u32, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u32::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || i64::from(stored) == signed {
        Ok(())
    } else {
        Err(TarError::Malformed("header checksum mismatch".into()))
    }
}

/// The entry path from the header fields. POSIX ustar joins prefix and name with `/`;
/// libjingle 0.4 writes `ustar\0` with an empty version and joins them with nothing.
fn header_path(block: &[u8]) -> Vec<u8> {
    let field = |range: std::ops::Range<usize>| -> Vec<u8> {
        let raw = block.get(range).unwrap_or(&[]);
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        raw[..end].to_vec()
    };
    let name = field(0..100);
    if block.get(257..263) != Some(b"ustar\0".as_slice()) {
        return name; // old or GNU header: no prefix field
    }
    let prefix = field(345..500);
    if prefix.is_empty() {
        return name;
    }
    let libjingle = block.get(263..265) == Some(b"\0\0".as_slice());
    let sep: &[u8] = if libjingle { b"" } else { b"/" };
    [prefix.as_slice(), sep, name.as_slice()].concat()
}

/// Replaces control bytes in a component with `_`.
fn clean_component(component: &[u8]) -> Vec<u8> {
    component
        .iter()
        .map(|&b| if b < 0x20 || b == 0x7f { b'_' } else { b })
        .collect()
}

/// Splits an entry path into safe components, or says why not.
fn safe_components(path: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    if path.len() > MAX_PATH_BYTES {
        return Err("path too long");
    }
    if path.first() == Some(&b'/') {
        return Err("absolute path");
    }
    let mut out = Vec::new();
    for component in path.split(|&b| b == b'/') {
        match component {
            b"" | b"." => continue,
            b".." => return Err("'..' in path"),
            c if c.len() > MAX_COMPONENT_BYTES => return Err("path component too long"),
            c => out.push(clean_component(c)),
        }
    }
    if out.len() > MAX_DEPTH {
        return Err("path too deep");
    }
    if out.is_empty() {
        return Err("empty path");
    }
    Ok(out)
}

/// Writes entries under `root`, never through anything but real directories it made.
struct FsSink {
    root: PathBuf,
    expected: Option<u64>,
    progress: Arc<AtomicU64>,
    stats: Stats,
    /// The file being written, with its path and mtime.
    file: Option<(BufWriter<File>, PathBuf, u64)>,
}

impl FsSink {
    fn new(root: PathBuf, expected: Option<u64>, progress: Arc<AtomicU64>) -> Self {
        FsSink {
            root,
            expected,
            progress,
            stats: Stats::default(),
            file: None,
        }
    }

    /// Creates the directories `components` under root, one by one; each must be (or become)
    /// a real directory. Returns the resulting path, or `None` on a conflict.
    fn make_dirs(&mut self, components: &[Vec<u8>]) -> Result<Option<PathBuf>, TarError> {
        let mut path = self.root.clone();
        for c in components {
            path.push(std::ffi::OsStr::from_bytes(c));
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&path).map_err(|e| TarError::io("create folder", &path, e))?;
                    self.stats.dirs += 1;
                }
                Err(e) => return Err(TarError::io("inspect", &path, e)),
            }
        }
        Ok(Some(path))
    }

    fn skip(&mut self, path: &[u8], why: &str) {
        warn!(entry = %String::from_utf8_lossy(path), why, "skipping folder entry");
        self.stats.skipped += 1;
    }

    fn close_file(&mut self) -> Result<(), TarError> {
        if let Some((mut writer, path, mtime)) = self.file.take() {
            writer
                .flush()
                .map_err(|e| TarError::io("write", &path, e))?;
            let file = writer
                .into_inner()
                .map_err(|e| TarError::io("write", &path, e.into_error()))?;
            let _ = file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime));
        }
        Ok(())
    }
}

impl Sink for FsSink {
    fn entry(&mut self, head: EntryHead) -> Result<(), TarError> {
        self.close_file()?;
        let components = match safe_components(&head.path) {
            Ok(c) => c,
            Err(why) => {
                self.skip(&head.path, why);
                return Ok(());
            }
        };
        match head.kind {
            Kind::Dir => {
                if self.make_dirs(&components)?.is_none() {
                    self.skip(&head.path, "a non-folder is in the way");
                }
            }
            Kind::File => {
                let (name, parents) = match components.split_last() {
                    Some(split) => split,
                    None => return Ok(()),
                };
                let Some(mut path) = self.make_dirs(parents)? else {
                    self.skip(&head.path, "a non-folder is in the way");
                    return Ok(());
                };
                path.push(std::ffi::OsStr::from_bytes(name));
                let mode = if head.mode & 0o111 != 0 { 0o755 } else { 0o644 };
                let opened = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(mode)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(&path);
                match opened {
                    Ok(file) if file.metadata().is_ok_and(|m| m.is_file()) => {
                        self.stats.files += 1;
                        let writer = BufWriter::with_capacity(WRITE_BUFFER, file);
                        self.file = Some((writer, path, head.mtime));
                    }
                    Ok(_) => self.skip(&head.path, "not a regular file"),
                    Err(e)
                        if matches!(e.raw_os_error(), Some(libc::EISDIR) | Some(libc::ELOOP)) =>
                    {
                        self.skip(&head.path, "a non-file is in the way")
                    }
                    Err(e) => return Err(TarError::io("create", &path, e)),
                }
            }
            Kind::Other(t) => {
                let why = match t {
                    b'1' => "hard link",
                    b'2' => "symbolic link",
                    b'3' | b'4' => "device file",
                    b'6' => "fifo",
                    _ => "unsupported entry type",
                };
                self.skip(&head.path, why);
            }
        }
        Ok(())
    }

    fn data(&mut self, data: &[u8]) -> Result<(), TarError> {
        let content = self.stats.content.saturating_add(data.len() as u64);
        if let Some(expected) = self.expected
            && content > expected
        {
            return Err(TarError::TooLong { expected });
        }
        self.stats.content = content;
        self.progress.store(content, Ordering::Relaxed);
        if let Some((writer, path, _)) = &mut self.file {
            writer
                .write_all(data)
                .map_err(|e| TarError::io("write", path, e))?;
        }
        Ok(())
    }

    fn end_file(&mut self) -> Result<(), TarError> {
        self.close_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Appends one entry with a raw (unchecked) path, as a hostile peer could.
    fn raw_entry(out: &mut Vec<u8>, path: &[u8], kind: tar::EntryType, data: &[u8], link: &[u8]) {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..path.len()].copy_from_slice(path);
            gnu.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len() + padding(data.len() as u64), 0);
    }

    fn end(out: &mut Vec<u8>) {
        out.resize(out.len() + 2 * BLOCK, 0);
    }

    fn listing(root: &Path) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                let rel = e
                    .path()
                    .strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let ft = e.file_type().unwrap();
                if ft.is_dir() {
                    out.push(format!("{rel}/"));
                    walk(base, &e.path(), out);
                } else if ft.is_symlink() {
                    out.push(format!("{rel}@"));
                } else {
                    out.push(rel);
                }
            }
        }
        let mut out = Vec::new();
        walk(root, root, &mut out);
        out.sort();
        out
    }

    /// Feeds `tar` in awkward chunk sizes.
    async fn receive(
        dir: &Path,
        tar: &[u8],
        expected: Option<u64>,
    ) -> Result<FinishedFolder, TarError> {
        let mut un = TarUnpacker::new(dir, "stuff", expected).await?;
        let mut sizes = [1usize, 7, 511, 512, 513, 4096, 100_000].iter().cycle();
        let mut rest = tar;
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).min(rest.len());
            un.push(Bytes::copy_from_slice(&rest[..n])).await?;
            rest = &rest[n..];
        }
        un.finish().await
    }

    #[tokio::test]
    async fn hostile_entries_never_escape() {
        let outer = tempfile::tempdir().unwrap();
        let target = outer.path().join("target");
        fs::create_dir(&target).unwrap();
        let mut t = Vec::new();
        use tar::EntryType as E;
        raw_entry(&mut t, b"stuff/", E::Directory, b"", b"");
        raw_entry(&mut t, b"stuff/ok.txt", E::Regular, b"fine", b"");
        raw_entry(&mut t, b"/tmp/abs.txt", E::Regular, b"abs", b"");
        raw_entry(&mut t, b"stuff/../../escape.txt", E::Regular, b"esc", b"");
        raw_entry(&mut t, b"../up.txt", E::Regular, b"up", b"");
        raw_entry(&mut t, b"stuff/etc", E::Symlink, b"", b"/etc");
        raw_entry(&mut t, b"stuff/etc/passwd", E::Regular, b"pwn", b"");
        raw_entry(&mut t, b"stuff/rel", E::Symlink, b"", b"../../..");
        raw_entry(&mut t, b"stuff/hard", E::Link, b"", b"/etc/passwd");
        raw_entry(&mut t, b"stuff/hard2", E::Link, b"", b"../../outside");
        raw_entry(&mut t, b"stuff/dev", E::Char, b"", b"");
        raw_entry(&mut t, b"stuff/blk", E::Block, b"", b"");
        raw_entry(&mut t, b"stuff/fifo", E::Fifo, b"", b"");
        raw_entry(&mut t, b"stuff/ctl\x01name", E::Regular, b"c", b"");
        end(&mut t);
        // 4 + 3 + 3 + 2 + 3 + 1 content bytes in regular-file entries.
        let done = receive(&target, &t, Some(16)).await.unwrap();
        assert_eq!(done.path, target.join("stuff"));
        assert_eq!(
            listing(&done.path),
            ["ctl_name", "etc/", "etc/passwd", "ok.txt"]
        );
        assert_eq!(fs::read(done.path.join("ok.txt")).unwrap(), b"fine");
        // The symlink was skipped, so "etc/passwd" landed in a real, new directory.
        assert!(
            fs::symlink_metadata(done.path.join("etc"))
                .unwrap()
                .is_dir()
        );
        assert_eq!(fs::read(done.path.join("etc/passwd")).unwrap(), b"pwn");
        assert_eq!(done.skipped, 10);
        assert_eq!((done.files, done.size), (3, 16));
        // Nothing appeared outside the target folder.
        assert_eq!(
            listing(outer.path()),
            [
                "target/",
                "target/stuff/",
                "target/stuff/ctl_name",
                "target/stuff/etc/",
                "target/stuff/etc/passwd",
                "target/stuff/ok.txt"
            ]
        );
        assert!(!Path::new("/tmp/abs.txt").exists());
    }

    #[tokio::test]
    async fn size_mismatch_both_ways_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Vec::new();
        raw_entry(&mut t, b"stuff/", tar::EntryType::Directory, b"", b"");
        raw_entry(
            &mut t,
            b"stuff/a",
            tar::EntryType::Regular,
            &[1u8; 3000],
            b"",
        );
        end(&mut t);
        let err = receive(dir.path(), &t, Some(2999)).await.unwrap_err();
        assert!(matches!(err, TarError::TooLong { expected: 2999 }), "{err}");
        let err = receive(dir.path(), &t, Some(3001)).await.unwrap_err();
        assert!(
            matches!(
                err,
                TarError::TooShort {
                    expected: 3001,
                    received: 3000
                }
            ),
            "{err}"
        );
        assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
        let done = receive(dir.path(), &t, None).await.unwrap();
        assert_eq!(done.size, 3000);
    }

    #[tokio::test]
    async fn truncated_or_aborted_streams_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Vec::new();
        raw_entry(
            &mut t,
            b"stuff/a",
            tar::EntryType::Regular,
            &[1u8; 3000],
            b"",
        );
        end(&mut t);
        for cut in [100, 512, 1000, 512 + 3000] {
            let err = receive(dir.path(), &t[..cut], None).await.unwrap_err();
            assert!(matches!(err, TarError::Truncated), "cut {cut}: {err}");
        }
        let mut un = TarUnpacker::new(dir.path(), "stuff", None).await.unwrap();
        un.push(Bytes::copy_from_slice(&t[..2000])).await.unwrap();
        drop(un);
        // The thread removes its temp folder once it sees the abort.
        for _ in 0..200 {
            if listing(dir.path()).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
    }

    #[tokio::test]
    async fn malformed_headers_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Vec::new();
        raw_entry(&mut t, b"stuff/a", tar::EntryType::Regular, b"x", b"");
        t[0] ^= 1; // checksum no longer matches
        let err = receive(dir.path(), &t, None).await.unwrap_err();
        assert!(matches!(err, TarError::Malformed(_)), "{err}");

        // A GNU long name larger than the cap is refused before it is buffered.
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(10 * 1024 * 1024 * 1024);
        h.set_cksum();
        let err = receive(dir.path(), h.as_bytes(), None).await.unwrap_err();
        assert!(matches!(err, TarError::Malformed(_)), "{err}");
        assert!(listing(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn long_names_pax_and_libjingle_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let deep = format!("stuff/{}/{}", "d".repeat(150), "f".repeat(120));
        let mut t = Vec::new();
        // GNU long name via the tar crate's own builder.
        {
            let mut b = tar::Builder::new(&mut t);
            let mut h = tar::Header::new_gnu();
            h.set_size(2);
            h.set_mode(0o755);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, &deep, &b"hi"[..]).unwrap();
            // PAX path record.
            let mut h = tar::Header::new_ustar();
            h.set_size(1);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_path("stuff/placeholder").unwrap();
            h.set_cksum();
            b.append_pax_extensions([("path", b"stuff/pax name.txt".as_slice())])
                .unwrap();
            b.append(&h, &b"p"[..]).unwrap();
            b.finish().unwrap();
        }
        t.truncate(t.len() - 2 * BLOCK);
        // libjingle 0.4 long path: "ustar\0" with an empty version, prefix + name joined raw.
        let mut h = tar::Header::new_ustar();
        h.as_mut_bytes()[263..265].copy_from_slice(b"\0\0");
        let lj = format!("stuff/{}", "l".repeat(130));
        let (prefix, name) = lj.as_bytes().split_at(lj.len() - 100);
        {
            let u = h.as_ustar_mut();
            assert!(u.is_none(), "not POSIX ustar any more");
        }
        h.as_mut_bytes()[..100].copy_from_slice(name);
        h.as_mut_bytes()[345..345 + prefix.len()].copy_from_slice(prefix);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(3);
        h.set_mode(0o666);
        h.set_cksum();
        t.extend_from_slice(h.as_bytes());
        t.extend_from_slice(b"abc");
        t.resize(t.len() + padding(3), 0);
        end(&mut t);
        let done = receive(dir.path(), &t, Some(6)).await.unwrap();
        let mut expected = vec![
            format!("{}/", "d".repeat(150)),
            format!("{}/{}", "d".repeat(150), "f".repeat(120)),
            "pax name.txt".to_owned(),
            "l".repeat(130),
        ];
        expected.sort();
        assert_eq!(listing(&done.path), expected);
        let exe = done.path.join("d".repeat(150)).join("f".repeat(120));
        assert_eq!(
            fs::metadata(&exe).unwrap().permissions().mode() & 0o111,
            0o111
        );
        let plain = done.path.join("l".repeat(130));
        assert_eq!(
            fs::metadata(&plain).unwrap().permissions().mode() & 0o022,
            0,
            "no world-write"
        );
    }

    #[tokio::test]
    async fn flat_archive_and_name_clash() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("stuff")).unwrap();
        let mut t = Vec::new();
        raw_entry(&mut t, b"a.txt", tar::EntryType::Regular, b"a", b"");
        raw_entry(&mut t, b"sub/b.txt", tar::EntryType::Regular, b"b", b"");
        end(&mut t);
        let done = receive(dir.path(), &t, Some(2)).await.unwrap();
        assert_eq!(done.path, dir.path().join("stuff (1)"));
        assert_eq!(listing(&done.path), ["a.txt", "sub/", "sub/b.txt"]);
        assert_eq!(
            listing(dir.path()),
            [
                "stuff (1)/",
                "stuff (1)/a.txt",
                "stuff (1)/sub/",
                "stuff (1)/sub/b.txt",
                "stuff/"
            ]
        );
    }

    #[tokio::test]
    async fn top_folder_with_an_unsafe_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Vec::new();
        raw_entry(&mut t, b"..hidden/", tar::EntryType::Directory, b"", b"");
        raw_entry(&mut t, b"..hidden/f", tar::EntryType::Regular, b"f", b"");
        end(&mut t);
        let mut un = TarUnpacker::new(dir.path(), "pcp/path/..hidden", Some(1))
            .await
            .unwrap();
        un.push(Bytes::from(t)).await.unwrap();
        let done = un.finish().await.unwrap();
        // Only an exact ".." component is refused; "..hidden/" is the archive's top folder,
        // which is stripped, and the result gets the safe name.
        assert_eq!(done.path, dir.path().join("hidden"));
        assert_eq!(listing(dir.path()), ["hidden/", "hidden/f"]);
        assert!(matches!(
            TarUnpacker::new(dir.path(), "..", None).await,
            Err(TarError::Name(_))
        ));
    }

    #[tokio::test]
    async fn too_many_entries() {
        let mut parser = TarParser {
            headers: MAX_ENTRIES,
            ..TarParser::default()
        };
        let mut t = Vec::new();
        raw_entry(&mut t, b"x", tar::EntryType::Directory, b"", b"");
        struct Null;
        impl Sink for Null {
            fn entry(&mut self, _: EntryHead) -> Result<(), TarError> {
                Ok(())
            }
            fn data(&mut self, _: &[u8]) -> Result<(), TarError> {
                Ok(())
            }
            fn end_file(&mut self) -> Result<(), TarError> {
                Ok(())
            }
        }
        assert!(matches!(
            parser.push(&t, &mut Null),
            Err(TarError::TooManyEntries)
        ));
    }

    #[test]
    fn component_rules() {
        assert!(safe_components(b"/abs").is_err());
        assert!(safe_components(b"a/../b").is_err());
        assert!(safe_components(b"..").is_err());
        assert!(safe_components(b"./").is_err());
        assert!(safe_components(&vec![b'a'; 256]).is_err());
        assert!(safe_components(&b"a/".repeat(129)).is_err());
        assert_eq!(
            safe_components(b"a//./b/").unwrap(),
            [b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(safe_components(b"a\tb").unwrap(), [b"a_b".to_vec()]);
    }
}
