//! PseudoTCP throughput figures (not a timed test). Run:
//! `cargo bench --bench pseudotcp` (add `-- quick` for fewer/lighter runs).
//!
//! Prints, in one run:
//! 1. gshare ↔ gshare PseudoTCP over loopback UDP (two threads, each with its
//!    own current-thread runtime, like two processes), and kernel TCP over
//!    loopback as the ceiling; MB/s and ratio.
//! 2. The same engine through a simulated 100 Mbit/s link with 50 ms RTT at
//!    0 % and 1 % loss (virtual time), with the Mathis bound for the latter.
//! 3. libnice ↔ libnice PseudoTCP (two reliable Google-mode agents, the
//!    reference implementation) over loopback in the same run, and the ratio.
//!    The emulated-link comparison with libnice is `scripts/bench`'s job.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use gshare::net::raise_buffers;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[path = "../tests/support/nice.rs"]
mod nice;

use gshare::pseudotcp::sim::{LinkConfig, Sim, TransferSpec, transfer};
use gshare::pseudotcp::{Config, PseudoTcpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MB: f64 = 1e6;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One PseudoTCP transfer of `total` bytes over loopback UDP; MB/s.
fn pseudotcp_loopback(total: usize, chunk: usize) -> f64 {
    let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    a.connect(b.local_addr().expect("addr")).expect("connect");
    b.connect(a.local_addr().expect("addr")).expect("connect");
    for s in [&a, &b] {
        raise_buffers(s, 16 << 20);
        s.set_nonblocking(true).expect("nonblocking");
    }
    let receiver = std::thread::spawn(move || {
        rt().block_on(async move {
            let b = tokio::net::UdpSocket::from_std(b).expect("tokio socket");
            let mut s = PseudoTcpStream::accept(b, Config::default())
                .await
                .expect("accept");
            let mut buf = vec![0u8; chunk];
            let mut got = 0;
            let mut t0 = None;
            while got < total {
                let n = s.read(&mut buf).await.expect("read");
                assert!(n > 0);
                t0.get_or_insert_with(Instant::now);
                got += n;
            }
            t0.map(|t| t.elapsed())
        })
    });
    let sender = std::thread::spawn(move || {
        rt().block_on(async move {
            let a = tokio::net::UdpSocket::from_std(a).expect("tokio socket");
            let mut s = PseudoTcpStream::connect(a, Config::default())
                .await
                .expect("connect");
            let buf = vec![0x5au8; chunk];
            let mut left = total;
            while left > 0 {
                let n = left.min(chunk);
                s.write_all(&buf[..n]).await.expect("write");
                left -= n;
            }
            s.shutdown().await.expect("shutdown");
            s.stats()
        })
    });
    let stats = sender.join().expect("sender");
    let took = receiver.join().expect("receiver").expect("data");
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        eprintln!("    {stats:?}");
    }
    total as f64 / took.as_secs_f64() / MB
}

/// Kernel TCP over loopback with the same chunk size; MB/s.
fn tcp_loopback(total: usize, chunk: usize) -> f64 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = l.local_addr().expect("addr");
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let mut buf = vec![0u8; chunk];
        let mut got = 0;
        let mut t0 = None;
        while got < total {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0);
            t0.get_or_insert_with(Instant::now);
            got += n;
        }
        t0.map(|t| t.elapsed())
    });
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let buf = vec![0x5au8; chunk];
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk);
        s.write_all(&buf[..n]).expect("write");
        left -= n;
    }
    let took = receiver.join().expect("receiver").expect("data");
    total as f64 / took.as_secs_f64() / MB
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Simulated link: `total` bytes a→b; returns (MB/s, retransmits, timeouts).
fn simulated(rate: u64, rtt: Duration, loss: f64, total: u64) -> (f64, u64, u64) {
    let fwd = LinkConfig::bottleneck(rate, rtt, loss);
    let back = LinkConfig {
        bandwidth: None,
        ..fwd.clone()
    };
    let mut sim = Sim::new(Config::default(), Config::default(), fwd, back, 42);
    let now = sim.now;
    sim.a.connect(now).expect("connect");
    assert!(sim.run_until_established(Duration::from_secs(60)));
    let t0 = sim.now;
    let spec = TransferSpec {
        a_to_b: total,
        time_limit: Duration::from_secs(100_000),
        ..TransferSpec::default()
    };
    let r = transfer(&mut sim, &spec).expect("transfer");
    let took = r.a_to_b_time.expect("done").max(sim.now - t0);
    let st = sim.a.stats();
    (
        total as f64 / took.as_secs_f64() / MB,
        st.retransmits,
        st.timeouts,
    )
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // binary without it: then a small smoke run keeps the code exercised.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let quick = std::env::args().any(|a| a == "quick");
    let (runs, total) = if smoke {
        (1, 16 << 20)
    } else if quick {
        (3, 256 << 20)
    } else {
        (5, 1 << 30)
    };
    let chunk = 256 * 1024;
    println!(
        "PseudoTCP benchmark ({runs} runs each, median; {} MiB per run)",
        total >> 20
    );
    println!();
    println!(
        "Loopback (release build, 2 threads, {} KiB writes/reads):",
        chunk >> 10
    );
    let ptcp = median(
        (0..runs)
            .map(|_| pseudotcp_loopback(total, chunk))
            .collect(),
    );
    let ktcp = median((0..runs).map(|_| tcp_loopback(total, chunk)).collect());
    println!("  gshare <-> gshare PseudoTCP over UDP : {ptcp:9.1} MB/s");
    println!("  kernel TCP (ceiling)                 : {ktcp:9.1} MB/s");
    println!(
        "  PseudoTCP / kernel TCP               : {:9.2}",
        ptcp / ktcp
    );
    let nice_total = if smoke { 4 << 20 } else { 256 << 20 };
    let nice_mbps = median((0..runs).map(|_| libnice_loopback(nice_total)).collect());
    println!(
        "  libnice <-> libnice PseudoTCP        : {nice_mbps:9.1} MB/s ({} MiB)",
        nice_total >> 20
    );
    println!(
        "  gshare / libnice                     : {:9.1}x",
        ptcp / nice_mbps
    );
    println!();
    let rate = 12_500_000u64; // 100 Mbit/s
    let rtt = Duration::from_millis(50);
    let mss = 1284.0;
    println!("Simulated 100 Mbit/s link, 50 ms RTT, queue = 1 BDP (virtual time, mss 1284):");
    let sim_total = if smoke {
        4 << 20
    } else if quick {
        32 << 20
    } else {
        128 << 20
    };
    let (mbps, rx, to) = simulated(rate, rtt, 0.0, sim_total);
    println!(
        "  0 % loss : {mbps:7.2} MB/s = {:5.1} % of the link ({} MiB, {rx} retransmits, {to} timeouts)",
        100.0 * mbps * MB / rate as f64,
        sim_total >> 20
    );
    let lossy_total = if smoke {
        1 << 20
    } else if quick {
        4 << 20
    } else {
        16 << 20
    };
    let (mbps, rx, to) = simulated(rate, rtt, 0.01, lossy_total);
    let mathis = mss / rtt.as_secs_f64() * 1.22 / 0.01f64.sqrt() / MB;
    println!(
        "  1 % loss : {mbps:7.2} MB/s; Mathis bound MSS/RTT*1.22/sqrt(p) = {mathis:.2} MB/s ({:.0} %) ({} MiB, {rx} retransmits, {to} timeouts)",
        100.0 * mbps / mathis,
        lossy_total >> 20
    );
    println!("  (libnice through the same emulated links: scripts/bench)");
}

/// libnice ↔ libnice reliable transfer of `total` bytes on loopback, MB/s
/// as the receiving peer timed it.
fn libnice_loopback(total: u64) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (sent, received) = rt.block_on(nice::libnice_pair_transfer(total, 7));
    assert_eq!(sent.sha256, received.sha256, "libnice pair corrupted data");
    received.bytes as f64 / received.seconds.max(1e-9) / MB
}
