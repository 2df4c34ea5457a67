//! Which pods are captured, and keeping their rules and the proxy in step with that.
//!
//! The controller decides enrollment (namespace label, pod opt-out): a workload on this node
//! with protocol HBONE is to be captured. The feed is a `watch` of the pods on this node,
//! `None` until the agent's xDS state first synced, so an empty view at startup is never
//! mistaken for "nothing is enrolled".
//!
//! Each round diffs the feed against what is captured, in istio-cni's order:
//!
//! - a new pod: find its namespace, install the rules, then `Add` it to the proxy (with the
//!   namespace fd). A pod whose namespace is not there yet (still starting) is retried with
//!   backoff, and meanwhile appears in snapshots as `Keep`, so a proxy that already serves it
//!   (captured before an agent restart) keeps doing so;
//! - a pod no longer enrolled but still running: remove the rules first, then `Del` it, so
//!   new connections go straight to the application rather than to listeners that are
//!   closing; a pod gone from the node: `Del` only, its namespace is going away with it;
//! - a pod replaced by a new one of the same name (new addresses, or in a namespace folder a
//!   different namespace file): `Del` the old one, capture the new one.
//!
//! The first round also removes rules left behind by an earlier agent in pods of this node
//! that are no longer enrolled.
//!
//! The CNI plugin's events ([`CniEvent`], from [`super::cni`]) are handled by the same loop,
//! between rounds, so they never race it: `Add` captures a new pod in the namespace the
//! runtime names, before its containers start and before the controller knows its address
//! (the pod's workload has none yet, and rounds leave address-less pods alone); once the
//! workload gets its addresses, the round sees the pod captured already. `Del` releases it
//! and keeps rounds from capturing it again while its workload lingers.
//!
//! With the node's probe rule on ([`super::host_rules`]), each captured pod's addresses join
//! it once the pod's own rules are in, and leave it when the pod is released; the chain is
//! written whole after the first round (replacing what an earlier agent left, which serves
//! the pods it captured until then) and left in place when the loop stops, as the pods' own
//! rules are.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::duties::NodeDuties;
use super::host_rules::HostRules;
use super::iptables::{self, Family};
use super::netns::{Netns, NetnsSource, NsId, RequestMigration};
use super::pod::{NodePod, node_pods};
use super::server::Hub;
use super::uninstall::Stop;
use proxy_core::state::ProxyState;

/// How often a state that has not synced yet is looked at again, in case syncing itself
/// raised no change notification.
const SYNC_POLL: Duration = Duration::from_secs(1);

/// Publishes [`node_pods`] on `tx` whenever `state` changes, once it has synced.
pub async fn feed_from_state(
    state: ProxyState,
    node: String,
    tx: watch::Sender<Option<Vec<NodePod>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = state.changes();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let synced = state.is_synced();
        if synced {
            let pods = node_pods(&state, &node);
            tx.send_if_modified(|current| {
                if current.as_ref() == Some(&pods) {
                    return false;
                }
                *current = Some(pods);
                true
            });
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(SYNC_POLL), if !synced => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// First retry delay for a pod that could not be captured; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often pending work (retries) is looked at when the feed is quiet.
const TICK: Duration = Duration::from_secs(1);

/// The wait before retry number `attempts + 1`.
fn backoff_delay(attempts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << attempts.min(16))
        .min(MAX_BACKOFF)
}

/// A captured pod: rules installed, namespace held open.
struct Captured {
    pod: NodePod,
    netns: Arc<OwnedFd>,
    id: NsId,
    families: Vec<Family>,
    /// Captured on the CNI plugin's `Add` before the workload had addresses: the first
    /// addresses the workload shows are this pod's, not a replacement's.
    adopt_addresses: bool,
    /// The pod sandbox (`CNI_CONTAINERID`) when captured through CNI, else empty.
    sandbox: String,
}

/// An event from the CNI plugin, with where its outcome goes.
pub(crate) enum CniEvent {
    /// Capture `pod` (enrolled, on this node) in the namespace at `netns`; `ips` are the
    /// addresses the runtime gave it. Answers whether it is captured, or why not.
    Add {
        /// The pod as the feed knows it.
        pod: NodePod,
        /// `CNI_NETNS`.
        netns: PathBuf,
        /// From the main plugin's result.
        ips: Vec<IpAddr>,
        /// `CNI_CONTAINERID`.
        container_id: String,
        /// The outcome.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Release the pod `namespace/name` of sandbox `container_id`.
    Del {
        /// Workload uid, when the feed lists the pod.
        uid: Option<String>,
        /// Pod namespace.
        namespace: String,
        /// Pod name.
        name: String,
        /// `CNI_CONTAINERID`: a late `Del` of an earlier sandbox of the same pod leaves the
        /// current one alone.
        container_id: String,
        /// Done.
        reply: oneshot::Sender<()>,
    },
    /// Whether `uid` is captured with its rules in place.
    Check {
        /// Workload uid.
        uid: String,
        /// `Ok` when captured and the rules are all there.
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// A pod to capture that is not captured yet.
struct Pending {
    attempts: u32,
    next: Instant,
}

/// The diffing state of the enrollment loop.
pub(crate) struct Reconciler {
    source: NetnsSource,
    hub: Arc<Hub>,
    captured: BTreeMap<String, Captured>,
    pending: BTreeMap<String, Pending>,
    /// Pods the CNI plugin released (`Del`) whose workload is still on the node: not to be
    /// captured again by a round.
    released: BTreeSet<String>,
    cleaned_up: bool,
    /// The node's probe rule, when the agent keeps it.
    host: Option<HostRules>,
}

impl Reconciler {
    pub(crate) fn new(source: NetnsSource, hub: Arc<Hub>, host: Option<HostRules>) -> Reconciler {
        Reconciler {
            source,
            hub,
            captured: BTreeMap::new(),
            pending: BTreeMap::new(),
            released: BTreeSet::new(),
            cleaned_up: false,
            host,
        }
    }

    /// Brings captures, rules and the proxy in line with `pods`.
    pub(crate) async fn round(&mut self, pods: &[NodePod]) {
        let on_node: BTreeMap<&str, &NodePod> = pods.iter().map(|p| (p.uid.as_str(), p)).collect();
        let enrolled = |uid: &str| on_node.get(uid).is_some_and(|p| p.enrolled);

        self.released
            .retain(|uid| on_node.contains_key(uid.as_str()));
        // Release pods that left the mesh or the node, and pods replaced under the same uid.
        let captured_uids: Vec<String> = self.captured.keys().cloned().collect();
        for uid in captured_uids {
            let Some(current) = on_node.get(uid.as_str()).copied() else {
                tracing::info!(pod = %uid, "pod left the node; releasing it");
                self.release(&uid, false).await;
                continue;
            };
            if !current.enrolled {
                tracing::info!(pod = %uid, "pod left the mesh; removing its redirection");
                self.release(&uid, true).await;
                continue;
            }
            self.adopt_addresses(current);
            if self.replaced(current) {
                tracing::info!(pod = %uid, "pod was replaced; capturing the new one");
                self.release(&uid, false).await;
            }
        }
        let stale: Vec<String> = self
            .pending
            .keys()
            .filter(|uid| !enrolled(uid))
            .cloned()
            .collect();
        for uid in stale {
            self.pending.remove(&uid);
            // A proxy may still serve it from before an agent restart.
            self.hub.remove(&uid).await;
        }

        // Capture what is enrolled and not captured yet (or due for a retry).
        let now = Instant::now();
        let due: Vec<&NodePod> = pods
            .iter()
            // A pod without addresses is still being set up: the CNI plugin captures it.
            .filter(|p| p.enrolled && !p.addresses.is_empty())
            .filter(|p| !self.captured.contains_key(&p.uid) && !self.released.contains(&p.uid))
            .filter(|p| self.pending.get(&p.uid).is_none_or(|r| r.next <= now))
            .collect();
        if !due.is_empty() {
            let mut found = self.find(&due).await;
            for pod in due {
                match found.remove(&pod.uid) {
                    Some(netns) => self.capture(pod, netns).await,
                    None => {
                        tracing::debug!(pod = %pod.uid, "network namespace not found yet");
                        self.hub.keep(&pod.uid, pod.info());
                        self.backoff(&pod.uid);
                    }
                }
            }
        }

        // Re-send adds the proxy failed to acknowledge.
        for uid in self.hub.take_retries() {
            if let Some(c) = self.captured.get(&uid)
                && let Err(e) = self.hub.add(&uid, c.pod.info(), c.netns.clone()).await
            {
                tracing::warn!(pod = %uid, "proxy did not take the pod again: {e}");
            }
        }

        if !self.cleaned_up {
            self.cleaned_up = true;
            let others: Vec<&NodePod> = pods.iter().filter(|p| !p.enrolled).collect();
            self.clean_up_leftovers(&others).await;
        }
    }

    /// Takes the workload's first addresses for a pod captured through CNI before it had
    /// any (and its other fields, which may have changed meanwhile).
    fn adopt_addresses(&mut self, current: &NodePod) {
        let Some(c) = self.captured.get_mut(&current.uid) else {
            return;
        };
        if c.adopt_addresses && !current.addresses.is_empty() {
            c.adopt_addresses = false;
            c.pod = current.clone();
        }
    }

    /// Whether the pod under `current.uid` is no longer the one captured.
    fn replaced(&self, current: &NodePod) -> bool {
        let Some(c) = self.captured.get(&current.uid) else {
            return false;
        };
        if c.pod.addresses != current.addresses && !c.adopt_addresses {
            return true;
        }
        // A missing file means the pod is going away; the feed will say so.
        self.source.current_id(current).is_some_and(|id| id != c.id)
    }

    async fn find(&self, pods: &[&NodePod]) -> BTreeMap<String, super::netns::Netns> {
        let source = self.source.clone();
        let owned: Vec<NodePod> = pods.iter().map(|p| (*p).clone()).collect();
        let lookup = tokio::task::spawn_blocking(move || {
            let refs: Vec<&NodePod> = owned.iter().collect();
            source.find(&refs)
        })
        .await;
        match lookup {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::warn!("finding pod network namespaces: {e}");
                BTreeMap::new()
            }
            Err(e) => {
                tracing::warn!("finding pod network namespaces: {e}");
                BTreeMap::new()
            }
        }
    }

    async fn capture(&mut self, pod: &NodePod, netns: Netns) {
        let families = iptables::families_for(&pod.addresses);
        // The node's probes get their bypass source before the redirection would send them
        // to the proxy.
        if let Some(host) = self.host.as_mut() {
            host.add(&pod.uid, &pod.addresses).await;
        }
        if let Err(e) = iptables::install(netns.fd(), &families).await {
            tracing::warn!(pod = %pod.uid, "installing the redirection: {e}");
            if let Some(host) = self.host.as_mut() {
                host.remove(&pod.uid).await;
            }
            self.hub.keep(&pod.uid, pod.info());
            self.backoff(&pod.uid);
            return;
        }
        allow_request_migration(&pod.uid, &netns).await;
        tracing::info!(pod = %pod.uid, "pod captured");
        let fd = self.record_capture(pod.clone(), netns, families, false, String::new());
        if let Err(e) = self.hub.add(&pod.uid, pod.info(), fd).await {
            tracing::warn!(pod = %pod.uid, "proxy did not take the pod (will retry): {e}");
        }
    }

    /// Records `pod` as captured in `netns` (its rules in), no longer pending; the
    /// namespace's descriptor, for the proxy.
    fn record_capture(
        &mut self,
        pod: NodePod,
        netns: Netns,
        families: Vec<Family>,
        adopt_addresses: bool,
        sandbox: String,
    ) -> Arc<OwnedFd> {
        self.pending.remove(&pod.uid);
        let id = netns.id();
        let fd = Arc::new(netns.into_fd());
        let captured = Captured {
            pod,
            netns: fd.clone(),
            id,
            families,
            adopt_addresses,
            sandbox,
        };
        self.captured.insert(captured.pod.uid.clone(), captured);
        fd
    }

    /// Stops capturing `uid`: rules out first when the pod still runs, then `Del`.
    async fn release(&mut self, uid: &str, remove_rules: bool) {
        let Some(c) = self.captured.remove(uid) else {
            return;
        };
        if remove_rules {
            use std::os::fd::AsFd;
            if let Err(e) = iptables::remove(c.netns.as_fd(), &c.families).await {
                tracing::warn!(pod = %uid, "removing the redirection: {e}");
            }
        }
        // After the redirection is gone, so the node's probes never meet it unSNATed.
        if let Some(host) = self.host.as_mut() {
            host.remove(uid).await;
        }
        self.hub.remove(uid).await;
    }

    /// Acts on one CNI event and answers it.
    pub(crate) async fn handle(&mut self, event: CniEvent) {
        match event {
            CniEvent::Add {
                pod,
                netns,
                ips,
                container_id,
                reply,
            } => {
                let outcome = self.capture_for_cni(&pod, &netns, ips, container_id).await;
                if let Err(e) = &outcome {
                    tracing::warn!(pod = %pod.uid, "CNI add refused: {e}");
                }
                let _ = reply.send(outcome);
            }
            CniEvent::Del {
                uid,
                namespace,
                name,
                container_id,
                reply,
            } => {
                // Not listed and not captured: nothing to release or remember.
                let Some(uid) = uid.or_else(|| self.uid_of(&namespace, &name)) else {
                    let _ = reply.send(());
                    return;
                };
                let other_sandbox = self.captured.get(&uid).is_some_and(|c| {
                    !c.sandbox.is_empty() && !container_id.is_empty() && c.sandbox != container_id
                });
                if other_sandbox {
                    tracing::debug!(pod = %uid, "CNI del of an earlier sandbox: ignored");
                } else if self.captured.contains_key(&uid) {
                    tracing::info!(pod = %uid, "pod sandbox deleted; releasing it");
                    // Its namespace goes away with the sandbox: no rules to remove.
                    self.release(&uid, false).await;
                } else if self.pending.remove(&uid).is_some() {
                    self.hub.remove(&uid).await;
                }
                if !other_sandbox {
                    self.released.insert(uid);
                }
                let _ = reply.send(());
            }
            CniEvent::Check { uid, reply } => {
                let _ = reply.send(self.check(&uid).await);
            }
        }
    }

    /// The uid of the captured pod `namespace/name`.
    fn uid_of(&self, namespace: &str, name: &str) -> Option<String> {
        self.captured
            .values()
            .map(|c| &c.pod)
            .find(|p| p.namespace == namespace && p.name == name)
            .map(|p| p.uid.clone())
    }

    /// Captures a pod the runtime is creating: its rules in the namespace at `path`, then
    /// the proxy's acknowledged `Add`, so that its listeners are bound before any container
    /// runs. Fails (and leaves nothing behind) when that cannot all be done.
    async fn capture_for_cni(
        &mut self,
        pod: &NodePod,
        path: &std::path::Path,
        ips: Vec<IpAddr>,
        sandbox: String,
    ) -> Result<(), String> {
        if !self.hub.is_ready() {
            return Err("the node agent has not finished its first round yet".into());
        }
        if !self.hub.has_proxy() {
            return Err("no node proxy is connected to the node agent".into());
        }
        let netns = Netns::open(path).map_err(|e| e.to_string())?;
        self.released.remove(&pod.uid);
        if let Some(c) = self.captured.get(&pod.uid) {
            if c.id == netns.id() {
                // A repeated ADD for the same sandbox: the proxy already serves it; make
                // sure of the rules (idempotent) and leave its connections alone.
                return iptables::install(netns.fd(), &c.families)
                    .await
                    .map_err(|e| format!("installing the redirection: {e}"));
            }
            // Another sandbox of the same pod: the old one is going away.
            self.release(&pod.uid, false).await;
        }
        let mut pod = pod.clone();
        let adopt = pod.addresses.is_empty();
        if adopt {
            pod.addresses = ips;
        }
        let families = iptables::families_for(&pod.addresses);
        if let Some(host) = self.host.as_mut() {
            host.add(&pod.uid, &pod.addresses).await;
        }
        if let Err(e) = iptables::install(netns.fd(), &families).await {
            if let Some(host) = self.host.as_mut() {
                host.remove(&pod.uid).await;
            }
            return Err(format!("installing the redirection: {e}"));
        }
        allow_request_migration(&pod.uid, &netns).await;
        let fd = self.record_capture(pod.clone(), netns, families, adopt, sandbox);
        if let Err(e) = self.hub.add(&pod.uid, pod.info(), fd).await {
            // The runtime tears the sandbox down and tries again: start from nothing then.
            self.release(&pod.uid, true).await;
            return Err(format!("the node proxy did not take the pod: {e}"));
        }
        tracing::info!(pod = %pod.uid, "pod captured at creation (CNI)");
        Ok(())
    }

    /// Whether `uid` is captured with every rule of its families in place.
    async fn check(&self, uid: &str) -> Result<(), String> {
        use std::os::fd::AsFd;
        let Some(c) = self.captured.get(uid) else {
            return Err("the pod is in the mesh but not captured".into());
        };
        for &family in &c.families {
            let installed = iptables::installed(c.netns.as_fd(), family)
                .await
                .map_err(|e| format!("reading the rules: {e}"))?;
            if !installed.hooked() {
                return Err(format!("the {family:?} redirection rules are incomplete"));
            }
        }
        Ok(())
    }

    fn backoff(&mut self, uid: &str) {
        let entry = self.pending.entry(uid.to_string()).or_insert(Pending {
            attempts: 0,
            next: Instant::now(),
        });
        let delay = backoff_delay(entry.attempts);
        entry.attempts = entry.attempts.saturating_add(1);
        entry.next = Instant::now() + delay;
    }

    /// Gives every captured pod its own network back (its rules removed) and then removes the
    /// node's probe rule: the mesh is leaving the node. The proxy, stopping too, is not told.
    async fn release_all(&mut self) {
        use std::os::fd::AsFd;
        let captured = std::mem::take(&mut self.captured);
        let mut failed = 0;
        for (uid, c) in &captured {
            if let Err(e) = iptables::remove(c.netns.as_fd(), &c.families).await {
                failed += 1;
                tracing::warn!(pod = %uid, "removing the redirection: {e}");
            }
        }
        if let Some(host) = self.host.as_mut() {
            host.remove_all().await;
        }
        tracing::info!(
            pods = captured.len(),
            failed,
            "released every captured pod: the mesh left this node"
        );
    }

    /// Removes our rules from pods of this node that are not enrolled, in case an earlier
    /// agent captured them and the pod left the mesh while no agent ran.
    async fn clean_up_leftovers(&self, pods: &[&NodePod]) {
        if pods.is_empty() {
            return;
        }
        let found = self.find(pods).await;
        for pod in pods {
            let Some(netns) = found.get(&pod.uid) else {
                continue;
            };
            let families = iptables::families_for(&pod.addresses);
            let mut ours = false;
            for &family in &families {
                match iptables::installed(netns.fd(), family).await {
                    Ok(state) => ours |= state.any(),
                    Err(e) => tracing::debug!(pod = %pod.uid, "reading rules: {e}"),
                }
            }
            if ours {
                tracing::info!(pod = %pod.uid, "removing redirection left by an earlier agent");
                if let Err(e) = iptables::remove(netns.fd(), &families).await {
                    tracing::warn!(pod = %pod.uid, "removing the redirection: {e}");
                }
            }
        }
    }
}

/// Runs rounds on every feed change (and on a tick, for retries) until `shutdown`. The hub
/// is marked ready after the first round, so proxies get a complete first snapshot.
/// The node's probe rule, if kept, is written whole after the first round. When the loop
/// stops, the pods' rules and the probe rule stay, unless the node's duties say the mesh is
/// being uninstalled: then every pod is released and the probe rule removed.
pub(crate) async fn run(
    source: NetnsSource,
    hub: Arc<Hub>,
    duties: NodeDuties,
    feed: watch::Receiver<Option<Vec<NodePod>>>,
    cni: Option<mpsc::Receiver<CniEvent>>,
    shutdown: watch::Receiver<bool>,
) {
    let mut reconciler = Reconciler::new(source, hub.clone(), duties.host);
    rounds(&mut reconciler, &hub, feed, cni, shutdown).await;
    let stop = match &duties.uninstall {
        Some(check) => check.on_stop().await,
        None => Stop::KeepCaptured,
    };
    if stop == Stop::Uninstall {
        // New pods first: once the plugin is out of the node's configuration, none waits
        // for this agent any more.
        if let Some(install) = &duties.cni_install {
            match super::cni::install::uninstall(&install.bin_dir, &install.conf_dir) {
                Ok(()) => tracing::info!("CNI plugin taken out of the node's configuration"),
                Err(e) => tracing::warn!("taking the CNI plugin out: {e}"),
            }
        }
        reconciler.release_all().await;
        return;
    }
    if let Some(host) = reconciler.host.as_ref() {
        // The pods stay captured when the agent stops (their in-pod rules stay), so their
        // probes still need the rule: through a restart or a rolling upgrade, where the old
        // agent stops after the new one has written the chain, kubelet's probes keep passing.
        tracing::info!(
            failures = host.failures(),
            "left the node's probe SNAT rule for the pods that stay captured"
        );
    }
}

async fn rounds(
    reconciler: &mut Reconciler,
    hub: &Hub,
    mut feed: watch::Receiver<Option<Vec<NodePod>>>,
    mut cni: Option<mpsc::Receiver<CniEvent>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut feed_open = true;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let pods = feed.borrow_and_update().clone();
        if let Some(pods) = pods {
            tokio::select! {
                _ = reconciler.round(&pods) => {}
                _ = shutdown.changed() => return,
            }
            hub.set_ready();
            if let Some(host) = reconciler.host.as_mut() {
                // Written whole once every pod was looked at: meanwhile what an earlier agent
                // left keeps the pods it captured (adopted in this round) probed.
                host.start().await;
            }
        }
        tokio::select! {
            changed = feed.changed(), if feed_open => {
                // A closed feed keeps its last view: nothing will change it any more.
                feed_open = changed.is_ok();
            }
            _ = tick.tick() => {}
            event = next_event(&mut cni) => match event {
                Some(event) => {
                    tokio::select! {
                        _ = reconciler.handle(event) => {}
                        _ = shutdown.changed() => return,
                    }
                }
                None => cni = None,
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// Turns on `net.ipv4.tcp_migrate_req` in the pod's namespace, so a proxy replaced during an
/// upgrade hands the connections queued on its listeners to its successor rather than
/// resetting them. Not fatal: capture works without it, only an overlapping upgrade may then
/// reset the few connections queued at the moment the old proxy closes its listeners.
async fn allow_request_migration(uid: &str, netns: &super::netns::Netns) {
    static UNSUPPORTED_SAID: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);
    match super::netns::enable_request_migration(netns.fd()).await {
        Ok(RequestMigration::Enabled) => {}
        Ok(RequestMigration::Unsupported) => {
            if !UNSUPPORTED_SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    "the kernel has no net.ipv4.tcp_migrate_req (Linux < 5.14): an upgrading \
                     proxy may reset connections queued on its listeners as it closes them"
                );
            }
        }
        Err(e) => tracing::warn!(pod = %uid, "setting net.ipv4.tcp_migrate_req: {e}"),
    }
}

/// The next CNI event; never, without a CNI socket.
async fn next_event(cni: &mut Option<mpsc::Receiver<CniEvent>>) -> Option<CniEvent> {
    match cni {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, enrolled: bool) -> NodePod {
        NodePod {
            uid: format!("Kubernetes//Pod/shop/{name}"),
            name: name.into(),
            namespace: "shop".into(),
            service_account: "web".into(),
            addresses: vec!["10.244.1.9".parse().unwrap()],
            enrolled,
        }
    }

    #[tokio::test]
    async fn pods_without_a_namespace_yet_are_kept_and_retried_with_backoff() {
        // An empty namespace folder: nothing can be captured, nothing is touched.
        let dir = test_support::TempDir::new("enroll");
        let hub = Hub::new();
        let mut r = Reconciler::new(NetnsSource::Dir(dir.path().to_owned()), hub.clone(), None);

        let start = Instant::now();
        r.round(&[pod("a", true), pod("b", false)]).await;
        assert_eq!(
            hub.snapshot_view(),
            [("Kubernetes//Pod/shop/a".to_string(), false)]
        );
        assert_eq!(r.pending["Kubernetes//Pod/shop/a"].attempts, 1);
        assert!(r.pending["Kubernetes//Pod/shop/a"].next >= start + FIRST_BACKOFF);

        // Not due yet: the round leaves it alone. (Moved far ahead, so that however slowly
        // this runs, the retry cannot fall due in between.)
        let later = Instant::now() + Duration::from_secs(3600);
        r.pending.get_mut("Kubernetes//Pod/shop/a").unwrap().next = later;
        r.round(&[pod("a", true)]).await;
        assert_eq!(r.pending["Kubernetes//Pod/shop/a"].attempts, 1);
        assert_eq!(r.pending["Kubernetes//Pod/shop/a"].next, later);

        // Leaving the mesh forgets it.
        r.round(&[pod("a", false)]).await;
        assert!(r.pending.is_empty());
        assert!(hub.snapshot_view().is_empty());
    }

    #[tokio::test]
    async fn pods_without_addresses_are_left_to_the_cni_plugin() {
        // Their namespace is there, but an address-less pod is still being set up: the
        // round neither captures it nor lists it; the runtime's CNI ADD will.
        let dir = test_support::TempDir::new("enroll");
        std::fs::write(dir.join("shop.a"), "").unwrap();
        let hub = Hub::new();
        let mut r = Reconciler::new(NetnsSource::Dir(dir.path().to_owned()), hub.clone(), None);
        let mut starting = pod("a", true);
        starting.addresses.clear();
        r.round(&[starting]).await;
        assert!(hub.snapshot_view().is_empty());
        assert!(r.pending.is_empty() && r.captured.is_empty());
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let delays: Vec<Duration> = (0..10).map(backoff_delay).collect();
        assert_eq!(delays[0], FIRST_BACKOFF);
        assert_eq!(delays[1], FIRST_BACKOFF * 2);
        assert_eq!(delays[5], MAX_BACKOFF.min(FIRST_BACKOFF * 32));
        assert_eq!(delays[9], MAX_BACKOFF);
        assert_eq!(backoff_delay(u32::MAX), MAX_BACKOFF);
    }
}
