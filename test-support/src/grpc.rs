//! What mesh clients put in their gRPC requests to the controller.

use std::collections::BTreeMap;

use api::ca::IstioCertificateRequest;
use api::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use api::prost_types::{Struct, Value, value::Kind};
use tonic::transport::Channel;

/// Adds `authorization: Bearer <token>` to `request`.
pub fn add_token<T>(request: &mut tonic::Request<T>, token: &str) {
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .expect("a token fit for a header"),
    );
}

/// `message` as a request carrying `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    add_token(&mut request, token);
    request
}

/// A certificate request for the CSR `csr_pem`, valid for `ttl_seconds` (0: the CA's
/// default), on behalf of `impersonate` (Istio's `ImpersonatedIdentity`) when given.
pub fn certificate_request(
    csr_pem: &str,
    ttl_seconds: i64,
    impersonate: Option<&str>,
) -> IstioCertificateRequest {
    IstioCertificateRequest {
        csr: csr_pem.to_owned(),
        validity_duration: ttl_seconds,
        metadata: impersonate.map(|identity| Struct {
            fields: BTreeMap::from([(
                "ImpersonatedIdentity".to_owned(),
                Value {
                    kind: Some(Kind::StringValue(identity.to_owned())),
                },
            )]),
        }),
    }
}

/// Asks the CA behind `channel`, as the caller of `token`, to sign `csr_pem` for
/// `ttl_seconds` (on behalf of `impersonate` when given): the chain it answers, leaf first.
pub async fn create_certificate(
    channel: Channel,
    token: &str,
    csr_pem: &str,
    ttl_seconds: i64,
    impersonate: Option<&str>,
) -> Result<Vec<String>, tonic::Status> {
    let request = certificate_request(csr_pem, ttl_seconds, impersonate);
    let response = IstioCertificateServiceClient::new(channel)
        .create_certificate(with_token(request, token))
        .await?;
    Ok(response.into_inner().cert_chain)
}
