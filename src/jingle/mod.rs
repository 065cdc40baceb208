//! Jingle file transfer (XEP-0166 sessions, XEP-0234 file descriptions,
//! XEP-0300 hashes), the standard path beside the Google file-share
//! dialect of `crate::session`.
//!
//! - [`codec`]: the `<jingle>` element and what goes in it.
//! - [`session`]: the sans-IO session machine, both roles.
//! - [`sessions`]: many sessions behind one IQ entry point.
//! - [`jmi`]: Jingle Message Initiation (XEP-0353), the responder's
//!   `<proceed/>` to a `<propose/>` sent to our bare JID.
//!
//! The transports (XEP-0260 SOCKS5, XEP-0261 IBB) live in
//! `crate::bytestreams`; each yields a byte stream per content that the
//! send/receive jobs read or write like any `AsyncRead`/`AsyncWrite`.
//!
//! # Seams for the job layer (not wired yet)
//!
//! Signalling: route every IQ set whose child is `<jingle>` to the session
//! with that [`jingle_sid`] (or answer [`unknown_session_reply`]), route
//! results/errors to all sessions until one takes them, send what
//! `poll_transmit` yields, and drive `poll_timeout`/`handle_timeout`; the
//! XMPP layer forwards `NS_JINGLE` and the IBB namespace via
//! `ConnectOptions::forward_namespaces`.
//!
//! - Send a file: [`file_offer`] per file (S5B transport with our
//!   candidates: `bytestreams::socks5::DirectListener` addresses and,
//!   from `bytestreams::proxy`, the server's proxy), then
//!   [`JingleSession::initiate`]. On [`JingleEvent::Accepted`] feed the
//!   peer's candidates to a `bytestreams::s5b::S5bNegotiation`, try them
//!   with `connect_first`, send our report with
//!   [`JingleSession::transport_info`]; feed every
//!   [`JingleEvent::TransportInfo`] to the negotiation. Its `Outcome` names
//!   the `TcpStream` to write (proxy: connect, activate, send
//!   `<activated/>`); `Fallback` → [`JingleSession::transport_replace`]
//!   with IBB, then `bytestreams::ibb_stream::ibb_writer`. After the data,
//!   [`JingleSession::checksum`]; the peer ends with `success`.
//! - Receive: [`JingleSession::from_initiate`] gives
//!   [`JingleEvent::Offered`]; [`JingleSession::accept`] with our
//!   candidates or [`JingleSession::decline`]; the same negotiation, then
//!   read the stream (IBB: `ibb_reader` after
//!   [`JingleEvent::TransportReplace`] + [`JingleSession::transport_accept`]);
//!   compare [`JingleEvent::Checksum`] (either hash form) and
//!   [`JingleSession::terminate`] with `success` or `media-error`.
//!
//! `tests/jingle_s5b.rs`, `tests/jingle_proxy65.rs` and
//! `tests/jingle_libervia.rs` drive exactly these steps by hand.

pub mod codec;
pub mod jmi;
pub mod session;
pub mod sessions;

pub use codec::{
    Action, Candidate, CandidateType, CodecError, Content, Creator, Description, FileDesc, Hash,
    IbbStanza, IbbTransport, Jingle, Reason, ReasonKind, S5bPayload, S5bTransport, Senders,
    SessionInfo, Transport,
};
pub use session::{
    CommandError, Config, JingleEvent, JingleSession, Role, State, jingle_sid,
    unknown_session_reply,
};
pub use sessions::{JingleSessions, MAX_SESSIONS};

/// A content offering one file (`creator='initiator'`,
/// `senders='initiator'`) with its transport. `hash_used` announces a
/// checksum to follow in `session-info` (what Libervia expects). An absent
/// description is sent as an empty `<desc/>`: Libervia fails the session
/// (`failed-application`, a Python `KeyError: 'desc'`) on an offer without
/// one (Libervia 0.9, see tests/jingle_libervia.rs); XEP-0234 allows it either way.
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
