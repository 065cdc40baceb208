//! A folder goes through the whole pipeline: our server's on-the-fly tar, our client over one
//! `tokio::io::duplex` connection, and the receiver's `TarUnpacker`; the tree that comes out
//! must equal the one that went in.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::sync::Arc;

use gshare::http::{Catalog, Client, ServeEvent, folder_size, request_path, serve};
use gshare::transfer::tar::TarUnpacker;
use tokio::sync::mpsc;

/// (relative path, kind, contents) of everything under `root`, sorted; symlinks are shown as
/// such.
fn tree(root: &Path) -> Vec<(String, &'static str, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, &'static str, Vec<u8>)>) {
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
                out.push((rel, "dir", Vec::new()));
                walk(base, &e.path(), out);
            } else if ft.is_symlink() {
                out.push((rel, "symlink", Vec::new()));
            } else {
                out.push((rel, "file", fs::read(e.path()).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[tokio::test]
async fn folder_round_trips_through_tar_and_untar() {
    let src_parent = tempfile::tempdir().unwrap();
    let src = src_parent.path().join("My Stuff");
    let long_dir = "d".repeat(120);
    let longer = format!("{}/{}", "e".repeat(200), "f".repeat(150));
    for d in [
        "empty-dir",
        "a/b/c",
        "ünï cödé",
        long_dir.as_str(),
        longer.as_str(),
    ] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let files: Vec<(String, Vec<u8>)> = vec![
        ("top.txt".into(), b"top level".to_vec()),
        ("empty".into(), Vec::new()),
        ("a/b/c/deep empty".into(), Vec::new()),
        ("a/b/c/big.bin".into(), big),
        ("a/one byte".into(), b"1".to_vec()),
        ("ünï cödé/文件 +%.txt".into(), "unicode".as_bytes().to_vec()),
        (
            format!("{long_dir}/{}", "g".repeat(90)),
            b"ustar prefix split".to_vec(),
        ),
        (
            format!("{longer}/{}", "h".repeat(200)),
            b"gnu long name".to_vec(),
        ),
    ];
    for (path, data) in &files {
        fs::write(src.join(path), data).unwrap();
    }
    // A symlink inside the folder pointing outside: never followed, not sent.
    std::os::unix::fs::symlink("/etc", src.join("a/etc-link")).unwrap();
    std::os::unix::fs::symlink("top.txt", src.join("inner-link")).unwrap();

    let size = folder_size(&src).unwrap();
    assert_eq!(size, files.iter().map(|(_, d)| d.len() as u64).sum::<u64>());

    let mut catalog = Catalog::new("/temporary/0123456789abcdef0123456789abcdef/");
    catalog.push_folder("My Stuff", &src);
    let catalog = Arc::new(catalog);
    let (client_io, server_io) = tokio::io::duplex(256 * 1024);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let server = tokio::spawn(serve(server_io, catalog.clone(), events_tx));

    let dest = tempfile::tempdir().unwrap();
    let mut client = Client::handshake(client_io, "romeo@example.com/pcp".into())
        .await
        .unwrap();
    let mut resp = client
        .get(&request_path(catalog.source_path(), "My Stuff"))
        .await
        .unwrap();
    assert!(resp.is_chunked());
    assert_eq!(resp.content_type(), Some("application/x-tar"));
    let mut unpacker = TarUnpacker::new(dest.path(), "My Stuff", Some(size))
        .await
        .unwrap();
    let mut chunks = 0;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        unpacker.push(chunk).await.unwrap();
        chunks += 1;
    }
    assert!(chunks > 1);
    let done = unpacker.finish().await.unwrap();
    assert_eq!(done.path, dest.path().join("My Stuff"));
    assert_eq!(done.size, size);
    assert_eq!(done.files, files.len() as u64);
    assert_eq!(done.skipped, 0, "symlinks are not even sent");

    let mut expected = tree(&src);
    expected.retain(|(_, kind, _)| *kind != "symlink");
    assert_eq!(tree(&done.path), expected);
    // Nothing else in the destination (no leftover temp folder).
    assert_eq!(fs::read_dir(dest.path()).unwrap().count(), 1);

    let mut served = None;
    while let Ok(ev) = events.try_recv() {
        if let ServeEvent::Served { item, bytes } = ev {
            served = Some((item, bytes));
        }
    }
    assert_eq!(served, Some((0, size)));

    // Same connection, again: the second copy gets a unique name.
    let mut resp = client
        .get(&request_path(catalog.source_path(), "My Stuff"))
        .await
        .unwrap();
    let mut unpacker = TarUnpacker::new(dest.path(), "My Stuff", Some(size))
        .await
        .unwrap();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        unpacker.push(chunk).await.unwrap();
    }
    let again = unpacker.finish().await.unwrap();
    assert_eq!(again.path, dest.path().join("My Stuff (1)"));
    assert_eq!(tree(&again.path), expected);
    drop(client);
    let _ = server.await;
}

/// GNU tar (the system `tar`) reads our stream to the same tree: the ustar prefix trick and the
/// GNU long names are understood by a standard reader, not just by ours.
#[tokio::test]
async fn gnu_tar_extracts_our_stream() {
    let src_parent = tempfile::tempdir().unwrap();
    let src = src_parent.path().join("stuff");
    let split = format!("{}/{}", "p".repeat(120), "q".repeat(90));
    let long = format!("{}/{}", "r".repeat(200), "s".repeat(200));
    fs::create_dir_all(src.join(&split).parent().unwrap()).unwrap();
    fs::create_dir_all(src.join(&long).parent().unwrap()).unwrap();
    fs::create_dir_all(src.join("empty/dir")).unwrap();
    fs::write(src.join(&split), b"split").unwrap();
    fs::write(src.join(&long), b"long").unwrap();
    fs::write(src.join("zero"), b"").unwrap();
    fs::write(src.join("x y.txt"), vec![3u8; 5000]).unwrap();

    let mut catalog = Catalog::new("/temporary/abc/");
    catalog.push_folder("stuff", &src);
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let (events_tx, _events) = mpsc::unbounded_channel();
    let _server = tokio::spawn(serve(server_io, Arc::new(catalog), events_tx));
    let mut client = Client::handshake(client_io, "a@b/c".into()).await.unwrap();
    let mut resp = client.get("/temporary/abc/stuff").await.unwrap();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("stuff.tar");
    fs::write(&archive, &body).unwrap();
    let out = work.path().join("out");
    fs::create_dir(&out).unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&out)
        .status()
        .expect("the system tar must be installed for this test");
    assert!(status.success());
    assert_eq!(tree(&out.join("stuff")), tree(&src));
}
