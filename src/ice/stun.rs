//! STUN codec for the classic RFC 3489 format used by Google's ICE dialect
//! (docs/protocol.md §B.2–§B.4).
//!
//! Hand-written because every STUN crate (`stun_codec`, `stun-types`,
//! `stun-rs`, webrtc `stun`) requires the RFC 5389 magic cookie and a 12-byte
//! transaction id, while libjingle and libnice in Google mode use a 20-byte
//! header whose transaction id is 16 fully random bytes (docs/crates.md §4).
//!
//! What is written: the header, USERNAME, MAPPED-ADDRESS and ERROR-CODE, each
//! with a length that is a multiple of 4 and no padding (libjingle 0.4 rejects
//! anything else). What is read: the same plus XOR-MAPPED-ADDRESS; every other
//! attribute is skipped (coturn adds SOFTWARE, SOURCE-ADDRESS, …). Both the
//! unpadded RFC 3489 layout and the padded RFC 5389 layout are accepted.
//!
//! The second half of the file is the RFC 5389/8489 codec the TURN client
//! (RFC 8656, `crate::turn`) needs: magic cookie, 12-byte transaction ids,
//! MESSAGE-INTEGRITY with the long-term key, FINGERPRINT, the XOR address
//! attributes and TURN's ChannelData framing. It lives beside the classic
//! codec so that one file owns STUN's wire layout (addresses, attribute
//! walking) and because the Google dialect's bytes above must not change;
//! only the hashes come from crates (RustCrypto `hmac`, `sha1`, `md-5`,
//! `crc32fast`). It is checked against the RFC 5769 test vectors.

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

// ---------------------------------------------------------------------------
// RFC 5389 / RFC 8489 messages (magic cookie, 12-byte transaction id), used
// by the TURN client (RFC 8656) only. The Google dialect above never sees
// them: its checks keep the RFC 3489 header and `Message`'s exact bytes.
// ---------------------------------------------------------------------------

/// The RFC 5389 magic cookie, bytes 4..8 of every RFC 5389 header.
pub const MAGIC_COOKIE: u32 = 0x2112_a442;
/// Value XORed into the CRC-32 of a FINGERPRINT attribute ("STUN").
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// Attribute type MESSAGE-INTEGRITY (HMAC-SHA1, 20 bytes).
pub const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
/// Attribute type CHANNEL-NUMBER (RFC 8656).
pub const ATTR_CHANNEL_NUMBER: u16 = 0x000c;
/// Attribute type LIFETIME (RFC 8656), seconds.
pub const ATTR_LIFETIME: u16 = 0x000d;
/// Attribute type XOR-PEER-ADDRESS (RFC 8656).
pub const ATTR_XOR_PEER_ADDRESS: u16 = 0x0012;
/// Attribute type DATA (RFC 8656).
pub const ATTR_DATA: u16 = 0x0013;
/// Attribute type REALM.
pub const ATTR_REALM: u16 = 0x0014;
/// Attribute type NONCE.
pub const ATTR_NONCE: u16 = 0x0015;
/// Attribute type XOR-RELAYED-ADDRESS (RFC 8656).
pub const ATTR_XOR_RELAYED_ADDRESS: u16 = 0x0016;
/// Attribute type REQUESTED-TRANSPORT (RFC 8656).
pub const ATTR_REQUESTED_TRANSPORT: u16 = 0x0019;
/// Attribute type SOFTWARE.
pub const ATTR_SOFTWARE: u16 = 0x8022;
/// Attribute type FINGERPRINT.
pub const ATTR_FINGERPRINT: u16 = 0x8028;

/// Longest REALM or NONCE value we keep (RFC 8489 §14.9/§14.10: fewer than
/// 128 characters, at most 763 bytes).
pub const MAX_REALM_NONCE_LEN: usize = 763;
/// Most attributes kept from one message; a server sends fewer than ten.
pub const MAX_ATTRIBUTES: usize = 32;

/// STUN/TURN methods gshare's TURN client uses (RFC 8489 §18.2, RFC 8656 §17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Binding (0x001).
    Binding,
    /// Allocate (0x003).
    Allocate,
    /// Refresh (0x004).
    Refresh,
    /// Send (0x006), indications only.
    Send,
    /// Data (0x007), indications only.
    Data,
    /// CreatePermission (0x008).
    CreatePermission,
    /// ChannelBind (0x009).
    ChannelBind,
}

impl Method {
    /// The 12-bit method number.
    pub fn code(self) -> u16 {
        match self {
            Method::Binding => 0x001,
            Method::Allocate => 0x003,
            Method::Refresh => 0x004,
            Method::Send => 0x006,
            Method::Data => 0x007,
            Method::CreatePermission => 0x008,
            Method::ChannelBind => 0x009,
        }
    }

    fn from_code(code: u16) -> Option<Method> {
        Some(match code {
            0x001 => Method::Binding,
            0x003 => Method::Allocate,
            0x004 => Method::Refresh,
            0x006 => Method::Send,
            0x007 => Method::Data,
            0x008 => Method::CreatePermission,
            0x009 => Method::ChannelBind,
            _ => return None,
        })
    }
}

/// The class bits of an RFC 5389 message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A request (answered by success or error).
    Request,
    /// An indication (never answered).
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0,
            Class::Indication => 1,
            Class::Success => 2,
            Class::Error => 3,
        }
    }
}

/// The 14-bit message type: method bits interleaved with the class bits
/// C1 (bit 8) and C0 (bit 4), RFC 8489 §5.
pub fn message_type(method: Method, class: Class) -> u16 {
    let m = method.code();
    let c = class.bits();
    (m & 0x000f) | ((m & 0x0070) << 1) | ((m & 0x0f80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

fn split_message_type(t: u16) -> (u16, Class) {
    let m = (t & 0x000f) | ((t & 0x00e0) >> 1) | ((t & 0x3e00) >> 2);
    let class = match ((t >> 4) & 1) | ((t >> 7) & 2) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    (m, class)
}

/// The long-term credential key, MD5(username ":" realm ":" password)
/// (RFC 8489 §9.2.2; no SASLprep: gshare's usernames and the TURN REST
/// scheme's are ASCII).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    use hmac::{Hmac, Mac};
    // HMAC accepts keys of any length; the error arm cannot happen.
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(key) else {
        return [0; 20];
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Writes one RFC 5389 message: header, attributes (each padded to 4
/// bytes), then optionally MESSAGE-INTEGRITY and FINGERPRINT, in that order.
#[derive(Debug, Clone)]
pub struct StunBuilder {
    buf: Vec<u8>,
}

impl StunBuilder {
    /// A message of this method and class with this transaction id.
    pub fn new(method: Method, class: Class, transaction_id: [u8; 12]) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&transaction_id);
        StunBuilder { buf }
    }

    fn set_len(&mut self) {
        let len = u16::try_from(self.buf.len() - HEADER_LEN).unwrap_or(u16::MAX);
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends an attribute with its padding (at most 65535 bytes kept).
    pub fn attribute(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        put_attribute(&mut self.buf, kind, value);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self.set_len();
        self
    }

    /// Appends an XOR-encoded address attribute (XOR-MAPPED-, XOR-PEER-,
    /// XOR-RELAYED-ADDRESS).
    pub fn xor_address(&mut self, kind: u16, addr: SocketAddr) -> &mut Self {
        let mut mask = [0u8; 16];
        mask.copy_from_slice(&self.buf[4..HEADER_LEN]);
        let mut v = vec![0];
        let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
        match addr.ip() {
            IpAddr::V4(ip) => {
                v.push(1);
                v.extend_from_slice(&port.to_be_bytes());
                v.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m));
            }
            IpAddr::V6(ip) => {
                v.push(2);
                v.extend_from_slice(&port.to_be_bytes());
                v.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m));
            }
        }
        self.attribute(kind, &v)
    }

    /// Appends ERROR-CODE.
    pub fn error_code(&mut self, code: u16, reason: &str) -> &mut Self {
        let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        v.extend_from_slice(reason.as_bytes());
        self.attribute(ATTR_ERROR_CODE, &v)
    }

    /// Appends MESSAGE-INTEGRITY keyed with `key` (RFC 8489 §14.5: the
    /// HMAC covers everything before it, the length already counting it).
    pub fn integrity(&mut self, key: &[u8]) -> &mut Self {
        let len = u16::try_from(self.buf.len() + 24 - HEADER_LEN).unwrap_or(u16::MAX);
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        let mac = hmac_sha1(key, &[&self.buf]);
        self.attribute(ATTR_MESSAGE_INTEGRITY, &mac)
    }

    /// Appends FINGERPRINT (CRC-32 of everything before it, XOR "STUN").
    pub fn fingerprint(&mut self) -> &mut Self {
        let len = u16::try_from(self.buf.len() + 8 - HEADER_LEN).unwrap_or(u16::MAX);
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        let crc = crc32fast::hash(&self.buf) ^ FINGERPRINT_XOR;
        self.attribute(ATTR_FINGERPRINT, &crc.to_be_bytes())
    }

    /// The encoded message.
    pub fn finish(&self) -> Vec<u8> {
        self.buf.clone()
    }
}

/// Why a datagram is not an RFC 5389 message we accept.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Rfc5389Error {
    /// Shorter than a header, no magic cookie, or the top bits are not 00.
    #[error("not an RFC 5389 STUN message")]
    NotStun,
    /// A method gshare does not speak.
    #[error("unknown STUN method {0:#05x}")]
    UnknownMethod(u16),
    /// The header's length does not match the datagram or is not a
    /// multiple of 4.
    #[error("STUN length does not match the datagram")]
    BadLength,
    /// An attribute runs past the end, or too many attributes.
    #[error("malformed STUN attribute {0:#06x}")]
    BadAttribute(u16),
    /// FINGERPRINT present and wrong.
    #[error("STUN FINGERPRINT does not match")]
    BadFingerprint,
}

/// A parsed RFC 5389 message; attribute values are looked up on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunMessage {
    /// The method.
    pub method: Method,
    /// Request, indication, success or error.
    pub class: Class,
    /// The 12-byte transaction id.
    pub transaction_id: [u8; 12],
    raw: Vec<u8>,
    /// (type, value offset, value length, offset of the attribute header),
    /// at most [`MAX_ATTRIBUTES`].
    attributes: Vec<(u16, usize, usize, usize)>,
}

impl StunMessage {
    /// Cheap header test: top two bits zero, magic cookie, length a
    /// multiple of 4 that fills the datagram. Google-dialect checks carry
    /// random bytes where the cookie would be and are told apart by it.
    pub fn looks_like(data: &[u8]) -> bool {
        data.len() >= HEADER_LEN
            && data[0] & 0xc0 == 0
            && data[4..8] == MAGIC_COOKIE.to_be_bytes()
            && usize::from(u16::from_be_bytes([data[2], data[3]])) == data.len() - HEADER_LEN
    }

    /// Parses one datagram; checks FINGERPRINT when present. Unknown
    /// attributes are kept and ignored (gshare never sends
    /// comprehension-required attributes a server could expect us to read).
    pub fn parse(data: &[u8]) -> Result<StunMessage, Rfc5389Error> {
        if !Self::looks_like(data) {
            if data.len() >= HEADER_LEN
                && data[0] & 0xc0 == 0
                && data[4..8] == MAGIC_COOKIE.to_be_bytes()
            {
                return Err(Rfc5389Error::BadLength);
            }
            return Err(Rfc5389Error::NotStun);
        }
        if !(data.len() - HEADER_LEN).is_multiple_of(4) {
            return Err(Rfc5389Error::BadLength);
        }
        let (m, class) = split_message_type(u16::from_be_bytes([data[0], data[1]]));
        let method = Method::from_code(m).ok_or(Rfc5389Error::UnknownMethod(m))?;
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(&data[8..HEADER_LEN]);
        let mut attributes = Vec::new();
        let mut at = HEADER_LEN;
        while at < data.len() {
            let head = data.get(at..at + 4).ok_or(Rfc5389Error::BadAttribute(0))?;
            let kind = u16::from_be_bytes([head[0], head[1]]);
            let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
            if at + 4 + len > data.len() || attributes.len() >= MAX_ATTRIBUTES {
                return Err(Rfc5389Error::BadAttribute(kind));
            }
            if kind == ATTR_FINGERPRINT {
                let value = &data[at + 4..at + 4 + len];
                if len != 4 || at + 8 != data.len() {
                    return Err(Rfc5389Error::BadAttribute(kind));
                }
                let crc = crc32fast::hash(&data[..at]) ^ FINGERPRINT_XOR;
                if value != crc.to_be_bytes() {
                    return Err(Rfc5389Error::BadFingerprint);
                }
            }
            attributes.push((kind, at + 4, len, at));
            at += (4 + len + 3) & !3;
        }
        Ok(StunMessage {
            method,
            class,
            transaction_id,
            raw: data.to_vec(),
            attributes,
        })
    }

    /// The value of the first attribute of this type, if any. Attributes
    /// after MESSAGE-INTEGRITY (other than FINGERPRINT) are ignored, as
    /// RFC 8489 §14.5 requires.
    pub fn get(&self, kind: u16) -> Option<&[u8]> {
        for &(k, off, len, _) in &self.attributes {
            if k == kind {
                return Some(&self.raw[off..off + len]);
            }
            if k == ATTR_MESSAGE_INTEGRITY {
                break;
            }
        }
        None
    }

    /// A UTF-8 attribute (USERNAME, REALM, NONCE, SOFTWARE), lossy.
    pub fn text(&self, kind: u16) -> Option<String> {
        let v = self.get(kind)?;
        (v.len() <= MAX_REALM_NONCE_LEN).then(|| String::from_utf8_lossy(v).into_owned())
    }

    /// A decoded XOR-*-ADDRESS attribute.
    pub fn xor_address(&self, kind: u16) -> Option<SocketAddr> {
        let mut mask = [0u8; 16];
        mask.copy_from_slice(&self.raw[4..HEADER_LEN]);
        parse_address(self.get(kind)?, Some(&mask))
    }

    /// ERROR-CODE.
    pub fn error_code(&self) -> Option<ErrorCode> {
        let v = self.get(ATTR_ERROR_CODE)?;
        if v.len() < 4 {
            return None;
        }
        let code = u16::from(v[2] & 0x7) * 100 + u16::from(v[3]);
        // coturn counts a trailing NUL into the reason.
        let reason = String::from_utf8_lossy(&v[4..])
            .trim_end_matches(['\0', ' '])
            .to_owned();
        Some(ErrorCode { code, reason })
    }

    /// LIFETIME in seconds.
    pub fn lifetime(&self) -> Option<u32> {
        let v = self.get(ATTR_LIFETIME)?;
        Some(u32::from_be_bytes(v.try_into().ok()?))
    }

    /// Whether MESSAGE-INTEGRITY is present and matches `key`.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(&(_, off, len, head)) = self
            .attributes
            .iter()
            .find(|a| a.0 == ATTR_MESSAGE_INTEGRITY)
        else {
            return false;
        };
        if len != 20 {
            return false;
        }
        // The HMAC covers the header (length counting up to the end of
        // MESSAGE-INTEGRITY) and the attributes before it.
        let adjusted = u16::try_from(head + 24 - HEADER_LEN).unwrap_or(u16::MAX);
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.raw[..HEADER_LEN]);
        header[2..4].copy_from_slice(&adjusted.to_be_bytes());
        let mac = hmac_sha1(key, &[&header, &self.raw[HEADER_LEN..head]]);
        // Constant-time comparison is not needed for a response check (the
        // attacker would have to answer inside the transaction anyway), but
        // it is cheap.
        mac.iter()
            .zip(&self.raw[off..off + 20])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// TURN ChannelData framing (RFC 8656 §12.4): channel number (0x4000 to
/// 0x4FFF), length, data. Over UDP the padding to 4 bytes is optional;
/// gshare sends none and accepts both.
pub mod channel_data {
    /// Lowest channel number (RFC 8656 §12).
    pub const FIRST_CHANNEL: u16 = 0x4000;
    /// Highest channel number (RFC 8656 §12).
    pub const LAST_CHANNEL: u16 = 0x4fff;

    /// Bytes of the ChannelData header (channel number, length).
    pub const HEADER: usize = 4;

    /// Whether the first byte says ChannelData (top bits 01).
    pub fn looks_like(data: &[u8]) -> bool {
        data.first().is_some_and(|b| b & 0xc0 == 0x40)
    }

    /// Frames `payload` for `channel` (at most 65535 bytes are framed).
    pub fn encode(channel: u16, payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
        let mut out = Vec::with_capacity(4 + payload.len());
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&payload[..usize::from(len)]);
        out
    }

    /// Splits a ChannelData message into channel and payload.
    pub fn decode(data: &[u8]) -> Option<(u16, &[u8])> {
        let channel = u16::from_be_bytes([*data.first()?, *data.get(1)?]);
        if !(FIRST_CHANNEL..=LAST_CHANNEL).contains(&channel) {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([*data.get(2)?, *data.get(3)?]));
        // Padding after the payload (TCP style) is allowed, a shortfall is not.
        let payload = data.get(4..4 + len)?;
        (data.len() - 4 - len < 4).then_some((channel, payload))
    }
}

#[cfg(test)]
mod rfc5389_tests {
    use super::*;

    #[test]
    fn rfc5769_sample_request_integrity_and_fingerprint_verify() {
        // RFC 5769 §2.1 test vector (short-term credential "VOkJxbRl1RmTxUk/WvJxBt").
        let hex = "000100582112a442b7e7a701bc34d686fa87dfae\
                   802200105354554e207465737420636c69656e74\
                   002400046e0001ff80290008932ff9b151263b36\
                   000600096576746a3a68367659202020\
                   000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2\
                   80280004e57a3bcf";
        let hex: String = hex.split_whitespace().collect();
        let bytes = hex::decode(hex).unwrap();
        let msg = StunMessage::parse(&bytes).unwrap();
        assert_eq!(msg.method, Method::Binding);
        assert_eq!(msg.class, Class::Request);
        assert_eq!(msg.text(ATTR_USERNAME).unwrap(), "evtj:h6vY");
        assert!(msg.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
        assert!(!msg.verify_integrity(b"wrong"));
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(StunMessage::parse(&bad), Err(Rfc5389Error::BadFingerprint));
    }

    #[test]
    fn rfc5769_sample_ipv4_response_decodes_xor_mapped_address() {
        let hex = "0101003c2112a442b7e7a701bc34d686fa87dfae\
                   8022000b7465737420766563746f7220\
                   002000080001a147e112a643\
                   000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7\
                   80280004c07d4c96";
        let bytes = hex::decode(hex.split_whitespace().collect::<String>()).unwrap();
        let msg = StunMessage::parse(&bytes).unwrap();
        assert_eq!(msg.class, Class::Success);
        assert_eq!(
            msg.xor_address(ATTR_XOR_MAPPED_ADDRESS),
            Some("192.0.2.1:32853".parse().unwrap())
        );
        assert!(msg.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
    }

    #[test]
    fn rfc5769_long_term_sample_verifies() {
        // RFC 5769 §2.4: the password "The\u{ad}M\u{aa}tr\u{2168}" is
        // "TheMatrIX" after SASLprep.
        let hex = "000100602112a44278ad3433c6ad72c029da412e\
                   00060012e3839ee38388e383aae38383e382afe382b90000\
                   0015001c662f2f3439396b39353464364f4c33346f4c394653547679363473 41\
                   0014000b6578616d706c652e6f726700\
                   00080014f67024656dd64a3e02b8e0712e85c9a28ca89666";
        let bytes = hex::decode(hex.split_whitespace().collect::<String>()).unwrap();
        let msg = StunMessage::parse(&bytes).unwrap();
        assert_eq!(msg.text(ATTR_REALM).unwrap(), "example.org");
        let key = long_term_key("マトリックス", "example.org", "TheMatrIX");
        assert!(msg.verify_integrity(&key));
        assert!(!msg.verify_integrity(&long_term_key("マトリックス", "example.org", "x")));
    }

    #[test]
    fn builder_round_trips_turn_attributes() {
        let tid = *b"abcdefghijkl";
        let key = long_term_key("user", "realm", "pass");
        let peer: SocketAddr = "[2001:db8::7]:4000".parse().unwrap();
        let bytes = StunBuilder::new(Method::ChannelBind, Class::Request, tid)
            .attribute(ATTR_CHANNEL_NUMBER, &[0x40, 0x01, 0, 0])
            .xor_address(ATTR_XOR_PEER_ADDRESS, peer)
            .attribute(ATTR_USERNAME, b"user")
            .attribute(ATTR_REALM, b"realm")
            .attribute(ATTR_NONCE, b"nonce-1")
            .integrity(&key)
            .fingerprint()
            .finish();
        assert_eq!(u16::from_be_bytes([bytes[0], bytes[1]]), 0x0009);
        assert!(StunMessage::looks_like(&bytes));
        assert!(!Message::looks_like_stun(&bytes));
        let msg = StunMessage::parse(&bytes).unwrap();
        assert_eq!(msg.method, Method::ChannelBind);
        assert_eq!(msg.transaction_id, tid);
        assert_eq!(msg.xor_address(ATTR_XOR_PEER_ADDRESS), Some(peer));
        assert_eq!(msg.text(ATTR_NONCE).unwrap(), "nonce-1");
        assert!(msg.verify_integrity(&key));
        assert!(!msg.verify_integrity(&long_term_key("user", "realm", "other")));

        let err = StunBuilder::new(Method::Allocate, Class::Error, tid)
            .error_code(438, "Stale Nonce")
            .attribute(ATTR_LIFETIME, &600u32.to_be_bytes())
            .finish();
        assert_eq!(u16::from_be_bytes([err[0], err[1]]), 0x0113);
        let msg = StunMessage::parse(&err).unwrap();
        assert_eq!(msg.class, Class::Error);
        assert_eq!(msg.error_code().unwrap().code, 438);
        assert_eq!(msg.lifetime(), Some(600));
        // Type bits of the indications TURN uses.
        assert_eq!(message_type(Method::Send, Class::Indication), 0x0016);
        assert_eq!(message_type(Method::Data, Class::Indication), 0x0017);
        assert_eq!(message_type(Method::Refresh, Class::Success), 0x0104);
    }

    #[test]
    fn channel_data_frames() {
        let framed = channel_data::encode(0x4001, b"hello");
        assert_eq!(framed, [0x40, 0x01, 0, 5, b'h', b'e', b'l', b'l', b'o']);
        assert!(channel_data::looks_like(&framed));
        assert_eq!(channel_data::decode(&framed), Some((0x4001, &b"hello"[..])));
        let mut padded = framed.clone();
        padded.extend_from_slice(&[0, 0, 0]);
        assert_eq!(channel_data::decode(&padded), Some((0x4001, &b"hello"[..])));
        assert_eq!(channel_data::decode(&framed[..7]), None);
        assert_eq!(channel_data::decode(&[0x50, 0, 0, 0]), None);
        // Google checks and PseudoTCP segments never look like ChannelData
        // (the first byte of both is below 0x40: STUN type or conversation 0).
        assert!(!channel_data::looks_like(&[0, 1, 0, 0]));
    }

    #[test]
    fn garbage_is_rejected_and_never_panics() {
        assert_eq!(StunMessage::parse(&[]), Err(Rfc5389Error::NotStun));
        let mut classic = Message::new(MessageType::BindingRequest, [7; 16]);
        classic.username = Some(b"x".repeat(32));
        assert_eq!(
            StunMessage::parse(&classic.encode()),
            Err(Rfc5389Error::NotStun)
        );
        let mut bad = StunBuilder::new(Method::Allocate, Class::Success, [1; 12])
            .attribute(ATTR_LIFETIME, &[0, 0, 2, 88])
            .finish();
        bad[23] = 200; // attribute length past the end
        assert!(StunMessage::parse(&bad).is_err());
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..20_000 {
            let len = rng.random_range(20..120usize) & !3;
            let mut v: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            v[0] &= 0x01;
            v[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            let l = (len - HEADER_LEN) as u16;
            v[2..4].copy_from_slice(&l.to_be_bytes());
            if let Ok(m) = StunMessage::parse(&v) {
                let _ = (
                    m.error_code(),
                    m.lifetime(),
                    m.xor_address(ATTR_XOR_RELAYED_ADDRESS),
                );
                let _ = m.verify_integrity(b"k");
            }
            let _ = channel_data::decode(&v);
        }
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
