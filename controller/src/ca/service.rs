//! `IstioCertificateService`: authenticates the caller, decides the identity and signs.

use std::sync::Arc;

use api::ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use api::ca::{IstioCertificateRequest, IstioCertificateResponse};
use hbone::{CertError, Identity};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use super::auth::{self, Authenticator};
use super::authority::CertificateAuthority;
use super::error::CaError;
use super::policy::{self, NodeDirectory, Refusal};

/// Tuning and trust settings of the CA service.
#[derive(Debug, Clone)]
pub struct CaSettings {
    /// Identities allowed to request certificates on behalf of pods on their node.
    pub trusted_node_identities: Vec<Identity>,
    /// Certificate requests processed at once; more are refused with `ResourceExhausted`.
    pub max_in_flight: usize,
}

impl CaSettings {
    /// The defaults for `trust_domain`: ztunnel's service account in `istio-system` is the
    /// trusted node identity, and 64 CSRs may be in flight.
    pub fn new(trust_domain: &str) -> Result<Self, hbone::IdentityError> {
        Ok(Self {
            trusted_node_identities: vec![Identity::new(trust_domain, "istio-system", "ztunnel")?],
            max_in_flight: 64,
        })
    }
}

/// The gRPC certificate service.
#[derive(Clone)]
pub struct CaService {
    ca: Arc<CertificateAuthority>,
    authenticator: Arc<dyn Authenticator>,
    directory: Arc<dyn NodeDirectory>,
    trusted_nodes: Arc<[Identity]>,
    permits: Arc<Semaphore>,
}

impl CaService {
    /// A service signing with `ca` for callers `authenticator` accepts, checking
    /// impersonation against `directory`.
    pub fn new(
        ca: Arc<CertificateAuthority>,
        authenticator: Arc<dyn Authenticator>,
        directory: Arc<dyn NodeDirectory>,
        config: CaSettings,
    ) -> Self {
        Self {
            ca,
            authenticator,
            directory,
            trusted_nodes: config.trusted_node_identities.into(),
            permits: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
        }
    }

    /// The tonic service to add to a server.
    pub fn into_service(self) -> IstioCertificateServiceServer<Self> {
        IstioCertificateServiceServer::new(self)
    }

    fn refuse(&self, peer: &str, caller: &str, refusal: Refusal) -> Status {
        tracing::warn!(%peer, %caller, reason = %refusal, "refused certificate request");
        crate::metrics::global().ca.refused(refusal.reason());
        match refusal {
            Refusal::Ttl(_) | Refusal::Malformed => Status::invalid_argument(refusal.to_string()),
            Refusal::NotLoaded => Status::unavailable(refusal.to_string()),
            _ => Status::unauthenticated("not allowed to obtain this identity"),
        }
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        // Refuse rather than queue: a burst must not pile up unbounded CSRs in memory; node
        // proxies retry with backoff.
        let _permit = self
            .permits
            .try_acquire()
            .map_err(|_| Status::resource_exhausted("too many certificate requests in flight"))?;
        let peer = auth::peer_of(&request);
        let caller = auth::authenticate_request(
            self.authenticator.as_ref(),
            &request,
            "certificate request",
        )
        .await
        .inspect_err(|_| {
            crate::metrics::global().ca.refused("unauthenticated");
        })?;
        let caller_id = caller.identity.to_string();
        let request = request.into_inner();
        let ttl = policy::ttl(request.validity_duration)
            .map_err(|r| self.refuse(&peer, &caller_id, r))?;
        let impersonated = policy::impersonated(request.metadata.as_ref())
            .map_err(|r| self.refuse(&peer, &caller_id, r))?;
        let identity = policy::grant(
            &caller,
            impersonated,
            self.ca.trust_domain(),
            &self.trusted_nodes,
            self.directory.as_ref(),
        )
        .map_err(|r| self.refuse(&peer, &caller_id, r))?;
        match self.ca.sign_csr(&request.csr, &identity, ttl) {
            Ok(chain) => {
                tracing::info!(%peer, caller = %caller_id, %identity, ttl_s = ttl.as_secs(), "issued certificate");
                crate::metrics::global().ca.issued();
                Ok(Response::new(IstioCertificateResponse {
                    cert_chain: chain,
                }))
            }
            // The CSR names another identity than the one granted.
            Err(CaError::Cert(
                e @ (CertError::San(_)
                | CertError::IdentityMismatch { .. }
                | CertError::Identity(_)),
            )) => {
                tracing::warn!(%peer, caller = %caller_id, %identity, error = %e, "refused certificate request: CSR SAN differs from the granted identity");
                crate::metrics::global().ca.refused("csr_san");
                Err(Status::unauthenticated(
                    "the CSR must carry exactly the granted identity as its URI SAN",
                ))
            }
            Err(CaError::Cert(e)) => {
                tracing::warn!(%peer, caller = %caller_id, error = %e, "refused certificate request: bad CSR");
                crate::metrics::global().ca.refused("bad_csr");
                Err(Status::invalid_argument(format!("invalid CSR: {e}")))
            }
            Err(e) => {
                tracing::error!(error = %e, "CA failure");
                Err(Status::internal("certificate authority unavailable"))
            }
        }
    }
}
