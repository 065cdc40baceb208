//! Turning a peer's item name into a safe local file name, and picking a free one.
//!
//! A manifest `<name>` comes from the peer and is never used as a path. libjingle's `pcp` puts
//! the path exactly as typed on its command line into `<name>` (docs/protocol.md §D.1), so a name
//! may contain `/`: we keep only its **last component** (`docs/report.pdf` → `report.pdf`),
//! which is what the sender meant to share. Then:
//!
//! * `\` also separates components (a Windows peer's path);
//! * control characters (including NUL and DEL) become `_`;
//! * surrounding whitespace and trailing dots are trimmed, and leading dots are removed, so a
//!   received file is never hidden and never collides with our `.…gshare-part-…` temp names;
//! * a name left empty (`""`, `.`, `..`, `///`) is rejected;
//! * Windows device names (`CON`, `PRN`, `AUX`, `NUL`, `COM1`–`COM9`, `LPT1`–`LPT9`, any case,
//!   with or without an extension) get a `_` prefix, so the file stays usable on a share;
//! * names over 255 bytes are cut at a character boundary, keeping a short extension.

use std::path::{Path, PathBuf};

/// Longest file name most Linux filesystems accept, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Extensions up to this many bytes (dot included) survive truncation.
const MAX_KEPT_EXTENSION: usize = 32;
/// After this many numbered candidates, `unique_path` falls back to a random suffix.
const MAX_NUMBERED: u32 = 9999;

/// Why a peer's name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing usable is left (empty, only dots, slashes or spaces).
    #[error("item name {0:?} has no usable file name")]
    Empty(String),
}

/// Turns a name received from a peer into a single safe path component (see the module doc).
pub fn safe_file_name(peer_name: &str) -> Result<String, NameError> {
    let last = peer_name
        .split(['/', '\\'])
        .rev()
        .find(|c| !c.trim().trim_matches('.').is_empty())
        .unwrap_or("");
    let cleaned: String = last
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    let trimmed = cleaned
        .trim()
        .trim_start_matches('.')
        .trim_end_matches(['.', ' '])
        .trim();
    if trimmed.is_empty() {
        return Err(NameError::Empty(peer_name.to_owned()));
    }
    let name = if is_reserved_device(trimmed) {
        format!("_{trimmed}")
    } else {
        trimmed.to_owned()
    };
    let (stem, ext) = split_extension(&name);
    Ok(fit(stem, "", ext))
}

/// `dir/name` if nothing exists there, else the first free `stem (N).ext` (N = 1, 2, …).
/// Existence is checked without following symlinks (a dangling symlink counts as taken). The
/// result is only a candidate: create or rename into it without replacing (see
/// `files::PartFile::finish_unique`) and retry on `AlreadyExists`.
pub fn unique_path(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !exists(&first) {
        return first;
    }
    let (stem, ext) = split_extension(name);
    for n in 1..=MAX_NUMBERED {
        let candidate = dir.join(fit(stem, &format!(" ({n})"), ext));
        if !exists(&candidate) {
            return candidate;
        }
    }
    loop {
        let tag = format!(" ({:08x})", rand::random::<u32>());
        let candidate = dir.join(fit(stem, &tag, ext));
        if !exists(&candidate) {
            return candidate;
        }
    }
}

fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// Whether `name` (ignoring any extension and trailing spaces) is a Windows device name.
fn is_reserved_device(name: &str) -> bool {
    let base = name
        .split('.')
        .next()
        .unwrap_or(name)
        .trim_end()
        .to_ascii_uppercase();
    match base.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" => true,
        _ => {
            let b = base.as_bytes();
            b.len() == 4
                && (base.starts_with("COM") || base.starts_with("LPT"))
                && matches!(b.get(3), Some(b'1'..=b'9'))
        }
    }
}

/// Splits `name` into (stem, extension-with-dot). A leading dot or an over-long tail is not an
/// extension.
fn split_extension(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 && name.len() - i <= MAX_KEPT_EXTENSION && name.len() - i > 1 => {
            name.split_at(i)
        }
        _ => (name, ""),
    }
}

/// `stem + tag + ext`, with the stem cut at a char boundary so the whole fits
/// `MAX_NAME_BYTES`. If even the tag and extension do not fit, the extension is dropped.
fn fit(stem: &str, tag: &str, ext: &str) -> String {
    let (room, ext) = match MAX_NAME_BYTES.checked_sub(tag.len() + ext.len()) {
        Some(room) if room > 0 => (room, ext),
        _ => (MAX_NAME_BYTES.saturating_sub(tag.len()), ""),
    };
    let mut cut = stem.len().min(room);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = String::with_capacity(cut + tag.len() + ext.len());
    out.push_str(stem[..cut].trim_end());
    if out.is_empty() {
        out.push('_');
    }
    out.push_str(tag);
    out.push_str(ext);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names() {
        let ok = |input: &str, expected: &str| {
            assert_eq!(
                safe_file_name(input).as_deref(),
                Ok(expected),
                "input {input:?}"
            );
        };
        ok("report.pdf", "report.pdf");
        ok("with space.txt", "with space.txt");
        ok("ünïcödé 文件.txt", "ünïcödé 文件.txt");
        ok("100% + more.txt", "100% + more.txt");
        // pcp-style paths: last component.
        ok("docs/report.pdf", "report.pdf");
        ok("/etc/passwd", "passwd");
        ok("../../.ssh/authorized_keys", "authorized_keys");
        ok("C:\\Users\\me\\file.txt", "file.txt");
        ok("dir/", "dir");
        ok("a/b/..", "b");
        ok("x/./", "x");
        // Dots and spaces.
        ok(".bashrc", "bashrc");
        ok("...hidden", "hidden");
        ok("name.", "name");
        ok("name. . .", "name");
        ok("  padded  ", "padded");
        // Control characters.
        ok("a\0b", "a_b");
        ok("tab\there\n", "tab_here_");
        ok("del\u{7f}", "del_");
        // Windows device names.
        ok("CON", "_CON");
        ok("con.txt", "_con.txt");
        ok("Nul.tar.gz", "_Nul.tar.gz");
        ok("com1", "_com1");
        ok("LPT9.log", "_LPT9.log");
        ok("AUX .txt", "_AUX.txt");
        ok("COM0", "COM0");
        ok("COM10", "COM10");
        ok("CONSOLE", "CONSOLE");
        ok("LPT", "LPT");
        for bad in [
            "", ".", "..", "...", "/", "//", "\\", "../..", " ", " . ", "/./../",
        ] {
            assert!(
                matches!(safe_file_name(bad), Err(NameError::Empty(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn long_names_are_cut_keeping_the_extension() {
        let long = format!("{}.tar.gz", "é".repeat(300));
        let safe = safe_file_name(&long).unwrap();
        assert!(safe.len() <= MAX_NAME_BYTES, "{}", safe.len());
        assert!(safe.ends_with("é.gz"));
        let no_ext = "x".repeat(1000);
        assert_eq!(safe_file_name(&no_ext).unwrap(), "x".repeat(255));
        let long_ext = format!("a.{}", "e".repeat(400));
        assert_eq!(safe_file_name(&long_ext).unwrap().len(), 255);
    }

    #[test]
    fn unique_naming() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(unique_path(d, "a.txt"), d.join("a.txt"));
        std::fs::write(d.join("a.txt"), b"").unwrap();
        assert_eq!(unique_path(d, "a.txt"), d.join("a (1).txt"));
        std::fs::write(d.join("a (1).txt"), b"").unwrap();
        assert_eq!(unique_path(d, "a.txt"), d.join("a (2).txt"));
        std::fs::create_dir(d.join("folder")).unwrap();
        assert_eq!(unique_path(d, "folder"), d.join("folder (1)"));
        std::os::unix::fs::symlink("/nonexistent", d.join("dangling")).unwrap();
        assert_eq!(unique_path(d, "dangling"), d.join("dangling (1)"));
        let long = "y".repeat(255);
        std::fs::write(d.join(&long), b"").unwrap();
        let next = unique_path(d, &long);
        let next_name = next.file_name().unwrap().to_str().unwrap();
        assert_eq!(next_name.len(), 255);
        assert!(next_name.ends_with(" (1)"));
    }
}
