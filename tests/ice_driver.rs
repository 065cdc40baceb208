//! The tokio driver on real loopback sockets: two gshare channels connect
//! and move datagrams both ways.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use gshare::ice::{CandidateType, GatherConfig, IceChannel};

fn loopback(name: &str) -> GatherConfig {
    GatherConfig {
        name: name.to_owned(),
        bind: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        stun: Vec::new(),
    }
}

#[tokio::test]
async fn two_channels_connect_on_loopback() {
    let mut a = IceChannel::gather(loopback("private-1")).await.unwrap();
    let mut b = IceChannel::gather(loopback("private-1")).await.unwrap();
    let ca = a.local_candidates();
    let cb = b.local_candidates();
    assert_eq!(ca.len(), 1);
    assert_eq!(ca[0].kind, CandidateType::Local);
    assert!(ca[0].address.ip().is_loopback());
    assert_ne!(ca[0].username, cb[0].username);
    // B learns A's candidates from another task, through the sink.
    let sink = b.remote_candidates_sink();
    tokio::spawn(async move {
        for c in ca {
            sink.send(c).unwrap();
        }
    });
    for c in cb {
        a.add_remote_candidate(c);
    }
    // Each channel must be polled all the time (as PseudoTCP will): B runs
    // in its own task, connects, then echoes three datagrams.
    let task = tokio::spawn(async move {
        b.connected(Duration::from_secs(5)).await.unwrap();
        let selected = b.selected().unwrap();
        let mut buf = vec![0u8; 65536];
        let mut got = Vec::new();
        for _ in 0..3 {
            let n = b.recv(&mut buf).await.unwrap();
            got.push(buf[..n].to_vec());
            b.send(&buf[..n]).await.unwrap();
        }
        (selected, got)
    });
    a.connected(Duration::from_secs(5)).await.unwrap();
    assert_eq!(a.max_datagram_size(), 65507);
    let big = vec![0u8; 60_000];
    let msgs = [b"\0\0hello".to_vec(), big.clone(), b"\0\0bye".to_vec()];
    let mut buf = vec![0u8; 65536];
    for m in &msgs {
        a.send(m).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), a.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], &m[..]);
    }
    let ((lb, rb), got) = task.await.unwrap();
    assert_eq!(got, msgs.to_vec());
    let (la, ra) = a.selected().unwrap();
    assert_eq!((la, ra), (rb, lb));
}

#[tokio::test]
async fn interfaces_are_enumerated() {
    let addrs = gshare::ice::driver::interface_addresses().unwrap();
    assert!(addrs.iter().all(|a| !a.is_loopback()));
    let chan = IceChannel::gather(GatherConfig::new("private-2"))
        .await
        .unwrap();
    let cands = chan.local_candidates();
    assert!(!cands.is_empty());
    if !addrs.is_empty() {
        assert_eq!(cands.len(), addrs.len());
    }
    assert!(
        cands
            .iter()
            .all(|c| c.username.len() == 16 && c.name == "private-2")
    );
}

#[tokio::test]
async fn server_reflexive_candidate_from_a_stun_server() {
    use gshare::ice::stun::{Message, MessageType};
    // A coturn-like server: answers RFC 3489 requests with MAPPED-ADDRESS
    // (a pretend NAT mapping) and an unknown SOFTWARE attribute.
    let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let mapped: std::net::SocketAddr = "203.0.113.5:7777".parse().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            let req = Message::parse(&buf[..n]).unwrap();
            assert_eq!(req.kind, MessageType::BindingRequest);
            assert_eq!(n, 20, "a server request carries no attributes");
            let mut resp = Message::new(MessageType::BindingResponse, req.transaction_id);
            resp.mapped_address = Some(mapped);
            let mut bytes = resp.encode();
            bytes.extend_from_slice(&[0x80, 0x22, 0x00, 0x06]);
            bytes.extend_from_slice(b"coturn\0\0");
            let len = (bytes.len() - 20) as u16;
            bytes[2..4].copy_from_slice(&len.to_be_bytes());
            server.send_to(&bytes, from).await.unwrap();
        }
    });
    let mut cfg = loopback("private-3");
    cfg.stun = vec![server_addr];
    let chan = IceChannel::gather(cfg).await.unwrap();
    let cands = chan.local_candidates();
    assert_eq!(cands.len(), 2, "{cands:?}");
    assert_eq!(cands[1].kind, CandidateType::Stun);
    assert_eq!(cands[1].address, mapped);
    assert_eq!(cands[1].preference, 0.9);
    assert_eq!(cands[1].name, "private-3");
    assert_ne!(cands[1].username, cands[0].username);
}

#[tokio::test]
async fn silent_stun_server_does_not_block_gathering_forever() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut cfg = loopback("private-4");
    cfg.stun = vec![silent.local_addr().unwrap()];
    let t = std::time::Instant::now();
    let chan = IceChannel::gather(cfg).await.unwrap();
    let took = t.elapsed();
    assert_eq!(chan.local_candidates().len(), 1);
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn channel_fits_the_pseudotcp_datagram_io_bounds() {
    // PseudoTCP's DatagramIo requires Send + Unpin + 'static.
    fn bounds<T: Send + Unpin + 'static>() {}
    bounds::<IceChannel>();
}

async fn connect_pair(ip: IpAddr) -> (IceChannel, tokio::task::JoinHandle<IceChannel>) {
    let cfg = GatherConfig {
        name: "private-5".into(),
        bind: Some(ip),
        stun: Vec::new(),
    };
    let mut a = IceChannel::gather(cfg.clone()).await.unwrap();
    let mut b = IceChannel::gather(cfg).await.unwrap();
    for c in b.local_candidates() {
        a.add_remote_candidate(c);
    }
    for c in a.local_candidates() {
        b.add_remote_candidate(c);
    }
    let task = tokio::spawn(async move {
        b.connected(Duration::from_secs(5)).await.unwrap();
        let mut buf = vec![0u8; 65536];
        let n = b.recv(&mut buf).await.unwrap();
        b.send(&buf[..n]).await.unwrap();
        b
    });
    a.connected(Duration::from_secs(5)).await.unwrap();
    a.send(b"\0\0ping").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), a.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"\0\0ping");
    (a, task)
}

#[tokio::test]
async fn ipv6_loopback_works() {
    let (a, b) = connect_pair("::1".parse().unwrap()).await;
    let (local, remote) = a.selected().unwrap();
    assert!(local.is_ipv6() && remote.is_ipv6());
    assert!(a.max_datagram_size() > 60_000);
    b.await.unwrap();
}

#[tokio::test]
async fn own_interface_address_routes_via_loopback_mtu() {
    // Two channels on this host's own (non-loopback) address: the route goes
    // through `lo`, so IP_MTU gives the 64 KiB loopback MTU.
    let ip = gshare::ice::driver::interface_addresses()
        .unwrap()
        .into_iter()
        .find(|a| a.is_ipv4())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (a, b) = connect_pair(ip).await;
    assert_eq!(a.max_datagram_size(), 65507);
    b.await.unwrap();
}
