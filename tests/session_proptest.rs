//! Property tests: random message sequences through both roles. The
//! machine never panics, answers every session set exactly once, reports
//! each session's end exactly once and nothing after it, and once nothing
//! more arrives every session ends by its timers (no session lingers, no
//! timer is left). Fixed seed: deterministic.
//!
//! `transport_connected` is deliberately not among the random commands: a
//! connected, accepted session has no session timer by design (a transfer
//! may take hours); ending it is the transfer layer's job.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod session_support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use gshare::ice::{Candidate, CandidateType};
use gshare::session::{
    Condition, ErrorType, IqIn, IqOut, IqOutKind, IqPayload, Manifest, ManifestItem, ReceivedError,
    SessionEvent, SessionHandle, SessionManager,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, RngSeed};
use session_support::*;

const ME: &str = "me@x.org/gshare";
const PEERS: [&str; 3] = ["p0@x.org/r", "p1@x.org/r", "p0@x.org/other"];

#[derive(Debug, Clone)]
enum Op {
    Incoming {
        peer: usize,
        sid: usize,
        initiator: usize,
        action: usize,
        body: usize,
    },
    Reply {
        which: usize,
        kind: usize,
    },
    Initiate {
        peer: usize,
    },
    Accept(usize),
    Reject(usize),
    Terminate(usize),
    OpenChannel(usize),
    SendCandidates(usize, usize),
    Complete(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 0..5usize, 0..3usize, 0..10usize, 0..4usize).prop_map(
            |(peer, sid, initiator, action, body)| Op::Incoming { peer, sid, initiator, action, body }
        ),
        3 => (0..64usize, 0..5usize).prop_map(|(which, kind)| Op::Reply { which, kind }),
        1 => (0..3usize).prop_map(|peer| Op::Initiate { peer }),
        1 => (0..8usize).prop_map(Op::Accept),
        1 => (0..8usize).prop_map(Op::Reject),
        1 => (0..8usize).prop_map(Op::Terminate),
        1 => (0..8usize).prop_map(Op::OpenChannel),
        1 => (0..8usize, 0..3usize).prop_map(|(h, c)| Op::SendCandidates(h, c)),
        1 => (0..8usize).prop_map(Op::Complete),
        2 => (0..40u64).prop_map(Op::Advance),
    ]
}

const ACTIONS: [&str; 10] = [
    "initiate",
    "accept",
    "reject",
    "redirect",
    "info",
    "transport-accept",
    "transport-info",
    "terminate",
    "candidates",
    "bogus",
];

fn cand(ns: &str, name: &str, port: u16) -> String {
    format!(
        r#"<candidate xmlns="{ns}" name="{name}" address="10.1.1.1" port="{port}" preference="0.5" username="QUJDREVGR0hJSktM" password="x" protocol="udp" type="stun" generation="0" network="0"/>"#
    )
}

fn body(action: &str, sel: usize) -> String {
    let desc = |m: &str, t: bool| {
        format!(
            r#"<description xmlns="{NS_SHARE}"><manifest>{m}</manifest><protocol><http><url name="source-path">/temporary/s/</url><url name="preview-path">/temporary/p/</url></http></protocol></description>{}"#,
            if t {
                format!(r#"<transport xmlns="{NS_P2P}"/>"#)
            } else {
                String::new()
            }
        )
    };
    let chans = ["private-1", "gabble-1", "private-2", "nope"];
    match (action, sel) {
        ("initiate", 0) => desc(r#"<file size="3"><name>a</name></file>"#, true),
        ("initiate", 1) => desc(r#"<file size="3"><name>a</name></file>"#, false),
        ("initiate", 2) => desc(r#"<file size="-3"><name>a</name></file>"#, true),
        ("initiate", _) => r#"<description xmlns="urn:other"/>"#.into(),
        ("accept", 0) => format!(
            r#"<description xmlns="{NS_SHARE}"><manifest/><protocol><http/></protocol></description>"#
        ),
        ("accept", 1) => desc(r#"<file><name>a</name></file>"#, true),
        ("accept", _) => String::new(),
        ("transport-accept", 0 | 1) => format!(r#"<transport xmlns="{NS_P2P}"/>"#),
        ("transport-accept", 2) => format!(
            r#"<transport xmlns="{NS_P2P}">{}</transport>"#,
            cand(NS_P2P, "private-1", 1)
        ),
        ("transport-accept", _) => String::new(),
        ("transport-info", n) => format!(
            r#"<transport xmlns="{NS_P2P}">{}{}</transport>"#,
            cand(NS_P2P, chans[n % 4], 10 + n as u16),
            if n == 3 {
                r#"<candidate xmlns="http://www.google.com/transport/p2p" name="private-1"/>"#
            } else {
                ""
            }
        ),
        ("candidates", n) => cand(NS_SESSION, chans[n % 4], 20 + n as u16),
        ("info", 0) => format!(r#"<channel xmlns="{NS_SHARE}" name="gabble-1"/>"#),
        ("info", 1) => format!(r#"<channel xmlns="{NS_SHARE}" name="private-1"/>"#),
        ("info", 2) => format!(r#"<complete xmlns="{NS_SHARE}"/>"#),
        ("info", _) => r#"<junk xmlns="urn:j"/>"#.into(),
        _ => String::new(),
    }
}

fn local_cand(port: u16) -> Candidate {
    Candidate {
        name: String::new(),
        address: std::net::SocketAddr::from(([10, 9, 9, 9], port)),
        username: "ZZZZZZZZZZZZZZZZ".into(),
        password: String::new(),
        preference: 1.0,
        protocol: "udp".into(),
        kind: CandidateType::Local,
        generation: 0,
        network: "0".into(),
    }
}

/// Tracks what a machine reported, checking the event invariants.
#[derive(Default)]
struct Tracker {
    handles: Vec<SessionHandle>,
    terminated: HashSet<SessionHandle>,
    sets: Vec<IqOut>,
    /// Everything sent (pair mode forwards it over the link).
    outbox: Vec<IqOut>,
}

impl Tracker {
    fn take(&mut self, m: &mut SessionManager) -> Vec<IqOut> {
        let out = drain(m);
        for o in &out {
            if matches!(o.kind, IqOutKind::Set(_)) {
                self.sets.push(o.clone());
            }
        }
        self.outbox.extend(out.iter().cloned());
        for e in events(m) {
            let h = match &e {
                SessionEvent::Offer { handle, .. } => {
                    assert!(!self.handles.contains(handle), "offer handle reused");
                    self.handles.push(*handle);
                    *handle
                }
                SessionEvent::Accepted { handle, .. }
                | SessionEvent::ChannelRequested { handle, .. }
                | SessionEvent::ChannelGone { handle, .. }
                | SessionEvent::RemoteCandidates { handle, .. }
                | SessionEvent::Complete { handle } => *handle,
                SessionEvent::Terminated { handle, .. } => {
                    assert!(
                        self.terminated.insert(*handle),
                        "terminated twice: {handle}"
                    );
                    continue;
                }
            };
            assert!(
                !self.terminated.contains(&h),
                "event after Terminated: {e:?}"
            );
        }
        out
    }

    fn handle(&self, i: usize) -> Option<SessionHandle> {
        if self.handles.is_empty() {
            None
        } else {
            Some(self.handles[i % self.handles.len()])
        }
    }

    /// Runs timers with nothing arriving until no timer is left; then every
    /// session must have ended.
    fn settle(&mut self, m: &mut SessionManager, mut now: Instant) {
        for _ in 0..10_000 {
            let Some(t) = m.poll_timeout() else { break };
            now = now.max(t);
            m.handle_timeout(now);
            self.take(m);
        }
        assert_eq!(m.poll_timeout(), None, "timers left behind");
        assert_eq!(m.session_count(), 0, "sessions left behind");
        for h in &self.handles {
            assert!(self.terminated.contains(h), "{h} never reported Terminated");
        }
    }
}

fn run_single(ops: Vec<Op>) {
    let mut now = t0();
    let mut m = seeded(ME, 42);
    let mut tr = Tracker::default();
    let mut ours: Vec<(String, usize)> = Vec::new(); // (sid, peer) of our initiates
    let mut n = 0usize;
    for op in ops {
        match op {
            Op::Incoming {
                peer,
                sid,
                initiator,
                action,
                body: b,
            } => {
                let from = PEERS[peer];
                let sid = match sid {
                    0 => "1".to_owned(),
                    1 => "2".to_owned(),
                    2 | 3 if !ours.is_empty() => ours[(sid + peer) % ours.len()].0.clone(),
                    _ => "zz".to_owned(),
                };
                let initiator = [from, ME, PEERS[(peer + 1) % 3]][initiator];
                let action = ACTIONS[action];
                n += 1;
                let id = format!("in-{n}");
                let iq = IqIn {
                    from: jid(from),
                    id: id.clone(),
                    payload: IqPayload::Set(xml(&format!(
                        r#"<session xmlns="{NS_SESSION}" type="{action}" id="{sid}" initiator="{initiator}">{}</session>"#,
                        body(action, b)
                    ))),
                };
                assert!(m.handle_iq(now, iq), "session sets are always consumed");
                let out = tr.take(&mut m);
                let answers: Vec<_> = out.iter().filter(|o| o.id == id).collect();
                assert_eq!(answers.len(), 1, "exactly one answer to {action}: {out:#?}");
                assert!(matches!(
                    answers[0].kind,
                    IqOutKind::Result | IqOutKind::Error(_)
                ));
                assert_eq!(answers[0].to, jid(from));
            }
            Op::Reply { which, kind } => {
                if tr.sets.is_empty() {
                    continue;
                }
                let out = tr.sets[which % tr.sets.len()].clone();
                let error = |t, c, extra| IqPayload::Error {
                    error: ReceivedError {
                        error_type: t,
                        condition: c,
                        text: None,
                        extra,
                    },
                    payload: None,
                };
                let payload = match kind {
                    0 | 1 => IqPayload::Result(None),
                    2 => error(ErrorType::Cancel, Condition::ItemNotFound, None),
                    3 => error(ErrorType::Wait, Condition::ResourceConstraint, None),
                    _ => error(
                        ErrorType::Modify,
                        Condition::BadRequest,
                        Some(gshare::session::stanza::unknown_channel_name_element(
                            "private-1",
                        )),
                    ),
                };
                // Replies may repeat; only the first is consumed.
                m.handle_iq(
                    now,
                    IqIn {
                        from: out.to.clone(),
                        id: out.id.clone(),
                        payload,
                    },
                );
                tr.take(&mut m);
            }
            Op::Initiate { peer } => {
                if let Ok(h) = m.initiate(
                    now,
                    full(PEERS[peer]),
                    Manifest {
                        items: vec![ManifestItem::file("f", 9)],
                    },
                ) {
                    tr.handles.push(h);
                    let sid = m.info(h).map(|i| i.sid).unwrap_or_default();
                    ours.push((sid, peer));
                }
                tr.take(&mut m);
            }
            Op::Accept(i)
            | Op::Reject(i)
            | Op::Terminate(i)
            | Op::OpenChannel(i)
            | Op::Complete(i)
                if tr.handle(i).is_none() => {}
            Op::Accept(i) => {
                let _ = m.accept(now, tr.handle(i).unwrap());
                tr.take(&mut m);
            }
            Op::Reject(i) => {
                let _ = m.reject(now, tr.handle(i).unwrap());
                tr.take(&mut m);
            }
            Op::Terminate(i) => {
                let _ = m.terminate(now, tr.handle(i).unwrap());
                tr.take(&mut m);
            }
            Op::OpenChannel(i) => {
                let _ = m.open_channel(now, tr.handle(i).unwrap());
                tr.take(&mut m);
            }
            Op::Complete(i) => {
                let _ = m.complete(now, tr.handle(i).unwrap());
                tr.take(&mut m);
            }
            Op::SendCandidates(i, c) => {
                if let Some(h) = tr.handle(i) {
                    let ch = ["private-1", "gabble-1", "private-2"][c];
                    let _ = m.send_candidates(now, h, ch, vec![local_cand(1), local_cand(2)]);
                    tr.take(&mut m);
                }
            }
            Op::Advance(s) => {
                now += Duration::from_secs(s);
                m.handle_timeout(now);
                tr.take(&mut m);
            }
        }
        tr.outbox.clear();
        // Live sessions = reported handles minus terminated ones.
        let live = tr
            .handles
            .iter()
            .filter(|h| !tr.terminated.contains(h))
            .count();
        assert_eq!(m.session_count(), live);
    }
    tr.settle(&mut m, now);
}

/// Two gshare machines (sender A, receiver B) over a lossy, duplicating,
/// reordering link, with random local commands on both sides.
#[derive(Debug, Clone)]
enum Net {
    Deliver { to_b: bool, pick: usize },
    Drop { to_b: bool, pick: usize },
    Duplicate { to_b: bool, pick: usize },
    Cmd { on_b: bool, cmd: usize, h: usize },
    Advance(u64),
}

fn net_op() -> impl Strategy<Value = Net> {
    prop_oneof![
        8 => (any::<bool>(), 0..4usize).prop_map(|(to_b, pick)| Net::Deliver { to_b, pick }),
        1 => (any::<bool>(), 0..4usize).prop_map(|(to_b, pick)| Net::Drop { to_b, pick }),
        1 => (any::<bool>(), 0..4usize).prop_map(|(to_b, pick)| Net::Duplicate { to_b, pick }),
        4 => (any::<bool>(), 0..7usize, 0..4usize).prop_map(|(on_b, cmd, h)| Net::Cmd { on_b, cmd, h }),
        1 => (0..30u64).prop_map(Net::Advance),
    ]
}

fn run_pair(ops: Vec<Net>) {
    const A: &str = "a@x.org/1";
    const B: &str = "b@x.org/1";
    let mut now = t0();
    let mut a = seeded(A, 7);
    let mut b = seeded(B, 8);
    let (mut ta, mut tb) = (Tracker::default(), Tracker::default());
    let mut to_b: Vec<IqOut> = Vec::new();
    let mut to_a: Vec<IqOut> = Vec::new();
    for op in ops {
        match op {
            Net::Deliver { to_b: dir, pick } | Net::Duplicate { to_b: dir, pick } => {
                let dup = matches!(op, Net::Duplicate { .. });
                let (q, dst, tr, src_jid) = if dir {
                    (&mut to_b, &mut b, &mut tb, A)
                } else {
                    (&mut to_a, &mut a, &mut ta, B)
                };
                if q.is_empty() {
                    continue;
                }
                // Mostly in order; sometimes one of the next few.
                let i = pick.min(q.len() - 1) * usize::from(pick == 3);
                let out = if dup { q[i].clone() } else { q.remove(i) };
                let mut el = out.to_element(None);
                set_attr(&mut el, "from", src_jid);
                let el = xml(&to_string(&el));
                let iq = iq_in(&el);
                let was_set = matches!(iq.payload, IqPayload::Set(_));
                let consumed = dst.handle_iq(now, iq);
                if was_set {
                    assert!(consumed);
                }
                tr.take(dst);
            }
            Net::Drop { to_b: dir, pick } => {
                let q = if dir { &mut to_b } else { &mut to_a };
                if !q.is_empty() {
                    let i = pick.min(q.len() - 1);
                    q.remove(i);
                }
            }
            Net::Cmd { on_b, cmd, h } => {
                let (m, tr) = if on_b {
                    (&mut b, &mut tb)
                } else {
                    (&mut a, &mut ta)
                };
                if !on_b && cmd == 0 {
                    if let Ok(hh) = m.initiate(
                        now,
                        full(B),
                        Manifest {
                            items: vec![ManifestItem::file("f", 1)],
                        },
                    ) {
                        tr.handles.push(hh);
                    }
                } else if let Some(hh) = tr.handle(h) {
                    match cmd {
                        0 | 1 => {
                            let _ = m.accept(now, hh);
                        }
                        2 => {
                            let _ = m.reject(now, hh);
                        }
                        3 => {
                            let _ = m.open_channel(now, hh);
                        }
                        4 => {
                            let ch = m
                                .info(hh)
                                .and_then(|i| i.channels.first().cloned())
                                .unwrap_or_else(|| "private-1".into());
                            let _ = m.send_candidates(now, hh, &ch, vec![local_cand(5)]);
                        }
                        5 => {
                            let _ = m.complete(now, hh);
                        }
                        _ => {
                            let _ = m.terminate(now, hh);
                        }
                    }
                }
                tr.take(m);
            }
            Net::Advance(s) => {
                now += Duration::from_secs(s);
                a.handle_timeout(now);
                b.handle_timeout(now);
                ta.take(&mut a);
                tb.take(&mut b);
            }
        }
        // Collect what each side sent into the link.
        to_b.append(&mut ta.outbox);
        to_a.append(&mut tb.outbox);
        assert!(a.poll_transmit().is_none() && b.poll_transmit().is_none());
    }
    ta.settle(&mut a, now);
    tb.settle(&mut b, now);
}

fn config(cases: u32) -> PtConfig {
    PtConfig {
        cases,
        rng_seed: RngSeed::Fixed(0x5e55_1011),
        failure_persistence: None,
        ..PtConfig::default()
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn single_machine_random_traffic(ops in proptest::collection::vec(op(), 1..80)) {
        run_single(ops);
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn two_machines_over_a_bad_link(ops in proptest::collection::vec(net_op(), 1..120)) {
        run_pair(ops);
    }
}
