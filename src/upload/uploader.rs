//! One account's use of its upload service: discover it once, then for each
//! file hash it, check the size, get a slot, PUT it and announce it.

use std::path::Path;

use tokio_xmpp::parsers::jid::{BareJid, Jid};

use super::UploadError;
use super::announce::{Announcement, announcement_message};
use super::https::{HttpsClient, LocalFile, sha256_of};
use super::service::{UploadService, discover, request_slot};
use crate::xmpp::Xmpp;

/// The content type sent in slot requests and PUTs. Receivers get the file
/// as a download, never rendered from a type we guessed.
pub const CONTENT_TYPE: &str = "application/octet-stream";

/// The upload service of a logged-in account.
#[derive(Clone)]
pub struct Uploader {
    xmpp: Xmpp,
    https: HttpsClient,
    service: UploadService,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Uploader {
    /// Finds the service of `xmpp`'s server; `ca_file` is `--ca-file`.
    pub async fn new(xmpp: &Xmpp, ca_file: Option<&Path>) -> Result<Self, UploadError> {
        let https = HttpsClient::new(ca_file)?;
        let service = discover(xmpp).await?;
        Ok(Self {
            xmpp: xmpp.clone(),
            https,
            service,
        })
    }

    pub fn service(&self) -> &UploadService {
        &self.service
    }

    /// Refuses a file over the announced `max-file-size` (call it for every
    /// file before the first byte of any moves).
    pub fn check_size(&self, name: &str, size: u64) -> Result<(), UploadError> {
        match self.service.max_file_size {
            Some(max) if size > max => Err(UploadError::TooLarge {
                name: name.to_string(),
                size,
                max,
            }),
            _ => Ok(()),
        }
    }

    /// Hashes `path` (`size` bytes, sent as `name`), gets a slot and PUTs it.
    /// `progress` gets the bytes sent so far. Returns what to announce.
    pub async fn upload(
        &self,
        path: &Path,
        name: &str,
        size: u64,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<Announcement, UploadError> {
        self.check_size(name, size)?;
        let read_err = |e: std::io::Error| UploadError::Read {
            name: name.to_string(),
            reason: e.to_string(),
        };
        let file = tokio::fs::File::open(path).await.map_err(read_err)?;
        let (sha256, hashed) = sha256_of(tokio::io::AsyncReadExt::take(file, size))
            .await
            .map_err(read_err)?;
        if hashed != size {
            return Err(UploadError::Read {
                name: name.to_string(),
                reason: format!("the file has {hashed} bytes, not the {size} expected"),
            });
        }
        let slot = request_slot(&self.xmpp, &self.service, name, size, CONTENT_TYPE).await?;
        let domain = self.xmpp.jid().domain().to_string();
        let file = LocalFile {
            path,
            name,
            size,
            content_type: CONTENT_TYPE,
        };
        self.https.put_file(&slot, &domain, &file, progress).await?;
        Ok(Announcement {
            url: slot.get_url,
            name: Some(name.to_string()),
            size: Some(size),
            sha256: Some(sha256),
            media_type: None,
        })
    }

    /// Sends the announcement to `to` (bare: all its clients and offline
    /// storage get it).
    pub async fn announce(&self, to: &BareJid, a: &Announcement) -> Result<(), UploadError> {
        let msg = announcement_message(Jid::from(to.clone()), a);
        self.xmpp.send(msg).await?;
        Ok(())
    }
}
