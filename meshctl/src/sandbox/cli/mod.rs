//! The sandbox verbs as the operator types them, and what they print.
//!
//! The top layer: imports anything below. Inside: `args` and `output` at
//! the bottom, `up` on them, and `verbs` (which runs every verb) on all
//! three.

mod args;
mod output;
mod up;
mod verbs;

pub use args::{GlobalArgs, SandboxCommand};
pub use verbs::run;
