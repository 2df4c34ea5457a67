//! The sandbox verbs as the operator types them, and what they print.

mod output;
mod verbs;

pub use verbs::{GlobalArgs, SandboxCommand, run};
