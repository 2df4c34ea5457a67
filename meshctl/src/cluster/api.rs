//! The API server as meshctl reads it: a kube-rs client built from the kubeconfig and
//! context, plain `GET`s of API paths answered as JSON, and the service and pod proxies
//! through which the controller's admin endpoint and the proxies' metrics are reached
//! without a port-forward.

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;

use super::args::KubeArgs;
use super::error::{ClusterError, Result};

/// The mesh's root namespace, where the controller and the ztunnels run.
pub const SYSTEM_NAMESPACE: &str = "istio-system";

/// How long one request may take: a cluster that does not answer makes the verb fail rather
/// than hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A status and a body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as text, trimmed, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_owned()
    }
}

/// A connection to one cluster's API server.
#[derive(Clone)]
pub struct ApiServer {
    client: kube::Client,
    /// The server's URL, for messages.
    pub url: String,
}

impl ApiServer {
    /// The cluster `args` select: `--kubeconfig` (else `KUBECONFIG` or `~/.kube/config`) at
    /// `--context` (else its current one); with neither, also in-cluster credentials.
    pub async fn connect(args: &KubeArgs) -> Result<Self> {
        let options = KubeConfigOptions {
            context: args.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config_error = |e: &dyn std::fmt::Display| ClusterError::Config(e.to_string());
        let mut config = match (&args.kubeconfig, &args.context) {
            (Some(path), _) => {
                let file = Kubeconfig::read_from(path)
                    .map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| config_error(&e))?
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| config_error(&e))?,
            (None, None) => kube::Config::infer().await.map_err(|e| config_error(&e))?,
        };
        // What the verbs ask is reported as answered (a 503 of the controller's `/ready` is
        // the finding), not retried.
        config.default_retry = false;
        config.connect_timeout = Some(REQUEST_TIMEOUT);
        config.read_timeout = Some(REQUEST_TIMEOUT);
        let url = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(|e| config_error(&e))?;
        Ok(Self { client, url })
    }

    /// `GET path` (with its query), whatever the status.
    pub async fn get(&self, path: &str) -> Result<Answer> {
        self.get_accepting(path, "application/json").await
    }

    /// `GET path` asking for the media type `accept`, whatever the status.
    pub async fn get_accepting(&self, path: &str, accept: &str) -> Result<Answer> {
        let failed = |message: String| ClusterError::Request {
            path: path.to_owned(),
            message,
        };
        let request = http::Request::get(path)
            .header(http::header::ACCEPT, accept)
            .body(kube::client::Body::from(Vec::new()))
            .map_err(|e| failed(e.to_string()))?;
        self.answer(request).await.map_err(failed)
    }

    /// Sends `request`; its status and whole body, whatever the status.
    async fn answer(
        &self,
        request: http::Request<kube::client::Body>,
    ) -> std::result::Result<Answer, String> {
        let response = self.client.send(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect_bytes()
            .await
            .map_err(|e| e.to_string())?;
        Ok(Answer {
            status,
            body: body.to_vec(),
        })
    }

    /// `method path` with the JSON `body` (a write), whatever the status.
    pub async fn send_json(&self, method: &str, path: &str, body: &Value) -> Result<Answer> {
        let failed = |message: String| ClusterError::Request {
            path: format!("{method} {path}"),
            message,
        };
        let bytes = serde_json::to_vec(body).map_err(|e| failed(e.to_string()))?;
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(kube::client::Body::from(bytes))
            .map_err(|e| failed(e.to_string()))?;
        self.answer(request).await.map_err(failed)
    }

    /// `GET path` answered 200 with JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let answer = self.get(path).await?;
        if answer.status != 200 {
            return Err(ClusterError::Status {
                path: path.to_owned(),
                status: answer.status,
                body: status_message(&answer),
            });
        }
        serde_json::from_slice(&answer.body).map_err(|e| ClusterError::Request {
            path: path.to_owned(),
            message: format!("not JSON: {e}"),
        })
    }

    /// The items of the list at `path`; `None` when the API server does not serve it (404:
    /// the kind's CRD is not installed).
    pub async fn list(&self, path: &str) -> Result<Option<Vec<Value>>> {
        let answer = self.get(path).await?;
        if answer.status == 404 {
            return Ok(None);
        }
        if answer.status != 200 {
            return Err(ClusterError::Status {
                path: path.to_owned(),
                status: answer.status,
                body: status_message(&answer),
            });
        }
        let list: Value =
            serde_json::from_slice(&answer.body).map_err(|e| ClusterError::Request {
                path: path.to_owned(),
                message: format!("not JSON: {e}"),
            })?;
        match list["items"].as_array() {
            Some(items) => Ok(Some(items.clone())),
            None if list["items"].is_null() => Ok(Some(Vec::new())),
            None => Err(ClusterError::Invalid(format!(
                "GET {path}: `items` is not a list"
            ))),
        }
    }

    /// The object at `path`; `None` when it does not exist (404).
    pub async fn object(&self, path: &str) -> Result<Option<Value>> {
        match self.get_json(path).await {
            Err(ClusterError::Status { status: 404, .. }) => Ok(None),
            other => other.map(Some),
        }
    }

    /// `GET path` of `service:port` in `namespace` through the API server's service proxy.
    pub async fn service_get(
        &self,
        namespace: &str,
        service: &str,
        port: u16,
        path: &str,
    ) -> Result<Answer> {
        self.get(&service_proxy_path(namespace, service, port, path))
            .await
    }
}

/// `/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy<path>`: a port a pod listens on for all
/// addresses, through the API server (the proxies' metrics).
pub fn pod_proxy_path(namespace: &str, pod: &str, port: u16, path: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy{path}")
}

/// `/api/v1/namespaces/<ns>/services/<svc>:<port>/proxy<path>`.
pub fn service_proxy_path(namespace: &str, service: &str, port: u16, path: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy{path}")
}

/// The message of an API server's `Status` answer, else its body.
fn status_message(answer: &Answer) -> String {
    serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .and_then(|status| status["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| answer.text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_proxy_paths_name_the_service_and_port() {
        assert_eq!(
            service_proxy_path("istio-system", "istiod", 15014, "/ready"),
            "/api/v1/namespaces/istio-system/services/istiod:15014/proxy/ready"
        );
    }

    #[test]
    fn pod_proxy_paths_name_the_pod_and_port() {
        assert_eq!(
            pod_proxy_path("istio-system", "ztunnel-abcde", 15020, "/metrics"),
            "/api/v1/namespaces/istio-system/pods/ztunnel-abcde:15020/proxy/metrics"
        );
    }

    #[test]
    fn a_status_answer_reads_as_its_message() {
        let status = Answer {
            status: 403,
            body: br#"{"kind":"Status","message":"pods is forbidden"}"#.to_vec(),
        };
        assert_eq!(status_message(&status), "pods is forbidden");
        let text = Answer {
            status: 503,
            body: b"not ready\n".to_vec(),
        };
        assert_eq!(status_message(&text), "not ready");
    }
}
