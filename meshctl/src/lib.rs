//! meshctl library.

pub mod app;
