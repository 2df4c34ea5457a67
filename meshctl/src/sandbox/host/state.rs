//! The state folder of a sandbox:
//!
//! ```text
//! <state>/lock                       flock serialising verbs
//! <state>/state.json                 the cluster model (model::cluster::Cluster)
//! <state>/pods/<ns>/<pod>.yaml       live Pods (spec.nodeName, status.podIP...)
//! <state>/manifests/<ns>/<kind>-<name>.yaml   every other applied object,
//!                                    Namespaces under manifests/_cluster/
//! <state>/logs/<ns>/<pod>/<container>.log
//! <state>/netns/<namespace>.<pod>    symlink to /run/netns/<pod netns>
//! <state>/logs/<component>.log       controller, ztunnel-<node>, node-agent-<node>
//! <state>/ca/, tokens.yaml, tokens/<node>, tokens/waypoint-<ns>.<gateway>, zds/<node>.sock
//!                                    the system components' files (model::control, ops::tokens)
//! ```
//!
//! `pods/` and `manifests/` hold ordinary Kubernetes YAML, one object per
//! file, written atomically (temp file + rename): the controller's file
//! source reads them as it would read a cluster.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::netns::NETNS_RUN_DIR;
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::model::cluster::{Cluster, Node, Phase, Pod};

/// Longest a verb waits for another one holding the sandbox.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(180);

/// Exclusive hold on a sandbox's state folder, released on drop.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Locks the state folder `dir`, creating it if `create`. Fails with
/// `NotUp` when it does not exist (or is removed while waiting).
pub fn lock(dir: &Path, name: &str, create: bool) -> Result<StateLock> {
    let deadline = Instant::now() + LOCK_TIMEOUT;
    let path = dir.join("lock");
    loop {
        if !dir.is_dir() {
            if !create {
                return Err(SandboxError::NotUp(name.to_string()));
            }
            std::fs::create_dir_all(dir)
                .map_err(SandboxError::io(format!("creating {}", dir.display())))?;
        }
        let file = match File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            // Removed between the check and the open: a teardown raced us.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(SandboxError::io(format!("opening {}", path.display()))(e)),
        };
        loop {
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break;
            }
            if Instant::now() >= deadline {
                return Err(SandboxError::Invalid(format!(
                    "sandbox {name:?} is busy: another meshctl has held {} for {}s",
                    path.display(),
                    LOCK_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // A teardown may have removed the folder while we waited: the lock
        // we hold is then on a deleted file.
        let held = file.metadata().map(|m| (m.dev(), m.ino())).ok();
        let current = std::fs::metadata(&path).map(|m| (m.dev(), m.ino())).ok();
        if held.is_some() && held == current {
            return Ok(StateLock { _file: file });
        }
        if !create {
            return Err(SandboxError::NotUp(name.to_string()));
        }
    }
}

/// Path of the model file.
pub fn state_file(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// Reads the model (caller holds the lock).
pub fn load(dir: &Path, name: &str) -> Result<Cluster> {
    let path = state_file(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SandboxError::NotUp(name.to_string()));
        }
        Err(e) => return Err(SandboxError::io(format!("reading {}", path.display()))(e)),
    };
    serde_json::from_str(&text).map_err(|e| SandboxError::State {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Reads the model without locking (for readers that tolerate a slightly
/// old view, such as the reaper's checks).
pub fn peek(dir: &Path) -> Option<Cluster> {
    serde_json::from_str(&std::fs::read_to_string(state_file(dir)).ok()?).ok()
}

/// Writes `content` to `path` atomically (temp file + rename), readable by
/// everyone.
fn write_atomic(path: &Path, content: &str) -> Result<()> {
    write_file(path, content, 0o644)
}

/// Writes `content` to `path` atomically, readable by root only from the
/// start (never briefly world-readable): tokens.
pub fn write_private(path: &Path, content: &str) -> Result<()> {
    write_file(path, content, 0o600)
}

/// Creates `dir` (and its parents) accessible by root only.
pub fn private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(SandboxError::io(format!("creating {}", dir.display())))
}

fn write_file(path: &Path, content: &str, mode: u32) -> Result<()> {
    let ctx = || format!("writing {}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(SandboxError::io(ctx()))?;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    // A leftover of an interrupted write would make create_new fail.
    let _ = std::fs::remove_file(&tmp);
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(SandboxError::io(ctx()))?;
    file.write_all(content.as_bytes())
        .map_err(SandboxError::io(ctx()))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(SandboxError::io(ctx()))
}

/// Saves the model and refreshes `pods/` and `manifests/`.
pub fn save(dir: &Path, cluster: &Cluster) -> Result<()> {
    let text = serde_json::to_string_pretty(cluster).map_err(|e| SandboxError::State {
        path: state_file(dir).display().to_string(),
        message: e.to_string(),
    })?;
    write_atomic(&state_file(dir), &text)?;
    // Links first: a node agent told about a pod (through the Pod file and
    // the controller) must find its namespace.
    sync_netns_links(&dir.join("netns"), cluster)?;
    let mut pods = Vec::new();
    for pod in cluster.pods.values() {
        let Some(node) = cluster.node(&pod.node) else {
            continue;
        };
        pods.push((
            PathBuf::from(&pod.namespace).join(format!("{}.yaml", pod.name)),
            pod_object(pod, node),
        ));
    }
    sync_folder(&dir.join("pods"), pods)?;
    let manifests = cluster
        .objects
        .iter()
        .filter(|a| a.object.kind != "Pod")
        .map(|a| {
            let ns = a.object.namespace.as_deref().unwrap_or("_cluster");
            let file = format!("{}-{}.yaml", a.object.kind.to_lowercase(), a.object.name);
            (PathBuf::from(ns).join(file), a.object.value.clone())
        })
        .collect();
    sync_folder(&dir.join("manifests"), manifests)
}

/// Makes `root` hold a `<namespace>.<pod name>` symlink to the namespace
/// file of every pod whose namespace exists, and nothing else: how the node
/// agent finds a pod's network namespace from the workload the controller
/// describes (namespace names hold no dot, so the name is unambiguous).
fn sync_netns_links(root: &Path, cluster: &Cluster) -> Result<()> {
    let ctx = || format!("updating {}", root.display());
    std::fs::create_dir_all(root).map_err(SandboxError::io(ctx()))?;
    let mut wanted = BTreeSet::new();
    for pod in cluster.pods.values() {
        let target = Path::new(NETNS_RUN_DIR).join(&pod.netns);
        if !target.exists() {
            continue;
        }
        let link_name = format!("{}.{}", pod.namespace, pod.name);
        let link = root.join(&link_name);
        wanted.insert(link.clone());
        if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
            continue;
        }
        let tmp = root.join(format!(".{link_name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).map_err(SandboxError::io(ctx()))?;
        std::fs::rename(&tmp, &link).map_err(SandboxError::io(ctx()))?;
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for e in entries.flatten() {
        if !wanted.contains(&e.path()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Makes `root` hold exactly `files` (relative path → object): unchanged
/// files are left alone so file watchers see only real changes.
fn sync_folder(root: &Path, files: Vec<(PathBuf, Value)>) -> Result<()> {
    let mut wanted = BTreeSet::new();
    for (rel, value) in files {
        let path = root.join(&rel);
        let yaml = serde_yaml_ng::to_string(&value).map_err(|e| SandboxError::State {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
            write_atomic(&path, &yaml)?;
        }
        wanted.insert(path);
    }
    let Ok(subdirs) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for sub in subdirs.flatten() {
        let Ok(entries) = std::fs::read_dir(sub.path()) else {
            continue;
        };
        for e in entries.flatten() {
            if !wanted.contains(&e.path()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(sub.path()); // only succeeds when empty
    }
    Ok(())
}

/// The pod as a Kubernetes `Pod` object with status.
pub fn pod_object(pod: &Pod, node: &Node) -> Value {
    let mut meta = json!({
        "name": pod.name,
        "namespace": pod.namespace,
        "uid": pod.uid,
        "creationTimestamp": rfc3339(pod.created),
        "labels": pod.labels,
    });
    if !pod.annotations.is_empty() {
        meta["annotations"] = json!(pod.annotations);
    }
    if let Some(o) = &pod.owner {
        meta["ownerReferences"] = json!([{
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": format!("{}-{}", o.deployment, o.template_hash),
            "uid": o.replicaset_uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }]);
    }
    let mut spec = pod.spec.clone();
    if let Some(s) = spec.as_object_mut() {
        s.insert("nodeName".into(), json!(node.name));
        s.insert("serviceAccountName".into(), json!(pod.service_account));
    }
    let ready = if pod.ready && pod.phase == Phase::Running {
        "True"
    } else {
        "False"
    };
    let mut status = json!({
        "phase": pod.phase.as_str(),
        "hostIP": node.ip.to_string(),
        "hostIPs": [{"ip": node.ip.to_string()}],
        "conditions": [{"type": "Ready", "status": ready}],
    });
    // As kubelet: the IP appears once the runtime's CNI ADD gave the pod its network.
    if pod.network {
        status["podIP"] = json!(pod.ip.to_string());
        status["podIPs"] = json!([{"ip": pod.ip.to_string()}]);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": status,
    })
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2024-05-01T12:00:00Z`.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::model::cluster::PodOwner;
    use std::net::Ipv4Addr;

    #[test]
    fn netns_links_follow_the_pods_whose_namespace_exists() {
        use test_support::netns::TestNetns;
        let Some(ns) = TestNetns::if_root("meshctl-ut-links") else {
            return;
        };
        let dir = test_support::TempDir::new("meshctl-links");
        let root = dir.join("netns");
        let mut cluster = Cluster::new("t", 1, 0);
        for (uid, netns) in [("u-live", ns.name()), ("u-gone", "meshctl-ut-missing")] {
            let mut p = pod_with(uid);
            p.netns = netns.into();
            cluster.pods.insert(format!("default/{uid}"), p);
        }
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("stale"), "").unwrap();
        sync_netns_links(&root, &cluster).unwrap();
        let entries: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(entries, ["default.u-live"]);
        assert_eq!(
            std::fs::read_link(root.join("default.u-live")).unwrap(),
            Path::new(NETNS_RUN_DIR).join(ns.name())
        );
        cluster.pods.clear();
        sync_netns_links(&root, &cluster).unwrap();
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    }

    fn pod_with(uid: &str) -> Pod {
        Pod {
            name: uid.into(),
            namespace: "default".into(),
            uid: uid.into(),
            node: "node1".into(),
            ip: Ipv4Addr::new(10, 244, 1, 2),
            netns: String::new(),
            veth: "veth2".into(),
            labels: Default::default(),
            annotations: Default::default(),
            service_account: "default".into(),
            owner: None,
            spec: Value::Null,
            spec_hash: String::new(),
            containers: vec![],
            phase: Phase::Running,
            ready: true,
            unhealthy: false,
            liveness_failures: 0,
            created: 0,
            network: true,
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_714_564_800), "2024-05-01T12:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn pod_yaml_is_a_kubernetes_pod() {
        let node = Node {
            name: "node2".into(),
            index: 2,
            ip: Ipv4Addr::new(172, 18, 0, 3),
            netns: "n".into(),
            next_host: 2,
        };
        let pod = Pod {
            name: "orders-abc".into(),
            namespace: "shop".into(),
            uid: "u".into(),
            node: "node2".into(),
            ip: Ipv4Addr::new(10, 244, 2, 7),
            netns: "x".into(),
            veth: "veth7".into(),
            labels: [("app".to_string(), "orders".to_string())].into(),
            annotations: Default::default(),
            service_account: "orders".into(),
            owner: Some(PodOwner {
                deployment: "orders".into(),
                template_hash: "h".into(),
                replicaset_uid: "r".into(),
            }),
            spec: json!({"containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]}),
            spec_hash: String::new(),
            containers: vec![],
            phase: Phase::Running,
            ready: true,
            unhealthy: false,
            liveness_failures: 0,
            created: 0,
            network: true,
        };
        let yaml = serde_yaml_ng::to_string(&pod_object(&pod, &node)).unwrap();
        let back: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(back["kind"], "Pod");
        assert_eq!(back["spec"]["nodeName"], "node2");
        assert_eq!(back["spec"]["serviceAccountName"], "orders");
        assert_eq!(back["status"]["podIP"], "10.244.2.7");
        assert_eq!(back["status"]["hostIP"], "172.18.0.3");
        assert_eq!(back["metadata"]["ownerReferences"][0]["name"], "orders-h");
        assert_eq!(
            back["spec"]["containers"][0]["ports"][0]["containerPort"],
            8080
        );
    }

    #[test]
    fn a_pod_without_its_network_yet_is_scheduled_and_pending_without_ip() {
        let node = Node {
            name: "node1".into(),
            index: 1,
            ip: Ipv4Addr::new(172, 18, 0, 2),
            netns: "n".into(),
            next_host: 2,
        };
        let mut pod = pod_with("starting");
        pod.phase = Phase::Pending;
        pod.ready = false;
        pod.network = false;
        pod.spec = json!({"containers": []});
        let object = pod_object(&pod, &node);
        assert_eq!(object["spec"]["nodeName"], "node1");
        assert_eq!(object["status"]["phase"], "Pending");
        assert!(object["status"].get("podIP").is_none(), "{object}");
        assert!(object["status"].get("podIPs").is_none(), "{object}");
        assert_eq!(object["status"]["hostIP"], "172.18.0.2");
        // A state file from before the field: the pod had its network.
        let mut recorded = serde_json::to_value(&pod).unwrap();
        recorded.as_object_mut().unwrap().remove("network");
        let old: Pod = serde_json::from_value(recorded).unwrap();
        assert!(old.network);
    }
}
