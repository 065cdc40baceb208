//! Percent-escaping of item names in request paths (docs/protocol.md §D.1).
//!
//! The client escapes every byte outside `A-Za-z0-9-._~` as `%XX` (uppercase hex), which both
//! libjingle's `url_decode` and GLib's `g_uri_unescape_string` decode. The server decodes `%xx`
//! in either case and tries `+` first as a literal plus and then as a space (libjingle's
//! `url_encode` never produces `+`, but its decoder maps `+` to space).
//!
//! Hand-written because `percent-encoding` has no "strict" decoder (it passes malformed escapes
//! through unchanged, which would let `%zz` and a literal `%zz` name collide) and no `+` handling.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Bytes left unescaped in a request path: RFC 3986 "unreserved".
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Escapes an item name for a request path: every byte not in `A-Za-z0-9-._~` becomes `%XX`
/// (uppercase hex), so `/`, space, `+`, `%` and all non-ASCII bytes are escaped.
pub fn escape_name(name: &str) -> String {
    utf8_percent_encode(name, ESCAPED).to_string()
}

/// The request path for an item: the offer's source-path, a `/` if it does not end with one
/// (as gabble does), then the escaped name.
pub fn request_path(source_path: &str, name: &str) -> String {
    let mut path = String::with_capacity(source_path.len() + name.len() * 3 + 1);
    path.push_str(source_path);
    if !path.ends_with('/') {
        path.push('/');
    }
    path.push_str(&escape_name(name));
    path
}

/// Strictly percent-decodes one path segment. `%` must be followed by two hex digits (either
/// case); anything else makes the whole segment invalid (`None`). When `plus_as_space` is set,
/// `+` decodes to a space, otherwise it stays a `+`.
pub fn decode_segment(segment: &[u8], plus_as_space: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(segment.len());
    let mut i = 0;
    while let Some(&b) = segment.get(i) {
        match b {
            b'%' => {
                let hi = hex_value(*segment.get(i + 1)?)?;
                let lo = hex_value(*segment.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_but_unreserved() {
        assert_eq!(escape_name("foo bar.txt"), "foo%20bar.txt");
        assert_eq!(escape_name("a+b%c/d\\e"), "a%2Bb%25c%2Fd%5Ce");
        assert_eq!(escape_name("café"), "caf%C3%A9");
        assert_eq!(escape_name("A-Za-z0-9-._~"), "A-Za-z0-9-._~");
        assert_eq!(escape_name("!'()*"), "%21%27%28%29%2A");
        assert_eq!(escape_name("?#&="), "%3F%23%26%3D");
    }

    #[test]
    fn request_path_inserts_slash_like_gabble() {
        assert_eq!(
            request_path("/temporary/abc/", "x y"),
            "/temporary/abc/x%20y"
        );
        assert_eq!(request_path("/temporary/abc", "x"), "/temporary/abc/x");
    }

    #[test]
    fn decode_is_strict_and_case_insensitive() {
        assert_eq!(
            decode_segment(b"caf%c3%A9", false).unwrap(),
            "café".as_bytes()
        );
        assert_eq!(decode_segment(b"a+b", false).unwrap(), b"a+b");
        assert_eq!(decode_segment(b"a+b", true).unwrap(), b"a b");
        assert_eq!(decode_segment(b"%2e%2E", false).unwrap(), b"..");
        assert_eq!(decode_segment(b"%zz", false), None);
        assert_eq!(decode_segment(b"abc%4", false), None);
        assert_eq!(decode_segment(b"abc%", false), None);
        assert_eq!(decode_segment(b"", false).unwrap(), b"");
    }

    #[test]
    fn escape_then_decode_round_trips() {
        for name in [
            "plain",
            "sp ace",
            "pl+us",
            "per%cent",
            "ünï cödé 文件",
            "a/b",
            "\u{7f}\t",
        ] {
            let escaped = escape_name(name);
            assert!(
                escaped
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b))
            );
            assert_eq!(
                decode_segment(escaped.as_bytes(), false).unwrap(),
                name.as_bytes()
            );
            assert_eq!(
                decode_segment(escaped.as_bytes(), true).unwrap(),
                name.as_bytes()
            );
        }
    }
}
