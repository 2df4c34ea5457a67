//! Leader election among the controller's replicas (Kubernetes mode): one Lease
//! (`coordination.k8s.io/v1`) in the controller's namespace, held by one replica at a time.
//! Every replica serves xDS and the CA; only the holder writes to the cluster (status
//! conditions, Events, the CA Secret, waypoint objects and trust bundles, root rotation steps).
//! In file (sandbox) mode there is no election: the one process is always the leader.

pub mod election;
pub mod leadership;
pub mod metrics;
pub mod settings;
pub mod store;

pub use election::Elector;
pub use leadership::Leadership;
pub use metrics::LeaderMetrics;
pub use settings::LeaderSettings;
pub use store::{KubeLeases, LeaseError, LeaseStore};

#[cfg(test)]
mod tests;
