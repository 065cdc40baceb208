//! Issue 14's targets on the simulated network (virtual time, fixed seeds):
//! a 100 Mbit/s, 50 ms RTT bottleneck with a one-BDP drop-tail queue, gshare
//! on both ends of a 1500-byte path (datagrams of 1472 bytes), at 0 %,
//! 0.1 %, 1 % and 10 % loss (the last with 1 % reordering). Thresholds sit
//! a little under what the engine reaches here (seed 7; and under the
//! lowest of seeds 1–5 for the lossy cases), at or above the issue's
//! targets, so that a regression fails the suite, not only a benchmark.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use gshare::pseudotcp::Config;
use gshare::pseudotcp::sim::{LinkConfig, SharedBottleneck, Sim, TransferSpec, transfer};

const RATE: u64 = 12_500_000;
const RTT: Duration = Duration::from_millis(50);

fn gshare_1500() -> Config {
    Config {
        max_datagram_size: 1472,
        ..Config::default()
    }
}

/// MB/s of one `total`-byte transfer a→b through the bottleneck.
fn bottleneck(loss: f64, reorder: f64, total: u64, seed: u64) -> (f64, Sim) {
    bottleneck_with(loss, reorder, Duration::ZERO, total, seed)
}

/// The same, with the acknowledgments aggregated over `ack_batch` on the
/// way back (`LinkConfig::aggregate`).
fn bottleneck_with(
    loss: f64,
    reorder: f64,
    ack_batch: Duration,
    total: u64,
    seed: u64,
) -> (f64, Sim) {
    let mut fwd = LinkConfig::bottleneck(RATE, RTT, loss);
    fwd.reorder = reorder;
    fwd.reorder_delay = Duration::from_millis(10);
    let back = LinkConfig {
        bandwidth: None,
        aggregate: ack_batch,
        ..fwd.clone()
    };
    let mut sim = Sim::new(gshare_1500(), gshare_1500(), fwd, back, seed);
    let now = sim.now;
    sim.a.connect(now).unwrap();
    assert!(sim.run_until_established(Duration::from_secs(30)));
    let r = transfer(
        &mut sim,
        &TransferSpec {
            a_to_b: total,
            time_limit: Duration::from_secs(3600),
            ..TransferSpec::default()
        },
    )
    .unwrap();
    let mbps = total as f64 / r.a_to_b_time.unwrap().as_secs_f64() / 1e6;
    eprintln!(
        "loss {loss} reorder {reorder}: {mbps:.2} MB/s, {:?}, link {:?}",
        sim.a.stats(),
        sim.ab.stats
    );
    (mbps, sim)
}

#[test]
fn segments_are_1448_bytes_on_a_1500_byte_path() {
    let (_, sim) = bottleneck(0.0, 0.0, 1 << 20, 1);
    assert_eq!(sim.a.mss(), 1448);
    assert_eq!(sim.b.mss(), 1448);
}

#[test]
fn no_loss_fills_the_link() {
    // Target ≥ 95 % of the link; met over 120 MiB including startup
    // (11.89 MB/s; 12.2 in steady state, where the payload rate of a
    // 1472-byte datagram is 12.3).
    let (mbps, sim) = bottleneck(0.0, 0.0, 120 << 20, 7);
    assert!(mbps >= 0.95 * RATE as f64 / 1e6, "{mbps:.2} MB/s");
    assert_eq!(sim.a.controller(), "bbr");
    assert_eq!(sim.a.stats().timeouts, 0);
    // Startup keeps 2 × BDP: at most a handful of queue drops.
    assert!(sim.ab.stats.queue_drops < 100, "{:?}", sim.ab.stats);
}

#[test]
fn no_loss_fills_the_link_with_bunched_acks() {
    // The acknowledgments come back in 4 ms bunches (a busy receiver or a
    // batching relay, as on the real impairment relay): delivery-rate
    // samples over-read the bottleneck by a few percent, and a controller
    // that trusts them keeps a queue that overflows the drop-tail.
    let (mbps, sim) = bottleneck_with(0.0, 0.0, Duration::from_millis(4), 120 << 20, 7);
    assert!(mbps >= 0.95 * RATE as f64 / 1e6, "{mbps:.2} MB/s");
    assert_eq!(sim.a.stats().timeouts, 0);
    assert!(sim.ab.stats.queue_drops < 100, "{:?}", sim.ab.stats);
}

#[test]
fn tenth_of_a_percent_loss() {
    // Over 120 MiB, startup included (as for the lossless case).
    let (mbps, _) = bottleneck(0.001, 0.0, 120 << 20, 7);
    assert!(mbps >= 11.6, "{mbps:.2} MB/s (target 11)");
}

#[test]
fn one_percent_loss() {
    let (mbps, _) = bottleneck(0.01, 0.0, 40 << 20, 7);
    assert!(mbps >= 10.0, "{mbps:.2} MB/s (target 8)");
}

#[test]
fn ten_percent_loss_and_one_percent_reordering() {
    let (mbps, sim) = bottleneck(0.1, 0.01, 40 << 20, 7);
    assert!(mbps >= 6.5, "{mbps:.2} MB/s (target 2)");
    // Lost retransmissions are found by RACK, not by timeouts.
    let st = sim.a.stats();
    assert!(st.timeouts <= 5, "{st:?}");
}

/// The classic sender on the same path, for comparison (and so the
/// switch stays honest): Reno reads random loss as congestion.
#[test]
fn classic_sender_between_gshare_peers_is_loss_bound() {
    let classic = Config {
        model_based: false,
        ..gshare_1500()
    };
    let mut fwd = LinkConfig::bottleneck(RATE, RTT, 0.01);
    fwd.reorder_delay = Duration::ZERO;
    let back = LinkConfig {
        bandwidth: None,
        ..fwd.clone()
    };
    let mut sim = Sim::new(classic.clone(), classic, fwd, back, 7);
    let now = sim.now;
    sim.a.connect(now).unwrap();
    assert!(sim.run_until_established(Duration::from_secs(30)));
    assert_eq!(sim.a.controller(), "classic");
    let total = 4 << 20;
    let r = transfer(
        &mut sim,
        &TransferSpec {
            a_to_b: total,
            time_limit: Duration::from_secs(3600),
            ..TransferSpec::default()
        },
    )
    .unwrap();
    let mbps = total as f64 / r.a_to_b_time.unwrap().as_secs_f64() / 1e6;
    assert!(mbps < 2.0, "{mbps:.2}");
}

/// Two flows through one bottleneck for 30 s (virtual): shares and the
/// mean queueing delay the bottleneck adds.
fn two_flows(second: Config, seed: u64) -> (f64, f64, Duration) {
    let fwd = LinkConfig::bottleneck(RATE, RTT, 0.0);
    let back = LinkConfig {
        bandwidth: None,
        ..fwd.clone()
    };
    let mut sim = SharedBottleneck::new(
        vec![(gshare_1500(), gshare_1500()), (second.clone(), second)],
        fwd,
        back,
        seed,
    );
    sim.open(0);
    sim.open(1);
    let t30 = sim.start + Duration::from_secs(30);
    let read = sim.run(t30, &[true, true]);
    let total = (read[0] + read[1]) as f64;
    let (s0, s1) = (read[0] as f64 / total, read[1] as f64 / total);
    let q = sim.mean_queue_delay();
    eprintln!("bottleneck {:?}", sim.fwd.stats);
    eprintln!(
        "two flows ({} + {}): {:.1} % / {:.1} %, {:.2} MB/s together, mean queueing {q:?}",
        sim.flows[0].0.controller(),
        sim.flows[1].0.controller(),
        s0 * 100.0,
        s1 * 100.0,
        total / 30e6
    );
    (s0, s1, q)
}

#[test]
fn two_gshare_flows_share_a_bottleneck_fairly() {
    let (a, b, q) = two_flows(gshare_1500(), SEED2);
    assert!(
        (0.35..=0.65).contains(&a) && (0.35..=0.65).contains(&b),
        "{a} {b}"
    );
    assert!(q <= RTT, "{q:?}");
}

#[test]
fn gshare_flow_beside_a_classic_flow() {
    // The other flow: gshare's classic (Reno-family) sender with large
    // windows, i.e. what a loss-based TCP does. Shares are reported; the
    // bar here is only that neither starves.
    let classic = Config {
        model_based: false,
        ..gshare_1500()
    };
    let (g, c, q) = two_flows(classic, 3);
    assert!(g > 0.1 && c > 0.1, "gshare {g}, classic {c}");
    assert!(q <= RTT, "{q:?}");
}

/// Seed of the two-flow runs.
const SEED2: u64 = 9;
