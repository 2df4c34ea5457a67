//! What the sandbox does to the machine: network namespaces and links,
//! kube-proxy-like DNAT rules, per-namespace hosts files, `/proc`,
//! processes and the confined containers of pods, the state folder and log
//! files, the host port forwarder, an HTTP GET inside a namespace, a client
//! of Prometheus's query API, teardown and the reaper.
//!
//! Imports [`super::model`], [`super::error`], [`super::config`] and
//! `console`, never `ops` or `cli`. Inside, from the bottom up: `netns`
//! (and `logs`, which imports nothing); `cni`, `dns`, `kubeproxy`, `admin`,
//! `state`, `procfs` and `prometheus` (on `netns`); `prober` (on `state`: the per-node
//! kubelet prober); `container` (on `dns`, `netns`,
//! `procfs`); `process` (on `container`); `forward` and `teardown` (on
//! `process`); `reaper` (on `teardown`).

pub(crate) mod admin;
pub(crate) mod cni;
pub(crate) mod container;
pub(crate) mod dns;
pub(crate) mod forward;
pub mod kubeproxy;
pub(crate) mod logs;
pub(crate) mod netns;
pub(crate) mod prober;
pub(crate) mod process;
pub(crate) mod procfs;
pub(crate) mod prometheus;
pub(crate) mod reaper;
pub mod state;
pub(crate) mod tap;
pub(crate) mod teardown;
