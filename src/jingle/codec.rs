//! The `<jingle>` element (XEP-0166), the file-transfer description
//! (XEP-0234, namespace `:5`), XEP-0300 hashes and the two transports'
//! elements (XEP-0260 S5B, XEP-0261 IBB), read and written on `minidom`.
//!
//! Hand-written rather than taken from `xmpp-parsers` 0.23, whose modules
//! were checked against the XEPs and the peers we must read
//! (Libervia 0.9, see tests/jingle_libervia.rs): its `jingle_ft::File` rejects `<hash-used/>`,
//! which Libervia puts in every offer; its `jingle_s5b::Candidate` keeps
//! every field private with no accessor, so a received candidate cannot be
//! read; its `hashes::Hash` takes the base64 text literally, while Libervia
//! sends base64 of the *hex* string. The element shapes are small; every
//! bound on what a peer may make us store is a constant below.

use std::fmt;

use base64::Engine as _;
use jid::Jid;
use minidom::Element;

use crate::session::stanza::ncname;

/// XEP-0166 namespace.
pub const NS_JINGLE: &str = "urn:xmpp:jingle:1";
/// XEP-0166 error conditions (`<unknown-session/>`, `<out-of-order/>`, …).
pub const NS_JINGLE_ERRORS: &str = "urn:xmpp:jingle:errors:1";
/// XEP-0234 file transfer, version 5 (what Libervia and Conversations speak).
pub const NS_JINGLE_FT: &str = "urn:xmpp:jingle:apps:file-transfer:5";
/// XEP-0260 SOCKS5 bytestreams transport.
pub const NS_JINGLE_S5B: &str = "urn:xmpp:jingle:transports:s5b:1";
/// XEP-0261 in-band bytestreams transport.
pub const NS_JINGLE_IBB: &str = "urn:xmpp:jingle:transports:ibb:1";
/// XEP-0300 hashes.
pub const NS_HASHES: &str = "urn:xmpp:hashes:2";
/// gshare's private marker in a `<file>`: the file is a folder's tar
/// stream, which a receiving gshare unpacks (docs/protocol.md §H.4).
/// Other clients skip the unknown child and save a plain `.tar`.
pub const NS_GSHARE_FOLDER: &str = "urn:gshare:folder:0";

/// Most `<content>` elements we read from one `<jingle>` (one per file; a
/// larger offer is refused with `bad-request`).
pub const MAX_CONTENTS: usize = 64;
/// Most candidates we keep from one S5B transport (XEP-0260 peers offer a
/// handful: one per interface plus a proxy).
pub const MAX_CANDIDATES: usize = 16;
/// Most `<hash>` / `<hash-used>` elements kept per file (one per algorithm).
pub const MAX_HASHES: usize = 8;
/// Longest text we keep from a peer: file name, description, media type,
/// candidate host, reason text, ids. Longer values are refused.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Largest decoded digest we keep (SHA-512 is 64 bytes; base64-of-hex
/// doubles that).
pub const MAX_DIGEST_BYTES: usize = 128;

/// Why a `<jingle>` element could not be read. Each maps to `bad-request`
/// (or `feature-not-implemented` for an unknown action).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Not a `<jingle>` in [`NS_JINGLE`].
    #[error("the payload is not a Jingle element")]
    NotJingle,
    /// A required attribute is absent.
    #[error("the Jingle element lacks its {0} attribute")]
    Missing(&'static str),
    /// An attribute or text has a value we cannot read.
    #[error("the Jingle element has an invalid {0}")]
    Invalid(&'static str),
    /// An action this implementation does not know.
    #[error("the Jingle action {0} is not supported")]
    UnknownAction(String),
    /// More children or longer text than the bounds above allow.
    #[error("the Jingle element is larger than this client accepts ({0})")]
    TooLarge(&'static str),
}

fn text_attr(el: &Element, name: &'static str) -> Result<Option<String>, CodecError> {
    match el.attr(name) {
        None => Ok(None),
        Some(v) if v.len() > MAX_TEXT_BYTES => Err(CodecError::TooLarge(name)),
        Some(v) => Ok(Some(v.to_owned())),
    }
}

fn req_attr(el: &Element, name: &'static str) -> Result<String, CodecError> {
    text_attr(el, name)?.ok_or(CodecError::Missing(name))
}

fn bounded_text(el: &Element, what: &'static str) -> Result<String, CodecError> {
    let t = el.text();
    if t.len() > MAX_TEXT_BYTES {
        return Err(CodecError::TooLarge(what));
    }
    Ok(t)
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v,)+ }
        impl $name {
            /// The wire form.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s,)+ }
            }
            /// Reads the wire form.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$v),)+ _ => None }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// XEP-0166 §7.2 actions (the ones file transfer uses, plus those we
    /// must recognise to refuse them properly).
    Action {
        /// Start a session.
        SessionInitiate => "session-initiate",
        /// The responder accepts.
        SessionAccept => "session-accept",
        /// Either side ends the session.
        SessionTerminate => "session-terminate",
        /// Informational (XEP-0234 `checksum`, `received`; empty = ping).
        SessionInfo => "session-info",
        /// Transport details (candidates, candidate-used, …).
        TransportInfo => "transport-info",
        /// Propose another transport (S5B → IBB fallback).
        TransportReplace => "transport-replace",
        /// Accept a replacement.
        TransportAccept => "transport-accept",
        /// Refuse a replacement.
        TransportReject => "transport-reject",
        /// Add a content (refused).
        ContentAdd => "content-add",
        /// Accept an added content.
        ContentAccept => "content-accept",
        /// Refuse an added content.
        ContentReject => "content-reject",
        /// Remove a content (one file of several declined).
        ContentRemove => "content-remove",
        /// Change `senders` (refused).
        ContentModify => "content-modify",
        /// Description change (refused).
        DescriptionInfo => "description-info",
        /// Security change (refused).
        SecurityInfo => "security-info",
    }
);

string_enum!(
    /// Who created a content.
    Creator {
        /// The session initiator.
        Initiator => "initiator",
        /// The session responder.
        Responder => "responder",
    }
);

string_enum!(
    /// Who sends media in a content (XEP-0166 §7.3).
    Senders {
        /// Both directions.
        Both => "both",
        /// Only the initiator (a file offer).
        Initiator => "initiator",
        /// Only the responder (a file request).
        Responder => "responder",
        /// Nobody.
        None => "none",
    }
);

string_enum!(
    /// XEP-0166 §7.4 reason conditions.
    ReasonKind {
        /// Another session was chosen.
        AlternativeSession => "alternative-session",
        /// The peer is busy.
        Busy => "busy",
        /// The session was cancelled.
        Cancel => "cancel",
        /// Connectivity failed.
        ConnectivityError => "connectivity-error",
        /// The user declined.
        Decline => "decline",
        /// The session lasted too long.
        Expired => "expired",
        /// The application failed.
        FailedApplication => "failed-application",
        /// The transport failed.
        FailedTransport => "failed-transport",
        /// Generic error.
        GeneralError => "general-error",
        /// Gone.
        Gone => "gone",
        /// Parameters incompatible.
        IncompatibleParameters => "incompatible-parameters",
        /// Media error.
        MediaError => "media-error",
        /// Security error.
        SecurityError => "security-error",
        /// Completed normally.
        Success => "success",
        /// A timer expired.
        Timeout => "timeout",
        /// No application we support.
        UnsupportedApplications => "unsupported-applications",
        /// No transport we support.
        UnsupportedTransports => "unsupported-transports",
    }
);

/// A `<reason>`: condition and optional text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// The condition element.
    pub kind: ReasonKind,
    /// `<text>`, if any.
    pub text: Option<String>,
}

impl Reason {
    /// A reason without text.
    pub fn new(kind: ReasonKind) -> Self {
        Reason { kind, text: None }
    }

    fn parse(el: &Element) -> Result<Self, CodecError> {
        let mut kind = None;
        let mut text = None;
        for c in el.children() {
            if c.name() == "text" {
                text = Some(bounded_text(c, "reason text")?);
            } else if let Some(k) = ReasonKind::parse(c.name()) {
                kind = Some(k);
            }
        }
        Ok(Reason {
            // An unknown condition is read as general-error (XEP-0166 §7.4:
            // extension conditions go beside a defined one).
            kind: kind.unwrap_or(ReasonKind::GeneralError),
            text,
        })
    }

    fn to_element(&self) -> Element {
        let mut b = Element::builder("reason", NS_JINGLE)
            .append(Element::bare(self.kind.as_str(), NS_JINGLE));
        if let Some(t) = &self.text {
            b = b.append(
                Element::builder("text", NS_JINGLE)
                    .append(t.as_str())
                    .build(),
            );
        }
        b.build()
    }
}

/// Byte length of a digest for the XEP-0300 algorithms we know.
pub fn digest_len(algo: &str) -> Option<usize> {
    match algo {
        "sha-1" => Some(20),
        "sha-256" | "sha3-256" | "blake2b-256" => Some(32),
        "sha-512" | "sha3-512" | "blake2b-512" => Some(64),
        _ => None,
    }
}

/// An XEP-0300 `<hash algo='…'>` with its decoded digest.
#[derive(Clone, PartialEq, Eq)]
pub struct Hash {
    /// Algorithm name (`sha-256`, …).
    pub algo: String,
    /// The digest bytes.
    pub digest: Vec<u8>,
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({}:{})", self.algo, hex::encode(&self.digest))
    }
}

impl Hash {
    /// Reads a `<hash>`. The text is base64 of the digest (XEP-0300); when
    /// it decodes to twice the algorithm's digest length of ASCII hex, it is
    /// Libervia's base64-of-hex form (Libervia 0.9, see tests/jingle_libervia.rs) and the hex is
    /// decoded too, so both forms compare equal.
    pub fn parse(el: &Element) -> Result<Self, CodecError> {
        let algo = req_attr(el, "algo")?;
        let text = bounded_text(el, "hash")?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| CodecError::Invalid("hash"))?;
        let digest = match digest_len(&algo) {
            Some(n) if raw.len() == 2 * n && raw.iter().all(u8::is_ascii_hexdigit) => {
                hex::decode(&raw).map_err(|_| CodecError::Invalid("hash"))?
            }
            _ => raw,
        };
        if digest.len() > MAX_DIGEST_BYTES {
            return Err(CodecError::TooLarge("hash"));
        }
        Ok(Hash { algo, digest })
    }

    /// The spec form: base64 of the digest.
    pub fn to_element(&self) -> Element {
        Element::builder("hash", NS_HASHES)
            .attr(ncname("algo"), self.algo.as_str())
            .append(base64::engine::general_purpose::STANDARD.encode(&self.digest))
            .build()
    }
}

/// XEP-0234 `<range>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Range {
    /// First byte (default 0).
    pub offset: u64,
    /// Length, `None` = to the end.
    pub length: Option<u64>,
}

/// XEP-0234 `<file>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileDesc {
    /// `<name>`.
    pub name: Option<String>,
    /// `<size>`.
    pub size: Option<u64>,
    /// `<media-type>`.
    pub media_type: Option<String>,
    /// `<date>` (XEP-0082 text, kept as is).
    pub date: Option<String>,
    /// `<desc>` (first one).
    pub desc: Option<String>,
    /// `<hash>` elements.
    pub hashes: Vec<Hash>,
    /// `<hash-used algo='…'/>`: the digest follows in a `checksum`.
    pub hash_used: Vec<String>,
    /// `<range>`.
    pub range: Option<Range>,
    /// gshare's `<folder xmlns='urn:gshare:folder:0'/>`: the bytes are
    /// the tar stream of a folder ([`NS_GSHARE_FOLDER`]).
    pub folder: bool,
}

impl FileDesc {
    /// Reads a `<file>` (in [`NS_JINGLE_FT`]).
    pub fn parse(el: &Element) -> Result<Self, CodecError> {
        let mut f = FileDesc::default();
        for c in el.children() {
            match (c.name(), c.ns().as_str()) {
                ("name", NS_JINGLE_FT) => f.name = Some(bounded_text(c, "file name")?),
                ("size", NS_JINGLE_FT) => {
                    f.size = Some(
                        c.text()
                            .trim()
                            .parse()
                            .map_err(|_| CodecError::Invalid("size"))?,
                    )
                }
                ("media-type", NS_JINGLE_FT) => f.media_type = Some(bounded_text(c, "media-type")?),
                ("date", NS_JINGLE_FT) => f.date = Some(bounded_text(c, "date")?),
                ("desc", NS_JINGLE_FT) if f.desc.is_none() => {
                    f.desc = Some(bounded_text(c, "desc")?)
                }
                ("range", NS_JINGLE_FT) => {
                    let offset = match c.attr("offset") {
                        Some(v) => v.parse().map_err(|_| CodecError::Invalid("range offset"))?,
                        None => 0,
                    };
                    let length = match c.attr("length") {
                        Some(v) => {
                            Some(v.parse().map_err(|_| CodecError::Invalid("range length"))?)
                        }
                        None => None,
                    };
                    f.range = Some(Range { offset, length });
                }
                ("hash", NS_HASHES) => {
                    if f.hashes.len() >= MAX_HASHES {
                        return Err(CodecError::TooLarge("hashes"));
                    }
                    f.hashes.push(Hash::parse(c)?);
                }
                ("hash-used", NS_HASHES) => {
                    if f.hash_used.len() >= MAX_HASHES {
                        return Err(CodecError::TooLarge("hashes"));
                    }
                    f.hash_used.push(req_attr(c, "algo")?);
                }
                ("folder", NS_GSHARE_FOLDER) => f.folder = true,
                // XEP-0234 allows extensions (thumbnails, …): ignored.
                _ => {}
            }
        }
        Ok(f)
    }

    /// Writes a `<file>`.
    pub fn to_element(&self) -> Element {
        let mut b = Element::builder("file", NS_JINGLE_FT);
        let leaf = |n: &str, v: &str| Element::builder(n, NS_JINGLE_FT).append(v).build();
        if let Some(d) = &self.date {
            b = b.append(leaf("date", d));
        }
        if let Some(d) = &self.desc {
            b = b.append(leaf("desc", d));
        }
        if let Some(m) = &self.media_type {
            b = b.append(leaf("media-type", m));
        }
        if let Some(n) = &self.name {
            b = b.append(leaf("name", n));
        }
        if let Some(s) = self.size {
            b = b.append(leaf("size", &s.to_string()));
        }
        if let Some(r) = &self.range {
            let mut rb = Element::builder("range", NS_JINGLE_FT);
            if r.offset != 0 {
                rb = rb.attr(ncname("offset"), r.offset.to_string());
            }
            if let Some(l) = r.length {
                rb = rb.attr(ncname("length"), l.to_string());
            }
            b = b.append(rb.build());
        }
        for h in &self.hashes {
            b = b.append(h.to_element());
        }
        for a in &self.hash_used {
            b = b.append(
                Element::builder("hash-used", NS_HASHES)
                    .attr(ncname("algo"), a.as_str())
                    .build(),
            );
        }
        if self.folder {
            b = b.append(Element::bare("folder", NS_GSHARE_FOLDER));
        }
        b.build()
    }

    /// The first hash of `algo` this description carries.
    pub fn hash(&self, algo: &str) -> Option<&[u8]> {
        self.hashes
            .iter()
            .find(|h| h.algo == algo)
            .map(|h| h.digest.as_slice())
    }
}

string_enum!(
    /// XEP-0260 candidate type.
    CandidateType {
        /// NAT-assisted direct.
        Assisted => "assisted",
        /// Direct on a local interface.
        Direct => "direct",
        /// A SOCKS5 proxy (XEP-0065 streamhost).
        Proxy => "proxy",
        /// A tunnel.
        Tunnel => "tunnel",
    }
);

impl CandidateType {
    /// XEP-0260 §2.2 type preference.
    pub fn preference(self) -> u32 {
        match self {
            CandidateType::Direct => 126,
            CandidateType::Assisted => 120,
            CandidateType::Tunnel => 110,
            CandidateType::Proxy => 10,
        }
    }
}

/// An XEP-0260 `<candidate>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Candidate id (unique in the session).
    pub cid: String,
    /// IP address or host name.
    pub host: String,
    /// The JID of the streamhost (the proxy's, or the offering party's).
    pub jid: Jid,
    /// Port (default 1080, XEP-0260 §2.2).
    pub port: u16,
    /// `(2^16) * type preference + local preference`.
    pub priority: u32,
    /// Candidate type.
    pub kind: CandidateType,
}

impl Candidate {
    fn parse(el: &Element) -> Result<Self, CodecError> {
        Ok(Candidate {
            cid: req_attr(el, "cid")?,
            host: req_attr(el, "host")?,
            jid: Jid::new(&req_attr(el, "jid")?)
                .map_err(|_| CodecError::Invalid("candidate jid"))?,
            port: match el.attr("port") {
                Some(p) => p
                    .parse()
                    .map_err(|_| CodecError::Invalid("candidate port"))?,
                None => 1080,
            },
            priority: req_attr(el, "priority")?
                .parse()
                .map_err(|_| CodecError::Invalid("candidate priority"))?,
            kind: match el.attr("type") {
                Some(t) => CandidateType::parse(t).ok_or(CodecError::Invalid("candidate type"))?,
                None => CandidateType::Direct,
            },
        })
    }

    fn to_element(&self) -> Element {
        Element::builder("candidate", NS_JINGLE_S5B)
            .attr(ncname("cid"), self.cid.as_str())
            .attr(ncname("host"), self.host.as_str())
            .attr(ncname("jid"), self.jid.to_string())
            .attr(ncname("port"), self.port.to_string())
            .attr(ncname("priority"), self.priority.to_string())
            .attr(ncname("type"), self.kind.as_str())
            .build()
    }
}

/// What an S5B `<transport>` carries (XEP-0260 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S5bPayload {
    /// Offered candidates (possibly none).
    Candidates(Vec<Candidate>),
    /// "I connected to your candidate `cid`".
    CandidateUsed(String),
    /// "I could connect to none of yours".
    CandidateError,
    /// "The proxy candidate `cid` is activated".
    Activated(String),
    /// "I cannot connect to the proxy".
    ProxyError,
}

/// An S5B `<transport>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S5bTransport {
    /// Stream id (the SOCKS5 DST.ADDR input and the proxy activation sid).
    pub sid: String,
    /// `dstaddr` (optional hint: SHA-1(sid + initiator + responder) hex).
    pub dstaddr: Option<String>,
    /// Payload.
    pub payload: S5bPayload,
}

/// XEP-0261 `stanza` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IbbStanza {
    /// Data in IQ sets (default; flow-controlled by the results).
    Iq,
    /// Data in messages.
    Message,
}

/// An IBB `<transport>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IbbTransport {
    /// IBB stream id.
    pub sid: String,
    /// Block size (bytes before base64).
    pub block_size: u16,
    /// Stanza kind.
    pub stanza: IbbStanza,
}

/// A content's transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// XEP-0260.
    S5b(S5bTransport),
    /// XEP-0261.
    Ibb(IbbTransport),
    /// Any other transport: its namespace, for `unsupported-transports`.
    Other(String),
}

impl Transport {
    fn parse(el: &Element) -> Result<Self, CodecError> {
        let ns = el.ns();
        if ns == NS_JINGLE_S5B {
            let sid = req_attr(el, "sid")?;
            let dstaddr = text_attr(el, "dstaddr")?;
            let mut cands = Vec::new();
            let mut payload = None;
            for c in el.children().filter(|c| c.ns() == NS_JINGLE_S5B) {
                match c.name() {
                    "candidate" => {
                        if cands.len() >= MAX_CANDIDATES {
                            return Err(CodecError::TooLarge("candidates"));
                        }
                        cands.push(Candidate::parse(c)?);
                    }
                    "candidate-used" => {
                        payload = Some(S5bPayload::CandidateUsed(req_attr(c, "cid")?))
                    }
                    "candidate-error" => payload = Some(S5bPayload::CandidateError),
                    "activated" => payload = Some(S5bPayload::Activated(req_attr(c, "cid")?)),
                    "proxy-error" => payload = Some(S5bPayload::ProxyError),
                    _ => {}
                }
            }
            let payload = match payload {
                Some(p) if cands.is_empty() => p,
                Some(_) => return Err(CodecError::Invalid("S5B transport")),
                None => S5bPayload::Candidates(cands),
            };
            Ok(Transport::S5b(S5bTransport {
                sid,
                dstaddr,
                payload,
            }))
        } else if ns == NS_JINGLE_IBB {
            let sid = req_attr(el, "sid")?;
            let block_size = req_attr(el, "block-size")?
                .parse()
                .map_err(|_| CodecError::Invalid("block-size"))?;
            let stanza = match el.attr("stanza") {
                None | Some("iq") => IbbStanza::Iq,
                Some("message") => IbbStanza::Message,
                Some(_) => return Err(CodecError::Invalid("IBB stanza")),
            };
            Ok(Transport::Ibb(IbbTransport {
                sid,
                block_size,
                stanza,
            }))
        } else {
            if ns.len() > MAX_TEXT_BYTES {
                return Err(CodecError::TooLarge("transport namespace"));
            }
            Ok(Transport::Other(ns))
        }
    }

    /// Writes the `<transport>`.
    pub fn to_element(&self) -> Element {
        match self {
            Transport::S5b(t) => {
                let mut b = Element::builder("transport", NS_JINGLE_S5B)
                    .attr(ncname("sid"), t.sid.as_str())
                    .attr(ncname("mode"), "tcp");
                if let Some(d) = &t.dstaddr {
                    b = b.attr(ncname("dstaddr"), d.as_str());
                }
                match &t.payload {
                    S5bPayload::Candidates(cs) => {
                        for c in cs {
                            b = b.append(c.to_element());
                        }
                    }
                    S5bPayload::CandidateUsed(cid) => {
                        b = b.append(
                            Element::builder("candidate-used", NS_JINGLE_S5B)
                                .attr(ncname("cid"), cid.as_str())
                                .build(),
                        )
                    }
                    S5bPayload::CandidateError => {
                        b = b.append(Element::bare("candidate-error", NS_JINGLE_S5B))
                    }
                    S5bPayload::Activated(cid) => {
                        b = b.append(
                            Element::builder("activated", NS_JINGLE_S5B)
                                .attr(ncname("cid"), cid.as_str())
                                .build(),
                        )
                    }
                    S5bPayload::ProxyError => {
                        b = b.append(Element::bare("proxy-error", NS_JINGLE_S5B))
                    }
                }
                b.build()
            }
            Transport::Ibb(t) => Element::builder("transport", NS_JINGLE_IBB)
                .attr(ncname("sid"), t.sid.as_str())
                .attr(ncname("block-size"), t.block_size.to_string())
                .attr(
                    ncname("stanza"),
                    match t.stanza {
                        IbbStanza::Iq => "iq",
                        IbbStanza::Message => "message",
                    },
                )
                .build(),
            Transport::Other(ns) => Element::bare("transport", ns.as_str()),
        }
    }
}

/// A `<content>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// `creator`.
    pub creator: Creator,
    /// `name` (unique per creator in the session).
    pub name: String,
    /// `senders`.
    pub senders: Senders,
    /// The XEP-0234 `<description><file/></description>`; `None` when
    /// absent. [`Description::Other`] for another application.
    pub description: Option<Description>,
    /// The transport, if present.
    pub transport: Option<Transport>,
}

/// A content's application description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Description {
    /// XEP-0234 file transfer.
    File(FileDesc),
    /// Another application: its namespace.
    Other(String),
}

impl Content {
    fn parse(el: &Element) -> Result<Self, CodecError> {
        let creator =
            Creator::parse(&req_attr(el, "creator")?).ok_or(CodecError::Invalid("creator"))?;
        let name = req_attr(el, "name")?;
        let senders = match el.attr("senders") {
            Some(s) => Senders::parse(s).ok_or(CodecError::Invalid("senders"))?,
            None => Senders::Both,
        };
        let mut description = None;
        let mut transport = None;
        for c in el.children() {
            if c.name() == "description" {
                description = Some(if c.ns() == NS_JINGLE_FT {
                    let file = c
                        .children()
                        .find(|f| f.is("file", NS_JINGLE_FT))
                        .ok_or(CodecError::Missing("file"))?;
                    Description::File(FileDesc::parse(file)?)
                } else {
                    Description::Other(c.ns().chars().take(MAX_TEXT_BYTES).collect())
                });
            } else if c.name() == "transport" {
                transport = Some(Transport::parse(c)?);
            }
        }
        Ok(Content {
            creator,
            name,
            senders,
            description,
            transport,
        })
    }

    fn to_element(&self) -> Element {
        let mut b = Element::builder("content", NS_JINGLE)
            .attr(ncname("creator"), self.creator.as_str())
            .attr(ncname("name"), self.name.as_str())
            .attr(ncname("senders"), self.senders.as_str());
        match &self.description {
            Some(Description::File(f)) => {
                b = b.append(
                    Element::builder("description", NS_JINGLE_FT)
                        .append(f.to_element())
                        .build(),
                )
            }
            Some(Description::Other(ns)) => b = b.append(Element::bare("description", ns.as_str())),
            None => {}
        }
        if let Some(t) = &self.transport {
            b = b.append(t.to_element());
        }
        b.build()
    }

    /// The file description, if this is a file-transfer content.
    pub fn file(&self) -> Option<&FileDesc> {
        match &self.description {
            Some(Description::File(f)) => Some(f),
            _ => None,
        }
    }
}

/// XEP-0234 §8 session-info payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionInfo {
    /// `<checksum creator name><file><hash/></file></checksum>`.
    Checksum {
        /// Content creator.
        creator: Creator,
        /// Content name.
        name: String,
        /// The file element with its hashes.
        file: FileDesc,
    },
    /// `<received creator name/>`.
    Received {
        /// Content creator.
        creator: Creator,
        /// Content name.
        name: String,
    },
    /// An empty session-info (a ping, XEP-0166 §6.8).
    Ping,
    /// Something else: answered with `unsupported-info`.
    Unsupported,
}

/// A parsed `<jingle>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jingle {
    /// The action.
    pub action: Action,
    /// Session id.
    pub sid: String,
    /// `initiator`, if present.
    pub initiator: Option<Jid>,
    /// `responder`, if present.
    pub responder: Option<Jid>,
    /// Contents.
    pub contents: Vec<Content>,
    /// `<reason>`, if present.
    pub reason: Option<Reason>,
    /// For `session-info`.
    pub info: Option<SessionInfo>,
}

impl Jingle {
    /// A new element with no contents.
    pub fn new(action: Action, sid: &str) -> Self {
        Jingle {
            action,
            sid: sid.to_owned(),
            initiator: None,
            responder: None,
            contents: Vec::new(),
            reason: None,
            info: None,
        }
    }

    /// Reads a `<jingle>`.
    pub fn parse(el: &Element) -> Result<Self, CodecError> {
        if !el.is("jingle", NS_JINGLE) {
            return Err(CodecError::NotJingle);
        }
        let action_s = req_attr(el, "action")?;
        let action = Action::parse(&action_s)
            .ok_or_else(|| CodecError::UnknownAction(action_s.chars().take(64).collect()))?;
        let sid = req_attr(el, "sid")?;
        let jid_attr = |n: &'static str| -> Result<Option<Jid>, CodecError> {
            match el.attr(n) {
                None => Ok(None),
                Some(v) => Jid::new(v).map(Some).map_err(|_| CodecError::Invalid(n)),
            }
        };
        let initiator = jid_attr("initiator")?;
        let responder = jid_attr("responder")?;
        let mut contents = Vec::new();
        let mut reason = None;
        let mut info = None;
        for c in el.children() {
            if c.is("content", NS_JINGLE) {
                if contents.len() >= MAX_CONTENTS {
                    return Err(CodecError::TooLarge("contents"));
                }
                contents.push(Content::parse(c)?);
            } else if c.is("reason", NS_JINGLE) {
                reason = Some(Reason::parse(c)?);
            } else if action == Action::SessionInfo && c.ns() == NS_JINGLE_FT {
                info = Some(match c.name() {
                    "checksum" => SessionInfo::Checksum {
                        creator: Creator::parse(&req_attr(c, "creator")?)
                            .ok_or(CodecError::Invalid("creator"))?,
                        name: req_attr(c, "name")?,
                        file: FileDesc::parse(
                            c.children()
                                .find(|f| f.is("file", NS_JINGLE_FT))
                                .ok_or(CodecError::Missing("file"))?,
                        )?,
                    },
                    "received" => SessionInfo::Received {
                        creator: Creator::parse(&req_attr(c, "creator")?)
                            .ok_or(CodecError::Invalid("creator"))?,
                        name: req_attr(c, "name")?,
                    },
                    _ => SessionInfo::Unsupported,
                });
            } else if action == Action::SessionInfo {
                info = Some(SessionInfo::Unsupported);
            }
        }
        if action == Action::SessionInfo && info.is_none() {
            info = Some(SessionInfo::Ping);
        }
        Ok(Jingle {
            action,
            sid,
            initiator,
            responder,
            contents,
            reason,
            info,
        })
    }

    /// Writes the `<jingle>`.
    pub fn to_element(&self) -> Element {
        let mut b = Element::builder("jingle", NS_JINGLE)
            .attr(ncname("action"), self.action.as_str())
            .attr(ncname("sid"), self.sid.as_str());
        if let Some(i) = &self.initiator {
            b = b.attr(ncname("initiator"), i.to_string());
        }
        if let Some(r) = &self.responder {
            b = b.attr(ncname("responder"), r.to_string());
        }
        for c in &self.contents {
            b = b.append(c.to_element());
        }
        if let Some(r) = &self.reason {
            b = b.append(r.to_element());
        }
        match &self.info {
            Some(SessionInfo::Checksum {
                creator,
                name,
                file,
            }) => {
                b = b.append(
                    Element::builder("checksum", NS_JINGLE_FT)
                        .attr(ncname("creator"), creator.as_str())
                        .attr(ncname("name"), name.as_str())
                        .append(file.to_element())
                        .build(),
                )
            }
            Some(SessionInfo::Received { creator, name }) => {
                b = b.append(
                    Element::builder("received", NS_JINGLE_FT)
                        .attr(ncname("creator"), creator.as_str())
                        .attr(ncname("name"), name.as_str())
                        .build(),
                )
            }
            Some(SessionInfo::Ping) | Some(SessionInfo::Unsupported) | None => {}
        }
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An offer shaped like Libervia 0.9's (empty desc and range, hash-used,
    /// direct and proxy candidates with its priorities).
    const LIBERVIA_OFFER: &str = "<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' initiator='a@localhost/libervia.x' sid='abc123'>\
        <content creator='initiator' name='c1' senders='initiator'>\
        <description xmlns='urn:xmpp:jingle:apps:file-transfer:5'><file><name>small.bin</name><size>1234</size>\
        <media-type>application/octet-stream</media-type><desc/><range/><hash-used xmlns='urn:xmpp:hashes:2' algo='sha-256'/></file></description>\
        <transport xmlns='urn:xmpp:jingle:transports:s5b:1' sid='tsid' mode='tcp' dstaddr='0123'>\
        <candidate cid='k1' host='127.0.0.1' jid='a@localhost/libervia.x' port='40000' priority='8267536' type='direct'/>\
        <candidate cid='k2' host='127.0.0.1' jid='proxy.localhost' port='5000' priority='655360' type='proxy'/>\
        </transport></content></jingle>";

    #[test]
    fn reads_libervia_offer() {
        let el: Element = LIBERVIA_OFFER.parse().unwrap();
        let j = Jingle::parse(&el).unwrap();
        assert_eq!(j.action, Action::SessionInitiate);
        assert_eq!(j.sid, "abc123");
        let c = &j.contents[0];
        assert_eq!(c.senders, Senders::Initiator);
        let f = c.file().unwrap();
        assert_eq!(f.name.as_deref(), Some("small.bin"));
        assert_eq!(f.size, Some(1234));
        assert_eq!(f.hash_used, vec!["sha-256".to_owned()]);
        assert_eq!(f.range, Some(Range::default()));
        let Some(Transport::S5b(t)) = &c.transport else {
            panic!("not s5b")
        };
        let S5bPayload::Candidates(cs) = &t.payload else {
            panic!("no candidates")
        };
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].priority, (126 << 16) + 10000);
        assert_eq!(cs[1].kind, CandidateType::Proxy);
        assert_eq!(cs[1].port, 5000);
        // Round trip.
        let again = Jingle::parse(&j.to_element()).unwrap();
        assert_eq!(again, j);
    }

    #[test]
    fn hash_accepts_both_forms() {
        let digest =
            hex::decode("25b8e0a1f0b6b7c1c2e3d4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f")
                .unwrap();
        let spec = base64::engine::general_purpose::STANDARD.encode(&digest);
        let libervia = base64::engine::general_purpose::STANDARD.encode(hex::encode(&digest));
        assert!(libervia.starts_with("MjViOGUw"));
        for text in [spec, libervia] {
            let el: Element =
                format!("<hash xmlns='urn:xmpp:hashes:2' algo='sha-256'>{text}</hash>")
                    .parse()
                    .unwrap();
            assert_eq!(Hash::parse(&el).unwrap().digest, digest);
        }
        // Unknown algorithm: taken literally.
        let el: Element = "<hash xmlns='urn:xmpp:hashes:2' algo='x-foo'>AAEC</hash>"
            .parse()
            .unwrap();
        assert_eq!(Hash::parse(&el).unwrap().digest, vec![0, 1, 2]);
        let el: Element = "<hash xmlns='urn:xmpp:hashes:2' algo='sha-256'>!!</hash>"
            .parse()
            .unwrap();
        assert_eq!(Hash::parse(&el), Err(CodecError::Invalid("hash")));
    }

    #[test]
    fn transport_payloads_round_trip() {
        for p in [
            S5bPayload::CandidateUsed("k1".into()),
            S5bPayload::CandidateError,
            S5bPayload::Activated("k2".into()),
            S5bPayload::ProxyError,
            S5bPayload::Candidates(vec![]),
        ] {
            let t = Transport::S5b(S5bTransport {
                sid: "s".into(),
                dstaddr: None,
                payload: p,
            });
            assert_eq!(Transport::parse(&t.to_element()).unwrap(), t);
        }
        let t = Transport::Ibb(IbbTransport {
            sid: "s".into(),
            block_size: 4096,
            stanza: IbbStanza::Iq,
        });
        assert_eq!(Transport::parse(&t.to_element()).unwrap(), t);
    }

    #[test]
    fn checksum_and_terminate_round_trip() {
        let mut j = Jingle::new(Action::SessionInfo, "s");
        j.info = Some(SessionInfo::Checksum {
            creator: Creator::Initiator,
            name: "c".into(),
            file: FileDesc {
                hashes: vec![Hash {
                    algo: "sha-256".into(),
                    digest: vec![7; 32],
                }],
                ..Default::default()
            },
        });
        assert_eq!(Jingle::parse(&j.to_element()).unwrap(), j);
        let mut t = Jingle::new(Action::SessionTerminate, "s");
        t.reason = Some(Reason {
            kind: ReasonKind::Decline,
            text: Some("no".into()),
        });
        assert_eq!(Jingle::parse(&t.to_element()).unwrap(), t);
        let ping = Jingle::new(Action::SessionInfo, "s");
        assert_eq!(
            Jingle::parse(&ping.to_element()).unwrap().info,
            Some(SessionInfo::Ping)
        );
    }

    #[test]
    fn refuses_oversized_and_unknown() {
        let mut s =
            String::from("<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='s'>");
        for i in 0..=MAX_CONTENTS {
            s.push_str(&format!("<content creator='initiator' name='c{i}'/>"));
        }
        s.push_str("</jingle>");
        let el: Element = s.parse().unwrap();
        assert_eq!(Jingle::parse(&el), Err(CodecError::TooLarge("contents")));
        let el: Element = "<jingle xmlns='urn:xmpp:jingle:1' action='x-new' sid='s'/>"
            .parse()
            .unwrap();
        assert!(matches!(
            Jingle::parse(&el),
            Err(CodecError::UnknownAction(_))
        ));
    }

    #[test]
    fn folder_marker_round_trips_and_is_optional() {
        let f = FileDesc {
            name: Some("photos.tar".into()),
            size: Some(10240),
            media_type: Some("application/x-tar".into()),
            hash_used: vec!["sha-256".into()],
            folder: true,
            ..FileDesc::default()
        };
        let el = f.to_element();
        let marker = el
            .children()
            .find(|c| c.is("folder", NS_GSHARE_FOLDER))
            .expect("the marker is written");
        assert_eq!(marker.children().count(), 0);
        assert_eq!(FileDesc::parse(&el).unwrap(), f);
        // Without the marker: a plain file, and no marker is written.
        let plain = FileDesc {
            folder: false,
            ..f.clone()
        };
        let el = plain.to_element();
        assert!(!el.children().any(|c| c.name() == "folder"));
        assert_eq!(FileDesc::parse(&el).unwrap(), plain);
        // A `folder` in another namespace is not the marker.
        let other: Element = "<file xmlns='urn:xmpp:jingle:apps:file-transfer:5'>\
            <name>a.tar</name><size>1</size><folder xmlns='urn:example:other'/></file>"
            .parse()
            .unwrap();
        assert!(!FileDesc::parse(&other).unwrap().folder);
        // Inside a whole offer, as a peer parses it.
        let j = Jingle {
            contents: vec![crate::jingle::file_offer(
                "f0",
                f.clone(),
                Transport::Ibb(IbbTransport {
                    sid: "t".into(),
                    block_size: 4096,
                    stanza: IbbStanza::Iq,
                }),
            )],
            ..Jingle::new(Action::SessionInitiate, "s1")
        };
        let again = Jingle::parse(&j.to_element()).unwrap();
        let got = again.contents[0].file().unwrap();
        assert!(got.folder);
        assert_eq!(got.media_type.as_deref(), Some("application/x-tar"));
    }
}
