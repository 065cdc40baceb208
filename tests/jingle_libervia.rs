//! Interop: Libervia (libervia-backend + libervia-cli, headless, all state
//! in a temp dir, PB bridge so no D-Bus) sends a small file over Jingle
//! File Transfer to a gshare test harness that answers as the responder
//! with the `crate::jingle` machine and `crate::bytestreams` (S5B on
//! loopback, or IBB after Libervia's transport-replace). The received
//! bytes and Libervia's checksum (its base64-of-hex form) are checked.
//! Jingle as a whole is planned in docs/protocol.md §H.4.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/libervia.rs"]
mod libervia;
#[path = "support/prosody.rs"]
mod prosody;

use std::process::Stdio;
use std::time::{Duration, Instant};

use gshare::bytestreams::ibb::{IbbEvent, IbbReceiver, NS_IBB};
use gshare::bytestreams::s5b::{
    DIRECT_LOCAL_PREF, Outcome, Report, S5bNegotiation, connect_first, priority,
};
use gshare::bytestreams::{dst_addr, socks5::DirectListener};
use gshare::jingle::codec::NS_JINGLE;
use gshare::jingle::{
    Candidate, CandidateType, Config, JingleEvent, JingleSession, Reason, ReasonKind, S5bPayload,
    S5bTransport, Transport,
};
use gshare::session::envelope::{IqIn, IqPayload};
use gshare::xmpp::{Account, ConnectOptions, Incoming, Xmpp};
use jid::Jid;
use libervia::Libervia;
use minidom::Element;
use prosody::Prosody;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use xmpp_parsers::iq::Iq;

const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";

fn disco_answer(get: &Element) -> Element {
    let mut q = Element::builder("query", NS_DISCO_INFO);
    if let Some(node) = get.attr("node") {
        q = q.attr(minidom::rxml::xml_ncname!("node").into(), node);
    }
    q = q.append(
        Element::builder("identity", NS_DISCO_INFO)
            .attr(minidom::rxml::xml_ncname!("category").into(), "client")
            .attr(minidom::rxml::xml_ncname!("type").into(), "pc")
            .build(),
    );
    for f in [
        NS_DISCO_INFO,
        NS_JINGLE,
        "urn:xmpp:jingle:apps:file-transfer:5",
        "urn:xmpp:jingle:transports:s5b:1",
        "urn:xmpp:jingle:transports:ibb:1",
        NS_IBB,
        "http://jabber.org/protocol/bytestreams",
        "urn:xmpp:hashes:2",
        "urn:xmpp:hash-function-text-names:sha-256",
    ] {
        q = q.append(
            Element::builder("feature", NS_DISCO_INFO)
                .attr(minidom::rxml::xml_ncname!("var").into(), f)
                .build(),
        );
    }
    q.build()
}

/// S5B: we try Libervia's loopback candidates and offer our own.
#[tokio::test]
async fn libervia_sends_small_file_to_gshare_over_s5b() {
    let (used, _) = receive_from_libervia(Mode::Direct).await;
    assert!(matches!(used, Used::S5b(_)), "{used:?}");
}

/// Proxy: the server runs `mod_proxy65`; we offer nothing and use only
/// Libervia's proxy candidate. Stock Libervia fails to activate its own
/// proxy candidate, sends `<proxy-error/>` and replaces the transport with
/// IBB; a Libervia that activates works over the
/// proxy. Either way the file must arrive intact.
#[tokio::test]
async fn libervia_proxy_candidate_then_proxy_error_or_activation() {
    let (used, proxy_error) = receive_from_libervia(Mode::LiberviaProxy).await;
    // IBB here means the proxy failed on Libervia's side: it said so first.
    assert_eq!(used == Used::Ibb, proxy_error, "{used:?}");
    assert!(
        used == Used::Ibb
            || matches!(&used, Used::S5b(Outcome::UseOutgoing { candidate }) if candidate.kind == CandidateType::Proxy),
        "{used:?}"
    );
    eprintln!("Libervia proxy candidate: {used:?}");
}

/// IBB: we offer no candidate and report candidate-error; Libervia
/// replaces the transport with IBB.
#[tokio::test]
async fn libervia_falls_back_to_ibb_on_candidate_error() {
    assert_eq!(receive_from_libervia(Mode::NoCandidates).await.0, Used::Ibb);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Try Libervia's loopback direct candidates, offer ours.
    Direct,
    /// Offer none, try none.
    NoCandidates,
    /// A server proxy exists; offer none, try only Libervia's proxy one.
    LiberviaProxy,
}

#[derive(Debug, PartialEq)]
enum Used {
    S5b(Outcome),
    Ibb,
}

/// Returns the transport used and whether Libervia sent `<proxy-error/>`.
async fn receive_from_libervia(mode: Mode) -> (Used, bool) {
    let p = Prosody::start_with(
        &[("alice", "a1ice"), ("bob", "b0b")],
        prosody::Options {
            proxy65: mode == Mode::LiberviaProxy,
            ..Default::default()
        },
    );
    let lib = Libervia::start(&p.cert());
    let lport = p.port.to_string();
    lib.cli(&[
        "profile",
        "create",
        "alice",
        "-j",
        "alice@localhost",
        "-x",
        "a1ice",
    ]);
    lib.cli(&["profile", "connect", "-p", "alice", "--start-session"]);
    lib.cli(&[
        "param",
        "set",
        "-p",
        "alice",
        "Connection",
        "Force server",
        "127.0.0.1",
    ]);
    lib.cli(&[
        "param",
        "set",
        "-p",
        "alice",
        "Connection",
        "Force port",
        &lport,
    ]);
    lib.cli(&[
        "param",
        "set",
        "-p",
        "alice",
        "General",
        "allow_get_ip",
        "false",
    ]);
    lib.cli(&["profile", "connect", "-p", "alice", "-c"]);

    let opts = ConnectOptions {
        forward_namespaces: vec![NS_JINGLE, NS_IBB, NS_DISCO_INFO],
        ..ConnectOptions::default()
    };
    let account = Account {
        jid: "bob@localhost".parse().unwrap(),
        password: "b0b".into(),
        resource: None,
        server: Some(p.server()),
        ca_file: Some(p.cert()),
    };
    let (xmpp, mut rx) = Xmpp::connect(&account, opts).await.expect("login");
    let bj = xmpp.jid().clone();

    let payload: Vec<u8> = (0..150_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = lib.dir.path().join("small.bin");
    std::fs::write(&file, &payload).unwrap();
    let mut sender = lib
        .cmd("/usr/bin/libervia-cli")
        .args([
            "file",
            "send",
            "-p",
            "alice",
            file.to_str().unwrap(),
            &bj.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let send = |xmpp: &Xmpp, out: gshare::session::envelope::IqOut| {
        let xmpp = xmpp.clone();
        async move {
            xmpp.send(Iq::try_from(out.to_element(None)).unwrap())
                .await
                .unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut session: Option<JingleSession> = None;
    let listener = DirectListener::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut neg: Option<S5bNegotiation> = None;
    let mut peer = String::new();
    let mut outgoing = None;
    let mut incoming = None;
    let mut ibb: Option<IbbReceiver> = None;
    let mut reader: Option<tokio::task::JoinHandle<Vec<u8>>> = None;
    let mut ibb_data = Vec::new();
    let mut checksum = None;
    let mut outcome = None;
    let mut proxy_error = false;
    let mut done = false;
    while !done {
        // Send what the machines queued.
        if let Some(s) = session.as_mut() {
            while let Some(o) = s.poll_transmit() {
                send(&xmpp, o).await;
            }
        }
        if let Some(r) = ibb.as_mut() {
            while let Some(o) = r.poll_transmit() {
                send(&xmpp, o).await;
            }
            while let Some(e) = r.poll_event() {
                match e {
                    IbbEvent::Data(d) => ibb_data.extend(d),
                    IbbEvent::Opened { .. } | IbbEvent::Closed | IbbEvent::Acked(_) => {}
                    IbbEvent::Failed(why) => panic!("IBB failed: {why}"),
                }
            }
        }
        // Events.
        let mut events = Vec::new();
        if let Some(s) = session.as_mut() {
            events.extend(std::iter::from_fn(|| s.poll_event()));
        }
        let now = Instant::now();
        for ev in events {
            let s = session.as_mut().unwrap();
            match ev {
                JingleEvent::Offered { contents } => {
                    let c = &contents[0];
                    assert_eq!(c.file().unwrap().name.as_deref(), Some("small.bin"));
                    assert_eq!(c.file().unwrap().size, Some(payload.len() as u64));
                    let Some(Transport::S5b(t)) = &c.transport else {
                        panic!("{c:?}")
                    };
                    let tsid = t.sid.clone();
                    // Only loopback candidates are tried (tests stay on loopback).
                    let S5bPayload::Candidates(cands) = &t.payload else {
                        panic!()
                    };
                    let lo: Vec<Candidate> = match mode {
                        Mode::NoCandidates => Vec::new(),
                        Mode::Direct => cands
                            .iter()
                            .filter(|c| c.host.starts_with("127.") || c.host == "::1")
                            .cloned()
                            .collect(),
                        Mode::LiberviaProxy => {
                            let v: Vec<Candidate> = cands
                                .iter()
                                .filter(|c| c.kind == CandidateType::Proxy)
                                .cloned()
                                .collect();
                            assert!(
                                !v.is_empty(),
                                "Libervia offered no proxy candidate: {cands:?}"
                            );
                            v
                        }
                    };
                    let ours = if mode != Mode::Direct {
                        Vec::new()
                    } else {
                        vec![Candidate {
                            cid: "g1".into(),
                            host: "127.0.0.1".into(),
                            jid: Jid::from(bj.clone()),
                            port: listener.local_addr().port(),
                            priority: priority(CandidateType::Direct, DIRECT_LOCAL_PREF),
                            kind: CandidateType::Direct,
                        }]
                    };
                    incoming = Some(
                        listener
                            .expect(&dst_addr(&tsid, &bj.to_string(), &peer))
                            .unwrap(),
                    );
                    let mut n = S5bNegotiation::new(false, ours.clone());
                    n.set_remote(lo);
                    let dst = dst_addr(&tsid, &peer, &bj.to_string());
                    outgoing = connect_first(&n.connect_order(), &dst).await;
                    let rep = outgoing
                        .as_ref()
                        .map_or(Report::Error, |(c, _)| Report::Used(c.cid.clone()));
                    let p = n.local_result(rep);
                    let dstaddr = Some(dst_addr(&tsid, &bj.to_string(), &peer));
                    s.accept(
                        now,
                        vec![(
                            c.name.clone(),
                            Transport::S5b(S5bTransport {
                                sid: tsid.clone(),
                                dstaddr,
                                payload: S5bPayload::Candidates(ours),
                            }),
                        )],
                    )
                    .unwrap();
                    s.transport_info(
                        now,
                        &c.name,
                        Transport::S5b(S5bTransport {
                            sid: tsid.clone(),
                            dstaddr: None,
                            payload: p,
                        }),
                    )
                    .unwrap();
                    neg = Some(n);
                }
                JingleEvent::TransportInfo {
                    transport: Transport::S5b(t),
                    ..
                } => {
                    let n = neg.as_mut().unwrap();
                    proxy_error |= t.payload == S5bPayload::ProxyError;
                    n.remote_payload(&t.payload);
                    outcome = n.outcome();
                    match n.outcome() {
                        Some(Outcome::UseOutgoing { .. }) if reader.is_none() => {
                            let (_, mut st) = outgoing.take().unwrap();
                            reader = Some(tokio::spawn(async move {
                                let mut v = Vec::new();
                                st.read_to_end(&mut v).await.unwrap();
                                v
                            }));
                        }
                        Some(Outcome::UseIncoming { .. }) if reader.is_none() => {
                            let rx = incoming.take().unwrap();
                            reader = Some(tokio::spawn(async move {
                                let mut st = tokio::time::timeout(Duration::from_secs(10), rx)
                                    .await
                                    .unwrap()
                                    .unwrap();
                                let mut v = Vec::new();
                                st.read_to_end(&mut v).await.unwrap();
                                v
                            }));
                        }
                        _ => {}
                    }
                }
                JingleEvent::TransportReplace {
                    content,
                    transport: Transport::Ibb(t),
                } => {
                    ibb = Some(IbbReceiver::new(
                        Instant::now(),
                        Jid::new(&peer).unwrap(),
                        t.sid.clone(),
                        t.block_size,
                    ));
                    s.transport_accept(now, &content, Transport::Ibb(t))
                        .unwrap();
                }
                JingleEvent::Checksum { file, .. } => checksum = Some(file),
                JingleEvent::Terminated { reason, .. } => panic!("terminated early: {reason:?}"),
                other => panic!("unexpected {other:?}"),
            }
        }
        if checksum.is_some()
            && (reader.as_ref().is_some_and(|r| r.is_finished()) || ibb_data.len() == payload.len())
        {
            done = true;
            continue;
        }
        // Incoming stanzas.
        assert!(
            Instant::now() < deadline,
            "no transfer in time: {}",
            lib.backend_log()
        );
        let item = match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            Ok(Some(i)) => i,
            Ok(None) => panic!("xmpp closed"),
            Err(_) => continue,
        };
        let Incoming::Iq(iq) = item else { continue };
        let el = Element::from(*iq);
        let Some(iq) = IqIn::from_element(&el) else {
            continue;
        };
        if let IqPayload::Get(q) = &iq.payload
            && q.is("query", NS_DISCO_INFO)
        {
            let reply = Iq::Result {
                from: None,
                to: Some(iq.from.clone()),
                id: iq.id.clone(),
                payload: Some(disco_answer(q)),
            };
            xmpp.send(reply).await.unwrap();
            continue;
        }
        let now = Instant::now();
        if session.is_none() {
            if let IqPayload::Set(j) = &iq.payload
                && j.is("jingle", NS_JINGLE)
            {
                peer = iq.from.to_string();
                session = Some(
                    JingleSession::from_initiate(now, Config::default(), bj.clone(), &iq)
                        .map_err(|e| format!("{e:?}"))
                        .unwrap(),
                );
            }
            continue;
        }
        if let Some(r) = ibb.as_mut()
            && r.handle_iq(Instant::now(), &iq)
        {
            continue;
        }
        session.as_mut().unwrap().handle_iq(now, iq);
    }
    let got = match reader {
        Some(r) if ibb.is_none() => r.await.unwrap(),
        _ => ibb_data,
    };
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "the data differs");
    // Libervia's checksum: base64 of the hex digest, decoded by the codec.
    let file = checksum.unwrap();
    assert_eq!(
        file.hash("sha-256").unwrap(),
        Sha256::digest(&payload).as_slice()
    );
    let s = session.as_mut().unwrap();
    s.terminate(Instant::now(), Reason::new(ReasonKind::Success))
        .unwrap();
    while let Some(o) = s.poll_transmit() {
        send(&xmpp, o).await;
    }
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = sender.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = sender.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "libervia-cli file send did not finish well: {status:?}"
    );
    xmpp.close().await;
    let used = if ibb.is_some() {
        Used::Ibb
    } else {
        Used::S5b(outcome.unwrap())
    };
    (used, proxy_error)
}

/// gshare is the initiator: it offers a file with S5B to Libervia's
/// `file receive`; Libervia's responder may send `candidate-used` before
/// its `session-accept` (buffered by the machine); the data goes over the
/// chosen stream; Libervia ends with `success` after our checksum.
#[tokio::test]
async fn gshare_sends_small_file_to_libervia_over_s5b() {
    send_to_libervia(false).await;
}

/// gshare is the initiator and neither side offers a usable candidate:
/// both report `candidate-error`, gshare sends `transport-replace` to IBB,
/// Libervia accepts, and the file goes through `ibb_writer` (window 4).
#[tokio::test]
async fn gshare_sends_small_file_to_libervia_over_ibb_after_replace() {
    send_to_libervia(true).await;
}

async fn send_to_libervia(ibb: bool) {
    let p = Prosody::start(&[("alice", "a1ice"), ("bob", "b0b")]);
    let lib = Libervia::start(&p.cert());
    let lport = p.port.to_string();
    lib.cli(&[
        "profile",
        "create",
        "alice",
        "-j",
        "alice@localhost",
        "-x",
        "a1ice",
    ]);
    lib.cli(&["profile", "connect", "-p", "alice", "--start-session"]);
    lib.cli(&[
        "param",
        "set",
        "-p",
        "alice",
        "Connection",
        "Force server",
        "127.0.0.1",
    ]);
    lib.cli(&[
        "param",
        "set",
        "-p",
        "alice",
        "Connection",
        "Force port",
        &lport,
    ]);
    lib.cli(&[
        "param",
        "set",
        "-p",
        "alice",
        "General",
        "allow_get_ip",
        "false",
    ]);
    lib.cli(&["profile", "connect", "-p", "alice", "-c"]);
    let info = lib.cli(&["info", "session", "-p", "alice", "--output", "json"]);
    let info: serde_json::Value =
        serde_json::from_slice(&info.stdout).expect("session info as JSON");
    let peer = info["jid"]
        .as_str()
        .expect("jid in session info")
        .to_owned();
    assert!(peer.starts_with("alice@localhost/"), "{peer}");

    let recv_dir = lib.dir.path().join("recv");
    std::fs::create_dir_all(&recv_dir).unwrap();
    let mut receiver = lib
        .cmd("/usr/bin/libervia-cli")
        .args([
            "file",
            "receive",
            "-p",
            "alice",
            "--path",
            recv_dir.to_str().unwrap(),
            "bob@localhost",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Let the CLI register for the backend's actions (about 1 s start-up).
    tokio::time::sleep(Duration::from_secs(3)).await;

    let opts = ConnectOptions {
        forward_namespaces: vec![NS_JINGLE, NS_DISCO_INFO],
        ..ConnectOptions::default()
    };
    let account = Account {
        jid: "bob@localhost".parse().unwrap(),
        password: "b0b".into(),
        resource: None,
        server: Some(p.server()),
        ca_file: Some(p.cert()),
    };
    let (xmpp, mut rx) = Xmpp::connect(&account, opts).await.expect("login");
    let bj = xmpp.jid().clone();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 253) as u8).collect();

    let tsid = "gshare-t1".to_owned();
    let listener = DirectListener::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut ours = vec![Candidate {
        cid: "g1".into(),
        host: "127.0.0.1".into(),
        jid: Jid::from(bj.clone()),
        port: listener.local_addr().port(),
        priority: priority(CandidateType::Direct, DIRECT_LOCAL_PREF),
        kind: CandidateType::Direct,
    }];
    if ibb {
        ours.clear();
    }
    let (ibb_in_tx, ibb_in) = tokio::sync::mpsc::channel::<IqIn>(64);
    let mut ibb_in = Some(ibb_in);
    let (ibb_out, mut ibb_out_rx) =
        tokio::sync::mpsc::channel::<gshare::session::envelope::IqOut>(64);
    {
        let xmpp = xmpp.clone();
        tokio::spawn(async move {
            while let Some(o) = ibb_out_rx.recv().await {
                if xmpp
                    .send(Iq::try_from(o.to_element(None)).unwrap())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }
    let mut replaced = false;
    let mut incoming = Some(
        listener
            .expect(&dst_addr(&tsid, &bj.to_string(), &peer))
            .unwrap(),
    );
    let file = gshare::jingle::FileDesc {
        name: Some("from-gshare.bin".into()),
        size: Some(payload.len() as u64),
        media_type: Some("application/octet-stream".into()),
        hash_used: vec!["sha-256".into()],
        ..Default::default()
    };
    let transport = Transport::S5b(S5bTransport {
        sid: tsid.clone(),
        dstaddr: Some(dst_addr(&tsid, &bj.to_string(), &peer)),
        payload: S5bPayload::Candidates(ours.clone()),
    });
    let peer_full: jid::FullJid = peer.parse().unwrap();
    let mut s = JingleSession::initiate(
        Instant::now(),
        Config::default(),
        bj.clone(),
        peer_full,
        "gshare-s1".into(),
        vec![gshare::jingle::file_offer("f1", file, transport)],
    );
    let mut neg = S5bNegotiation::new(true, ours);
    let mut outgoing = None;
    let mut sent = false;
    let mut writer: Option<tokio::task::JoinHandle<()>> = None;
    let mut ended = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    while ended.is_none() {
        while let Some(o) = s.poll_transmit() {
            xmpp.send(Iq::try_from(o.to_element(None)).unwrap())
                .await
                .unwrap();
        }
        let now = Instant::now();
        while let Some(ev) = s.poll_event() {
            match ev {
                JingleEvent::Accepted { contents } => {
                    let c = &contents[0];
                    if let Some(Transport::S5b(S5bTransport {
                        payload: S5bPayload::Candidates(cands),
                        ..
                    })) = &c.transport
                    {
                        let lo: Vec<Candidate> = cands
                            .iter()
                            .filter(|c| !ibb && (c.host.starts_with("127.") || c.host == "::1"))
                            .cloned()
                            .collect();
                        neg.set_remote(lo);
                    }
                    // DST.ADDR of the responder's candidates: sid + responder + initiator.
                    outgoing = connect_first(
                        &neg.connect_order(),
                        &dst_addr(&tsid, &peer, &bj.to_string()),
                    )
                    .await;
                    let rep = outgoing
                        .as_ref()
                        .map_or(Report::Error, |(c, _)| Report::Used(c.cid.clone()));
                    let pl = neg.local_result(rep);
                    s.transport_info(
                        now,
                        "f1",
                        Transport::S5b(S5bTransport {
                            sid: tsid.clone(),
                            dstaddr: None,
                            payload: pl,
                        }),
                    )
                    .unwrap();
                }
                JingleEvent::TransportInfo {
                    transport: Transport::S5b(t),
                    ..
                } => {
                    neg.remote_payload(&t.payload);
                }
                JingleEvent::Terminated { reason, by_peer } => ended = Some((reason, by_peer)),
                JingleEvent::Received { .. } => {}
                JingleEvent::TransportAccepted {
                    transport: Transport::Ibb(t),
                    ..
                } if ibb && writer.is_none() => {
                    let tx = gshare::bytestreams::ibb::IbbSender::open(
                        now,
                        Jid::new(&peer).unwrap(),
                        t.sid.clone(),
                        t.block_size,
                        4,
                    );
                    let (mut w, task) = gshare::bytestreams::ibb_stream::ibb_writer(
                        tx,
                        ibb_in.take().unwrap(),
                        ibb_out.clone(),
                    );
                    let data = payload.clone();
                    writer = Some(tokio::spawn(async move {
                        use tokio::io::AsyncWriteExt;
                        w.write_all(&data).await.unwrap();
                        w.shutdown().await.unwrap();
                        assert_eq!(task.await.unwrap(), Ok(data.len() as u64));
                    }));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if ibb && !replaced && neg.outcome() == Some(Outcome::Fallback) {
            replaced = true;
            let t = Transport::Ibb(gshare::jingle::IbbTransport {
                sid: tsid.clone(),
                block_size: 4096,
                stanza: gshare::jingle::IbbStanza::Iq,
            });
            s.transport_replace(now, "f1", t).unwrap();
            continue;
        }
        if writer.is_none() && !ibb {
            let stream = match neg.outcome() {
                Some(Outcome::UseOutgoing { .. }) => outgoing.take().map(|(_, st)| st),
                Some(Outcome::UseIncoming { .. }) => {
                    let rx = incoming.take().unwrap();
                    Some(
                        tokio::time::timeout(Duration::from_secs(10), rx)
                            .await
                            .unwrap()
                            .unwrap(),
                    )
                }
                Some(Outcome::Fallback) => panic!("S5B failed with Libervia on loopback"),
                None => None,
            };
            if let Some(mut st) = stream {
                let data = payload.clone();
                writer = Some(tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    st.write_all(&data).await.unwrap();
                    st.shutdown().await.unwrap();
                }));
            }
        }
        if !sent && writer.as_ref().is_some_and(|w| w.is_finished()) {
            sent = true;
            let digest = Sha256::digest(&payload).to_vec();
            let hashes = vec![gshare::jingle::Hash {
                algo: "sha-256".into(),
                digest,
            }];
            s.checksum(
                now,
                "f1",
                gshare::jingle::FileDesc {
                    hashes,
                    ..Default::default()
                },
            )
            .unwrap();
            continue;
        }
        assert!(
            Instant::now() < deadline,
            "no transfer in time: {}",
            lib.backend_log()
        );
        let item = match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            Ok(Some(i)) => i,
            Ok(None) => panic!("xmpp closed"),
            Err(_) => continue,
        };
        let Incoming::Iq(iq) = item else { continue };
        let Some(iq) = IqIn::from_element(&Element::from(*iq)) else {
            continue;
        };
        if let IqPayload::Get(q) = &iq.payload
            && q.is("query", NS_DISCO_INFO)
        {
            let reply = Iq::Result {
                from: None,
                to: Some(iq.from.clone()),
                id: iq.id.clone(),
                payload: Some(disco_answer(q)),
            };
            xmpp.send(reply).await.unwrap();
            continue;
        }
        if iq.id.starts_with("ibb-") {
            ibb_in_tx.send(iq).await.unwrap();
            continue;
        }
        s.handle_iq(Instant::now(), iq);
    }
    assert_eq!(
        ended,
        Some((Reason::new(ReasonKind::Success), true)),
        "{}",
        lib.backend_log()
    );
    let got = std::fs::read(recv_dir.join("from-gshare.bin")).expect("Libervia wrote the file");
    assert!(got == payload, "the data differs");
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = receiver.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = receiver.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "libervia-cli file receive did not finish well: {status:?}"
    );
    xmpp.close().await;
}
