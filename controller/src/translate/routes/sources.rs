//! What each traffic object contributes, translated on its own and remembered.

use std::collections::BTreeMap;

use api::waypoint::LocalRateLimit;
use serde::de::DeserializeOwned;

use super::catalog::{Catalog, Invalid, Obj};
use super::destination_rule::RulePolicy;
use super::gateway_api::Attached;
use super::rate_limit::{FilterLimit, RATE_LIMIT_ANNOTATION};
use super::service_profile::Profile;
use super::tcp_route::TcpAttached;
use super::traffic_split::Split;
use super::virtual_service::VsRoutes;
use super::{
    destination_rule, gateway_api, rate_limit, service_profile, tcp_route, traffic_split,
    virtual_service,
};

use super::super::last_good::LastGood;
use super::super::service_key::ServiceKey;
use crate::model::linkerd::LINKERD_HTTP_ROUTE;
use crate::model::routes::{self as raw, DecodeError};
use crate::model::{Object, ObjectKey, Problem};

/// One object's contribution.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Contribution {
    /// HTTPRoute / GRPCRoute.
    Attached(Attached),
    /// TCPRoute.
    Tcp(TcpAttached),
    /// VirtualService.
    Virtual(VsRoutes),
    /// DestinationRule.
    Rule(RulePolicy),
    /// TrafficSplit.
    Split(Split),
    /// ServiceProfile.
    Profile(Profile),
    /// EnvoyFilter.
    Filter(FilterLimit),
    /// `mesh.io/rate-limit` on a Service.
    Annotation(ServiceKey, LocalRateLimit),
}

/// The last good contribution of every object, so an invalid edit leaves the
/// previous one in force.
pub(crate) type RouteMemory = LastGood<Contribution>;

/// Every object's contribution, by kind.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sources {
    /// HTTPRoutes and GRPCRoutes.
    pub attached: Vec<Attached>,
    /// TCPRoutes.
    pub tcp: Vec<TcpAttached>,
    /// VirtualServices.
    pub virtuals: Vec<VsRoutes>,
    /// DestinationRules.
    pub rules: Vec<RulePolicy>,
    /// TrafficSplits.
    pub splits: Vec<Split>,
    /// ServiceProfiles.
    pub profiles: Vec<Profile>,
    /// EnvoyFilters.
    pub filters: Vec<FilterLimit>,
    /// Rate-limit annotations, by service.
    pub annotations: BTreeMap<ServiceKey, (Obj, LocalRateLimit)>,
}

impl Sources {
    fn add(&mut self, c: Contribution, obj: Obj) {
        match c {
            Contribution::Attached(a) => self.attached.push(a),
            Contribution::Tcp(t) => self.tcp.push(t),
            Contribution::Virtual(v) => self.virtuals.push(v),
            Contribution::Rule(r) => self.rules.push(r),
            Contribution::Split(s) => self.splits.push(s),
            Contribution::Profile(p) => self.profiles.push(p),
            Contribution::Filter(f) => self.filters.push(f),
            Contribution::Annotation(key, mut limit) => {
                limit.source = Some(obj.source());
                self.annotations.insert(key, (obj, limit));
            }
        }
    }
}

fn decoded<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, Invalid> {
    raw::decode(value).map_err(|DecodeError { field, message }| Invalid::new(field, message))
}

/// Translates every traffic object of the index.
pub(crate) fn collect(
    catalog: &Catalog<'_>,
    memory: &mut RouteMemory,
    problems: &mut Vec<Problem>,
) -> Sources {
    memory.start();
    let mut sources = Sources::default();
    for kind in crate::model::RAW_KINDS {
        for stored in catalog.index.of_kind(kind) {
            let Object::Raw {
                metadata, value, ..
            } = &stored.object
            else {
                continue;
            };
            let obj = Obj::new(&stored.origin, kind, metadata);
            let mut warnings = Vec::new();
            let w = &mut warnings;
            let result = match *kind {
                "HTTPRoute" | LINKERD_HTTP_ROUTE => decoded(value)
                    .and_then(|r| gateway_api::http_route(&obj, &r, catalog, w))
                    .map(Contribution::Attached),
                "GRPCRoute" => decoded(value)
                    .and_then(|r| gateway_api::grpc_route(&obj, &r, catalog, w))
                    .map(Contribution::Attached),
                "TCPRoute" => decoded(value)
                    .and_then(|r| tcp_route::tcp_route(&obj, &r, catalog, w))
                    .map(Contribution::Tcp),
                "VirtualService" => decoded(value)
                    .and_then(|r| virtual_service::virtual_service(&obj, &r, catalog, w))
                    .map(Contribution::Virtual),
                "DestinationRule" => decoded(value)
                    .and_then(|r| destination_rule::destination_rule(&obj, &r, catalog, w))
                    .map(Contribution::Rule),
                "TrafficSplit" => decoded(value)
                    .and_then(|r| traffic_split::traffic_split(&obj, &r, catalog))
                    .map(Contribution::Split),
                "ServiceProfile" => decoded(value)
                    .and_then(|r| service_profile::service_profile(&obj, &r, catalog, w))
                    .map(Contribution::Profile),
                "EnvoyFilter" => decoded(value)
                    .and_then(|r| rate_limit::envoy_filter(&obj, &r, w))
                    .map(Contribution::Filter),
                _ => continue,
            };
            let key = ObjectKey::new(kind, &obj.namespace, &obj.name);
            remember(key, obj, result, warnings, memory, &mut sources, problems);
        }
    }
    for (origin, svc) in catalog.index.services() {
        let Some(text) = svc.metadata.annotations.get(RATE_LIMIT_ANNOTATION) else {
            continue;
        };
        let m = &svc.metadata;
        let obj = Obj::new(origin, "Service", m);
        let service = ServiceKey::new(&m.namespace, &m.name);
        let result = rate_limit::annotation(text)
            .map(|l| Contribution::Annotation(service, l))
            .map_err(|e| Invalid::new(format!("metadata.annotations[{RATE_LIMIT_ANNOTATION}]"), e));
        let key = ObjectKey::new("Service", &m.namespace, &m.name);
        remember(key, obj, result, Vec::new(), memory, &mut sources, problems);
    }
    sources
}

/// Adds an object's contribution to `sources`, or its last good one when it
/// is invalid.
fn remember(
    key: ObjectKey,
    obj: Obj,
    result: Result<Contribution, Invalid>,
    warnings: Vec<Problem>,
    memory: &mut RouteMemory,
    sources: &mut Sources,
    problems: &mut Vec<Problem>,
) {
    let contribution = match result {
        Ok(c) => {
            problems.extend(warnings);
            memory.good(key, &c);
            Some(c)
        }
        Err(e) => {
            let problem = obj.problem(e.field, e.message);
            memory.invalid(key, problem, "object", "", problems)
        }
    };
    if let Some(c) = contribution {
        sources.add(c, obj);
    }
}
