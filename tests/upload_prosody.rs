//! The upload method below the job layer against the tests' own Prosody with
//! `mod_http_file_share` on loopback HTTPS: discovery, slots, PUT and GET with
//! size and hash checks, the server's refusals, faults (PUT cut mid-way,
//! downloads cut short or lying about their size, served by a small HTTPS
//! server of the test's own), the URL rules, and go-sendxmpp as an
//! independent uploader.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/prosody.rs"]
mod prosody;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gshare::upload::https::sha256_of;
use gshare::upload::{
    Announcement, DownloadError, DownloadLimits, HttpsClient, LocalFile, RefusalKind, UploadError,
    UploadService, Uploader, UrlError, discover, parse_announcement, request_slot,
};
use gshare::xmpp::{Account, ConnectOptions, Incoming, Xmpp};
use prosody::{Options, Prosody, Upload};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const MIB: u64 = 1 << 20;

fn account(p: &Prosody, user: &str, pw: &str) -> Account {
    Account {
        jid: Prosody::jid(user).parse().unwrap(),
        password: pw.into(),
        resource: None,
        server: Some(p.server()),
        ca_file: Some(p.cert()),
    }
}

async fn login(p: &Prosody, user: &str, pw: &str) -> (Xmpp, mpsc::Receiver<Incoming>) {
    Xmpp::connect(&account(p, user, pw), ConnectOptions::default())
        .await
        .expect("login")
}

// Field by field: other helpers add their own server options to `Options`.
#[allow(clippy::field_reassign_with_default)]
fn upload_server(accounts: &[(&str, &str)], up: Upload) -> Prosody {
    let mut options = Options::default();
    options.upload = Some(up);
    options.offline = true;
    Prosody::start_with(accounts, options)
}

/// Deterministic, not repeating with a short period (a shifted chunk shows).
fn pattern(len: u64) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

async fn upload_bytes(
    p: &Prosody,
    xmpp: &Xmpp,
    client: &HttpsClient,
    dir: &Path,
    name: &str,
    data: &[u8],
) -> Result<(String, Vec<u64>), UploadError> {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    let service = discover(xmpp).await?;
    assert_eq!(
        service.jid.to_string(),
        format!("upload.{}", prosody::DOMAIN)
    );
    let size = data.len() as u64;
    let slot = request_slot(xmpp, &service, name, size, "application/octet-stream").await?;
    let _ = p;
    let mut seen = Vec::new();
    client
        .put_file(
            &slot,
            prosody::DOMAIN,
            &LocalFile {
                path: &path,
                name,
                size,
                content_type: "application/octet-stream",
            },
            &mut |n| seen.push(n),
        )
        .await?;
    Ok((slot.get_url, seen))
}

#[tokio::test]
async fn discovery_finds_the_service_and_its_limit() {
    let p = upload_server(
        &[("romeo", "r0meo")],
        Upload {
            size_limit: 3 * MIB,
            ..Default::default()
        },
    );
    let (xmpp, _rx) = login(&p, "romeo", "r0meo").await;
    let s = discover(&xmpp).await.unwrap();
    assert_eq!(s.jid.to_string(), "upload.localhost");
    assert_eq!(s.max_file_size, Some(3 * MIB));
    xmpp.close().await;

    // A server without the component: a clear error, no guessing.
    let plain = Prosody::start(&[("romeo", "r0meo")]);
    let (xmpp, _rx) = login(&plain, "romeo", "r0meo").await;
    let err = discover(&xmpp).await.unwrap_err();
    assert!(matches!(err, UploadError::NoService { .. }), "{err}");
    assert!(
        err.to_string().contains("offers no HTTP file upload"),
        "{err}"
    );
    xmpp.close().await;
}

#[tokio::test]
async fn upload_and_download_0_1_and_3_mib_bytes_intact() {
    let p = upload_server(&[("romeo", "r0meo")], Upload::default());
    let (xmpp, _rx) = login(&p, "romeo", "r0meo").await;
    let client = HttpsClient::new(Some(&p.cert())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in [
        ("empty.bin", 0u64),
        ("one.bin", 1),
        ("three mib é.bin", 3 * MIB + 7),
    ] {
        let data = pattern(len);
        let (url, progress) = upload_bytes(&p, &xmpp, &client, dir.path(), name, &data)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", p.log_tail()));
        assert!(url.starts_with(&format!("https://localhost:{}/", p.https_port.unwrap())));
        assert_eq!(progress.last().copied().unwrap_or(0), len, "{name}");
        assert!(progress.windows(2).all(|w| w[0] < w[1]), "{name}");
        let (sha, _) = sha256_of(&data[..]).await.unwrap();
        let mut out = Vec::new();
        let mut calls = 0;
        let got = client
            .download(
                &url,
                prosody::DOMAIN,
                DownloadLimits {
                    expected_size: Some(len),
                    sha256: Some(sha),
                    max_size: 64 * MIB,
                },
                &mut out,
                &mut |_, total| {
                    calls += 1;
                    assert_eq!(total, Some(len));
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(calls >= 1);
        assert_eq!(got.size, len);
        assert_eq!(got.sha256, sha);
        assert!(out == data, "{name}: downloaded bytes differ");
    }
    xmpp.close().await;
}

#[tokio::test]
async fn too_large_is_refused_before_any_byte_moves() {
    let p = upload_server(
        &[("romeo", "r0meo")],
        Upload {
            size_limit: MIB,
            ..Default::default()
        },
    );
    let (xmpp, _rx) = login(&p, "romeo", "r0meo").await;
    let service = discover(&xmpp).await.unwrap();
    // Our own check, from the announced max-file-size: no IQ, no PUT.
    let err = request_slot(
        &xmpp,
        &service,
        "big.bin",
        MIB + 1,
        "application/octet-stream",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, UploadError::TooLarge { size, max, .. } if size == MIB + 1 && max == MIB),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "big.bin is 1048577 bytes, but the upload service accepts at most 1048576 bytes"
    );
    // A service that announced no limit: the server's refusal, in its words.
    let unlimited = UploadService {
        jid: service.jid.clone(),
        max_file_size: None,
    };
    let err = request_slot(
        &xmpp,
        &unlimited,
        "big.bin",
        MIB + 1,
        "application/octet-stream",
    )
    .await
    .unwrap_err();
    match &err {
        UploadError::SlotRefused { kind, reason, .. } => {
            assert_eq!(*kind, RefusalKind::TooLarge);
            assert_eq!(reason, "File too large");
        }
        other => panic!("{other}"),
    }
    // The whole path through the Uploader: refused before hashing or PUT.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    std::fs::write(&path, pattern(MIB + 1)).unwrap();
    let uploader = Uploader::new(&xmpp, Some(&p.cert())).await.unwrap();
    let mut moved = 0;
    let err = uploader
        .upload(&path, "big.bin", MIB + 1, &mut |n| moved = n)
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::TooLarge { .. }), "{err}");
    assert_eq!(moved, 0);
    assert!(
        !std::fs::read_to_string(p.dir().join("prosody.log"))
            .unwrap()
            .contains("Issuing upload slot"),
        "a slot was issued"
    );
    xmpp.close().await;
}

#[tokio::test]
async fn daily_quota_refusal_is_reported() {
    let p = upload_server(
        &[("romeo", "r0meo")],
        Upload {
            size_limit: MIB,
            daily_quota: MIB + MIB / 2,
        },
    );
    let (xmpp, _rx) = login(&p, "romeo", "r0meo").await;
    let client = HttpsClient::new(Some(&p.cert())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    upload_bytes(&p, &xmpp, &client, dir.path(), "a.bin", &pattern(MIB))
        .await
        .unwrap();
    let service = discover(&xmpp).await.unwrap();
    let err = request_slot(&xmpp, &service, "b.bin", MIB, "application/octet-stream")
        .await
        .unwrap_err();
    match &err {
        UploadError::SlotRefused { kind, reason, .. } => {
            assert_eq!(*kind, RefusalKind::Quota);
            assert_eq!(reason, "Daily quota reached");
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        err.to_string(),
        "the upload service refused to take b.bin: Daily quota reached"
    );
    xmpp.close().await;
}

#[tokio::test]
async fn put_failing_mid_way_is_an_error_with_the_byte_count() {
    let mut p = upload_server(&[("romeo", "r0meo")], Upload::default());
    let (xmpp, _rx) = login(&p, "romeo", "r0meo").await;
    let client = HttpsClient::new(Some(&p.cert())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let size = 48 * MIB;
    let path = dir.path().join("big.bin");
    std::fs::write(&path, pattern(size)).unwrap();
    let service = discover(&xmpp).await.unwrap();
    let slot = request_slot(&xmpp, &service, "big.bin", size, "application/octet-stream")
        .await
        .unwrap();
    let mut killed = false;
    let err = client
        .put_file(
            &slot,
            prosody::DOMAIN,
            &LocalFile {
                path: &path,
                name: "big.bin",
                size,
                content_type: "application/octet-stream",
            },
            &mut |n| {
                if n >= 2 * MIB && !killed {
                    killed = true;
                    p.kill();
                }
            },
        )
        .await
        .unwrap_err();
    assert!(killed);
    match &err {
        UploadError::PutFailed { sent, size: s, .. } => {
            assert!(*sent >= 2 * MIB && *sent < *s, "{err}");
        }
        other => panic!("expected PutFailed, got: {other}"),
    }
    assert!(
        err.to_string()
            .starts_with("the upload of big.bin failed after "),
        "{err}"
    );
}

#[tokio::test]
async fn announcement_reaches_an_offline_account_and_its_link_works() {
    let p = upload_server(
        &[("romeo", "r0meo"), ("juliet", "jul1et")],
        Upload::default(),
    );
    let (romeo, _rx) = login(&p, "romeo", "r0meo").await;
    let client = HttpsClient::new(Some(&p.cert())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(200_000);
    let path = dir.path().join("note.txt");
    std::fs::write(&path, &data).unwrap();
    let uploader = Uploader::new(&romeo, Some(&p.cert())).await.unwrap();
    let mut last = 0;
    let sent = uploader
        .upload(&path, "note.txt", data.len() as u64, &mut |n| last = n)
        .await
        .unwrap();
    assert_eq!(last, data.len() as u64);
    let (sha, _) = sha256_of(&data[..]).await.unwrap();
    assert_eq!(sent.sha256, Some(sha));
    assert_eq!(sent.size, Some(data.len() as u64));
    assert_eq!(sent.name.as_deref(), Some("note.txt"));
    uploader
        .announce(&"juliet@localhost".parse().unwrap(), &sent)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    romeo.close().await;

    // Juliet logs in later and gets the stored message.
    let (juliet, mut rx) = login(&p, "juliet", "jul1et").await;
    let got = next_announcement(&mut rx).await;
    assert_eq!(got.0.to_string(), "romeo@localhost");
    assert_eq!(got.1, sent);
    let mut out = Vec::new();
    client
        .download(
            &got.1.url,
            got.0.domain().as_str(),
            DownloadLimits {
                expected_size: got.1.size,
                sha256: got.1.sha256,
                max_size: MIB,
            },
            &mut out,
            &mut |_, _| {},
        )
        .await
        .unwrap();
    assert!(out == data);
    juliet.close().await;
}

async fn next_announcement(
    rx: &mut mpsc::Receiver<Incoming>,
) -> (tokio_xmpp::parsers::jid::BareJid, Announcement) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let inc = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("no announcement within 30 s")
            .expect("XMPP task ended");
        if let Incoming::Message(m) = inc
            && let Some(a) = parse_announcement(&m)
        {
            return (m.from.clone().unwrap().to_bare(), a);
        }
    }
}

/// What the test's own HTTPS server answers to one GET.
struct Fake {
    head: String,
    body: Vec<u8>,
}

/// An HTTPS server on 127.0.0.1 with the Prosody certificate (so that
/// `https://localhost:PORT/` is trusted), answering each connection with the
/// next canned response and then closing. Returns the port and a connection
/// counter.
async fn fake_https(p: &Prosody, answers: Vec<Fake>) -> (u16, Arc<AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(p.cert())
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(p.key()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        for fake in answers {
            let (tcp, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tls.read(&mut buf).await.unwrap();
                assert!(n > 0);
                req.extend_from_slice(&buf[..n]);
            }
            tls.write_all(fake.head.as_bytes()).await.unwrap();
            let _ = tls.write_all(&fake.body).await;
            let _ = tls.shutdown().await;
        }
    });
    (port, count)
}

fn limits(expected: Option<u64>, sha: Option<[u8; 32]>, max: u64) -> DownloadLimits {
    DownloadLimits {
        expected_size: expected,
        sha256: sha,
        max_size: max,
    }
}

#[tokio::test]
async fn downloads_cut_short_or_lying_about_their_size_fail() {
    let p = Prosody::start(&[]);
    let body = pattern(1000);
    let (right_sha, _) = sha256_of(&body[..]).await.unwrap();
    let ok_head = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_string();
    let (port, count) = fake_https(
        &p,
        vec![
            // 1: cut short after 500 of 1000 bytes.
            Fake {
                head: ok_head.clone(),
                body: body[..500].to_vec(),
            },
            // 2: announced 1000, served 2000.
            Fake {
                head: "HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n".into(),
                body: pattern(2000),
            },
            // 3: no length, read to the end: more than the announced 1000.
            Fake {
                head: "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".into(),
                body: pattern(3000),
            },
            // 4: right size, wrong content.
            Fake {
                head: ok_head.clone(),
                body: vec![0u8; 1000],
            },
            // 5: not found.
            Fake {
                head: "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
                body: Vec::new(),
            },
            // 6: all good.
            Fake {
                head: ok_head,
                body: body.clone(),
            },
        ],
    )
    .await;
    let client = HttpsClient::new(Some(&p.cert())).unwrap();
    let url = format!("https://localhost:{port}/f/file.bin");
    let run = async |lim: DownloadLimits| {
        let mut out = Vec::new();
        let r = client
            .download(&url, "localhost", lim, &mut out, &mut |_, _| {})
            .await;
        (r, out)
    };
    let (r, _) = run(limits(Some(1000), None, MIB)).await;
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            DownloadError::Short {
                got: 500,
                expected: 1000,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("the download stopped after 500 of 1000 bytes"),
        "{e}"
    );
    let (r, out) = run(limits(Some(1000), None, MIB)).await;
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            DownloadError::SizeMismatch {
                announced: 1000,
                served: 2000
            }
        ),
        "{e}"
    );
    assert!(out.is_empty(), "nothing is written for a size lie");
    let (r, out) = run(limits(Some(1000), None, MIB)).await;
    let e = r.unwrap_err();
    assert!(matches!(e, DownloadError::Overlong { limit: 1000 }), "{e}");
    assert!(out.len() <= 1000);
    let (r, _) = run(limits(Some(1000), Some(right_sha), MIB)).await;
    let e = r.unwrap_err();
    assert!(matches!(e, DownloadError::HashMismatch), "{e}");
    let (r, _) = run(limits(None, None, MIB)).await;
    let e = r.unwrap_err();
    assert!(
        matches!(e, DownloadError::Status { status: 404, .. }),
        "{e}"
    );
    let (r, out) = run(limits(Some(1000), Some(right_sha), MIB)).await;
    r.unwrap();
    assert!(out == body);
    assert_eq!(count.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn a_strangers_link_to_loopback_is_refused_without_connecting() {
    let p = Prosody::start(&[]);
    let (port, count) = fake_https(
        &p,
        vec![Fake {
            head: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n".into(),
            body: vec![1],
        }],
    )
    .await;
    let client = HttpsClient::new(Some(&p.cert())).unwrap();
    let lim = limits(None, None, MIB);
    let mut out = Vec::new();
    // Announced by someone on example.org, pointing at our loopback.
    for url in [
        format!("https://localhost:{port}/f"),
        format!("https://127.0.0.1:{port}/f"),
        format!("https://[::1]:{port}/f"),
    ] {
        let e = client
            .download(&url, "example.org", lim, &mut out, &mut |_, _| {})
            .await
            .unwrap_err();
        assert!(
            matches!(e, DownloadError::Url(UrlError::PrivateAddress { .. })),
            "{url}: {e}"
        );
        assert!(e.to_string().contains("loopback"), "{e}");
    }
    // Plain http is never fetched, whoever sends it.
    let e = client
        .download(
            &format!("http://localhost:{port}/f"),
            "localhost",
            lim,
            &mut out,
            &mut |_, _| {},
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, DownloadError::Url(UrlError::NotHttps { .. })),
        "{e}"
    );
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "a refused link was connected to"
    );
    assert!(out.is_empty());
}

#[tokio::test]
async fn a_file_uploaded_by_go_sendxmpp_is_parsed_and_downloaded_intact() {
    let p = upload_server(
        &[("mercutio", "m3rcut1o"), ("juliet", "jul1et")],
        Upload::default(),
    );
    let (juliet, mut rx) = login(&p, "juliet", "jul1et").await;
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(5 * MIB + 3);
    let path = dir.path().join("from go.bin");
    std::fs::write(&path, &data).unwrap();
    let out = tokio::process::Command::new("go-sendxmpp")
        .env("SSL_CERT_FILE", p.cert())
        .env("HOME", dir.path())
        .args(["-u", "mercutio@localhost", "-p", "m3rcut1o", "-j"])
        .arg(p.server())
        .arg("--http-upload")
        .arg(&path)
        .arg("juliet@localhost")
        .output()
        .await
        .expect("go-sendxmpp is not installed: run scripts/install-deps");
    assert!(
        out.status.success(),
        "go-sendxmpp failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (from, a) = next_announcement(&mut rx).await;
    assert_eq!(from.to_string(), "mercutio@localhost");
    assert!(a.url.starts_with("https://localhost:"), "{}", a.url);
    // go-sendxmpp 0.5.6 turns spaces in the file name into underscores.
    assert_eq!(a.suggested_name(), "from_go.bin");
    let client = HttpsClient::new(Some(&p.cert())).unwrap();
    let mut got = Vec::new();
    let done = client
        .download(
            &a.url,
            from.domain().as_str(),
            limits(a.size, a.sha256, 64 * MIB),
            &mut got,
            &mut |_, _| {},
        )
        .await
        .unwrap();
    assert_eq!(done.size, data.len() as u64);
    assert!(got == data, "the downloaded bytes differ");
    juliet.close().await;
}

/// gshare's announcement as an independent client sees it: go-sendxmpp,
/// logging in after the message was stored offline, prints the body (the
/// URL), and curl fetches that URL intact.
#[tokio::test]
async fn an_offline_recipient_using_go_sendxmpp_gets_a_link_curl_can_fetch() {
    let p = upload_server(
        &[("romeo", "r0meo"), ("juliet", "jul1et")],
        Upload::default(),
    );
    let (romeo, _rx) = login(&p, "romeo", "r0meo").await;
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(MIB + 11);
    let path = dir.path().join("for juliet.bin");
    std::fs::write(&path, &data).unwrap();
    let uploader = Uploader::new(&romeo, Some(&p.cert())).await.unwrap();
    let a = uploader
        .upload(&path, "for juliet.bin", data.len() as u64, &mut |_| {})
        .await
        .unwrap();
    uploader
        .announce(&"juliet@localhost".parse().unwrap(), &a)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    romeo.close().await;

    let mut listener = tokio::process::Command::new("go-sendxmpp")
        .env("SSL_CERT_FILE", p.cert())
        .env("HOME", dir.path())
        .args(["-u", "juliet@localhost", "-p", "jul1et", "-j"])
        .arg(p.server())
        .arg("-l")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("go-sendxmpp is not installed: run scripts/install-deps");
    let mut lines = tokio::io::BufReader::new(listener.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let l = lines.next_line().await.unwrap().expect("go-sendxmpp ended");
            if l.contains("romeo@localhost") {
                return l;
            }
        }
    })
    .await
    .expect("go-sendxmpp printed no message from romeo within 30 s");
    listener.kill().await.unwrap();
    // `TIMESTAMP romeo@localhost: BODY`; the body is the URL alone.
    let (_, body) = line.split_once("romeo@localhost: ").unwrap();
    assert_eq!(body.trim(), a.url);
    let out = dir.path().join("fetched");
    let status = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--cacert"])
        .arg(p.cert())
        .arg("--output")
        .arg(&out)
        .arg(body.trim())
        .status()
        .await
        .expect("curl is not installed: run scripts/install-deps");
    assert!(status.success());
    assert!(
        std::fs::read(&out).unwrap() == data,
        "curl fetched other bytes"
    );
}
