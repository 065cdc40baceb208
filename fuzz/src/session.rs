//! `session_stanza`: XML text → minidom → `SessionMessage` round trip, and the
//! same stanzas fed to two `SessionManager`s (a receiver with no session yet,
//! and a sender with an offer outstanding), with commands in between.
//!
//! Input: UTF-8 text split on form feeds (`\x0c`, which XML forbids, so it
//! never cuts a meaningful stanza). Each piece is either
//! * an XML element: an `<iq>` is routed by its `from` (romeo → the receiver,
//!   juliet → the sender, anything else → both), any other element is wrapped
//!   into an IQ set from the manager's peer; or
//! * a command `!name [arg]` applied to both managers (accept, reject,
//!   channel, cands, complete, terminate, connected, ack, initiate, tick N).
//!
//! To let seed transcripts reach the sender's live session, the seed's
//! session id `purple937c6e2d` and bare JIDs are rewritten to the sender's
//! real session id and full JIDs, and a result/error's id is replaced by the
//! id of the oldest set of ours still unanswered. Anything else reaches the
//! machines unchanged.
//!
//! Invariants checked: our own sets re-parse as `SessionMessage` and round
//! trip; every consumed set is answered by exactly one result or error with
//! its id; unconsumed IQs cause no output and no event; every IQ we send
//! serialises to XML that parses back; events name live handles; after
//! `handle_timeout(now)` no timer is left at or before `now`.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use gshare::ice::{Candidate, CandidateType};
use gshare::session::{
    Config, IqIn, IqOut, IqOutKind, IqPayload, Manifest, ManifestItem, SessionBody, SessionEvent,
    SessionHandle, SessionManager, SessionMessage,
};
use jid::{FullJid, Jid};
use minidom::Element;
use minidom::rxml::{Namespace, NcName};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The session namespace.
pub const NS_SESSION: &str = "http://www.google.com/session";
const RECEIVER_ME: &str = "juliet@capulet.lit/gshare";
const RECEIVER_PEER: &str = "romeo@montague.lit";
const SENDER_ME: &str = "romeo@montague.lit/gshare";
const SENDER_PEER: &str = "juliet@capulet.lit/res";
/// Session id used by the seed transcript.
pub const SEED_SID: &str = "purple937c6e2d";
const MAX_PIECES: usize = 64;

/// Parses one stanza as the XMPP layer would see it (child of a
/// `jabber:client` stream).
pub fn parse_xml(text: &str) -> Option<Element> {
    Element::from_reader_with_prefixes(text.as_bytes(), "jabber:client".to_owned()).ok()
}

/// Serialises an element.
pub fn to_string(el: &Element) -> String {
    let mut out = Vec::new();
    el.write_to(&mut out)
        .expect("writing an element to a Vec cannot fail");
    String::from_utf8(out).expect("minidom writes UTF-8")
}

fn set_attr(el: &mut Element, name: &str, value: &str) {
    let nc = NcName::try_from(name).expect("literal attribute name");
    el.set_attr(Namespace::NONE, nc, value.to_owned());
}

/// What serialising a message may change, by design: a candidate
/// `network` that is not a decimal number is written as `0` (gabble wants
/// an integer; `candidate_to_element`).
fn normalized(mut msg: SessionMessage) -> SessionMessage {
    if let SessionBody::TransportInfo { candidates } | SessionBody::Candidates { candidates } =
        &mut msg.body
    {
        for c in candidates {
            if c.network.is_empty() || !c.network.bytes().all(|b| b.is_ascii_digit()) {
                c.network = "0".into();
            }
        }
    }
    msg
}

/// `SessionMessage` parse → element → text → element → parse must give the
/// same message (up to [`normalized`]), and serialising twice must give the
/// same text.
pub fn check_round_trip(session: &Element) {
    let Ok(msg) = SessionMessage::try_from(session) else {
        return;
    };
    let msg = normalized(msg);
    let el = Element::from(&msg);
    let text = to_string(&el);
    let reparsed = parse_xml(&text)
        .unwrap_or_else(|| panic!("serialised SessionMessage does not parse: {text}"));
    let again = SessionMessage::try_from(&reparsed)
        .unwrap_or_else(|e| panic!("serialised SessionMessage rejected ({e}): {text}"));
    assert_eq!(msg, again, "SessionMessage round trip differs: {text}");
    assert_eq!(
        text,
        to_string(&Element::from(&again)),
        "serialisation not stable"
    );
}

struct Side {
    name: &'static str,
    m: SessionManager,
    me: Jid,
    peer: Jid,
    now: Instant,
    /// Ids of our sets not yet answered (FIFO, for rewriting replies).
    outstanding: VecDeque<(String, Jid)>,
    /// Live handles as the events told us.
    live: BTreeSet<SessionHandle>,
    /// Channels known per handle (opened by us or requested by the peer).
    channels: Vec<(SessionHandle, String)>,
    /// Sender: the id of its first session (for rewriting the seed's id).
    sid: Option<String>,
    next_in: u64,
}

fn manager(me: &str, seed: u64) -> SessionManager {
    let me = FullJid::new(me).expect("literal JID");
    let config = Config {
        max_sessions: 8,
        max_pending_offers: 4,
        max_candidates_per_session: 16,
        ..Config::default()
    };
    SessionManager::with_rng(me, config, StdRng::seed_from_u64(seed))
}

fn candidate(port: u16) -> Candidate {
    Candidate {
        name: String::new(),
        address: std::net::SocketAddr::from(([192, 0, 2, 1], port)),
        username: "rrrrrrrrrrrrrrrr".into(),
        password: String::new(),
        preference: 1.0,
        protocol: "udp".into(),
        kind: CandidateType::Local,
        generation: 0,
        network: "0".into(),
    }
}

impl Side {
    fn receiver(now: Instant) -> Side {
        Side {
            name: "receiver",
            m: manager(RECEIVER_ME, 1),
            me: Jid::new(RECEIVER_ME).expect("literal JID"),
            peer: Jid::new(RECEIVER_PEER).expect("literal JID"),
            now,
            outstanding: VecDeque::new(),
            live: BTreeSet::new(),
            channels: Vec::new(),
            sid: None,
            next_in: 0,
        }
    }

    fn sender(now: Instant) -> Side {
        let mut side = Side {
            name: "sender",
            m: manager(SENDER_ME, 2),
            me: Jid::new(SENDER_ME).expect("literal JID"),
            peer: Jid::new(SENDER_PEER).expect("literal JID"),
            now,
            outstanding: VecDeque::new(),
            live: BTreeSet::new(),
            channels: Vec::new(),
            sid: None,
            next_in: 0,
        };
        side.initiate();
        side.sid = side
            .live
            .first()
            .and_then(|h| side.m.info(*h))
            .map(|i| i.sid);
        assert!(side.sid.is_some(), "sender has no session after initiate");
        side
    }

    fn initiate(&mut self) {
        let to = FullJid::new(SENDER_PEER).expect("literal JID");
        let manifest = Manifest {
            items: vec![
                ManifestItem::file("somefile.tar.gz", 24_410_321),
                ManifestItem::folder("photos", 1000),
            ],
        };
        if let Ok(h) = self.m.initiate(self.now, to, manifest) {
            self.live.insert(h);
        }
        self.after(None);
    }

    /// Rewrites the seed's placeholders for this side (see the module doc).
    fn rewrite_session(&self, session: &mut Element) {
        if let Some(sid) = &self.sid
            && session.attr("id") == Some(SEED_SID)
        {
            set_attr(session, "id", sid);
        }
        if self.name == "sender" && session.attr("initiator") == Some(RECEIVER_PEER) {
            set_attr(session, "initiator", SENDER_ME);
        }
    }

    fn deliver(&mut self, mut el: Element) {
        if el.name() == "iq" {
            if self.name == "sender" && el.attr("from") == Some("juliet@capulet.lit") {
                set_attr(&mut el, "from", SENDER_PEER);
            }
            if matches!(el.attr("type"), Some("result" | "error"))
                && let Some((id, _)) = self.outstanding.pop_front()
            {
                set_attr(&mut el, "id", &id);
            }
            if let Some(s) = el.get_child_mut("session", NS_SESSION) {
                self.rewrite_session(s);
            }
            if let Some(iq) = IqIn::from_element(&el) {
                self.feed(iq);
            }
        } else {
            self.rewrite_session(&mut el);
            self.next_in += 1;
            let iq = IqIn {
                from: self.peer.clone(),
                id: format!("fz{}", self.next_in),
                payload: IqPayload::Set(el),
            };
            self.feed(iq);
        }
    }

    fn feed(&mut self, iq: IqIn) {
        let id = iq.id.clone();
        let from = iq.from.clone();
        let (is_set, is_session_set, is_get) = match &iq.payload {
            IqPayload::Set(el) => (true, el.is("session", NS_SESSION), false),
            IqPayload::Get(_) => (false, false, true),
            _ => (false, false, false),
        };
        if is_session_set && let IqPayload::Set(el) = &iq.payload {
            check_round_trip(el);
        }
        let consumed = self.m.handle_iq(self.now, iq);
        if is_session_set {
            assert!(consumed, "{}: session set not consumed", self.name);
        }
        if is_get {
            assert!(!consumed, "{}: get consumed", self.name);
        }
        if !is_set && consumed {
            self.outstanding.retain(|(o, _)| *o != id);
        }
        let out = self.drain_transmits();
        let events = self.drain_events();
        if !consumed {
            assert!(
                out.is_empty() && events.is_empty(),
                "{}: unconsumed IQ caused output {out:?} / events {events:?}",
                self.name
            );
            return;
        }
        if is_set {
            let replies = out
                .iter()
                .filter(|o| o.id == id && matches!(o.kind, IqOutKind::Result | IqOutKind::Error(_)))
                .count();
            assert_eq!(
                replies, 1,
                "{}: set {id} answered {replies} times",
                self.name
            );
            let reply = out
                .iter()
                .find(|o| o.id == id && matches!(o.kind, IqOutKind::Result | IqOutKind::Error(_)));
            if let Some(r) = reply {
                assert_eq!(r.to, from, "{}: reply goes to someone else", self.name);
            }
        }
        self.apply_events(events);
    }

    fn drain_transmits(&mut self) -> Vec<IqOut> {
        let out: Vec<IqOut> = std::iter::from_fn(|| self.m.poll_transmit()).collect();
        for o in &out {
            let el = o.to_element(Some(&self.me));
            let text = to_string(&el);
            let back = parse_xml(&text)
                .unwrap_or_else(|| panic!("{}: our IQ does not parse: {text}", self.name));
            let iq = IqIn::from_element(&back)
                .unwrap_or_else(|| panic!("{}: our IQ is not a usable iq: {text}", self.name));
            assert_eq!(iq.id, o.id);
            if let IqOutKind::Set(session) = &o.kind {
                assert!(session.is("session", NS_SESSION), "set without session");
                if let Err(e) = SessionMessage::try_from(session) {
                    panic!(
                        "{}: we sent a session we cannot parse ({e}): {text}",
                        self.name
                    );
                }
                check_round_trip(session);
                self.outstanding.push_back((o.id.clone(), o.to.clone()));
            }
        }
        if self.outstanding.len() > 256 {
            self.outstanding.pop_front();
        }
        out
    }

    fn drain_events(&mut self) -> Vec<SessionEvent> {
        std::iter::from_fn(|| self.m.poll_event()).collect()
    }

    fn apply_events(&mut self, events: Vec<SessionEvent>) {
        for e in events {
            match e {
                SessionEvent::Offer { handle, .. } => {
                    assert!(self.live.insert(handle), "offer for a known handle");
                    assert!(self.m.info(handle).is_some(), "offer handle not live");
                }
                SessionEvent::Accepted { handle, .. }
                | SessionEvent::Complete { handle }
                | SessionEvent::RemoteCandidates { handle, .. }
                | SessionEvent::ChannelGone { handle, .. } => {
                    assert!(
                        self.live.contains(&handle),
                        "{}: event for dead {handle}",
                        self.name
                    );
                }
                SessionEvent::ChannelRequested { handle, name } => {
                    assert!(
                        self.live.contains(&handle),
                        "{}: event for dead {handle}",
                        self.name
                    );
                    self.channels.push((handle, name));
                }
                SessionEvent::Terminated { handle, .. } => {
                    assert!(
                        self.live.remove(&handle),
                        "{}: terminated twice or unknown {handle}",
                        self.name
                    );
                    assert!(
                        self.m.info(handle).is_none(),
                        "terminated handle still live"
                    );
                    self.channels.retain(|(h, _)| *h != handle);
                }
            }
        }
        assert_eq!(
            self.live.len(),
            self.m.session_count(),
            "{}: sessions and events disagree",
            self.name
        );
    }

    /// Output of a command or timer: no replies, only sets; events applied.
    fn after(&mut self, _what: Option<&str>) {
        let out = self.drain_transmits();
        for o in &out {
            assert!(
                matches!(o.kind, IqOutKind::Set(_)),
                "{}: reply without request",
                self.name
            );
        }
        let events = self.drain_events();
        self.apply_events(events);
    }

    fn command(&mut self, cmd: &str) {
        let mut words = cmd.split_ascii_whitespace();
        let name = words.next().unwrap_or("");
        let arg: u64 = words.next().and_then(|a| a.parse().ok()).unwrap_or(1);
        let handles: Vec<SessionHandle> = self.live.iter().copied().collect();
        let now = self.now;
        match name {
            "accept" => handles.iter().for_each(|h| drop(self.m.accept(now, *h))),
            "reject" => handles.iter().for_each(|h| drop(self.m.reject(now, *h))),
            "terminate" => handles.iter().for_each(|h| drop(self.m.terminate(now, *h))),
            "complete" => handles.iter().for_each(|h| drop(self.m.complete(now, *h))),
            "connected" => handles
                .iter()
                .for_each(|h| drop(self.m.transport_connected(*h))),
            "channel" => {
                for h in handles {
                    if let Ok(name) = self.m.open_channel(now, h) {
                        self.channels.push((h, name));
                    }
                }
            }
            "cands" => {
                let chans = self.channels.clone();
                for (h, c) in chans {
                    let cands = (0..arg.min(8) as u16)
                        .map(|i| candidate(4000 + i))
                        .collect();
                    let _ = self.m.send_candidates(now, h, &c, cands);
                }
            }
            "ack" => {
                // The peer acknowledges everything of ours.
                let ids: Vec<(String, Jid)> = self.outstanding.drain(..).collect();
                self.ack_all(ids);
                return;
            }
            "initiate" if self.name == "sender" => self.initiate(),
            "tick" => {
                self.now += Duration::from_secs(arg.min(100_000));
                self.tick();
                return;
            }
            _ => {}
        }
        self.after(Some(name));
    }

    fn ack_all(&mut self, ids: Vec<(String, Jid)>) {
        for (id, from) in ids {
            let iq = IqIn {
                from,
                id,
                payload: IqPayload::Result(None),
            };
            // Not consumed if the IQ timed out or its session ended.
            let _ = self.m.handle_iq(self.now, iq);
            self.after(Some("ack"));
        }
    }

    fn tick(&mut self) {
        self.m.handle_timeout(self.now);
        if let Some(t) = self.m.poll_timeout() {
            assert!(t > self.now, "{}: timer left at or before now", self.name);
        }
        self.after(Some("tick"));
    }
}

/// The fuzz target body.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let t0 = Instant::now();
    let mut receiver = Side::receiver(t0);
    let mut sender = Side::sender(t0);
    for piece in text.split('\x0c').take(MAX_PIECES) {
        let piece = piece.trim();
        if let Some(cmd) = piece.strip_prefix('!') {
            receiver.command(cmd);
            sender.command(cmd);
            continue;
        }
        let Some(el) = parse_xml(piece) else {
            continue;
        };
        if el.is("session", NS_SESSION) {
            check_round_trip(&el);
        }
        let from = el.attr("from").unwrap_or("");
        let (to_receiver, to_sender) = if el.name() != "iq" {
            (true, true)
        } else if from.starts_with("romeo@montague.lit") {
            (true, false)
        } else if from.starts_with("juliet@capulet.lit") {
            (false, true)
        } else {
            (true, true)
        };
        if to_receiver {
            receiver.deliver(el.clone());
        }
        if to_sender {
            sender.deliver(el);
        }
    }
    // Let every timer run out; nothing may be left due.
    for side in [&mut receiver, &mut sender] {
        for _ in 0..4 {
            side.now += Duration::from_secs(3600);
            side.tick();
        }
    }
}
