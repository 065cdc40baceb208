//! Send and receive jobs: everything joined into the tool users run.
//!
//! This layer owns the flow of PROTOCOL.md §0: it logs in ([`crate::xmpp`]),
//! drives the session machine, and for each channel gathers candidates,
//! connects, opens PseudoTCP and runs HTTP over it, writing to disk.

mod channel;
pub mod files;
pub mod names;
mod receive;
mod report;
mod send;
mod signalling;
pub mod tar;

use std::time::Duration;

use tokio_xmpp::parsers::jid::{BareJid, FullJid, Jid};

use crate::cli::{Cli, Command, Exit};
use crate::config::{self, Settings};
use crate::xmpp::{Account, ConnectOptions, Xmpp, XmppError};

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

/// Runs one command line.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let settings = config::resolve(&cli.global)?;
    match &cli.command {
        Command::Send(args) => send::run(&cli.global, &settings, args).await,
        Command::Receive(args) => receive::run(&cli.global, &settings, args).await,
        Command::Completions { .. } => Ok(()),
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
