//! The HTTP layer on the wire (docs/protocol.md §D), over `tokio::io::duplex`: the exact bytes our
//! client sends, the exact heads our server sends, a raw libjingle-style server parsed by our
//! client, gabble/libjingle-style raw requests answered by our server, sequential items on one
//! connection, hostile names, and path-traversal attempts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use gshare::http::{
    Catalog, Client, ClientError, ServeEvent, USER_AGENT_VALUE, escape_name, request_path, serve,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::sync::mpsc;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

/// Reads up to and including the blank line ending an HTTP head.
async fn read_head(io: &mut DuplexStream) -> Vec<u8> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = io.read(&mut b).await.unwrap();
        assert_eq!(
            n,
            1,
            "EOF inside head; got so far: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    head
}

async fn read_exact_vec(io: &mut DuplexStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    io.read_exact(&mut buf).await.unwrap();
    buf
}

/// Reads a chunked body (raw), checking the framing, and returns the payload.
async fn read_chunked(io: &mut DuplexStream) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") {
            line.push(read_exact_vec(io, 1).await[0]);
        }
        let size = usize::from_str_radix(std::str::from_utf8(&line[..line.len() - 2]).unwrap(), 16)
            .unwrap();
        if size == 0 {
            assert_eq!(read_exact_vec(io, 2).await, b"\r\n");
            return body;
        }
        body.extend(read_exact_vec(io, size).await);
        assert_eq!(read_exact_vec(io, 2).await, b"\r\n");
    }
}

fn gab_request(path: &[u8]) -> Vec<u8> {
    [
        b"GET ".as_slice(),
        path,
        b" HTTP/1.1\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n",
        b"Host: juliet@example.com/Gabble:0\r\nUser-Agent: Telepathy Gabble 0.19.0\r\n\r\n",
    ]
    .concat()
}

const OK_FILE_HEAD: &str =
    "HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nContent-Type: application/octet-stream\r\n";
const NOT_FOUND: &[u8] =
    b"HTTP/1.1 404 Not Found\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n";

/// A temp dir holding the given files, and a catalog offering them under `/temporary/abc/`.
fn fixture(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Arc<Catalog>) {
    let dir = tempfile::tempdir().unwrap();
    let mut catalog = Catalog::new("/temporary/abc/");
    for (i, (name, data)) in files.iter().enumerate() {
        let path = dir.path().join(format!("item{i}"));
        std::fs::write(&path, data).unwrap();
        catalog.push_file(*name, path, data.len() as u64);
    }
    (dir, Arc::new(catalog))
}

fn start_server(
    catalog: Arc<Catalog>,
) -> (
    DuplexStream,
    mpsc::UnboundedReceiver<ServeEvent>,
    tokio::task::JoinHandle<()>,
) {
    let (ours, theirs) = duplex(64 * 1024);
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let _ = serve(theirs, catalog, tx).await;
    });
    (ours, rx, task)
}

#[tokio::test]
async fn client_request_bytes_are_exact() {
    let (client_io, mut server_io) = duplex(64 * 1024);
    let fake = tokio::spawn(async move {
        let head = read_head(&mut server_io).await;
        server_io
            .write_all(b"HTTP/1.1 200\r\nContent-Length: 5\r\n\r\nhello")
            .await
            .unwrap();
        head
    });
    let mut client = Client::handshake(client_io, "romeo@example.com/pcp".into())
        .await
        .unwrap();
    let path = request_path(
        "/temporary/6cf87e0e88fce56858176902d749b0e0/",
        "foo bar+ü%.txt",
    );
    let mut resp = timeout(LIMIT, client.get(&path)).await.unwrap().unwrap();
    assert_eq!(resp.content_length(), Some(5));
    assert_eq!(resp.chunk().await.unwrap().unwrap(), "hello");
    assert!(resp.chunk().await.unwrap().is_none());
    let head = fake.await.unwrap();
    let expected = format!(
        "GET /temporary/6cf87e0e88fce56858176902d749b0e0/foo%20bar%2B%C3%BC%25.txt HTTP/1.1\r\n\
         Host: romeo@example.com/pcp:0\r\n\
         Content-Length: 0\r\n\
         User-Agent: {USER_AGENT_VALUE}\r\n\
         Connection: Keep-Alive\r\n\r\n"
    );
    assert_eq!(String::from_utf8(head).unwrap(), expected);
    assert!(USER_AGENT_VALUE.starts_with("gshare/"));
}

#[tokio::test]
async fn client_parses_libjingle_responses_on_one_connection() {
    let (client_io, mut server_io) = duplex(64 * 1024);
    let fake = tokio::spawn(async move {
        let mut paths = Vec::new();
        let responses: [&[u8]; 4] = [
            // libjingle: no reason phrase, Content-Length.
            b"HTTP/1.1 200\r\nConnection: Keep-Alive\r\nContent-Type: application/octet-stream\r\nContent-Length: 11\r\n\r\nhello world",
            // libjingle folder: chunked tar.
            b"HTTP/1.1 200\r\nConnection: Keep-Alive\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\na\r\n0123456789\r\n0\r\n\r\n",
            // Unknown item.
            b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n",
            // The connection is still usable after the 404.
            b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
        ];
        for response in responses {
            let head = read_head(&mut server_io).await;
            let line = head.split(|&b| b == b'\r').next().unwrap().to_vec();
            paths.push(String::from_utf8(line).unwrap());
            server_io.write_all(response).await.unwrap();
        }
        paths
    });
    let mut client = Client::handshake(client_io, "romeo@example.com/pcp".into())
        .await
        .unwrap();

    let mut r = client.get("/temporary/x/a").await.unwrap();
    assert_eq!((r.content_length(), r.is_chunked()), (Some(11), false));
    assert_eq!(r.content_type(), Some("application/octet-stream"));
    let mut body = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        body.extend_from_slice(&c);
    }
    assert_eq!(body, b"hello world");

    let mut r = client.get("/temporary/x/b").await.unwrap();
    assert_eq!((r.content_length(), r.is_chunked()), (None, true));
    assert_eq!(r.content_type(), Some("application/x-tar"));
    let mut body = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        body.extend_from_slice(&c);
    }
    assert_eq!(body, b"abcd0123456789");
    assert_eq!(r.received(), 14);

    assert!(matches!(
        client.get("/temporary/x/c").await,
        Err(ClientError::NotFound)
    ));

    let mut r = client.get("/temporary/x/d").await.unwrap();
    assert!(r.chunk().await.unwrap().is_none());

    let paths = timeout(LIMIT, fake).await.unwrap().unwrap();
    assert_eq!(
        paths,
        [
            "GET /temporary/x/a HTTP/1.1",
            "GET /temporary/x/b HTTP/1.1",
            "GET /temporary/x/c HTTP/1.1",
            "GET /temporary/x/d HTTP/1.1"
        ]
    );
}

#[tokio::test]
async fn client_reports_other_statuses_and_closed_connections() {
    let (client_io, mut server_io) = duplex(64 * 1024);
    let fake = tokio::spawn(async move {
        read_head(&mut server_io).await;
        server_io
            .write_all(b"HTTP/1.1 500\r\nContent-Length: 4\r\n\r\noops")
            .await
            .unwrap();
        read_head(&mut server_io).await;
        server_io
            .write_all(b"HTTP/1.1 200\r\nConnection: Close\r\nContent-Length: 2\r\n\r\nok")
            .await
            .unwrap();
        // Keep the stream open: PseudoTCP has no FIN, hyper must still stop reusing it.
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    let mut client = Client::handshake(client_io, "a@b/c".into()).await.unwrap();
    assert!(matches!(
        client.get("/t/x").await,
        Err(ClientError::Status(500))
    ));
    let mut r = client.get("/t/y").await.unwrap();
    assert_eq!(r.chunk().await.unwrap().unwrap(), "ok");
    assert!(r.chunk().await.unwrap().is_none());
    drop(r);
    assert!(matches!(client.get("/t/z").await, Err(ClientError::Closed)));
    assert!(client.is_closed());
    assert!(matches!(
        client.get("no-slash").await,
        Err(ClientError::InvalidPath(_))
    ));
    fake.await.unwrap();
}

#[tokio::test]
async fn server_answers_gabble_and_libjingle_requests_exactly() {
    let (_dir, catalog) = fixture(&[("foo bar.txt", b"hello"), ("café", b"\xffbin"), ("e", b"")]);
    let (mut io, mut events, _task) = start_server(catalog);

    // gabble: g_uri_escape_string, uppercase hex.
    io.write_all(&gab_request(b"/temporary/abc/foo%20bar.txt"))
        .await
        .unwrap();
    let head = read_head(&mut io).await;
    assert_eq!(
        String::from_utf8(head).unwrap(),
        format!("{OK_FILE_HEAD}Content-Length: 5\r\n\r\n")
    );
    assert_eq!(read_exact_vec(&mut io, 5).await, b"hello");

    // libjingle: url_encode leaves UTF-8 raw; its decoder maps '+' to space.
    io.write_all(&gab_request(b"/temporary/abc/caf\xc3\xa9"))
        .await
        .unwrap();
    let head = read_head(&mut io).await;
    assert_eq!(
        String::from_utf8(head).unwrap(),
        format!("{OK_FILE_HEAD}Content-Length: 4\r\n\r\n")
    );
    assert_eq!(read_exact_vec(&mut io, 4).await, b"\xffbin");
    io.write_all(&gab_request(b"/temporary/abc/foo+bar.txt?x=1"))
        .await
        .unwrap();
    read_head(&mut io).await;
    assert_eq!(read_exact_vec(&mut io, 5).await, b"hello");

    // Empty file.
    io.write_all(&gab_request(b"/temporary/abc/e"))
        .await
        .unwrap();
    let head = read_head(&mut io).await;
    assert_eq!(
        String::from_utf8(head).unwrap(),
        format!("{OK_FILE_HEAD}Content-Length: 0\r\n\r\n")
    );

    // Unknown name.
    io.write_all(&gab_request(b"/temporary/abc/nope"))
        .await
        .unwrap();
    assert_eq!(read_head(&mut io).await, NOT_FOUND);

    // A request that is not keep-alive is answered "Close" and the connection ends.
    io.write_all(
        b"GET /temporary/abc/foo%20bar.txt HTTP/1.1\r\nConnection: close\r\nHost: x:0\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut io).await;
    assert_eq!(
        String::from_utf8(head).unwrap(),
        "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Type: application/octet-stream\r\nContent-Length: 5\r\n\r\n"
    );
    assert_eq!(read_exact_vec(&mut io, 5).await, b"hello");
    let mut rest = Vec::new();
    timeout(LIMIT, io.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());

    let mut seen = Vec::new();
    while let Ok(ev) = events.try_recv() {
        seen.push(ev);
    }
    let served: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            ServeEvent::Served { item, bytes } => Some((*item, *bytes)),
            _ => None,
        })
        .collect();
    assert_eq!(served, [(0, 5), (1, 4), (0, 5), (2, 0), (0, 5)]);
    assert!(seen.contains(&ServeEvent::Progress { item: 1, bytes: 4 }));
    assert!(seen.contains(&ServeEvent::NotFound {
        request: "GET /temporary/abc/nope".into()
    }));
}

#[tokio::test]
async fn three_items_with_awkward_names_on_one_connection() {
    let names = [
        "two  spaces & more.txt",
        "ünïcödé 文件 +plus+.bin",
        "100% (final)+.tar.gz",
    ];
    let data: Vec<Vec<u8>> = (0..3u8)
        .map(|i| (0..70_000u32).map(|j| (j as u8) ^ i).collect())
        .collect();
    let files: Vec<(&str, &[u8])> = names
        .iter()
        .copied()
        .zip(data.iter().map(|d| d.as_slice()))
        .collect();
    let (_dir, catalog) = fixture(&files);
    let (io, mut events, _task) = start_server(catalog.clone());
    let mut client = Client::handshake(io, "romeo@example.com/pcp".into())
        .await
        .unwrap();
    for (i, name) in names.iter().enumerate() {
        let path = request_path(catalog.source_path(), name);
        assert!(
            !path[catalog.source_path().len()..].contains(['/', ' ', '+']),
            "{path}"
        );
        let mut resp = timeout(LIMIT, client.get(&path)).await.unwrap().unwrap();
        assert_eq!(resp.content_length(), Some(70_000));
        let mut body = Vec::new();
        while let Some(c) = resp.chunk().await.unwrap() {
            body.extend_from_slice(&c);
        }
        assert_eq!(body, data[i], "{name}");
    }
    // A 404 does not break the connection either.
    let missing = request_path(catalog.source_path(), "missing");
    assert!(matches!(
        client.get(&missing).await,
        Err(ClientError::NotFound)
    ));
    let mut resp = client
        .get(&request_path(catalog.source_path(), names[0]))
        .await
        .unwrap();
    while resp.chunk().await.unwrap().is_some() {}

    let mut served = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if let ServeEvent::Served { item, bytes } = ev {
            served.push((item, bytes));
        }
    }
    assert_eq!(served, [(0, 70_000), (1, 70_000), (2, 70_000), (0, 70_000)]);
}

#[tokio::test]
async fn traversal_and_other_bad_requests_get_404() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), b"TOP SECRET").unwrap();
    std::fs::create_dir(dir.path().join("served")).unwrap();
    let file = dir.path().join("served/file.txt");
    std::fs::write(&file, b"public").unwrap();
    let mut catalog = Catalog::new("/temporary/abc/");
    catalog.push_file("file.txt", &file, 6);
    let (mut io, _events, _task) = start_server(Arc::new(catalog));

    let secret = dir.path().join("secret.txt");
    let absolute = format!("/temporary/abc/{}", escape_name(secret.to_str().unwrap()));
    let attempts: Vec<Vec<u8>> = vec![
        b"/temporary/abc/../secret.txt".to_vec(),
        b"/temporary/abc/..%2Fsecret.txt".to_vec(),
        b"/temporary/abc/%2e%2e%2fsecret.txt".to_vec(),
        b"/temporary/abc/%2E%2E/secret.txt".to_vec(),
        b"/temporary/abc/%2e%2e".to_vec(),
        b"/temporary/abc/..".to_vec(),
        b"/temporary/abc/.".to_vec(),
        b"/temporary/abc/".to_vec(),
        b"/temporary/abc/file.txt/".to_vec(),
        b"/temporary/abc/served%2Ffile.txt".to_vec(),
        b"/temporary/abc//etc/passwd".to_vec(),
        b"/temporary/abc/%2Fetc%2Fpasswd".to_vec(),
        absolute.into_bytes(),
        b"/etc/passwd".to_vec(),
        b"/file.txt".to_vec(),
        b"/temporary/preview/file.txt?width=10&height=10".to_vec(),
        b"/temporary/ABC/file.txt".to_vec(),
        b"/temporary/abc/file.txt%00".to_vec(),
        b"/temporary/abc/file%zz.txt".to_vec(),
        b"http://example.com/temporary/abc/file.txt".to_vec(),
    ];
    for target in &attempts {
        io.write_all(&gab_request(target)).await.unwrap();
        let head = timeout(LIMIT, read_head(&mut io)).await.unwrap();
        assert_eq!(head, NOT_FOUND, "{}", String::from_utf8_lossy(target));
    }
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let req = format!(
            "{method} /temporary/abc/file.txt HTTP/1.1\r\nHost: x:0\r\nContent-Length: 0\r\n\r\n"
        );
        io.write_all(req.as_bytes()).await.unwrap();
        assert_eq!(read_head(&mut io).await, NOT_FOUND, "{method}");
    }
    io.write_all(b"HEAD /temporary/abc/file.txt HTTP/1.1\r\nHost: x:0\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_head(&mut io).await, NOT_FOUND);
    // Still the same connection, and the real item is served.
    io.write_all(&gab_request(b"/temporary/abc/file.txt"))
        .await
        .unwrap();
    let head = read_head(&mut io).await;
    assert_eq!(
        String::from_utf8(head).unwrap(),
        format!("{OK_FILE_HEAD}Content-Length: 6\r\n\r\n")
    );
    assert_eq!(read_exact_vec(&mut io, 6).await, b"public");
}

#[tokio::test]
async fn oversized_request_head_is_refused() {
    let (_dir, catalog) = fixture(&[("f", b"x")]);
    let (mut io, _events, task) = start_server(catalog);
    let big = format!(
        "GET /temporary/abc/f HTTP/1.1\r\nX-Junk: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    // The server may stop reading part-way; ignore write errors.
    let _ = io.write_all(big.as_bytes()).await;
    let mut resp = Vec::new();
    let _ = timeout(LIMIT, io.read_to_end(&mut resp)).await.unwrap();
    assert!(
        resp.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    timeout(LIMIT, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn file_shorter_than_announced_aborts_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, vec![7u8; 1000]).unwrap();
    let mut catalog = Catalog::new("/temporary/abc/");
    catalog.push_file("f", &path, 5000); // announced bigger than it is now
    let (io, mut events, _task) = start_server(Arc::new(catalog));
    let mut client = Client::handshake(io, "a@b/c".into()).await.unwrap();
    let mut resp = client.get("/temporary/abc/f").await.unwrap();
    assert_eq!(resp.content_length(), Some(5000));
    let mut got = 0;
    let err = loop {
        match timeout(LIMIT, resp.chunk()).await.unwrap() {
            Ok(Some(c)) => got += c.len(),
            Ok(None) => panic!("body must not end cleanly"),
            Err(e) => break e,
        }
    };
    assert!(got <= 1000);
    assert!(matches!(err, ClientError::Http(_)), "{err}");
    let mut failed = false;
    while let Some(ev) = timeout(LIMIT, events.recv()).await.unwrap() {
        assert!(!matches!(ev, ServeEvent::Served { .. }));
        if matches!(ev, ServeEvent::Failed { item: 0, .. }) {
            failed = true;
            break;
        }
    }
    assert!(failed);
}

#[tokio::test]
async fn folder_is_a_chunked_tar_in_libjingle_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("on-disk name");
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::write(root.join("a.txt"), b"alpha").unwrap();
    std::fs::write(root.join("sub/empty"), b"").unwrap();
    std::fs::write(root.join("sub/deeper/z.bin"), vec![9u8; 1500]).unwrap();
    let mut catalog = Catalog::new("/temporary/abc/");
    catalog.push_folder("stuff", &root);
    let (mut io, mut events, _task) = start_server(Arc::new(catalog));

    io.write_all(&gab_request(b"/temporary/abc/stuff"))
        .await
        .unwrap();
    let head = read_head(&mut io).await;
    assert_eq!(
        String::from_utf8(head).unwrap(),
        "HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let body = timeout(LIMIT, read_chunked(&mut io)).await.unwrap();
    assert_eq!(body.len() % 512, 0);
    let mut archive = tar::Archive::new(body.as_slice());
    let entries: Vec<(String, tar::EntryType, u64)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().to_str().unwrap().to_owned(),
                h.entry_type(),
                h.size().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("stuff/".to_owned(), tar::EntryType::Directory, 0),
            ("stuff/a.txt".to_owned(), tar::EntryType::Regular, 5),
            ("stuff/sub/".to_owned(), tar::EntryType::Directory, 0),
            ("stuff/sub/deeper/".to_owned(), tar::EntryType::Directory, 0),
            (
                "stuff/sub/deeper/z.bin".to_owned(),
                tar::EntryType::Regular,
                1500
            ),
            ("stuff/sub/empty".to_owned(), tar::EntryType::Regular, 0),
        ]
    );
    // libjingle tells folders by the trailing slash of the raw name field.
    assert_eq!(&body[..7], b"stuff/\0");

    // Keep-alive holds after a chunked body.
    io.write_all(&gab_request(b"/temporary/abc/nope"))
        .await
        .unwrap();
    assert_eq!(read_head(&mut io).await, NOT_FOUND);

    let mut served = None;
    while let Ok(ev) = events.try_recv() {
        if let ServeEvent::Served { item, bytes } = ev {
            served = Some((item, bytes));
        }
    }
    assert_eq!(served, Some((0, 1505)));
}

#[tokio::test]
async fn receiver_leaving_mid_body_is_reported_as_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    std::fs::write(&path, vec![1u8; 8 * 1024 * 1024]).unwrap();
    let mut catalog = Catalog::new("/temporary/abc/");
    catalog.push_file("big", &path, 8 * 1024 * 1024);
    let (io, mut events, task) = start_server(Arc::new(catalog));
    let mut client = Client::handshake(io, "a@b/c".into()).await.unwrap();
    let mut resp = client.get("/temporary/abc/big").await.unwrap();
    assert!(resp.chunk().await.unwrap().is_some());
    drop(resp);
    drop(client);
    let mut outcome = None;
    while let Some(ev) = timeout(LIMIT, events.recv()).await.unwrap() {
        match ev {
            ServeEvent::Served { .. } => outcome = Some("served"),
            ServeEvent::Failed { item: 0, .. } => outcome = Some("failed"),
            _ => {}
        }
    }
    assert_eq!(outcome, Some("failed"));
    timeout(LIMIT, task).await.unwrap().unwrap();
}
