//! IPv6 link-local paths (issue 17 item 11). A remote candidate parsed from
//! XML has no scope (`fe80::b`), while every datagram from it arrives from
//! `fe80::b%<interface>`: the agent must compare addresses with their scope,
//! taking the local socket's interface for a candidate that has none, or the
//! answers to its checks are discarded ("response from the wrong address")
//! and no link-local pair ever becomes writable.
//!
//! The first test runs two sans-IO agents on virtual link-local addresses;
//! the second runs two real [`IceChannel`]s in two network namespaces made
//! by the test (one per thread, `unshare(CLONE_NEWNET)`), joined only by a
//! veth pair that carries nothing but IPv6 link-local addresses. The
//! namespaces, and the veth pair with them, vanish when their threads end,
//! whether the test passes, fails or panics: nothing is left on the host.
//! Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and `ip` (iproute2).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use gshare::ice::{
    AddRemote, Candidate, CandidateType, GatherConfig, IceAgent, IceChannel, IceConfig, Received,
};
use gshare::session::stanza::{CandidateNs, candidate_to_element, parse_candidate};
use minidom::Element;

/// A candidate as the peer receives it: written to XML and parsed back, so
/// the scope of a link-local address is lost as on the wire.
fn over_the_wire(c: &Candidate) -> Candidate {
    let xml = String::from(&candidate_to_element(c, CandidateNs::P2p));
    let el: Element = xml.parse().unwrap();
    parse_candidate(&el).unwrap().expect("a usable candidate")
}

fn ll(last: u16, scope: u32) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, last),
        5000 + last,
        0,
        scope,
    ))
}

fn is_link_local(a: &SocketAddr) -> bool {
    matches!(a, SocketAddr::V6(v6) if v6.ip().segments()[0] & 0xffc0 == 0xfe80)
}

/// Two agents on two hosts of one link: A's interface is index 2, B's is
/// index 3. A datagram arrives from the sender's address with the
/// receiver's interface as scope, as `recvfrom` reports it.
#[test]
fn sans_io_agents_connect_over_link_local_addresses() {
    let t0 = Instant::now();
    let (a_addr, b_addr) = (ll(0xa, 2), ll(0xb, 3));
    let mut a = IceAgent::new(IceConfig::new("private-1", 1), t0);
    let mut b = IceAgent::new(IceConfig::new("private-1", 2), t0);
    let ca = a.make_local_candidate(a_addr, CandidateType::Local);
    let cb = b.make_local_candidate(b_addr, CandidateType::Local);
    a.add_local_candidate(0, ca.clone());
    b.add_local_candidate(0, cb.clone());
    let (ca, cb) = (over_the_wire(&ca), over_the_wire(&cb));
    assert_eq!(
        ca.address,
        "[fe80::a]:5010".parse::<SocketAddr>().unwrap(),
        "the wire form carries no scope"
    );
    assert_eq!(a.add_remote_candidate(t0, cb), AddRemote::Added);
    assert_eq!(b.add_remote_candidate(t0, ca), AddRemote::Added);

    let seen_from = |sender: SocketAddr, receiver: SocketAddr| match (sender, receiver) {
        (SocketAddr::V6(mut s), SocketAddr::V6(r)) => {
            s.set_scope_id(r.scope_id());
            SocketAddr::V6(s)
        }
        _ => unreachable!(),
    };
    let mut now = t0;
    let mut checks_to_unscoped = 0;
    for _ in 0..400 {
        for turn in 0..2 {
            let (from, to, from_addr, to_addr) = if turn == 0 {
                (&mut a, &mut b, a_addr, b_addr)
            } else {
                (&mut b, &mut a, b_addr, a_addr)
            };
            from.handle_timeout(now);
            while let Some(tx) = from.poll_transmit(now) {
                // Checks and answers go out on the sending socket's link.
                checks_to_unscoped +=
                    usize::from(from_addr_scope(tx.destination) != from_addr_scope(from_addr));
                assert_eq!(tx.destination.ip(), to_addr.ip());
                let r = to.handle_datagram(now, 0, seen_from(from_addr, to_addr), &tx.payload);
                assert_eq!(r, Received::Stun);
            }
        }
        if a.is_writable() && b.is_writable() && a.selected().is_some() && b.selected().is_some() {
            break;
        }
        now += Duration::from_millis(10);
    }
    assert!(a.is_writable(), "A never got an answer it accepted");
    assert!(b.is_writable(), "B never got an answer it accepted");
    // The signalled pair itself became valid: no peer-reflexive copy of the
    // peer's candidate (`fe80::…%if`) was needed to get there.
    for agent in [&a, &b] {
        assert_eq!(agent.remote_candidate_count(), 1);
        assert_eq!(agent.pair_count(), 1);
    }
    assert_eq!(
        checks_to_unscoped, 0,
        "datagrams must go out on the local socket's link"
    );
    let (_, to_b) = a.selected().unwrap();
    assert_eq!(to_b, ll(0xb, 2), "A sends to fe80::b on its own link");
    // Data from the peer's link-local address is handed up.
    assert_eq!(
        a.handle_datagram(now, 0, seen_from(b_addr, a_addr), b"\0\0data"),
        Received::Data
    );
    // The same address seen on another link is another host: no data.
    assert_eq!(
        a.handle_datagram(now, 0, ll(0xb, 9), b"\0\0data"),
        Received::Dropped
    );
}

/// The case seen against gabble: our socket is bound to a routable IPv6
/// address (no scope), the peer signals a link-local candidate; the kernel
/// routes our check out of interface 4 and the answer comes back from
/// `fe80::b%4`. With no scope known on our side, the address and port
/// decide, and the pair becomes writable.
#[test]
fn link_local_candidate_paired_with_a_routable_socket_becomes_writable() {
    let t0 = Instant::now();
    let ours: SocketAddr = "[fd00::1]:4000".parse().unwrap();
    let mut a = IceAgent::new(IceConfig::new("private-1", 3), t0);
    let mut b = IceAgent::new(IceConfig::new("private-1", 4), t0);
    let ca = a.make_local_candidate(ours, CandidateType::Local);
    let cb = b.make_local_candidate(ll(0xb, 7), CandidateType::Local);
    a.add_local_candidate(0, ca);
    a.add_remote_candidate(t0, over_the_wire(&cb));
    a.handle_timeout(t0);
    let check = a.poll_transmit(t0).expect("a check");
    assert_eq!(
        check.destination,
        "[fe80::b]:5011".parse::<SocketAddr>().unwrap()
    );
    // B answers (its agent learns nothing from it: we only need the bytes).
    b.add_local_candidate(0, cb);
    let ca = a.local_candidates().next().unwrap().clone();
    b.add_remote_candidate(t0, over_the_wire(&ca));
    assert_eq!(
        b.handle_datagram(t0, 0, ours, &check.payload),
        Received::Stun
    );
    let answer = b.poll_transmit(t0).expect("an answer");
    assert_eq!(answer.destination, ours);
    let from_if4 = ll(0xb, 4);
    assert_eq!(
        a.handle_datagram(t0, 0, from_if4, &answer.payload),
        Received::Stun
    );
    assert!(a.is_writable(), "the answer from fe80::b%4 was discarded");
    assert_eq!(a.pair_count(), 1);
}

fn from_addr_scope(a: SocketAddr) -> u32 {
    match a {
        SocketAddr::V6(v6) => v6.scope_id(),
        SocketAddr::V4(_) => 0,
    }
}

/// Log lines of `gshare::ice`, for asserting on what an agent did.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    /// The process-wide capture (`gshare::ice` at TRACE, with thread
    /// names), installed as the global subscriber on first use. Global, not
    /// per thread: tracing caches per call site whether anyone listens, so a
    /// thread-scoped subscriber misses events whose call sites another test
    /// thread reached first.
    fn global() -> &'static Log {
        static LOG: OnceLock<Log> = OnceLock::new();
        LOG.get_or_init(|| {
            let log = Log::default();
            let writer = log.clone();
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("gshare::ice=trace"))
                .with_writer(move || writer.clone())
                .with_thread_names(true)
                .with_ansi(false)
                .init();
            log
        })
    }

    /// The lines logged by the thread called `thread`.
    fn of_thread(&self, thread: &str) -> String {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        let tag = format!(" {thread} ");
        text.lines()
            .filter(|l| l.contains(&tag))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

/// Runs `ip ARGS` in the calling thread's network namespace.
fn ip(args: &str) {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("running ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Moves the calling thread into a new, empty network namespace. It lives
/// as long as this thread and the sockets opened in it.
fn enter_new_netns() {
    // SAFETY: unshare only changes this thread's namespaces.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        r,
        0,
        "unshare(CLONE_NEWNET) failed: {} (this test needs root)",
        std::io::Error::last_os_error()
    );
    ip("link set lo up");
}

/// Name of host A's thread, which tags its log lines.
const HOST_A: &str = "linklocal-host-a";

const A_IP: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xa);
const B_IP: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xb);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One host: gathers on its link-local address only, sends its candidates
/// as XML, takes the peer's, and connects.
async fn host(
    ip: Ipv6Addr,
    to_peer: mpsc::Sender<String>,
    from_peer: &mpsc::Receiver<String>,
) -> IceChannel {
    let mut chan = IceChannel::gather(GatherConfig {
        name: "private-1".to_owned(),
        bind: Some(IpAddr::V6(ip)),
        stun: Vec::new(),
    })
    .await
    .unwrap();
    let ours = chan.local_candidates();
    assert_eq!(ours.len(), 1);
    assert!(is_link_local(&ours[0].address));
    assert_ne!(
        from_addr_scope(ours[0].address),
        0,
        "bound on the interface that has the address"
    );
    for c in &ours {
        to_peer
            .send(String::from(&candidate_to_element(c, CandidateNs::P2p)))
            .unwrap();
    }
    let xml = from_peer.recv_timeout(Duration::from_secs(10)).unwrap();
    let theirs = parse_candidate(&xml.parse::<Element>().unwrap())
        .unwrap()
        .unwrap();
    assert!(is_link_local(&theirs.address));
    chan.add_remote_candidate(theirs);
    chan
}

#[test]
fn ice_channels_connect_over_a_link_local_only_veth_pair() {
    let log = Log::global();
    let (tid_tx, tid_rx) = mpsc::channel::<libc::pid_t>();
    let (link_tx, link_rx) = mpsc::channel::<()>();
    let (a_to_b, b_from_a) = mpsc::channel::<String>();
    let (b_to_a, a_from_b) = mpsc::channel::<String>();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();

    // Host B: its namespace gets the veth end `gsb` from host A.
    let b = std::thread::spawn(move || {
        enter_new_netns();
        // SAFETY: gettid has no preconditions.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        link_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        ip("link set gsb up");
        ip(&format!("-6 addr add {B_IP}/64 dev gsb nodad"));
        runtime().block_on(async move {
            let mut chan = host(B_IP, b_to_a, &b_from_a).await;
            chan.connected(Duration::from_secs(10)).await.unwrap();
            let mut buf = vec![0u8; 2048];
            for _ in 0..3 {
                let n = tokio::time::timeout(Duration::from_secs(10), chan.recv(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                chan.send(&buf[..n]).await.unwrap();
            }
            // Keep answering checks until A has its echoes.
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                tokio::select! {
                    _ = &mut done_rx => {}
                    _ = chan.recv(&mut buf) => panic!("nothing more was expected from A"),
                }
            })
            .await;
            chan.selected().unwrap()
        })
    });

    // Host A, on this test's own thread so a failure here is the test's.
    let a = std::thread::Builder::new()
        .name(HOST_A.into())
        .spawn(move || {
            enter_new_netns();
            let tid_b = tid_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            ip(&format!(
                "link add gsa type veth peer name gsb netns {tid_b}"
            ));
            ip("link set gsa up");
            ip(&format!("-6 addr add {A_IP}/64 dev gsa nodad"));
            // Nothing routable in this namespace: only ::1 and link-local.
            let routable = gshare::ice::driver::interface_addresses().unwrap();
            assert!(routable.is_empty(), "unexpected addresses {routable:?}");
            link_tx.send(()).unwrap();
            let out = runtime().block_on(async move {
                let mut chan = host(A_IP, a_to_b, &a_from_b).await;
                chan.connected(Duration::from_secs(10)).await.unwrap();
                let (local, remote) = chan.selected().unwrap();
                assert!(chan.max_datagram_size() <= 1400);
                let mut buf = vec![0u8; 2048];
                for m in [&b"\0\0hello"[..], &[7u8; 1200][..], &b"\0\0bye"[..]] {
                    chan.send(m).await.unwrap();
                    let n = tokio::time::timeout(Duration::from_secs(10), chan.recv(&mut buf))
                        .await
                        .expect("echo over the link-local pair")
                        .unwrap();
                    assert_eq!(&buf[..n], m);
                }
                let _ = done_tx.send(());
                (local, remote)
            });
            (out, log.of_thread(HOST_A))
        })
        .unwrap();

    let ((a_local, a_remote), a_log) = a.join().unwrap();
    let (b_local, b_remote) = b.join().unwrap();
    assert_eq!(a_local.ip(), IpAddr::V6(A_IP));
    assert_eq!(a_remote.ip(), IpAddr::V6(B_IP));
    assert_eq!(b_remote.ip(), IpAddr::V6(A_IP));
    assert_eq!(b_local.ip(), IpAddr::V6(B_IP));
    for a in [a_local, a_remote, b_local, b_remote] {
        assert_ne!(from_addr_scope(a), 0, "{a} carries its interface");
    }
    // A's checks to the signalled fe80::b were answered and accepted; the
    // pair did not have to be rebuilt from B's checks (peer-reflexive).
    assert!(a_log.contains("pair writable"), "{a_log}");
    for bad in ["response from the wrong address", "peer-reflexive"] {
        assert!(!a_log.contains(bad), "A logged {bad:?}:\n{a_log}");
    }
}
