//! gshare's private session extension: `<secure xmlns="urn:gshare:secure:1">`,
//! a child of the share `<description>` in the sender's `initiate` and in
//! the receiver's `accept`.
//!
//! ```xml
//! <secure xmlns="urn:gshare:secure:1">
//!   <fingerprint hash="sha-256">AB:CD:…(32 bytes, colon hex)</fingerprint>
//!   <item index="0" sha256="…64 lowercase hex…"/>   (sender only, optional)
//!   <resume/>                                         (side supports Range resume)
//! </secure>
//! ```
//!
//! The fingerprint is the SHA-256 of the side's TLS certificate (DER) in the
//! colon-separated upper-case hex of XEP-0320; both peers accept only the
//! certificate whose hash they received here, so the XMPP path (itself TLS
//! to the server) binds the peer-to-peer TLS session (see `crate::secure`).
//!
//! **Classic peers ignore it.** Checked against the sources
//! (docs/protocol.md §A.3, §A.5):
//! * libjingle 0.4 `talk/session/fileshare/fileshare.cc`,
//!   `FileShareSessionClient::CreateSessionDescription`, reads the
//!   description only through `FirstNamed(QN_SHARE_MANIFEST)` and
//!   `FirstNamed(QN_SHARE_PROTOCOL)`; no other child is looked at, so
//!   `<secure>` (another namespace, after both) is skipped silently. The
//!   handler is chosen by the `<description>` namespace, which is unchanged.
//! * telepathy-gabble `src/jingle-share.c`, `parse_description`, uses
//!   `wocky_node_get_child (desc_node, "manifest")` and `(…, "protocol")`
//!   (first child of that name) and never iterates the description's
//!   children; `<secure>` is never seen. In an `accept` gabble returns
//!   before parsing at all once it has a manifest.
//!
//! We write `<secure>` after `<manifest>` and `<protocol>` so that every
//! first-match lookup above still finds the real elements first.
//!
//! Parsing is all-or-nothing and never an error reply: anything malformed
//! (two `<secure>`, a bad fingerprint, a digest for an item that does not
//! exist, …) reads as "no extension" and is logged at debug level, so a
//! peer is at worst treated as a classic one.

use minidom::Element;
use tracing::debug;

use super::stanza::{MAX_MANIFEST_ITEMS, nc};

/// The extension's namespace.
pub const NS_SECURE: &str = "urn:gshare:secure:1";

/// The only fingerprint hash we write or accept (XEP-0320 `hash` value).
const FINGERPRINT_HASH: &str = "sha-256";

/// Children of `<secure>` walked at most: one fingerprint, one `<resume/>`,
/// one `<item>` per manifest entry and a little room for future elements.
/// Anything beyond makes the extension malformed (bounded work per stanza).
const MAX_SECURE_CHILDREN: usize = MAX_MANIFEST_ITEMS + 16;

/// What a gshare peer adds to its `initiate` or `accept`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extension {
    /// SHA-256 of this side's TLS certificate (DER).
    pub fingerprint: Option<[u8; 32]>,
    /// Sender: SHA-256 per manifest index (`None` where not announced);
    /// either empty or exactly one entry per manifest item. Receiver: empty.
    pub digests: Vec<Option<[u8; 32]>>,
    /// This side supports HTTP `Range` resume.
    pub resume: bool,
}

impl Extension {
    /// Parses the `<secure>` child of a share `<description>`, if there is
    /// exactly one and it is well-formed. `items` is the number of items in
    /// that description's manifest (digests must name one of them).
    pub fn from_description(description: &Element, items: usize) -> Option<Extension> {
        let mut found = description.children().filter(|c| c.is("secure", NS_SECURE));
        let secure = found.next()?;
        if found.next().is_some() {
            debug!("two <secure> extensions: read as none");
            return None;
        }
        match Extension::parse(secure, items) {
            Ok(ext) => Some(ext),
            Err(why) => {
                debug!(why, "malformed <secure> extension: read as none");
                None
            }
        }
    }

    fn parse(secure: &Element, items: usize) -> Result<Extension, &'static str> {
        let mut ext = Extension::default();
        let mut digests: Vec<Option<[u8; 32]>> = Vec::new();
        let mut any_digest = false;
        for (n, child) in secure.children().enumerate() {
            if n >= MAX_SECURE_CHILDREN {
                return Err("too many children");
            }
            if child.ns() != NS_SECURE {
                continue;
            }
            match child.name() {
                "fingerprint" => {
                    if ext.fingerprint.is_some() {
                        return Err("two fingerprints");
                    }
                    if child.attr("hash") != Some(FINGERPRINT_HASH) {
                        return Err("fingerprint hash is not sha-256");
                    }
                    if child.children().next().is_some() {
                        return Err("fingerprint holds elements");
                    }
                    ext.fingerprint =
                        Some(parse_fingerprint(child.text().trim()).ok_or("bad fingerprint")?);
                }
                "item" => {
                    let index: usize = child
                        .attr("index")
                        .filter(|s| !s.is_empty() && s.len() <= 10)
                        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|s| s.parse().ok())
                        .ok_or("bad item index")?;
                    if index >= items {
                        return Err("digest for an item that does not exist");
                    }
                    let digest = child
                        .attr("sha256")
                        .and_then(parse_hex32)
                        .ok_or("bad item sha256")?;
                    if !any_digest {
                        digests = vec![None; items];
                        any_digest = true;
                    }
                    let slot = digests.get_mut(index).ok_or("bad item index")?;
                    if slot.is_some() {
                        return Err("two digests for one item");
                    }
                    *slot = Some(digest);
                }
                "resume" => ext.resume = true,
                other => debug!(name = other, "unknown <secure> child ignored"),
            }
        }
        ext.digests = digests;
        Ok(ext)
    }

    /// The `<secure>` element.
    pub fn to_element(&self) -> Element {
        let mut b = Element::builder("secure", NS_SECURE);
        if let Some(fp) = &self.fingerprint {
            b = b.append(
                Element::builder("fingerprint", NS_SECURE)
                    .attr(nc!("hash"), FINGERPRINT_HASH)
                    .append(format_fingerprint(fp))
                    .build(),
            );
        }
        for (index, digest) in self.digests.iter().enumerate() {
            if let Some(d) = digest {
                b = b.append(
                    Element::builder("item", NS_SECURE)
                        .attr(nc!("index"), index.to_string())
                        .attr(nc!("sha256"), hex::encode(d))
                        .build(),
                );
            }
        }
        if self.resume {
            b = b.append(Element::bare("resume", NS_SECURE));
        }
        b.build()
    }
}

/// XEP-0320 form: upper-case hex bytes joined by colons (95 characters).
pub fn format_fingerprint(fp: &[u8; 32]) -> String {
    let mut s = String::with_capacity(95);
    for (i, b) in fp.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// Reads the XEP-0320 form (either case); exactly 32 bytes.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    if s.len() != 95 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut parts = s.split(':');
    for slot in &mut out {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *slot = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// 64 hex digits (lower case on the wire; upper case is read too).
fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(inner: &str) -> Element {
        format!(r#"<description xmlns="http://www.google.com/session/share">{inner}</description>"#)
            .parse()
            .unwrap()
    }

    #[test]
    fn round_trip() {
        let ext = Extension {
            fingerprint: Some([0xab; 32]),
            digests: vec![Some([1; 32]), None, Some([0xfe; 32])],
            resume: true,
        };
        let d = Element::builder("description", super::super::stanza::NS_SHARE)
            .append(ext.to_element())
            .build();
        assert_eq!(Extension::from_description(&d, 3), Some(ext));
        let bare = Extension::default();
        let d = Element::builder("description", super::super::stanza::NS_SHARE)
            .append(bare.to_element())
            .build();
        assert_eq!(Extension::from_description(&d, 0), Some(bare));
    }

    #[test]
    fn fingerprint_text_form() {
        let mut fp = [0u8; 32];
        fp[0] = 0xab;
        fp[31] = 0x0c;
        let s = format_fingerprint(&fp);
        assert_eq!(s.len(), 95);
        assert!(s.starts_with("AB:00:") && s.ends_with(":0C"));
        assert_eq!(parse_fingerprint(&s), Some(fp));
        assert_eq!(parse_fingerprint(&s.to_lowercase()), Some(fp));
        assert_eq!(parse_fingerprint(&s[..92]), None);
        assert_eq!(parse_fingerprint(&s.replace(':', "-")), None);
        assert_eq!(parse_fingerprint(&format!("{s}:00")), None);
        assert_eq!(parse_fingerprint(&"+1:".repeat(32)[..95]), None);
    }

    #[test]
    fn malformed_means_no_extension() {
        let fp = format_fingerprint(&[7; 32]);
        let good = format!(
            r#"<secure xmlns="{NS_SECURE}"><fingerprint hash="sha-256">{fp}</fingerprint></secure>"#
        );
        assert!(Extension::from_description(&desc(&good), 0).is_some());
        let d = "a".repeat(64);
        for bad in [
            // two extensions
            format!("{good}{good}"),
            // other hash, missing hash, short, garbage
            format!(
                r#"<secure xmlns="{NS_SECURE}"><fingerprint hash="sha-1">{fp}</fingerprint></secure>"#
            ),
            format!(r#"<secure xmlns="{NS_SECURE}"><fingerprint>{fp}</fingerprint></secure>"#),
            format!(
                r#"<secure xmlns="{NS_SECURE}"><fingerprint hash="sha-256">AB:CD</fingerprint></secure>"#
            ),
            format!(
                r#"<secure xmlns="{NS_SECURE}"><fingerprint hash="sha-256"><x/></fingerprint></secure>"#
            ),
            // two fingerprints
            format!(
                r#"<secure xmlns="{NS_SECURE}"><fingerprint hash="sha-256">{fp}</fingerprint><fingerprint hash="sha-256">{fp}</fingerprint></secure>"#
            ),
            // digest for a missing item, bad index, bad digest, duplicate
            format!(r#"<secure xmlns="{NS_SECURE}"><item index="1" sha256="{d}"/></secure>"#),
            format!(r#"<secure xmlns="{NS_SECURE}"><item index="-0" sha256="{d}"/></secure>"#),
            format!(r#"<secure xmlns="{NS_SECURE}"><item sha256="{d}"/></secure>"#),
            format!(r#"<secure xmlns="{NS_SECURE}"><item index="0" sha256="zz"/></secure>"#),
            format!(
                r#"<secure xmlns="{NS_SECURE}"><item index="0" sha256="{d}"/><item index="0" sha256="{d}"/></secure>"#
            ),
        ] {
            assert_eq!(Extension::from_description(&desc(&bad), 1), None, "{bad}");
        }
        // Another namespace is not ours: no extension, nothing else.
        let other = r#"<secure xmlns="urn:example:other"><resume/></secure>"#;
        assert_eq!(Extension::from_description(&desc(other), 0), None);
    }

    #[test]
    fn unknown_children_are_skipped() {
        let d = desc(&format!(
            r#"<secure xmlns="{NS_SECURE}"><future a="1"/><resume/><x xmlns="urn:other"/></secure>"#
        ));
        assert_eq!(
            Extension::from_description(&d, 0),
            Some(Extension {
                resume: true,
                ..Extension::default()
            })
        );
    }
}
