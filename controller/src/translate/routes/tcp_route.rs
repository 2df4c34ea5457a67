//! Gateway API TCPRoute attached to a Service (GAMMA) or to a waypoint Gateway → weighted
//! TCP backends of service ports.
//!
//! A TCP connection carries nothing to match on, so a route is one list of weighted
//! backends. A backend that does not resolve (no such Service or port, another kind, another
//! namespace without a ReferenceGrant) keeps its weight: the connections it is given are
//! refused, as the Gateway API asks, and the route is reported with `ResolvedRefs` False.

use api::waypoint::WeightedDestination;

use super::super::service_key::ServiceKey;
use super::super::waypoints::WAYPOINT_CLASS;
use super::catalog::{Catalog, Invalid, Obj};
use crate::model::Problem;
use crate::model::routes::{ParentReference, TcpBackendRef, TcpRoute};

/// Gateway API group, the default of a parentRef.
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// What a TCPRoute attaches to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TcpParent {
    /// A Service (GAMMA), on one port or (`None`) every port.
    Service {
        /// The Service.
        service: ServiceKey,
        /// Service port; `None`: every port.
        port: Option<u16>,
    },
    /// A waypoint Gateway: every Service it serves, on one port or every port.
    Waypoint {
        /// Namespace of the Gateway.
        namespace: String,
        /// Name of the Gateway.
        name: String,
        /// Service port; `None`: every port.
        port: Option<u16>,
    },
}

impl TcpParent {
    /// The port the parent limits the route to.
    pub fn port(&self) -> Option<u16> {
        match self {
            TcpParent::Service { port, .. } | TcpParent::Waypoint { port, .. } => *port,
        }
    }
}

/// What one TCPRoute contributes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TcpAttached {
    /// The object.
    pub obj: Obj,
    /// Its mesh parents (empty: not a mesh route).
    pub parents: Vec<TcpParent>,
    /// Its rule's name (`rule-0` when unnamed).
    pub rule_name: String,
    /// The backends that resolved, with weights > 0 and their ports.
    pub destinations: Vec<WeightedDestination>,
    /// The weight of the backends that did not resolve (their connections are refused).
    pub unresolved_weight: u32,
}

/// Translates a TCPRoute; problems that leave the route in force (an unresolved backend,
/// rules past the first) go to `warnings`.
pub(crate) fn tcp_route(
    obj: &Obj,
    r: &TcpRoute,
    catalog: &Catalog<'_>,
    warnings: &mut Vec<Problem>,
) -> Result<TcpAttached, Invalid> {
    let parents = parents(obj, &r.spec.parent_refs, catalog, warnings)?;
    let mut out = TcpAttached {
        obj: obj.clone(),
        parents,
        rule_name: String::new(),
        destinations: Vec::new(),
        unresolved_weight: 0,
    };
    if out.parents.is_empty() {
        return Ok(out);
    }
    let Some((rule, rest)) = r.spec.rules.split_first() else {
        return Err(Invalid::new("spec.rules", "a TCPRoute needs one rule"));
    };
    if !rest.is_empty() {
        warnings.push(obj.problem(
            "spec.rules[1]",
            "warning: a TCP connection has nothing to match on, so only the first rule is used",
        ));
    }
    out.rule_name = rule.name.clone().unwrap_or_else(|| "rule-0".to_string());
    if rule.backend_refs.is_empty() {
        return Err(Invalid::new(
            "spec.rules[0].backendRefs",
            "a TCPRoute rule needs at least one backend",
        ));
    }
    for (k, b) in rule.backend_refs.iter().enumerate() {
        let field = format!("spec.rules[0].backendRefs[{k}]");
        let weight = b.weight.unwrap_or(1);
        let Some(port) = b.port.filter(|p| *p > 0) else {
            return Err(Invalid::new(
                format!("{field}.port"),
                "a Service backend needs its port",
            ));
        };
        match backend(obj, catalog, b, port) {
            Ok(service) if weight > 0 => out.destinations.push(WeightedDestination {
                destination: Some(service.destination(u32::from(port), "")),
                weight,
                ..Default::default()
            }),
            Ok(_) => {}
            Err((at, message)) => {
                out.unresolved_weight = out.unresolved_weight.saturating_add(weight);
                let effect = if weight > 0 {
                    "the connections given to this backend are refused"
                } else {
                    "its weight is 0, so no connection is refused"
                };
                warnings.push(obj.problem(
                    format!("{field}.{at}"),
                    format!("warning: {message}; {effect}"),
                ));
            }
        }
    }
    if out.destinations.is_empty() && out.unresolved_weight == 0 {
        warnings.push(obj.problem(
            "spec.rules[0].backendRefs",
            "warning: weights add up to 0: every connection is refused",
        ));
        out.unresolved_weight = 1;
    }
    Ok(out)
}

/// The Service a backend names, or the field and reason it does not resolve.
fn backend(
    obj: &Obj,
    catalog: &Catalog<'_>,
    b: &TcpBackendRef,
    port: u16,
) -> Result<ServiceKey, (&'static str, String)> {
    let kind = b.kind.as_deref().unwrap_or("Service");
    if kind != "Service" || !matches!(b.group.as_deref().unwrap_or(""), "" | "core") {
        return Err((
            "kind",
            format!("backend kind {kind:?} is not supported (Service)"),
        ));
    }
    let ns = b.namespace.as_deref().unwrap_or(&obj.namespace);
    if ns != obj.namespace {
        return Err((
            "namespace",
            "cross-namespace backends need a ReferenceGrant, which is not supported".to_string(),
        ));
    }
    let key = ServiceKey::new(ns, &b.name);
    let Some(svc) = catalog.service(&key) else {
        return Err(("name", format!("no Service {key}")));
    };
    if !svc.spec.ports.iter().any(|p| p.port == port) {
        return Err(("port", format!("Service {key} has no port {port}")));
    }
    Ok(key)
}

/// The mesh parents of a TCPRoute: Services of its own namespace and waypoint Gateways.
/// Other Gateways are not the mesh's; a parent in another namespace is reported and skipped.
fn parents(
    obj: &Obj,
    refs: &[ParentReference],
    catalog: &Catalog<'_>,
    warnings: &mut Vec<Problem>,
) -> Result<Vec<TcpParent>, Invalid> {
    let mut out = Vec::new();
    for (i, p) in refs.iter().enumerate() {
        let field = format!("spec.parentRefs[{i}]");
        let kind = p.kind.as_deref().unwrap_or("Gateway");
        let group = p.group.as_deref().unwrap_or(GATEWAY_GROUP);
        let ns = p.namespace.as_deref().unwrap_or(&obj.namespace);
        if p.port == Some(0) {
            return Err(Invalid::new(
                format!("{field}.port"),
                "port 0 is not a port",
            ));
        }
        let parent = match (kind, group) {
            ("Service", "" | "core") => service_parent(catalog, p, ns, &field)?,
            ("Gateway", GATEWAY_GROUP) => match waypoint_parent(catalog, p, ns, &field)? {
                Some(parent) => parent,
                None => continue,
            },
            ("Service", other) => {
                warnings.push(obj.problem(
                    format!("{field}.group"),
                    format!(
                        "warning: a Service parent needs group \"\" (not {other:?}); parent skipped"
                    ),
                ));
                continue;
            }
            _ => continue,
        };
        if ns != obj.namespace {
            warnings.push(obj.problem(
                format!("{field}.namespace"),
                format!(
                    "warning: a parent in another namespace ({ns}) is not supported; parent skipped"
                ),
            ));
            continue;
        }
        if !out.contains(&parent) {
            out.push(parent);
        }
    }
    Ok(out)
}

/// A Service parent; `sectionName` names one of its ports.
fn service_parent(
    catalog: &Catalog<'_>,
    p: &ParentReference,
    ns: &str,
    field: &str,
) -> Result<TcpParent, Invalid> {
    let key = ServiceKey::new(ns, &p.name);
    let Some(svc) = catalog.service(&key) else {
        return Err(Invalid::new(
            format!("{field}.name"),
            format!("no Service {key}"),
        ));
    };
    let mut port = p.port;
    if let Some(section) = &p.section_name {
        match svc.spec.ports.iter().find(|sp| &sp.name == section) {
            Some(sp) if port.is_none_or(|n| n == sp.port) => port = Some(sp.port),
            _ => {
                return Err(Invalid::new(
                    format!("{field}.sectionName"),
                    format!("Service {key} has no port named {section:?}"),
                ));
            }
        }
    }
    if let Some(n) = port
        && !svc.spec.ports.iter().any(|sp| sp.port == n)
    {
        return Err(Invalid::new(
            format!("{field}.port"),
            format!("Service {key} has no port {n}"),
        ));
    }
    Ok(TcpParent::Service { service: key, port })
}

/// A Gateway parent, if it is a waypoint (class `istio-waypoint`); `sectionName` must name one
/// of its listeners, and `port` is the port of the services it serves.
fn waypoint_parent(
    catalog: &Catalog<'_>,
    p: &ParentReference,
    ns: &str,
    field: &str,
) -> Result<Option<TcpParent>, Invalid> {
    let gateway = catalog
        .index
        .gateways()
        .map(|(_, g)| g)
        .find(|g| g.metadata.namespace == ns && g.metadata.name == p.name);
    let Some(gateway) = gateway.filter(|g| g.spec.gateway_class_name == WAYPOINT_CLASS) else {
        // Another implementation's Gateway (or none): not mesh routing.
        return Ok(None);
    };
    if let Some(section) = &p.section_name
        && !gateway.spec.listeners.iter().any(|l| &l.name == section)
    {
        return Err(Invalid::new(
            format!("{field}.sectionName"),
            format!("waypoint {ns}/{} has no listener {section:?}", p.name),
        ));
    }
    Ok(Some(TcpParent::Waypoint {
        namespace: ns.to_string(),
        name: p.name.clone(),
        port: p.port,
    }))
}
