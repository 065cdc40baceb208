//! Child processes for the end-to-end benchmark: stdout lines stamped with
//! the instant they were read, and the exit reaped with `wait4`, which gives
//! that one child's CPU time and peak RSS (Linux reports the child together
//! with the descendants it reaped, e.g. scp with its ssh). A thread per
//! child blocks in `wait4`, so the exit instant is exact.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// What `wait4` said about a finished child.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// From spawn to reaped.
    pub wall: Duration,
    pub user: f64,
    pub sys: f64,
    /// Peak resident set size, bytes.
    pub max_rss: u64,
    /// Exit code, or 128 + signal.
    pub code: i32,
    /// Voluntary + involuntary context switches.
    pub csw: u64,
}

impl Usage {
    pub fn cpu(&self) -> f64 {
        self.user + self.sys
    }
}

/// A running child with a line reader on its stdout.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<(Instant, String)>,
    /// Every line read so far.
    pub seen: Vec<(Instant, String)>,
    stderr_path: PathBuf,
    exit: Receiver<Usage>,
    usage: Option<Usage>,
}

impl Proc {
    /// Spawns `cmd` with stdout piped (read by a thread), stdin piped, and
    /// stderr to `stderr_path`.
    pub fn spawn(name: &str, mut cmd: Command, stderr_path: &Path) -> Result<Proc> {
        let err = std::fs::File::create(stderr_path)
            .with_context(|| format!("create {}", stderr_path.display()))?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err));
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {name} ({cmd:?})"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("{name}: no stdout"))?;
        let stdin = child.stdin.take();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let pid = child.id() as i32;
        let (exit_tx, exit) = channel();
        std::thread::spawn(move || {
            let _ = exit_tx.send(reap(pid, started));
        });
        Ok(Proc {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            seen: Vec::new(),
            stderr_path: stderr_path.to_owned(),
            exit,
            usage: None,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next stdout line, waiting at most until `deadline`.
    pub fn next_line(&mut self, deadline: Instant) -> Result<(Instant, String)> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(l) => {
                self.seen.push(l.clone());
                Ok(l)
            }
            Err(RecvTimeoutError::Timeout) => bail!(
                "{}: nothing for too long; {}",
                self.name,
                self.diagnostics()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                bail!("{}: exited early; {}", self.name, self.diagnostics())
            }
        }
    }

    /// The next stdout line if one comes within `timeout`; an error if
    /// stdout is closed (the process exited).
    pub fn poll_line(&mut self, timeout: Duration) -> Result<Option<(Instant, String)>> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => {
                self.seen.push(l.clone());
                Ok(Some(l))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                bail!("{}: exited early; {}", self.name, self.diagnostics())
            }
        }
    }

    /// Reads lines until one satisfies `want`.
    pub fn expect(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(&str) -> bool,
    ) -> Result<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let (t, l) = self.next_line(deadline)?;
            if want(&l) {
                return Ok((t, l));
            }
        }
    }

    /// Writes one line to its stdin.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let s = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("{}: stdin closed", self.name))?;
        writeln!(s, "{line}")
            .and_then(|_| s.flush())
            .with_context(|| format!("{}: write stdin", self.name))
    }

    /// Last lines of stdout and stderr, for error messages.
    pub fn diagnostics(&self) -> String {
        let out: Vec<&str> = self.seen.iter().map(|(_, l)| l.as_str()).collect();
        let err = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let err: Vec<&str> = err.lines().collect();
        format!(
            "stdout tail: {:?}; stderr tail: {:?}",
            &out[out.len().saturating_sub(6)..],
            &err[err.len().saturating_sub(12)..]
        )
    }

    /// The exit, if it happened already.
    pub fn exited(&mut self) -> Option<Usage> {
        if self.usage.is_none()
            && let Ok(u) = self.exit.try_recv()
        {
            self.usage = Some(u);
        }
        self.usage
    }

    /// Waits for the exit; kills it after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Result<Usage> {
        if let Some(u) = self.usage {
            return Ok(u);
        }
        match self.exit.recv_timeout(timeout) {
            Ok(u) => {
                self.usage = Some(u);
                Ok(u)
            }
            Err(_) => {
                self.kill();
                bail!(
                    "{}: did not exit within {timeout:?}; {}",
                    self.name,
                    self.diagnostics()
                )
            }
        }
    }

    /// Waits for the exit and insists on status 0.
    pub fn wait_ok(&mut self, timeout: Duration) -> Result<Usage> {
        let u = self.wait(timeout)?;
        if u.code != 0 {
            // Collect what is left of stdout for the message.
            std::thread::sleep(Duration::from_millis(20));
            while let Ok(l) = self.lines.try_recv() {
                self.seen.push(l);
            }
            bail!(
                "{}: exit status {}; {}",
                self.name,
                u.code,
                self.diagnostics()
            );
        }
        Ok(u)
    }

    /// Sends a signal (if still running).
    pub fn signal(&mut self, sig: i32) {
        if self.exited().is_none() {
            // SAFETY: our own child, not reaped yet (the waiter thread
            // reaps it and reports before we could see a reused pid).
            unsafe {
                libc::kill(self.pid(), sig);
            }
        }
    }

    /// SIGKILL and wait for the reaper.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            self.signal(libc::SIGKILL);
            if let Ok(u) = self.exit.recv_timeout(Duration::from_secs(5)) {
                self.usage = Some(u);
            }
        }
    }
}

/// Blocks in `wait4` for `pid`; the instant of the exit is taken right
/// after it returns.
fn reap(pid: i32, started: Instant) -> Usage {
    let mut status = 0;
    // SAFETY: rusage is plain data the kernel fills in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: our own child's pid; out-pointers to live locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Usage {
                wall: started.elapsed(),
                code: -1,
                ..Usage::default()
            };
        }
    }
    let wall = started.elapsed();
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        -1
    };
    Usage {
        wall,
        user: tv(ru.ru_utime),
        sys: tv(ru.ru_stime),
        max_rss: ru.ru_maxrss as u64 * 1024,
        code,
        csw: (ru.ru_nvcsw + ru.ru_nivcsw) as u64,
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
