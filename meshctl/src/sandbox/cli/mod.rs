//! The sandbox verbs as the operator types them, and what they print.
//!
//! The top layer: imports anything below. Inside: `duration` (the flags' durations) at the
//! bottom; `ca` (the CA's status and rotation) on it; `args` and `output` on those; `up`
//! and `live` (tap's and top's printing) on them; and `verbs` (which runs every verb) on all
//! of them.

mod args;
mod ca;
mod duration;
mod live;
pub(crate) mod output;
mod up;
mod verbs;

pub use args::{EdgesArgs, GlobalArgs, RoutesArgs, SandboxCommand, StatArgs};
pub use ca::{CaCommand, PhaseArgs};
pub use verbs::run;
