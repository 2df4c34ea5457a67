//! Who may have a certificate for which identity, and for how long.

use std::time::Duration;

use api::prost_types::{Struct, value::Kind};
use hbone::Identity;

use super::auth::Caller;

/// The `metadata` key under which a node proxy names the identity it requests for.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";
/// Validity when the request asks for none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest validity granted.
pub const MAX_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// Answers whether a node runs a pod as a given service account.
pub trait NodeDirectory: Send + Sync {
    /// Whether `node` has a pod running as `namespace`/`service_account`.
    fn has_pod(&self, node: &str, namespace: &str, service_account: &str) -> bool;

    /// Whether the pods have been read in full: until then "no pod" means "not known yet",
    /// and impersonation is answered "unavailable" (retried) rather than refused.
    fn loaded(&self) -> bool {
        true
    }
}

/// Why a certificate is refused. Every variant maps to `Unauthenticated` except
/// [`Refusal::Ttl`] and [`Refusal::Malformed`] (`InvalidArgument`) and [`Refusal::NotLoaded`]
/// (`Unavailable`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The caller's own identity is outside the CA's trust domain.
    #[error("caller identity {0} is outside the trust domain")]
    ForeignCaller(String),
    /// Impersonation by a caller that is not a trusted node proxy.
    #[error("caller {0} may not impersonate")]
    NotANode(String),
    /// Impersonation by a node proxy whose token names no node.
    #[error("caller {0} has no node")]
    NoNode(String),
    /// The impersonated identity is not a valid identity of this trust domain.
    #[error("invalid impersonated identity {0:?}")]
    BadIdentity(String),
    /// The node runs no pod with that service account.
    #[error("node {node} runs no pod as {identity}")]
    NoPodOnNode {
        /// The caller's node.
        node: String,
        /// The requested identity.
        identity: String,
    },
    /// The requested validity is negative or above [`MAX_TTL`].
    #[error("validity of {0} s is out of range (max {max} s)", max = MAX_TTL.as_secs())]
    Ttl(i64),
    /// The metadata carries `ImpersonatedIdentity` of a type other than string.
    #[error("{IMPERSONATED_IDENTITY} must be a string")]
    Malformed,
    /// The controller has not read its configuration yet, so it cannot tell which pods run
    /// where.
    #[error("the controller is still loading its configuration")]
    NotLoaded,
}

impl Refusal {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::ForeignCaller(_) => "foreign_caller",
            Refusal::NotANode(_) => "not_a_node",
            Refusal::NoNode(_) => "no_node",
            Refusal::BadIdentity(_) => "bad_identity",
            Refusal::NoPodOnNode { .. } => "no_pod_on_node",
            Refusal::Ttl(_) => "ttl",
            Refusal::Malformed => "malformed",
            Refusal::NotLoaded => "not_loaded",
        }
    }
}

/// Reads `ImpersonatedIdentity` from the request metadata.
pub fn impersonated(metadata: Option<&Struct>) -> Result<Option<&str>, Refusal> {
    match metadata.and_then(|m| m.fields.get(IMPERSONATED_IDENTITY)) {
        None => Ok(None),
        Some(value) => match &value.kind {
            Some(Kind::StringValue(s)) if !s.is_empty() => Ok(Some(s)),
            Some(Kind::StringValue(_)) | Some(Kind::NullValue(_)) | None => Ok(None),
            Some(_) => Err(Refusal::Malformed),
        },
    }
}

/// The validity to grant for a requested `validity_duration` in seconds.
pub fn ttl(requested_seconds: i64) -> Result<Duration, Refusal> {
    match u64::try_from(requested_seconds) {
        Ok(0) => Ok(DEFAULT_TTL),
        Ok(s) if Duration::from_secs(s) <= MAX_TTL => Ok(Duration::from_secs(s)),
        _ => Err(Refusal::Ttl(requested_seconds)),
    }
}

/// Decides which identity `caller` gets: its own, or — for a trusted node proxy — the
/// `impersonated` one, provided the caller's node runs a pod as that service account.
pub fn grant(
    caller: &Caller,
    impersonated: Option<&str>,
    trust_domain: &str,
    trusted_nodes: &[Identity],
    directory: &dyn NodeDirectory,
) -> Result<Identity, Refusal> {
    if caller.identity.trust_domain() != trust_domain {
        return Err(Refusal::ForeignCaller(caller.identity.to_string()));
    }
    let Some(requested) = impersonated else {
        return Ok(caller.identity.clone());
    };
    let requested: Identity = requested
        .parse()
        .map_err(|_| Refusal::BadIdentity(requested.to_owned()))?;
    if requested == caller.identity {
        return Ok(requested);
    }
    if !trusted_nodes.contains(&caller.identity) {
        return Err(Refusal::NotANode(caller.identity.to_string()));
    }
    let node = caller
        .node
        .as_deref()
        .ok_or_else(|| Refusal::NoNode(caller.identity.to_string()))?;
    if requested.trust_domain() != trust_domain {
        return Err(Refusal::BadIdentity(requested.to_string()));
    }
    if !directory.loaded() {
        return Err(Refusal::NotLoaded);
    }
    if !directory.has_pod(node, requested.namespace(), requested.service_account()) {
        return Err(Refusal::NoPodOnNode {
            node: node.to_owned(),
            identity: requested.to_string(),
        });
    }
    Ok(requested)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Pods(Vec<(&'static str, &'static str, &'static str)>);
    impl NodeDirectory for Pods {
        fn has_pod(&self, node: &str, ns: &str, sa: &str) -> bool {
            self.0.contains(&(node, ns, sa))
        }
    }

    fn id(s: &str) -> Identity {
        s.parse().unwrap()
    }

    const ZT: &str = "spiffe://cluster.local/ns/istio-system/sa/ztunnel";
    const APP: &str = "spiffe://cluster.local/ns/app/sa/web";

    fn ztunnel(node: Option<&str>) -> Caller {
        Caller {
            identity: id(ZT),
            node: node.map(Into::into),
        }
    }

    #[test]
    fn grants() {
        let pods = Pods(vec![("n1", "app", "web")]);
        let nodes = [id(ZT)];
        let g = |c: &Caller, imp| grant(c, imp, "cluster.local", &nodes, &pods);
        assert_eq!(g(&ztunnel(Some("n1")), None), Ok(id(ZT)));
        assert_eq!(g(&ztunnel(Some("n1")), Some(APP)), Ok(id(APP)));
        assert!(matches!(
            g(&ztunnel(Some("n2")), Some(APP)),
            Err(Refusal::NoPodOnNode { .. })
        ));
        assert!(matches!(
            g(&ztunnel(None), Some(APP)),
            Err(Refusal::NoNode(_))
        ));
        let app = Caller {
            identity: id(APP),
            node: Some("n1".into()),
        };
        assert_eq!(g(&app, None), Ok(id(APP)));
        assert_eq!(g(&app, Some(APP)), Ok(id(APP)));
        assert!(matches!(g(&app, Some(ZT)), Err(Refusal::NotANode(_))));
        assert!(matches!(
            g(&ztunnel(Some("n1")), Some("nope")),
            Err(Refusal::BadIdentity(_))
        ));
        let foreign = Caller {
            identity: id("spiffe://other/ns/a/sa/b"),
            node: None,
        };
        assert!(matches!(g(&foreign, None), Err(Refusal::ForeignCaller(_))));
    }

    /// A directory that has not read its pods yet.
    struct Loading;
    impl NodeDirectory for Loading {
        fn has_pod(&self, _: &str, _: &str, _: &str) -> bool {
            false
        }
        fn loaded(&self) -> bool {
            false
        }
    }

    #[test]
    fn impersonation_waits_for_the_pods_to_be_read() {
        let nodes = [id(ZT)];
        let g = |imp| grant(&ztunnel(Some("n1")), imp, "cluster.local", &nodes, &Loading);
        // Unknown yet, not refused: the node proxy retries.
        assert_eq!(g(Some(APP)), Err(Refusal::NotLoaded));
        // Its own identity needs no directory.
        assert_eq!(g(None), Ok(id(ZT)));
    }

    #[test]
    fn ttls() {
        assert_eq!(ttl(0), Ok(DEFAULT_TTL));
        assert_eq!(ttl(3600), Ok(Duration::from_secs(3600)));
        assert_eq!(ttl(MAX_TTL.as_secs() as i64), Ok(MAX_TTL));
        assert!(ttl(MAX_TTL.as_secs() as i64 + 1).is_err());
        assert!(ttl(-1).is_err());
    }

    #[test]
    fn reads_metadata() {
        use api::prost_types::Value;
        let mut fields = BTreeMap::new();
        assert_eq!(impersonated(None), Ok(None));
        fields.insert(
            IMPERSONATED_IDENTITY.to_owned(),
            Value {
                kind: Some(Kind::StringValue(APP.into())),
            },
        );
        let s = Struct {
            fields: fields.clone(),
        };
        assert_eq!(impersonated(Some(&s)), Ok(Some(APP)));
        fields.insert(
            IMPERSONATED_IDENTITY.to_owned(),
            Value {
                kind: Some(Kind::NumberValue(1.0)),
            },
        );
        assert_eq!(
            impersonated(Some(&Struct { fields })),
            Err(Refusal::Malformed)
        );
    }
}
