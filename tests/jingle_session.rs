//! The XEP-0166/0234 session machine, both roles, in memory: offers,
//! accept/decline, terminate reasons, Libervia's early transport-info,
//! transport-replace, checksums, timeouts and refusals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use gshare::jingle::{
    Action, Candidate, CandidateType, Config, Content, FileDesc, Hash, IbbStanza, IbbTransport,
    Jingle, JingleEvent, JingleSession, Reason, ReasonKind, S5bPayload, S5bTransport, State,
    Transport, file_offer, unknown_session_reply,
};
use gshare::session::envelope::{IqIn, IqOut, IqOutKind, IqPayload};
use jid::{FullJid, Jid};

const A: &str = "alice@localhost/gshare";
const B: &str = "bob@localhost/libervia.x";

fn fj(s: &str) -> FullJid {
    FullJid::new(s).unwrap()
}

/// The IQ as the peer receives it (through the element form).
fn wire(out: &IqOut, from: &str) -> IqIn {
    IqIn::from_element(&out.to_element(Some(&Jid::new(from).unwrap()))).unwrap()
}

fn s5b(sid: &str, payload: S5bPayload) -> Transport {
    Transport::S5b(S5bTransport {
        sid: sid.into(),
        dstaddr: None,
        payload,
    })
}

fn offer() -> Vec<Content> {
    let cand = Candidate {
        cid: "c1".into(),
        host: "127.0.0.1".into(),
        jid: Jid::new(A).unwrap(),
        port: 4000,
        priority: (126 << 16) + 10000,
        kind: CandidateType::Direct,
    };
    let file = FileDesc {
        name: Some("a.bin".into()),
        size: Some(10),
        hash_used: vec!["sha-256".into()],
        ..Default::default()
    };
    vec![file_offer(
        "f1",
        file,
        s5b("t1", S5bPayload::Candidates(vec![cand])),
    )]
}

fn events(s: &mut JingleSession) -> Vec<JingleEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Moves every queued IQ from `from` to `to` and back until both are
/// quiet; returns how many IQs moved.
fn pump(
    a: &mut JingleSession,
    a_jid: &str,
    b: &mut JingleSession,
    b_jid: &str,
    now: Instant,
) -> usize {
    let mut n = 0;
    loop {
        let mut moved = false;
        while let Some(o) = a.poll_transmit() {
            assert!(b.handle_iq(now, wire(&o, a_jid)), "b ignored {o:?}");
            n += 1;
            moved = true;
        }
        while let Some(o) = b.poll_transmit() {
            assert!(a.handle_iq(now, wire(&o, b_jid)), "a ignored {o:?}");
            n += 1;
            moved = true;
        }
        if !moved {
            return n;
        }
    }
}

/// Both ends: initiate, offered, accept, accepted.
fn pair(now: Instant) -> (JingleSession, JingleSession) {
    let mut a =
        JingleSession::initiate(now, Config::default(), fj(A), fj(B), "sid1".into(), offer());
    let init = a.poll_transmit().unwrap();
    let mut b =
        JingleSession::from_initiate(now, Config::default(), fj(B), &wire(&init, A)).unwrap();
    assert_eq!(b.poll_transmit().unwrap().kind, IqOutKind::Result);
    // Result back to a.
    let ack = IqOut {
        to: Jid::new(A).unwrap(),
        id: init.id.clone(),
        kind: IqOutKind::Result,
    };
    assert!(a.handle_iq(now, wire(&ack, B)));
    (a, b)
}

#[test]
fn offer_accept_checksum_success_both_roles() {
    let now = Instant::now();
    let (mut a, mut b) = pair(now);
    let ev = events(&mut b);
    let [JingleEvent::Offered { contents }] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    assert_eq!(contents[0].file().unwrap().name.as_deref(), Some("a.bin"));
    assert_eq!(b.initiator(), &fj(A));
    assert_eq!(b.responder(), &fj(B));
    b.accept(
        now,
        vec![("f1".into(), s5b("t1", S5bPayload::Candidates(vec![])))],
    )
    .unwrap();
    pump(&mut a, A, &mut b, B, now);
    assert_eq!((a.state(), b.state()), (State::Active, State::Active));
    assert!(matches!(
        events(&mut a).as_slice(),
        [JingleEvent::Accepted { .. }]
    ));
    // Data would flow here; then the checksum and the receiver's verdict.
    let file = FileDesc {
        hashes: vec![Hash {
            algo: "sha-256".into(),
            digest: vec![9; 32],
        }],
        ..Default::default()
    };
    a.checksum(now, "f1", file.clone()).unwrap();
    pump(&mut a, A, &mut b, B, now);
    assert_eq!(
        events(&mut b),
        vec![JingleEvent::Checksum {
            content: "f1".into(),
            file
        }]
    );
    b.received(now, "f1").unwrap();
    b.terminate(now, Reason::new(ReasonKind::Success)).unwrap();
    pump(&mut a, A, &mut b, B, now);
    assert_eq!(
        events(&mut a),
        vec![
            JingleEvent::Received {
                content: "f1".into()
            },
            JingleEvent::Terminated {
                reason: Reason::new(ReasonKind::Success),
                by_peer: true
            }
        ]
    );
    assert_eq!(
        events(&mut b),
        vec![JingleEvent::Terminated {
            reason: Reason::new(ReasonKind::Success),
            by_peer: false
        }]
    );
    assert_eq!((a.state(), b.state()), (State::Ended, State::Ended));
    assert_eq!(a.poll_timeout(), None);
    // A late request on an ended session: unknown-session.
    assert!(b.terminate(now, Reason::new(ReasonKind::Cancel)).is_err());
}

#[test]
fn decline_reaches_initiator_as_decline() {
    let now = Instant::now();
    let (mut a, mut b) = pair(now);
    events(&mut b);
    b.decline(now).unwrap();
    pump(&mut a, A, &mut b, B, now);
    assert_eq!(
        events(&mut a),
        vec![JingleEvent::Terminated {
            reason: Reason::new(ReasonKind::Decline),
            by_peer: true
        }]
    );
    assert!(matches!(
        events(&mut b).as_slice(),
        [JingleEvent::Terminated { by_peer: false, .. }]
    ));
}

/// Libervia's responder sends candidate-used before session-accept: the
/// initiator acknowledges, buffers and replays it after Accepted.
#[test]
fn early_transport_info_is_buffered_until_accept() {
    let now = Instant::now();
    let (mut a, mut b) = pair(now);
    events(&mut b);
    b.transport_info(now, "f1", s5b("t1", S5bPayload::CandidateUsed("c1".into())))
        .unwrap();
    let ti = b.poll_transmit().unwrap();
    assert!(a.handle_iq(now, wire(&ti, B)));
    assert_eq!(a.poll_transmit().unwrap().kind, IqOutKind::Result);
    assert!(events(&mut a).is_empty());
    assert_eq!(a.state(), State::Pending);
    b.handle_iq(
        now,
        wire(
            &IqOut {
                to: Jid::new(B).unwrap(),
                id: ti.id,
                kind: IqOutKind::Result,
            },
            A,
        ),
    );
    b.accept(
        now,
        vec![("f1".into(), s5b("t1", S5bPayload::Candidates(vec![])))],
    )
    .unwrap();
    pump(&mut a, A, &mut b, B, now);
    let ev = events(&mut a);
    assert!(matches!(ev[0], JingleEvent::Accepted { .. }), "{ev:?}");
    assert_eq!(
        ev[1],
        JingleEvent::TransportInfo {
            content: "f1".into(),
            transport: s5b("t1", S5bPayload::CandidateUsed("c1".into()))
        }
    );
}

/// S5B failed (or proxy-error): the initiator replaces the transport with
/// IBB; the responder accepts; both see the new transport.
#[test]
fn proxy_error_then_transport_replace_to_ibb() {
    let now = Instant::now();
    let (mut a, mut b) = pair(now);
    events(&mut b);
    b.accept(
        now,
        vec![("f1".into(), s5b("t1", S5bPayload::Candidates(vec![])))],
    )
    .unwrap();
    pump(&mut a, A, &mut b, B, now);
    events(&mut a);
    b.transport_info(now, "f1", s5b("t1", S5bPayload::ProxyError))
        .unwrap();
    pump(&mut a, A, &mut b, B, now);
    assert_eq!(
        events(&mut a),
        vec![JingleEvent::TransportInfo {
            content: "f1".into(),
            transport: s5b("t1", S5bPayload::ProxyError)
        }]
    );
    let ibb = Transport::Ibb(IbbTransport {
        sid: "t1".into(),
        block_size: 4096,
        stanza: IbbStanza::Iq,
    });
    a.transport_replace(now, "f1", ibb.clone()).unwrap();
    pump(&mut a, A, &mut b, B, now);
    assert_eq!(
        events(&mut b),
        vec![JingleEvent::TransportReplace {
            content: "f1".into(),
            transport: ibb.clone()
        }]
    );
    let smaller = Transport::Ibb(IbbTransport {
        sid: "t1".into(),
        block_size: 2048,
        stanza: IbbStanza::Iq,
    });
    b.transport_accept(now, "f1", smaller.clone()).unwrap();
    pump(&mut a, A, &mut b, B, now);
    assert_eq!(
        events(&mut a),
        vec![JingleEvent::TransportAccepted {
            content: "f1".into(),
            transport: smaller.clone()
        }]
    );
    assert_eq!(a.contents()[0].transport, Some(smaller));
}

#[test]
fn unanswered_offer_and_unanswered_iq_time_out() {
    let now = Instant::now();
    let cfg = Config {
        iq_timeout: Duration::from_secs(5),
        offer_timeout: Duration::from_secs(60),
    };
    let mut a = JingleSession::initiate(now, cfg.clone(), fj(A), fj(B), "sid2".into(), offer());
    let init = a.poll_transmit().unwrap();
    assert_eq!(a.poll_timeout(), Some(now + Duration::from_secs(5)));
    a.handle_iq(
        now,
        wire(
            &IqOut {
                to: Jid::new(A).unwrap(),
                id: init.id,
                kind: IqOutKind::Result,
            },
            B,
        ),
    );
    assert_eq!(a.poll_timeout(), Some(now + Duration::from_secs(60)));
    a.handle_timeout(now + Duration::from_secs(59));
    assert!(events(&mut a).is_empty());
    a.handle_timeout(now + Duration::from_secs(60));
    let ev = events(&mut a);
    assert!(
        matches!(
            &ev[..],
            [JingleEvent::Terminated {
                reason: Reason {
                    kind: ReasonKind::Timeout,
                    ..
                },
                by_peer: false
            }]
        ),
        "{ev:?}"
    );
    let term = a.poll_transmit().unwrap();
    let j = Jingle::parse(term.set_payload().unwrap()).unwrap();
    assert_eq!(
        (j.action, j.reason.unwrap().kind),
        (Action::SessionTerminate, ReasonKind::Timeout)
    );
    // IQ timeout: the initiate is never answered.
    let mut a = JingleSession::initiate(now, cfg, fj(A), fj(B), "sid3".into(), offer());
    a.handle_timeout(now + Duration::from_secs(5));
    assert!(matches!(
        events(&mut a).as_slice(),
        [JingleEvent::Terminated {
            reason: Reason {
                kind: ReasonKind::Timeout,
                ..
            },
            ..
        }]
    ));
}

#[test]
fn refusals_unknown_action_sid_and_info() {
    let now = Instant::now();
    let (mut a, mut b) = pair(now);
    events(&mut b);
    let set = |xml: &str, id: &str| IqIn {
        from: Jid::new(B).unwrap(),
        id: id.into(),
        payload: IqPayload::Set(xml.parse().unwrap()),
    };
    // Unknown action.
    assert!(a.handle_iq(
        now,
        set(
            "<jingle xmlns='urn:xmpp:jingle:1' action='x-foo' sid='sid1'/>",
            "1"
        )
    ));
    let IqOutKind::Error(e) = a.poll_transmit().unwrap().kind else {
        panic!()
    };
    assert_eq!(e.condition.as_str(), "feature-not-implemented");
    // Another sid: not ours; the driver answers unknown-session.
    let other = set(
        "<jingle xmlns='urn:xmpp:jingle:1' action='session-info' sid='zzz'/>",
        "2",
    );
    assert!(!a.handle_iq(now, other.clone()));
    let IqOutKind::Error(e) = unknown_session_reply(&other).unwrap().kind else {
        panic!()
    };
    assert_eq!(
        (e.condition.as_str(), e.extra.unwrap().name().to_owned()),
        ("item-not-found", "unknown-session".to_owned())
    );
    // Unknown session-info payload: unsupported-info.
    assert!(a.handle_iq(now, set("<jingle xmlns='urn:xmpp:jingle:1' action='session-info' sid='sid1'><x xmlns='urn:other'/></jingle>", "3")));
    let IqOutKind::Error(e) = a.poll_transmit().unwrap().kind else {
        panic!()
    };
    assert_eq!(e.extra.unwrap().name(), "unsupported-info");
    // Empty session-info: a ping, acknowledged.
    assert!(a.handle_iq(
        now,
        set(
            "<jingle xmlns='urn:xmpp:jingle:1' action='session-info' sid='sid1'/>",
            "4"
        )
    ));
    assert_eq!(a.poll_transmit().unwrap().kind, IqOutKind::Result);
    // The initiator never accepts: out-of-order on the responder.
    let from_a = IqIn {
        from: Jid::new(A).unwrap(),
        id: "5".into(),
        payload: IqPayload::Set(
            "<jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='sid1'/>"
                .parse()
                .unwrap(),
        ),
    };
    assert!(b.handle_iq(now, from_a));
    let IqOutKind::Error(e) = b.poll_transmit().unwrap().kind else {
        panic!()
    };
    assert_eq!(e.extra.unwrap().name(), "out-of-order");
    // A stranger's IQ is not for the session.
    let stranger = IqIn {
        from: Jid::new("eve@localhost/x").unwrap(),
        id: "6".into(),
        payload: IqPayload::Set(
            "<jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='sid1'/>"
                .parse()
                .unwrap(),
        ),
    };
    assert!(!b.handle_iq(now, stranger));
    assert_eq!(b.state(), State::Offered);
    // A peer error to our accept ends the session.
    b.accept(
        now,
        vec![("f1".into(), s5b("t1", S5bPayload::Candidates(vec![])))],
    )
    .unwrap();
    let acc = b.poll_transmit().unwrap();
    let err: IqIn = IqIn::from_element(
        &format!("<iq xmlns='jabber:client' type='error' from='{A}' id='{}'><error type='cancel'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>", acc.id)
            .parse()
            .unwrap(),
    )
    .unwrap();
    assert!(b.handle_iq(now, err));
    assert!(matches!(
        events(&mut b).as_slice(),
        [JingleEvent::Terminated {
            reason: Reason {
                kind: ReasonKind::GeneralError,
                ..
            },
            by_peer: false
        }]
    ));
}

#[test]
fn malformed_offer_is_refused_without_a_session() {
    let now = Instant::now();
    let iq = IqIn {
        from: Jid::new(B).unwrap(),
        id: "1".into(),
        payload: IqPayload::Set("<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='s'><content creator='nobody' name='x'/></jingle>".parse().unwrap()),
    };
    let Err(out) = JingleSession::from_initiate(now, Config::default(), fj(A), &iq) else {
        panic!()
    };
    let IqOutKind::Error(e) = out.kind else {
        panic!()
    };
    assert_eq!(e.condition.as_str(), "bad-request");
}
