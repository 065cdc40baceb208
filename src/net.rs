//! Socket helpers shared by the UDP drivers (ICE, PseudoTCP on a bare
//! socket), the benchmarks and the tests: one way to size kernel socket
//! buffers and one answer to "is this I/O error just a lost datagram?".
//!
//! socket2 sets `SO_RCVBUF`/`SO_SNDBUF` but not Linux's `*BUFFORCE`
//! variants, which are the only way past `net.core.rmem_max`; those few
//! lines are written here once.

use std::io;
use std::os::fd::AsFd;

use socket2::SockRef;

/// Socket buffer size the drivers ask for: PseudoTCP bursts overflow the
/// kernel's ≈208 KiB default and then stall on its 1 s minimum RTO
/// (docs/protocol.md §F.1).
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Raises `SO_RCVBUF` and `SO_SNDBUF` of `socket` to `bytes`. Past
/// `net.core.rmem_max`/`wmem_max` the plain options are capped; then the
/// `SO_*BUFFORCE` variants are tried, which work for root (CAP_NET_ADMIN) on
/// Linux. Failure only costs throughput, so nothing is reported; the sizes
/// the kernel granted (Linux reports twice the value set) are returned.
pub fn raise_buffers<S: AsFd>(socket: &S, bytes: usize) -> (Option<usize>, Option<usize>) {
    let sock = SockRef::from(socket);
    let _ = sock.set_recv_buffer_size(bytes);
    let _ = sock.set_send_buffer_size(bytes);
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = socket.as_fd().as_raw_fd();
        let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        for (got, opt) in [
            (sock.recv_buffer_size(), libc::SO_RCVBUFFORCE),
            (sock.send_buffer_size(), libc::SO_SNDBUFFORCE),
        ] {
            if got.is_ok_and(|g| g >= bytes) {
                continue;
            }
            // SAFETY: fd is a valid socket borrowed for this call; the
            // option value is a c_int whose size is passed.
            let _ = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&want as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
    }
    (sock.recv_buffer_size().ok(), sock.send_buffer_size().ok())
}

/// True for errors a UDP socket reports that mean only "this datagram is
/// lost" or "try again": an ICMP port-unreachable from an earlier datagram
/// (`ConnectionRefused`/`ConnectionReset`, the peer is not or no longer
/// listening), an interrupted call, a full buffer. Callers treat them like
/// loss and let their own timers decide; any other error is real.
pub fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_raised_at_least_to_the_default() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = SockRef::from(&s).recv_buffer_size().unwrap();
        let (rcv, snd) = raise_buffers(&s, SOCKET_BUFFER_BYTES);
        let (rcv, snd) = (rcv.unwrap(), snd.unwrap());
        assert!(rcv >= before);
        // As root (the test setup) the FORCE variants pass rmem_max.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(rcv >= SOCKET_BUFFER_BYTES, "rcvbuf {rcv}");
            assert!(snd >= SOCKET_BUFFER_BYTES, "sndbuf {snd}");
        }
    }

    #[test]
    fn transient_errors_are_the_lossy_ones() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::Interrupted,
            io::ErrorKind::WouldBlock,
        ] {
            assert!(transient(&io::Error::from(kind)), "{kind}");
        }
        for kind in [
            io::ErrorKind::PermissionDenied,
            io::ErrorKind::AddrNotAvailable,
            io::ErrorKind::InvalidInput,
        ] {
            assert!(!transient(&io::Error::from(kind)), "{kind}");
        }
    }
}
