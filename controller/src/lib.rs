//! The controller component.

pub mod model;
pub mod source;
pub mod translate;
pub mod ca;
pub mod xds;
pub mod server;
pub mod admin;
