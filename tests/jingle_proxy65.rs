//! Jingle over a real Prosody: two gshare accounts signal XEP-0166 over
//! XMPP, discover the server's XEP-0065 proxy (`mod_proxy65`), and move a
//! file through it: the responder connects to the initiator's proxy
//! candidate and reports `candidate-used`; the initiator (which offered
//! it) connects, activates the stream at the proxy and sends
//! `<activated/>`; then data, checksum and `success`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/prosody.rs"]
mod prosody;

use std::time::{Duration, Instant};

use gshare::bytestreams::proxy::{self, StreamHost};
use gshare::bytestreams::s5b::{Outcome, Report, S5bNegotiation, connect_first, priority};
use gshare::bytestreams::{dst_addr, socks5};
use gshare::jingle::codec::NS_JINGLE;
use gshare::jingle::{
    Candidate, CandidateType, Config, FileDesc, Hash, JingleEvent, JingleSession, Reason,
    ReasonKind, S5bPayload, S5bTransport, Transport, file_offer,
};
use gshare::session::envelope::IqIn;
use gshare::xmpp::{Account, ConnectOptions, Incoming, IqRequest, Xmpp};
use jid::{FullJid, Jid};
use minidom::Element;
use prosody::{Options, Prosody};
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use xmpp_parsers::iq::Iq;

const TSID: &str = "proxy-tsid";

fn account(p: &Prosody, user: &str, pw: &str) -> Account {
    Account {
        jid: Prosody::jid(user).parse().unwrap(),
        password: pw.into(),
        resource: None,
        server: Some(p.server()),
        ca_file: Some(p.cert()),
    }
}

/// One end: its XMPP connection and (once made) its Jingle session.
struct End {
    xmpp: Xmpp,
    rx: mpsc::Receiver<Incoming>,
    session: Option<JingleSession>,
}

impl End {
    async fn connect(p: &Prosody, user: &str, pw: &str) -> End {
        let opts = ConnectOptions {
            forward_namespaces: vec![NS_JINGLE],
            ..ConnectOptions::default()
        };
        let (xmpp, rx) = Xmpp::connect(&account(p, user, pw), opts)
            .await
            .expect("login");
        End {
            xmpp,
            rx,
            session: None,
        }
    }

    fn jid(&self) -> FullJid {
        self.xmpp.jid().clone()
    }

    async fn flush(&mut self) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        while let Some(out) = s.poll_transmit() {
            self.xmpp
                .send(Iq::try_from(out.to_element(None)).unwrap())
                .await
                .unwrap();
        }
    }

    /// The next incoming IQ, as the session layer reads it.
    async fn next_iq(&mut self) -> IqIn {
        loop {
            let item = tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
                .await
                .expect("an IQ in time")
                .unwrap();
            if let Incoming::Iq(iq) = item {
                let el = Element::from(*iq);
                return IqIn::from_element(&el).expect("an IQ with from, id and type");
            }
        }
    }

    /// Sends what is queued, then feeds incoming IQs until an event.
    async fn next_event(&mut self) -> JingleEvent {
        loop {
            self.flush().await;
            if let Some(ev) = self.session.as_mut().unwrap().poll_event() {
                return ev;
            }
            let iq = self.next_iq().await;
            assert!(self.session.as_mut().unwrap().handle_iq(Instant::now(), iq));
        }
    }

    async fn streamhosts(&self) -> Vec<StreamHost> {
        let q = self
            .xmpp
            .iq(
                Some(Jid::new("proxy.localhost").unwrap()),
                IqRequest::Get(proxy::discovery_query()),
                Duration::from_secs(5),
            )
            .await
            .expect("proxy discovery")
            .expect("a query");
        proxy::parse_streamhosts(&q)
    }
}

fn s5b(payload: S5bPayload) -> Transport {
    Transport::S5b(S5bTransport {
        sid: TSID.into(),
        dstaddr: None,
        payload,
    })
}

#[tokio::test]
async fn s5b_through_prosody_proxy65() {
    let p = Prosody::start_with(
        &[("alice", "a1ice"), ("bob", "b0b")],
        Options {
            proxy65: true,
            ..Options::default()
        },
    );
    let mut a = End::connect(&p, "alice", "a1ice").await;
    let mut b = End::connect(&p, "bob", "b0b").await;
    let (aj, bj) = (a.jid(), b.jid());

    // The initiator offers only its proxy candidate (as when it has no
    // reachable address).
    let hosts = a.streamhosts().await;
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(hosts[0].addr.port(), p.proxy65_port.unwrap());
    let pc = Candidate {
        cid: "p1".into(),
        host: hosts[0].addr.ip().to_string(),
        jid: hosts[0].jid.clone(),
        port: hosts[0].addr.port(),
        priority: priority(CandidateType::Proxy, 0),
        kind: CandidateType::Proxy,
    };
    let mut payload = vec![0u8; 2 << 20];
    rand_chacha::ChaCha8Rng::seed_from_u64(3).fill_bytes(&mut payload);
    let file = FileDesc {
        name: Some("p.bin".into()),
        size: Some(payload.len() as u64),
        hash_used: vec!["sha-256".into()],
        ..Default::default()
    };
    let now = Instant::now();
    a.session = Some(JingleSession::initiate(
        now,
        Config::default(),
        aj.clone(),
        bj.clone(),
        "proxy-sid".into(),
        vec![file_offer(
            "f",
            file,
            s5b(S5bPayload::Candidates(vec![pc.clone()])),
        )],
    ));
    let mut a_neg = S5bNegotiation::new(true, vec![pc.clone()]);
    a.flush().await;

    // Responder: the offer arrives over XMPP.
    let init = b.next_iq().await;
    b.session =
        Some(JingleSession::from_initiate(now, Config::default(), bj.clone(), &init).unwrap());
    let JingleEvent::Offered { contents } = b.next_event().await else {
        panic!()
    };
    let Some(Transport::S5b(S5bTransport {
        payload: S5bPayload::Candidates(offered),
        ..
    })) = &contents[0].transport
    else {
        panic!()
    };
    let mut b_neg = S5bNegotiation::new(false, vec![]);
    b_neg.set_remote(offered.clone());
    // Connect to the initiator's (proxy) candidate: DST.ADDR of an
    // initiator's candidate is SHA-1(sid + initiator + responder).
    let dst = dst_addr(TSID, &aj.to_string(), &bj.to_string());
    let (used, mut b_stream) = connect_first(&b_neg.connect_order(), &dst)
        .await
        .expect("the proxy accepts the target");
    let bs = b.session.as_mut().unwrap();
    bs.accept(now, vec![("f".into(), s5b(S5bPayload::Candidates(vec![])))])
        .unwrap();
    let p_used = b_neg.local_result(Report::Used(used.cid.clone()));
    bs.transport_info(now, "f", s5b(p_used)).unwrap();
    b.flush().await;

    // Initiator: accept (no candidates to try), then the candidate-used.
    let JingleEvent::Accepted { .. } = a.next_event().await else {
        panic!()
    };
    let p_err = a_neg.local_result(Report::Error);
    a.session
        .as_mut()
        .unwrap()
        .transport_info(now, "f", s5b(p_err))
        .unwrap();
    let JingleEvent::TransportInfo {
        transport: Transport::S5b(t),
        ..
    } = a.next_event().await
    else {
        panic!()
    };
    a_neg.remote_payload(&t.payload);
    let outcome = a_neg.outcome().unwrap();
    assert!(outcome.we_activate(), "{outcome:?}");
    // Connect to our own proxy candidate, activate, tell the peer.
    let mut a_stream = socks5::connect(hosts[0].addr, &dst)
        .await
        .expect("the proxy accepts the initiator");
    a.xmpp
        .iq(
            Some(hosts[0].jid.clone()),
            IqRequest::Set(proxy::activate_query(TSID, &Jid::from(bj.clone()))),
            Duration::from_secs(5),
        )
        .await
        .expect("activation");
    a.session
        .as_mut()
        .unwrap()
        .transport_info(now, "f", s5b(S5bPayload::Activated("p1".into())))
        .unwrap();
    a.flush().await;

    // Responder: our candidate-error from the initiator, then activated.
    let mut activated = false;
    while !activated {
        match b.next_event().await {
            JingleEvent::TransportInfo {
                transport: Transport::S5b(t),
                ..
            } => {
                activated = matches!(&t.payload, S5bPayload::Activated(c) if c == "p1");
                b_neg.remote_payload(&t.payload);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        b_neg.outcome(),
        Some(Outcome::UseOutgoing { candidate: pc })
    );

    let started = Instant::now();
    let to_send = payload.clone();
    let w = tokio::spawn(async move {
        a_stream.write_all(&to_send).await.unwrap();
        a_stream.shutdown().await.unwrap();
        a_stream
    });
    let mut got = Vec::with_capacity(payload.len());
    tokio::time::timeout(Duration::from_secs(60), b_stream.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    let elapsed = started.elapsed();
    drop(w.await.unwrap());
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "the data differs");
    eprintln!("2 MiB through proxy65 in {elapsed:?}");

    // Checksum over XMPP, verified, success.
    let digest = Sha256::digest(&payload).to_vec();
    a.session
        .as_mut()
        .unwrap()
        .checksum(
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
    a.flush().await;
    let JingleEvent::Checksum { file, .. } = b.next_event().await else {
        panic!()
    };
    assert_eq!(
        file.hash("sha-256").unwrap(),
        Sha256::digest(&got).as_slice()
    );
    b.session
        .as_mut()
        .unwrap()
        .terminate(now, Reason::new(ReasonKind::Success))
        .unwrap();
    b.flush().await;
    // The initiator's events: results are consumed silently; the terminate arrives.
    assert_eq!(
        a.next_event().await,
        JingleEvent::Terminated {
            reason: Reason::new(ReasonKind::Success),
            by_peer: true
        }
    );
    a.flush().await;
    a.xmpp.close().await;
    b.xmpp.close().await;
}
