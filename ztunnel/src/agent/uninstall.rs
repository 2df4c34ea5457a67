//! Whether the agent stops because the mesh is being uninstalled from its node.
//!
//! A stop normally leaves every pod captured (its rules in place, the node's probe rule too),
//! so that a restart or a rolling upgrade drops nothing: the next agent adopts them. When the
//! mesh is uninstalled the pods must instead get their own network back, or their traffic
//! keeps going to proxies that are gone. The agent tells the two apart as istio-cni does:
//! when it stops it reads its own DaemonSet; gone (404) or being deleted (a
//! `deletionTimestamp`) means uninstall. Anything else — the DaemonSet still there, the API
//! server unreachable, an answer that does not read — means the pods stay captured: the mesh
//! never lets go of a pod on a guess.

use super::kube_api::{KubeApi, KubeApiError};

/// What a stopping agent is to do with the pods it captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A restart or an upgrade: everything stays.
    KeepCaptured,
    /// The mesh leaves the node: release every pod and remove the node's rules.
    Uninstall,
}

/// The DaemonSet whose deletion means uninstall, and where to read it.
#[derive(Clone, Debug)]
pub struct UninstallCheck {
    api: KubeApi,
    namespace: String,
    daemonset: String,
}

impl UninstallCheck {
    /// Watches for the deletion of `namespace/daemonset` through `api`.
    pub fn new(api: KubeApi, namespace: &str, daemonset: &str) -> Self {
        Self {
            api,
            namespace: namespace.to_owned(),
            daemonset: daemonset.to_owned(),
        }
    }

    /// Reads `<namespace>/<name>` (the form of `--daemonset`).
    pub fn parse(api: KubeApi, reference: &str) -> Result<Self, KubeApiError> {
        match reference.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
                Ok(Self::new(api, namespace, name))
            }
            _ => Err(KubeApiError::Config(format!(
                "--daemonset {reference:?}: expected NAMESPACE/NAME"
            ))),
        }
    }

    /// What this stop is, from the DaemonSet as the API server has it now.
    pub async fn on_stop(&self) -> Stop {
        let path = format!(
            "/apis/apps/v1/namespaces/{}/daemonsets/{}",
            self.namespace, self.daemonset
        );
        let what = format!("daemonset {}/{}", self.namespace, self.daemonset);
        match self.api.get(&path).await {
            Ok((404, _)) => {
                tracing::info!("{what} is gone: the mesh is being uninstalled from this node");
                Stop::Uninstall
            }
            Ok((200, body)) => match deleting(&body) {
                Some(true) => {
                    tracing::info!(
                        "{what} is being deleted: the mesh is being uninstalled from this node"
                    );
                    Stop::Uninstall
                }
                Some(false) => {
                    tracing::info!("{what} stays: a restart or an upgrade, pods stay captured");
                    Stop::KeepCaptured
                }
                None => {
                    tracing::warn!("{what}: the answer does not read; pods stay captured");
                    Stop::KeepCaptured
                }
            },
            Ok((status, _)) => {
                tracing::warn!("reading {what}: status {status}; pods stay captured");
                Stop::KeepCaptured
            }
            Err(e) => {
                tracing::warn!("reading {what}: {e}; pods stay captured");
                Stop::KeepCaptured
            }
        }
    }
}

/// Whether the object in `body` has a deletion timestamp; `None` when it is not an object.
fn deleting(body: &[u8]) -> Option<bool> {
    let object: serde_json::Value = serde_json::from_slice(body).ok()?;
    let metadata = object.get("metadata")?.as_object()?;
    Some(
        metadata
            .get("deletionTimestamp")
            .is_some_and(|t| !t.is_null()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use test_support::fake_kube::{FakeKube, Reply, Routes, not_found};

    const PATH: &str = "/apis/apps/v1/namespaces/istio-system/daemonsets/ztunnel";

    async fn stop_with(reply: Option<Reply>) -> Stop {
        let routes = match reply {
            Some(reply) => Routes::new().reply(PATH, reply),
            None => Routes::new(),
        };
        let fake = FakeKube::routes(routes);
        let api = KubeApi::plain(&fake.url()).unwrap();
        let check = UninstallCheck::parse(api, "istio-system/ztunnel").unwrap();
        let stop = check.on_stop().await;
        let seen = fake.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(
            (seen[0].method.as_str(), seen[0].path.as_str()),
            ("GET", PATH)
        );
        stop
    }

    #[tokio::test]
    async fn a_deleted_or_deleting_daemonset_is_an_uninstall_and_anything_else_keeps_pods() {
        let daemonset = |metadata: serde_json::Value| {
            Some(Reply::Json(
                200,
                json!({"kind": "DaemonSet", "metadata": metadata}),
            ))
        };
        assert_eq!(stop_with(Some(not_found())).await, Stop::Uninstall);
        assert_eq!(stop_with(None).await, Stop::Uninstall);
        let deleting = json!({"name": "ztunnel", "deletionTimestamp": "2026-12-07T20:00:00Z"});
        assert_eq!(stop_with(daemonset(deleting)).await, Stop::Uninstall);
        let present = json!({"name": "ztunnel", "deletionTimestamp": null});
        assert_eq!(stop_with(daemonset(present)).await, Stop::KeepCaptured);
        assert_eq!(
            stop_with(daemonset(json!({"name": "ztunnel"}))).await,
            Stop::KeepCaptured
        );
        // Refused, failing or unreadable: never a release on a guess.
        let forbidden =
            test_support::fake_kube::forbidden("get", "daemonsets.apps", "istio-system");
        assert_eq!(stop_with(Some(forbidden)).await, Stop::KeepCaptured);
        let failing = Reply::Text(500, "etcd timeout".into());
        assert_eq!(stop_with(Some(failing)).await, Stop::KeepCaptured);
        let garbage = Reply::Text(200, "<html>".into());
        assert_eq!(stop_with(Some(garbage)).await, Stop::KeepCaptured);
    }

    #[tokio::test]
    async fn an_unreachable_api_server_keeps_the_pods() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let api = KubeApi::plain(&format!("http://127.0.0.1:{port}")).unwrap();
        let check = UninstallCheck::parse(api, "istio-system/ztunnel").unwrap();
        assert_eq!(check.on_stop().await, Stop::KeepCaptured);
    }

    #[test]
    fn the_reference_names_a_namespace_and_a_daemonset() {
        let api = || KubeApi::plain("http://127.0.0.1:1").unwrap();
        assert!(UninstallCheck::parse(api(), "istio-system/ztunnel").is_ok());
        for bad in ["ztunnel", "/ztunnel", "istio-system/", ""] {
            assert!(UninstallCheck::parse(api(), bad).is_err(), "{bad:?}");
        }
        assert!(KubeApi::plain("https://10.0.0.1:443").is_err());
        assert!(KubeApi::plain("http://10.0.0.1").is_err());
    }
}
