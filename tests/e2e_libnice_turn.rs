//! gshare relayed ↔ the libnice seed peer (issue 15): gshare runs with the
//! hidden `--relay-only` and a coturn on loopback, so the only candidate it
//! announces is its TURN relay (`type="relay"`, an ordinary Google-dialect
//! candidate, docs/protocol.md §B) and every datagram of the pair goes
//! through coturn. The seed peer (tests/support/seed.rs: the test's own
//! seed-shaped session XMPP, and a reliable libnice agent in Google mode
//! carrying PseudoTCP and the §D HTTP, tests/support/nice_peer.c) adds that
//! candidate and sends its checks to the relayed address; gshare's relay
//! holds a permission for libnice's host address (loopback, allowed for a
//! loopback coturn).
//!
//! (a) `gshare --relay-only send` → seed peer (libnice GETs the file).
//! (b) seed peer → `gshare --relay-only receive --auto-accept --once`.
//!
//! Each checks the file by SHA-256, gshare's exit code and libnice's, that
//! gshare's debug log says the selected pair went `via="relay"` from its
//! relayed address, that libnice's selected pair has that relayed address
//! as remote, and that coturn's log counts the bytes it relayed.
//!
//! Prosody, libnice and coturn are required: without them the tests fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/coturn.rs"]
mod coturn;
#[path = "support/files.rs"]
mod files;
#[path = "support/prosody.rs"]
mod prosody;
#[path = "support/seed.rs"]
mod seed;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coturn::{Auth, Coturn};
use files::{sha256_file, write_random};
use prosody::Prosody;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seed::*;
use support::nice::{NiceOptions, NicePeer, Serve, parse_http_report};
use tokio_xmpp::parsers::jid::{BareJid, FullJid, Jid};

const SIZE: u64 = 4 << 20;
const TURN_USER: (&str, &str) = ("alice", "s3cret");
/// The whole transfer through the relay (debug build, shared machine).
const TRANSFER: Duration = Duration::from_secs(90);

/// A gshare command relaying through `turn` only, with a debug log.
fn relayed_gshare(p: &Prosody, who: (&str, &str), turn: &Coturn) -> std::process::Command {
    let mut cmd = p.gshare(who.0, who.1);
    cmd.env("RUST_LOG", "gshare=debug")
        .env("NO_COLOR", "1")
        .env("GSHARE_TURN_PASSWORD", TURN_USER.1)
        .arg("--relay-only")
        .args(["--turn", &turn.addr.to_string(), "--turn-user", TURN_USER.0]);
    cmd
}

/// Relayed addresses gshare's log reports (`TURN allocation … relayed=…`).
fn relayed(log: &str) -> Vec<SocketAddr> {
    log.lines()
        .filter(|l| l.contains("TURN allocation"))
        .filter_map(|l| l.split("relayed=").nth(1))
        .filter_map(|r| r.split_whitespace().next())
        .map(|r| r.trim_matches('"').parse().unwrap())
        .collect()
}

/// Checks a `CANDIDATE` line gshare sent is its relay, and returns its address.
fn relay_candidate(line: &str) -> SocketAddr {
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f.len(), 6, "{line}");
    assert_eq!(
        f[5], "relay",
        "--relay-only announced a non-relay candidate: {line}"
    );
    format!("{}:{}", f[1], f[2]).parse().unwrap()
}

/// gshare's log: exactly one allocation, its relayed address the one
/// announced, the selected pair through it (`via="relay"`).
fn check_gshare_log(log: &str, announced: &[SocketAddr]) -> SocketAddr {
    let relays = relayed(log);
    assert_eq!(relays.len(), 1, "gshare allocated no relay: {log}");
    assert!(
        !announced.is_empty() && announced.iter().all(|a| *a == relays[0]),
        "announced {announced:?}, allocated {relays:?}"
    );
    let selected: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ICE selected pair"))
        .collect();
    assert!(
        !selected.is_empty(),
        "no selected pair in gshare's log: {log}"
    );
    assert!(
        selected.iter().all(|l| l.contains("via=\"relay\"")),
        "a pair not through the relay: {selected:#?}"
    );
    for l in &selected {
        println!("gshare: {}", l.trim());
    }
    relays[0]
}

/// libnice's `CONNECTED <local-ip> <local-port> <remote-ip> <remote-port>`:
/// its remote must be gshare's relayed address.
fn check_libnice_pair(nice: &NicePeer, relay: SocketAddr) {
    let connected = nice.seen("CONNECTED ");
    assert!(!connected.is_empty(), "{:#?}", nice.log);
    for line in connected {
        println!("nice_peer: {line}");
        let f: Vec<&str> = line.split(' ').collect();
        let remote: SocketAddr = format!("{}:{}", f[3], f[4]).parse().unwrap();
        assert_eq!(
            remote, relay,
            "libnice's pair is not the relayed address: {line}"
        );
    }
}

/// coturn's log (`-v`): the sum of `rb=` (bytes received from its client,
/// gshare) and of `peer usage … rb=` (from peers, libnice) over its usage
/// lines, which count per reporting interval while an allocation lives and
/// the rest when it ends (gshare releases its allocation on exit). Read
/// until `done` holds or for 5 s.
fn coturn_relayed_bytes(turn: &Coturn, done: impl Fn(u64, u64) -> bool) -> (u64, u64, String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(turn.dir().join("turn.log")).unwrap_or_default();
        let sum = |peer: bool| -> u64 {
            log.lines()
                .filter(|l| l.contains("usage:") && l.contains("peer usage:") == peer)
                .filter_map(|l| l.split(" rb=").nth(1))
                .filter_map(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum()
        };
        let (client, peer) = (sum(false), sum(true));
        if done(client, peer) || Instant::now() > deadline {
            for l in log.lines().filter(|l| l.contains("usage:")) {
                println!("coturn: {l}");
            }
            return (client, peer, log);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------
// (a) gshare --relay-only send → seed peer

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_gshare_sends_to_the_libnice_seed_peer() {
    const NAME: &str = "relayed.bin";
    let started = Instant::now();
    // -v: coturn logs its usage lines (bytes relayed).
    let turn = Coturn::start(Auth::Users(&[TURN_USER]), &["-v"]);
    let p = Prosody::start(&[ROMEO, JULIET]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(NAME);
    write_random(&file, SIZE, 0x7e1a);
    let file_sha = sha256_file(&file);

    let mut seed = SeedPeer::login(&p, JULIET, "pcp").await;
    let mut cmd = relayed_gshare(&p, ROMEO, &turn);
    cmd.args(["--json", "send", "--bind", "127.0.0.1"])
        .arg(&file)
        .arg(Prosody::jid(JULIET.0));
    let gshare = Gshare::spawn(cmd);

    let (from, initiate) = seed.next_session().await;
    assert_eq!(action(&initiate), "initiate", "{}", String::from(&initiate));
    let romeo: FullJid = from.try_into_full().expect("initiate from a full JID");
    let sid = initiate.attr("id").expect("session id").to_string();
    let http = initiate
        .get_child("description", NS_SHARE)
        .and_then(|d| d.get_child("protocol", NS_SHARE))
        .and_then(|p| p.get_child("http", NS_SHARE))
        .expect("<protocol><http>");
    let source_path = http
        .children()
        .find(|u| u.attr("name") == Some("source-path"))
        .map(|u| u.text())
        .expect("source-path");

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
    let mut nice = NicePeer::spawn(&NiceOptions {
        reliable: true,
        controlling: true,
        get: vec![format!("{source_path}{NAME}")],
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

    // gshare's relay candidate to libnice, libnice's host candidates to
    // gshare (its relay then holds a permission for them).
    let mut announced = Vec::new();
    let (_, ti) = seed.next_session().await;
    assert_eq!(action(&ti), "transport-info", "{}", String::from(&ti));
    for line in gshare_candidates(&ti, channel) {
        announced.push(relay_candidate(&line));
        nice.send_line(&line).await;
    }
    for c in nice.candidates.clone() {
        seed.set(
            &romeo,
            &transport_info(&sid, &initiator, channel, &c, false),
        )
        .await;
    }

    tokio::time::timeout(TRANSFER, async {
        loop {
            tokio::select! {
                inc = seed.incoming.recv() => {
                    let Some((_, s)) = seed.handle(inc).await else { continue };
                    match action(&s) {
                        "transport-info" => {
                            for line in gshare_candidates(&s, channel) {
                                announced.push(relay_candidate(&line));
                                nice.send_line(&line).await;
                            }
                        }
                        other => panic!("unexpected {other} from gshare: {}", String::from(&s)),
                    }
                }
                _ = nice.expect("HTTP-DONE", TRANSFER) => break,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("HTTP did not finish; nice_peer said {:#?}", nice.log));
    let bodies = nice.seen("HTTP-BODY ");
    assert_eq!(bodies.len(), 1, "{:#?}", nice.log);
    let (status, report) = parse_http_report(bodies[0]);
    assert_eq!(status, 200, "{:#?}", nice.log);
    assert_eq!(report.bytes, SIZE);
    assert_eq!(report.sha256, file_sha, "libnice received a corrupt file");
    println!(
        "(a) gshare -> coturn -> libnice: {SIZE} bytes in {:.2} s = {:.1} MB/s",
        report.seconds,
        SIZE as f64 / report.seconds / 1e6
    );

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
    let relay = check_gshare_log(&stderr, &announced);
    check_libnice_pair(&nice, relay);
    assert_eq!(nice.quit_code().await, Some(0), "nice_peer's exit code");
    let (from_clients, from_peers, log) =
        coturn_relayed_bytes(&turn, |client, peer| client >= SIZE && peer > 0);
    println!("(a) coturn: rb={from_clients} from gshare, peer rb={from_peers} from libnice");
    assert!(
        from_clients >= SIZE && from_peers > 0,
        "coturn did not relay the file: {log}"
    );
    println!("(a) took {:.1} s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------
// (b) seed peer → gshare --relay-only receive

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libnice_seed_peer_sends_to_relayed_gshare() {
    const NAME: &str = "relayed back.bin";
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    // -v: coturn logs its usage lines (bytes relayed).
    let turn = Coturn::start(Auth::Users(&[TURN_USER]), &["-v"]);
    let p = Prosody::start(&[ROMEO, JULIET]);
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("payload.bin");
    write_random(&file, SIZE, 0xb0a7);
    let file_sha = sha256_file(&file);
    let out = tempfile::tempdir().unwrap();

    let mut cmd = relayed_gshare(&p, JULIET, &turn);
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
    gshare.wait_for("\"ready\"").await;

    let mut seed = SeedPeer::login(&p, ROMEO, "pcp").await;
    let romeo = seed.jid();
    let juliet_bare = BareJid::new(&Prosody::jid(JULIET.0)).unwrap();
    seed.xmpp.announce_to(&juliet_bare).await.unwrap();
    let juliet = seed
        .xmpp
        .resolve_share_resource(&juliet_bare, STEP)
        .await
        .expect("gshare receive advertises share-v1");

    let source_path = format!("/temporary/{}/", temp_component(&mut rng));
    let preview_path = format!("/temporary/{}/", temp_component(&mut rng));
    let sid = format!("purple{:08x}", rng.random::<u32>());
    let initiator = romeo.to_string();
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

    seed.set(
        &juliet,
        &initiate_file(&sid, &initiator, NAME, SIZE, &source_path, &preview_path),
    )
    .await;
    // transport-accept, accept, info channel.
    let mut channel = None;
    while channel.is_none() {
        let (from, s) = seed.next_session().await;
        assert_eq!(from, Jid::from(juliet.clone()));
        if action(&s) == "info" {
            channel = s
                .get_child("channel", NS_SHARE)
                .and_then(|c| c.attr("name"))
                .map(str::to_string);
        }
    }
    let channel = channel.unwrap();
    for c in nice.candidates.clone() {
        seed.set(
            &juliet,
            &transport_info(&sid, &initiator, &channel, &c, true),
        )
        .await;
    }

    let mut announced = Vec::new();
    let mut served = None;
    let mut complete = false;
    let mut terminated = false;
    tokio::time::timeout(TRANSFER, async {
        while served.is_none() || !terminated {
            tokio::select! {
                inc = seed.incoming.recv() => {
                    let Some((_, s)) = seed.handle(inc).await else { continue };
                    match action(&s) {
                        "transport-info" => {
                            for line in gshare_candidates(&s, &channel) {
                                announced.push(relay_candidate(&line));
                                nice.send_line(&line).await;
                            }
                        }
                        "info" if s.get_child("complete", NS_SHARE).is_some() => complete = true,
                        "terminate" => {
                            assert!(complete, "terminate without complete");
                            terminated = true;
                        }
                        other => panic!("unexpected {other} from gshare: {}", String::from(&s)),
                    }
                }
                line = nice.expect("HTTP-SERVED", TRANSFER), if served.is_none() => {
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
    let (status, report) = parse_http_report(served.as_deref().unwrap_or_default());
    assert_eq!(status, 200, "{:#?}", nice.log);
    assert_eq!(
        (report.bytes, report.sha256.as_str()),
        (SIZE, file_sha.as_str())
    );

    let (code, stdout, stderr) = gshare.finish().await;
    assert_eq!(
        code,
        Some(0),
        "gshare receive failed: {stderr}\n{stdout:#?}"
    );
    assert_eq!(
        sha256_file(&out.path().join(NAME)),
        file_sha,
        "saved file differs"
    );
    let relay = check_gshare_log(&stderr, &announced);
    check_libnice_pair(&nice, relay);
    assert_eq!(nice.quit_code().await, Some(0), "nice_peer's exit code");
    let (from_clients, from_peers, log) =
        coturn_relayed_bytes(&turn, |client, peer| peer >= SIZE && client > 0);
    println!("(b) coturn: rb={from_clients} from gshare, peer rb={from_peers} from libnice");
    assert!(
        from_peers >= SIZE && from_clients > 0,
        "coturn did not relay the file: {log}"
    );
    println!("(b) took {:.1} s", started.elapsed().as_secs_f64());
}
