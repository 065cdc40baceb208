//! Presence with the Google share caps, the resource table, and the answers
//! to the IQ gets every client must answer (PROTOCOL.md §A.11).

use std::collections::HashMap;

use minidom::Element;
use minidom::rxml::xml_ncname;
use tokio_xmpp::parsers::jid::{BareJid, FullJid};
use tokio_xmpp::parsers::presence::Presence;

/// XEP-0115 namespace (legacy Google caps use its element).
pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";
/// The caps node Google clients advertise.
pub const CAPS_NODE: &str = "http://www.google.com/xmpp/client/caps";
/// The `ext` token that means "can receive files".
pub const SHARE_EXT: &str = "share-v1";
/// The disco feature gabble maps `share-v1` to (no `www.`).
pub const FEATURE_SHARE: &str = "http://google.com/xmpp/protocol/share/v1";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_PING: &str = "urn:xmpp:ping";
/// Our caps version string.
pub const CAPS_VER: &str = env!("CARGO_PKG_VERSION");

/// What we know of one available resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    pub priority: i8,
    /// Advertises `share-v1` (or the share disco feature in its caps ext).
    pub share: bool,
}

/// `<c xmlns=caps node=google ver ext="share-v1"/>`; `ext` only when `share`.
pub fn caps_element(share: bool) -> Element {
    let mut b = Element::builder("c", NS_CAPS)
        .attr(xml_ncname!("node").into(), CAPS_NODE)
        .attr(xml_ncname!("ver").into(), CAPS_VER);
    if share {
        b = b.attr(xml_ncname!("ext").into(), SHARE_EXT);
    }
    b.build()
}

/// Available presence carrying our caps.
pub fn initial_presence(share: bool, priority: i8) -> Presence {
    let mut p = Presence::available().with_priority(priority);
    p.payloads.push(caps_element(share));
    p
}

/// Reads priority and the share capability from an available presence.
pub fn resource_info(p: &Presence) -> ResourceInfo {
    let share = p.payloads.iter().any(|el| {
        el.is("c", NS_CAPS)
            && el
                .attr("ext")
                .is_some_and(|ext| ext.split_whitespace().any(|t| t == SHARE_EXT))
    });
    ResourceInfo {
        priority: p.priority.0,
        share,
    }
}

/// The share-capable resource of `bare` with the highest priority (ties:
/// the lexically smallest resource, so the choice is stable).
pub fn best_resource(map: &HashMap<FullJid, ResourceInfo>, bare: &BareJid) -> Option<FullJid> {
    map.iter()
        .filter(|(jid, info)| info.share && jid.to_bare() == *bare)
        .max_by(|(ja, a), (jb, b)| {
            a.priority
                .cmp(&b.priority)
                .then_with(|| jb.resource().as_str().cmp(ja.resource().as_str()))
        })
        .map(|(jid, _)| jid.clone())
}

/// The answer to an IQ get we handle ourselves, or None (service-unavailable).
pub fn answer_get(payload: &Element, share: bool) -> Option<Option<Element>> {
    if payload.is("ping", NS_PING) {
        return Some(None);
    }
    if payload.is("query", NS_DISCO_INFO) {
        let mut q = Element::builder("query", NS_DISCO_INFO);
        if let Some(node) = payload.attr("node") {
            q = q.attr(xml_ncname!("node").into(), node);
        }
        let identity = Element::builder("identity", NS_DISCO_INFO)
            .attr(xml_ncname!("category").into(), "client")
            .attr(xml_ncname!("type").into(), "pc")
            .attr(xml_ncname!("name").into(), "gshare")
            .build();
        let feature = |var: &str| {
            Element::builder("feature", NS_DISCO_INFO)
                .attr(xml_ncname!("var").into(), var)
                .build()
        };
        let mut q = q
            .append(identity)
            .append(feature(NS_DISCO_INFO))
            .append(feature(NS_PING));
        if share {
            q = q.append(feature(FEATURE_SHARE));
        }
        return Some(Some(q.build()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_carry_share_ext() {
        let c = caps_element(true);
        assert_eq!(c.attr("node"), Some(CAPS_NODE));
        assert_eq!(c.attr("ext"), Some("share-v1"));
        assert!(caps_element(false).attr("ext").is_none());
    }

    #[test]
    fn share_detected_among_other_ext_tokens() {
        let mut p = Presence::available().with_priority(5);
        p.payloads.push(
            Element::builder("c", NS_CAPS)
                .attr(xml_ncname!("node").into(), CAPS_NODE)
                .attr(xml_ncname!("ext").into(), "voice-v1 share-v1")
                .build(),
        );
        assert_eq!(
            resource_info(&p),
            ResourceInfo {
                priority: 5,
                share: true
            }
        );
        let plain = Presence::available().with_priority(9);
        assert!(!resource_info(&plain).share);
    }

    #[test]
    fn best_resource_prefers_share_then_priority() {
        let bare: BareJid = "juliet@capulet.lit".parse().unwrap();
        let mut m = HashMap::new();
        m.insert(
            "juliet@capulet.lit/chat".parse().unwrap(),
            ResourceInfo {
                priority: 50,
                share: false,
            },
        );
        m.insert(
            "juliet@capulet.lit/a".parse().unwrap(),
            ResourceInfo {
                priority: 1,
                share: true,
            },
        );
        m.insert(
            "juliet@capulet.lit/b".parse().unwrap(),
            ResourceInfo {
                priority: 3,
                share: true,
            },
        );
        m.insert(
            "nurse@capulet.lit/x".parse().unwrap(),
            ResourceInfo {
                priority: 9,
                share: true,
            },
        );
        let best = best_resource(&m, &bare).unwrap();
        assert_eq!(best.resource().as_str(), "b");
    }

    #[test]
    fn disco_info_for_share_node_has_feature() {
        let q = Element::builder("query", NS_DISCO_INFO)
            .attr(xml_ncname!("node").into(), format!("{CAPS_NODE}#share-v1"))
            .build();
        let answer = answer_get(&q, true).unwrap().unwrap();
        assert_eq!(
            answer.attr("node"),
            Some(format!("{CAPS_NODE}#share-v1").as_str())
        );
        assert!(
            answer
                .children()
                .any(|f| f.attr("var") == Some(FEATURE_SHARE))
        );
        let unknown = Element::builder("query", "jabber:iq:version").build();
        assert!(answer_get(&unknown, true).is_none());
    }
}
