//! The receiver's HTTP client: sequential `GET`s on one keep-alive connection
//! (PROTOCOL.md §D.1 request format, §D.2/§D.3 responses).
//!
//! Requests are exactly `GET <path> HTTP/1.1` with `Host: <sender full JID>:0`,
//! `Content-Length: 0`, `User-Agent: gshare/<version>`, `Connection: Keep-Alive` (title case,
//! in that order). Responses may lack a reason phrase and carry `Content-Length` or chunked
//! bodies; the body is handed to the caller chunk by chunk.
//!
//! Between gshare peers only ([`GetOptions`], set by the job when the session negotiated it),
//! two more headers follow: `Range: bytes=N-` to resume a file at byte `N` (the answer is a
//! `206` whose `Content-Range` must start at `N`, or a plain `200` starting over), and
//! `TE: trailers` so the sender may end a folder stream with its SHA-256
//! ([`super::DIGEST_TRAILER`]). Classic peers never see either.

use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HOST, HeaderMap, HeaderValue, RANGE,
    TE, TRANSFER_ENCODING, USER_AGENT,
};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tracing::{debug, trace};

/// The `User-Agent` we send.
pub const USER_AGENT_VALUE: &str = concat!("gshare/", env!("CARGO_PKG_VERSION"));

/// How much of an unexpected non-200 body is read (and discarded) to keep the connection usable.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The sender answered 404: this item is not available; move on to the next one.
    #[error("item not available (HTTP 404)")]
    NotFound,
    /// The sender answered with another status.
    #[error("unexpected HTTP status {0}")]
    Status(u16),
    /// A `206` whose `Content-Range` does not start where we asked, or does not match its
    /// length: the body cannot be placed safely.
    #[error("the sender's partial response does not match the requested range: {0}")]
    BadRange(String),
    /// The connection is closed (e.g. the previous response said `Connection: Close`); a new
    /// channel is needed for further requests.
    #[error("HTTP connection closed")]
    Closed,
    /// The path is not a valid request target.
    #[error("invalid request path {0:?}")]
    InvalidPath(String),
    /// The JID cannot be put in a `Host` header.
    #[error("invalid host {0:?}")]
    InvalidHost(String),
    /// hyper reported an error: the connection failed, the response was malformed, or the
    /// body was cut off.
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
}

/// Extensions of a request, for gshare peers only (the default is the classic request).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetOptions {
    /// Ask for the item from this byte on (`Range: bytes=N-`); `None` or `Some(0)` asks for
    /// all of it without a `Range` header.
    pub range_from: Option<u64>,
    /// Send `TE: trailers` (a folder stream may then end with its digest).
    pub trailers: bool,
}

/// Parses `Content-Range: bytes first-last/total` into `(first, last, total)`.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.trim().split_once('-')?;
    Some((
        first.trim().parse().ok()?,
        last.trim().parse().ok()?,
        total.trim().parse().ok()?,
    ))
}

/// An HTTP/1.1 client connection to the sender.
pub struct Client {
    send: SendRequest<Empty<Bytes>>,
    host: HeaderValue,
    conn: JoinHandle<()>,
}

impl Client {
    /// Starts a client on `io`. `sender_jid` is the sender's full JID; the `Host` header is
    /// `<sender_jid>:0` (libjingle's "port 0" addressing). The connection is driven by a
    /// spawned task that ends when the `Client` is dropped or the peer closes.
    pub async fn handshake<S>(io: S, sender_jid: String) -> Result<Client, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let host = HeaderValue::from_str(&format!("{sender_jid}:0"))
            .map_err(|_| ClientError::InvalidHost(sender_jid.clone()))?;
        let (send, conn) = hyper::client::conn::http1::Builder::new()
            .title_case_headers(true)
            .handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await?;
        let conn = tokio::spawn(async move {
            match conn.await {
                Ok(()) => debug!("HTTP client connection closed"),
                Err(e) => debug!(error = %e, "HTTP client connection failed"),
            }
        });
        Ok(Client { send, host, conn })
    }

    /// Whether the connection can no longer carry requests.
    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }

    /// Sends `GET <path>` and waits for the response head. `path` is already escaped
    /// (see [`super::request_path`]). A 200 returns the streaming [`Response`]; a 404 returns
    /// [`ClientError::NotFound`] (the connection stays usable); other statuses
    /// [`ClientError::Status`]. Read the previous response to its end before the next `get`.
    pub async fn get(&mut self, path: &str) -> Result<Response, ClientError> {
        self.get_with(path, GetOptions::default()).await
    }

    /// [`Client::get`] with the gshare extensions in `options`. With `range_from: Some(n)`
    /// (n > 0) the answer is either a `206` starting at exactly `n` ([`Response::offset`] is
    /// `n`) or a `200` with the whole item (offset 0: the caller starts over); a `206` for
    /// another range is [`ClientError::BadRange`], a `416` is [`ClientError::Status`].
    pub async fn get_with(
        &mut self,
        path: &str,
        options: GetOptions,
    ) -> Result<Response, ClientError> {
        let uri: Uri = path
            .parse()
            .map_err(|_| ClientError::InvalidPath(path.to_owned()))?;
        if uri.scheme().is_some() || uri.authority().is_some() || !path.starts_with('/') {
            return Err(ClientError::InvalidPath(path.to_owned()));
        }
        let range_from = options.range_from.filter(|&n| n > 0);
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header(HOST, self.host.clone())
            .header(CONTENT_LENGTH, HeaderValue::from_static("0"))
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .header(CONNECTION, HeaderValue::from_static("Keep-Alive"));
        if let Some(n) = range_from {
            req = req.header(RANGE, format!("bytes={n}-"));
        }
        if options.trailers {
            req = req.header(TE, HeaderValue::from_static("trailers"));
        }
        let req = req
            .body(Empty::new())
            .map_err(|_| ClientError::InvalidPath(path.to_owned()))?;
        if self.send.ready().await.is_err() {
            return Err(ClientError::Closed);
        }
        trace!(path, "GET");
        let resp = match self.send.send_request(req).await {
            Ok(resp) => resp,
            Err(e) if e.is_canceled() || e.is_closed() => return Err(ClientError::Closed),
            Err(e) => return Err(e.into()),
        };
        let status = resp.status();
        debug!(path, status = status.as_u16(), "response");
        let headers = resp.headers();
        let content_length = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let chunked = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let content_range = headers
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut response = Response {
            content_length,
            chunked,
            content_type,
            body: resp.into_body(),
            received: 0,
            offset: 0,
            trailers: None,
        };
        if status == StatusCode::OK {
            return Ok(response);
        }
        if status == StatusCode::PARTIAL_CONTENT
            && let Some(asked) = range_from
        {
            // Only the exact range we asked for, with a length that agrees, is usable.
            let range = content_range.as_deref().and_then(parse_content_range);
            return match range {
                Some((first, last, total))
                    if first == asked
                        && last.checked_add(1) == Some(total)
                        && content_length.is_none_or(|len| len == total - first) =>
                {
                    response.offset = first;
                    Ok(response)
                }
                _ => Err(ClientError::BadRange(
                    content_range.unwrap_or_else(|| "no Content-Range".to_owned()),
                )),
            };
        }
        // Drain a small error body so the connection can carry the next request.
        while response.received <= MAX_ERROR_BODY as u64 {
            match response.chunk().await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        Err(if status == StatusCode::NOT_FOUND {
            ClientError::NotFound
        } else {
            ClientError::Status(status.as_u16())
        })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// A 200 (or, resuming, 206) response whose body is read chunk by chunk.
pub struct Response {
    content_length: Option<u64>,
    chunked: bool,
    content_type: Option<String>,
    body: Incoming,
    received: u64,
    offset: u64,
    trailers: Option<HeaderMap>,
}

impl Response {
    /// Where the body starts in the item: the requested offset for a `206`, else 0.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The SHA-256 the sender put in the [`super::DIGEST_TRAILER`] (available once
    /// [`Response::chunk`] returned `Ok(None)`); `None` if there was none or it was malformed.
    pub fn digest_trailer(&self) -> Option<[u8; 32]> {
        let value = self.trailers.as_ref()?.get(super::DIGEST_TRAILER)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(value.as_bytes(), &mut out).ok()?;
        Some(out)
    }

    /// The `Content-Length`, if the body has one.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// Whether the body is chunked (folders).
    pub fn is_chunked(&self) -> bool {
        self.chunked
    }

    /// The `Content-Type`, if any (`application/x-tar` for folders).
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    /// Body bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next piece of the body; `Ok(None)` once the body ended cleanly (all
    /// `Content-Length` bytes, or the terminating chunk). An error means the body was cut off.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            let Some(frame) = self.body.frame().await else {
                return Ok(None);
            };
            // Trailers are kept (bounded by hyper: 16 KiB); other frames are ignored.
            match frame?.into_data() {
                Ok(data) => {
                    if data.is_empty() {
                        continue;
                    }
                    self.received += data.len() as u64;
                    return Ok(Some(data));
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.trailers = Some(trailers);
                    }
                }
            }
        }
    }
}
