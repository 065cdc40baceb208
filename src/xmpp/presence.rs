//! Presence with the Google share caps, the resource table, and the answers
//! to the IQ gets every client must answer (docs/protocol.md §A.11).
//!
//! Presence is peer-driven: anyone on the network can send us directed
//! presence from as many full JIDs as their server lets them make. The
//! tables kept from it ([`ResourceTable`], [`PresenceBook`]) are therefore
//! bounded (the bounds are the `MAX_*` constants below) and hashed, so that
//! each presence costs O(1) however many arrived before.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use minidom::Element;
use minidom::rxml::xml_ncname;
use tokio_xmpp::parsers::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};

/// XEP-0115 namespace (legacy Google caps use its element).
pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";
/// The caps node Google clients advertise.
pub const CAPS_NODE: &str = "http://www.google.com/xmpp/client/caps";
/// The `ext` token that means "can receive files".
pub const SHARE_EXT: &str = "share-v1";
/// The disco feature gabble maps `share-v1` to (no `www.`).
pub const FEATURE_SHARE: &str = "http://google.com/xmpp/protocol/share/v1";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// The disco features of Jingle file transfer we answer with beside
/// [`FEATURE_SHARE`]: Jingle, its file-transfer application, the S5B and
/// IBB transports and their underlying XEP-0065/XEP-0047, XEP-0300 SHA-256,
/// and Jingle Message Initiation (XEP-0353 asks its responders to
/// advertise it; the receive job answers `<propose/>`).
const JINGLE_FEATURES: [&str; 9] = [
    "urn:xmpp:jingle:1",
    "urn:xmpp:jingle:apps:file-transfer:5",
    "urn:xmpp:jingle:transports:s5b:1",
    "urn:xmpp:jingle:transports:ibb:1",
    "http://jabber.org/protocol/bytestreams",
    "http://jabber.org/protocol/ibb",
    "urn:xmpp:hashes:2",
    "urn:xmpp:hash-function-text-names:sha-256",
    "urn:xmpp:jingle-message:0",
];
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

/// Accounts (bare JIDs) whose resources are remembered at most. Past it the
/// account heard from least recently is forgotten: a flood of presences from
/// made-up accounts pushes out only accounts that have been quiet longest,
/// and a contact that announces itself again is back at once.
pub const MAX_ACCOUNTS: usize = 1024;

/// Available resources remembered per account at most. A real account has a
/// handful; past the bound a new resource of that account is refused (known
/// ones are still updated), so one account cannot push out the others.
pub const MAX_RESOURCES_PER_ACCOUNT: usize = 32;

/// Full JIDs remembered as "already answered with our directed presence" at
/// most; past it the oldest is forgotten, which costs at worst one more
/// presence stanza to that resource if it writes again.
pub const MAX_ANSWERED: usize = 1024;

/// A hash map with at most `cap` entries that forgets the least recently
/// inserted or updated entry when a new key arrives at a full table. Every
/// operation is O(1) (amortised: the recency queue is compacted when stale
/// entries make up more than half of it).
#[derive(Debug, Clone)]
struct Bounded<K, V> {
    cap: usize,
    /// key → (value, stamp of its latest insertion).
    map: HashMap<K, (V, u64)>,
    /// Keys in insertion order with the stamp they were pushed with; an
    /// entry whose stamp differs from the map's (or whose key is gone) is
    /// stale and skipped. At most `2 * cap + 1` entries.
    order: VecDeque<(K, u64)>,
    next_stamp: u64,
}

impl<K: Eq + Hash + Clone, V> Bounded<K, V> {
    fn new(cap: usize) -> Self {
        Bounded {
            cap: cap.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
            next_stamp: 0,
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|(v, _)| v)
    }

    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key).map(|(v, _)| v)
    }

    fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Inserts or updates `key` as the most recent entry; returns the
    /// entry evicted to make room, if any.
    fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let mut evicted = None;
        if !self.map.contains_key(&key) && self.map.len() >= self.cap {
            evicted = self.evict_oldest();
        }
        self.map.insert(key.clone(), (value, stamp));
        self.order.push_back((key, stamp));
        if self.order.len() > 2 * self.cap {
            let map = &self.map;
            self.order
                .retain(|(k, s)| map.get(k).is_some_and(|(_, live)| live == s));
        }
        evicted
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        self.map.remove(key).map(|(v, _)| v)
    }

    fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }

    fn evict_oldest(&mut self) -> Option<(K, V)> {
        while let Some((k, stamp)) = self.order.pop_front() {
            if self.map.get(&k).is_some_and(|(_, live)| *live == stamp) {
                return self.map.remove(&k).map(|(v, _)| (k, v));
            }
        }
        None
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().map(|(v, _)| v)
    }

    #[cfg(test)]
    fn order_len(&self) -> usize {
        self.order.len()
    }
}

/// The available resources we know of, by account (bounded: see
/// [`MAX_ACCOUNTS`] and [`MAX_RESOURCES_PER_ACCOUNT`]).
#[derive(Debug, Clone)]
pub struct ResourceTable {
    accounts: Bounded<BareJid, HashMap<FullJid, ResourceInfo>>,
    per_account: usize,
}

impl Default for ResourceTable {
    fn default() -> Self {
        ResourceTable::with_bounds(MAX_ACCOUNTS, MAX_RESOURCES_PER_ACCOUNT)
    }
}

impl ResourceTable {
    /// A table with other bounds than the defaults (tests).
    pub fn with_bounds(accounts: usize, per_account: usize) -> Self {
        ResourceTable {
            accounts: Bounded::new(accounts),
            per_account: per_account.max(1),
        }
    }

    /// Records `jid` as available; false if refused (its account already
    /// has [`MAX_RESOURCES_PER_ACCOUNT`] other resources).
    pub fn insert(&mut self, jid: FullJid, info: ResourceInfo) -> bool {
        let bare = jid.to_bare();
        let mut resources = self.accounts.remove(&bare).unwrap_or_default();
        let admitted = resources.contains_key(&jid) || resources.len() < self.per_account;
        if admitted {
            resources.insert(jid, info);
        }
        if !resources.is_empty() {
            // (Re)inserted as the most recently heard-from account.
            self.accounts.insert(bare, resources);
        }
        admitted
    }

    /// Forgets one resource.
    pub fn remove(&mut self, jid: &FullJid) {
        let bare = jid.to_bare();
        let now_empty = match self.accounts.get_mut(&bare) {
            Some(resources) => {
                resources.remove(jid);
                resources.is_empty()
            }
            None => false,
        };
        if now_empty {
            self.accounts.remove(&bare);
        }
    }

    /// Forgets every resource of an account.
    pub fn remove_account(&mut self, bare: &BareJid) {
        self.accounts.remove(bare);
    }

    /// Is `jid` available?
    pub fn contains(&self, jid: &FullJid) -> bool {
        self.accounts
            .get(&jid.to_bare())
            .is_some_and(|r| r.contains_key(jid))
    }

    /// What we know of `jid`.
    pub fn get(&self, jid: &FullJid) -> Option<&ResourceInfo> {
        self.accounts.get(&jid.to_bare()).and_then(|r| r.get(jid))
    }

    /// The share-capable resource of `bare` with the highest priority.
    pub fn best(&self, bare: &BareJid) -> Option<FullJid> {
        self.accounts
            .get(bare)
            .and_then(|resources| best_resource(resources, bare))
    }

    /// Accounts with at least one available resource.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// Available resources over all accounts.
    pub fn len(&self) -> usize {
        self.accounts.values().map(HashMap::len).sum()
    }

    /// True when no resource is available.
    pub fn is_empty(&self) -> bool {
        self.accounts.len() == 0
    }
}

/// What the presence handler remembers besides the resource table: whom we
/// already answered with directed presence (bounded by [`MAX_ANSWERED`]).
#[derive(Debug)]
pub struct PresenceBook {
    answered: Bounded<FullJid, ()>,
}

impl Default for PresenceBook {
    fn default() -> Self {
        PresenceBook::with_bound(MAX_ANSWERED)
    }
}

impl PresenceBook {
    /// A book with another bound than [`MAX_ANSWERED`] (tests).
    pub fn with_bound(answered: usize) -> Self {
        PresenceBook {
            answered: Bounded::new(answered),
        }
    }

    /// Forgets whom we answered (the stream was re-established).
    pub fn reset(&mut self) {
        self.answered.clear();
    }

    /// Full JIDs remembered as answered.
    pub fn answered_count(&self) -> usize {
        self.answered.len()
    }

    /// Applies one incoming presence to `table` and says whom to send our
    /// own available presence to: a resource of another account that sent
    /// us available presence for the first time (so that a sender who is
    /// not subscribed to us can find us), or whoever probed us. `own` is our
    /// account; `allowed` says which accounts we answer at all. Returns
    /// whether `table` changed, and the addressee. O(1).
    pub fn observe(
        &mut self,
        table: &mut ResourceTable,
        own: &BareJid,
        allowed: impl Fn(&BareJid) -> bool,
        p: &Presence,
    ) -> (bool, Option<Jid>) {
        let Some(from) = p.from.clone() else {
            return (false, None);
        };
        let from_full = from.clone().try_into_full().ok();
        match p.type_ {
            PresenceType::None => {
                let Some(full) = from_full else {
                    return (false, None);
                };
                let changed = table.insert(full.clone(), resource_info(p));
                let bare = full.to_bare();
                let answer = bare != *own && !self.answered.contains(&full) && allowed(&bare);
                if answer {
                    self.answered.insert(full.clone(), ());
                }
                (changed, answer.then(|| Jid::from(full)))
            }
            PresenceType::Unavailable => {
                match from_full {
                    Some(full) => {
                        table.remove(&full);
                        self.answered.remove(&full);
                    }
                    None => table.remove_account(&from.to_bare()),
                }
                (true, None)
            }
            PresenceType::Probe if allowed(&from.to_bare()) => (false, Some(from)),
            _ => (false, None),
        }
    }
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
            // Jingle file transfer (issue 18; docs/protocol.md §H.4): the
            // jobs take offers and send with it beside the Google share.
            for var in JINGLE_FEATURES {
                q = q.append(feature(var));
            }
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

    fn available(from: &str, share: bool) -> Presence {
        let mut p = Presence::available().with_priority(1);
        p.from = Some(from.parse().unwrap());
        p.payloads.push(caps_element(share));
        p
    }

    fn unavailable(from: &str) -> Presence {
        let mut p = Presence::unavailable();
        p.from = Some(from.parse().unwrap());
        p
    }

    fn own() -> BareJid {
        "romeo@montague.lit".parse().unwrap()
    }

    #[test]
    fn directed_presence_is_answered_once_and_tracked() {
        let mut table = ResourceTable::default();
        let mut book = PresenceBook::default();
        let p = available("juliet@capulet.lit/files", true);
        let (changed, to) = book.observe(&mut table, &own(), |_| true, &p);
        assert!(changed);
        assert_eq!(to.unwrap().to_string(), "juliet@capulet.lit/files");
        let (_, again) = book.observe(&mut table, &own(), |_| true, &p);
        assert!(again.is_none(), "answered twice");
        let juliet: BareJid = "juliet@capulet.lit".parse().unwrap();
        assert_eq!(
            table.best(&juliet).unwrap().to_string(),
            "juliet@capulet.lit/files"
        );
        // Our own other resources and accounts not allowed are not answered.
        let mine = available("romeo@montague.lit/phone", true);
        assert!(
            book.observe(&mut table, &own(), |_| true, &mine)
                .1
                .is_none()
        );
        let nurse = available("nurse@capulet.lit/x", true);
        assert!(
            book.observe(&mut table, &own(), |_| false, &nurse)
                .1
                .is_none()
        );
        // Unavailable forgets the resource and the answer; a bare one the account.
        book.observe(
            &mut table,
            &own(),
            |_| true,
            &unavailable("juliet@capulet.lit/files"),
        );
        assert!(table.best(&juliet).is_none());
        assert!(book.observe(&mut table, &own(), |_| true, &p).1.is_some());
        book.observe(
            &mut table,
            &own(),
            |_| true,
            &unavailable("juliet@capulet.lit"),
        );
        assert!(!table.contains(&"juliet@capulet.lit/files".parse().unwrap()));
    }

    #[test]
    fn a_flood_of_accounts_cannot_grow_the_tables() {
        let mut table = ResourceTable::with_bounds(64, 4);
        let mut book = PresenceBook::with_bound(64);
        for i in 0..10_000 {
            let p = available(&format!("u{i}@evil.example/r"), true);
            book.observe(&mut table, &own(), |_| true, &p);
            assert!(table.account_count() <= 64);
            assert!(table.accounts.order_len() <= 2 * 64 + 1);
            assert!(book.answered_count() <= 64);
            assert!(book.answered.order_len() <= 2 * 64 + 1);
        }
        assert_eq!(table.account_count(), 64);
        // The most recent accounts are kept, the oldest evicted.
        assert!(table.contains(&"u9999@evil.example/r".parse().unwrap()));
        assert!(!table.contains(&"u0@evil.example/r".parse().unwrap()));
        // A contact that announces itself again is back at once.
        let juliet = available("juliet@capulet.lit/files", true);
        book.observe(&mut table, &own(), |_| true, &juliet);
        assert!(table.best(&"juliet@capulet.lit".parse().unwrap()).is_some());
    }

    #[test]
    fn a_flood_of_resources_of_one_account_is_refused_past_the_bound() {
        let mut table = ResourceTable::with_bounds(64, 4);
        let mut book = PresenceBook::with_bound(64);
        let juliet = available("juliet@capulet.lit/files", true);
        book.observe(&mut table, &own(), |_| true, &juliet);
        for i in 0..10_000 {
            let p = available(&format!("mallory@evil.example/r{i}"), true);
            let (changed, _) = book.observe(&mut table, &own(), |_| true, &p);
            assert_eq!(changed, i < 4);
            // Updates of known resources still go in.
            let (changed, _) = book.observe(
                &mut table,
                &own(),
                |_| true,
                &available("mallory@evil.example/r0", false),
            );
            assert!(changed);
        }
        assert_eq!(table.len(), 5);
        assert!(table.accounts.order_len() <= 2 * 64 + 1);
        assert!(table.best(&"juliet@capulet.lit".parse().unwrap()).is_some());
    }

    /// Each presence costs O(1): handling the same number of presences
    /// against a table 64 times larger takes about the same time, where a
    /// linear scan per presence (the old `Vec::contains`) would take 64
    /// times longer. Best of several rounds against scheduler noise.
    #[test]
    fn each_presence_costs_the_same_however_full_the_tables_are() {
        fn cost(bound: usize) -> std::time::Duration {
            let mut table = ResourceTable::with_bounds(bound, 4);
            let mut book = PresenceBook::with_bound(bound);
            let stanzas: Vec<Presence> = (0..bound + 4096)
                .map(|i| available(&format!("u{i}@evil.example/r"), true))
                .collect();
            let (fill, measured) = stanzas.split_at(bound);
            for p in fill {
                book.observe(&mut table, &own(), |_| true, p);
            }
            let start = std::time::Instant::now();
            for p in measured {
                book.observe(&mut table, &own(), |_| true, p);
            }
            start.elapsed()
        }
        let best = |bound| (0..5).map(|_| cost(bound)).min().unwrap();
        let small = best(256);
        let large = best(256 * 64);
        assert!(
            large < small * 8,
            "4096 presences took {small:?} at 256 entries but {large:?} at 16384"
        );
    }
}
