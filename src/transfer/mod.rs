//! Send and receive jobs: everything joined into the tool users run.
//!
//! This layer owns the flow of docs/protocol.md §0: it logs in
//! ([`crate::xmpp`]), drives the session machine, and for each channel
//! gathers candidates, connects, opens PseudoTCP and runs HTTP over it,
//! writing to disk. It takes plain option types ([`SendOptions`],
//! [`ReceiveOptions`], [`crate::config::Settings`]); the command line that
//! fills them lives in the binary.
//!
//! Files: `send.rs` and `receive.rs` hold each job's state and one method
//! per input (signal, channel message, user decision, timer, Ctrl-C);
//! `channel.rs` runs one transport channel and tags what it reports with
//! its session; `serve.rs` (sender) and `fetch.rs` (receiver) are the jobs
//! on an open stream; `report.rs` is what users see.
//!
//! Where the private extension (`urn:gshare:secure:1`, docs/protocol.md §H.2)
//! plugs in: the receiver reads the sender's offer in `Receiver::on_offer`
//! (`SessionEvent::Offer`), answers in `Receiver::on_decision` (today
//! `accept`, then `accept_with`), and hands what was agreed to
//! `Channels::start` as a `channel::Negotiated`; the sender offers in `run`
//! (`initiate`, then `initiate_with`), learns the answer in
//! `Sender::on_session` (`SessionEvent::Accepted`) and starts the serve job
//! with it on `ChannelRequested`. Both jobs receive it in `Link::negotiated`
//! next to the stream, which they take as any `AsyncRead + AsyncWrite`: TLS
//! wraps the stream there, before HTTP, and the fetch job checks digests and
//! resumes there.

mod by_jingle;
mod by_upload;
mod channel;
mod explain;
mod fetch;
pub mod files;
mod links;
pub mod names;
mod receive;
mod report;
mod resolve;
mod send;
mod serve;
mod signalling;
mod space;
pub mod tar;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokio_xmpp::parsers::jid::{BareJid, FullJid, Jid};

use crate::config::{self, Settings};
use crate::xmpp::{Account, ConnectOptions, Xmpp, XmppError};

pub use receive::run as receive;
pub use send::run as send;

/// The documented exit codes (`gshare --help` lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    Failure = 1,
    Usage = 2,
    Auth = 3,
    Unreachable = 4,
    Declined = 5,
    Cancelled = 6,
    TransferFailed = 7,
    /// `--require-encryption` and the peer cannot encrypt (a classic peer).
    NotEncrypted = 8,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// Options of both jobs.
#[derive(Debug, Clone)]
pub struct CommonOptions {
    /// No answer, no accept or no working path within this ends a session.
    pub timeout: Duration,
    /// Announce only this address as our candidate (tests and benchmarks
    /// with an impairment relay between the peers).
    pub advertise: Option<SocketAddr>,
    /// One JSON object per line on stdout.
    pub json: bool,
    /// Only errors on stderr.
    pub quiet: bool,
    /// `--require-encryption` (the config file's key is in `Settings`).
    pub require_encryption: bool,
    /// Hidden `--no-encryption`: offer no certificate fingerprint, so a
    /// gshare peer falls back to plaintext (benchmarks).
    pub no_encryption: bool,
    /// Hidden `--jingle-transport`: which Jingle transports to use.
    pub jingle_transports: JingleTransports,
    /// Hidden `--relay-only`: announce only TURN relay candidates
    /// (benchmarks and tests of the relayed path).
    pub relay_only: bool,
    /// Hidden `--classic-sender`: our PseudoTCP sender is the classic
    /// Reno-family one even with a gshare peer (benchmarks of fairness).
    pub classic_sender: bool,
}

/// Which Jingle transports to offer and try (tests of each path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JingleTransports {
    /// Host candidates, the server's proxy, IBB as the fallback.
    #[default]
    Any,
    /// Only proxy candidates (ours and the peer's).
    ProxyOnly,
    /// No SOCKS5 candidate at all: IBB after the replace.
    IbbOnly,
}

/// What `gshare send` does.
#[derive(Debug, Clone)]
pub struct SendOptions {
    pub common: CommonOptions,
    /// Files or folders to offer; `-` is standard input.
    pub files: Vec<String>,
    /// The recipient: a bare or full JID, as typed.
    pub target: String,
    /// Name to offer for `-`.
    pub stdin_name: Option<String>,
    /// How long to wait for the recipient to come online and answer.
    pub wait: Duration,
    /// Peer to peer, by upload to our server, or peer to peer with the
    /// upload as the fallback.
    pub method: SendMethod,
}

/// How `gshare send` delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SendMethod {
    /// Peer to peer when the recipient has a resource that can receive
    /// (Google share or Jingle) within `--wait`, else by upload
    /// ([`crate::upload`]).
    #[default]
    Auto,
    /// Peer to peer only: Google share or Jingle, whichever the resource
    /// can receive (Google share first).
    P2p,
    /// The Google share only (`share-v1` caps).
    Google,
    /// Jingle file transfer only (XEP-0234 with S5B/IBB, not encrypted).
    Jingle,
    /// By upload only (XEP-0363 and a link message per file).
    Upload,
}

impl SendMethod {
    /// The name in `--json` events and `--method`.
    pub fn as_str(self) -> &'static str {
        match self {
            SendMethod::Auto => "auto",
            SendMethod::P2p => "p2p",
            SendMethod::Google => "google",
            SendMethod::Jingle => "jingle",
            SendMethod::Upload => "upload",
        }
    }
}

/// What `gshare receive` does.
#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    pub common: CommonOptions,
    /// Accept offers without asking.
    pub auto_accept: bool,
    /// Only consider offers from these JIDs (as typed); empty: anyone.
    pub from: Vec<String>,
    /// Directory to save into, or `-` for standard output.
    pub output: String,
    /// End after the first transfer ends.
    pub once: bool,
    /// Replace existing files instead of choosing a new name.
    pub overwrite: bool,
    /// How many transfers may run at once (at least 1); further offers are
    /// declined as busy.
    pub max_concurrent: usize,
    /// Auto-accept declines an offer larger than this many bytes.
    pub max_size: Option<u64>,
    /// Neither continue partial files of interrupted transfers nor keep
    /// them (gshare senders only; classic peers never resume).
    pub no_resume: bool,
    /// Partial files older than this are removed when `receive` starts.
    pub resume_max_age: Duration,
}

/// The default of [`ReceiveOptions::max_concurrent`].
pub const DEFAULT_MAX_CONCURRENT: usize = 4;

/// A failed run: what to tell the user, and the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }
}

impl From<XmppError> for Failure {
    fn from(e: XmppError) -> Self {
        let exit = match &e {
            XmppError::Auth { .. } => Exit::Auth,
            XmppError::Config(_) => Exit::Usage,
            _ => Exit::Failure,
        };
        Failure::new(exit, e.to_string())
    }
}

impl From<config::ConfigError> for Failure {
    fn from(e: config::ConfigError) -> Self {
        Failure::new(Exit::Usage, e.to_string())
    }
}

/// Parses a recipient: `user@domain` or `user@domain/resource`.
pub fn parse_target(text: &str) -> Result<Jid, Failure> {
    let jid: Jid = text.parse().map_err(|e| {
        Failure::new(
            Exit::Usage,
            format!("{text:?} is not a JID (user@domain[/resource]): {e}"),
        )
    })?;
    if jid.node().is_none() {
        return Err(Failure::new(
            Exit::Usage,
            format!("{text:?} is not a user's JID (expected user@domain)"),
        ));
    }
    Ok(jid)
}

/// Logs in with the merged settings.
pub async fn login(
    settings: &Settings,
    options: ConnectOptions,
) -> Result<(Xmpp, tokio::sync::mpsc::Receiver<crate::xmpp::Incoming>), Failure> {
    let jid: BareJid = settings.jid.parse().map_err(|e| {
        Failure::new(
            Exit::Usage,
            format!("--jid {:?} is not a JID: {e}", settings.jid),
        )
    })?;
    let account = Account {
        jid,
        password: settings.password.clone(),
        resource: settings.resource.clone(),
        server: settings.server.clone(),
        ca_file: settings.ca_file.clone(),
    };
    Ok(Xmpp::connect(&account, options).await?)
}

/// A full JID is used as given; a bare JID waits up to `wait` for an
/// available resource that advertises share-v1. Directed presence and a
/// probe are sent (and repeated while waiting, for a recipient that comes
/// online later), so no roster subscription is needed.
pub async fn resolve_target(xmpp: &Xmpp, target: &Jid, wait: Duration) -> Result<FullJid, Failure> {
    const REANNOUNCE: Duration = Duration::from_secs(2);
    let bare = target.to_bare();
    xmpp.announce_to(&bare).await?;
    if let Ok(full) = target.clone().try_into_full() {
        return Ok(full);
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Some(full) = xmpp
            .resolve_share_resource(&bare, left.min(REANNOUNCE))
            .await
        {
            return Ok(full);
        }
        if left <= REANNOUNCE {
            break;
        }
        xmpp.announce_to(&bare).await?;
    }
    Err(Failure::new(
        Exit::Unreachable,
        format!(
            "{bare} is offline or has no resource that can receive files \
             (waited {}s; is `gshare receive` running there?)",
            wait.as_secs()
        ),
    ))
}
