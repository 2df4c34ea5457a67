//! Signing SPIFFE workload certificates: the issuing half of the mesh's certificate authority.
//!
//! The controller wraps this with persistence, authentication and the gRPC service; keeping the
//! X.509 rules here puts issuing and verifying side by side.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::cert::{CertError, CertificateRequest, WorkloadCertificate, certificate_to_pem};
use crate::identity::Identity;
use crate::names::ServingName;

mod validate;

/// Clock skew tolerated between the CA and its workloads: certificates start this long ago.
const BACKDATE: Duration = Duration::from_secs(60);

/// A signing CA: its key, its own certificate and the chain up to (and including) the roots.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    key_pem: String,
    /// The CA's certificate followed by any intermediates above it, excluding roots.
    chain: Vec<CertificateDer<'static>>,
    /// Every root workloads should trust (more than one during a root rotation).
    roots: Vec<CertificateDer<'static>>,
}

impl Authority {
    /// Generates a self-signed ECDSA P-256 root for a trust domain.
    pub fn generate_root(trust_domain: &str, ttl: Duration) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, trust_domain);
        name.push(DnType::CommonName, "mesh root CA");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + ttl).into();
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            key_pem,
            chain: Vec::new(),
            roots: vec![cert.der().clone()],
        })
    }

    /// Loads a CA from PEM: its signing key, its certificate (followed by any intermediates
    /// above it) and the roots to publish. A self-signed root passes its own certificate as
    /// `cert_chain_pem` and as `roots_pem`.
    pub fn from_pem(
        key_pem: &str,
        cert_chain_pem: &str,
        roots_pem: &str,
    ) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem)?;
        let mut chain = crate::cert::certificates_from_pem(cert_chain_pem, "CA certificate")?;
        let roots = crate::cert::certificates_from_pem(roots_pem, "CA roots")?;
        validate::signing_material(&key, &chain, &roots, SystemTime::now())?;
        let issuer = Issuer::from_ca_cert_der(&chain[0], key)?;
        // A self-signed CA certificate is itself a root; keep it out of issued chains.
        if roots.contains(&chain[0]) {
            chain.clear();
        }
        Ok(Self {
            issuer,
            key_pem: key_pem.to_owned(),
            chain,
            roots,
        })
    }

    /// Adds a root to the published trust bundle (for example the next root, ahead of a
    /// rotation), without changing which key signs.
    pub fn add_trusted_root(&mut self, root: CertificateDer<'static>) {
        if !self.roots.contains(&root) {
            self.roots.push(root);
        }
    }

    /// The signing key in PKCS#8 PEM, for persisting the CA.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The first root of the trust bundle, in PEM.
    pub fn root_pem(&self) -> String {
        self.roots
            .first()
            .map(certificate_to_pem)
            .unwrap_or_default()
    }

    /// Every trusted root, in PEM.
    pub fn roots_pem(&self) -> Vec<String> {
        self.roots.iter().map(certificate_to_pem).collect()
    }

    /// The roots workloads should trust.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The CA's own certificate and any intermediates above it, excluding roots: empty for a
    /// self-signed root.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// Signs a CSR for `identity`, valid from now for `ttl`. Returns the chain as
    /// `CreateCertificate` answers it: leaf first, then intermediates, then the roots, all of
    /// them in one last element (as istiod sends its root bundle: Istio's ztunnel takes the
    /// last element as its roots and every element before it as the chain).
    ///
    /// The CSR's signature must verify and its only SAN must be `identity`: the caller has
    /// already decided the requester may hold that identity, and the CSR must agree.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<Vec<String>, CertError> {
        let now = SystemTime::now();
        self.sign_csr_valid_between(csr_pem, identity, now - BACKDATE, now + ttl)
    }

    /// Like [`Authority::sign_csr`] with an explicit validity window.
    pub fn sign_csr_valid_between(
        &self,
        csr_pem: &str,
        identity: &Identity,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Vec<String>, CertError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let uris: Vec<String> = csr
            .params
            .subject_alt_names
            .iter()
            .filter_map(|san| match san {
                SanType::URI(uri) => Some(uri.as_str().to_owned()),
                _ => None,
            })
            .collect();
        if csr.params.subject_alt_names.len() != 1 || uris.len() != 1 {
            return Err(CertError::San(csr.params.subject_alt_names.len()));
        }
        let requested: Identity = uris[0].parse()?;
        if &requested != identity {
            return Err(CertError::IdentityMismatch {
                expected: Box::new(identity.clone()),
                found: Box::new(requested),
            });
        }
        let params = leaf_params(identity, not_before, not_after)?;
        let leaf = params.signed_by(&csr.public_key, &self.issuer)?;
        let mut chain = vec![leaf.pem()];
        chain.extend(self.chain.iter().map(certificate_to_pem));
        chain.push(self.roots_pem().concat());
        Ok(chain)
    }

    /// Generates a key and signs a certificate for `identity` in one step: for the
    /// controller's own serving certificate and for tests.
    pub fn issue(
        &self,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<WorkloadCertificate, CertError> {
        let now = SystemTime::now();
        self.issue_valid_between(identity, now - BACKDATE, now + ttl)
    }

    /// Generates a key and signs a server certificate for `identity` that also carries
    /// `names` as DNS and IP SANs, valid from now for `ttl`: the controller's serving
    /// certificate, which clients verify either by SPIFFE identity or by name. Workload
    /// certificates never carry names (see [`Authority::sign_csr`]).
    pub fn issue_serving(
        &self,
        identity: &Identity,
        names: &[ServingName],
        ttl: Duration,
    ) -> Result<WorkloadCertificate, CertError> {
        let now = SystemTime::now();
        let mut params = leaf_params(identity, now - BACKDATE, now + ttl)?;
        for name in names {
            params.subject_alt_names.push(match name {
                ServingName::Dns(dns) => SanType::DnsName(dns.as_str().try_into()?),
                ServingName::Ip(ip) => SanType::IpAddress(*ip),
            });
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let leaf = params.signed_by(&key, &self.issuer)?;
        let mut chain = vec![leaf.der().clone()];
        chain.extend(self.chain.iter().cloned());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        WorkloadCertificate::from_der(key, chain, self.roots.clone())
    }

    /// Issues a subordinate CA (an intermediate to plug in elsewhere) named `common_name`,
    /// valid between `not_before` and `not_after`: its key and certificate chain (the new
    /// certificate, then this CA's own chain), in PEM.
    pub fn issue_intermediate(
        &self,
        common_name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<(String, String), CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut chain = cert.pem();
        for der in &self.chain {
            chain.push_str(&certificate_to_pem(der));
        }
        Ok((key.serialize_pem(), chain))
    }

    /// Like [`Authority::issue`] with an explicit validity window.
    pub fn issue_valid_between(
        &self,
        identity: &Identity,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<WorkloadCertificate, CertError> {
        let request = CertificateRequest::generate(identity)?;
        let chain =
            self.sign_csr_valid_between(request.csr_pem(), identity, not_before, not_after)?;
        request.into_certificate(&chain)
    }
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("intermediates", &self.chain.len())
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

/// The parameters of a workload leaf: empty subject, the identity as sole (critical) URI SAN,
/// usable for both TLS server and client authentication. ([`Authority::issue_serving`] adds
/// names to it.)
fn leaf_params(
    identity: &Identity,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    Ok(params)
}

/// A positive random 128-bit serial number.
fn random_serial() -> Result<SerialNumber, CertError> {
    let mut serial = [0u8; 16];
    crate::crypto::provider()
        .secure_random
        .fill(&mut serial)
        .map_err(|_| CertError::Key(rustls::Error::FailedToGetRandomBytes))?;
    // DER integers are signed: clear the top bit, and avoid a leading zero byte.
    serial[0] = (serial[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from(serial.to_vec()))
}
