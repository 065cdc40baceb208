//! The upload method: HTTP File Upload (XEP-0363) and link announcements.
//!
//! Peer-to-peer methods need the recipient online; this one stores the file
//! on the sender's server and sends a link that any client (and the
//! recipient's offline storage) can take (XEP-0363, XEP-0066, XEP-0447;
//! issue 16).
//!
//! * [`service`]: find the upload service (disco) and request a slot.
//! * [`https`]: PUT a file and GET a link over HTTPS, with hyper on rustls and
//!   the same trust as the XMPP stream (`--ca-file`, pinning).
//! * [`announce`]: the announcement message (body + `jabber:x:oob` + XEP-0447
//!   `<file-sharing>`) and reading one.
//! * [`target`]: which URLs may be fetched at all.
//! * [`Uploader`]: the above joined for one account, file by file.
//!
//! Why hand-written pieces: no published crate does XEP-0363's slot handshake
//! on our XMPP handle, and `hyper-rustls` would bring its own trust setup; the
//! HTTPS connection here is hyper's client over tokio-rustls with our
//! verifier (a dozen lines). XEP-0447 is not in `xmpp-parsers` 0.23, so the
//! `<file-sharing>` element is built and read with minidom.

pub mod announce;
pub mod https;
pub mod service;
pub mod target;
mod uploader;

pub use announce::{Announcement, announcement_message, parse_announcement};
pub use https::{Download, DownloadError, DownloadLimits, Downloaded, HttpsClient, LocalFile};
pub use service::{RefusalKind, Slot, UploadService, discover, request_slot};
pub use target::{Target, UrlError, check_url};
pub use uploader::{CONTENT_TYPE, Uploader};

use crate::xmpp::XmppError;

/// Why an upload failed. Nothing was announced when any of these happens.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(
        "the server of {domain} offers no HTTP file upload (XEP-0363); \
         the recipient must be online to receive peer to peer"
    )]
    NoService { domain: String },
    #[error("{name} is {size} bytes, but the upload service accepts at most {max} bytes")]
    TooLarge { name: String, size: u64, max: u64 },
    #[error("the upload service refused to take {name}: {reason}")]
    SlotRefused {
        name: String,
        kind: RefusalKind,
        reason: String,
    },
    #[error("the upload service {service} answered the slot request with {detail}")]
    BadSlot { service: String, detail: String },
    #[error("the upload link is refused: {0}")]
    Url(#[from] UrlError),
    #[error("cannot read {name}: {reason}")]
    Read { name: String, reason: String },
    #[error("cannot connect to the upload server {host}: {reason}")]
    Connect { host: String, reason: String },
    #[error("the upload of {name} failed after {sent} of {size} bytes: {reason}")]
    PutFailed {
        name: String,
        sent: u64,
        size: u64,
        reason: String,
    },
    #[error("the upload server refused {name} with HTTP status {status}")]
    PutRefused { name: String, status: u16 },
    #[error("{0}")]
    Xmpp(#[from] XmppError),
}

impl UploadError {
    /// True when the file could not even start moving (limits, refusals):
    /// not a network fault.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            UploadError::TooLarge { .. }
                | UploadError::SlotRefused { .. }
                | UploadError::NoService { .. }
                | UploadError::PutRefused { .. }
        )
    }
}
