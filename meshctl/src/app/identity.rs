//! Who this app instance is: pod name, namespace and version, from the
//! environment the sandbox (or Kubernetes downward API) provides.

use std::env;

/// The identity an app reports in its replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Pod name: `POD_NAME`, else `HOSTNAME`, else the kernel host name.
    pub pod: String,
    /// `POD_NAMESPACE`, default `default`.
    pub namespace: String,
    /// `VERSION`, default empty.
    pub version: String,
}

impl Identity {
    /// Reads the identity from the process environment.
    pub fn from_env() -> Self {
        let pod = non_empty_env("POD_NAME")
            .or_else(|| non_empty_env("HOSTNAME"))
            .or_else(kernel_hostname)
            .unwrap_or_else(|| "unknown".to_string());
        Identity {
            pod,
            namespace: non_empty_env("POD_NAMESPACE").unwrap_or_else(|| "default".to_string()),
            version: env::var("VERSION").unwrap_or_default(),
        }
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.is_empty())
}

// Read from /proc rather than calling gethostname: no extra dependency, and
// the sandbox only runs on Linux.
fn kernel_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_hostname_is_readable_on_linux() {
        assert!(kernel_hostname().is_some_and(|n| !n.contains('\n')));
    }

    #[test]
    fn from_env_always_has_a_pod_name() {
        let id = Identity::from_env();
        assert!(!id.pod.is_empty());
        assert!(!id.namespace.is_empty());
    }
}
