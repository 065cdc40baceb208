//! Round-trip time estimation (RFC 6298): smoothed RTT, variation, the
//! retransmission timeout with its floor, ceiling and back-off, and the
//! smallest RTT seen (RACK's reordering window is a fraction of it).

use std::time::Duration;

/// Clock granularity term of RFC 6298's RTO (`G`), in microseconds.
const CLOCK_GRANULARITY_US: u64 = 1000;

/// RTT state of one connection.
#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    srtt_us: Option<u64>,
    rttvar_us: u64,
    min_us: Option<u64>,
    latest_us: u64,
    rto: Duration,
    min_rto: Duration,
    max_rto: Duration,
}

impl RttEstimator {
    pub(crate) fn new(initial_rto: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        RttEstimator {
            srtt_us: None,
            rttvar_us: 0,
            min_us: None,
            latest_us: 0,
            rto: initial_rto,
            min_rto,
            max_rto,
        }
    }

    /// Takes one sample (microseconds) and recomputes the RTO.
    pub(crate) fn sample(&mut self, r: u64) {
        match self.srtt_us {
            None => {
                self.srtt_us = Some(r);
                self.rttvar_us = r / 2;
            }
            Some(srtt) => {
                self.rttvar_us = (3 * self.rttvar_us + srtt.abs_diff(r)) / 4;
                self.srtt_us = Some((7 * srtt + r) / 8);
            }
        }
        self.latest_us = r;
        self.min_us = Some(self.min_us.map_or(r, |m| m.min(r)));
        let srtt = self.srtt_us.unwrap_or(r);
        let rto = Duration::from_micros(srtt + (4 * self.rttvar_us).max(CLOCK_GRANULARITY_US));
        self.rto = rto.clamp(self.min_rto, self.max_rto);
    }

    /// Doubles the RTO (after a timeout), up to `cap`.
    pub(crate) fn back_off(&mut self, cap: Duration) {
        self.rto = (self.rto * 2).min(cap);
    }

    pub(crate) fn rto(&self) -> Duration {
        self.rto
    }

    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt_us.map(Duration::from_micros)
    }

    /// Smallest sample seen.
    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        self.min_us.map(Duration::from_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est() -> RttEstimator {
        RttEstimator::new(
            Duration::from_secs(1),
            Duration::from_millis(200),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn first_sample_sets_srtt_and_half_variation() {
        let mut r = est();
        assert_eq!(r.rto(), Duration::from_secs(1));
        r.sample(100_000);
        assert_eq!(r.srtt(), Some(Duration::from_millis(100)));
        // 100 + 4 × 50 ms
        assert_eq!(r.rto(), Duration::from_millis(300));
        assert_eq!(r.min_rtt(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn smoothing_floor_and_back_off() {
        let mut r = est();
        for _ in 0..100 {
            r.sample(10_000);
        }
        assert_eq!(r.srtt(), Some(Duration::from_millis(10)));
        assert_eq!(r.rto(), Duration::from_millis(200)); // floor
        r.sample(50_000);
        assert_eq!(r.srtt(), Some(Duration::from_millis(15)));
        assert_eq!(r.min_rtt(), Some(Duration::from_millis(10)));
        r.back_off(Duration::from_millis(300));
        assert_eq!(r.rto(), Duration::from_millis(300));
    }
}
