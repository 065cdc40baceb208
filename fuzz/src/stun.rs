//! `stun`: bytes → `stun::Message::parse`; on success encode and re-parse.
//!
//! What the codec promises (src/ice/stun.rs): a parsed message re-encodes to
//! bytes that parse back to the same message, as long as the encoding fits a
//! STUN length field (a lossily decoded reason phrase can grow) and the
//! error class fits the three bits it is read from (codes below 800). One
//! re-encode is always a fixed point. `looks_like_stun` accepts everything
//! `parse` accepts.

use gshare::ice::stun::{HEADER_LEN, Message};

/// The fuzz target body.
pub fn run(data: &[u8]) {
    let parsed = Message::parse(data);
    let Ok(msg) = parsed else {
        return;
    };
    assert!(
        Message::looks_like_stun(data),
        "parse accepted what looks_like_stun rejects"
    );
    let bytes = msg.encode();
    let mut appended = vec![0xAA; 3];
    msg.encode_into(&mut appended);
    assert_eq!(
        &appended[3..],
        &bytes[..],
        "encode_into differs from encode"
    );
    if bytes.len() > HEADER_LEN + usize::from(u16::MAX) {
        return;
    }
    let again = Message::parse(&bytes)
        .unwrap_or_else(|e| panic!("our encoding of {msg:?} does not parse: {e}"));
    assert!(Message::looks_like_stun(&bytes));
    let bytes2 = again.encode();
    if msg.error.as_ref().is_none_or(|e| e.code < 800) {
        assert_eq!(msg, again, "round trip changed the message");
        assert_eq!(bytes, bytes2, "re-encoding is not stable");
    }
    // After one round the message is a fixed point.
    let third = Message::parse(&bytes2).expect("a re-encoded message parses");
    assert_eq!(third, again, "second round trip changed the message");
    assert_eq!(third.encode(), bytes2);
}
