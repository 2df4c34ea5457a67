//! The kinds the Kubernetes source watches, with the API coordinates each is
//! listed and watched at.

use kube::core::{ApiResource, GroupVersionKind};

/// How the controller reports problems on objects of a kind (see [`crate::status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusStyle {
    /// No status is written (core kinds, and CRDs whose upstream definitions
    /// have no status subresource).
    None,
    /// Gateway API routes: one `status.parents[]` entry per mesh parent.
    RouteParents,
    /// Istio kinds: one condition in `status.conditions`.
    IstioConditions,
}

/// One kind the Kubernetes source lists and watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchedKind {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Kind, as the model names it (`Pod`, `HTTPRoute`).
    pub kind: &'static str,
    /// Resource name in URLs.
    pub plural: &'static str,
    /// False for cluster-scoped kinds (`Namespace`).
    pub namespaced: bool,
    /// A custom resource whose definition may not be installed, or the mesh config's
    /// ConfigMap: a 404 on list means "none of these", not a failure.
    pub optional: bool,
    /// How problems are reported on objects of this kind.
    pub status: StatusStyle,
    /// Only the objects of this name are watched (`metadata.name` field selector), for a core
    /// kind of which the mesh reads one object (the mesh config's ConfigMap).
    pub only_named: Option<&'static str>,
}

const fn core(kind: &'static str, plural: &'static str, namespaced: bool) -> WatchedKind {
    WatchedKind {
        group: "",
        version: "v1",
        kind,
        plural,
        namespaced,
        optional: false,
        status: StatusStyle::None,
        only_named: None,
    }
}

const fn custom(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    status: StatusStyle,
) -> WatchedKind {
    WatchedKind {
        group,
        version,
        kind,
        plural,
        namespaced: true,
        optional: true,
        status,
        only_named: None,
    }
}

/// Gateway API group.
const GATEWAY: &str = "gateway.networking.k8s.io";
/// Istio security group.
const SECURITY: &str = "security.istio.io";
/// Istio networking group.
const NETWORKING: &str = "networking.istio.io";
/// Linkerd's policy group.
const LINKERD_POLICY: &str = crate::model::linkerd::LINKERD_POLICY_GROUP;

/// Every kind the source watches, in the order their objects enter the index.
///
/// Versions are the ones current releases serve as storage versions, so no
/// conversion webhook is involved: Gateway API v1 (GRPCRoute is v1 since
/// Gateway API 1.1), Istio `v1` (EnvoyFilter only exists as `v1alpha3`; Telemetry `v1alpha1`
/// objects are served as `v1`), SMI
/// TrafficSplit `v1alpha4` and Linkerd ServiceProfile `v1alpha2`.
pub const WATCHED: &[WatchedKind] = &[
    core("Namespace", "namespaces", false),
    core("Pod", "pods", true),
    core("Service", "services", true),
    // The mesh config (Istio's `istio` ConfigMap, key `mesh`); the translation reads the one
    // in the root namespace.
    // Optional: not being able to list it (an older ClusterRole) leaves the mesh config at
    // its defaults rather than holding back the index.
    WatchedKind {
        only_named: Some(crate::model::telemetry::MESH_CONFIG_MAP),
        optional: true,
        ..core("ConfigMap", "configmaps", true)
    },
    // Gateways carry no problem conditions from here: the waypoint manager
    // owns their status (Accepted, Programmed, addresses).
    custom(GATEWAY, "v1", "Gateway", "gateways", StatusStyle::None),
    custom(
        GATEWAY,
        "v1",
        "HTTPRoute",
        "httproutes",
        StatusStyle::RouteParents,
    ),
    custom(
        GATEWAY,
        "v1",
        "GRPCRoute",
        "grpcroutes",
        StatusStyle::RouteParents,
    ),
    // TCPRoute is still v1alpha2 (experimental channel) in current Gateway API releases.
    custom(
        GATEWAY,
        "v1alpha2",
        "TCPRoute",
        "tcproutes",
        StatusStyle::RouteParents,
    ),
    custom(
        SECURITY,
        "v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
        StatusStyle::IstioConditions,
    ),
    custom(
        SECURITY,
        "v1",
        "PeerAuthentication",
        "peerauthentications",
        StatusStyle::IstioConditions,
    ),
    custom(
        NETWORKING,
        "v1",
        "VirtualService",
        "virtualservices",
        StatusStyle::IstioConditions,
    ),
    custom(
        NETWORKING,
        "v1",
        "DestinationRule",
        "destinationrules",
        StatusStyle::IstioConditions,
    ),
    custom(
        NETWORKING,
        "v1alpha3",
        "EnvoyFilter",
        "envoyfilters",
        StatusStyle::IstioConditions,
    ),
    custom(
        "split.smi-spec.io",
        "v1alpha4",
        "TrafficSplit",
        "trafficsplits",
        StatusStyle::None,
    ),
    custom(
        "linkerd.io",
        "v1alpha2",
        "ServiceProfile",
        "serviceprofiles",
        StatusStyle::None,
    ),
    // Linkerd's authorization policy. Server v1beta3 serves the earlier versions' objects;
    // Linkerd's AuthorizationPolicy is keyed by its kind qualified with its group (Istio's
    // has the plain name).
    custom(
        LINKERD_POLICY,
        "v1beta3",
        "Server",
        "servers",
        StatusStyle::None,
    ),
    custom(
        LINKERD_POLICY,
        "v1alpha1",
        crate::model::linkerd::LINKERD_AUTHORIZATION_POLICY,
        "authorizationpolicies",
        StatusStyle::None,
    ),
    custom(
        LINKERD_POLICY,
        "v1alpha1",
        "MeshTLSAuthentication",
        "meshtlsauthentications",
        StatusStyle::None,
    ),
    custom(
        LINKERD_POLICY,
        "v1alpha1",
        "NetworkAuthentication",
        "networkauthentications",
        StatusStyle::None,
    ),
    custom(
        LINKERD_POLICY,
        "v1alpha1",
        "HTTPLocalRateLimitPolicy",
        "httplocalratelimitpolicies",
        StatusStyle::None,
    ),
    // Linkerd's HTTPRoute (the Gateway API's schema), keyed by its qualified kind like its
    // AuthorizationPolicy; its status is Linkerd's policy controller's to write.
    custom(
        LINKERD_POLICY,
        "v1beta3",
        crate::model::linkerd::LINKERD_HTTP_ROUTE,
        "httproutes",
        StatusStyle::None,
    ),
    // v1alpha1 objects are served as v1 too (same schema).
    custom(
        "telemetry.istio.io",
        "v1",
        "Telemetry",
        "telemetries",
        StatusStyle::IstioConditions,
    ),
];

/// Kinds of Istio and Linkerd the mesh does not read, watched only so that their objects are
/// told so (a problem each, hence an Event; see [`crate::model`]'s verdict on unread kinds):
/// users who bring them expect an effect they do not have. Kinds whose name a read kind
/// already has (Istio's Gateway, Linkerd's routes) are left out, as the index keys objects by
/// kind name.
pub const REPORTED: &[WatchedKind] = &[
    custom(
        SECURITY,
        "v1",
        "RequestAuthentication",
        "requestauthentications",
        StatusStyle::None,
    ),
    custom(
        NETWORKING,
        "v1",
        "ServiceEntry",
        "serviceentries",
        StatusStyle::None,
    ),
    custom(NETWORKING, "v1", "Sidecar", "sidecars", StatusStyle::None),
    custom(
        "extensions.istio.io",
        "v1alpha1",
        "WasmPlugin",
        "wasmplugins",
        StatusStyle::None,
    ),
    custom(
        LINKERD_POLICY,
        "v1beta1",
        "ServerAuthorization",
        "serverauthorizations",
        StatusStyle::None,
    ),
];

/// Every kind the Kubernetes source watches: [`WATCHED`], then [`REPORTED`].
pub fn all_watched() -> impl Iterator<Item = &'static WatchedKind> {
    WATCHED.iter().chain(REPORTED)
}

impl WatchedKind {
    /// The watched (or reported) kind called `kind`.
    pub fn by_kind(kind: &str) -> Option<&'static WatchedKind> {
        all_watched().find(|k| k.kind == kind)
    }

    /// The kind as the API server names it: [`WatchedKind::kind`] without the group a kind
    /// keyed under a qualified name carries (`AuthorizationPolicy.policy.linkerd.io`).
    pub fn api_kind(&self) -> &'static str {
        self.kind.split('.').next().unwrap_or(self.kind)
    }

    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The coordinates for a dynamic `Api`.
    pub fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, self.version, self.api_kind()),
            self.plural,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_once_with_its_api_version() {
        let mut kinds: Vec<_> = WATCHED.iter().map(|k| k.kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), WATCHED.len());
        assert_eq!(
            WatchedKind::by_kind("Pod")
                .map(|k| k.api_version())
                .as_deref(),
            Some("v1")
        );
        let route = WatchedKind::by_kind("GRPCRoute").map(WatchedKind::api_resource);
        assert_eq!(
            route.map(|r| (r.api_version, r.plural)),
            Some((
                "gateway.networking.k8s.io/v1".to_string(),
                "grpcroutes".to_string()
            ))
        );
        let tcp = WatchedKind::by_kind("TCPRoute").map(WatchedKind::api_resource);
        assert_eq!(
            tcp.map(|r| (r.api_version, r.plural)),
            Some((
                "gateway.networking.k8s.io/v1alpha2".to_string(),
                "tcproutes".to_string()
            ))
        );
        // Only core kinds are required to exist (the mesh config's ConfigMap need not).
        assert!(all_watched().all(|k| k.optional != k.group.is_empty() || k.only_named.is_some()));
        // Kind names are keys: a reported kind never shadows a read one.
        let mut all: Vec<_> = all_watched().map(|k| k.kind).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), WATCHED.len() + REPORTED.len());
        assert_eq!(
            WatchedKind::by_kind("Telemetry").map(WatchedKind::api_version),
            Some("telemetry.istio.io/v1".to_string())
        );
        // Of ConfigMaps, only the mesh config's is watched.
        let linkerd =
            WatchedKind::by_kind("AuthorizationPolicy.policy.linkerd.io").expect("watched");
        assert_eq!(linkerd.api_kind(), "AuthorizationPolicy");
        assert_eq!(linkerd.api_resource().kind, "AuthorizationPolicy");
        assert_eq!(
            WatchedKind::by_kind("AuthorizationPolicy").map(|k| k.group),
            Some("security.istio.io")
        );
        let config_maps = WatchedKind::by_kind("ConfigMap").expect("watched");
        assert_eq!(config_maps.only_named, Some("istio"));
        assert!(WATCHED.iter().filter(|k| k.only_named.is_some()).count() == 1);
    }
}
