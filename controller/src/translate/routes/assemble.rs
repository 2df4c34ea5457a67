//! Contributions → one configuration per waypoint: the services it serves
//! with their ports, routes (by source precedence) and rate limits, and the
//! upstream policy of every service it serves or sends to.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use api::waypoint::{
    ConfigSource, Destination, DestinationPolicy, Forward, LocalRateLimit, Port, Protocol, Route,
    Service, Subset, TrafficPolicy, Waypoint, WeightedDestination, route,
};

use super::super::service_key::ServiceKey;
use super::catalog::{Catalog, Obj};
use super::destination_rule::RulePolicy;
use super::gateway_api::RankedRoute;
use super::parts::default_retry;
use super::rate_limit::LimitTarget;
use super::service_profile::Profile;
use super::sources::Sources;
use super::tcp_assemble::{TcpScope, tcp_routes};
use super::tcp_route::TcpParent;
use super::traffic_split::Split;
use super::virtual_service::VsRoutes;
use crate::model::{self, IntOrString, Problem};
use crate::translate::bindings::{Bindings, WaypointKey};
use crate::translate::labels::selects;
use crate::translate::options::DOMAIN_SUFFIX;
use crate::translate::waypoints::Waypoints;

/// What assembly reads.
pub(crate) struct Assembly<'a> {
    /// Services and pods.
    pub catalog: &'a Catalog<'a>,
    /// Every object's contribution.
    pub sources: &'a Sources,
    /// Which waypoint serves which service.
    pub bindings: &'a Bindings,
    /// The waypoints.
    pub waypoints: &'a Waypoints,
    /// Namespace whose EnvoyFilters apply everywhere.
    pub root_namespace: &'a str,
}

/// Builds the configuration of every waypoint (authorization policies are
/// added by the caller).
pub(crate) fn assemble(
    a: &Assembly<'_>,
    problems: &mut Vec<Problem>,
) -> Vec<(WaypointKey, Waypoint)> {
    report_unbound(a, problems);
    let mut out = Vec::new();
    for w in a.waypoints.iter() {
        let key = WaypointKey::of(w);
        let mut services = Vec::new();
        for service in a.bindings.served_by(&key) {
            let Some(svc) = a.catalog.service(service) else {
                continue;
            };
            let mut ports = ports(svc);
            let scope = TcpScope {
                service,
                waypoint: &key,
                tcp: &a.sources.tcp,
                http: &a.sources.attached,
            };
            let tcp_routes = tcp_routes(&scope, &mut ports, problems);
            services.push(Service {
                hostname: service.hostname(),
                namespace: service.namespace.clone(),
                name: service.name.clone(),
                addresses: addresses(svc),
                ports,
                routes: routes(a, service, problems),
                rate_limit: rate_limit(a, service, &key),
                telemetry: None,
                tcp_routes,
            });
        }
        let destinations = policies(a, &mut services, problems);
        out.push((
            key,
            Waypoint {
                name: w.name.clone(),
                namespace: w.namespace.clone(),
                services,
                destinations,
                authorization_policies: Vec::new(),
                xfcc_include_client_identity: w.xfcc_include_client_identity,
                tracing_providers: Vec::new(),
                workload_rate_limits: Vec::new(),
            },
        ));
    }
    out
}

fn addresses(svc: &model::Service) -> Vec<String> {
    // Bad addresses are reported by the service translation.
    svc.spec
        .cluster_ip_list()
        .iter()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| ip.to_string())
        .collect()
}

fn ports(svc: &model::Service) -> Vec<Port> {
    svc.spec
        .ports
        .iter()
        .filter(|p| p.port > 0)
        .filter_map(|p| {
            let target_port = match &p.target_port {
                None => u32::from(p.port),
                // The service translation reports an out-of-range port and leaves it out:
                // so does the waypoint's view of the service.
                Some(IntOrString::Int(n)) => u32::from(u16::try_from(*n).ok().filter(|n| *n > 0)?),
                // Named: resolved per endpoint.
                Some(IntOrString::String(_)) => 0,
            };
            Some(Port {
                name: p.name.clone(),
                port: u32::from(p.port),
                target_port,
                protocol: protocol(p) as i32,
            })
        })
        .collect()
}

/// Istio's protocol selection: `appProtocol`, else the port name's prefix
/// (`http-web` → HTTP).
pub(crate) fn protocol(p: &model::ServicePort) -> Protocol {
    if p.protocol.as_deref() == Some("UDP") {
        return Protocol::Tcp;
    }
    let name = match p.app_protocol.as_deref() {
        Some("kubernetes.io/h2c") => return Protocol::Http2,
        Some("kubernetes.io/ws") => return Protocol::Http,
        Some("kubernetes.io/wss") => return Protocol::Tcp,
        Some(other) => other,
        None => &p.name,
    };
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("grpc-web") {
        return Protocol::Http;
    }
    match lower.split('-').next().unwrap_or_default() {
        "http" | "http_proxy" => Protocol::Http,
        "http2" => Protocol::Http2,
        "grpc" => Protocol::Grpc,
        "tcp" | "tls" | "https" | "mongo" | "mysql" | "redis" | "udp" => Protocol::Tcp,
        _ => Protocol::Unspecified,
    }
}

/// Warns about objects that configure only services no waypoint serves: in
/// an ambient mesh they would silently do nothing.
fn report_unbound(a: &Assembly<'_>, problems: &mut Vec<Problem>) {
    let s = a.sources;
    let mut check = |obj: &Obj, services: Vec<&ServiceKey>| {
        if let Some(first) = services
            .iter()
            .find(|k| !a.bindings.services.contains_key(**k))
            && !services
                .iter()
                .any(|k| a.bindings.services.contains_key(*k))
        {
            problems.push(obj.problem(
                "",
                format!(
                    "warning: Service {first} is not served by a waypoint (label istio.io/use-waypoint), so this configuration has no effect"
                ),
            ));
        }
    };
    for x in &s.attached {
        check(&x.obj, x.parents.iter().map(|p| &p.service).collect());
    }
    for x in &s.tcp {
        let services: Vec<&ServiceKey> = x
            .parents
            .iter()
            .filter_map(|p| match p {
                TcpParent::Service { service, .. } => Some(service),
                TcpParent::Waypoint { .. } => None,
            })
            .collect();
        // A route on a waypoint applies to whatever it serves.
        if services.len() == x.parents.len() {
            check(&x.obj, services);
        }
    }
    for x in &s.virtuals {
        check(&x.obj, x.hosts.iter().collect());
    }
    for x in &s.splits {
        check(&x.obj, vec![&x.service]);
    }
    for x in &s.profiles {
        check(&x.obj, x.service.iter().collect());
    }
}

fn shadowed(obj: &Obj, by: &str, service: &ServiceKey) -> Problem {
    let message = format!(
        "warning: routes of Service {service} come from {by}, which takes precedence; \
         this object's routes are not used there"
    );
    obj.problem("", message)
}

fn oldest<'s, T>(items: impl Iterator<Item = &'s T>, obj: impl Fn(&T) -> &Obj) -> Vec<&'s T>
where
    T: 's,
{
    let mut v: Vec<&T> = items.collect();
    v.sort_by(|x, y| obj(x).order().cmp(&obj(y).order()));
    v
}

fn describe(obj: &Obj) -> String {
    format!("{} {}/{}", obj.kind, obj.namespace, obj.name)
}

/// The routes of one service, by source precedence: HTTPRoutes and GRPCRoutes attached to
/// it, else its oldest VirtualService, else a default route (to a TrafficSplit's backends, a
/// ServiceProfile's overrides or the service itself) after the ServiceProfile's routes.
/// Sources that lose are reported as shadowed.
fn routes(a: &Assembly<'_>, service: &ServiceKey, problems: &mut Vec<Problem>) -> Vec<Route> {
    let s = a.sources;
    let virtuals = oldest(
        s.virtuals.iter().filter(|v| v.hosts.contains(service)),
        |v| &v.obj,
    );
    let splits = oldest(s.splits.iter().filter(|x| &x.service == service), |x| {
        &x.obj
    });
    let profile = s
        .profiles
        .iter()
        .find(|p| p.service.as_ref() == Some(service));
    let losers = Losers {
        service,
        splits: &splits,
        profile,
    };
    if let Some((by, attached)) = attached_routes(s, service) {
        losers.report(&by, &virtuals, problems);
        return attached;
    }
    if let Some((first, rest)) = virtuals.split_first() {
        losers.report(&describe(&first.obj), rest, problems);
        return first.routes.clone();
    }
    default_routes(service, &splits, profile, problems)
}

/// The routes of every HTTPRoute / GRPCRoute attached to `service`, ranked as the Gateway
/// API says, with the first route object's description; `None` without any.
fn attached_routes(s: &Sources, service: &ServiceKey) -> Option<(String, Vec<Route>)> {
    let mut ranked: Vec<RankedRoute> = Vec::new();
    let mut winner: Option<String> = None;
    for attached in &s.attached {
        for parent in attached.parents.iter().filter(|p| &p.service == service) {
            winner.get_or_insert_with(|| describe(&attached.obj));
            for r in &attached.routes {
                let mut r = r.clone();
                if let Some(port) = parent.port {
                    r.route.name = format!("{}:{port}", r.route.name);
                    for m in &mut r.route.matches {
                        m.port = u32::from(port);
                    }
                }
                if let Some(route::Action::Forward(f)) = &mut r.route.action
                    && f.destinations.is_empty()
                {
                    f.destinations = service.only_destination();
                }
                ranked.push(r);
            }
        }
    }
    let by = winner?;
    ranked.sort_by(|x, y| x.rank.cmp(&y.rank));
    Some((by, ranked.into_iter().map(|r| r.route).collect()))
}

/// The lower-precedence sources of a service's routes, reported when a higher one wins.
struct Losers<'s> {
    service: &'s ServiceKey,
    splits: &'s [&'s Split],
    profile: Option<&'s Profile>,
}

impl Losers<'_> {
    /// Reports `virtuals`, every split and a profile with routes or overrides as shadowed
    /// by `by`.
    fn report(&self, by: &str, virtuals: &[&VsRoutes], problems: &mut Vec<Problem>) {
        for v in virtuals {
            problems.push(shadowed(&v.obj, by, self.service));
        }
        for x in self.splits {
            problems.push(shadowed(&x.obj, by, self.service));
        }
        let configured = |p: &&Profile| !p.routes.is_empty() || !p.overrides.is_empty();
        if let Some(p) = self.profile.filter(configured) {
            problems.push(shadowed(&p.obj, by, self.service));
        }
    }
}

/// The default route of a service (to the oldest split's backends, the profile's overrides,
/// or the service itself), preceded by the profile's own routes to the same destinations.
fn default_routes(
    service: &ServiceKey,
    splits: &[&Split],
    profile: Option<&Profile>,
    problems: &mut Vec<Problem>,
) -> Vec<Route> {
    let (destinations, source) = match splits.split_first() {
        Some((first, rest)) => {
            let by = describe(&first.obj);
            for x in rest {
                problems.push(shadowed(&x.obj, &by, service));
            }
            if let Some(p) = profile.filter(|p| !p.overrides.is_empty()) {
                let message = format!(
                    "warning: destinations of Service {service} come from {by}, which takes \
                     precedence; dstOverrides are not used"
                );
                problems.push(p.obj.problem("spec.dstOverrides", message));
            }
            (first.destinations.clone(), first.obj.source())
        }
        None => match profile.filter(|p| !p.overrides.is_empty()) {
            Some(p) => (p.overrides.clone(), p.obj.source()),
            None => (
                service.only_destination(),
                ConfigSource {
                    kind: "Service".to_string(),
                    namespace: service.namespace.clone(),
                    name: service.name.clone(),
                },
            ),
        },
    };
    let forward = |timeout, retry| {
        Some(route::Action::Forward(Forward {
            destinations: destinations.clone(),
            timeout,
            retry,
            ..Default::default()
        }))
    };
    let profile_routes = profile
        .into_iter()
        .flat_map(|p| p.routes.iter().map(move |r| (p, r)));
    let mut out: Vec<Route> = profile_routes
        .map(|(p, r)| Route {
            name: format!("{}/{}/{}", p.obj.namespace, p.obj.name, r.name),
            rule_name: r.name.clone(),
            source: Some(p.obj.source()),
            matches: r.matches.clone(),
            action: forward(
                r.timeout,
                Some(r.retry.clone().unwrap_or_else(default_retry)),
            ),
            ..Default::default()
        })
        .collect();
    out.push(Route {
        name: "default".to_string(),
        source: Some(source),
        matches: Vec::new(),
        action: forward(None, Some(default_retry())),
        ..Default::default()
    });
    out
}

/// The rate limit of a service: its annotation, else the oldest EnvoyFilter
/// that applies to it.
fn rate_limit(
    a: &Assembly<'_>,
    service: &ServiceKey,
    waypoint: &WaypointKey,
) -> Option<LocalRateLimit> {
    if let Some((_, limit)) = a.sources.annotations.get(service) {
        return Some(limit.clone());
    }
    let filters = oldest(
        a.sources.filters.iter().filter(|f| f.limit.is_some()),
        |f| &f.obj,
    );
    filters
        .into_iter()
        .find(|f| filter_applies(a, f, service, waypoint))
        .and_then(|f| f.limit.clone())
}

fn filter_applies(
    a: &Assembly<'_>,
    f: &super::rate_limit::FilterLimit,
    service: &ServiceKey,
    waypoint: &WaypointKey,
) -> bool {
    match &f.target {
        LimitTarget::Selector(labels) => {
            let in_scope =
                f.obj.namespace == service.namespace || f.obj.namespace == a.root_namespace;
            if !in_scope {
                return false;
            }
            if labels.is_empty() {
                return true;
            }
            // The service's pods are the proxies the filter selects.
            let Some(selector) = a
                .catalog
                .service(service)
                .and_then(|s| s.spec.selector.as_ref())
                .filter(|s| !s.is_empty())
            else {
                return false;
            };
            a.catalog.index.pods().any(|(_, p)| {
                p.metadata.namespace == service.namespace
                    && selects(selector, &p.metadata.labels)
                    && selects(labels, &p.metadata.labels)
            })
        }
        LimitTarget::Refs(refs) => refs.iter().any(|r| {
            let ns = if r.namespace.is_empty() {
                &f.obj.namespace
            } else {
                &r.namespace
            };
            match r.kind.as_str() {
                "Service" => *ns == service.namespace && r.name == service.name,
                "Gateway" => *ns == waypoint.namespace && r.name == waypoint.name,
                _ => false,
            }
        }),
    }
}

/// The service a destination names.
fn key_of(d: &Destination) -> Option<ServiceKey> {
    let suffix = format!(".{}.svc.{DOMAIN_SUFFIX}", d.namespace);
    d.hostname
        .strip_suffix(&suffix)
        .map(|name| ServiceKey::new(&d.namespace, name))
}

fn destinations_mut(r: &mut Route) -> Vec<&mut Destination> {
    let mut out = Vec::new();
    if let Some(route::Action::Forward(f)) = &mut r.action {
        let Forward {
            destinations,
            mirrors,
            ..
        } = f;
        out.extend(
            destinations
                .iter_mut()
                .filter_map(|w: &mut WeightedDestination| w.destination.as_mut()),
        );
        out.extend(mirrors.iter_mut().filter_map(|m| m.destination.as_mut()));
    }
    out
}

/// Upstream policies of every served or referenced service; fills in the
/// subset labels of route destinations.
fn policies(
    a: &Assembly<'_>,
    services: &mut [Service],
    problems: &mut Vec<Problem>,
) -> Vec<DestinationPolicy> {
    let mut wanted: BTreeSet<ServiceKey> = services
        .iter()
        .map(|s| ServiceKey::new(&s.namespace, &s.name))
        .collect();
    for s in services.iter_mut() {
        for r in &mut s.routes {
            wanted.extend(destinations_mut(r).into_iter().filter_map(|d| key_of(d)));
        }
    }
    let mut out: BTreeMap<ServiceKey, DestinationPolicy> = BTreeMap::new();
    for key in wanted {
        out.insert(key.clone(), policy(a, &key, problems));
    }
    for s in services.iter_mut() {
        for r in &mut s.routes {
            let source = r.source.clone().unwrap_or_default();
            for d in destinations_mut(r) {
                if d.subset.is_empty() {
                    continue;
                }
                let subset = key_of(d)
                    .and_then(|k| out.get(&k))
                    .and_then(|p| p.subsets.iter().find(|x| x.name == d.subset));
                match subset {
                    Some(x) => d.subset_labels = x.labels.clone(),
                    None => {
                        let origin = origin_of(a, &source);
                        let (kind, ns, name) = (&source.kind, &source.namespace, &source.name);
                        let message = format!(
                            "warning: no DestinationRule defines subset {:?} of {}; \
                             requests routed to it fail with 503",
                            d.subset, d.hostname
                        );
                        problems.push(Problem::new(&origin, kind, ns, name).message(message));
                    }
                }
            }
        }
    }
    out.into_values().collect()
}

/// The file a route source came from, for messages.
fn origin_of(a: &Assembly<'_>, source: &ConfigSource) -> String {
    a.catalog
        .index
        .get(&model::ObjectKey::new(
            &source.kind,
            &source.namespace,
            &source.name,
        ))
        .map(|s| s.origin.clone())
        .unwrap_or_default()
}

/// The policy of one service: its DestinationRule (one in the service's
/// namespace first, then the oldest) and its ServiceProfile's retry budget.
fn policy(a: &Assembly<'_>, key: &ServiceKey, problems: &mut Vec<Problem>) -> DestinationPolicy {
    let mut rules: Vec<&RulePolicy> = a
        .sources
        .rules
        .iter()
        .filter(|r| r.host.as_ref() == Some(key))
        .collect();
    rules.sort_by(|x, y| {
        let local = |r: &RulePolicy| r.obj.namespace != key.namespace;
        (local(x), x.obj.order()).cmp(&(local(y), y.obj.order()))
    });
    let mut out = DestinationPolicy {
        hostname: key.hostname(),
        namespace: key.namespace.clone(),
        traffic_policy: Some(TrafficPolicy::default()),
        ..Default::default()
    };
    if let Some((rule, rest)) = rules.split_first() {
        for r in rest {
            problems.push(r.obj.problem(
                "spec.host",
                format!(
                    "warning: {} also configures {key} and takes precedence; this rule is not used",
                    describe(&rule.obj)
                ),
            ));
        }
        out.traffic_policy = Some(rule.policy);
        out.subsets = rule
            .subsets
            .iter()
            .map(|s| Subset {
                name: s.name.clone(),
                labels: s.labels.clone(),
                workload_uids: a.catalog.workloads_with(&key.namespace, &s.labels),
                traffic_policy: Some(s.policy),
            })
            .collect();
        out.sources.push(rule.obj.source());
    }
    if let Some(p) = a
        .sources
        .profiles
        .iter()
        .find(|p| p.service.as_ref() == Some(key))
        && let Some(budget) = &p.budget
    {
        out.retry_budget = Some(*budget);
        out.sources.push(p.obj.source());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServicePort;

    fn port(name: &str, app: Option<&str>) -> ServicePort {
        ServicePort {
            name: name.into(),
            port: 80,
            app_protocol: app.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn protocols_as_istio_infers_them() {
        assert_eq!(protocol(&port("http", None)), Protocol::Http);
        assert_eq!(protocol(&port("http-web", None)), Protocol::Http);
        assert_eq!(protocol(&port("HTTP2-x", None)), Protocol::Http2);
        assert_eq!(protocol(&port("grpc", None)), Protocol::Grpc);
        assert_eq!(protocol(&port("grpc-web", None)), Protocol::Http);
        assert_eq!(protocol(&port("tcp-db", None)), Protocol::Tcp);
        assert_eq!(protocol(&port("https", None)), Protocol::Tcp);
        assert_eq!(protocol(&port("web", None)), Protocol::Unspecified);
        assert_eq!(protocol(&port("", None)), Protocol::Unspecified);
        // appProtocol wins over the name.
        assert_eq!(protocol(&port("tcp", Some("http"))), Protocol::Http);
        assert_eq!(
            protocol(&port("http", Some("kubernetes.io/h2c"))),
            Protocol::Http2
        );
        assert_eq!(
            protocol(&port("x", Some("kubernetes.io/ws"))),
            Protocol::Http
        );
        assert_eq!(
            protocol(&port("http", Some("example.com/custom"))),
            Protocol::Unspecified
        );
    }
}
