//! The sandbox verbs as the operator types them, and what they print.

mod args;
mod output;
mod up;
mod verbs;

pub use args::{GlobalArgs, SandboxCommand};
pub use verbs::run;
