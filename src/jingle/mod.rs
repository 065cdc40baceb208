//! Jingle file transfer (XEP-0166 sessions, XEP-0234 file descriptions,
//! XEP-0300 hashes), the standard path beside the Google file-share
//! dialect of `crate::session`.
//!
//! - [`codec`]: the `<jingle>` element and what goes in it.
//! - [`session`]: the sans-IO session machine, both roles.
//!
//! The transports (XEP-0260 SOCKS5, XEP-0261 IBB) live in
//! `crate::bytestreams`; each yields a byte stream per content that the
//! send/receive jobs read or write like any `AsyncRead`/`AsyncWrite`.
//!
//! Seams for the job layer: build contents with [`file_offer`], start with
//! [`JingleSession::initiate`] (sender) or [`JingleSession::from_initiate`]
//! (receiver), then feed `JingleEvent`s to `crate::bytestreams::s5b`'s
//! negotiator and hand the resulting stream to the job.

pub mod codec;
pub mod session;

pub use codec::{
    Action, Candidate, CandidateType, CodecError, Content, Creator, Description, FileDesc, Hash,
    IbbStanza, IbbTransport, Jingle, Reason, ReasonKind, S5bPayload, S5bTransport, Senders,
    SessionInfo, Transport,
};
pub use session::{
    CommandError, Config, JingleEvent, JingleSession, Role, State, jingle_sid,
    unknown_session_reply,
};

/// A content offering one file (`creator='initiator'`,
/// `senders='initiator'`) with its transport. `hash_used` announces a
/// checksum to follow in `session-info` (what Libervia expects). An absent
/// description is sent as an empty `<desc/>`: Libervia fails the session
/// (`failed-application`, a Python `KeyError: 'desc'`) on an offer without
/// one (docs/protocol.md §G); XEP-0234 allows it either way.
pub fn file_offer(name: &str, mut file: FileDesc, transport: Transport) -> Content {
    if file.desc.is_none() {
        file.desc = Some(String::new());
    }
    Content {
        creator: Creator::Initiator,
        name: name.to_owned(),
        senders: Senders::Initiator,
        description: Some(Description::File(file)),
        transport: Some(transport),
    }
}
