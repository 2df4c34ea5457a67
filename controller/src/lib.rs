//! The controller component.

pub mod admin;
pub mod app;
mod backoff;
pub mod ca;
pub mod deploy;
pub mod duration;
pub mod events;
pub mod field_manager;
pub mod leader;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod root_rotation;
pub mod server;
pub mod shutdown;
pub mod source;
pub mod status;
pub mod translate;
pub mod xds;
