//! A private coturn for one test: UDP only, on loopback, its own relay port
//! range, long-term users or the TURN REST shared secret. Stopped on drop.
//!
//! coturn must be installed (`scripts/install-deps` installs it); a missing
//! binary fails the test with that advice, it never skips.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REALM: &str = "gshare.test";

pub enum Auth<'a> {
    /// `-a -u user:password` (long-term credentials).
    Users(&'a [(&'a str, &'a str)]),
    /// `--use-auth-secret --static-auth-secret=SECRET` (TURN REST scheme).
    Secret(&'a str),
}

pub struct Coturn {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
    args: Vec<std::ffi::OsString>,
}

fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind a free UDP port");
    s.local_addr().expect("local addr").port()
}

impl Coturn {
    pub fn start(auth: Auth<'_>, extra: &[&str]) -> Coturn {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("turnserver").is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "`turnserver` is not installed: run `scripts/install-deps` or `apt-get install coturn`"
        );
        let dir = tempfile::Builder::new()
            .prefix("gshare-coturn-")
            .tempdir()
            .expect("tempdir");
        let port = free_udp_port();
        // A relay range below the ephemeral ports, different per server
        // (tests run in parallel).
        let min = 20000 + (u32::from(port) * 7919 % 490) as u16 * 20;
        let d = dir.path();
        let mut cmd = Command::new("turnserver");
        cmd.args(["-n", "--realm", REALM, "-L", "127.0.0.1", "-E", "127.0.0.1"])
            .args(["-p", &port.to_string()])
            .args([
                "--min-port",
                &min.to_string(),
                "--max-port",
                &(min + 19).to_string(),
            ])
            .args([
                "--no-tcp",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--no-tcp-relay",
            ])
            .args([
                "--no-multicast-peers",
                "--no-rfc5780",
                "--allow-loopback-peers",
            ])
            .args(["--no-stdout-log", "--simple-log"])
            .arg("-b")
            .arg(d.join("turndb"))
            .arg("--log-file")
            .arg(d.join("turn.log"))
            .arg("--pidfile")
            .arg(d.join("turn.pid"));
        match auth {
            Auth::Users(users) => {
                cmd.arg("-a");
                for (u, p) in users {
                    cmd.args(["-u", &format!("{u}:{p}")]);
                }
            }
            Auth::Secret(s) => {
                cmd.args(["--use-auth-secret", &format!("--static-auth-secret={s}")]);
            }
        }
        cmd.args(extra);
        let mut c = Coturn {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            child: None,
            args: cmd.get_args().map(|a| a.to_owned()).collect(),
        };
        c.launch();
        c
    }

    fn launch(&mut self) {
        let child = Command::new("turnserver")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start turnserver");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Kills the server and starts a fresh one on the same port: every
    /// allocation is forgotten.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until a classic binding request gets an answer.
    fn wait_ready(&mut self) {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut req = vec![0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        req.extend_from_slice(&[9; 12]);
        let mut buf = [0u8; 1500];
        loop {
            let _ = s.send_to(&req, self.addr);
            if s.recv_from(&mut buf).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("turnserver exited with {status}: {}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "turnserver did not answer: {}",
                self.log_tail()
            );
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("turn.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        self.kill();
    }
}
