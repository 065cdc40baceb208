//! Builds and drives `nice_peer` (tests/support/nice_peer.c), a libnice
//! agent in Google mode used as the reference peer (docs/protocol.md §F).
//!
//! The peer is compiled once per test binary run with the system C compiler
//! and `pkg-config nice` into `CARGO_TARGET_TMPDIR`. A missing libnice-dev or
//! pkg-config makes the test fail with a message saying what to install;
//! it never skips.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use gshare::ice::{Candidate, CandidateType};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Path of the compiled peer; compiles it on first use.
pub fn peer_binary() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(build_peer) {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn source_path() -> PathBuf {
    let me = Path::new(file!());
    let me = if me.is_absolute() {
        me.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(me)
    };
    me.with_file_name("nice_peer.c")
}

fn build_peer() -> Result<PathBuf, String> {
    const HINT: &str = "the libnice test peer needs a C compiler, pkg-config and libnice-dev \
                        (Debian: apt-get install gcc pkg-config libnice-dev)";
    let flags = std::process::Command::new("pkg-config")
        .args(["--cflags", "--libs", "nice"])
        .output()
        .map_err(|e| format!("cannot run pkg-config ({e}); {HINT}"))?;
    if !flags.status.success() {
        return Err(format!(
            "pkg-config does not know `nice`: {}; {HINT}",
            String::from_utf8_lossy(&flags.stderr).trim()
        ));
    }
    let flags = String::from_utf8_lossy(&flags.stdout).into_owned();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let out = dir.join("nice_peer");
    // Several test binaries may build at once: compile to a private name and
    // rename over the final one.
    let tmp = dir.join(format!("nice_peer.{}.tmp", std::process::id()));
    let src = source_path();
    let status = std::process::Command::new("cc")
        .arg("-O2")
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .args(flags.split_whitespace())
        .status()
        .map_err(|e| format!("cannot run cc ({e}); {HINT}"))?;
    if !status.success() {
        return Err(format!(
            "compiling {} failed ({status}); {HINT}",
            src.display()
        ));
    }
    std::fs::rename(&tmp, &out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out)
}

/// How to start a peer.
#[derive(Debug, Clone, Default)]
pub struct NiceOptions {
    /// PseudoTCP over the pair (`nice_agent_new_reliable`).
    pub reliable: bool,
    /// `controlling-mode`.
    pub controlling: bool,
    /// Echo every datagram back (datagram mode).
    pub echo: bool,
    /// Send this many test-stream bytes once writable.
    pub send: Option<u64>,
    /// Expect this many bytes.
    pub recv: Option<u64>,
    /// Test-stream seed.
    pub seed: u64,
    /// Bytes per `nice_agent_send`.
    pub chunk: Option<usize>,
    /// Print libnice's PseudoTCP state changes (`PTCP State A -> B` lines).
    pub ptcp_log: bool,
    /// HTTP client: request these paths one after the other (§D.1).
    pub get: Vec<String>,
    /// `Host` header value for `get` (sender's full JID + `:0`).
    pub host: Option<String>,
    /// HTTP server: serve this file.
    pub serve: Option<Serve>,
}

/// What `--serve` serves: `file` under `source_path` + escaped `name`.
#[derive(Debug, Clone)]
pub struct Serve {
    pub file: PathBuf,
    pub source_path: String,
    pub name: String,
}

/// A running peer.
pub struct NicePeer {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Its candidates, as read after `GATHERED`.
    pub candidates: Vec<Candidate>,
    /// Every line it printed.
    pub log: Vec<String>,
}

/// `SENT`/`RECEIVED` figures.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferReport {
    pub sha256: String,
    pub bytes: u64,
    pub seconds: f64,
    /// The peer process's user + system CPU seconds at the end (from the
    /// `CPU` line after the report), when read.
    pub cpu_seconds: Option<f64>,
}

impl NicePeer {
    /// Starts a peer and waits for its candidates.
    pub async fn spawn(opts: &NiceOptions) -> NicePeer {
        let mut cmd = Command::new(peer_binary());
        if opts.reliable {
            cmd.arg("--reliable");
        }
        if opts.echo {
            cmd.arg("--echo");
        }
        cmd.args(["--controlling", if opts.controlling { "1" } else { "0" }]);
        cmd.args(["--seed", &opts.seed.to_string()]);
        if let Some(n) = opts.send {
            cmd.args(["--send", &n.to_string()]);
        }
        if let Some(n) = opts.recv {
            cmd.args(["--recv", &n.to_string()]);
        }
        if let Some(n) = opts.chunk {
            cmd.args(["--chunk", &n.to_string()]);
        }
        if opts.ptcp_log {
            cmd.arg("--ptcp-log");
        }
        for path in &opts.get {
            cmd.args(["--get", path]);
        }
        if let Some(h) = &opts.host {
            cmd.args(["--host", h]);
        }
        if let Some(s) = &opts.serve {
            cmd.arg("--serve").arg(&s.file).args([
                "--source-path",
                &s.source_path,
                "--name",
                &s.name,
            ]);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn nice_peer");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut peer = NicePeer {
            child,
            stdin,
            stdout,
            candidates: Vec::new(),
            log: Vec::new(),
        };
        loop {
            let line = peer.next_line(Duration::from_secs(10)).await;
            if line == "GATHERED" {
                break;
            }
            if let Some(c) = parse_candidate(&line) {
                peer.candidates.push(c);
            }
        }
        assert!(!peer.candidates.is_empty(), "libnice gathered no candidate");
        peer
    }

    async fn next_line(&mut self, timeout: Duration) -> String {
        let line = tokio::time::timeout(timeout, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "nice_peer said nothing for {timeout:?}; log: {:?}",
                    self.log
                )
            })
            .expect("read nice_peer stdout")
            .unwrap_or_else(|| panic!("nice_peer exited; log: {:?}", self.log));
        self.log.push(line.clone());
        line
    }

    /// Waits for a line starting with `prefix` (other lines are logged).
    pub async fn expect(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let line = self.next_line(left).await;
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Every line seen so far that starts with `prefix`.
    pub fn seen(&self, prefix: &str) -> Vec<&str> {
        self.log
            .iter()
            .filter(|l| l.starts_with(prefix))
            .map(String::as_str)
            .collect()
    }

    /// Passes a remote candidate.
    pub async fn add_remote(&mut self, c: &Candidate) {
        self.send_line(&candidate_line(c)).await;
    }

    /// Writes one input line.
    pub async fn send_line(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to nice_peer");
        self.stdin.flush().await.expect("flush nice_peer stdin");
    }

    /// Asks the peer to exit and waits for it.
    pub async fn quit(mut self) {
        self.send_line("QUIT").await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    /// Asks the peer to exit and returns its exit code (`None`: killed by
    /// a signal or still running after 5 s).
    pub async fn quit_code(mut self) -> Option<i32> {
        self.send_line("QUIT").await;
        match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => None,
        }
    }
}

/// Parses `CANDIDATE <ip> <port> <username> <password> <type>`.
pub fn parse_candidate(line: &str) -> Option<Candidate> {
    let f: Vec<&str> = line.split(' ').collect();
    if f.len() < 6 || f[0] != "CANDIDATE" {
        return None;
    }
    let ip: IpAddr = f[1].parse().ok()?;
    let port: u16 = f[2].parse().ok()?;
    let kind = CandidateType::parse(f[5])?;
    let dash = |s: &str| {
        if s == "-" {
            String::new()
        } else {
            s.to_owned()
        }
    };
    Some(Candidate {
        name: "private-1".into(),
        address: SocketAddr::new(ip, port),
        username: dash(f[3]),
        password: dash(f[4]),
        preference: kind.default_preference(),
        protocol: "udp".into(),
        kind,
        generation: 0,
        network: "0".into(),
    })
}

/// The input line for a candidate.
pub fn candidate_line(c: &Candidate) -> String {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    format!(
        "CANDIDATE {} {} {} {} {}",
        c.address.ip(),
        c.address.port(),
        dash(&c.username),
        dash(&c.password),
        c.kind.as_str()
    )
}

/// Parses `SENT|RECEIVED SHA256 <hex> BYTES <n> SECONDS <t>`.
pub fn parse_report(line: &str) -> TransferReport {
    let f: Vec<&str> = line.split(' ').collect();
    assert!(
        f.len() == 7 && f[1] == "SHA256" && f[3] == "BYTES" && f[5] == "SECONDS",
        "{line}"
    );
    TransferReport {
        sha256: f[2].to_owned(),
        bytes: f[4].parse().expect("bytes"),
        seconds: f[6].parse().expect("seconds"),
        cpu_seconds: None,
    }
}

/// Parses `HTTP-BODY|HTTP-SERVED <status> SHA256 <hex> BYTES <n> SECONDS <t>`
/// into the status and the figures.
pub fn parse_http_report(line: &str) -> (u16, TransferReport) {
    let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
    assert!(head == "HTTP-BODY" || head == "HTTP-SERVED", "{line}");
    let (status, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let status = status
        .parse()
        .unwrap_or_else(|_| panic!("status in {line}"));
    (status, parse_report(&format!("{head} {rest}")))
}

/// Parses `CPU USER <s> SYS <s>` into total seconds.
pub fn parse_cpu(line: &str) -> Option<f64> {
    let f: Vec<&str> = line.split(' ').collect();
    match f.as_slice() {
        ["CPU", "USER", u, "SYS", s] => Some(u.parse::<f64>().ok()? + s.parse::<f64>().ok()?),
        _ => None,
    }
}

/// The peer's test stream: xorshift64*, 8 little-endian bytes per step.
#[derive(Debug, Clone)]
pub struct TestStream {
    state: u64,
    pending: [u8; 8],
    used: usize,
}

impl TestStream {
    pub fn new(seed: u64) -> Self {
        TestStream {
            state: if seed == 0 {
                0x9E37_79B9_7F4A_7C15
            } else {
                seed
            },
            pending: [0; 8],
            used: 8,
        }
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            if self.used == 8 {
                let mut x = self.state;
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                self.state = x;
                self.pending = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
                self.used = 0;
            }
            *b = self.pending[self.used];
            self.used += 1;
        }
    }
}

/// Hex SHA-256 of the first `n` bytes of stream `seed`.
pub fn stream_sha256(seed: u64, n: u64) -> String {
    let mut s = TestStream::new(seed);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut left = n;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        s.fill(&mut buf[..k]);
        h.update(&buf[..k]);
        left -= k as u64;
    }
    hex::encode(h.finalize())
}

/// Two reliable (PseudoTCP) libnice peers on loopback, wired to each other;
/// one sends `bytes` of stream `seed`, the other receives. Returns the
/// (sent, received) reports. Both sides controlling (§F.1: fastest start).
pub async fn libnice_pair_transfer(bytes: u64, seed: u64) -> (TransferReport, TransferReport) {
    let mut tx = NicePeer::spawn(&NiceOptions {
        reliable: true,
        controlling: true,
        send: Some(bytes),
        seed,
        ..Default::default()
    })
    .await;
    let mut rx = NicePeer::spawn(&NiceOptions {
        reliable: true,
        controlling: true,
        recv: Some(bytes),
        ..Default::default()
    })
    .await;
    for c in tx.candidates.clone() {
        rx.add_remote(&c).await;
    }
    for c in rx.candidates.clone() {
        tx.add_remote(&c).await;
    }
    let limit = Duration::from_secs(30 + bytes / (1 << 20));
    let mut received = parse_report(&rx.expect("RECEIVED", limit).await);
    received.cpu_seconds = parse_cpu(&rx.expect("CPU", Duration::from_secs(5)).await);
    let mut sent = parse_report(&tx.expect("SENT", Duration::from_secs(10)).await);
    sent.cpu_seconds = parse_cpu(&tx.expect("CPU", Duration::from_secs(5)).await);
    tx.quit().await;
    rx.quit().await;
    (sent, received)
}
