//! PseudoTCP: the reliable byte stream libjingle and libnice run over a UDP
//! candidate pair (PROTOCOL.md §C), as a sans-IO engine plus a tokio adapter.
//!
//! Why hand-written: no Rust implementation exists (CRATES.md §5; the only
//! crate is GPL FFI to libnice), and the wire format is libjingle's own — a
//! 24-byte header, conversation 0, ISN 0, a CONNECT control segment — which no
//! TCP or QUIC crate speaks.
//!
//! Layout: [`segment`] is the wire format, `buffer` the send/receive rings,
//! [`engine`] the state machine ([`PseudoTcp`]: datagrams and time in,
//! datagrams, timers and events out), [`stream`] the tokio driver
//! ([`PseudoTcpStream`], `AsyncRead + AsyncWrite` for hyper, over any
//! [`DatagramIo`]), and [`sim`] a deterministic simulated network for tests
//! and benchmarks.
//!
//! Interop: against libjingle/libnice it behaves like them — MTU 1400 (mss
//! 1284), no FIN (option 254 is never offered), window scaling only if both
//! CONNECTs offer it, 30/15 transmission limits. Its sender is a modern TCP
//! either way (RFC 6298 RTO with a 200 ms floor, NewReno, limited transmit,
//! HyStart++, delayed acks that ack every second segment and every short one).
//!
//! Between two gshare peers (private CONNECT option 0x67, which libnice skips
//! by length and libjingle 0.4 never reads): segments sized to the path's
//! datagram limit (64 KiB on loopback), multi-MiB scaled windows, and
//! selective acknowledgements (flag 0x10). Large windows need large UDP
//! socket buffers: whoever owns the socket should raise SO_RCVBUF/SO_SNDBUF
//! to several MiB (PROTOCOL.md §F.1).

mod buffer;
mod cc;
pub mod engine;
mod pacer;
mod range_set;
mod recovery;
mod rtt;
pub mod segment;
pub mod sim;
pub mod stream;

pub use engine::{Config, Error, Event, PseudoTcp, State, Stats};
pub use stream::{DatagramIo, Open, PseudoTcpStream};
