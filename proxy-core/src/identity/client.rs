//! The CA client: Istio's `IstioCertificateService/CreateCertificate`, asking on behalf of a
//! pod's service account with the `ImpersonatedIdentity` metadata field, or (for a proxy
//! that is its own workload, such as a waypoint) for the caller's own identity without it.

use std::collections::BTreeMap;
use std::time::Duration;

use api::ca::IstioCertificateRequest;
use api::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use api::prost_types::{Struct, Value, value::Kind};
use hbone::Identity;
use tonic::transport::Channel;

use super::error::IdentityError;
use super::signer::CertificateSigner;
use crate::control::ControlPlane;

/// The metadata key under which a node proxy names the identity it asks for (Istio's).
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// Largest answer accepted: a chain is a few kilobytes; anything near this is not a chain.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

type Authorize = dyn Fn(&mut tonic::Request<IstioCertificateRequest>) + Send + Sync;

/// Requests certificates from the controller's CA.
pub struct CaClient {
    channel: Channel,
    authorize: Box<Authorize>,
    /// Whether requests name the identity in `ImpersonatedIdentity`.
    impersonate: bool,
}

impl CaClient {
    /// A client on the controller channel, authenticating each call as the channel does.
    pub fn new(control: ControlPlane) -> Self {
        let channel = control.channel.clone();
        Self::with_authorizer(channel, move |request| control.authorize(request))
    }

    /// A client for the caller's own identity: requests carry no `ImpersonatedIdentity`,
    /// so the CA grants the identity the caller's credentials stand for (as for an Istio
    /// waypoint, which is not a node proxy and may not impersonate).
    pub fn own_identity(control: ControlPlane) -> Self {
        Self {
            impersonate: false,
            ..Self::new(control)
        }
    }

    /// A client on any channel to an `IstioCertificateService`; `authorize` adds the
    /// caller's credentials to each request.
    pub fn with_authorizer(
        channel: Channel,
        authorize: impl Fn(&mut tonic::Request<IstioCertificateRequest>) + Send + Sync + 'static,
    ) -> Self {
        Self {
            channel,
            authorize: Box::new(authorize),
            impersonate: true,
        }
    }
}

/// The request for `identity`: the CSR, the validity in seconds and, when `impersonate`,
/// the impersonated identity.
pub(super) fn certificate_request(
    identity: &Identity,
    csr_pem: &str,
    ttl: Duration,
    impersonate: bool,
) -> IstioCertificateRequest {
    IstioCertificateRequest {
        csr: csr_pem.to_owned(),
        validity_duration: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        metadata: impersonate.then(|| Struct {
            fields: BTreeMap::from([(
                IMPERSONATED_IDENTITY.to_owned(),
                Value {
                    kind: Some(Kind::StringValue(identity.to_string())),
                },
            )]),
        }),
    }
}

#[tonic::async_trait]
impl CertificateSigner for CaClient {
    async fn sign(
        &self,
        identity: &Identity,
        csr_pem: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, IdentityError> {
        let mut request = tonic::Request::new(certificate_request(
            identity,
            csr_pem,
            ttl,
            self.impersonate,
        ));
        (self.authorize)(&mut request);
        let mut client = IstioCertificateServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let response = client.create_certificate(request).await.map_err(|status| {
            IdentityError::Ca(format!("{:?}: {}", status.code(), status.message()))
        })?;
        let chain = response.into_inner().cert_chain;
        if chain.is_empty() {
            return Err(IdentityError::Certificate(
                "the CA answered with an empty chain".into(),
            ));
        }
        Ok(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_carries_csr_ttl_and_impersonated_identity() {
        let identity: Identity = "spiffe://cluster.local/ns/shop/sa/orders".parse().unwrap();
        let request = certificate_request(&identity, "CSR", Duration::from_secs(3600), true);
        assert_eq!(request.csr, "CSR");
        assert_eq!(request.validity_duration, 3600);
        let metadata = request.metadata.unwrap();
        assert_eq!(metadata.fields.len(), 1);
        assert_eq!(
            metadata.fields[IMPERSONATED_IDENTITY].kind,
            Some(Kind::StringValue(identity.to_string()))
        );
    }

    #[test]
    fn own_identity_requests_carry_no_impersonation() {
        let identity: Identity = "spiffe://cluster.local/ns/shop/sa/waypoint"
            .parse()
            .unwrap();
        let request = certificate_request(&identity, "CSR", Duration::from_secs(60), false);
        assert_eq!(request.validity_duration, 60);
        assert!(request.metadata.is_none());
    }
}
