//! The sender's HTTP server: answers the receiver's `GET`s for the offered items
//! (PROTOCOL.md §D.1 matching rules, §D.2 responses) on one keep-alive connection.
//!
//! A request never names a file on disk: the last path segment is decoded and compared
//! byte-for-byte with the names in the [`Catalog`], and only the catalog's own paths are opened.
//! Everything else — another directory part, the preview path, unknown or malformed names,
//! methods other than GET, absolute-form targets — gets `404` with `Content-Length: 0`.
//!
//! Two additions exist only between gshare peers, switched on by [`ServeOptions`] when the
//! session negotiated them (docs/protocol.md §D; the job passes the flags, classic peers never
//! get them and see exactly the classic bytes):
//! - `Range: bytes=N-` on a file item is answered `206 Partial Content` with
//!   `Content-Range: bytes N-(size-1)/size` (resume). Any other form of `Range` is ignored (a
//!   plain `200`, which RFC 9110 §14.2 allows); `N >= size` gets `416`.
//! - A folder (a chunked tar stream whose bytes exist only while they are produced, so no
//!   digest can be announced in the offer) ends with the trailer `X-Gshare-Sha256: <hex>`, the
//!   SHA-256 of the whole tar stream, when the request says `TE: trailers`. The receiver hashes
//!   the stream it unpacks and compares before renaming the folder into place.

use std::convert::Infallible;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue,
    RANGE, TRAILER,
};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tracing::{debug, trace};

use super::escape::decode_segment;
use super::source::{self, Msg};

/// Request heads larger than this are refused (hyper answers 431 and closes).
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header lines accepted in one request.
const MAX_HEADERS: usize = 32;
/// hyper's connection buffer limit (its minimum is 8 KiB).
const MAX_BUF_BYTES: usize = 64 * 1024;
/// Longest `Range` header value parsed (`bytes=` and a 20-digit `u64`, with some spaces).
const MAX_RANGE_LEN: usize = 40;

/// The trailer carrying a folder stream's SHA-256 (64 lowercase hex digits), between gshare
/// peers only.
pub const DIGEST_TRAILER: &str = "x-gshare-sha256";

/// Extensions of the classic dialect, for gshare peers only (the session negotiated them).
/// The default is the classic dialect: no `Range`, no trailers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeOptions {
    /// Answer `Range: bytes=N-` on file items with `206` (the peer said `<resume/>`).
    pub ranges: bool,
    /// End folder streams with the [`DIGEST_TRAILER`] (the peer is gshare).
    pub digest_trailers: bool,
}

/// What an offered item is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKind {
    /// A regular file served with `Content-Length: size` (the size announced in the offer).
    File {
        /// Bytes announced in the manifest; exactly these are sent.
        size: u64,
    },
    /// A directory served as a chunked tar stream.
    Folder,
}

/// One offered item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogItem {
    /// The manifest `<name>`, compared byte-for-byte with the decoded request segment.
    pub name: String,
    /// Where the item is on disk.
    pub path: PathBuf,
    /// File or folder.
    pub kind: ItemKind,
}

/// The items a sender offers, in manifest order, under the offer's source-path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    source_path: String,
    items: Vec<CatalogItem>,
}

impl Catalog {
    /// An empty catalog for the given source-path prefix (e.g. `/temporary/<hex>/`).
    pub fn new(source_path: impl Into<String>) -> Self {
        Catalog {
            source_path: source_path.into(),
            items: Vec::new(),
        }
    }

    /// Adds a regular file of `size` bytes; returns its index (manifest position).
    pub fn push_file(
        &mut self,
        name: impl Into<String>,
        path: impl Into<PathBuf>,
        size: u64,
    ) -> usize {
        self.push(CatalogItem {
            name: name.into(),
            path: path.into(),
            kind: ItemKind::File { size },
        })
    }

    /// Adds a folder; returns its index (manifest position).
    pub fn push_folder(&mut self, name: impl Into<String>, path: impl Into<PathBuf>) -> usize {
        self.push(CatalogItem {
            name: name.into(),
            path: path.into(),
            kind: ItemKind::Folder,
        })
    }

    /// Adds an item; returns its index (manifest position).
    pub fn push(&mut self, item: CatalogItem) -> usize {
        self.items.push(item);
        self.items.len() - 1
    }

    /// The source-path prefix.
    pub fn source_path(&self) -> &str {
        &self.source_path
    }

    /// The items, in manifest order.
    pub fn items(&self) -> &[CatalogItem] {
        &self.items
    }

    /// Which item a request is for, per §D.1: only `GET` with an origin-form target; the query is
    /// ignored; the directory part must equal the source-path; the last segment is
    /// percent-decoded (`+` tried as a plus, then as a space) and compared byte-for-byte.
    pub fn lookup(&self, method: &Method, uri: &Uri) -> Option<usize> {
        if method != Method::GET || uri.scheme().is_some() || uri.authority().is_some() {
            return None;
        }
        let path = uri.path().as_bytes();
        let slash = path.iter().rposition(|&b| b == b'/')?;
        let (dir, segment) = path.split_at(slash + 1);
        let source = self.source_path.as_bytes();
        let dir_matches =
            dir == source || (!source.ends_with(b"/") && dir.strip_suffix(b"/") == Some(source));
        if !dir_matches || segment.is_empty() {
            return None;
        }
        [false, true].into_iter().find_map(|plus_as_space| {
            let name = decode_segment(segment, plus_as_space)?;
            self.items
                .iter()
                .position(|item| item.name.as_bytes() == name.as_slice())
        })
    }
}

/// What the server reports while serving, so the caller can tell whether every byte of every
/// item went out (PROTOCOL.md §A.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeEvent {
    /// A request for item `item` arrived and a 200 (or, resuming, a 206) is being sent.
    Started {
        /// Catalog index.
        item: usize,
    },
    /// Content bytes of `item` handed to the connection so far (for a folder: file bytes inside
    /// the tar, not counting tar headers; comparable with the manifest `size`). For a `206` the
    /// count starts at the requested offset: it is the position reached in the item.
    Progress {
        /// Catalog index.
        item: usize,
        /// Cumulative content bytes.
        bytes: u64,
    },
    /// The whole body of `item` was handed to the connection (written towards the peer, not
    /// acknowledged by it: PROTOCOL.md §A.7's byte-count rule).
    Served {
        /// Catalog index.
        item: usize,
        /// Content bytes served (file size, or the sum of file sizes in the folder); for a `206`
        /// the position reached, i.e. the file size as well.
        bytes: u64,
    },
    /// Serving `item` failed part-way (disk error, file shrank: the connection is aborted), or
    /// the connection ended before the whole body was handed over.
    Failed {
        /// Catalog index.
        item: usize,
        /// What went wrong.
        error: String,
    },
    /// A request matched no item and was answered 404.
    NotFound {
        /// The request method and target, for logging.
        request: String,
    },
}

/// The connection failed (I/O error or malformed HTTP from the peer).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// hyper reported an error on the connection.
    #[error("HTTP server connection failed: {0}")]
    Http(#[from] hyper::Error),
}

/// Serves `catalog` on `io` in the classic dialect until the peer closes the connection (or
/// the future is dropped). Events go to `events`; a dropped receiver is ignored.
pub async fn serve<S>(
    io: S,
    catalog: Arc<Catalog>,
    events: mpsc::UnboundedSender<ServeEvent>,
) -> Result<(), ServeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_with(io, catalog, events, ServeOptions::default()).await
}

/// [`serve`] with the gshare extensions in `options` (see the module doc).
pub async fn serve_with<S>(
    io: S,
    catalog: Arc<Catalog>,
    events: mpsc::UnboundedSender<ServeEvent>,
    options: ServeOptions,
) -> Result<(), ServeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let response = respond(&catalog, &events, &req, options);
        async move { Ok::<_, Infallible>(response) }
    });
    hyper::server::conn::http1::Builder::new()
        .title_case_headers(true)
        .auto_date_header(false)
        .keep_alive(true)
        .max_headers(MAX_HEADERS)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_BUF_BYTES)
        .serve_connection(TokioIo::new(io), service)
        .await?;
    Ok(())
}

/// Whether the request lets the connection stay open (HTTP/1.1 default on, HTTP/1.0 default off).
fn wants_keep_alive(req: &Request<Incoming>) -> bool {
    let tokens = req
        .headers()
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|t| t.trim_ascii().to_ascii_lowercase())
        .collect::<Vec<_>>();
    if tokens.iter().any(|t| t == b"close") {
        return false;
    }
    req.version() >= Version::HTTP_11 || tokens.iter().any(|t| t == b"keep-alive")
}

/// The start of a `Range: bytes=N-` request: exactly one `Range` header of exactly that form
/// (any other form is ignored, RFC 9110 §14.2).
fn range_start(req: &Request<Incoming>) -> Option<u64> {
    let mut values = req.headers().get_all(RANGE).iter();
    let value = values.next()?;
    if values.next().is_some() || value.len() > MAX_RANGE_LEN {
        return None;
    }
    let text = value.to_str().ok()?.trim();
    let (unit, spec) = text.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let digits = spec.trim().strip_suffix('-')?.trim_end();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn respond(
    catalog: &Catalog,
    events: &mpsc::UnboundedSender<ServeEvent>,
    req: &Request<Incoming>,
    options: ServeOptions,
) -> Response<ItemBody> {
    let connection = HeaderValue::from_static(if wants_keep_alive(req) {
        "Keep-Alive"
    } else {
        "Close"
    });
    let Some(index) = catalog.lookup(req.method(), req.uri()) else {
        let request = format!("{} {}", req.method(), req.uri());
        debug!(%request, "no such item: 404");
        let _ = events.send(ServeEvent::NotFound { request });
        return head(StatusCode::NOT_FOUND, connection, None, ItemBody::empty());
    };
    let Some(item) = catalog.items.get(index) else {
        return head(StatusCode::NOT_FOUND, connection, None, ItemBody::empty());
    };
    debug!(item = index, name = %item.name, "serving");
    let _ = events.send(ServeEvent::Started { item: index });
    match item.kind {
        ItemKind::File { size: 0 } => {
            let _ = events.send(ServeEvent::Served {
                item: index,
                bytes: 0,
            });
            let mut resp = head(
                StatusCode::OK,
                connection,
                Some("application/octet-stream"),
                ItemBody::empty(),
            );
            resp.headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(0u64));
            resp
        }
        ItemKind::File { size } => {
            let offset = match range_start(req).filter(|_| options.ranges) {
                Some(start) if start >= size => {
                    debug!(item = index, start, size, "range not satisfiable: 416");
                    let _ = events.send(ServeEvent::Failed {
                        item: index,
                        error: format!("asked to resume at byte {start} of {size}"),
                    });
                    let mut resp = head(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        connection,
                        None,
                        ItemBody::empty(),
                    );
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                        resp.headers_mut().insert(CONTENT_RANGE, v);
                    }
                    return resp;
                }
                Some(start) => start,
                None => 0,
            };
            let rx = source::spawn_file(item.path.clone(), offset, size);
            let body = ItemBody::stream(rx, index, offset, Some(size), events.clone());
            let status = if offset > 0 {
                debug!(item = index, offset, "resuming: 206");
                StatusCode::PARTIAL_CONTENT
            } else {
                StatusCode::OK
            };
            let mut resp = head(status, connection, Some("application/octet-stream"), body);
            let headers = resp.headers_mut();
            headers.insert(CONTENT_LENGTH, HeaderValue::from(size - offset));
            if offset > 0
                && let Ok(v) = HeaderValue::from_str(&format!("bytes {offset}-{}/{size}", size - 1))
            {
                headers.insert(CONTENT_RANGE, v);
            }
            resp
        }
        ItemKind::Folder => {
            // hyper sends trailers only if the request said `TE: trailers`; hashing is only
            // worth it then.
            let trailer = options.digest_trailers
                && req
                    .headers()
                    .get_all(http::header::TE)
                    .iter()
                    .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
            let rx = source::spawn_tar(item.path.clone(), item.name.clone(), trailer);
            let body = ItemBody::stream(rx, index, 0, None, events.clone());
            // No Content-Length and an inexact size hint: hyper sends it chunked.
            let mut resp = head(StatusCode::OK, connection, Some("application/x-tar"), body);
            if trailer {
                resp.headers_mut()
                    .insert(TRAILER, HeaderValue::from_static(DIGEST_TRAILER));
            }
            resp
        }
    }
}

/// A response with headers in libjingle's order: Connection, Content-Type, (Content-Length).
fn head(
    status: StatusCode,
    connection: HeaderValue,
    content_type: Option<&'static str>,
    body: ItemBody,
) -> Response<ItemBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONNECTION, connection);
    if let Some(ct) = content_type {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    if status != StatusCode::OK && status != StatusCode::PARTIAL_CONTENT {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(0u64));
    }
    resp
}

/// A response body fed by a producer thread (or empty), reporting progress as hyper polls it.
pub struct ItemBody {
    inner: Option<Streaming>,
}

struct Streaming {
    rx: mpsc::Receiver<Msg>,
    item: usize,
    /// Where the body starts in the item (non-zero for a `206`).
    offset: u64,
    /// The item's size when the body ends there (files): its last byte completes the item.
    exact: Option<u64>,
    /// Content position reached (from the item's start, so comparable with its size).
    content: u64,
    events: mpsc::UnboundedSender<ServeEvent>,
}

impl ItemBody {
    fn empty() -> Self {
        ItemBody { inner: None }
    }

    fn stream(
        rx: mpsc::Receiver<Msg>,
        item: usize,
        offset: u64,
        exact: Option<u64>,
        events: mpsc::UnboundedSender<ServeEvent>,
    ) -> Self {
        ItemBody {
            inner: Some(Streaming {
                rx,
                item,
                offset,
                exact,
                content: offset,
                events,
            }),
        }
    }
}

impl Drop for ItemBody {
    fn drop(&mut self) {
        // Dropped before the last byte: the connection went away (or hyper gave up on it).
        if let Some(s) = self.inner.take() {
            debug!(item = s.item, bytes = s.content, "item not fully served");
            let _ = s.events.send(ServeEvent::Failed {
                item: s.item,
                error: format!("connection ended after {} bytes", s.content),
            });
        }
    }
}

impl Body for ItemBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let Some(s) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let out = match s.rx.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Msg::Data(data, content))) => {
                s.content = content;
                trace!(item = s.item, bytes = content, "body chunk");
                let _ = s.events.send(ServeEvent::Progress {
                    item: s.item,
                    bytes: content,
                });
                if s.exact == Some(content) {
                    // hyper stops polling a Content-Length body once it has all the bytes, so
                    // the producer's `Done` would never be seen: this chunk completes the item.
                    debug!(item = s.item, bytes = content, "item served");
                    let _ = s.events.send(ServeEvent::Served {
                        item: s.item,
                        bytes: content,
                    });
                    self.inner = None;
                }
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            Poll::Ready(Some(Msg::Done(digest))) => {
                debug!(item = s.item, bytes = s.content, "item served");
                let _ = s.events.send(ServeEvent::Served {
                    item: s.item,
                    bytes: s.content,
                });
                digest.and_then(|d| {
                    let value = HeaderValue::from_str(&hex::encode(d)).ok()?;
                    let mut trailers = HeaderMap::new();
                    trailers.insert(HeaderName::from_static(DIGEST_TRAILER), value);
                    Some(Ok(Frame::trailers(trailers)))
                })
            }
            Poll::Ready(Some(Msg::Failed(e))) => {
                let _ = s.events.send(ServeEvent::Failed {
                    item: s.item,
                    error: e.to_string(),
                });
                Some(Err(e))
            }
            Poll::Ready(None) => {
                let e = io::Error::other("body producer stopped");
                let _ = s.events.send(ServeEvent::Failed {
                    item: s.item,
                    error: e.to_string(),
                });
                Some(Err(e))
            }
        };
        self.inner = None;
        Poll::Ready(out)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            None => SizeHint::with_exact(0),
            Some(Streaming {
                exact: Some(n),
                offset,
                ..
            }) => SizeHint::with_exact(n.saturating_sub(*offset)),
            Some(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let mut c = Catalog::new("/temporary/abc/");
        c.push_file("foo bar.txt", "/nonexistent/1", 3);
        c.push_file("a+b", "/nonexistent/2", 3);
        c.push_file("x y+", "/nonexistent/3", 3);
        c.push_file("café", "/nonexistent/4", 3);
        c.push_file("a/b", "/nonexistent/5", 3);
        c.push_folder("stuff", "/nonexistent/6");
        c
    }

    fn get(c: &Catalog, target: &str) -> Option<usize> {
        c.lookup(&Method::GET, &target.parse::<Uri>().unwrap())
    }

    #[test]
    fn lookup_rules() {
        let c = catalog();
        assert_eq!(get(&c, "/temporary/abc/foo%20bar.txt"), Some(0));
        assert_eq!(get(&c, "/temporary/abc/foo+bar.txt"), Some(0));
        assert_eq!(
            get(&c, "/temporary/abc/foo%20bar.txt?width=1&height=2"),
            Some(0)
        );
        assert_eq!(get(&c, "/temporary/abc/a+b"), Some(1));
        assert_eq!(get(&c, "/temporary/abc/a%2Bb"), Some(1));
        assert_eq!(
            get(&c, "/temporary/abc/x+y+"),
            None,
            "only all-plus or all-space"
        );
        assert_eq!(get(&c, "/temporary/abc/x%20y%2b"), Some(2));
        assert_eq!(get(&c, "/temporary/abc/caf%c3%a9"), Some(3));
        assert_eq!(get(&c, "/temporary/abc/a%2Fb"), Some(4));
        assert_eq!(get(&c, "/temporary/abc/stuff"), Some(5));
        for bad in [
            "/temporary/abc/",
            "/temporary/abc/a/b",
            "/temporary/abc/../abc/stuff",
            "/temporary/abc/%2e%2e",
            "/temporary/abc/..",
            "/temporary/ABC/stuff",
            "/temporary/preview/stuff",
            "/etc/passwd",
            "/stuff",
            "/temporary/abc/stuff/",
            "/temporary/abc/stuff%00",
            "/temporary/abc/%zzstuff",
            "http://host/temporary/abc/stuff",
        ] {
            assert_eq!(get(&c, bad), None, "{bad}");
        }
        let head = c.lookup(&Method::HEAD, &"/temporary/abc/stuff".parse().unwrap());
        assert_eq!(head, None);
        let post = c.lookup(&Method::POST, &"/temporary/abc/stuff".parse().unwrap());
        assert_eq!(post, None);
    }

    #[test]
    fn source_path_without_trailing_slash() {
        let mut c = Catalog::new("/temporary/abc");
        c.push_file("f", "/nonexistent", 1);
        assert_eq!(get(&c, "/temporary/abc/f"), Some(0));
        assert_eq!(get(&c, "/temporary/abcf"), None);
    }
}
