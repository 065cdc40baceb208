//! A private OpenSSH server for the scp comparison: temporary host key,
//! temporary client key in `authorized_keys`, 127.0.0.1 and a free port,
//! foreground (`-D`), no system service. One daemon per transfer, so its
//! `wait4` usage (it reaps its session process) is that transfer's
//! receiving side.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::proc::{Proc, Usage};

const SSHD: &str = "/usr/sbin/sshd";

/// Keys and configuration (made once).
pub struct SshSetup {
    dir: PathBuf,
    pub port: u16,
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl SshSetup {
    /// Makes keys and an `sshd_config` in `dir`.
    pub fn new(dir: &Path) -> Result<SshSetup> {
        if !Path::new(SSHD).exists() || which("scp").is_none() {
            bail!(
                "the scp comparison needs OpenSSH: apt-get install openssh-server openssh-client \
                 (scripts/bench installs them)"
            );
        }
        std::fs::create_dir_all(dir)?;
        // sshd run by root refuses to start without its privilege-separation
        // directory (the package makes it only at boot).
        if !Path::new("/run/sshd").exists() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        for key in ["host_key", "client_key"] {
            let _ = std::fs::remove_file(dir.join(key));
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(key)))?;
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))?;
        let port = free_port()?;
        let d = dir.display();
        let user = user_name();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n\
             StrictModes no\nAllowUsers {user}\nSubsystem sftp internal-sftp\n"
        );
        std::fs::write(dir.join("sshd_config"), config)?;
        run(Command::new(SSHD)
            .arg("-t")
            .arg("-f")
            .arg(dir.join("sshd_config")))?;
        Ok(SshSetup {
            dir: dir.to_owned(),
            port,
        })
    }

    /// Starts a daemon and waits until it listens.
    pub fn start(&self) -> Result<Proc> {
        let mut cmd = Command::new(SSHD);
        cmd.args(["-D", "-e", "-f"])
            .arg(self.dir.join("sshd_config"));
        let mut p = Proc::spawn("sshd", cmd, &self.dir.join("sshd.err"))?;
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            if Instant::now() > deadline {
                p.kill();
                bail!("sshd did not listen; {}", p.diagnostics());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(p)
    }

    /// `scp` of `src` to `dest` on this server, with the client's defaults
    /// (cipher, SFTP protocol) except host-key checking.
    pub fn scp_command(&self, src: &Path, dest: &Path) -> Command {
        let user = user_name();
        let mut cmd = Command::new("scp");
        cmd.args(["-q", "-P", &self.port.to_string(), "-i"])
            .arg(self.dir.join("client_key"))
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(src)
            .arg(format!("{user}@127.0.0.1:{}", dest.display()));
        cmd
    }

    /// Stops a daemon (SIGTERM) and returns its usage including the
    /// session processes it reaped.
    pub fn stop(&self, mut p: Proc) -> Result<Usage> {
        // Let the daemon reap the finished session first.
        std::thread::sleep(Duration::from_millis(100));
        p.signal(libc::SIGTERM);
        p.wait(Duration::from_secs(5))
    }
}

/// The user we run as (sshd logs in as that user).
fn user_name() -> String {
    Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|u| !u.is_empty())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".into())
}

pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|f| f.is_file())
    })
}
