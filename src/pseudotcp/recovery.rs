//! The gshare-mode sender's scoreboard: one record per segment in flight
//! (send time, delivery snapshot, SACKed / lost / retransmitted), with
//!
//! - delivery-rate sampling (draft-cheng-iccrg-delivery-rate-estimation):
//!   each segment remembers how much had been delivered when it was sent,
//!   so its acknowledgement yields `delivered / max(send, ack interval)`;
//!   app-limited stretches are marked so their samples cannot lower the
//!   bandwidth estimate;
//! - RACK (RFC 8985): a segment is lost once a segment sent after it has
//!   been delivered and a reordering window has passed since — time, not
//!   duplicate counting, so retransmissions that are lost again are found
//!   without waiting for the retransmission timer; the reordering window is
//!   a quarter of the min RTT, widened when DSACK (RFC 2883) reports a
//!   spurious retransmission and narrowed again after 16 quiet rounds;
//! - the tail-loss probe itself is the engine's (it owns the timers).
//!
//! Bounds: the records cover only what this side has in flight, which its
//! own window and send buffer bound (never the peer); the SACK information
//! goes through the shared bounded [`RangeSet`]. Per acknowledgement the
//! work is O(log n) to find a SACK block's segments plus one step per
//! segment newly delivered, and the RACK walk covers only segments below
//! the most recently delivered one that are not yet SACKed.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::cc::RateSample;
use super::range_set::RangeSet;

/// Most SACKed ranges remembered (see `RangeSet`): one per hole, and the
/// scoreboard never has more holes than segments in flight.
const MAX_SACK_RANGES: usize = 1024;
/// Largest reordering-window multiplier DSACK can push it to.
const MAX_REO_MULT: u32 = 8;
/// Rounds without DSACK after which the reordering window resets.
const REO_DECAY_ROUNDS: u64 = 16;

#[derive(Debug, Clone)]
struct Sent {
    start: u64,
    end: u64,
    sent: Instant,
    /// Delivery state when it was (last) sent.
    delivered: u64,
    delivered_time: Instant,
    first_sent_time: Instant,
    app_limited: bool,
    xmits: u32,
    sacked: bool,
    /// Marked lost and not retransmitted since.
    lost: bool,
    /// Counted in `inflight`.
    in_pipe: bool,
}

/// What one acknowledgement did to the scoreboard.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AckOutcome {
    pub delivered: u64,
    pub rtt: Option<Duration>,
    pub rate: Option<RateSample>,
    pub round_start: bool,
    pub dsack: bool,
}

#[derive(Debug)]
pub(crate) struct Scoreboard {
    segs: VecDeque<Sent>,
    /// Starts of segments marked lost and awaiting retransmission.
    lost: BTreeSet<u64>,
    sacked: RangeSet,
    inflight: u64,
    delivered: u64,
    delivered_time: Option<Instant>,
    first_sent_time: Option<Instant>,
    /// Non-zero: app-limited until this much has been delivered.
    app_limited_until: u64,
    next_round_delivered: u64,
    round: u64,
    rack_xmit: Option<Instant>,
    rack_end: u64,
    rack_rtt: Duration,
    /// Highest end delivered so far.
    fack: u64,
    reo_mult: u32,
    last_dsack_round: Option<u64>,
    /// Until when the RACK reordering timer runs.
    pub(crate) rack_deadline: Option<Instant>,
    /// DSACKs received (spurious retransmissions the peer reported).
    pub(crate) dsacks: u64,
    /// Bytes marked lost in total.
    pub(crate) lost_bytes: u64,
}

impl Scoreboard {
    pub(crate) fn new() -> Scoreboard {
        Scoreboard {
            segs: VecDeque::new(),
            lost: BTreeSet::new(),
            sacked: RangeSet::new(MAX_SACK_RANGES),
            inflight: 0,
            delivered: 0,
            delivered_time: None,
            first_sent_time: None,
            app_limited_until: 0,
            next_round_delivered: 0,
            round: 0,
            rack_xmit: None,
            rack_end: 0,
            rack_rtt: Duration::ZERO,
            fack: 0,
            reo_mult: 1,
            last_dsack_round: None,
            rack_deadline: None,
            dsacks: 0,
            lost_bytes: 0,
        }
    }

    /// Bytes in the network: sent, not delivered, not deemed lost.
    pub(crate) fn inflight(&self) -> u64 {
        self.inflight
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// The lowest segment marked lost (to retransmit next).
    pub(crate) fn next_lost(&self) -> Option<(u64, u64)> {
        let &start = self.lost.first()?;
        let s = &self.segs[self.index_of(start)?];
        Some((s.start, s.end))
    }

    fn index_of(&self, start: u64) -> Option<usize> {
        let i = self.segs.partition_point(|s| s.start < start);
        (i < self.segs.len() && self.segs[i].start == start).then_some(i)
    }

    /// The application has nothing more to send while the window has room:
    /// samples until what is in flight now is delivered are app-limited.
    pub(crate) fn set_app_limited(&mut self) {
        self.app_limited_until = (self.delivered + self.inflight).max(1);
    }

    /// Records a transmission of `[start, end)`: new data appended at the
    /// end, or a retransmission of a recorded segment.
    pub(crate) fn on_send(&mut self, now: Instant, start: u64, end: u64) {
        if self.inflight == 0 {
            self.first_sent_time = Some(now);
            self.delivered_time = Some(now);
        }
        let snapshot = (
            self.delivered,
            self.delivered_time.unwrap_or(now),
            self.first_sent_time.unwrap_or(now),
            self.app_limited_until != 0,
        );
        let len = end - start;
        match self.index_of(start) {
            Some(i) => {
                let s = &mut self.segs[i];
                s.sent = now;
                s.xmits += 1;
                (
                    s.delivered,
                    s.delivered_time,
                    s.first_sent_time,
                    s.app_limited,
                ) = snapshot;
                if s.lost {
                    s.lost = false;
                    self.lost.remove(&start);
                }
                if !s.in_pipe && !s.sacked {
                    s.in_pipe = true;
                    self.inflight += s.end - s.start;
                }
            }
            None => {
                if self.segs.back().is_some_and(|b| b.end > start) {
                    // Not a segment boundary we know: nothing to track.
                    return;
                }
                self.segs.push_back(Sent {
                    start,
                    end,
                    sent: now,
                    delivered: snapshot.0,
                    delivered_time: snapshot.1,
                    first_sent_time: snapshot.2,
                    app_limited: snapshot.3,
                    xmits: 1,
                    sacked: false,
                    lost: false,
                    in_pipe: true,
                });
                self.inflight += len;
            }
        }
    }

    /// Processes a cumulative acknowledgement and SACK blocks.
    pub(crate) fn on_ack(
        &mut self,
        now: Instant,
        cum_ack: u64,
        blocks: &[(u64, u64)],
        min_rtt: Option<Duration>,
    ) -> AckOutcome {
        let mut out = AckOutcome::default();
        let mut rs: Option<(u64, Instant, Duration, Duration, bool)> = None;
        let mut blocks = blocks;
        // DSACK (RFC 2883): a first block below the cumulative ack, or
        // inside the second block, reports a duplicate.
        if let Some(&(s, e)) = blocks.first() {
            let inside_next = blocks.get(1).is_some_and(|&(s2, e2)| s >= s2 && e <= e2);
            if e <= cum_ack || inside_next {
                out.dsack = true;
                blocks = &blocks[1..];
            }
        }
        // Cumulative part.
        while let Some(front) = self.segs.front() {
            if front.end <= cum_ack {
                let Some(seg) = self.segs.pop_front() else {
                    break;
                };
                if !seg.sacked {
                    self.deliver(&seg, now, min_rtt, &mut rs, &mut out);
                }
                if seg.lost {
                    self.lost.remove(&seg.start);
                }
            } else {
                if front.start < cum_ack {
                    // The peer took part of it (its window trimmed it).
                    let cut = cum_ack - front.start;
                    let (was_lost, in_pipe, old) = (front.lost, front.in_pipe, front.start);
                    if in_pipe {
                        self.inflight -= cut;
                    }
                    if was_lost {
                        self.lost.remove(&old);
                        self.lost.insert(cum_ack);
                    }
                    if let Some(f) = self.segs.front_mut() {
                        f.start = cum_ack;
                    }
                }
                break;
            }
        }
        self.sacked.remove_below(cum_ack);
        // Selective part: only what is new in each block is walked.
        for &(s, e) in blocks {
            let s = s.max(cum_ack);
            if s >= e {
                continue;
            }
            let mut gaps: Vec<(u64, u64)> = Vec::new();
            let mut at = s;
            for (rs_, re) in self.sacked.iter_from(s) {
                if rs_ >= e {
                    break;
                }
                if rs_ > at {
                    gaps.push((at, rs_));
                }
                at = at.max(re);
            }
            if at < e {
                gaps.push((at, e));
            }
            if gaps.is_empty() || !self.sacked.insert(s, e) {
                continue;
            }
            for (gs, ge) in gaps {
                let mut i = self.segs.partition_point(|x| x.end <= gs);
                while i < self.segs.len() && self.segs[i].start < ge {
                    let seg = &self.segs[i];
                    if !seg.sacked && seg.start >= s && seg.end <= e {
                        let seg = seg.clone();
                        self.segs[i].sacked = true;
                        if seg.lost {
                            self.segs[i].lost = false;
                            self.lost.remove(&seg.start);
                        }
                        self.deliver(&seg, now, min_rtt, &mut rs, &mut out);
                        self.segs[i].in_pipe = false;
                    }
                    i += 1;
                }
            }
        }
        if self.app_limited_until != 0 && self.delivered > self.app_limited_until {
            self.app_limited_until = 0;
        }
        if let Some((prior_delivered, prior_time, send_elapsed, _, app_limited)) = rs {
            let ack_elapsed = now.saturating_duration_since(prior_time);
            let interval = send_elapsed.max(ack_elapsed);
            let delivered = self.delivered - prior_delivered;
            if delivered > 0 && min_rtt.is_none_or(|m| interval >= m) {
                out.rate = Some(RateSample {
                    delivered,
                    interval,
                    app_limited,
                });
            }
        }
        if out.dsack {
            self.dsacks += 1;
            if self.last_dsack_round != Some(self.round) {
                self.reo_mult = (self.reo_mult + 1).min(MAX_REO_MULT);
                self.last_dsack_round = Some(self.round);
            }
        }
        if out.round_start
            && self
                .last_dsack_round
                .is_some_and(|r| self.round >= r + REO_DECAY_ROUNDS)
        {
            self.reo_mult = 1;
            self.last_dsack_round = None;
        }
        out
    }

    /// One segment delivered for the first time.
    fn deliver(
        &mut self,
        seg: &Sent,
        now: Instant,
        min_rtt: Option<Duration>,
        rs: &mut Option<(u64, Instant, Duration, Duration, bool)>,
        out: &mut AckOutcome,
    ) {
        let len = seg.end - seg.start;
        self.delivered += len;
        self.delivered_time = Some(now);
        out.delivered += len;
        if seg.in_pipe {
            self.inflight -= len;
        }
        // Rate sample from the most recently sent of the delivered ones.
        if rs.is_none_or(|r| {
            seg.delivered > r.0
                || (seg.delivered == r.0 && seg.sent >= self.first_sent_time.unwrap_or(seg.sent))
        }) {
            *rs = Some((
                seg.delivered,
                seg.delivered_time,
                seg.sent.saturating_duration_since(seg.first_sent_time),
                Duration::ZERO,
                seg.app_limited,
            ));
            self.first_sent_time = Some(seg.sent);
        }
        let since = now.saturating_duration_since(seg.sent);
        if seg.xmits == 1 {
            out.rtt = Some(since);
        }
        // RACK: ignore a retransmission acked faster than any RTT (it is
        // the original that arrived).
        if seg.xmits == 1 || min_rtt.is_none_or(|m| since >= m) {
            self.rack_rtt = since;
            if self
                .rack_xmit
                .is_none_or(|t| seg.sent > t || (seg.sent == t && seg.end > self.rack_end))
            {
                self.rack_xmit = Some(seg.sent);
                self.rack_end = seg.end;
            }
        }
        self.fack = self.fack.max(seg.end);
        if seg.delivered >= self.next_round_delivered {
            out.round_start = true;
            self.next_round_delivered = self.delivered;
            self.round += 1;
        }
    }

    /// The reordering window: a quarter of the min RTT times the DSACK
    /// multiplier, at most the smoothed RTT.
    fn reo_wnd(&self, min_rtt: Duration, srtt: Duration) -> Duration {
        (min_rtt / 4 * self.reo_mult).min(srtt)
    }

    /// RACK loss detection (RFC 8985 §6.2); returns the bytes newly marked
    /// lost and re-arms `rack_deadline` for the ones not yet due.
    pub(crate) fn detect_loss(&mut self, now: Instant, min_rtt: Duration, srtt: Duration) -> u64 {
        self.rack_deadline = None;
        let Some(rack_xmit) = self.rack_xmit else {
            return 0;
        };
        let wait = self.rack_rtt + self.reo_wnd(min_rtt, srtt);
        let mut newly = 0;
        for seg in self.segs.iter_mut() {
            if seg.start >= self.rack_end {
                break;
            }
            if seg.sacked || seg.lost {
                continue;
            }
            let before =
                seg.sent < rack_xmit || (seg.sent == rack_xmit && seg.end <= self.rack_end);
            if !before {
                continue;
            }
            let due = seg.sent + wait;
            if due <= now {
                seg.lost = true;
                if seg.in_pipe {
                    seg.in_pipe = false;
                    self.inflight -= seg.end - seg.start;
                }
                self.lost.insert(seg.start);
                newly += seg.end - seg.start;
            } else {
                self.rack_deadline = Some(self.rack_deadline.map_or(due, |d| d.min(due)));
            }
        }
        self.lost_bytes += newly;
        newly
    }

    /// Retransmission timeout: everything not SACKed is lost.
    pub(crate) fn mark_all_lost(&mut self) -> u64 {
        let mut newly = 0;
        for seg in self.segs.iter_mut() {
            if seg.sacked || seg.lost {
                continue;
            }
            seg.lost = true;
            if seg.in_pipe {
                seg.in_pipe = false;
                self.inflight -= seg.end - seg.start;
            }
            self.lost.insert(seg.start);
            newly += seg.end - seg.start;
        }
        self.rack_deadline = None;
        self.lost_bytes += newly;
        newly
    }

    /// Tail-loss probe without new data: the last segment not SACKed is
    /// to be sent again (RFC 8985 §7.3).
    pub(crate) fn probe_last(&mut self) -> bool {
        let Some(seg) = self.segs.iter_mut().rev().find(|s| !s.sacked) else {
            return false;
        };
        if !seg.lost {
            seg.lost = true;
            if seg.in_pipe {
                seg.in_pipe = false;
                self.inflight -= seg.end - seg.start;
            }
            self.lost.insert(seg.start);
        }
        true
    }

    /// Whether `[start, ..)` is known SACKed (skip it after a timeout).
    #[cfg(test)]
    pub(crate) fn sacked_ranges(&self) -> usize {
        self.sacked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u64 = 1000;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Sends `n` segments at `t`, starting at `from`.
    fn send(sb: &mut Scoreboard, t: Instant, from: u64, n: u64) {
        for i in 0..n {
            sb.on_send(t, from + i * MSS, from + (i + 1) * MSS);
        }
    }

    #[test]
    fn cumulative_ack_delivers_and_samples_rtt_and_rate() {
        let t0 = Instant::now();
        let mut sb = Scoreboard::new();
        send(&mut sb, t0, 0, 10);
        assert_eq!(sb.inflight(), 10 * MSS);
        let o = sb.on_ack(t0 + ms(50), 10 * MSS, &[], None);
        assert_eq!(o.delivered, 10 * MSS);
        assert_eq!(o.rtt, Some(ms(50)));
        assert!(o.round_start);
        let r = o.rate.unwrap();
        assert_eq!(r.interval, ms(50));
        assert_eq!(r.rate(), 200_000); // 10 kB in 50 ms
        assert_eq!(sb.inflight(), 0);
        assert!(sb.is_empty());
    }

    /// RACK on virtual time: segment 0 lost; 1..10 SACKed 50 ms later. The
    /// hole is declared lost only after the reordering window (min RTT / 4).
    #[test]
    fn rack_marks_a_hole_lost_after_the_reordering_window() {
        let t0 = Instant::now();
        let mut sb = Scoreboard::new();
        send(&mut sb, t0, 0, 10);
        let t1 = t0 + ms(50);
        let o = sb.on_ack(t1, 0, &[(MSS, 10 * MSS)], Some(ms(50)));
        assert_eq!(o.delivered, 9 * MSS);
        // Sent at the same instant as the delivered ones: RACK counts it
        // as sent before the last delivered, but waits reo_wnd.
        assert_eq!(sb.detect_loss(t1, ms(50), ms(50)), 0);
        assert_eq!(
            sb.rack_deadline,
            Some(t0 + ms(50) + ms(12) + Duration::from_micros(500))
        );
        let due = sb.rack_deadline.unwrap();
        assert_eq!(sb.detect_loss(due, ms(50), ms(50)), MSS);
        assert_eq!(sb.next_lost(), Some((0, MSS)));
        assert_eq!(sb.inflight(), 0);
        // Retransmitted; its ack completes everything.
        sb.on_send(due, 0, MSS);
        assert_eq!(sb.next_lost(), None);
        assert_eq!(sb.inflight(), MSS);
        let o = sb.on_ack(due + ms(50), 10 * MSS, &[], Some(ms(50)));
        assert_eq!(o.delivered, MSS);
        assert!(sb.is_empty());
    }

    /// A lost retransmission is found by RACK once a later-sent segment is
    /// delivered, without a timeout.
    #[test]
    fn lost_retransmission_is_detected_without_a_timeout() {
        let t0 = Instant::now();
        let mut sb = Scoreboard::new();
        send(&mut sb, t0, 0, 4);
        sb.on_ack(t0 + ms(50), 0, &[(MSS, 4 * MSS)], Some(ms(50)));
        let t1 = t0 + ms(70);
        assert_eq!(sb.detect_loss(t1, ms(50), ms(50)), MSS);
        sb.on_send(t1, 0, MSS); // retransmission (will be lost again)
        send(&mut sb, t1 + ms(1), 4 * MSS, 2); // new data after it
        // New data delivered 50 ms later; the retransmission is not.
        let t2 = t1 + ms(51);
        sb.on_ack(t2, 0, &[(MSS, 6 * MSS)], Some(ms(50)));
        let later = t2 + ms(20);
        assert_eq!(sb.detect_loss(later, ms(50), ms(50)), MSS);
        assert_eq!(sb.next_lost(), Some((0, MSS)));
    }

    /// DSACK widens the reordering window, once per round.
    #[test]
    fn dsack_widens_the_reordering_window() {
        let t0 = Instant::now();
        let mut sb = Scoreboard::new();
        send(&mut sb, t0, 0, 4);
        let o = sb.on_ack(
            t0 + ms(50),
            2 * MSS,
            &[(0, MSS), (3 * MSS, 4 * MSS)],
            Some(ms(40)),
        );
        assert!(o.dsack);
        assert_eq!(sb.reo_wnd(ms(40), ms(50)), ms(20));
        let o = sb.on_ack(t0 + ms(51), 2 * MSS, &[(0, MSS)], Some(ms(40)));
        assert!(o.dsack);
        assert_eq!(sb.reo_wnd(ms(40), ms(50)), ms(20)); // same round
        assert_eq!(sb.dsacks, 2);
    }

    /// App-limited marking: samples taken while the sender had nothing to
    /// send are flagged.
    #[test]
    fn app_limited_samples_are_flagged() {
        let t0 = Instant::now();
        let mut sb = Scoreboard::new();
        send(&mut sb, t0, 0, 2);
        sb.set_app_limited();
        send(&mut sb, t0 + ms(1), 2 * MSS, 1);
        let o = sb.on_ack(t0 + ms(50), 3 * MSS, &[], None);
        assert!(o.rate.unwrap().app_limited);
        send(&mut sb, t0 + ms(60), 3 * MSS, 1);
        let o = sb.on_ack(t0 + ms(110), 4 * MSS, &[], None);
        assert!(!o.rate.unwrap().app_limited);
    }

    /// A hostile receiver SACKing one byte here and there (four blocks per
    /// ack, the wire's limit) cannot grow the SACK record past its bound.
    #[test]
    fn hostile_one_byte_blocks_are_bounded() {
        let t0 = Instant::now();
        let mut sb = Scoreboard::new();
        send(&mut sb, t0, 0, 4000);
        let mut off = 4000 * MSS - 2;
        while off > 8 {
            let blocks: Vec<_> = (0..4).map(|k| (off - 2 * k, off - 2 * k + 1)).collect();
            off -= 8;
            let o = sb.on_ack(t0 + ms(50), 0, &blocks, None);
            assert_eq!(o.delivered, 0);
            assert!(sb.sacked_ranges() <= MAX_SACK_RANGES);
        }
        assert_eq!(sb.sacked_ranges(), MAX_SACK_RANGES);
        assert_eq!(sb.inflight(), 4000 * MSS);
    }

    /// A SACK block repeated on every ack is not walked again.
    #[test]
    fn repeated_sack_blocks_are_cheap_and_bounded() {
        let t0 = Instant::now();
        let mut sb = Scoreboard::new();
        send(&mut sb, t0, 0, 2000);
        let o = sb.on_ack(t0 + ms(50), 0, &[(MSS, 2000 * MSS)], None);
        assert_eq!(o.delivered, 1999 * MSS);
        for i in 0..10_000 {
            let o = sb.on_ack(t0 + ms(50 + i), 0, &[(MSS, 2000 * MSS)], None);
            assert_eq!(o.delivered, 0);
        }
        assert_eq!(sb.sacked_ranges(), 1);
    }
}
