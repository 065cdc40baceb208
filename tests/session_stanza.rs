//! The stanza model: parse real and odd-but-legal stanzas, refuse unsafe
//! ones, write what LJ04 and gabble both accept (docs/protocol.md §A, §B.1).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod session_support;

use std::net::SocketAddr;

use gshare::ice::{Candidate, CandidateType};
use gshare::session::envelope::{ErrorReply, IqIn, IqPayload, ReceivedError, bounded_copy};
use gshare::session::stanza::{
    CandidateNs, MAX_CANDIDATES_PER_MESSAGE, MAX_MANIFEST_ITEMS, MAX_NAME_BYTES,
    candidate_to_element, parse_candidate, unknown_channel_name_element,
};
use gshare::session::{
    Action, Condition, ErrorType, ImageSize, InfoItem, ItemKind, Manifest, ManifestItem,
    SessionBody, SessionHeader, SessionMessage, ShareDescription, StanzaError,
};
use minidom::Element;
use session_support::*;

fn session(inner: &str, ty: &str) -> Element {
    xml(&format!(
        r#"<session xmlns="{NS_SESSION}" type="{ty}" id="1" initiator="a@b.c/r">{inner}</session>"#
    ))
}

fn parse(inner: &str, ty: &str) -> Result<SessionMessage, StanzaError> {
    SessionMessage::try_from(&session(inner, ty))
}

fn initiate_with_manifest(manifest: &str) -> Result<SessionMessage, StanzaError> {
    parse(
        &format!(
            r#"<description xmlns="{NS_SHARE}"><manifest>{manifest}</manifest>
            <protocol><http><url name="source-path">/temporary/abc/</url></http></protocol></description>
            <transport xmlns="{NS_P2P}"/>"#
        ),
        "initiate",
    )
}

fn sample_candidate() -> Candidate {
    Candidate {
        name: "private-1".into(),
        address: "192.168.160.50:55455".parse().unwrap(),
        username: "sVfmPJvuPBdh+ail".into(),
        password: "+9SLmzhJo6nqxYgE".into(),
        preference: 1.0,
        protocol: "udp".into(),
        kind: CandidateType::Local,
        generation: 0,
        network: "0".into(),
    }
}

#[test]
fn seed_initiate_parses() {
    let iq = seed(1);
    let s = iq.get_child("session", NS_SESSION).unwrap();
    let m = SessionMessage::try_from(s).unwrap();
    assert_eq!(m.id, "purple937c6e2d");
    assert_eq!(m.initiator, jid("romeo@montague.lit"));
    let SessionBody::Initiate {
        description,
        p2p_transport,
    } = m.body
    else {
        panic!("not an initiate: {:?}", m.body)
    };
    assert!(p2p_transport);
    assert!(description.supports_http);
    assert_eq!(
        description.manifest.items,
        vec![ManifestItem::file("somefile.tar.gz", 24_410_321)]
    );
    assert_eq!(
        description.source_path.as_deref(),
        Some("/temporary/x9w0a15d8gll334681a9tps7j838f104/")
    );
    assert_eq!(
        description.preview_path.as_deref(),
        Some("/temporary/p4e2a64s2ugd204688x7prk8s601m238/")
    );
}

#[test]
fn every_seed_session_payload_parses_and_round_trips() {
    for (n, text) in SEED.iter().enumerate() {
        let iq = xml(text);
        let Some(s) = iq.get_child("session", NS_SESSION) else {
            continue; // results carry no payload
        };
        let m = SessionMessage::try_from(s).unwrap_or_else(|e| panic!("seed {}: {e}", n + 1));
        let again = SessionMessage::try_from(&Element::from(&m)).unwrap();
        // The seed's host/empty-password candidate is normalised, the rest equal.
        assert_eq!(m, again, "seed {} round trip", n + 1);
    }
}

#[test]
fn seed_sender_candidate_host_and_empty_password_are_accepted() {
    let iq = seed(9);
    let s = iq.get_child("session", NS_SESSION).unwrap();
    let m = SessionMessage::try_from(s).unwrap();
    let SessionBody::TransportInfo { candidates } = m.body else {
        panic!()
    };
    assert_eq!(candidates.len(), 1);
    let c = &candidates[0];
    assert_eq!(c.kind, CandidateType::Local);
    assert_eq!(c.password, "");
    assert_eq!(
        c.address,
        "192.168.160.101:55433".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.username, "ccgg8psCDi8ALHPN");
    assert_eq!(c.preference, 1.0);
    assert_eq!(c.name, "private-1");
}

#[test]
fn candidate_is_written_with_all_ten_attributes_in_both_namespaces() {
    let c = sample_candidate();
    for (ns, uri) in [
        (CandidateNs::P2p, NS_P2P),
        (CandidateNs::Session, NS_SESSION),
    ] {
        let el = candidate_to_element(&c, ns);
        assert!(el.is("candidate", uri));
        for (attr, value) in [
            ("name", "private-1"),
            ("address", "192.168.160.50"),
            ("port", "55455"),
            ("preference", "1"),
            ("username", "sVfmPJvuPBdh+ail"),
            ("password", "+9SLmzhJo6nqxYgE"),
            ("protocol", "udp"),
            ("type", "local"),
            ("generation", "0"),
            ("network", "0"),
        ] {
            assert_eq!(el.attr(attr), Some(value), "{attr}");
        }
        assert_eq!(el.attrs().iter().count(), 10);
        assert_eq!(parse_candidate(&el).unwrap(), Some(c.clone()));
    }
}

#[test]
fn candidate_preference_and_network_formatting() {
    let mut c = sample_candidate();
    c.preference = 0.9;
    c.network = "eth0".into(); // LJ04 puts an interface name here; we write 0
    let el = candidate_to_element(&c, CandidateNs::P2p);
    assert_eq!(el.attr("preference"), Some("0.9"));
    assert_eq!(el.attr("network"), Some("0"));
    c.preference = 0.000015;
    assert_eq!(
        candidate_to_element(&c, CandidateNs::P2p).attr("preference"),
        Some("0.000015")
    );
    c.preference = f32::NAN;
    assert_eq!(
        candidate_to_element(&c, CandidateNs::P2p).attr("preference"),
        Some("0")
    );
}

fn cand_xml(attrs: &str) -> Element {
    xml(&format!(r#"<candidate xmlns="{NS_P2P}" {attrs}/>"#))
}

const FULL: &str = r#"name="gabble-1" address="10.0.0.1" port="1234" preference="0.000015" username="AbCd+/09" password="" protocol="udp" type="stun" generation="0" network="0""#;

#[test]
fn candidate_odd_but_legal_values() {
    let c = parse_candidate(&cand_xml(FULL)).unwrap().unwrap();
    assert_eq!(c.preference, 0.000015);
    assert_eq!(c.kind, CandidateType::Stun);
    assert_eq!(c.name, "gabble-1");
    // 0.000000, exponent form, IPv6, zone id, missing optional attributes
    let c = parse_candidate(&cand_xml(
        r#"name="c" address="fe80::1%eth0" port="9" preference="0.000000" username="u" protocol="udp" generation="3""#,
    ))
    .unwrap()
    .unwrap();
    assert_eq!(c.preference, 0.0);
    assert_eq!(c.address, "[fe80::1]:9".parse::<SocketAddr>().unwrap());
    assert_eq!(c.kind, CandidateType::Local);
    assert_eq!(c.password, "");
    assert_eq!(c.network, "0");
    assert_eq!(c.generation, 3);
    let c = parse_candidate(&cand_xml(&FULL.replace("0.000015", "1e-5")))
        .unwrap()
        .unwrap();
    assert_eq!(c.preference, 1e-5);
    // relay type, tcp protocol are read (the ICE layer decides what to use)
    let c = parse_candidate(&cand_xml(
        &FULL
            .replace("\"stun\"", "\"relay\"")
            .replace("\"udp\"", "\"tcp\""),
    ))
    .unwrap()
    .unwrap();
    assert_eq!(c.kind, CandidateType::Relay);
    assert_eq!(c.protocol, "tcp");
}

#[test]
fn candidate_with_hostname_address_is_skipped_not_fatal() {
    assert_eq!(
        parse_candidate(&cand_xml(&FULL.replace("10.0.0.1", "relay.example.com"))).unwrap(),
        None
    );
}

#[test]
fn candidate_missing_required_attributes_are_refused() {
    for attr in [
        "name",
        "address",
        "port",
        "username",
        "preference",
        "protocol",
        "generation",
    ] {
        let attrs: String = FULL
            .split("\" ")
            .filter(|kv| !kv.starts_with(&format!("{attr}=")))
            .collect::<Vec<_>>()
            .join("\" ");
        let attrs = if attrs.ends_with('"') {
            attrs
        } else {
            format!("{attrs}\"")
        };
        let err = parse_candidate(&cand_xml(&attrs)).unwrap_err();
        assert!(
            matches!(err, StanzaError::MissingAttribute { attr: a, .. } if a == attr),
            "{attr}: {err:?}"
        );
    }
}

#[test]
fn candidate_bad_values_are_refused() {
    for (from, to) in [
        ("port=\"1234\"", "port=\"65536\""),
        ("port=\"1234\"", "port=\"-1\""),
        ("port=\"1234\"", "port=\"\""),
        ("generation=\"0\"", "generation=\"x\""),
        ("preference=\"0.000015\"", "preference=\"high\""),
        ("username=\"AbCd+/09\"", "username=\"has space\""),
        ("username=\"AbCd+/09\"", "username=\"0123456789abcdefX\""), // 17 chars
        ("username=\"AbCd+/09\"", "username=\"\""),
        ("type=\"stun\"", "type=\"bogus\""),
        ("name=\"gabble-1\"", "name=\"\""),
    ] {
        let attrs = FULL.replace(from, to);
        assert_ne!(attrs, FULL);
        assert!(
            matches!(
                parse_candidate(&cand_xml(&attrs)),
                Err(StanzaError::BadValue { .. })
            ),
            "{to}"
        );
    }
}

#[test]
fn legacy_candidates_message_reads_session_namespace() {
    let inner = format!(
        r#"<candidate xmlns="{NS_SESSION}" {FULL}/><candidate xmlns="{NS_SESSION}" {}/>"#,
        FULL.replace("1234", "1235")
    );
    let m = parse(&inner, "candidates").unwrap();
    let SessionBody::Candidates { candidates } = &m.body else {
        panic!()
    };
    assert_eq!(candidates.len(), 2);
    // and writes them back directly under <session>, in the session namespace
    let el = Element::from(&m);
    let children: Vec<_> = el.children().collect();
    assert_eq!(children.len(), 2);
    assert!(children.iter().all(|c| c.is("candidate", NS_SESSION)));
}

#[test]
fn too_many_candidates_in_one_message() {
    let many = |n: usize| {
        (0..n)
            .map(|i| {
                format!(
                    r#"<candidate {}/>"#,
                    FULL.replace("1234", &(1000 + i).to_string())
                )
            })
            .collect::<String>()
    };
    let ok = parse(
        &format!(
            r#"<transport xmlns="{NS_P2P}">{}</transport>"#,
            many(MAX_CANDIDATES_PER_MESSAGE)
        ),
        "transport-info",
    )
    .unwrap();
    let SessionBody::TransportInfo { candidates } = ok.body else {
        panic!()
    };
    assert_eq!(candidates.len(), MAX_CANDIDATES_PER_MESSAGE);
    assert_eq!(
        parse(
            &format!(
                r#"<transport xmlns="{NS_P2P}">{}</transport>"#,
                many(MAX_CANDIDATES_PER_MESSAGE + 1)
            ),
            "transport-info"
        ),
        Err(StanzaError::TooManyCandidates)
    );
}

#[test]
fn manifest_items_folders_images_and_unknown_children() {
    let m = initiate_with_manifest(
        r#"<file size="341"><name>foo.txt</name></file>
           <file size="51321"><name>foo.jpg</name><image width="480" height="320"/></file>
           <folder size="99"><name>stuff</name><extra/></folder>
           <file><name>zero</name></file>
           <file size="5"><image width="x" height="1"/><name>badimg</name></file>
           <file size="1"/>
           <file size="1"><name></name></file>
           <unknown-thing/>"#,
    )
    .unwrap();
    let SessionBody::Initiate { description, .. } = m.body else {
        panic!()
    };
    let items = description.manifest.items;
    assert_eq!(items.len(), 5, "{items:?}");
    assert_eq!(items[0], ManifestItem::file("foo.txt", 341));
    assert_eq!(
        items[1].image,
        Some(ImageSize {
            width: 480,
            height: 320
        })
    );
    assert_eq!(items[2], ManifestItem::folder("stuff", 99));
    assert_eq!(items[2].kind, ItemKind::Folder);
    assert_eq!(items[3].size, None);
    assert_eq!(items[4].image, None);
}

#[test]
fn manifest_sizes_are_strict_u64() {
    for bad in [
        "-1",
        "1180591620717411303424",
        "+5",
        " 5",
        "",
        "5 ",
        "0x10",
        "1.5",
    ] {
        let r = initiate_with_manifest(&format!(r#"<file size="{bad}"><name>a</name></file>"#));
        assert!(
            matches!(r, Err(StanzaError::BadValue { what: "size", .. })),
            "{bad:?}: {r:?}"
        );
    }
    let m = initiate_with_manifest(&format!(
        r#"<file size="{}"><name>a</name></file>"#,
        u64::MAX
    ))
    .unwrap();
    let SessionBody::Initiate { description, .. } = m.body else {
        panic!()
    };
    assert_eq!(description.manifest.items[0].size, Some(u64::MAX));
    assert_eq!(description.manifest.total_size(), u64::MAX);
}

#[test]
fn manifest_names_are_bounded_text() {
    let long = "x".repeat(MAX_NAME_BYTES + 1);
    assert!(matches!(
        initiate_with_manifest(&format!(r#"<file size="1"><name>{long}</name></file>"#)),
        Err(StanzaError::BadValue {
            element: "name",
            ..
        })
    ));
    let ok = "y".repeat(MAX_NAME_BYTES);
    assert!(initiate_with_manifest(&format!(r#"<file size="1"><name>{ok}</name></file>"#)).is_ok());
    assert!(matches!(
        initiate_with_manifest(r#"<file size="1"><name>a<b/>c</name></file>"#),
        Err(StanzaError::BadValue {
            element: "name",
            ..
        })
    ));
    // entities decode to text
    let m = initiate_with_manifest(r#"<file size="1"><name>caf&#233; &amp; b&lt;c</name></file>"#)
        .unwrap();
    let SessionBody::Initiate { description, .. } = m.body else {
        panic!()
    };
    assert_eq!(description.manifest.items[0].name, "café & b<c");
}

#[test]
fn manifest_item_count_is_bounded() {
    let items = |n| "<file size=\"1\"><name>a</name></file>".repeat(n);
    let m = initiate_with_manifest(&items(MAX_MANIFEST_ITEMS)).unwrap();
    let SessionBody::Initiate { description, .. } = m.body else {
        panic!()
    };
    assert_eq!(description.manifest.items.len(), MAX_MANIFEST_ITEMS);
    assert_eq!(
        initiate_with_manifest(&items(100_000)),
        Err(StanzaError::TooManyItems)
    );
}

#[test]
fn http_paths_are_validated() {
    for bad in ["temporary/x/", "/a b/", "/a\r\nX: y/", "/caf\u{e9}/", ""] {
        let r = parse(
            &format!(
                r#"<description xmlns="{NS_SHARE}"><manifest/><protocol><http><url name="source-path">{bad}</url></http></protocol></description>"#
            ),
            "initiate",
        );
        assert!(r.is_err(), "{bad:?}");
    }
    // an initiate must carry a source path
    assert!(matches!(
        parse(
            &format!(
                r#"<description xmlns="{NS_SHARE}"><manifest/><protocol><http/></protocol></description>"#
            ),
            "initiate"
        ),
        Err(StanzaError::MissingChild { .. })
    ));
}

#[test]
fn initiate_without_transport_is_the_legacy_dialect() {
    let m = parse(
        &format!(
            r#"<description xmlns="{NS_SHARE}"><manifest/><protocol><http><url name="source-path">/p/</url></http></protocol></description>"#
        ),
        "initiate",
    )
    .unwrap();
    assert!(matches!(
        m.body,
        SessionBody::Initiate {
            p2p_transport: false,
            ..
        }
    ));
}

#[test]
fn initiate_with_foreign_description_is_unknown_description_type() {
    for inner in [
        r#"<description xmlns="http://www.google.com/session/phone"/>"#.to_owned(),
        format!(r#"<transport xmlns="{NS_P2P}"/>"#),
    ] {
        let e = parse(&inner, "initiate").unwrap_err();
        assert_eq!(e, StanzaError::UnknownDescription);
        assert_eq!(e.to_string(), "unknown session description type");
        assert_eq!(e.condition(), Condition::BadRequest);
    }
}

#[test]
fn accept_lj04_form_and_gabble_full_form_both_parse() {
    // LJ04: empty manifest, bare <http/>
    let lj = parse(
        &format!(r#"<description xmlns="{NS_SHARE}"><manifest/><protocol><http/></protocol></description>"#),
        "accept",
    )
    .unwrap();
    assert!(
        matches!(lj.body, SessionBody::Accept { p2p_transport: false, ref description } if description.manifest.items.is_empty())
    );
    // gabble: full manifest in reverse order, zero-byte file without size,
    // both URLs, and a p2p transport
    let gab = parse(
        &format!(
            r#"<description xmlns="{NS_SHARE}"><manifest><file><name>empty</name></file><file size="3"><name>b</name></file></manifest>
            <protocol><http><url name="source-path">/temporary/9b2b1b3e-0d0f-4a3f-9d55-1ad3e04f8c11/</url>
            <url name="preview-path">/temporary/0f9a/</url></http></protocol></description>
            <transport xmlns="{NS_P2P}"/>"#
        ),
        "accept",
    )
    .unwrap();
    let SessionBody::Accept {
        description,
        p2p_transport,
    } = gab.body
    else {
        panic!()
    };
    assert!(p2p_transport);
    assert_eq!(description.manifest.items.len(), 2);
    assert_eq!(description.manifest.items[0].size, None);
    // accept without description is refused (LJ04 OnAcceptMessage)
    assert!(matches!(
        parse("", "accept"),
        Err(StanzaError::MissingChild {
            child: "description",
            ..
        })
    ));
}

#[test]
fn our_accept_is_the_lj04_form() {
    let m = SessionMessage {
        id: "1".into(),
        initiator: jid("a@b.c/r"),
        body: SessionBody::Accept {
            description: ShareDescription::accept_answer(),
            p2p_transport: false,
        },
    };
    let el = Element::from(&m);
    assert_eq!(
        canon(&el, &Canon::default()),
        canon(
            &xml(&format!(
                r#"<session xmlns="{NS_SESSION}" type="accept" id="1" initiator="a@b.c/r">
                <description xmlns="{NS_SHARE}"><manifest/><protocol><http/></protocol></description></session>"#
            )),
            &Canon::default()
        )
    );
    // no child falls out of its namespace (docs/crates.md §2 trap)
    assert!(!to_string(&el).contains("xmlns=''"));
    assert!(!to_string(&el).contains("xmlns=\"\""));
}

#[test]
fn transport_accept_rules() {
    assert_eq!(
        parse(
            &format!(r#"<transport xmlns="{NS_P2P}"/>"#),
            "transport-accept"
        )
        .unwrap()
        .body,
        SessionBody::TransportAccept
    );
    assert_eq!(
        parse(
            &format!(r#"<transport xmlns="{NS_P2P}"><candidate {FULL}/></transport>"#),
            "transport-accept"
        ),
        Err(StanzaError::TransportAnswerNotAcceptable)
    );
    assert_eq!(
        parse(
            &format!(r#"<transport xmlns="{NS_P2P}"/><transport xmlns="{NS_P2P}"/>"#),
            "transport-accept"
        ),
        Err(StanzaError::TransportAnswerTwice)
    );
    let e = parse(r#"<transport xmlns="urn:other"/>"#, "transport-accept").unwrap_err();
    assert_eq!(e, StanzaError::NoSupportedTransport);
    assert_eq!(e.condition(), Condition::NotAllowed);
}

#[test]
fn info_payloads() {
    let m = parse(
        &format!(
            r#"<channel xmlns="{NS_SHARE}" name="gabble-1"/><bogus xmlns="{NS_SHARE}"/><complete xmlns="{NS_SHARE}"/><channel xmlns="urn:x" name="ignored"/>"#
        ),
        "info",
    )
    .unwrap();
    assert_eq!(
        m.body,
        SessionBody::Info {
            items: vec![
                InfoItem::Channel {
                    name: "gabble-1".into()
                },
                InfoItem::Complete
            ]
        }
    );
    assert!(matches!(
        parse(&format!(r#"<channel xmlns="{NS_SHARE}"/>"#), "info"),
        Err(StanzaError::MissingAttribute { .. })
    ));
    let written = Element::from(&m);
    assert!(written.get_child("channel", NS_SHARE).is_some());
    assert!(written.get_child("complete", NS_SHARE).is_some());
}

#[test]
fn envelope_attributes_are_required_and_unknown_actions_named() {
    for el in [
        format!(r#"<session xmlns="{NS_SESSION}" id="1" initiator="a@b.c"/>"#),
        format!(r#"<session xmlns="{NS_SESSION}" type="info" initiator="a@b.c"/>"#),
        format!(r#"<session xmlns="{NS_SESSION}" type="info" id="1"/>"#),
    ] {
        assert!(matches!(
            SessionHeader::try_from(&xml(&el)),
            Err(StanzaError::MissingAttribute { .. })
        ));
    }
    assert_eq!(
        SessionHeader::try_from(&xml(
            r#"<session xmlns="urn:wrong" type="info" id="1" initiator="a@b.c"/>"#
        )),
        Err(StanzaError::NotSession)
    );
    let e = parse("", "cancel").unwrap_err();
    assert_eq!(e, StanzaError::UnknownAction("cancel".into()));
    assert_eq!(e.to_string(), "unknown session message type");
    assert!(matches!(
        SessionHeader::try_from(&xml(&format!(
            r#"<session xmlns="{NS_SESSION}" type="info" id="1" initiator="not a jid@@"/>"#
        ))),
        Err(StanzaError::BadValue { .. })
    ));
}

#[test]
fn prefixed_namespaces_and_attribute_order_do_not_matter() {
    let el = xml(&format!(
        r#"<g:session xmlns:g="{NS_SESSION}" initiator="a@b.c/r" id="7" type="initiate">
             <s:description xmlns:s="{NS_SHARE}"><s:manifest><s:file size="3"><s:name>x</s:name></s:file></s:manifest>
             <s:protocol><s:http><s:url name="source-path">/p/</s:url></s:http></s:protocol></s:description>
             <p:transport xmlns:p="{NS_P2P}"/></g:session>"#
    ));
    let m = SessionMessage::try_from(&el).unwrap();
    assert_eq!(m.action(), Action::Initiate);
    let SessionBody::Initiate {
        description,
        p2p_transport,
    } = m.body
    else {
        panic!()
    };
    assert!(p2p_transport);
    assert_eq!(description.manifest.items, vec![ManifestItem::file("x", 3)]);
}

#[test]
fn full_message_round_trip() {
    let m = SessionMessage {
        id: "2600075813".into(),
        initiator: jid("romeo@example.com/pcp"),
        body: SessionBody::Initiate {
            description: ShareDescription {
                manifest: Manifest {
                    items: vec![
                        ManifestItem::file("foo.txt", 341),
                        ManifestItem {
                            kind: ItemKind::File,
                            name: "foo.jpg".into(),
                            size: Some(51321),
                            image: Some(ImageSize {
                                width: 480,
                                height: 320,
                            }),
                        },
                        ManifestItem::folder("stuff", 1000),
                    ],
                },
                supports_http: true,
                source_path: Some("/temporary/6cf87e0e88fce56858176902d749b0e0/".into()),
                preview_path: Some("/temporary/7aee7d5f84a874cab389f89773927e66/".into()),
                extension: None,
            },
            p2p_transport: true,
        },
    };
    let el = Element::from(&m);
    // through text and back
    let reparsed = xml(&to_string(&el));
    assert_eq!(SessionMessage::try_from(&reparsed).unwrap(), m);
    for body in [
        SessionBody::Reject,
        SessionBody::Terminate { reasons: vec![] },
        SessionBody::TransportAccept,
        SessionBody::TransportInfo {
            candidates: vec![sample_candidate()],
        },
        SessionBody::Candidates {
            candidates: vec![sample_candidate()],
        },
        SessionBody::Info {
            items: vec![InfoItem::Complete],
        },
    ] {
        let m = SessionMessage {
            id: "1".into(),
            initiator: jid("a@b.c/r"),
            body,
        };
        let back = SessionMessage::try_from(&xml(&to_string(&Element::from(&m)))).unwrap();
        assert_eq!(back, m);
    }
}

#[test]
fn terminate_reasons_are_recorded() {
    let m = parse(
        &format!(r#"<success xmlns="{NS_SESSION}"/><x xmlns="urn:y"/>"#),
        "terminate",
    )
    .unwrap();
    assert_eq!(
        m.body,
        SessionBody::Terminate {
            reasons: vec!["success".into(), "x".into()]
        }
    );
}

#[test]
fn error_reply_has_the_lj04_shape() {
    let offending = session("", "info");
    let reply = ErrorReply {
        error_type: ErrorType::Modify,
        condition: Condition::BadRequest,
        text: Some("channel named in candidate does not exist: private-9".into()),
        extra: Some(unknown_channel_name_element("private-9")),
        copied: Some(bounded_copy(&offending)),
    };
    let out = gshare::session::IqOut {
        to: jid("a@b.c/r"),
        id: "42".into(),
        kind: gshare::session::IqOutKind::Error(reply),
    };
    let el = out.to_element(None);
    let expected = xml(&format!(
        r#"<iq xmlns="jabber:client" type="error" to="a@b.c/r" id="42">
             <session xmlns="{NS_SESSION}" type="info" id="1" initiator="a@b.c/r"/>
             <error type="modify">
               <bad-request xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>
               <unknown-channel-name xmlns="{NS_P2P}" name="private-9"/>
               <text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas" xml:lang="en">channel named in candidate does not exist: private-9</text>
             </error></iq>"#
    ));
    assert_eq!(
        canon(&el, &Canon::default()),
        canon(&expected, &Canon::default())
    );
    let text = to_string(&el);
    assert!(
        text.contains("xml:lang=\"en\"") || text.contains("xml:lang='en'"),
        "{text}"
    );

    // and reads back as a ReceivedError
    let mut reread = xml(&text);
    set_attr(&mut reread, "from", "a@b.c/r");
    let back = IqIn::from_element(&reread).unwrap();
    let IqPayload::Error { error, payload } = back.payload else {
        panic!()
    };
    assert_eq!(error.condition, Condition::BadRequest);
    assert_eq!(error.error_type, ErrorType::Modify);
    assert!(error.extra.unwrap().is("unknown-channel-name", NS_P2P));
    assert!(payload.unwrap().is("session", NS_SESSION));
    let _ = ReceivedError::from_element;
}

#[test]
fn bounded_copy_keeps_small_trees_and_truncates_deep_ones() {
    let small = seed(1);
    assert_eq!(bounded_copy(&small), small);
    let mut deep = Element::bare("x", "urn:x");
    for _ in 0..100 {
        let mut parent = Element::bare("x", "urn:x");
        parent.append_child(deep);
        deep = parent;
    }
    let c = bounded_copy(&deep);
    assert_eq!(c.children().count(), 0);
    assert_eq!(c.name(), "x");
}

#[test]
fn accept_with_unreadable_description_reads_as_empty() {
    // The sender ignores the answer's manifest; a bad one must not fail it.
    let m = parse(
        &format!(
            r#"<description xmlns="{NS_SHARE}"><manifest><file size="-1"><name>a</name></file></manifest><protocol><http/></protocol></description>"#
        ),
        "accept",
    )
    .unwrap();
    assert!(
        matches!(m.body, SessionBody::Accept { ref description, .. } if description.manifest.items.is_empty())
    );
}
