//! `http_heads`: the same bytes as (1) a raw HTTP request stream into
//! `gshare::http::serve` over `tokio::io::duplex`, serving a small catalog,
//! and (2) a raw HTTP response stream into `gshare::http::Client`.
//!
//! Server invariants: a 200 only for catalog items (a `Started` event for
//! every 200 status line, each naming a catalog index); `Catalog::lookup`
//! only matches a request line whose directory is the source path and whose
//! percent-decoded last segment is that item's name (checked against a
//! reference decoder); a file next to the catalog files but not in the
//! catalog (and one outside the folder) is never served; nothing is written
//! to the catalog directory; the server finishes once the client side closes.
//!
//! Client invariants: no panic, no hang; a body never carries more bytes
//! than the fake server sent, nor more than its `Content-Length`.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gshare::http::{Catalog, Client, ClientError, ServeEvent, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The catalog's source path.
pub const SOURCE_PATH: &str = "/temporary/0123456789abcdef0123456789abcdef/";
/// Contents that must never appear in a response.
const SECRET: &[u8] = b"SECRET-7f3a9c1e-never-served";
const FILE_A: &[u8] = b"hello, gshare fuzz\n";
const FILE_B: &[u8] = b"";
const WALL_LIMIT: Duration = Duration::from_secs(20);

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    catalog: Arc<Catalog>,
}

/// The names the catalog offers (manifest names).
pub const NAMES: [&str; 4] = ["a.txt", "empty", "sp ace+plus%.txt", "folder"];

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("catalog");
        let write = |p: PathBuf, b: &[u8]| std::fs::write(p, b).expect("write fixture");
        std::fs::create_dir_all(root.join("folder/sub")).expect("mkdir");
        write(root.join("a.txt"), FILE_A);
        write(root.join("empty"), FILE_B);
        write(root.join("sp ace+plus%.txt"), FILE_A);
        write(root.join("folder/sub/inner.txt"), FILE_A);
        // Present on disk, absent from the catalog.
        write(root.join("secret.txt"), SECRET);
        write(dir.path().join("secret.txt"), SECRET);
        let mut c = Catalog::new(SOURCE_PATH);
        c.push_file(NAMES[0], root.join("a.txt"), FILE_A.len() as u64);
        c.push_file(NAMES[1], root.join("empty"), 0);
        c.push_file(NAMES[2], root.join("sp ace+plus%.txt"), FILE_A.len() as u64);
        c.push_folder(NAMES[3], root.join("folder"));
        Fixture {
            _dir: dir,
            root,
            catalog: Arc::new(c),
        }
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Raw request bytes into the server; returns the raw response bytes.
pub fn serve_raw(request: &[u8]) -> (Vec<u8>, Vec<ServeEvent>) {
    let f = fixture();
    let rt = runtime();
    let (mut peer, io) = tokio::io::duplex(16 * 1024);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let catalog = f.catalog.clone();
    let out = rt.block_on(async move {
        let server = tokio::spawn(serve(io, catalog, tx));
        let (mut rd, mut wr) = tokio::io::split(&mut peer);
        let request = request.to_vec();
        let writer = async move {
            // The server may stop reading (bad request); that is fine.
            let _ = wr.write_all(&request).await;
            let _ = wr.shutdown().await;
        };
        let reader = async move {
            let mut out = Vec::new();
            let _ = rd.read_to_end(&mut out).await;
            out
        };
        let (_, out) = tokio::time::timeout(WALL_LIMIT, async { tokio::join!(writer, reader) })
            .await
            .expect("server did not finish after the client closed");
        let _ = tokio::time::timeout(WALL_LIMIT, server)
            .await
            .expect("server task hung");
        out
    });
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (out, events)
}

fn check_server(request: &[u8]) {
    let f = fixture();
    let (out, events) = serve_raw(request);
    if !contains(request, SECRET) {
        assert!(!contains(&out, SECRET), "secret served");
    }
    let started: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            ServeEvent::Started { item } => Some(*item),
            _ => None,
        })
        .collect();
    for i in &started {
        assert!(*i < f.catalog.items().len(), "Started for a non-item {i}");
    }
    // A request cut off by the client's close may have started without its
    // response being written, so only one direction is exact.
    let oks = count(&out, b"HTTP/1.1 200 OK\r\n") + count(&out, b"HTTP/1.0 200 OK\r\n");
    assert!(
        oks <= started.len(),
        "a 200 without a Started event: {events:?}\n{}",
        String::from_utf8_lossy(&out)
    );
    check_lookup(request);
    // Whatever was asked, the catalog directory holds exactly what it held.
    let mut names: Vec<String> = std::fs::read_dir(&f.root)
        .expect("read catalog dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["a.txt", "empty", "folder", "secret.txt", "sp ace+plus%.txt"],
        "catalog directory changed"
    );
}

/// Percent-decodes like a browser would, `+` kept or read as a space.
fn reference_decode(seg: &[u8], plus_as_space: bool) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = seg.get(i) {
        if c == b'%' {
            let hex = std::str::from_utf8(seg.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(if c == b'+' && plus_as_space { b' ' } else { c });
            i += 1;
        }
    }
    Some(out)
}

/// Every `GET` request line in the input: whatever `lookup` matches must be
/// a catalog name under the source path.
fn check_lookup(request: &[u8]) {
    let catalog = &fixture().catalog;
    for line in request.split(|&b| b == b'\n') {
        let Some(rest) = line.strip_prefix(b"GET ") else {
            continue;
        };
        let target = rest.split(|&b| b == b' ').next().unwrap_or(b"");
        let Ok(uri) = http::Uri::try_from(target) else {
            continue;
        };
        let Some(i) = catalog.lookup(&http::Method::GET, &uri) else {
            continue;
        };
        let path = uri.path().as_bytes();
        let seg = path
            .strip_prefix(SOURCE_PATH.as_bytes())
            .unwrap_or_else(|| panic!("lookup matched {uri} outside the source path"));
        assert!(!seg.contains(&b'/'), "lookup matched a nested path {uri}");
        let name = NAMES[i].as_bytes();
        assert!(
            [false, true]
                .into_iter()
                .any(|p| reference_decode(seg, p).as_deref() == Some(name)),
            "lookup matched {uri} to {:?}",
            NAMES[i]
        );
    }
}

/// Raw response bytes into the client. Returns per request: status or body length.
pub fn client_raw(response: &[u8]) -> Vec<Result<u64, String>> {
    let rt = runtime();
    let (mut peer, io) = tokio::io::duplex(16 * 1024);
    let sent = response.len() as u64;
    let response = response.to_vec();
    rt.block_on(async move {
        let fake = tokio::spawn(async move {
            let (mut rd, mut wr) = tokio::io::split(&mut peer);
            let drain = async move {
                let mut sink = Vec::new();
                let _ = rd.read_to_end(&mut sink).await;
            };
            let write = async move {
                let _ = wr.write_all(&response).await;
                let _ = wr.shutdown().await;
            };
            tokio::join!(drain, write);
        });
        let work = async {
            let mut results = Vec::new();
            let Ok(mut client) = Client::handshake(io, "romeo@montague.lit/gshare".into()).await
            else {
                return results;
            };
            let mut total = 0u64;
            for name in ["a.txt", "folder", "empty"] {
                let path = format!("{SOURCE_PATH}{name}");
                match client.get(&path).await {
                    Ok(mut resp) => {
                        let declared = resp.content_length();
                        let mut body = 0u64;
                        let clean = loop {
                            match resp.chunk().await {
                                Ok(Some(b)) => body += b.len() as u64,
                                Ok(None) => break true,
                                Err(_) => break false,
                            }
                        };
                        assert_eq!(body, resp.received(), "received() disagrees");
                        total += body;
                        assert!(
                            total <= sent,
                            "client got {total} body bytes of {sent} sent"
                        );
                        if let Some(n) = declared {
                            assert!(body <= n, "body {body} over Content-Length {n}");
                            if clean && !resp.is_chunked() {
                                assert_eq!(body, n, "clean end short of Content-Length");
                            }
                        }
                        results.push(Ok(body));
                    }
                    Err(ClientError::Closed) => {
                        results.push(Err("closed".into()));
                        break;
                    }
                    Err(e) => results.push(Err(e.to_string())),
                }
            }
            results
        };
        let results = tokio::time::timeout(WALL_LIMIT, work)
            .await
            .expect("client hung on a closed connection");
        fake.abort();
        results
    })
}

/// The fuzz target body.
pub fn run(data: &[u8]) {
    check_server(data);
    let _ = client_raw(data);
}

/// The bytes gshare's `Client` writes for `GET path` (captured from the
/// wire; the fake server answers 404 so the client finishes).
pub fn capture_client_request(path: &str) -> Vec<u8> {
    let rt = runtime();
    let (mut peer, io) = tokio::io::duplex(16 * 1024);
    let path = path.to_owned();
    rt.block_on(async move {
        let fake = tokio::spawn(async move {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match peer.read(&mut byte).await {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let _ = peer
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await;
            head
        });
        let mut client = Client::handshake(io, "romeo@montague.lit/gshare".into())
            .await
            .expect("client handshake");
        let _ = client.get(&path).await;
        fake.await.expect("fake server")
    })
}

/// Bytes of regular files in the fixture's folder item.
pub fn folder_content_bytes() -> u32 {
    FILE_A.len() as u32
}

/// The tar body gshare's server sends for the fixture's folder item,
/// fetched through gshare's client.
pub fn fetch_folder_tar() -> Vec<u8> {
    let f = fixture();
    let rt = runtime();
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let (tx, _rx) = mpsc::unbounded_channel();
    let catalog = f.catalog.clone();
    rt.block_on(async move {
        let server = tokio::spawn(serve(server_io, catalog, tx));
        let mut client = Client::handshake(client_io, "romeo@montague.lit/gshare".into())
            .await
            .expect("client handshake");
        let mut resp = client
            .get(&format!("{SOURCE_PATH}folder"))
            .await
            .expect("folder request");
        let mut body = Vec::new();
        while let Some(b) = resp.chunk().await.expect("folder body") {
            body.extend_from_slice(&b);
        }
        drop(client);
        server.abort();
        body
    })
}
