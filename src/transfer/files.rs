//! Receiving a file safely: bytes go to a hidden temporary file in the target directory
//! (`.<name>.gshare-part-XXXXXX`), are counted against the manifest size and hashed (SHA-256)
//! on the fly, and only a complete file is fsynced and renamed into place — without replacing
//! an existing file unless asked to (`renameat2(RENAME_NOREPLACE)`, with a hard-link fallback,
//! via `tempfile`'s `persist_noclobber`). An unfinished or failed part file is removed.
//!
//! Also: [`spool_stdin`], which turns standard input into something with a known size for the
//! sender's manifest, and [`rename_noreplace`] for directories.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tempfile::TempPath;
use tokio::io::{AsyncWriteExt, BufWriter};
use tracing::debug;

use crate::transfer::names::{MAX_NAME_BYTES, unique_path};

/// Write buffer in front of the part file.
const WRITE_BUFFER: usize = 256 * 1024;
/// Bytes of the item name kept in a temp file name (it is only a hint for humans).
const TEMP_NAME_HINT: usize = 100;

/// Why receiving a file failed. In every case the part file has been (or will be, on drop)
/// removed and nothing was left at the final path.
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
}

/// A file being received (see the module doc). Dropping it before [`PartFile::finish`]
/// removes the temporary file.
pub struct PartFile {
    writer: BufWriter<tokio::fs::File>,
    /// `None` once handed to the final rename.
    temp: Option<TempPath>,
    expected: Option<u64>,
    written: u64,
    hasher: Sha256,
    failed: bool,
}

impl PartFile {
    /// Creates `.<name>.gshare-part-XXXXXX` in `dir` (same directory as the final file, so the
    /// final rename is atomic). `expected` is the manifest size, if the manifest gave one;
    /// writing past it fails at once.
    pub async fn create(
        dir: &Path,
        name: &str,
        expected: Option<u64>,
    ) -> Result<PartFile, FileError> {
        let mut hint = name.len().min(TEMP_NAME_HINT);
        while !name.is_char_boundary(hint) {
            hint -= 1;
        }
        let prefix = format!(".{}.gshare-part-", &name[..hint]);
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
        Ok(PartFile {
            writer: BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::from_std(file)),
            temp: Some(temp),
            expected,
            written: 0,
            hasher: Sha256::new(),
            failed: false,
        })
    }

    /// The temporary file's path (empty once finished).
    pub fn temp_path(&self) -> &Path {
        self.temp.as_deref().unwrap_or(Path::new(""))
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `data`. Fails (and poisons the part file) if this would exceed the announced
    /// size; nothing past the announced size is written.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), FileError> {
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
        if let Err(e) = self.writer.write_all(data).await {
            self.failed = true;
            return Err(FileError::io("write", self.temp_path(), e));
        }
        self.hasher.update(data);
        self.written = total;
        Ok(())
    }

    /// Completes the file: checks the byte count against the announced size, fsyncs, and
    /// renames to `final_path` — refusing to replace an existing file unless `overwrite`.
    /// On any error the temporary file is removed.
    pub async fn finish(
        mut self,
        final_path: &Path,
        overwrite: bool,
    ) -> Result<Finished, FileError> {
        let temp = self.seal().await?;
        let persisted = tokio::task::spawn_blocking({
            let final_path = final_path.to_owned();
            move || persist(temp, &final_path, overwrite)
        })
        .await
        .map_err(|e| FileError::io("rename to", final_path, io::Error::other(e)))?;
        persisted?;
        sync_parent(final_path).await;
        Ok(Finished {
            path: final_path.to_owned(),
            size: self.written,
            sha256: self.digest(),
        })
    }

    /// Like [`PartFile::finish`] without overwriting, but picks a free name
    /// ([`unique_path`]): `dir/name`, else `dir/name (1).ext`, … retrying if a name is taken
    /// between the check and the rename.
    pub async fn finish_unique(mut self, dir: &Path, name: &str) -> Result<Finished, FileError> {
        let mut temp = self.seal().await?;
        for _ in 0..100 {
            let candidate = unique_path(dir, name);
            let result = tokio::task::spawn_blocking({
                let candidate = candidate.clone();
                move || match temp.persist_noclobber(&candidate) {
                    Ok(()) => Ok(()),
                    Err(e) => Err((e.path, e.error)),
                }
            })
            .await
            .map_err(|e| FileError::io("rename to", dir, io::Error::other(e)))?;
            match result {
                Ok(()) => {
                    sync_parent(&candidate).await;
                    return Ok(Finished {
                        path: candidate,
                        size: self.written,
                        sha256: self.digest(),
                    });
                }
                Err((back, e)) if e.kind() == io::ErrorKind::AlreadyExists => temp = back,
                Err((_, e)) => return Err(FileError::io("rename to", &candidate, e)),
            }
        }
        Err(FileError::Exists(dir.join(name)))
    }

    /// Flushes, checks the size, fsyncs; hands back the temp path (still auto-removed on drop).
    async fn seal(&mut self) -> Result<TempPath, FileError> {
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
        self.writer
            .flush()
            .await
            .map_err(|e| FileError::io("write", &path, e))?;
        self.writer
            .get_ref()
            .sync_all()
            .await
            .map_err(|e| FileError::io("fsync", &path, e))?;
        self.temp
            .take()
            .ok_or_else(|| FileError::io("finish", &path, io::Error::other("already finished")))
    }

    fn digest(&self) -> String {
        hex::encode(self.hasher.clone().finalize().as_slice())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(temp) = &self.temp {
            // The TempPath itself unlinks the file.
            debug!(path = %temp.display(), "removing unfinished part file");
        }
    }
}

fn persist(temp: TempPath, final_path: &Path, overwrite: bool) -> Result<(), FileError> {
    if overwrite {
        return temp
            .persist(final_path)
            .map_err(|e| FileError::io("rename to", final_path, e.error));
    }
    temp.persist_noclobber(final_path).map_err(|e| {
        if e.error.kind() == io::ErrorKind::AlreadyExists {
            FileError::Exists(final_path.to_owned())
        } else {
            FileError::io("rename to", final_path, e.error)
        }
    })
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
    /// The spool file, deleted when this is dropped; `None` when stdin is used directly.
    pub spool: Option<TempPath>,
}

/// Prepares standard input for sending. A regular file on stdin (`< file`) is used directly:
/// the server reopens it through `/proc/self/fd/0` (from its start) and its size comes from
/// `stat`. Anything else (pipe, terminal, socket) is copied to a temporary file in `spool_dir`
/// (e.g. `std::env::temp_dir()`), since the manifest needs the size before sending. Blocking:
/// call it before starting the transfer, or in `spawn_blocking`.
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
            spool: None,
        });
    }
    spool_reader(&mut std::fs::File::open(fd_path)?, spool_dir)
}

/// Copies `reader` to a temporary file in `spool_dir`, returning its path and size.
pub fn spool_reader(reader: &mut impl io::Read, spool_dir: &Path) -> io::Result<StdinSource> {
    let mut named = tempfile::Builder::new()
        .prefix(".gshare-stdin-")
        .tempfile_in(spool_dir)?;
    let size = {
        let mut w = io::BufWriter::with_capacity(WRITE_BUFFER, named.as_file_mut());
        let n = io::copy(reader, &mut w)?;
        io::Write::flush(&mut w)?;
        n
    };
    let path = named.into_temp_path();
    debug!(path = %path.display(), size, "stdin spooled");
    Ok(StdinSource {
        path: path.to_path_buf(),
        size,
        spool: Some(path),
    })
}

// Keep the name-length limit visible here: part-file names stay below it.
const _: () = assert!(TEMP_NAME_HINT + 32 < MAX_NAME_BYTES);

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
}
