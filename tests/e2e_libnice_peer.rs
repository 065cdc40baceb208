//! gshare against a "seed peer": the test speaks XMPP itself with stanzas
//! shaped exactly like the seed transcript (seeds/000_e03bb81f4e176baf.txt:
//! initiate / transport-accept / accept with an empty manifest and `<http/>`
//! / info `<channel>` / transport-info with one candidate each / info
//! `<complete/>` / terminate, each set answered with an empty result), and a
//! reliable libnice agent in Google mode (tests/support/nice_peer.c) carries
//! the PseudoTCP stream and speaks the §D HTTP in C: the exact §D.1 request
//! as a receiver, `HTTP/1.1 200` without a reason phrase as a sender.
//!
//! (a) `gshare send FILE juliet@localhost` → seed peer as juliet: gshare
//!     must find the peer by its share caps, offer a seed-shaped initiate,
//!     serve the GET (name escaped the libjingle way) and exit 0 after
//!     complete + terminate.
//! (b) seed peer as romeo → `gshare receive --auto-accept --once`: gshare
//!     must answer in the seed's order (transport-accept, accept, info
//!     channel, transport-info), send the §D.1 GET, save the file intact,
//!     send complete then terminate, and exit 0. Run with the initiator as
//!     a full JID (libjingle) and as the seed's bare JID.
//!
//! Prosody and libnice are required: without them the tests fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/files.rs"]
mod files;
#[path = "support/prosody.rs"]
mod prosody;
#[path = "support/seed.rs"]
mod seed;
mod support;

use std::time::{Duration, Instant};

use files::{sha256_file, write_random};
use minidom::Element;
use prosody::Prosody;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seed::*;
use support::nice::{NiceOptions, NicePeer, Serve, parse_http_report};
use tokio_xmpp::parsers::jid::{BareJid, FullJid, Jid};

// ---------------------------------------------------------------------------
// (a) gshare sends to the seed peer

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gshare_send_to_a_seed_peer_over_libnice() {
    const SIZE: u64 = 12 << 20;
    // Space, parentheses and UTF-8: libjingle sends `(`, `)` and UTF-8 raw.
    const NAME: &str = "seed café (1).bin";
    let started = Instant::now();
    let p = Prosody::start(&[ROMEO, JULIET]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(NAME);
    write_random(&file, SIZE, 0x5eed);
    let file_sha = sha256_file(&file);

    let mut seed = SeedPeer::login(&p, JULIET, "pcp").await;
    let mut cmd = p.gshare(ROMEO.0, ROMEO.1);
    cmd.args(["--json", "send", "--bind", "127.0.0.1"])
        .arg(&file)
        .arg(Prosody::jid(JULIET.0));
    let gshare = Gshare::spawn(cmd);

    // 1. initiate, seed-shaped.
    let (from, initiate) = seed.next_session().await;
    assert_eq!(action(&initiate), "initiate", "{}", String::from(&initiate));
    let romeo: FullJid = from
        .clone()
        .try_into_full()
        .expect("initiate from a full JID");
    assert_eq!(
        romeo.to_bare(),
        BareJid::new(&Prosody::jid(ROMEO.0)).unwrap()
    );
    assert_eq!(initiate.attr("initiator"), Some(romeo.as_str()));
    let sid = initiate.attr("id").expect("session id").to_string();
    let desc = initiate
        .get_child("description", NS_SHARE)
        .expect("share description");
    let manifest = desc.get_child("manifest", NS_SHARE).expect("manifest");
    let files: Vec<&Element> = manifest.children().collect();
    assert_eq!(files.len(), 1, "{}", String::from(manifest));
    assert!(files[0].is("file", NS_SHARE));
    assert_eq!(files[0].attr("size"), Some(SIZE.to_string().as_str()));
    assert_eq!(
        files[0].get_child("name", NS_SHARE).map(|n| n.text()),
        Some(NAME.to_string())
    );
    let http = desc
        .get_child("protocol", NS_SHARE)
        .and_then(|p| p.get_child("http", NS_SHARE))
        .expect("<protocol><http>");
    let url = |name: &str| {
        http.children()
            .find(|u| u.is("url", NS_SHARE) && u.attr("name") == Some(name))
            .map(|u| u.text())
            .unwrap_or_else(|| panic!("no {name} url: {}", String::from(http)))
    };
    let source_path = url("source-path");
    let preview_path = url("preview-path");
    for path in [&source_path, &preview_path] {
        assert!(
            path.starts_with("/temporary/") && path.ends_with('/'),
            "{path}"
        );
    }
    assert_ne!(source_path, preview_path);
    let transport = initiate
        .get_child("transport", NS_P2P)
        .expect("p2p transport in the initiate");
    assert_eq!(transport.children().count(), 0);

    // 2.–4. transport-accept, accept, info channel (seed steps 2–4).
    let initiator = romeo.to_string();
    seed.set(
        &romeo,
        &format!(
            r#"{}<transport xmlns="{NS_P2P}"/></session>"#,
            session_open("transport-accept", &sid, &initiator)
        ),
    )
    .await;
    seed.set(&romeo, &accept(&sid, &initiator)).await;
    let channel = "private-1";
    // The libnice side is the HTTP client, GETs exactly as §D.1: first the
    // preview (libjingle asks for one; gshare has none: 404), then the file
    // on the same keep-alive connection.
    let escaped = String::from_utf8(lj_url_encode(NAME)).unwrap();
    let preview_request = format!("{preview_path}{escaped}");
    let file_request = format!("{source_path}{escaped}");
    let mut nice = NicePeer::spawn(&NiceOptions {
        reliable: true,
        controlling: true,
        get: vec![preview_request, file_request],
        host: Some(format!("{romeo}:0")),
        ..Default::default()
    })
    .await;
    seed.set(
        &romeo,
        &format!(
            r#"{}<channel xmlns="{NS_SHARE}" name="{channel}"/></session>"#,
            session_open("info", &sid, &initiator)
        ),
    )
    .await;

    // 5a. The sender's candidates first (seed order); libnice gets them.
    let (_, ti) = seed.next_session().await;
    assert_eq!(action(&ti), "transport-info", "{}", String::from(&ti));
    assert_eq!(ti.attr("id"), Some(sid.as_str()));
    assert_eq!(ti.attr("initiator"), Some(initiator.as_str()));
    let mut fed = 0;
    for line in gshare_candidates(&ti, channel) {
        nice.send_line(&line).await;
        fed += 1;
    }
    // 5b. Ours, one per transport-info.
    for c in nice.candidates.clone() {
        seed.set(
            &romeo,
            &transport_info(&sid, &initiator, channel, &c, false),
        )
        .await;
    }

    // 6./7. libnice GETs the preview and the file (more candidates from
    // gshare, if any, still go to libnice).
    tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            tokio::select! {
                inc = seed.incoming.recv() => {
                    let Some((_, s)) = seed.handle(inc).await else { continue };
                    match action(&s) {
                        "transport-info" => {
                            for line in gshare_candidates(&s, channel) {
                                nice.send_line(&line).await;
                                fed += 1;
                            }
                        }
                        other => panic!("unexpected {other} from gshare: {}", String::from(&s)),
                    }
                }
                _ = nice.expect("HTTP-DONE", Duration::from_secs(40)) => break,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("HTTP did not finish; nice_peer said {:#?}", nice.log));
    assert!(fed > 0, "gshare sent no candidates");
    println!("(a) nice_peer: {:#?}", nice.seen("HTTP-"));
    let bodies = nice.seen("HTTP-BODY ");
    let statuses = nice.seen("HTTP-STATUS ");
    assert_eq!(bodies.len(), 2, "{:#?}", nice.log);
    let (status, preview) = parse_http_report(bodies[0]);
    assert_eq!(
        (status, preview.bytes),
        (404, 0),
        "preview: {:#?}",
        nice.log
    );
    assert!(
        statuses[0].starts_with("HTTP-STATUS HTTP/1.1 404"),
        "{}",
        statuses[0]
    );
    // gabble's 404: Connection: Keep-Alive, Content-Length: 0 (§D.2).
    let first_body = nice
        .log
        .iter()
        .position(|l| l.starts_with("HTTP-BODY "))
        .unwrap_or(0);
    let not_found: Vec<String> = nice.log[..first_body]
        .iter()
        .filter_map(|l| l.strip_prefix("HTTP-HEADER "))
        .map(str::to_ascii_lowercase)
        .collect();
    assert!(
        not_found.iter().any(|h| h == "content-length: 0"),
        "{not_found:?}"
    );
    let (status, report) = parse_http_report(bodies[1]);
    assert_eq!(status, 200, "{:#?}", nice.log);
    assert_eq!(report.bytes, SIZE);
    assert_eq!(report.sha256, file_sha, "libnice received a corrupt file");
    // "HTTP/1.1 200" with or without a reason phrase: libjingle parses
    // `HTTP/%u.%u %u`, gabble checks the prefix "HTTP/1.1 200".
    let status_line = statuses[1].trim_start_matches("HTTP-STATUS ").to_string();
    assert!(
        status_line == "HTTP/1.1 200" || status_line.starts_with("HTTP/1.1 200 "),
        "{status_line}"
    );
    // The file response's headers: after the preview's, which end where
    // the second HTTP-STATUS line is.
    let second = nice
        .log
        .iter()
        .rposition(|l| l.starts_with("HTTP-STATUS "))
        .unwrap_or(0);
    let headers: Vec<String> = nice.log[second..]
        .iter()
        .filter_map(|l| l.strip_prefix("HTTP-HEADER "))
        .map(str::to_ascii_lowercase)
        .collect();
    // gabble's parser wants exactly "Content-Length: " (one space).
    assert!(
        headers.contains(&format!("content-length: {SIZE}")),
        "{headers:?}"
    );
    assert!(
        headers.iter().any(|h| h == "connection: keep-alive"),
        "{headers:?}"
    );
    println!(
        "(a) gshare -> libnice over HTTP: {SIZE} bytes in {:.2} s = {:.1} MB/s; response head {status_line:?} {headers:?}",
        report.seconds,
        SIZE as f64 / report.seconds / 1e6
    );

    // 8./9. complete, then terminate.
    seed.set(
        &romeo,
        &format!(
            r#"{}<complete xmlns="{NS_SHARE}"/></session>"#,
            session_open("info", &sid, &initiator)
        ),
    )
    .await;
    seed.set(
        &romeo,
        &format!("{}</session>", session_open("terminate", &sid, &initiator)),
    )
    .await;
    let (code, stdout, stderr) = gshare.finish().await;
    assert_eq!(code, Some(0), "gshare send failed: {stderr}\n{stdout:#?}");
    assert!(stdout.iter().any(|l| l.contains("\"done\"")), "{stdout:#?}");
    // Nothing from gshare but the initiate and transport-info.
    let actions = seed.got_actions();
    assert!(
        actions
            .iter()
            .all(|a| a == "initiate" || a == "transport-info"),
        "{actions:?}"
    );
    nice.quit().await;
    println!("(a) took {:.1} s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------
// (b) the seed peer sends to gshare receive

async fn seed_peer_sends_to_gshare_receive(bare_initiator: bool) {
    const SIZE: u64 = 12 << 20;
    const NAME: &str = "some file+100%.tar.gz";
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(if bare_initiator { 2 } else { 1 });
    let p = Prosody::start(&[ROMEO, JULIET]);
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("payload.bin");
    write_random(&file, SIZE, 0xfeed);
    let file_sha = sha256_file(&file);
    let out = tempfile::tempdir().unwrap();

    let mut cmd = p.gshare(JULIET.0, JULIET.1);
    cmd.args([
        "receive",
        "--auto-accept",
        "--once",
        "--json",
        "--bind",
        "127.0.0.1",
        "-o",
    ])
    .arg(out.path());
    let mut gshare = Gshare::spawn(cmd);
    let ready = gshare.wait_for("\"ready\"").await;
    let ready: serde_json::Value = serde_json::from_str(&ready).expect("ready is JSON");
    let announced: FullJid = ready["jid"]
        .as_str()
        .expect("jid")
        .parse()
        .expect("full JID");

    let mut seed = SeedPeer::login(&p, ROMEO, "pcp").await;
    let romeo = seed.jid();
    // Find juliet's share resource as libjingle's pcp does: by presence.
    let juliet_bare = BareJid::new(&Prosody::jid(JULIET.0)).unwrap();
    seed.xmpp.announce_to(&juliet_bare).await.unwrap();
    let juliet = seed
        .xmpp
        .resolve_share_resource(&juliet_bare, STEP)
        .await
        .expect("gshare receive advertises share-v1");
    assert_eq!(juliet, announced);

    let source_path = format!("/temporary/{}/", temp_component(&mut rng));
    let preview_path = format!("/temporary/{}/", temp_component(&mut rng));
    let sid = format!("purple{:08x}", rng.random::<u32>());
    let initiator = if bare_initiator {
        romeo.to_bare().to_string()
    } else {
        romeo.to_string()
    };
    let mut nice = NicePeer::spawn(&NiceOptions {
        reliable: true,
        controlling: false,
        serve: Some(Serve {
            file: file.clone(),
            source_path: source_path.clone(),
            name: NAME.into(),
        }),
        ..Default::default()
    })
    .await;

    // 1. initiate, exactly the seed's shape.
    seed.set(
        &juliet,
        &initiate_file(&sid, &initiator, NAME, SIZE, &source_path, &preview_path),
    )
    .await;

    // 2.–5b. from gshare, in the seed's order.
    let check_header = |from: &Jid, s: &Element| {
        assert_eq!(from, &Jid::from(juliet.clone()));
        assert_eq!(s.attr("id"), Some(sid.as_str()), "{}", String::from(s));
        assert_eq!(
            s.attr("initiator"),
            Some(initiator.as_str()),
            "{}",
            String::from(s)
        );
    };
    let (from, ta) = seed.next_session().await;
    check_header(&from, &ta);
    assert_eq!(action(&ta), "transport-accept", "{}", String::from(&ta));
    let t = ta.get_child("transport", NS_P2P).expect("p2p transport");
    assert_eq!(t.children().count(), 0, "transport-accept must be empty");
    assert_eq!(ta.children().count(), 1);

    let (from, accept) = seed.next_session().await;
    check_header(&from, &accept);
    assert_eq!(action(&accept), "accept", "{}", String::from(&accept));
    let desc = accept
        .get_child("description", NS_SHARE)
        .expect("share description in accept");
    let manifest = desc.get_child("manifest", NS_SHARE).expect("<manifest/>");
    assert_eq!(manifest.children().count(), 0, "manifest not empty");
    let http = desc
        .get_child("protocol", NS_SHARE)
        .and_then(|p| p.get_child("http", NS_SHARE))
        .expect("<protocol><http/></protocol>");
    assert_eq!(http.children().count(), 0, "<http/> not empty");

    let (from, info) = seed.next_session().await;
    check_header(&from, &info);
    assert_eq!(action(&info), "info", "{}", String::from(&info));
    let channel = info
        .get_child("channel", NS_SHARE)
        .and_then(|c| c.attr("name"))
        .expect("<channel name=…/>")
        .to_string();
    assert_eq!(channel, "private-1");

    // 5a. Our candidates, one per transport-info, seed form.
    for c in nice.candidates.clone() {
        seed.set(
            &juliet,
            &transport_info(&sid, &initiator, &channel, &c, true),
        )
        .await;
    }

    // 5b./6./7./8./9. gshare's candidates to libnice; libnice serves the
    // GET; gshare sends complete, then terminate. (nice_peer's HTTP-SERVED
    // line and gshare's IQs race to the test: any order between them.)
    let mut fed = 0;
    let mut served = None;
    let mut complete = false;
    let mut terminated = false;
    tokio::time::timeout(Duration::from_secs(40), async {
        while served.is_none() || !terminated {
            tokio::select! {
                inc = seed.incoming.recv() => {
                    let Some((from, s)) = seed.handle(inc).await else { continue };
                    check_header(&from, &s);
                    match action(&s) {
                        "transport-info" => {
                            for line in gshare_candidates(&s, &channel) {
                                nice.send_line(&line).await;
                                fed += 1;
                            }
                        }
                        "info" if s.get_child("complete", NS_SHARE).is_some() => complete = true,
                        "terminate" => {
                            assert!(complete, "terminate without complete");
                            assert_eq!(s.children().count(), 0, "{}", String::from(&s));
                            terminated = true;
                        }
                        other => panic!("unexpected {other} from gshare: {}", String::from(&s)),
                    }
                }
                line = nice.expect("HTTP-SERVED", Duration::from_secs(40)), if served.is_none() => {
                    served = Some(line);
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "transfer did not finish; seed got {:?}; nice_peer said {:#?}",
            seed.got_actions(),
            nice.log
        )
    });
    assert!(fed > 0, "gshare sent no candidates");
    let (status, report) = parse_http_report(served.as_deref().unwrap_or_default());
    assert_eq!(
        status, 200,
        "gshare asked for something else: {:#?}",
        nice.log
    );
    assert_eq!(report.bytes, SIZE);
    assert_eq!(report.sha256, file_sha);

    // The GET, as gshare sent it (§D.1).
    let request = nice.seen("HTTP-REQUEST ");
    assert_eq!(request.len(), 1, "{:#?}", nice.log);
    let target = request[0]
        .strip_prefix("HTTP-REQUEST GET ")
        .and_then(|r| r.strip_suffix(" HTTP/1.1"))
        .unwrap_or_else(|| panic!("{}", request[0]));
    assert!(target.starts_with(&source_path), "{target}");
    let headers: Vec<&str> = nice
        .seen("HTTP-HEADER ")
        .iter()
        .map(|l| l.trim_start_matches("HTTP-HEADER "))
        .collect();
    let expected_headers = [
        format!("Host: {romeo}:0"),
        "Content-Length: 0".to_string(),
        format!("User-Agent: gshare/{}", env!("CARGO_PKG_VERSION")),
        "Connection: Keep-Alive".to_string(),
    ];
    assert_eq!(headers, expected_headers, "request head");
    println!(
        "(b) libnice -> gshare over HTTP: GET {target}; {SIZE} bytes handed to libnice in {:.2} s = {:.1} MB/s",
        report.seconds,
        SIZE as f64 / report.seconds / 1e6
    );

    let (code, stdout, stderr) = gshare.finish().await;
    assert_eq!(
        code,
        Some(0),
        "gshare receive failed: {stderr}\n{stdout:#?}"
    );
    let saved = out.path().join(NAME);
    assert_eq!(sha256_file(&saved), file_sha, "saved file differs");
    let item = stdout
        .iter()
        .find(|l| l.contains("\"item\""))
        .unwrap_or_else(|| panic!("{stdout:#?}"));
    assert!(item.contains(&file_sha), "{item}");
    // A classic sender announces no digest: the event says so (issue 13).
    let item: serde_json::Value = serde_json::from_str(item).expect("item is JSON");
    assert_eq!(item["verified"], false, "{item}");
    assert_eq!(item["resumed_from"], 0, "{item}");
    if let Some(done) = stdout.iter().find(|l| l.contains("\"done\"")) {
        let done: serde_json::Value = serde_json::from_str(done).expect("done is JSON");
        let secs = done["seconds"].as_f64().unwrap_or(f64::NAN);
        println!(
            "(b) gshare receive: {SIZE} bytes in {secs:.2} s from accept to the end = {:.1} MB/s",
            SIZE as f64 / secs / 1e6
        );
    }
    assert_eq!(
        seed.got_actions(),
        ["transport-accept", "accept", "info"]
            .into_iter()
            .chain(std::iter::repeat_n("transport-info", fed_messages(&seed)))
            .chain(["info", "terminate"])
            .collect::<Vec<_>>(),
        "gshare's session messages"
    );
    nice.quit().await;
    println!("(b) took {:.1} s", started.elapsed().as_secs_f64());
}

fn fed_messages(seed: &SeedPeer) -> usize {
    seed.got
        .iter()
        .filter(|(_, s)| action(s) == "transport-info")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_peer_sends_to_gshare_receive_over_libnice() {
    seed_peer_sends_to_gshare_receive(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_peer_with_the_seeds_bare_initiator() {
    // The seed writes initiator="romeo@montague.lit" (bare); libjingle
    // uses the full JID. gshare must key the session on what it was given.
    seed_peer_sends_to_gshare_receive(true).await;
}
