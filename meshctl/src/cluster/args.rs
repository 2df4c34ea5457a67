//! The global flags that select Kubernetes mode and the cluster it talks to.

use std::path::PathBuf;

/// The variable that turns Kubernetes mode on without a flag (with the kubeconfig that
/// `KUBECONFIG` or `~/.kube/config` names, or in-cluster credentials).
pub const KUBE_MODE_ENV: &str = "MESHCTL_KUBE";

/// `--kubeconfig` and `--context`, as kubectl, istioctl and linkerd take them.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KubeArgs {
    /// Kubernetes mode: the kubeconfig to use [default: $KUBECONFIG, else ~/.kube/config].
    /// Without it, --context or MESHCTL_KUBE=1, verbs act on the sandbox.
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes mode: the kubeconfig context to use [default: its current context].
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
}

impl KubeArgs {
    /// Whether the verbs act on a Kubernetes cluster rather than on the sandbox.
    pub fn enabled(&self) -> bool {
        self.kubeconfig.is_some()
            || self.context.is_some()
            || std::env::var(KUBE_MODE_ENV).is_ok_and(|v| v == "1")
    }
}
