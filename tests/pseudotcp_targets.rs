//! Issue 14's targets on the simulated network (virtual time, fixed seeds):
//! a 100 Mbit/s, 50 ms RTT bottleneck with a one-BDP drop-tail queue, gshare
//! on both ends of a 1500-byte path (datagrams of 1472 bytes), at 0 %,
//! 0.1 %, 1 % and 10 % loss (the last with 1 % reordering). Thresholds sit
//! a little under the `scripts/bench` targets so that a regression fails
//! the suite, not only a benchmark.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use gshare::pseudotcp::Config;
use gshare::pseudotcp::sim::{LinkConfig, Sim, TransferSpec, transfer};

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
    let mut fwd = LinkConfig::bottleneck(RATE, RTT, loss);
    fwd.reorder = reorder;
    fwd.reorder_delay = Duration::from_millis(10);
    let back = LinkConfig {
        bandwidth: None,
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
