//! Pods → `istio.workload.Workload`: enrollment, identity, addresses,
//! service port maps, waypoint and the selector policies that apply.

use std::net::IpAddr;

use api::workload::{PortList, TunnelProtocol, Workload, WorkloadStatus, WorkloadType};

use super::admission::Admission;
use super::authorization::Policy;
use super::bindings::workload_uid;
use super::labels::selects;
use super::options::{TranslateOptions, service_hostname};
use super::peer_authentication::PeerAuthn;
use super::services::{ip_bytes, ports_for_pod};
use super::waypoints::{Asker, Waypoints};
use crate::model::{Index, Pod, Problem};

/// Namespace or pod label choosing the data plane.
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";

/// What workload translation reads besides the pods.
pub(super) struct Context<'a> {
    pub index: &'a Index,
    pub options: &'a TranslateOptions,
    pub waypoints: &'a Waypoints,
    pub policies: &'a [Policy],
    pub peer: &'a PeerAuthn<'a>,
    pub admission: &'a Admission,
}

/// Translates every pod that is running or starting: with its addresses, or, scheduled on a
/// node but without an IP yet (its network is being set up), with none, so that the node
/// agent learns its enrollment before the CNI plugin asks it to capture the pod.
pub(super) fn translate_workloads(ctx: &Context<'_>, problems: &mut Vec<Problem>) -> Vec<Workload> {
    ctx.index
        .pods()
        .filter_map(|(origin, pod)| translate_pod(ctx, origin, pod, problems))
        .collect()
}

/// True when the pod is captured: the pod's own label wins (`none` opts
/// out, `ambient` opts in), else the namespace's.
pub fn is_enrolled(index: &Index, pod: &Pod) -> bool {
    match pod.metadata.labels.get(DATAPLANE_MODE).map(String::as_str) {
        Some("none") => false,
        Some("ambient") => true,
        _ => index
            .namespace(&pod.metadata.namespace)
            .and_then(|ns| ns.metadata.labels.get(DATAPLANE_MODE))
            .is_some_and(|mode| mode == "ambient"),
    }
}

fn translate_pod(
    ctx: &Context<'_>,
    origin: &str,
    pod: &Pod,
    problems: &mut Vec<Problem>,
) -> Option<Workload> {
    let m = &pod.metadata;
    let phase = pod.status.phase.as_str();
    if phase != "Running" && phase != "Pending" {
        return None;
    }
    let addresses = pod_addresses(origin, pod, problems)?;
    let workload_name = workload_name(pod);
    let label = |keys: &[&str]| keys.iter().find_map(|k| m.labels.get(*k).cloned());
    let canonical_name = label(&[
        "service.istio.io/canonical-name",
        "app.kubernetes.io/name",
        "app",
    ])
    .unwrap_or_else(|| workload_name.clone());
    let canonical_revision = label(&[
        "service.istio.io/canonical-revision",
        "app.kubernetes.io/version",
        "version",
    ])
    .unwrap_or_else(|| "latest".to_string());
    let uid = workload_uid(&ctx.options.cluster_id, pod);
    let authorization_policies = policy_references(ctx, pod, &uid);
    let tunnel = if is_enrolled(ctx.index, pod) {
        TunnelProtocol::Hbone
    } else {
        TunnelProtocol::None
    };
    let status = if phase == "Running" {
        WorkloadStatus::Healthy
    } else {
        WorkloadStatus::Unhealthy
    };
    let waypoint = ctx
        .waypoints
        .for_object(ctx.index, origin, "Pod", m, Asker::Workload, problems);
    Some(Workload {
        uid,
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        addresses,
        tunnel_protocol: tunnel as i32,
        trust_domain: ctx.options.trust_domain.clone(),
        service_account: pod.service_account().to_string(),
        waypoint,
        node: pod.spec.node_name.clone(),
        canonical_name,
        canonical_revision,
        workload_type: WorkloadType::Pod as i32,
        workload_name,
        services: pod_services(ctx, pod, problems),
        authorization_policies,
        status: status as i32,
        cluster_id: ctx.options.cluster_id.clone(),
        ..Default::default()
    })
}

/// The pod's IPs as bytes: none for a pending pod that has a node but no IP yet; `None` for
/// an unscheduled pod without IP, or (reported) when one is not an IP.
fn pod_addresses(origin: &str, pod: &Pod, problems: &mut Vec<Problem>) -> Option<Vec<Vec<u8>>> {
    let m = &pod.metadata;
    let mut ips: Vec<&str> = pod.status.pod_ips.iter().map(|p| p.ip.as_str()).collect();
    if ips.is_empty() && !pod.status.pod_ip.is_empty() {
        ips.push(&pod.status.pod_ip);
    }
    if ips.is_empty() {
        // Scheduled and starting: the runtime calls the CNI plugins before any IP reaches the
        // API, so the node agent must know the pod by name by then. Unscheduled: no node's
        // business yet.
        let starting = pod.status.phase == "Pending" && !pod.spec.node_name.is_empty();
        return starting.then(Vec::new);
    }
    let mut addresses = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        match ip.parse::<IpAddr>() {
            Ok(addr) => addresses.push(ip_bytes(addr)),
            Err(_) => {
                problems.push(
                    Problem::new(origin, "Pod", &m.namespace, &m.name)
                        .field(format!("status.podIPs[{i}]"))
                        .message(format!("{ip:?} is not an IP address; pod skipped")),
                );
                return None;
            }
        }
    }
    Some(addresses)
}

/// The Services of the pod's namespace whose selector picks it, by `<ns>/<hostname>`, with
/// the pod's ports for each.
fn pod_services(
    ctx: &Context<'_>,
    pod: &Pod,
    problems: &mut Vec<Problem>,
) -> std::collections::BTreeMap<String, PortList> {
    let m = &pod.metadata;
    let mut services = std::collections::BTreeMap::new();
    for (svc_origin, svc) in ctx.index.services() {
        if svc.metadata.namespace != m.namespace {
            continue;
        }
        // A Service without selector has its endpoints managed elsewhere.
        let Some(selector) = svc.spec.selector.as_ref().filter(|s| !s.is_empty()) else {
            continue;
        };
        if !selects(selector, &m.labels) {
            continue;
        }
        let key = format!(
            "{}/{}",
            svc.metadata.namespace,
            service_hostname(&svc.metadata.name, &svc.metadata.namespace)
        );
        services.insert(key, ports_for_pod(svc_origin, svc, pod, problems));
    }
    services
}

/// The policies the pod's workload references: selector policies picking it (namespace and
/// mesh-wide ones apply by their scope alone), PeerAuthentication's converted ones, and the
/// waypoint admission policies it needs; sorted, once each.
fn policy_references(ctx: &Context<'_>, pod: &Pod, uid: &str) -> Vec<String> {
    let admission = ctx.admission.references.get(uid).into_iter().flatten();
    let mut references: Vec<String> = ctx
        .policies
        .iter()
        .filter(|p| (p.selector.is_some() || p.pods.is_some()) && p.applies_to(pod))
        .map(Policy::reference)
        .chain(ctx.peer.references_for(pod))
        .chain(admission.cloned())
        .collect();
    references.sort();
    references.dedup();
    references
}

/// The name of the pod's owning workload: the Deployment behind a
/// ReplicaSet (`<deployment>-<pod-template-hash>`), another controller's
/// name, the pod name minus its two generated segments, or the pod name.
pub fn workload_name(pod: &Pod) -> String {
    let m = &pod.metadata;
    let hash = m.labels.get("pod-template-hash");
    if let Some(owner) = m.owner_references.first() {
        let deployment = hash
            .filter(|_| owner.kind == "ReplicaSet")
            .and_then(|h| owner.name.strip_suffix(&format!("-{h}")));
        if let Some(deployment) = deployment {
            return deployment.to_string();
        }
        return owner.name.clone();
    }
    if let Some(h) = hash {
        let parts: Vec<&str> = m.name.rsplitn(3, '-').collect();
        if parts.len() == 3 && parts[1] == h {
            return parts[2].to_string();
        }
    }
    m.name.clone()
}
