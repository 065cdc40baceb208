//! Test data on disk: deterministic pseudo-random files, sparse files, and
//! SHA-256 of a file. Shared by the end-to-end, fault and interop tests
//! (`#[path = "support/files.rs"] mod files;`).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Deterministic pseudo-random contents (xorshift64), fast even in debug
/// builds.
pub fn write_random(p: &Path, len: u64, seed: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(p).unwrap());
    let mut x = seed | 1;
    let mut left = len;
    let mut block = vec![0u8; 1 << 16];
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// A large file without writing it (sparse zeros), for transfers that are
/// cut short anyway.
pub fn sparse(p: &Path, len: u64) {
    std::fs::File::create(p).unwrap().set_len(len).unwrap();
}

/// Lowercase hex SHA-256 of a file's contents.
pub fn sha256_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}
