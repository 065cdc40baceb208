//! STARTTLS connector with our own certificate policy.
//!
//! tokio-xmpp's stock connector builds its own rustls configuration with no
//! hook for extra trust anchors, and rustls rejects the self-signed
//! (`CA:TRUE`) certificates that `openssl req -x509` and most private servers
//! use (docs/crates.md §1.2–1.3). This connector trusts the system roots plus the
//! certificates of `--ca-file`, and additionally accepts a server certificate
//! that is byte-identical to one in that file (pinning). STARTTLS is required:
//! a server that does not offer it is refused, never spoken to in plaintext.

use std::borrow::Cow;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_xmpp::connect::{DnsConfig, ServerConnector};
use tokio_xmpp::parsers::jid::Jid;
use tokio_xmpp::parsers::starttls;
use tokio_xmpp::xmlstream::{
    PendingFeaturesRecv, StreamHeader, Timeouts, XmppStreamElement, initiate_stream,
};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::XmppError;

/// Where to connect and whom to trust.
#[derive(Clone)]
pub struct StartTlsConnector {
    dns: DnsConfig,
    tls: Arc<rustls::ClientConfig>,
    /// The last transport-level failure, for the error message (tokio-xmpp's
    /// own error loses the TLS detail).
    pub(crate) last_error: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for StartTlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartTlsConnector")
            .field("dns", &self.dns)
            .finish()
    }
}

impl StartTlsConnector {
    /// `server`: `HOST:PORT` to connect to instead of the SRV lookup of the
    /// JID's domain. `ca_file`: extra PEM certificates to trust.
    pub fn new(
        domain: &str,
        server: Option<&str>,
        ca_file: Option<&Path>,
    ) -> Result<Self, XmppError> {
        let dns = match server {
            None => DnsConfig::srv_default_client(domain),
            Some(s) => {
                if s.parse::<std::net::SocketAddr>().is_ok() {
                    DnsConfig::addr(s)
                } else {
                    let (host, port) = s.rsplit_once(':').ok_or_else(|| {
                        XmppError::Config(format!("--server {s:?}: expected HOST:PORT"))
                    })?;
                    let port: u16 = port.parse().map_err(|_| {
                        XmppError::Config(format!("--server {s:?}: {port:?} is not a port number"))
                    })?;
                    DnsConfig::no_srv(host.trim_start_matches('[').trim_end_matches(']'), port)
                }
            }
        };
        Ok(Self {
            dns,
            tls: Arc::new(tls_config(ca_file)?),
            last_error: Arc::new(Mutex::new(None)),
        })
    }

    fn record(&self, e: &dyn std::fmt::Display) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(e.to_string());
        }
    }

    async fn connect_inner(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<PendingFeaturesRecv<BufStream<TlsStream<TcpStream>>>, tokio_xmpp::Error> {
        let header = || StreamHeader {
            to: Some(Cow::Owned(jid.domain().to_string())),
            from: None,
            id: None,
        };
        let tcp = self.dns.resolve().await?;
        let (features, mut stream) = initiate_stream(BufStream::new(tcp), ns, header(), timeouts)
            .await?
            .recv_features::<tokio_xmpp::xmlstream::FallibleStreamElement>()
            .await?;
        if !features.can_starttls() {
            return Err(tokio_xmpp::error::ProtocolError::NoTls.into());
        }
        stream
            .send(&XmppStreamElement::Starttls(starttls::Nonza::Request(
                starttls::Request,
            )))
            .await?;
        loop {
            match stream.next().await {
                Some(Ok(el)) => match el.into_read_error() {
                    Ok(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_))) => break,
                    Ok(_) => continue,
                    Err(e) => {
                        return Err(io::Error::other(format!(
                            "the server's answer to STARTTLS could not be read: {e}"
                        ))
                        .into());
                    }
                },
                Some(Err(e)) => {
                    return Err(io::Error::other(format!(
                        "the connection failed during STARTTLS: {e}"
                    ))
                    .into());
                }
                None => return Err(tokio_xmpp::Error::Disconnected),
            }
        }
        let name = ServerName::try_from(jid.domain().to_string()).map_err(io::Error::other)?;
        let tls = TlsConnector::from(self.tls.clone())
            .connect(name, stream.into_inner().into_inner())
            .await?;
        Ok(initiate_stream(BufStream::new(tls), ns, header(), timeouts).await?)
    }
}

impl ServerConnector for StartTlsConnector {
    type Stream = BufStream<TlsStream<TcpStream>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<
        (
            PendingFeaturesRecv<Self::Stream>,
            sasl::common::ChannelBinding,
        ),
        tokio_xmpp::Error,
    > {
        match self.connect_inner(jid, ns, timeouts).await {
            Ok(s) => Ok((s, sasl::common::ChannelBinding::None)),
            Err(e) => {
                self.record(&e);
                Err(e)
            }
        }
    }
}

/// The trust every TLS connection of gshare uses (the XMPP stream and the
/// HTTPS of the upload method): system roots, `--ca-file`, pinning.
pub(crate) fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, XmppError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A broken system certificate is not our user's problem; skip it.
        let _ = roots.add(cert);
    }
    let mut pinned = Vec::new();
    if let Some(path) = ca_file {
        let iter = CertificateDer::pem_file_iter(path)
            .map_err(|e| XmppError::Config(format!("--ca-file {}: {e}", path.display())))?;
        for cert in iter {
            let cert =
                cert.map_err(|e| XmppError::Config(format!("--ca-file {}: {e}", path.display())))?;
            let _ = roots.add(cert.clone());
            pinned.push(cert);
        }
        if pinned.is_empty() {
            return Err(XmppError::Config(format!(
                "--ca-file {}: no PEM certificate in it",
                path.display()
            )));
        }
    }
    let webpki = if roots.is_empty() {
        None
    } else {
        Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| XmppError::Config(format!("certificate roots: {e}")))?,
        )
    };
    let verifier = Arc::new(Verifier {
        webpki,
        pinned,
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| XmppError::Config(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}

/// WebPKI verification, plus acceptance of a server certificate the user
/// named byte for byte in `--ca-file` (self-signed server certificates are
/// `CA:TRUE`, which WebPKI refuses as an end entity).
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = match &self.webpki {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        };
        match result {
            Ok(ok) => Ok(ok),
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
