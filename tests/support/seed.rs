//! The "seed peer" of `e2e_libnice_peer` and `e2e_libnice_turn`: the test's
//! own XMPP client speaking stanzas shaped exactly like the seed transcript
//! (seeds/000_e03bb81f4e176baf.txt), with helpers to write and read them,
//! and a gshare process with its output collected.
//!
//! Include with `#[path = "support/seed.rs"] mod seed;` next to
//! `mod files;` and `mod prosody;` (it uses `crate::prosody`).
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use gshare::ice::Candidate;
use gshare::xmpp::{Account, ConnectOptions, Incoming, IqRequest, Xmpp};
use minidom::Element;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::jid::{FullJid, Jid};

use crate::prosody::Prosody;

pub const ROMEO: (&str, &str) = ("romeo", "r0meo-pw");
pub const JULIET: (&str, &str) = ("juliet", "jul1et-pw");

pub const NS_SESSION: &str = "http://www.google.com/session";
pub const NS_SHARE: &str = "http://www.google.com/session/share";
pub const NS_P2P: &str = "http://www.google.com/transport/p2p";

/// Every step waits at most this long.
pub const STEP: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// files and names

/// libjingle 0.4 `url_encode` (docs/protocol.md §D.1): `%xx` in lowercase hex
/// for controls, space, `"#$%&+,/:;<=>?@[\]^`{|}` and DEL; letters, digits,
/// `!'()*-._~` and every byte ≥ 0x80 stay raw.
pub fn lj_url_encode(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in name.as_bytes() {
        let raw = b >= 0x80 || b.is_ascii_alphanumeric() || b"!'()*-._~".contains(&b);
        if raw {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02x}").as_bytes());
        }
    }
    out
}

/// Seed-style random path component: 32 lowercase letters and digits.
pub fn temp_component(rng: &mut ChaCha8Rng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..32)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

// ---------------------------------------------------------------------------
// the seed peer's XMPP side

/// The test's own XMPP client, speaking the seed's stanzas.
pub struct SeedPeer {
    pub xmpp: Xmpp,
    pub incoming: mpsc::Receiver<Incoming>,
    /// Every session IQ received: (from, `<session>`), in order.
    pub got: Vec<(Jid, Element)>,
}

impl SeedPeer {
    pub async fn login(p: &Prosody, (user, pw): (&str, &str), resource: &str) -> SeedPeer {
        let account = Account {
            jid: Prosody::jid(user).parse().unwrap(),
            password: pw.into(),
            resource: Some(resource.into()),
            server: Some(p.server()),
            ca_file: Some(p.cert()),
        };
        let (xmpp, incoming) = Xmpp::connect(
            &account,
            ConnectOptions {
                // Presence with <c node=… ext="share-v1"/>; directed
                // presence is answered by the XMPP task.
                share: true,
                forward_namespaces: vec![NS_SESSION],
                ..ConnectOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{user} logs in: {e}"));
        SeedPeer {
            xmpp,
            incoming,
            got: Vec::new(),
        }
    }

    pub fn jid(&self) -> FullJid {
        self.xmpp.jid().clone()
    }

    /// Handles one incoming item: a session set is acknowledged with an
    /// empty result (seed: "The receipt … is acknowledged … by a result
    /// IQ"), recorded and returned.
    pub async fn handle(&mut self, inc: Option<Incoming>) -> Option<(Jid, Element)> {
        match inc {
            Some(Incoming::Iq(iq)) => match *iq {
                Iq::Set {
                    from, id, payload, ..
                } if payload.is("session", NS_SESSION) => {
                    let from = from.expect("session IQ with a from");
                    let ack = Iq::Result {
                        from: None,
                        to: Some(from.clone()),
                        id,
                        payload: None,
                    };
                    self.xmpp.send(ack).await.expect("send result");
                    self.got.push((from.clone(), payload.clone()));
                    Some((from, payload))
                }
                other => panic!("unexpected IQ: {:?}", String::from(&Element::from(other))),
            },
            Some(Incoming::Presence(_)) | Some(Incoming::Message(_)) => None,
            Some(Incoming::Disconnected(e)) => panic!("seed peer lost XMPP: {e}"),
            None => panic!("seed peer's XMPP task stopped"),
        }
    }

    /// The next session IQ (acknowledged).
    pub async fn next_session(&mut self) -> (Jid, Element) {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let inc = tokio::time::timeout_at(deadline, self.incoming.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no session IQ within {STEP:?}; got so far: {:#?}",
                        self.got_actions()
                    )
                });
            if let Some(s) = self.handle(inc).await {
                return s;
            }
        }
    }

    /// Sends a session set given as XML text and requires an empty result.
    pub async fn set(&self, to: &FullJid, session_xml: &str) {
        let el: Element = session_xml
            .parse()
            .unwrap_or_else(|e| panic!("test XML does not parse ({e:?}): {session_xml}"));
        let action = el.attr("type").unwrap_or("?").to_string();
        let reply = self
            .xmpp
            .iq(Some(Jid::from(to.clone())), IqRequest::Set(el), STEP)
            .await
            .unwrap_or_else(|e| panic!("gshare refused our {action}: {e}"));
        assert!(
            reply.is_none(),
            "the result to our {action} carries a payload: {reply:?}"
        );
    }

    pub fn got_actions(&self) -> Vec<String> {
        self.got
            .iter()
            .map(|(_, s)| action(s).to_string())
            .collect()
    }
}

pub fn action(session: &Element) -> &str {
    session.attr("type").unwrap_or("")
}

/// The seed's `<session>` opening tag for an action.
pub fn session_open(action: &str, sid: &str, initiator: &str) -> String {
    format!(
        r#"<session xmlns="{NS_SESSION}" type="{action}" id="{}" initiator="{}">"#,
        xml_escape(sid),
        xml_escape(initiator)
    )
}

/// The seed's `initiate` offering one file (step 1): manifest, HTTP
/// source and preview paths, an empty p2p transport.
pub fn initiate_file(
    sid: &str,
    initiator: &str,
    name: &str,
    size: u64,
    source_path: &str,
    preview_path: &str,
) -> String {
    format!(
        r#"{}<description xmlns="{NS_SHARE}"><manifest><file size="{size}"><name>{}</name></file></manifest><protocol><http><url name="source-path">{source_path}</url><url name="preview-path">{preview_path}</url></http></protocol></description><transport xmlns="{NS_P2P}"/></session>"#,
        session_open("initiate", sid, initiator),
        xml_escape(name)
    )
}

/// The seed's `accept` (step 4): an empty manifest and HTTP protocol.
pub fn accept(sid: &str, initiator: &str) -> String {
    format!(
        r#"{}<description xmlns="{NS_SHARE}"><manifest/><protocol><http/></protocol></description></session>"#,
        session_open("accept", sid, initiator)
    )
}

/// A seed-shaped transport-info with one candidate (step 5). `seed_5a`:
/// the sender's form (`type="host"`, `password=""`); otherwise the
/// receiver's (`type="local"` and a password, which Google mode never uses
/// on the wire).
pub fn transport_info(
    sid: &str,
    initiator: &str,
    channel: &str,
    c: &Candidate,
    seed_5a: bool,
) -> String {
    let (kind, password) = if seed_5a {
        ("host".to_string(), String::new())
    } else {
        let kind = match c.kind.as_str() {
            "local" => "local".to_string(),
            other => other.to_string(),
        };
        (kind, "+9SLmzhJo6nqxYgE".to_string())
    };
    format!(
        r#"{}<transport xmlns="{NS_P2P}"><candidate name="{}" address="{}" port="{}" preference="1" username="{}" protocol="udp" generation="0" password="{}" type="{}" network="0"/></transport></session>"#,
        session_open("transport-info", sid, initiator),
        xml_escape(channel),
        c.address.ip(),
        c.address.port(),
        xml_escape(&c.username),
        xml_escape(&password),
        kind
    )
}

/// `<candidate>`s of a transport-info from gshare, checked to carry all
/// ten attributes (docs/protocol.md §G.3), as nice_peer input lines.
pub fn gshare_candidates(session: &Element, channel: &str) -> Vec<String> {
    let transport = session.get_child("transport", NS_P2P).unwrap_or_else(|| {
        panic!(
            "transport-info without p2p transport: {}",
            String::from(session)
        )
    });
    let mut out = Vec::new();
    for c in transport.children() {
        assert!(c.is("candidate", NS_P2P), "{}", String::from(session));
        for attr in [
            "name",
            "address",
            "port",
            "preference",
            "username",
            "password",
            "protocol",
            "type",
            "generation",
            "network",
        ] {
            assert!(
                c.attr(attr).is_some(),
                "gshare candidate without {attr}: {}",
                String::from(c)
            );
        }
        assert_eq!(c.attr("name"), Some(channel));
        assert_eq!(c.attr("protocol"), Some("udp"));
        let user = c.attr("username").unwrap_or_default();
        assert!(
            user.len() == 16
                && user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'),
            "username {user:?} is not 16 base64 characters"
        );
        let pass = c.attr("password").unwrap_or_default();
        out.push(format!(
            "CANDIDATE {} {} {} {} {}",
            c.attr("address").unwrap_or_default(),
            c.attr("port").unwrap_or_default(),
            user,
            if pass.is_empty() { "-" } else { pass },
            c.attr("type").unwrap_or_default()
        ));
    }
    assert!(!out.is_empty(), "transport-info without candidates");
    out
}

/// A gshare process with its output collected.
pub struct Gshare {
    child: tokio::process::Child,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    stdout_seen: Vec<String>,
    /// stderr, read to the end as it comes (a debug log must not fill the
    /// pipe and stall gshare).
    stderr: tokio::task::JoinHandle<String>,
}

impl Gshare {
    pub fn spawn(cmd: std::process::Command) -> Gshare {
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn gshare");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut err = child.stderr.take().expect("stderr");
        let stderr = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf).await;
            String::from_utf8_lossy(&buf).into_owned()
        });
        Gshare {
            child,
            stdout,
            stdout_seen: Vec::new(),
            stderr,
        }
    }

    /// Waits for a stdout line containing `needle`.
    pub async fn wait_for(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let line = tokio::time::timeout_at(deadline, self.stdout.next_line())
                .await
                .unwrap_or_else(|_| {
                    panic!("gshare never printed {needle}: {:#?}", self.stdout_seen)
                })
                .expect("read gshare stdout")
                .unwrap_or_else(|| {
                    panic!("gshare exited before {needle}: {:#?}", self.stdout_seen)
                });
            self.stdout_seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Waits for exit; returns (code, stdout lines, stderr).
    pub async fn finish(mut self) -> (Option<i32>, Vec<String>, String) {
        let status = tokio::time::timeout(STEP, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("gshare did not exit; stdout {:#?}", self.stdout_seen))
            .expect("wait for gshare");
        while let Ok(Ok(Some(l))) =
            tokio::time::timeout(Duration::from_millis(200), self.stdout.next_line()).await
        {
            self.stdout_seen.push(l);
        }
        let err = tokio::time::timeout(STEP, self.stderr)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        (status.code(), self.stdout_seen, err)
    }
}
