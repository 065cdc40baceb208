//! STUN codec for the classic RFC 3489 format used by Google's ICE dialect
//! (PROTOCOL.md §B.2–§B.4).
//!
//! Hand-written because every STUN crate (`stun_codec`, `stun-types`,
//! `stun-rs`, webrtc `stun`) requires the RFC 5389 magic cookie and a 12-byte
//! transaction id, while libjingle and libnice in Google mode use a 20-byte
//! header whose transaction id is 16 fully random bytes (CRATES.md §4).
//!
//! What is written: the header, USERNAME, MAPPED-ADDRESS and ERROR-CODE, each
//! with a length that is a multiple of 4 and no padding (libjingle 0.4 rejects
//! anything else). What is read: the same plus XOR-MAPPED-ADDRESS; every other
//! attribute is skipped (coturn adds SOFTWARE, SOURCE-ADDRESS, …). Both the
//! unpadded RFC 3489 layout and the padded RFC 5389 layout are accepted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

/// Length of the STUN header: type, length, 16-byte transaction id.
pub const HEADER_LEN: usize = 20;

/// Attribute type MAPPED-ADDRESS.
pub const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
/// Attribute type USERNAME.
pub const ATTR_USERNAME: u16 = 0x0006;
/// Attribute type ERROR-CODE.
pub const ATTR_ERROR_CODE: u16 = 0x0009;
/// Attribute type XOR-MAPPED-ADDRESS (RFC 5389), read only.
pub const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// Attribute type XOR-MAPPED-ADDRESS as some old servers number it, read only.
pub const ATTR_XOR_MAPPED_ADDRESS_OLD: u16 = 0x8020;

/// Longest USERNAME we accept. Google fragments are 16 characters, so a
/// check's USERNAME is 32 bytes; relay usernames are longer but bounded.
pub const MAX_USERNAME_LEN: usize = 512;

/// The three message types gshare speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// Binding Request (0x0001).
    BindingRequest,
    /// Binding Response (0x0101).
    BindingResponse,
    /// Binding Error Response (0x0111).
    BindingErrorResponse,
}

impl MessageType {
    /// The wire value.
    pub fn code(self) -> u16 {
        match self {
            MessageType::BindingRequest => 0x0001,
            MessageType::BindingResponse => 0x0101,
            MessageType::BindingErrorResponse => 0x0111,
        }
    }

    /// Parses the wire value; other STUN methods (relay Allocate/Send…) are
    /// not understood by gshare and are reported as `None`.
    pub fn from_code(code: u16) -> Option<Self> {
        match code {
            0x0001 => Some(MessageType::BindingRequest),
            0x0101 => Some(MessageType::BindingResponse),
            0x0111 => Some(MessageType::BindingErrorResponse),
            _ => None,
        }
    }
}

/// The ERROR-CODE attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorCode {
    /// 300..=699, e.g. 430.
    pub code: u16,
    /// Reason phrase (libjingle writes upper case, e.g. `STALE CREDENTIALS`).
    pub reason: String,
}

/// 400 BAD REQUEST: a check whose USERNAME does not start with our fragment.
pub const ERROR_BAD_REQUEST: u16 = 400;
/// 430 STALE CREDENTIALS: a check from an unknown remote username.
pub const ERROR_STALE_CREDENTIALS: u16 = 430;

/// Why a datagram is not a STUN message we understand.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StunError {
    /// Shorter than the 20-byte header.
    #[error("datagram shorter than a STUN header")]
    TooShort,
    /// Not a Binding request/response/error type.
    #[error("not a STUN binding message (type {0:#06x})")]
    UnknownType(u16),
    /// The header's length does not match the datagram.
    #[error("STUN length {header} does not match the {actual} bytes after the header")]
    LengthMismatch {
        /// Length field.
        header: usize,
        /// Bytes present after the header.
        actual: usize,
    },
    /// An attribute runs past the end or a known one has a bad value.
    #[error("malformed STUN attribute {0:#06x}")]
    BadAttribute(u16),
}

/// One STUN message (only the attributes gshare uses are kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request, response or error response.
    pub kind: MessageType,
    /// 16 random bytes chosen by the requester, copied by the responder.
    pub transaction_id: [u8; 16],
    /// USERNAME, raw bytes (a peer may send anything).
    pub username: Option<Vec<u8>>,
    /// MAPPED-ADDRESS, or a decoded XOR-MAPPED-ADDRESS if only that was sent.
    pub mapped_address: Option<SocketAddr>,
    /// ERROR-CODE.
    pub error: Option<ErrorCode>,
}

impl Message {
    /// A message with no attributes.
    pub fn new(kind: MessageType, transaction_id: [u8; 16]) -> Self {
        Message {
            kind,
            transaction_id,
            username: None,
            mapped_address: None,
            error: None,
        }
    }

    /// Cheap test on the header alone: could this datagram be a STUN binding
    /// message? Used to demultiplex STUN from data without parsing.
    /// PseudoTCP segments (conversation 0) start with type 0 and never pass.
    pub fn looks_like_stun(data: &[u8]) -> bool {
        if data.len() < HEADER_LEN {
            return false;
        }
        let kind = u16::from_be_bytes([data[0], data[1]]);
        let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
        MessageType::from_code(kind).is_some() && len == data.len() - HEADER_LEN
    }

    /// Parses one datagram. The message must fill the datagram exactly.
    pub fn parse(data: &[u8]) -> Result<Message, StunError> {
        let header = data.get(..HEADER_LEN).ok_or(StunError::TooShort)?;
        let code = u16::from_be_bytes([header[0], header[1]]);
        let kind = MessageType::from_code(code).ok_or(StunError::UnknownType(code))?;
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let body = &data[HEADER_LEN..];
        if len != body.len() {
            return Err(StunError::LengthMismatch {
                header: len,
                actual: body.len(),
            });
        }
        let mut transaction_id = [0u8; 16];
        transaction_id.copy_from_slice(&header[4..HEADER_LEN]);
        let mut msg = Message::new(kind, transaction_id);
        // RFC 3489 as libjingle writes it has no padding; RFC 5389 servers
        // pad every attribute to 4 bytes. The two layouts differ only when a
        // length is not a multiple of 4, so try the unpadded one first.
        match parse_attributes(body, false, &mut msg) {
            Ok(()) => Ok(msg),
            Err(first) => {
                let mut padded = Message::new(kind, transaction_id);
                match parse_attributes(body, true, &mut padded) {
                    Ok(()) => Ok(padded),
                    Err(_) => Err(first),
                }
            }
        }
    }

    /// Appends the encoded message to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.kind.code().to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.transaction_id);
        if let Some(user) = &self.username {
            // Our own usernames are 32 bytes; a peer's odd-length one is
            // echoed unchanged (changing it would break its matching).
            put_attribute(out, ATTR_USERNAME, user);
        }
        if let Some(addr) = self.mapped_address {
            let mut v = Vec::with_capacity(20);
            v.push(0);
            match addr.ip() {
                IpAddr::V4(ip) => {
                    v.push(1);
                    v.extend_from_slice(&addr.port().to_be_bytes());
                    v.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    v.push(2);
                    v.extend_from_slice(&addr.port().to_be_bytes());
                    v.extend_from_slice(&ip.octets());
                }
            }
            put_attribute(out, ATTR_MAPPED_ADDRESS, &v);
        }
        if let Some(err) = &self.error {
            let mut v = vec![0, 0, (err.code / 100) as u8, (err.code % 100) as u8];
            v.extend_from_slice(err.reason.as_bytes());
            // Pad the reason with spaces so the attribute length stays a
            // multiple of 4 without padding bytes (readable by both layouts).
            while v.len() % 4 != 0 {
                v.push(b' ');
            }
            put_attribute(out, ATTR_ERROR_CODE, &v);
        }
        let body_len = out.len() - start - HEADER_LEN;
        let len = u16::try_from(body_len).unwrap_or(u16::MAX).to_be_bytes();
        out[start + 2] = len[0];
        out[start + 3] = len[1];
    }

    /// The encoded message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        self.encode_into(&mut out);
        out
    }
}

fn put_attribute(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&value[..usize::from(len)]);
}

fn parse_attributes(mut body: &[u8], padded: bool, msg: &mut Message) -> Result<(), StunError> {
    let mut xor_mapped = None;
    while !body.is_empty() {
        if body.len() < 4 {
            return Err(StunError::BadAttribute(0));
        }
        let kind = u16::from_be_bytes([body[0], body[1]]);
        let len = usize::from(u16::from_be_bytes([body[2], body[3]]));
        let value = body.get(4..4 + len).ok_or(StunError::BadAttribute(kind))?;
        let mut next = 4 + len;
        if padded {
            next = (next + 3) & !3;
            // The last attribute's padding may be missing.
            next = next.min(body.len());
        }
        match kind {
            ATTR_USERNAME => {
                if len > MAX_USERNAME_LEN {
                    return Err(StunError::BadAttribute(kind));
                }
                msg.username = Some(value.to_vec());
            }
            ATTR_MAPPED_ADDRESS => {
                msg.mapped_address =
                    Some(parse_address(value, None).ok_or(StunError::BadAttribute(kind))?);
            }
            ATTR_XOR_MAPPED_ADDRESS | ATTR_XOR_MAPPED_ADDRESS_OLD => {
                xor_mapped = parse_address(value, Some(&msg.transaction_id));
            }
            ATTR_ERROR_CODE => {
                if len < 4 {
                    return Err(StunError::BadAttribute(kind));
                }
                let code = u16::from(value[2] & 0x7) * 100 + u16::from(value[3]);
                let reason = String::from_utf8_lossy(&value[4..]).trim_end().to_owned();
                msg.error = Some(ErrorCode { code, reason });
            }
            // Everything else (PASSWORD, SOFTWARE, SOURCE-ADDRESS, …) is
            // skipped: coturn sends such attributes even to RFC 3489 clients.
            _ => {}
        }
        body = &body[next..];
    }
    if msg.mapped_address.is_none() {
        msg.mapped_address = xor_mapped;
    }
    Ok(())
}

/// Decodes a (XOR-)MAPPED-ADDRESS value. For the XOR form the first four
/// transaction-id bytes stand where RFC 5389 keeps the magic cookie.
fn parse_address(value: &[u8], xor: Option<&[u8; 16]>) -> Option<SocketAddr> {
    let family = *value.get(1)?;
    let mut port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]);
    let mask: [u8; 16] = xor.copied().unwrap_or([0; 16]);
    if xor.is_some() {
        port ^= u16::from_be_bytes([mask[0], mask[1]]);
    }
    match (family, value.len()) {
        (1, 8) => {
            let mut ip = [0u8; 4];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = value[4 + i] ^ mask[i];
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        (2, 20) => {
            let mut ip = [0u8; 16];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = value[4 + i] ^ mask[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: [u8; 16] = *b"ABCDEFGHIJKLMNOP";

    fn header(kind: u16, len: u16) -> Vec<u8> {
        let mut v = kind.to_be_bytes().to_vec();
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&TID);
        v
    }

    #[test]
    fn request_matches_byte_vector() {
        // §B.2/§B.3: a Google check is a bare header plus a 32-byte USERNAME.
        let user = b"rrrrrrrrrrrrrrrrllllllllllllllll";
        let mut expected = header(0x0001, 36);
        expected.extend_from_slice(&[0x00, 0x06, 0x00, 0x20]);
        expected.extend_from_slice(user);
        let mut msg = Message::new(MessageType::BindingRequest, TID);
        msg.username = Some(user.to_vec());
        assert_eq!(msg.encode(), expected);
        assert_eq!(Message::parse(&expected), Ok(msg));
        assert!(Message::looks_like_stun(&expected));
    }

    #[test]
    fn success_response_matches_byte_vector() {
        let user = b"rrrrrrrrrrrrrrrrllllllllllllllll";
        let mut expected = header(0x0101, 36 + 12);
        expected.extend_from_slice(&[0x00, 0x06, 0x00, 0x20]);
        expected.extend_from_slice(user);
        expected.extend_from_slice(&[0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x1f, 0x90]);
        expected.extend_from_slice(&[192, 0, 2, 7]);
        let mut msg = Message::new(MessageType::BindingResponse, TID);
        msg.username = Some(user.to_vec());
        msg.mapped_address = Some("192.0.2.7:8080".parse().unwrap());
        assert_eq!(msg.encode(), expected);
        assert_eq!(Message::parse(&expected), Ok(msg));
    }

    #[test]
    fn ipv6_mapped_address_round_trips() {
        let mut msg = Message::new(MessageType::BindingResponse, TID);
        msg.mapped_address = Some("[2001:db8::1]:5000".parse().unwrap());
        let bytes = msg.encode();
        assert_eq!(bytes.len(), HEADER_LEN + 4 + 20);
        assert_eq!(Message::parse(&bytes), Ok(msg));
    }

    #[test]
    fn error_response_is_multiple_of_four_and_parses() {
        let mut msg = Message::new(MessageType::BindingErrorResponse, TID);
        msg.username = Some(b"x".repeat(32));
        msg.error = Some(ErrorCode {
            code: 430,
            reason: "STALE CREDENTIALS".into(),
        });
        let bytes = msg.encode();
        // ERROR-CODE: 4 + 17 reason bytes, padded with spaces to 24.
        let mut expected = header(0x0111, 36 + 28);
        expected.extend_from_slice(&[0x00, 0x06, 0x00, 0x20]);
        expected.extend_from_slice(&b"x".repeat(32));
        expected.extend_from_slice(&[0x00, 0x09, 0x00, 0x18, 0, 0, 4, 30]);
        expected.extend_from_slice(b"STALE CREDENTIALS   ");
        assert_eq!(bytes, expected);
        assert_eq!(Message::parse(&bytes), Ok(msg));
    }

    #[test]
    fn libjingle_unpadded_error_code_parses() {
        // LJ04 writes ERROR-CODE with a 21-byte value and no padding.
        let mut v = header(0x0111, 25);
        v.extend_from_slice(&[0x00, 0x09, 0x00, 21, 0, 0, 4, 30]);
        v.extend_from_slice(b"STALE CREDENTIALS");
        let msg = Message::parse(&v).unwrap();
        assert_eq!(msg.error.unwrap().code, 430);
    }

    #[test]
    fn unknown_attributes_are_skipped_padded_or_not() {
        // A coturn-like answer: SOFTWARE (odd length, padded), then
        // MAPPED-ADDRESS, then an unknown comprehension-required attribute.
        let mut body = vec![0x80, 0x22, 0x00, 0x05];
        body.extend_from_slice(b"cotur\0\0\0");
        body.extend_from_slice(&[0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x12, 0x34, 10, 0, 0, 1]);
        body.extend_from_slice(&[0x00, 0x04, 0x00, 0x04, 1, 2, 3, 4]);
        let mut v = header(0x0101, body.len() as u16);
        v.extend_from_slice(&body);
        let msg = Message::parse(&v).unwrap();
        assert_eq!(msg.mapped_address, Some("10.0.0.1:4660".parse().unwrap()));

        // Unpadded RFC 3489 layout with an unknown attribute of length 3.
        let mut body = vec![0x00, 0x07, 0x00, 0x03, b'p', b'w', b'd'];
        body.extend_from_slice(&[0x00, 0x06, 0x00, 0x04, b'u', b's', b'e', b'r']);
        let mut v = header(0x0001, body.len() as u16);
        v.extend_from_slice(&body);
        let msg = Message::parse(&v).unwrap();
        assert_eq!(msg.username.as_deref(), Some(&b"user"[..]));
    }

    #[test]
    fn xor_mapped_address_decodes_with_tid_prefix() {
        let tid = [
            0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        let mut v = 0x0101u16.to_be_bytes().to_vec();
        v.extend_from_slice(&12u16.to_be_bytes());
        v.extend_from_slice(&tid);
        // 192.0.2.1:32853 xor-encoded per RFC 5389.
        v.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01]);
        v.extend_from_slice(&(32853u16 ^ 0x2112).to_be_bytes());
        v.extend_from_slice(&[192 ^ 0x21, 0x12, 2 ^ 0xa4, 1 ^ 0x42]);
        let msg = Message::parse(&v).unwrap();
        assert_eq!(msg.mapped_address, Some("192.0.2.1:32853".parse().unwrap()));
    }

    #[test]
    fn truncated_and_garbage_input_is_rejected() {
        assert_eq!(Message::parse(&[]), Err(StunError::TooShort));
        assert_eq!(Message::parse(&[0, 1, 0, 0]), Err(StunError::TooShort));
        // PseudoTCP segment, conversation 0: type 0.
        let ptcp = [0u8; 24];
        assert!(!Message::looks_like_stun(&ptcp));
        assert_eq!(Message::parse(&ptcp), Err(StunError::UnknownType(0)));
        // Length field larger than the datagram.
        let mut v = header(0x0001, 8);
        v.extend_from_slice(&[0x00, 0x06, 0x00, 0x04]);
        assert!(matches!(
            Message::parse(&v),
            Err(StunError::LengthMismatch { .. })
        ));
        // Attribute length running past the end.
        let mut v = header(0x0001, 8);
        v.extend_from_slice(&[0x00, 0x06, 0x01, 0x00, 1, 2, 3, 4]);
        assert_eq!(Message::parse(&v), Err(StunError::BadAttribute(6)));
        // Dangling partial attribute header.
        let mut v = header(0x0001, 2);
        v.extend_from_slice(&[0x00, 0x06]);
        assert!(Message::parse(&v).is_err());
        // Bad MAPPED-ADDRESS family.
        let mut v = header(0x0101, 12);
        v.extend_from_slice(&[0x00, 0x01, 0x00, 0x08, 0, 9, 0, 1, 1, 2, 3, 4]);
        assert_eq!(Message::parse(&v), Err(StunError::BadAttribute(1)));
        // Oversized USERNAME.
        let mut v = header(0x0001, 4 + 600);
        v.extend_from_slice(&[0x00, 0x06, 0x02, 0x58]);
        v.extend_from_slice(&[b'a'; 600]);
        assert_eq!(Message::parse(&v), Err(StunError::BadAttribute(6)));
    }

    #[test]
    fn parse_never_panics_on_random_input() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let len = rng.random_range(0..80);
            let mut v: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if v.len() >= 4 && rng.random_bool(0.5) {
                // Make the header plausible so the attribute walker runs.
                v[0] = 0;
                v[1] = 1;
                let l = (v.len().saturating_sub(HEADER_LEN)) as u16;
                v[2..4].copy_from_slice(&l.to_be_bytes());
            }
            let _ = Message::parse(&v);
        }
    }
}
