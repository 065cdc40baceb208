//! Tokio adapter: [`PseudoTcpStream`] (`AsyncRead + AsyncWrite`, for hyper via
//! `hyper_util::rt::TokioIo`) over any [`DatagramIo`].
//!
//! A spawned driver task owns the datagram path and the timers; the engine
//! sits behind a mutex shared with the stream handle (the quinn model). The
//! driver keeps running after the handle is dropped until everything queued
//! has been acknowledged (libjingle's graceful close), so a response written
//! just before the handle goes away still arrives.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tracing::debug;

use super::engine::{Config, Error, Event, PseudoTcp, State, Stats};
use super::segment::MAX_DATAGRAM;

/// The driver's clock: the same one the ICE driver reads (tokio's, see
/// `ice::driver::now`), so paused tokio time in a test moves the engine's
/// timers exactly as it moves the driver's sleeps.
fn clock() -> Instant {
    crate::ice::driver::now()
}

/// The datagram path under PseudoTCP: a connected UDP socket in tests, the
/// ICE layer's selected pair in gshare.
pub trait DatagramIo: Send + Unpin + 'static {
    /// Receive one datagram into `buf` (as `UdpSocket::poll_recv`).
    fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>>;
    /// Send one datagram (as `UdpSocket::poll_send`).
    fn poll_send(&mut self, cx: &mut Context<'_>, datagram: &[u8]) -> Poll<io::Result<()>>;
    /// Largest UDP payload the path takes (e.g. 65507 on loopback, 1400
    /// default). Only used when the peer is gshare too.
    fn max_datagram_size(&self) -> usize {
        1400
    }
}

impl DatagramIo for tokio::net::UdpSocket {
    fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        tokio::net::UdpSocket::poll_recv(self, cx, buf)
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, datagram: &[u8]) -> Poll<io::Result<()>> {
        tokio::net::UdpSocket::poll_send(self, cx, datagram).map_ok(|_| ())
    }

    /// 65507 when connected to a loopback address (loopback MTU is 64 KiB),
    /// otherwise the conservative 1400.
    fn max_datagram_size(&self) -> usize {
        match self.peer_addr() {
            Ok(a) if a.ip().is_loopback() => 65507,
            _ => 1400,
        }
    }
}

/// How the connection is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Send a CONNECT. Also completes a simultaneous open (libnice opens
    /// from both sides) and works against a passive libjingle receiver.
    Active,
    /// Wait for the peer's CONNECT (what a libjingle receiver does).
    Passive,
}

#[derive(Debug)]
struct Inner {
    tcp: PseudoTcp,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    /// Waiters for establishment and for a drained send buffer.
    waiters: Vec<Waker>,
    driver_waker: Option<Waker>,
    /// The datagram path failed.
    io_error: Option<(io::ErrorKind, String)>,
    /// The handle is gone: the driver finishes the graceful close.
    detached: bool,
}

impl Inner {
    fn wake_driver(&mut self) {
        if let Some(w) = &self.driver_waker {
            w.wake_by_ref();
        }
    }

    fn wake_all(&mut self) {
        for w in [self.read_waker.take(), self.write_waker.take()]
            .into_iter()
            .flatten()
        {
            w.wake();
        }
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }

    fn io_err(&self) -> Option<io::Error> {
        self.io_error
            .as_ref()
            .map(|(k, m)| io::Error::new(*k, m.clone()))
    }

    fn add_waiter(&mut self, w: &Waker) {
        if !self.waiters.iter().any(|x| x.will_wake(w)) {
            self.waiters.push(w.clone());
        }
    }
}

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// A PseudoTCP connection as a tokio byte stream. There is no FIN: reads
/// never see end-of-file from the peer (the HTTP framing ends a body, the
/// session's terminate ends the channel); `poll_shutdown` only waits until
/// everything written has been acknowledged.
#[derive(Debug)]
pub struct PseudoTcpStream {
    shared: Shared,
}

impl PseudoTcpStream {
    /// Starts the connection and its driver task (needs a tokio runtime).
    /// `config.max_datagram_size` is taken from `io`. Await
    /// [`established`](Self::established) before relying on it; reads and
    /// writes before that simply wait.
    pub fn new<D: DatagramIo>(io: D, mut config: Config, open: Open) -> PseudoTcpStream {
        config.max_datagram_size = io.max_datagram_size().min(MAX_DATAGRAM);
        let now = clock();
        let mut tcp = PseudoTcp::new(config, now);
        if open == Open::Active {
            // A fresh engine is in LISTEN, so this cannot fail.
            let _ = tcp.connect(now);
        }
        let shared = Arc::new(Mutex::new(Inner {
            tcp,
            read_waker: None,
            write_waker: None,
            waiters: Vec::new(),
            driver_waker: None,
            io_error: None,
            detached: false,
        }));
        let driver = Driver {
            io,
            shared: shared.clone(),
            timer: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            timer_at: None,
            rx: vec![0u8; MAX_DATAGRAM + 1],
            tx: Vec::with_capacity(MAX_DATAGRAM),
            tx_pending: false,
        };
        tokio::spawn(driver);
        PseudoTcpStream { shared }
    }

    /// Active open, waiting until established.
    pub async fn connect<D: DatagramIo>(io: D, config: Config) -> io::Result<PseudoTcpStream> {
        let s = PseudoTcpStream::new(io, config, Open::Active);
        s.established().await?;
        Ok(s)
    }

    /// Passive open, waiting until established.
    pub async fn accept<D: DatagramIo>(io: D, config: Config) -> io::Result<PseudoTcpStream> {
        let s = PseudoTcpStream::new(io, config, Open::Passive);
        s.established().await?;
        Ok(s)
    }

    /// Resolves once the connection is established, or with the error that
    /// ended it (e.g. `ConnectionAborted` after 30 unanswered CONNECTs).
    pub fn established(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        std::future::poll_fn(move |cx| {
            let mut inner = lock(&self.shared);
            match inner.tcp.state() {
                State::Established => Poll::Ready(Ok(())),
                State::Closed => Poll::Ready(Err(closed_error(&inner))),
                _ => {
                    if let Some(e) = inner.io_err() {
                        return Poll::Ready(Err(e));
                    }
                    inner.add_waiter(cx.waker());
                    Poll::Pending
                }
            }
        })
    }

    /// Connection state.
    pub fn state(&self) -> State {
        lock(&self.shared).tcp.state()
    }

    /// Engine counters.
    pub fn stats(&self) -> Stats {
        lock(&self.shared).tcp.stats()
    }

    /// Whether the peer is gshare (large segments, SACK).
    pub fn peer_is_gshare(&self) -> bool {
        lock(&self.shared).tcp.peer_is_gshare()
    }

    /// Payload bytes per segment.
    pub fn mss(&self) -> usize {
        lock(&self.shared).tcp.mss()
    }

    /// Abort now: one RST to the peer, pending data dropped, reads and
    /// writes fail from here on.
    pub fn abort(&self) {
        let mut inner = lock(&self.shared);
        inner.tcp.close(true);
        inner.wake_driver();
        inner.wake_all();
    }
}

/// Why a closed connection is closed: the datagram path's error, the
/// engine's reason (abort, reset, timeout), else "not connected".
fn closed_error(inner: &Inner) -> io::Error {
    match inner.io_err() {
        Some(e) => e,
        None => inner
            .tcp
            .close_reason()
            .unwrap_or(Error::NotConnected)
            .into(),
    }
}

impl Drop for PseudoTcpStream {
    fn drop(&mut self) {
        let mut inner = lock(&self.shared);
        inner.detached = true;
        // Graceful (LJ04): keep sending until all is acknowledged.
        inner.tcp.close(false);
        inner.wake_driver();
    }
}

impl AsyncRead for PseudoTcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut inner = lock(&self.shared);
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let max = buf.remaining();
        // put_slice copies into the unfilled part without zeroing it first.
        match inner.tcp.recv_with(max, |s| buf.put_slice(s)) {
            Ok(_) => {
                if inner.tcp.wants_transmit() {
                    inner.wake_driver();
                }
                Poll::Ready(Ok(()))
            }
            Err(Error::WouldBlock) => {
                if let Some(e) = inner.io_err() {
                    return Poll::Ready(Err(e));
                }
                inner.read_waker = Some(cx.waker().clone());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }
}

impl AsyncWrite for PseudoTcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut inner = lock(&self.shared);
        if let Some(e) = inner.io_err() {
            return Poll::Ready(Err(e));
        }
        match inner.tcp.state() {
            State::Listen | State::SynSent | State::SynReceived => {
                inner.write_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            State::Closed => return Poll::Ready(Err(closed_error(&inner))),
            State::Established => {}
        }
        match inner.tcp.send(data) {
            Ok(n) => {
                inner.wake_driver();
                Poll::Ready(Ok(n))
            }
            Err(Error::WouldBlock) => {
                inner.write_waker = Some(cx.waker().clone());
                inner.wake_driver();
                Poll::Pending
            }
            Err(_) => Poll::Ready(Err(closed_error(&inner))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written data is in the engine's buffer and the driver sends it.
        let inner = lock(&self.shared);
        match inner.io_err() {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Waits until everything written has been acknowledged, then reports
    /// success. Nothing goes on the wire (no FIN in libjingle's PseudoTCP);
    /// the connection stays open for reading. Fails if the connection dies
    /// first (retransmission limit), so it cannot hang forever.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = lock(&self.shared);
        if let Some(e) = inner.io_err() {
            return Poll::Ready(Err(e));
        }
        match inner.tcp.state() {
            State::Closed if inner.tcp.close_reason().is_some() => {
                Poll::Ready(Err(closed_error(&inner)))
            }
            State::Closed | State::Listen | State::SynSent => Poll::Ready(Ok(())),
            _ if inner.tcp.send_buffered() == 0 => Poll::Ready(Ok(())),
            _ => {
                inner.add_waiter(cx.waker());
                inner.wake_driver();
                Poll::Pending
            }
        }
    }
}

/// The task that moves datagrams and runs timers.
struct Driver<D: DatagramIo> {
    io: D,
    shared: Shared,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// `tx` holds a datagram the socket did not take yet.
    tx_pending: bool,
}

/// Datagrams received per pass before transmitting (keeps acks flowing).
const RX_BATCH: usize = 64;
/// Passes per poll before yielding to other tasks.
const MAX_PASSES: usize = 16;

impl<D: DatagramIo> Driver<D> {
    fn fail(&mut self, e: io::Error) -> Poll<()> {
        debug!(error = %e, "pseudotcp datagram path failed");
        let mut inner = lock(&self.shared);
        inner.io_error = Some((e.kind(), e.to_string()));
        inner.tcp.close(true);
        inner.wake_all();
        Poll::Ready(())
    }
}

impl<D: DatagramIo> Future for Driver<D> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        {
            let mut inner = lock(&this.shared);
            if !inner
                .driver_waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                inner.driver_waker = Some(cx.waker().clone());
            }
        }
        for _ in 0..MAX_PASSES {
            let mut progress = false;

            // 1. Receive.
            for _ in 0..RX_BATCH {
                let mut rb = ReadBuf::new(&mut this.rx);
                match this.io.poll_recv(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        let now = clock();
                        lock(&this.shared).tcp.handle_datagram(now, &this.rx[..n]);
                        progress = true;
                    }
                    Poll::Ready(Err(e)) if crate::net::transient(&e) => progress = true,
                    Poll::Ready(Err(e)) => return this.fail(e),
                    Poll::Pending => break,
                }
            }

            // 2. Timers, 3. transmit.
            let now = clock();
            {
                let mut inner = lock(&this.shared);
                if inner.tcp.poll_timeout().is_some_and(|t| t <= now) {
                    inner.tcp.handle_timeout(now);
                }
            }
            loop {
                if !this.tx_pending {
                    let mut inner = lock(&this.shared);
                    if inner.tcp.poll_transmit(now, &mut this.tx).is_none() {
                        break;
                    }
                    this.tx_pending = true;
                }
                match this.io.poll_send(cx, &this.tx) {
                    Poll::Ready(Ok(())) => {
                        this.tx_pending = false;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) if crate::net::transient(&e) => {
                        // Dropped like a lost datagram.
                        this.tx_pending = false;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return this.fail(e),
                    Poll::Pending => break,
                }
            }

            // 4. Events → wake the stream's tasks.
            let mut inner = lock(&this.shared);
            while let Some(ev) = inner.tcp.poll_event() {
                match ev {
                    Event::Readable => {
                        if let Some(w) = inner.read_waker.take() {
                            w.wake();
                        }
                    }
                    Event::Writable => {
                        if let Some(w) = inner.write_waker.take() {
                            w.wake();
                        }
                    }
                    Event::Connected | Event::Closed(_) => inner.wake_all(),
                }
            }
            if !inner.waiters.is_empty()
                && inner.tcp.state() == State::Established
                && inner.tcp.send_buffered() == 0
            {
                for w in inner.waiters.drain(..) {
                    w.wake();
                }
            }
            if inner.tcp.state() == State::Closed && !inner.tcp.wants_transmit() && !this.tx_pending
            {
                debug!(detached = inner.detached, "pseudotcp driver done");
                inner.driver_waker = None;
                inner.wake_all();
                return Poll::Ready(());
            }

            // 5. Timer.
            let deadline = inner.tcp.poll_timeout();
            drop(inner);
            if deadline != this.timer_at {
                this.timer_at = deadline;
                if let Some(d) = deadline {
                    this.timer.as_mut().reset(tokio::time::Instant::from_std(d));
                }
            }
            if this.timer_at.is_some() && this.timer.as_mut().poll(cx).is_ready() {
                this.timer_at = None;
                progress = true;
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // Still busy: let other tasks run, then continue.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
