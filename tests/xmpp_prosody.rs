//! The XMPP layer against a real Prosody: login, TLS trust, exit codes,
//! presence with the share caps and resolving a bare JID.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/prosody.rs"]
mod prosody;

use std::process::Stdio;
use std::time::{Duration, Instant};

use gshare::xmpp::{Account, ConnectOptions, Xmpp, XmppError};
use prosody::Prosody;

fn account(p: &Prosody, user: &str, pw: &str, resource: Option<&str>) -> Account {
    Account {
        jid: Prosody::jid(user).parse().unwrap(),
        password: pw.into(),
        resource: resource.map(String::from),
        server: Some(p.server()),
        ca_file: Some(p.cert()),
    }
}

#[tokio::test]
async fn login_binds_a_full_jid() {
    let p = Prosody::start(&[("romeo", "r0meo")]);
    let (xmpp, _rx) = Xmpp::connect(
        &account(&p, "romeo", "r0meo", Some("balcony")),
        ConnectOptions::default(),
    )
    .await
    .expect("login");
    assert_eq!(xmpp.jid().to_string(), "romeo@localhost/balcony");
    xmpp.close().await;
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_not_a_retry() {
    let p = Prosody::start(&[("romeo", "r0meo")]);
    let started = Instant::now();
    let err = Xmpp::connect(
        &account(&p, "romeo", "wrong", None),
        ConnectOptions::default(),
    )
    .await
    .err()
    .expect("must fail");
    assert!(matches!(err, XmppError::Auth { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn untrusted_certificate_is_refused_without_ca_file() {
    let p = Prosody::start(&[("romeo", "r0meo")]);
    let mut acc = account(&p, "romeo", "r0meo", None);
    acc.ca_file = None;
    let err = Xmpp::connect(&acc, ConnectOptions::default())
        .await
        .err()
        .expect("must fail");
    let text = err.to_string();
    assert!(matches!(err, XmppError::Connect { .. }), "{err:?}");
    assert!(text.contains("certificate"), "{text}");
    assert!(text.contains("--ca-file"), "{text}");
}

#[tokio::test]
async fn bare_jid_resolves_to_the_resource_that_can_receive_files() {
    let p = Prosody::start(&[("romeo", "r0meo"), ("juliet", "jul1et")]);
    // A chat client with a higher priority that cannot receive files ...
    let (chat, _c) = Xmpp::connect(
        &account(&p, "juliet", "jul1et", Some("chat")),
        ConnectOptions {
            share: false,
            priority: 50,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // ... and a file-capable one with a lower priority.
    let (files, _f) = Xmpp::connect(
        &account(&p, "juliet", "jul1et", Some("files")),
        ConnectOptions {
            share: true,
            priority: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (romeo, _r) = Xmpp::connect(
        &account(&p, "romeo", "r0meo", None),
        ConnectOptions::default(),
    )
    .await
    .unwrap();
    let juliet = "juliet@localhost".parse().unwrap();
    romeo.announce_to(&juliet).await.unwrap();
    let got = romeo
        .resolve_share_resource(&juliet, Duration::from_secs(10))
        .await
        .expect("resolved");
    assert_eq!(got.to_string(), "juliet@localhost/files");
    // Both resources answered our directed presence (the chat one too):
    // the choice was made on the caps, not on who answered.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !romeo.is_available(&"juliet@localhost/chat".parse().unwrap()) {
        assert!(
            Instant::now() < deadline,
            "the chat resource never answered presence"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    chat.close().await;
    files.close().await;
}

#[tokio::test]
async fn disco_info_answers_the_share_node() {
    let p = Prosody::start(&[("romeo", "r0meo"), ("juliet", "jul1et")]);
    let (juliet, _j) = Xmpp::connect(
        &account(&p, "juliet", "jul1et", Some("files")),
        ConnectOptions::default(),
    )
    .await
    .unwrap();
    let (romeo, _r) = Xmpp::connect(
        &account(&p, "romeo", "r0meo", None),
        ConnectOptions::default(),
    )
    .await
    .unwrap();
    let q = minidom::Element::builder("query", "http://jabber.org/protocol/disco#info")
        .attr(
            minidom::rxml::xml_ncname!("node").into(),
            "http://www.google.com/xmpp/client/caps#share-v1",
        )
        .build();
    let answer = romeo
        .iq(
            Some(juliet.jid().clone().into()),
            gshare::xmpp::IqRequest::Get(q),
            Duration::from_secs(5),
        )
        .await
        .expect("disco answer")
        .expect("payload");
    assert!(
        answer
            .children()
            .any(|f| f.attr("var") == Some("http://google.com/xmpp/protocol/share/v1"))
    );
    // An IQ nobody handles is answered service-unavailable, not dropped.
    let unknown = minidom::Element::builder("query", "jabber:iq:version").build();
    let err = romeo
        .iq(
            Some(juliet.jid().clone().into()),
            gshare::xmpp::IqRequest::Get(unknown),
            Duration::from_secs(5),
        )
        .await
        .expect_err("must be an error");
    assert!(err.to_string().contains("service-unavailable"), "{err}");
}

// ---- the binary: exit codes users and scripts rely on ----

#[test]
fn cli_wrong_password_exits_3() {
    let p = Prosody::start(&[("romeo", "r0meo")]);
    let out = p
        .gshare("romeo", "nope")
        .args(["send", "/etc/hostname", "juliet@localhost", "--wait", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("romeo@localhost"), "{stderr}");
    assert!(!stderr.contains("nope"), "the password leaked: {stderr}");
}

#[test]
fn cli_offline_target_exits_4_naming_the_jid() {
    let p = Prosody::start(&[("romeo", "r0meo"), ("juliet", "jul1et")]);
    let started = Instant::now();
    let out = p
        .gshare("romeo", "r0meo")
        .args(["send", "/etc/hostname", "juliet@localhost", "--wait", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("juliet@localhost"), "{stderr}");
    assert!(started.elapsed() >= Duration::from_secs(2), "did not wait");
}

#[test]
fn cli_untrusted_certificate_exits_1_and_says_why() {
    let p = Prosody::start(&[("romeo", "r0meo")]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gshare"))
        .env("GSHARE_PASSWORD", "r0meo")
        .env_remove("GSHARE_CA_FILE")
        .env("XDG_CONFIG_HOME", p.dir().join("none"))
        .args([
            "send",
            "/etc/hostname",
            "juliet@localhost",
            "--jid",
            "romeo@localhost",
            "--server",
        ])
        .arg(p.server())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
}

#[test]
fn cli_account_options_from_config_file_and_flags_after_subcommand() {
    let p = Prosody::start(&[("romeo", "r0meo")]);
    let cfg_dir = p.dir().join("xdg");
    std::fs::create_dir_all(cfg_dir.join("gshare")).unwrap();
    std::fs::write(
        cfg_dir.join("gshare/config.toml"),
        format!(
            "jid = \"romeo@localhost\"\nserver = \"{}\"\nca-file = \"{}\"\n",
            p.server(),
            p.cert().display()
        ),
    )
    .unwrap();
    let pwfile = p.dir().join("pw");
    std::fs::write(&pwfile, "r0meo\n").unwrap();
    // No --jid/--server/--ca-file: they come from the file; the password
    // file flag comes after the subcommand name.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gshare"))
        .env_remove("GSHARE_PASSWORD")
        .env_remove("GSHARE_CA_FILE")
        .env("XDG_CONFIG_HOME", &cfg_dir)
        .args([
            "send",
            "/etc/hostname",
            "juliet@localhost",
            "--wait",
            "1",
            "--password-file",
        ])
        .arg(&pwfile)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Logged in (else 3 or 1), then the offline target: 4.
    assert_eq!(out.status.code(), Some(4), "{stderr}");
}

#[test]
fn cli_usage_errors_exit_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gshare"))
        .args(["send", "only-one-arg"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gshare"))
        .env("GSHARE_PASSWORD", "x")
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .args(["send", "a", "not a jid", "--jid", "romeo@localhost"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cli_completions_print_a_script() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gshare"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--auto-accept"));
}
