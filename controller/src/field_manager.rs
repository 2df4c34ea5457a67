//! The name the controller writes Kubernetes objects under (server-side apply): the CA's
//! Secrets and trust bundles, and the waypoints it deploys.

/// Field manager of every server-side apply by the controller.
pub const FIELD_MANAGER: &str = "mesh-controller";
