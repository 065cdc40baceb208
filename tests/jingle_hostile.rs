//! Malformed and hostile `<jingle>` sets against sessions in every state:
//! no panic, exactly one reply per set, and an error reply leaves the
//! state as it was.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use gshare::jingle::{
    Candidate, CandidateType, Config, FileDesc, JingleSession, S5bPayload, S5bTransport, State,
    Transport, file_offer,
};
use gshare::session::envelope::{IqIn, IqOut, IqOutKind, IqPayload};
use jid::{FullJid, Jid};

const A: &str = "alice@localhost/a";
const B: &str = "bob@localhost/b";

fn corpus() -> Vec<String> {
    let j = |action: &str, body: &str| {
        format!("<jingle xmlns='urn:xmpp:jingle:1' action='{action}' sid='sid1'>{body}</jingle>")
    };
    let long = "x".repeat(10_000);
    let many_cands: String = (0..40)
        .map(|i| {
            format!("<candidate cid='c{i}' host='127.0.0.1' jid='a@b/c' port='1' priority='1'/>")
        })
        .collect();
    let many_hashes: String = (0..20)
        .map(|_| "<hash xmlns='urn:xmpp:hashes:2' algo='sha-256'>AAAA</hash>".to_owned())
        .collect();
    vec![
        j("session-accept", ""),
        j("session-accept", "<content creator='responder' name='zz'/>"),
        j(
            "session-accept",
            "<content creator='initiator' name='f1' senders='bogus'/>",
        ),
        j(
            "session-initiate",
            "<content creator='initiator' name='f1'/>",
        ),
        j(
            "transport-info",
            "<content creator='initiator' name='f1'><transport xmlns='urn:xmpp:jingle:transports:s5b:1' sid='t'><candidate-used/></transport></content>",
        ),
        j(
            "transport-info",
            &format!(
                "<content creator='initiator' name='f1'><transport xmlns='urn:xmpp:jingle:transports:s5b:1' sid='t'>{many_cands}</transport></content>"
            ),
        ),
        j(
            "transport-info",
            "<content creator='initiator' name='f1'><transport xmlns='urn:xmpp:jingle:transports:s5b:1' sid='t'><candidate cid='c' host='h' jid='@@' priority='1'/></transport></content>",
        ),
        j(
            "transport-info",
            "<content creator='initiator' name='f1'><transport xmlns='urn:xmpp:jingle:transports:s5b:1' sid='t'><candidate-error/><candidate cid='c' host='h' jid='a@b' priority='1'/></transport></content>",
        ),
        j(
            "transport-info",
            "<content creator='initiator' name='f1'><transport xmlns='urn:xmpp:jingle:transports:s5b:1' sid='t'><candidate cid='c' host='h' jid='a@b' port='99999' priority='1'/></transport></content>",
        ),
        j(
            "transport-replace",
            "<content creator='initiator' name='nope'><transport xmlns='urn:xmpp:jingle:transports:ibb:1' sid='t' block-size='4096'/></content>",
        ),
        j(
            "transport-replace",
            "<content creator='initiator' name='f1'><transport xmlns='urn:xmpp:jingle:transports:ibb:1' sid='t' block-size='70000'/></content>",
        ),
        j(
            "transport-accept",
            "<content creator='initiator' name='f1'/>",
        ),
        j(
            "transport-reject",
            "<content creator='initiator' name='f1'/>",
        ),
        j(
            "session-info",
            "<checksum xmlns='urn:xmpp:jingle:apps:file-transfer:5' creator='initiator' name='f1'/>",
        ),
        j(
            "session-info",
            &format!(
                "<checksum xmlns='urn:xmpp:jingle:apps:file-transfer:5' creator='initiator' name='f1'><file>{many_hashes}</file></checksum>"
            ),
        ),
        j(
            "session-info",
            "<checksum xmlns='urn:xmpp:jingle:apps:file-transfer:5' creator='initiator' name='f1'><file><hash xmlns='urn:xmpp:hashes:2' algo='sha-256'>%%%</hash></file></checksum>",
        ),
        j(
            "session-info",
            "<received xmlns='urn:xmpp:jingle:apps:file-transfer:5' name='f1'/>",
        ),
        j(
            "session-info",
            "<ringing xmlns='urn:xmpp:jingle:apps:rtp:info:1'/>",
        ),
        j("content-add", "<content creator='initiator' name='f2'/>"),
        j("content-modify", ""),
        j("description-info", ""),
        j("security-info", ""),
        j("x-unknown", ""),
        j(
            "transport-replace",
            &format!(
                "<content creator='initiator' name='f1'><description xmlns='urn:xmpp:jingle:apps:file-transfer:5'><file><name>{long}</name></file></description></content>"
            ),
        ),
        j(
            "session-terminate",
            "<reason><x-unknown-condition/></reason>",
        ),
        j(
            "content-remove",
            "<content creator='initiator' name='nope'/>",
        ),
        "<jingle xmlns='urn:xmpp:jingle:1' sid='sid1'/>".into(),
        "<jingle xmlns='urn:xmpp:jingle:1' action='session-info'/>".into(),
    ]
}

fn fresh(state: &str, now: Instant) -> (JingleSession, &'static str) {
    let cand = Candidate {
        cid: "c1".into(),
        host: "127.0.0.1".into(),
        jid: Jid::new(A).unwrap(),
        port: 1,
        priority: 1,
        kind: CandidateType::Direct,
    };
    let t = Transport::S5b(S5bTransport {
        sid: "t".into(),
        dstaddr: None,
        payload: S5bPayload::Candidates(vec![cand]),
    });
    let contents = vec![file_offer(
        "f1",
        FileDesc {
            name: Some("n".into()),
            ..Default::default()
        },
        t.clone(),
    )];
    let mut a = JingleSession::initiate(
        now,
        Config::default(),
        FullJid::new(A).unwrap(),
        FullJid::new(B).unwrap(),
        "sid1".into(),
        contents,
    );
    let init = a.poll_transmit().unwrap();
    let init_in = IqIn::from_element(&init.to_element(Some(&Jid::new(A).unwrap()))).unwrap();
    let mut b =
        JingleSession::from_initiate(now, Config::default(), FullJid::new(B).unwrap(), &init_in)
            .unwrap();
    b.poll_transmit();
    match state {
        "pending" => (a, B),
        "offered" => (b, A),
        "active" => {
            b.accept(now, vec![("f1".into(), t)]).unwrap();
            b.poll_transmit();
            (b, A)
        }
        _ => {
            b.decline(now).unwrap();
            b.poll_transmit();
            (b, A)
        }
    }
}

#[test]
fn hostile_sets_get_one_reply_and_errors_change_nothing() {
    let now = Instant::now();
    for state in ["pending", "offered", "active", "ended"] {
        for (i, xml) in corpus().into_iter().enumerate() {
            let (mut s, peer) = fresh(state, now);
            while s.poll_event().is_some() {}
            let before = s.state();
            let iq = IqIn {
                from: Jid::new(peer).unwrap(),
                id: format!("h{i}"),
                payload: IqPayload::Set(xml.parse().unwrap()),
            };
            let ours = s.handle_iq(now, iq);
            let replies: Vec<IqOut> = std::iter::from_fn(|| s.poll_transmit())
                .filter(|o| o.id == format!("h{i}"))
                .collect();
            if !ours {
                // Not routed to this session (no or another sid): nothing sent.
                assert!(replies.is_empty(), "{state} #{i}");
                continue;
            }
            assert_eq!(replies.len(), 1, "{state} #{i}: {xml}");
            if matches!(replies[0].kind, IqOutKind::Error(_)) {
                assert_eq!(
                    s.state(),
                    before,
                    "{state} #{i}: an error reply changed the state"
                );
            }
            // Every reply goes back to the sender.
            assert_eq!(replies[0].to, Jid::new(peer).unwrap());
            if state == "ended" {
                assert!(matches!(replies[0].kind, IqOutKind::Error(_)), "#{i}");
                assert_eq!(s.state(), State::Ended);
            }
        }
    }
}
