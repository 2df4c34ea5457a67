//! The controller's config model: the Kubernetes objects it reads, and one
//! [`Index`] of them that every source (files, Kubernetes) feeds.

mod index;
mod istio;
mod kube;
pub mod linkerd;
pub mod mesh_config;
mod object;
mod parse;
mod problem;
pub mod routes;
pub mod telemetry;
mod unread;
mod unread_fields;
mod yaml_error;

pub use index::{Index, Stored};
pub use istio::{
    AuthorizationPolicy, AuthorizationPolicySpec, AuthorizationRule, Condition, MutualTls,
    Operation, PeerAuthentication, PeerAuthenticationSpec, PolicyTargetReference, RuleFrom, RuleTo,
    Source, WorkloadSelector,
};
pub use kube::{
    Container, ContainerPort, Gateway, GatewayInfrastructure, GatewaySpec, IntOrString, Listener,
    Namespace, ObjectMeta, OwnerReference, Pod, PodIp, PodSpec, PodStatus, Service, ServicePort,
    ServiceSpec,
};
pub use object::{Object, ObjectKey, RAW_KINDS};
pub use parse::{Parsed, parse_documents};
pub use problem::{Problem, ROUTE_TYPE_CONFLICT, WARNING_PREFIX};
pub use unread::XFCC_ANNOTATION;
pub(crate) use unread::closest;
