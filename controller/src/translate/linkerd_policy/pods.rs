//! Per pod: the ports its Servers guard, each refused to the clients no authorization (nor the
//! Server's `accessPolicy`) admits, and the default inbound policy on the other ports. Pods
//! sharing the same rules share one Authorization resource, referenced by their workloads.

use std::collections::{BTreeMap, BTreeSet};

use api::security::{
    Action, Address, Authorization, Rule, Scope, StringMatch, string_match::MatchType,
};

use super::defs::{
    Alternatives, DefaultPolicy, PolicyDef, PortRef, Requirement, ServerDef, Target,
};
use super::objects::Objects;
use super::rules::{Ports, deny_rule};
use super::service_ports::destination_ports;
use crate::model::linkerd::{DEFAULT_INBOUND_POLICY, LabelSelector};
use crate::model::{Index, Pod, Problem, WARNING_PREFIX};
use crate::translate::bindings::{WaypointKey, workload_uid};

/// Prefix of the resources of Servers (underscores: no Kubernetes name can clash).
pub const SERVER_PREFIX: &str = "linkerd_server_";
/// Prefix of the resources of default inbound policies.
pub const DEFAULT_PREFIX: &str = "linkerd_default_";

/// Resources by (namespace, name), with the pods they apply to.
pub(super) type Resources = BTreeMap<(String, String), (Authorization, BTreeSet<(String, String)>)>;

/// A waypoint serving a pod, and the identities it connects to the pod with.
#[derive(Clone, Debug)]
pub(super) struct Via {
    /// The waypoint.
    pub waypoint: WaypointKey,
    /// Its principals (`<trust domain>/ns/<ns>/sa/<sa>`).
    pub identities: Vec<String>,
}

/// What the per-pod translation reads.
pub(super) struct Inputs<'a> {
    pub index: &'a Index,
    pub objects: &'a Objects,
    pub cluster: &'a [Address],
    /// The waypoints serving each pod, by (namespace, name).
    pub behind: &'a BTreeMap<(String, String), Vec<Via>>,
    /// The cluster's id, for workload uids.
    pub cluster_id: &'a str,
}

/// True when `selector` picks `labels`.
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    selector
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && selector.match_expressions.iter().all(|r| {
            let value = labels.get(&r.key);
            match r.operator.as_str() {
                "In" => value.is_some_and(|v| r.values.contains(v)),
                "NotIn" => value.is_none_or(|v| !r.values.contains(v)),
                "Exists" => value.is_some(),
                _ => value.is_none(),
            }
        })
}

/// The port a Server guards on `pod`: `Some(None)` for every port, `None` when the port is not
/// one of the pod's declared ports (Linkerd considers only those: the Server does not select
/// the pod).
fn resolve(port: &PortRef, pod: &Pod) -> Option<Option<u16>> {
    let mut declared = pod.spec.containers.iter().flat_map(|c| &c.ports);
    match port {
        PortRef::Number(n) => declared.find(|p| p.container_port == *n).map(|_| Some(*n)),
        PortRef::Every => Some(None),
        PortRef::Name(name) => declared
            .find(|p| &p.name == name)
            .map(|p| Some(p.container_port)),
    }
}

/// A Server that selects pods but none of which declares its port guards nothing: said so.
fn unguarded(server: &ServerDef, namespace: &str) -> Problem {
    let port = match &server.port {
        PortRef::Number(n) => n.to_string(),
        PortRef::Name(name) => format!("{name:?}"),
        PortRef::Every => "every port".to_owned(),
    };
    Problem::new(&server.origin, "Server", namespace, &server.name)
        .field("spec.port")
        .message(format!(
            "{WARNING_PREFIX}no pod it selects declares port {port} in its containers' ports              (Linkerd considers only those): it guards nothing"
        ))
}

/// The pod's default inbound policy: its own annotation, else its namespace's, else Linkerd's
/// cluster default (all-unauthenticated). A value that is not a policy denies (fail closed).
fn default_policy(index: &Index, pod: &Pod, problems: &mut Vec<Problem>) -> DefaultPolicy {
    let ns = pod.metadata.namespace.as_str();
    let namespace = index.namespace(ns);
    let (kind, name, value) = match pod.metadata.annotations.get(DEFAULT_INBOUND_POLICY) {
        Some(v) => ("Pod", pod.metadata.name.as_str(), v),
        None => match namespace.and_then(|n| n.metadata.annotations.get(DEFAULT_INBOUND_POLICY)) {
            Some(v) => ("Namespace", ns, v),
            None => return DefaultPolicy::AllUnauthenticated,
        },
    };
    let origin = |kind: &str| {
        let key = crate::model::ObjectKey::new(kind, if kind == "Pod" { ns } else { "" }, name);
        index
            .get(&key)
            .map(|s| s.origin.clone())
            .unwrap_or_default()
    };
    let problem = |message: String| {
        let namespace = if kind == "Pod" { ns } else { "" };
        Problem::new(&origin(kind), kind, namespace, name)
            .field(format!("metadata.annotations[{DEFAULT_INBOUND_POLICY}]"))
            .message(message)
    };
    match DefaultPolicy::parse(value) {
        Some(DefaultPolicy::Audit) => {
            problems.push(problem(format!(
                "{WARNING_PREFIX}audit admits every client, as all-unauthenticated; ztunnel \
                 logs each connection it admits so (a dry-run DENY policy)"
            )));
            DefaultPolicy::Audit
        }
        Some(p) => p,
        None => {
            problems.push(problem(format!(
                "unknown policy {value:?} ({}); every client is refused on the ports no Server \
                 selects until fixed",
                DefaultPolicy::all_names()
            )));
            DefaultPolicy::Deny
        }
    }
}

/// The alternatives admitting clients to `server`: each AuthorizationPolicy targeting it or its
/// namespace, then its access policy (unless audit, which only logs).
fn server_alternatives(
    server: &ServerDef,
    policies: &[PolicyDef],
    cluster: &[Address],
) -> Alternatives {
    let mut alternatives: Alternatives = policies
        .iter()
        .filter(|p| match &p.target {
            Target::Server(name) => *name == server.name,
            Target::Namespace => true,
            Target::Route(_) => false,
        })
        .map(|p| p.required.clone())
        .collect();
    if server.access != DefaultPolicy::Audit {
        alternatives.extend(server.access.alternatives(cluster));
    }
    alternatives
}

fn resource(namespace: &str, name: String, rule: Rule, dry_run: bool) -> Authorization {
    Authorization {
        name,
        namespace: namespace.to_owned(),
        // Applied by reference from the workloads of the pods it concerns.
        scope: Scope::WorkloadSelector as i32,
        action: Action::Deny as i32,
        rules: vec![rule],
        dry_run,
    }
}

/// What a pod's port (or ports) admits, before it is written for ztunnel or a waypoint.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Guard {
    /// Where the object it comes from was read (the Server, else the pod).
    pub origin: String,
    /// The resource name (`linkerd_server_<server>[_<port>]`, `linkerd_default_<policy>...`).
    pub name: String,
    /// The pod's ports it is about.
    pub on: Ports,
    /// The clients admitted.
    pub alternatives: Alternatives,
    /// Audit: refuses nothing, logs.
    pub dry_run: bool,
    /// The Server, for a Server's port (its routes apply at a waypoint).
    pub server: Option<String>,
}

/// A guard of one pod, to be enforced by a waypoint serving it.
#[derive(Clone, Debug)]
pub(super) struct AtWaypoint {
    /// The waypoint.
    pub waypoint: WaypointKey,
    /// The pod.
    pub pod: (String, String),
    /// The pod's workload uid.
    pub uid: String,
    /// The guarded ports as the waypoint sees them (service ports and the pod's).
    pub ports: Ports,
    /// What it enforces.
    pub guard: Guard,
}

/// The translation per pod: ztunnel's resources and what waypoints enforce.
#[derive(Debug, Default)]
pub(super) struct PerPod {
    /// ztunnel's resources.
    pub ztunnel: Resources,
    /// Guards of pods a waypoint serves.
    pub at_waypoints: Vec<AtWaypoint>,
    /// Servers (namespace, name) with pods no waypoint serves, by pod name.
    pub unserved: BTreeMap<(String, String), BTreeSet<String>>,
}

/// The Servers selected and guarding a port, for the report of Servers guarding nothing.
#[derive(Default)]
struct Seen {
    selecting: BTreeSet<(String, String)>,
    guarding: BTreeSet<(String, String)>,
}

/// The guards of one pod: its Servers' ports, then its default policy on the other ports.
fn pod_guards(
    inputs: &Inputs<'_>,
    origin: &str,
    pod: &Pod,
    seen: &mut Seen,
    problems: &mut Vec<Problem>,
) -> Vec<Guard> {
    let ns = pod.metadata.namespace.as_str();
    let servers = inputs
        .objects
        .servers
        .get(ns)
        .map_or(&[][..], Vec::as_slice);
    let policies = inputs
        .objects
        .policies
        .get(ns)
        .map_or(&[][..], Vec::as_slice);
    let mut out = Vec::new();
    let mut guarded: BTreeSet<u16> = BTreeSet::new();
    let mut every_port = false;
    for server in servers {
        let selected = server
            .selector
            .as_ref()
            .is_some_and(|s| selects(s, &pod.metadata.labels));
        if selected {
            seen.selecting.insert((ns.to_owned(), server.name.clone()));
        }
        let Some(port) = selected.then(|| resolve(&server.port, pod)).flatten() else {
            continue;
        };
        seen.guarding.insert((ns.to_owned(), server.name.clone()));
        let (on, name) = match (port, &server.port) {
            (None, _) => (Ports::Except(Vec::new()), server.name.clone()),
            (Some(p), PortRef::Name(_)) => (Ports::Only(vec![p]), format!("{}_{p}", server.name)),
            (Some(p), _) => (Ports::Only(vec![p]), server.name.clone()),
        };
        match port {
            Some(p) => guarded.insert(p),
            None => std::mem::replace(&mut every_port, true),
        };
        out.push(Guard {
            origin: server.origin.clone(),
            name: format!("{SERVER_PREFIX}{name}"),
            on,
            alternatives: server_alternatives(server, policies, inputs.cluster),
            dry_run: server.access == DefaultPolicy::Audit,
            server: Some(server.name.clone()),
        });
    }
    if every_port {
        return out;
    }
    let policy = default_policy(inputs.index, pod, problems);
    let except: Vec<u16> = guarded.into_iter().collect();
    let mut name = format!("{DEFAULT_PREFIX}{}", policy.name());
    if !except.is_empty() {
        let list: Vec<String> = except.iter().map(u16::to_string).collect();
        name = format!("{name}_except_{}", list.join("_"));
    }
    out.push(Guard {
        origin: origin.to_owned(),
        name,
        on: Ports::Except(except),
        // Audit refuses nothing: a dry-run DENY of every connection logs each one.
        alternatives: match policy {
            DefaultPolicy::Audit => Vec::new(),
            p => p.alternatives(inputs.cluster),
        },
        dry_run: policy == DefaultPolicy::Audit,
        server: None,
    });
    out
}

/// The waypoints' identities as an alternative: they relay the clients they have judged.
fn waypoint_alternative(vias: &[Via]) -> Vec<Requirement> {
    let principals = vias
        .iter()
        .flat_map(|v| &v.identities)
        .map(|id| StringMatch {
            match_type: Some(MatchType::Exact(id.clone())),
        })
        .collect();
    vec![Requirement::Principal(principals)]
}

/// The resources of every pod with Linkerd policy, and the guards waypoints enforce.
pub(super) fn resources(inputs: &Inputs<'_>, problems: &mut Vec<Problem>) -> PerPod {
    let mut out = PerPod::default();
    let mut seen = Seen::default();
    let no_vias = Vec::new();
    for (origin, pod) in inputs.index.pods() {
        let ns = pod.metadata.namespace.as_str();
        let key = (ns.to_owned(), pod.metadata.name.clone());
        let vias = inputs.behind.get(&key).unwrap_or(&no_vias);
        let uid = workload_uid(inputs.cluster_id, pod);
        for guard in pod_guards(inputs, origin, pod, &mut seen, problems) {
            let mut alternatives = guard.alternatives.clone();
            let mut name = guard.name.clone();
            if !vias.is_empty() {
                if !guard.dry_run {
                    // The waypoint enforces the guard with the real client identity.
                    alternatives.push(waypoint_alternative(vias));
                    for v in vias {
                        name = format!("{name}_via_{}_{}", v.waypoint.namespace, v.waypoint.name);
                    }
                }
                let ports = match &guard.on {
                    Ports::Only(list) => Ports::Only(destination_ports(inputs.index, pod, list)),
                    Ports::Except(list) => {
                        Ports::Except(destination_ports(inputs.index, pod, list))
                    }
                };
                out.at_waypoints.extend(vias.iter().map(|v| AtWaypoint {
                    waypoint: v.waypoint.clone(),
                    pod: key.clone(),
                    uid: uid.clone(),
                    ports: ports.clone(),
                    guard: guard.clone(),
                }));
            } else if let Some(server) = &guard.server {
                out.unserved
                    .entry((ns.to_owned(), server.clone()))
                    .or_default()
                    .insert(pod.metadata.name.clone());
            }
            if let Some(rule) = deny_rule(&guard.on, &alternatives) {
                let auth = resource(ns, name, rule, guard.dry_run);
                out.ztunnel
                    .entry((auth.namespace.clone(), auth.name.clone()))
                    .or_insert_with(|| (auth, BTreeSet::new()))
                    .1
                    .insert(key.clone());
            }
        }
    }
    for (ns, servers) in &inputs.objects.servers {
        problems.extend(
            servers
                .iter()
                .filter(|s| {
                    let key = (ns.clone(), s.name.clone());
                    seen.selecting.contains(&key) && !seen.guarding.contains(&key)
                })
                .map(|s| unguarded(s, ns)),
        );
    }
    out
}
