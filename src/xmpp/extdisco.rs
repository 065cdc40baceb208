//! External service discovery (XEP-0215): which STUN and TURN servers the
//! XMPP server recommends, with TURN credentials (Prosody's
//! `mod_turn_external` hands out TURN REST credentials this way).
//!
//! Asks `urn:xmpp:extdisco:2` first and falls back to `urn:xmpp:extdisco:1`
//! (older servers). A restricted TURN entry without credentials is
//! completed with a `<credentials/>` query, as XEP-0215 §3.3 describes.
//!
//! Parsed by hand with minidom: xmpp-parsers 0.23's `extdisco` keeps the
//! service fields private, knows only version 2, and rejects a whole answer
//! that lists a `turns` service.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use minidom::Element;
use minidom::rxml::xml_ncname;
use tokio_xmpp::parsers::jid::Jid;
use tracing::debug;

use super::{IqRequest, Xmpp, XmppError};

/// XEP-0215 version 2.
pub const NS_EXTDISCO_2: &str = "urn:xmpp:extdisco:2";
/// XEP-0215 version 1 (the fallback).
pub const NS_EXTDISCO_1: &str = "urn:xmpp:extdisco:1";
/// Most services kept from one answer (a server lists a handful).
pub const MAX_SERVICES: usize = 32;
/// Longest attribute value kept (host names, user names, passwords).
pub const MAX_VALUE_LEN: usize = 1024;

/// What kind of service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// A STUN server.
    Stun,
    /// A TURN server over UDP or TCP.
    Turn,
    /// A TURN server over TLS.
    Turns,
    /// Anything else the server lists (ignored by gshare).
    Other(String),
}

/// One `<service/>` entry.
#[derive(Clone, PartialEq, Eq)]
pub struct ExternalService {
    /// stun, turn, …
    pub kind: ServiceKind,
    /// Host name or address.
    pub host: String,
    /// Port, if given (STUN/TURN default 3478).
    pub port: Option<u16>,
    /// `udp` or `tcp`, if given.
    pub transport: Option<String>,
    /// Credentials for TURN.
    pub username: Option<String>,
    /// Credentials for TURN.
    pub password: Option<String>,
    /// When the credentials stop working, if the server said.
    pub expires: Option<SystemTime>,
    /// Whether credentials are needed.
    pub restricted: bool,
}

impl std::fmt::Debug for ExternalService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalService")
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("expires", &self.expires)
            .field("restricted", &self.restricted)
            .finish()
    }
}

impl ExternalService {
    /// `host:port` with the STUN/TURN default port 3478.
    pub fn host_port(&self) -> String {
        let port = self.port.unwrap_or(3478);
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }

    /// Whether this is a service gshare can use over UDP (stun or turn,
    /// transport udp or unspecified).
    pub fn is_udp(&self) -> bool {
        self.transport.as_deref().is_none_or(|t| t == "udp")
    }
}

/// The `<services/>` query for one version.
pub fn services_query(ns: &str) -> Element {
    Element::builder("services", ns).build()
}

fn attr(el: &Element, name: &str) -> Option<String> {
    el.attr(name)
        .filter(|v| v.len() <= MAX_VALUE_LEN)
        .map(str::to_owned)
}

/// Parses a `<services/>` or `<credentials/>` answer of either version.
/// Entries without a host, or with an unparsable port, are skipped (one
/// bad entry must not hide the others); at most [`MAX_SERVICES`] are kept.
pub fn parse_services(el: &Element) -> Vec<ExternalService> {
    let ns = if el.has_ns(NS_EXTDISCO_2) {
        NS_EXTDISCO_2
    } else if el.has_ns(NS_EXTDISCO_1) {
        NS_EXTDISCO_1
    } else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for s in el.children().filter(|c| c.is("service", ns)) {
        if out.len() >= MAX_SERVICES {
            debug!("extdisco: more than {MAX_SERVICES} services; ignoring the rest");
            break;
        }
        if s.attr("action")
            .is_some_and(|a| a == "delete" || a == "remove")
        {
            continue;
        }
        let Some(host) = attr(s, "host").filter(|h| !h.is_empty()) else {
            continue;
        };
        let port = match s.attr("port") {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => Some(p),
                _ => continue,
            },
        };
        let kind = match s.attr("type").unwrap_or("") {
            "stun" => ServiceKind::Stun,
            "turn" => ServiceKind::Turn,
            "turns" => ServiceKind::Turns,
            other => ServiceKind::Other(other.chars().take(64).collect()),
        };
        let expires = s.attr("expires").and_then(parse_datetime);
        out.push(ExternalService {
            kind,
            host,
            port,
            transport: attr(s, "transport").map(|t| t.to_ascii_lowercase()),
            username: attr(s, "username"),
            password: attr(s, "password"),
            expires,
            restricted: matches!(s.attr("restricted"), Some("1") | Some("true")),
        });
    }
    out
}

fn parse_datetime(s: &str) -> Option<SystemTime> {
    let dt: tokio_xmpp::parsers::date::DateTime = s.parse().ok()?;
    let secs = u64::try_from(dt.0.timestamp()).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Asks the server (`to`, normally our domain) for its STUN and TURN
/// services: version 2, then version 1 if version 2 is refused. Restricted
/// TURN entries without credentials get a `<credentials/>` query. An empty
/// list means the server offers none.
pub async fn discover(
    xmpp: &Xmpp,
    to: Jid,
    timeout: Duration,
) -> Result<Vec<ExternalService>, XmppError> {
    let mut last_err = None;
    for ns in [NS_EXTDISCO_2, NS_EXTDISCO_1] {
        match xmpp
            .iq(
                Some(to.clone()),
                IqRequest::Get(services_query(ns)),
                timeout,
            )
            .await
        {
            Ok(Some(answer)) => {
                let mut services = parse_services(&answer);
                complete_credentials(xmpp, &to, ns, &mut services, timeout).await;
                return Ok(services);
            }
            Ok(None) => return Ok(Vec::new()),
            Err(XmppError::IqError(e)) => {
                debug!("extdisco {ns} refused: {e}");
                last_err = Some(XmppError::IqError(e));
            }
            Err(e) => return Err(e),
        }
    }
    // Neither version: the server offers no external services.
    debug!("no external service discovery: {last_err:?}");
    Ok(Vec::new())
}

async fn complete_credentials(
    xmpp: &Xmpp,
    to: &Jid,
    ns: &str,
    services: &mut [ExternalService],
    timeout: Duration,
) {
    for s in services.iter_mut() {
        let turn = matches!(s.kind, ServiceKind::Turn | ServiceKind::Turns);
        if !turn || !s.restricted || s.username.is_some() {
            continue;
        }
        let kind = if s.kind == ServiceKind::Turns {
            "turns"
        } else {
            "turn"
        };
        let query = Element::builder("credentials", ns)
            .append(
                Element::builder("service", ns)
                    .attr(xml_ncname!("host").into(), s.host.as_str())
                    .attr(xml_ncname!("type").into(), kind)
                    .build(),
            )
            .build();
        match xmpp
            .iq(Some(to.clone()), IqRequest::Get(query), timeout)
            .await
        {
            Ok(Some(answer)) => {
                if let Some(c) = parse_services(&answer)
                    .into_iter()
                    .find(|c| c.host == s.host && c.username.is_some())
                {
                    s.username = c.username;
                    s.password = c.password;
                    s.expires = c.expires.or(s.expires);
                }
            }
            Ok(None) => {}
            Err(e) => debug!("extdisco credentials for {} refused: {e}", s.host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prosody_answer() {
        let el: Element = "<services xmlns='urn:xmpp:extdisco:2'>\
            <service type='stun' host='turn.example' port='3478' transport='udp'/>\
            <service type='turn' restricted='1' expires='2026-12-06T06:00:00Z' \
              host='turn.example' port='3478' transport='udp' username='1796166607' \
              password='c2VjcmV0'/>\
            <service type='turns' host='turn.example' port='5349' transport='tcp'/>\
            <service type='turn' host='' port='1'/>\
            <service type='turn' host='x' port='99999'/>\
            <service type='ftp' host='files.example'/>\
            </services>"
            .parse()
            .unwrap();
        let s = parse_services(&el);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].kind, ServiceKind::Stun);
        assert_eq!(s[0].host_port(), "turn.example:3478");
        assert!(s[0].is_udp() && !s[0].restricted);
        assert_eq!(s[1].kind, ServiceKind::Turn);
        assert_eq!(s[1].username.as_deref(), Some("1796166607"));
        assert_eq!(s[1].password.as_deref(), Some("c2VjcmV0"));
        assert!(s[1].restricted);
        let exp = s[1].expires.unwrap().duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(exp.as_secs(), 1796536800);
        assert_eq!(s[2].kind, ServiceKind::Turns);
        assert!(!s[2].is_udp());
        assert_eq!(s[3].kind, ServiceKind::Other("ftp".into()));
        assert!(!format!("{:?}", s[1]).contains("c2VjcmV0"));
    }

    #[test]
    fn version_1_and_bounds() {
        let mut xml = String::from("<services xmlns='urn:xmpp:extdisco:1'>");
        for i in 0..100 {
            xml.push_str(&format!("<service type='stun' host='h{i}' port='3478'/>"));
        }
        xml.push_str("</services>");
        let el: Element = xml.parse().unwrap();
        assert_eq!(parse_services(&el).len(), MAX_SERVICES);
        let other: Element =
            "<services xmlns='urn:example'><service type='stun' host='h'/></services>"
                .parse()
                .unwrap();
        assert!(parse_services(&other).is_empty());
        let v6: Element =
            "<services xmlns='urn:xmpp:extdisco:2'><service type='stun' host='::1'/></services>"
                .parse()
                .unwrap();
        assert_eq!(parse_services(&v6)[0].host_port(), "[::1]:3478");
    }
}
