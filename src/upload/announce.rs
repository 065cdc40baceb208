//! The message that announces an uploaded file, and reading one.
//!
//! Sent: a `chat` message whose body is the GET URL
//! (what every client shows, and what Conversations, Gajim and Profanity turn
//! into a download), `jabber:x:oob` with the same URL (XEP-0066), and an
//! XEP-0447 `<file-sharing>` with the name, size, media type and SHA-256 (Dino
//! and Kaidan show these before downloading; the receiver checks them).
//!
//! Read: an SFS `<file-sharing>` with an `url-data` source, else an OOB URL,
//! else a body that is exactly one `https://` URL (go-sendxmpp, older clients).
//! Which URLs are then fetched is decided by [`super::target`].
//!
//! Bounds: everything read here comes from one stanza, so the server's stanza
//! size limit bounds it; the URL is bounded again by
//! [`super::target::MAX_URL_BYTES`] and the name by the receiver's safe-name
//! rules (`transfer::names`, 255 bytes).

use minidom::Element;

use crate::session::stanza::nc;
use tokio_xmpp::parsers::hashes::{Algo, Hash};
use tokio_xmpp::parsers::jid::Jid;
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::oob::Oob;

pub const NS_OOB: &str = "jabber:x:oob";
pub const NS_SFS: &str = "urn:xmpp:sfs:0";
pub const NS_FILE_METADATA: &str = "urn:xmpp:file:metadata:0";
pub const NS_URL_DATA: &str = "http://jabber.org/protocol/url-data";
pub const NS_HASHES: &str = "urn:xmpp:hashes:2";

/// A file offered by link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub url: String,
    /// The file name the sender gave (not yet made safe: see
    /// `transfer::names::safe_file_name`).
    pub name: Option<String>,
    pub size: Option<u64>,
    pub sha256: Option<[u8; 32]>,
    pub media_type: Option<String>,
}

impl Announcement {
    /// The sender's name, else the last path segment of the URL
    /// (percent-decoded), else `download`.
    pub fn suggested_name(&self) -> String {
        if let Some(n) = self.name.as_deref().filter(|n| !n.trim().is_empty()) {
            return n.to_string();
        }
        url::Url::parse(&self.url)
            .ok()
            .and_then(|u| {
                u.path_segments()
                    .and_then(|mut s| s.next_back().map(str::to_string))
            })
            .map(|seg| {
                percent_encoding::percent_decode_str(&seg)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "download".to_string())
    }
}

/// The announcement message to `to` (a bare JID, so that every client of the
/// recipient and its offline storage get it).
pub fn announcement_message(to: Jid, a: &Announcement) -> Message {
    let mut file = Element::builder("file", NS_FILE_METADATA);
    if let Some(m) = &a.media_type {
        file = file.append(Element::builder("media-type", NS_FILE_METADATA).append(m.as_str()));
    }
    if let Some(n) = &a.name {
        file = file.append(Element::builder("name", NS_FILE_METADATA).append(n.as_str()));
    }
    if let Some(s) = a.size {
        file = file.append(Element::builder("size", NS_FILE_METADATA).append(s.to_string()));
    }
    if let Some(h) = a.sha256 {
        file = file.append(Element::from(Hash::new(Algo::Sha_256, h.to_vec())));
    }
    let sfs = Element::builder("file-sharing", NS_SFS)
        .attr(nc!("disposition"), "attachment")
        .append(file)
        .append(
            Element::builder("sources", NS_SFS).append(
                Element::builder("url-data", NS_URL_DATA)
                    .attr(nc!("target"), a.url.as_str())
                    .build(),
            ),
        )
        .build();
    let mut m = Message::new_with_type(MessageType::Chat, Some(to))
        .with_body(Lang::default(), a.url.clone())
        .with_payload(Oob {
            url: a.url.clone(),
            desc: None,
        });
    m.payloads.push(sfs);
    m
}

/// The file a message announces, if any. Error messages announce nothing.
pub fn parse_announcement(msg: &Message) -> Option<Announcement> {
    if msg.type_ == MessageType::Error {
        return None;
    }
    let body = msg.get_best_body(vec![]).map(|(_, b)| b.trim().to_string());
    if let Some(a) = msg
        .payloads
        .iter()
        .filter(|p| p.is("file-sharing", NS_SFS))
        .find_map(parse_sfs)
    {
        return Some(a);
    }
    if let Some(url) = msg
        .payloads
        .iter()
        .filter(|p| p.is("x", NS_OOB))
        .find_map(|p| {
            p.get_child("url", NS_OOB)
                .map(|u| u.text().trim().to_string())
        })
        .filter(|u| !u.is_empty())
    {
        return Some(Announcement {
            url,
            name: None,
            size: None,
            sha256: None,
            media_type: None,
        });
    }
    let body = body?;
    let is_link = body.len() > "https://".len()
        && body
            .get(..8)
            .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
        && !body.chars().any(char::is_whitespace);
    is_link.then_some(Announcement {
        url: body,
        name: None,
        size: None,
        sha256: None,
        media_type: None,
    })
}

fn parse_sfs(el: &Element) -> Option<Announcement> {
    let url = el
        .get_child("sources", NS_SFS)?
        .children()
        .filter(|c| c.is("url-data", NS_URL_DATA))
        .find_map(|c| c.attr("target"))?
        .trim()
        .to_string();
    let file = el.get_child("file", NS_FILE_METADATA);
    let text = |name: &str| {
        file.and_then(|f| f.get_child(name, NS_FILE_METADATA))
            .map(|c| c.text().trim().to_string())
    };
    let sha256 = file.and_then(|f| {
        f.children()
            .filter(|c| c.is("hash", NS_HASHES))
            .filter_map(|c| Hash::try_from(c.clone()).ok())
            .find(|h| h.algo == Algo::Sha_256)
            .and_then(|h| <[u8; 32]>::try_from(h.hash.as_slice()).ok())
    });
    Some(Announcement {
        url,
        name: text("name").filter(|n| !n.is_empty()),
        size: text("size").and_then(|s| s.parse().ok()),
        sha256,
        media_type: text("media-type").filter(|n| !n.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(xml: &str) -> Message {
        let el: Element = xml.parse().unwrap();
        Message::try_from(el).unwrap()
    }

    #[test]
    fn round_trip() {
        let a = Announcement {
            url: "https://upload.example.org/x/report%20v2.pdf".into(),
            name: Some("report v2.pdf".into()),
            size: Some(12345),
            sha256: Some([7u8; 32]),
            media_type: Some("application/pdf".into()),
        };
        let m = announcement_message("juliet@example.org".parse().unwrap(), &a);
        assert_eq!(m.type_, MessageType::Chat);
        assert_eq!(
            m.get_best_body(vec![]).map(|(_, b)| b.as_str()),
            Some(a.url.as_str())
        );
        let el = Element::from(m.clone());
        let oob = el.get_child("x", NS_OOB).unwrap();
        assert_eq!(oob.get_child("url", NS_OOB).unwrap().text(), a.url);
        let back = parse_announcement(&msg(&String::from(&el))).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn oob_and_plain_body() {
        let m = msg(
            "<message xmlns='jabber:client' type='chat'><body>https://h/f.txt</body>\
             <x xmlns='jabber:x:oob'><url>https://h/f.txt</url></x></message>",
        );
        let a = parse_announcement(&m).unwrap();
        assert_eq!(a.url, "https://h/f.txt");
        assert_eq!(a.suggested_name(), "f.txt");
        let m = msg("<message xmlns='jabber:client'><body> https://h/a%20b.bin </body></message>");
        let a = parse_announcement(&m).unwrap();
        assert_eq!(a.suggested_name(), "a b.bin");
        // OOB with http is still reported (and refused with a reason later).
        let m = msg(
            "<message xmlns='jabber:client'><x xmlns='jabber:x:oob'><url>http://h/f</url></x></message>",
        );
        assert_eq!(parse_announcement(&m).unwrap().url, "http://h/f");
    }

    #[test]
    fn chat_is_not_an_announcement() {
        for body in [
            "hello",
            "see https://h/f",
            "http://h/f",
            "https://",
            "https://h/f and more",
        ] {
            let m = msg(&format!(
                "<message xmlns='jabber:client'><body>{body}</body></message>"
            ));
            assert_eq!(parse_announcement(&m), None, "{body}");
        }
        let m =
            msg("<message xmlns='jabber:client' type='error'><body>https://h/f</body></message>");
        assert_eq!(parse_announcement(&m), None);
    }
}
