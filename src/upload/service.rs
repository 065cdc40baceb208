//! Finding the upload service and asking it for a slot (XEP-0363 §3–§4).
//!
//! The parsing is plain functions of elements; [`discover`] and
//! [`request_slot`] only add the IQ round trips through [`Xmpp::iq`].

use std::time::Duration;

use minidom::Element;

use crate::session::stanza::nc;
use tokio_xmpp::parsers::disco::{
    DiscoInfoQuery, DiscoInfoResult, DiscoItemsQuery, DiscoItemsResult,
};
use tokio_xmpp::parsers::jid::Jid;
use tracing::debug;

use super::UploadError;
use crate::xmpp::{IqRequest, Xmpp, XmppError};

pub const NS_HTTP_UPLOAD: &str = "urn:xmpp:http:upload:0";

/// At most this many disco#items entries are asked for their disco#info (the
/// list comes from the server; big servers list a few dozen components).
pub const MAX_PROBED_ITEMS: usize = 32;

/// At most this many PUT headers are kept from a slot (XEP-0363 allows three
/// names; a server repeating them is cut off here).
pub const MAX_PUT_HEADERS: usize = 8;

/// The largest header value kept from a slot (a bearer token, a cookie).
pub const MAX_HEADER_VALUE: usize = 8192;

/// How long each disco or slot IQ may take.
pub const IQ_TIMEOUT: Duration = Duration::from_secs(15);

/// An upload service and its announced limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadService {
    pub jid: Jid,
    /// `max-file-size` from its disco#info form, if it gave one.
    pub max_file_size: Option<u64>,
}

/// The headers XEP-0363 §4 lets a server ask for; all others are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutHeader {
    Authorization,
    Cookie,
    Expires,
}

impl PutHeader {
    pub fn as_str(self) -> &'static str {
        match self {
            PutHeader::Authorization => "Authorization",
            PutHeader::Cookie => "Cookie",
            PutHeader::Expires => "Expires",
        }
    }
}

/// A slot: where to PUT (with which headers) and the URL to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub put_url: String,
    pub put_headers: Vec<(PutHeader, String)>,
    pub get_url: String,
}

/// `Some(max-file-size)` when this disco#info result is an upload service.
pub fn upload_service_limit(info: &DiscoInfoResult) -> Option<Option<u64>> {
    if !info.features.contains(NS_HTTP_UPLOAD) {
        return None;
    }
    let max = info
        .extensions
        .iter()
        .filter(|f| f.form_type() == Some(NS_HTTP_UPLOAD))
        .flat_map(|f| f.fields.iter())
        .filter(|f| f.var.as_deref() == Some("max-file-size"))
        .find_map(|f| f.values.first().and_then(|v| v.trim().parse::<u64>().ok()));
    Some(max)
}

/// Reads a `<slot/>`. Headers other than the three allowed ones, and values
/// with line breaks, are dropped (XEP-0363 §4: the client MUST strip them).
pub fn parse_slot(el: &Element) -> Result<Slot, String> {
    if !el.is("slot", NS_HTTP_UPLOAD) {
        return Err(format!("a <{}/> instead of a <slot/>", el.name()));
    }
    let put = el
        .get_child("put", NS_HTTP_UPLOAD)
        .ok_or("the slot has no PUT URL")?;
    let get = el
        .get_child("get", NS_HTTP_UPLOAD)
        .ok_or("the slot has no GET URL")?;
    let put_url = put
        .attr("url")
        .ok_or("the slot has no PUT URL")?
        .to_string();
    let get_url = get
        .attr("url")
        .ok_or("the slot has no GET URL")?
        .to_string();
    let mut put_headers = Vec::new();
    for h in put.children().filter(|c| c.is("header", NS_HTTP_UPLOAD)) {
        let name = match h.attr("name").map(str::to_ascii_lowercase).as_deref() {
            Some("authorization") => PutHeader::Authorization,
            Some("cookie") => PutHeader::Cookie,
            Some("expires") => PutHeader::Expires,
            other => {
                debug!(?other, "dropping a PUT header XEP-0363 does not allow");
                continue;
            }
        };
        let value = h.text();
        if value.contains(['\r', '\n']) || value.len() > MAX_HEADER_VALUE {
            debug!(
                name = name.as_str(),
                "dropping a malformed PUT header value"
            );
            continue;
        }
        if put_headers.len() < MAX_PUT_HEADERS {
            put_headers.push((name, value.trim().to_string()));
        }
    }
    Ok(Slot {
        put_url,
        put_headers,
        get_url,
    })
}

fn disco_info_query() -> Element {
    DiscoInfoQuery { node: None }.into()
}

/// Finds the upload service of our account's server: the domain itself, then
/// the items of its disco#items.
pub async fn discover(xmpp: &Xmpp) -> Result<UploadService, UploadError> {
    let domain = xmpp.jid().domain().to_string();
    let domain_jid: Jid = Jid::from(xmpp.jid().to_bare().domain().to_owned());
    let mut candidates = vec![domain_jid.clone()];
    match xmpp
        .iq(
            Some(domain_jid.clone()),
            IqRequest::Get(
                DiscoItemsQuery {
                    node: None,
                    rsm: None,
                }
                .into(),
            ),
            IQ_TIMEOUT,
        )
        .await
    {
        Ok(Some(payload)) => match DiscoItemsResult::try_from(payload) {
            Ok(items) => candidates.extend(
                items
                    .items
                    .into_iter()
                    .map(|i| i.jid)
                    .take(MAX_PROBED_ITEMS),
            ),
            Err(e) => debug!(%e, "unreadable disco#items from the server"),
        },
        Ok(None) => {}
        Err(e @ XmppError::Disconnected(_)) => return Err(e.into()),
        Err(e) => debug!(%e, "disco#items on the server failed"),
    }
    for jid in candidates {
        let info = match xmpp
            .iq(
                Some(jid.clone()),
                IqRequest::Get(disco_info_query()),
                IQ_TIMEOUT,
            )
            .await
        {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e @ XmppError::Disconnected(_)) => return Err(e.into()),
            Err(e) => {
                debug!(%jid, %e, "disco#info failed");
                continue;
            }
        };
        let Ok(info) = DiscoInfoResult::try_from(info) else {
            continue;
        };
        if let Some(max_file_size) = upload_service_limit(&info) {
            debug!(%jid, ?max_file_size, "found the upload service");
            return Ok(UploadService { jid, max_file_size });
        }
    }
    Err(UploadError::NoService { domain })
}

/// Asks `service` for a slot for `name` of `size` bytes. A size over the
/// announced limit is refused here, before the server is asked and before any
/// byte moves.
pub async fn request_slot(
    xmpp: &Xmpp,
    service: &UploadService,
    name: &str,
    size: u64,
    content_type: &str,
) -> Result<Slot, UploadError> {
    if let Some(max) = service.max_file_size
        && size > max
    {
        return Err(UploadError::TooLarge {
            name: name.to_string(),
            size,
            max,
        });
    }
    let request = slot_request(name, size, content_type);
    let answer = xmpp
        .iq(
            Some(service.jid.clone()),
            IqRequest::Get(request),
            IQ_TIMEOUT,
        )
        .await
        .map_err(|e| match e {
            XmppError::IqError(refusal) => UploadError::SlotRefused {
                name: name.to_string(),
                kind: RefusalKind::from_reason(&refusal.condition),
                reason: plain_reason(&refusal.to_string()),
            },
            other => UploadError::Xmpp(other),
        })?;
    let answer = answer.ok_or_else(|| UploadError::BadSlot {
        service: service.jid.to_string(),
        detail: "an empty answer".into(),
    })?;
    parse_slot(&answer).map_err(|detail| UploadError::BadSlot {
        service: service.jid.to_string(),
        detail,
    })
}

/// The `<request/>` of XEP-0363 §4.
pub fn slot_request(name: &str, size: u64, content_type: &str) -> Element {
    Element::builder("request", NS_HTTP_UPLOAD)
        .attr(nc!("filename"), name)
        .attr(nc!("size"), size.to_string())
        .attr(nc!("content-type"), content_type)
        .build()
}

/// Why a server refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// `not-acceptable`: the file is too large (or its name unacceptable).
    TooLarge,
    /// `resource-constraint`: a quota is used up; later may work.
    Quota,
    /// `forbidden` / `not-allowed`: this account may not upload.
    Forbidden,
    Other,
}

impl RefusalKind {
    fn from_reason(reason: &str) -> Self {
        // The condition's XML name (`xmpp::IqRefusal::condition`), or a
        // description that starts with it.
        if reason.starts_with("not-acceptable") {
            RefusalKind::TooLarge
        } else if reason.starts_with("resource-constraint") {
            RefusalKind::Quota
        } else if reason.starts_with("forbidden") || reason.starts_with("not-allowed") {
            RefusalKind::Forbidden
        } else {
            RefusalKind::Other
        }
    }
}

/// The server's own words when it gave some, else the condition in words.
fn plain_reason(reason: &str) -> String {
    if let Some((_, text)) = reason.split_once("): ")
        && !text.trim().is_empty()
    {
        return text.trim().to_string();
    }
    match RefusalKind::from_reason(reason) {
        RefusalKind::TooLarge => "the file is not acceptable (too large?)".into(),
        RefusalKind::Quota => "a quota is used up".into(),
        RefusalKind::Forbidden => "this account may not upload".into(),
        RefusalKind::Other => reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_headers_are_filtered() {
        let el: Element = "<slot xmlns='urn:xmpp:http:upload:0'>\
            <put url='https://u/p'>\
              <header name='authorization'>Bearer x</header>\
              <header name='Cookie'>foo=bar</header>\
              <header name='X-Evil'>1</header>\
              <header name='Expires'>a\nb</header>\
            </put><get url='https://u/g'/></slot>"
            .parse()
            .unwrap();
        let s = parse_slot(&el).unwrap();
        assert_eq!(s.put_url, "https://u/p");
        assert_eq!(s.get_url, "https://u/g");
        assert_eq!(
            s.put_headers,
            vec![
                (PutHeader::Authorization, "Bearer x".into()),
                (PutHeader::Cookie, "foo=bar".into())
            ]
        );
        let bad: Element = "<slot xmlns='urn:xmpp:http:upload:0'><get url='x'/></slot>"
            .parse()
            .unwrap();
        assert!(parse_slot(&bad).is_err());
    }

    #[test]
    fn request_element() {
        let el = slot_request("a <b>.txt", 0, "text/plain");
        assert_eq!(
            String::from(&el),
            "<request xmlns='urn:xmpp:http:upload:0' content-type='text/plain' \
             filename='a &lt;b&gt;.txt' size='0'/>"
        );
    }

    #[test]
    fn refusal_reasons_in_words() {
        let r = "resource-constraint (wait): Daily quota reached";
        assert_eq!(RefusalKind::from_reason(r), RefusalKind::Quota);
        assert_eq!(plain_reason(r), "Daily quota reached");
        assert_eq!(
            RefusalKind::from_reason("not-acceptable (modify)"),
            RefusalKind::TooLarge
        );
        assert_eq!(
            plain_reason("forbidden (auth)"),
            "this account may not upload"
        );
    }

    #[test]
    fn limit_from_disco_info() {
        let el: Element = "<query xmlns='http://jabber.org/protocol/disco#info'>\
            <identity category='store' type='file'/>\
            <feature var='urn:xmpp:http:upload:0'/>\
            <x xmlns='jabber:x:data' type='result'>\
              <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:http:upload:0</value></field>\
              <field var='max-file-size'><value>1048576</value></field></x></query>"
            .parse()
            .unwrap();
        let info = DiscoInfoResult::try_from(el).unwrap();
        assert_eq!(upload_service_limit(&info), Some(Some(1_048_576)));
        let el: Element = "<query xmlns='http://jabber.org/protocol/disco#info'>\
            <identity category='server' type='im'/></query>"
            .parse()
            .unwrap();
        assert_eq!(
            upload_service_limit(&DiscoInfoResult::try_from(el).unwrap()),
            None
        );
    }
}
