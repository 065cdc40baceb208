//! Session layer: the Google Talk file-share signalling (libjingle 0.4
//! "session/share", docs/protocol.md §A) as typed stanzas and a sans-IO state
//! machine that plays both roles, several sessions at once.
//!
//! No crate implements this pre-Jingle Google dialect (xmpp-parsers has
//! XEP-0166 Jingle only), so the stanza model and the machine are written
//! here from the wire facts in docs/protocol.md. The layer depends on minidom and
//! jid only; the XMPP layer converts `xmpp_parsers::iq::Iq` to and from the
//! small envelope types in [`envelope`].
//!
//! * [`stanza`]: `<session>`, share `<description>`/`<manifest>`, p2p
//!   `<transport>`/`<candidate>`, info payloads, parse and serialise.
//! * [`envelope`]: [`IqIn`], [`IqOut`], error replies (§A.10).
//! * [`extension`]: gshare's private `<secure>` description child
//!   (certificate fingerprint, item digests, resume), ignored by classic
//!   peers.
//! * [`machine`]: [`SessionManager`], the sans-IO machine: feed it IQs and
//!   time, poll it for IQs to send, events and the next deadline.

pub mod envelope;
pub mod extension;
pub mod machine;
pub mod stanza;

pub use envelope::{
    Condition, ErrorReply, ErrorType, IqIn, IqOut, IqOutKind, IqPayload, ReceivedError,
};
pub use extension::{Extension, NS_SECURE};
pub use machine::{
    CommandError, Config, DEFAULT_SESSION_TIMEOUT, Dialect, MAX_CANDIDATES_PER_SESSION,
    MAX_CHANNELS_PER_SESSION, MAX_PENDING_IQS, MAX_PENDING_OFFERS, MAX_SESSIONS, Role,
    SessionEvent, SessionHandle, SessionInfo, SessionManager, TerminateReason, TimeoutKind,
};
pub use stanza::{
    Action, ImageSize, InfoItem, ItemKind, Manifest, ManifestItem, SessionBody, SessionHeader,
    SessionMessage, ShareDescription, StanzaError,
};
