//! The sandbox verbs as the operator types them, and what they print.
//!
//! The top layer: imports anything below. Inside: `args` and `output` at
//! the bottom, `up` and `live` (tap's and top's printing) on them, and `verbs` (which runs
//! every verb) on all of them.

mod args;
mod live;
pub(crate) mod output;
mod up;
mod verbs;

pub use args::{EdgesArgs, GlobalArgs, RoutesArgs, SandboxCommand, StatArgs};
pub use verbs::run;
