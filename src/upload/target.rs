//! Which URLs gshare fetches or uploads to (issue 16, rule 3).
//!
//! An announced link comes from another person: fetching it must not turn
//! gshare into a tool that probes the receiver's own network. So a URL is
//! accepted only when it is `https`, carries no user credentials, and every
//! address it is connected to is a public one — unless the host is the
//! server domain of the account the link came from (or a subdomain of it, such
//! as `upload.DOMAIN`): a server on a private network or on loopback (the
//! tests) hands out links to itself, and those must work.
//!
//! The addresses are checked after resolution and the connection goes to a
//! checked address, so a name cannot resolve to a public address for the check
//! and to a private one for the connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest URL accepted (peer-driven: it comes from a message). Prosody's
/// and ejabberd's links are under 200 bytes; browsers cap near 2 KiB–64 KiB.
pub const MAX_URL_BYTES: usize = 4096;

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{url} is not a valid URL")]
    Invalid { url: String },
    #[error("the link is {len} bytes long; at most {MAX_URL_BYTES} are accepted")]
    TooLong { len: usize },
    #[error("{url} is not an https link; only https links are fetched")]
    NotHttps { url: String },
    #[error("{url} carries a user name or password; such links are refused")]
    Credentials { url: String },
    #[error(
        "{url} points at {addr}, a {kind} address, and {host} is not the sender's server \
         ({domain}); such links are refused"
    )]
    PrivateAddress {
        url: String,
        host: String,
        addr: IpAddr,
        kind: &'static str,
        domain: String,
    },
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
}

/// A checked https URL and where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given (for messages and logs).
    pub url: String,
    /// Host name or IP literal (IPv6 without brackets), lowercase.
    pub host: String,
    pub port: u16,
    /// `/path?query`, the request target of the HTTP request.
    pub path_and_query: String,
    /// The host is the server domain the link came from (or below it), so
    /// private and loopback addresses are allowed.
    pub own_server: bool,
    /// That server domain, for the refusal message.
    domain: String,
}

/// The URL shortened and with control characters escaped, for messages.
pub fn shown(url: &str) -> String {
    let mut s: String = url
        .chars()
        .take(200)
        .collect::<String>()
        .escape_debug()
        .collect();
    if url.chars().count() > 200 {
        s.push('…');
    }
    s
}

/// Parses and checks `url`. `server_domain` is the domain of the account the
/// link came from: ours when uploading, the announcer's when downloading.
pub fn check_url(url: &str, server_domain: &str) -> Result<Target, UrlError> {
    if url.len() > MAX_URL_BYTES {
        return Err(UrlError::TooLong { len: url.len() });
    }
    let parsed = url::Url::parse(url.trim()).map_err(|_| UrlError::Invalid { url: shown(url) })?;
    if parsed.scheme() != "https" {
        return Err(UrlError::NotHttps { url: shown(url) });
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(UrlError::Credentials { url: shown(url) });
    }
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) => d.trim_end_matches('.').to_ascii_lowercase(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(UrlError::Invalid { url: shown(url) }),
    };
    let port = parsed.port_or_known_default().unwrap_or(443);
    let mut path_and_query = parsed.path().to_string();
    if let Some(q) = parsed.query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let domain = server_domain.trim_end_matches('.').to_ascii_lowercase();
    let own_server = !domain.is_empty()
        && (host == domain
            || host
                .strip_suffix(domain.as_str())
                .is_some_and(|p| p.ends_with('.')));
    Ok(Target {
        url: url.trim().to_string(),
        host,
        port,
        path_and_query,
        own_server,
        domain,
    })
}

impl Target {
    /// Whether connecting to `addr` is allowed for this target.
    pub fn check_address(&self, addr: IpAddr) -> Result<(), UrlError> {
        if self.own_server {
            return Ok(());
        }
        match non_public_kind(addr) {
            None => Ok(()),
            Some(kind) => Err(UrlError::PrivateAddress {
                url: shown(&self.url),
                host: self.host.clone(),
                addr,
                kind,
                domain: self.domain.clone(),
            }),
        }
    }

    /// Resolves the host and keeps the addresses that may be connected to;
    /// refuses when none may.
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, UrlError> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| UrlError::Resolve {
                host: self.host.clone(),
                reason: e.to_string(),
            })?
            .collect();
        let mut first_refusal = None;
        let mut allowed = Vec::new();
        for a in found {
            match self.check_address(a.ip()) {
                Ok(()) => allowed.push(a),
                Err(e) => {
                    first_refusal.get_or_insert(e);
                }
            }
        }
        match (allowed.is_empty(), first_refusal) {
            (false, _) => Ok(allowed),
            (true, Some(e)) => Err(e),
            (true, None) => Err(UrlError::Resolve {
                host: self.host.clone(),
                reason: "no address found".into(),
            }),
        }
    }
}

/// `None` for a public unicast address, else what kind of address it is.
pub fn non_public_kind(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(a) => v4_kind(a),
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return v4_kind(v4);
            }
            v6_kind(a)
        }
    }
}

fn v4_kind(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    if a.is_loopback() {
        Some("loopback")
    } else if a.is_private() {
        Some("private")
    } else if a.is_link_local() {
        Some("link-local")
    } else if a.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if a.is_broadcast() || a.is_multicast() || o[0] >= 240 {
        Some("broadcast, multicast or reserved")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        // 100.64.0.0/10, carrier-grade NAT (RFC 6598).
        Some("shared (carrier-grade NAT)")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        // 192.0.0.0/24, IETF protocol assignments (RFC 6890).
        Some("reserved")
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        // 198.18.0.0/15, benchmarking (RFC 2544).
        Some("benchmarking")
    } else {
        None
    }
}

fn v6_kind(a: Ipv6Addr) -> Option<&'static str> {
    let s = a.segments();
    if a.is_loopback() {
        Some("loopback")
    } else if a.is_unspecified() {
        Some("unspecified")
    } else if a.is_multicast() {
        Some("multicast")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some("private (unique local)")
    } else if (s[0] & 0xffc0) == 0xfec0 {
        Some("site-local")
    } else if s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0 {
        // ::a.b.c.d, IPv4-compatible (deprecated): judge the IPv4 part.
        v4_kind(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ))
        .or(Some("IPv4-compatible"))
    } else if s[0] == 0x64 && s[1] == 0xff9b {
        // 64:ff9b::/96, NAT64: judge the embedded IPv4 address.
        v4_kind(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_only_and_no_credentials() {
        assert!(matches!(
            check_url("http://example.org/f", "example.org"),
            Err(UrlError::NotHttps { .. })
        ));
        assert!(matches!(
            check_url("ftp://example.org/f", "x"),
            Err(UrlError::NotHttps { .. })
        ));
        assert!(matches!(
            check_url("https://u:p@example.org/f", "x"),
            Err(UrlError::Credentials { .. })
        ));
        assert!(matches!(
            check_url("not a url", "x"),
            Err(UrlError::Invalid { .. })
        ));
        let long = format!("https://example.org/{}", "a".repeat(MAX_URL_BYTES));
        assert!(matches!(
            check_url(&long, "x"),
            Err(UrlError::TooLong { .. })
        ));
    }

    #[test]
    fn parts_and_own_server() {
        let t = check_url("https://Upload.Example.ORG:8443/a/b%20c?x=1", "example.org").unwrap();
        assert_eq!(t.host, "upload.example.org");
        assert_eq!(t.port, 8443);
        assert_eq!(t.path_and_query, "/a/b%20c?x=1");
        assert!(t.own_server);
        let t = check_url("https://example.org/f", "example.org").unwrap();
        assert!(t.own_server && t.port == 443);
        // A suffix that is not a label boundary is another domain.
        let t = check_url("https://evilexample.org/f", "example.org").unwrap();
        assert!(!t.own_server);
        let t = check_url("https://[::1]:5/f", "example.org").unwrap();
        assert_eq!(t.host, "::1");
        assert!(!t.own_server);
    }

    #[test]
    fn private_addresses_refused_unless_own_server() {
        let stranger = check_url("https://files.example.net/f", "example.org").unwrap();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let err = stranger.check_address(ip).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("refused") && text.contains("example.org"),
                "{text}"
            );
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1"] {
            stranger.check_address(ip.parse().unwrap()).unwrap();
        }
        let own = check_url("https://localhost:5281/f", "localhost").unwrap();
        own.check_address("127.0.0.1".parse().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn resolution_is_checked() {
        let stranger = check_url("https://localhost:1/f", "example.org").unwrap();
        let err = stranger.resolve().await.unwrap_err();
        assert!(matches!(err, UrlError::PrivateAddress { .. }), "{err}");
        let own = check_url("https://localhost:1/f", "localhost").unwrap();
        assert!(!own.resolve().await.unwrap().is_empty());
    }
}
