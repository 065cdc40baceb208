//! How much an offer may take: the free space of the target directory
//! (`statvfs`, on Unix; elsewhere unknown, and the check is skipped).

use std::path::Path;

/// Bytes an unprivileged process may still write under `dir`, if known.
#[cfg(unix)]
pub fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `st` points to writable
    // memory of the right size; statvfs only writes to it.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Unknown on this platform: no offer is declined for space.
#[cfg(not(unix))]
pub fn free_space(_dir: &Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_directory_has_some_free_space() {
        let dir = tempfile::tempdir().unwrap();
        #[cfg(unix)]
        assert!(free_space(dir.path()).is_some_and(|n| n > 0));
        #[cfg(not(unix))]
        assert_eq!(free_space(dir.path()), None);
        assert_eq!(free_space(Path::new("/no/such/dir/at/all")), None);
    }
}
