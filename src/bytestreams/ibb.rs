//! XEP-0047 in-band bytestreams as used by XEP-0261, sans-IO, IQ stanzas
//! only (`stanza='iq'`, what Libervia offers; the IQ results are the flow
//! control).
//!
//! [`IbbSender`]: `<open>`, then `<data seq>` blocks with at most
//! [`IbbSender::window`] unacknowledged at once (Libervia's stop-and-wait
//! is a window of 1), then `<close>`. [`IbbReceiver`]: checks the sid, the
//! block size it agreed to and the 16-bit wrapping sequence number; any
//! violation closes the stream with an error (XEP-0047 §2.2).
//!
//! Not `xmpp_parsers::ibb`: its `Data` decodes the whole base64 text
//! before the caller can compare it with the agreed block size; here the
//! text length is checked first, so an oversized block is refused
//! without decoding it (the XMPP layer's stanza limit bounds the text).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jid::Jid;
use minidom::Element;

use crate::session::envelope::{
    Condition, ErrorReply, ErrorType, IqIn, IqOut, IqOutKind, IqPayload,
};
use crate::session::stanza::ncname;

/// XEP-0047 namespace.
pub const NS_IBB: &str = "http://jabber.org/protocol/ibb";
/// Largest block size we accept or offer (XEP-0047 caps it at 65535;
/// larger blocks make larger stanzas that servers may refuse).
pub const MAX_BLOCK_SIZE: u16 = 65535;
/// Block size we offer by default (Libervia's).
pub const DEFAULT_BLOCK_SIZE: u16 = 4096;
/// Most data IQs in flight (bounds the acknowledgement table).
pub const MAX_WINDOW: usize = 16;
/// Wait for the answer to one IBB IQ.
pub const IQ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence a receiver accepts between `<open>`/`<data>` stanzas
/// (and before `<open>`) before it gives the stream up.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What happened on an IBB stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IbbEvent {
    /// The stream is open (sender: the peer acknowledged `<open>`;
    /// receiver: we accepted it) with this block size.
    Opened {
        /// Agreed block size.
        block_size: u16,
    },
    /// Receiver: the next block of data, in order.
    Data(Vec<u8>),
    /// Sender: `n` more bytes were acknowledged.
    Acked(usize),
    /// Closed cleanly (`<close>` sent and acknowledged, or received).
    Closed,
    /// Failed: a refusal, a sequence error or a timeout (a sentence).
    Failed(String),
}

fn ibb_el(name: &str, sid: &str) -> minidom::ElementBuilder {
    Element::builder(name, NS_IBB).attr(ncname("sid"), sid)
}

/// The sending side.
#[derive(Debug)]
pub struct IbbSender {
    peer: Jid,
    sid: String,
    block_size: u16,
    window: usize,
    open: bool,
    done: bool,
    seq: u16,
    next_id: u64,
    /// id → (deadline, bytes, kind); bounded by `window` + open/close.
    pending: BTreeMap<String, (Instant, usize)>,
    transmit: VecDeque<IqOut>,
    events: VecDeque<IbbEvent>,
}

impl IbbSender {
    /// Opens the stream: queues `<open>`.
    pub fn open(now: Instant, peer: Jid, sid: String, block_size: u16, window: usize) -> Self {
        let mut s = IbbSender {
            peer,
            sid,
            block_size: block_size.clamp(1, MAX_BLOCK_SIZE),
            window: window.clamp(1, MAX_WINDOW),
            open: false,
            done: false,
            seq: 0,
            next_id: 0,
            pending: BTreeMap::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        };
        let el = ibb_el("open", &s.sid)
            .attr(ncname("block-size"), s.block_size.to_string())
            .attr(ncname("stanza"), "iq")
            .build();
        s.send(now, el, 0);
        s
    }

    /// Block size.
    pub fn block_size(&self) -> usize {
        usize::from(self.block_size)
    }

    /// The window (data IQs in flight).
    pub fn window(&self) -> usize {
        self.window
    }

    /// True when a block may be sent now.
    pub fn can_send(&self) -> bool {
        self.open && !self.done && self.pending.len() < self.window
    }

    /// Queues one block (at most [`IbbSender::block_size`] bytes; longer
    /// input is cut to it). Returns the bytes taken, 0 if not [`Self::can_send`].
    pub fn send_block(&mut self, now: Instant, data: &[u8]) -> usize {
        if !self.can_send() || data.is_empty() {
            return 0;
        }
        let n = data.len().min(self.block_size());
        let el = ibb_el("data", &self.sid)
            .attr(ncname("seq"), self.seq.to_string())
            .append(base64::engine::general_purpose::STANDARD.encode(&data[..n]))
            .build();
        self.seq = self.seq.wrapping_add(1);
        self.send(now, el, n);
        n
    }

    /// Queues `<close>` (after the data is acknowledged, ideally).
    pub fn close(&mut self, now: Instant) {
        if self.done {
            return;
        }
        self.done = true;
        let el = ibb_el("close", &self.sid).build();
        self.send(now, el, 0);
    }

    /// True when every sent IQ was acknowledged.
    pub fn idle(&self) -> bool {
        self.pending.is_empty()
    }

    fn send(&mut self, now: Instant, el: Element, n: usize) {
        self.next_id += 1;
        let id = format!("ibb-{}-{}", self.sid, self.next_id);
        self.pending.insert(id.clone(), (now + IQ_TIMEOUT, n));
        self.transmit.push_back(IqOut {
            to: self.peer.clone(),
            id,
            kind: IqOutKind::Set(el),
        });
    }

    /// A result or error for one of our IQs. Returns false if not ours.
    pub fn handle_iq(&mut self, iq: &IqIn) -> bool {
        if iq.from != self.peer {
            return false;
        }
        let Some((_, n)) = self.pending.remove(&iq.id) else {
            return false;
        };
        match &iq.payload {
            IqPayload::Result(_) => {
                if !self.open {
                    self.open = true;
                    self.events.push_back(IbbEvent::Opened {
                        block_size: self.block_size,
                    });
                } else if n > 0 {
                    self.events.push_back(IbbEvent::Acked(n));
                }
                if self.done && self.pending.is_empty() {
                    self.events.push_back(IbbEvent::Closed);
                }
            }
            IqPayload::Error { error, .. } => {
                self.done = true;
                self.pending.clear();
                self.events.push_back(IbbEvent::Failed(format!(
                    "the peer refused the in-band stream ({})",
                    error.condition.as_str()
                )));
            }
            _ => return false,
        }
        true
    }

    /// Fires timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.pending.values().any(|(d, _)| *d <= now) {
            self.pending.clear();
            self.done = true;
            self.events.push_back(IbbEvent::Failed(
                "the peer did not acknowledge in-band data in time".into(),
            ));
        }
    }

    /// Next IQ.
    pub fn poll_transmit(&mut self) -> Option<IqOut> {
        self.transmit.pop_front()
    }
    /// Next event.
    pub fn poll_event(&mut self) -> Option<IbbEvent> {
        self.events.pop_front()
    }
    /// Earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|(d, _)| *d).min()
    }
}

/// The receiving side.
#[derive(Debug)]
pub struct IbbReceiver {
    peer: Jid,
    sid: String,
    max_block_size: u16,
    block_size: Option<u16>,
    seq: u16,
    closed: bool,
    /// Give up if nothing arrives before this ([`IDLE_TIMEOUT`]).
    idle_deadline: Instant,
    transmit: VecDeque<IqOut>,
    events: VecDeque<IbbEvent>,
}

impl IbbReceiver {
    /// Waits for `<open sid>` from `peer`, accepting blocks up to
    /// `max_block_size` (the size agreed in the Jingle transport).
    pub fn new(now: Instant, peer: Jid, sid: String, max_block_size: u16) -> Self {
        IbbReceiver {
            idle_deadline: now + IDLE_TIMEOUT,
            peer,
            sid,
            max_block_size,
            block_size: None,
            seq: 0,
            closed: false,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    fn reply(&mut self, iq: &IqIn, err: Option<(ErrorType, Condition)>) {
        let kind = match err {
            None => IqOutKind::Result,
            Some((error_type, condition)) => IqOutKind::Error(ErrorReply {
                error_type,
                condition,
                text: None,
                extra: None,
                copied: None,
            }),
        };
        self.transmit.push_back(IqOut {
            to: iq.from.clone(),
            id: iq.id.clone(),
            kind,
        });
    }

    fn fail(&mut self, iq: &IqIn, error_type: ErrorType, c: Condition, why: &str) {
        self.reply(iq, Some((error_type, c)));
        self.closed = true;
        self.events.push_back(IbbEvent::Failed(why.to_owned()));
    }

    /// An IQ set carrying `<open>`, `<data>` or `<close>` for our sid from
    /// our peer. Returns false if not for this stream.
    pub fn handle_iq(&mut self, now: Instant, iq: &IqIn) -> bool {
        let IqPayload::Set(el) = &iq.payload else {
            return false;
        };
        if iq.from != self.peer || el.ns() != NS_IBB || el.attr("sid") != Some(self.sid.as_str()) {
            return false;
        }
        self.idle_deadline = now + IDLE_TIMEOUT;
        if self.closed {
            self.reply(iq, Some((ErrorType::Cancel, Condition::ItemNotFound)));
            return true;
        }
        match (el.name(), self.block_size) {
            ("open", None) => {
                let bs = el.attr("block-size").and_then(|b| b.parse::<u16>().ok());
                match bs {
                    Some(bs)
                        if bs > 0
                            && bs <= self.max_block_size
                            && el.attr("stanza").unwrap_or("iq") == "iq" =>
                    {
                        self.block_size = Some(bs);
                        self.reply(iq, None);
                        self.events.push_back(IbbEvent::Opened { block_size: bs });
                    }
                    Some(bs) if bs > self.max_block_size => {
                        // XEP-0047 §2.2: the opener may retry smaller.
                        self.reply(iq, Some((ErrorType::Modify, Condition::ResourceConstraint)))
                    }
                    _ => self.reply(
                        iq,
                        Some((ErrorType::Cancel, Condition::FeatureNotImplemented)),
                    ),
                }
            }
            ("data", Some(bs)) => {
                if el.attr("seq").and_then(|s| s.parse::<u16>().ok()) != Some(self.seq) {
                    return self.fail_ret(
                        iq,
                        Condition::Other("unexpected-request".into()),
                        "in-band data arrived out of sequence",
                    );
                }
                // base64 of `bs` bytes is at most 4 * ceil(bs / 3) characters.
                let text = el.text();
                if text.len() > 4 * (usize::from(bs).div_ceil(3)) + 64 {
                    return self.fail_ret(
                        iq,
                        Condition::BadRequest,
                        "an in-band block exceeded the agreed size",
                    );
                }
                let Ok(data) = base64::engine::general_purpose::STANDARD.decode(text.trim()) else {
                    return self.fail_ret(
                        iq,
                        Condition::BadRequest,
                        "an in-band block was not valid base64",
                    );
                };
                if data.len() > usize::from(bs) {
                    return self.fail_ret(
                        iq,
                        Condition::BadRequest,
                        "an in-band block exceeded the agreed size",
                    );
                }
                self.seq = self.seq.wrapping_add(1);
                self.reply(iq, None);
                self.events.push_back(IbbEvent::Data(data));
            }
            ("close", _) => {
                self.reply(iq, None);
                self.closed = true;
                self.events.push_back(IbbEvent::Closed);
            }
            _ => self.fail(
                iq,
                ErrorType::Cancel,
                Condition::Other("unexpected-request".into()),
                "the in-band stream was used out of order",
            ),
        }
        true
    }

    /// When [`IbbReceiver::handle_timeout`] must run (while open).
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.closed).then_some(self.idle_deadline)
    }

    /// Gives the stream up after [`IDLE_TIMEOUT`] of silence.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.closed && now >= self.idle_deadline {
            self.closed = true;
            self.events
                .push_back(IbbEvent::Failed("the in-band stream stalled".into()));
        }
    }

    fn fail_ret(&mut self, iq: &IqIn, c: Condition, why: &str) -> bool {
        self.fail(iq, ErrorType::Cancel, c, why);
        true
    }

    /// Next IQ.
    pub fn poll_transmit(&mut self) -> Option<IqOut> {
        self.transmit.pop_front()
    }
    /// Next event.
    pub fn poll_event(&mut self) -> Option<IbbEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(out: IqOut, from: &str) -> IqIn {
        IqIn::from_element(&out.to_element(Some(&Jid::new(from).unwrap()))).unwrap()
    }

    #[test]
    fn transfers_in_order_with_wrapping_seq_and_window() {
        let now = Instant::now();
        let (a, b) = ("a@x/1", "b@x/2");
        let mut tx = IbbSender::open(now, Jid::new(b).unwrap(), "s".into(), 7, 3);
        let mut rx = IbbReceiver::new(Instant::now(), Jid::new(a).unwrap(), "s".into(), 4096);
        tx.seq = 65534; // exercise the wrap on both ends
        rx.seq = 65534;
        let data: Vec<u8> = (0..200u8).collect();
        let mut sent = 0;
        let mut got = Vec::new();
        let mut closed = false;
        for _ in 0..10_000 {
            while tx.can_send() && sent < data.len() {
                sent += tx.send_block(now, &data[sent..]);
                assert!(tx.pending.len() <= 3);
            }
            if sent == data.len() && tx.idle() && !closed {
                tx.close(now);
                closed = true;
            }
            let Some(o) = tx.poll_transmit() else { break };
            assert!(rx.handle_iq(Instant::now(), &deliver(o, a)));
            while let Some(r) = rx.poll_transmit() {
                assert!(tx.handle_iq(&deliver(r, b)));
            }
            while let Some(e) = rx.poll_event() {
                if let IbbEvent::Data(d) = e {
                    got.extend(d);
                }
            }
        }
        assert_eq!(got, data);
        let evs: Vec<_> = std::iter::from_fn(|| tx.poll_event()).collect();
        assert_eq!(evs.first(), Some(&IbbEvent::Opened { block_size: 7 }));
        assert_eq!(evs.last(), Some(&IbbEvent::Closed));
    }

    #[test]
    fn receiver_refuses_bad_sequence_and_big_blocks() {
        let peer = Jid::new("a@x/1").unwrap();
        let set = |el: Element, id: &str| IqIn {
            from: peer.clone(),
            id: id.into(),
            payload: IqPayload::Set(el),
        };
        let mut rx = IbbReceiver::new(Instant::now(), peer.clone(), "s".into(), 4096);
        let open = ibb_el("open", "s")
            .attr(ncname("block-size"), "8192")
            .build();
        assert!(rx.handle_iq(Instant::now(), &set(open, "1")));
        assert!(matches!(
            rx.poll_transmit().unwrap().kind,
            IqOutKind::Error(ErrorReply {
                condition: Condition::ResourceConstraint,
                ..
            })
        ));
        let open = ibb_el("open", "s").attr(ncname("block-size"), "4").build();
        assert!(rx.handle_iq(Instant::now(), &set(open, "2")));
        assert_eq!(rx.poll_transmit().unwrap().kind, IqOutKind::Result);
        let big = ibb_el("data", "s")
            .attr(ncname("seq"), "0")
            .append("AAECAwQF")
            .build();
        assert!(rx.handle_iq(Instant::now(), &set(big, "3")));
        assert!(matches!(
            rx.poll_transmit().unwrap().kind,
            IqOutKind::Error(_)
        ));
        let mut rx = IbbReceiver::new(Instant::now(), peer.clone(), "s".into(), 4096);
        rx.handle_iq(
            Instant::now(),
            &set(
                ibb_el("open", "s").attr(ncname("block-size"), "4").build(),
                "1",
            ),
        );
        let skip = ibb_el("data", "s")
            .attr(ncname("seq"), "1")
            .append("AAE=")
            .build();
        assert!(rx.handle_iq(Instant::now(), &set(skip, "2")));
        let evs: Vec<_> = std::iter::from_fn(|| rx.poll_event()).collect();
        assert!(matches!(evs.last(), Some(IbbEvent::Failed(_))));
        // Silence: the receiver gives up after IDLE_TIMEOUT.
        let t0 = Instant::now();
        let mut rx = IbbReceiver::new(t0, peer.clone(), "s".into(), 4096);
        assert_eq!(rx.poll_timeout(), Some(t0 + IDLE_TIMEOUT));
        rx.handle_timeout(t0 + IDLE_TIMEOUT);
        assert!(matches!(rx.poll_event(), Some(IbbEvent::Failed(_))));
        assert_eq!(rx.poll_timeout(), None);
        // Other sids are not ours.
        assert!(!rx.handle_iq(Instant::now(), &set(ibb_el("close", "t").build(), "3")));
    }
}
