//! Per pod: the ports its Servers guard, each refused to the clients no authorization (nor the
//! Server's `accessPolicy`) admits, and the default inbound policy on the other ports. Pods
//! sharing the same rules share one Authorization resource, referenced by their workloads.

use std::collections::{BTreeMap, BTreeSet};

use api::security::{Action, Address, Authorization, Rule, Scope};

use super::defs::{Alternatives, DefaultPolicy, PolicyDef, PortRef, ServerDef, Target};
use super::objects::Objects;
use super::rules::{Ports, deny_rule};
use crate::model::linkerd::{DEFAULT_INBOUND_POLICY, LabelSelector};
use crate::model::{Index, Pod, Problem, WARNING_PREFIX};

/// Prefix of the resources of Servers (underscores: no Kubernetes name can clash).
pub const SERVER_PREFIX: &str = "linkerd_server_";
/// Prefix of the resources of default inbound policies.
pub const DEFAULT_PREFIX: &str = "linkerd_default_";

/// Resources by (namespace, name), with the pods they apply to.
pub(super) type Resources = BTreeMap<(String, String), (Authorization, BTreeSet<(String, String)>)>;

/// What the per-pod translation reads.
pub(super) struct Inputs<'a> {
    pub index: &'a Index,
    pub objects: &'a Objects,
    pub cluster: &'a [Address],
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

/// The resources of every pod of a namespace with Linkerd policy.
pub(super) fn resources(inputs: &Inputs<'_>, problems: &mut Vec<Problem>) -> Resources {
    let mut out = Resources::new();
    let no_policies = Vec::new();
    let (mut selecting, mut guarding) = (BTreeSet::new(), BTreeSet::new());
    for (_, pod) in inputs.index.pods() {
        let ns = pod.metadata.namespace.as_str();
        let servers = inputs
            .objects
            .servers
            .get(ns)
            .map_or(&[][..], Vec::as_slice);
        let policies = inputs.objects.policies.get(ns).unwrap_or(&no_policies);
        let mut add = |auth: Authorization| {
            let entry = out
                .entry((auth.namespace.clone(), auth.name.clone()))
                .or_insert_with(|| (auth, BTreeSet::new()));
            entry.1.insert((ns.to_owned(), pod.metadata.name.clone()));
        };
        let mut guarded: BTreeSet<u16> = BTreeSet::new();
        let mut every_port = false;
        for server in servers {
            let selected = server
                .selector
                .as_ref()
                .is_some_and(|s| selects(s, &pod.metadata.labels));
            if selected {
                selecting.insert((ns.to_owned(), server.name.clone()));
            }
            let Some(port) = selected.then(|| resolve(&server.port, pod)).flatten() else {
                continue;
            };
            guarding.insert((ns.to_owned(), server.name.clone()));
            let (on, name) = match (port, &server.port) {
                (None, _) => (Ports::Except(Vec::new()), server.name.clone()),
                (Some(p), PortRef::Name(_)) => {
                    (Ports::Only(vec![p]), format!("{}_{p}", server.name))
                }
                (Some(p), _) => (Ports::Only(vec![p]), server.name.clone()),
            };
            match port {
                Some(p) => guarded.insert(p),
                None => std::mem::replace(&mut every_port, true),
            };
            let alternatives = server_alternatives(server, policies, inputs.cluster);
            if let Some(rule) = deny_rule(&on, &alternatives) {
                let audit = server.access == DefaultPolicy::Audit;
                add(resource(ns, format!("{SERVER_PREFIX}{name}"), rule, audit));
            }
        }
        if every_port {
            continue;
        }
        let policy = default_policy(inputs.index, pod, problems);
        let except: Vec<u16> = guarded.into_iter().collect();
        let mut name = format!("{DEFAULT_PREFIX}{}", policy.name());
        if !except.is_empty() {
            let list: Vec<String> = except.iter().map(u16::to_string).collect();
            name = format!("{name}_except_{}", list.join("_"));
        }
        let on = Ports::Except(except);
        let rule = match policy {
            // Audit refuses nothing: a dry-run DENY of every connection logs each one.
            DefaultPolicy::Audit => deny_rule(&on, &Vec::new()),
            p => deny_rule(&on, &p.alternatives(inputs.cluster)),
        };
        if let Some(rule) = rule {
            add(resource(ns, name, rule, policy == DefaultPolicy::Audit));
        }
    }
    for (ns, servers) in &inputs.objects.servers {
        problems.extend(
            servers
                .iter()
                .filter(|s| {
                    let key = (ns.clone(), s.name.clone());
                    selecting.contains(&key) && !guarding.contains(&key)
                })
                .map(|s| unguarded(s, ns)),
        );
    }
    out
}
