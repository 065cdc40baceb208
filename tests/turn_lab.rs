//! The network-namespace lab of issue 15 (root only): two hosts behind two
//! NATs, one of them symmetric, with coturn on a "public" segment. Direct
//! ICE cannot connect these hosts; with a TURN server the relay carries the
//! checks and the data. Each test creates its own lab and removes it
//! afterwards, also on failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/coturn.rs"]
mod coturn;
#[path = "support/files.rs"]
mod files;
#[path = "support/netns.rs"]
mod netns;
#[path = "support/prosody.rs"]
mod prosody;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use coturn::{Auth, Coturn, in_namespace};
use netns::{Lab, PUB_IP};

/// Binding requests from one fresh socket in namespace `ns` to each
/// server; the mapped addresses the servers saw.
fn mapped(ns: &str, servers: &[SocketAddr]) -> Vec<SocketAddr> {
    use gshare::ice::stun::{ATTR_XOR_MAPPED_ADDRESS, Class, Method, StunBuilder, StunMessage};
    in_namespace(Some(ns), || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let req = StunBuilder::new(Method::Binding, Class::Request, [5; 12]).finish();
        let mut buf = [0u8; 1500];
        servers
            .iter()
            .map(|server| {
                for _ in 0..10 {
                    s.send_to(&req, server).unwrap();
                    if let Ok((n, _)) = s.recv_from(&mut buf) {
                        let m = StunMessage::parse(&buf[..n]).unwrap();
                        return m.xor_address(ATTR_XOR_MAPPED_ADDRESS).unwrap();
                    }
                }
                panic!("no STUN answer from {server} in {ns}");
            })
            .collect()
    })
}

#[test]
fn lab_nats_map_as_designed() {
    let lab = Lab::new();
    let users = [("alice", "s3cret")];
    let one = Coturn::start_at(Some(&lab.ns("pub")), PUB_IP, Auth::Users(&users), &[]);
    let two = Coturn::start_at(Some(&lab.ns("pub")), PUB_IP, Auth::Users(&users), &[]);
    let servers = [one.addr, two.addr];
    // r1: the same public port towards every destination.
    let a = mapped(&lab.ns("h1"), &servers);
    assert_eq!(a[0].ip().to_string(), "203.0.113.11");
    assert_eq!(a[0], a[1], "r1 must map endpoint-independently");
    // r2: symmetric, a new port per destination.
    let b = mapped(&lab.ns("h2"), &servers);
    assert_eq!(b[0].ip().to_string(), "203.0.113.12");
    assert_eq!(b[0].ip(), b[1].ip());
    assert_ne!(b[0].port(), b[1].port(), "r2 must map per destination");
}

/// h1 (behind r1) allocates and permits h2's public IP; a datagram h2
/// sends to the relayed address from any port reaches h1 through its NAT.
#[test]
fn relay_reaches_a_host_behind_the_nat_from_a_permitted_peer() {
    use gshare::turn::{TurnClient, TurnConfig, TurnEvent};
    let lab = Lab::new();
    let users = [("alice", "s3cret")];
    let turn = Coturn::start_at(Some(&lab.ns("pub")), PUB_IP, Auth::Users(&users), &[]);
    let server = turn.addr;
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let h1 = lab.ns("h1");
    let h2 = lab.ns("h2");
    std::thread::scope(|s| {
        s.spawn(move || {
            in_namespace(Some(&h2), move || {
                let relayed = rx.recv().unwrap();
                let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
                for _ in 0..30 {
                    sock.send_to(b"\0\0probe", relayed).unwrap();
                    std::thread::sleep(Duration::from_millis(100));
                    if done_rx.try_recv().is_ok() {
                        break;
                    }
                }
            })
        });
        in_namespace(Some(&h1), move || {
            let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let mut c = TurnClient::new(
                TurnConfig::new(server, "alice", "s3cret"),
                std::time::Instant::now(),
            );
            let mut buf = [0u8; 2048];
            let mut got = None;
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                while let Some(t) = c.poll_transmit() {
                    sock.send_to(&t.contents, t.destination).unwrap();
                }
                while let Some(e) = c.poll_event() {
                    if let TurnEvent::Allocated { relayed, .. } = e {
                        c.allow_peer("203.0.113.12:1".parse().unwrap(), std::time::Instant::now())
                            .unwrap();
                        tx.send(relayed).unwrap();
                    }
                }
                match sock.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        if let Some(d) = c.handle_datagram(&buf[..n], std::time::Instant::now()) {
                            got = Some(d);
                            break;
                        }
                    }
                    Err(_) => c.handle_timeout(std::time::Instant::now()),
                }
            }
            let _ = done_tx.send(());
            let (from, data) = got.expect("nothing relayed");
            // h2's symmetric NAT picked some port of 203.0.113.12: the
            // permission is per IP, as RFC 8656 §9 says.
            assert_eq!(from.ip().to_string(), "203.0.113.12");
            assert_eq!(data, b"\0\0probe");
        });
    });
}

/// What one ICE side in the lab saw.
#[derive(Debug)]
struct Outcome {
    connected: bool,
    relayed: bool,
    echoed: usize,
}

/// Runs one ICE channel inside namespace `ns`: gathers (STUN and maybe
/// TURN on the public segment), swaps candidates with the other side, tries
/// to connect, then pings (`leader`) or echoes five datagrams.
fn ice_side(
    ns: &str,
    stun: SocketAddr,
    turn: Vec<gshare::ice::TurnServer>,
    out: std::sync::mpsc::Sender<Vec<gshare::ice::Candidate>>,
    inp: std::sync::mpsc::Receiver<Vec<gshare::ice::Candidate>>,
    leader: bool,
    timeout: Duration,
) -> Outcome {
    use gshare::ice::{GatherConfig, IceChannel};
    in_namespace(Some(ns), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut config = GatherConfig::new("private-1");
            config.stun = vec![stun];
            let mut ch = IceChannel::gather_with_relays(config, turn).await.unwrap();
            out.send(ch.local_candidates()).unwrap();
            let theirs = inp.recv().unwrap_or_default();
            for c in theirs {
                ch.add_remote_candidate(c);
            }
            if ch.connected(timeout).await.is_err() {
                return Outcome {
                    connected: false,
                    relayed: false,
                    echoed: 0,
                };
            }
            let mut buf = vec![0u8; 65536];
            let mut echoed = 0;
            for i in 0..5u8 {
                if leader {
                    let msg = [0, 0, b'p', i];
                    let mut got = false;
                    for _ in 0..20 {
                        ch.send(&msg).await.unwrap();
                        if let Ok(Ok(n)) =
                            tokio::time::timeout(Duration::from_millis(250), ch.recv(&mut buf))
                                .await
                            && buf[..n] == msg
                        {
                            got = true;
                            break;
                        }
                    }
                    echoed += usize::from(got);
                } else {
                    let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(5), ch.recv(&mut buf)).await
                    else {
                        break;
                    };
                    ch.send(&buf[..n]).await.unwrap();
                    echoed += 1;
                }
            }
            // The leader's last echoes may still be repeated: keep echoing
            // a little so the leader's retries are answered.
            if !leader {
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(500), ch.recv(&mut buf)).await
                {
                    ch.send(&buf[..n]).await.unwrap();
                }
            }
            Outcome {
                connected: true,
                relayed: ch.is_relayed(),
                echoed,
            }
        })
    })
}

fn ice_pair(lab: &Lab, turn: &Coturn, use_turn: bool, timeout: Duration) -> (Outcome, Outcome) {
    let relay = |user: &str| {
        if use_turn {
            vec![gshare::ice::TurnServer {
                server: turn.addr,
                username: user.into(),
                password: "s3cret".into(),
            }]
        } else {
            Vec::new()
        }
    };
    let (tx1, rx2) = std::sync::mpsc::channel();
    let (tx2, rx1) = std::sync::mpsc::channel();
    let (h1, h2) = (lab.ns("h1"), lab.ns("h2"));
    let (t1, t2) = (relay("alice"), relay("bob"));
    std::thread::scope(|s| {
        let a = s.spawn(|| ice_side(&h1, turn.addr, t1, tx1, rx1, true, timeout));
        let b = s.spawn(|| ice_side(&h2, turn.addr, t2, tx2, rx2, false, timeout));
        (a.join().unwrap(), b.join().unwrap())
    })
}

#[test]
fn symmetric_nat_needs_the_relay_and_ice_uses_it() {
    let lab = Lab::new();
    let users = [("alice", "s3cret"), ("bob", "s3cret")];
    let turn = Coturn::start_at(Some(&lab.ns("pub")), PUB_IP, Auth::Users(&users), &[]);
    // Without TURN the hosts cannot reach each other (STUN alone is not
    // enough against a symmetric NAT behind a port-restricted one).
    let (a, b) = ice_pair(&lab, &turn, false, Duration::from_secs(6));
    assert!(!a.connected && !b.connected, "{a:?} {b:?}");
    // With TURN the relay carries checks and data.
    let (a, b) = ice_pair(&lab, &turn, true, Duration::from_secs(15));
    assert!(
        a.connected && b.connected,
        "{a:?} {b:?} {}",
        turn.log_tail()
    );
    assert!(a.relayed || b.relayed, "{a:?} {b:?}");
    assert_eq!(a.echoed, 5, "{a:?}");
}

/// `gshare` as `user`, run inside namespace `short` of the lab.
fn gshare_in(
    lab: &Lab,
    short: &str,
    p: &prosody::Prosody,
    user: (&str, &str),
) -> std::process::Command {
    let mut c = lab.command(short, env!("CARGO_BIN_EXE_gshare"));
    c.env("GSHARE_PASSWORD", user.1)
        .env_remove("GSHARE_CA_FILE")
        .env("XDG_CONFIG_HOME", p.dir().join("no-config"))
        .env("RUST_LOG", "gshare=debug")
        .env("NO_COLOR", "1")
        .arg("--jid")
        .arg(prosody::Prosody::jid(user.0))
        .arg("--server")
        .arg(p.server())
        .arg("--ca-file")
        .arg(p.cert());
    c
}

/// What one whole-tool transfer across the lab gave.
struct Across {
    send_code: Option<i32>,
    recv_code: Option<i32>,
    send_err: String,
    recv_err: String,
    intact: bool,
}

impl Across {
    fn logs(&self) -> String {
        format!("sender: {}\nreceiver: {}", self.send_err, self.recv_err)
    }
}

/// Which path a side's log says ICE selected.
fn via(log: &str) -> Option<&'static str> {
    ["via=\"peer relay\"", "via=\"relay\"", "via=\"direct\""]
        .into_iter()
        .find(|v| log.contains(v))
}

/// Prosody on the public segment, announcing a TURN server at `turn_port`
/// with `secret` (XEP-0215 through `mod_turn_external`).
fn lab_prosody(lab: &Lab, turn_port: u16, secret: &str) -> prosody::Prosody {
    prosody::Prosody::start_with(
        &[ROMEO, JULIET],
        prosody::Options {
            turn_external: Some((PUB_IP.into(), turn_port, secret.into())),
            netns: Some((lab.ns("pub"), PUB_IP.into())),
            ..Default::default()
        },
    )
}

const ROMEO: (&str, &str) = ("romeo", "r0meo-pw");
const JULIET: (&str, &str) = ("juliet", "jul1et-pw");

/// `gshare send` in h1 to `gshare receive --once` in h2, no transport flag
/// (`extra` goes to both), a 4 MiB file.
fn transfer_across(lab: &Lab, p: &prosody::Prosody, extra: &[&str]) -> Across {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("across.bin");
    files::write_random(&file, 4 << 20, 99);
    let out = tempfile::tempdir().unwrap();
    let mut recv = gshare_in(lab, "h2", p, JULIET);
    recv.args(extra)
        .args([
            "receive",
            "--json",
            "--once",
            "--auto-accept",
            "--from",
            "romeo@localhost",
            "-o",
        ])
        .arg(out.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = recv.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let line = rx
            .recv_timeout(ready.saturating_duration_since(std::time::Instant::now()))
            .expect("receiver ready");
        if line.contains("\"ready\"") {
            break;
        }
    }
    let sent = gshare_in(lab, "h1", p, ROMEO)
        .args(extra)
        .args(["send"])
        .arg(&file)
        .arg(prosody::Prosody::jid(JULIET.0))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("receiver hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut recv_err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut recv_err)
        .unwrap();
    let saved = out.path().join("across.bin");
    Across {
        send_code: sent.status.code(),
        recv_code: status.code(),
        send_err: String::from_utf8_lossy(&sent.stderr).into_owned(),
        recv_err,
        intact: saved.exists() && files::sha256_file(&file) == files::sha256_file(&saved),
    }
}

/// The whole tool across the lab: Prosody and coturn on the public
/// segment, the sender behind the cone NAT, the receiver behind the
/// symmetric one; the TURN server comes from Prosody (XEP-0215) and the
/// file arrives through the relay.
#[test]
fn gshare_transfer_across_the_nats_goes_through_the_relay() {
    let lab = Lab::new();
    let secret = "lab-s3cret";
    let turn = Coturn::start_at(Some(&lab.ns("pub")), PUB_IP, Auth::Secret(secret), &[]);
    let p = lab_prosody(&lab, turn.addr.port(), secret);
    let t = transfer_across(&lab, &p, &[]);
    assert_eq!(t.send_code, Some(0), "{}", t.logs());
    assert_eq!(t.recv_code, Some(0), "{}", t.logs());
    assert!(t.intact, "{}", t.logs());
    let relayed = |log: &str| matches!(via(log), Some("via=\"relay\"" | "via=\"peer relay\""));
    assert!(relayed(&t.send_err) && relayed(&t.recv_err), "{}", t.logs());
    drop(p);
}

/// Two cone NATs with a working relay on offer: the server-reflexive pair
/// wins, the relay carries nothing.
#[test]
fn behind_cone_nats_the_direct_pair_wins_over_the_relay() {
    let lab = Lab::cone();
    let secret = "lab-s3cret";
    let turn = Coturn::start_at(Some(&lab.ns("pub")), PUB_IP, Auth::Secret(secret), &[]);
    let p = lab_prosody(&lab, turn.addr.port(), secret);
    let t = transfer_across(&lab, &p, &[]);
    assert_eq!(t.send_code, Some(0), "{}", t.logs());
    assert_eq!(t.recv_code, Some(0), "{}", t.logs());
    assert!(t.intact, "{}", t.logs());
    assert_eq!(via(&t.send_err), Some("via=\"direct\""), "{}", t.logs());
    assert_eq!(via(&t.recv_err), Some("via=\"direct\""), "{}", t.logs());
    // Both sides did allocate (the relay was really on offer).
    assert!(
        t.send_err.contains("TURN allocation") && t.recv_err.contains("TURN allocation"),
        "{}",
        t.logs()
    );
    drop(p);
}

/// A TURN server that rejects the credentials (Prosody hands out ones made
/// with the wrong secret) costs nothing behind cone NATs: the transfer
/// goes direct, and the failure is reported once per side, naming the
/// server.
#[test]
fn a_wrong_turn_secret_behind_cone_nats_is_reported_and_the_transfer_works() {
    let lab = Lab::cone();
    let turn = Coturn::start_at(
        Some(&lab.ns("pub")),
        PUB_IP,
        Auth::Secret("the-real-secret"),
        &[],
    );
    let p = lab_prosody(&lab, turn.addr.port(), "a-wrong-secret");
    let t = transfer_across(&lab, &p, &["-v"]);
    assert_eq!(t.send_code, Some(0), "{}", t.logs());
    assert_eq!(t.recv_code, Some(0), "{}", t.logs());
    assert!(t.intact, "{}", t.logs());
    let server = turn.addr.to_string();
    for log in [&t.send_err, &t.recv_err] {
        let told: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("rejected the credentials"))
            .collect();
        assert_eq!(told.len(), 1, "{}", t.logs());
        assert!(told[0].contains(&server), "{}", t.logs());
    }
    drop(p);
}

/// coturn is gone: behind a symmetric NAT nothing else works, so both sides
/// fail within the session timeout with a clear account of why — the TURN
/// server that did not answer, and no working network path — and nothing
/// is saved.
#[test]
fn a_dead_turn_server_behind_a_symmetric_nat_fails_clearly_in_time() {
    let lab = Lab::new();
    let secret = "lab-s3cret";
    let mut turn = Coturn::start_at(Some(&lab.ns("pub")), PUB_IP, Auth::Secret(secret), &[]);
    let port = turn.addr.port();
    turn.kill();
    let p = lab_prosody(&lab, port, secret);
    let started = std::time::Instant::now();
    let t = transfer_across(&lab, &p, &["--timeout", "15"]);
    assert!(!t.intact, "{}", t.logs());
    assert_ne!(t.send_code, Some(0), "{}", t.logs());
    assert_ne!(t.recv_code, Some(0), "{}", t.logs());
    // Bounded: the session timeout (15 s) plus login and the offer, not
    // an unbounded hang (transfer_across itself gives up after 60 s).
    assert!(started.elapsed() < Duration::from_secs(55), "{}", t.logs());
    // Once per side, naming the server (the 5 s relay wait ends first;
    // the client's own give-up later is only logged under -v).
    for log in [&t.send_err, &t.recv_err] {
        let told: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" WARN ") && l.contains("TURN"))
            .collect();
        assert_eq!(told.len(), 1, "{}", t.logs());
        assert!(
            told[0].contains(&format!("TURN server {PUB_IP}:{port} gave no relay")),
            "{}",
            t.logs()
        );
    }
    let said = format!("{}{}", t.send_err, t.recv_err);
    assert!(
        said.contains("no working network path") || said.contains("ICE failed"),
        "{}",
        t.logs()
    );
    drop(p);
}
