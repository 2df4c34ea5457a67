//! Kubernetes mode: `check`, `analyze`, `proxy-status` and `stat --prometheus` against a
//! cluster through its API server (kube-rs, with `--kubeconfig` / `--context`), printing what
//! they print on the sandbox: the checks, findings, statuses and stat rows are the shared
//! model's ([`crate::operator`], the sandbox's stat model); this gathers their facts from the
//! cluster (stat's figures from Prometheus, reached directly). The controller's admin
//! endpoint is reached through the API server's service proxy; the proxies' own admin
//! endpoints (loopback in their pods) are not reached, so nothing here needs a port-forward.
//!
//! Imports `operator`, the sandbox's object model and manifest loader, its verbs' parsed
//! arguments, and stat's Prometheus client and table; nothing of the sandbox imports it.
//! Inside, from the bottom up: `args`, `error`, `kinds`, `workloads`; `api`; `objects`,
//! `proxies`, `stat`; `analyze`; `check`; `verbs`.

pub mod analyze;
pub mod api;
pub mod args;
pub mod check;
pub mod error;
pub mod kinds;
pub mod objects;
pub mod proxies;
pub mod stat;
pub mod verbs;
pub mod workloads;

pub use args::KubeArgs;
pub use verbs::run;
