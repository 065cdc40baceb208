//! The secure channel between two gshare peers: TLS 1.3 (rustls, ring
//! provider) over any `AsyncRead + AsyncWrite` stream, each side pinned to
//! the certificate fingerprint the other sent over XMPP.
//!
//! Roles follow HTTP: the sender runs the HTTP server, so it is the TLS
//! server ([`accept`]); the receiver is the TLS client ([`connect`]). Both
//! present a certificate (mutual authentication) and each side's verifier
//! accepts exactly one certificate: the one whose SHA-256 over the DER
//! equals the fingerprint received in the peer's `<secure>` extension
//! (`crate::session::Extension`), the way XEP-0320 binds DTLS-SRTP to
//! Jingle. No CA, no name, no validity period is involved: the XMPP path
//! (TLS to the server) is what vouches for the fingerprint. The handshake
//! signatures are still checked, with the provider's algorithms, so only
//! the holder of the pinned certificate's private key completes it.
//!
//! **Keys are per session.** [`Identity::generate`] makes a fresh ECDSA
//! P-256 key and self-signed certificate (rcgen, ring backend) for every
//! transfer. Nothing is stored, so there is no key file to protect with
//! 0600 permissions or to leak through a backup; two transfers cannot be
//! linked by their fingerprints; and a long-term key would buy nothing here,
//! because trust comes from the XMPP stanza each time, not from a key seen
//! before. Generation costs well under a millisecond.
//!
//! Settings that matter: TLS 1.3 only; no session tickets, no resumption
//! and no 0-RTT data (nothing replayable); SNI is not sent.
//!
//! For the job layer: [`Protection`] says how a channel is protected
//! (plaintext for classic peers, TLS with a role and a pinned fingerprint
//! between gshare peers) and [`establish`] turns the PseudoTCP stream into a
//! [`Stream`] before HTTP runs over it, so the sender's server cannot serve
//! a byte before the handshake has completed.
//!
//! [`short_code`] derives a code from both fingerprints that two people can
//! read to each other to detect an XMPP server that rewrote both.
//!
//! Hand-written parts: only the two pinning verifiers (rustls has no
//! built-in "accept this one fingerprint" verifier; webpki's need a CA).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName,
    ServerConfig, SignatureScheme,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

pub use tokio_rustls::client::TlsStream as ClientTlsStream;
pub use tokio_rustls::server::TlsStream as ServerTlsStream;

/// The name in our certificates. Never checked (the fingerprint is what is
/// pinned); it only has to be a valid DNS name for rcgen and rustls.
const CERT_NAME: &str = "gshare.invalid";

/// Domain separation for [`short_code`].
const SHORT_CODE_LABEL: &[u8] = b"gshare short authentication code v1";

/// Why the secure channel could not be set up. Each `Display` is one
/// sentence for people.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    /// rcgen could not make our key or certificate.
    #[error("could not create a TLS certificate for this transfer: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused our configuration (a bug rather than a peer problem).
    #[error("could not set up TLS: {0}")]
    Config(rustls::Error),
    /// The peer's certificate is not the one its XMPP stanza announced.
    #[error(
        "the peer's TLS certificate does not match the fingerprint it sent over XMPP; \
         the connection may be intercepted, so the transfer was stopped"
    )]
    FingerprintMismatch,
    /// The peer refused our certificate (it saw a different fingerprint).
    #[error(
        "the peer refused this side's TLS certificate (it received a different fingerprint \
         over XMPP); the connection may be intercepted, so the transfer was stopped"
    )]
    RefusedByPeer,
    /// Any other handshake failure (transport error, protocol error).
    #[error("the encrypted connection to the peer could not be set up: {0}")]
    Handshake(io::Error),
    /// A TLS record failed authentication: the data was altered on the way.
    #[error(
        "data from the peer failed its TLS authentication check: it was altered on the way, \
         so the transfer was stopped"
    )]
    Tampered,
    /// The handshake did not finish in time.
    #[error("the encrypted connection to the peer could not be set up in {0} s")]
    Timeout(u64),
}

impl SecureError {
    /// Sorts an I/O error from a TLS stream (during or right after the
    /// handshake) into the variants above. In TLS 1.3 the client finishes
    /// before the server has checked the client certificate, so the
    /// receiver learns of a refusal on its first read: pass that error here.
    pub fn from_io(e: io::Error) -> SecureError {
        match SecureError::refusal_in(&e) {
            Some(verdict) => verdict,
            None => SecureError::Handshake(e),
        }
    }
}

impl SecureError {
    /// Looks through an error's `source()` chain (hyper and io wrap it) for
    /// a TLS verdict worth a sentence of its own: our verifier's fingerprint
    /// mismatch, the peer's alert saying it refused our certificate (the
    /// receiver learns of it only when its first HTTP request fails), or a
    /// record that failed authentication (altered on the path).
    pub fn refusal_in(err: &(dyn std::error::Error + 'static)) -> Option<SecureError> {
        let mut next = Some(err);
        while let Some(e) = next {
            let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
                e.downcast_ref::<io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            });
            match tls {
                Some(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                )) => return Some(SecureError::FingerprintMismatch),
                Some(rustls::Error::AlertReceived(
                    AlertDescription::AccessDenied
                    | AlertDescription::BadCertificate
                    | AlertDescription::CertificateUnknown,
                )) => return Some(SecureError::RefusedByPeer),
                Some(rustls::Error::DecryptError) => return Some(SecureError::Tampered),
                Some(rustls::Error::AlertReceived(AlertDescription::BadRecordMac)) => {
                    return Some(SecureError::Tampered);
                }
                _ => {}
            }
            next = e.source();
        }
        None
    }
}

/// SHA-256 over a certificate's DER: what goes into `<fingerprint>`.
pub fn fingerprint(cert_der: &[u8]) -> [u8; 32] {
    Sha256::digest(cert_der).into()
}

/// A code both people can read aloud: 12 decimal digits in three groups
/// (`1234-5678-9012`, about 40 bits) taken from SHA-256 over a fixed label,
/// the sender's fingerprint and the receiver's, in that order. Both sides
/// compute it from what they sent and what they received; the codes differ
/// when anyone replaced a fingerprint on the way. 40 bits keep a
/// man-in-the-middle who grinds certificates during the 50 s accept window
/// far from a match.
pub fn short_code(sender: &[u8; 32], receiver: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(SHORT_CODE_LABEL);
    h.update(sender);
    h.update(receiver);
    let d = h.finalize();
    let mut n = 0u64;
    for b in d.iter().take(8) {
        n = (n << 8) | u64::from(*b);
    }
    let n = n % 1_000_000_000_000;
    format!(
        "{:04}-{:04}-{:04}",
        n / 100_000_000,
        (n / 10_000) % 10_000,
        n % 10_000
    )
}

/// This side's key and certificate for one session.
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Identity")
            .field("fingerprint", &hex::encode(self.fingerprint))
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh ECDSA P-256 key pair and self-signed certificate (see the
    /// module docs for why per session).
    pub fn generate() -> Result<Identity, SecureError> {
        let ck = rcgen::generate_simple_self_signed(vec![CERT_NAME.to_owned()])?;
        let cert = ck.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
        Ok(Identity {
            fingerprint: fingerprint(&cert),
            cert,
            key,
        })
    }

    /// SHA-256 of our certificate, for our `<secure>` extension.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    fn chain_and_key(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![self.cert.clone()],
            PrivateKeyDer::Pkcs8(self.key.clone_key()),
        )
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts exactly the certificate whose SHA-256 is `pinned`; checks the
/// handshake signature with the provider's algorithms. Used on both sides.
#[derive(Debug)]
struct Pinned {
    pinned: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl Pinned {
    fn new(pinned: [u8; 32], provider: &CryptoProvider) -> Arc<Pinned> {
        Arc::new(Pinned {
            pinned,
            algorithms: provider.signature_verification_algorithms,
        })
    }

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if fingerprint(end_entity) == self.pinned {
            Ok(())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    /// TLS 1.2 is never negotiated (both configs are 1.3 only); refuse.
    fn tls12(&self) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "TLS 1.2 is not used between gshare peers".to_owned(),
        ))
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for Pinned {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The sender's TLS configuration: our certificate, the receiver's pinned.
pub fn server_config(identity: &Identity, peer: [u8; 32]) -> Result<ServerConfig, SecureError> {
    let provider = provider();
    let verifier = Pinned::new(peer, &provider);
    let (chain, key) = identity.chain_and_key();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(SecureError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(SecureError::Config)?;
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(config)
}

/// The receiver's TLS configuration: our certificate, the sender's pinned.
pub fn client_config(identity: &Identity, peer: [u8; 32]) -> Result<ClientConfig, SecureError> {
    let provider = provider();
    let verifier = Pinned::new(peer, &provider);
    let (chain, key) = identity.chain_and_key();
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(SecureError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(SecureError::Config)?;
    config.resumption = rustls::client::Resumption::disabled();
    config.enable_sni = false;
    config.enable_early_data = false;
    Ok(config)
}

/// Sender side: runs the TLS 1.3 server handshake over `stream`,
/// accepting only the client certificate whose SHA-256 is `peer`.
pub async fn accept<S>(
    stream: S,
    identity: &Identity,
    peer: [u8; 32],
) -> Result<ServerTlsStream<S>, SecureError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(identity, peer)?));
    acceptor.accept(stream).await.map_err(SecureError::from_io)
}

/// Receiver side: runs the TLS 1.3 client handshake over `stream`,
/// accepting only the server certificate whose SHA-256 is `peer`.
pub async fn connect<S>(
    stream: S,
    identity: &Identity,
    peer: [u8; 32],
) -> Result<ClientTlsStream<S>, SecureError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(identity, peer)?));
    let name = ServerName::try_from(CERT_NAME)
        .map_err(|e| SecureError::Config(rustls::Error::General(e.to_string())))?;
    connector
        .connect(name, stream)
        .await
        .map_err(SecureError::from_io)
}

/// Our side of the TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRole {
    /// The sender (it runs the HTTP server).
    Server,
    /// The receiver (HTTP client).
    Client,
}

/// How one channel's stream is protected. Two values are equal when they
/// use the same certificates in the same role.
#[derive(Debug, Clone, Default)]
pub enum Protection {
    /// A classic peer: the stream stays plaintext, byte for byte as today.
    #[default]
    Plain,
    /// Both ends are gshare: TLS 1.3 with the peer's certificate pinned.
    Tls {
        /// Our key and certificate (one per session).
        identity: Arc<Identity>,
        /// SHA-256 of the peer's certificate, from its `<secure>`.
        peer: [u8; 32],
        /// Which end of the handshake we are.
        role: TlsRole,
    },
}

impl Protection {
    /// True unless [`Protection::Plain`].
    pub fn is_encrypted(&self) -> bool {
        !matches!(self, Protection::Plain)
    }

    /// (ours, peer's) certificate fingerprints when encrypted.
    pub fn fingerprints(&self) -> Option<([u8; 32], [u8; 32])> {
        match self {
            Protection::Plain => None,
            Protection::Tls { identity, peer, .. } => Some((identity.fingerprint(), *peer)),
        }
    }

    /// The code to read aloud ([`short_code`], sender's fingerprint first)
    /// when encrypted.
    pub fn short_code(&self) -> Option<String> {
        match self {
            Protection::Plain => None,
            Protection::Tls {
                identity,
                peer,
                role: TlsRole::Server,
            } => Some(short_code(&identity.fingerprint(), peer)),
            Protection::Tls {
                identity,
                peer,
                role: TlsRole::Client,
            } => Some(short_code(peer, &identity.fingerprint())),
        }
    }
}

impl PartialEq for Protection {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Protection::Plain, Protection::Plain) => true,
            (
                Protection::Tls {
                    identity: a,
                    peer: pa,
                    role: ra,
                },
                Protection::Tls {
                    identity: b,
                    peer: pb,
                    role: rb,
                },
            ) => a.fingerprint() == b.fingerprint() && pa == pb && ra == rb,
            _ => false,
        }
    }
}

impl Eq for Protection {}

/// A channel's byte stream after [`establish`]: plaintext or TLS.
#[derive(Debug)]
pub enum Stream<S> {
    /// Classic peer.
    Plain(S),
    /// Sender side of TLS.
    Server(Box<ServerTlsStream<S>>),
    /// Receiver side of TLS.
    Client(Box<ClientTlsStream<S>>),
}

impl<S> Stream<S> {
    /// The transport underneath (e.g. the PseudoTCP stream).
    pub fn transport(&self) -> &S {
        match self {
            Stream::Plain(s) => s,
            Stream::Server(t) => t.get_ref().0,
            Stream::Client(t) => t.get_ref().0,
        }
    }

    /// True for the TLS variants.
    pub fn is_encrypted(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }
}

/// What the server writes first inside TLS, and the client waits for: in
/// TLS 1.3 the client finishes before the server has judged the client's
/// certificate, so without it a refused receiver would only learn of it
/// from a failed HTTP request. Only gshare peers ever see it.
const READY: &[u8; 16] = b"gshare-secure-1\n";

/// Sets up `protection` over `stream`: nothing for [`Protection::Plain`],
/// the TLS handshake plus the server's [`READY`] confirmation (all bounded
/// by `timeout`) otherwise, so both sides know the other accepted its
/// certificate. Nothing may be read or written by the caller before this
/// returns.
pub async fn establish<S>(
    stream: S,
    protection: &Protection,
    timeout: Duration,
) -> Result<Stream<S>, SecureError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (identity, peer, role) = match protection {
        Protection::Plain => return Ok(Stream::Plain(stream)),
        Protection::Tls {
            identity,
            peer,
            role,
        } => (identity, *peer, *role),
    };
    let handshake = async {
        Ok(match role {
            TlsRole::Server => {
                let mut tls = accept(stream, identity, peer).await?;
                tls.write_all(READY).await.map_err(SecureError::from_io)?;
                tls.flush().await.map_err(SecureError::from_io)?;
                Stream::Server(Box::new(tls))
            }
            TlsRole::Client => {
                let mut tls = connect(stream, identity, peer).await?;
                let mut got = [0u8; READY.len()];
                tls.read_exact(&mut got)
                    .await
                    .map_err(SecureError::from_io)?;
                if &got != READY {
                    return Err(SecureError::Handshake(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the peer did not confirm the encrypted connection",
                    )));
                }
                Stream::Client(Box::new(tls))
            }
        })
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| SecureError::Timeout(timeout.as_secs()))?
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Server(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
            Stream::Client(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Server(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
            Stream::Client(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Server(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
            Stream::Client(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Server(t) => t.is_write_vectored(),
            Stream::Client(t) => t.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Server(t) => Pin::new(t.as_mut()).poll_flush(cx),
            Stream::Client(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Server(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
            Stream::Client(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_code_is_ordered_and_readable() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let c = short_code(&a, &b);
        assert_eq!(c.len(), 14);
        assert!(c.chars().enumerate().all(|(i, ch)| if i == 4 || i == 9 {
            ch == '-'
        } else {
            ch.is_ascii_digit()
        }));
        assert_eq!(c, short_code(&a, &b));
        assert_ne!(c, short_code(&b, &a));
        assert_ne!(c, short_code(&a, &[3u8; 32]));
    }

    #[test]
    fn both_roles_compute_the_same_short_code() {
        let s = Arc::new(Identity::generate().unwrap());
        let r = Arc::new(Identity::generate().unwrap());
        let server = Protection::Tls {
            identity: s.clone(),
            peer: r.fingerprint(),
            role: TlsRole::Server,
        };
        let client = Protection::Tls {
            identity: r.clone(),
            peer: s.fingerprint(),
            role: TlsRole::Client,
        };
        assert_eq!(server.short_code(), client.short_code());
        assert_eq!(
            server.short_code(),
            Some(short_code(&s.fingerprint(), &r.fingerprint()))
        );
        assert_eq!(Protection::default(), Protection::Plain);
        assert_eq!(Protection::Plain.short_code(), None);
        assert_ne!(server, client);
        assert_eq!(server, server.clone());
    }

    #[test]
    fn identities_are_fresh_and_fingerprints_are_sha256_of_der() {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), fingerprint(&a.cert));
        assert!(!format!("{a:?}").contains("key:"));
    }
}
