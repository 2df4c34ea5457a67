//! Workload certificates: the key, the chain and the trust bundle a workload presents and trusts.

use std::fmt;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

use crate::identity::{Identity, IdentityError};

/// Why a certificate, key or signing request cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// PEM text could not be decoded.
    #[error("invalid PEM ({what}): {source}")]
    Pem {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's error.
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate is not valid DER X.509.
    #[error("invalid X.509 certificate: {0}")]
    X509(String),
    /// A chain, bundle or key was empty.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// The certificate does not carry exactly one SPIFFE URI SAN.
    #[error("certificate must carry exactly one spiffe:// URI SAN, found {0}")]
    San(usize),
    /// The certificate or CSR names another identity than the one it must carry.
    #[error("expected identity {expected}, found {found}")]
    IdentityMismatch {
        /// The identity required.
        expected: Box<Identity>,
        /// The identity present.
        found: Box<Identity>,
    },
    /// The URI SAN is not a valid identity.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// CA material that cannot sign what workloads will trust (see
    /// [`Authority::from_pem`](crate::Authority::from_pem)).
    #[error("unusable CA: {0}")]
    CaMaterial(String),
    /// The private key does not belong to the leaf certificate.
    #[error("private key does not match the leaf certificate")]
    KeyMismatch,
    /// Key generation, CSR encoding or signing failed.
    #[error("certificate operation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A TLS library refused the key.
    #[error("unusable key: {0}")]
    Key(#[from] rustls::Error),
}

/// A workload's certificate: its private key, its chain (leaf first) and the roots it trusts.
///
/// The trust bundle may hold several roots so that a root can be rotated with overlap.
pub struct WorkloadCertificate {
    identity: Identity,
    key: PrivateKeyDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    roots: Vec<CertificateDer<'static>>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl WorkloadCertificate {
    /// Assembles a workload certificate from PEM: the private key, the chain (leaf first,
    /// any intermediates after it) and the trust bundle (one or more roots).
    ///
    /// The leaf must carry exactly one SPIFFE URI SAN and match the key.
    pub fn from_pem(key_pem: &str, chain_pem: &str, roots_pem: &str) -> Result<Self, CertError> {
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|source| CertError::Pem {
                what: "private key",
                source,
            })?;
        let chain = certificates_from_pem(chain_pem, "certificate chain")?;
        let roots = certificates_from_pem(roots_pem, "trust bundle")?;
        Self::from_der(key, chain, roots)
    }

    /// Assembles a workload certificate from DER parts; see [`WorkloadCertificate::from_pem`].
    pub fn from_der(
        key: PrivateKeyDer<'static>,
        chain: Vec<CertificateDer<'static>>,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, CertError> {
        let leaf = chain.first().ok_or(CertError::Empty("certificate chain"))?;
        if roots.is_empty() {
            return Err(CertError::Empty("trust bundle"));
        }
        let info = inspect(leaf)?;
        let identity = info.identity.ok_or(CertError::San(0))?;
        check_key_matches(&key, &chain)?;
        Ok(Self {
            identity,
            key,
            chain,
            roots,
            not_before: info.not_before,
            not_after: info.not_after,
        })
    }

    /// The same key and chain trusting `roots` instead (a trust bundle learned later, for
    /// example one with the next root during a root rotation).
    pub fn with_roots(&self, roots: Vec<CertificateDer<'static>>) -> Result<Self, CertError> {
        if roots.is_empty() {
            return Err(CertError::Empty("trust bundle"));
        }
        Ok(Self {
            identity: self.identity.clone(),
            key: self.key.clone_key(),
            chain: self.chain.clone(),
            roots,
            not_before: self.not_before,
            not_after: self.not_after,
        })
    }

    /// The identity in the leaf's URI SAN.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The certificate that issued the leaf: the intermediate after it in the chain, else the
    /// root of the trust bundle that signed it (see [`WorkloadCertificate::issuing_root`]).
    pub fn issuer(&self) -> Option<&CertificateDer<'static>> {
        self.chain.get(1).or_else(|| self.issuing_root())
    }

    /// The root of the trust bundle that signed the chain: the one whose subject is the issuer
    /// of the chain's last certificate and whose key verifies its signature. `None` when no
    /// root it trusts issued it (its trust bundle and its chain disagree).
    pub fn issuing_root(&self) -> Option<&CertificateDer<'static>> {
        issuing_root(&self.chain, &self.roots)
    }

    /// The certificate chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The roots this workload trusts.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// A copy of the private key, for building TLS configurations.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// Start of the leaf's validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the leaf's validity.
    pub fn expires_at(&self) -> SystemTime {
        self.not_after
    }

    /// When to renew: half-way through the leaf's lifetime, as Istio does, which leaves a
    /// whole half-life of margin for a controller outage.
    pub fn refresh_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        self.not_before + lifetime / 2
    }

    /// Whether the leaf is outside its validity window at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        now >= self.not_after || now < self.not_before
    }
}

impl fmt::Debug for WorkloadCertificate {
    // Never print the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.identity.to_string())
            .field("chain_len", &self.chain.len())
            .field("roots", &self.roots.len())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A certificate signing request and the private key it was made for.
pub struct CertificateRequest {
    identity: Identity,
    csr_pem: String,
    key_pem: String,
}

impl CertificateRequest {
    /// Generates an ECDSA P-256 key and a CSR whose only subject alternative name is the
    /// identity's URI, as Istio's CA expects.
    pub fn generate(identity: &Identity) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
        let csr = params.serialize_request(&key)?;
        Ok(Self {
            identity: identity.clone(),
            csr_pem: csr.pem()?,
            key_pem: key.serialize_pem(),
        })
    }

    /// The identity the request is for.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The CSR in PEM, as sent to the CA.
    pub fn csr_pem(&self) -> &str {
        &self.csr_pem
    }

    /// Combines the CA's answer (leaf first, roots last, as `CreateCertificate` returns it)
    /// with this request's key. Every certificate after the leaf that is self-signed is taken
    /// as a root of the trust bundle; the others stay in the chain as intermediates.
    pub fn into_certificate(
        self,
        ca_chain_pem: &[String],
    ) -> Result<WorkloadCertificate, CertError> {
        let mut chain = Vec::new();
        let mut roots = Vec::new();
        for pem in ca_chain_pem {
            for der in certificates_from_pem(pem, "certificate chain")? {
                if !chain.is_empty() && inspect(&der)?.self_signed {
                    roots.push(der);
                } else {
                    chain.push(der);
                }
            }
        }
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|source| {
            CertError::Pem {
                what: "private key",
                source,
            }
        })?;
        let cert = WorkloadCertificate::from_der(key, chain, roots)?;
        if cert.identity != self.identity {
            return Err(CertError::IdentityMismatch {
                expected: Box::new(self.identity),
                found: Box::new(cert.identity),
            });
        }
        Ok(cert)
    }
}

impl fmt::Debug for CertificateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateRequest")
            .field("identity", &self.identity.to_string())
            .finish_non_exhaustive()
    }
}

/// Decodes every `CERTIFICATE` block of a PEM text; at least one is required.
pub fn certificates_from_pem(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(CertError::Empty(what));
    }
    Ok(certs)
}

/// The root among `roots` that signed `chain` (leaf first): the one whose subject is the issuer
/// of the chain's last certificate and whose key verifies its signature. `None` when none did.
pub fn issuing_root<'a, 'r>(
    chain: &[CertificateDer<'_>],
    roots: &'a [CertificateDer<'r>],
) -> Option<&'a CertificateDer<'r>> {
    let last = chain.last()?;
    let (_, top) = x509_parser::parse_x509_certificate(last).ok()?;
    roots.iter().find(|root| {
        x509_parser::parse_x509_certificate(root).is_ok_and(|(_, root)| {
            top.issuer() == root.subject() && top.verify_signature(Some(root.public_key())).is_ok()
        })
    })
}

/// When a DER certificate starts and stops being valid.
pub fn certificate_validity(
    der: &CertificateDer<'_>,
) -> Result<(SystemTime, SystemTime), CertError> {
    let info = inspect(der)?;
    Ok((info.not_before, info.not_after))
}

/// Encodes a DER certificate as PEM.
pub fn certificate_to_pem(der: &CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.as_ref()))
}

/// Every subject alternative name of a DER certificate, in its order, written as OpenSSL
/// prints them (`URI:spiffe://…`, `DNS:istiod.istio-system.svc`, `IP:10.0.0.1`; other kinds
/// by their type): what an operator or a test compares.
pub fn subject_alt_names(der: &CertificateDer<'_>) -> Result<Vec<String>, CertError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CertError::X509(e.to_string()))?;
    let san = match cert.subject_alternative_name() {
        Ok(Some(san)) => san,
        Ok(None) => return Ok(Vec::new()),
        Err(e) => return Err(CertError::X509(e.to_string())),
    };
    Ok(san
        .value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::URI(uri) => format!("URI:{uri}"),
            GeneralName::DNSName(dns) => format!("DNS:{dns}"),
            GeneralName::IPAddress(bytes) => match ip_from_bytes(bytes) {
                Some(ip) => format!("IP:{ip}"),
                None => "IP:<malformed>".to_owned(),
            },
            other => format!("{other:?}"),
        })
        .collect())
}

/// An iPAddress SAN's octets as an address (4 or 16 of them).
fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(Into::into),
        16 => <[u8; 16]>::try_from(bytes).ok().map(Into::into),
        _ => None,
    }
}

/// The facts about a certificate that the mesh needs.
pub(crate) struct CertificateInfo {
    pub(crate) identity: Option<Identity>,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
    pub(crate) self_signed: bool,
}

/// Reads validity, self-signedness and the SPIFFE identity of a DER certificate.
///
/// `identity` is `None` when the certificate has no URI SAN; more than one URI SAN, or one
/// that is not a valid identity, is an error.
pub(crate) fn inspect(der: &CertificateDer<'_>) -> Result<CertificateInfo, CertError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CertError::X509(e.to_string()))?;
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(CertError::X509(e.to_string())),
    };
    let identity = match uris.as_slice() {
        [] => None,
        [uri] => Some(uri.parse()?),
        many => return Err(CertError::San(many.len())),
    };
    let validity = cert.validity();
    Ok(CertificateInfo {
        identity,
        not_before: unix_seconds(validity.not_before.timestamp()),
        not_after: unix_seconds(validity.not_after.timestamp()),
        self_signed: cert.subject() == cert.issuer(),
    })
}

fn unix_seconds(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH,
    }
}

/// Refuses a key that does not belong to the leaf: such a pair would only fail later, at the
/// first handshake, far from its cause.
fn check_key_matches(
    key: &PrivateKeyDer<'static>,
    chain: &[CertificateDer<'static>],
) -> Result<(), CertError> {
    let provider = crate::crypto::provider();
    let signing_key = provider.key_provider.load_private_key(key.clone_key())?;
    let certified = rustls::sign::CertifiedKey::new(chain.to_vec(), signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(()),
        // Some key types cannot report their public key; nothing to compare then.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(_) => Err(CertError::KeyMismatch),
    }
}

/// The serial number of a DER certificate in lowercase hex, or `None` if the DER is not shaped
/// like an X.509 certificate.
pub fn serial_hex(der: &[u8]) -> Option<String> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {
    //     [0] version OPTIONAL, serialNumber INTEGER, … }, … }
    let (tag, certificate, _) = read_tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, tbs, _) = read_tlv(certificate)?;
    if tag != 0x30 {
        return None;
    }
    let (mut tag, mut value, rest) = read_tlv(tbs)?;
    if tag == 0xa0 {
        (tag, value, _) = read_tlv(rest)?;
    }
    if tag != 0x02 || value.is_empty() {
        return None;
    }
    // A leading zero only keeps the DER integer positive; it is not part of the number.
    if value.len() > 1 && value[0] == 0 {
        value = &value[1..];
    }
    let mut hex = String::with_capacity(value.len() * 2);
    for byte in value {
        let _ = write!(hex, "{byte:02x}");
    }
    Some(hex)
}

/// Splits one DER element off `input`: its tag, its contents and what follows it.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    let (value, after) = rest.split_at(len);
    Some((tag, value, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::Authority;

    fn identity() -> Identity {
        "spiffe://cluster.local/ns/shop/sa/orders".parse().unwrap()
    }

    #[test]
    fn csr_round_trip_through_a_ca() {
        let ca = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
        let request = CertificateRequest::generate(&identity()).unwrap();
        assert!(
            request
                .csr_pem()
                .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
        );
        let chain = ca
            .sign_csr(request.csr_pem(), &identity(), Duration::from_secs(600))
            .unwrap();
        assert_eq!(chain.len(), 2, "leaf then root");
        let cert = request.into_certificate(&chain).unwrap();
        assert_eq!(cert.identity(), &identity());
        assert_eq!(cert.chain().len(), 1);
        assert_eq!(cert.roots().len(), 1);
        let lifetime = cert.expires_at().duration_since(cert.not_before()).unwrap();
        assert!(lifetime >= Duration::from_secs(600));
        let half = cert.refresh_at().duration_since(cert.not_before()).unwrap();
        assert_eq!(half, lifetime / 2);
        assert!(!cert.is_expired_at(SystemTime::now()));
        assert!(cert.is_expired_at(cert.expires_at()));
    }

    /// During a root rotation the answer still ends with one element holding every root,
    /// which is where Istio's ztunnel reads its roots from; the leaf keeps its one URI SAN.
    #[test]
    fn every_root_travels_in_the_last_element_of_the_chain() {
        let mut ca = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
        let next = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
        ca.add_trusted_root(next.roots()[0].clone());
        let request = CertificateRequest::generate(&identity()).unwrap();
        let chain = ca
            .sign_csr(request.csr_pem(), &identity(), Duration::from_secs(600))
            .unwrap();
        assert_eq!(chain.len(), 2, "leaf, then the root bundle");
        let bundle = certificates_from_pem(&chain[1], "roots").unwrap();
        assert_eq!(bundle, ca.roots());
        let cert = request.into_certificate(&chain).unwrap();
        assert_eq!(cert.roots(), ca.roots());
        assert_eq!(cert.chain().len(), 1);
        assert_eq!(
            subject_alt_names(&cert.chain()[0]).unwrap(),
            ["URI:spiffe://cluster.local/ns/shop/sa/orders"]
        );
    }

    /// A CSR as the OpenSSL and BoringSSL builds of Istio's ztunnel write it: empty subject, the
    /// identity as a critical URI SAN (made once with `openssl req -subj / -addext
    /// "subjectAltName=critical,URI:..."`).
    const CRITICAL_SAN_CSR: &str = "\
-----BEGIN CERTIFICATE REQUEST-----
MIIBBTCBqwIBADAAMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEVlN2J5OPBK3L
Q1vBw3vJ6nXL7TfFlWJgC8aEcP6qnve4LK6s3o9xxqQ6+QtnEHO6XDydOtKMHWcE
sWCI/0R2KqBJMEcGCSqGSIb3DQEJDjE6MDgwNgYDVR0RAQH/BCwwKoYoc3BpZmZl
Oi8vY2x1c3Rlci5sb2NhbC9ucy9zaG9wL3NhL29yZGVyczAKBggqhkjOPQQDAgNJ
ADBGAiEA/0YbXm0nvOdOyNUvVdoRLO3vK8Lh5MIv4iuPicxezY4CIQCm5gr7k1IT
4Pi1eC8Ei0HdGcDBHUsFjOnZO4WdYpOR5A==
-----END CERTIFICATE REQUEST-----
";

    #[test]
    fn signs_a_csr_whose_san_is_critical() {
        let ca = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
        let chain = ca
            .sign_csr(CRITICAL_SAN_CSR, &identity(), Duration::from_secs(600))
            .unwrap();
        let leaf = certificates_from_pem(&chain[0], "leaf").unwrap();
        assert_eq!(
            subject_alt_names(&leaf[0]).unwrap(),
            ["URI:spiffe://cluster.local/ns/shop/sa/orders"]
        );
    }

    #[test]
    fn a_certificate_takes_a_later_trust_bundle() {
        let ca = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
        let old = ca.roots()[0].clone();
        let next = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
        let new = next.roots()[0].clone();
        let cert = ca.issue(&identity(), Duration::from_secs(600)).unwrap();
        let both = cert.with_roots(vec![old.clone(), new.clone()]).unwrap();
        assert_eq!(both.roots(), [old.clone(), new.clone()]);
        assert_eq!(both.chain(), cert.chain());
        assert_eq!(both.issuing_root(), Some(&old));
        assert_eq!(
            both.issuer(),
            Some(&old),
            "a root-signed leaf's issuer is the root"
        );
        assert!(matches!(
            cert.with_roots(Vec::new()),
            Err(CertError::Empty("trust bundle"))
        ));
    }

    #[test]
    fn the_ca_refuses_a_csr_for_another_identity() {
        let ca = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
        let request = CertificateRequest::generate(&identity()).unwrap();
        let granted: Identity = "spiffe://cluster.local/ns/shop/sa/payments"
            .parse()
            .unwrap();
        let err = ca
            .sign_csr(request.csr_pem(), &granted, Duration::from_secs(60))
            .unwrap_err();
        assert!(
            matches!(&err, CertError::IdentityMismatch { expected, found }
                if **expected == granted && **found == identity()),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_key_that_does_not_match() {
        let ca = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
        let a = CertificateRequest::generate(&identity()).unwrap();
        let b = CertificateRequest::generate(&identity()).unwrap();
        let chain = ca
            .sign_csr(a.csr_pem(), &identity(), Duration::from_secs(60))
            .unwrap();
        let err = b.into_certificate(&chain).unwrap_err();
        assert!(matches!(err, CertError::KeyMismatch), "{err}");
    }

    #[test]
    fn pem_round_trip_and_several_roots() {
        let old = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
        let new = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
        let cert = new.issue(&identity(), Duration::from_secs(60)).unwrap();
        let chain_pem: String = cert.chain().iter().map(certificate_to_pem).collect();
        let roots_pem = format!("{}{}", old.root_pem(), new.root_pem());
        let key = cert.private_key();
        let key_pem = match &key {
            PrivateKeyDer::Pkcs8(k) => {
                pem::encode(&pem::Pem::new("PRIVATE KEY", k.secret_pkcs8_der()))
            }
            other => panic!("unexpected key type {other:?}"),
        };
        let parsed = WorkloadCertificate::from_pem(&key_pem, &chain_pem, &roots_pem).unwrap();
        assert_eq!(parsed.identity(), &identity());
        assert_eq!(parsed.roots().len(), 2);
        assert!(!format!("{parsed:?}").contains("PRIVATE"));
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            certificates_from_pem("no pem here", "trust bundle"),
            Err(CertError::Empty("trust bundle"))
        ));
        let bogus = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let der = certificates_from_pem(bogus, "x").unwrap();
        assert!(matches!(inspect(&der[0]), Err(CertError::X509(_))));
    }

    #[test]
    fn reads_serials() {
        let ca =
            crate::Authority::generate_root("cluster.local", Duration::from_secs(600)).unwrap();
        let id: crate::Identity = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let one = ca.issue(&id, Duration::from_secs(60)).unwrap();
        let two = ca.issue(&id, Duration::from_secs(60)).unwrap();
        let a = serial_hex(&one.chain()[0]).unwrap();
        let b = serial_hex(&two.chain()[0]).unwrap();
        assert_eq!(a.len(), 32, "128-bit serials: {a}");
        assert_ne!(a, b);
        // Hand-made: SEQUENCE { SEQUENCE { [0] { INTEGER 2 }, INTEGER 0x00ff } }.
        let der = [
            0x30, 0x0b, 0x30, 0x09, 0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x02, 0x00, 0xff,
        ];
        assert_eq!(serial_hex(&der).as_deref(), Some("ff"));
        assert_eq!(serial_hex(&der[..8]), None);
        assert_eq!(serial_hex(b"not der"), None);
    }

    #[test]
    fn the_issuing_root_is_the_one_whose_key_signed_the_chain() {
        let id: crate::Identity = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let old =
            crate::Authority::generate_root("cluster.local", Duration::from_secs(600)).unwrap();
        let mut new =
            crate::Authority::generate_root("cluster.local", Duration::from_secs(600)).unwrap();
        let issued = old.issue(&id, Duration::from_secs(60)).unwrap();
        assert_eq!(issued.issuing_root(), Some(&old.roots()[0]));
        // Same subject, other key: the new root did not sign it, even listed first.
        new.add_trusted_root(old.roots()[0].clone());
        let both = WorkloadCertificate::from_der(
            issued.private_key(),
            issued.chain().to_vec(),
            new.roots().to_vec(),
        )
        .unwrap();
        assert_eq!(both.issuing_root(), Some(&old.roots()[0]));
        let stranger = WorkloadCertificate::from_der(
            issued.private_key(),
            issued.chain().to_vec(),
            new.roots()[..1].to_vec(),
        )
        .unwrap();
        assert_eq!(stranger.issuing_root(), None);
    }
}
