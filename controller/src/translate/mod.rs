//! Translation of the [`Index`] into the xDS resources the controller serves:
//! `istio.workload.Address` (workloads and services),
//! `istio.security.Authorization`, and one `mesh.waypoint.v1.Waypoint` per
//! waypoint (routes, upstream policies, rate limits, L7 authorization).
//!
//! Translation is a pure function of the index ([`translate`]); the
//! [`Translator`] adds one piece of memory, the last good translation of each
//! policy and traffic object, so that an invalid edit leaves the previous
//! version in force.

mod admission;
mod authorization;
mod bindings;
mod dump;
mod fail_closed;
mod labels;
mod last_good;
mod linkerd_policy;
mod options;
mod peer_authentication;
mod references;
mod routes;
mod service_key;
mod services;
mod snapshot;
mod telemetry;
mod translator;
mod version;
mod waypoint_policy;
mod waypoints;
mod workloads;

pub use crate::model::Problem;
pub use admission::ALLOW_WAYPOINT_PREFIX;
pub use dump::waypoint_json;
pub(crate) use fail_closed::{PEER_AUTHENTICATION_CONSEQUENCE, StandIn};
pub(crate) use options::service_hostname;
pub use options::{DEFAULT_CLUSTER_NETWORKS, DOMAIN_SUFFIX, TranslateOptions};
pub use routes::RATE_LIMIT_ANNOTATION;
pub(crate) use services::ip_text;
pub use snapshot::{Published, Resource, Snapshot};
pub use translator::{Translation, Translator, translate};
pub use waypoints::{GATEWAY_NAME_LABEL, HBONE_PORT, USE_WAYPOINT, WAYPOINT_CLASS};
