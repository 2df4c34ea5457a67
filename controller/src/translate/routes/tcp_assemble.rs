//! TCPRoutes → the TCP routes of one served service: at most one route per port, the oldest
//! TCPRoute winning; a port an HTTPRoute or GRPCRoute routes stays theirs (the Gateway API's
//! route-type precedence: GRPCRoute, HTTPRoute, then TCPRoute); a routed port is TCP.

use api::waypoint::{Port, Protocol, TcpRoute};

use super::super::service_key::ServiceKey;
use super::gateway_api::Attached;
use super::tcp_route::{TcpAttached, TcpParent};
use crate::model::{Problem, ROUTE_TYPE_CONFLICT};
use crate::translate::bindings::WaypointKey;

/// What the TCP routes of one service are computed from.
pub(crate) struct TcpScope<'a> {
    /// The service.
    pub service: &'a ServiceKey,
    /// The waypoint serving it.
    pub waypoint: &'a WaypointKey,
    /// Every TCPRoute's contribution.
    pub tcp: &'a [TcpAttached],
    /// Every HTTPRoute's and GRPCRoute's contribution.
    pub http: &'a [Attached],
}

/// The TCP routes of the service, one per routed port; each routed port in `ports` is
/// turned into a TCP port.
pub(crate) fn tcp_routes(
    scope: &TcpScope<'_>,
    ports: &mut [Port],
    problems: &mut Vec<Problem>,
) -> Vec<TcpRoute> {
    let mut attached: Vec<(&TcpAttached, Option<u16>)> = Vec::new();
    for route in scope.tcp {
        for parent in route.parents.iter().filter(|p| applies(p, scope)) {
            attached.push((route, parent.port()));
        }
    }
    attached.sort_by(|(x, _), (y, _)| x.obj.order().cmp(&y.obj.order()));
    let mut out = Vec::new();
    for port in ports.iter_mut() {
        let Ok(number) = u16::try_from(port.port) else {
            continue;
        };
        let mut routing = attached
            .iter()
            .filter(|(_, p)| p.is_none_or(|p| p == number))
            .map(|(route, _)| *route);
        let Some(winner) = routing.next() else {
            continue;
        };
        let service = scope.service;
        for loser in routing.filter(|r| r.obj != winner.obj) {
            problems.push(loser.obj.problem(
                "spec.parentRefs",
                format!(
                    "warning: port {number} of Service {service} is routed by the older \
                     TCPRoute {}/{}; this route is not used there",
                    winner.obj.namespace, winner.obj.name
                ),
            ));
        }
        if let Some(http) = http_route_on(scope, port) {
            problems.push(winner.obj.problem(
                "spec.parentRefs",
                format!(
                    "warning: port {number} of Service {service} is also routed by {} {}/{}, \
                     which {ROUTE_TYPE_CONFLICT}; this route is not used there",
                    http.kind, http.namespace, http.name
                ),
            ));
            continue;
        }
        let declared = match Protocol::try_from(port.protocol).unwrap_or_default() {
            Protocol::Http => Some("HTTP"),
            Protocol::Http2 => Some("HTTP/2"),
            Protocol::Grpc => Some("gRPC"),
            Protocol::Tcp | Protocol::Unspecified => None,
        };
        if let Some(declared) = declared {
            problems.push(winner.obj.problem(
                "spec.parentRefs",
                format!(
                    "warning: port {number} ({:?}) of Service {service} is declared {declared}; \
                     this TCPRoute makes it TCP, without HTTP routing, policy or metrics",
                    port.name,
                ),
            ));
        }
        port.protocol = Protocol::Tcp as i32;
        out.push(TcpRoute {
            port: port.port,
            source: Some(winner.obj.source()),
            rule_name: winner.rule_name.clone(),
            destinations: winner.destinations.clone(),
            unresolved_weight: winner.unresolved_weight,
        });
    }
    out
}

/// Whether a TCPRoute parent names the scope's service or its waypoint.
fn applies(parent: &TcpParent, scope: &TcpScope<'_>) -> bool {
    match parent {
        TcpParent::Service { service, .. } => service == scope.service,
        TcpParent::Waypoint {
            namespace, name, ..
        } => *namespace == scope.waypoint.namespace && *name == scope.waypoint.name,
    }
}

/// The oldest HTTPRoute or GRPCRoute routing `port` of the service: one naming the port, or
/// naming no port when the port is not declared TCP (where HTTP routes would apply).
fn http_route_on<'a>(scope: &TcpScope<'a>, port: &Port) -> Option<&'a super::catalog::Obj> {
    let declared_tcp = port.protocol == Protocol::Tcp as i32;
    let mut routing: Vec<&super::catalog::Obj> = scope
        .http
        .iter()
        .filter(|a| {
            a.parents.iter().any(|p| {
                &p.service == scope.service
                    && match p.port {
                        Some(n) => u32::from(n) == port.port,
                        None => !declared_tcp,
                    }
            })
        })
        .map(|a| &a.obj)
        .collect();
    routing.sort_by(|x, y| x.order().cmp(&y.order()));
    routing.first().copied()
}
