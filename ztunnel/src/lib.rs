//! ztunnel: the per-node L4 tunnel of the ambient mesh.
//!
//! Two roles share this crate and binary:
//!
//! - the **proxy** ([`app::run_proxy`]): learns workloads, services and policies from the
//!   controller over delta xDS (`proxy_core::xds`, `proxy_core::state`), obtains certificates
//!   for the service accounts of its node's pods (`proxy_core::identity`), receives each enrolled pod's network
//!   namespace over ZDS ([`inpod`]) and runs listeners inside it ([`proxy`]): outbound 15001,
//!   inbound plaintext 15006, inbound HBONE 15008;
//! - the **node agent** ([`agent`]): decides which pods on its node are enrolled, installs the
//!   in-pod redirection rules inside their namespaces and hands the namespaces to the proxy over
//!   ZDS ([`zds`]).

pub mod agent;
pub mod app;
pub mod inpod;
pub mod proxy;
pub mod settings;
pub mod zds;
