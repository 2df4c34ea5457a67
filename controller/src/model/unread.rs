//! What the mesh makes of a document it does not read: a kind of Istio, Linkerd, SMI or the
//! Gateway API that it does not implement, or a near miss of one it does (a typo in the
//! group or the kind). Either way the user hears of it, with a hint; nothing is dropped in
//! silence.

/// How the mesh treats one kind of a mesh API group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    /// Read and acted on.
    Read,
    /// Not read; the object has no effect, which only loses a feature.
    Ignored(&'static str),
    /// Not read, and it is a security policy: what it would forbid is not forbidden.
    NotEnforced(&'static str),
}

use Reading::{Ignored, NotEnforced, Read};

/// Annotation (Istio 1.30) asking a waypoint to set `x-forwarded-client-cert` from the caller's
/// peer identity. Read on the waypoint's Gateway only: on a GatewayClass, which the mesh does
/// not read, it is reported.
pub const XFCC_ANNOTATION: &str = "ambient.istio.io/xfcc-include-client-identity";

/// ServerAuthorization only admits; unread, the port its Server guards stays refused.
const LINKERD_SERVER_AUTHORIZATION: &str = "Linkerd deprecates it in favour of AuthorizationPolicy \
     (policy.linkerd.io/v1alpha1) with a MeshTLSAuthentication or NetworkAuthentication: write \
     it so; until then the clients it would admit are refused wherever its Server guards the port";
const SIDECAR_ONLY: &str =
    "it configures sidecars, and ambient proxies have none: it has no effect";
const NOT_READ: &str = "the mesh does not read this kind: it has no effect";

/// Every kind of the API groups of Istio, Linkerd, SMI and the Gateway API, and what the mesh
/// does with it.
const KINDS: &[(&str, &str, Reading)] = &[
    ("", "Namespace", Read),
    ("", "Pod", Read),
    ("", "Service", Read),
    ("gateway.networking.k8s.io", "Gateway", Read),
    ("gateway.networking.k8s.io", "HTTPRoute", Read),
    ("gateway.networking.k8s.io", "GRPCRoute", Read),
    (
        "gateway.networking.k8s.io",
        "GatewayClass",
        Ignored("gateway classes are built in (istio-waypoint): it has no effect"),
    ),
    (
        "gateway.networking.k8s.io",
        "ReferenceGrant",
        Ignored(NOT_READ),
    ),
    (
        "gateway.networking.k8s.io",
        "BackendTLSPolicy",
        Ignored(NOT_READ),
    ),
    ("gateway.networking.k8s.io", "TCPRoute", Read),
    (
        "gateway.networking.k8s.io",
        "TLSRoute",
        Ignored("only HTTPRoute, GRPCRoute and TCPRoute are read: it has no effect"),
    ),
    (
        "gateway.networking.k8s.io",
        "UDPRoute",
        Ignored("UDP is not carried by the mesh: it has no effect"),
    ),
    ("security.istio.io", "AuthorizationPolicy", Read),
    ("security.istio.io", "PeerAuthentication", Read),
    (
        "security.istio.io",
        "RequestAuthentication",
        NotEnforced(
            "request (JWT) authentication is not supported: tokens are not checked, and `requestPrincipals` in an AuthorizationPolicy match no request",
        ),
    ),
    ("networking.istio.io", "VirtualService", Read),
    ("networking.istio.io", "DestinationRule", Read),
    ("networking.istio.io", "EnvoyFilter", Read),
    (
        "networking.istio.io",
        "Gateway",
        Ignored(
            "Istio's ingress Gateway is not supported: it has no effect; a waypoint is a Gateway API Gateway (apiVersion: gateway.networking.k8s.io/v1, gatewayClassName: istio-waypoint)",
        ),
    ),
    (
        "networking.istio.io",
        "ServiceEntry",
        Ignored(
            "external services are not modelled: traffic to them leaves the mesh as it is; it has no effect",
        ),
    ),
    ("networking.istio.io", "Sidecar", Ignored(SIDECAR_ONLY)),
    ("networking.istio.io", "ProxyConfig", Ignored(SIDECAR_ONLY)),
    (
        "networking.istio.io",
        "WorkloadEntry",
        Ignored("workloads outside pods (VMs) are not supported: it has no effect"),
    ),
    (
        "networking.istio.io",
        "WorkloadGroup",
        Ignored("workloads outside pods (VMs) are not supported: it has no effect"),
    ),
    ("telemetry.istio.io", "Telemetry", Read),
    (
        "extensions.istio.io",
        "WasmPlugin",
        Ignored("Wasm plugins are not supported: it has no effect"),
    ),
    ("linkerd.io", "ServiceProfile", Read),
    ("split.smi-spec.io", "TrafficSplit", Read),
    // Linkerd's copies of the Gateway API routes share their schema.
    ("policy.linkerd.io", "HTTPRoute", Read),
    ("policy.linkerd.io", "GRPCRoute", Read),
    // Linkerd's authorization policy, enforced by ztunnel at L4 and by the waypoint serving a
    // Server's pods, routes included (translate/linkerd_policy).
    ("policy.linkerd.io", "Server", Read),
    ("policy.linkerd.io", "AuthorizationPolicy", Read),
    ("policy.linkerd.io", "MeshTLSAuthentication", Read),
    ("policy.linkerd.io", "NetworkAuthentication", Read),
    (
        "policy.linkerd.io",
        "ServerAuthorization",
        NotEnforced(LINKERD_SERVER_AUTHORIZATION),
    ),
    // Rate limits of a Server, enforced by the waypoint serving its pods.
    ("policy.linkerd.io", "HTTPLocalRateLimitPolicy", Read),
    ("policy.linkerd.io", "EgressNetwork", Ignored(NOT_READ)),
    (
        "workload.linkerd.io",
        "ExternalWorkload",
        Ignored("workloads outside pods (VMs) are not supported: it has no effect"),
    ),
    (
        "multicluster.linkerd.io",
        "Link",
        Ignored("multicluster is not supported: it has no effect"),
    ),
];

/// The domains whose every group is a mesh API: a group there that is not in [`KINDS`] is a
/// typo or an API this mesh does not know.
const MESH_DOMAINS: &[&str] = &["istio.io", "linkerd.io", "smi-spec.io"];

/// Mesh API groups of which the mesh reads no kind.
const UNREAD_GROUPS: &[&str] = &["gateway.networking.x-k8s.io", "install.istio.io"];

/// What the mesh says about a document of `kind` and `api_version` it is about to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Read as usual.
    Read,
    /// Not read; the message says so, with a hint. `error` when the object cannot be what the
    /// user meant (no such kind or group) or is a security policy that is not enforced.
    NotRead {
        /// Whether this is an error rather than a warning.
        error: bool,
        /// What happens and what to do instead.
        message: String,
        /// For a near miss of a kind the mesh reads (a typo in its group or in its name): the
        /// API group and kind meant.
        meant: Option<(&'static str, &'static str)>,
    },
}

/// The verdict on `kind` in `api_version` (`group/version`, or `version` for the core group).
pub fn verdict(api_version: &str, kind: &str) -> Verdict {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let version = api_version.rsplit_once('/').map_or(api_version, |(_, v)| v);
    if let Some(&(_, _, reading)) = KINDS.iter().find(|(g, k, _)| *g == group && *k == kind) {
        return match reading {
            Read => Verdict::Read,
            Ignored(hint) => warning(format!("{kind} ({group}) is not read: {hint}")),
            NotEnforced(hint) => error(format!("{kind} ({group}) is not enforced: {hint}")),
        };
    }
    if UNREAD_GROUPS.contains(&group) {
        return warning(format!("{kind} ({group}) is not read: {NOT_READ}"));
    }
    let group_known = KINDS.iter().any(|(g, _, _)| *g == group);
    let groups = || KINDS.iter().map(|(g, _, _)| *g).filter(|g| !g.is_empty());
    let near_group = closest(group, groups());
    let in_mesh_domain = MESH_DOMAINS.iter().any(|d| group.ends_with(d));
    if !group_known && !in_mesh_domain && near_group.is_none() {
        // Deployments, ConfigMaps, other projects' kinds: not the mesh's business.
        return Verdict::Read;
    }
    let not_read = if group_known {
        format!("{api_version} has no kind {kind}, so it is not read")
    } else {
        format!("there is no API group {group}, so it is not read")
    };
    // The kind exists in another group (the one the mesh reads it from, first).
    let elsewhere = |read: bool| {
        KINDS
            .iter()
            .find(|(g, k, r)| *k == kind && !g.is_empty() && (*r == Read) == read)
    };
    if let Some((right, known, reading)) = elsewhere(true).or_else(|| elsewhere(false)) {
        let message = format!("{not_read} (did you mean apiVersion: {right}/{version}?)");
        return Verdict::NotRead {
            error: true,
            message,
            meant: (*reading == Read).then_some((*right, *known)),
        };
    }
    if group_known {
        if group.is_empty() {
            return Verdict::Read;
        }
        let kinds = KINDS
            .iter()
            .filter(|(g, _, _)| *g == group)
            .map(|(_, k, _)| *k);
        let near = closest(kind, kinds.clone());
        let hint = match near {
            Some(near) => format!("did you mean {near}?"),
            None => format!("its kinds are {}", kinds.collect::<Vec<_>>().join(", ")),
        };
        // A misspelt kind the mesh reads: what was meant, so a policy can fail closed.
        let meant = near.and_then(|near| {
            KINDS
                .iter()
                .find(|(g, k, r)| *g == group && *k == near && *r == Read)
                .map(|(g, k, _)| (*g, *k))
        });
        return Verdict::NotRead {
            error: true,
            message: format!("{not_read} ({hint})"),
            meant,
        };
    }
    match near_group {
        Some(near) => error(format!(
            "{not_read} (did you mean apiVersion: {near}/{version}?)"
        )),
        None => warning(format!("{kind} ({group}) is not read: {NOT_READ}")),
    }
}

fn warning(message: String) -> Verdict {
    Verdict::NotRead {
        error: false,
        message,
        meant: None,
    }
}

fn error(message: String) -> Verdict {
    Verdict::NotRead {
        error: true,
        message,
        meant: None,
    }
}

/// The candidate within a small edit distance of `word` (a typo), if any.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.len() / 4).clamp(1, 3);
    candidates
        .map(|c| (edit_distance(&word.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(api_version: &str, kind: &str) -> (bool, String) {
        match verdict(api_version, kind) {
            Verdict::NotRead { error, message, .. } => (error, message),
            Verdict::Read => panic!("{api_version} {kind} is read"),
        }
    }

    #[test]
    fn kinds_the_mesh_reads_and_kinds_of_no_mesh_api_are_read() {
        for (api, kind) in [
            ("v1", "Pod"),
            ("security.istio.io/v1", "AuthorizationPolicy"),
            ("security.istio.io/v1beta1", "PeerAuthentication"),
            ("gateway.networking.k8s.io/v1", "HTTPRoute"),
            ("policy.linkerd.io/v1beta3", "HTTPRoute"),
            ("linkerd.io/v1alpha2", "ServiceProfile"),
            ("apps/v1", "Deployment"),
            ("v1", "ConfigMap"),
            ("example.com/v1", "Widget"),
            ("example.com/v1", "Server"),
            ("networking.k8s.io/v1", "NetworkPolicy"),
        ] {
            assert_eq!(verdict(api, kind), Verdict::Read, "{api} {kind}");
        }
    }

    #[test]
    fn a_near_miss_of_a_group_is_an_error_with_the_right_one() {
        let (error, text) = message("security.linkerd.io/v1beta1", "Server");
        assert!(error);
        assert!(
            text.contains("did you mean apiVersion: policy.linkerd.io/v1beta1?"),
            "{text}"
        );
        let (error, text) = message("securty.istio.io/v1", "AuthorizationPolicy");
        assert!(error);
        assert!(
            text.contains("did you mean apiVersion: security.istio.io/v1?"),
            "{text}"
        );
        let (_, text) = message("gateway.networking.k8.io/v1", "Widget");
        assert!(text.contains("gateway.networking.k8s.io/v1"), "{text}");
    }

    #[test]
    fn a_near_miss_of_a_read_kind_names_the_group_meant() {
        let meant = |api: &str, kind: &str| match verdict(api, kind) {
            Verdict::NotRead { meant, .. } => meant,
            Verdict::Read => panic!("{api} {kind} is read"),
        };
        assert_eq!(
            meant("securty.istio.io/v1", "AuthorizationPolicy"),
            Some(("security.istio.io", "AuthorizationPolicy"))
        );
        assert_eq!(
            meant("networking.istio.io/v1", "PeerAuthentication"),
            Some(("security.istio.io", "PeerAuthentication"))
        );
        assert_eq!(
            meant("security.istio.io/v1", "AuthorisationPolicy"),
            Some(("security.istio.io", "AuthorizationPolicy"))
        );
        // Linkerd's ServerAuthorization is a kind the mesh does not read anywhere.
        assert_eq!(
            meant("security.linkerd.io/v1beta1", "ServerAuthorization"),
            None
        );
        assert_eq!(
            meant("security.linkerd.io/v1beta1", "Server"),
            Some(("policy.linkerd.io", "Server"))
        );
        assert_eq!(
            meant("telemetry.istio.io/v1", "Telemetri"),
            Some(("telemetry.istio.io", "Telemetry"))
        );
    }

    #[test]
    fn a_kind_in_the_wrong_group_names_its_group() {
        let (error, text) = message("networking.istio.io/v1", "AuthorizationPolicy");
        assert!(error);
        assert_eq!(
            text,
            "networking.istio.io/v1 has no kind AuthorizationPolicy, so it is not read (did you \
             mean apiVersion: security.istio.io/v1?)"
        );
    }

    #[test]
    fn a_misspelt_kind_gets_the_kind_it_resembles() {
        let (error, text) = message("security.istio.io/v1", "AuthorisationPolicy");
        assert!(error);
        assert!(text.contains("did you mean AuthorizationPolicy?"), "{text}");
        let (_, text) = message("telemetry.istio.io/v1", "Metrics");
        assert!(text.contains("its kinds are Telemetry"), "{text}");
    }

    #[test]
    fn unsupported_kinds_are_warned_about_and_unenforced_policies_are_errors() {
        assert_eq!(verdict("telemetry.istio.io/v1", "Telemetry"), Verdict::Read);
        assert_eq!(
            verdict("telemetry.istio.io/v1alpha1", "Telemetry"),
            Verdict::Read
        );
        for kind in [
            "Server",
            "AuthorizationPolicy",
            "MeshTLSAuthentication",
            "NetworkAuthentication",
        ] {
            assert_eq!(verdict("policy.linkerd.io/v1alpha1", kind), Verdict::Read);
        }
        let (error, text) = message("policy.linkerd.io/v1beta1", "ServerAuthorization");
        assert!(error);
        assert!(text.contains("AuthorizationPolicy"), "{text}");
        let (error, _) = message("security.istio.io/v1", "RequestAuthentication");
        assert!(error);
        let (error, text) = message("networking.istio.io/v1", "Frobnicator");
        assert!(error, "{text}");
        let (error, text) = message("install.istio.io/v1alpha1", "IstioOperator");
        assert!(!error);
        assert!(text.contains("does not read this kind"), "{text}");
        let (error, _) = message("gateway.networking.x-k8s.io/v1alpha1", "XListenerSet");
        assert!(!error);
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
