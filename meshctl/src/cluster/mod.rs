//! Kubernetes mode: `check`, `analyze`, `proxy-status`, `stat` (also `--prometheus`), `edges`,
//! `routes` and `ca` against a cluster through its API server (kube-rs, with `--kubeconfig` / `--context`), printing
//! what they print on the sandbox: the checks, findings, statuses and traffic figures are the
//! shared model's ([`crate::operator`]); this gathers their facts from the cluster. The
//! controller's admin endpoint is reached through the API server's service proxy, the
//! proxies' metrics port (all addresses) through its pod proxy; the proxies' own admin
//! endpoints (loopback in their pods) are not reached, so nothing here needs a port-forward.
//!
//! Imports `operator`, the sandbox's object model and manifest loader, its verbs' parsed
//! arguments, and its blocking HTTP GET with the Prometheus client (`sandbox::host::admin`,
//! `sandbox::host::prometheus`, which connect from meshctl's own namespace when given none);
//! nothing of the sandbox imports it. Inside, from the bottom up: `args`, `error`,
//! `kinds`, `workloads`; `api`, `targets`, `ca`; `objects`, `proxies`; `analyze`, `metrics`;
//! `check`; `verbs`.

pub mod analyze;
pub mod api;
pub mod args;
pub mod ca;
pub mod check;
pub mod error;
pub mod kinds;
pub mod metrics;
pub mod objects;
pub mod proxies;
pub mod targets;
pub mod verbs;
pub mod workloads;

pub use args::KubeArgs;
pub use verbs::run;
