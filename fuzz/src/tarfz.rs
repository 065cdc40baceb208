//! `tar_reader`: bytes pushed in fuzz-chosen chunks into `TarUnpacker`
//! aimed at `<tmp>/target`, next to a sentinel file and a sibling folder.
//!
//! Input: `[chunk seed][flags][expected size: u32 le][tar bytes…]`. Flags:
//! bit0 pass the expected size (else `None`); bits1-3 pick the manifest name
//! (hostile ones included); bit4 a folder of the final name already exists.
//!
//! Invariants, walking the whole temporary tree afterwards (never following
//! links): nothing is created, changed or removed outside `target`; on
//! error `target` holds only what was there before (the part folder is
//! gone); on success exactly one new folder, directly in `target`, holding
//! only regular files and directories, its directory count equal to the
//! `FinishedFolder` report, its files and bytes no more than reported (a
//! repeated path rewrites a file), and the reported size equal to the
//! expected size, if one was given.

use std::fs;
use std::path::Path;

use bytes::Bytes;
use gshare::transfer::tar::{FinishedFolder, TarUnpacker};

/// Manifest names tried (flags bits 1-3).
pub const NAMES: [&str; 8] = [
    "folder",
    "photos 2024",
    "../evil",
    "a/b",
    "..",
    ".hidden",
    "nul\u{0}name",
    "/abs/olute",
];
const SENTINEL: &[u8] = b"outside the target directory\n";

#[derive(Default, Debug, PartialEq, Eq)]
struct Walk {
    files: u64,
    dirs: u64,
    bytes: u64,
    others: Vec<String>,
}

fn walk(p: &Path, w: &mut Walk) {
    let Ok(rd) = fs::read_dir(p) else { return };
    for e in rd.flatten() {
        let path = e.path();
        let Ok(m) = fs::symlink_metadata(&path) else {
            continue;
        };
        if m.is_dir() {
            w.dirs += 1;
            walk(&path, w);
        } else if m.is_file() {
            w.files += 1;
            w.bytes += m.len();
        } else {
            w.others.push(path.display().to_string());
        }
    }
}

fn names_in(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Chunk sizes from a tiny LCG: mostly small, sometimes large.
fn chunks(seed: u8, data: &[u8]) -> Vec<&[u8]> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let r = (x >> 8) as usize;
        let n = if r.is_multiple_of(5) {
            1 + r % 16384
        } else {
            1 + r % 700
        };
        let (c, tail) = rest.split_at(n.min(rest.len()));
        out.push(c);
        rest = tail;
    }
    out
}

/// Unpacks `tar` into a fresh `target` and checks the invariants.
pub fn run(data: &[u8]) {
    let [seed, flags, e0, e1, e2, e3, tar @ ..] = data else {
        return;
    };
    let expected = (flags & 1 != 0).then(|| u64::from(u32::from_le_bytes([*e0, *e1, *e2, *e3])));
    let name = NAMES[usize::from((flags >> 1) & 7)];
    let root = tempfile::tempdir().expect("temp dir");
    let target = root.path().join("target");
    fs::create_dir(&target).expect("mkdir target");
    fs::write(root.path().join("outside.txt"), SENTINEL).expect("sentinel");
    fs::create_dir(root.path().join("sibling")).expect("mkdir sibling");
    fs::write(root.path().join("sibling/keep.txt"), SENTINEL).expect("sibling file");
    let pre_existing = if flags & 0x10 != 0 {
        let n = gshare::transfer::names::safe_file_name(name).unwrap_or_else(|_| "x".into());
        fs::create_dir(target.join(&n)).expect("mkdir pre-existing");
        vec![n]
    } else {
        Vec::new()
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result: Result<FinishedFolder, String> = rt.block_on(async {
        let mut u = TarUnpacker::new(&target, name, expected)
            .await
            .map_err(|e| e.to_string())?;
        for c in chunks(*seed, tar) {
            u.push(Bytes::copy_from_slice(c))
                .await
                .map_err(|e| e.to_string())?;
        }
        u.finish().await.map_err(|e| e.to_string())
    });
    drop(rt); // waits for the unpacking thread

    // Outside the target: untouched.
    assert_eq!(
        names_in(root.path()),
        ["outside.txt", "sibling", "target"],
        "something appeared next to the target"
    );
    assert_eq!(
        fs::read(root.path().join("outside.txt")).expect("sentinel"),
        SENTINEL
    );
    assert_eq!(names_in(&root.path().join("sibling")), ["keep.txt"]);
    assert_eq!(
        fs::read(root.path().join("sibling/keep.txt")).expect("sibling file"),
        SENTINEL
    );
    for p in &pre_existing {
        assert!(
            names_in(&target.join(p)).is_empty(),
            "pre-existing folder {p} was written into"
        );
    }

    let mut inside = names_in(&target);
    inside.retain(|n| !pre_existing.contains(n));
    match result {
        Err(_) => assert!(inside.is_empty(), "left behind after an error: {inside:?}"),
        Ok(f) => {
            assert_eq!(
                f.path.parent(),
                Some(target.as_path()),
                "folder placed outside the target: {}",
                f.path.display()
            );
            let placed = f
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            assert_eq!(inside, [placed], "target holds more than the new folder");
            let meta = fs::symlink_metadata(&f.path).expect("placed folder");
            assert!(meta.is_dir(), "placed item is not a directory");
            let mut w = Walk::default();
            walk(&f.path, &mut w);
            assert!(
                w.others.is_empty(),
                "links or specials created: {:?}",
                w.others
            );
            // A later entry of the same path truncates and rewrites the
            // file: the report counts stream entries and bytes, the disk
            // holds the last version, so only `<=` holds for those two.
            assert!(w.files <= f.files, "more files on disk than reported");
            assert!(w.bytes <= f.size, "more bytes on disk than reported");
            assert!(w.files > 0 || f.files == 0, "reported files, none on disk");
            assert_eq!(w.dirs, f.dirs, "directory count differs from the report");
            if let Some(e) = expected {
                assert_eq!(f.size, e, "accepted a size other than the announced one");
            }
        }
    }
}
