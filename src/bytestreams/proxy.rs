//! XEP-0065 proxy discovery and activation, the
//! `http://jabber.org/protocol/bytestreams` query (`xmpp-parsers` 0.23 has
//! no such module).
//!
//! - discovery: `<iq type='get' to='proxy'><query xmlns=NS/></iq>` →
//!   `<query><streamhost jid host port/></query>` ([`parse_streamhosts`]);
//! - activation: `<iq type='set' to='proxy'><query sid><activate>target
//!   </activate></query></iq>` ([`activate_query`]); the `sid` is the S5B
//!   transport sid, the target the peer's full JID.
//!
//! Which server items are proxies (disco#items + disco#info category
//! `proxy`, type `bytestreams`) is the XMPP layer's business.

use std::net::{IpAddr, SocketAddr};

use jid::Jid;
use minidom::Element;

use crate::session::stanza::ncname;

/// XEP-0065 namespace.
pub const NS_BYTESTREAMS: &str = "http://jabber.org/protocol/bytestreams";
/// Most streamhosts kept from one answer (a proxy announces one or two).
pub const MAX_STREAMHOSTS: usize = 8;

/// A proxy streamhost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHost {
    /// The proxy's JID (candidate `jid`, activation target).
    pub jid: Jid,
    /// Its address.
    pub addr: SocketAddr,
}

/// The discovery query (payload of an IQ get to the proxy).
pub fn discovery_query() -> Element {
    Element::bare("query", NS_BYTESTREAMS)
}

/// Reads the proxy's answer. Streamhosts with a host name instead of an IP
/// address, or without a port, are skipped (XEP-0065 §6.3 makes the port
/// required; host names would need resolving, which is not done here).
pub fn parse_streamhosts(query: &Element) -> Vec<StreamHost> {
    if !query.is("query", NS_BYTESTREAMS) {
        return Vec::new();
    }
    query
        .children()
        .filter(|c| c.is("streamhost", NS_BYTESTREAMS))
        .filter_map(|c| {
            let jid = Jid::new(c.attr("jid")?).ok()?;
            let ip: IpAddr = c.attr("host")?.parse().ok()?;
            let port: u16 = c.attr("port")?.parse().ok()?;
            Some(StreamHost {
                jid,
                addr: SocketAddr::new(ip, port),
            })
        })
        .take(MAX_STREAMHOSTS)
        .collect()
}

/// The activation query (payload of an IQ set to the proxy).
pub fn activate_query(sid: &str, target: &Jid) -> Element {
    Element::builder("query", NS_BYTESTREAMS)
        .attr(ncname("sid"), sid)
        .append(
            Element::builder("activate", NS_BYTESTREAMS)
                .append(target.to_string())
                .build(),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prosody_answer_and_writes_activate() {
        let el: Element = "<query xmlns='http://jabber.org/protocol/bytestreams'>\
            <streamhost jid='proxy.localhost' host='127.0.0.1' port='5000'/>\
            <streamhost jid='proxy.localhost' host='proxy.example' port='5000'/></query>"
            .parse()
            .unwrap();
        let hs = parse_streamhosts(&el);
        assert_eq!(
            hs,
            vec![StreamHost {
                jid: Jid::new("proxy.localhost").unwrap(),
                addr: "127.0.0.1:5000".parse().unwrap()
            }]
        );
        let a = activate_query("s1", &Jid::new("b@localhost/r").unwrap());
        assert_eq!(a.attr("sid"), Some("s1"));
        assert_eq!(
            a.get_child("activate", NS_BYTESTREAMS).unwrap().text(),
            "b@localhost/r"
        );
    }
}
