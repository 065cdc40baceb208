//! A corpus of malformed and hostile session stanzas. Each is fed to fresh
//! machines in several states (no session, a live receiver session, a live
//! sender session). The machine must never panic, must answer every session
//! set with exactly one result or error carrying its id, and an error reply
//! must change nothing (no event, same session snapshot).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod session_support;

use gshare::session::{
    Condition, IqIn, IqOutKind, IqPayload, Manifest, ManifestItem, SessionHandle, SessionManager,
};
use minidom::Element;
use session_support::*;

const ME: &str = "me@example.org/gshare";
const PEER: &str = "peer@example.net/res";
const SID: &str = "77";

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Consumed, answered with this error condition.
    Error(Condition),
    /// Consumed, answered with a result.
    Result,
    /// Not a session set: left to the caller.
    NotConsumed,
}

struct Case {
    name: String,
    iq: IqIn,
    /// Expectation per world: [no session, receiver session, sender session].
    expect: [Expect; 3],
}

/// A placeholder for an attribute value longer than the XML parser allows
/// (rxml refuses long attribute values, so such input can only reach the
/// machine from a different parser; build it by hand).
fn long(c: char, n: usize) -> String {
    format!("LONG-{c}-{n}")
}

/// Replaces `long()` placeholders in attribute values.
fn expand(el: &mut Element) {
    let mut fix = Vec::new();
    for ((_, name), value) in el.attrs().iter() {
        if let Some(rest) = value.strip_prefix("LONG-") {
            let mut parts = rest.splitn(2, '-');
            let c = parts.next().unwrap().chars().next().unwrap();
            let n: usize = parts.next().unwrap().parse().unwrap();
            fix.push((name.clone(), c.to_string().repeat(n)));
        }
    }
    for (name, value) in fix {
        el.set_attr(minidom::rxml::Namespace::NONE, name, value);
    }
    for child in el.children_mut() {
        expand(child);
    }
}

fn session_el(ty: &str, sid: &str, initiator: &str, inner: &str) -> Element {
    let mut el = xml(&format!(
        r#"<session xmlns="{NS_SESSION}" type="{ty}" id="{sid}" initiator="{initiator}">{inner}</session>"#
    ));
    expand(&mut el);
    el
}

fn set_from(from: &str, el: Element) -> IqIn {
    IqIn {
        from: jid(from),
        id: "hostile-1".into(),
        payload: IqPayload::Set(el),
    }
}

fn good_desc(manifest: &str) -> String {
    format!(
        r#"<description xmlns="{NS_SHARE}"><manifest>{manifest}</manifest><protocol><http><url name="source-path">/temporary/aa/</url></http></protocol></description><transport xmlns="{NS_P2P}"/>"#
    )
}

fn cand(attrs: &str) -> String {
    format!(r#"<candidate xmlns="{NS_P2P}" {attrs}/>"#)
}

const CAND_OK: &str = r#"name="private-1" address="10.0.0.2" port="5" preference="1" username="ABCDEFGHabcdefgh" password="p" protocol="udp" type="local" generation="0" network="0""#;

fn transport(inner: &str) -> String {
    format!(r#"<transport xmlns="{NS_P2P}">{inner}</transport>"#)
}

/// An element nested `depth` levels deep (built by hand, no recursion).
fn deep(depth: usize) -> Element {
    let mut el = Element::bare("x", "urn:deep");
    for _ in 0..depth {
        let mut parent = Element::bare("x", "urn:deep");
        parent.append_child(el);
        el = parent;
    }
    el
}

fn corpus() -> Vec<Case> {
    use Condition::*;
    use Expect::*;
    let bad = || Error(BadRequest);
    let mut v: Vec<Case> = Vec::new();
    let mut add = |name: &str, iq: IqIn, expect: [Expect; 3]| {
        v.push(Case {
            name: name.into(),
            iq,
            expect,
        })
    };
    // Who the live sessions belong to: receiver world (sid 77, initiator
    // PEER), sender world (sid = ours, initiator ME). For the sender world
    // the tests substitute "{SID}" and "{ME}" below.
    let rx = |ty: &str, inner: &str| set_from(PEER, session_el(ty, SID, PEER, inner));

    // --- envelope
    for (name, xml_text) in [
        (
            "no type",
            format!(r#"<session xmlns="{NS_SESSION}" id="1" initiator="{PEER}"/>"#),
        ),
        (
            "no id",
            format!(r#"<session xmlns="{NS_SESSION}" type="terminate" initiator="{PEER}"/>"#),
        ),
        (
            "no initiator",
            format!(r#"<session xmlns="{NS_SESSION}" type="terminate" id="1"/>"#),
        ),
        (
            "empty id",
            format!(r#"<session xmlns="{NS_SESSION}" type="terminate" id="" initiator="{PEER}"/>"#),
        ),
        (
            "huge id",
            format!(
                r#"<session xmlns="{NS_SESSION}" type="terminate" id="{}" initiator="{PEER}"/>"#,
                long('9', 10_000)
            ),
        ),
        (
            "initiator not a jid",
            format!(r#"<session xmlns="{NS_SESSION}" type="terminate" id="1" initiator="@@/"/>"#),
        ),
    ] {
        let mut el = xml(&xml_text);
        expand(&mut el);
        add(name, set_from(PEER, el), [bad(), bad(), bad()]);
    }
    add(
        "wrong session namespace",
        set_from(
            PEER,
            xml(
                r#"<session xmlns="http://www.google.com/sessionX" type="initiate" id="1" initiator="a@b"/>"#,
            ),
        ),
        [NotConsumed, NotConsumed, NotConsumed],
    );
    add(
        "jingle, not ours",
        set_from(
            PEER,
            xml(r#"<jingle xmlns="urn:xmpp:jingle:1" action="session-initiate" sid="1"/>"#),
        ),
        [NotConsumed, NotConsumed, NotConsumed],
    );

    // --- actions
    for ty in ["cancel", "", "INITIATE", "transport_info", &long('x', 5000)] {
        add(
            &format!("unknown action {:.20}", ty),
            rx(ty, ""),
            // unknown session first (LJ04 order), then unknown type
            [bad(), bad(), bad()],
        );
    }

    // --- initiates
    let init = |name: &str, inner: String, expect0: Expect| {
        (
            name.to_owned(),
            set_from(PEER, session_el("initiate", "500", PEER, &inner)),
            expect0,
        )
    };
    let many_items = "<file size=\"1\"><name>a</name></file>".repeat(100_000);
    let long_name = "n".repeat(100_000);
    for (name, iq, e0) in [
        init(
            "initiate ok",
            good_desc(r#"<file size="1"><name>a</name></file>"#),
            Result,
        ),
        init("initiate empty manifest", good_desc(""), Result),
        init(
            "initiate no description",
            format!(r#"<transport xmlns="{NS_P2P}"/>"#),
            bad(),
        ),
        init(
            "initiate foreign description",
            r#"<description xmlns="urn:evil"/>"#.into(),
            bad(),
        ),
        init(
            "size -1",
            good_desc(r#"<file size="-1"><name>a</name></file>"#),
            bad(),
        ),
        init(
            "size 2^70",
            good_desc(r#"<file size="1180591620717411303424"><name>a</name></file>"#),
            bad(),
        ),
        init(
            "size with spaces",
            good_desc(r#"<file size=" 1 "><name>a</name></file>"#),
            bad(),
        ),
        init("100000 items", good_desc(&many_items), bad()),
        init(
            "100k name",
            good_desc(&format!(
                r#"<file size="1"><name>{long_name}</name></file>"#
            )),
            bad(),
        ),
        init(
            "nested name",
            good_desc(r#"<file size="1"><name><b>x</b></name></file>"#),
            bad(),
        ),
        init(
            "huge image",
            good_desc(
                r#"<file size="1"><name>a</name><image width="99999999999" height="-3"/></file>"#,
            ),
            Result,
        ),
        init(
            "crlf path",
            format!(
                r#"<description xmlns="{NS_SHARE}"><manifest/><protocol><http><url name="source-path">/a&#13;&#10;Host: x/</url></http></protocol></description>"#
            ),
            bad(),
        ),
        init(
            "no source path",
            format!(
                r#"<description xmlns="{NS_SHARE}"><manifest/><protocol><http/></protocol></description>"#
            ),
            bad(),
        ),
        init(
            "many transports",
            format!(
                "{}{}",
                good_desc(""),
                format!(r#"<transport xmlns="{NS_P2P}"/>"#).repeat(10_000)
            ),
            Result,
        ),
        init(
            "path traversal name (transfer layer's job)",
            good_desc(r#"<file size="1"><name>../../etc/passwd</name></file>"#),
            Result,
        ),
    ] {
        // In the receiver world sid 500 is a new session too; in the sender
        // world as well (different key).
        let e = e0.clone();
        add(&name, iq, [e0, e.clone(), e]);
    }
    add(
        "initiate with spoofed initiator",
        set_from(
            "mallory@evil.example/x",
            session_el("initiate", "1", PEER, &good_desc("")),
        ),
        [bad(), bad(), bad()],
    );
    add(
        "duplicated initiate",
        rx("initiate", &good_desc("")),
        [Result, Error(NotAllowed), Error(NotAllowed)],
    );

    // --- messages in the live receiver session (unknown elsewhere)
    let live =
        |name: &str, ty: &str, inner: String, e1: Expect| (name.to_owned(), rx(ty, &inner), e1);
    let many_cands = (0..1000)
        .map(|i| cand(&CAND_OK.replace("port=\"5\"", &format!("port=\"{}\"", 1000 + i))))
        .collect::<String>();
    for (name, iq, e1) in [
        live(
            "accept at receiver",
            "accept",
            String::new(),
            Error(NotAllowed),
        ),
        live(
            "transport-accept at receiver",
            "transport-accept",
            transport(""),
            Error(NotAllowed),
        ),
        live(
            "1000 candidates",
            "transport-info",
            transport(&many_cands),
            bad(),
        ),
        live(
            "candidate missing port",
            "transport-info",
            transport(&cand(&CAND_OK.replace("port=\"5\"", ""))),
            bad(),
        ),
        live(
            "candidate port 99999",
            "transport-info",
            transport(&cand(&CAND_OK.replace("port=\"5\"", "port=\"99999\""))),
            bad(),
        ),
        live(
            "candidate long username",
            "transport-info",
            transport(&cand(
                &CAND_OK.replace("ABCDEFGHabcdefgh", &long('A', 1000)),
            )),
            bad(),
        ),
        live(
            "candidate NaN preference",
            "transport-info",
            transport(&cand(
                &CAND_OK.replace("preference=\"1\"", "preference=\"NaN\""),
            )),
            Result,
        ),
        live(
            "candidate 1e999 preference",
            "transport-info",
            transport(&cand(
                &CAND_OK.replace("preference=\"1\"", "preference=\"1e999\""),
            )),
            Result,
        ),
        live(
            "candidate unknown channel",
            "transport-info",
            transport(&cand(&CAND_OK.replace("private-1", "private-99"))),
            bad(),
        ),
        live(
            "candidate wrong namespace",
            "transport-info",
            transport(&format!(r#"<candidate xmlns="urn:x" {CAND_OK}/>"#)),
            Result,
        ),
        live(
            "legacy candidate in wrong place",
            "candidates",
            transport(&cand(CAND_OK)),
            Result,
        ),
        live(
            "channel name 10k",
            "info",
            format!(
                r#"<channel xmlns="{NS_SHARE}" name="{}"/>"#,
                long('c', 10_000)
            ),
            bad(),
        ),
        live(
            "100 channels",
            "info",
            (0..100)
                .map(|i| format!(r#"<channel xmlns="{NS_SHARE}" name="c{i}"/>"#))
                .collect(),
            Error(ResourceConstraint),
        ),
        live(
            "channel without name",
            "info",
            format!(r#"<channel xmlns="{NS_SHARE}"/>"#),
            bad(),
        ),
        live(
            "terminate with 10000 children",
            "terminate",
            format!(r#"<reason xmlns="{NS_SESSION}"/>"#).repeat(10_000),
            Result,
        ),
        live(
            "info with junk",
            "info",
            "<a xmlns='urn:a'><b/></a>".repeat(1000),
            Result,
        ),
    ] {
        // The sender world's live session is reached too (see `retarget`).
        add(&name, iq, [bad(), e1.clone(), e1]);
    }
    add(
        "spoofed from for live session",
        set_from(
            "peer@example.net/other",
            session_el("terminate", SID, PEER, ""),
        ),
        [bad(), bad(), bad()],
    );

    // --- deep nesting in several places
    for (name, place) in [
        ("deep in info", "info"),
        ("deep in terminate", "terminate"),
        ("deep in transport-info", "transport-info"),
    ] {
        let mut s = session_el(place, SID, PEER, "");
        s.append_child(deep(5_000));
        add(name, set_from(PEER, s), [bad(), Result, Result]);
    }
    let mut s = session_el("initiate", "600", PEER, "");
    let mut d = xml(&good_desc(""));
    d.append_child(deep(5_000));
    s.append_child(d);
    add(
        "deep in initiate description",
        set_from(PEER, s),
        [Result, Result, Result],
    );
    let mut s = session_el("bogus", "1", PEER, "");
    s.append_child(deep(5_000));
    add(
        "deep with unknown action",
        set_from(PEER, s),
        [bad(), bad(), bad()],
    );
    v
}

/// World 0: no session; 1: receiver with a live accepted session (sid 77,
/// channel private-1); 2: sender with a live accepted session to PEER.
fn world(n: usize) -> (SessionManager, Option<(SessionHandle, String)>) {
    let now = t0();
    let mut m = seeded(ME, 99);
    match n {
        0 => (m, None),
        1 => {
            assert!(m.handle_iq(
                now,
                set_from(
                    PEER,
                    session_el(
                        "initiate",
                        SID,
                        PEER,
                        &good_desc(r#"<file size="1"><name>a</name></file>"#)
                    )
                )
            ));
            let h = m.handles()[0];
            m.accept(now, h).unwrap();
            m.open_channel(now, h).unwrap();
            drain(&mut m);
            events(&mut m);
            (m, Some((h, SID.to_owned())))
        }
        _ => {
            let h = m
                .initiate(
                    now,
                    full(PEER),
                    Manifest {
                        items: vec![ManifestItem::file("a", 1)],
                    },
                )
                .unwrap();
            let sid = m.info(h).unwrap().sid;
            assert!(m.handle_iq(now, set_from(PEER, session_el("accept", &sid, ME, &format!(r#"<description xmlns="{NS_SHARE}"><manifest/><protocol><http/></protocol></description>"#)))));
            assert!(m.handle_iq(
                now,
                set_from(
                    PEER,
                    session_el(
                        "info",
                        &sid,
                        ME,
                        &format!(r#"<channel xmlns="{NS_SHARE}" name="private-1"/>"#)
                    )
                )
            ));
            drain(&mut m);
            events(&mut m);
            (m, Some((h, sid)))
        }
    }
}

/// In the sender world, messages "for the live session" must carry our sid
/// and initiator to reach it.
fn retarget(iq: &IqIn, sid: &str) -> IqIn {
    let mut iq = iq.clone();
    if let IqPayload::Set(el) = &mut iq.payload
        && el.attr("id") == Some(SID)
        && el.attr("initiator") == Some(PEER)
    {
        set_attr(el, "id", sid);
        set_attr(el, "initiator", ME);
    }
    iq
}

fn run_case(case: &Case, w: usize) {
    let now = t0();
    let (mut m, live) = world(w);
    let iq = match (&live, w) {
        (Some((_, sid)), 2) => retarget(&case.iq, sid),
        _ => case.iq.clone(),
    };
    let before = live.as_ref().map(|(h, _)| m.info(*h));
    let count_before = m.session_count();
    let consumed = m.handle_iq(now, iq);
    let out = drain(&mut m);
    let ev = events(&mut m);
    let expect = &case.expect[w];
    let ctx = format!(
        "case {:?} in world {w}: out {:?}",
        case.name,
        out.iter().map(|o| &o.kind).collect::<Vec<_>>()
    );
    if *expect == Expect::NotConsumed {
        assert!(!consumed, "{ctx}");
        assert!(out.is_empty() && ev.is_empty(), "{ctx}");
        return;
    }
    assert!(consumed, "{ctx}");
    let replies: Vec<_> = out.iter().filter(|o| o.id == "hostile-1").collect();
    assert_eq!(replies.len(), 1, "exactly one answer: {ctx}");
    let reply = replies[0];
    match (&reply.kind, expect) {
        (IqOutKind::Error(e), Expect::Error(c)) => {
            assert_eq!(&e.condition, c, "{ctx}");
            // bounded echo: the copy is never the deep/huge tree
            let copy = e.copied.as_ref().unwrap();
            assert!(
                copy.children().count() <= gshare::session::envelope::MAX_COPY_ELEMENTS,
                "{ctx}"
            );
        }
        (IqOutKind::Result, Expect::Result) => {}
        (k, e) => panic!("got {k:?}, expected {e:?}: {ctx}"),
    }
    if matches!(reply.kind, IqOutKind::Error(_)) {
        assert!(
            ev.is_empty(),
            "an error changes nothing: {ctx}, events {ev:?}"
        );
        assert_eq!(out.len(), 1, "{ctx}");
        assert_eq!(m.session_count(), count_before, "{ctx}");
        if let Some((h, _)) = &live {
            assert_eq!(before, Some(m.info(*h)), "{ctx}");
        }
    }
}

#[test]
fn hostile_corpus_never_panics_and_is_answered() {
    // The deep trees are dropped recursively by minidom itself (in this
    // test, not in the machine); give the thread room for that.
    let handle = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(|| {
            let cases = corpus();
            assert!(cases.len() > 50, "corpus has {} cases", cases.len());
            for case in &cases {
                for w in 0..3 {
                    run_case(case, w);
                }
            }
        })
        .unwrap();
    if let Err(e) = handle.join() {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn error_reply_to_a_huge_stanza_is_not_huge() {
    let now = t0();
    let mut m = seeded(ME, 1);
    let items = "<file size=\"-1\"><name>a</name></file>".repeat(50_000);
    let iq = set_from(PEER, session_el("initiate", "1", PEER, &good_desc(&items)));
    assert!(m.handle_iq(now, iq));
    let out = drain(&mut m);
    let IqOutKind::Error(e) = &out[0].kind else {
        panic!()
    };
    let copy = e.copied.as_ref().unwrap();
    assert!(copy.is("session", NS_SESSION));
    assert_eq!(copy.children().count(), 0, "root only");
    assert_eq!(copy.attr("id"), Some("1"));
    assert!(to_string(&out[0].to_element(None)).len() < 2_000);
}

#[test]
fn flood_of_initiate_terminate_cycles_stays_bounded() {
    // A peer cycling initiate/terminate makes us send a transport-accept
    // each time; the tracked-IQ table stays bounded and nothing leaks.
    let now = t0();
    let mut m = seeded(ME, 1);
    for i in 0..(gshare::session::MAX_PENDING_IQS + 500) {
        let sid = i.to_string();
        assert!(m.handle_iq(
            now,
            set_from(PEER, session_el("initiate", &sid, PEER, &good_desc("")))
        ));
        assert!(m.handle_iq(now, set_from(PEER, session_el("terminate", &sid, PEER, ""))));
        drain(&mut m);
        events(&mut m);
    }
    assert_eq!(m.session_count(), 0);
    // All tracked IQs expire; nothing is left.
    let t = m.poll_timeout().unwrap();
    m.handle_timeout(t);
    assert_eq!(m.poll_timeout(), None);
    assert!(events(&mut m).is_empty());
}
