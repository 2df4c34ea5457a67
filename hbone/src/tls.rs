//! rustls configurations for HBONE, as Istio's ztunnel sets them up: TLS 1.3 only, AES-GCM
//! suites, ALPN `h2`, no SNI, and SPIFFE identities checked instead of DNS names; and the
//! standard name check for clients that reach the controller by name.

use std::fmt;
use std::sync::Arc;

use rustls::client::WantsClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, ConfigBuilder, DigitallySignedStruct, DistinguishedName,
    OtherError, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};

use crate::cert::{WorkloadCertificate, inspect};
use crate::crypto::provider;
use crate::identity::Identity;

/// The only application protocol HBONE speaks.
pub const ALPN_H2: &[u8] = b"h2";

/// A client configuration presenting `cert` and accepting a server only if its chain verifies
/// against `cert`'s trust bundle and its identity is one of `expected`.
pub fn client_config(
    cert: &WorkloadCertificate,
    expected: &[Identity],
) -> Result<ClientConfig, rustls::Error> {
    let config = client_builder(cert.roots(), expected)?
        .with_client_auth_cert(cert.chain().to_vec(), cert.private_key())?;
    Ok(hbone_client(config))
}

/// A client configuration presenting no certificate and accepting a server only if its chain
/// verifies against `roots` and its identity is one of `expected`: for reaching the
/// controller, which authenticates callers by bearer token (a node proxy has no certificate
/// before its first CSR).
pub fn client_config_without_client_auth(
    roots: &[CertificateDer<'static>],
    expected: &[Identity],
) -> Result<ClientConfig, rustls::Error> {
    Ok(hbone_client(
        client_builder(roots, expected)?.with_no_client_auth(),
    ))
}

/// A client configuration presenting no certificate and verifying the server as any TLS client
/// does: its chain against `roots` and the server name it is given at connect time (a DNS name,
/// sent as SNI, or an IP address) against the certificate's DNS and IP SANs. For reaching the
/// controller by name, as Istio's ztunnel does; ALPN `h2`, TLS 1.3 only.
pub fn client_config_verifying_name(
    roots: &[CertificateDer<'static>],
) -> Result<ClientConfig, rustls::Error> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(root.clone())
            .map_err(|e| rejected(format!("unusable trust anchor: {e}")))?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// TLS 1.3 with a server check of the chain against `roots` and of the identity against
/// `expected`; the client's own certificate, if any, comes next.
fn client_builder(
    roots: &[CertificateDer<'static>],
    expected: &[Identity],
) -> Result<ConfigBuilder<ClientConfig, WantsClientCert>, rustls::Error> {
    let verifier = ServerIdentityVerifier {
        roots: Roots::new(roots)?,
        expected: expected.to_vec(),
    };
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier)))
}

/// ALPN `h2` and no SNI: peers are addressed by IP and identified by SPIFFE ID, never by
/// hostname.
fn hbone_client(mut config: ClientConfig) -> ClientConfig {
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.enable_sni = false;
    config
}

/// A server configuration presenting `cert` and requiring a client certificate that chains to
/// `cert`'s trust bundle and carries an identity in `cert`'s trust domain.
pub fn server_config(cert: &WorkloadCertificate) -> Result<ServerConfig, rustls::Error> {
    let verifier = ClientIdentityVerifier {
        roots: Roots::new(cert.roots())?,
        trust_domain: cert.identity().trust_domain().to_owned(),
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(cert.chain().to_vec(), cert.private_key())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A server configuration presenting `cert` without asking for a client certificate: for
/// services whose callers authenticate otherwise (the controller's xDS and CA take bearer
/// tokens, since a node proxy has no certificate before its first CSR).
pub fn server_config_without_client_auth(
    cert: &WorkloadCertificate,
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(cert.chain().to_vec(), cert.private_key())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// The identity of a verified peer, from its leaf certificate.
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Option<Identity> {
    let leaf = certs?.first()?;
    inspect(leaf).ok()?.identity
}

/// A rustls error carrying a message about the peer's identity.
#[derive(Debug)]
struct IdentityRejected(String);

impl fmt::Display for IdentityRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IdentityRejected {}

fn rejected(message: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
        IdentityRejected(message),
    ))))
}

/// Trust anchors parsed once per configuration.
struct Roots {
    anchors: Vec<TrustAnchor<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Roots {
    fn new(roots: &[CertificateDer<'static>]) -> Result<Self, rustls::Error> {
        let anchors = roots
            .iter()
            .map(|root| {
                webpki::anchor_from_trusted_cert(root)
                    .map(|anchor| anchor.to_owned())
                    .map_err(|e| rejected(format!("unusable trust anchor: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            anchors,
            algorithms: provider().signature_verification_algorithms,
        })
    }

    /// Verifies the chain for `usage` and returns the leaf's identity.
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<Identity, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(webpki_error)?;
        cert.verify_for_usage(
            self.algorithms.all,
            &self.anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(webpki_error)?;
        let info = inspect(end_entity).map_err(|e| rejected(e.to_string()))?;
        info.identity
            .ok_or_else(|| rejected("peer certificate has no SPIFFE identity".to_owned()))
    }

    fn verify_tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

/// Maps webpki's verdicts onto rustls' certificate errors, so an expired or foreign certificate
/// produces the matching TLS alert.
fn webpki_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let err = match e {
        E::BadDer | E::BadDerTime => CertificateError::BadEncoding,
        E::CertExpired { .. } => CertificateError::Expired,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        other => return rejected(format!("certificate rejected: {other}")),
    };
    rustls::Error::InvalidCertificate(err)
}

/// The handshake-signature half of both verifiers: TLS 1.2 is never offered, TLS 1.3
/// signatures are checked with the provider's algorithms.
macro_rules! handshake_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls12NotOffered,
            ))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.roots.verify_tls13(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.roots.algorithms.supported_schemes()
        }
    };
}

/// Client side: checks the server's chain and that it is one of the identities we meant to
/// reach. The TLS server name is ignored: it is only an IP here.
struct ServerIdentityVerifier {
    roots: Roots,
    expected: Vec<Identity>,
}

impl fmt::Debug for ServerIdentityVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentityVerifier")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for ServerIdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let identity = self.roots.verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )?;
        if self.expected.contains(&identity) {
            Ok(ServerCertVerified::assertion())
        } else {
            let expected: Vec<String> = self.expected.iter().map(ToString::to_string).collect();
            Err(rejected(format!(
                "server identity {identity} is not one of the expected [{}]",
                expected.join(", ")
            )))
        }
    }

    handshake_signature_checks!();
}

/// Server side: every client must present a certificate that chains to our roots and names an
/// identity in our trust domain. Authorization of that identity happens later, per stream.
struct ClientIdentityVerifier {
    roots: Roots,
    trust_domain: String,
}

impl fmt::Debug for ClientIdentityVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentityVerifier")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for ClientIdentityVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let identity = self.roots.verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )?;
        if identity.trust_domain() == self.trust_domain {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rejected(format!(
                "client identity {identity} is outside trust domain {}",
                self.trust_domain
            )))
        }
    }

    handshake_signature_checks!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Authority, ServingName};
    use std::time::Duration;

    #[test]
    fn clients_offer_h2_and_send_no_server_name() {
        let ca = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
        let identity: Identity = "spiffe://cluster.local/ns/shop/sa/web".parse().unwrap();
        let cert = ca.issue(&identity, Duration::from_secs(3600)).unwrap();
        let expected = [identity];
        let with_cert = client_config(&cert, &expected).unwrap();
        let without = client_config_without_client_auth(cert.roots(), &expected).unwrap();
        for config in [&with_cert, &without] {
            assert_eq!(config.alpn_protocols, [ALPN_H2.to_vec()]);
            assert!(!config.enable_sni);
        }
        assert!(with_cert.client_auth_cert_resolver.has_certs());
        assert!(!without.client_auth_cert_resolver.has_certs());
    }

    fn controller() -> Identity {
        "spiffe://cluster.local/ns/istio-system/sa/controller"
            .parse()
            .unwrap()
    }

    /// A serving certificate answers clients verifying its SPIFFE identity and clients verifying
    /// one of its names; a name it does not carry is refused.
    #[tokio::test]
    async fn a_serving_certificate_verifies_by_identity_and_by_name() {
        let ca = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
        let names: Vec<ServingName> = ["istiod.istio-system.svc", "127.0.0.1"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        let cert = ca
            .issue_serving(&controller(), &names, Duration::from_secs(600))
            .unwrap();
        assert_eq!(
            crate::cert::subject_alt_names(&cert.chain()[0]).unwrap(),
            [
                "URI:spiffe://cluster.local/ns/istio-system/sa/controller",
                "DNS:istiod.istio-system.svc",
                "IP:127.0.0.1"
            ]
        );
        assert_eq!(cert.identity(), &controller());
        let by_identity = client_config_without_client_auth(cert.roots(), &[controller()]);
        let by_name = client_config_verifying_name(cert.roots()).unwrap();
        let cases = [
            (
                by_identity.unwrap(),
                ServerName::IpAddress(std::net::IpAddr::from([10, 9, 9, 9]).into()),
                true,
            ),
            (
                by_name.clone(),
                ServerName::try_from("istiod.istio-system.svc").unwrap(),
                true,
            ),
            (
                by_name.clone(),
                ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into()),
                true,
            ),
            (
                by_name.clone(),
                ServerName::try_from("istiod.other.svc").unwrap(),
                false,
            ),
            (
                by_name,
                ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 2]).into()),
                false,
            ),
        ];
        for (client, name, verifies) in cases {
            let server = server_config_without_client_auth(&cert).unwrap();
            let result = handshake(server, client, name.to_owned()).await;
            assert_eq!(result.is_ok(), verifies, "{name:?}: {result:?}");
            if let Err(e) = result {
                assert!(e.to_string().contains("not valid for name"), "{e}");
            }
        }
    }

    #[test]
    fn workload_certificates_carry_only_their_identity() {
        let ca = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
        let identity: Identity = "spiffe://cluster.local/ns/shop/sa/web".parse().unwrap();
        let cert = ca.issue(&identity, Duration::from_secs(600)).unwrap();
        assert_eq!(
            crate::cert::subject_alt_names(&cert.chain()[0]).unwrap(),
            ["URI:spiffe://cluster.local/ns/shop/sa/web"]
        );
    }

    /// One handshake over loopback, the client naming the server `name`: the client's verdict.
    async fn handshake(
        server: ServerConfig,
        client: ClientConfig,
        name: ServerName<'static>,
    ) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let accepting = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            // The server's side ends with the client's verdict; only the client's is asserted.
            let _ = acceptor.accept(tcp).await;
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let result = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .map(drop);
        accepting.await.unwrap();
        result
    }
}
