//! What the sandbox does to the machine: network namespaces and links,
//! kube-proxy-like DNAT rules, per-namespace hosts files, processes and the
//! confined containers of pods, the state folder, the host port forwarder,
//! teardown and the reaper.

pub(crate) mod admin;
pub(crate) mod container;
pub(crate) mod dns;
pub(crate) mod forward;
pub mod kubeproxy;
pub(crate) mod logs;
pub(crate) mod netns;
pub(crate) mod process;
pub(crate) mod procfs;
pub(crate) mod reaper;
pub mod state;
pub(crate) mod teardown;
