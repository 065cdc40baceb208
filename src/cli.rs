//! The command line: every flag is described here, once, and surfaces in
//! `--help` and in the shell completions. A module of the binary: the
//! methods at the end turn the arguments into the library's plain option
//! types, so the library never sees clap.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueHint};
use gshare::config::{self, Settings};
use gshare::transfer::{CommonOptions, DEFAULT_MAX_CONCURRENT, ReceiveOptions, SendOptions};

/// Send files between XMPP accounts with the Google Talk file-share protocol.
///
/// Examples:
///   gshare send file.tar.gz juliet@capulet.lit
///   gshare receive --auto-accept --from romeo@montague.lit
///   tar c dir | gshare send - --name dir.tar juliet@capulet.lit
#[derive(Debug, Parser)]
#[command(name = "gshare", version, about, long_about, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted before or after the subcommand name.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Account to log in as (user@domain). Also: config file `jid`.
    #[arg(long, global = true, value_name = "JID")]
    pub jid: Option<String>,
    /// Read the password from the first line of this file.
    /// Otherwise GSHARE_PASSWORD, then --password-command, then the config file.
    #[arg(long, global = true, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub password_file: Option<PathBuf>,
    /// Run this shell command and use the first line it prints as the password.
    #[arg(long, global = true, value_name = "CMD")]
    pub password_command: Option<String>,
    /// Connect to HOST:PORT instead of looking up the domain's SRV record.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub server: Option<String>,
    /// Also trust the certificates in this PEM file (a private CA, or the
    /// server's own self-signed certificate).
    #[arg(long, global = true, env = "GSHARE_CA_FILE", value_name = "PEM", value_hint = ValueHint::FilePath)]
    pub ca_file: Option<PathBuf>,
    /// XMPP resource to bind (default: chosen by the server).
    #[arg(long, global = true, value_name = "NAME")]
    pub resource: Option<String>,
    /// Config file (default: $XDG_CONFIG_HOME/gshare/config.toml).
    #[arg(long, global = true, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub config: Option<PathBuf>,
    /// Only use this local address for the transfer (default: every usable
    /// interface).
    #[arg(long, global = true, value_name = "ADDR")]
    pub bind: Option<std::net::IpAddr>,
    /// STUN server for a server-reflexive candidate (repeatable; the XMPP
    /// server's google:jingleinfo answer is used as well).
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub stun: Vec<String>,
    /// Announce only this address as our candidate, instead of the
    /// gathered ones (for tests and benchmarks that put an impairment relay
    /// between the peers; checks still use our usernames).
    #[arg(long, global = true, hide = true, value_name = "IP:PORT")]
    pub advertise: Option<std::net::SocketAddr>,
    /// Refuse transfers that would not be encrypted: a classic peer
    /// (libjingle, gabble, libnice) is declined when receiving and cancelled
    /// when sending, before any file byte moves (exit 8). Also: config file
    /// `require-encryption = true`.
    #[arg(long, global = true)]
    pub require_encryption: bool,
    /// Do not offer encryption to a gshare peer (benchmarks compare
    /// plaintext and TLS in the same run).
    #[arg(
        long,
        global = true,
        hide = true,
        conflicts_with = "require_encryption"
    )]
    pub no_encryption: bool,
    /// Session timeout in seconds: no answer, no accept or no working path
    /// within it ends the session.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 50)]
    pub timeout: u64,
    /// More logging: -v progress of each layer, -vv every XMPP stanza
    /// (SASL never shown). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// One JSON object per line on stdout for scripts (events: offer,
    /// accepted, progress, item, done, failed).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Offer files to a contact, wait for the answer, serve them, report.
    Send(SendArgs),
    /// Wait for offers, fetch accepted files, save them.
    Receive(ReceiveArgs),
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Files or folders to offer, then the recipient's JID (bare: the
    /// resource that can receive files is found; full: used as given).
    /// A FILE of `-` reads standard input; unless it is a regular file it is
    /// first copied to a temporary file, because the offer must state the size.
    #[arg(required = true, num_args = 2.., value_name = "FILE... JID", value_hint = ValueHint::AnyPath)]
    pub args: Vec<String>,
    /// Name to offer for `-` (default: stdin).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Seconds to wait for the recipient to come online and to answer.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub wait: u64,
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Accept offers without asking (from the --from JIDs, or from anyone
    /// when no --from is given).
    #[arg(long)]
    pub auto_accept: bool,
    /// Only consider offers from this JID (repeatable); others are rejected.
    #[arg(long, value_name = "JID")]
    pub from: Vec<String>,
    /// Directory to save into, or `-` to write a single-file offer to stdout.
    #[arg(short, long, value_name = "DIR", default_value = ".", value_hint = ValueHint::DirPath)]
    pub output: String,
    /// Exit after the first transfer ends.
    #[arg(long)]
    pub once: bool,
    /// Replace existing files instead of choosing a new name.
    #[arg(long)]
    pub overwrite: bool,
    /// Receive up to N transfers at once, from different senders; further
    /// offers are declined as busy (default 4; config file
    /// `max-concurrent`). With --once or -o -, one at a time.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_concurrent: Option<u16>,
}

/// Shown under `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  done
  1  failure (connection, TLS, local I/O, protocol)
  2  usage error (bad arguments or configuration)
  3  authentication failed (wrong user name or password)
  4  peer unreachable: offline, no resource that can receive files, or no answer
  5  declined by the peer
  6  cancelled (Ctrl-C here, or cancelled by the peer)
  7  transfer failed or could not be verified (nothing saved under the final name)
  8  not encrypted: --require-encryption and the peer does not support encryption";

impl GlobalArgs {
    /// The account flags, for [`config::resolve`].
    pub fn account(&self) -> config::Flags {
        config::Flags {
            jid: self.jid.clone(),
            password_file: self.password_file.clone(),
            password_command: self.password_command.clone(),
            server: self.server.clone(),
            ca_file: self.ca_file.clone(),
            resource: self.resource.clone(),
            config: self.config.clone(),
            bind: self.bind,
            stun: self.stun.clone(),
        }
    }

    /// What both commands share.
    pub fn common(&self) -> CommonOptions {
        CommonOptions {
            timeout: Duration::from_secs(self.timeout),
            advertise: self.advertise,
            json: self.json,
            quiet: self.quiet,
            require_encryption: self.require_encryption,
            no_encryption: self.no_encryption,
        }
    }
}

impl SendArgs {
    /// The send job's options.
    pub fn options(&self, global: &GlobalArgs) -> SendOptions {
        let (files, target) = match self.args.split_last() {
            Some((jid, files)) => (files.to_vec(), jid.clone()),
            None => (Vec::new(), String::new()),
        };
        SendOptions {
            common: global.common(),
            files,
            target,
            stdin_name: self.name.clone(),
            wait: Duration::from_secs(self.wait),
        }
    }
}

impl ReceiveArgs {
    /// The receive job's options: flags over the config file's defaults.
    pub fn options(&self, global: &GlobalArgs, settings: &Settings) -> ReceiveOptions {
        ReceiveOptions {
            common: global.common(),
            auto_accept: self.auto_accept,
            from: self.from.clone(),
            output: self.output.clone(),
            once: self.once,
            overwrite: self.overwrite,
            max_concurrent: self
                .max_concurrent
                .map(usize::from)
                .or(settings.max_concurrent)
                .unwrap_or(DEFAULT_MAX_CONCURRENT),
        }
    }
}
