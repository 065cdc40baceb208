//! Jingle Message Initiation (XEP-0353, `urn:xmpp:jingle-message:0`), the
//! responder's part gshare needs (docs/protocol.md §H.4): a sender that
//! only knows our bare JID (Libervia) sends `<propose id='SID'>` in a
//! `<message>`; we answer `<proceed id='SID'/>` from our full JID, and the
//! sender then sends its `session-initiate` (with `sid` SID) to that full
//! JID, which goes through the ordinary Jingle path.

use jid::{FullJid, Jid};
use minidom::Element;
use tokio_xmpp::parsers::message::{Message, MessageType};

use super::codec::NS_JINGLE_FT;
use crate::session::stanza::ncname;

/// The XEP-0353 namespace (also its disco feature).
pub const NS_JMI: &str = "urn:xmpp:jingle-message:0";

/// A `<propose>` found in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Propose {
    /// Who proposed (the message's `from`).
    pub from: Jid,
    /// The session id the following `session-initiate` will carry.
    pub id: String,
    /// Whether a description is Jingle file transfer (XEP-0234); other
    /// proposals (e.g. RTP calls) are not for gshare.
    pub file_transfer: bool,
}

/// The `<propose>` in `msg`, if any (with a `from` and a non-empty `id`).
/// `<retract>`, `<accept>`, `<proceed>`, `<reject>` give `None`.
pub fn propose(msg: &Message) -> Option<Propose> {
    let el = msg.payloads.iter().find(|p| p.is("propose", NS_JMI))?;
    let id = el.attr("id").filter(|id| !id.is_empty())?;
    let from = msg.from.clone()?;
    let file_transfer = el.children().any(|c| c.is("description", NS_JINGLE_FT));
    Some(Propose {
        from,
        id: id.to_owned(),
        file_transfer,
    })
}

/// `<message type='chat' to=to><proceed xmlns=NS_JMI id=id/></message>`,
/// as in XEP-0353's examples (no hints: it goes to a full JID that is
/// online, waiting for it).
pub fn proceed(to: &FullJid, id: &str) -> Message {
    let mut m = Message::new_with_type(MessageType::Chat, Some(Jid::from(to.clone())));
    m.payloads.push(
        Element::builder("proceed", NS_JMI)
            .attr(ncname("id"), id)
            .build(),
    );
    m
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn message(xml: &str) -> Message {
        let el: Element = xml.parse().unwrap();
        Message::try_from(el).unwrap()
    }

    #[test]
    fn a_file_transfer_propose_is_read() {
        let m = message(
            "<message xmlns='jabber:client' from='romeo@localhost/libervia' \
             to='juliet@localhost' type='chat'>\
             <propose xmlns='urn:xmpp:jingle-message:0' id='s1'>\
             <description xmlns='urn:xmpp:jingle:apps:file-transfer:5'>\
             <file><name>a.bin</name></file></description></propose></message>",
        );
        let p = propose(&m).unwrap();
        assert_eq!(p.id, "s1");
        assert!(p.file_transfer);
        assert_eq!(p.from.to_string(), "romeo@localhost/libervia");
    }

    #[test]
    fn a_call_propose_is_not_file_transfer() {
        let m = message(
            "<message xmlns='jabber:client' from='romeo@localhost/x' type='chat'>\
             <propose xmlns='urn:xmpp:jingle-message:0' id='c1'>\
             <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/>\
             </propose></message>",
        );
        assert!(!propose(&m).unwrap().file_transfer);
    }

    #[test]
    fn retract_and_idless_propose_are_ignored() {
        let retract = message(
            "<message xmlns='jabber:client' from='romeo@localhost/x'>\
             <retract xmlns='urn:xmpp:jingle-message:0' id='s1'/></message>",
        );
        assert_eq!(propose(&retract), None);
        let idless = message(
            "<message xmlns='jabber:client' from='romeo@localhost/x'>\
             <propose xmlns='urn:xmpp:jingle-message:0'>\
             <description xmlns='urn:xmpp:jingle:apps:file-transfer:5'/>\
             </propose></message>",
        );
        assert_eq!(propose(&idless), None);
    }

    #[test]
    fn proceed_names_the_session() {
        let to: FullJid = "romeo@localhost/libervia".parse().unwrap();
        let m = proceed(&to, "s1");
        assert_eq!(m.type_, MessageType::Chat);
        assert_eq!(m.to, Some(Jid::from(to)));
        let el = Element::from(m);
        let p = el.get_child("proceed", NS_JMI).unwrap();
        assert_eq!(p.attr("id"), Some("s1"));
    }
}
