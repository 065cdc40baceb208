//! The PseudoTCP segment: 24-byte header (docs/protocol.md §C.1) and the options
//! carried after the control code of a CONNECT segment (§C.3).

/// Size of the fixed header in front of every segment.
pub const HEADER_SIZE: usize = 24;

/// Largest datagram accepted on receipt. LJ04 sends up to 65535 (its MTU
/// table starts there), so the receiver must take anything up to that.
pub const MAX_DATAGRAM: usize = 65535;

/// NICE extension (FIN segments); only meaningful after both CONNECTs carried
/// option 254, which gshare never advertises, so it is ignored on receipt.
pub const FLAG_FIN: u8 = 0x01;
/// Control segment: the payload starts with a control code.
pub const FLAG_CTL: u8 = 0x02;
/// Reset: the peer aborted the connection.
pub const FLAG_RST: u8 = 0x04;

/// gshare extension, only ever sent to a peer whose gshare option has
/// [`FEATURE_SACK`]: the payload is a list of selective-acknowledgement
/// blocks (pairs of big-endian u32 `start`, `end`) and occupies no sequence
/// space. Bit 0x10 is unused by libjingle and libnice.
pub const FLAG_SACK: u8 = 0x10;

/// Feature bit in [`GshareOption::features`]: understands [`FLAG_SACK`].
pub const FEATURE_SACK: u8 = 0x01;

/// Most SACK blocks put in one segment.
pub const MAX_SACK_BLOCKS: usize = 16;

/// The only control code defined by libjingle and libnice.
pub const CTL_CONNECT: u8 = 0x00;

/// TCP-style option kinds carried after `CTL_CONNECT` (LJ068, NICE).
pub const OPT_EOL: u8 = 0;
/// No-operation padding option.
pub const OPT_NOOP: u8 = 1;
/// MSS; recognised by NICE but ignored. gshare ignores it too.
pub const OPT_MSS: u8 = 2;
/// Window scale (RFC 1323 style), length 1.
pub const OPT_WND_SCALE: u8 = 3;
/// NICE's FIN-ACK support flag. gshare never sends it (no FIN state machine).
pub const OPT_FIN_ACK: u8 = 254;
/// gshare's private option ("I am gshare"): libnice skips unknown kinds by
/// their length (`parse_options` → `apply_option` default branch, checked in
/// libnice `agent/pseudotcp.c`), LJ068 likewise, LJ04 ignores everything after
/// the control code. Kind 0x67 (`'g'`) is unassigned in the TCP registry and
/// used by neither reference implementation.
pub const OPT_GSHARE: u8 = 0x67;
/// Version of the gshare option's body.
pub const GSHARE_OPT_VERSION: u8 = 1;

/// Decoded fixed header. All fields big-endian on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Conversation number (always 0 for file share, §C.2).
    pub conv: u32,
    /// Sequence number of the first payload byte.
    pub seq: u32,
    /// Acknowledgement number: the sender's `rcv_nxt`, always present.
    pub ack: u32,
    /// Flags byte (`FLAG_*`).
    pub flags: u8,
    /// Receive window, right-shifted by the sender's window scale.
    pub wnd: u16,
    /// Sender's clock in milliseconds.
    pub tsval: u32,
    /// Echo of the most recent peer timestamp.
    pub tsecr: u32,
}

impl Header {
    /// Writes the 24 header bytes. Offset 12 (the "control" byte) is always 0.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(&self.conv.to_be_bytes());
        b[4..8].copy_from_slice(&self.seq.to_be_bytes());
        b[8..12].copy_from_slice(&self.ack.to_be_bytes());
        b[12] = 0;
        b[13] = self.flags;
        b[14..16].copy_from_slice(&self.wnd.to_be_bytes());
        b[16..20].copy_from_slice(&self.tsval.to_be_bytes());
        b[20..24].copy_from_slice(&self.tsecr.to_be_bytes());
        b
    }

    /// Splits a datagram into header and payload. `None` if it is shorter than
    /// the header or longer than [`MAX_DATAGRAM`].
    pub fn decode(datagram: &[u8]) -> Option<(Header, &[u8])> {
        if datagram.len() > MAX_DATAGRAM {
            return None;
        }
        let (h, payload) = datagram.split_first_chunk::<HEADER_SIZE>()?;
        let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        Some((
            Header {
                conv: u32_at(0),
                seq: u32_at(4),
                ack: u32_at(8),
                flags: h[13],
                wnd: u16::from_be_bytes([h[14], h[15]]),
                tsval: u32_at(16),
                tsecr: u32_at(20),
            },
            payload,
        ))
    }
}

/// Body of gshare's private CONNECT option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GshareOption {
    /// Option body version ([`GSHARE_OPT_VERSION`]).
    pub version: u8,
    /// Feature bits ([`FEATURE_SACK`]); unknown bits are ignored.
    pub features: u8,
    /// Largest datagram the sender of the option receives on this path.
    pub max_datagram: u16,
}

/// What a peer's CONNECT said after the control code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectOptions {
    /// Window scale factor, if the option was present (clamped to 14).
    pub window_scale: Option<u8>,
    /// NICE's FIN-ACK option was present (recorded, never acted upon).
    pub fin_ack: bool,
    /// The peer is gshare.
    pub gshare: Option<GshareOption>,
}

impl ConnectOptions {
    /// Parses the bytes after `CTL_CONNECT`: kind 0 ends the list, kind 1 is
    /// padding, every other kind is `kind, length, data`. Unknown kinds are
    /// skipped by length; a truncated option ends parsing (as NICE does).
    pub fn parse(mut data: &[u8]) -> ConnectOptions {
        let mut opts = ConnectOptions::default();
        while let Some((&kind, rest)) = data.split_first() {
            data = rest;
            match kind {
                OPT_EOL => break,
                OPT_NOOP => continue,
                _ => {}
            }
            let Some((&len, rest)) = data.split_first() else {
                break;
            };
            let len = usize::from(len);
            if rest.len() < len {
                break;
            }
            let (body, rest) = rest.split_at(len);
            data = rest;
            match (kind, body) {
                (OPT_WND_SCALE, &[scale]) => opts.window_scale = Some(scale.min(14)),
                (OPT_FIN_ACK, _) => opts.fin_ack = true,
                (OPT_GSHARE, &[version, features, hi, lo, ..]) if version >= 1 => {
                    opts.gshare = Some(GshareOption {
                        version,
                        features,
                        max_datagram: u16::from_be_bytes([hi, lo]),
                    })
                }
                _ => {}
            }
        }
        opts
    }
}

/// Builds a CONNECT payload: `00`, then window scale (if offered), then the
/// gshare option (if offered). Option 254 (FIN-ACK) is never sent: gshare has
/// no FIN state machine, and without it NICE keeps libjingle's close semantics.
pub fn connect_payload(window_scale: Option<u8>, gshare: Option<GshareOption>) -> Vec<u8> {
    let mut p = vec![CTL_CONNECT];
    if let Some(scale) = window_scale {
        p.extend_from_slice(&[OPT_WND_SCALE, 1, scale]);
    }
    if let Some(g) = gshare {
        let [hi, lo] = g.max_datagram.to_be_bytes();
        p.extend_from_slice(&[OPT_GSHARE, 4, g.version, g.features, hi, lo]);
    }
    p
}

/// Appends SACK blocks (wire sequence numbers) to a segment payload.
pub fn encode_sack(blocks: impl IntoIterator<Item = (u32, u32)>, out: &mut Vec<u8>) {
    for (start, end) in blocks.into_iter().take(MAX_SACK_BLOCKS) {
        out.extend_from_slice(&start.to_be_bytes());
        out.extend_from_slice(&end.to_be_bytes());
    }
}

/// Iterates the SACK blocks of a payload; a trailing partial block is ignored.
pub fn decode_sack(payload: &[u8]) -> impl Iterator<Item = (u32, u32)> + '_ {
    payload.chunks_exact(8).take(MAX_SACK_BLOCKS).map(|c| {
        (
            u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
            u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_encodes_big_endian_at_fixed_offsets() {
        let h = Header {
            conv: 0x0102_0304,
            seq: 0x0506_0708,
            ack: 0x090a_0b0c,
            flags: FLAG_CTL | FLAG_RST,
            wnd: 0xf00d,
            tsval: 0x1112_1314,
            tsecr: 0x1516_1718,
        };
        assert_eq!(
            h.encode(),
            [
                1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 6, 0xf0, 0x0d, 0x11, 0x12, 0x13, 0x14,
                0x15, 0x16, 0x17, 0x18
            ]
        );
        let mut dg = h.encode().to_vec();
        dg.extend_from_slice(b"xyz");
        let (d, payload) = Header::decode(&dg).unwrap();
        assert_eq!(d, h);
        assert_eq!(payload, b"xyz");
    }

    #[test]
    fn decodes_a_libjingle_connect_segment() {
        // conv 0, seq 0, ack 0, ctl byte 0, flags CTL, wnd 61440 (0xF000),
        // ts 1000, tsecr 0, payload 00 (LJ04 CONNECT).
        let dg = [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0xf0, 0x00, 0, 0, 0x03, 0xe8, 0, 0, 0, 0,
            0x00,
        ];
        let (h, payload) = Header::decode(&dg).unwrap();
        assert_eq!(h.conv, 0);
        assert_eq!(h.flags, FLAG_CTL);
        assert_eq!(h.wnd, 61440);
        assert_eq!(h.tsval, 1000);
        assert_eq!(payload, &[CTL_CONNECT]);
        assert_eq!(
            ConnectOptions::parse(&payload[1..]),
            ConnectOptions::default()
        );
    }

    #[test]
    fn control_byte_is_ignored_on_receipt() {
        let mut dg = Header::default().encode();
        dg[12] = 0xff;
        assert_eq!(Header::decode(&dg).unwrap().0, Header::default());
    }

    #[test]
    fn short_and_oversized_datagrams_are_rejected() {
        assert!(Header::decode(&[]).is_none());
        assert!(Header::decode(&[0u8; 23]).is_none());
        assert!(Header::decode(&[0u8; 24]).is_some());
        assert!(Header::decode(&vec![0u8; MAX_DATAGRAM]).is_some());
        assert!(Header::decode(&vec![0u8; MAX_DATAGRAM + 1]).is_none());
    }

    #[test]
    fn parses_nice_connect_options() {
        // NICE: 00 03 01 <s> FE 01 00
        let o = ConnectOptions::parse(&[3, 1, 5, 0xfe, 1, 0]);
        assert_eq!(o.window_scale, Some(5));
        assert!(o.fin_ack);
        assert_eq!(o.gshare, None);
    }

    #[test]
    fn skips_unknown_options_and_padding() {
        let o = ConnectOptions::parse(&[1, 1, 0x99, 3, 7, 7, 7, 2, 2, 5, 0xb4, 3, 1, 2]);
        assert_eq!(o.window_scale, Some(2));
        assert!(!o.fin_ack);
    }

    #[test]
    fn stops_at_end_of_list_and_on_truncation() {
        assert_eq!(ConnectOptions::parse(&[0, 3, 1, 2]).window_scale, None);
        assert_eq!(ConnectOptions::parse(&[3, 1]).window_scale, None);
        assert_eq!(ConnectOptions::parse(&[3]).window_scale, None);
        assert_eq!(ConnectOptions::parse(&[0x99, 200, 1, 2]).window_scale, None);
        // malformed window scale length is ignored, later options still parse
        let o = ConnectOptions::parse(&[3, 2, 1, 1, 0xfe, 1, 0]);
        assert_eq!(o.window_scale, None);
        assert!(o.fin_ack);
    }

    #[test]
    fn window_scale_is_clamped() {
        assert_eq!(ConnectOptions::parse(&[3, 1, 200]).window_scale, Some(14));
    }

    #[test]
    fn connect_payload_round_trips() {
        let g = GshareOption {
            version: GSHARE_OPT_VERSION,
            features: 0,
            max_datagram: 65507,
        };
        let p = connect_payload(Some(6), Some(g));
        assert_eq!(p, [0, 3, 1, 6, 0x67, 4, 1, 0, 0xff, 0xe3]);
        let o = ConnectOptions::parse(&p[1..]);
        assert_eq!(o.window_scale, Some(6));
        assert_eq!(o.gshare, Some(g));
        assert!(!o.fin_ack);
        assert_eq!(connect_payload(None, None), [0]);
        assert_eq!(connect_payload(Some(0), None), [0, 3, 1, 0]);
    }

    #[test]
    fn sack_blocks_round_trip() {
        let mut p = Vec::new();
        encode_sack([(1, 2), (0xffff_fff0, 0x10)], &mut p);
        assert_eq!(
            p,
            [
                0, 0, 0, 1, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 0x10
            ]
        );
        p.push(7); // junk tail
        let b: Vec<_> = decode_sack(&p).collect();
        assert_eq!(b, vec![(1, 2), (0xffff_fff0, 0x10)]);
    }

    #[test]
    fn gshare_option_with_longer_body_is_accepted() {
        // A future version may append bytes; the first four keep their meaning.
        let o = ConnectOptions::parse(&[0x67, 6, 2, 0, 0x05, 0x78, 9, 9]);
        assert_eq!(o.gshare.map(|g| g.max_datagram), Some(1400));
        // Too short a body: not gshare.
        assert_eq!(ConnectOptions::parse(&[0x67, 2, 1, 0]).gshare, None);
    }
}
