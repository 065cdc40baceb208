//! PseudoTCP interop with libnice (docs/protocol.md §C, §F): a reliable libnice
//! agent in Google mode (`nice_agent_new_reliable`, tests/support/nice_peer.c)
//! and gshare's `IceChannel` + `PseudoTcpStream` exchange 50 MiB each way at
//! the same time over loopback, both hashed with SHA-256.
//!
//! Also checked on the wire (every datagram between the ICE channel and
//! PseudoTCP passes a tap):
//! * who opens: libnice sends a CONNECT from its side as soon as it has a
//!   pair (`00 03 01 <scale> FE 01 00`: window scale and FIN-ACK options);
//!   gshare's active open sends one too, so the connection is a
//!   simultaneous open; a passive gshare answers libnice's CONNECT with its
//!   own and also connects;
//! * gshare never offers option 254 (FIN-ACK) and falls back to the
//!   libnice-compatible mode on its own: `peer_is_gshare() == false`, mss
//!   1284 (MTU 1400), data segments no larger than that.
//!
//! Throughput is printed (MB/s each way; the libnice side's CPU seconds too).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use gshare::ice::{GatherConfig, IceChannel};
use gshare::pseudotcp::segment::{CTL_CONNECT, FLAG_CTL, Header, OPT_FIN_ACK, OPT_WND_SCALE};
use gshare::pseudotcp::{Config, DatagramIo, Open, PseudoTcpStream, State};
use sha2::{Digest, Sha256};
use support::nice::{NiceOptions, NicePeer, TestStream, parse_cpu, parse_report, stream_sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1 << 20;

/// Direction of a datagram as seen from gshare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    In,
    Out,
}

/// What the tap saw: every control segment in order, and the largest
/// payload each way.
#[derive(Debug, Default)]
struct Wire {
    /// (direction, payload) of each CTL segment.
    ctl: Vec<(Dir, Vec<u8>)>,
    max_payload_in: usize,
    max_payload_out: usize,
    datagrams_in: u64,
    datagrams_out: u64,
}

impl Wire {
    fn record(&mut self, dir: Dir, datagram: &[u8]) {
        let Some((h, payload)) = Header::decode(datagram) else {
            return;
        };
        match dir {
            Dir::In => {
                self.datagrams_in += 1;
                self.max_payload_in = self.max_payload_in.max(payload.len());
            }
            Dir::Out => {
                self.datagrams_out += 1;
                self.max_payload_out = self.max_payload_out.max(payload.len());
            }
        }
        if h.flags & FLAG_CTL != 0 {
            self.ctl.push((dir, payload.to_vec()));
        }
    }

    fn connects(&self, dir: Dir) -> Vec<&[u8]> {
        self.ctl
            .iter()
            .filter(|(d, p)| *d == dir && p.first() == Some(&CTL_CONNECT))
            .map(|(_, p)| p.as_slice())
            .collect()
    }
}

/// The ICE channel as PseudoTCP's datagram path (as src/transfer/channel.rs
/// does it), with a tap on every datagram. With `hold`, nothing is sent
/// until the peer's CONNECT has arrived: our CONNECT and libnice's then
/// cross, a simultaneous open on any machine timing.
struct TappedIce {
    ice: IceChannel,
    wire: Arc<Mutex<Wire>>,
    hold: bool,
    send_waker: Option<std::task::Waker>,
}

impl DatagramIo for TappedIce {
    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let start = buf.filled().len();
        let r = self.ice.poll_recv(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let got = &buf.filled()[start..];
            let mut wire = self.wire.lock().unwrap();
            wire.record(Dir::In, got);
            if self.hold && !wire.connects(Dir::In).is_empty() {
                self.hold = false;
                if let Some(w) = self.send_waker.take() {
                    w.wake();
                }
            }
        }
        r
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, datagram: &[u8]) -> Poll<std::io::Result<()>> {
        if self.hold {
            self.send_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let r = self.ice.poll_send(cx, datagram);
        if let Poll::Ready(Ok(())) = &r {
            self.wire.lock().unwrap().record(Dir::Out, datagram);
        }
        r
    }

    fn max_datagram_size(&self) -> usize {
        self.ice.max_datagram_size()
    }
}

/// Parses a CONNECT payload's options (§C.3) into (kind, data) pairs.
fn connect_options(payload: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = payload.get(1..).unwrap_or_default();
    while let Some((&kind, tail)) = rest.split_first() {
        match kind {
            0 => break,
            1 => rest = tail,
            _ => {
                let Some((&len, tail)) = tail.split_first() else {
                    break;
                };
                let len = usize::from(len).min(tail.len());
                out.push((kind, tail[..len].to_vec()));
                rest = &tail[len..];
            }
        }
    }
    out
}

struct Outcome {
    /// gshare's received stream: SHA-256, bytes, seconds first→last byte.
    gshare_received: (String, u64, f64),
    /// gshare's sent stream: SHA-256, seconds for the writes.
    gshare_sent: (String, f64),
    nice_received: support::nice::TransferReport,
    nice_sent: support::nice::TransferReport,
    wire: Wire,
    /// libnice's PseudoTCP state changes (`PTCP State A -> B.` lines).
    nice_states: Vec<String>,
    mss: usize,
    peer_is_gshare: bool,
}

/// Connects gshare to a reliable libnice peer and moves `to_gshare` bytes
/// of stream `NICE_SEED` from libnice and `to_nice` bytes of stream
/// `GSHARE_SEED` from gshare, both at once.
async fn exchange(
    open: Open,
    hold: bool,
    controlling: bool,
    to_gshare: u64,
    to_nice: u64,
) -> Outcome {
    const NICE_SEED: u64 = 7;
    const GSHARE_SEED: u64 = 11;
    let mut outgoing = vec![0u8; to_nice as usize];
    TestStream::new(GSHARE_SEED).fill(&mut outgoing);
    let outgoing_sha = hex::encode(Sha256::digest(&outgoing));
    let mut nice = NicePeer::spawn(&NiceOptions {
        reliable: true,
        controlling,
        send: (to_gshare > 0).then_some(to_gshare),
        recv: (to_nice > 0).then_some(to_nice),
        seed: NICE_SEED,
        ptcp_log: true,
        ..Default::default()
    })
    .await;
    let mut ice = IceChannel::gather(GatherConfig {
        name: "private-1".into(),
        bind: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        stun: Vec::new(),
    })
    .await
    .expect("gather");
    for c in ice.local_candidates() {
        nice.add_remote(&c).await;
    }
    for c in nice.candidates.clone() {
        ice.add_remote_candidate(c);
    }
    ice.connected(Duration::from_secs(10))
        .await
        .expect("ICE connects to libnice");
    let wire = Arc::new(Mutex::new(Wire::default()));
    let io = TappedIce {
        ice,
        wire: wire.clone(),
        hold,
        send_waker: None,
    };
    let stream = PseudoTcpStream::new(io, Config::default(), open);
    tokio::time::timeout(Duration::from_secs(10), stream.established())
        .await
        .expect("PseudoTCP established in time")
        .expect("PseudoTCP established");
    assert_eq!(stream.state(), State::Established);
    let peer_is_gshare = stream.peer_is_gshare();
    let mss = stream.mss();
    nice.expect("WRITABLE", Duration::from_secs(10)).await;

    let (mut rd, mut wr) = tokio::io::split(stream);
    // Bytes are produced before and hashed after the clock runs, so the
    // figures measure the transport, not this (debug-built) test.
    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(to_gshare as usize);
        let mut buf = vec![0u8; 256 * 1024];
        let mut first: Option<Instant> = None;
        while (got.len() as u64) < to_gshare {
            let n = rd.read(&mut buf).await.expect("read from libnice");
            assert!(n > 0, "stream ended after {} bytes", got.len());
            first.get_or_insert_with(Instant::now);
            got.extend_from_slice(&buf[..n]);
        }
        let secs = first.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        let len = got.len() as u64;
        (hex::encode(Sha256::digest(&got)), len, secs, rd)
    });
    let writer = tokio::spawn(async move {
        let t0 = Instant::now();
        for piece in outgoing.chunks(256 * 1024) {
            wr.write_all(piece).await.expect("write to libnice");
        }
        // Waits until libnice acknowledged everything.
        wr.shutdown().await.expect("all data acknowledged");
        (outgoing_sha, t0.elapsed().as_secs_f64(), wr)
    });
    let limit = Duration::from_secs(20 + (to_gshare + to_nice) / MIB);
    let mut nice_received = if to_nice > 0 {
        let mut r = parse_report(&nice.expect("RECEIVED", limit).await);
        r.cpu_seconds = parse_cpu(&nice.expect("CPU", Duration::from_secs(5)).await);
        r
    } else {
        parse_report("RECEIVED SHA256 - BYTES 0 SECONDS 0")
    };
    let (recv_hash, recv_bytes, recv_secs, rd) = tokio::time::timeout(limit, reader)
        .await
        .expect("gshare received everything in time")
        .expect("reader task");
    let (sent_hash, sent_secs, wr) = tokio::time::timeout(limit, writer)
        .await
        .expect("gshare's data acknowledged in time")
        .expect("writer task");
    // libnice prints SENT when its last byte was accepted by
    // nice_agent_send; by now gshare has read all of it.
    let nice_sent = if to_gshare > 0 {
        let line = match nice.log.iter().find(|l| l.starts_with("SENT ")) {
            Some(l) => l.clone(),
            None => nice.expect("SENT", Duration::from_secs(5)).await,
        };
        parse_report(&line)
    } else {
        parse_report("SENT SHA256 - BYTES 0 SECONDS 0")
    };
    if nice_received.cpu_seconds.is_none() {
        nice_received.cpu_seconds = nice.log.iter().rev().find_map(|l| parse_cpu(l));
    }
    let stream = rd.unsplit(wr);
    assert_eq!(stream.state(), State::Established, "still connected");
    let stats = stream.stats();
    println!("{open:?}: gshare PseudoTCP {stats:?}");
    drop(stream);
    let nice_states: Vec<String> = nice.seen("PTCP ").iter().map(|l| l.to_string()).collect();
    nice.quit().await;
    let wire = std::mem::take(&mut *wire.lock().unwrap());
    println!("{open:?}: control segments {:02x?}", wire.ctl);
    println!("libnice: {nice_states:?}");
    Outcome {
        gshare_received: (recv_hash, recv_bytes, recv_secs),
        gshare_sent: (sent_hash, sent_secs),
        nice_received,
        nice_sent,
        wire,
        nice_states,
        mss,
        peer_is_gshare,
    }
}

fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs.max(1e-9) / 1e6
}

/// libnice's CONNECT: control code 0, window scale (kind 3, one byte), and
/// FIN-ACK (kind 254, value 0) when libnice opened before it saw ours
/// (NICE `queue_connect_message`; a CONNECT without 254 turns it off).
fn libnice_connect(wire: &Wire) -> Vec<(u8, Vec<u8>)> {
    let theirs = wire.connects(Dir::In);
    assert_eq!(theirs.len(), 1, "libnice CONNECTs: {:02x?}", wire.ctl);
    let opts = connect_options(theirs[0]);
    assert!(
        opts.iter()
            .any(|(k, v)| *k == OPT_WND_SCALE && v.len() == 1),
        "libnice CONNECT without window scale: {:02x?}",
        theirs[0]
    );
    opts
}

fn offers_fin_ack(opts: &[(u8, Vec<u8>)]) -> bool {
    opts.iter().any(|(k, v)| *k == OPT_FIN_ACK && v == &[0])
}

/// gshare's CONNECT: exactly one (never retransmitted on loopback), window
/// scaling offered, no FIN-ACK, so libnice keeps FIN/RST semantics off
/// (§C.6).
fn assert_gshare_connect(wire: &Wire) {
    let ours = wire.connects(Dir::Out);
    assert_eq!(ours.len(), 1, "gshare CONNECTs: {:02x?}", wire.ctl);
    let opts = connect_options(ours[0]);
    assert!(
        !offers_fin_ack(&opts),
        "gshare offered FIN-ACK: {:02x?}",
        ours[0]
    );
    assert!(
        opts.iter().any(|(k, _)| *k == OPT_WND_SCALE),
        "gshare CONNECT without window scale: {:02x?}",
        ours[0]
    );
}

/// libnice's PseudoTCP state path, from its `PTCP State A → B.` lines.
fn nice_path(o: &Outcome) -> Vec<String> {
    o.nice_states
        .iter()
        .map(|l| {
            l.trim_start_matches("PTCP State ")
                .trim_end_matches('.')
                .to_string()
        })
        .collect()
}

const NICE_OPENED: [&str; 2] = ["LISTEN → SYN-SENT", "SYN-SENT → ESTABLISHED"];
const NICE_ANSWERED: [&str; 2] = ["LISTEN → SYN-RECEIVED", "SYN-RECEIVED → ESTABLISHED"];

/// Both streams arrived intact; gshare stayed in libnice-compatible mode.
fn assert_intact(o: &Outcome, each: u64) {
    assert!(!o.peer_is_gshare, "libnice taken for gshare");
    assert_eq!(o.mss, 1284, "mss against libnice (MTU 1400)");
    assert!(o.wire.max_payload_out <= 1284, "{}", o.wire.max_payload_out);
    assert!(o.wire.max_payload_in <= 1284, "{}", o.wire.max_payload_in);
    // libnice → gshare.
    let expected_in = stream_sha256(7, each);
    assert_eq!(o.nice_sent.sha256, expected_in);
    assert_eq!(
        o.gshare_received.0, expected_in,
        "gshare received corrupt data"
    );
    assert_eq!(o.gshare_received.1, each);
    // gshare → libnice (gshare_sent.0 is the hash of what was written).
    assert_eq!(
        o.nice_received.sha256, o.gshare_sent.0,
        "libnice received corrupt data"
    );
    assert_eq!(o.nice_received.bytes, each);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mib_each_way_at_once_after_a_simultaneous_open() {
    let each = 50 * MIB;
    // gshare opens actively but its CONNECT is held until libnice's has
    // arrived: both sides are in SYN-SENT and the CONNECTs cross.
    let o = exchange(Open::Active, true, true, each, each).await;
    assert_eq!(nice_path(&o), NICE_OPENED, "libnice did not open itself");
    let theirs = libnice_connect(&o.wire);
    assert!(
        offers_fin_ack(&theirs),
        "libnice opened without FIN-ACK: {theirs:?}"
    );
    assert_gshare_connect(&o.wire);
    assert_intact(&o, each);
    println!(
        "libnice -> gshare: {each} bytes in {:.2} s = {:.1} MB/s",
        o.gshare_received.2,
        mb_per_s(each, o.gshare_received.2)
    );
    println!(
        "gshare -> libnice: {each} bytes in {:.2} s = {:.1} MB/s (libnice's clock: {:.2} s = {:.1} MB/s)",
        o.gshare_sent.1,
        mb_per_s(each, o.gshare_sent.1),
        o.nice_received.seconds,
        mb_per_s(each, o.nice_received.seconds)
    );
    println!(
        "datagrams in {} out {}; libnice process CPU {:?} s",
        o.wire.datagrams_in, o.wire.datagrams_out, o.nice_received.cpu_seconds
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_gshare_against_libnice_either_opening_order() {
    // What gshare really does: open as soon as ICE is writable. Whoever's
    // CONNECT is first decides libnice's path; both must work. If libnice
    // answered ours, it saw no FIN-ACK and left it out of its own CONNECT.
    let each = 4 * MIB;
    let o = exchange(Open::Active, false, true, each, each).await;
    let path = nice_path(&o);
    let theirs = libnice_connect(&o.wire);
    assert_gshare_connect(&o.wire);
    if path == NICE_ANSWERED {
        assert!(!offers_fin_ack(&theirs), "{theirs:?}");
        assert_eq!(o.wire.ctl[0].0, Dir::Out, "{:02x?}", o.wire.ctl);
    } else {
        assert_eq!(path, NICE_OPENED);
        assert!(offers_fin_ack(&theirs), "{theirs:?}");
    }
    println!("libnice's path: {path:?}");
    assert_intact(&o, each);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_gshare_is_opened_by_libnice() {
    // A passive gshare (what a libjingle receiver does) sends its CONNECT
    // only in answer to libnice's: libnice opens on its own.
    let each = 4 * MIB;
    let o = exchange(Open::Passive, false, false, each, each).await;
    assert_eq!(nice_path(&o), NICE_OPENED);
    let theirs = libnice_connect(&o.wire);
    assert!(offers_fin_ack(&theirs), "{theirs:?}");
    assert_gshare_connect(&o.wire);
    assert_eq!(
        o.wire.ctl[0].0,
        Dir::In,
        "passive gshare spoke first: {:02x?}",
        o.wire.ctl
    );
    assert_intact(&o, each);
}
