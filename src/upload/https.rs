//! HTTPS PUT of a file and GET of a link: hyper's HTTP/1.1 client over
//! tokio-rustls, one connection per request, with the trust of the XMPP
//! stream (`crate::xmpp::tls_config`: system roots, `--ca-file`, pinning).
//!
//! Redirects are not followed (a link announces one place). Every wait on the
//! network is bounded by [`IO_TIMEOUT`].

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::debug;

use super::UploadError;
use super::service::Slot;
use super::target::{Target, UrlError, check_url, shown};
use crate::http::USER_AGENT_VALUE;

/// Longest wait for a connection, a TLS handshake, a response head or the next
/// chunk of a body, before the transfer is declared stalled.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Size of the chunks read from disk for a PUT.
const CHUNK: usize = 256 * 1024;

/// How much of an error response's body is read for the log.
const MAX_ERROR_BODY: usize = 4096;

/// What a download must satisfy. `expected_size` and `sha256` come from the
/// announcement; `max_size` is the receiver's own bound on disk use (the link
/// is peer-driven).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadLimits {
    pub expected_size: Option<u64>,
    pub sha256: Option<[u8; 32]>,
    pub max_size: u64,
}

/// A finished download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downloaded {
    pub size: u64,
    pub sha256: [u8; 32],
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{0}")]
    Url(#[from] UrlError),
    #[error("cannot connect to {host}: {reason}")]
    Connect { host: String, reason: String },
    #[error("the server answered HTTP {status} for {url}")]
    Status { url: String, status: u16 },
    #[error("the file is {size} bytes, more than the {limit} bytes this receiver accepts")]
    TooLarge { size: u64, limit: u64 },
    #[error("the file was announced as {announced} bytes but the server serves {served} bytes")]
    SizeMismatch { announced: u64, served: u64 },
    #[error("the download stopped after {got} of {expected} bytes{}", reason_suffix(.reason))]
    Short {
        got: u64,
        expected: u64,
        reason: Option<String>,
    },
    #[error("the server sent more than the {limit} bytes announced or allowed")]
    Overlong { limit: u64 },
    #[error("the download failed after {got} bytes: {reason}")]
    Broken { got: u64, reason: String },
    #[error("the file's SHA-256 does not match the announced one; it was not kept")]
    HashMismatch,
    #[error("cannot write the download: {0}")]
    Write(io::Error),
}

fn reason_suffix(r: &Option<String>) -> String {
    r.as_ref().map(|r| format!(": {r}")).unwrap_or_default()
}

/// A file on disk to PUT: `size` bytes of `path` are sent, under `name` in
/// messages, with `content_type` (the one given in the slot request).
#[derive(Debug, Clone, Copy)]
pub struct LocalFile<'a> {
    pub path: &'a Path,
    pub name: &'a str,
    pub size: u64,
    pub content_type: &'a str,
}

/// An HTTPS client with gshare's trust.
#[derive(Clone)]
pub struct HttpsClient {
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient").finish_non_exhaustive()
    }
}

type Sender<B> = hyper::client::conn::http1::SendRequest<B>;

impl HttpsClient {
    /// Trusts the system roots plus `ca_file` (as `--ca-file` for XMPP).
    pub fn new(ca_file: Option<&Path>) -> Result<Self, crate::xmpp::XmppError> {
        Ok(Self {
            tls: Arc::new(crate::xmpp::tls_config(ca_file)?),
        })
    }

    async fn tls(
        &self,
        target: &Target,
        addrs: Vec<SocketAddr>,
    ) -> Result<TlsStream<TcpStream>, String> {
        let mut last = String::from("no address");
        let mut tcp = None;
        for a in addrs {
            match tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(a)).await {
                Ok(Ok(s)) => {
                    tcp = Some(s);
                    break;
                }
                Ok(Err(e)) => last = format!("{a}: {e}"),
                Err(_) => last = format!("{a}: no answer within {IO_TIMEOUT:?}"),
            }
        }
        let tcp = tcp.ok_or(last)?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(target.host.clone()).map_err(|e| e.to_string())?;
        match tokio::time::timeout(
            IO_TIMEOUT,
            TlsConnector::from(self.tls.clone()).connect(name, tcp),
        )
        .await
        {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) if e.to_string().contains("certificate") => Err(format!(
                "{e}: the server's TLS certificate is not trusted \
                 (pass --ca-file with its certificate or CA to trust it)"
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no TLS handshake within {IO_TIMEOUT:?}")),
        }
    }

    /// Connects to one of `addrs` (already checked by [`Target::resolve`]).
    async fn connect<B>(&self, target: &Target, addrs: Vec<SocketAddr>) -> Result<Sender<B>, String>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let tls = self.tls(target, addrs).await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%e, "HTTPS connection ended with an error");
            }
        });
        Ok(send)
    }

    /// PUTs `size` bytes from `path` to the slot, calling `progress` with the
    /// bytes handed to the connection so far. `domain` is our account's
    /// server domain (the URL rules of [`super::target`]).
    pub async fn put_file(
        &self,
        slot: &Slot,
        domain: &str,
        file: &LocalFile<'_>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), UploadError> {
        let LocalFile {
            path,
            name,
            size,
            content_type,
        } = *file;
        let target = check_url(&slot.put_url, domain)?;
        let read_err = |e: io::Error| UploadError::Read {
            name: name.to_string(),
            reason: e.to_string(),
        };
        let addrs = target.resolve().await?;
        let mut file = tokio::fs::File::open(path).await.map_err(read_err)?;
        let (tx, rx) = futures::channel::mpsc::channel::<Bytes>(2);
        let body = StreamBody::new(rx.map(|b| Ok::<_, io::Error>(Frame::data(b))));
        let mut send = self
            .connect::<StreamBody<_>>(&target, addrs)
            .await
            .map_err(|reason| UploadError::Connect {
                host: target.host.clone(),
                reason,
            })?;
        let mut req = Request::builder()
            .method(Method::PUT)
            .uri(target.path_and_query.as_str())
            .header(HOST, host_header(&target))
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header(CONTENT_LENGTH, size)
            .header(CONTENT_TYPE, content_type);
        for (h, v) in &slot.put_headers {
            // parse_slot kept only values without line breaks; a value that is
            // still not a header value is dropped rather than sent garbled.
            if let Ok(v) = HeaderValue::from_str(v) {
                req = req.header(h.as_str(), v);
            }
        }
        let req = req.body(body).map_err(|e| UploadError::PutFailed {
            name: name.to_string(),
            sent: 0,
            size,
            reason: e.to_string(),
        })?;
        let sent = AtomicU64::new(0);
        let failed = |sent: &AtomicU64, reason: String| UploadError::PutFailed {
            name: name.to_string(),
            sent: sent.load(Ordering::Relaxed),
            size,
            reason,
        };
        let pump = async {
            let mut tx = tx;
            let mut buf = vec![0u8; CHUNK];
            let mut done = 0u64;
            while done < size {
                let want = usize::try_from((size - done).min(CHUNK as u64)).unwrap_or(CHUNK);
                let n = file.read(&mut buf[..want]).await.map_err(read_err)?;
                if n == 0 {
                    return Err(UploadError::Read {
                        name: name.to_string(),
                        reason: format!("the file ended after {done} of {size} bytes"),
                    });
                }
                match tokio::time::timeout(IO_TIMEOUT, tx.send(Bytes::copy_from_slice(&buf[..n])))
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Ok(()), // the connection ended: the response says why
                    Err(_) => {
                        return Err(failed(
                            &sent,
                            format!("the server took nothing for {IO_TIMEOUT:?}"),
                        ));
                    }
                }
                done += n as u64;
                sent.store(done, Ordering::Relaxed);
                progress(done);
            }
            Ok(())
        };
        let response =
            async { tokio::time::timeout(IO_TIMEOUT + IO_TIMEOUT, send.send_request(req)).await };
        tokio::pin!(pump, response);
        let mut pumped: Option<Result<(), UploadError>> = None;
        let response = loop {
            tokio::select! {
                r = &mut response => break r,
                p = &mut pump, if pumped.is_none() => {
                    p?;
                    pumped = Some(Ok(()));
                }
            }
        };
        let response = match response {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(failed(&sent, hyper_reason(&e))),
            Err(_) => return Err(failed(&sent, "the server did not answer in time".into())),
        };
        let status = response.status();
        if status == StatusCode::OK || status == StatusCode::CREATED {
            if pumped.is_none() {
                return Err(failed(
                    &sent,
                    "the server answered before the whole file was sent".into(),
                ));
            }
            Ok(())
        } else {
            let body = read_small(response.into_body()).await;
            debug!(%status, body = %String::from_utf8_lossy(&body), "PUT refused");
            Err(UploadError::PutRefused {
                name: name.to_string(),
                status: status.as_u16(),
            })
        }
    }

    /// Starts a GET of `url` (announced by an account on `sender_domain`):
    /// checks the URL rules, connects, and checks the response head (status,
    /// `Content-Length` against the announced size and the limit). The body
    /// is then pulled with [`Download::chunk`].
    pub async fn get(
        &self,
        url: &str,
        sender_domain: &str,
        limits: DownloadLimits,
    ) -> Result<Download, DownloadError> {
        let target = check_url(url, sender_domain)?;
        if let Some(size) = limits.expected_size
            && size > limits.max_size
        {
            return Err(DownloadError::TooLarge {
                size,
                limit: limits.max_size,
            });
        }
        let addrs = target.resolve().await?;
        let mut send = self
            .connect::<http_body_util::Empty<Bytes>>(&target, addrs)
            .await
            .map_err(|reason| DownloadError::Connect {
                host: target.host.clone(),
                reason,
            })?;
        let req = Request::builder()
            .method(Method::GET)
            .uri(target.path_and_query.as_str())
            .header(HOST, host_header(&target))
            .header(USER_AGENT, USER_AGENT_VALUE)
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| DownloadError::Connect {
                host: target.host.clone(),
                reason: e.to_string(),
            })?;
        let response = match tokio::time::timeout(IO_TIMEOUT, send.send_request(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Err(DownloadError::Broken {
                    got: 0,
                    reason: hyper_reason(&e),
                });
            }
            Err(_) => {
                return Err(DownloadError::Broken {
                    got: 0,
                    reason: format!("no answer within {IO_TIMEOUT:?}"),
                });
            }
        };
        if response.status() != StatusCode::OK {
            return Err(DownloadError::Status {
                url: shown(url),
                status: response.status().as_u16(),
            });
        }
        let served: Option<u64> = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        if let (Some(announced), Some(served)) = (limits.expected_size, served)
            && announced != served
        {
            return Err(DownloadError::SizeMismatch { announced, served });
        }
        if let Some(s) = served
            && s > limits.max_size
        {
            return Err(DownloadError::TooLarge {
                size: s,
                limit: limits.max_size,
            });
        }
        let expected = limits.expected_size.or(served);
        Ok(Download {
            body: response.into_body(),
            expected,
            limit: expected.unwrap_or(limits.max_size).min(limits.max_size),
            want_sha256: limits.sha256,
            got: 0,
            hasher: Sha256::new(),
            done: None,
        })
    }

    /// [`HttpsClient::get`] into `out`. `progress` gets the bytes written so
    /// far and the total once known.
    pub async fn download(
        &self,
        url: &str,
        sender_domain: &str,
        limits: DownloadLimits,
        out: &mut (dyn AsyncWrite + Unpin + Send),
        progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
    ) -> Result<Downloaded, DownloadError> {
        let mut d = self.get(url, sender_domain, limits).await?;
        progress(0, d.expected_size());
        while let Some(data) = d.chunk().await? {
            out.write_all(&data).await.map_err(DownloadError::Write)?;
            progress(d.received(), d.expected_size());
        }
        out.flush().await.map_err(DownloadError::Write)?;
        d.finished().ok_or(DownloadError::Broken {
            got: d.received(),
            reason: "the download did not end".into(),
        })
    }
}

/// A GET under way: the body, pulled chunk by chunk, each checked against
/// the size bound before it is handed out.
#[derive(Debug)]
pub struct Download {
    body: hyper::body::Incoming,
    /// The announced size, else the served `Content-Length`.
    expected: Option<u64>,
    /// No byte beyond this is handed out: the expected size, else the
    /// receiver's `max_size`.
    limit: u64,
    want_sha256: Option<[u8; 32]>,
    got: u64,
    hasher: Sha256,
    done: Option<Downloaded>,
}

impl Download {
    /// The size the file will have, when announced or served.
    pub fn expected_size(&self) -> Option<u64> {
        self.expected
    }

    /// Bytes handed out so far.
    pub fn received(&self) -> u64 {
        self.got
    }

    /// Size and SHA-256, once [`Download::chunk`] returned `None`.
    pub fn finished(&self) -> Option<Downloaded> {
        self.done
    }

    /// The next piece of the body. `Ok(None)` means the whole file is here,
    /// its size is the expected one and its hash the announced one; any
    /// `Err` means the bytes handed out so far must not be kept.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, DownloadError> {
        if self.done.is_some() {
            return Ok(None);
        }
        loop {
            let frame = match tokio::time::timeout(IO_TIMEOUT, self.body.frame()).await {
                Err(_) => {
                    return Err(short_or_broken(
                        self.got,
                        self.expected,
                        format!("nothing arrived for {IO_TIMEOUT:?}"),
                    ));
                }
                Ok(None) => return self.end().map(|()| None),
                Ok(Some(Err(e))) => {
                    return Err(short_or_broken(self.got, self.expected, hyper_reason(&e)));
                }
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            if data.is_empty() {
                continue;
            }
            if self.got + data.len() as u64 > self.limit {
                return Err(DownloadError::Overlong { limit: self.limit });
            }
            self.hasher.update(&data);
            self.got += data.len() as u64;
            return Ok(Some(data));
        }
    }

    fn end(&mut self) -> Result<(), DownloadError> {
        if let Some(e) = self.expected
            && self.got < e
        {
            return Err(DownloadError::Short {
                got: self.got,
                expected: e,
                reason: None,
            });
        }
        let sha256: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        if let Some(want) = self.want_sha256
            && want != sha256
        {
            return Err(DownloadError::HashMismatch);
        }
        self.done = Some(Downloaded {
            size: self.got,
            sha256,
        });
        Ok(())
    }
}

fn host_header(t: &Target) -> String {
    let host = if t.host.contains(':') {
        format!("[{}]", t.host)
    } else {
        t.host.clone()
    };
    if t.port == 443 {
        host
    } else {
        format!("{host}:{}", t.port)
    }
}

fn short_or_broken(got: u64, expected: Option<u64>, reason: String) -> DownloadError {
    match expected {
        Some(expected) => DownloadError::Short {
            got,
            expected,
            reason: Some(reason),
        },
        None => DownloadError::Broken { got, reason },
    }
}

/// hyper's error with its cause ("connection closed before message
/// completed", "error writing a body to connection: Broken pipe").
fn hyper_reason(e: &hyper::Error) -> String {
    use std::error::Error as _;
    match e.source() {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    }
}

async fn read_small(mut body: hyper::body::Incoming) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < MAX_ERROR_BODY {
        match tokio::time::timeout(Duration::from_secs(2), body.frame()).await {
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    out.extend_from_slice(&d[..d.len().min(MAX_ERROR_BODY - out.len())]);
                }
            }
            _ => break,
        }
    }
    out
}

/// SHA-256 of a reader, for the announcement (the sender hashes before the
/// upload so that the message can carry it).
pub async fn sha256_of(mut r: impl AsyncRead + Unpin) -> io::Result<([u8; 32], u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut n_total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        n_total += n as u64;
    }
    Ok((h.finalize().into(), n_total))
}
