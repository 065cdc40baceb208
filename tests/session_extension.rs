//! gshare's private `<secure>` extension through the session machine: it
//! travels in the initiate and the accept, reaches the peer's events, and
//! leaves the classic stanzas byte for byte as they were when absent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod session_support;

use gshare::session::{
    CommandError, Extension, IqOutKind, Manifest, ManifestItem, NS_SECURE, SessionEvent,
};
use session_support::*;

const A: &str = "romeo@montague.lit/gshare";
const B: &str = "juliet@capulet.lit/gshare";

fn manifest() -> Manifest {
    Manifest {
        items: vec![
            ManifestItem::file("a.txt", 10),
            ManifestItem::file("b.txt", 20),
        ],
    }
}

fn sender_ext() -> Extension {
    Extension {
        fingerprint: Some([0x5a; 32]),
        digests: vec![None, Some([0xc3; 32])],
        resume: true,
    }
}

/// The one set the machine queued, as wire text.
fn only_set_text(m: &mut gshare::session::SessionManager) -> String {
    let out = drain(m);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert!(matches!(out[0].kind, IqOutKind::Set(_)));
    to_string(&out_el(&out[0]))
}

#[test]
fn without_extension_the_initiate_and_accept_are_unchanged() {
    let now = t0();
    // Same seed, same ids: `initiate` and `initiate_with(None)` must write
    // the same bytes, and none of them mention the extension.
    let mut classic = seeded(A, 9);
    let mut with_none = seeded(A, 9);
    classic.initiate(now, full(B), manifest()).unwrap();
    with_none
        .initiate_with(now, full(B), manifest(), None)
        .unwrap();
    let a = only_set_text(&mut classic);
    let b = only_set_text(&mut with_none);
    assert_eq!(a, b);
    assert!(!a.contains(NS_SECURE) && !a.contains("secure"), "{a}");

    // The receiver side: `accept` and `accept_with(None)`.
    let mut tx = seeded(A, 1);
    let mut rx1 = seeded(B, 2);
    let mut rx2 = seeded(B, 2);
    tx.initiate(now, full(B), manifest()).unwrap();
    let initiate = drain(&mut tx).remove(0);
    for rx in [&mut rx1, &mut rx2] {
        let mut el = out_el(&initiate);
        set_attr(&mut el, "from", A);
        assert!(rx.handle_iq(now, iq_in(&xml(&to_string(&el)))));
        drain(rx);
    }
    let h1 = match events(&mut rx1).remove(0) {
        SessionEvent::Offer {
            handle, extension, ..
        } => {
            assert_eq!(extension, None);
            handle
        }
        e => panic!("{e:?}"),
    };
    let h2 = match events(&mut rx2).remove(0) {
        SessionEvent::Offer { handle, .. } => handle,
        e => panic!("{e:?}"),
    };
    rx1.accept(now, h1).unwrap();
    rx2.accept_with(now, h2, None).unwrap();
    let a = only_set_text(&mut rx1);
    let b = only_set_text(&mut rx2);
    assert_eq!(a, b);
    assert!(!a.contains("secure"), "{a}");
}

#[test]
fn extension_travels_in_initiate_and_accept() {
    let now = t0();
    let mut tx = seeded(A, 3);
    let mut rx = seeded(B, 4);
    let h = tx
        .initiate_with(now, full(B), manifest(), Some(sender_ext()))
        .unwrap();
    assert_eq!(tx.info(h).unwrap().local_extension, Some(sender_ext()));
    pump(now, &mut tx, A, &mut rx, B);
    let ev = events(&mut rx);
    let [
        SessionEvent::Offer {
            handle: r,
            extension,
            ..
        },
    ] = ev.as_slice()
    else {
        panic!("{ev:#?}")
    };
    assert_eq!(extension.as_ref(), Some(&sender_ext()));
    let r = *r;
    assert_eq!(rx.info(r).unwrap().remote_extension, Some(sender_ext()));

    // The receiver's digests are never sent.
    let receiver_ext = Extension {
        fingerprint: Some([0x77; 32]),
        digests: vec![Some([1; 32])],
        resume: false,
    };
    rx.accept_with(now, r, Some(receiver_ext)).unwrap();
    pump(now, &mut tx, A, &mut rx, B);
    assert_eq!(
        events(&mut tx),
        vec![SessionEvent::Accepted {
            handle: h,
            extension: Some(Extension {
                fingerprint: Some([0x77; 32]),
                digests: vec![],
                resume: false,
            }),
        }]
    );
    assert_eq!(
        tx.info(h).unwrap().remote_extension.unwrap().fingerprint,
        Some([0x77; 32])
    );
}

#[test]
fn a_classic_accept_to_an_extended_initiate_has_no_extension() {
    let now = t0();
    let mut tx = seeded(A, 5);
    let mut rx = seeded(B, 6);
    let h = tx
        .initiate_with(now, full(B), manifest(), Some(sender_ext()))
        .unwrap();
    pump(now, &mut tx, A, &mut rx, B);
    let r = match events(&mut rx).remove(0) {
        SessionEvent::Offer { handle, .. } => handle,
        e => panic!("{e:?}"),
    };
    rx.accept(now, r).unwrap();
    pump(now, &mut tx, A, &mut rx, B);
    assert_eq!(
        events(&mut tx),
        vec![SessionEvent::Accepted {
            handle: h,
            extension: None
        }]
    );
}

#[test]
fn a_malformed_extension_is_no_extension_and_no_error() {
    let now = t0();
    let mut tx = seeded(A, 7);
    let mut rx = seeded(B, 8);
    tx.initiate_with(now, full(B), manifest(), Some(sender_ext()))
        .unwrap();
    let out = drain(&mut tx).remove(0);
    // Corrupt the fingerprint text on the wire.
    let text = to_string(&out_el(&out));
    let fp = "5A:".repeat(31) + "5A";
    assert!(text.contains(&fp));
    let text = text
        .replace(&fp, &"5A:".repeat(30))
        .replace("<iq ", &format!("<iq from='{A}' "));
    assert!(rx.handle_iq(now, iq_in(&xml(&text))));
    let replies = drain(&mut rx);
    assert!(
        replies
            .iter()
            .all(|r| !matches!(r.kind, IqOutKind::Error(_))),
        "{replies:#?}"
    );
    let ev = events(&mut rx);
    let [SessionEvent::Offer { extension, .. }] = ev.as_slice() else {
        panic!("{ev:#?}")
    };
    assert_eq!(extension, &None);
}

#[test]
fn digests_must_name_existing_items() {
    let now = t0();
    let mut tx = seeded(A, 10);
    let too_many = Extension {
        digests: vec![None, None, Some([0; 32])],
        ..Extension::default()
    };
    assert_eq!(
        tx.initiate_with(now, full(B), manifest(), Some(too_many)),
        Err(CommandError::InvalidManifest(
            "digests for items that do not exist"
        ))
    );
    // A short list is padded to one entry per item.
    let short = Extension {
        digests: vec![Some([2; 32])],
        ..Extension::default()
    };
    let h = tx
        .initiate_with(now, full(B), manifest(), Some(short))
        .unwrap();
    assert_eq!(
        tx.info(h).unwrap().local_extension.unwrap().digests,
        vec![Some([2; 32]), None]
    );
}
