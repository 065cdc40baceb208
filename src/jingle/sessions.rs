//! Several [`JingleSession`]s behind one IQ entry point, sans-IO: routes
//! each Jingle set by (peer, sid), starts responder sessions on
//! `session-initiate`, answers `unknown-session` for the rest, and drops a
//! session once its `Terminated` event has been polled.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use jid::FullJid;
use minidom::Element;

use super::codec::{Action, Content, NS_JINGLE};
use super::session::{
    CommandError, Config, JingleEvent, JingleSession, State, unknown_session_reply,
};
use crate::session::envelope::{
    Condition, ErrorReply, ErrorType, IqIn, IqOut, IqOutKind, IqPayload,
};

/// Most sessions at once, both roles together (one per transfer; further
/// offers are refused with `resource-constraint`, further local
/// `initiate`s fail).
pub const MAX_SESSIONS: usize = 64;

/// The sessions of one account.
#[derive(Debug)]
pub struct JingleSessions {
    local: FullJid,
    config: Config,
    /// (peer, sid) → session; bounded by [`MAX_SESSIONS`].
    sessions: BTreeMap<(String, String), JingleSession>,
    transmit: VecDeque<IqOut>,
}

impl JingleSessions {
    /// No sessions yet.
    pub fn new(local: FullJid, config: Config) -> Self {
        JingleSessions {
            local,
            config,
            sessions: BTreeMap::new(),
            transmit: VecDeque::new(),
        }
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True without sessions.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Offers `contents` to `peer` under a fresh random `sid`.
    pub fn initiate(
        &mut self,
        now: Instant,
        peer: FullJid,
        sid: String,
        contents: Vec<Content>,
    ) -> Result<(), CommandError> {
        if self.sessions.len() >= MAX_SESSIONS {
            return Err(CommandError::TooManyPending);
        }
        let key = (peer.to_string(), sid.clone());
        if self.sessions.contains_key(&key) {
            return Err(CommandError::WrongState(
                "initiate with a sid already in use",
            ));
        }
        let s = JingleSession::initiate(
            now,
            self.config.clone(),
            self.local.clone(),
            peer,
            sid,
            contents,
        );
        self.sessions.insert(key, s);
        Ok(())
    }

    /// The session with `peer` and `sid`, for commands.
    pub fn get_mut(&mut self, peer: &FullJid, sid: &str) -> Option<&mut JingleSession> {
        self.sessions.get_mut(&(peer.to_string(), sid.to_owned()))
    }

    /// Handles an IQ. Returns false if it is neither a Jingle set nor an
    /// answer to one of our sessions' requests.
    pub fn handle_iq(&mut self, now: Instant, iq: IqIn) -> bool {
        if let IqPayload::Set(el) = &iq.payload
            && el.is("jingle", NS_JINGLE)
        {
            let key = (
                iq.from.to_string(),
                el.attr("sid").unwrap_or_default().to_owned(),
            );
            if let Some(s) = self.sessions.get_mut(&key) {
                return s.handle_iq(now, iq);
            }
            if el.attr("action") == Some(Action::SessionInitiate.as_str()) {
                if self.sessions.len() >= MAX_SESSIONS {
                    self.transmit.push_back(refuse(&iq, el));
                    return true;
                }
                match JingleSession::from_initiate(
                    now,
                    self.config.clone(),
                    self.local.clone(),
                    &iq,
                ) {
                    Ok(s) => {
                        self.sessions.insert(key, s);
                    }
                    Err(reply) => self.transmit.push_back(*reply),
                }
                return true;
            }
            if let Some(reply) = unknown_session_reply(&iq) {
                self.transmit.push_back(reply);
            }
            return true;
        }
        if matches!(iq.payload, IqPayload::Result(_) | IqPayload::Error { .. }) {
            let peer = iq.from.to_string();
            for ((p, _), s) in self.sessions.iter_mut() {
                if *p == peer && s.handle_iq(now, iq.clone()) {
                    return true;
                }
            }
        }
        false
    }

    /// Next IQ to send.
    pub fn poll_transmit(&mut self) -> Option<IqOut> {
        if let Some(o) = self.transmit.pop_front() {
            return Some(o);
        }
        let o = self
            .sessions
            .values_mut()
            .find_map(JingleSession::poll_transmit);
        self.reap();
        o
    }

    /// Next event with its session's peer and sid. A session is dropped
    /// after its `Terminated` has been returned and its last IQ taken.
    pub fn poll_event(&mut self) -> Option<(FullJid, String, JingleEvent)> {
        let mut found = None;
        for s in self.sessions.values_mut() {
            if let Some(ev) = s.poll_event() {
                found = Some((s.peer().clone(), s.sid().to_owned(), ev));
                break;
            }
        }
        self.reap();
        found
    }

    fn reap(&mut self) {
        // Ended, terminate sent, every event read: nothing more to do.
        self.sessions
            .retain(|_, s| !(s.state() == State::Ended && s.is_drained()));
    }

    /// Earliest deadline of any session.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(JingleSession::poll_timeout)
            .min()
    }

    /// Fires due timers in every session.
    pub fn handle_timeout(&mut self, now: Instant) {
        for s in self.sessions.values_mut() {
            s.handle_timeout(now);
        }
    }
}

fn refuse(iq: &IqIn, el: &Element) -> IqOut {
    IqOut {
        to: iq.from.clone(),
        id: iq.id.clone(),
        kind: IqOutKind::Error(ErrorReply {
            error_type: ErrorType::Wait,
            condition: Condition::ResourceConstraint,
            text: None,
            extra: None,
            copied: Some(crate::session::envelope::bounded_copy(el)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jingle::{FileDesc, ReasonKind, S5bPayload, S5bTransport, Transport, file_offer};
    use jid::Jid;

    fn wire(o: &IqOut, from: &str) -> IqIn {
        IqIn::from_element(&o.to_element(Some(&Jid::new(from).unwrap()))).unwrap()
    }

    #[test]
    fn routes_by_peer_and_sid_and_reaps_ended_sessions() {
        let (a, b) = ("a@x/1", "b@x/2");
        let now = Instant::now();
        let mut sa = JingleSessions::new(FullJid::new(a).unwrap(), Config::default());
        let mut sb = JingleSessions::new(FullJid::new(b).unwrap(), Config::default());
        let t = Transport::S5b(S5bTransport {
            sid: "t".into(),
            dstaddr: None,
            payload: S5bPayload::Candidates(vec![]),
        });
        for sid in ["s1", "s2"] {
            let c = vec![file_offer("f", FileDesc::default(), t.clone())];
            sa.initiate(now, FullJid::new(b).unwrap(), sid.into(), c)
                .unwrap();
        }
        let pump = |sa: &mut JingleSessions, sb: &mut JingleSessions| loop {
            let mut moved = false;
            while let Some(o) = sa.poll_transmit() {
                assert!(sb.handle_iq(now, wire(&o, a)));
                moved = true;
            }
            while let Some(o) = sb.poll_transmit() {
                assert!(sa.handle_iq(now, wire(&o, b)));
                moved = true;
            }
            if !moved {
                break;
            }
        };
        pump(&mut sa, &mut sb);
        assert_eq!(sb.len(), 2);
        let mut offered = Vec::new();
        while let Some((_, sid, ev)) = sb.poll_event() {
            assert!(matches!(ev, JingleEvent::Offered { .. }));
            offered.push(sid);
        }
        assert_eq!(offered, vec!["s1".to_owned(), "s2".to_owned()]);
        // Decline one: both sides drop it once its events are read.
        sb.get_mut(&FullJid::new(a).unwrap(), "s1")
            .unwrap()
            .decline(now)
            .unwrap();
        pump(&mut sa, &mut sb);
        let (_, sid, ev) = sa.poll_event().unwrap();
        assert_eq!(sid, "s1");
        assert!(
            matches!(ev, JingleEvent::Terminated { reason, .. } if reason.kind == ReasonKind::Decline)
        );
        while sb.poll_event().is_some() {}
        pump(&mut sa, &mut sb);
        assert_eq!((sa.len(), sb.len()), (1, 1));
        // A set for a sid nobody knows: unknown-session.
        let stray = IqIn {
            from: Jid::new(a).unwrap(),
            id: "x".into(),
            payload: IqPayload::Set(
                "<jingle xmlns='urn:xmpp:jingle:1' action='session-info' sid='s1'/>"
                    .parse()
                    .unwrap(),
            ),
        };
        assert!(sb.handle_iq(now, stray));
        let IqOutKind::Error(e) = sb.poll_transmit().unwrap().kind else {
            panic!()
        };
        assert_eq!(e.extra.unwrap().name(), "unknown-session");
    }
}
