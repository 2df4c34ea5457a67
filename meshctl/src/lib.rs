//! meshctl library: the operator CLI's building blocks, the sandbox (a
//! cluster of network namespaces on one machine) and the built-in test apps.

pub mod app;
pub mod operator;
pub mod sandbox;
