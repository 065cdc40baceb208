//! Account settings: the config file, the environment and the flags, with
//! flags winning. The flags come in as a plain [`Flags`] (the binary's
//! command line fills it); this module knows nothing of clap.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The account flags as given (each `None`/empty when not given).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub jid: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<String>,
    pub server: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub resource: Option<String>,
    /// The config file to read instead of the default one.
    pub config: Option<PathBuf>,
    pub bind: Option<std::net::IpAddr>,
    pub stun: Vec<String>,
    /// `--turn HOST:PORT`.
    pub turn: Option<String>,
    /// `--turn-user`.
    pub turn_user: Option<String>,
    /// `--turn-password-file`.
    pub turn_password_file: Option<PathBuf>,
    /// `--turn-password-command`.
    pub turn_password_command: Option<String>,
}

/// `$XDG_CONFIG_HOME/gshare/config.toml`: the account settings of the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    pub jid: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<String>,
    pub server: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub resource: Option<String>,
    #[serde(default)]
    pub stun: Vec<String>,
    pub bind: Option<std::net::IpAddr>,
    /// `gshare receive`: how many transfers at once (`--max-concurrent`).
    pub max_concurrent: Option<usize>,
    /// `gshare receive`: the largest offer auto-accept takes (`--max-size`):
    /// bytes, or a text like `"500M"`.
    pub max_size: Option<SizeSetting>,
    /// `gshare receive`: neither resume nor keep partial files (`--no-resume`).
    pub no_resume: Option<bool>,
    /// `gshare receive`: partial files older than this are removed, e.g.
    /// `"3d"`, `"12h"`, `"90m"`, `"3600s"` or seconds (default 3 days).
    pub resume_max_age: Option<String>,
    /// TURN relay server (`--turn`).
    pub turn: Option<String>,
    /// TURN user name (`--turn-user`).
    pub turn_user: Option<String>,
    /// TURN password file (`--turn-password-file`).
    pub turn_password_file: Option<PathBuf>,
    /// TURN password command (`--turn-password-command`).
    pub turn_password_command: Option<String>,
    /// Refuse transfers that would not be encrypted (`--require-encryption`).
    pub require_encryption: Option<bool>,
}

/// A size in the config file: a number of bytes or a text like `"2G"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeSetting {
    Bytes(u64),
    Text(String),
}

/// Why the settings do not work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("no account: pass --jid user@domain or set `jid` in {0}")]
    NoJid(String),
    #[error("{0}")]
    Password(String),
    #[error("{0}")]
    Turn(String),
}

/// A TURN server given by the user (`--turn` or the config file).
#[derive(Clone, PartialEq, Eq)]
pub struct TurnSettings {
    /// `HOST:PORT`.
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for TurnSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnSettings")
            .field("server", &self.server)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The settings after merging.
#[derive(Debug, Clone)]
pub struct Settings {
    pub jid: String,
    pub password: String,
    pub server: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub resource: Option<String>,
    pub stun: Vec<String>,
    pub bind: Option<std::net::IpAddr>,
    /// The config file's `max-concurrent`, for the receive command's
    /// default (its flag wins).
    pub max_concurrent: Option<usize>,
    /// The config file's `max-size` in bytes (its flag wins).
    pub max_size: Option<u64>,
    /// The config file's `no-resume` (the flag can only switch it on).
    pub no_resume: bool,
    /// The config file's `resume-max-age`, parsed.
    pub resume_max_age: Option<std::time::Duration>,
    /// The user's TURN server; the XMPP server's (XEP-0215) are added at
    /// login.
    pub turn: Option<TurnSettings>,
    /// The config file's `require-encryption` (the flag can only add it).
    pub require_encryption: bool,
}

/// Where the config file is looked for by default.
pub fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("gshare").join("config.toml"))
}

/// Reads the config file: an explicit path must exist, the default may not.
pub fn load_file(explicit: Option<&Path>) -> Result<(ConfigFile, String), ConfigError> {
    let (path, required) = match explicit {
        Some(p) => (p.to_path_buf(), true),
        None => match default_config_path() {
            Some(p) => (p, false),
            None => return Ok((ConfigFile::default(), "the config file".into())),
        },
    };
    let shown = path.display().to_string();
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text)
            .map(|c| (c, shown))
            .map_err(|e| ConfigError::File {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            Ok((ConfigFile::default(), shown))
        }
        Err(e) => Err(ConfigError::File {
            path,
            reason: e.to_string(),
        }),
    }
}

/// Merges flags over the environment over the file, and fetches the password.
pub fn resolve(args: &Flags) -> Result<Settings, ConfigError> {
    let (file, shown) = load_file(args.config.as_deref())?;
    let max_size = match &file.max_size {
        None => None,
        Some(SizeSetting::Bytes(n)) => Some(*n),
        Some(SizeSetting::Text(t)) => Some(parse_size(t).map_err(|reason| {
            ConfigError::File {
                path: args
                    .config
                    .clone()
                    .or_else(default_config_path)
                    .unwrap_or_default(),
                reason: format!("max-size: {reason}"),
            }
        })?),
    };
    let resume_max_age = match &file.resume_max_age {
        None => None,
        Some(text) => Some(parse_age(text).ok_or_else(|| ConfigError::File {
            path: PathBuf::from(&shown),
            reason: format!(
                "resume-max-age {text:?} is not an age like \"3d\", \"12h\", \"90m\" or \"3600s\""
            ),
        })?),
    };
    let turn = resolve_turn(args, &file)?;
    let jid = args
        .jid
        .clone()
        .or(file.jid)
        .ok_or(ConfigError::NoJid(shown))?;
    let password = if let Some(path) = &args.password_file {
        password_from_file(path)?
    } else if let Some(cmd) = &args.password_command {
        password_from_command(cmd)?
    } else if let Some(pw) = std::env::var_os("GSHARE_PASSWORD") {
        pw.into_string()
            .map_err(|_| ConfigError::Password("GSHARE_PASSWORD is not valid UTF-8".into()))?
    } else if let Some(path) = &file.password_file {
        password_from_file(path)?
    } else if let Some(cmd) = &file.password_command {
        password_from_command(cmd)?
    } else {
        return Err(ConfigError::Password(
            "no password: set GSHARE_PASSWORD, or pass --password-file or --password-command \
             (passwords are never taken on the command line)"
                .into(),
        ));
    };
    Ok(Settings {
        jid,
        password,
        turn,
        server: args.server.clone().or(file.server),
        ca_file: args.ca_file.clone().or(file.ca_file),
        resource: args.resource.clone().or(file.resource),
        stun: if args.stun.is_empty() {
            file.stun
        } else {
            args.stun.clone()
        },
        bind: args.bind.or(file.bind),
        max_concurrent: file.max_concurrent,
        max_size,
        no_resume: file.no_resume.unwrap_or(false),
        resume_max_age,
        require_encryption: file.require_encryption.unwrap_or(false),
    })
}

/// Parses `1234`, `500K`, `500M`, `2G`, `1T` (binary multiples; `KiB`,
/// `MB`, … are accepted too, all meaning powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("{text:?} is not a size (like 500M or 2G)")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (like 500M or 2G)"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is too large a size"));
    }
    Ok(bytes as u64)
}

/// Parses an age such as `3d`, `12h`, `90m`, `3600s` or `3600` (seconds).
pub fn parse_age(text: &str) -> Option<std::time::Duration> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let secs = match unit.trim() {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(secs))
}

/// The TURN server, user and password: flags over the file; the password
/// from `--turn-password-file`, `--turn-password-command`,
/// `GSHARE_TURN_PASSWORD`, then the file's keys (never the command line).
fn resolve_turn(args: &Flags, file: &ConfigFile) -> Result<Option<TurnSettings>, ConfigError> {
    let Some(server) = args.turn.clone().or_else(|| file.turn.clone()) else {
        return Ok(None);
    };
    let username = args
        .turn_user
        .clone()
        .or_else(|| file.turn_user.clone())
        .ok_or_else(|| {
            ConfigError::Turn(format!(
                "--turn {server} needs a user name: pass --turn-user or set `turn-user`"
            ))
        })?;
    let password = if let Some(path) = &args.turn_password_file {
        turn_password_from_file(path)?
    } else if let Some(cmd) = &args.turn_password_command {
        turn_password_from_command(cmd)?
    } else if let Some(pw) = std::env::var_os("GSHARE_TURN_PASSWORD") {
        pw.into_string()
            .map_err(|_| ConfigError::Turn("GSHARE_TURN_PASSWORD is not valid UTF-8".into()))?
    } else if let Some(path) = &file.turn_password_file {
        turn_password_from_file(path)?
    } else if let Some(cmd) = &file.turn_password_command {
        turn_password_from_command(cmd)?
    } else {
        return Err(ConfigError::Turn(format!(
            "no password for the TURN server {server}: set GSHARE_TURN_PASSWORD, or pass \
             --turn-password-file or --turn-password-command"
        )));
    };
    Ok(Some(TurnSettings {
        server,
        username,
        password,
    }))
}

fn turn_password_from_file(path: &Path) -> Result<String, ConfigError> {
    password_from_file(path)
        .map_err(|e| ConfigError::Turn(e.to_string().replacen("--", "--turn-", 1)))
}

fn turn_password_from_command(cmd: &str) -> Result<String, ConfigError> {
    password_from_command(cmd)
        .map_err(|e| ConfigError::Turn(e.to_string().replacen("--", "--turn-", 1)))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_string()
}

fn password_from_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map(|t| first_line(&t))
        .map_err(|e| ConfigError::Password(format!("--password-file {}: {e}", path.display())))
}

fn password_from_command(cmd: &str) -> Result<String, ConfigError> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| ConfigError::Password(format!("--password-command: {e}")))?;
    if !out.status.success() {
        return Err(ConfigError::Password(format!(
            "--password-command exited with {}",
            out.status
        )));
    }
    let text = String::from_utf8(out.stdout)
        .map_err(|_| ConfigError::Password("--password-command printed invalid UTF-8".into()))?;
    Ok(first_line(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_parses_all_keys() {
        let c: ConfigFile = toml::from_str(
            r#"jid = "romeo@montague.lit"
server = "127.0.0.1:5222"
ca-file = "/etc/ca.pem"
resource = "laptop"
password-command = "pass show xmpp"
stun = ["stun.example.net:3478"]
bind = "192.0.2.1"
max-concurrent = 2
max-size = "2G"
require-encryption = true"#,
        )
        .unwrap();
        assert_eq!(c.jid.as_deref(), Some("romeo@montague.lit"));
        assert_eq!(c.server.as_deref(), Some("127.0.0.1:5222"));
        assert_eq!(c.password_command.as_deref(), Some("pass show xmpp"));
        assert_eq!(c.bind, Some([192, 0, 2, 1].into()));
        assert_eq!(c.max_concurrent, Some(2));
        assert_eq!(c.require_encryption, Some(true));
        assert!(matches!(c.max_size, Some(SizeSetting::Text(ref t)) if t == "2G"));
        let n: ConfigFile = toml::from_str("max-size = 1000").unwrap();
        assert!(matches!(n.max_size, Some(SizeSetting::Bytes(1000))));
    }

    #[test]
    fn sizes_parse_as_people_write_them() {
        assert_eq!(parse_size("1234"), Ok(1234));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("5X").is_err());
        assert!(parse_size("-5M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn turn_settings_need_a_user_and_a_password_from_a_file_command_or_env() {
        let none = ConfigFile::default();
        assert!(resolve_turn(&Flags::default(), &none).unwrap().is_none());
        let mut f = Flags {
            turn: Some("turn.example.net:3478".into()),
            ..Default::default()
        };
        let err = resolve_turn(&f, &none).unwrap_err().to_string();
        assert!(err.contains("--turn-user"), "{err}");
        f.turn_user = Some("romeo".into());
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("turn-pw");
        std::fs::write(&pw, "s3cret\nignored\n").unwrap();
        f.turn_password_file = Some(pw);
        let t = resolve_turn(&f, &none).unwrap().unwrap();
        assert_eq!(t.server, "turn.example.net:3478");
        assert_eq!(t.username, "romeo");
        assert_eq!(t.password, "s3cret");
        assert!(!format!("{t:?}").contains("s3cret"));
        f.turn_password_file = Some(dir.path().join("missing"));
        let err = resolve_turn(&f, &none).unwrap_err().to_string();
        assert!(err.starts_with("--turn-password-file"), "{err}");

        let file: ConfigFile = toml::from_str(
            r#"turn = "turn.example.net:3478"
turn-user = "juliet"
turn-password-command = "echo fr0m-command""#,
        )
        .unwrap();
        let t = resolve_turn(&Flags::default(), &file).unwrap().unwrap();
        assert_eq!(
            (t.username.as_str(), t.password.as_str()),
            ("juliet", "fr0m-command")
        );
        // Flags win over the file.
        let f = Flags {
            turn_user: Some("romeo".into()),
            ..Default::default()
        };
        assert_eq!(resolve_turn(&f, &file).unwrap().unwrap().username, "romeo");
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<ConfigFile>("password = \"x\"").is_err());
    }

    #[test]
    fn password_command_takes_first_line() {
        assert_eq!(
            password_from_command("printf 'secret\\nmore'").unwrap(),
            "secret"
        );
        assert!(password_from_command("exit 3").is_err());
    }

    #[test]
    fn resume_ages() {
        let d = std::time::Duration::from_secs;
        assert_eq!(parse_age("3d"), Some(d(3 * 86_400)));
        assert_eq!(parse_age("12h"), Some(d(12 * 3600)));
        assert_eq!(parse_age("90m"), Some(d(5400)));
        assert_eq!(parse_age("3600s"), Some(d(3600)));
        assert_eq!(parse_age(" 42 "), Some(d(42)));
        for bad in ["", "d", "3w", "-1", "1.5h", "99999999999999999999d"] {
            assert_eq!(parse_age(bad), None, "{bad}");
        }
    }
}
