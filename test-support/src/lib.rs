//! What the tests of several crates share. A dev-dependency only.
//!
//! Each module is one kind of thing a test needs; helpers that the tests of a single crate
//! share stay in that crate. The in-process controller (`control_plane`) needs the feature
//! `control-plane`, the fake Kubernetes API server (`fake_kube`, `fake_objects`) the feature `fake-kube`, the WebDriver client
//! (`webdriver`) the feature `webdriver`.

#![warn(missing_docs)]

pub mod ads;
pub mod capture;
#[cfg(feature = "control-plane")]
pub mod control_plane;
#[cfg(feature = "fake-kube")]
pub mod fake_kube;
#[cfg(feature = "fake-kube")]
pub mod fake_objects;
pub mod grpc;
pub mod manifests;
pub mod netns;
pub mod process;
pub mod raw_http;
pub mod temp_dir;
pub mod tls;
pub mod wait;
#[cfg(feature = "webdriver")]
pub mod webdriver;

pub use temp_dir::TempDir;
