//! `--require-encryption` against a classic peer: the test's own XMPP
//! client speaks the libjingle seed's stanzas (as in
//! tests/e2e_libnice_peer.rs, which covers the plaintext transfers with the
//! libnice data path). The refusal happens in the signalling, before any
//! transport exists, so no byte of the file can move: gshare receive
//! declines the seed's offer, gshare send cancels after the seed's accept,
//! and both exit 8.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/prosody.rs"]
mod prosody;

use std::process::Stdio;
use std::time::Duration;

use gshare::session::NS_SECURE;
use gshare::xmpp::{Account, ConnectOptions, Incoming, IqRequest, Xmpp};
use minidom::Element;
use prosody::Prosody;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::jid::{BareJid, FullJid, Jid};

const ROMEO: (&str, &str) = ("romeo", "r0meo-pw");
const JULIET: (&str, &str) = ("juliet", "jul1et-pw");
const NS_SESSION: &str = "http://www.google.com/session";
const NS_SHARE: &str = "http://www.google.com/session/share";
const NS_P2P: &str = "http://www.google.com/transport/p2p";
const STEP: Duration = Duration::from_secs(20);

/// The test's XMPP client, answering session sets like the seed peer.
struct Seed {
    xmpp: Xmpp,
    incoming: mpsc::Receiver<Incoming>,
}

impl Seed {
    async fn login(p: &Prosody, (user, pw): (&str, &str)) -> Seed {
        let account = Account {
            jid: Prosody::jid(user).parse().unwrap(),
            password: pw.into(),
            resource: Some("pcp".into()),
            server: Some(p.server()),
            ca_file: Some(p.cert()),
        };
        let (xmpp, incoming) = Xmpp::connect(
            &account,
            ConnectOptions {
                share: true,
                forward_namespaces: vec![NS_SESSION],
                ..ConnectOptions::default()
            },
        )
        .await
        .unwrap();
        Seed { xmpp, incoming }
    }

    /// The next session set (acknowledged): (from, `<session>`), or `None`
    /// when nothing came within `wait`.
    async fn next_session(&mut self, wait: Duration) -> Option<(Jid, Element)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let inc = tokio::time::timeout_at(deadline, self.incoming.recv())
                .await
                .ok()?;
            if let Some(Incoming::Iq(iq)) = inc
                && let Iq::Set {
                    from, id, payload, ..
                } = *iq
                && payload.is("session", NS_SESSION)
            {
                let from = from.unwrap();
                let ack = Iq::Result {
                    from: None,
                    to: Some(from.clone()),
                    id,
                    payload: None,
                };
                self.xmpp.send(ack).await.unwrap();
                return Some((from, payload));
            }
        }
    }

    async fn set(&self, to: &Jid, xml: &str) {
        let el: Element = xml.parse().unwrap();
        let reply = self
            .xmpp
            .iq(Some(to.clone()), IqRequest::Set(el), STEP)
            .await
            .unwrap();
        assert!(reply.is_none());
    }
}

fn spawn(cmd: std::process::Command) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn().unwrap()
}

async fn exit_and_stderr(mut child: tokio::process::Child) -> (i32, String) {
    let status = tokio::time::timeout(STEP, child.wait())
        .await
        .expect("gshare did not exit")
        .unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err).await;
    }
    (status.code().unwrap_or(-1), err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_with_require_encryption_declines_a_classic_offer() {
    let p = Prosody::start(&[ROMEO, JULIET]);
    let out = tempfile::tempdir().unwrap();
    let mut cmd = p.gshare(JULIET.0, JULIET.1);
    cmd.args([
        "receive",
        "--auto-accept",
        "--once",
        "--json",
        "--require-encryption",
        "-o",
    ])
    .arg(out.path());
    let mut gshare = spawn(cmd);
    let mut lines = BufReader::new(gshare.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(STEP, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ready.contains("\"ready\""), "{ready}");

    let mut seed = Seed::login(&p, ROMEO).await;
    let juliet_bare = BareJid::new(&Prosody::jid(JULIET.0)).unwrap();
    seed.xmpp.announce_to(&juliet_bare).await.unwrap();
    let juliet: FullJid = seed
        .xmpp
        .resolve_share_resource(&juliet_bare, STEP)
        .await
        .unwrap();
    let romeo = seed.xmpp.jid().to_string();
    // The seed's initiate: no <secure>, as every classic peer.
    seed.set(
        &Jid::from(juliet.clone()),
        &format!(
            r#"<session xmlns="{NS_SESSION}" type="initiate" id="purple1" initiator="{romeo}"><description xmlns="{NS_SHARE}"><manifest><file size="1000"><name>a.bin</name></file></manifest><protocol><http><url name="source-path">/temporary/abc/</url><url name="preview-path">/temporary/def/</url></http></protocol></description><transport xmlns="{NS_P2P}"/></session>"#
        ),
    )
    .await;
    // gshare answers the transport, then rejects; never a channel or a
    // candidate.
    let mut actions = Vec::new();
    while let Some((_, s)) = seed.next_session(Duration::from_secs(3)).await {
        actions.push(s.attr("type").unwrap_or("").to_string());
        if actions.last().map(String::as_str) == Some("reject") {
            break;
        }
    }
    assert_eq!(actions, ["transport-accept", "reject"]);
    let (code, err) = exit_and_stderr(gshare).await;
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("encryption is required"), "{err}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    // Nothing after the reject either.
    assert!(
        seed.next_session(Duration::from_millis(500))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_with_require_encryption_cancels_after_a_classic_accept() {
    let p = Prosody::start(&[ROMEO, JULIET]);
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("a.bin");
    std::fs::write(&file, vec![7u8; 1000]).unwrap();
    let mut seed = Seed::login(&p, JULIET).await;
    let juliet = seed.xmpp.jid().clone();
    let mut cmd = p.gshare(ROMEO.0, ROMEO.1);
    cmd.args(["send", "--require-encryption", "--bind", "127.0.0.1"])
        .arg(&file)
        .arg(juliet.to_string());
    let gshare = spawn(cmd);

    let (from, initiate) = seed.next_session(STEP).await.expect("an initiate");
    assert_eq!(initiate.attr("type"), Some("initiate"));
    // gshare's offer carries its fingerprint in <secure>, which a classic
    // peer skips; our seed answers in the classic LJ04 form without one.
    let desc = initiate.get_child("description", NS_SHARE).unwrap();
    let secure = desc
        .get_child("secure", NS_SECURE)
        .expect("<secure> offered");
    assert!(secure.get_child("fingerprint", NS_SECURE).is_some());
    let sid = initiate.attr("id").unwrap();
    let initiator = initiate.attr("initiator").unwrap();
    seed.set(
        &from,
        &format!(
            r#"<session xmlns="{NS_SESSION}" type="transport-accept" id="{sid}" initiator="{initiator}"><transport xmlns="{NS_P2P}"/></session>"#
        ),
    )
    .await;
    seed.set(
        &from,
        &format!(
            r#"<session xmlns="{NS_SESSION}" type="accept" id="{sid}" initiator="{initiator}"><description xmlns="{NS_SHARE}"><manifest/><protocol><http/></protocol></description></session>"#
        ),
    )
    .await;
    // gshare cancels: a terminate, no candidates.
    let mut actions = Vec::new();
    while let Some((_, s)) = seed.next_session(Duration::from_secs(3)).await {
        actions.push(s.attr("type").unwrap_or("").to_string());
        if actions.last().map(String::as_str) == Some("terminate") {
            break;
        }
    }
    assert_eq!(actions, ["terminate"]);
    let (code, err) = exit_and_stderr(gshare).await;
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("encryption is required"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_offer_gets_the_classic_accept_without_secure() {
    let p = Prosody::start(&[ROMEO, JULIET]);
    let out = tempfile::tempdir().unwrap();
    let mut cmd = p.gshare(JULIET.0, JULIET.1);
    cmd.args(["receive", "--auto-accept", "--once", "--json", "-o"])
        .arg(out.path());
    let mut gshare = spawn(cmd);
    let mut lines = BufReader::new(gshare.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(STEP, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ready.contains("\"ready\""), "{ready}");
    let mut seed = Seed::login(&p, ROMEO).await;
    let juliet_bare = BareJid::new(&Prosody::jid(JULIET.0)).unwrap();
    seed.xmpp.announce_to(&juliet_bare).await.unwrap();
    let juliet: FullJid = seed
        .xmpp
        .resolve_share_resource(&juliet_bare, STEP)
        .await
        .unwrap();
    let romeo = seed.xmpp.jid().to_string();
    let to = Jid::from(juliet.clone());
    seed.set(
        &to,
        &format!(
            r#"<session xmlns="{NS_SESSION}" type="initiate" id="purple2" initiator="{romeo}"><description xmlns="{NS_SHARE}"><manifest><file size="1000"><name>a.bin</name></file></manifest><protocol><http><url name="source-path">/temporary/abc/</url><url name="preview-path">/temporary/def/</url></http></protocol></description><transport xmlns="{NS_P2P}"/></session>"#
        ),
    )
    .await;
    let accept = loop {
        let (_, s) = seed.next_session(STEP).await.expect("an accept");
        if s.attr("type") == Some("accept") {
            break s;
        }
    };
    let desc = accept.get_child("description", NS_SHARE).unwrap();
    // Exactly the LJ04 answer: <manifest/> and <protocol><http/></protocol>.
    let children: Vec<&str> = desc.children().map(|c| c.name()).collect();
    assert_eq!(children, ["manifest", "protocol"], "{}", String::from(desc));
    assert!(String::from(&accept).find(NS_SECURE).is_none());
    // The JSON says it is not encrypted.
    let accepted = loop {
        let l = tokio::time::timeout(STEP, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if l.contains("\"accepted\"") {
            break l;
        }
    };
    let v: serde_json::Value = serde_json::from_str(&accepted).unwrap();
    assert_eq!(v["encrypted"], false, "{v}");
    seed.set(
        &to,
        &format!(
            r#"<session xmlns="{NS_SESSION}" type="terminate" id="purple2" initiator="{romeo}"/>"#
        ),
    )
    .await;
    let (_, err) = exit_and_stderr(gshare).await;
    assert_eq!(err.matches("is not encrypted").count(), 1, "{err}");
}
