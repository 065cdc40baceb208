//! Pacing for gshare peers: a token bucket filled at the congestion
//! controller's pacing rate. The bucket holds about 2 ms of sending (at
//! least two segments), so a driver woken by millisecond-grained tokio
//! timers sends a small burst per wake-up instead of one datagram per timer.
//! Pacing is off below about 2 ms of RTT (loopback, LAN): there the window
//! alone is enough and a timer per burst would only cost throughput.
//!
//! The pacer never busy-polls: when it holds a segment back it reports the
//! instant the bucket will hold enough, and the engine returns that from
//! `poll_timeout`.

use std::time::{Duration, Instant};

/// Burst the bucket allows, as time at the pacing rate.
const BURST: Duration = Duration::from_millis(2);
/// Below this RTT the pacer is off.
const MIN_PACED_RTT: Duration = Duration::from_millis(2);

#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    /// Bytes per second; 0 = off.
    rate: u64,
    capacity: u64,
    tokens: u64,
    last: Option<Instant>,
}

impl Pacer {
    pub(crate) fn new() -> Pacer {
        Pacer {
            rate: 0,
            capacity: 0,
            tokens: 0,
            last: None,
        }
    }

    /// Sets the rate (bytes/s) for segments of `mss` bytes; `None`, or an
    /// RTT under 2 ms, turns pacing off.
    pub(crate) fn set_rate(&mut self, rate: Option<u64>, mss: usize, min_rtt: Option<Duration>) {
        let on = rate.filter(|&r| r > 0 && min_rtt.is_some_and(|m| m >= MIN_PACED_RTT));
        match on {
            Some(r) => {
                self.rate = r;
                let burst = (r as u128 * BURST.as_micros() / 1_000_000) as u64;
                self.capacity = burst.max(2 * mss as u64);
                self.tokens = self.tokens.min(self.capacity);
            }
            None => self.rate = 0,
        }
    }

    /// Pacing rate in force (bytes/s), if pacing.
    pub(crate) fn rate(&self) -> Option<u64> {
        (self.rate > 0).then_some(self.rate)
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last);
            let add = (self.rate as u128 * dt.as_nanos() / 1_000_000_000) as u64;
            if add > 0 {
                self.tokens = (self.tokens + add).min(self.capacity);
                self.last = Some(now);
            }
        } else {
            self.tokens = self.capacity;
            self.last = Some(now);
        }
    }

    /// `None` if `len` bytes may go now, else when they may.
    pub(crate) fn delay(&mut self, now: Instant, len: usize) -> Option<Instant> {
        if self.rate == 0 {
            return None;
        }
        self.refill(now);
        let need = (len as u64).min(self.capacity);
        if self.tokens >= need {
            return None;
        }
        let missing = need - self.tokens;
        // Rounded up so that the bucket really holds `need` at that time.
        let ns = (missing as u128 * 1_000_000_000).div_ceil(self.rate as u128) as u64;
        Some(now + Duration::from_nanos(ns.max(1)))
    }

    /// Takes `len` bytes worth of tokens for a segment sent.
    pub(crate) fn on_send(&mut self, len: usize) {
        if self.rate > 0 {
            self.tokens = self.tokens.saturating_sub(len as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_without_rate_or_on_short_paths() {
        let now = Instant::now();
        let mut p = Pacer::new();
        assert_eq!(p.delay(now, 1448), None);
        p.set_rate(Some(1_000_000), 1448, Some(Duration::from_micros(500)));
        assert_eq!(p.rate(), None);
        assert_eq!(p.delay(now, 1448), None);
    }

    /// 12.5 MB/s over one virtual second: about 12.5 MB goes out (plus
    /// the first burst), in bursts of at most 2 ms, with every deadline
    /// in the future (no busy polling).
    #[test]
    fn paces_at_the_rate_in_small_bursts() {
        let start = Instant::now();
        let mut p = Pacer::new();
        let rate = 12_500_000;
        p.set_rate(Some(rate), 1448, Some(Duration::from_millis(50)));
        let mut now = start;
        let mut sent = 0u64;
        let mut wakeups = 0;
        let mut burst = 0u64;
        let mut max_burst = 0u64;
        while now < start + Duration::from_secs(1) {
            match p.delay(now, 1448) {
                None => {
                    p.on_send(1448);
                    sent += 1448;
                    burst += 1448;
                    max_burst = max_burst.max(burst);
                }
                Some(t) => {
                    assert!(t > now);
                    // A millisecond-grained timer fires late, never early.
                    let ms = Duration::from_millis(1);
                    let late =
                        t + ms - Duration::from_nanos((t - start).as_nanos() as u64 % 1_000_000);
                    now = late.max(t);
                    wakeups += 1;
                    burst = 0;
                }
            }
        }
        let expect = rate as f64;
        assert!(
            (sent as f64) > 0.97 * expect && (sent as f64) < 1.05 * expect,
            "{sent}"
        );
        assert!(max_burst <= 25_000 + 1448, "{max_burst}");
        assert!(wakeups <= 1100, "{wakeups}");
    }
}
