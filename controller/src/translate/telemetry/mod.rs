//! Istio's Telemetry API and the mesh config's extension providers → each waypoint's
//! `tracing_providers` and the `telemetry` of every service it serves (tracing provider,
//! sampling, custom tags, span reporting, access logging, metric overrides).
//!
//! The mesh config is read from the `istio` ConfigMap of the root namespace (key `mesh`), as
//! Istio has it. A Telemetry applies, from least to most specific, mesh-wide (root namespace,
//! no selector or target), namespace-wide, to a waypoint Gateway (`targetRefs`) or to a Service
//! (`targetRefs`); see [`resolve`]. For ztunnel, only access logging, mesh-wide,
//! namespace-wide or for the workloads a selector picks, becomes the one
//! `mesh.telemetry.v1.AccessLogging` resource ([`access_logging`]); what else could only
//! concern it is reported.

mod mesh;
mod otlp_export;
mod resolve;
mod resources;

use std::collections::{BTreeMap, BTreeSet};

use api::telemetry::AccessLogging;
use api::waypoint::{TracingProvider, Waypoint};

use super::bindings::{Bindings, WaypointKey};
use super::labels::selects;
use super::last_good::LastGood;
use super::routes::{Catalog, Invalid, Obj};
use super::service_key::ServiceKey;
use super::waypoints::Waypoints;
use super::workloads::workload_name;
use crate::model::routes::DecodeError;
use crate::model::telemetry::Telemetry;
use crate::model::{Index, Object, ObjectKey, Problem, WARNING_PREFIX};
pub(crate) use mesh::MeshSettings;
use resources::{Context, Scope, Settings};

/// The last good mesh config and Telemetry translations, so an invalid edit leaves the
/// previous version in force.
#[derive(Clone, Debug, Default)]
pub(crate) struct TelemetryMemory {
    mesh: LastGood<MeshSettings>,
    resources: LastGood<Settings>,
}

/// What the telemetry translation reads.
pub(crate) struct Inputs<'a> {
    /// Services (and the index).
    pub catalog: &'a Catalog<'a>,
    /// Waypoint Gateways.
    pub waypoints: &'a Waypoints,
    /// Which waypoint serves which service.
    pub bindings: &'a Bindings,
    /// Root namespace (`istio-system`).
    pub root_namespace: &'a str,
}

/// Fills in the telemetry of every service of `configs` and each waypoint's tracing
/// providers, and returns the node proxies' access log switches.
pub(crate) fn apply(
    inputs: &Inputs<'_>,
    memory: &mut TelemetryMemory,
    configs: &mut [(WaypointKey, Waypoint)],
    problems: &mut Vec<Problem>,
) -> AccessLogging {
    let mesh = mesh::mesh_settings(
        inputs.catalog,
        inputs.root_namespace,
        &mut memory.mesh,
        problems,
    );
    let ctx = Context {
        catalog: inputs.catalog,
        mesh: &mesh,
        waypoints: inputs.waypoints,
        bindings: inputs.bindings,
        root_namespace: inputs.root_namespace,
    };
    let settings = collect(&ctx, &mut memory.resources, problems);
    let resolver = resolve::Resolver {
        mesh: &mesh,
        settings: &settings,
        root_namespace: inputs.root_namespace,
    };
    for (key, waypoint) in configs {
        let mut used = BTreeSet::new();
        for service in &mut waypoint.services {
            let service_key = ServiceKey::new(&service.namespace, &service.name);
            service.telemetry = resolver.resolve(key, &service_key, problems);
            if let Some(tracing) = service.telemetry.as_ref().and_then(|t| t.tracing.as_ref()) {
                used.insert(tracing.provider.clone());
            }
        }
        waypoint.tracing_providers = used
            .iter()
            .filter_map(|name| mesh.otlp(name))
            .cloned()
            .collect::<Vec<TracingProvider>>();
    }
    access_logging(&settings, inputs.root_namespace, inputs.catalog.index)
}

/// The node proxies' access log switches: the root namespace's namespace-wide Telemetry
/// mesh-wide, each other namespace's for its own workloads, and a selector's for the
/// workloads whose pods it picks (in its namespace, or in every namespace from the root
/// namespace; a namespace's own selectors before the root's, the oldest first).
fn access_logging(settings: &[Settings], root_namespace: &str, index: &Index) -> AccessLogging {
    let mut out = AccessLogging::default();
    for s in &settings_with(settings, |scope| *scope == Scope::Namespace) {
        let Some(off) = s.access_log_disabled else {
            continue;
        };
        if s.obj.namespace == root_namespace {
            out.disabled = off;
        } else {
            out.namespaces.insert(s.obj.namespace.clone(), off);
        }
    }
    let selectors = settings_with(settings, |scope| matches!(scope, Scope::Selector(_)));
    let (root, local): (Vec<&Settings>, Vec<&Settings>) = selectors
        .into_iter()
        .partition(|s| s.obj.namespace == root_namespace);
    for s in local.into_iter().chain(root) {
        let (Some(off), Some(Scope::Selector(labels))) = (s.access_log_disabled, s.scopes.first())
        else {
            continue;
        };
        let everywhere = s.obj.namespace == root_namespace;
        for (_, pod) in index.pods() {
            let m = &pod.metadata;
            if (everywhere || m.namespace == s.obj.namespace) && selects(labels, &m.labels) {
                let key = format!("{}/{}", m.namespace, workload_name(pod));
                out.workloads.entry(key).or_insert(off);
            }
        }
    }
    out
}

/// The settings with a scope `wanted` accepts, in their order.
fn settings_with(settings: &[Settings], wanted: impl Fn(&Scope) -> bool) -> Vec<&Settings> {
    settings
        .iter()
        .filter(|s| s.scopes.iter().any(&wanted))
        .collect()
}

/// Every Telemetry of the index, translated (or its last good translation), oldest first; of
/// several namespace-wide ones in a namespace, only the oldest is kept, as Istio allows one.
fn collect(
    ctx: &Context<'_>,
    memory: &mut LastGood<Settings>,
    problems: &mut Vec<Problem>,
) -> Vec<Settings> {
    memory.start();
    let mut all = Vec::new();
    for stored in ctx.catalog.index.of_kind("Telemetry") {
        let Object::Raw {
            metadata, value, ..
        } = &stored.object
        else {
            continue;
        };
        let obj = Obj::new(&stored.origin, "Telemetry", metadata);
        let key = ObjectKey::new("Telemetry", &obj.namespace, &obj.name);
        let mut warnings = Vec::new();
        let result = crate::model::routes::decode::<Telemetry>(value)
            .map_err(|DecodeError { field, message }| Invalid::new(field, message))
            .and_then(|t| resources::settings(&obj, &t, ctx, &mut warnings));
        let settings = match result {
            Ok(s) => {
                problems.extend(warnings);
                memory.good(key, &s);
                Some(s)
            }
            Err(e) => {
                let problem = obj.problem(e.field, e.message);
                memory.invalid(key, problem, "Telemetry", "", problems)
            }
        };
        all.extend(settings);
    }
    all.sort_by(|a, b| a.obj.order().cmp(&b.obj.order()));
    let mut first_namespace_wide: BTreeMap<String, Obj> = BTreeMap::new();
    for s in &mut all {
        if !s.scopes.contains(&Scope::Namespace) {
            continue;
        }
        match first_namespace_wide.get(&s.obj.namespace) {
            Some(first) => {
                problems.push(s.obj.problem(
                    "",
                    format!(
                        "{WARNING_PREFIX}Telemetry {}/{} also applies to the whole namespace and \
                         is older: this one is not used (one namespace-wide Telemetry per \
                         namespace; use targetRefs for a waypoint or a Service)",
                        first.namespace, first.name
                    ),
                ));
                s.scopes.clear();
            }
            None => {
                first_namespace_wide.insert(s.obj.namespace.clone(), s.obj.clone());
            }
        }
    }
    all
}
