//! Where the Lease is read and written: the Kubernetes API, or a test's memory.

use std::future::Future;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};

/// Why a read or write of the Lease failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Someone else wrote it first (409: created meanwhile, or a stale `resourceVersion`).
    #[error("the Lease changed meanwhile (conflict)")]
    Conflict,
    /// The API server refused or failed the request.
    #[error("{0}")]
    Api(String),
}

/// Reads and writes one Lease, with optimistic concurrency: `replace` sends the
/// `resourceVersion` it was given and fails with [`LeaseError::Conflict`] when it is stale.
pub trait LeaseStore: Send + Sync + 'static {
    /// The Lease, or `None` when it does not exist.
    fn get(&self) -> impl Future<Output = Result<Option<Lease>, LeaseError>> + Send;
    /// Creates the Lease; [`LeaseError::Conflict`] when it already exists.
    fn create(&self, lease: &Lease) -> impl Future<Output = Result<Lease, LeaseError>> + Send;
    /// Replaces the Lease (`PUT`) at its `metadata.resourceVersion`.
    fn replace(&self, lease: &Lease) -> impl Future<Output = Result<Lease, LeaseError>> + Send;
}

/// The Lease `name` in `namespace` of a Kubernetes API server.
#[derive(Clone)]
pub struct KubeLeases {
    api: Api<Lease>,
    name: String,
}

impl KubeLeases {
    /// The Lease `namespace/name` through `client`.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
        }
    }
}

fn api_error(e: kube::Error) -> LeaseError {
    match e {
        kube::Error::Api(s) if s.is_conflict() || s.is_already_exists() => LeaseError::Conflict,
        e => LeaseError::Api(e.to_string()),
    }
}

impl LeaseStore for KubeLeases {
    async fn get(&self) -> Result<Option<Lease>, LeaseError> {
        self.api.get_opt(&self.name).await.map_err(api_error)
    }

    async fn create(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.api
            .create(&PostParams::default(), lease)
            .await
            .map_err(api_error)
    }

    async fn replace(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.api
            .replace(&self.name, &PostParams::default(), lease)
            .await
            .map_err(api_error)
    }
}
