//! Libervia (libervia-backend + libervia-cli) headless for interop tests:
//! all state in a temp dir, PB bridge so no D-Bus, the backend killed on
//! drop. Shared by `tests/jingle_libervia.rs` and `tests/e2e_jingle.rs`
//! (`#[path = "support/libervia.rs"] mod libervia;`).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Libervia {
    pub dir: tempfile::TempDir,
    backend: Child,
}

impl Drop for Libervia {
    fn drop(&mut self) {
        let _ = self.backend.kill();
        let _ = self.backend.wait();
    }
}

impl Libervia {
    pub fn cmd(&self, bin: &str) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("/usr/bin/python3");
        c.arg(bin)
            .env("HOME", d)
            .env("XDG_CONFIG_HOME", d.join("config"))
            .env("XDG_DATA_HOME", d.join("data"))
            .env("XDG_CACHE_HOME", d.join("cache"))
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null());
        c
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let out = self
            .cmd("/usr/bin/libervia-cli")
            .args(args)
            .output()
            .expect("run libervia-cli");
        assert!(
            out.status.success(),
            "libervia-cli {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn start(cert: &Path) -> Libervia {
        for bin in ["/usr/bin/libervia-backend", "/usr/bin/libervia-cli"] {
            assert!(
                Path::new(bin).is_file(),
                "{bin} is not installed: run `scripts/install-deps` (apt-get install libervia-backend libervia-cli python3-progressbar)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("gshare-libervia-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for sub in ["config/libervia", "data", "cache"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(
            d.join("config/libervia/libervia.conf"),
            "[DEFAULT]\nbridge = pb\n",
        )
        .unwrap();
        let log = std::fs::File::create(d.join("backend.out")).unwrap();
        let mut tmp = Libervia {
            dir,
            backend: Command::new("true").spawn().unwrap(),
        };
        let backend = tmp
            .cmd("/usr/bin/libervia-backend")
            .arg("fg")
            .env("SSL_CERT_FILE", cert)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start libervia-backend");
        let _ = tmp.backend.wait();
        tmp.backend = backend;
        // Ready when the CLI gets an answer over the bridge.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = tmp
                .cmd("/usr/bin/libervia-cli")
                .args(["profile", "list"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "libervia-backend did not start: {}",
                tmp.backend_log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        tmp
    }

    pub fn backend_log(&self) -> String {
        let s = std::fs::read_to_string(self.dir.path().join("backend.out")).unwrap_or_default();
        s.chars()
            .rev()
            .take(4000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    }
}

impl Libervia {
    /// Creates profile `user` on the tests' Prosody (at 127.0.0.1:`port`),
    /// connects it, and returns its full JID.
    pub fn login(&self, user: &str, password: &str, port: u16) -> String {
        let jid = format!("{user}@localhost");
        let port = port.to_string();
        self.cli(&["profile", "create", user, "-j", &jid, "-x", password]);
        self.cli(&["profile", "connect", "-p", user, "--start-session"]);
        self.cli(&[
            "param",
            "set",
            "-p",
            user,
            "Connection",
            "Force server",
            "127.0.0.1",
        ]);
        self.cli(&[
            "param",
            "set",
            "-p",
            user,
            "Connection",
            "Force port",
            &port,
        ]);
        self.cli(&[
            "param",
            "set",
            "-p",
            user,
            "General",
            "allow_get_ip",
            "false",
        ]);
        self.cli(&["profile", "connect", "-p", user, "-c"]);
        let info = self.cli(&["info", "session", "-p", user, "--output", "json"]);
        let info: serde_json::Value =
            serde_json::from_slice(&info.stdout).expect("session info as JSON");
        info["jid"]
            .as_str()
            .expect("jid in session info")
            .to_owned()
    }
}
