//! The small IQ envelope the session machine speaks. The XMPP layer converts
//! between `xmpp_parsers::iq::Iq` and these types, so this layer builds
//! without xmpp-parsers (docs/crates.md §6: build cost).
//!
//! Error replies follow LJ04 `CreateErrorMessage` (docs/protocol.md §A.10): a copy
//! of the offending IQ's child, then `<error type>` with a condition in
//! `urn:ietf:params:xml:ns:xmpp-stanzas`, an optional extra element and
//! `<text xml:lang="en">`.

use jid::Jid;
use minidom::Element;

use super::stanza::{NS_CLIENT, NS_STANZAS, nc};

/// Deepest payload we copy into an error reply. Deeper (or larger, see
/// [`MAX_COPY_ELEMENTS`]) payloads are echoed as an empty copy of their root
/// element: copying and serialising trees is recursive, and a hostile stanza
/// must not make us echo it back at full size.
pub const MAX_COPY_DEPTH: usize = 32;
/// Most elements we copy into an error reply (see [`MAX_COPY_DEPTH`]).
pub const MAX_COPY_ELEMENTS: usize = 512;

/// Stanza error type (RFC 6120 §8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// Retry after providing credentials.
    Auth,
    /// Do not retry.
    Cancel,
    /// Proceed (the condition was only a warning).
    Continue,
    /// Retry after changing the data sent.
    Modify,
    /// Retry after waiting.
    Wait,
}

impl ErrorType {
    /// Wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "auth" => ErrorType::Auth,
            "cancel" => ErrorType::Cancel,
            "continue" => ErrorType::Continue,
            "modify" => ErrorType::Modify,
            "wait" => ErrorType::Wait,
            _ => return None,
        })
    }
}

/// Stanza error condition (the ones this layer sends, plus anything else
/// received as [`Condition::Other`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Condition {
    /// `bad-request`.
    BadRequest,
    /// `feature-not-implemented`.
    FeatureNotImplemented,
    /// `item-not-found`.
    ItemNotFound,
    /// `not-allowed`.
    NotAllowed,
    /// `resource-constraint`.
    ResourceConstraint,
    /// `service-unavailable`.
    ServiceUnavailable,
    /// `undefined-condition`.
    UndefinedCondition,
    /// Any other condition, by local name.
    Other(String),
}

impl Condition {
    /// Element local name.
    pub fn as_str(&self) -> &str {
        match self {
            Condition::BadRequest => "bad-request",
            Condition::FeatureNotImplemented => "feature-not-implemented",
            Condition::ItemNotFound => "item-not-found",
            Condition::NotAllowed => "not-allowed",
            Condition::ResourceConstraint => "resource-constraint",
            Condition::ServiceUnavailable => "service-unavailable",
            Condition::UndefinedCondition => "undefined-condition",
            Condition::Other(s) => s,
        }
    }

    /// From an element local name.
    pub fn parse(s: &str) -> Self {
        match s {
            "bad-request" => Condition::BadRequest,
            "feature-not-implemented" => Condition::FeatureNotImplemented,
            "item-not-found" => Condition::ItemNotFound,
            "not-allowed" => Condition::NotAllowed,
            "resource-constraint" => Condition::ResourceConstraint,
            "service-unavailable" => Condition::ServiceUnavailable,
            "undefined-condition" => Condition::UndefinedCondition,
            other => Condition::Other(other.chars().take(64).collect()),
        }
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `<error>` of an incoming IQ error, as the XMPP layer decoded it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedError {
    /// `type` attribute.
    pub error_type: ErrorType,
    /// Defined condition.
    pub condition: Condition,
    /// `<text>`, if any.
    pub text: Option<String>,
    /// Application-specific extra element (e.g. `<unknown-channel-name>`).
    pub extra: Option<Element>,
}

impl ReceivedError {
    /// Reads an `<error>` element (namespace ignored: `jabber:client` or
    /// `jabber:server`). Unknown types read as `cancel`.
    pub fn from_element(el: &Element) -> Self {
        let error_type = el
            .attr("type")
            .and_then(ErrorType::parse)
            .unwrap_or(ErrorType::Cancel);
        let mut condition = Condition::UndefinedCondition;
        let mut text = None;
        let mut extra = None;
        for c in el.children() {
            if c.has_ns(NS_STANZAS) {
                if c.name() == "text" {
                    text = Some(c.text());
                } else if condition == Condition::UndefinedCondition {
                    condition = Condition::parse(c.name());
                }
            } else if extra.is_none() {
                extra = Some(c.clone());
            }
        }
        ReceivedError {
            error_type,
            condition,
            text,
            extra,
        }
    }
}

/// The kind and payload of an incoming IQ.
#[derive(Debug, Clone, PartialEq)]
pub enum IqPayload {
    /// `type="set"` with its one child.
    Set(Element),
    /// `type="get"` with its one child (never consumed by this layer).
    Get(Element),
    /// `type="result"`, payload if any.
    Result(Option<Element>),
    /// `type="error"`.
    Error {
        /// The decoded `<error>`.
        error: ReceivedError,
        /// The copied payload, if the peer included one.
        payload: Option<Element>,
    },
}

/// An incoming IQ.
#[derive(Debug, Clone, PartialEq)]
pub struct IqIn {
    /// Sender (the XMPP layer fills in the server's JID when absent).
    pub from: Jid,
    /// IQ id.
    pub id: String,
    /// Kind and payload.
    pub payload: IqPayload,
}

impl IqIn {
    /// Reads an `<iq>` element (any namespace; for tests and tools).
    /// Returns `None` without `from`, `id` or a known `type`.
    pub fn from_element(iq: &Element) -> Option<IqIn> {
        if iq.name() != "iq" {
            return None;
        }
        let from = Jid::new(iq.attr("from")?).ok()?;
        let id = iq.attr("id")?.to_owned();
        let first = || iq.children().find(|c| c.name() != "error").cloned();
        let payload = match iq.attr("type")? {
            "set" => IqPayload::Set(first()?),
            "get" => IqPayload::Get(first()?),
            "result" => IqPayload::Result(first()),
            "error" => IqPayload::Error {
                error: iq
                    .children()
                    .find(|c| c.name() == "error")
                    .map(ReceivedError::from_element)
                    .unwrap_or(ReceivedError {
                        error_type: ErrorType::Cancel,
                        condition: Condition::UndefinedCondition,
                        text: None,
                        extra: None,
                    }),
                payload: first(),
            },
            _ => return None,
        };
        Some(IqIn { from, id, payload })
    }
}

/// An error reply we send.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorReply {
    /// `type` attribute.
    pub error_type: ErrorType,
    /// Defined condition.
    pub condition: Condition,
    /// `<text xml:lang="en">`.
    pub text: Option<String>,
    /// Extra application element (e.g. `<unknown-channel-name>`).
    pub extra: Option<Element>,
    /// Copy of the offending IQ's child (bounded, see [`MAX_COPY_DEPTH`]).
    pub copied: Option<Element>,
}

impl ErrorReply {
    /// The `<error>` element (in `jabber:client`).
    pub fn error_element(&self) -> Element {
        let mut b = Element::builder("error", NS_CLIENT)
            .attr(nc!("type"), self.error_type.as_str())
            .append(Element::bare(self.condition.as_str(), NS_STANZAS));
        if let Some(extra) = &self.extra {
            b = b.append(extra.clone());
        }
        if let Some(text) = &self.text {
            b = b.append(
                Element::builder("text", NS_STANZAS)
                    .attr_ns(minidom::rxml::Namespace::XML, nc!("lang"), "en")
                    .append(text.as_str())
                    .build(),
            );
        }
        b.build()
    }
}

/// What kind of IQ we send.
#[derive(Debug, Clone, PartialEq)]
pub enum IqOutKind {
    /// A request (`type="set"`) carrying a `<session>`; the machine
    /// generated the id and waits for its result or error.
    Set(Element),
    /// An empty `type="result"` acknowledgement.
    Result,
    /// A `type="error"` reply.
    Error(ErrorReply),
}

/// An outgoing IQ.
#[derive(Debug, Clone, PartialEq)]
pub struct IqOut {
    /// Recipient (the peer's JID as recorded for the session, or the `from`
    /// of the IQ we answer).
    pub to: Jid,
    /// IQ id.
    pub id: String,
    /// Kind and payload.
    pub kind: IqOutKind,
}

impl IqOut {
    /// The whole `<iq>` element in `jabber:client` (the XMPP layer may
    /// instead convert field by field).
    pub fn to_element(&self, from: Option<&Jid>) -> Element {
        let mut b = Element::builder("iq", NS_CLIENT)
            .attr(nc!("to"), self.to.to_string())
            .attr(nc!("id"), self.id.as_str());
        if let Some(from) = from {
            b = b.attr(nc!("from"), from.to_string());
        }
        match &self.kind {
            IqOutKind::Set(el) => b.attr(nc!("type"), "set").append(el.clone()).build(),
            IqOutKind::Result => b.attr(nc!("type"), "result").build(),
            IqOutKind::Error(e) => {
                b = b.attr(nc!("type"), "error");
                if let Some(c) = &e.copied {
                    b = b.append(c.clone());
                }
                b.append(e.error_element()).build()
            }
        }
    }

    /// The `<session>` payload of a set, if this is one.
    pub fn set_payload(&self) -> Option<&Element> {
        match &self.kind {
            IqOutKind::Set(el) => Some(el),
            _ => None,
        }
    }
}

/// A copy of `el` for an error reply: the whole tree if it is at most
/// [`MAX_COPY_DEPTH`] deep and [`MAX_COPY_ELEMENTS`] large, else only its
/// root with attributes. Measured without recursion.
pub fn bounded_copy(el: &Element) -> Element {
    let mut stack = vec![(el, 1usize)];
    let mut seen = 1usize;
    let small = 'walk: {
        while let Some((e, depth)) = stack.pop() {
            if depth > MAX_COPY_DEPTH {
                break 'walk false;
            }
            for c in e.children() {
                seen += 1;
                if seen > MAX_COPY_ELEMENTS {
                    break 'walk false;
                }
                stack.push((c, depth + 1));
            }
        }
        true
    };
    if small {
        return el.clone();
    }
    let mut root = Element::bare(el.name(), el.ns());
    for ((ns, name), value) in el.attrs().iter() {
        root.set_attr(ns.clone(), name.clone(), value.clone());
    }
    root
}
