//! Byte streams for Jingle file transfer: XEP-0065/XEP-0260 SOCKS5
//! bytestreams ([`socks5`], [`s5b`], [`proxy`]) and XEP-0047/XEP-0261
//! in-band bytestreams ([`ibb`], and [`ibb_stream`] for the same as
//! `AsyncRead`/`AsyncWrite`).
//!
//! Sans-IO where there is protocol state ([`s5b::S5bNegotiation`],
//! [`ibb::IbbSender`], [`ibb::IbbReceiver`], the [`proxy`] IQ codec); the
//! SOCKS5 handshakes in [`socks5`] are small tokio functions with a bounded
//! wait each, and yield a plain `TcpStream` — the per-content
//! `AsyncRead`/`AsyncWrite` the send/receive jobs use.
//!
//! The SOCKS5 subset (RFC 1928 no-auth CONNECT with a domain-name address
//! and port 0, XEP-0065 §5.3) is hand-written: the crates on crates.io are
//! general proxies or clients for IP/port targets and do not expose the
//! server side keyed by DST.ADDR that XEP-0065 needs.

pub mod ibb;
pub mod ibb_stream;
pub mod proxy;
pub mod s5b;
pub mod socks5;

use sha1::{Digest, Sha1};

/// XEP-0260 §2.2 / XEP-0065 §5.3.2 DST.ADDR: lowercase hex
/// SHA-1(sid + requester JID + target JID). For a candidate the initiator
/// offered, pass (initiator, responder); for the responder's candidates
/// the order is reversed.
pub fn dst_addr(sid: &str, first: &str, second: &str) -> String {
    let mut h = Sha1::new();
    h.update(sid.as_bytes());
    h.update(first.as_bytes());
    h.update(second.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    #[test]
    fn dst_addr_matches_an_independent_sha1() {
        // XEP-0065 §5.3.2's example inputs; the digest computed with
        // Python's hashlib.
        assert_eq!(
            super::dst_addr(
                "vxf9n471bn46",
                "requester@example.com/foo",
                "target@example.org/bar"
            ),
            "98b8d688d0f5d895fd41c5e7309a2e9e33ba32ff"
        );
    }
}
