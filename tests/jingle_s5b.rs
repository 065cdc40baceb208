//! Two gshare ends on loopback: Jingle sessions exchanging IQs in memory,
//! XEP-0260 SOCKS5 streams over real TCP sockets, XEP-0261 IBB after a
//! transport-replace, and the XEP-0234 checksum checked at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gshare::bytestreams::ibb::{IbbEvent, IbbReceiver, IbbSender};
use gshare::bytestreams::s5b::{
    DIRECT_LOCAL_PREF, Outcome, Report, S5bNegotiation, connect_first, priority,
};
use gshare::bytestreams::socks5::{self, DirectListener};
use gshare::bytestreams::{self, dst_addr};
use gshare::jingle::{
    Candidate, CandidateType, Config, FileDesc, Hash, IbbStanza, IbbTransport, JingleEvent,
    JingleSession, Reason, ReasonKind, S5bPayload, S5bTransport, Transport, file_offer,
};
use gshare::session::envelope::{IqIn, IqOut};
use jid::{FullJid, Jid};
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const A: &str = "alice@localhost/gshare-a";
const B: &str = "bob@localhost/gshare-b";
const TSID: &str = "tsid-1";

fn fj(s: &str) -> FullJid {
    FullJid::new(s).unwrap()
}

fn wire(out: &IqOut, from: &str) -> IqIn {
    IqIn::from_element(&out.to_element(Some(&Jid::new(from).unwrap()))).unwrap()
}

fn pump(a: &mut JingleSession, b: &mut JingleSession) {
    let now = Instant::now();
    loop {
        let mut moved = false;
        while let Some(o) = a.poll_transmit() {
            assert!(b.handle_iq(now, wire(&o, A)));
            moved = true;
        }
        while let Some(o) = b.poll_transmit() {
            assert!(a.handle_iq(now, wire(&o, B)));
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

fn events(s: &mut JingleSession) -> Vec<JingleEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn cand(cid: &str, owner: &str, addr: SocketAddr) -> Candidate {
    Candidate {
        cid: cid.into(),
        host: addr.ip().to_string(),
        jid: Jid::new(owner).unwrap(),
        port: addr.port(),
        priority: priority(CandidateType::Direct, DIRECT_LOCAL_PREF),
        kind: CandidateType::Direct,
    }
}

fn s5b(payload: S5bPayload) -> Transport {
    Transport::S5b(S5bTransport {
        sid: TSID.into(),
        dstaddr: None,
        payload,
    })
}

fn data(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand_chacha::ChaCha8Rng::seed_from_u64(7).fill_bytes(&mut v);
    v
}

/// A port with nothing listening (bound then dropped).
fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// How the candidates are set up for one run.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Setup {
    /// Both sides offer working direct candidates.
    BothDirect,
    /// Only the initiator's candidate works; the responder reports
    /// candidate-used *before* session-accept (Libervia's order).
    OnlyInitiatorEarly,
    /// Neither works: candidate-error both ways, transport-replace to IBB.
    NoneWork,
}

struct Run {
    received: Vec<u8>,
    a_outcome: Outcome,
}

async fn run(setup: Setup, payload: &[u8]) -> Run {
    let now = Instant::now();
    let la = DirectListener::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let lb = DirectListener::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dst_for_a_cands = dst_addr(TSID, A, B);
    let dst_for_b_cands = dst_addr(TSID, B, A);
    let a_addr = if setup == Setup::NoneWork {
        dead_addr()
    } else {
        la.local_addr()
    };
    let b_addr = if setup == Setup::BothDirect {
        lb.local_addr()
    } else {
        dead_addr()
    };
    let a_cands = vec![cand("a1", A, a_addr)];
    let b_cands = vec![cand("b1", B, b_addr)];
    let a_incoming = la.expect(&dst_for_a_cands).unwrap();
    let b_incoming = lb.expect(&dst_for_b_cands).unwrap();

    // Offer.
    let file = FileDesc {
        name: Some("x.bin".into()),
        size: Some(payload.len() as u64),
        hash_used: vec!["sha-256".into()],
        ..Default::default()
    };
    let mut a = JingleSession::initiate(
        now,
        Config::default(),
        fj(A),
        fj(B),
        "sid".into(),
        vec![file_offer(
            "f",
            file,
            s5b(S5bPayload::Candidates(a_cands.clone())),
        )],
    );
    let mut a_neg = S5bNegotiation::new(true, a_cands);
    let init = a.poll_transmit().unwrap();
    let mut b =
        JingleSession::from_initiate(now, Config::default(), fj(B), &wire(&init, A)).unwrap();
    let ack = b.poll_transmit().unwrap();
    assert!(a.handle_iq(now, wire(&ack, B)));
    let ev = events(&mut b);
    let [JingleEvent::Offered { contents }] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    let Some(Transport::S5b(S5bTransport {
        payload: S5bPayload::Candidates(offered),
        ..
    })) = &contents[0].transport
    else {
        panic!()
    };
    let mut b_neg = S5bNegotiation::new(false, b_cands.clone());
    b_neg.set_remote(offered.clone());

    // The responder may try the initiator's candidates before accepting.
    let mut b_out = None;
    if setup == Setup::OnlyInitiatorEarly {
        b_out = connect_first(&b_neg.connect_order(), &dst_for_a_cands).await;
        let used = b_out.as_ref().map(|(c, _)| c.cid.clone()).unwrap();
        let p = b_neg.local_result(Report::Used(used));
        b.transport_info(now, "f", s5b(p)).unwrap();
        pump(&mut a, &mut b);
        assert!(events(&mut a).is_empty(), "buffered until the accept");
    }
    b.accept(
        now,
        vec![("f".into(), s5b(S5bPayload::Candidates(b_cands)))],
    )
    .unwrap();
    pump(&mut a, &mut b);
    for ev in events(&mut a) {
        match ev {
            JingleEvent::Accepted { contents } => {
                let Some(Transport::S5b(S5bTransport {
                    payload: S5bPayload::Candidates(c),
                    ..
                })) = &contents[0].transport
                else {
                    panic!()
                };
                a_neg.set_remote(c.clone());
            }
            JingleEvent::TransportInfo {
                transport: Transport::S5b(t),
                ..
            } => {
                a_neg.remote_payload(&t.payload);
            }
            other => panic!("{other:?}"),
        }
    }

    // Both sides try the other's candidates (concurrently) and report.
    let a_order = a_neg.connect_order();
    let (a_out, b_out2) = tokio::join!(connect_first(&a_order, &dst_for_b_cands), async {
        if setup == Setup::OnlyInitiatorEarly {
            None
        } else {
            connect_first(&b_neg.connect_order(), &dst_for_a_cands).await
        }
    });
    if setup != Setup::OnlyInitiatorEarly {
        b_out = b_out2;
        let r = b_out
            .as_ref()
            .map_or(Report::Error, |(c, _)| Report::Used(c.cid.clone()));
        let p = b_neg.local_result(r);
        b.transport_info(now, "f", s5b(p)).unwrap();
    }
    let r = a_out
        .as_ref()
        .map_or(Report::Error, |(c, _)| Report::Used(c.cid.clone()));
    let p = a_neg.local_result(r);
    a.transport_info(now, "f", s5b(p)).unwrap();
    pump(&mut a, &mut b);
    for (s, n) in [(&mut a, &mut a_neg), (&mut b, &mut b_neg)] {
        for ev in events(s) {
            let JingleEvent::TransportInfo {
                transport: Transport::S5b(t),
                ..
            } = ev
            else {
                panic!("{ev:?}")
            };
            n.remote_payload(&t.payload);
        }
    }
    let (ao, bo) = (a_neg.outcome().unwrap(), b_neg.outcome().unwrap());
    let received = match (&ao, &bo) {
        (Outcome::Fallback, Outcome::Fallback) => ibb_fallback(&mut a, &mut b, payload),
        _ => {
            let wait = Duration::from_secs(5);
            let mut a_stream = match &ao {
                Outcome::UseOutgoing { .. } => a_out.unwrap().1,
                Outcome::UseIncoming { .. } => tokio::time::timeout(wait, a_incoming)
                    .await
                    .unwrap()
                    .unwrap(),
                Outcome::Fallback => panic!("sides disagree: {ao:?} {bo:?}"),
            };
            let mut b_stream = match &bo {
                Outcome::UseOutgoing { .. } => b_out.unwrap().1,
                Outcome::UseIncoming { .. } => tokio::time::timeout(wait, b_incoming)
                    .await
                    .unwrap()
                    .unwrap(),
                Outcome::Fallback => panic!("sides disagree: {ao:?} {bo:?}"),
            };
            // The same TCP connection at both ends.
            assert_eq!(
                a_stream.local_addr().unwrap(),
                b_stream.peer_addr().unwrap()
            );
            let p = payload.to_vec();
            let w = tokio::spawn(async move {
                a_stream.write_all(&p).await.unwrap();
                a_stream.shutdown().await.unwrap();
            });
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(30), b_stream.read_to_end(&mut got))
                .await
                .unwrap()
                .unwrap();
            w.await.unwrap();
            got
        }
    };

    // Checksum, verification, success.
    let digest = Sha256::digest(payload).to_vec();
    a.checksum(
        now,
        "f",
        FileDesc {
            hashes: vec![Hash {
                algo: "sha-256".into(),
                digest,
            }],
            ..Default::default()
        },
    )
    .unwrap();
    pump(&mut a, &mut b);
    let ev = events(&mut b);
    let [JingleEvent::Checksum { file, .. }] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    assert_eq!(
        file.hash("sha-256").unwrap(),
        Sha256::digest(&received).as_slice()
    );
    b.terminate(now, Reason::new(ReasonKind::Success)).unwrap();
    pump(&mut a, &mut b);
    assert_eq!(
        events(&mut a),
        vec![JingleEvent::Terminated {
            reason: Reason::new(ReasonKind::Success),
            by_peer: true
        }]
    );
    Run {
        received,
        a_outcome: ao,
    }
}

/// Initiator replaces S5B with IBB; the responder accepts; the data moves
/// in IBB IQs through the same in-memory channel.
fn ibb_fallback(a: &mut JingleSession, b: &mut JingleSession, payload: &[u8]) -> Vec<u8> {
    let now = Instant::now();
    let ibb = Transport::Ibb(IbbTransport {
        sid: TSID.into(),
        block_size: 4096,
        stanza: IbbStanza::Iq,
    });
    a.transport_replace(now, "f", ibb).unwrap();
    pump(a, b);
    let ev = events(b);
    let [
        JingleEvent::TransportReplace {
            transport: Transport::Ibb(t),
            ..
        },
    ] = ev.as_slice()
    else {
        panic!("{ev:?}")
    };
    let block = t.block_size.min(2048);
    b.transport_accept(
        now,
        "f",
        Transport::Ibb(IbbTransport {
            block_size: block,
            ..t.clone()
        }),
    )
    .unwrap();
    pump(a, b);
    let ev = events(a);
    let [
        JingleEvent::TransportAccepted {
            transport: Transport::Ibb(t),
            ..
        },
    ] = ev.as_slice()
    else {
        panic!("{ev:?}")
    };
    let mut tx = IbbSender::open(now, Jid::new(B).unwrap(), t.sid.clone(), t.block_size, 4);
    let mut rx = IbbReceiver::new(Instant::now(), Jid::new(A).unwrap(), t.sid.clone(), block);
    let (mut sent, mut got, mut closing) = (0, Vec::new(), false);
    loop {
        while tx.can_send() && sent < payload.len() {
            sent += tx.send_block(now, &payload[sent..]);
        }
        if sent == payload.len() && tx.idle() && !closing {
            tx.close(now);
            closing = true;
        }
        let Some(o) = tx.poll_transmit() else { break };
        assert!(rx.handle_iq(Instant::now(), &wire(&o, A)));
        while let Some(r) = rx.poll_transmit() {
            assert!(tx.handle_iq(&wire(&r, B)));
        }
        while let Some(e) = rx.poll_event() {
            match e {
                IbbEvent::Data(d) => got.extend(d),
                IbbEvent::Opened { block_size } => assert_eq!(block_size, block),
                IbbEvent::Closed => {}
                IbbEvent::Acked(_) | IbbEvent::Failed(_) => panic!("{e:?}"),
            }
        }
    }
    assert!(std::iter::from_fn(|| tx.poll_event()).any(|e| e == IbbEvent::Closed));
    got
}

#[tokio::test]
async fn s5b_direct_both_ways_initiator_choice_wins() {
    let payload = data(4 << 20);
    let r = run(Setup::BothDirect, &payload).await;
    assert_eq!(r.received, payload);
    // Equal priorities: the initiator's choice (its outgoing connection).
    assert!(matches!(r.a_outcome, Outcome::UseOutgoing { ref candidate } if candidate.cid == "b1"));
}

#[tokio::test]
async fn s5b_direct_one_way_with_early_candidate_used() {
    let payload = data(1 << 20);
    let r = run(Setup::OnlyInitiatorEarly, &payload).await;
    assert_eq!(r.received, payload);
    assert!(matches!(r.a_outcome, Outcome::UseIncoming { ref candidate } if candidate.cid == "a1"));
}

#[tokio::test]
async fn s5b_failure_falls_back_to_ibb() {
    let payload = data(300_000);
    let r = run(Setup::NoneWork, &payload).await;
    assert_eq!(r.received, payload);
    assert_eq!(r.a_outcome, Outcome::Fallback);
}

#[tokio::test]
async fn socks5_listener_refuses_unknown_address() {
    let l = DirectListener::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let _rx = l.expect(&bytestreams::dst_addr("s", A, B)).unwrap();
    let r = socks5::connect(l.local_addr(), &bytestreams::dst_addr("other", A, B)).await;
    assert!(matches!(r, Err(socks5::Socks5Error::Refused(1))), "{r:?}");
    // A non-SOCKS client is dropped without a hang.
    let mut s = tokio::net::TcpStream::connect(l.local_addr())
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    // The timeout's unwrap asserts the listener closed the connection
    // (EOF or reset) instead of leaving it hanging; nothing was answered.
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(buf.is_empty());
}
