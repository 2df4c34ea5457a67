//! The targets, by the crate whose parser they exercise.

pub mod ca;
pub mod hbone;
pub mod headers;
pub mod http;
pub mod manifests;
mod support;
mod upstream;
pub mod waypoint;
pub mod xds;
pub mod zds;
