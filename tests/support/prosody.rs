//! A private Prosody for one test: free loopback port, temporary config,
//! data directory and self-signed (`CA:TRUE`, as `openssl req -x509` makes
//! it) certificate, accounts made with `prosodyctl`. Stopped on drop.
//!
//! Prosody and openssl must be installed (`scripts/test` installs them); a
//! missing binary fails the test with that advice, it never skips.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DOMAIN: &str = "localhost";

pub struct Prosody {
    pub port: u16,
    /// The HTTPS port of `mod_http_file_share`, when [`Options::upload`] is set.
    pub https_port: Option<u16>,
    /// The SOCKS5 port of `mod_proxy65`, when [`Options::proxy65`] is set.
    pub proxy65_port: Option<u16>,
    options: Options,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// What a test's server offers beyond login, presence and IQs (the default
/// is the plain server `start` makes).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `mod_turn_external` (XEP-0215): `(host, port, secret)` of a TURN
    /// server using the TURN REST shared secret.
    pub turn_external: Option<(String, u16, String)>,
    /// XEP-0363 HTTP File Upload: `upload.localhost` (`mod_http_file_share`)
    /// on a loopback HTTPS port with the tests' own certificate; its links
    /// are `https://localhost:PORT/…`.
    pub upload: Option<Upload>,
    /// Store messages for offline accounts (`mod_offline`).
    pub offline: bool,
    /// Run inside this network namespace (`ip netns` name), listening on
    /// this address instead of 127.0.0.1 (the TURN lab's public segment).
    pub netns: Option<(String, String)>,
    /// XEP-0065 SOCKS5 proxy `proxy.localhost` (`mod_proxy65` as a
    /// component) on a loopback port, announcing `127.0.0.1`.
    pub proxy65: bool,
}

/// `mod_http_file_share` limits.
#[derive(Debug, Clone)]
pub struct Upload {
    /// `http_file_share_size_limit`, announced as `max-file-size`.
    pub size_limit: u64,
    /// `http_file_share_daily_quota` per account.
    pub daily_quota: u64,
}

impl Default for Upload {
    fn default() -> Self {
        Upload {
            size_limit: 64 << 20,
            daily_quota: 1 << 30,
        }
    }
}

fn need(bin: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{bin}` is not installed: run `scripts/test` (it installs prosody, openssl and libnice) \
         or `apt-get install prosody openssl`"
    );
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl Prosody {
    /// Starts a server with these `(user, password)` accounts on `localhost`.
    pub fn start(accounts: &[(&str, &str)]) -> Prosody {
        Self::start_with(accounts, Options::default())
    }

    /// [`Prosody::start`] with extra services.
    pub fn start_with(accounts: &[(&str, &str)], options: Options) -> Prosody {
        need("prosody");
        need("prosodyctl");
        need("openssl");
        let dir = tempfile::Builder::new()
            .prefix("gshare-prosody-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("data")).expect("data dir");
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .arg("-keyout")
            .arg(d.join("key.pem"))
            .arg("-out")
            .arg(d.join("cert.pem"))
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl could not make a certificate");
        let port = free_port();
        let https_port = options.upload.as_ref().map(|_| free_port());
        let proxy65_port = options.proxy65.then(free_port);
        let mut p = Prosody {
            port,
            https_port,
            proxy65_port,
            options,
            dir,
            child: None,
        };
        p.write_config();
        for (user, pw) in accounts {
            p.register(user, pw);
        }
        p.launch();
        p
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("prosody.cfg.lua")
    }

    fn write_config(&self) {
        let d = self.dir.path().display();
        let mut enabled = String::from(r#""roster"; "saslauth"; "tls"; "disco"; "ping"; "posix""#);
        let mut disabled = String::from(r#""s2s"; "http"; "admin_shell"; "admin_socket""#);
        if self.options.offline {
            enabled.push_str(r#"; "offline""#);
        }
        let mut https = String::from("https_ports = { }\n");
        let mut components = String::new();
        if let (Some(up), Some(hp)) = (&self.options.upload, self.https_port) {
            disabled = r#""s2s"; "admin_shell"; "admin_socket""#.into();
            https = format!(
                r#"https_ports = {{ {hp} }}
https_interfaces = {{ "127.0.0.1" }}
https_ssl = {{ certificate = "{d}/cert.pem"; key = "{d}/key.pem" }}
http_external_url = "https://{DOMAIN}:{hp}/"
"#
            );
            components = format!(
                r#"Component "upload.{DOMAIN}" "http_file_share"
  http_host = "{DOMAIN}"
  http_file_share_size_limit = {}
  http_file_share_daily_quota = {}
"#,
                up.size_limit, up.daily_quota
            );
        }
        let mut extra = String::new();
        if let Some(pp) = self.proxy65_port {
            extra.push_str(&format!(
                "proxy65_ports = {{ {pp} }}\nproxy65_interfaces = {{ \"127.0.0.1\" }}\n"
            ));
            components.push_str(&format!(
                "Component \"proxy.{DOMAIN}\" \"proxy65\"\n  proxy65_address = \"127.0.0.1\"\n"
            ));
        }
        if let Some((host, port, secret)) = &self.options.turn_external {
            enabled.push_str(r#"; "turn_external""#);
            extra.push_str(&format!(
                "turn_external_host = \"{host}\"\nturn_external_port = {port}\n\
                 turn_external_secret = \"{secret}\"\n"
            ));
        }
        let cfg = format!(
            r#"run_as_root = true
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
log = {{ debug = "{d}/prosody.log" }}
modules_enabled = {{ {enabled} }}
modules_disabled = {{ {disabled} }}
c2s_ports = {{ {port} }}
c2s_interfaces = {{ "{c2s_ip}" }}
s2s_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
{https}c2s_require_encryption = true
authentication = "internal_hashed"
certificates = "{d}"
{extra}VirtualHost "{DOMAIN}"
  ssl = {{ certificate = "{d}/cert.pem"; key = "{d}/key.pem" }}
{components}"#,
            port = self.port,
            c2s_ip = self.c2s_ip(),
        );
        std::fs::write(self.config_path(), cfg).expect("write prosody config");
    }

    /// Adds an account (works while running: internal storage is files).
    pub fn register(&self, user: &str, password: &str) {
        let out = Command::new("prosodyctl")
            .arg("--config")
            .arg(self.config_path())
            .args(["register", user, DOMAIN, password])
            .output()
            .expect("run prosodyctl");
        assert!(
            out.status.success(),
            "prosodyctl register {user} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("prosody.out")).expect("log file");
        let mut cmd = match &self.options.netns {
            Some((ns, _)) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "prosody"]);
                c
            }
            None => Command::new("prosody"),
        };
        let child = cmd
            .arg("--config")
            .arg(self.config_path())
            .arg("-F")
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start prosody");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in std::iter::once(self.port)
            .chain(self.https_port)
            .chain(self.proxy65_port)
        {
            self.wait_listening(port, deadline);
        }
    }

    fn c2s_ip(&self) -> &str {
        self.options
            .netns
            .as_ref()
            .map_or("127.0.0.1", |(_, ip)| ip.as_str())
    }

    /// Whether something accepts TCP on `port` (inside the namespace, if
    /// the server runs in one).
    fn listening(&self, port: u16) -> bool {
        match &self.options.netns {
            Some((ns, ip)) => Command::new("ip")
                .args(["netns", "exec", ns, "bash", "-c"])
                .arg(format!("exec 3<>/dev/tcp/{ip}/{port}"))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            None => {
                let addr: SocketAddr = ([127, 0, 0, 1], port).into();
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            }
        }
    }

    fn wait_listening(&mut self, port: u16, deadline: Instant) {
        while !self.listening(port) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("prosody exited with {status}: {}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "prosody did not listen: {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills and restarts the server (same port, same accounts).
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

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("prosody.out")).unwrap_or_default()
            + &std::fs::read_to_string(self.dir.path().join("prosody.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `127.0.0.1:PORT`, for `--server`.
    pub fn server(&self) -> String {
        format!("{}:{}", self.c2s_ip(), self.port)
    }

    /// The server's private key (for a test's own HTTPS server posing as it).
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// The server's certificate, for `--ca-file`.
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn jid(user: &str) -> String {
        format!("{user}@{DOMAIN}")
    }

    /// A `gshare` command logged in as `user` on this server.
    pub fn gshare(&self, user: &str, password: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_gshare"));
        c.env("GSHARE_PASSWORD", password)
            .env_remove("GSHARE_CA_FILE")
            .env("XDG_CONFIG_HOME", self.dir.path().join("no-config"))
            .arg("--jid")
            .arg(Self::jid(user))
            .arg("--server")
            .arg(self.server())
            .arg("--ca-file")
            .arg(self.cert());
        c
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        self.kill();
    }
}
