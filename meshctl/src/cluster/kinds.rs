//! The kinds meshctl lists from a cluster: the ones the controller watches (its own table),
//! and the mesh-API kinds it does not read, so that `analyze` reports objects of those that
//! the cluster holds (they would otherwise go unnoticed: the controller never sees them).

use controller::source::kube::{WATCHED, WatchedKind};

/// One kind at the version meshctl lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedKind {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// Version within the group.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Resource name in URLs.
    pub plural: &'static str,
    /// False for cluster-scoped kinds.
    pub namespaced: bool,
}

impl ListedKind {
    const fn unread(
        group: &'static str,
        version: &'static str,
        kind: &'static str,
        plural: &'static str,
    ) -> Self {
        Self {
            group,
            version,
            kind,
            plural,
            namespaced: true,
        }
    }

    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The path listing every object of the kind in every namespace.
    pub fn list_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}/{}", self.version, self.plural)
        } else {
            format!("/apis/{}/{}/{}", self.group, self.version, self.plural)
        }
    }

    /// The name of its CustomResourceDefinition: `<plural>.<group>`.
    pub fn crd_name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }
}

impl From<&WatchedKind> for ListedKind {
    fn from(kind: &WatchedKind) -> Self {
        Self {
            group: kind.group,
            version: kind.version,
            kind: kind.api_kind(),
            plural: kind.plural,
            namespaced: kind.namespaced,
        }
    }
}

/// Istio's and Linkerd's kinds the mesh does not read, at their served versions. Kinds other
/// projects use too (Gateway API's GatewayClass, TLSRoute, ReferenceGrant) are left out: they
/// are not the mesh's to report.
pub const UNREAD: &[ListedKind] = &[
    ListedKind::unread(
        "security.istio.io",
        "v1",
        "RequestAuthentication",
        "requestauthentications",
    ),
    ListedKind::unread(
        "networking.istio.io",
        "v1",
        "ServiceEntry",
        "serviceentries",
    ),
    ListedKind::unread("networking.istio.io", "v1", "Sidecar", "sidecars"),
    ListedKind::unread(
        "networking.istio.io",
        "v1",
        "WorkloadEntry",
        "workloadentries",
    ),
    ListedKind::unread(
        "extensions.istio.io",
        "v1alpha1",
        "WasmPlugin",
        "wasmplugins",
    ),
    ListedKind::unread(
        "policy.linkerd.io",
        "v1beta1",
        "ServerAuthorization",
        "serverauthorizations",
    ),
];

/// Every kind `analyze` lists: the watched ones first, then [`UNREAD`].
pub fn analyzed() -> Vec<ListedKind> {
    WATCHED
        .iter()
        .map(ListedKind::from)
        .chain(UNREAD.iter().copied())
        .collect()
}

/// The CRDs the controller needs, split into the mesh's own (`manifests/crds/`) and the
/// Gateway API's.
pub fn required_crds() -> (Vec<String>, Vec<String>) {
    let (gateway, mesh): (Vec<_>, Vec<_>) = WATCHED
        .iter()
        .filter(|k| k.optional && !k.group.is_empty())
        // TCPRoute is in the Gateway API's experimental channel only: a cluster with the
        // standard channel's CRDs lacks it, and the mesh then reads none.
        .filter(|k| k.kind != "TCPRoute")
        .map(ListedKind::from)
        .partition(|k| k.group == "gateway.networking.k8s.io");
    let names = |kinds: Vec<ListedKind>| kinds.iter().map(ListedKind::crd_name).collect();
    (names(mesh), names(gateway))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_are_named_after_plural_and_group() {
        let (mesh, gateway) = required_crds();
        assert!(mesh.contains(&"authorizationpolicies.security.istio.io".to_owned()));
        assert!(mesh.contains(&"serviceprofiles.linkerd.io".to_owned()));
        assert!(mesh.contains(&"telemetries.telemetry.istio.io".to_owned()));
        assert!(mesh.contains(&"servers.policy.linkerd.io".to_owned()));
        assert!(mesh.contains(&"httplocalratelimitpolicies.policy.linkerd.io".to_owned()));
        assert!(mesh.contains(&"httproutes.policy.linkerd.io".to_owned()));
        assert_eq!(mesh.len(), 14, "{mesh:?}");
        assert_eq!(
            gateway,
            [
                "gateways.gateway.networking.k8s.io",
                "httproutes.gateway.networking.k8s.io",
                "grpcroutes.gateway.networking.k8s.io"
            ]
        );
    }

    #[test]
    fn core_and_grouped_kinds_list_at_their_paths() {
        let kinds = analyzed();
        assert_eq!(kinds[0].list_path(), "/api/v1/namespaces");
        let telemetry = kinds.iter().find(|k| k.kind == "Telemetry").unwrap();
        assert_eq!(
            telemetry.list_path(),
            "/apis/telemetry.istio.io/v1/telemetries"
        );
        assert_eq!(telemetry.api_version(), "telemetry.istio.io/v1");
    }
}
