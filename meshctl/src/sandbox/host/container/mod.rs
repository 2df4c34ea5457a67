//! Containers: a pod's processes (its containers' commands, and `meshctl
//! exec` into it, which runs in the container's context as `kubectl exec`
//! does) started confined as on a node.
//!
//! meshctl describes what to run in a [`Launch`], hands it to the hidden
//! verb `meshctl sandbox-container` through an anonymous file (so nothing of
//! it, environment included, reaches a command line or the environment of a
//! root process), and that verb, still root:
//!
//! 1. joins the pod's network namespace and unshares mount, PID, IPC and UTS
//!    namespaces (hostname: the pod's name), or, for `exec`, joins those of
//!    the running container;
//! 2. builds the container's filesystem view ([`mounts`]): the host's
//!    filesystem read-only, fresh `/dev`, `/run`, `/tmp`, `/sys`, the pod's
//!    hosts and resolv.conf, the sandbox's state folder hidden, and only the
//!    files granted to the pod copied in;
//! 3. forks the container's PID 1, a minimal init that mounts `/proc`,
//!    forks the command, drops its own privileges, passes signals on and
//!    reaps orphans ([`supervise`]);
//! 4. the command drops to its user, groups and capabilities ([`creds`])
//!    and execs.
//!
//! The verb itself stays outside, waiting, so the process meshctl records
//! lives exactly as long as the container and passes on the signals meshctl
//! sends it.

mod creds;
mod launch;
mod mounts;
mod supervise;
mod verb;

pub use launch::{Launch, unreachable_bin_dir};
pub use verb::run;
