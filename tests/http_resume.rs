//! The gshare-only HTTP extensions on the wire (docs/protocol.md §D), over `tokio::io::duplex`:
//! `Range: bytes=N-` answered `206` with `Content-Range` (resume), `416` past the end, the
//! folder digest trailer, the exact request bytes our client adds — and that a classic
//! server (the default [`serve`]) ignores `Range` and never sends a trailer, so classic peers
//! keep seeing exactly today's bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use gshare::http::{
    Catalog, Client, ClientError, DIGEST_TRAILER, GetOptions, ServeEvent, ServeOptions,
    USER_AGENT_VALUE, serve, serve_with,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::sync::mpsc;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

const GSHARE: ServeOptions = ServeOptions {
    ranges: true,
    digest_trailers: true,
};

async fn read_head(io: &mut DuplexStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(io.read(&mut b).await.unwrap(), 1, "EOF inside head");
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

async fn read_exact_vec(io: &mut DuplexStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    io.read_exact(&mut buf).await.unwrap();
    buf
}

async fn read_line(io: &mut DuplexStream) -> String {
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        line.push(read_exact_vec(io, 1).await[0]);
    }
    String::from_utf8(line).unwrap()
}

/// Reads a chunked body; returns the payload and the raw trailer section (without the final
/// blank line).
async fn read_chunked(io: &mut DuplexStream) -> (Vec<u8>, String) {
    let mut body = Vec::new();
    loop {
        let line = read_line(io).await;
        let size = usize::from_str_radix(line.trim_end(), 16).unwrap();
        if size == 0 {
            let mut trailers = String::new();
            loop {
                let line = read_line(io).await;
                if line == "\r\n" {
                    return (body, trailers);
                }
                trailers.push_str(&line);
            }
        }
        body.extend(read_exact_vec(io, size).await);
        assert_eq!(read_exact_vec(io, 2).await, b"\r\n");
    }
}

fn request(path: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: romeo@example.com/pcp:0\r\nContent-Length: 0\r\n\
         User-Agent: {USER_AGENT_VALUE}\r\nConnection: Keep-Alive\r\n{extra}\r\n"
    )
    .into_bytes()
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 253) as u8).collect()
}

fn fixture(content: &[u8]) -> (tempfile::TempDir, Arc<Catalog>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("item");
    std::fs::write(&path, content).unwrap();
    let mut catalog = Catalog::new("/temporary/abc/");
    catalog.push_file("big.bin", path, content.len() as u64);
    let folder = dir.path().join("folder");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    std::fs::write(folder.join("a.txt"), b"alpha").unwrap();
    std::fs::write(folder.join("sub/b.bin"), vec![7u8; 3000]).unwrap();
    catalog.push_folder("stuff", folder);
    (dir, Arc::new(catalog))
}

fn start(
    catalog: Arc<Catalog>,
    options: Option<ServeOptions>,
) -> (DuplexStream, mpsc::UnboundedReceiver<ServeEvent>) {
    let (ours, theirs) = duplex(64 * 1024);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _ = match options {
            Some(o) => serve_with(theirs, catalog, tx, o).await,
            None => serve(theirs, catalog, tx).await,
        };
    });
    (ours, rx)
}

fn events(rx: &mut mpsc::UnboundedReceiver<ServeEvent>) -> Vec<ServeEvent> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

#[tokio::test]
async fn range_is_answered_206_between_gshare_peers() {
    let content = data(1_000_000);
    let (_dir, catalog) = fixture(&content);
    let (mut io, mut rx) = start(catalog, Some(GSHARE));
    io.write_all(&request(
        "/temporary/abc/big.bin",
        "Range: bytes=600000-\r\n",
    ))
    .await
    .unwrap();
    let head = timeout(LIMIT, read_head(&mut io)).await.unwrap();
    assert_eq!(
        head,
        "HTTP/1.1 206 Partial Content\r\nConnection: Keep-Alive\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 400000\r\n\
         Content-Range: bytes 600000-999999/1000000\r\n\r\n"
    );
    let body = timeout(LIMIT, read_exact_vec(&mut io, 400_000))
        .await
        .unwrap();
    assert_eq!(body, content[600_000..]);

    // Keep-alive holds; a range at or past the end is 416 with the size.
    io.write_all(&request(
        "/temporary/abc/big.bin",
        "Range: bytes=1000000-\r\n",
    ))
    .await
    .unwrap();
    assert_eq!(
        read_head(&mut io).await,
        "HTTP/1.1 416 Range Not Satisfiable\r\nConnection: Keep-Alive\r\n\
         Content-Range: bytes */1000000\r\nContent-Length: 0\r\n\r\n"
    );
    // Forms other than `bytes=N-` are ignored: the whole item, 200.
    for other in [
        "bytes=5-10",
        "bytes=-5",
        "bytes=1-,3-",
        "items=5-",
        "bytes=x-",
    ] {
        io.write_all(&request(
            "/temporary/abc/big.bin",
            &format!("Range: {other}\r\n"),
        ))
        .await
        .unwrap();
        let head = read_head(&mut io).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{other}: {head}");
        assert!(head.contains("Content-Length: 1000000\r\n"), "{other}");
        assert_eq!(read_exact_vec(&mut io, content.len()).await, content);
    }

    // Progress and Served count from the item's start: comparable with the manifest size.
    let evs = events(&mut rx);
    let first = evs
        .iter()
        .find_map(|e| match e {
            ServeEvent::Progress { item: 0, bytes } => Some(*bytes),
            _ => None,
        })
        .unwrap();
    assert!(first > 600_000 && first <= 1_000_000, "{first}");
    assert!(matches!(
        evs.iter().find(|e| matches!(e, ServeEvent::Served { .. })),
        Some(ServeEvent::Served {
            item: 0,
            bytes: 1_000_000
        })
    ));
}

#[tokio::test]
async fn classic_server_ignores_range_and_sends_no_trailer() {
    let content = data(50_000);
    let (_dir, catalog) = fixture(&content);
    let (mut io, _rx) = start(catalog, None);
    io.write_all(&request(
        "/temporary/abc/big.bin",
        "Range: bytes=100-\r\nTE: trailers\r\n",
    ))
    .await
    .unwrap();
    assert_eq!(
        read_head(&mut io).await,
        "HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 50000\r\n\r\n"
    );
    assert_eq!(read_exact_vec(&mut io, content.len()).await, content);
    io.write_all(&request("/temporary/abc/stuff", "TE: trailers\r\n"))
        .await
        .unwrap();
    assert_eq!(
        read_head(&mut io).await,
        "HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nContent-Type: application/x-tar\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    let (_body, trailers) = timeout(LIMIT, read_chunked(&mut io)).await.unwrap();
    assert_eq!(trailers, "");
}

#[tokio::test]
async fn folder_stream_ends_with_its_digest_when_asked() {
    let (_dir, catalog) = fixture(b"x");
    let (mut io, _rx) = start(catalog, Some(GSHARE));
    // Without `TE: trailers` even a gshare server sends none (hyper could not).
    io.write_all(&request("/temporary/abc/stuff", ""))
        .await
        .unwrap();
    let head = read_head(&mut io).await;
    assert!(!head.contains("Trailer"), "{head}");
    let (plain, trailers) = timeout(LIMIT, read_chunked(&mut io)).await.unwrap();
    assert_eq!(trailers, "");

    io.write_all(&request("/temporary/abc/stuff", "TE: trailers\r\n"))
        .await
        .unwrap();
    assert_eq!(
        read_head(&mut io).await,
        "HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nContent-Type: application/x-tar\r\n\
         Trailer: x-gshare-sha256\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let (body, trailers) = timeout(LIMIT, read_chunked(&mut io)).await.unwrap();
    assert_eq!(body, plain, "the same tar stream");
    assert_eq!(
        trailers,
        format!(
            "X-Gshare-Sha256: {}\r\n",
            hex::encode(Sha256::digest(&body))
        )
    );
}

#[tokio::test]
async fn client_resumes_with_range_and_reads_the_trailer() {
    let content = data(700_000);
    let (_dir, catalog) = fixture(&content);
    let (io, _rx) = start(catalog, Some(GSHARE));
    let mut client = Client::handshake(io, "romeo@example.com/pcp".into())
        .await
        .unwrap();
    let opts = GetOptions {
        range_from: Some(123_456),
        trailers: true,
    };
    let mut resp = timeout(LIMIT, client.get_with("/temporary/abc/big.bin", opts))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.offset(), 123_456);
    assert_eq!(resp.content_length(), Some(700_000 - 123_456));
    let mut got = Vec::new();
    while let Some(c) = resp.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert_eq!(got, content[123_456..]);
    assert_eq!(resp.digest_trailer(), None, "files carry no trailer");

    let mut resp = client.get_with("/temporary/abc/stuff", opts).await.unwrap();
    assert_eq!(resp.offset(), 0, "Range is not applied to folders");
    let mut tar = Vec::new();
    while let Some(c) = resp.chunk().await.unwrap() {
        tar.extend_from_slice(&c);
    }
    let want: [u8; 32] = Sha256::digest(&tar).into();
    assert_eq!(resp.digest_trailer(), Some(want));

    // Past the end: 416, and the connection stays usable.
    let err = client
        .get_with(
            "/temporary/abc/big.bin",
            GetOptions {
                range_from: Some(700_000),
                trailers: false,
            },
        )
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClientError::Status(416)), "{err}");
    let mut resp = client.get("/temporary/abc/big.bin").await.unwrap();
    assert_eq!(resp.offset(), 0);
    let mut n = 0;
    while let Some(c) = resp.chunk().await.unwrap() {
        n += c.len();
    }
    assert_eq!(n, content.len());
}

#[tokio::test]
async fn client_request_bytes_with_extensions_and_bad_ranges() {
    let (client_io, mut server_io) = duplex(64 * 1024);
    let fake = tokio::spawn(async move {
        let first = read_head(&mut server_io).await;
        // A classic server ignores Range: 200 with everything.
        server_io
            .write_all(b"HTTP/1.1 200\r\nContent-Length: 5\r\n\r\nhello")
            .await
            .unwrap();
        let second = read_head(&mut server_io).await;
        // A 206 for another range than asked must not be used.
        server_io
            .write_all(
                b"HTTP/1.1 206\r\nContent-Range: bytes 2-4/5\r\nContent-Length: 3\r\n\r\nllo",
            )
            .await
            .unwrap();
        (first, second)
    });
    let mut client = Client::handshake(client_io, "romeo@example.com/pcp".into())
        .await
        .unwrap();
    let opts = GetOptions {
        range_from: Some(3),
        trailers: true,
    };
    let mut resp = client.get_with("/temporary/abc/f", opts).await.unwrap();
    assert_eq!(resp.offset(), 0, "a 200 means: start over");
    assert_eq!(resp.chunk().await.unwrap().unwrap(), "hello");
    let err = client
        .get_with("/temporary/abc/f", opts)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClientError::BadRange(_)), "{err}");
    let (first, second) = fake.await.unwrap();
    let expected = format!(
        "GET /temporary/abc/f HTTP/1.1\r\nHost: romeo@example.com/pcp:0\r\nContent-Length: 0\r\n\
         User-Agent: {USER_AGENT_VALUE}\r\nConnection: Keep-Alive\r\nRange: bytes=3-\r\n\
         Te: trailers\r\n\r\n"
    );
    assert_eq!(first, expected);
    assert_eq!(second, expected);
    let _ = DIGEST_TRAILER;
}
