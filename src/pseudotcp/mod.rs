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
//! Interop and speed: against libjingle/libnice it behaves like them (MTU
//! 1400, no FIN, window scaling only if both offer it). When the peer's
//! CONNECT carries gshare's private option, segments grow to the path's
//! datagram limit (64 KiB on loopback) and windows to several MiB.

mod buffer;
pub mod engine;
pub mod segment;
pub mod sim;
pub mod stream;

pub use engine::{Config, Error, Event, PseudoTcp, State, Stats};
pub use stream::{DatagramIo, Open, PseudoTcpStream};
