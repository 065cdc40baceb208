//! IBB as a byte stream: thin tokio drivers around [`IbbSender`] and
//! [`IbbReceiver`] that give the job layer the same kind of
//! `AsyncRead`/`AsyncWrite` an S5B `TcpStream` is.
//!
//! The XMPP side is two channels: IQs for this stream come in as
//! [`IqIn`] (the caller routes IBB sets and the results of our IBB IQs
//! here), and IQs to send go out as [`IqOut`]. The data side is one end of
//! a `tokio::io::duplex` of [`PIPE_BYTES`]. The receiver writes a block to
//! the pipe *before* acknowledging it, so a slow reader slows the sender
//! (IBB's flow control is the IQ result).

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::ibb::{IbbEvent, IbbReceiver, IbbSender};
use crate::session::envelope::{IqIn, IqOut};

/// Bytes buffered between a driver and its user (a few blocks).
pub const PIPE_BYTES: usize = 256 * 1024;

/// Why an IBB stream ended badly (a sentence).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IbbStreamError(pub String);

fn until(deadline: Option<Instant>) -> tokio::time::Sleep {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()),
        // No timer: a day stands in for "never" (the loop wakes on I/O).
        None => tokio::time::sleep(std::time::Duration::from_secs(86_400)),
    }
}

/// Sending side: write the content into the returned stream and shut it
/// down; the task sends `<data>` blocks, then `<close>`, and ends with
/// `Ok` once the peer acknowledged everything.
pub fn ibb_writer(
    mut tx: IbbSender,
    mut iq_in: mpsc::Receiver<IqIn>,
    iq_out: mpsc::Sender<IqOut>,
) -> (DuplexStream, JoinHandle<Result<u64, IbbStreamError>>) {
    let (user, mut pipe) = tokio::io::duplex(PIPE_BYTES);
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; tx.block_size()];
        let (mut eof, mut acked) = (false, 0u64);
        loop {
            while let Some(o) = tx.poll_transmit() {
                iq_out
                    .send(o)
                    .await
                    .map_err(|_| IbbStreamError("the XMPP connection is gone".into()))?;
            }
            while let Some(e) = tx.poll_event() {
                match e {
                    IbbEvent::Acked(n) => acked += n as u64,
                    IbbEvent::Closed => return Ok(acked),
                    IbbEvent::Failed(why) => return Err(IbbStreamError(why)),
                    IbbEvent::Opened { .. } | IbbEvent::Data(_) => {}
                }
            }
            if eof && tx.idle() {
                tx.close(Instant::now());
                continue;
            }
            let can_read = tx.can_send() && !eof;
            tokio::select! {
                r = pipe.read(&mut buf), if can_read => match r {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        tx.send_block(Instant::now(), &buf[..n]);
                    }
                    Err(e) => return Err(IbbStreamError(format!("reading the data to send failed: {e}"))),
                },
                iq = iq_in.recv() => match iq {
                    Some(iq) => {
                        tx.handle_iq(&iq);
                    }
                    None => return Err(IbbStreamError("the XMPP connection is gone".into())),
                },
                _ = until(tx.poll_timeout()) => tx.handle_timeout(Instant::now()),
            }
        }
    });
    (user, task)
}

/// Receiving side: read the content from the returned stream until EOF
/// (the peer's `<close>`); the task ends with the byte count, or an error
/// (sequence error, stall, refusal) after which the stream ends early.
pub fn ibb_reader(
    mut rx: IbbReceiver,
    mut iq_in: mpsc::Receiver<IqIn>,
    iq_out: mpsc::Sender<IqOut>,
) -> (DuplexStream, JoinHandle<Result<u64, IbbStreamError>>) {
    let (user, mut pipe) = tokio::io::duplex(PIPE_BYTES);
    let task = tokio::spawn(async move {
        let mut total = 0u64;
        loop {
            // Data first, acknowledgements after: the reader's pace is the
            // sender's pace.
            let mut end = None;
            while let Some(e) = rx.poll_event() {
                match e {
                    IbbEvent::Data(d) => {
                        total += d.len() as u64;
                        pipe.write_all(&d).await.map_err(|e| {
                            IbbStreamError(format!("the receiving side stopped reading: {e}"))
                        })?;
                    }
                    IbbEvent::Closed => end = Some(Ok(total)),
                    IbbEvent::Failed(why) => end = Some(Err(IbbStreamError(why))),
                    IbbEvent::Opened { .. } | IbbEvent::Acked(_) => {}
                }
            }
            while let Some(o) = rx.poll_transmit() {
                iq_out
                    .send(o)
                    .await
                    .map_err(|_| IbbStreamError("the XMPP connection is gone".into()))?;
            }
            if let Some(end) = end {
                let _ = pipe.shutdown().await;
                return end;
            }
            tokio::select! {
                iq = iq_in.recv() => match iq {
                    Some(iq) => {
                        rx.handle_iq(Instant::now(), &iq);
                    }
                    None => return Err(IbbStreamError("the XMPP connection is gone".into())),
                },
                _ = until(rx.poll_timeout()) => rx.handle_timeout(Instant::now()),
            }
        }
    });
    (user, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jid::Jid;

    fn wire(out: &IqOut, from: &str) -> IqIn {
        IqIn::from_element(&out.to_element(Some(&Jid::new(from).unwrap()))).unwrap()
    }

    #[tokio::test]
    async fn a_mebibyte_through_ibb_streams() {
        let (a, b) = ("a@x/1", "b@x/2");
        let now = Instant::now();
        let (a_in_tx, a_in) = mpsc::channel(64);
        let (a_out, mut a_out_rx) = mpsc::channel::<IqOut>(64);
        let (b_in_tx, b_in) = mpsc::channel(64);
        let (b_out, mut b_out_rx) = mpsc::channel::<IqOut>(64);
        // The "server": moves IQs between the two ends.
        tokio::spawn(async move {
            while let Some(o) = a_out_rx.recv().await {
                if b_in_tx.send(wire(&o, a)).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(o) = b_out_rx.recv().await {
                if a_in_tx.send(wire(&o, b)).await.is_err() {
                    break;
                }
            }
        });
        let sender = IbbSender::open(now, Jid::new(b).unwrap(), "s".into(), 4096, 4);
        let receiver = IbbReceiver::new(now, Jid::new(a).unwrap(), "s".into(), 4096);
        let (mut w, wt) = ibb_writer(sender, a_in, a_out);
        let (mut r, rt) = ibb_reader(receiver, b_in, b_out);
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 247) as u8).collect();
        let d = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&d).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data);
        assert_eq!(wt.await.unwrap(), Ok(data.len() as u64));
        assert_eq!(rt.await.unwrap(), Ok(data.len() as u64));
    }
}
