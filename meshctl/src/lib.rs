//! meshctl library: the operator CLI's building blocks, the sandbox (a
//! cluster of network namespaces on one machine), Kubernetes mode and the built-in test apps.

pub mod app;
pub mod cluster;
pub mod dashboard;
pub mod install;
pub mod operator;
pub mod sandbox;
