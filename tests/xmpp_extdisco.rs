//! XEP-0215 external service discovery against the tests' own Prosody with
//! `mod_turn_external`, and the TURN credentials it hands out used for a
//! real allocation at a coturn sharing the secret.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/coturn.rs"]
mod coturn;
#[path = "support/prosody.rs"]
mod prosody;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use coturn::{Auth, Coturn};
use gshare::turn::{TurnClient, TurnConfig, TurnEvent};
use gshare::xmpp::extdisco::{self, ServiceKind};
use gshare::xmpp::{Account, ConnectOptions, Xmpp};
use prosody::{Options, Prosody};

fn account(p: &Prosody, user: &str, pw: &str) -> Account {
    Account {
        jid: Prosody::jid(user).parse().unwrap(),
        password: pw.into(),
        resource: None,
        server: Some(p.server()),
        ca_file: Some(p.cert()),
    }
}

/// Allocates with a blocking loop; returns the relayed address or the event
/// that ended the attempt.
fn allocate(server: SocketAddr, user: &str, pass: &str) -> Result<SocketAddr, TurnEvent> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut config = TurnConfig::new(server, user, pass);
    config.rto = Duration::from_millis(100);
    config.max_transmissions = 4;
    let mut c = TurnClient::new(config, Instant::now());
    let mut buf = [0u8; 2048];
    loop {
        while let Some(t) = c.poll_transmit() {
            sock.send_to(&t.contents, t.destination).unwrap();
        }
        if let Some(e) = c.poll_event() {
            return match e {
                TurnEvent::Allocated { relayed, .. } => Ok(relayed),
                other => Err(other),
            };
        }
        let wait = c
            .poll_timeout()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait)).unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == server => {
                c.handle_datagram(&buf[..n], Instant::now());
            }
            Ok(_) => {}
            Err(_) => c.handle_timeout(Instant::now()),
        }
    }
}

#[tokio::test]
async fn prosody_turn_external_credentials_allocate_at_coturn() {
    let secret = "shared-s3cret";
    let turn = Coturn::start(Auth::Secret(secret), &[]);
    let p = Prosody::start_with(
        &[("romeo", "r0meo")],
        Options {
            turn_external: Some(("127.0.0.1".into(), turn.addr.port(), secret.into())),
            ..Options::default()
        },
    );
    let (xmpp, _rx) = Xmpp::connect(&account(&p, "romeo", "r0meo"), ConnectOptions::default())
        .await
        .expect("login");
    let services = extdisco::discover(&xmpp, "localhost".parse().unwrap(), Duration::from_secs(5))
        .await
        .expect("discovery");
    xmpp.close().await;

    let stun = services
        .iter()
        .find(|s| s.kind == ServiceKind::Stun)
        .unwrap_or_else(|| panic!("no stun entry: {services:?}"));
    assert_eq!(stun.host_port(), turn.addr.to_string());
    assert!(stun.is_udp());
    let t = services
        .iter()
        .find(|s| s.kind == ServiceKind::Turn)
        .unwrap_or_else(|| panic!("no turn entry: {services:?}"));
    assert_eq!(t.host_port(), turn.addr.to_string());
    assert!(t.restricted && t.is_udp());
    let user = t.username.clone().unwrap();
    let pass = t.password.clone().unwrap();
    // TURN REST: the user name is the expiry in Unix time (a day ahead by
    // default), and `expires` says the same.
    let expiry: u64 = user.split(':').next().unwrap().parse().unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(expiry > now + 3600, "{expiry} vs {now}");
    let expires = t
        .expires
        .unwrap()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    assert_eq!(expires.as_secs(), expiry);

    let server: SocketAddr = t.host_port().parse().unwrap();
    let relayed = allocate(server, &user, &pass).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(relayed.ip(), turn.addr.ip());
    // A tampered password is refused.
    let err = allocate(server, &user, "AAAA").unwrap_err();
    assert!(
        matches!(&err, TurnEvent::Failed(e) if e.to_string().contains("rejected the credentials")),
        "{err:?}"
    );
}

#[tokio::test]
async fn server_without_external_services_yields_an_empty_list() {
    let p = Prosody::start(&[("romeo", "r0meo")]);
    let (xmpp, _rx) = Xmpp::connect(&account(&p, "romeo", "r0meo"), ConnectOptions::default())
        .await
        .expect("login");
    let started = Instant::now();
    let services = extdisco::discover(&xmpp, "localhost".parse().unwrap(), Duration::from_secs(5))
        .await
        .expect("an error answer is not a failure");
    assert!(services.is_empty(), "{services:?}");
    // Both versions were answered with errors, not timeouts.
    assert!(started.elapsed() < Duration::from_secs(4));
    xmpp.close().await;
}
