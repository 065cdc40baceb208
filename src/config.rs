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
    /// Refuse transfers that would not be encrypted (`--require-encryption`).
    pub require_encryption: Option<bool>,
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
        require_encryption: file.require_encryption.unwrap_or(false),
    })
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
require-encryption = true"#,
        )
        .unwrap();
        assert_eq!(c.jid.as_deref(), Some("romeo@montague.lit"));
        assert_eq!(c.server.as_deref(), Some("127.0.0.1:5222"));
        assert_eq!(c.password_command.as_deref(), Some("pass show xmpp"));
        assert_eq!(c.bind, Some([192, 0, 2, 1].into()));
        assert_eq!(c.max_concurrent, Some(2));
        assert_eq!(c.require_encryption, Some(true));
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
}
