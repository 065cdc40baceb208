//! Throughput of the HTTP layer alone: our server streams a file from disk to our client over a
//! `tokio::io::duplex` pipe (no PseudoTCP). Prints MB/s; it asserts only that every byte
//! arrived intact, never a speed. Size: `GSHARE_HTTP_BENCH_MIB` (default 64); run with
//! `--release -- --nocapture` and `GSHARE_HTTP_BENCH_MIB=1024` for the 1 GiB figure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use gshare::http::{Catalog, Client, ServeEvent, request_path, serve};
use gshare::transfer::files::PartFile;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

fn bench_bytes() -> u64 {
    std::env::var("GSHARE_HTTP_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(64)
        * 1024
        * 1024
}

/// Writes `size` seeded pseudo-random bytes to `path`; returns their SHA-256.
fn make_file(path: &std::path::Path, size: u64) -> String {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
    hex::encode(hasher.finalize().as_slice())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_to_client_over_duplex() {
    let size = bench_bytes();
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("payload");
    let digest = make_file(&path, size);

    let mut catalog = Catalog::new("/temporary/bench/");
    catalog.push_file("payload.bin", &path, size);
    let catalog = Arc::new(catalog);
    let (client_io, server_io) = tokio::io::duplex(256 * 1024);
    let (tx, mut events) = mpsc::unbounded_channel();
    let _server = tokio::spawn(serve(server_io, catalog.clone(), tx));
    let mut client = Client::handshake(client_io, "a@b/c".into()).await.unwrap();
    let url = request_path(catalog.source_path(), "payload.bin");

    // 1. Into memory (hash only): the HTTP layer's own cost.
    let start = Instant::now();
    let mut resp = client.get(&url).await.unwrap();
    let mut hasher = Sha256::new();
    let mut chunks = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        hasher.update(&chunk);
        chunks += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(resp.received(), size);
    assert_eq!(hex::encode(hasher.finalize().as_slice()), digest);
    println!(
        "http duplex, server -> client (hashing): {} MiB in {secs:.2} s = {:.0} MB/s ({chunks} chunks)",
        size >> 20,
        size as f64 / secs / 1e6
    );

    // 2. Into a PartFile on disk (what the receiver really does: write + SHA-256 + fsync + rename).
    let dest = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let mut resp = client.get(&url).await.unwrap();
    let mut part = PartFile::create(dest.path(), "payload.bin", Some(size))
        .await
        .unwrap();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        part.write_bytes(chunk).await.unwrap();
    }
    // The socket's side is done here: writing and hashing run on the part file's worker.
    let drained = start.elapsed().as_secs_f64();
    let done = part
        .finish_unique(dest.path(), "payload.bin")
        .await
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(done.sha256, digest);
    assert_eq!(done.size, size);
    println!(
        "http duplex, server -> client -> PartFile: {} MiB in {secs:.2} s = {:.0} MB/s \
         (body drained after {drained:.2} s)",
        size >> 20,
        size as f64 / secs / 1e6
    );

    let mut served = 0;
    while let Ok(ev) = events.try_recv() {
        if let ServeEvent::Served { item: 0, bytes } = ev {
            assert_eq!(bytes, size);
            served += 1;
        }
    }
    assert_eq!(served, 2);
}
