//! The sans-IO PseudoTCP state machine.
//!
//! Wire behaviour follows libjingle 0.4 / libnice (docs/protocol.md §C); the
//! sender side is a modern TCP: RFC 6298 RTO with a 200 ms floor, RFC 5681
//! slow start / congestion avoidance with byte counting, RFC 6582 NewReno
//! fast recovery, RFC 3042 limited transmit, go-back-N after a timeout, and
//! window scaling. Against another gshare (private CONNECT option) segments
//! are sized to the path's datagram limit instead of libnice's fixed 1400,
//! and the model-based sender runs instead: the scoreboard and RACK-TLP in
//! `recovery`, the BBR-family controller in `cc::bbr`, the pacer in `pacer`
//! (the engine keeps the state machine and calls them).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::{debug, trace};

use super::buffer::{RecvBuffer, SendBuffer};
use super::cc::bbr::Bbr;
use super::cc::{AckSummary, Controller};
use super::pacer::Pacer;
use super::range_set::RangeSet;
use super::recovery::Scoreboard;
use super::rtt::RttEstimator;
use super::segment::{
    ConnectOptions, FEATURE_SACK, FLAG_CTL, FLAG_RST, FLAG_SACK, GSHARE_OPT_VERSION, GshareOption,
    HEADER_SIZE, Header, MAX_SACK_BLOCKS, connect_payload, decode_sack, encode_sack,
};

/// Allowance subtracted from the MTU to get the MSS: 24 (header) + 8 (UDP)
/// + 20 (IP) + 64 (Jingle/relay framing), as LJ04 and NICE do (§C.4).
pub const PACKET_OVERHEAD: usize = 116;
/// Smallest MTU libjingle knows (its `PACKET_MAXIMUMS` table ends at 296).
const MIN_MTU: usize = 296;
/// A segment may be transmitted at most this often before the connection is
/// established, and [`MAX_XMIT_ESTABLISHED`] times after (LJ04/NICE `transmit`).
const MAX_XMIT_CONNECTING: u32 = 30;
const MAX_XMIT_ESTABLISHED: u32 = 15;
/// Cap of the backed-off RTO while connecting (LJ04/NICE `DEF_RTO`).
const MAX_RTO_CONNECTING: Duration = Duration::from_secs(3);
/// Give up when the peer's window stays closed and nothing at all has been
/// heard from it for this long (LJ04/NICE "Receive window closed").
const ZERO_WINDOW_TIMEOUT: Duration = Duration::from_secs(15);
/// Zero-window probes back off up to this interval (kept below a third of
/// [`ZERO_WINDOW_TIMEOUT`] so a live peer always gets several chances).
const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(4);
/// Clock granularity of the timestamps (ms), the `G` of RFC 6298.
/// Most ranges the SACK scoreboard holds. The peer chooses its SACK blocks,
/// so this bounds what it can make us store; a block that would open one
/// range more is ignored (less information for recovery, never wrong; the
/// retransmission timer stays the backstop). As for the receive side's
/// `MAX_OOO_RANGES`, real loss patterns stay far below it.
const MAX_SACK_RANGES: usize = 1024;
/// HyStart++ (RFC 9406) constants: RTT samples needed per round, delay
/// threshold bounds, conservative-slow-start growth divisor and length.
const HS_MIN_SAMPLES: u32 = 8;
const HS_MIN_ETA_US: u64 = 4_000;
const HS_MAX_ETA_US: u64 = 16_000;
const HS_CSS_DIVISOR: u64 = 4;
const HS_CSS_ROUNDS: u32 = 5;

/// HyStart++ state: leaves slow start when the RTT starts to grow (a queue
/// is building) instead of when the bottleneck queue overflows, which at
/// large windows costs hundreds of segments at once.
#[derive(Debug, Default, Clone, Copy)]
struct HyStart {
    /// The current round ends when this much is acknowledged.
    window_end: u64,
    last_round_min_us: Option<u64>,
    round_min_us: Option<u64>,
    samples: u32,
    /// In conservative slow start, with the RTT that triggered it.
    css_baseline_us: Option<u64>,
    css_rounds: u32,
}

/// Tunables. `Default` gives gshare's choices; see each field.
#[derive(Debug, Clone)]
pub struct Config {
    /// Conversation number; 0 in file share (§C.2).
    pub conversation: u32,
    /// Send buffer capacity (bytes the application may queue). Large enough
    /// for the bandwidth-delay product; memory is allocated only as used.
    pub send_buffer: usize,
    /// Receive buffer capacity = largest window advertised. Scaled on the
    /// wire when the peer also offers window scaling; otherwise the window
    /// field caps it at 65535.
    pub recv_buffer: usize,
    /// Largest UDP payload the local path takes (the datagram layer's
    /// `max_datagram_size`, e.g. 65507 on loopback).
    pub max_datagram_size: usize,
    /// MTU used with peers that are not gshare: libnice's fixed 1400 (mss 1284).
    pub compat_mtu: usize,
    /// Offer window scaling (option 3) in our CONNECT.
    pub window_scaling: bool,
    /// Offer gshare's private option (large segments with gshare peers).
    pub gshare_option: bool,
    /// Offer gshare's selective acknowledgements (needs `gshare_option`).
    pub sack: bool,
    /// RTO floor. RFC 6298 says 1 s; libnice uses 1 s and LJ04 250 ms. It
    /// only affects our own retransmissions, and 200 ms (Linux) recovers from
    /// a lost tail without a long stall.
    pub min_rto: Duration,
    /// RTO before the first RTT sample (RFC 6298: 1 s).
    pub initial_rto: Duration,
    /// RTO ceiling after back-off (while connecting the ceiling is 3 s, as
    /// in LJ04/NICE, or this if lower).
    pub max_rto: Duration,
    /// Delayed-ACK timer for a lone full-sized segment. Every second segment
    /// and every short segment (the end of a write) are acked at once.
    pub ack_delay: Duration,
    /// Nagle's algorithm (libjingle always; NICE and gshare off).
    pub nagle: bool,
    /// HyStart++ (RFC 9406): leave slow start when the RTT grows.
    pub hystart: bool,
    /// Between gshare peers (both offer SACK): the model-based sender
    /// (BBR-family controller, RACK-TLP loss detection with DSACK, pacing).
    /// Off: the classic Reno-family sender, as with libjingle/libnice
    /// peers. Classic peers always get the classic sender.
    pub model_based: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            conversation: 0,
            send_buffer: 4 << 20,
            recv_buffer: 4 << 20,
            max_datagram_size: 1400,
            compat_mtu: 1400,
            window_scaling: true,
            gshare_option: true,
            sack: true,
            min_rto: Duration::from_millis(200),
            initial_rto: Duration::from_secs(1),
            max_rto: Duration::from_secs(60),
            ack_delay: Duration::from_millis(40),
            nagle: false,
            hystart: true,
            model_based: true,
        }
    }
}

impl Config {
    /// libnice/libjingle-compatible settings: no private option, 60 KiB
    /// receive and 90 KiB send buffers, MTU 1400. Useful to emulate a
    /// reference peer in tests.
    pub fn compat() -> Config {
        Config {
            send_buffer: 92160,
            recv_buffer: 61440,
            gshare_option: false,
            ..Config::default()
        }
    }
}

/// Connection state (RFC 793 names; no FIN states since no FIN is used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for the peer's CONNECT (passive open).
    Listen,
    /// Our CONNECT is out, the peer's not yet seen.
    SynSent,
    /// Peer's CONNECT seen, ours sent, waiting for its acknowledgement.
    SynReceived,
    /// Data may flow.
    Established,
    /// Closed locally, by RST, or aborted.
    Closed,
}

/// Something the application should know about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The connection is established; `send` is possible.
    Connected,
    /// New data can be read.
    Readable,
    /// Send buffer space became free after `send` had been short.
    Writable,
    /// The connection ended: `None` after a local close, otherwise why.
    Closed(Option<Error>),
}

/// Errors of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Send buffer full, or nothing to read yet.
    #[error("operation would block")]
    WouldBlock,
    /// Not established (yet or any more).
    #[error("not connected")]
    NotConnected,
    /// `connect` called when not in LISTEN.
    #[error("connection already opened")]
    AlreadyOpen,
    /// A segment was retransmitted the maximum number of times.
    #[error("connection aborted: peer stopped acknowledging (retransmission limit)")]
    ConnectionAborted,
    /// The peer's window stayed closed and it stopped answering probes.
    #[error("connection timed out: peer's window stayed closed")]
    TimedOut,
    /// The peer sent RST.
    #[error("connection reset by peer")]
    ConnectionReset,
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        use std::io::ErrorKind as K;
        let kind = match e {
            Error::WouldBlock => K::WouldBlock,
            Error::NotConnected => K::NotConnected,
            Error::AlreadyOpen => K::AlreadyExists,
            Error::ConnectionAborted => K::ConnectionAborted,
            Error::TimedOut => K::TimedOut,
            Error::ConnectionReset => K::ConnectionReset,
        };
        std::io::Error::new(kind, e)
    }
}

/// Counters for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Segments sent (all kinds).
    pub segments_sent: u64,
    /// Segments carrying payload sent for the first time.
    pub data_segments_sent: u64,
    /// Retransmitted segments (timeout, fast retransmit, go-back-N).
    pub retransmits: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
    /// Fast-recovery episodes.
    pub fast_recoveries: u64,
    /// Segments received and accepted for processing.
    pub segments_received: u64,
    /// Datagrams dropped as malformed or of another conversation.
    pub dropped: u64,
}

/// One PseudoTCP connection. See the module docs of [`super`] for the model.
#[derive(Debug)]
pub struct PseudoTcp {
    cfg: Config,
    epoch: Instant,
    state: State,
    /// `close(false)` called: finish sending, discard incoming data.
    closing: bool,
    closed_reason: Option<Error>,
    events: VecDeque<Event>,
    stats: Stats,

    // ---- send side (offsets are 64-bit, low 32 bits go on the wire) ----
    sbuf: SendBuffer,
    /// Length of our CONNECT (its bytes occupy `[0, ctl_len)`); 0 = not queued.
    ctl_len: u64,
    snd_una: u64,
    /// Next offset to transmit; moved back to `snd_una` after a timeout.
    snd_nxt: u64,
    /// Highest offset ever transmitted.
    snd_max: u64,
    /// Peer's window in bytes, and its raw field (for duplicate-ack tests).
    snd_wnd: u64,
    snd_wnd_raw: u16,
    /// Shift applied to the peer's window field.
    swnd_scale: u8,
    mss: usize,
    cwnd: u64,
    ssthresh: u64,
    /// Bytes acked since cwnd last grew by one mss in congestion avoidance.
    cwnd_acc: u64,
    hystart: HyStart,
    dup_acks: u32,
    in_recovery: bool,
    /// Both ends understand gshare SACK.
    sack_ok: bool,
    /// Ranges the peer selectively acknowledged (above `snd_una`; at most
    /// `MAX_SACK_RANGES`).
    sacked: RangeSet,
    /// Retransmissions during SACK recovery have covered up to here.
    high_rxt: u64,
    /// `snd_max` when fast recovery began (RFC 6582 `recover`).
    recover: u64,
    /// `snd_max` at the last timeout: duplicate acks below it are caused by
    /// the go-back-N resend and must not start fast recovery.
    rto_recover: u64,
    rtt: RttEstimator,
    rto_deadline: Option<Instant>,
    /// Transmissions of the segment at `snd_una`.
    head_xmits: u32,
    /// Retransmit the segment at `snd_una` on the next `poll_transmit`.
    rexmit_head: bool,
    last_data_sent: Option<Instant>,
    last_recv: Instant,
    probe_deadline: Option<Instant>,
    probe_interval: Duration,
    probe_due: bool,
    rst_due: bool,
    /// `send` was short; report `Writable` when space frees up.
    write_armed: bool,

    // ---- gshare-mode sender (`modern`): see `recovery`, `cc`, `pacer` ----
    /// The model-based sender runs (both ends gshare with SACK).
    modern: bool,
    board: Scoreboard,
    cc: Option<Box<dyn Controller>>,
    pacer: Pacer,
    /// The pacer holds a segment back until then.
    pacer_deadline: Option<Instant>,
    /// Tail-loss probe timer (RFC 8985 §7), and a probe to send.
    tlp_deadline: Option<Instant>,
    tlp_due: bool,

    // ---- receive side ----
    rbuf: RecvBuffer,
    /// A duplicate segment to report first in the next SACK (RFC 2883).
    dsack: Option<(u64, u64)>,
    peer_connected: bool,
    /// Scale we put in our CONNECT, and the one actually applied to our
    /// window field (0 when the peer did not offer scaling).
    offered_scale: u8,
    rwnd_scale: u8,
    peer_gshare: Option<GshareOption>,
    ts_recent: u32,
    /// `rcv_nxt` carried by the last segment we sent.
    ts_lastack: u64,
    ack_now: bool,
    /// A pure (duplicate) ack must go out: piggybacking on data would hide
    /// it from the peer's fast-retransmit logic.
    dupack_due: bool,
    /// Start of the out-of-order range touched last (its SACK block first).
    last_ooo: u64,
    ack_deadline: Option<Instant>,
    /// Full-sized segments received since our last ack.
    unacked_segments: u32,
    /// Largest payload seen from the peer (its likely mss).
    peer_seg_size: usize,
    /// Window (bytes) we last advertised.
    last_adv_wnd: u64,
    read_armed: bool,
}

/// Maps a 32-bit wire number to the 64-bit offset nearest to `reference`.
#[inline]
fn unwrap32(reference: u64, wire: u32) -> u64 {
    let diff = wire.wrapping_sub(reference as u32) as i32 as i64;
    (reference as i64).wrapping_add(diff).max(0) as u64
}

impl PseudoTcp {
    /// A new connection in LISTEN. Feed it datagrams for a passive open, or
    /// call [`connect`](Self::connect) for an active one.
    pub fn new(config: Config, now: Instant) -> PseudoTcp {
        let mut cfg = config;
        cfg.send_buffer = cfg.send_buffer.max(1024);
        cfg.recv_buffer = cfg.recv_buffer.max(1024);
        cfg.min_rto = cfg.min_rto.max(Duration::from_millis(1));
        cfg.max_rto = cfg.max_rto.max(cfg.min_rto);
        let mut offered_scale = 0u8;
        if cfg.window_scaling {
            let mut size = cfg.recv_buffer;
            while size > 0xffff && offered_scale < 14 {
                size >>= 1;
                offered_scale += 1;
            }
            cfg.recv_buffer = cfg.recv_buffer.min(0xffff << offered_scale);
        }
        let rto = cfg.initial_rto;
        PseudoTcp {
            sbuf: SendBuffer::new(cfg.send_buffer),
            rbuf: RecvBuffer::new(cfg.recv_buffer),
            epoch: now,
            state: State::Listen,
            closing: false,
            closed_reason: None,
            events: VecDeque::new(),
            stats: Stats::default(),
            ctl_len: 0,
            snd_una: 0,
            snd_nxt: 0,
            snd_max: 0,
            snd_wnd: 0,
            snd_wnd_raw: 0,
            swnd_scale: 0,
            mss: MIN_MTU - PACKET_OVERHEAD,
            cwnd: 0,
            ssthresh: u64::MAX,
            cwnd_acc: 0,
            hystart: HyStart::default(),
            dup_acks: 0,
            in_recovery: false,
            sack_ok: false,
            sacked: RangeSet::new(MAX_SACK_RANGES),
            high_rxt: 0,
            recover: 0,
            rto_recover: 0,
            rtt: RttEstimator::new(rto, cfg.min_rto, cfg.max_rto),
            modern: false,
            board: Scoreboard::new(),
            cc: None,
            pacer: Pacer::new(),
            pacer_deadline: None,
            tlp_deadline: None,
            tlp_due: false,
            dsack: None,
            rto_deadline: None,
            head_xmits: 0,
            rexmit_head: false,
            last_data_sent: None,
            last_recv: now,
            probe_deadline: None,
            probe_interval: rto,
            probe_due: false,
            rst_due: false,
            write_armed: false,
            peer_connected: false,
            offered_scale,
            rwnd_scale: offered_scale,
            peer_gshare: None,
            ts_recent: 0,
            ts_lastack: 0,
            ack_now: false,
            dupack_due: false,
            last_ooo: 0,
            ack_deadline: None,
            unacked_segments: 0,
            peer_seg_size: 0,
            last_adv_wnd: 0,
            read_armed: true,
            cfg,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Payload bytes per segment we send (valid once established).
    pub fn mss(&self) -> usize {
        self.mss
    }

    /// Whether the peer announced itself as gshare.
    pub fn peer_is_gshare(&self) -> bool {
        self.peer_gshare.is_some()
    }

    /// Window scale shifts in use: (ours on the wire, the peer's).
    pub fn window_scales(&self) -> (u8, u8) {
        (self.rwnd_scale, self.swnd_scale)
    }

    /// Congestion window in bytes.
    pub fn cwnd(&self) -> u64 {
        match &self.cc {
            Some(cc) => cc.cwnd(),
            None => self.cwnd,
        }
    }

    /// Which sender runs: "bbr" between gshare peers, else "classic".
    pub fn controller(&self) -> &'static str {
        self.cc.as_ref().map_or("classic", |c| c.name())
    }

    /// Pacing rate in force (bytes/s), if the sender paces.
    pub fn pacing_rate(&self) -> Option<u64> {
        self.pacer.rate()
    }

    /// Current retransmission timeout.
    pub fn rto(&self) -> Duration {
        self.rtt.rto()
    }

    /// Smoothed RTT, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }

    /// Bytes queued for sending and not yet acknowledged by the peer.
    pub fn send_buffered(&self) -> usize {
        self.sbuf
            .end()
            .saturating_sub(self.snd_una.max(self.ctl_len)) as usize
    }

    /// Free space in the send buffer.
    pub fn send_capacity(&self) -> usize {
        self.sbuf.free()
    }

    /// Bytes ready to be read.
    pub fn recv_buffered(&self) -> usize {
        self.rbuf.readable()
    }

    /// Active open: queue our CONNECT. Works against a passive peer and in a
    /// simultaneous open (libnice opens from both sides).
    pub fn connect(&mut self, now: Instant) -> Result<(), Error> {
        if self.state != State::Listen {
            return Err(Error::AlreadyOpen);
        }
        self.last_recv = now;
        self.queue_connect();
        self.set_state(State::SynSent);
        Ok(())
    }

    fn queue_connect(&mut self) {
        let scale = self.cfg.window_scaling.then_some(self.offered_scale);
        let gshare = self.cfg.gshare_option.then(|| GshareOption {
            version: GSHARE_OPT_VERSION,
            features: if self.cfg.sack { FEATURE_SACK } else { 0 },
            max_datagram: self.cfg.max_datagram_size.min(0xffff) as u16,
        });
        let payload = connect_payload(scale, gshare);
        let n = self.sbuf.push(&payload);
        debug_assert_eq!(n, payload.len());
        self.ctl_len = n as u64;
    }

    fn set_state(&mut self, s: State) {
        if self.state != s {
            debug!(from = ?self.state, to = ?s, "pseudotcp state");
            self.state = s;
        }
    }

    fn now_ms(&self, now: Instant) -> u32 {
        // +1 so that the first timestamp is never 0 (0 means "no echo").
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u32;
        match ms.wrapping_add(1) {
            0 => 1,
            t => t,
        }
    }

    /// Queue bytes for sending. Returns how many were taken; `WouldBlock` if
    /// the buffer is full, `NotConnected` before establishment or after close.
    pub fn send(&mut self, data: &[u8]) -> Result<usize, Error> {
        if self.state != State::Established || self.closing {
            return Err(Error::NotConnected);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let n = self.sbuf.push(data);
        if n < data.len() {
            self.write_armed = true;
        }
        if n == 0 {
            return Err(Error::WouldBlock);
        }
        Ok(n)
    }

    /// Read received bytes. `WouldBlock` when nothing is buffered yet;
    /// after the connection closed, buffered bytes are still delivered and
    /// then `Ok(0)` (local close) or the error that ended it.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut at = 0;
        self.recv_with(buf.len(), |s| {
            buf[at..at + s.len()].copy_from_slice(s);
            at += s.len();
        })
    }

    /// Like [`recv`](Self::recv), but hands up to `max` bytes to `f` as (at
    /// most two) slices, so the caller can copy straight into uninitialised
    /// memory (a tokio `ReadBuf`) without zeroing it first.
    pub fn recv_with(&mut self, max: usize, f: impl FnMut(&[u8])) -> Result<usize, Error> {
        if max == 0 {
            return Ok(0);
        }
        let n = self.rbuf.read_with(max, f);
        if self.rbuf.readable() == 0 {
            self.read_armed = true;
        }
        if n > 0 {
            self.maybe_window_update();
            return Ok(n);
        }
        match self.state {
            State::Closed => match self.closed_reason {
                Some(e) => Err(e),
                None => Ok(0),
            },
            _ if self.closing => Ok(0),
            _ => Err(Error::WouldBlock),
        }
    }

    /// Why the connection closed: `None` while open or after a local close.
    pub fn close_reason(&self) -> Option<Error> {
        self.closed_reason
    }

    /// After the application read: if the window we advertised had shrunk a
    /// lot and has now opened by at least two segments (or half the buffer),
    /// tell the peer at once (receiver-side silly-window avoidance, RFC 1122).
    fn maybe_window_update(&mut self) {
        if !self.peer_connected || self.state == State::Closed {
            return;
        }
        let cap = self.rbuf.capacity() as u64;
        let (_, wnd) = self.adv_window();
        let step = (2 * self.peer_seg_size.max(self.mss) as u64).min(cap / 2);
        if self.last_adv_wnd < cap / 2 && wnd >= self.last_adv_wnd + step {
            self.ack_now = true;
        }
    }

    /// Next event for the application, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Close. `force`: stop at once (sending one RST if established; libnice
    /// and libjingle close with ECONNRESET on it). Otherwise graceful, as
    /// libjingle: keep sending until everything queued is acknowledged, then
    /// close; nothing is signalled to the peer, and incoming data is acked
    /// but discarded.
    pub fn close(&mut self, force: bool) {
        match self.state {
            State::Closed => {}
            State::Listen | State::SynSent => self.finish(None),
            State::SynReceived | State::Established if force => {
                self.rst_due = true;
                self.finish(None);
            }
            State::SynReceived | State::Established => {
                self.closing = true;
                self.check_graceful_close();
            }
        }
    }

    fn check_graceful_close(&mut self) {
        if self.closing
            && self.state != State::Closed
            && self.snd_una >= self.sbuf.end()
            && !self.ack_now
            && self.ack_deadline.is_none()
        {
            self.finish(None);
        }
    }

    fn finish(&mut self, reason: Option<Error>) {
        if self.state == State::Closed {
            return;
        }
        match reason {
            Some(e) => debug!(error = %e, "pseudotcp closed"),
            None => debug!("pseudotcp closed"),
        }
        self.set_state(State::Closed);
        self.closed_reason = reason;
        self.rto_deadline = None;
        self.ack_deadline = None;
        self.probe_deadline = None;
        self.ack_now = false;
        self.dupack_due = false;
        self.rexmit_head = false;
        self.probe_due = false;
        self.events.push_back(Event::Closed(reason));
    }

    /// Earliest instant at which [`handle_timeout`](Self::handle_timeout)
    /// has work; `None` when closed and idle.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        [
            self.rto_deadline,
            self.ack_deadline,
            self.probe_deadline,
            self.board.rack_deadline,
            self.tlp_deadline,
            self.pacer_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Run timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        if self.rto_deadline.is_some_and(|d| d <= now) {
            self.on_rto(now);
            if self.state == State::Closed {
                return;
            }
        }
        if self.ack_deadline.is_some_and(|d| d <= now) {
            self.ack_deadline = None;
            self.ack_now = true;
        }
        if self.pacer_deadline.is_some_and(|d| d <= now) {
            // poll_transmit sends what the pacer held back.
            self.pacer_deadline = None;
        }
        if self.board.rack_deadline.is_some_and(|d| d <= now) {
            let lost = self.rack_detect(now);
            if lost > 0 {
                self.cc_update(now, 0, lost, None, None, false);
            }
        }
        if self.tlp_deadline.is_some_and(|d| d <= now) {
            self.tlp_deadline = None;
            if self.modern && self.snd_una < self.snd_max {
                self.tlp_due = true;
            }
        }
        if self.probe_deadline.is_some_and(|d| d <= now) {
            self.probe_deadline = None;
            if self.snd_wnd == 0 && self.snd_nxt < self.sbuf.end() && self.snd_nxt == self.snd_una {
                if now.saturating_duration_since(self.last_recv) >= ZERO_WINDOW_TIMEOUT {
                    self.finish(Some(Error::TimedOut));
                    return;
                }
                self.probe_due = true;
                self.probe_deadline = Some(now + self.probe_interval);
                self.probe_interval = (self.probe_interval * 2).min(MAX_PROBE_INTERVAL);
            }
        }
    }

    fn on_rto(&mut self, now: Instant) {
        self.rto_deadline = None;
        if self.snd_una >= self.snd_max {
            return;
        }
        let limit = if self.state == State::Established {
            MAX_XMIT_ESTABLISHED
        } else {
            MAX_XMIT_CONNECTING
        };
        if self.head_xmits >= limit {
            debug!(xmits = self.head_xmits, "too many retransmissions");
            self.finish(Some(Error::ConnectionAborted));
            return;
        }
        self.stats.timeouts += 1;
        if self.modern {
            self.on_rto_modern(now);
            return;
        }
        let flight = self.snd_max - self.snd_una;
        trace!(rto = ?self.rtt.rto(), flight, "retransmission timeout");
        if self.state == State::Established {
            self.ssthresh = (flight / 2).max(2 * self.mss as u64);
            self.cwnd = self.mss as u64;
            self.cwnd_acc = 0;
            self.hystart.css_baseline_us = None;
        }
        self.in_recovery = false;
        self.dup_acks = 0;
        // Forget SACK information (RFC 2018 §8: the receiver may renege).
        self.sacked.clear();
        // Avoid a spurious fast retransmit from the duplicates the go-back-N
        // resend will cause (RFC 6582 §4.1).
        self.rto_recover = self.snd_max;
        // Go back N: without SACK we cannot know what else was lost, and
        // resending in order under a fresh slow start repairs every hole in
        // a few round trips instead of one RTO per hole.
        self.snd_nxt = self.snd_una;
        self.rexmit_head = true;
        let cap = if self.state == State::Established {
            self.cfg.max_rto
        } else {
            MAX_RTO_CONNECTING.min(self.cfg.max_rto)
        };
        self.rtt.back_off(cap);
        self.rto_deadline = Some(now + self.rtt.rto());
    }

    /// Feed one received datagram. Malformed ones, other conversations, and
    /// anything arriving after close are dropped; it never panics.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        let Some((h, payload)) = Header::decode(datagram) else {
            self.stats.dropped += 1;
            return;
        };
        if h.conv != self.cfg.conversation || self.state == State::Closed {
            self.stats.dropped += 1;
            return;
        }
        self.stats.segments_received += 1;
        trace!(
            seq = h.seq,
            ack = h.ack,
            flags = h.flags,
            wnd = h.wnd,
            len = payload.len(),
            "pseudotcp recv"
        );
        if h.flags & FLAG_RST != 0 {
            if self.state != State::Listen {
                self.finish(Some(Error::ConnectionReset));
            }
            return;
        }
        self.last_recv = now;

        let mut is_connect = false;
        let is_sack = h.flags & FLAG_SACK != 0;
        if is_sack && !self.sack_ok {
            // Only sent to peers that offered it; anything else is bogus.
            self.stats.dropped += 1;
            return;
        }
        if h.flags & FLAG_CTL != 0 {
            match payload.first() {
                Some(&super::segment::CTL_CONNECT) => is_connect = true,
                _ => {
                    self.stats.dropped += 1;
                    return;
                }
            }
            if !self.on_connect(now, &h, payload) {
                return;
            }
        } else if !self.peer_connected {
            // Nothing but a CONNECT makes sense before the peer's CONNECT;
            // data cannot be placed before its control bytes are known.
            if self.state != State::Listen && !payload.is_empty() {
                self.ack_now = true;
            }
            return;
        }

        let seq = unwrap32(self.rbuf.nxt(), h.seq);
        // Timestamp to echo: from the segment covering what we last acked.
        if seq <= self.ts_lastack && self.ts_lastack < seq + payload.len() as u64 {
            self.ts_recent = h.tsval;
        }

        if self.modern && self.state == State::Established {
            let mut blocks = [(0u64, 0u64); MAX_SACK_BLOCKS];
            let mut n = 0;
            if is_sack {
                for (s, e) in decode_sack(payload) {
                    let s = unwrap32(self.snd_una, s);
                    let e = unwrap32(self.snd_una, e).min(self.snd_max);
                    if s < e {
                        blocks[n] = (s, e);
                        n += 1;
                    }
                }
            }
            self.process_ack_modern(now, &h, &blocks[..n]);
        } else {
            if is_sack {
                self.take_sack(payload);
            }
            self.process_ack(now, &h, (payload.is_empty() || is_sack) && !is_connect);
        }

        if self.state == State::SynReceived && self.snd_una >= self.ctl_len {
            self.on_established();
        }
        if self.state == State::Closed {
            return;
        }

        if !is_connect && !is_sack {
            self.process_data(now, seq, payload);
        }
        self.check_graceful_close();
    }

    /// Handles a CONNECT; false if the segment should be ignored entirely.
    fn on_connect(&mut self, _now: Instant, h: &Header, payload: &[u8]) -> bool {
        if self.peer_connected {
            // A retransmitted CONNECT: ours to it was lost or delayed.
            self.ack_now = true;
            return true;
        }
        if h.seq != 0 {
            self.stats.dropped += 1;
            return false;
        }
        let opts = ConnectOptions::parse(payload.get(1..).unwrap_or_default());
        debug!(?opts, "peer CONNECT");
        match opts.window_scale {
            Some(s) if self.cfg.window_scaling => {
                self.swnd_scale = s;
                self.rwnd_scale = self.offered_scale;
            }
            _ => {
                self.swnd_scale = 0;
                self.rwnd_scale = 0;
            }
        }
        self.peer_gshare = opts.gshare.filter(|_| self.cfg.gshare_option);
        self.sack_ok = self.cfg.sack
            && self
                .peer_gshare
                .is_some_and(|g| g.features & FEATURE_SACK != 0);
        self.peer_connected = true;
        self.rbuf.skip(payload.len() as u64);
        self.ts_recent = h.tsval;
        self.ack_now = true;
        match self.state {
            State::Listen => {
                self.queue_connect();
                self.set_state(State::SynReceived);
            }
            State::SynSent => self.on_established(),
            _ => {}
        }
        true
    }

    fn on_established(&mut self) {
        self.mss = match self.peer_gshare {
            // Between gshare peers the datagram size already excludes the IP
            // and UDP headers (it is what the datagram layer takes), so only
            // our 24-byte header comes off: 1448 on a 1500-byte path (1472).
            Some(g) => {
                self.cfg
                    .max_datagram_size
                    .min(usize::from(g.max_datagram))
                    .clamp(MIN_MTU, super::segment::MAX_DATAGRAM)
                    - HEADER_SIZE
            }
            // libjingle/libnice: their fixed allowance (§C.4), byte for byte.
            None => {
                self.cfg
                    .max_datagram_size
                    .min(self.cfg.compat_mtu)
                    .clamp(MIN_MTU, super::segment::MAX_DATAGRAM)
                    - PACKET_OVERHEAD
            }
        };
        let mss = self.mss as u64;
        // RFC 6928 initial window.
        self.cwnd = (10 * mss).min((2 * mss).max(14600));
        self.ssthresh = u64::MAX;
        debug!(
            mss = self.mss,
            gshare = self.peer_gshare.is_some(),
            rscale = self.rwnd_scale,
            sscale = self.swnd_scale,
            "pseudotcp established"
        );
        if self.cfg.model_based && self.sack_ok && self.peer_gshare.is_some() {
            self.modern = true;
            self.cc = Some(Box::new(Bbr::new(self.mss, self.cwnd)));
        }
        self.set_state(State::Established);
        self.events.push_back(Event::Connected);
    }

    fn take_sack(&mut self, payload: &[u8]) {
        for (s, e) in decode_sack(payload) {
            let s = unwrap32(self.snd_una, s).max(self.snd_una);
            let e = unwrap32(self.snd_una, e).min(self.snd_max);
            if s < e {
                self.sacked.insert(s, e);
            }
        }
    }

    fn process_ack(&mut self, now: Instant, h: &Header, pure_ack: bool) {
        let ack = unwrap32(self.snd_una, h.ack);
        let wnd = u64::from(h.wnd) << self.swnd_scale;
        if ack > self.snd_una && ack <= self.snd_max {
            if h.tsecr != 0 {
                let rtt_ms = self.now_ms(now).wrapping_sub(h.tsecr) as i32;
                if rtt_ms >= 0 {
                    let r = u64::from(rtt_ms as u32) * 1000;
                    self.rtt.sample(r);
                    if self.cfg.hystart && self.cwnd < self.ssthresh && !self.in_recovery {
                        self.hystart_sample(r);
                    }
                }
            }
            self.snd_wnd = wnd;
            self.snd_wnd_raw = h.wnd;
            let acked = ack - self.snd_una;
            self.snd_una = ack;
            self.sbuf.ack_to(ack);
            if self.snd_nxt < ack {
                self.snd_nxt = ack;
            }
            self.sacked.remove_below(ack);
            self.head_xmits = u32::from(self.snd_una < self.snd_max);
            self.rto_deadline = (self.snd_una < self.snd_max).then(|| now + self.rtt.rto());
            if self.state == State::Established {
                self.on_new_ack(acked);
            }
            if self.write_armed && self.sbuf.free() >= self.sbuf.capacity() / 2 {
                self.write_armed = false;
                self.events.push_back(Event::Writable);
            }
        } else if ack == self.snd_una {
            let wnd_changed = h.wnd != self.snd_wnd_raw;
            self.snd_wnd = wnd;
            self.snd_wnd_raw = h.wnd;
            if pure_ack
                && !wnd_changed
                && self.snd_una < self.snd_max
                && self.state == State::Established
            {
                self.on_dup_ack();
            }
        }
        if self.sack_ok
            && !self.in_recovery
            && self.state == State::Established
            && self.snd_una > self.rto_recover
            && self.sack_lost_end() > self.snd_una
        {
            // Enough selectively acknowledged above the first hole to call
            // it lost (RFC 6675 IsLost) even without three duplicates.
            self.enter_recovery();
        }
        // Zero-window probing: only when the window is closed and nothing
        // is in flight (otherwise the retransmission timer covers it).
        if self.snd_wnd == 0 && self.snd_nxt < self.sbuf.end() && self.snd_una == self.snd_max {
            if self.probe_deadline.is_none() {
                self.probe_interval = self.rtt.rto();
                self.probe_deadline = Some(now + self.probe_interval);
            }
        } else {
            self.probe_deadline = None;
        }
    }

    fn hystart_sample(&mut self, r: u64) {
        let hs = &mut self.hystart;
        hs.round_min_us = Some(hs.round_min_us.map_or(r, |m| m.min(r)));
        hs.samples += 1;
        let (Some(cur), Some(last)) = (hs.round_min_us, hs.last_round_min_us) else {
            return;
        };
        if hs.samples < HS_MIN_SAMPLES {
            return;
        }
        match hs.css_baseline_us {
            None => {
                let eta = (last / 8).clamp(HS_MIN_ETA_US, HS_MAX_ETA_US);
                if cur >= last + eta {
                    trace!(cur, last, cwnd = self.cwnd, "hystart: delay increase, CSS");
                    hs.css_baseline_us = Some(cur);
                    hs.css_rounds = 0;
                }
            }
            Some(base) if cur < base => {
                // False alarm: back to standard slow start.
                hs.css_baseline_us = None;
            }
            Some(_) => {}
        }
    }

    /// Round bookkeeping for HyStart++; called on every new ack.
    fn hystart_round(&mut self) {
        if self.snd_una < self.hystart.window_end {
            return;
        }
        let hs = &mut self.hystart;
        hs.window_end = self.snd_max;
        if hs.round_min_us.is_some() {
            hs.last_round_min_us = hs.round_min_us;
        }
        hs.round_min_us = None;
        hs.samples = 0;
        if hs.css_baseline_us.is_some() {
            hs.css_rounds += 1;
            if hs.css_rounds >= HS_CSS_ROUNDS {
                // Enough: congestion avoidance from here on.
                self.ssthresh = self.cwnd;
                hs.css_baseline_us = None;
            }
        }
    }

    fn on_new_ack(&mut self, acked: u64) {
        let mss = self.mss as u64;
        if self.in_recovery {
            if self.snd_una >= self.recover {
                // Full acknowledgement: leave fast recovery (RFC 6582 §3.2 6).
                let flight = self.snd_max - self.snd_una;
                self.cwnd = self.ssthresh.min(flight.max(mss) + mss);
                self.in_recovery = false;
                self.dup_acks = 0;
            } else if !self.sack_ok {
                // NewReno partial ack: the next hole is lost too; resend it
                // now and deflate the window by what left the network.
                self.rexmit_head = true;
                self.cwnd = self.cwnd.saturating_sub(acked) + mss;
                self.cwnd = self.cwnd.max(mss);
            }
            // With SACK, the pipe estimate drives what is sent next.
            return;
        }
        self.dup_acks = 0;
        // Grow only while the window is actually used (RFC 7661 spirit): an
        // application- or receiver-limited sender must not inflate cwnd.
        let flight_before = self.snd_max - self.snd_una + acked;
        if 2 * flight_before < self.cwnd {
            return;
        }
        self.hystart_round();
        if self.cwnd < self.ssthresh {
            // Slow start with appropriate byte counting, L = 2 (RFC 3465);
            // a quarter of that in HyStart++'s conservative slow start.
            let mut inc = acked.min(2 * mss);
            if self.hystart.css_baseline_us.is_some() {
                inc = (inc / HS_CSS_DIVISOR).max(1);
            }
            self.cwnd += inc;
        } else {
            // Congestion avoidance: one mss per window's worth of acked bytes.
            self.cwnd_acc += acked;
            if self.cwnd_acc >= self.cwnd {
                self.cwnd_acc -= self.cwnd;
                self.cwnd += mss;
            }
        }
    }

    fn on_dup_ack(&mut self) {
        self.dup_acks += 1;
        if self.in_recovery {
            if !self.sack_ok {
                // Each further duplicate means a segment left the network.
                self.cwnd += self.mss as u64;
            }
        } else if self.dup_acks == 3 && self.snd_una > self.rto_recover {
            self.enter_recovery();
        }
    }

    fn enter_recovery(&mut self) {
        let mss = self.mss as u64;
        let flight = self.snd_max - self.snd_una;
        self.ssthresh = (flight / 2).max(2 * mss);
        self.cwnd = if self.sack_ok {
            self.ssthresh
        } else {
            self.ssthresh + 3 * mss
        };
        self.cwnd_acc = 0;
        self.hystart.css_baseline_us = None;
        self.recover = self.snd_max;
        self.high_rxt = self.snd_una;
        self.in_recovery = true;
        self.rexmit_head = true;
        self.stats.fast_recoveries += 1;
        trace!(flight, sack = self.sack_ok, "fast retransmit");
    }

    /// End of the region whose holes count as lost: below a point with at
    /// least three segments' worth (or three blocks) of SACKed data above
    /// (RFC 6675 IsLost). During recovery the first hole is always lost
    /// (a partial ack points at it, as in NewReno).
    fn sack_lost_end(&self) -> u64 {
        let mss = self.mss as u64;
        let mut above = 0u64;
        let mut lost_end = self.snd_una;
        for (n, (s, e)) in self.sacked.iter().rev().enumerate() {
            above += e - s;
            if above >= 3 * mss || n + 1 >= 3 {
                lost_end = s;
                break;
            }
        }
        if self.in_recovery {
            let first_hole_end = self.sacked.first().map_or(self.snd_max, |r| r.0);
            lost_end = lost_end.max(first_hole_end.min(self.snd_una + mss));
        }
        lost_end
    }

    /// SACK recovery: (pipe, next lost range to retransmit).
    ///
    /// Cost: O(log n) plus one step per SACKed range between the
    /// retransmission point and the end of the lost region (the holes still
    /// to repair), never a walk over the whole scoreboard.
    fn sack_pipe(&self) -> (u64, Option<(u64, u64)>) {
        let lost_end = self.sack_lost_end();
        let from = self.high_rxt.max(self.snd_una);
        let mut lost_pending = 0;
        let mut next = None;
        if from < lost_end {
            let mut hole_start = from;
            for (s, e) in self
                .sacked
                .iter_from(from)
                .chain(std::iter::once((self.snd_max, self.snd_max)))
            {
                // hole [hole_start, s), its lost and not yet resent part:
                let a = hole_start.max(from);
                let b = s.min(lost_end);
                if a < b {
                    lost_pending += b - a;
                    if next.is_none() {
                        next = Some((a, b));
                    }
                }
                if s >= lost_end {
                    break;
                }
                hole_start = e;
            }
        }
        let outstanding = self.snd_max - self.snd_una;
        let pipe = outstanding.saturating_sub(self.sacked.bytes() + lost_pending);
        (pipe, next)
    }

    // ---- the gshare-mode sender (`modern`) ----

    /// An acknowledgement in gshare mode: the scoreboard takes the
    /// cumulative ack and SACK blocks, RACK looks for losses, the
    /// controller updates its model, the pacer its rate.
    fn process_ack_modern(&mut self, now: Instant, h: &Header, blocks: &[(u64, u64)]) {
        let ack = unwrap32(self.snd_una, h.ack);
        let wnd = u64::from(h.wnd) << self.swnd_scale;
        if ack > self.snd_una && ack <= self.snd_max {
            self.snd_wnd = wnd;
            self.snd_wnd_raw = h.wnd;
            self.snd_una = ack;
            self.sbuf.ack_to(ack);
            if self.snd_nxt < ack {
                self.snd_nxt = ack;
            }
            self.head_xmits = u32::from(self.snd_una < self.snd_max);
            if self.write_armed && self.sbuf.free() >= self.sbuf.capacity() / 2 {
                self.write_armed = false;
                self.events.push_back(Event::Writable);
            }
        } else if ack == self.snd_una {
            self.snd_wnd = wnd;
            self.snd_wnd_raw = h.wnd;
        }
        let out = self
            .board
            .on_ack(now, self.snd_una, blocks, self.rtt.min_rtt());
        if let Some(r) = out.rtt {
            self.rtt.sample(r.as_micros() as u64);
        }
        let lost = self.rack_detect(now);
        if out.delivered > 0 || lost > 0 {
            self.cc_update(now, out.delivered, lost, out.rtt, out.rate, out.round_start);
        }
        if out.delivered > 0 {
            // Forward progress (cumulative or selective) restarts the
            // timers: RACK repairs holes; the RTO is only the backstop.
            self.rto_deadline = (self.snd_una < self.snd_max).then(|| now + self.rtt.rto());
            self.tlp_deadline = (self.snd_una < self.snd_max).then(|| now + self.pto());
        }
        if self.snd_una >= self.snd_max {
            self.rto_deadline = None;
            self.tlp_deadline = None;
        }
        if self.snd_wnd == 0 && self.snd_nxt < self.sbuf.end() && self.snd_una == self.snd_max {
            if self.probe_deadline.is_none() {
                self.probe_interval = self.rtt.rto();
                self.probe_deadline = Some(now + self.probe_interval);
            }
        } else {
            self.probe_deadline = None;
        }
    }

    /// RACK loss detection; bytes newly marked lost.
    fn rack_detect(&mut self, now: Instant) -> u64 {
        match (self.rtt.min_rtt(), self.rtt.srtt()) {
            (Some(min), Some(srtt)) => {
                let lost = self.board.detect_loss(now, min, srtt);
                if lost > 0 {
                    self.stats.fast_recoveries += 1;
                }
                lost
            }
            _ => 0,
        }
    }

    fn cc_update(
        &mut self,
        now: Instant,
        delivered: u64,
        lost: u64,
        rtt: Option<Duration>,
        rate: Option<super::cc::RateSample>,
        round_start: bool,
    ) {
        let Some(cc) = self.cc.as_mut() else {
            return;
        };
        cc.on_ack(&AckSummary {
            now,
            delivered,
            lost,
            inflight: self.board.inflight(),
            rtt,
            rate,
            round_start,
        });
        self.pacer
            .set_rate(cc.pacing_rate(), self.mss, self.rtt.min_rtt());
    }

    /// Probe timeout (RFC 8985 §7.2): two smoothed RTTs, plus the peer's
    /// delayed-ack allowance when a single segment is in flight.
    fn pto(&self) -> Duration {
        let srtt = self.rtt.srtt().unwrap_or(self.rtt.rto() / 2);
        let mut pto = 2 * srtt;
        if self.board.inflight() <= self.mss as u64 {
            pto += self.cfg.ack_delay;
        }
        pto.max(Duration::from_millis(10)).min(self.rtt.rto())
    }

    fn on_rto_modern(&mut self, now: Instant) {
        trace!(rto = ?self.rtt.rto(), "retransmission timeout (gshare mode)");
        self.board.mark_all_lost();
        if let Some(cc) = self.cc.as_mut() {
            cc.on_rto(self.board.inflight());
        }
        if self.snd_una < self.ctl_len {
            // Our CONNECT is still unacknowledged (its ack was lost in a
            // simultaneous open): resend it, as the classic sender does;
            // the scoreboard only tracks data.
            self.rexmit_head = true;
        }
        self.tlp_deadline = None;
        self.tlp_due = false;
        self.rtt.back_off(self.cfg.max_rto);
        self.rto_deadline = Some(now + self.rtt.rto());
    }

    /// What to send next in gshare mode: a tail-loss probe, a segment RACK
    /// declared lost, else new data; within the controller's window and
    /// the pacer's budget.
    fn next_segment_modern(&mut self, now: Instant) -> Option<(u64, u8, usize)> {
        let mss = self.mss as u64;
        self.pacer_deadline = None;
        let rwnd_room = (self.snd_una + self.snd_wnd).saturating_sub(self.snd_nxt);
        let new_len = (self.sbuf.end() - self.snd_nxt).min(mss).min(rwnd_room);
        if self.tlp_due {
            // The probe goes regardless of window and pacer (RFC 8985 §7.3):
            // new data if there is some, else the last segment again.
            self.tlp_due = false;
            if new_len > 0 {
                return Some((self.snd_nxt, 0, new_len as usize));
            }
            self.board.probe_last();
        }
        let (seq, len) = if let Some((s, e)) = self.board.next_lost() {
            (s, e - s)
        } else if new_len > 0 {
            (self.snd_nxt, new_len)
        } else {
            if self.snd_nxt >= self.sbuf.end() {
                let cwnd = self.cc.as_ref().map_or(self.cwnd, |c| c.cwnd());
                if self.board.inflight() + mss <= cwnd {
                    self.board.set_app_limited();
                }
            }
            return None;
        };
        let cwnd = self.cc.as_ref().map_or(self.cwnd, |c| c.cwnd());
        let inflight = self.board.inflight();
        if inflight > 0 && inflight + len > cwnd {
            return None;
        }
        if let Some(t) = self.pacer.delay(now, len as usize) {
            self.pacer_deadline = Some(t);
            return None;
        }
        Some((seq, 0, len as usize))
    }

    fn process_data(&mut self, now: Instant, seq: u64, payload: &[u8]) {
        let nxt = self.rbuf.nxt();
        if payload.is_empty() {
            // A window probe (seq below rcv_nxt) must be answered; a pure
            // ack that is ahead of us (we miss data) needs nothing: answering
            // it could ping-pong with a peer that misses data too.
            if seq < nxt {
                self.ack_now = true;
            }
            return;
        }
        self.peer_seg_size = self.peer_seg_size.max(payload.len());
        if seq != nxt {
            // Out of order or old: immediate duplicate ack (fast retransmit).
            self.dupack_due = true;
            self.last_ooo = seq;
            if self.sack_ok {
                // Duplicate data: report it first in the next SACK (DSACK,
                // RFC 2883) so the sender can tell reordering from loss.
                // Senders that predate it clamp the block away.
                let end = seq + payload.len() as u64;
                if seq < nxt {
                    self.dsack = Some((seq, end.min(nxt)));
                } else if let Some(r) = self.rbuf.ooo_ranges().containing(seq)
                    && end <= r.1
                {
                    self.dsack = Some((seq, end));
                }
            }
        }
        if self.closing {
            // Graceful shutdown (LJ04): ack but discard.
            if seq <= nxt && seq + payload.len() as u64 > nxt {
                let n = seq + payload.len() as u64 - nxt;
                self.rbuf.skip_unread(n);
            }
            self.ack_now = true;
            return;
        }
        let had_gaps = self.rbuf.has_gaps();
        let advanced = self.rbuf.insert(seq, payload);
        if advanced == 0 {
            if seq == nxt {
                // Window full: tell the peer right away.
                self.ack_now = true;
            }
            return;
        }
        if had_gaps {
            // Filled (part of) a hole: ack at once so recovery proceeds.
            self.dupack_due = true;
        }
        if payload.len() < self.peer_seg_size.max(self.mss) {
            // Short segment: the end of a write; LJ04 with Nagle waits for it.
            self.ack_now = true;
        } else {
            self.unacked_segments += 1;
            if self.unacked_segments >= 2 {
                self.ack_now = true;
            } else if self.ack_deadline.is_none() {
                self.ack_deadline = Some(now + self.cfg.ack_delay);
            }
        }
        if self.read_armed {
            self.read_armed = false;
            self.events.push_back(Event::Readable);
        }
    }

    /// Window field and the byte count it stands for.
    fn adv_window(&self) -> (u16, u64) {
        let free = if self.closing {
            self.rbuf.capacity()
        } else {
            self.rbuf.free()
        } as u64;
        let field = (free >> self.rwnd_scale).min(0xffff);
        (field as u16, field << self.rwnd_scale)
    }

    /// Produce the next datagram to send into `buf` (cleared first); returns
    /// its length, or `None` when there is nothing to send now.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<usize> {
        buf.clear();
        if self.rst_due {
            self.rst_due = false;
            self.write_segment(now, buf, self.snd_nxt, FLAG_RST, 0);
            return Some(buf.len());
        }
        if self.state == State::Closed {
            return None;
        }
        if self.dupack_due {
            self.write_ack(now, buf);
            return Some(buf.len());
        }
        if self.rexmit_head {
            self.rexmit_head = false;
            if self.snd_una < self.snd_max {
                let seq = self.snd_una;
                let (flags, len) = self.segment_at(seq, self.mss);
                self.send_segment(now, buf, seq, flags, len);
                return Some(buf.len());
            }
        }
        if let Some((seq, flags, len)) = self.next_segment(now) {
            self.send_segment(now, buf, seq, flags, len);
            self.probe_deadline = None;
            return Some(buf.len());
        }
        if self.probe_due {
            self.probe_due = false;
            // A zero-length segment one below snd_nxt: the receiver sees an
            // old sequence number and answers with its current window.
            let seq = self.snd_nxt.saturating_sub(1);
            self.write_segment(now, buf, seq, 0, 0);
            return Some(buf.len());
        }
        if self.ack_now {
            self.write_ack(now, buf);
            self.check_graceful_close();
            return Some(buf.len());
        }
        // Data queued against a closed window with nothing in flight: make
        // sure a probe is scheduled (send() has no clock to do it).
        if self.snd_wnd == 0
            && self.probe_deadline.is_none()
            && self.state == State::Established
            && self.snd_una == self.snd_max
            && self.snd_nxt < self.sbuf.end()
        {
            self.probe_interval = self.rtt.rto();
            self.probe_deadline = Some(now + self.probe_interval);
        }
        None
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) may have something to
    /// send (cheap; may be a false positive when the window is full).
    pub fn wants_transmit(&self) -> bool {
        self.rst_due
            || (self.state != State::Closed
                && (self.ack_now
                    || self.dupack_due
                    || self.rexmit_head
                    || self.probe_due
                    || self.tlp_due
                    || self.snd_nxt < self.sbuf.end()
                    || (self.modern && self.board.next_lost().is_some())))
    }

    /// Flags and length of the segment starting at `seq` (≤ `max_len`).
    fn segment_at(&self, seq: u64, max_len: usize) -> (u8, usize) {
        if seq < self.ctl_len {
            (FLAG_CTL, (self.ctl_len - seq) as usize)
        } else {
            let avail = (self.sbuf.end() - seq) as usize;
            (0, avail.min(max_len))
        }
    }

    /// Transmits `[seq, seq+len)` (first time or again) and does the
    /// bookkeeping.
    fn send_segment(&mut self, now: Instant, buf: &mut Vec<u8>, seq: u64, flags: u8, len: usize) {
        self.write_segment(now, buf, seq, flags, len);
        let end = seq + len as u64;
        if seq < self.snd_max {
            self.stats.retransmits += 1;
        } else {
            self.stats.data_segments_sent += 1;
        }
        if seq == self.snd_una {
            self.head_xmits += 1;
        }
        if self.in_recovery && seq < self.snd_max {
            // HighRxt (RFC 6675) moves with retransmissions only.
            self.high_rxt = self.high_rxt.max(end);
        }
        if self.snd_nxt >= seq && self.snd_nxt < end {
            self.snd_nxt = end;
        }
        self.snd_max = self.snd_max.max(end);
        if self.rto_deadline.is_none() {
            self.rto_deadline = Some(now + self.rtt.rto());
        }
        if self.modern && flags == 0 && len > 0 {
            self.board.on_send(now, seq, end);
            self.pacer.on_send(len);
            if self.tlp_deadline.is_none() && !self.tlp_due {
                self.tlp_deadline = Some(now + self.pto());
            }
        }
    }

    /// What to send next from the send buffer: a lost range during SACK
    /// recovery, else new (or go-back-N) data within the windows.
    fn next_segment(&mut self, now: Instant) -> Option<(u64, u8, usize)> {
        if self.snd_nxt < self.ctl_len {
            let (f, l) = self.segment_at(self.snd_nxt, usize::MAX);
            return Some((self.snd_nxt, f, l));
        }
        if self.state != State::Established {
            return None;
        }
        if self.modern {
            return self.next_segment_modern(now);
        }
        let mss = self.mss as u64;
        let rwnd_room = (self.snd_una + self.snd_wnd).saturating_sub(self.snd_nxt);
        if self.in_recovery && self.sack_ok {
            // RFC 6675 §5 (C): send while a full segment fits in cwnd - pipe.
            let (pipe, next) = self.sack_pipe();
            if pipe + mss > self.cwnd {
                return None;
            }
            if let Some((s, e)) = next {
                return Some((s, 0, (e - s).min(mss) as usize));
            }
            if self.snd_nxt >= self.sbuf.end() {
                return None;
            }
            let want = (self.sbuf.end() - self.snd_nxt).min(mss);
            if rwnd_room < want {
                return None;
            }
            return Some((self.snd_nxt, 0, want as usize));
        }
        if self.snd_nxt >= self.sbuf.end() {
            return None;
        }
        // Restart after idle (RFC 5681 §4.1).
        if self.snd_una == self.snd_max
            && self
                .last_data_sent
                .is_some_and(|t| now.saturating_duration_since(t) > self.rtt.rto())
        {
            self.cwnd = self.cwnd.min((10 * mss).min((2 * mss).max(14600)));
            self.last_data_sent = None;
        }
        let mut cwnd = self.cwnd;
        if !self.in_recovery && (1..=2).contains(&self.dup_acks) {
            // Limited transmit (RFC 3042).
            cwnd += u64::from(self.dup_acks) * mss;
        }
        let window = self.snd_wnd.min(cwnd);
        let usable = window.saturating_sub(self.snd_nxt - self.snd_una);
        let mut seq = self.snd_nxt;
        let mut len = (self.sbuf.end() - seq).min(mss);
        // After a timeout (go-back-N) skip what the peer already SACKed.
        if seq < self.snd_max {
            if let Some((_, e)) = self.sacked.containing(seq) {
                self.snd_nxt = e;
                seq = e;
                if seq >= self.sbuf.end() {
                    return None;
                }
                len = (self.sbuf.end() - seq).min(mss);
            }
            if let Some((s, _)) = self.sacked.next_after(seq) {
                len = len.min(s - seq);
            }
        }
        if len > usable {
            // Sender silly-window avoidance (RFC 813 style, as LJ04/NICE).
            if usable == 0 || usable * 4 < window {
                return None;
            }
            len = usable;
        }
        if self.cfg.nagle && self.snd_nxt > self.snd_una && len < mss {
            return None;
        }
        Some((seq, 0, len as usize))
    }

    /// A pure acknowledgement, with SACK blocks when the peer takes them.
    fn write_ack(&mut self, now: Instant, buf: &mut Vec<u8>) {
        let ooo = self.rbuf.ooo_ranges();
        let dsack = self.dsack.take().filter(|_| self.sack_ok);
        if self.sack_ok && (!ooo.is_empty() || dsack.is_some()) {
            let mut blocks = [(0u32, 0u32); MAX_SACK_BLOCKS];
            let mut n = 0;
            if let Some((s, e)) = dsack {
                blocks[0] = (s as u32, e as u32);
                n = 1;
            }
            // The block holding the most recent arrival first (RFC 2018),
            // then the others from the lowest up (O(log n), not a scan).
            let recent = ooo.containing(self.last_ooo);
            if let Some(r) = recent {
                blocks[n] = (r.0 as u32, r.1 as u32);
                n += 1;
            }
            for r in ooo.iter() {
                if n == MAX_SACK_BLOCKS {
                    break;
                }
                if Some(r) != recent {
                    blocks[n] = (r.0 as u32, r.1 as u32);
                    n += 1;
                }
            }
            self.write_segment(now, buf, self.snd_nxt, FLAG_SACK, 0);
            encode_sack(blocks[..n].iter().copied(), buf);
        } else {
            self.write_segment(now, buf, self.snd_nxt, 0, 0);
        }
    }

    fn write_segment(&mut self, now: Instant, buf: &mut Vec<u8>, seq: u64, flags: u8, len: usize) {
        let (wnd, wnd_bytes) = self.adv_window();
        let h = Header {
            conv: self.cfg.conversation,
            seq: seq as u32,
            ack: self.rbuf.nxt() as u32,
            flags,
            wnd,
            tsval: self.now_ms(now),
            tsecr: self.ts_recent,
        };
        buf.reserve(HEADER_SIZE + len);
        buf.extend_from_slice(&h.encode());
        if len > 0 {
            let (a, b) = self.sbuf.slices(seq, len);
            buf.extend_from_slice(a);
            buf.extend_from_slice(b);
            self.last_data_sent = Some(now);
        }
        trace!(seq, ack = h.ack, flags, wnd, len, "pseudotcp send");
        self.stats.segments_sent += 1;
        self.ts_lastack = self.rbuf.nxt();
        self.last_adv_wnd = wnd_bytes;
        self.ack_now = false;
        self.dupack_due = false;
        self.ack_deadline = None;
        self.unacked_segments = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pseudotcp::segment::{CTL_CONNECT, OPT_GSHARE, OPT_WND_SCALE};

    fn pair(ca: Config, cb: Config) -> (PseudoTcp, PseudoTcp, Instant) {
        let now = Instant::now();
        (PseudoTcp::new(ca, now), PseudoTcp::new(cb, now), now)
    }

    /// Moves every pending datagram both ways until quiet; returns count.
    fn exchange(a: &mut PseudoTcp, b: &mut PseudoTcp, now: Instant) -> usize {
        let mut buf = Vec::new();
        let mut n = 0;
        loop {
            let mut moved = false;
            while a.poll_transmit(now, &mut buf).is_some() {
                b.handle_datagram(now, &buf);
                moved = true;
                n += 1;
            }
            while b.poll_transmit(now, &mut buf).is_some() {
                a.handle_datagram(now, &buf);
                moved = true;
                n += 1;
            }
            if !moved {
                return n;
            }
        }
    }

    fn established_gshare_pair() -> (PseudoTcp, PseudoTcp, Instant) {
        let (mut a, mut b, now) = pair(Config::default(), Config::default());
        a.connect(now).unwrap();
        exchange(&mut a, &mut b, now);
        assert_eq!(a.state(), State::Established);
        assert_eq!(b.state(), State::Established);
        assert!(a.sack_ok && b.sack_ok);
        (a, b, now)
    }

    fn raw_segment(to: &PseudoTcp, seq: u64, ack: u64, flags: u8, payload: &[u8]) -> Vec<u8> {
        let h = Header {
            conv: to.cfg.conversation,
            seq: seq as u32,
            ack: ack as u32,
            flags,
            wnd: 0xffff,
            tsval: 0,
            tsecr: 0,
        };
        let mut d = h.encode().to_vec();
        d.extend_from_slice(payload);
        d
    }

    /// Issue 17 item 6: a hostile sender spraying one-byte segments at every
    /// other offset of the window, highest first (the worst order for the
    /// old sorted vector: each one spliced in at the front, O(n)), cannot
    /// make the receiver hold more than `MAX_OOO_RANGES` ranges, and the
    /// 500,000 datagrams cost O(log n) each; then the real data still
    /// arrives in full.
    #[test]
    fn hostile_segments_cannot_grow_the_out_of_order_set() {
        use crate::pseudotcp::buffer::MAX_OOO_RANGES;
        let (mut a, mut b, now) = established_gshare_pair();
        let base = b.rbuf.nxt();
        let ack = a.rbuf.nxt();
        let window = b.rbuf.capacity() as u64;
        let n = (window / 2).min(500_000);
        let t = std::time::Instant::now();
        for i in (1..n).rev() {
            let d = raw_segment(&b, base + 2 * i, ack, 0, b"x");
            b.handle_datagram(now, &d);
            assert!(b.rbuf.ooo_ranges().len() <= MAX_OOO_RANGES);
        }
        assert_eq!(b.rbuf.ooo_ranges().len(), MAX_OOO_RANGES);
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
        // The stream itself is unharmed: a's data is delivered in order.
        let data = vec![7u8; 100_000];
        assert_eq!(a.send(&data).unwrap(), data.len());
        for _ in 0..50 {
            exchange(&mut a, &mut b, now);
        }
        let mut got = vec![0u8; 100_000];
        assert_eq!(b.recv(&mut got).unwrap(), 100_000);
        assert!(got.iter().all(|&x| x == 7 || x == b'x'));
    }

    /// The same for the sender's SACK scoreboard: a hostile receiver
    /// sending four one-byte SACK blocks per ack over a large flight cannot
    /// grow it past `MAX_SACK_RANGES`, and each ack stays cheap.
    #[test]
    fn hostile_sack_blocks_cannot_grow_the_scoreboard() {
        // The classic sender's scoreboard (the model-based one has its own
        // test in `recovery`).
        let (mut a, mut b, now) = pair(
            Config {
                model_based: false,
                ..Config::default()
            },
            Config::default(),
        );
        a.connect(now).unwrap();
        exchange(&mut a, &mut b, now);
        assert!(a.sack_ok && !a.modern);
        a.snd_wnd = 1 << 30;
        a.cwnd = 1 << 30;
        let data = vec![1u8; 4 << 20];
        let sent = a.send(&data).unwrap();
        let mut buf = Vec::new();
        while a.poll_transmit(now, &mut buf).is_some() {}
        let una = a.snd_una;
        assert!(a.snd_max >= una + sent as u64 / 2);
        let span = a.snd_max - una;
        // The cost is this thread's CPU time, not wall time: other processes
        // on a loaded machine stretch the latter, not the work done here.
        fn thread_cpu() -> Duration {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime writes one timespec we own.
            let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            assert_eq!(rc, 0);
            Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
        }
        let t = thread_cpu();
        let mut off = span - 2;
        while off > 2 * MAX_SACK_BLOCKS as u64 + 2 {
            let mut blocks = Vec::new();
            for _ in 0..MAX_SACK_BLOCKS {
                blocks.push(((una + off) as u32, (una + off + 1) as u32));
                off -= 2;
            }
            let mut d = raw_segment(&a, b.snd_nxt, una, FLAG_SACK, &[]);
            encode_sack(blocks, &mut d);
            a.handle_datagram(now, &d);
            assert!(a.sacked.len() <= MAX_SACK_RANGES);
            while a.poll_transmit(now, &mut buf).is_some() {}
        }
        assert_eq!(a.sacked.len(), MAX_SACK_RANGES);
        let cpu = thread_cpu().saturating_sub(t);
        assert!(cpu < Duration::from_secs(30), "{cpu:?} of CPU");
    }

    #[test]
    fn unwrap_handles_wraparound() {
        assert_eq!(unwrap32(0, 5), 5);
        assert_eq!(unwrap32(0xffff_fff0, 0x10), 0x1_0000_0010);
        assert_eq!(unwrap32(0x1_0000_0010, 0xffff_fff0), 0xffff_fff0);
        assert_eq!(unwrap32(10, 0xffff_fff0), 0);
    }

    #[test]
    fn connect_segment_bytes() {
        let now = Instant::now();
        let mut t = PseudoTcp::new(Config::default(), now);
        t.connect(now).unwrap();
        let mut buf = Vec::new();
        t.poll_transmit(now, &mut buf).unwrap();
        // conv 0, seq 0, ack 0, ctl 0, flags CTL
        assert_eq!(
            &buf[..14],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, FLAG_CTL]
        );
        // 4 MiB buffer → scale 7, window field = 4 MiB >> 7 = 32768
        assert_eq!(u16::from_be_bytes([buf[14], buf[15]]), 32768);
        assert_eq!(u32::from_be_bytes([buf[16], buf[17], buf[18], buf[19]]), 1);
        assert_eq!(&buf[20..24], &[0, 0, 0, 0]);
        assert_eq!(
            &buf[24..],
            &[
                CTL_CONNECT,
                OPT_WND_SCALE,
                1,
                7,
                OPT_GSHARE,
                4,
                1,
                1,
                0x05,
                0x78
            ]
        );
        assert_eq!(t.state(), State::SynSent);
        assert_eq!(t.connect(now), Err(Error::AlreadyOpen));
    }

    #[test]
    fn compat_connect_has_no_private_option() {
        let now = Instant::now();
        let mut t = PseudoTcp::new(Config::compat(), now);
        t.connect(now).unwrap();
        let mut buf = Vec::new();
        t.poll_transmit(now, &mut buf).unwrap();
        assert_eq!(&buf[24..], &[CTL_CONNECT, OPT_WND_SCALE, 1, 0]);
        assert_eq!(u16::from_be_bytes([buf[14], buf[15]]), 61440);
    }

    #[test]
    fn active_passive_handshake_and_data() {
        let (mut a, mut b, now) = pair(Config::default(), Config::default());
        a.connect(now).unwrap();
        exchange(&mut a, &mut b, now);
        assert_eq!(a.state(), State::Established);
        assert_eq!(b.state(), State::Established);
        assert_eq!(a.poll_event(), Some(Event::Connected));
        assert_eq!(b.poll_event(), Some(Event::Connected));
        assert!(a.peer_is_gshare() && b.peer_is_gshare());
        assert_eq!(a.window_scales(), (7, 7));
        // gshare peers: the 1400-byte default datagram minus our header.
        assert_eq!(a.mss(), 1376);
        assert_eq!(a.send(b"hello").unwrap(), 5);
        exchange(&mut a, &mut b, now);
        assert_eq!(b.poll_event(), Some(Event::Readable));
        let mut out = [0u8; 16];
        assert_eq!(b.recv(&mut out).unwrap(), 5);
        assert_eq!(&out[..5], b"hello");
        assert_eq!(b.recv(&mut out), Err(Error::WouldBlock));
        // everything acked: no timers but nothing pending
        assert_eq!(a.send_buffered(), 0);
    }

    #[test]
    fn send_before_established_fails() {
        let now = Instant::now();
        let mut t = PseudoTcp::new(Config::default(), now);
        assert_eq!(t.send(b"x"), Err(Error::NotConnected));
        t.connect(now).unwrap();
        assert_eq!(t.send(b"x"), Err(Error::NotConnected));
    }

    #[test]
    fn simultaneous_open() {
        let (mut a, mut b, now) = pair(Config::default(), Config::compat());
        a.connect(now).unwrap();
        b.connect(now).unwrap();
        let mut ca = Vec::new();
        let mut cb = Vec::new();
        a.poll_transmit(now, &mut ca).unwrap();
        b.poll_transmit(now, &mut cb).unwrap();
        a.handle_datagram(now, &cb);
        b.handle_datagram(now, &ca);
        assert_eq!(a.state(), State::Established);
        assert_eq!(b.state(), State::Established);
        exchange(&mut a, &mut b, now);
        assert_eq!(a.snd_una, a.ctl_len);
        assert_eq!(b.snd_una, b.ctl_len);
        assert!(!a.peer_is_gshare());
        assert_eq!(a.mss(), 1284);
    }

    #[test]
    fn garbage_is_dropped() {
        let now = Instant::now();
        let mut t = PseudoTcp::new(Config::default(), now);
        t.handle_datagram(now, &[]);
        t.handle_datagram(now, &[1, 2, 3]);
        let mut other = Header::default().encode().to_vec();
        other[3] = 9; // conversation 9
        other[13] = FLAG_CTL;
        other.push(0);
        t.handle_datagram(now, &other);
        let mut ctl_empty = Header::default().encode().to_vec();
        ctl_empty[13] = FLAG_CTL;
        t.handle_datagram(now, &ctl_empty);
        assert_eq!(t.state(), State::Listen);
        assert_eq!(t.stats().dropped, 4);
    }

    #[test]
    fn rst_resets() {
        let (mut a, mut b, now) = pair(Config::default(), Config::default());
        a.connect(now).unwrap();
        exchange(&mut a, &mut b, now);
        a.close(true);
        exchange(&mut a, &mut b, now);
        assert_eq!(a.state(), State::Closed);
        assert_eq!(b.state(), State::Closed);
        let evs: Vec<_> = std::iter::from_fn(|| b.poll_event()).collect();
        assert_eq!(
            evs.last(),
            Some(&Event::Closed(Some(Error::ConnectionReset)))
        );
        let mut out = [0u8; 4];
        assert_eq!(b.recv(&mut out), Err(Error::ConnectionReset));
    }
}
