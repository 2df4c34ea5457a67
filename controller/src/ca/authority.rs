//! The signing authority: its root (or plugged-in intermediate) and the certificates it
//! signs.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use hbone::cert::{certificate_validity, certificates_from_pem, serial_hex};
use hbone::{Authority, Identity, ServingName, WorkloadCertificate};

use super::error::CaError;
use super::rotation;
use super::store::{self, Origin};

/// When the CA's certificates expire (see [`CertificateAuthority::expiries`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expiries {
    /// Each published root: serial number (hex) and expiry.
    pub roots: Vec<(String, SystemTime)>,
    /// The signing certificate's expiry.
    pub signer: Option<SystemTime>,
}

/// The signing authority with its persistence: shared by the gRPC service, the controller's
/// own serving certificate and root rotation.
#[derive(Debug)]
pub struct CertificateAuthority {
    authority: RwLock<Authority>,
    trust_domain: String,
    dir: Option<PathBuf>,
    /// Changes when a rotation installs material of the other layout.
    origin: RwLock<Origin>,
    /// The longest lifetime signed since start, seconds (how long an old root's leaves live).
    longest_leaf: AtomicU64,
}

impl CertificateAuthority {
    /// Loads (or generates and persists) the CA from `dir`; without a directory the root lives
    /// in memory only and is lost on restart.
    pub fn open(dir: Option<&Path>, trust_domain: &str) -> Result<Self, CaError> {
        let (authority, origin) = match dir {
            Some(dir) => {
                // A rotation cut short by a stop rewrites the root files to its phase first.
                rotation::repair(dir)?;
                store::load_or_create(dir, trust_domain)?
            }
            None => (
                Authority::generate_root(trust_domain, store::ROOT_TTL)?,
                Origin::Ephemeral,
            ),
        };
        Ok(Self {
            authority: RwLock::new(authority),
            trust_domain: trust_domain.to_owned(),
            dir: dir.map(Path::to_path_buf),
            origin: RwLock::new(origin),
            longest_leaf: AtomicU64::new(0),
        })
    }

    /// Wraps an authority loaded elsewhere (the Kubernetes Secrets, as
    /// [`super::rotation_secret::SecretStore`] reads them); a root rotation then installs
    /// what the Secrets call for with [`CertificateAuthority::install`].
    pub fn from_loaded(authority: Authority, origin: Origin, trust_domain: &str) -> Self {
        Self {
            authority: RwLock::new(authority),
            trust_domain: trust_domain.to_owned(),
            dir: None,
            origin: RwLock::new(origin),
            longest_leaf: AtomicU64::new(0),
        }
    }

    /// The CA folder, when the CA is persisted in one.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The longest leaf lifetime signed since this process started.
    pub fn longest_leaf(&self) -> Duration {
        Duration::from_secs(self.longest_leaf.load(Ordering::Relaxed))
    }

    /// How the signing material was obtained.
    pub fn origin(&self) -> Origin {
        *self.origin.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Signs with `authority` from now on (what a rotation's store calls for after a step,
    /// or a follower loaded), unless it is the material in use already; whether it changed
    /// anything.
    pub fn install(&self, authority: Authority, origin: Origin) -> Result<bool, CaError> {
        let mut current = self.authority.write().map_err(|_| CaError::Poisoned)?;
        let same = current.key_pem() == authority.key_pem()
            && current.chain() == authority.chain()
            && current.roots() == authority.roots();
        *self.origin.write().unwrap_or_else(|e| e.into_inner()) = origin;
        if !same {
            *current = authority;
        }
        Ok(!same)
    }

    /// The certificate that signs leaves (a plugged-in intermediate, else the first root),
    /// DER: what a proxy compares its certificates' issuer with.
    pub fn signer_der(&self) -> Result<Vec<u8>, CaError> {
        let authority = self.read()?;
        let signer = authority.chain().first().or(authority.roots().first());
        Ok(signer.map(|c| c.to_vec()).unwrap_or_default())
    }

    /// The trust domain certificates are issued in.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The published roots, in PEM.
    pub fn roots_pem(&self) -> Result<Vec<String>, CaError> {
        Ok(self.read()?.roots_pem())
    }

    /// When each published root expires, by serial number (hex), and when the signing
    /// certificate (a plugged-in intermediate, else the first root) expires.
    pub fn expiries(&self) -> Result<Expiries, CaError> {
        let authority = self.read()?;
        let mut roots = Vec::new();
        for root in authority.roots() {
            let (_, not_after) = certificate_validity(root)?;
            roots.push((serial_hex(root).unwrap_or_default(), not_after));
        }
        let signer = match authority.chain().first() {
            Some(own) => Some(certificate_validity(own)?.1),
            None => roots.first().map(|(_, not_after)| *not_after),
        };
        Ok(Expiries { roots, signer })
    }

    /// Signs `csr_pem` for `identity`; the chain is leaf first, roots last.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<Vec<String>, CaError> {
        let chain = self.read()?.sign_csr(csr_pem, identity, ttl)?;
        self.longest_leaf
            .fetch_max(ttl.as_secs(), Ordering::Relaxed);
        Ok(chain)
    }

    /// Issues a key and certificate in one step (the controller's own serving certificate).
    pub fn issue(
        &self,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<WorkloadCertificate, CaError> {
        Ok(self.read()?.issue(identity, ttl)?)
    }

    /// Issues the controller's serving certificate: `identity` plus `names` as DNS and IP SANs
    /// (workload certificates, signed from CSRs, carry their identity only).
    pub fn issue_serving(
        &self,
        identity: &Identity,
        names: &[ServingName],
        ttl: Duration,
    ) -> Result<WorkloadCertificate, CaError> {
        Ok(self.read()?.issue_serving(identity, names, ttl)?)
    }

    /// Root rotation, step 1: publishes `root_pem` (the next root) in the trust bundle
    /// alongside the current one, without changing the signer. Once every workload trusts
    /// both, [`CertificateAuthority::rotate`] switches signing. Persisted for a generated root.
    pub fn add_trusted_root(&self, root_pem: &str) -> Result<(), CaError> {
        let roots = certificates_from_pem(root_pem, "trusted root")?;
        let mut authority = self.authority.write().map_err(|_| CaError::Poisoned)?;
        for root in roots {
            authority.add_trusted_root(root);
        }
        self.persist_roots(&authority)
    }

    /// Root rotation, step 2: signs with `next` from now on, keeping every previously
    /// published root in the bundle so certificates issued before stay trusted.
    pub fn rotate(&self, mut next: Authority) -> Result<(), CaError> {
        let mut authority = self.authority.write().map_err(|_| CaError::Poisoned)?;
        for root in authority.roots() {
            next.add_trusted_root(root.clone());
        }
        *authority = next;
        if let (Some(dir), Origin::Generated | Origin::Reloaded) = (&self.dir, self.origin()) {
            store::write_key(dir, authority.key_pem())?;
        }
        self.persist_roots(&authority)
    }

    fn persist_roots(&self, authority: &Authority) -> Result<(), CaError> {
        match (&self.dir, self.origin()) {
            (Some(dir), Origin::Generated | Origin::Reloaded) => {
                store::write_roots(dir, &authority.roots_pem())
            }
            _ => Ok(()),
        }
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Authority>, CaError> {
        self.authority.read().map_err(|_| CaError::Poisoned)
    }
}
