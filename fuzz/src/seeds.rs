//! Seed corpora, made from the repository's real fixtures and by running
//! gshare's own code (STUN encoder, HTTP client and server, PseudoTCP
//! engine headers, the folder tar the server really sends).

use std::net::SocketAddr;

use gshare::ice::stun::{ErrorCode, Message, MessageType};

use gshare::pseudotcp::segment::{FLAG_CTL, FLAG_RST, Header};

type Seeds = Vec<(String, Vec<u8>)>;

/// The seed transcript (tests/data/seed/), in order.
pub const TRANSCRIPT: [&str; 16] = [
    include_str!("../../tests/data/seed/01_s2r_initiate.xml"),
    include_str!("../../tests/data/seed/02_r2s_initiate_result.xml"),
    include_str!("../../tests/data/seed/03_r2s_transport_accept.xml"),
    include_str!("../../tests/data/seed/04_s2r_transport_accept_result.xml"),
    include_str!("../../tests/data/seed/05_r2s_accept.xml"),
    include_str!("../../tests/data/seed/06_s2r_accept_result.xml"),
    include_str!("../../tests/data/seed/07_r2s_info_channel.xml"),
    include_str!("../../tests/data/seed/08_s2r_info_channel_result.xml"),
    include_str!("../../tests/data/seed/09_s2r_sender_transport_info.xml"),
    include_str!("../../tests/data/seed/10_r2s_sender_transport_info_result.xml"),
    include_str!("../../tests/data/seed/11_r2s_receiver_transport_info.xml"),
    include_str!("../../tests/data/seed/12_s2r_receiver_transport_info_result.xml"),
    include_str!("../../tests/data/seed/13_r2s_info_complete.xml"),
    include_str!("../../tests/data/seed/14_s2r_info_complete_result.xml"),
    include_str!("../../tests/data/seed/15_r2s_terminate.xml"),
    include_str!("../../tests/data/seed/16_s2r_terminate_result.xml"),
];

/// Seeds for one target by name.
pub fn for_target(target: &str) -> Seeds {
    match target {
        "session_stanza" => session(),
        "stun" => stun(),
        "pseudotcp_segment" => pseudotcp(),
        "http_heads" => http(),
        "tar_reader" => tar(),
        other => panic!("no seeds for unknown target {other}"),
    }
}

fn session() -> Seeds {
    let mut out = Seeds::new();
    // The whole conversation, with the local users' decisions in between.
    let mut full: Vec<&str> = Vec::new();
    for (i, s) in TRANSCRIPT.iter().enumerate() {
        full.push(s);
        match i + 1 {
            4 => full.push("!accept"),
            6 => full.push("!channel"),
            8 => full.push("!cands 2"),
            12 => {
                full.push("!connected");
                full.push("!complete");
            }
            16 => full.push("!tick 10"),
            _ => {}
        }
    }
    out.push(("transcript".into(), full.join("\x0c").into_bytes()));
    // Prefixes, each stanza alone, and each session payload alone.
    for n in [1, 3, 5, 7, 9, 11, 13] {
        out.push((
            format!("prefix_{n:02}"),
            TRANSCRIPT[..n].join("\x0c").into_bytes(),
        ));
    }
    for (i, s) in TRANSCRIPT.iter().enumerate() {
        out.push((format!("stanza_{:02}", i + 1), s.as_bytes().to_vec()));
        if let Some(el) = crate::session::parse_xml(s)
            && let Some(session) = el.get_child("session", crate::session::NS_SESSION)
        {
            out.push((
                format!("payload_{:02}", i + 1),
                crate::session::to_string(session).into_bytes(),
            ));
        }
    }
    // Driver-only scripts: offers, timeouts, acks, terminate.
    let s1 = TRANSCRIPT[0];
    for (name, script) in [
        ("offer_reject", format!("{s1}\x0c!reject\x0c!ack")),
        ("offer_timeout", format!("{s1}\x0c!tick 100000")),
        (
            "accept_terminate",
            format!("{s1}\x0c!accept\x0c!ack\x0c!terminate\x0c!ack"),
        ),
        (
            "sender_ack_initiate",
            "!ack\x0c!initiate\x0c!tick 700".into(),
        ),
    ] {
        out.push((name.into(), script.into_bytes()));
    }
    out
}

fn stun() -> Seeds {
    let tid = *b"ABCDEFGHIJKLMNOP";
    let user = b"rrrrrrrrrrrrrrrrllllllllllllllll".to_vec();
    let mut msgs = Vec::new();
    let mut m = Message::new(MessageType::BindingRequest, tid);
    msgs.push(("request_bare", m.clone()));
    m.username = Some(user.clone());
    msgs.push(("request_google", m.clone()));
    let mut r = Message::new(MessageType::BindingResponse, tid);
    r.username = Some(user.clone());
    r.mapped_address = Some(SocketAddr::from(([192, 0, 2, 7], 50_000)));
    msgs.push(("response_v4", r.clone()));
    r.mapped_address = Some("[2001:db8::7]:443".parse().expect("literal address"));
    msgs.push(("response_v6", r));
    let mut e = Message::new(MessageType::BindingErrorResponse, tid);
    e.username = Some(user);
    e.error = Some(ErrorCode {
        code: 430,
        reason: "STALE CREDENTIALS".into(),
    });
    msgs.push(("error_430", e));
    let mut odd = Message::new(MessageType::BindingRequest, tid);
    odd.username = Some(b"odd-length-user".to_vec());
    odd.mapped_address = Some(SocketAddr::from(([10, 0, 0, 1], 1)));
    msgs.push(("odd_username", odd));
    let mut out: Seeds = msgs
        .into_iter()
        .map(|(n, m)| (n.to_string(), m.encode()))
        .collect();
    // An RFC 5389 server's response: padded SOFTWARE, XOR-MAPPED-ADDRESS.
    let mut body = Vec::new();
    body.extend_from_slice(&[0x80, 0x22, 0x00, 0x05]);
    body.extend_from_slice(b"turn\x00\x00\x00\x00");
    body.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01]);
    let port = 3478u16 ^ u16::from_be_bytes([tid[0], tid[1]]);
    body.extend_from_slice(&port.to_be_bytes());
    for (i, b) in [203u8, 0, 113, 9].iter().enumerate() {
        body.push(b ^ tid[i]);
    }
    let mut coturn = vec![0x01, 0x01];
    coturn.extend_from_slice(&(body.len() as u16).to_be_bytes());
    coturn.extend_from_slice(&tid);
    coturn.extend_from_slice(&body);
    out.push(("coturn_padded_xor".into(), coturn));
    out
}

fn op(out: &mut Vec<u8>, tag: u8, len: u16, data: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(data);
}

fn segment(seq: u32, ack: u32, flags: u8, wnd: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = Header {
        conv: 0,
        seq,
        ack,
        flags,
        wnd,
        tsval: 1,
        tsecr: 0,
    }
    .encode()
    .to_vec();
    d.extend_from_slice(payload);
    d
}

fn pseudotcp() -> Seeds {
    let mut out = Seeds::new();
    // Plain transfers in several configurations (no forgery).
    for (name, f0, f1) in [
        ("gshare_both", 0x03u8, 0x0fu8),
        ("compat_both", 0x00, 0x00),
        ("mixed_small_buffers", 0x21, 0x01),
        ("simultaneous_nagle", 0x83, 0x10),
        ("no_sack_no_scaling", 0x4b, 0x05),
    ] {
        let mut d = vec![f0, f1];
        op(&mut d, 2, 20_000, &[]);
        op(&mut d, 3, 3_000, &[]);
        op(&mut d, 1, 50, &[]);
        op(&mut d, 5, 8_192, &[]);
        op(&mut d, 6, 0b001, &[]); // drop towards the victim
        op(&mut d, 1, 300, &[]);
        op(&mut d, 4, 8_192, &[]);
        op(&mut d, 6, 0b010, &[]); // duplicate the other way
        op(&mut d, 1, 1_500, &[]);
        op(&mut d, 7, 0, &[]); // graceful close of a
        op(&mut d, 1, 2_000, &[]);
        out.push((name.into(), d));
    }
    // Forged segments at the victim (ISN 0, so sequence numbers are small).
    let connect = {
        let mut p = vec![0u8]; // CTL_CONNECT
        p.extend_from_slice(&[3, 1, 4]); // window scale option
        segment(0, 0, FLAG_CTL, 0xffff, &p)
    };
    for (name, forged) in [
        ("forged_rst", segment(16, 16, FLAG_RST, 0, &[])),
        ("forged_data", segment(8, 8, 0, 0xffff, b"forged payload")),
        ("forged_connect", connect),
        ("forged_ack_far", segment(100, 0x7fff_ffff, 0, 0, &[])),
        ("forged_zero_window", segment(8, 8, 0, 0, &[])),
    ] {
        for victim_b in [false, true] {
            let mut d = vec![0x03 | if victim_b { 4 } else { 0 }, 0x00];
            op(&mut d, 2, 5_000, &[]);
            op(&mut d, 0, forged.len() as u16, &forged);
            op(&mut d, 1, 100, &[]);
            op(&mut d, 8, 0, &[]); // replay the last real datagram
            op(&mut d, 3, 5_000, &[]);
            op(&mut d, 1, 1_000, &[]);
            op(&mut d, 4, 10_000, &[]);
            op(&mut d, 5, 10_000, &[]);
            out.push((format!("{name}_{}", if victim_b { "b" } else { "a" }), d));
        }
    }
    // Fuzzing the handshake itself.
    let mut d = vec![0x13, 0x00];
    op(&mut d, 0, 28, &segment(0, 0, FLAG_CTL, 1000, &[0, 1, 0, 0]));
    op(&mut d, 1, 5_000, &[]);
    out.push(("handshake".into(), d));
    out
}

fn http() -> Seeds {
    let mut out = Seeds::new();
    let sp = crate::http::SOURCE_PATH;
    // What gshare's own client sends, captured from the wire.
    let captured = crate::http::capture_client_request(&format!("{sp}a.txt"));
    out.push(("client_request".into(), captured.clone()));
    let mut pipelined = Vec::new();
    for name in ["a.txt", "empty", "sp%20ace%2Bplus%25.txt", "folder", "nope"] {
        pipelined.extend(crate::http::capture_client_request(&format!("{sp}{name}")));
    }
    out.push(("client_pipelined".into(), pipelined.clone()));
    // What gshare's own server answers (response seeds for the client).
    let (resp, _) = crate::http::serve_raw(&pipelined);
    out.push(("server_responses".into(), resp));
    let (resp, _) = crate::http::serve_raw(&captured);
    out.push(("server_response_file".into(), resp));
    // Hand-written variants: libjingle's and gabble's forms, and attacks.
    let host = "Host: romeo@montague.lit/gshare:0\r\n";
    for (name, target, version) in [
        ("plus_as_space", format!("{sp}sp+ace%2Bplus%25.txt"), "1.1"),
        ("http10", format!("{sp}a.txt"), "1.0"),
        ("query", format!("{sp}a.txt?size=32"), "1.1"),
        ("dotdot", format!("{sp}..%2Fsecret.txt"), "1.1"),
        ("dotdot_raw", format!("{sp}../catalog/secret.txt"), "1.1"),
        ("secret_name", format!("{sp}secret.txt"), "1.1"),
        ("absolute_form", format!("http://x{sp}a.txt"), "1.1"),
        ("preview", "/temporary/ffff/a.txt".to_string(), "1.1"),
    ] {
        let req = format!("GET {target} HTTP/{version}\r\n{host}Connection: Keep-Alive\r\n\r\n");
        out.push((format!("req_{name}"), req.into_bytes()));
    }
    out.push((
        "req_head_and_body".into(),
        format!("HEAD {sp}a.txt HTTP/1.1\r\n{host}\r\nPOST {sp}a.txt HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
            .into_bytes(),
    ));
    for (name, resp) in [
        (
            "resp_no_reason",
            "HTTP/1.1 200\r\nContent-Length: 5\r\n\r\nhello",
        ),
        (
            "resp_chunked",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "resp_404_keepalive",
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ),
        (
            "resp_close_delimited",
            "HTTP/1.0 200 OK\r\nConnection: close\r\n\r\nuntil the end",
        ),
        (
            "resp_short",
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
        ),
    ] {
        out.push((name.into(), resp.as_bytes().to_vec()));
    }
    out
}

fn tar_seed(seed: u8, flags: u8, expected: u32, tar: &[u8]) -> Vec<u8> {
    let mut v = vec![seed, flags];
    v.extend_from_slice(&expected.to_le_bytes());
    v.extend_from_slice(tar);
    v
}

fn tar_entry(
    b: &mut tar::Builder<Vec<u8>>,
    path: &[u8],
    kind: tar::EntryType,
    data: &[u8],
    link: Option<&str>,
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(1_700_000_000);
    if let Some(l) = link {
        h.set_link_name(l).expect("link name");
    }
    // Raw name bytes, so hostile paths are written as given.
    let name = &mut h.as_old_mut().name;
    let n = path.len().min(name.len());
    name[..n].copy_from_slice(&path[..n]);
    h.set_cksum();
    b.append(&h, data).expect("append to an in-memory tar");
}

fn tar() -> Seeds {
    use tar::EntryType as T;
    let mut out = Seeds::new();
    // The folder tar gshare's own HTTP server sends (fetched with its client).
    let real = crate::http::fetch_folder_tar();
    let real_size = crate::http::folder_content_bytes();
    out.push(("server_folder".into(), tar_seed(0, 1, real_size, &real)));
    out.push(("server_folder_no_size".into(), tar_seed(7, 0, 0, &real)));
    out.push((
        "server_folder_exists".into(),
        tar_seed(3, 0x11, real_size, &real),
    ));

    let mut b = tar::Builder::new(Vec::new());
    tar_entry(&mut b, b"folder/", T::Directory, &[], None);
    tar_entry(&mut b, b"folder/a.txt", T::Regular, b"hello\n", None);
    tar_entry(&mut b, b"folder/sub/", T::Directory, &[], None);
    tar_entry(&mut b, b"folder/sub/b.bin", T::Regular, &[7u8; 1500], None);
    let plain = b.into_inner().expect("finish tar");
    out.push(("plain".into(), tar_seed(1, 1, 1506, &plain)));

    let mut b = tar::Builder::new(Vec::new());
    let long = format!("folder/{}/deep.txt", "d".repeat(150));
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    b.append_data(&mut h, &long, &b"abc"[..])
        .expect("long name via GNU extension");
    let mut h = tar::Header::new_ustar();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_path(format!("folder/{}/x", "u".repeat(120)))
        .expect("ustar prefix");
    h.set_cksum();
    b.append(&h, &b"xy"[..]).expect("ustar entry");
    b.append_pax_extensions([("path", &b"folder/pax-name.txt"[..])])
        .expect("pax header");
    let mut h = tar::Header::new_ustar();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_path("folder/ignored-by-pax").expect("path");
    h.set_cksum();
    b.append(&h, &b"p"[..]).expect("pax entry");
    let ext = b.into_inner().expect("finish tar");
    out.push(("extensions".into(), tar_seed(2, 1, 6, &ext)));

    let mut b = tar::Builder::new(Vec::new());
    tar_entry(&mut b, b"folder/", T::Directory, &[], None);
    tar_entry(&mut b, b"folder/link", T::Symlink, &[], Some("/etc/passwd"));
    tar_entry(
        &mut b,
        b"folder/link/x",
        T::Regular,
        b"through the link",
        None,
    );
    tar_entry(
        &mut b,
        b"folder/hard",
        T::Link,
        &[],
        Some("../../outside.txt"),
    );
    tar_entry(&mut b, b"folder/../escape.txt", T::Regular, b"escape", None);
    tar_entry(&mut b, b"/tmp/absolute.txt", T::Regular, b"abs", None);
    tar_entry(&mut b, b"folder/dev", T::Char, &[], None);
    tar_entry(&mut b, b"folder/fifo", T::Fifo, &[], None);
    tar_entry(&mut b, b"folder/a.txt", T::Regular, b"one", None);
    tar_entry(&mut b, b"folder/a.txt", T::Regular, b"two!", None);
    tar_entry(&mut b, b"folder/a.txt/", T::Directory, &[], None);
    let hostile = b.into_inner().expect("finish tar");
    for flags in [0u8, 1, 4, 8, 0x10] {
        out.push((
            format!("hostile_{flags:02x}"),
            tar_seed(flags, flags, 7, &hostile),
        ));
    }
    // libjingle joins prefix and name without '/': a raw ustar header.
    let mut h = tar::Header::new_ustar();
    h.set_size(4);
    h.set_mode(0o644);
    h.as_ustar_mut().expect("ustar").prefix[..6].copy_from_slice(b"folder");
    h.as_ustar_mut().expect("ustar").name[..6].copy_from_slice(b"/x.txt");
    h.set_cksum();
    let mut lj = h.as_bytes().to_vec();
    lj.extend_from_slice(b"data");
    lj.resize(512 * 2, 0);
    lj.extend_from_slice(&[0u8; 1024]);
    out.push(("libjingle_prefix".into(), tar_seed(5, 1, 4, &lj)));
    // Truncated and padded variants of the real stream.
    out.push((
        "truncated".into(),
        tar_seed(9, 0, 0, &real[..real.len() / 2]),
    ));
    let mut padded = real.clone();
    padded.extend_from_slice(&[0u8; 10240]);
    out.push(("record_padding".into(), tar_seed(11, 1, real_size, &padded)));
    out
}
