//! Typed Google session/share stanzas: parse from and write to
//! `minidom::Element` (docs/protocol.md §A, §B.1).
//!
//! Hand-written because no crate models these Google payloads: xmpp-parsers
//! knows XEP-0166 Jingle, not the pre-Jingle `http://www.google.com/session`
//! dialect that libjingle 0.4 and telepathy-gabble speak for file sharing.
//!
//! Parsing is lenient where real peers differ (attribute order, unknown
//! children, empty or full manifest in `accept`, odd `preference` values,
//! namespace prefixes, the seed's `type="host"`) and strict where safety
//! needs it: sizes are `u64` or absent, names are text of bounded length,
//! HTTP paths are printable ASCII starting with `/`, required attributes must
//! be present, and every list is bounded by a named constant below.

use std::net::{IpAddr, SocketAddr};

use jid::Jid;
use minidom::Element;
use tracing::debug;

use super::extension::Extension;
use crate::ice::{Candidate, CandidateType};

/// The session envelope namespace (`<session>`, legacy `<candidate>`).
pub const NS_SESSION: &str = "http://www.google.com/session";
/// The file-share application namespace (`<description>`, `<channel>`, …).
pub const NS_SHARE: &str = "http://www.google.com/session/share";
/// The Google p2p transport namespace (`<transport>`, `<candidate>`).
pub const NS_P2P: &str = "http://www.google.com/transport/p2p";
/// Stanza error conditions (RFC 6120).
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// The client stream namespace; `<iq>` and `<error>` live in it.
pub const NS_CLIENT: &str = "jabber:client";

/// Most `<file>`/`<folder>` items (in fact: element children of
/// `<manifest>`) accepted in one description. Real offers carry a handful;
/// this keeps a hostile manifest from costing more than a bounded walk.
pub const MAX_MANIFEST_ITEMS: usize = 10_000;
/// Longest item name in bytes (UTF-8). Common file systems allow 255; the
/// slack covers names that a sender did not shorten.
pub const MAX_NAME_BYTES: usize = 1024;
/// Longest `source-path` / `preview-path`; they end up in an HTTP request
/// line. LJ04 paths are 44 bytes, gabble's about 48.
pub const MAX_PATH_BYTES: usize = 1024;
/// Most candidates accepted in one `transport-info` / `candidates` message.
/// A host gathers a few per interface; LJ04 sends them one per message.
pub const MAX_CANDIDATES_PER_MESSAGE: usize = 64;
/// Longest channel name (`private-1`, `gabble-1`, `proxy-12`).
pub const MAX_CHANNEL_NAME_BYTES: usize = 64;
/// Longest session id. LJ04 uses a decimal u32, pidgin `purple…` strings.
pub const MAX_SESSION_ID_BYTES: usize = 128;
/// Longest candidate username: LJ04 `ParseCandidate` refuses more than 16
/// characters (and anything outside the base64 alphabet).
pub const MAX_USERNAME_CHARS: usize = 16;
/// Longest candidate password we store (it is never used on the wire).
pub const MAX_PASSWORD_BYTES: usize = 256;
/// Longest `protocol` / `network` attribute value we store.
pub const MAX_SHORT_ATTR_BYTES: usize = 64;
/// Most reason children of a `terminate` we record (they are only logged).
pub const MAX_TERMINATE_REASONS: usize = 8;

/// Build an attribute name for `ElementBuilder::attr` (docs/crates.md §2).
/// Only ever called with literal names; `xml_ncname!` needs an rxml feature
/// this layer does not want to rely on.
macro_rules! nc {
    ($s:literal) => {
        $crate::session::stanza::ncname($s)
    };
}
pub(crate) use nc;

/// An attribute name from a literal. Every caller passes a constant, valid
/// NCName (never peer or user data), so this cannot fail at run time; the
/// unit test `literal_ncnames_are_valid` covers each one.
pub(crate) fn ncname(s: &'static str) -> minidom::rxml::NcName {
    #[allow(clippy::expect_used)]
    minidom::rxml::NcName::try_from(s).expect("literal attribute names are valid NCNames")
}

/// Why a session payload could not be understood. Each maps to the error
/// reply LJ04 would send ([`StanzaError::condition`]); the `Display` text is
/// used as the reply's `<text>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StanzaError {
    /// The payload is not a `<session>` in [`NS_SESSION`].
    #[error("not a session message")]
    NotSession,
    /// A required attribute is absent.
    #[error("element <{element}> missing required attribute '{attr}'")]
    MissingAttribute {
        /// Element local name.
        element: &'static str,
        /// Attribute name.
        attr: &'static str,
    },
    /// A required child element is absent.
    #[error("element <{element}> missing required child <{child}>")]
    MissingChild {
        /// Element local name.
        element: &'static str,
        /// Child local name.
        child: &'static str,
    },
    /// An attribute or text has a value we refuse.
    #[error("invalid {what} on <{element}>: {reason}")]
    BadValue {
        /// Element local name.
        element: &'static str,
        /// Attribute name or "text".
        what: &'static str,
        /// Short human reason.
        reason: &'static str,
    },
    /// The `type` attribute names no action we know.
    #[error("unknown session message type")]
    UnknownAction(String),
    /// The initiate's `<description>` is not in [`NS_SHARE`] (or absent).
    #[error("unknown session description type")]
    UnknownDescription,
    /// More than [`MAX_MANIFEST_ITEMS`] manifest children.
    #[error("manifest has too many items (limit {MAX_MANIFEST_ITEMS})")]
    TooManyItems,
    /// More than [`MAX_CANDIDATES_PER_MESSAGE`] candidates in one message.
    #[error("too many candidates in one message (limit {MAX_CANDIDATES_PER_MESSAGE})")]
    TooManyCandidates,
    /// A `transport-accept` whose p2p `<transport>` is not empty.
    #[error("transport-accept is not acceptable")]
    TransportAnswerNotAcceptable,
    /// A `transport-accept` with more than one p2p `<transport>`.
    #[error("transport-accept has two answers")]
    TransportAnswerTwice,
    /// A `transport-accept` without a p2p `<transport>`.
    #[error("no supported transport in answer")]
    NoSupportedTransport,
}

impl StanzaError {
    /// The stanza error condition LJ04 uses for this failure (§A.4, §A.10).
    pub fn condition(&self) -> crate::session::Condition {
        match self {
            StanzaError::NoSupportedTransport => crate::session::Condition::NotAllowed,
            _ => crate::session::Condition::BadRequest,
        }
    }
}

// ---------------------------------------------------------------------------
// small helpers

fn req_attr<'a>(
    el: &'a Element,
    element: &'static str,
    attr: &'static str,
) -> Result<&'a str, StanzaError> {
    el.attr(attr)
        .ok_or(StanzaError::MissingAttribute { element, attr })
}

/// Strict unsigned decimal: ASCII digits only (no sign, no spaces), fits the
/// type. `"-1"`, `"+5"`, `" 5"`, `""` and `2^70` are all refused.
fn parse_decimal<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || s.len() > 40 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn bad(element: &'static str, what: &'static str, reason: &'static str) -> StanzaError {
    StanzaError::BadValue {
        element,
        what,
        reason,
    }
}

/// The text content of an element that must hold text only.
fn text_only(el: &Element, element: &'static str) -> Result<String, StanzaError> {
    if el.children().next().is_some() {
        return Err(bad(element, "text", "must be text, not elements"));
    }
    Ok(el.text())
}

// ---------------------------------------------------------------------------
// actions and the envelope

/// A session action (the `type` attribute of `<session>`, §A.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Sender offers files.
    Initiate,
    /// Receiver takes the offer.
    Accept,
    /// Receiver declines (LJ04).
    Reject,
    /// Redirect to another JID (LJ04; never seen for file sharing).
    Redirect,
    /// Application info: `<channel>` or `<complete>`.
    Info,
    /// Receiver answers the transport offer.
    TransportAccept,
    /// Candidates inside a p2p `<transport>`.
    TransportInfo,
    /// End of session, either side, any time.
    Terminate,
    /// Legacy (libjingle 0.3) candidates in the session namespace.
    Candidates,
}

impl Action {
    /// Wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Initiate => "initiate",
            Action::Accept => "accept",
            Action::Reject => "reject",
            Action::Redirect => "redirect",
            Action::Info => "info",
            Action::TransportAccept => "transport-accept",
            Action::TransportInfo => "transport-info",
            Action::Terminate => "terminate",
            Action::Candidates => "candidates",
        }
    }

    /// Parses the wire spelling (exact, case-sensitive like LJ04).
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "initiate" => Action::Initiate,
            "accept" => Action::Accept,
            "reject" => Action::Reject,
            "redirect" => Action::Redirect,
            "info" => Action::Info,
            "transport-accept" => Action::TransportAccept,
            "transport-info" => Action::TransportInfo,
            "terminate" => Action::Terminate,
            "candidates" => Action::Candidates,
            _ => return None,
        })
    }

    /// Messages that carry candidates; errors in reply to them are not fatal.
    pub fn is_transport_message(self) -> bool {
        matches!(self, Action::TransportInfo | Action::Candidates)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The three `<session>` attributes, read before the payload so that the
/// session can be looked up (LJ04 `IsSessionMessage`, `FindSessionForStanza`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionHeader {
    /// Raw `type`; see [`SessionHeader::action`].
    pub action_name: String,
    /// Session id (opaque text, bounded).
    pub id: String,
    /// The initiator's JID.
    pub initiator: Jid,
}

impl SessionHeader {
    /// The action if it is one we know.
    pub fn action(&self) -> Option<Action> {
        Action::parse(&self.action_name)
    }
}

impl TryFrom<&Element> for SessionHeader {
    type Error = StanzaError;

    fn try_from(el: &Element) -> Result<Self, StanzaError> {
        if !el.is("session", NS_SESSION) {
            return Err(StanzaError::NotSession);
        }
        let action_name = req_attr(el, "session", "type")?;
        let id = req_attr(el, "session", "id")?;
        let initiator = req_attr(el, "session", "initiator")?;
        if id.is_empty() || id.len() > MAX_SESSION_ID_BYTES {
            return Err(bad("session", "id", "empty or too long"));
        }
        if action_name.len() > 64 {
            return Err(StanzaError::UnknownAction(
                action_name.chars().take(64).collect(),
            ));
        }
        let initiator =
            Jid::new(initiator).map_err(|_| bad("session", "initiator", "not a JID"))?;
        Ok(SessionHeader {
            action_name: action_name.to_owned(),
            id: id.to_owned(),
            initiator,
        })
    }
}

// ---------------------------------------------------------------------------
// manifest and description

/// `<file>` or `<folder>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    /// A single file.
    File,
    /// A folder, transferred as a tar stream.
    Folder,
}

/// Image dimensions announced with a `<file>` (preview hint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageSize {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// One manifest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestItem {
    /// File or folder.
    pub kind: ItemKind,
    /// The `<name>` text, as sent (sanitising for the file system is the
    /// transfer layer's job). Never empty; at most [`MAX_NAME_BYTES`].
    pub name: String,
    /// Size in bytes if announced.
    pub size: Option<u64>,
    /// Image dimensions (files only).
    pub image: Option<ImageSize>,
}

impl ManifestItem {
    /// A plain file.
    pub fn file(name: impl Into<String>, size: u64) -> Self {
        ManifestItem {
            kind: ItemKind::File,
            name: name.into(),
            size: Some(size),
            image: None,
        }
    }

    /// A folder with the total size of its files.
    pub fn folder(name: impl Into<String>, size: u64) -> Self {
        ManifestItem {
            kind: ItemKind::Folder,
            name: name.into(),
            size: Some(size),
            image: None,
        }
    }

    fn parse(el: &Element, kind: ItemKind) -> Result<Option<Self>, StanzaError> {
        let element = match kind {
            ItemKind::File => "file",
            ItemKind::Folder => "folder",
        };
        let size = match el.attr("size") {
            None => None,
            Some(s) => Some(parse_decimal::<u64>(s).ok_or(bad(
                element,
                "size",
                "not an unsigned 64-bit",
            ))?),
        };
        // Items without a name are skipped (LJ04 TranslateSessionDescription).
        let Some(name_el) = el.get_child("name", NS_SHARE) else {
            debug!("manifest {element} without <name> skipped");
            return Ok(None);
        };
        let name = text_only(name_el, "name")?;
        if name.is_empty() {
            debug!("manifest {element} with empty <name> skipped");
            return Ok(None);
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(bad("name", "text", "too long"));
        }
        let image = match kind {
            ItemKind::Folder => None,
            ItemKind::File => el.get_child("image", NS_SHARE).and_then(|img| {
                // Lenient: unreadable dimensions make it a plain file (GAB
                // accepts any value; LJ04 drops out-of-range images).
                let width = img.attr("width").and_then(parse_decimal::<u32>)?;
                let height = img.attr("height").and_then(parse_decimal::<u32>)?;
                Some(ImageSize { width, height })
            }),
        };
        Ok(Some(ManifestItem {
            kind,
            name,
            size,
            image,
        }))
    }

    fn to_element(&self) -> Element {
        let tag = match self.kind {
            ItemKind::File => "file",
            ItemKind::Folder => "folder",
        };
        let mut b = Element::builder(tag, NS_SHARE);
        if let Some(size) = self.size {
            b = b.attr(nc!("size"), size.to_string());
        }
        b = b.append(
            Element::builder("name", NS_SHARE)
                .append(self.name.as_str())
                .build(),
        );
        if let (ItemKind::File, Some(img)) = (self.kind, self.image) {
            b = b.append(
                Element::builder("image", NS_SHARE)
                    .attr(nc!("width"), img.width.to_string())
                    .attr(nc!("height"), img.height.to_string())
                    .build(),
            );
        }
        b.build()
    }
}

/// The list of offered items, in offer order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// Items (at most [`MAX_MANIFEST_ITEMS`]).
    pub items: Vec<ManifestItem>,
}

impl Manifest {
    /// Sum of the announced sizes (saturating; unknown sizes count 0).
    pub fn total_size(&self) -> u64 {
        self.items
            .iter()
            .fold(0u64, |acc, i| acc.saturating_add(i.size.unwrap_or(0)))
    }
}

impl TryFrom<&Element> for Manifest {
    type Error = StanzaError;

    fn try_from(el: &Element) -> Result<Self, StanzaError> {
        let mut items = Vec::new();
        for (n, child) in el.children().enumerate() {
            if n >= MAX_MANIFEST_ITEMS {
                return Err(StanzaError::TooManyItems);
            }
            let item = if child.is("file", NS_SHARE) {
                ManifestItem::parse(child, ItemKind::File)?
            } else if child.is("folder", NS_SHARE) {
                ManifestItem::parse(child, ItemKind::Folder)?
            } else {
                debug!(name = child.name(), "unknown manifest child skipped");
                None
            };
            items.extend(item);
        }
        Ok(Manifest { items })
    }
}

impl From<&Manifest> for Element {
    fn from(m: &Manifest) -> Element {
        Element::builder("manifest", NS_SHARE)
            .append_all(m.items.iter().map(ManifestItem::to_element))
            .build()
    }
}

/// Is `s` acceptable as an HTTP path prefix (it is put in a request line)?
pub fn is_valid_http_path(s: &str) -> bool {
    s.starts_with('/') && s.len() <= MAX_PATH_BYTES && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The share `<description>`: manifest plus HTTP path prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShareDescription {
    /// Offered items; empty in an LJ04-style `accept`.
    pub manifest: Manifest,
    /// `<protocol><http>` present.
    pub supports_http: bool,
    /// `<url name="source-path">`, e.g. `/temporary/<32 hex>/`.
    pub source_path: Option<String>,
    /// `<url name="preview-path">`.
    pub preview_path: Option<String>,
    /// gshare's private `<secure>` child (see [`super::extension`]); `None`
    /// for classic peers and for anything malformed.
    pub extension: Option<Extension>,
}

impl ShareDescription {
    /// What an LJ04 receiver puts in its `accept`: `<manifest/>` and a bare
    /// `<http/>` (§A.5).
    pub fn accept_answer() -> Self {
        ShareDescription {
            manifest: Manifest::default(),
            supports_http: true,
            source_path: None,
            preview_path: None,
            extension: None,
        }
    }
}

impl TryFrom<&Element> for ShareDescription {
    type Error = StanzaError;

    fn try_from(el: &Element) -> Result<Self, StanzaError> {
        if !el.is("description", NS_SHARE) {
            return Err(StanzaError::UnknownDescription);
        }
        // A missing <manifest> reads as empty (lenient; an accept may omit it).
        let manifest = match el.get_child("manifest", NS_SHARE) {
            Some(m) => Manifest::try_from(m)?,
            None => Manifest::default(),
        };
        let extension = Extension::from_description(el, manifest.items.len());
        let mut desc = ShareDescription {
            manifest,
            extension,
            ..ShareDescription::default()
        };
        let http = el
            .get_child("protocol", NS_SHARE)
            .and_then(|p| p.get_child("http", NS_SHARE));
        if let Some(http) = http {
            desc.supports_http = true;
            for url in http.children().filter(|c| c.is("url", NS_SHARE)).take(16) {
                let slot = match url.attr("name") {
                    Some("source-path") => &mut desc.source_path,
                    Some("preview-path") => &mut desc.preview_path,
                    _ => continue,
                };
                let path = text_only(url, "url")?;
                if !is_valid_http_path(&path) {
                    return Err(bad(
                        "url",
                        "text",
                        "not a printable-ASCII path starting with /",
                    ));
                }
                if slot.is_none() {
                    *slot = Some(path);
                }
            }
        }
        Ok(desc)
    }
}

impl From<&ShareDescription> for Element {
    fn from(d: &ShareDescription) -> Element {
        let mut protocol = Element::builder("protocol", NS_SHARE);
        if d.supports_http {
            let mut http = Element::builder("http", NS_SHARE);
            for (name, value) in [
                ("source-path", &d.source_path),
                ("preview-path", &d.preview_path),
            ] {
                if let Some(v) = value {
                    http = http.append(
                        Element::builder("url", NS_SHARE)
                            .attr(nc!("name"), name)
                            .append(v.as_str())
                            .build(),
                    );
                }
            }
            protocol = protocol.append(http.build());
        }
        // `<secure>` goes last: classic peers look up the first `<manifest>`
        // and `<protocol>` by name and skip everything else (extension.rs).
        Element::builder("description", NS_SHARE)
            .append(Element::from(&d.manifest))
            .append(protocol.build())
            .append_all(d.extension.as_ref().map(Extension::to_element))
            .build()
    }
}

// ---------------------------------------------------------------------------
// candidates

/// Where a `<candidate>` element lives: inside a p2p `<transport>`
/// (modern) or directly under `<session>` (legacy `candidates`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandidateNs {
    /// [`NS_P2P`].
    P2p,
    /// [`NS_SESSION`] (legacy).
    Session,
}

impl CandidateNs {
    fn ns(self) -> &'static str {
        match self {
            CandidateNs::P2p => NS_P2P,
            CandidateNs::Session => NS_SESSION,
        }
    }
}

fn is_base64_alphabet(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Parses one `<candidate>` (either namespace). `Ok(None)` for a
/// well-formed candidate we cannot use (its address is not an IP literal).
///
/// Required, as LJ04 `ParseCandidate`: `name`, `address`, `port`,
/// `username`, `preference`, `protocol`, `generation`; optional `password`
/// (default empty), `type` (default local), `network` (default `0`).
pub fn parse_candidate(el: &Element) -> Result<Option<Candidate>, StanzaError> {
    const E: &str = "candidate";
    let name = req_attr(el, E, "name")?;
    let address = req_attr(el, E, "address")?;
    let port = req_attr(el, E, "port")?;
    let username = req_attr(el, E, "username")?;
    let preference = req_attr(el, E, "preference")?;
    let protocol = req_attr(el, E, "protocol")?;
    let generation = req_attr(el, E, "generation")?;
    let password = el.attr("password").unwrap_or("");
    let network = el.attr("network").unwrap_or("0");

    if name.is_empty() || name.len() > MAX_CHANNEL_NAME_BYTES {
        return Err(bad(E, "name", "empty or too long"));
    }
    let port: u16 = parse_decimal(port).ok_or(bad(E, "port", "not a port number"))?;
    if username.is_empty()
        || username.chars().count() > MAX_USERNAME_CHARS
        || !is_base64_alphabet(username)
    {
        return Err(bad(E, "username", "not 1..=16 base64 characters"));
    }
    // Peers send odd values (gabble: 0.000015, 0.000000); never refuse a
    // number, but a non-finite one is read as 0.
    let preference: f32 = preference
        .trim()
        .parse()
        .map_err(|_| bad(E, "preference", "not a number"))?;
    let preference = if preference.is_finite() {
        preference
    } else {
        0.0
    };
    if protocol.is_empty() || protocol.len() > MAX_SHORT_ATTR_BYTES {
        return Err(bad(E, "protocol", "empty or too long"));
    }
    let generation: u32 =
        parse_decimal(generation).ok_or(bad(E, "generation", "not an unsigned integer"))?;
    let kind = match el.attr("type") {
        None => CandidateType::Local,
        Some(t) => CandidateType::parse(t).ok_or(bad(E, "type", "not local, stun or relay"))?,
    };
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(bad(E, "password", "too long"));
    }
    if network.len() > MAX_SHORT_ATTR_BYTES {
        return Err(bad(E, "network", "too long"));
    }
    // IPv6 link-local addresses may carry a zone ("fe80::1%eth0").
    let ip = address
        .parse::<IpAddr>()
        .ok()
        .or_else(|| address.split_once('%').and_then(|(a, _)| a.parse().ok()));
    let Some(ip) = ip else {
        debug!(address, "candidate with a non-IP address ignored");
        return Ok(None);
    };
    Ok(Some(Candidate {
        name: name.to_owned(),
        address: SocketAddr::new(ip, port),
        username: username.to_owned(),
        password: password.to_owned(),
        preference,
        protocol: protocol.to_owned(),
        kind,
        generation,
        network: network.to_owned(),
    }))
}

/// Writes a `<candidate>` with all ten attributes (§B.1): a `network` that
/// is not a decimal number is written as `0` (gabble expects an integer).
pub fn candidate_to_element(c: &Candidate, ns: CandidateNs) -> Element {
    let network = if !c.network.is_empty() && c.network.bytes().all(|b| b.is_ascii_digit()) {
        c.network.as_str()
    } else {
        "0"
    };
    let preference = if c.preference.is_finite() {
        c.preference
    } else {
        0.0
    };
    Element::builder("candidate", ns.ns())
        .attr(nc!("name"), c.name.as_str())
        .attr(nc!("address"), c.address.ip().to_string())
        .attr(nc!("port"), c.address.port().to_string())
        .attr(nc!("preference"), preference.to_string())
        .attr(nc!("username"), c.username.as_str())
        .attr(nc!("protocol"), c.protocol.as_str())
        .attr(nc!("generation"), c.generation.to_string())
        .attr(nc!("password"), c.password.as_str())
        .attr(nc!("type"), c.kind.as_str())
        .attr(nc!("network"), network)
        .build()
}

fn parse_candidate_list<'a>(
    els: impl Iterator<Item = &'a Element>,
) -> Result<Vec<Candidate>, StanzaError> {
    let mut out = Vec::new();
    for (n, el) in els.enumerate() {
        if n >= MAX_CANDIDATES_PER_MESSAGE {
            return Err(StanzaError::TooManyCandidates);
        }
        out.extend(parse_candidate(el)?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// info payloads

/// One child of an `info` message that we understand (§A.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InfoItem {
    /// `<channel name=".."/>`: the peer creates a transport channel.
    Channel {
        /// Channel name (`private-1`, `gabble-1`, …).
        name: String,
    },
    /// `<complete/>`: the receiver has fetched every item.
    Complete,
}

impl InfoItem {
    fn to_element(&self) -> Element {
        match self {
            InfoItem::Channel { name } => Element::builder("channel", NS_SHARE)
                .attr(nc!("name"), name.as_str())
                .build(),
            InfoItem::Complete => Element::bare("complete", NS_SHARE),
        }
    }
}

// ---------------------------------------------------------------------------
// the whole message

/// The payload of a session message, by action.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionBody {
    /// An offer. `p2p_transport` is false for the legacy dialect (no
    /// `<transport>` in the initiate, §A.3).
    Initiate {
        /// The offer.
        description: ShareDescription,
        /// A p2p `<transport>` was present.
        p2p_transport: bool,
    },
    /// The offer was taken. Gabble repeats the whole manifest and adds a
    /// `<transport>`; LJ04 sends `<manifest/>` and `<http/>`.
    Accept {
        /// The answer description (contents ignored by the sender).
        description: ShareDescription,
        /// A p2p `<transport>` was present.
        p2p_transport: bool,
    },
    /// Decline (LJ04).
    Reject,
    /// Redirect (unsupported; ends the session).
    Redirect,
    /// End of session; child local names are recorded as reasons.
    Terminate {
        /// Local names of the children (logged only).
        reasons: Vec<String>,
    },
    /// Empty p2p transport answer.
    TransportAccept,
    /// Candidates in a p2p `<transport>`.
    TransportInfo {
        /// The candidates (at most [`MAX_CANDIDATES_PER_MESSAGE`]).
        candidates: Vec<Candidate>,
    },
    /// Legacy candidates directly under `<session>`.
    Candidates {
        /// The candidates (at most [`MAX_CANDIDATES_PER_MESSAGE`]).
        candidates: Vec<Candidate>,
    },
    /// Share info; unknown children are dropped.
    Info {
        /// Items understood, in document order.
        items: Vec<InfoItem>,
    },
}

impl SessionBody {
    /// The action this body is sent with.
    pub fn action(&self) -> Action {
        match self {
            SessionBody::Initiate { .. } => Action::Initiate,
            SessionBody::Accept { .. } => Action::Accept,
            SessionBody::Reject => Action::Reject,
            SessionBody::Redirect => Action::Redirect,
            SessionBody::Terminate { .. } => Action::Terminate,
            SessionBody::TransportAccept => Action::TransportAccept,
            SessionBody::TransportInfo { .. } => Action::TransportInfo,
            SessionBody::Candidates { .. } => Action::Candidates,
            SessionBody::Info { .. } => Action::Info,
        }
    }

    /// Parses the children of `session` for `action`.
    pub fn parse(action: Action, session: &Element) -> Result<SessionBody, StanzaError> {
        let p2p_transports = || session.children().filter(|c| c.is("transport", NS_P2P));
        Ok(match action {
            Action::Initiate => {
                let desc_el = session
                    .children()
                    .find(|c| c.name() == "description")
                    .ok_or(StanzaError::UnknownDescription)?;
                let description = ShareDescription::try_from(desc_el)?;
                if description.source_path.is_none() {
                    return Err(StanzaError::MissingChild {
                        element: "http",
                        child: "url name='source-path'",
                    });
                }
                SessionBody::Initiate {
                    description,
                    p2p_transport: p2p_transports().next().is_some(),
                }
            }
            Action::Accept => {
                let desc_el = session.get_child("description", NS_SHARE).ok_or(
                    StanzaError::MissingChild {
                        element: "session",
                        child: "description",
                    },
                )?;
                // The sender ignores the answer's contents (gabble echoes the
                // manifest, LJ04 sends it empty), so an unreadable one is not
                // worth failing the accept over: read it as empty.
                let description = ShareDescription::try_from(desc_el).unwrap_or_else(|e| {
                    debug!(error = %e, "unreadable accept description read as empty");
                    ShareDescription::default()
                });
                SessionBody::Accept {
                    description,
                    p2p_transport: p2p_transports().next().is_some(),
                }
            }
            Action::Reject => SessionBody::Reject,
            Action::Redirect => SessionBody::Redirect,
            Action::Terminate => SessionBody::Terminate {
                reasons: session
                    .children()
                    .take(MAX_TERMINATE_REASONS)
                    .map(|c| c.name().chars().take(64).collect())
                    .collect(),
            },
            Action::TransportAccept => {
                let mut it = p2p_transports();
                let Some(t) = it.next() else {
                    return Err(StanzaError::NoSupportedTransport);
                };
                if it.next().is_some() {
                    return Err(StanzaError::TransportAnswerTwice);
                }
                if t.children().next().is_some() {
                    return Err(StanzaError::TransportAnswerNotAcceptable);
                }
                SessionBody::TransportAccept
            }
            Action::TransportInfo => {
                let cands = p2p_transports()
                    .flat_map(|t| t.children())
                    .filter(|c| c.is("candidate", NS_P2P));
                SessionBody::TransportInfo {
                    candidates: parse_candidate_list(cands)?,
                }
            }
            Action::Candidates => {
                // LJ04 writes them in the session namespace; take p2p ones too.
                let cands = session
                    .children()
                    .filter(|c| c.is("candidate", NS_SESSION) || c.is("candidate", NS_P2P));
                SessionBody::Candidates {
                    candidates: parse_candidate_list(cands)?,
                }
            }
            Action::Info => {
                let mut items = Vec::new();
                for c in session.children().take(MAX_CANDIDATES_PER_MESSAGE) {
                    if c.is("channel", NS_SHARE) {
                        let name = req_attr(c, "channel", "name")?;
                        if name.is_empty() || name.len() > MAX_CHANNEL_NAME_BYTES {
                            return Err(bad("channel", "name", "empty or too long"));
                        }
                        items.push(InfoItem::Channel {
                            name: name.to_owned(),
                        });
                    } else if c.is("complete", NS_SHARE) {
                        items.push(InfoItem::Complete);
                    } else {
                        debug!(name = c.name(), "unknown info child ignored");
                    }
                }
                SessionBody::Info { items }
            }
        })
    }

    fn children(&self) -> Vec<Element> {
        let p2p_transport = || Element::bare("transport", NS_P2P);
        match self {
            SessionBody::Initiate {
                description,
                p2p_transport: t,
            }
            | SessionBody::Accept {
                description,
                p2p_transport: t,
            } => {
                let mut v = vec![Element::from(description)];
                if *t {
                    v.push(p2p_transport());
                }
                v
            }
            SessionBody::Reject | SessionBody::Redirect => vec![],
            SessionBody::Terminate { reasons } => reasons
                .iter()
                .filter_map(|r| {
                    // Only well-formed local names survive re-serialisation.
                    let ok = minidom::rxml::NcName::try_from(r.as_str()).is_ok();
                    ok.then(|| Element::bare(r.as_str(), NS_SESSION))
                })
                .collect(),
            SessionBody::TransportAccept => vec![p2p_transport()],
            SessionBody::TransportInfo { candidates } => vec![
                Element::builder("transport", NS_P2P)
                    .append_all(
                        candidates
                            .iter()
                            .map(|c| candidate_to_element(c, CandidateNs::P2p)),
                    )
                    .build(),
            ],
            SessionBody::Candidates { candidates } => candidates
                .iter()
                .map(|c| candidate_to_element(c, CandidateNs::Session))
                .collect(),
            SessionBody::Info { items } => items.iter().map(InfoItem::to_element).collect(),
        }
    }
}

/// A complete `<session>` message.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionMessage {
    /// Session id.
    pub id: String,
    /// Initiator JID.
    pub initiator: Jid,
    /// Action and payload.
    pub body: SessionBody,
}

impl SessionMessage {
    /// The action.
    pub fn action(&self) -> Action {
        self.body.action()
    }
}

impl TryFrom<&Element> for SessionMessage {
    type Error = StanzaError;

    fn try_from(el: &Element) -> Result<Self, StanzaError> {
        let header = SessionHeader::try_from(el)?;
        let action = header
            .action()
            .ok_or_else(|| StanzaError::UnknownAction(header.action_name.clone()))?;
        Ok(SessionMessage {
            body: SessionBody::parse(action, el)?,
            id: header.id,
            initiator: header.initiator,
        })
    }
}

impl From<&SessionMessage> for Element {
    fn from(m: &SessionMessage) -> Element {
        Element::builder("session", NS_SESSION)
            .attr(nc!("type"), m.action().as_str())
            .attr(nc!("id"), m.id.as_str())
            .attr(nc!("initiator"), m.initiator.to_string())
            .append_all(m.body.children())
            .build()
    }
}

/// `<unknown-channel-name xmlns=p2p name=".."/>`, the extra error element
/// LJ04 adds when a candidate names a channel it does not have (§A.9).
pub fn unknown_channel_name_element(name: &str) -> Element {
    Element::builder("unknown-channel-name", NS_P2P)
        .attr(nc!("name"), name)
        .build()
}

#[cfg(test)]
mod tests {
    use super::ncname;

    /// Every literal passed to `nc!` anywhere in the session layer.
    #[test]
    fn literal_ncnames_are_valid() {
        for n in [
            "type",
            "id",
            "initiator",
            "size",
            "name",
            "width",
            "height",
            "address",
            "port",
            "preference",
            "username",
            "protocol",
            "generation",
            "password",
            "network",
            "to",
            "from",
            "lang",
            "hash",
            "index",
            "sha256",
        ] {
            assert_eq!(ncname(n).as_str(), n);
        }
    }
}
