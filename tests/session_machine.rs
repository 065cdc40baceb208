//! The session machine against the divergences of docs/protocol.md §A.4–§A.9
//! (gabble vs LJ04), the state tables of §A.2, error replies of §A.10,
//! timers and bounds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod session_support;

use std::time::{Duration, Instant};

use gshare::ice::{Candidate, CandidateType};
use gshare::session::{
    Action, CommandError, Condition, Config, Dialect, ErrorType, IqIn, IqOut, IqOutKind, IqPayload,
    Manifest, ManifestItem, ReceivedError, SessionEvent, SessionHandle, SessionManager,
    TerminateReason, TimeoutKind,
};
use minidom::Element;
use session_support::*;

const ME: &str = "me@example.org/gshare";
const PEER: &str = "peer@example.net/res";

fn set(from: &str, sid: &str, initiator: &str, ty: &str, inner: &str) -> IqIn {
    IqIn {
        from: jid(from),
        id: format!("in-{ty}-{sid}"),
        payload: IqPayload::Set(xml(&format!(
            r#"<session xmlns="{NS_SESSION}" type="{ty}" id="{sid}" initiator="{initiator}">{inner}</session>"#
        ))),
    }
}

fn initiate_inner(transport: bool) -> String {
    format!(
        r#"<description xmlns="{NS_SHARE}"><manifest><file size="10"><name>a.txt</name></file></manifest>
        <protocol><http><url name="source-path">/temporary/aa/</url><url name="preview-path">/temporary/bb/</url></http></protocol></description>{}"#,
        if transport {
            format!(r#"<transport xmlns="{NS_P2P}"/>"#)
        } else {
            String::new()
        }
    )
}

fn cand_xml(name: &str, port: u16, ns: &str) -> String {
    format!(
        r#"<candidate xmlns="{ns}" name="{name}" address="10.0.0.2" port="{port}" preference="1" username="ABCDEFGHabcdefgh" password="pw" protocol="udp" type="local" generation="0" network="0"/>"#
    )
}

fn local_cand(port: u16) -> Candidate {
    Candidate {
        name: String::new(),
        address: std::net::SocketAddr::from(([10, 0, 0, 1], port)),
        username: "ZZZZZZZZZZZZZZZZ".into(),
        password: "secret".into(),
        preference: 1.0,
        protocol: "udp".into(),
        kind: CandidateType::Local,
        generation: 0,
        network: "0".into(),
    }
}

fn kind(out: &IqOut) -> &'static str {
    match &out.kind {
        IqOutKind::Result => "result",
        IqOutKind::Error(_) => "error",
        IqOutKind::Set(el) => match el.attr("type") {
            Some("initiate") => "initiate",
            Some("accept") => "accept",
            Some("reject") => "reject",
            Some("terminate") => "terminate",
            Some("transport-accept") => "transport-accept",
            Some("transport-info") => "transport-info",
            Some("candidates") => "candidates",
            Some("info") => "info",
            _ => "other-set",
        },
    }
}

fn kinds(outs: &[IqOut]) -> Vec<&'static str> {
    outs.iter().map(kind).collect()
}

fn error_of(out: &IqOut) -> (ErrorType, Condition, String, Option<Element>) {
    let IqOutKind::Error(e) = &out.kind else {
        panic!("not an error: {out:#?}")
    };
    assert!(
        e.copied
            .as_ref()
            .is_some_and(|c| c.is("session", NS_SESSION)),
        "error replies carry a copy of the offending <session>"
    );
    (
        e.error_type,
        e.condition.clone(),
        e.text.clone().unwrap_or_default(),
        e.extra.clone(),
    )
}

fn iq_error(
    out: &IqOut,
    error_type: ErrorType,
    condition: Condition,
    extra: Option<Element>,
) -> IqIn {
    IqIn {
        from: out.to.clone(),
        id: out.id.clone(),
        payload: IqPayload::Error {
            error: ReceivedError {
                error_type,
                condition,
                text: None,
                extra,
            },
            payload: out.set_payload().cloned(),
        },
    }
}

/// Receiver with one fresh offer from PEER (sid "77").
fn receiver_with_offer(now: Instant, transport: bool) -> (SessionManager, SessionHandle) {
    let mut m = seeded(ME, 10);
    assert!(m.handle_iq(
        now,
        set(PEER, "77", PEER, "initiate", &initiate_inner(transport))
    ));
    let out = drain(&mut m);
    if transport {
        assert_eq!(kinds(&out), ["result", "transport-accept"]);
    } else {
        assert_eq!(kinds(&out), ["result"], "legacy: no transport-accept");
    }
    let ev = events(&mut m);
    let [SessionEvent::Offer { handle, .. }] = ev.as_slice() else {
        panic!("{ev:#?}")
    };
    (m, *handle)
}

/// Sender with one initiate to PEER, its result delivered. Returns sid.
fn sender(now: Instant) -> (SessionManager, SessionHandle, String) {
    sender_with(now, Config::default())
}

fn sender_with(now: Instant, config: Config) -> (SessionManager, SessionHandle, String) {
    let mut m = seeded_with(ME, 20, config);
    let h = m
        .initiate(
            now,
            full(PEER),
            Manifest {
                items: vec![
                    ManifestItem::file("a.txt", 10),
                    ManifestItem::file("b.txt", 5),
                ],
            },
        )
        .unwrap();
    let out = drain(&mut m);
    assert_eq!(kinds(&out), ["initiate"]);
    assert!(m.handle_iq(now, result_for(&out[0])));
    let sid = m.info(h).unwrap().sid;
    (m, h, sid)
}

const LJ04_ACCEPT: &str = r#"<description xmlns="http://www.google.com/session/share"><manifest/><protocol><http/></protocol></description>"#;

/// Sender: transport-accept + accept + info channel `chan` from PEER.
fn sender_active(now: Instant, chan: &str) -> (SessionManager, SessionHandle, String) {
    let (mut m, h, sid) = sender(now);
    for (ty, inner) in [
        (
            "transport-accept",
            format!(r#"<transport xmlns="{NS_P2P}"/>"#),
        ),
        ("accept", LJ04_ACCEPT.to_owned()),
        (
            "info",
            format!(r#"<channel xmlns="{NS_SHARE}" name="{chan}"/>"#),
        ),
    ] {
        assert!(m.handle_iq(now, set(PEER, &sid, ME, ty, &inner)));
    }
    assert_eq!(kinds(&drain(&mut m)), ["result", "result", "result"]);
    assert_eq!(
        events(&mut m),
        vec![
            SessionEvent::Accepted {
                handle: h,
                extension: None
            },
            SessionEvent::ChannelRequested {
                handle: h,
                name: chan.into()
            }
        ]
    );
    (m, h, sid)
}

// ---------------------------------------------------------------------------
// §A.5 accept forms

#[test]
fn sender_accepts_gabbles_full_manifest_accept() {
    let now = t0();
    let (mut m, h, sid) = sender(now);
    assert!(m.handle_iq(
        now,
        set(
            PEER,
            &sid,
            ME,
            "transport-accept",
            &format!(r#"<transport xmlns="{NS_P2P}"/>"#)
        )
    ));
    // gabble: manifest repeated in reverse order, zero-byte file without size,
    // both URLs, plus a p2p transport (§A.5, §D.3a)
    let info = m.info(h).unwrap();
    let inner = format!(
        r#"<description xmlns="{NS_SHARE}"><manifest><file size="5"><name>b.txt</name></file><file><name>a.txt</name></file></manifest>
        <protocol><http><url name="source-path">{}</url><url name="preview-path">{}</url></http></protocol></description>
        <transport xmlns="{NS_P2P}"/>"#,
        info.source_path,
        info.preview_path.unwrap()
    );
    assert!(m.handle_iq(now, set(PEER, &sid, ME, "accept", &inner)));
    assert_eq!(kinds(&drain(&mut m)), ["result", "result"]);
    assert_eq!(
        events(&mut m),
        vec![SessionEvent::Accepted {
            handle: h,
            extension: None
        }]
    );
    let info = m.info(h).unwrap();
    assert!(info.accepted);
    assert_eq!(info.dialect, Dialect::Modern);
    // our own manifest is kept, not the peer's re-ordered copy
    assert_eq!(info.manifest.items[0].name, "a.txt");
}

#[test]
fn receiver_sends_the_lj04_accept() {
    let now = t0();
    let (mut m, h) = receiver_with_offer(now, true);
    m.accept(now, h).unwrap();
    let out = drain(&mut m);
    assert_eq!(kinds(&out), ["accept"]);
    let s = out[0].set_payload().unwrap();
    let d = s.get_child("description", NS_SHARE).unwrap();
    assert_eq!(
        d.get_child("manifest", NS_SHARE)
            .unwrap()
            .children()
            .count(),
        0
    );
    let http = d
        .get_child("protocol", NS_SHARE)
        .unwrap()
        .get_child("http", NS_SHARE)
        .unwrap();
    assert_eq!(http.children().count(), 0);
    assert!(s.get_child("transport", NS_P2P).is_none());
    // accepting twice is refused locally
    assert_eq!(m.accept(now, h), Err(CommandError::WrongState));
}

// ---------------------------------------------------------------------------
// §A.6 reject vs terminate

#[test]
fn decline_by_reject_lj04() {
    let now = t0();
    let (mut m, h, sid) = sender(now);
    assert!(m.handle_iq(now, set(PEER, &sid, ME, "reject", "")));
    assert_eq!(
        kinds(&drain(&mut m)),
        ["result"],
        "no terminate after a reject"
    );
    assert_eq!(
        events(&mut m),
        vec![SessionEvent::Terminated {
            handle: h,
            reason: TerminateReason::Declined { reject: true }
        }]
    );
}

#[test]
fn decline_by_terminate_gabble() {
    let now = t0();
    let (mut m, h, sid) = sender(now);
    assert!(m.handle_iq(
        now,
        set(
            PEER,
            &sid,
            ME,
            "transport-accept",
            &format!(r#"<transport xmlns="{NS_P2P}"/>"#)
        )
    ));
    assert!(m.handle_iq(now, set(PEER, &sid, ME, "terminate", "")));
    assert_eq!(kinds(&drain(&mut m)), ["result", "result"]);
    assert_eq!(
        events(&mut m),
        vec![SessionEvent::Terminated {
            handle: h,
            reason: TerminateReason::Declined { reject: false }
        }]
    );
}

#[test]
fn receiver_reject_sends_reject_and_no_terminate() {
    let now = t0();
    let (mut m, h) = receiver_with_offer(now, true);
    m.reject(now, h).unwrap();
    let out = drain(&mut m);
    assert_eq!(kinds(&out), ["reject"]);
    assert_eq!(out[0].set_payload().unwrap().children().count(), 0);
    assert_eq!(
        events(&mut m),
        vec![SessionEvent::Terminated {
            handle: h,
            reason: TerminateReason::LocalReject
        }]
    );
    // The reject's result is still ours to consume.
    assert!(m.handle_iq(now, result_for(&out[0])));
    // Reject only while undecided.
    assert_eq!(m.reject(now, h), Err(CommandError::UnknownSession));
}

#[test]
fn peer_terminate_after_accept_before_complete_is_peer_terminated() {
    let now = t0();
    let (mut m, h, sid) = sender_active(now, "private-1");
    assert!(m.handle_iq(
        now,
        set(
            PEER,
            &sid,
            ME,
            "terminate",
            &format!(r#"<decline xmlns="{NS_SESSION}"/>"#)
        )
    ));
    assert_eq!(kinds(&drain(&mut m)), ["result"]);
    assert_eq!(
        events(&mut m),
        vec![SessionEvent::Terminated {
            handle: h,
            reason: TerminateReason::PeerTerminated {
                reasons: vec!["decline".into()]
            }
        }]
    );
}

#[test]
fn receiver_sees_sender_withdraw_offer() {
    let now = t0();
    let (mut m, h) = receiver_with_offer(now, true);
    assert!(m.handle_iq(now, set(PEER, "77", PEER, "terminate", "")));
    assert_eq!(kinds(&drain(&mut m)), ["result"]);
    assert!(matches!(
        events(&mut m).as_slice(),
        [SessionEvent::Terminated { handle, reason: TerminateReason::PeerTerminated { .. } }] if *handle == h
    ));
    assert_eq!(m.accept(now, h), Err(CommandError::UnknownSession));
}

// ---------------------------------------------------------------------------
// §A.8 channel names

#[test]
fn gabble_channel_names_are_generic() {
    let now = t0();
    let (mut m, h, sid) = sender_active(now, "gabble-1");
    m.send_candidates(now, h, "gabble-1", vec![local_cand(5000)])
        .unwrap();
    let out = drain(&mut m);
    assert_eq!(kinds(&out), ["transport-info"]);
    let c = out[0]
        .set_payload()
        .unwrap()
        .get_child("transport", NS_P2P)
        .unwrap()
        .get_child("candidate", NS_P2P)
        .unwrap()
        .clone();
    assert_eq!(c.attr("name"), Some("gabble-1"));
    assert!(m.handle_iq(
        now,
        set(
            PEER,
            &sid,
            ME,
            "transport-info",
            &format!(
                r#"<transport xmlns="{NS_P2P}">{}</transport>"#,
                cand_xml("gabble-1", 7, NS_P2P)
            )
        )
    ));
    assert_eq!(kinds(&drain(&mut m)), ["result"]);
    assert!(matches!(
        events(&mut m).as_slice(),
        [SessionEvent::RemoteCandidates { channel, candidates, .. }] if channel == "gabble-1" && candidates.len() == 1
    ));
    // a second announced channel, duplicate announcement ignored
    for _ in 0..2 {
        assert!(m.handle_iq(
            now,
            set(
                PEER,
                &sid,
                ME,
                "info",
                &format!(r#"<channel xmlns="{NS_SHARE}" name="gabble-2"/>"#)
            )
        ));
    }
    assert_eq!(kinds(&drain(&mut m)), ["result", "result"]);
    assert_eq!(
        events(&mut m),
        vec![SessionEvent::ChannelRequested {
            handle: h,
            name: "gabble-2".into()
        }]
    );
    assert_eq!(m.info(h).unwrap().channels, ["gabble-1", "gabble-2"]);
}

#[test]
fn receiver_opens_private_channels_in_order_before_candidates() {
    let now = t0();
    let (mut m, h) = receiver_with_offer(now, true);
    assert_eq!(
        m.open_channel(now, h),
        Err(CommandError::WrongState),
        "not before accept"
    );
    assert_eq!(
        m.send_candidates(now, h, "private-1", vec![local_cand(1)]),
        Err(CommandError::UnknownChannel("private-1".into()))
    );
    m.accept(now, h).unwrap();
    assert_eq!(m.open_channel(now, h).unwrap(), "private-1");
    assert_eq!(m.open_channel(now, h).unwrap(), "private-2");
    m.send_candidates(now, h, "private-2", vec![local_cand(1)])
        .unwrap();
    let out = drain(&mut m);
    assert_eq!(kinds(&out), ["accept", "info", "info", "transport-info"]);
    let ch = out[1]
        .set_payload()
        .unwrap()
        .get_child("channel", NS_SHARE)
        .unwrap();
    assert_eq!(ch.attr("name"), Some("private-1"));
}

#[test]
fn candidates_for_unknown_channel_get_unknown_channel_name() {
    let now = t0();
    let (mut m, h) = receiver_with_offer(now, true);
    m.accept(now, h).unwrap();
    m.open_channel(now, h).unwrap();
    drain(&mut m);
    let before = m.info(h).unwrap();
    assert!(m.handle_iq(
        now,
        set(
            PEER,
            "77",
            PEER,
            "transport-info",
            &format!(
                r#"<transport xmlns="{NS_P2P}">{}{}</transport>"#,
                cand_xml("private-1", 1, NS_P2P),
                cand_xml("gabble-1", 2, NS_P2P)
            )
        )
    ));
    let out = drain(&mut m);
    assert_eq!(kinds(&out), ["error"]);
    let (ty, cond, text, extra) = error_of(&out[0]);
    assert_eq!((ty, cond), (ErrorType::Modify, Condition::BadRequest));
    assert!(text.contains("gabble-1"), "{text}");
    let extra = extra.unwrap();
    assert!(extra.is("unknown-channel-name", NS_P2P));
    assert_eq!(extra.attr("name"), Some("gabble-1"));
    // nothing changed: no event, the good candidate in the same message was not taken
    assert!(events(&mut m).is_empty());
    assert_eq!(m.info(h).unwrap(), before);
}

// ---------------------------------------------------------------------------
// §A.3 / §A.9 legacy dialect

#[test]
fn legacy_receiver_uses_candidates_action() {
    let now = t0();
    let (mut m, h) = receiver_with_offer(now, false);
    assert_eq!(m.info(h).unwrap().dialect, Dialect::Legacy);
    m.accept(now, h).unwrap();
    let ch = m.open_channel(now, h).unwrap();
    m.send_candidates(now, h, &ch, vec![local_cand(1), local_cand(2)])
        .unwrap();
    let out = drain(&mut m);
    assert_eq!(kinds(&out), ["accept", "info", "candidates"]);
    let s = out[2].set_payload().unwrap();
    let cands: Vec<_> = s.children().collect();
    assert_eq!(cands.len(), 2);
    assert!(cands.iter().all(|c| c.is("candidate", NS_SESSION)));
    assert!(s.get_child("transport", NS_P2P).is_none());
    // and reads the sender's legacy candidates
    assert!(m.handle_iq(
        now,
        set(
            PEER,
            "77",
            PEER,
            "candidates",
            &cand_xml(&ch, 9, NS_SESSION)
        )
    ));
    assert_eq!(kinds(&drain(&mut m)), ["result"]);
    assert!(matches!(
        events(&mut m).as_slice(),
        [SessionEvent::RemoteCandidates { .. }]
    ));
}

#[test]
fn legacy_sender_detects_accept_without_transport_accept() {
    let now = t0();
    let (mut m, h, sid) = sender(now);
    assert!(m.handle_iq(now, set(PEER, &sid, ME, "accept", LJ04_ACCEPT)));
    assert!(m.handle_iq(
        now,
        set(
            PEER,
            &sid,
            ME,
            "info",
            &format!(r#"<channel xmlns="{NS_SHARE}" name="private-1"/>"#)
        )
    ));
    drain(&mut m);
    assert_eq!(m.info(h).unwrap().dialect, Dialect::Legacy);
    m.send_candidates(now, h, "private-1", vec![local_cand(1)])
        .unwrap();
    assert_eq!(kinds(&drain(&mut m)), ["candidates"]);
}

#[test]
fn modern_session_downgrades_on_candidates_and_resends_ours() {
    let now = t0();
    let (mut m, h, sid) = sender_active(now, "private-1");
    m.send_candidates(now, h, "private-1", vec![local_cand(1), local_cand(2)])
        .unwrap();
    let first = drain(&mut m);
    assert_eq!(kinds(&first), ["transport-info"]);
    assert!(m.handle_iq(now, result_for(&first[0])));
    // the peer speaks legacy
    assert!(m.handle_iq(
        now,
        set(
            PEER,
            &sid,
            ME,
            "candidates",
            &cand_xml("private-1", 9, NS_SESSION)
        )
    ));
    let out = drain(&mut m);
    assert_eq!(
        kinds(&out),
        ["result", "candidates"],
        "ours repeated as candidates"
    );
    let resent: Vec<_> = out[1].set_payload().unwrap().children().collect();
    assert_eq!(resent.len(), 2);
    assert_eq!(resent[0].attr("port"), Some("1"));
    assert_eq!(m.info(h).unwrap().dialect, Dialect::Legacy);
    assert!(matches!(
        events(&mut m).as_slice(),
        [SessionEvent::RemoteCandidates { .. }]
    ));
    // from now on, candidates go out as `candidates`
    m.send_candidates(now, h, "private-1", vec![local_cand(3)])
        .unwrap();
    assert_eq!(kinds(&drain(&mut m)), ["candidates"]);
}

#[test]
fn receiver_downgrades_too() {
    let now = t0();
    let (mut m, h) = receiver_with_offer(now, true);
    m.accept(now, h).unwrap();
    let ch = m.open_channel(now, h).unwrap();
    m.send_candidates(now, h, &ch, vec![local_cand(1)]).unwrap();
    drain(&mut m);
    assert!(m.handle_iq(
        now,
        set(
            PEER,
            "77",
            PEER,
            "candidates",
            &cand_xml(&ch, 9, NS_SESSION)
        )
    ));
    assert_eq!(kinds(&drain(&mut m)), ["result", "candidates"]);
    assert_eq!(m.info(h).unwrap().dialect, Dialect::Legacy);
}

#[test]
fn duplicate_remote_candidates_are_dropped() {
    let now = t0();
    let (mut m, _h, sid) = sender_active(now, "private-1");
    let msg = format!(
        r#"<transport xmlns="{NS_P2P}">{}{}</transport>"#,
        cand_xml("private-1", 1, NS_P2P),
        cand_xml("private-1", 1, NS_P2P)
    );
    assert!(m.handle_iq(now, set(PEER, &sid, ME, "transport-info", &msg)));
    assert!(m.handle_iq(now, set(PEER, &sid, ME, "transport-info", &msg)));
    assert_eq!(kinds(&drain(&mut m)), ["result", "result"]);
    let ev = events(&mut m);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert!(
        matches!(&ev[0], SessionEvent::RemoteCandidates { candidates, .. } if candidates.len() == 1)
    );
}

// ---------------------------------------------------------------------------
// §A.9 / §A.10 errors in reply to our IQs

#[test]
fn error_reply_to_transport_info_is_ignored() {
    let now = t0();
    let (mut m, h, _sid) = sender_active(now, "private-1");
    m.send_candidates(now, h, "private-1", vec![local_cand(1)])
        .unwrap();
    let out = drain(&mut m);
    assert!(m.handle_iq(
        now,
        iq_error(&out[0], ErrorType::Modify, Condition::BadRequest, None)
    ));
    assert!(drain(&mut m).is_empty());
    assert!(events(&mut m).is_empty());
    assert!(m.info(h).is_some(), "session survives");
}

#[test]
fn unknown_channel_name_error_tears_the_channel_down() {
    let now = t0();
    let (mut m, h, _sid) = sender_active(now, "private-1");
    m.send_candidates(now, h, "private-1", vec![local_cand(1)])
        .unwrap();
    let out = drain(&mut m);
    let extra = gshare::session::stanza::unknown_channel_name_element("private-1");
    assert!(m.handle_iq(
        now,
        iq_error(
            &out[0],
            ErrorType::Modify,
            Condition::BadRequest,
            Some(extra)
        )
    ));
    assert_eq!(
        events(&mut m),
        vec![SessionEvent::ChannelGone {
            handle: h,
            name: "private-1".into()
        }]
    );
    assert!(m.info(h).unwrap().channels.is_empty());
    assert_eq!(
        m.send_candidates(now, h, "private-1", vec![local_cand(1)]),
        Err(CommandError::UnknownChannel("private-1".into()))
    );
}

#[test]
fn error_reply_to_accept_is_fatal() {
    let now = t0();
    let (mut m, h) = receiver_with_offer(now, true);
    m.accept(now, h).unwrap();
    let out = drain(&mut m);
    assert!(m.handle_iq(
        now,
        iq_error(&out[0], ErrorType::Cancel, Condition::ItemNotFound, None)
    ));
    assert_eq!(kinds(&drain(&mut m)), ["terminate"]);
    assert_eq!(
        events(&mut m),
        vec![SessionEvent::Terminated {
            handle: h,
            reason: TerminateReason::PeerError {
                action: Action::Accept,
                error_type: ErrorType::Cancel,
                condition: Condition::ItemNotFound,
                text: None
            }
        }]
    );
}

#[test]
fn error_of_type_wait_or_continue_is_not_fatal() {
    for ty in [ErrorType::Wait, ErrorType::Continue] {
        let now = t0();
        let (mut m, h) = receiver_with_offer(now, true);
        m.accept(now, h).unwrap();
        let out = drain(&mut m);
        assert!(m.handle_iq(
            now,
            iq_error(&out[0], ty, Condition::ResourceConstraint, None)
        ));
        assert!(drain(&mut m).is_empty());
        assert!(events(&mut m).is_empty());
        assert!(m.info(h).is_some());
    }
}

#[test]
fn error_reply_to_initiate_is_fatal() {
    let now = t0();
    let mut m = seeded(ME, 5);
    let h = m
        .initiate(
            now,
            full(PEER),
            Manifest {
                items: vec![ManifestItem::file("x", 1)],
            },
        )
        .unwrap();
    let out = drain(&mut m);
    assert!(m.handle_iq(
        now,
        iq_error(
            &out[0],
            ErrorType::Cancel,
            Condition::ServiceUnavailable,
            None
        )
    ));
    assert_eq!(kinds(&drain(&mut m)), ["terminate"]);
    assert!(matches!(
        events(&mut m).as_slice(),
        [SessionEvent::Terminated { handle, reason: TerminateReason::PeerError { action: Action::Initiate, .. } }] if *handle == h
    ));
}

#[test]
fn gabble_refusing_late_complete_is_reported() {
    // §D.3a: gabble answers a late <complete/> with item-not-found.
    let now = t0();
    let (mut m, h) = receiver_with_offer(now, true);
    m.accept(now, h).unwrap();
    m.complete(now, h).unwrap();
    let out = drain(&mut m);
    assert_eq!(kinds(&out), ["accept", "info"]);
    assert!(m.handle_iq(
        now,
        iq_error(&out[1], ErrorType::Cancel, Condition::ItemNotFound, None)
    ));
    assert_eq!(kinds(&drain(&mut m)), ["terminate"]);
    assert!(matches!(
        events(&mut m).as_slice(),
        [SessionEvent::Terminated {
            reason: TerminateReason::PeerError {
                action: Action::Info,
                ..
            },
            ..
        }]
    ));
}

#[test]
fn replies_we_do_not_own_are_not_consumed() {
    let now = t0();
    let (mut m, _h, _sid) = sender(now);
    assert!(!m.handle_iq(
        now,
        IqIn {
            from: jid(PEER),
            id: "someone-elses".into(),
            payload: IqPayload::Result(None)
        }
    ));
    // right id, wrong sender
    m.terminate(now, _h).unwrap();
    let out = drain(&mut m);
    let mut spoof = result_for(&out[0]);
    spoof.from = jid("mallory@example.net/x");
    assert!(!m.handle_iq(now, spoof));
    assert!(m.handle_iq(now, result_for(&out[0])));
    assert!(!m.handle_iq(now, result_for(&out[0])), "consumed once only");
    // gets and foreign sets are not ours
    assert!(!m.handle_iq(
        now,
        IqIn {
            from: jid(PEER),
            id: "g".into(),
            payload: IqPayload::Get(xml(
                r#"<query xmlns="http://jabber.org/protocol/disco#info"/>"#
            ))
        }
    ));
    assert!(!m.handle_iq(
        now,
        IqIn {
            from: jid(PEER),
            id: "s".into(),
            payload: IqPayload::Set(xml(r#"<jingle xmlns="urn:xmpp:jingle:1"/>"#))
        }
    ));
    assert!(drain(&mut m).is_empty());
}

// ---------------------------------------------------------------------------
// §A.2 state tables, §A.10 error replies for incoming messages

fn assert_error(m: &mut SessionManager, iq: IqIn, cond: Condition, text: &str) {
    let id = iq.id.clone();
    let from = iq.from.clone();
    assert!(m.handle_iq(t0(), iq));
    let out = drain(m);
    assert_eq!(kinds(&out), ["error"], "{out:#?}");
    assert_eq!(out[0].id, id);
    assert_eq!(out[0].to, from);
    let (ty, c, t, _) = error_of(&out[0]);
    assert_eq!(c, cond);
    assert_eq!(t, text);
    if cond == Condition::BadRequest || cond == Condition::NotAllowed {
        assert_eq!(ty, ErrorType::Modify);
    }
    assert!(events(m).is_empty(), "errors change nothing");
}

#[test]
fn unknown_session_gets_bad_request() {
    let now = t0();
    let (mut m, h) = receiver_with_offer(now, true);
    let before = m.info(h);
    for ty in [
        "accept",
        "info",
        "transport-info",
        "terminate",
        "reject",
        "candidates",
        "bogus",
    ] {
        assert_error(
            &mut m,
            set(PEER, "other-id", PEER, ty, ""),
            Condition::BadRequest,
            "unknown session",
        );
    }
    assert_eq!(m.info(h), before);
}

#[test]
fn spoofed_from_is_an_unknown_session() {
    let now = t0();
    let (mut m, h) = receiver_with_offer(now, true);
    // same sid and initiator, but from a different resource / account
    for from in [
        "peer@example.net/other",
        "mallory@evil.example/res",
        "peer@example.net",
    ] {
        assert_error(
            &mut m,
            set(from, "77", PEER, "terminate", ""),
            Condition::BadRequest,
            "unknown session",
        );
    }
    assert!(m.info(h).is_some());
    // and a spoofed initiate (initiator is someone else than the sender)
    assert_error(
        &mut m,
        set(
            "mallory@evil.example/res",
            "78",
            PEER,
            "initiate",
            &initiate_inner(true),
        ),
        Condition::BadRequest,
        "initiator does not match sender",
    );
}

#[test]
fn wrong_state_gets_not_allowed() {
    let now = t0();
    // receiver: accept/reject/transport-accept are sender-side messages
    let (mut m, h) = receiver_with_offer(now, true);
    let before = m.info(h);
    for ty in ["accept", "reject", "transport-accept", "redirect"] {
        assert_error(
            &mut m,
            set(PEER, "77", PEER, ty, LJ04_ACCEPT),
            Condition::NotAllowed,
            "message not allowed in current state",
        );
    }
    // duplicated initiate
    assert_error(
        &mut m,
        set(PEER, "77", PEER, "initiate", &initiate_inner(true)),
        Condition::NotAllowed,
        "message not allowed in current state",
    );
    assert_eq!(m.info(h), before);
    // sender: transport-accept / accept after accept
    let (mut m, h, sid) = sender_active(now, "private-1");
    let before = m.info(h);
    assert_error(
        &mut m,
        set(
            PEER,
            &sid,
            ME,
            "transport-accept",
            &format!(r#"<transport xmlns="{NS_P2P}"/>"#),
        ),
        Condition::NotAllowed,
        "message not allowed in current state",
    );
    assert_error(
        &mut m,
        set(PEER, &sid, ME, "accept", LJ04_ACCEPT),
        Condition::NotAllowed,
        "message not allowed in current state",
    );
    assert_eq!(m.info(h), before);
}

#[test]
fn unknown_action_and_description_type() {
    let now = t0();
    let (mut m, _h) = receiver_with_offer(now, true);
    assert_error(
        &mut m,
        set(PEER, "77", PEER, "cancel", ""),
        Condition::BadRequest,
        "unknown session message type",
    );
    let mut fresh = seeded(ME, 1);
    assert_error(
        &mut fresh,
        set(
            PEER,
            "1",
            PEER,
            "initiate",
            r#"<description xmlns="http://www.google.com/session/phone"/>"#,
        ),
        Condition::BadRequest,
        "unknown session description type",
    );
    assert_eq!(fresh.session_count(), 0);
}

#[test]
fn info_and_transport_info_allowed_while_waiting_for_accept() {
    // gabble accepts them in PENDING_INITIATE_SENT; so do we
    let now = t0();
    let (mut m, h, sid) = sender(now);
    assert!(m.handle_iq(
        now,
        set(
            PEER,
            &sid,
            ME,
            "info",
            &format!(r#"<channel xmlns="{NS_SHARE}" name="gabble-1"/>"#)
        )
    ));
    assert!(m.handle_iq(
        now,
        set(
            PEER,
            &sid,
            ME,
            "transport-info",
            &format!(
                r#"<transport xmlns="{NS_P2P}">{}</transport>"#,
                cand_xml("gabble-1", 3, NS_P2P)
            )
        )
    ));
    assert_eq!(kinds(&drain(&mut m)), ["result", "result"]);
    assert_eq!(events(&mut m).len(), 2);
    assert!(!m.info(h).unwrap().accepted);
}

#[test]
fn redirect_ends_the_session() {
    let now = t0();
    let (mut m, h, sid) = sender(now);
    assert!(m.handle_iq(now, set(PEER, &sid, ME, "redirect", "")));
    assert_eq!(kinds(&drain(&mut m)), ["result", "terminate"]);
    assert_eq!(
        events(&mut m),
        vec![SessionEvent::Terminated {
            handle: h,
            reason: TerminateReason::Redirected
        }]
    );
}

#[test]
fn local_terminate_at_any_point() {
    let now = t0();
    let (mut m, h) = receiver_with_offer(now, true);
    m.terminate(now, h).unwrap();
    assert_eq!(kinds(&drain(&mut m)), ["terminate"]);
    assert_eq!(
        events(&mut m),
        vec![SessionEvent::Terminated {
            handle: h,
            reason: TerminateReason::LocalTerminate
        }]
    );
    assert_eq!(m.terminate(now, h), Err(CommandError::UnknownSession));
    // late messages for it: unknown session
    assert_error(
        &mut m,
        set(PEER, "77", PEER, "info", ""),
        Condition::BadRequest,
        "unknown session",
    );

    let (mut m, h, _) = sender_active(now, "private-1");
    m.terminate(now, h).unwrap();
    assert_eq!(kinds(&drain(&mut m)), ["terminate"]);
    assert!(m.poll_timeout().is_some(), "the terminate IQ is tracked");
}

#[test]
fn several_sessions_at_once_both_roles() {
    let now = t0();
    let mut m = seeded(ME, 9);
    let peers = ["a@x.org/1", "b@x.org/1", "a@x.org/2"];
    for p in peers {
        // same sid from different peers: different sessions
        assert!(m.handle_iq(now, set(p, "5", p, "initiate", &initiate_inner(true))));
    }
    let out = m
        .initiate(
            now,
            full("c@x.org/1"),
            Manifest {
                items: vec![ManifestItem::file("f", 1)],
            },
        )
        .unwrap();
    assert_eq!(m.session_count(), 4);
    drain(&mut m);
    let offers: Vec<SessionHandle> = events(&mut m)
        .into_iter()
        .map(|e| match e {
            SessionEvent::Offer { handle, .. } => handle,
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(offers.len(), 3);
    m.accept(now, offers[1]).unwrap();
    m.reject(now, offers[0]).unwrap();
    let out2 = drain(&mut m);
    assert_eq!(out2[0].to, jid(peers[1]));
    assert_eq!(out2[1].to, jid(peers[0]));
    // terminate from a@x.org/2 only ends its own session
    assert!(m.handle_iq(now, set(peers[2], "5", peers[2], "terminate", "")));
    let ev = events(&mut m);
    assert!(
        matches!(ev.last(), Some(SessionEvent::Terminated { handle, .. }) if *handle == offers[2])
    );
    assert!(m.info(offers[1]).is_some());
    assert!(m.info(out).is_some());
    assert_eq!(m.session_count(), 2);
}

// ---------------------------------------------------------------------------
// timers

fn run_until_quiet(m: &mut SessionManager, mut now: Instant, limit: Instant) -> Instant {
    while let Some(t) = m.poll_timeout() {
        if t > limit {
            break;
        }
        now = now.max(t);
        m.handle_timeout(now);
        drain(m);
    }
    now
}

#[test]
fn no_accept_times_out() {
    let now = t0();
    let (mut m, h, _) = sender(now);
    assert_eq!(m.poll_timeout(), Some(now + Duration::from_secs(50)));
    m.handle_timeout(now + Duration::from_secs(49));
    assert!(events(&mut m).is_empty());
    m.handle_timeout(now + Duration::from_secs(50));
    assert_eq!(kinds(&drain(&mut m)), ["terminate"]);
    assert_eq!(
        events(&mut m),
        vec![SessionEvent::Terminated {
            handle: h,
            reason: TerminateReason::Timeout(TimeoutKind::NoAccept)
        }]
    );
}

#[test]
fn unanswered_iq_times_out() {
    let now = t0();
    let config = Config {
        iq_timeout: Duration::from_secs(10),
        ..Config::default()
    };
    let mut m = seeded_with(ME, 1, config);
    let h = m
        .initiate(
            now,
            full(PEER),
            Manifest {
                items: vec![ManifestItem::file("x", 1)],
            },
        )
        .unwrap();
    drain(&mut m);
    assert_eq!(m.poll_timeout(), Some(now + Duration::from_secs(10)));
    m.handle_timeout(now + Duration::from_secs(10));
    assert_eq!(kinds(&drain(&mut m)), ["terminate"]);
    assert_eq!(
        events(&mut m),
        vec![SessionEvent::Terminated {
            handle: h,
            reason: TerminateReason::Timeout(TimeoutKind::NoReply(Action::Initiate))
        }]
    );
    // the terminate itself is never answered: that only clears its tracking
    run_until_quiet(&mut m, now, now + Duration::from_secs(3600));
    assert!(events(&mut m).is_empty());
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn unanswered_transport_info_is_not_fatal() {
    let now = t0();
    let (mut m, h, _) = sender_active(now, "private-1");
    m.transport_connected(h).unwrap();
    m.send_candidates(now, h, "private-1", vec![local_cand(1)])
        .unwrap();
    drain(&mut m);
    let t = m.poll_timeout().unwrap();
    m.handle_timeout(t);
    assert!(drain(&mut m).is_empty());
    assert!(events(&mut m).is_empty());
    assert!(m.info(h).is_some());
    assert_eq!(
        m.poll_timeout(),
        None,
        "connected, accepted: no timer while transferring"
    );
}

#[test]
fn no_transport_times_out_unless_connected() {
    let now = t0();
    let (mut m, h, _) = sender_active(now, "private-1");
    m.handle_timeout(now + Duration::from_secs(50));
    assert_eq!(kinds(&drain(&mut m)), ["terminate"]);
    assert_eq!(
        events(&mut m),
        vec![SessionEvent::Terminated {
            handle: h,
            reason: TerminateReason::Timeout(TimeoutKind::NoTransport)
        }]
    );

    let (mut m, h, _) = sender_active(now, "private-1");
    m.transport_connected(h).unwrap();
    m.handle_timeout(now + Duration::from_secs(3600));
    assert!(events(&mut m).is_empty());
    assert!(m.info(h).is_some());
}

#[test]
fn receiver_undecided_offer_times_out() {
    let now = t0();
    let (mut m, h) = receiver_with_offer(now, false);
    m.handle_timeout(now + Duration::from_secs(50));
    assert_eq!(kinds(&drain(&mut m)), ["terminate"]);
    assert_eq!(
        events(&mut m),
        vec![SessionEvent::Terminated {
            handle: h,
            reason: TerminateReason::Timeout(TimeoutKind::NoDecision)
        }]
    );
}

#[test]
fn sender_after_complete_lingers_then_ends_completed() {
    let now = t0();
    let (mut m, h, sid) = sender_active(now, "private-1");
    m.transport_connected(h).unwrap();
    let later = now + Duration::from_secs(600);
    assert!(m.handle_iq(
        later,
        set(
            PEER,
            &sid,
            ME,
            "info",
            &format!(r#"<complete xmlns="{NS_SHARE}"/>"#)
        )
    ));
    drain(&mut m);
    assert_eq!(events(&mut m), vec![SessionEvent::Complete { handle: h }]);
    assert_eq!(m.poll_timeout(), Some(later + Duration::from_secs(50)));
    m.handle_timeout(later + Duration::from_secs(50));
    assert_eq!(kinds(&drain(&mut m)), ["terminate"]);
    assert_eq!(
        events(&mut m),
        vec![SessionEvent::Terminated {
            handle: h,
            reason: TerminateReason::Completed
        }]
    );
}

#[test]
fn unacknowledged_complete_still_terminates() {
    let now = t0();
    let (mut m, h) = receiver_with_offer(now, true);
    m.accept(now, h).unwrap();
    m.complete(now, h).unwrap();
    drain(&mut m);
    run_until_quiet(&mut m, now, now + Duration::from_secs(3600));
    let ev = events(&mut m);
    assert!(
        matches!(
            ev.as_slice(),
            [SessionEvent::Terminated {
                reason: TerminateReason::Timeout(TimeoutKind::NoReply(_)),
                ..
            }]
        ),
        "{ev:#?}"
    );
    assert_eq!(m.session_count(), 0);
}

// ---------------------------------------------------------------------------
// bounds

#[test]
fn pending_offer_bound_refuses_with_service_unavailable() {
    let now = t0();
    let mut m = seeded(ME, 3);
    for i in 0..gshare::session::MAX_PENDING_OFFERS {
        assert!(m.handle_iq(
            now,
            set(
                PEER,
                &i.to_string(),
                PEER,
                "initiate",
                &initiate_inner(true)
            )
        ));
    }
    drain(&mut m);
    events(&mut m);
    let iq = set(PEER, "overflow", PEER, "initiate", &initiate_inner(true));
    assert!(m.handle_iq(now, iq));
    let out = drain(&mut m);
    assert_eq!(kinds(&out), ["error"]);
    let (ty, cond, text, _) = error_of(&out[0]);
    assert_eq!(
        (ty, cond),
        (ErrorType::Cancel, Condition::ServiceUnavailable)
    );
    assert_eq!(text, "too many pending offers");
    assert!(events(&mut m).is_empty());
    assert_eq!(m.session_count(), gshare::session::MAX_PENDING_OFFERS);
}

#[test]
fn session_bound_refuses_initiates_both_ways() {
    let now = t0();
    let config = Config {
        max_sessions: 2,
        ..Config::default()
    };
    let mut m = seeded_with(ME, 3, config);
    let mani = || Manifest {
        items: vec![ManifestItem::file("x", 1)],
    };
    m.initiate(now, full("a@x.org/1"), mani()).unwrap();
    m.initiate(now, full("b@x.org/1"), mani()).unwrap();
    assert_eq!(
        m.initiate(now, full("c@x.org/1"), mani()),
        Err(CommandError::TooManySessions)
    );
    drain(&mut m);
    assert!(m.handle_iq(now, set(PEER, "1", PEER, "initiate", &initiate_inner(true))));
    let out = drain(&mut m);
    let (_, cond, text, _) = error_of(&out[0]);
    assert_eq!(cond, Condition::ServiceUnavailable);
    assert_eq!(text, "too many sessions");
}

#[test]
fn per_session_candidate_cap() {
    let now = t0();
    let config = Config {
        max_candidates_per_session: 3,
        ..Config::default()
    };
    let mut m = seeded_with(ME, 3, config);
    assert!(m.handle_iq(
        now,
        set(PEER, "77", PEER, "initiate", &initiate_inner(true))
    ));
    let h = m.handles()[0];
    m.accept(now, h).unwrap();
    let ch = m.open_channel(now, h).unwrap();
    drain(&mut m);
    events(&mut m);
    let msg = |ports: &[u16]| {
        format!(
            r#"<transport xmlns="{NS_P2P}">{}</transport>"#,
            ports
                .iter()
                .map(|p| cand_xml(&ch, *p, NS_P2P))
                .collect::<String>()
        )
    };
    assert!(m.handle_iq(
        now,
        set(PEER, "77", PEER, "transport-info", &msg(&[1, 2, 3]))
    ));
    assert_eq!(kinds(&drain(&mut m)), ["result"]);
    assert!(m.handle_iq(now, set(PEER, "77", PEER, "transport-info", &msg(&[4]))));
    let out = drain(&mut m);
    let (ty, cond, _, _) = error_of(&out[0]);
    assert_eq!((ty, cond), (ErrorType::Wait, Condition::ResourceConstraint));
    // duplicates of known ones still fine
    assert!(m.handle_iq(now, set(PEER, "77", PEER, "transport-info", &msg(&[1]))));
    assert_eq!(kinds(&drain(&mut m)), ["result"]);
}

#[test]
fn invalid_manifests_cannot_be_offered() {
    let now = t0();
    let mut m = seeded(ME, 3);
    assert_eq!(
        m.initiate(now, full(PEER), Manifest::default()),
        Err(CommandError::InvalidManifest("no items"))
    );
    assert!(matches!(
        m.initiate(
            now,
            full(PEER),
            Manifest {
                items: vec![ManifestItem::file("", 1)]
            }
        ),
        Err(CommandError::InvalidManifest(_))
    ));
    assert!(drain(&mut m).is_empty());
}

#[test]
fn session_ids_and_paths_are_random_and_distinct() {
    let now = t0();
    let mut m = SessionManager::new(full(ME), Config::default());
    let mut sids = std::collections::HashSet::new();
    let mut paths = std::collections::HashSet::new();
    for i in 0..20 {
        let h = m
            .initiate(
                now,
                full(&format!("p{i}@x.org/r")),
                Manifest {
                    items: vec![ManifestItem::file("x", 1)],
                },
            )
            .unwrap();
        let info = m.info(h).unwrap();
        assert!(info.sid.parse::<u32>().is_ok());
        sids.insert(info.sid);
        paths.insert(info.source_path);
        paths.insert(info.preview_path.unwrap());
    }
    assert_eq!(sids.len(), 20);
    assert_eq!(paths.len(), 40);
    let ids: std::collections::HashSet<String> = drain(&mut m).into_iter().map(|o| o.id).collect();
    assert_eq!(ids.len(), 20, "IQ ids unique");
}

#[test]
fn accept_timeout_is_separate_from_the_transport_timeout() {
    // A human may take minutes to decide; the transport timer stays short.
    // (Legacy offer: no transport-accept IQ outstanding to muddy the timers.)
    let now = t0();
    let config = Config {
        accept_timeout: Duration::from_secs(600),
        ..Config::default()
    };
    let mut m = seeded_with(ME, 4, config);
    assert!(m.handle_iq(
        now,
        set(PEER, "77", PEER, "initiate", &initiate_inner(false))
    ));
    let h = m.handles()[0];
    drain(&mut m);
    events(&mut m);
    assert_eq!(m.poll_timeout(), Some(now + Duration::from_secs(600)));
    m.handle_timeout(now + Duration::from_secs(599));
    assert!(events(&mut m).is_empty());
    let later = now + Duration::from_secs(599);
    m.accept(later, h).unwrap();
    let accept = drain(&mut m);
    assert!(m.handle_iq(later, result_for(&accept[0])));
    assert_eq!(m.poll_timeout(), Some(later + Duration::from_secs(50)));
}
