//! The controller's [`pb::Waypoint`] compiled into lookup tables and matchers, once per
//! config version. Anything unusable refuses the whole config, so a half-applied config never
//! serves traffic.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use api::waypoint::{self as pb, LoadBalancer, Protocol, route};
use bytes::Bytes;
use http::StatusCode;

use super::authz::Policies;
use super::compile::{ConfigError, duration};
use super::endpoints::EndpointCache;
use super::fault::FaultSpec;
use super::headers::{HeaderMods, Redirect, Rewrite};
use super::matching::{RequestView, RouteMatcher};
use super::outlier::OutlierSpec;
use super::pool::PoolSpec;
use super::ratelimit::RateLimitSpec;
use super::retry::{BudgetSpec, RetrySpec};
use super::tcp_route::TcpRouteEntry;
use super::telemetry::{MetricOverrides, RouteKey, RouteMetrics, RouteTelemetry, ServiceLabels};
use super::trace::{Providers, TracingSpec, providers};
use super::workload_limits::WorkloadLimits;

/// An upstream service (and subset) a request or a mirror goes to.
#[derive(Debug, Clone)]
pub(crate) struct DestSpec {
    /// Service hostname.
    pub hostname: String,
    /// Service port; 0: the port the request arrived on.
    pub port: u16,
    /// Subset name.
    pub subset: Option<String>,
    /// Its `destination_service*` metric labels.
    pub labels: Arc<ServiceLabels>,
    /// Its endpoints, kept between requests (shared by clones); the cache also keeps the
    /// service's namespace, which only listing endpoints needs.
    pub endpoints: Arc<EndpointCache>,
}

impl DestSpec {
    /// The destination `hostname` in `namespace` (subset `subset`, port `port` or, when 0,
    /// the request's).
    pub(crate) fn new(hostname: &str, namespace: &str, port: u16, subset: Option<&str>) -> Self {
        // The service name is the hostname's first label for cluster-local services.
        let name = match hostname.split_once('.') {
            Some((name, rest)) if rest.contains(".svc.") || rest.ends_with(".svc") => name,
            _ => hostname,
        };
        Self {
            hostname: hostname.to_owned(),
            port,
            subset: subset.map(str::to_owned),
            labels: Arc::new(ServiceLabels::new(hostname, name, namespace)),
            endpoints: Arc::new(EndpointCache::new(namespace, hostname)),
        }
    }

    fn compile(d: Option<&pb::Destination>, field: &str) -> Result<Self, ConfigError> {
        let d = d.ok_or_else(|| ConfigError(format!("{field}: missing destination")))?;
        if d.hostname.is_empty() {
            return Err(ConfigError(format!("{field}.hostname: empty")));
        }
        let port = u16::try_from(d.port)
            .map_err(|_| ConfigError(format!("{field}.port: {} out of range", d.port)))?;
        let subset = (!d.subset.is_empty()).then_some(d.subset.as_str());
        Ok(Self::new(&d.hostname, &d.namespace, port, subset))
    }
}

/// A destination with its weight and edits.
#[derive(Debug)]
pub(crate) struct WeightedDest {
    /// Where.
    pub dest: DestSpec,
    /// Relative weight.
    pub weight: u32,
    /// Request edits (after the route's).
    pub request_headers: HeaderMods,
    /// Response edits (before the route's).
    pub response_headers: HeaderMods,
}

/// A mirror target.
#[derive(Debug)]
pub(crate) struct MirrorSpec {
    /// Where copies go.
    pub dest: DestSpec,
    /// Share of requests copied.
    pub percentage: f64,
}

/// A forwarding action.
#[derive(Debug)]
pub(crate) struct ForwardSpec {
    /// Candidates.
    pub destinations: Vec<WeightedDest>,
    /// Sum of weights.
    pub total_weight: u64,
    /// URL rewrite.
    pub rewrite: Option<Rewrite>,
    /// Mirrors.
    pub mirrors: Vec<MirrorSpec>,
    /// Whole-request limit.
    pub timeout: Option<Duration>,
    /// Per-attempt limit.
    pub attempt_timeout: Option<Duration>,
    /// Retries.
    pub retry: Option<RetrySpec>,
}

/// What a route does.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send upstream.
    Forward(ForwardSpec),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer directly.
    Direct(StatusCode, Bytes),
}

/// A compiled route.
#[derive(Debug)]
pub(crate) struct RouteEntry {
    /// Its name and per-route metrics.
    pub telemetry: Arc<RouteTelemetry>,
    /// Matches (any); empty: every request.
    pub matches: Vec<RouteMatcher>,
    /// Action.
    pub action: Action,
    /// Request edits.
    pub request_headers: HeaderMods,
    /// Response edits.
    pub response_headers: HeaderMods,
    /// Faults.
    pub fault: Option<FaultSpec>,
}

impl RouteEntry {
    fn compile(
        r: &pb::Route,
        field: &str,
        telemetry: Arc<RouteTelemetry>,
    ) -> Result<Self, ConfigError> {
        let matches = r
            .matches
            .iter()
            .enumerate()
            .map(|(i, m)| RouteMatcher::compile(m, &format!("{field}.matches[{i}]")))
            .collect::<Result<_, _>>()?;
        let action = match &r.action {
            Some(route::Action::Forward(f)) => {
                Action::Forward(compile_forward(f, &format!("{field}.forward"))?)
            }
            Some(route::Action::Redirect(rd)) => {
                Action::Redirect(Redirect::compile(rd, &format!("{field}.redirect"))?)
            }
            Some(route::Action::DirectResponse(d)) => {
                let status = u16::try_from(d.status)
                    .ok()
                    .filter(|s| (200..600).contains(s))
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .ok_or_else(|| {
                        ConfigError(format!("{field}.direct_response.status: {}", d.status))
                    })?;
                Action::Direct(status, Bytes::from(d.body.clone()))
            }
            None => return Err(ConfigError(format!("{field}: no action"))),
        };
        Ok(Self {
            telemetry,
            matches,
            action,
            request_headers: HeaderMods::compile(
                r.request_headers.as_ref(),
                &format!("{field}.request_headers"),
            )?,
            response_headers: HeaderMods::compile(
                r.response_headers.as_ref(),
                &format!("{field}.response_headers"),
            )?,
            fault: match &r.fault {
                Some(f) => FaultSpec::compile(f, &format!("{field}.fault"))?,
                None => None,
            },
        })
    }

    /// Whether the route takes the request; returns the prefix a prefix rewrite replaces.
    pub(crate) fn matches<'a>(&'a self, view: &RequestView<'_>) -> Option<&'a str> {
        if self.matches.is_empty() {
            return Some("/");
        }
        self.matches
            .iter()
            .find(|m| m.matches(view))
            .map(RouteMatcher::rewrite_prefix)
    }
}

fn compile_forward(f: &pb::Forward, field: &str) -> Result<ForwardSpec, ConfigError> {
    if f.destinations.is_empty() {
        return Err(ConfigError(format!("{field}.destinations: empty")));
    }
    let destinations: Vec<WeightedDest> = f
        .destinations
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let at = format!("{field}.destinations[{i}]");
            Ok(WeightedDest {
                dest: DestSpec::compile(w.destination.as_ref(), &at)?,
                weight: w.weight,
                request_headers: HeaderMods::compile(
                    w.request_headers.as_ref(),
                    &format!("{at}.request_headers"),
                )?,
                response_headers: HeaderMods::compile(
                    w.response_headers.as_ref(),
                    &format!("{at}.response_headers"),
                )?,
            })
        })
        .collect::<Result<_, ConfigError>>()?;
    let total_weight: u64 = destinations.iter().map(|d| u64::from(d.weight)).sum();
    if total_weight == 0 {
        return Err(ConfigError(format!(
            "{field}.destinations: every weight is 0"
        )));
    }
    let mirrors = f
        .mirrors
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let at = format!("{field}.mirrors[{i}]");
            if !m.percentage.is_finite() || !(0.0..=100.0).contains(&m.percentage) {
                return Err(ConfigError(format!("{at}.percentage: {}", m.percentage)));
            }
            Ok(MirrorSpec {
                dest: DestSpec::compile(m.destination.as_ref(), &at)?,
                percentage: m.percentage,
            })
        })
        .collect::<Result<_, ConfigError>>()?;
    Ok(ForwardSpec {
        destinations,
        total_weight,
        rewrite: f
            .rewrite
            .as_ref()
            .map(|r| Rewrite::compile(r, &format!("{field}.rewrite")))
            .transpose()?,
        mirrors,
        timeout: duration(f.timeout.as_ref(), &format!("{field}.timeout"))?
            .filter(|d| !d.is_zero()),
        attempt_timeout: duration(
            f.attempt_timeout.as_ref(),
            &format!("{field}.attempt_timeout"),
        )?
        .filter(|d| !d.is_zero()),
        retry: match &f.retry {
            Some(r) => RetrySpec::compile(r, &format!("{field}.retry"))?,
            None => None,
        },
    })
}

/// A service port.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PortEntry {
    /// Service port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

/// A compiled served service.
#[derive(Debug)]
pub(crate) struct ServiceEntry {
    /// Hostname.
    pub hostname: String,
    /// Its `destination_service*` metric labels (hostname, name, namespace).
    pub labels: Arc<ServiceLabels>,
    /// Ports.
    pub ports: Vec<PortEntry>,
    /// Routes in order.
    pub routes: Vec<RouteEntry>,
    /// Where requests no route took are counted (no route matched, or refused before
    /// routing).
    pub default_route: Arc<RouteTelemetry>,
    /// Local rate limit.
    pub rate_limit: Option<RateLimitSpec>,
    /// Tracing and access logging of its requests.
    pub telemetry: ServiceTelemetry,
    /// TCP routes, by port.
    pub tcp_routes: Vec<Arc<TcpRouteEntry>>,
}

/// What the service's `Telemetry` resources ask of its requests.
#[derive(Debug, Default)]
pub(crate) struct ServiceTelemetry {
    /// Its tracing; `None`: trace headers pass as they came.
    pub tracing: Option<Arc<TracingSpec>>,
    /// No access log lines.
    pub access_log_disabled: bool,
    /// Overrides of its request metrics.
    pub metrics: Option<Arc<MetricOverrides>>,
}

impl ServiceTelemetry {
    fn compile(
        t: Option<&pb::Telemetry>,
        providers: &Providers,
        field: &str,
    ) -> Result<Self, ConfigError> {
        let Some(t) = t else {
            return Ok(Self::default());
        };
        Ok(Self {
            tracing: t
                .tracing
                .as_ref()
                .map(|tr| TracingSpec::compile(tr, providers, &format!("{field}.tracing")))
                .transpose()?
                .map(Arc::new),
            access_log_disabled: t.access_log_disabled,
            metrics: MetricOverrides::compile(
                &t.metric_overrides,
                &format!("{field}.metric_overrides"),
            )?,
        })
    }
}

impl ServiceEntry {
    /// The declared protocol of `port`; unknown ports are unspecified.
    pub(crate) fn protocol(&self, port: u16) -> Protocol {
        self.ports
            .iter()
            .find(|p| p.port == port)
            .map_or(Protocol::Unspecified, |p| p.protocol)
    }

    /// The TCP route of `port`, if one routes it.
    pub(crate) fn tcp_route(&self, port: u16) -> Option<&Arc<TcpRouteEntry>> {
        self.tcp_routes.iter().find(|r| r.port == port)
    }
}

/// Settings for endpoints of a service or subset.
#[derive(Debug, Clone, Default)]
pub(crate) struct EndpointPolicy {
    /// Load balancer.
    pub lb: LoadBalancer,
    /// Connection pool.
    pub pool: Option<PoolSpec>,
    /// Outlier detection.
    pub outlier: Option<OutlierSpec>,
}

impl EndpointPolicy {
    fn compile(t: Option<&pb::TrafficPolicy>, field: &str) -> Result<Self, ConfigError> {
        let Some(t) = t else {
            return Ok(Self::default());
        };
        Ok(Self {
            lb: LoadBalancer::try_from(t.load_balancer).map_err(|_| {
                ConfigError(format!(
                    "{field}.load_balancer: unknown {}",
                    t.load_balancer
                ))
            })?,
            pool: t
                .connection_pool
                .as_ref()
                .map(|p| PoolSpec::compile(p, &format!("{field}.connection_pool")))
                .transpose()?,
            outlier: match &t.outlier_detection {
                Some(o) => OutlierSpec::compile(o, &format!("{field}.outlier_detection"))?,
                None => None,
            },
        })
    }
}

/// A subset.
#[derive(Debug)]
pub(crate) struct SubsetPolicy {
    /// Workloads in it.
    pub uids: HashSet<String>,
    /// Its effective policy.
    pub policy: EndpointPolicy,
}

/// The upstream policy of a service.
#[derive(Debug, Default)]
pub(crate) struct DestPolicy {
    /// Service-wide settings.
    pub policy: EndpointPolicy,
    /// Subsets by name.
    pub subsets: HashMap<String, SubsetPolicy>,
    /// Retry budget.
    pub budget: Option<BudgetSpec>,
}

impl DestPolicy {
    fn compile(d: &pb::DestinationPolicy, field: &str) -> Result<Self, ConfigError> {
        let policy = EndpointPolicy::compile(
            d.traffic_policy.as_ref(),
            &format!("{field}.traffic_policy"),
        )?;
        let mut subsets = HashMap::with_capacity(d.subsets.len());
        for (i, s) in d.subsets.iter().enumerate() {
            let at = format!("{field}.subsets[{i}]");
            let sp = SubsetPolicy {
                uids: s.workload_uids.iter().cloned().collect(),
                policy: match &s.traffic_policy {
                    Some(t) => EndpointPolicy::compile(Some(t), &format!("{at}.traffic_policy"))?,
                    None => policy.clone(),
                },
            };
            if subsets.insert(s.name.clone(), sp).is_some() {
                return Err(ConfigError(format!(
                    "{at}.name: duplicate subset {:?}",
                    s.name
                )));
            }
        }
        Ok(Self {
            policy,
            subsets,
            budget: d
                .retry_budget
                .as_ref()
                .map(|b| BudgetSpec::compile(b, &format!("{field}.retry_budget")))
                .transpose()?,
        })
    }
}

/// The whole compiled config.
#[derive(Debug, Default)]
pub(crate) struct CompiledConfig {
    /// Served services by hostname.
    pub by_host: HashMap<String, Arc<ServiceEntry>>,
    /// Served services by VIP.
    pub by_vip: HashMap<IpAddr, Arc<ServiceEntry>>,
    /// Upstream policies by hostname.
    pub destinations: HashMap<String, Arc<DestPolicy>>,
    /// Authorization.
    pub authz: Policies,
    /// Rate limits per workload.
    pub workload_limits: WorkloadLimits,
    /// Whether forwarded requests get `x-forwarded-client-cert` from the caller's identity.
    pub xfcc_include_client_identity: bool,
    /// `service.name` of the spans' resource: `<waypoint>.<namespace>`.
    pub trace_resource: Arc<str>,
}

impl CompiledConfig {
    /// Compiles a config, with the per-route metrics of its routes taken from `routes`.
    pub(crate) fn compile(w: &pb::Waypoint, routes: &RouteMetrics) -> Result<Self, ConfigError> {
        let mut out = CompiledConfig {
            authz: Policies::compile(&w.authorization_policies)?,
            workload_limits: WorkloadLimits::compile(&w.workload_rate_limits)?,
            xfcc_include_client_identity: w.xfcc_include_client_identity,
            trace_resource: format!("{}.{}", w.name, w.namespace).into(),
            ..Default::default()
        };
        let providers = providers(&w.tracing_providers)?;
        for (i, s) in w.services.iter().enumerate() {
            let field = format!("services[{i}] ({})", s.hostname);
            let ports = s
                .ports
                .iter()
                .map(|p| {
                    Ok(PortEntry {
                        port: u16::try_from(p.port).map_err(|_| {
                            ConfigError(format!("{field}.ports: {} out of range", p.port))
                        })?,
                        protocol: Protocol::try_from(p.protocol).unwrap_or(Protocol::Unspecified),
                    })
                })
                .collect::<Result<_, ConfigError>>()?;
            let telemetry = |r: &pb::Route| {
                let (kind, namespace) = r
                    .source
                    .as_ref()
                    .map_or(("", ""), |o| (o.kind.as_str(), o.namespace.as_str()));
                let key = RouteKey::new(&s.namespace, &s.name, kind, namespace, &r.rule_name);
                routes.route(&key, &r.name)
            };
            let service_routes = s
                .routes
                .iter()
                .enumerate()
                .map(|(j, r)| {
                    let at = format!("{field}.routes[{j}] ({})", r.name);
                    RouteEntry::compile(r, &at, telemetry(r))
                })
                .collect::<Result<_, _>>()?;
            let entry = Arc::new(ServiceEntry {
                hostname: s.hostname.clone(),
                labels: Arc::new(ServiceLabels::new(&s.hostname, &s.name, &s.namespace)),
                ports,
                routes: service_routes,
                default_route: routes.route(&RouteKey::default_of(&s.namespace, &s.name), ""),
                rate_limit: s
                    .rate_limit
                    .as_ref()
                    .map(|r| RateLimitSpec::compile(r, &format!("{field}.rate_limit")))
                    .transpose()?,
                telemetry: ServiceTelemetry::compile(
                    s.telemetry.as_ref(),
                    &providers,
                    &format!("{field}.telemetry"),
                )?,
                tcp_routes: s
                    .tcp_routes
                    .iter()
                    .enumerate()
                    .map(|(j, r)| {
                        TcpRouteEntry::compile(r, &format!("{field}.tcp_routes[{j}]")).map(Arc::new)
                    })
                    .collect::<Result<_, _>>()?,
            });
            for a in &s.addresses {
                let ip: IpAddr = a
                    .parse()
                    .map_err(|_| ConfigError(format!("{field}.addresses: {a:?} is not an IP")))?;
                out.by_vip.insert(ip, entry.clone());
            }
            out.by_host.insert(s.hostname.clone(), entry);
        }
        for (i, d) in w.destinations.iter().enumerate() {
            let field = format!("destinations[{i}] ({})", d.hostname);
            out.destinations.insert(
                d.hostname.clone(),
                Arc::new(DestPolicy::compile(d, &field)?),
            );
        }
        Ok(out)
    }

    /// The outlier detection settings in force for each destination service: its own and
    /// its subsets' (a service without any is left out).
    pub(crate) fn outlier_specs(&self) -> HashMap<&str, HashSet<OutlierSpec>> {
        self.destinations
            .iter()
            .filter_map(|(host, d)| {
                let specs: HashSet<OutlierSpec> = std::iter::once(&d.policy)
                    .chain(d.subsets.values().map(|s| &s.policy))
                    .filter_map(|p| p.outlier)
                    .collect();
                (!specs.is_empty()).then_some((host.as_str(), specs))
            })
            .collect()
    }

    /// Hostnames whose runtime state is worth keeping.
    pub(crate) fn hostnames(&self) -> HashSet<&str> {
        let mut out: HashSet<&str> = self
            .by_host
            .keys()
            .chain(self.destinations.keys())
            .map(String::as_str)
            .collect();
        for s in self.by_host.values() {
            for r in &s.routes {
                if let Action::Forward(f) = &r.action {
                    out.extend(f.destinations.iter().map(|d| d.dest.hostname.as_str()));
                    out.extend(f.mirrors.iter().map(|m| m.dest.hostname.as_str()));
                }
            }
        }
        out
    }
}
