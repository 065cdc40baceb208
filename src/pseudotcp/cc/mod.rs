//! Congestion control behind one trait, the way quinn-proto cuts it: the
//! engine feeds acknowledgement and loss summaries in and reads a window
//! and a pacing rate out.
//!
//! - Classic peers (libjingle, libnice) keep the engine's own Reno-family
//!   sender (NewReno, limited transmit, HyStart++), byte for byte as
//!   before; it still lives in `engine.rs` next to its loss recovery.
//! - Between gshare peers the [`bbr::Bbr`] controller runs: model-based, so
//!   random loss is not read as congestion.

pub(crate) mod bbr;

use std::time::{Duration, Instant};

/// A delivery-rate sample (draft-cheng-iccrg-delivery-rate-estimation),
/// made by the scoreboard for one acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateSample {
    /// Bytes delivered over `interval`.
    pub delivered: u64,
    /// max(send elapsed, ack elapsed) of the sample.
    pub interval: Duration,
    /// The flight was limited by the application, not the window: the
    /// sample may understate the path and must not lower an estimate.
    pub app_limited: bool,
}

impl RateSample {
    /// Bytes per second.
    pub fn rate(&self) -> u64 {
        let us = self.interval.as_micros().max(1);
        (self.delivered as u128 * 1_000_000 / us) as u64
    }
}

/// What one acknowledgement told the sender.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AckSummary {
    pub now: Instant,
    /// Bytes newly delivered (cumulatively or selectively acknowledged).
    pub delivered: u64,
    /// Bytes newly marked lost while processing it.
    pub lost: u64,
    /// Bytes in flight after it.
    pub inflight: u64,
    /// An RTT sample from a segment sent once.
    pub rtt: Option<Duration>,
    pub rate: Option<RateSample>,
    /// A new round trip began with it.
    pub round_start: bool,
}

/// A congestion controller for the gshare-mode sender.
pub(crate) trait Controller: std::fmt::Debug + Send {
    /// After each acknowledgement that delivered or lost something.
    fn on_ack(&mut self, ack: &AckSummary);
    /// After a retransmission timeout.
    fn on_rto(&mut self, inflight: u64);
    /// Congestion window, bytes.
    fn cwnd(&self) -> u64;
    /// Pacing rate, bytes per second (`None`: not known yet).
    fn pacing_rate(&self) -> Option<u64>;
    /// Short name for logs and tests.
    fn name(&self) -> &'static str;
}
