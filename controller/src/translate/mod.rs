//! Translation of the [`Index`] into the xDS resources the controller serves:
//! `istio.workload.Address` (workloads and services),
//! `istio.security.Authorization`, and one `mesh.waypoint.v1.Waypoint` per
//! waypoint (routes, upstream policies, rate limits, L7 authorization).
//!
//! Translation is a pure function of the index ([`translate`]); the
//! [`Translator`] adds one piece of memory, the last good translation of each
//! policy and traffic object, so that an invalid edit leaves the previous
//! version in force.

mod admission;
mod authorization;
mod bindings;
mod dump;
mod fail_closed;
mod last_good;
mod peer_authentication;
mod routes;
mod services;
mod version;
mod waypoint_policy;
mod waypoints;
mod workloads;

pub use admission::ALLOW_WAYPOINT_PREFIX;
pub use dump::waypoint_json;
pub use routes::RATE_LIMIT_ANNOTATION;
pub(crate) use services::ip_text;
pub use waypoints::{GATEWAY_NAME_LABEL, HBONE_PORT, WAYPOINT_CLASS};

use std::collections::{BTreeMap, BTreeSet};

use api::prost_types::Any;
use api::security::Authorization;
use api::workload::{Address, address};

use crate::model::Index;
pub use crate::model::Problem;

/// DNS suffix of Service hostnames (`<name>.<ns>.svc.cluster.local`).
pub const DOMAIN_SUFFIX: &str = "cluster.local";

/// Everything the controller serves, as xDS resources, keyed by type URL then
/// resource name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// type URL → resource name → resource.
    pub resources: BTreeMap<String, BTreeMap<String, Resource>>,
    /// type URL → digest of its resources' names and versions, computed once per snapshot
    /// (not per client and push).
    system_versions: BTreeMap<String, String>,
}

/// The snapshot the controller serves: `None` until the first complete translation, so that
/// nothing is ever served from a configuration that was not read in full.
pub type Published = Option<std::sync::Arc<Snapshot>>;

/// One xDS resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// Content hash (hex) of the resource: equal content, equal version.
    pub version: String,
    /// The resource, packed.
    pub body: Any,
}

/// Settings of the translation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslateOptions {
    /// SPIFFE trust domain of workload identities (`cluster.local`).
    pub trust_domain: String,
    /// Namespace whose policies apply mesh-wide (`istio-system`).
    pub root_namespace: String,
    /// Cluster name put in workload uids (`Kubernetes`).
    pub cluster_id: String,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        Self {
            trust_domain: "cluster.local".to_string(),
            root_namespace: "istio-system".to_string(),
            cluster_id: "Kubernetes".to_string(),
        }
    }
}

/// The result of a translation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translation {
    /// The resources to serve.
    pub snapshot: Snapshot,
    /// Problems found in the index and during translation, in a stable order.
    pub problems: Vec<Problem>,
}

/// Translates `index` statelessly: an invalid policy is simply skipped.
pub fn translate(index: &Index, options: &TranslateOptions) -> Translation {
    Translator::new(options.clone()).translate(index)
}

/// A translator that remembers the last good translation of each policy
/// and traffic object.
#[derive(Clone, Debug, Default)]
pub struct Translator {
    options: TranslateOptions,
    last_good: last_good::LastGood<authorization::Policy>,
    last_good_waypoint_policies: waypoint_policy::PolicyMemory,
    last_good_routes: routes::RouteMemory,
}

impl Translator {
    /// A translator with no memory yet.
    pub fn new(options: TranslateOptions) -> Self {
        Self {
            options,
            ..Self::default()
        }
    }

    /// The options in use.
    pub fn options(&self) -> &TranslateOptions {
        &self.options
    }

    /// Translates `index`. A policy that is now invalid is reported, and its
    /// last good translation (if any) is served instead.
    pub fn translate(&mut self, index: &Index) -> Translation {
        let opts = &self.options;
        let mut problems: Vec<Problem> = index.problems().to_vec();
        let waypoints = waypoints::Waypoints::collect(index, &mut problems);
        let policies = authorization::convert_all(index, opts, &mut self.last_good, &mut problems);
        let peer = peer_authentication::PeerAuthn::collect(index, opts, &mut problems);
        let services = services::translate_services(index, &waypoints, &mut problems);
        let bindings = bindings::Bindings::collect(index, &waypoints, &opts.cluster_id);
        // HTTP attributes dropped at ztunnel are worth a warning only where
        // no waypoint enforces them.
        problems.extend(policies.iter().filter_map(|p| p.warning.clone()));
        for p in &policies {
            if let Some(w) = &p.l7_warning
                && !waypoint_policy::fully_enforced_at_waypoints(
                    index,
                    p,
                    &opts.cluster_id,
                    &bindings,
                )
            {
                problems.push(w.clone());
            }
        }
        let admission = admission::admission(index, opts, &bindings, &policies);
        let ctx = workloads::Context {
            index,
            options: opts,
            waypoints: &waypoints,
            policies: &policies,
            peer: &peer,
            admission: &admission,
        };
        let workloads = workloads::translate_workloads(&ctx, &mut problems);
        let waypoint_configs = self.waypoint_configs(index, &waypoints, &bindings, &mut problems);

        let mut snapshot = Snapshot::default();
        for w in workloads {
            let name = w.uid.clone();
            let address = Address {
                r#type: Some(address::Type::Workload(w)),
            };
            snapshot.insert(api::ADDRESS_TYPE_URL, name, api::pack(&address));
        }
        for s in services {
            let name = format!("{}/{}", s.namespace, s.hostname);
            let address = Address {
                r#type: Some(address::Type::Service(s)),
            };
            snapshot.insert(api::ADDRESS_TYPE_URL, name, api::pack(&address));
        }
        let authorizations: Vec<&Authorization> = policies
            .iter()
            .map(|p| &p.auth)
            .chain(peer.authorizations())
            .chain(&admission.policies)
            .collect();
        for a in authorizations {
            let name = format!("{}/{}", a.namespace, a.name);
            snapshot.insert(api::AUTHORIZATION_TYPE_URL, name, api::pack(a));
        }
        for (name, w) in waypoint_configs {
            snapshot.insert(api::WAYPOINT_TYPE_URL, name, api::pack(&w));
        }
        Translation {
            snapshot: Snapshot::new(snapshot.resources),
            problems: dedup(problems),
        }
    }

    /// One configuration per waypoint: routes and policies of the services
    /// it serves, and the authorization policies it enforces.
    fn waypoint_configs(
        &mut self,
        index: &Index,
        waypoints: &waypoints::Waypoints,
        bindings: &bindings::Bindings,
        problems: &mut Vec<Problem>,
    ) -> Vec<(String, api::waypoint::Waypoint)> {
        let opts = &self.options;
        let catalog = routes::Catalog::new(index, &opts.cluster_id);
        let sources = routes::collect(&catalog, &mut self.last_good_routes, problems);
        let mut authz = waypoint_policy::collect(
            index,
            opts,
            waypoints,
            bindings,
            &mut self.last_good_waypoint_policies,
            problems,
        );
        let assembly = routes::Assembly {
            catalog: &catalog,
            sources: &sources,
            bindings,
            waypoints,
            root_namespace: &opts.root_namespace,
        };
        routes::assemble(&assembly, problems)
            .into_iter()
            .map(|(key, mut w)| {
                w.authorization_policies = authz.remove(&key).unwrap_or_default();
                (key.resource_name(), w)
            })
            .collect()
    }
}

impl Snapshot {
    /// A snapshot of `resources`.
    pub fn new(resources: BTreeMap<String, BTreeMap<String, Resource>>) -> Self {
        let system_versions = resources
            .iter()
            .map(|(type_url, of_type)| {
                (type_url.clone(), crate::xds::delta::system_version(of_type))
            })
            .collect();
        Self {
            resources,
            system_versions,
        }
    }

    /// `system_version_info` of `type_url`: a digest of its resources' names and versions,
    /// the same for every client that sees the same state.
    pub fn system_version(&self, type_url: &str) -> String {
        self.system_versions
            .get(type_url)
            .cloned()
            .unwrap_or_else(|| crate::xds::delta::system_version(&BTreeMap::new()))
    }

    /// Adds a resource, versioned by its content.
    fn insert(&mut self, type_url: &str, name: String, body: Any) {
        let version = version::version(&body.value);
        self.resources
            .entry(type_url.to_string())
            .or_default()
            .insert(name, Resource { version, body });
    }

    /// The resources of one type (empty when there are none).
    pub fn of_type(&self, type_url: &str) -> impl Iterator<Item = (&String, &Resource)> {
        self.resources.get(type_url).into_iter().flatten()
    }

    /// Total number of resources.
    pub fn len(&self) -> usize {
        self.resources.values().map(BTreeMap::len).sum()
    }

    /// True when there are no resources.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes repeated problems (a namespace label read by every pod of the
/// namespace reports once), keeping the first occurrence's position.
fn dedup(problems: Vec<Problem>) -> Vec<Problem> {
    let mut seen = BTreeSet::new();
    problems
        .into_iter()
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

/// True when every label of `selector` is on `labels`. An empty selector
/// selects everything; callers decide what an absent selector means.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `<name>.<namespace>.svc.cluster.local`.
pub(crate) fn service_hostname(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.svc.{DOMAIN_SUFFIX}")
}
