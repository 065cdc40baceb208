//! The `gshare` binary: parse, set up logging, run, map errors to the
//! documented exit codes. Everything else lives in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

mod cli;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command};
use gshare::transfer::{self, Exit, Failure};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    Exit::Ok.into()
                }
                _ => Exit::Usage.into(),
            };
        }
    };
    init_logging(&cli);
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "gshare",
            &mut std::io::stdout(),
        );
        return Exit::Ok.into();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gshare: cannot start the runtime: {e}");
            return Exit::Failure.into();
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(()) => Exit::Ok.into(),
        Err(failure) => {
            eprintln!("gshare: {failure}");
            failure.exit.into()
        }
    }
}

/// Merges the settings and runs the command.
async fn run(cli: &Cli) -> Result<(), Failure> {
    let settings = gshare::config::resolve(&cli.global.account())?;
    match &cli.command {
        Command::Send(args) => transfer::send(&settings, &args.options(&cli.global)).await,
        Command::Receive(args) => {
            transfer::receive(&settings, &args.options(&cli.global, &settings)).await
        }
        Command::Completions { .. } => Ok(()),
    }
}

fn init_logging(cli: &Cli) {
    let g = &cli.global;
    let default = if g.quiet {
        "error"
    } else {
        match g.verbose {
            0 => "warn",
            1 => "info,gshare=debug",
            // tokio_xmpp's own trace output carries raw XML including the
            // SASL exchange: keep it at debug; stanzas are printed by us.
            _ => "debug,gshare=trace,tokio_xmpp=debug,xmpp_parsers=debug",
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
