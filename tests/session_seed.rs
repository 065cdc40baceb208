//! The seed transcript (tests/data/seed/, the seed transcript kept in the repository) replayed
//! against both roles of the session machine: fed one side's stanzas, the
//! machine must answer with the other side's, equal up to IQ ids, the random
//! session id and paths, bare-vs-full JIDs and candidate values.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod session_support;

use gshare::ice::{Candidate, CandidateType};
use gshare::session::{Dialect, IqOut, IqOutKind, ItemKind, Role, SessionEvent, TerminateReason};
use session_support::*;

/// Asserts that `out` is the seed stanza `n` under `c`.
fn assert_matches_seed(out: &IqOut, n: usize, c: &Canon) {
    let ours = canon(&out_el(out), c);
    let theirs = canon(&seed(n), c);
    assert_eq!(ours, theirs, "our stanza differs from seed stanza {n}");
}

fn one(m: &mut gshare::session::SessionManager) -> IqOut {
    let mut v = drain(m);
    assert_eq!(v.len(), 1, "expected exactly one stanza, got {v:#?}");
    v.remove(0)
}

#[test]
fn receiver_answers_the_seed_sender_like_the_seed_receiver() {
    let now = t0();
    let mut m = seeded("juliet@capulet.lit/gshare", 1);
    // Our sets have our own ids; results must echo the seed's id exactly.
    let set = Canon {
        mask: vec![("iq", "id")],
        drop: vec![("iq", "from")],
        ..Canon::default()
    };
    let result = Canon {
        drop: vec![("iq", "from")],
        ..Canon::default()
    };

    // 1 initiate -> 2 result, 3 transport-accept
    assert!(m.handle_iq(now, iq_in(&seed(1))));
    let out = drain(&mut m);
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_matches_seed(&out[0], 2, &result);
    assert_matches_seed(&out[1], 3, &set);
    let ev = events(&mut m);
    let [
        SessionEvent::Offer {
            handle,
            from,
            manifest,
            source_path,
            preview_path,
            extension: None,
        },
    ] = ev.as_slice()
    else {
        panic!("{ev:#?}")
    };
    let h = *handle;
    assert_eq!(from, &jid("romeo@montague.lit"));
    assert_eq!(manifest.items.len(), 1);
    assert_eq!(manifest.items[0].name, "somefile.tar.gz");
    assert_eq!(manifest.items[0].size, Some(24_410_321));
    assert_eq!(manifest.items[0].kind, ItemKind::File);
    assert_eq!(source_path, "/temporary/x9w0a15d8gll334681a9tps7j838f104/");
    assert_eq!(
        preview_path.as_deref(),
        Some("/temporary/p4e2a64s2ugd204688x7prk8s601m238/")
    );
    let info = m.info(h).unwrap();
    assert_eq!(info.role, Role::Receiver);
    assert_eq!(info.dialect, Dialect::Modern);
    // 4: the sender's result for our transport-accept
    assert!(m.handle_iq(now, result_for(&out[1])));
    assert!(drain(&mut m).is_empty());

    // 5 accept, 6 result
    m.accept(now, h).unwrap();
    let accept = one(&mut m);
    assert_matches_seed(&accept, 5, &set);
    assert!(m.handle_iq(now, result_for(&accept)));

    // 7 info channel private-1, 8 result
    assert_eq!(m.open_channel(now, h).unwrap(), "private-1");
    let chan = one(&mut m);
    assert_matches_seed(&chan, 7, &set);
    assert!(m.handle_iq(now, result_for(&chan)));

    // 9 sender's transport-info -> 10 result + candidates event
    assert!(m.handle_iq(now, iq_in(&seed(9))));
    assert_matches_seed(&one(&mut m), 10, &result);
    let ev = events(&mut m);
    let [
        SessionEvent::RemoteCandidates {
            handle,
            channel,
            candidates,
        },
    ] = ev.as_slice()
    else {
        panic!("{ev:#?}")
    };
    assert_eq!(*handle, h);
    assert_eq!(channel, "private-1");
    assert_eq!(candidates.len(), 1);
    assert_eq!(
        candidates[0].address,
        "192.168.160.101:55433".parse().unwrap()
    );
    assert_eq!(candidates[0].kind, CandidateType::Local);

    // 11 our transport-info (the seed receiver's own candidate values, so
    // the comparison is exact apart from the IQ id), 12 result
    let ours = Candidate {
        name: "private-1".into(),
        address: "192.168.160.50:55455".parse().unwrap(),
        username: "sVfmPJvuPBdh+ail".into(),
        password: "+9SLmzhJo6nqxYgE".into(),
        preference: 1.0,
        protocol: "udp".into(),
        kind: CandidateType::Local,
        generation: 0,
        network: "0".into(),
    };
    m.send_candidates(now, h, "private-1", vec![ours]).unwrap();
    let ti = one(&mut m);
    assert_matches_seed(&ti, 11, &set);
    assert!(m.handle_iq(now, result_for(&ti)));

    // (HTTP transfer happens here.) 13 info complete, 14 result
    m.transport_connected(h).unwrap();
    m.complete(now, h).unwrap();
    let complete = one(&mut m);
    assert_matches_seed(&complete, 13, &set);
    assert!(events(&mut m).is_empty(), "nothing ends before the ack");
    assert!(m.handle_iq(now, result_for(&complete)));

    // 15 terminate once <complete/> is acknowledged, 16 result
    let term = one(&mut m);
    assert_matches_seed(&term, 15, &set);
    assert_eq!(
        events(&mut m),
        vec![SessionEvent::Terminated {
            handle: h,
            reason: TerminateReason::Completed
        }]
    );
    assert!(m.handle_iq(now, result_for(&term)));
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.session_count(), 0);
    assert_eq!(m.poll_timeout(), None, "no timer left behind");
}

#[test]
fn sender_answers_the_seed_receiver_like_the_seed_sender() {
    let now = t0();
    let me = "romeo@montague.lit/gshare";
    let peer = "juliet@capulet.lit/res";
    let mut m = seeded(me, 2);
    let set = Canon {
        mask: vec![("iq", "id"), ("session", "id")],
        mask_text: vec!["url"],
        bare: vec![("iq", "to"), ("session", "initiator")],
        drop: vec![("iq", "from")],
    };
    let result = Canon {
        bare: vec![("iq", "to")],
        drop: vec![("iq", "from")],
        ..Canon::default()
    };

    // 1 initiate
    let h = m
        .initiate(
            now,
            full(peer),
            gshare::session::Manifest {
                items: vec![gshare::session::ManifestItem::file(
                    "somefile.tar.gz",
                    24_410_321,
                )],
            },
        )
        .unwrap();
    let init = one(&mut m);
    assert_matches_seed(&init, 1, &set);
    assert_eq!(init.to, jid(peer));
    let session = init.set_payload().unwrap();
    let sid = session.attr("id").unwrap().to_owned();
    assert!(sid.parse::<u32>().is_ok(), "decimal u32 session id: {sid}");
    assert_eq!(session.attr("initiator"), Some(me));
    let info = m.info(h).unwrap();
    for path in [
        info.source_path.as_str(),
        info.preview_path.as_deref().unwrap(),
    ] {
        let hex = path
            .strip_prefix("/temporary/")
            .and_then(|p| p.strip_suffix('/'))
            .unwrap();
        assert_eq!(hex.len(), 32);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }
    assert_ne!(info.source_path, info.preview_path.clone().unwrap());
    // 2 result
    assert!(m.handle_iq(now, result_for(&init)));

    // The receiver's stanzas, rewritten to our session id / initiator / its
    // full JID.
    let from_peer = |n: usize| rewrite_set(seed(n), peer, &sid, me);

    // 3 transport-accept -> 4 result
    assert!(m.handle_iq(now, from_peer(3)));
    assert_matches_seed(&one(&mut m), 4, &result);
    assert!(events(&mut m).is_empty());

    // 5 accept -> 6 result + Accepted
    assert!(m.handle_iq(now, from_peer(5)));
    assert_matches_seed(&one(&mut m), 6, &result);
    assert_eq!(
        events(&mut m),
        vec![SessionEvent::Accepted {
            handle: h,
            extension: None
        }]
    );

    // 7 info channel -> 8 result + ChannelRequested
    assert!(m.handle_iq(now, from_peer(7)));
    assert_matches_seed(&one(&mut m), 8, &result);
    assert_eq!(
        events(&mut m),
        vec![SessionEvent::ChannelRequested {
            handle: h,
            name: "private-1".into()
        }]
    );

    // 9 our transport-info (candidate values masked: the seed writes
    // type="host" and an empty password, we write local and a random one)
    let ours = Candidate {
        name: String::new(),
        address: "192.168.160.101:55433".parse().unwrap(),
        username: "ccgg8psCDi8ALHPN".into(),
        password: String::new(),
        preference: 1.0,
        protocol: "udp".into(),
        kind: CandidateType::Local,
        generation: 0,
        network: "0".into(),
    };
    m.send_candidates(now, h, "private-1", vec![ours]).unwrap();
    let ti = one(&mut m);
    let mut cand = set.clone();
    cand.mask.push(("candidate", "*"));
    assert_matches_seed(&ti, 9, &cand);
    let c = ti
        .set_payload()
        .unwrap()
        .get_child("transport", NS_P2P)
        .unwrap()
        .get_child("candidate", NS_P2P)
        .unwrap();
    assert_eq!(c.attr("name"), Some("private-1"));
    assert_eq!(c.attr("type"), Some("local"));
    assert_eq!(c.attr("password").map(str::len), Some(16));
    // 10 result
    assert!(m.handle_iq(now, result_for(&ti)));

    // 11 receiver's transport-info -> 12 result + candidates
    assert!(m.handle_iq(now, from_peer(11)));
    assert_matches_seed(&one(&mut m), 12, &result);
    let ev = events(&mut m);
    assert!(
        matches!(ev.as_slice(), [SessionEvent::RemoteCandidates { channel, candidates, .. }]
            if channel == "private-1" && candidates[0].password == "+9SLmzhJo6nqxYgE"),
        "{ev:#?}"
    );
    m.transport_connected(h).unwrap();

    // 13 info complete -> 14 result + Complete, session stays open
    assert!(m.handle_iq(now, from_peer(13)));
    assert_matches_seed(&one(&mut m), 14, &result);
    assert_eq!(events(&mut m), vec![SessionEvent::Complete { handle: h }]);
    assert_eq!(m.session_count(), 1);

    // 15 terminate -> 16 result + Terminated(Completed)
    assert!(m.handle_iq(now, from_peer(15)));
    assert_matches_seed(&one(&mut m), 16, &result);
    assert_eq!(
        events(&mut m),
        vec![SessionEvent::Terminated {
            handle: h,
            reason: TerminateReason::Completed
        }]
    );
    assert_eq!(m.session_count(), 0);
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn two_machines_talk_to_each_other_through_a_whole_transfer() {
    // Both roles of gshare against each other: every set is answered, the
    // sender sees Complete then Completed, the receiver Completed.
    let now = t0();
    let a = "romeo@montague.lit/gshare";
    let b = "juliet@capulet.lit/gshare";
    let mut tx = seeded(a, 3);
    let mut rx = seeded(b, 4);
    let h = tx
        .initiate(
            now,
            full(b),
            gshare::session::Manifest {
                items: vec![gshare::session::ManifestItem::file("a.bin", 10)],
            },
        )
        .unwrap();
    pump(now, &mut tx, a, &mut rx, b);
    let ev = events(&mut rx);
    let [SessionEvent::Offer { handle: r, .. }] = ev.as_slice() else {
        panic!("{ev:#?}")
    };
    let r = *r;
    rx.accept(now, r).unwrap();
    pump(now, &mut tx, a, &mut rx, b);
    assert_eq!(
        events(&mut tx),
        vec![SessionEvent::Accepted {
            handle: h,
            extension: None
        }]
    );
    let ch = rx.open_channel(now, r).unwrap();
    pump(now, &mut tx, a, &mut rx, b);
    assert_eq!(
        events(&mut tx),
        vec![SessionEvent::ChannelRequested {
            handle: h,
            name: ch.clone()
        }]
    );
    let cand = |port: u16| Candidate {
        name: String::new(),
        address: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        username: "AAAAAAAAAAAAAAAA".into(),
        password: "p".into(),
        preference: 1.0,
        protocol: "udp".into(),
        kind: CandidateType::Local,
        generation: 0,
        network: "0".into(),
    };
    tx.send_candidates(now, h, &ch, vec![cand(1)]).unwrap();
    rx.send_candidates(now, r, &ch, vec![cand(2)]).unwrap();
    pump(now, &mut tx, a, &mut rx, b);
    assert!(matches!(
        events(&mut tx).as_slice(),
        [SessionEvent::RemoteCandidates { .. }]
    ));
    assert!(matches!(
        events(&mut rx).as_slice(),
        [SessionEvent::RemoteCandidates { .. }]
    ));
    rx.complete(now, r).unwrap();
    pump(now, &mut tx, a, &mut rx, b);
    assert_eq!(
        events(&mut tx),
        vec![
            SessionEvent::Complete { handle: h },
            SessionEvent::Terminated {
                handle: h,
                reason: TerminateReason::Completed
            }
        ]
    );
    assert_eq!(
        events(&mut rx),
        vec![SessionEvent::Terminated {
            handle: r,
            reason: TerminateReason::Completed
        }]
    );
    assert_eq!(tx.session_count() + rx.session_count(), 0);
    assert_eq!(tx.poll_timeout(), None);
    assert_eq!(rx.poll_timeout(), None);
    let _ = IqOutKind::Result;
}
