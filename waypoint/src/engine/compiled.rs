//! The [`Engine`]: one compiled config version with the runtime state it counts in, and what
//! it answers about connections (the protocol of a port, L4 authorization). Requests go
//! through [`Engine::handle`], in [`handle`](super::handle), which builds on this module.

use std::sync::Arc;

use super::authz::{self, Input};
use super::compile::ConfigError;
use super::config::CompiledConfig;
use super::origin::{Caller, Target};
use super::runtime::Runtime;
use super::tcp_route::TcpChoice;
use super::upstream::EndpointInfo;

/// A compiled waypoint config.
pub struct Engine {
    pub(super) config: CompiledConfig,
    pub(super) runtime: Arc<Runtime>,
}

impl Engine {
    /// Compiles the controller's config (regexes, weights, policies); refuses it as a whole
    /// when any part is unusable.
    pub fn compile(
        config: &api::waypoint::Waypoint,
        runtime: Arc<Runtime>,
    ) -> Result<Engine, ConfigError> {
        let compiled = CompiledConfig::compile(config, &runtime.metrics.routes)?;
        runtime.retain(&compiled.hostnames());
        runtime.limit_buckets.retain(&compiled.workload_limits);
        runtime.outlier_detection(compiled.outlier_specs());
        Ok(Engine {
            config: compiled,
            runtime,
        })
    }

    /// Whether `target` is a service port declared TCP (pass bytes through with L4 policy
    /// only), HTTP, or unknown (detect).
    pub fn port_protocol(&self, target: &Target) -> api::waypoint::Protocol {
        self.config
            .by_vip
            .get(&target.address.ip())
            .map_or(api::waypoint::Protocol::Unspecified, |s| {
                s.protocol(target.address.port())
            })
    }

    /// The backend of one connection to `target`, when a TCP route routes its port: picked
    /// by weight, afresh for each connection. `None`: no TCP route (the service itself).
    pub fn tcp_backend(&self, target: &Target) -> Option<TcpChoice> {
        let service = self.config.by_vip.get(&target.address.ip())?;
        let route = service.tcp_route(target.address.port())?;
        Some(route.pick())
    }

    /// L4 authorization for a connection (used for TCP pass-through): DENY/ALLOW policies
    /// without HTTP attributes. Policies scoped to workloads are left to
    /// [`Engine::authorize_connection_to`], once the endpoint is known.
    pub fn authorize_connection(&self, caller: &Caller, target: &Target) -> bool {
        self.connection_check(caller, target, None)
    }

    /// L4 authorization for a connection to a chosen `endpoint`: as
    /// [`Engine::authorize_connection`], plus the policies scoped to that workload.
    pub fn authorize_connection_to(
        &self,
        caller: &Caller,
        target: &Target,
        endpoint: &EndpointInfo,
    ) -> bool {
        self.connection_check(caller, target, Some(&endpoint.uid))
    }

    fn connection_check(&self, caller: &Caller, target: &Target, uid: Option<&str>) -> bool {
        let principal = caller.identity.as_ref().map(authz::principal);
        let input = Input {
            principal: principal.as_deref(),
            namespace: caller.identity.as_ref().map(|i| i.namespace()),
            source_ip: caller.ip,
            remote_ip: caller.ip,
            destination_ip: target.address.ip(),
            destination_port: target.address.port(),
            http: None,
        };
        let service = self
            .config
            .by_vip
            .get(&target.address.ip())
            .map_or("", |s| s.hostname.as_str());
        let pending = match self.config.authz.check_request(&input, service) {
            Ok(p) => p,
            Err(denied) => {
                tracing::debug!(%denied, "connection denied");
                return false;
            }
        };
        match uid {
            Some(uid) => self
                .config
                .authz
                .check_endpoint(&input, pending, uid)
                .is_ok(),
            None => true,
        }
    }
}
