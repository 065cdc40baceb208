//! HTTP/1.1 over any byte stream (in gshare: PseudoTCP), with hyper: the sender's server that
//! answers the receiver's `GET`s for offered files and folders, and the receiver's client that
//! fetches them one after another on one keep-alive connection (docs/protocol.md §D).
//!
//! hyper does the HTTP framing; what is hand-written here is the Google share dialect around
//! it: the request format and escaping libjingle and gabble expect, byte-exact name matching
//! that never turns a request into a filesystem path, and the folder tar stream.
//! Nothing here knows about PseudoTCP: both sides take any
//! `AsyncRead + AsyncWrite + Unpin + Send + 'static` stream.

mod client;
mod escape;
mod server;
mod source;

pub use client::{Client, ClientError, GetOptions, Response, USER_AGENT_VALUE};
pub use escape::{decode_segment, escape_name, request_path};
pub use server::{
    Catalog, CatalogItem, DIGEST_TRAILER, ItemBody, ItemKind, ServeError, ServeEvent, ServeOptions,
    serve, serve_with,
};
pub use source::folder_size;
/// The folder tar producer, for the Jingle sender's spool.
pub(crate) use source::{Msg as SourceMsg, spawn_tar};
