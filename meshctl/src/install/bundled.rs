//! The install manifests, compiled in so that `meshctl install` works from any folder: the
//! files of `manifests/kustomization.yaml`'s `resources`, in the order they are applied (CRDs,
//! then the control plane, then the node proxies).

/// One manifest file: its path under `manifests/` and its text.
#[derive(Clone, Copy, Debug)]
pub struct ManifestFile {
    /// The path under `manifests/`, as the kustomization names it.
    pub path: &'static str,
    /// The file's text (multi-document YAML).
    pub text: &'static str,
}

macro_rules! manifest {
    ($path:literal) => {
        ManifestFile {
            path: $path,
            text: include_str!(concat!("../../../manifests/", $path)),
        }
    };
}

/// Every file of the install, in apply order.
pub const FILES: &[ManifestFile] = &[
    manifest!("crds/authorizationpolicy.yaml"),
    manifest!("crds/destinationrule.yaml"),
    manifest!("crds/envoyfilter.yaml"),
    manifest!("crds/linkerd-policy.yaml"),
    manifest!("crds/peerauthentication.yaml"),
    manifest!("crds/serviceprofile.yaml"),
    manifest!("crds/telemetry.yaml"),
    manifest!("crds/trafficsplit.yaml"),
    manifest!("crds/virtualservice.yaml"),
    manifest!("controller.yaml"),
    manifest!("ztunnel-daemonset.yaml"),
];

/// The kustomize base, to check that it lists the same files.
pub const KUSTOMIZATION: &str = include_str!("../../../manifests/kustomization.yaml");

#[cfg(test)]
mod tests {
    use super::*;

    /// `kubectl apply -k manifests/` and `meshctl install` install the same files.
    #[test]
    fn the_kustomize_base_lists_the_bundled_files() {
        let base: serde_yaml_ng::Value = serde_yaml_ng::from_str(KUSTOMIZATION).unwrap();
        let resources: Vec<&str> = base["resources"]
            .as_sequence()
            .expect("a resources list")
            .iter()
            .map(|r| r.as_str().expect("a path"))
            .collect();
        let bundled: Vec<&str> = FILES.iter().map(|f| f.path).collect();
        assert_eq!(resources, bundled);
    }
}
