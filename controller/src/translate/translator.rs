//! One translation of the index, start to finish; the [`Translator`] remembers the last good
//! translation of each policy and traffic object between runs.

use std::collections::BTreeSet;

use api::security::Authorization;
use api::workload::{Address, address};

use super::options::TranslateOptions;
use super::snapshot::Snapshot;
use super::{
    admission, authorization, bindings, last_good, linkerd_policy, peer_authentication, references,
    routes, services, telemetry, waypoint_policy, waypoints, workloads,
};
use crate::model::{Index, Problem};

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
    last_good_linkerd: linkerd_policy::Memory,
    last_good_waypoint_policies: waypoint_policy::PolicyMemory,
    last_good_routes: routes::RouteMemory,
    last_good_telemetry: telemetry::TelemetryMemory,
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
        let bindings = bindings::Bindings::collect(index, &waypoints, &opts.cluster_id);
        let mut policies =
            authorization::convert_all(index, opts, &mut self.last_good, &mut problems);
        let linkerd = linkerd_policy::translate(
            index,
            opts,
            &bindings,
            &mut self.last_good_linkerd,
            &mut problems,
        );
        policies.extend(linkerd.policies);
        let peer = peer_authentication::PeerAuthn::collect(index, opts, &mut problems);
        let services = services::translate_services(index, &waypoints, &mut problems);
        // HTTP attributes dropped at ztunnel are worth a warning only where
        // no waypoint enforces them.
        problems.extend(policies.iter().filter_map(|p| p.warning.clone()));
        problems.extend(references::unknown_identities(index, &opts.trust_domain));
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
        let (waypoint_configs, access_logging) = self.waypoint_configs(
            index,
            &waypoints,
            &bindings,
            linkerd.waypoints,
            &mut problems,
        );

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
        snapshot.insert(
            api::ACCESS_LOGGING_TYPE_URL,
            api::ACCESS_LOGGING_NAME.to_owned(),
            api::pack(&access_logging),
        );
        Translation {
            snapshot: Snapshot::new(snapshot.resources),
            problems: dedup(problems),
        }
    }

    /// One configuration per waypoint: routes and policies of the services
    /// it serves, and the authorization policies it enforces; and the node proxies' access
    /// log switches, from the same Telemetry resources.
    fn waypoint_configs(
        &mut self,
        index: &Index,
        waypoints: &waypoints::Waypoints,
        bindings: &bindings::Bindings,
        mut linkerd: std::collections::BTreeMap<
            bindings::WaypointKey,
            linkerd_policy::AtWaypointConfig,
        >,
        problems: &mut Vec<Problem>,
    ) -> (
        Vec<(String, api::waypoint::Waypoint)>,
        api::telemetry::AccessLogging,
    ) {
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
        let mut configs = routes::assemble(&assembly, problems);
        let inputs = telemetry::Inputs {
            catalog: &catalog,
            waypoints,
            bindings,
            root_namespace: &opts.root_namespace,
        };
        let access_logging = telemetry::apply(
            &inputs,
            &mut self.last_good_telemetry,
            &mut configs,
            problems,
        );
        let configs = configs
            .into_iter()
            .map(|(key, mut w)| {
                w.authorization_policies = authz.remove(&key).unwrap_or_default();
                // Linkerd's policy of the pods it serves, enforced with the client's identity.
                let linkerd = linkerd.remove(&key).unwrap_or_default();
                w.authorization_policies.extend(linkerd.policies);
                w.workload_rate_limits = linkerd.rate_limits;
                (key.resource_name(), w)
            })
            .collect();
        (configs, access_logging)
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
