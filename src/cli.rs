//! The command line: every flag is described here, once, and surfaces in
//! `--help` and in the shell completions. A module of the binary: the
//! methods at the end turn the arguments into the library's plain option
//! types, so the library never sees clap.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueHint};
use gshare::config::{self, Settings};
use gshare::transfer::{
    CommonOptions, DEFAULT_MAX_CONCURRENT, JingleTransports, ReceiveOptions, SendMethod,
    SendOptions,
};

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
    /// TURN server (UDP) for a relay candidate, used only when no direct
    /// path works. The XMPP server's TURN servers (XEP-0215) are used as
    /// well. Also: config file `turn`.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub turn: Option<String>,
    /// User name on the --turn server. Also: config file `turn-user`.
    #[arg(long, global = true, value_name = "USER")]
    pub turn_user: Option<String>,
    /// Read the TURN password from the first line of this file. Otherwise
    /// --turn-password-command, then GSHARE_TURN_PASSWORD, then the config file.
    #[arg(long, global = true, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub turn_password_file: Option<PathBuf>,
    /// Run this shell command and use the first line it prints as the TURN
    /// password.
    #[arg(long, global = true, value_name = "CMD")]
    pub turn_password_command: Option<String>,
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
    /// Jingle transports to offer and try: `any`, `proxy` (only the
    /// server's SOCKS5 proxy) or `ibb` (no SOCKS5 candidate, so in-band
    /// after the replace); for tests of each path.
    #[arg(long, global = true, hide = true, value_enum, value_name = "KIND", default_value_t = JingleTransportArg::Any)]
    pub jingle_transport: JingleTransportArg,
    /// Use only relay candidates (the --turn server's and the XMPP
    /// server's): no host or server-reflexive candidate is announced, so
    /// every datagram goes through a TURN relay (benchmarks and tests of
    /// the relayed path on one host).
    #[arg(long, global = true, hide = true)]
    pub relay_only: bool,
    /// Send with the classic Reno-family PseudoTCP sender even to a gshare
    /// peer, instead of the model-based one (benchmarks: a classic flow
    /// beside a model-based one through the same bottleneck).
    #[arg(long, global = true, hide = true)]
    pub classic_sender: bool,
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
    /// One JSON object per line on stdout for scripts (events: ready,
    /// offer, accepted, rejected, progress, item, skipped, done, failed;
    /// on receive each carries `from`).
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
    /// Print the manual page gshare.1 (roff), or with --dir write it and
    /// one page per subcommand (gshare-send.1, …) into DIR.
    #[command(hide = true)]
    Manpage {
        /// Write every page into this directory instead.
        #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
        dir: Option<PathBuf>,
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
    /// How to deliver: `google` (the Google share, directly; the recipient
    /// must be online), `jingle` (Jingle file transfer, XEP-0234, directly
    /// or through your server; not encrypted), `p2p` (google or jingle,
    /// whichever the recipient's resource can receive), `upload` (to your
    /// server's HTTP upload service, XEP-0363, with one link message per
    /// file: works for offline recipients and any client), or `auto`: p2p
    /// when the recipient has a resource that can receive within --wait,
    /// else upload.
    #[arg(long, value_enum, value_name = "METHOD", default_value_t = MethodArg::Auto)]
    pub method: MethodArg,
}

/// The hidden `--jingle-transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JingleTransportArg {
    Any,
    Proxy,
    Ibb,
}

impl From<JingleTransportArg> for JingleTransports {
    fn from(m: JingleTransportArg) -> JingleTransports {
        match m {
            JingleTransportArg::Any => JingleTransports::Any,
            JingleTransportArg::Proxy => JingleTransports::ProxyOnly,
            JingleTransportArg::Ibb => JingleTransports::IbbOnly,
        }
    }
}

/// `--method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    Auto,
    P2p,
    Google,
    Jingle,
    Upload,
}

impl From<MethodArg> for SendMethod {
    fn from(m: MethodArg) -> SendMethod {
        match m {
            MethodArg::Auto => SendMethod::Auto,
            MethodArg::P2p => SendMethod::P2p,
            MethodArg::Google => SendMethod::Google,
            MethodArg::Jingle => SendMethod::Jingle,
            MethodArg::Upload => SendMethod::Upload,
        }
    }
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
    /// With --auto-accept, decline offers larger than SIZE (like 500M or 2G;
    /// config file `max-size`). Offers larger than the free space of the
    /// output directory are always declined.
    #[arg(long, value_name = "SIZE", value_parser = config::parse_size)]
    pub max_size: Option<u64>,
    /// From a gshare sender, start over instead of continuing a partial file
    /// of an interrupted transfer, and keep nothing if this one is
    /// interrupted (config file `no-resume`).
    #[arg(long)]
    pub no_resume: bool,
}

/// Shown under `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  done
  1  failure (connection, TLS, local I/O, protocol)
  2  usage error (bad arguments or configuration)
  3  authentication failed (wrong user name or password)
  4  peer unreachable: offline, no resource that can receive files, or no answer
     (and no upload service to fall back on)
  5  declined by the peer
  6  cancelled (Ctrl-C here, or cancelled by the peer)
  7  transfer failed or could not be verified (nothing saved under the final name),
     or the upload was refused (file too large, quota) or broke off
  8  not encrypted: --require-encryption and the peer does not support encryption,
     or only the upload method or Jingle was left (nothing was sent)";

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
            turn: self.turn.clone(),
            turn_user: self.turn_user.clone(),
            turn_password_file: self.turn_password_file.clone(),
            turn_password_command: self.turn_password_command.clone(),
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
            jingle_transports: self.jingle_transport.into(),
            relay_only: self.relay_only,
            classic_sender: self.classic_sender,
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
            method: self.method.into(),
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
            max_size: self.max_size.or(settings.max_size),
            no_resume: self.no_resume || settings.no_resume,
            resume_max_age: settings
                .resume_max_age
                .unwrap_or(gshare::transfer::files::DEFAULT_RESUME_MAX_AGE),
        }
    }
}

/// Where the generated manual pages live in the repository.
#[cfg(test)]
const MAN_DIR: &str = "man";

/// Writes `gshare.1` to `w`.
pub fn manpage(w: &mut dyn std::io::Write) -> std::io::Result<()> {
    // As generate_to renders it: the help subcommand is not a page.
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    clap_mangen::Man::new(cmd).render(w)
}

/// Writes `gshare.1` and one page per visible subcommand into `dir`.
pub fn manpages(dir: &std::path::Path) -> std::io::Result<()> {
    clap_mangen::generate_to(Cli::command(), dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pages in `man/` are what the command line says today; after a
    /// change to a flag run `cargo run -- manpage --dir man`.
    #[test]
    fn the_manual_pages_in_the_repository_are_up_to_date() {
        let fresh = tempfile::tempdir().unwrap();
        manpages(fresh.path()).unwrap();
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(MAN_DIR);
        let names = |dir: &std::path::Path| {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names(fresh.path()),
            names(&repo),
            "run `cargo run -- manpage --dir man`"
        );
        for name in names(fresh.path()) {
            let want = std::fs::read_to_string(fresh.path().join(&name)).unwrap();
            let have = std::fs::read_to_string(repo.join(&name)).unwrap();
            assert!(
                want == have,
                "man/{name} is out of date: run `cargo run -- manpage --dir man`"
            );
        }
        let mut top = Vec::new();
        manpage(&mut top).unwrap();
        let top = String::from_utf8(top).unwrap();
        assert_eq!(
            top,
            std::fs::read_to_string(repo.join("gshare.1")).unwrap(),
            "`gshare manpage` differs from man/gshare.1"
        );
        assert!(top.contains("receive"), "{top}");
        assert!(!top.contains("manpage"), "the hidden subcommand is listed");
    }
}
