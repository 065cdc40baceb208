//! Body producers for the sender: a regular file read in large chunks, or a folder written as
//! an on-the-fly tar stream (PROTOCOL.md §D.2), each run on a blocking thread that feeds a
//! bounded channel so memory stays bounded (`CHANNEL_DEPTH` × `CHUNK_SIZE`).
//!
//! The tar writer is hand-written on top of `tar::Header` (not `tar::Builder`) because the
//! header layout must suit libjingle 0.4's reader as well as standard ones: directory entries
//! end in `/` (LJ04 tells folders by the trailing slash), and a path longer than 100 bytes is
//! split into a ustar prefix that *keeps* its trailing `/` — LJ04 joins prefix and name with no
//! separator, standard readers insert one and see a harmless `//`. Paths that do not fit
//! 155 + 100 bytes fall back to a GNU long-name record. Symlinks and special files inside a
//! folder are skipped, never followed.

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{debug, trace};

/// Size of one body chunk handed to hyper (and of one disk read).
pub(crate) const CHUNK_SIZE: usize = 256 * 1024;
/// Chunks buffered between the disk thread and the connection.
const CHANNEL_DEPTH: usize = 4;
/// tar block size.
const BLOCK: usize = 512;
/// Deepest folder nesting the tar writer descends into.
const MAX_DEPTH: usize = 256;

/// One message from a producer thread.
pub(crate) enum Msg {
    /// Body bytes, and the item's content bytes (file data, without tar headers) sent so far
    /// up to the end of this chunk.
    Data(Bytes, u64),
    /// The body is complete; with the SHA-256 of every body byte if the producer was asked to
    /// hash (folders served to a gshare peer, for the digest trailer).
    Done(Option<[u8; 32]>),
    /// The producer failed; the body must be aborted.
    Failed(io::Error),
}

/// Starts reading the file at `path` from byte `offset` up to byte `size` (exactly
/// `size - offset` bytes; `offset` is non-zero only for a `Range` request). Fewer bytes on disk
/// (the file shrank since the offer) fails the body; extra bytes are not sent. Content
/// positions in [`Msg::Data`] count from the start of the file, not from `offset`.
pub(crate) fn spawn_file(path: PathBuf, offset: u64, size: u64) -> mpsc::Receiver<Msg> {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    tokio::task::spawn_blocking(move || {
        let mut sink = ChunkSink::new(tx, false);
        sink.content = offset;
        let result = File::open(&path).and_then(|mut file| {
            if offset > 0 {
                io::Seek::seek(&mut file, io::SeekFrom::Start(offset))?;
            }
            sink.copy_content(&mut file, size.saturating_sub(offset))?;
            sink.flush()
        });
        sink.finish(result, &path);
    });
    rx
}

/// Starts writing the folder at `root` as a tar stream whose entries are all under
/// `top_name/` (libjingle's layout: the folder itself is the first entry). With `digest`, the
/// producer thread also hashes the stream (SHA-256 of every body byte) and hands the digest
/// over with [`Msg::Done`].
pub(crate) fn spawn_tar(root: PathBuf, top_name: String, digest: bool) -> mpsc::Receiver<Msg> {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    tokio::task::spawn_blocking(move || {
        let mut sink = ChunkSink::new(tx, digest);
        let result = write_tar(&mut sink, &root, top_name.as_bytes());
        sink.finish(result, &root);
    });
    rx
}

/// Sum of the sizes of the regular files under `path` (recursively, symlinks not followed,
/// special files ignored): the `size` of a `<folder>` in the manifest (PROTOCOL.md §A.3).
/// These are exactly the file bytes the tar stream for the folder carries.
pub fn folder_size(path: &Path) -> io::Result<u64> {
    fn walk(dir: &Path, depth: usize) -> io::Result<u64> {
        if depth > MAX_DEPTH {
            return Err(io::Error::other(format!(
                "folder nested too deeply: {}",
                dir.display()
            )));
        }
        let mut total = 0u64;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?; // does not follow symlinks
            let ft = meta.file_type();
            if ft.is_dir() {
                total = total.saturating_add(walk(&entry.path(), depth + 1)?);
            } else if ft.is_file() {
                total = total.saturating_add(meta.len());
            }
        }
        Ok(total)
    }
    let meta = fs::metadata(path)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a directory",
        ));
    }
    walk(path, 0)
}

/// Accumulates body bytes into `CHUNK_SIZE` chunks and sends them down the channel.
struct ChunkSink {
    tx: mpsc::Sender<Msg>,
    buf: BytesMut,
    content: u64,
    /// Hashes every body byte (on this producer thread, not on the connection's task).
    hasher: Option<Sha256>,
}

impl ChunkSink {
    fn new(tx: mpsc::Sender<Msg>, digest: bool) -> Self {
        ChunkSink {
            tx,
            buf: BytesMut::with_capacity(CHUNK_SIZE),
            content: 0,
            hasher: digest.then(Sha256::new),
        }
    }

    /// Sends the buffered bytes, if any.
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = self.buf.split().freeze();
        if let Some(h) = self.hasher.as_mut() {
            h.update(&data);
        }
        self.buf.reserve(CHUNK_SIZE);
        self.tx
            .blocking_send(Msg::Data(data, self.content))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "connection gone"))
    }

    /// Framing bytes (tar headers and padding): not counted as content.
    fn put(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let room = CHUNK_SIZE.saturating_sub(self.buf.len()).max(1);
            let n = room.min(bytes.len());
            let (now, rest) = bytes.split_at(n);
            self.buf.extend_from_slice(now);
            bytes = rest;
            if self.buf.len() >= CHUNK_SIZE {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Copies exactly `n` content bytes from `r`, reading straight into the chunk buffer.
    fn copy_content(&mut self, r: &mut impl Read, n: u64) -> io::Result<()> {
        let mut left = n;
        while left > 0 {
            let start = self.buf.len();
            let room = CHUNK_SIZE.saturating_sub(start).max(1);
            let want = usize::try_from(left).map_or(room, |l| l.min(room));
            self.buf.resize(start + want, 0);
            let got = loop {
                match r.read(&mut self.buf[start..]) {
                    Ok(got) => break got,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.buf.truncate(start);
                        return Err(e);
                    }
                }
            };
            self.buf.truncate(start + got);
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file is {left} bytes shorter than announced"),
                ));
            }
            self.content += got as u64;
            left -= got as u64;
            if self.buf.len() >= CHUNK_SIZE {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Ends the stream: `Done` after success, `Failed` otherwise.
    fn finish(self, result: io::Result<()>, what: &Path) {
        let msg = match result {
            Ok(()) => Msg::Done(self.hasher.map(|h| h.finalize().into())),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                trace!(path = %what.display(), "body receiver gone");
                return;
            }
            Err(e) => {
                debug!(path = %what.display(), error = %e, "body producer failed");
                Msg::Failed(e)
            }
        };
        let _ = self.tx.blocking_send(msg);
    }
}

/// Writes the whole tar stream for `root` (entries under `top/`) and the end-of-archive blocks.
fn write_tar(sink: &mut ChunkSink, root: &Path, top: &[u8]) -> io::Result<()> {
    let meta = fs::metadata(root)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a directory",
        ));
    }
    let mut path = top.to_vec();
    path.push(b'/');
    write_dir(sink, root, &mut path, &meta, 0)?;
    sink.put(&[0u8; 2 * BLOCK])?;
    sink.flush()
}

/// Writes the entry for directory `dir` (archive path `path`, ending in `/`) and its contents.
fn write_dir(
    sink: &mut ChunkSink,
    dir: &Path,
    path: &mut Vec<u8>,
    meta: &Metadata,
    depth: usize,
) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!(
            "folder nested too deeply: {}",
            dir.display()
        )));
    }
    write_header(sink, path, tar::EntryType::Directory, 0, meta)?;
    let mut entries = fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let child = entry.path();
        let meta = entry.metadata()?; // lstat: symlinks are not followed
        let len = path.len();
        path.extend_from_slice(name.as_bytes());
        let ft = meta.file_type();
        let result = if ft.is_dir() {
            path.push(b'/');
            write_dir(sink, &child, path, &meta, depth + 1)
        } else if ft.is_file() {
            write_file(sink, &child, path)
        } else {
            debug!(path = %child.display(), "skipping symlink or special file in folder");
            Ok(())
        };
        path.truncate(len);
        result?;
    }
    Ok(())
}

/// Writes one regular file entry. The file is opened with `O_NOFOLLOW` and its size taken from
/// the open descriptor, so a file swapped for a symlink after listing is not followed.
fn write_file(sink: &mut ChunkSink, file_path: &Path, path: &[u8]) -> io::Result<()> {
    let mut file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(file_path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            debug!(path = %file_path.display(), "file became a symlink; skipped");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        debug!(path = %file_path.display(), "no longer a regular file; skipped");
        return Ok(());
    }
    write_header(sink, path, tar::EntryType::Regular, meta.len(), &meta)?;
    sink.copy_content(&mut file, meta.len())?;
    let pad = padding(meta.len());
    sink.put(&[0u8; BLOCK][..pad])
}

/// Bytes of zero padding after `size` bytes of entry data.
fn padding(size: u64) -> usize {
    let rem = (size % BLOCK as u64) as usize;
    if rem == 0 { 0 } else { BLOCK - rem }
}

/// Writes the header block(s) for one entry: a plain ustar header, with a GNU long-name record
/// first if the path does not fit the ustar name/prefix fields.
fn write_header(
    sink: &mut ChunkSink,
    path: &[u8],
    kind: tar::EntryType,
    size: u64,
    meta: &Metadata,
) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(meta.permissions().mode() & 0o777);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    let (prefix, name) = match split_ustar_path(path) {
        Some(split) => split,
        None => {
            // GNU long name: the full path travels in a preceding 'L' record; the ustar name
            // field keeps a truncated copy.
            let mut long = tar::Header::new_gnu();
            if let Some(gnu) = long.as_gnu_mut() {
                gnu.name[..13].copy_from_slice(b"././@LongLink");
            }
            long.set_mode(0o644);
            long.set_entry_type(tar::EntryType::GNULongName);
            long.set_size(path.len() as u64 + 1);
            long.set_cksum();
            sink.put(long.as_bytes())?;
            sink.put(path)?;
            sink.put(&[0])?;
            sink.put(&[0u8; BLOCK][..padding(path.len() as u64 + 1)])?;
            (&path[..0], &path[..path.len().min(100)])
        }
    };
    if let Some(ustar) = header.as_ustar_mut() {
        ustar.name[..name.len()].copy_from_slice(name);
        ustar.prefix[..prefix.len()].copy_from_slice(prefix);
    }
    header.set_cksum();
    sink.put(header.as_bytes())
}

/// Splits an archive path into ustar (prefix, name). Paths up to 100 bytes go whole into the
/// name; longer ones are split after a `/` that stays at the end of the prefix (see the module
/// doc). `None` if no split fits.
fn split_ustar_path(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&path[..0], path));
    }
    path.iter().enumerate().find_map(|(i, &b)| {
        let cut = i + 1;
        let name_len = path.len() - cut;
        (b == b'/' && cut <= 155 && name_len <= 100 && name_len > 0).then(|| path.split_at(cut))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ustar_split_keeps_slash_in_prefix() {
        let short = b"stuff/a.txt";
        assert_eq!(split_ustar_path(short), Some((&b""[..], &short[..])));
        let long = [b"top/".as_slice(), &[b'd'; 120], b"/", &[b'f'; 90]].concat();
        let (prefix, name) = split_ustar_path(&long).unwrap();
        assert_eq!(prefix.len(), 4 + 120 + 1);
        assert!(prefix.ends_with(b"/"));
        assert_eq!(name, &[b'f'; 90][..]);
        let too_long = [&[b'd'; 200][..], b"/", &[b'f'; 120]].concat();
        assert_eq!(split_ustar_path(&too_long), None);
    }

    #[test]
    fn folder_size_sums_regular_files_only() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), b"12345").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/b"), b"123").unwrap();
        fs::write(dir.path().join("sub/empty"), b"").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        assert_eq!(folder_size(dir.path()).unwrap(), 8);
        assert!(folder_size(&dir.path().join("a")).is_err());
    }
}
