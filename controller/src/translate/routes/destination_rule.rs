//! Istio DestinationRule → upstream policy of one service: load balancer,
//! connection pool, outlier detection, subsets with per-subset overrides.

use std::collections::BTreeMap;

use api::prost_types::Duration;
use api::waypoint::{ConnectionPool, LoadBalancer, OutlierDetection, TrafficPolicy};

use super::super::service_key::ServiceKey;
use super::catalog::{At, Catalog, Invalid, Obj};
use super::values;
use crate::model::Problem;
use crate::model::routes::{
    DestinationRule, DrConnectionPool, DrOutlierDetection, DrTrafficPolicy,
};

/// Envoy's outlier detection defaults, which Istio keeps for fields it is
/// not given: 5 consecutive 5xx, 10 s sweeps, 30 s ejections, 10 %.
const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
const DEFAULT_INTERVAL_SECS: i64 = 10;
const DEFAULT_BASE_EJECTION_SECS: i64 = 30;
const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;

/// A subset before its workloads are resolved.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SubsetSpec {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Effective policy (the rule's, overridden per field by the subset's).
    pub policy: TrafficPolicy,
}

/// What one DestinationRule contributes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RulePolicy {
    /// The object.
    pub obj: Obj,
    /// The service it configures; `None` when it does not apply to
    /// waypoints.
    pub host: Option<ServiceKey>,
    /// Policy for every endpoint.
    pub policy: TrafficPolicy,
    /// Subsets.
    pub subsets: Vec<SubsetSpec>,
}

/// Translates a DestinationRule.
pub(crate) fn destination_rule(
    obj: &Obj,
    dr: &DestinationRule,
    catalog: &Catalog<'_>,
    warnings: &mut Vec<Problem>,
) -> Result<RulePolicy, Invalid> {
    let mut out = RulePolicy {
        obj: obj.clone(),
        host: None,
        policy: TrafficPolicy::default(),
        subsets: Vec::new(),
    };
    if dr.spec.workload_selector.is_some() {
        warnings.push(obj.problem(
            "spec.workloadSelector",
            "warning: a rule limited to selected client workloads does not apply at waypoints; ignored",
        ));
        return Ok(out);
    }
    let key = catalog.require_host(&dr.spec.host, &obj.namespace, "spec.host")?;
    let base = dr.spec.traffic_policy.as_ref();
    out.policy = traffic_policy(base, "spec.trafficPolicy", obj, warnings)?;
    for (i, s) in dr.spec.subsets.iter().enumerate() {
        let f = format!("spec.subsets[{i}]");
        if s.name.is_empty() {
            return Err(Invalid::new(format!("{f}.name"), "missing"));
        }
        if out.subsets.iter().any(|x| x.name == s.name) {
            return Err(Invalid::new(
                format!("{f}.name"),
                format!("subset {:?} is defined twice", s.name),
            ));
        }
        let merged = merge(base, s.traffic_policy.as_ref());
        out.subsets.push(SubsetSpec {
            name: s.name.clone(),
            labels: s.labels.clone(),
            policy: traffic_policy(
                merged.as_ref(),
                &format!("{f}.trafficPolicy"),
                obj,
                warnings,
            )?,
        });
    }
    out.host = Some(key);
    Ok(out)
}

/// The rule's policy with the subset's settings replacing whole groups
/// (loadBalancer, connectionPool, outlierDetection), as Istio merges them.
fn merge(
    base: Option<&DrTrafficPolicy>,
    over: Option<&DrTrafficPolicy>,
) -> Option<DrTrafficPolicy> {
    match (base, over) {
        (None, None) => None,
        (Some(b), None) => Some(b.clone()),
        (None, Some(o)) => Some(o.clone()),
        (Some(b), Some(o)) => {
            let mut m = b.clone();
            if o.load_balancer.is_some() {
                m.load_balancer = o.load_balancer.clone();
            }
            if o.connection_pool.is_some() {
                m.connection_pool = o.connection_pool.clone();
            }
            if o.outlier_detection.is_some() {
                m.outlier_detection = o.outlier_detection.clone();
            }
            Some(m)
        }
    }
}

fn traffic_policy(
    p: Option<&DrTrafficPolicy>,
    field: &str,
    obj: &Obj,
    warnings: &mut Vec<Problem>,
) -> Result<TrafficPolicy, Invalid> {
    let mut out = TrafficPolicy::default();
    let Some(p) = p else { return Ok(out) };
    if !p.port_level_settings.is_empty() {
        warnings.push(obj.problem(
            format!("{field}.portLevelSettings"),
            "warning: per-port settings are not supported; the service-wide settings apply to every port",
        ));
    }
    if let Some(lb) = &p.load_balancer {
        if lb.consistent_hash.is_some() {
            warnings.push(obj.problem(
                format!("{field}.loadBalancer.consistentHash"),
                "warning: consistent hashing is not supported; LEAST_REQUEST is used",
            ));
        }
        out.load_balancer = match lb.simple.as_deref().unwrap_or("UNSPECIFIED") {
            "UNSPECIFIED" | "LEAST_REQUEST" | "LEAST_CONN" => LoadBalancer::LeastRequest,
            "ROUND_ROBIN" => LoadBalancer::RoundRobin,
            "RANDOM" => LoadBalancer::Random,
            other => {
                return Err(Invalid::new(
                    format!("{field}.loadBalancer.simple"),
                    format!("{other:?} is not supported (LEAST_REQUEST, ROUND_ROBIN, RANDOM)"),
                ));
            }
        } as i32;
    }
    if let Some(cp) = &p.connection_pool {
        out.connection_pool = Some(connection_pool(cp, &format!("{field}.connectionPool"))?);
    }
    if let Some(od) = &p.outlier_detection {
        let of = format!("{field}.outlierDetection");
        out.outlier_detection = Some(outlier_detection(od, &of)?);
    }
    Ok(out)
}

/// `connectionPool` (at `cf`).
fn connection_pool(cp: &DrConnectionPool, cf: &str) -> Result<ConnectionPool, Invalid> {
    let mut pool = ConnectionPool::default();
    if let Some(tcp) = &cp.tcp {
        pool.max_connections = limit(tcp.max_connections, &format!("{cf}.tcp.maxConnections"))?;
        if let Some(t) = &tcp.connect_timeout {
            pool.connect_timeout =
                Some(values::positive_duration(t).at(&format!("{cf}.tcp.connectTimeout"))?);
        }
    }
    if let Some(http) = &cp.http {
        let hf = format!("{cf}.http");
        pool.max_pending_requests = limit(
            http.http1_max_pending_requests,
            &format!("{hf}.http1MaxPendingRequests"),
        )?;
        pool.max_requests = limit(http.http2_max_requests, &format!("{hf}.http2MaxRequests"))?;
        pool.max_requests_per_connection = limit(
            http.max_requests_per_connection,
            &format!("{hf}.maxRequestsPerConnection"),
        )?;
        pool.max_retries = limit(http.max_retries, &format!("{hf}.maxRetries"))?;
    }
    Ok(pool)
}

/// `outlierDetection` (at `of`), with Envoy's defaults for what is not set.
fn outlier_detection(od: &DrOutlierDetection, of: &str) -> Result<OutlierDetection, Invalid> {
    let count = |v: Option<i64>, name: &str| -> Result<Option<u32>, Invalid> {
        v.map(|n| {
            u32::try_from(n)
                .map_err(|_| Invalid::new(format!("{of}.{name}"), format!("{n} is not a count")))
        })
        .transpose()
    };
    let gateway = match count(od.consecutive_gateway_errors, "consecutiveGatewayErrors")? {
        Some(n) => n,
        None => count(od.consecutive_errors, "consecutiveErrors")?.unwrap_or(0),
    };
    let dur = |v: &Option<String>, name: &str, default: i64| -> Result<Option<Duration>, Invalid> {
        match v {
            Some(t) => Ok(Some(
                values::positive_duration(t).at(&format!("{of}.{name}"))?,
            )),
            None => Ok(Some(Duration {
                seconds: default,
                nanos: 0,
            })),
        }
    };
    let max_ejection = match od.max_ejection_percent {
        Some(n) if (0..=100).contains(&n) => n as u32,
        Some(n) => {
            return Err(Invalid::new(
                format!("{of}.maxEjectionPercent"),
                format!("{n} is not a percentage between 0 and 100"),
            ));
        }
        None => DEFAULT_MAX_EJECTION_PERCENT,
    };
    Ok(OutlierDetection {
        consecutive_5xx_errors: count(od.consecutive_5xx_errors, "consecutive5xxErrors")?
            .unwrap_or(DEFAULT_CONSECUTIVE_5XX),
        consecutive_gateway_errors: gateway,
        interval: dur(&od.interval, "interval", DEFAULT_INTERVAL_SECS)?,
        base_ejection_time: dur(
            &od.base_ejection_time,
            "baseEjectionTime",
            DEFAULT_BASE_EJECTION_SECS,
        )?,
        max_ejection_percent: max_ejection,
    })
}

/// A limit that fits 32 bits; absent or 0 means none (0), as in Istio.
fn limit(v: Option<i64>, field: &str) -> Result<u32, Invalid> {
    match v {
        None => Ok(0),
        Some(n) if n >= 0 => {
            u32::try_from(n).map_err(|_| Invalid::new(field, format!("{n} is too large")))
        }
        Some(n) => Err(Invalid::new(field, format!("{n} is negative"))),
    }
}
