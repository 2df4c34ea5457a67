//! Linkerd objects, kept raw in the index, decoded and validated one by one. A field the model
//! has no place for makes the object invalid, as for Istio's security policies: a misspelt
//! `requiredAuthenticationRefs` would otherwise authorize everybody.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::defs::{DefaultPolicy, PolicyDef, PortRef, Requirement, ServerDef, Target};
use super::identity;
use crate::model::linkerd::{
    LINKERD_POLICY_GROUP, LabelSelector, LinkerdAuthorizationPolicySpec, LinkerdRef,
    MeshTlsAuthenticationSpec, NetworkAuthenticationSpec, ServerSpec,
};
use crate::model::{IntOrString, ObjectKey, Problem};

/// The Gateway API's group, whose HTTPRoute Linkerd also reads.
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// An invalid field: (field path, message).
pub(super) type Invalid = (String, String);

/// Decodes `spec` of a raw object, refusing fields the model does not read.
pub(super) fn spec<T: DeserializeOwned + Default>(value: &Value) -> Result<T, Invalid> {
    let Some(spec) = value.get("spec") else {
        return Ok(T::default());
    };
    let mut unknown = Vec::new();
    let decoded: Result<T, _> =
        // An optional field shows as `?` in the path: left out.
        serde_ignored::deserialize(spec, |path| {
            unknown.push(format!("spec.{path}").replace(".?", ""))
        });
    let decoded = decoded.map_err(|e| ("spec".to_owned(), e.to_string()))?;
    match unknown.first() {
        Some(field) => Err((
            field.clone(),
            "unknown field: the mesh cannot read this object in full".to_owned(),
        )),
        None => Ok(decoded),
    }
}

/// One part of `spec`, decoded alone (to salvage what can be read of an invalid object).
fn part<T: DeserializeOwned>(value: &Value, key: &str) -> Option<T> {
    serde_json::from_value(value.get("spec")?.get(key)?.clone()).ok()
}

/// Checks a label selector's expressions.
fn check_selector(selector: &LabelSelector, field: &str) -> Result<(), Invalid> {
    for (i, r) in selector.match_expressions.iter().enumerate() {
        let f = format!("{field}.matchExpressions[{i}]");
        let needs_values = match r.operator.as_str() {
            "In" | "NotIn" => true,
            "Exists" | "DoesNotExist" => false,
            other => {
                return Err((
                    format!("{f}.operator"),
                    format!("unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"),
                ));
            }
        };
        if needs_values == r.values.is_empty() {
            let why = if needs_values {
                "must have values"
            } else {
                "must have no values"
            };
            return Err((format!("{f}.values"), format!("{} {why}", r.operator)));
        }
    }
    Ok(())
}

fn port(port: Option<&IntOrString>) -> Result<PortRef, Invalid> {
    let field = || "spec.port".to_owned();
    match port {
        Some(IntOrString::Int(n)) => match u16::try_from(*n) {
            Ok(p) if p > 0 => Ok(PortRef::Number(p)),
            _ => Err((field(), format!("{n} is not a port number"))),
        },
        Some(IntOrString::String(name)) if !name.is_empty() => Ok(PortRef::Name(name.clone())),
        _ => Err((field(), "missing: a port number or name".to_owned())),
    }
}

fn access(text: Option<&str>) -> Result<DefaultPolicy, Invalid> {
    match text {
        None => Ok(DefaultPolicy::Deny),
        Some(t) => DefaultPolicy::parse(t).ok_or_else(|| {
            (
                "spec.accessPolicy".to_owned(),
                format!("unknown policy {t:?} ({})", DefaultPolicy::all_names()),
            )
        }),
    }
}

/// A Server, or the problem and what stands in for it: what can be read of it, selecting every
/// pod of its namespace when its selector cannot be read, guarding every port when its port
/// cannot be read, refusing every client it does not authorize.
pub(super) fn server(
    origin: &str,
    name: &str,
    value: &Value,
) -> Result<ServerDef, Box<(Invalid, ServerDef)>> {
    let decoded = spec::<ServerSpec>(value).and_then(|s| {
        let selector = match (&s.pod_selector, &s.external_workload_selector) {
            (Some(sel), _) => {
                check_selector(sel, "spec.podSelector")?;
                Some(sel.clone())
            }
            (None, Some(_)) => None,
            (None, None) => {
                return Err((
                    "spec.podSelector".to_owned(),
                    "missing: a Server selects pods (podSelector)".to_owned(),
                ));
            }
        };
        Ok(ServerDef {
            origin: origin.to_owned(),
            name: name.to_owned(),
            selector,
            port: port(s.port.as_ref())?,
            access: access(s.access_policy.as_deref())?,
        })
    });
    decoded.map_err(|invalid| {
        let selector = part::<LabelSelector>(value, "podSelector")
            .filter(|s| check_selector(s, "").is_ok())
            .unwrap_or_default();
        let port = port(part::<IntOrString>(value, "port").as_ref()).unwrap_or(PortRef::Every);
        let stand_in = ServerDef {
            origin: origin.to_owned(),
            name: name.to_owned(),
            selector: Some(selector),
            port,
            access: DefaultPolicy::Deny,
        };
        Box::new((invalid, stand_in))
    })
}

/// A MeshTLSAuthentication: the identities it admits, and warnings.
pub(super) fn mesh_tls(
    namespace: &str,
    value: &Value,
    trust_domain: &str,
) -> Result<(Requirement, Vec<Invalid>), Invalid> {
    let s: MeshTlsAuthenticationSpec = spec(value)?;
    let mut principals = Vec::new();
    let mut warnings = Vec::new();
    for (i, id) in s.identities.iter().enumerate() {
        let f = format!("spec.identities[{i}]");
        let (m, warning) =
            identity::linkerd_identity(id, trust_domain).map_err(|m| (f.clone(), m))?;
        principals.push(m);
        warnings.extend(warning.map(|w| (f, w)));
    }
    for (i, r) in s.identity_refs.iter().enumerate() {
        let f = format!("spec.identityRefs[{i}]");
        let ns = if r.namespace.is_empty() {
            namespace
        } else {
            &r.namespace
        };
        let m = match (r.kind.as_str(), r.name.as_str()) {
            ("ServiceAccount", "*") => identity::namespace(trust_domain, ns),
            ("ServiceAccount", "") | ("Namespace", "") => {
                return Err((format!("{f}.name"), "missing".to_owned()));
            }
            ("ServiceAccount", sa) => identity::service_account(trust_domain, ns, sa),
            ("Namespace", "*") => identity::any(),
            ("Namespace", name) => identity::namespace(trust_domain, name),
            (other, _) => {
                return Err((
                    format!("{f}.kind"),
                    format!("{other:?} is not an identity (ServiceAccount or Namespace)"),
                ));
            }
        };
        principals.push(m);
    }
    Ok((Requirement::Principal(principals), warnings))
}

/// A NetworkAuthentication: the networks it admits.
pub(super) fn network(value: &Value) -> Result<Requirement, Invalid> {
    let s: NetworkAuthenticationSpec = spec(value)?;
    let mut nets = Vec::new();
    for (i, n) in s.networks.iter().enumerate() {
        let got = identity::network(&n.cidr, &n.except)
            .map_err(|(f, m)| (format!("spec.networks[{i}].{f}"), m))?;
        nets.extend(got);
    }
    Ok(Requirement::Network(nets))
}

/// What an AuthorizationPolicy decodes to.
pub(super) enum Decoded {
    /// A policy the mesh enforces, and warnings about it.
    Enforced(PolicyDef, Vec<Invalid>),
    /// A policy of gRPC routes, not enforced: the warning saying so.
    NotEnforced(Invalid),
}

/// The authentications of the index, by key, as validated (or standing in) this translation.
pub(super) type Authentications = BTreeMap<ObjectKey, Requirement>;

fn is_core(group: &str) -> bool {
    group.is_empty() || group == "core"
}

/// An AuthorizationPolicy, its authentications resolved in `authns`.
pub(super) fn policy(
    namespace: &str,
    value: &Value,
    trust_domain: &str,
    authns: &Authentications,
) -> Result<Decoded, Invalid> {
    let s: LinkerdAuthorizationPolicySpec = spec(value)?;
    let t = &s.target_ref;
    let tf = |f: &str| format!("spec.targetRef.{f}");
    if !t.namespace.is_empty() && t.namespace != namespace {
        return Err((
            tf("namespace"),
            "a policy targets objects of its own namespace only".to_owned(),
        ));
    }
    let target = match t.kind.as_str() {
        "Server" if t.group == LINKERD_POLICY_GROUP => Target::Server(t.name.clone()),
        "Namespace" if is_core(&t.group) && t.name == namespace => Target::Namespace,
        "Namespace" if is_core(&t.group) => {
            return Err((
                tf("name"),
                format!("{:?} is not the policy's namespace {namespace:?}", t.name),
            ));
        }
        "HTTPRoute" if t.group == LINKERD_POLICY_GROUP || t.group == GATEWAY_GROUP => {
            Target::Route(t.name.clone())
        }
        "GRPCRoute" => {
            return Ok(Decoded::NotEnforced((
                tf("kind"),
                "warning: authorization per GRPCRoute is not enforced: this policy admits no \
                 client; clients of the route's Server are admitted only by policies targeting \
                 the Server or the Namespace"
                    .to_owned(),
            )));
        }
        other => {
            return Err((
                tf("kind"),
                format!(
                    "{other:?} (group {:?}) is not a target the mesh enforces (Server or \
                     HTTPRoute of {LINKERD_POLICY_GROUP}, Namespace)",
                    t.group
                ),
            ));
        }
    };
    if let Target::Server(name) | Target::Route(name) = &target
        && name.is_empty()
    {
        return Err((tf("name"), "missing".to_owned()));
    }
    let required = s
        .required_authentication_refs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            requirement(
                r,
                &format!("spec.requiredAuthenticationRefs[{i}]"),
                namespace,
                trust_domain,
                authns,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Decoded::Enforced(
        PolicyDef {
            namespace: namespace.to_owned(),
            target,
            required,
        },
        one_of_each(&s.required_authentication_refs),
    ))
}

/// Warnings for a second identity authentication (MeshTLSAuthentication or ServiceAccount) or
/// a second NetworkAuthentication: Linkerd's admission refuses such a policy; here a client
/// must meet every one (the intersection, never wider).
fn one_of_each(refs: &[LinkerdRef]) -> Vec<Invalid> {
    let mut seen = (false, false);
    let mut warnings = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let (first, what) = match r.kind.as_str() {
            "NetworkAuthentication" => (&mut seen.1, "NetworkAuthentication"),
            _ => (&mut seen.0, "MeshTLSAuthentication or ServiceAccount"),
        };
        if std::mem::replace(first, true) {
            warnings.push((
                format!("spec.requiredAuthenticationRefs[{i}]"),
                format!(
                    "warning: Linkerd admits one {what} per policy and refuses this one; here a \
                     client must meet all of them"
                ),
            ));
        }
    }
    warnings
}

/// One required authentication.
fn requirement(
    r: &LinkerdRef,
    field: &str,
    namespace: &str,
    trust_domain: &str,
    authns: &Authentications,
) -> Result<Requirement, Invalid> {
    let ns = if r.namespace.is_empty() {
        namespace
    } else {
        &r.namespace
    };
    if r.name.is_empty() {
        return Err((format!("{field}.name"), "missing".to_owned()));
    }
    match r.kind.as_str() {
        "ServiceAccount" if is_core(&r.group) => {
            Ok(Requirement::Principal(vec![identity::service_account(
                trust_domain,
                ns,
                &r.name,
            )]))
        }
        kind @ ("MeshTLSAuthentication" | "NetworkAuthentication")
            if r.group == LINKERD_POLICY_GROUP =>
        {
            authns
                .get(&ObjectKey::new(kind, ns, &r.name))
                .cloned()
                .ok_or_else(|| {
                    (
                        field.to_owned(),
                        format!("{kind} {ns}/{} does not exist", r.name),
                    )
                })
        }
        other => Err((
            format!("{field}.kind"),
            format!(
                "{other:?} (group {:?}) is not an authentication (MeshTLSAuthentication or \
                 NetworkAuthentication of {LINKERD_POLICY_GROUP}, ServiceAccount)",
                r.group
            ),
        )),
    }
}

/// A problem at `field` of an object.
pub(super) fn problem(origin: &str, key: &ObjectKey, (field, message): Invalid) -> Problem {
    Problem::new(origin, &key.kind, &key.namespace, &key.name)
        .field(field)
        .message(message)
}
