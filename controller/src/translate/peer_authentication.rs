//! PeerAuthentication → what ztunnel enforces, as Istio does it: STRICT mTLS
//! is a DENY policy matching connections without a peer identity
//! (`not_principals: presence`). One static such policy lives in the root
//! namespace and workloads whose effective mode is STRICT reference it; a
//! workload policy with port-level exceptions gets its own converted policy.
//!
//! Precedence: workload selector policy > namespace policy > mesh policy
//! (root namespace, no selector); `UNSET` inherits. When several policies
//! compete at one level the oldest wins (then the first by name).

use std::collections::BTreeMap;

use api::security::{
    Action, Authorization, Clause, Match, Rule, Scope, StringMatch, string_match::MatchType,
};

use super::fail_closed::PEER_AUTHENTICATION_CONSEQUENCE;
use super::labels::selects;
use super::options::TranslateOptions;
use crate::model::{Index, PeerAuthentication, Pod, Problem};

/// Name of the static STRICT policy (underscores cannot clash with
/// Kubernetes names).
pub const STATIC_STRICT_POLICY: &str = "istio_converted_static_strict";
/// Prefix of a workload policy's converted form.
pub const CONVERTED_PREFIX: &str = "istio_converted_peer_authentication_";

/// An mTLS mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Unset,
    Permissive,
    Strict,
    Disable,
}

/// One valid PeerAuthentication.
struct Entry<'a> {
    pa: &'a PeerAuthentication,
    mode: Mode,
    /// (port, mode) from `portLevelMtls`, sorted by port.
    ports: Vec<(u32, Mode)>,
}

/// All PeerAuthentications, ready to be applied to workloads.
pub(crate) struct PeerAuthn<'a> {
    any: bool,
    root_namespace: String,
    mesh: Option<Entry<'a>>,
    namespaces: BTreeMap<String, Entry<'a>>,
    /// Workload-selector policies by namespace, oldest first.
    workloads: BTreeMap<String, Vec<Entry<'a>>>,
    /// Converted forms of workload policies with port exceptions, by reference.
    converted: BTreeMap<String, Authorization>,
    /// The static STRICT policy.
    strict: Authorization,
}

fn parse_mode(mode: Option<&str>) -> Option<Mode> {
    match mode.unwrap_or("UNSET") {
        "UNSET" | "" => Some(Mode::Unset),
        "PERMISSIVE" => Some(Mode::Permissive),
        "STRICT" => Some(Mode::Strict),
        "DISABLE" => Some(Mode::Disable),
        _ => None,
    }
}

fn no_principal() -> Match {
    Match {
        not_principals: vec![StringMatch {
            match_type: Some(MatchType::Presence(())),
        }],
        ..Default::default()
    }
}

/// Reads one PeerAuthentication; the problem (without its consequence) when it cannot be
/// understood.
fn read_entry<'a>(origin: &str, pa: &'a PeerAuthentication) -> Result<Entry<'a>, Box<Problem>> {
    let m = &pa.metadata;
    let problem = || Problem::new(origin, "PeerAuthentication", &m.namespace, &m.name);
    if let Some(unreadable) = &pa.unreadable {
        return Err(unreadable.clone());
    }
    let unknown = |field: String, v: Option<&str>| {
        Box::new(problem().field(field).message(format!(
            "unknown mode {:?} (UNSET, PERMISSIVE, STRICT, DISABLE)",
            v.unwrap_or_default()
        )))
    };
    let top = pa.spec.mtls.as_ref().and_then(|t| t.mode.as_deref());
    let mode = parse_mode(top).ok_or_else(|| unknown("spec.mtls.mode".into(), top))?;
    let mut ports = Vec::new();
    for (port, mtls) in &pa.spec.port_level_mtls {
        let field = format!("spec.portLevelMtls[{port}]");
        let port_mode = parse_mode(mtls.mode.as_deref())
            .ok_or_else(|| unknown(format!("{field}.mode"), mtls.mode.as_deref()))?;
        match port.parse::<u16>() {
            Ok(p) if p > 0 => ports.push((u32::from(p), port_mode)),
            _ => {
                return Err(Box::new(
                    problem()
                        .field(field)
                        .message(format!("{port:?} is not a port number")),
                ));
            }
        }
    }
    ports.sort_by_key(|(p, _)| *p);
    Ok(Entry { pa, mode, ports })
}

impl<'a> PeerAuthn<'a> {
    /// Reads every PeerAuthentication of `index`; invalid ones are reported and enforced as
    /// STRICT.
    pub(crate) fn collect(
        index: &'a Index,
        options: &TranslateOptions,
        problems: &mut Vec<Problem>,
    ) -> Self {
        let mut all: Vec<(&str, Entry<'a>)> = Vec::new();
        for (origin, pa) in index.peer_authentications() {
            let entry = match read_entry(origin, pa) {
                Ok(entry) => entry,
                Err(mut problem) => {
                    // Fails closed: what cannot be understood requires mTLS.
                    problem
                        .message
                        .push_str(&format!("; {PEER_AUTHENTICATION_CONSEQUENCE}"));
                    problems.push(*problem);
                    Entry {
                        pa,
                        mode: Mode::Strict,
                        ports: Vec::new(),
                    }
                }
            };
            all.push((origin, entry));
        }
        // Oldest first (RFC 3339 UTC strings sort chronologically), then by
        // namespace/name, so the winner of a conflict is deterministic.
        all.sort_by(|(_, a), (_, b)| {
            let key = |e: &Entry<'_>| {
                let m = &e.pa.metadata;
                (
                    m.creation_timestamp.clone().unwrap_or_default(),
                    m.namespace.clone(),
                    m.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        let mut this = Self {
            any: !all.is_empty(),
            root_namespace: options.root_namespace.clone(),
            mesh: None,
            namespaces: BTreeMap::new(),
            workloads: BTreeMap::new(),
            converted: BTreeMap::new(),
            strict: Authorization {
                name: STATIC_STRICT_POLICY.to_string(),
                namespace: options.root_namespace.clone(),
                scope: Scope::WorkloadSelector as i32,
                action: Action::Deny as i32,
                rules: vec![Rule {
                    clauses: vec![Clause {
                        matches: vec![no_principal()],
                    }],
                }],
                dry_run: false,
            },
        };
        for (_, e) in all {
            let m = &e.pa.metadata;
            let selector =
                e.pa.spec
                    .selector
                    .as_ref()
                    .filter(|s| !s.match_labels.is_empty());
            match (selector.is_some(), m.namespace == options.root_namespace) {
                (false, true) => {
                    this.mesh.get_or_insert(e);
                }
                (false, false) => {
                    this.namespaces.entry(m.namespace.clone()).or_insert(e);
                }
                // Istio ignores selector policies in the root namespace.
                (true, true) => {}
                (true, false) => this
                    .workloads
                    .entry(m.namespace.clone())
                    .or_default()
                    .push(e),
            }
        }
        this.convert_port_policies();
        this
    }

    /// The mode inherited from the namespace, else the mesh.
    fn inherited(&self, namespace: &str) -> Mode {
        let ns = self.namespaces.get(namespace).map(|e| e.mode);
        match ns {
            Some(mode) if mode != Mode::Unset => mode,
            _ => self.mesh.as_ref().map_or(Mode::Unset, |e| e.mode),
        }
    }

    /// Builds the converted form of every workload policy with port-level modes.
    fn convert_port_policies(&mut self) {
        let mut converted = BTreeMap::new();
        for (ns, entries) in &self.workloads {
            for e in entries {
                if let Some((reference, auth)) = self.convert_one(ns, e) {
                    converted.insert(reference, auth);
                }
            }
        }
        self.converted = converted;
    }

    /// The converted policy of one workload policy, if its ports differ from
    /// its effective top-level mode.
    fn convert_one(&self, ns: &str, e: &Entry<'_>) -> Option<(String, Authorization)> {
        let top = match e.mode {
            Mode::Unset => self.inherited(ns),
            mode => mode,
        };
        let mut rules = Vec::new();
        if top == Mode::Strict {
            let lax: Vec<u32> = e
                .ports
                .iter()
                .filter(|(_, m)| matches!(m, Mode::Permissive | Mode::Disable))
                .map(|(p, _)| *p)
                .collect();
            if lax.is_empty() {
                return None;
            }
            // Deny when the port is not an exception and there is no identity.
            rules.push(Rule {
                clauses: vec![
                    Clause {
                        matches: vec![Match {
                            not_destination_ports: lax,
                            ..Default::default()
                        }],
                    },
                    Clause {
                        matches: vec![no_principal()],
                    },
                ],
            });
        } else {
            for (port, _) in e.ports.iter().filter(|(_, m)| *m == Mode::Strict) {
                let mut m = no_principal();
                m.destination_ports = vec![*port];
                rules.push(Rule {
                    clauses: vec![Clause { matches: vec![m] }],
                });
            }
            if rules.is_empty() {
                return None;
            }
        }
        let name = format!("{CONVERTED_PREFIX}{}", e.pa.metadata.name);
        let auth = Authorization {
            name: name.clone(),
            namespace: ns.to_string(),
            scope: Scope::WorkloadSelector as i32,
            action: Action::Deny as i32,
            rules,
            dry_run: false,
        };
        Some((format!("{ns}/{name}"), auth))
    }

    /// The policies to publish: the static STRICT policy whenever any
    /// PeerAuthentication exists, and the converted workload policies.
    pub(crate) fn authorizations(&self) -> impl Iterator<Item = &Authorization> {
        self.any
            .then_some(&self.strict)
            .into_iter()
            .chain(self.converted.values())
    }

    /// References (`ns/name`) the workload of `pod` must carry.
    pub(crate) fn references_for(&self, pod: &Pod) -> Vec<String> {
        if !self.any {
            return Vec::new();
        }
        let ns = &pod.metadata.namespace;
        let workload_policy = self.workloads.get(ns).and_then(|es| {
            es.iter().find(|e| {
                e.pa.spec
                    .selector
                    .as_ref()
                    .is_some_and(|s| selects(&s.match_labels, &pod.metadata.labels))
            })
        });
        let inherited = self.inherited(ns);
        let (mode, converted) = match workload_policy {
            None => (inherited, None),
            Some(e) => {
                let reference = format!("{ns}/{CONVERTED_PREFIX}{}", e.pa.metadata.name);
                let converted = self.converted.contains_key(&reference).then_some(reference);
                let mode = if e.mode == Mode::Unset {
                    inherited
                } else {
                    e.mode
                };
                (mode, converted)
            }
        };
        match converted {
            // The converted policy carries the STRICT part itself (a DENY
            // anywhere would override its port exceptions).
            Some(reference) => vec![reference],
            None if mode == Mode::Strict => {
                vec![format!("{}/{STATIC_STRICT_POLICY}", self.root_namespace)]
            }
            None => Vec::new(),
        }
    }
}
