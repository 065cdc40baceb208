//! The XEP-0065 SOCKS5 handshakes (RFC 1928 subset): the client side
//! (connect to a streamhost, direct or proxy) and the server side (our own
//! direct candidates), plus a listener that hands each accepted connection
//! to the session whose DST.ADDR it names.
//!
//! Subset (XEP-0065 §5.3): version 5, method 0 (no authentication),
//! command 1 (CONNECT), address type 3 (domain name) carrying the 40-byte
//! hex DST.ADDR, port 0. Every read is bounded by [`HANDSHAKE_TIMEOUT`] in
//! total, and by the fixed message sizes of this subset.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tracing::debug;

/// Longest wait for one whole handshake (TCP connect included): a
/// streamhost that does not answer within it is given up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most DST.ADDRs a [`DirectListener`] waits for at once (one per content
/// being negotiated; more is refused).
pub const MAX_EXPECTED: usize = 256;
/// Most handshakes a [`DirectListener`] runs at once; further connections
/// are closed at once (a peer tries each candidate once).
pub const MAX_HANDSHAKES: usize = 64;

/// Why a SOCKS5 handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum Socks5Error {
    /// Socket error.
    #[error("the SOCKS5 connection failed: {0}")]
    Io(#[from] io::Error),
    /// The peer did not finish in time.
    #[error("the SOCKS5 handshake did not finish in time")]
    Timeout,
    /// The peer spoke something else.
    #[error("the SOCKS5 peer sent an invalid or unsupported message")]
    Protocol,
    /// The streamhost refused the CONNECT (reply code).
    #[error("the SOCKS5 streamhost refused the connection (code {0})")]
    Refused(u8),
    /// Our listener was not waiting for this DST.ADDR.
    #[error("no session waits for this SOCKS5 address")]
    UnknownAddress,
    /// Too many sessions already wait on the listener.
    #[error("too many SOCKS5 streams are being negotiated at once")]
    TooMany,
}

/// Client: connect to a streamhost at `addr`, request `dst` (the hex
/// DST.ADDR), return the stream ready for data.
pub async fn connect(addr: SocketAddr, dst: &str) -> Result<TcpStream, Socks5Error> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let mut s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        client_handshake(&mut s, dst).await?;
        Ok(s)
    })
    .await
    .map_err(|_| Socks5Error::Timeout)?
}

/// Client handshake on an open stream.
pub async fn client_handshake(s: &mut TcpStream, dst: &str) -> Result<(), Socks5Error> {
    let dst = dst.as_bytes();
    if dst.len() > 255 {
        return Err(Socks5Error::Protocol);
    }
    s.write_all(&[5, 1, 0]).await?;
    let mut sel = [0u8; 2];
    s.read_exact(&mut sel).await?;
    if sel != [5, 0] {
        return Err(Socks5Error::Protocol);
    }
    let mut req = vec![5, 1, 0, 3, dst.len() as u8];
    req.extend_from_slice(dst);
    req.extend_from_slice(&[0, 0]);
    s.write_all(&req).await?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    if head[0] != 5 {
        return Err(Socks5Error::Protocol);
    }
    if head[1] != 0 {
        return Err(Socks5Error::Refused(head[1]));
    }
    // Bound address: skip it (its size is fixed by the address type).
    let skip = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut n = [0u8; 1];
            s.read_exact(&mut n).await?;
            n[0] as usize + 2
        }
        _ => return Err(Socks5Error::Protocol),
    };
    let mut rest = vec![0u8; skip];
    s.read_exact(&mut rest).await?;
    Ok(())
}

/// Server handshake: read the greeting and the CONNECT request, return the
/// requested DST.ADDR. The reply is sent by [`server_reply`] once the
/// caller knows whether it waits for that address.
pub async fn server_read_request(s: &mut TcpStream) -> Result<String, Socks5Error> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await?;
    if head[0] != 5 || head[1] == 0 {
        return Err(Socks5Error::Protocol);
    }
    let mut methods = vec![0u8; head[1] as usize];
    s.read_exact(&mut methods).await?;
    if !methods.contains(&0) {
        s.write_all(&[5, 0xff]).await?;
        return Err(Socks5Error::Protocol);
    }
    s.write_all(&[5, 0]).await?;
    let mut req = [0u8; 5];
    s.read_exact(&mut req).await?;
    if req[0] != 5 || req[1] != 1 || req[3] != 3 {
        return Err(Socks5Error::Protocol);
    }
    let mut addr = vec![0u8; req[4] as usize + 2];
    s.read_exact(&mut addr).await?;
    addr.truncate(req[4] as usize);
    String::from_utf8(addr).map_err(|_| Socks5Error::Protocol)
}

/// Server reply: success (echoing `dst` as the bound address, as
/// XEP-0065 §5.3.3 asks) or general failure.
pub async fn server_reply(s: &mut TcpStream, dst: &str, ok: bool) -> Result<(), Socks5Error> {
    let mut rep = vec![5, if ok { 0 } else { 1 }, 0, 3, dst.len() as u8];
    rep.extend_from_slice(dst.as_bytes());
    rep.extend_from_slice(&[0, 0]);
    s.write_all(&rep).await?;
    Ok(())
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<TcpStream>>>>;

/// Our direct streamhost: a TCP listener that completes SOCKS5 handshakes
/// and delivers each connection to whoever [`DirectListener::expect`]s
/// its DST.ADDR. Connections for unknown addresses get a failure reply.
/// The accept task ends when the listener is dropped.
#[derive(Debug)]
pub struct DirectListener {
    local: SocketAddr,
    waiters: Waiters,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DirectListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DirectListener {
    /// Binds `addr` (port 0 for any) and starts accepting.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let l = TcpListener::bind(addr).await?;
        let local = l.local_addr()?;
        let waiters: Waiters = Arc::default();
        let w = waiters.clone();
        let running = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, from)) = l.accept().await else {
                    continue;
                };
                let Ok(permit) = running.clone().try_acquire_owned() else {
                    debug!("SOCKS5: too many handshakes, closing {from}");
                    continue;
                };
                let w = w.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let r = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
                        let dst = server_read_request(&mut s).await?;
                        let waiter = w.lock().ok().and_then(|mut m| m.remove(&dst));
                        server_reply(&mut s, &dst, waiter.is_some()).await?;
                        let tx = waiter.ok_or(Socks5Error::UnknownAddress)?;
                        let _ = s.set_nodelay(true);
                        let _ = tx.send(s);
                        Ok::<_, Socks5Error>(())
                    })
                    .await;
                    if let Ok(Err(e)) | Err(e) = r.map_err(|_| Socks5Error::Timeout) {
                        debug!("SOCKS5 connection from {from}: {e}");
                    }
                });
            }
        });
        Ok(DirectListener {
            local,
            waiters,
            task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits for the connection requesting `dst`; the receiver yields the
    /// stream after the success reply. Dropping the receiver (or the
    /// session giving up) should be followed by [`DirectListener::forget`].
    pub fn expect(&self, dst: &str) -> Result<oneshot::Receiver<TcpStream>, Socks5Error> {
        let (tx, rx) = oneshot::channel();
        let mut m = self.waiters.lock().map_err(|_| Socks5Error::TooMany)?;
        m.retain(|_, tx| !tx.is_closed());
        if m.len() >= MAX_EXPECTED {
            return Err(Socks5Error::TooMany);
        }
        m.insert(dst.to_owned(), tx);
        Ok(rx)
    }

    /// Stops waiting for `dst`.
    pub fn forget(&self, dst: &str) {
        if let Ok(mut m) = self.waiters.lock() {
            m.remove(dst);
        }
    }
}
