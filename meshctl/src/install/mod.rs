//! `meshctl install` / `uninstall`: the Kubernetes install manifests (compiled in from
//! `manifests/`, the same files as its kustomize base) with `--set key=value` options applied
//! structurally, printed for `kubectl apply -f -` / `kubectl delete -f -`.
//!
//! From the bottom up: `bundled` (the files) and `options` (the keys and their checks);
//! `render` (objects, options applied, YAML / JSON); `cli` (the verbs).

pub mod bundled;
pub mod cli;
pub mod options;
pub mod render;

pub use cli::{InstallArgs, UninstallArgs};
pub use options::InstallOptions;
