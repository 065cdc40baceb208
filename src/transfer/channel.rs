//! One transport channel, start to finish: gather candidates, exchange
//! them through the session, find a working pair, open PseudoTCP over it and
//! hand the stream to a job (the HTTP server or the HTTP client).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll};
use std::time::Duration;

use minidom::Element;
use tokio::sync::mpsc;
use tracing::debug;

use super::Failure;
use crate::cli::{Exit, GlobalArgs};
use crate::config::Settings;
use crate::ice::{Candidate, GatherConfig, IceChannel};
use crate::pseudotcp::{self, DatagramIo, PseudoTcpStream};
use crate::xmpp::{IqRequest, Xmpp};

const NS_JINGLEINFO: &str = "google:jingleinfo";

/// How to build a channel.
#[derive(Debug, Clone)]
pub struct ChannelSpec {
    pub name: String,
    pub bind: Option<IpAddr>,
    pub stun: Vec<SocketAddr>,
    /// How long finding a working pair and opening PseudoTCP may take.
    pub connect_timeout: Duration,
    /// `--advertise`: the one address announced instead of ours.
    pub advertise: Option<SocketAddr>,
}

impl ChannelSpec {
    /// From the settings; STUN servers from `--stun`, or else from the
    /// server's `google:jingleinfo` answer when it gives one (§B.7).
    pub async fn new(
        settings: &Settings,
        global: &GlobalArgs,
        xmpp: &Xmpp,
    ) -> Result<Self, Failure> {
        let mut stun = Vec::new();
        for s in &settings.stun {
            let addrs = tokio::net::lookup_host(s.as_str())
                .await
                .map_err(|e| Failure::new(Exit::Usage, format!("--stun {s}: {e}")))?;
            stun.extend(addrs.filter(|a| a.is_ipv4()).take(1));
        }
        if stun.is_empty() {
            stun = jingleinfo_stun(xmpp).await;
        }
        Ok(Self {
            name: String::new(),
            bind: settings.bind,
            stun,
            connect_timeout: Duration::from_secs(global.timeout),
            advertise: global.advertise,
        })
    }

    /// The same settings for channel `name`.
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }
}

/// Asks our server for STUN servers; an error or silence means none.
async fn jingleinfo_stun(xmpp: &Xmpp) -> Vec<SocketAddr> {
    let query = Element::builder("query", NS_JINGLEINFO).build();
    let answer = match xmpp
        .iq(None, IqRequest::Get(query), Duration::from_secs(3))
        .await
    {
        Ok(Some(a)) => a,
        Ok(None) => return Vec::new(),
        Err(e) => {
            debug!(%e, "no google:jingleinfo from the server");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for stun in answer.children().filter(|c| c.name() == "stun") {
        for server in stun.children().filter(|c| c.name() == "server") {
            let (Some(host), Some(port)) = (server.attr("host"), server.attr("udp")) else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            if let Ok(mut addrs) = tokio::net::lookup_host((host, port)).await
                && let Some(a) = addrs.find(|a| a.is_ipv4())
            {
                out.push(a);
            }
        }
    }
    debug!(?out, "STUN servers from google:jingleinfo");
    out
}

/// What a channel task reports to the job's owner.
#[derive(Debug)]
pub enum ChannelMsg {
    /// Send these in a transport-info for `name`.
    LocalCandidates {
        name: String,
        candidates: Vec<Candidate>,
    },
    /// A working pair was found and PseudoTCP is open. `peer_is_gshare`:
    /// the peer announced gshare's PseudoTCP option, so it also always
    /// sends `<complete/>` when it received everything.
    Connected { name: String, peer_is_gshare: bool },
    /// The HTTP server's progress.
    Serve(crate::http::ServeEvent),
    /// The job's own progress (receiver).
    Fetch(super::receive::FetchEvent),
    /// The channel failed.
    Failed { name: String, error: String },
    /// The job ended normally.
    Finished { name: String },
}

/// The running channel.
pub struct Handle {
    remote: mpsc::UnboundedSender<Candidate>,
    task: tokio::task::AbortHandle,
}

impl Handle {
    /// Feeds the peer's candidates to the ICE agent.
    pub fn add_remote(&self, candidates: Vec<Candidate>) {
        for c in candidates {
            let _ = self.remote.send(c);
        }
    }

    /// Stops the channel.
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// The ICE channel as PseudoTCP's datagram path.
struct IceIo(IceChannel);

impl DatagramIo for IceIo {
    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.0.poll_recv(cx, buf)
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, datagram: &[u8]) -> Poll<std::io::Result<()>> {
        self.0.poll_send(cx, datagram)
    }

    fn max_datagram_size(&self) -> usize {
        self.0.max_datagram_size()
    }
}

/// Starts channel `spec.name`: the job gets the open stream.
pub fn spawn<F, Fut>(spec: ChannelSpec, ctl: mpsc::UnboundedSender<ChannelMsg>, job: F) -> Handle
where
    F: FnOnce(PseudoTcpStream, mpsc::UnboundedSender<ChannelMsg>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let (remote_tx, mut remote_rx) = mpsc::unbounded_channel::<Candidate>();
    let name = spec.name.clone();
    let task = tokio::spawn(async move {
        let result = async {
            let config = GatherConfig {
                name: spec.name.clone(),
                bind: spec.bind,
                stun: spec.stun.clone(),
            };
            let mut ice = IceChannel::gather(config)
                .await
                .map_err(|e| format!("cannot open UDP sockets: {e}"))?;
            let mut candidates = ice.local_candidates();
            if let Some(addr) = spec.advertise {
                candidates.truncate(1);
                for c in &mut candidates {
                    c.address = addr;
                }
            }
            let _ = ctl.send(ChannelMsg::LocalCandidates {
                name: spec.name.clone(),
                candidates,
            });
            let sink = ice.remote_candidates_sink();
            tokio::spawn(async move {
                while let Some(c) = remote_rx.recv().await {
                    if sink.send(c).is_err() {
                        break;
                    }
                }
            });
            ice.connected(spec.connect_timeout)
                .await
                .map_err(|e| format!("no working network path: {e}"))?;
            let stream = tokio::time::timeout(
                spec.connect_timeout,
                PseudoTcpStream::connect(IceIo(ice), pseudotcp::Config::default()),
            )
            .await
            .map_err(|_| "PseudoTCP did not connect in time".to_string())?
            .map_err(|e| format!("PseudoTCP failed to connect: {e}"))?;
            let _ = ctl.send(ChannelMsg::Connected {
                name: spec.name.clone(),
                peer_is_gshare: stream.peer_is_gshare(),
            });
            job(stream, ctl.clone()).await
        }
        .await;
        let _ = match result {
            Ok(()) => ctl.send(ChannelMsg::Finished { name: name.clone() }),
            Err(error) => ctl.send(ChannelMsg::Failed {
                name: name.clone(),
                error,
            }),
        };
    });
    Handle {
        remote: remote_tx,
        task: task.abort_handle(),
    }
}
