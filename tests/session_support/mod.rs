//! Shared helpers for the session tests: seed fixtures, XML parsing,
//! structural comparison of element trees, driving a `SessionManager`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gshare::session::{IqIn, IqOut, IqPayload, SessionEvent, SessionManager};
use jid::{FullJid, Jid};
use minidom::{Element, Node};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The sixteen seed stanzas, in transcript order (tests/data/seed/README.md).
pub const SEED: [&str; 16] = [
    include_str!("../data/seed/01_s2r_initiate.xml"),
    include_str!("../data/seed/02_r2s_initiate_result.xml"),
    include_str!("../data/seed/03_r2s_transport_accept.xml"),
    include_str!("../data/seed/04_s2r_transport_accept_result.xml"),
    include_str!("../data/seed/05_r2s_accept.xml"),
    include_str!("../data/seed/06_s2r_accept_result.xml"),
    include_str!("../data/seed/07_r2s_info_channel.xml"),
    include_str!("../data/seed/08_s2r_info_channel_result.xml"),
    include_str!("../data/seed/09_s2r_sender_transport_info.xml"),
    include_str!("../data/seed/10_r2s_sender_transport_info_result.xml"),
    include_str!("../data/seed/11_r2s_receiver_transport_info.xml"),
    include_str!("../data/seed/12_s2r_receiver_transport_info_result.xml"),
    include_str!("../data/seed/13_r2s_info_complete.xml"),
    include_str!("../data/seed/14_s2r_info_complete_result.xml"),
    include_str!("../data/seed/15_r2s_terminate.xml"),
    include_str!("../data/seed/16_s2r_terminate_result.xml"),
];

pub const NS_SESSION: &str = "http://www.google.com/session";
pub const NS_SHARE: &str = "http://www.google.com/session/share";
pub const NS_P2P: &str = "http://www.google.com/transport/p2p";

/// Parses XML as a child of a `jabber:client` stream (so the seed's bare
/// `<iq>` gets its stream namespace); panics on malformed test input.
pub fn xml(s: &str) -> Element {
    match Element::from_reader_with_prefixes(s.trim().as_bytes(), "jabber:client".to_owned()) {
        Ok(e) => e,
        Err(err) => panic!("test XML does not parse: {err}\n{s}"),
    }
}

/// A seed stanza by 1-based transcript number.
pub fn seed(n: usize) -> Element {
    xml(SEED[n - 1])
}

pub fn jid(s: &str) -> Jid {
    Jid::new(s).unwrap()
}

pub fn full(s: &str) -> FullJid {
    FullJid::new(s).unwrap()
}

/// Serialises an element (for messages and substring checks).
pub fn to_string(el: &Element) -> String {
    let mut out = Vec::new();
    el.write_to(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// How `canon` treats values.
#[derive(Default, Clone)]
pub struct Canon {
    /// Replace these (element, attribute) values with `*`; attribute `*`
    /// matches every attribute of that element.
    pub mask: Vec<(&'static str, &'static str)>,
    /// Replace text of these elements with `*`.
    pub mask_text: Vec<&'static str>,
    /// Read these (element, attribute) values as JIDs and keep the bare part.
    pub bare: Vec<(&'static str, &'static str)>,
    /// Drop these (element, attribute) pairs.
    pub drop: Vec<(&'static str, &'static str)>,
}

impl Canon {
    fn masked(&self, el: &str, attr: &str) -> bool {
        self.mask
            .iter()
            .any(|(e, a)| *e == el && (*a == attr || *a == "*"))
    }
}

/// A canonical one-line rendering of an element tree: namespaces (except on
/// `<iq>`, which the seed writes without one), attributes sorted, whitespace
/// text dropped and other text trimmed, masks applied. Two stanzas that are
/// the same XML up to formatting, attribute order and masked values render
/// identically.
pub fn canon(el: &Element, c: &Canon) -> String {
    let mut s = String::new();
    canon_into(el, c, &mut s, None);
    s
}

fn canon_into(el: &Element, c: &Canon, out: &mut String, parent_ns: Option<String>) {
    let name = el.name();
    out.push('<');
    out.push_str(name);
    let ns = el.ns();
    if name != "iq" && parent_ns.as_deref() != Some(ns.as_str()) {
        out.push_str(&format!(" ns={ns:?}"));
    }
    let mut attrs = BTreeMap::new();
    for ((_ans, aname), value) in el.attrs().iter() {
        let aname = aname.as_str();
        if c.drop.iter().any(|(e, a)| *e == name && *a == aname) {
            continue;
        }
        let v = if c.masked(name, aname) {
            "*".to_owned()
        } else if c.bare.iter().any(|(e, a)| *e == name && *a == aname) {
            Jid::new(value)
                .map(|j| j.to_bare().to_string())
                .unwrap_or(value.clone())
        } else {
            value.clone()
        };
        attrs.insert(aname.to_owned(), v);
    }
    for (k, v) in attrs {
        out.push_str(&format!(" {k}={v:?}"));
    }
    out.push('>');
    for node in el.nodes() {
        match node {
            Node::Element(child) => canon_into(child, c, out, Some(ns.clone())),
            Node::Text(t) => {
                let t = t.trim();
                if !t.is_empty() {
                    if c.mask_text.contains(&name) {
                        out.push('*');
                    } else {
                        out.push_str(&format!("{t:?}"));
                    }
                }
            }
        }
    }
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// The IQ element as the seed would write it (no `from`).
pub fn out_el(out: &IqOut) -> Element {
    out.to_element(None)
}

/// An `IqIn` from a stanza element (must have from/id/type).
pub fn iq_in(el: &Element) -> IqIn {
    IqIn::from_element(el).unwrap_or_else(|| panic!("not a usable iq: {}", to_string(el)))
}

/// A result IQ for an outgoing set.
pub fn result_for(out: &IqOut) -> IqIn {
    IqIn {
        from: out.to.clone(),
        id: out.id.clone(),
        payload: IqPayload::Result(None),
    }
}

pub fn drain(m: &mut SessionManager) -> Vec<IqOut> {
    std::iter::from_fn(|| m.poll_transmit()).collect()
}

pub fn events(m: &mut SessionManager) -> Vec<SessionEvent> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

pub fn seeded(local: &str, seed: u64) -> SessionManager {
    SessionManager::with_rng(
        full(local),
        gshare::session::Config::default(),
        StdRng::seed_from_u64(seed),
    )
}

pub fn seeded_with(local: &str, seed: u64, config: gshare::session::Config) -> SessionManager {
    SessionManager::with_rng(full(local), config, StdRng::seed_from_u64(seed))
}

/// A fixed starting instant for virtual time.
pub fn t0() -> Instant {
    Instant::now()
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Sets an attribute on an element (for rewriting seed stanzas).
pub fn set_attr(el: &mut Element, name: &'static str, value: &str) {
    let nc = minidom::rxml::NcName::try_from(name).unwrap();
    el.set_attr(minidom::rxml::Namespace::NONE, nc, value.to_owned());
}

/// Rewrites a seed set's `<session>` id and initiator, and the IQ `from`.
pub fn rewrite_set(mut iq: Element, from: &str, sid: &str, initiator: &str) -> IqIn {
    set_attr(&mut iq, "from", from);
    if let Some(s) = iq.get_child_mut("session", NS_SESSION) {
        set_attr(s, "id", sid);
        set_attr(s, "initiator", initiator);
    }
    iq_in(&iq)
}

/// Delivers everything `from` wants to send to `to` (through text, as on
/// the wire, with `from_jid` as sender). Returns whether anything moved.
pub fn deliver(
    now: Instant,
    from: &mut SessionManager,
    from_jid: &str,
    to: &mut SessionManager,
) -> bool {
    let mut moved = false;
    while let Some(out) = from.poll_transmit() {
        moved = true;
        let mut el = out.to_element(None);
        set_attr(&mut el, "from", from_jid);
        let el = xml(&to_string(&el));
        assert!(
            to.handle_iq(now, iq_in(&el)),
            "not consumed: {}",
            to_string(&el)
        );
    }
    moved
}

/// Delivers in both directions until both machines are quiet.
pub fn pump(
    now: Instant,
    a: &mut SessionManager,
    a_jid: &str,
    b: &mut SessionManager,
    b_jid: &str,
) {
    loop {
        let x = deliver(now, a, a_jid, b);
        let y = deliver(now, b, b_jid, a);
        if !x && !y {
            break;
        }
    }
}
