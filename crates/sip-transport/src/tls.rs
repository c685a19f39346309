//! TLS (RFC 3261 26, RFC 5630) settings: the rustls server configuration
//! for the TLS and WSS listeners (certificate chain and key from PEM, client
//! certificates required when a CA is given) and the client configuration
//! for outbound TLS (the webpki roots plus that CA, SNI from the host name
//! the destination was resolved from, our certificate shown to servers that
//! ask for one).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Longest a TLS (or WebSocket) handshake may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which PEM input a [`TlsError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PemInput {
    /// The certificate chain.
    Cert,
    /// The private key.
    Key,
    /// The CA certificates that client certificates must chain to.
    Ca,
}

/// Why [`TlsSettings::from_pem`] failed, and which input is at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsError {
    /// The input at fault.
    pub input: PemInput,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for TlsError {}

/// Whether TLS and WSS clients must present a certificate, when CA
/// certificates for them are configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientCerts {
    /// A client without a certificate chaining to the CA is refused.
    #[default]
    Required,
    /// A client may present none (digest still applies to its requests);
    /// one it presents must chain to the CA.
    Optional,
}

/// The rustls configurations of the TLS and WSS listeners and of outbound
/// TLS; cheap to clone.
#[derive(Clone)]
pub struct TlsSettings {
    server: Option<Arc<ServerConfig>>,
    client: Arc<ClientConfig>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings").field("server", &self.server.is_some()).finish()
    }
}

impl Default for TlsSettings {
    /// Outbound only, trusting the webpki roots.
    fn default() -> Self {
        TlsSettings { server: None, client: client_config(RootCertStore::empty(), None) }
    }
}

fn provider() -> Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

fn certs(pem: &[u8], input: PemInput) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError { input, reason };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no certificate in the PEM file".into()));
    }
    Ok(certs)
}

/// Our certificate chain and its key.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// Outbound TLS trusts the webpki roots and `extra`, and shows `identity`
/// to servers that ask for a client certificate.
fn client_config(extra: RootCertStore, identity: Option<Identity>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    roots.roots.extend(extra.roots);
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        // The ring provider supports the default versions.
        .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"))
        .with_root_certificates(roots);
    let cfg = match identity {
        // The key was just accepted for the server side: the same pair.
        Some((chain, key)) => builder.clone().with_client_auth_cert(chain, key).ok(),
        None => None,
    };
    Arc::new(cfg.unwrap_or_else(|| builder.with_no_client_auth()))
}

impl TlsSettings {
    /// Settings from a PEM certificate chain and private key, and optional
    /// PEM CA certificates: with them, TLS and WSS clients must present a
    /// certificate that chains to one (and outbound TLS trusts them too).
    /// Outbound TLS shows this certificate to servers that ask for one.
    pub fn from_pem(cert: &[u8], key: &[u8], ca: Option<&[u8]>) -> Result<TlsSettings, TlsError> {
        Self::from_pem_with(cert, key, ca, ClientCerts::Required)
    }

    /// [`TlsSettings::from_pem`], saying whether clients must present a
    /// certificate when `ca` is given.
    pub fn from_pem_with(
        cert: &[u8],
        key: &[u8],
        ca: Option<&[u8]>,
        client_certs: ClientCerts,
    ) -> Result<TlsSettings, TlsError> {
        let chain = certs(cert, PemInput::Cert)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError {
            input: PemInput::Key,
            reason: format!("no private key in the PEM file: {e}"),
        })?;
        let mut ca_roots = RootCertStore::empty();
        if let Some(ca) = ca {
            for c in certs(ca, PemInput::Ca)? {
                ca_roots.add(c).map_err(|e| TlsError {
                    input: PemInput::Ca,
                    reason: format!("not a CA certificate: {e}"),
                })?;
            }
        }
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError { input: PemInput::Cert, reason: e.to_string() })?;
        let builder = if ca.is_some() {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(ca_roots.clone()), provider());
            let verifier = match client_certs {
                ClientCerts::Required => verifier,
                ClientCerts::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError { input: PemInput::Ca, reason: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let identity = (chain.clone(), key.clone_key());
        let server = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError { input: PemInput::Key, reason: e.to_string() })?;
        let client = client_config(ca_roots, Some(identity));
        Ok(TlsSettings { server: Some(Arc::new(server)), client })
    }

    /// Whether a certificate is configured (TLS and WSS listeners need it).
    pub fn can_serve(&self) -> bool {
        self.server.is_some()
    }

    pub(crate) fn acceptor(&self) -> Option<TlsAcceptor> {
        self.server.clone().map(TlsAcceptor::from)
    }

    pub(crate) fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.client.clone())
    }
}

/// The name to verify the server's certificate against (and send as SNI):
/// the host name `remote` was resolved from, else its IP address.
pub(crate) fn server_name(host: Option<String>, remote: SocketAddr) -> ServerName<'static> {
    host.and_then(|h| ServerName::try_from(h).ok())
        .unwrap_or_else(|| ServerName::IpAddress(remote.ip().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_names_the_input() {
        let e = TlsSettings::from_pem(b"garbage", b"", None).expect_err("no cert");
        assert_eq!(e.input, PemInput::Cert);
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let cert = c.cert.pem();
        let e = TlsSettings::from_pem(cert.as_bytes(), b"nope", None).expect_err("no key");
        assert_eq!(e.input, PemInput::Key);
        let other = rcgen::generate_simple_self_signed(vec!["x".into()]).expect("cert");
        let key = other.key_pair.serialize_pem();
        let e = TlsSettings::from_pem(cert.as_bytes(), key.as_bytes(), None).expect_err("mismatch");
        assert_eq!(e.input, PemInput::Key);
        let key = c.key_pair.serialize_pem();
        let e = TlsSettings::from_pem(cert.as_bytes(), key.as_bytes(), Some(b"x")).expect_err("ca");
        assert_eq!(e.input, PemInput::Ca);
        let ok = TlsSettings::from_pem(cert.as_bytes(), key.as_bytes(), Some(cert.as_bytes()));
        assert!(ok.expect("valid").can_serve());
    }

    /// With a CA, a client without a certificate is turned away: its
    /// connection closes and nothing it sent comes up.
    #[tokio::test]
    async fn with_a_ca_client_certificates_are_required() {
        use crate::{SipTransport, TransportConfig};
        use sip_message::{Peer, Transport};
        use tokio::sync::mpsc;
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
        let (cert, key) = (c.cert.pem(), c.key_pair.serialize_pem());
        let settings =
            TlsSettings::from_pem(cert.as_bytes(), key.as_bytes(), Some(cert.as_bytes()));
        let (in_tx, mut inbound) = mpsc::channel(4);
        let (note_tx, _server_notices) = mpsc::unbounded_channel();
        let server_cfg = TransportConfig {
            tls: vec!["127.0.0.1:0".parse().expect("addr")],
            tls_settings: settings.clone().expect("tls"),
            ..Default::default()
        };
        let server = SipTransport::bind(server_cfg, in_tx, note_tx).await.expect("bind");
        let addr = server.local_addrs()[0].1;
        // A client that trusts the server but has no certificate of its own.
        let mut roots = RootCertStore::empty();
        roots.add(certs(cert.as_bytes(), PemInput::Cert).expect("pem")[0].clone()).expect("ca");
        let anonymous = TlsSettings { server: None, client: client_config(roots, None) };
        let (cin_tx, _cin) = mpsc::channel(4);
        let (cnote_tx, mut notices) = mpsc::unbounded_channel();
        let client_cfg = TransportConfig { tls_settings: anonymous, ..Default::default() };
        let client = SipTransport::bind(client_cfg, cin_tx, cnote_tx).await.expect("bind");
        let peer = Peer { transport: Transport::Tls, remote: addr, local: addr, conn: None };
        let msg = "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        client.send_bytes(&peer, bytes::Bytes::from(msg), 1);
        let wait = std::time::Duration::from_secs(10);
        let notice = tokio::time::timeout(wait, notices.recv()).await.expect("within the wait");
        assert!(notice.is_some(), "the connection closed (or the send failed)");
        assert!(inbound.try_recv().is_err(), "nothing from a client without a certificate");
    }

    #[test]
    fn server_name_prefers_the_host() {
        let remote: SocketAddr = "192.0.2.1:5061".parse().expect("addr");
        assert_eq!(
            server_name(Some("sip.example.com".into()), remote),
            ServerName::try_from("sip.example.com").expect("name")
        );
        assert_eq!(server_name(None, remote), ServerName::IpAddress(remote.ip().into()));
    }
}
