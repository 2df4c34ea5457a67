//! The admin endpoint (HTTP/1.1, port 15014): `/metrics`, `/ready` and `/debug/config_dump`.
//!
//! `/metrics` and `/ready` answer anyone (Prometheus and kubelet reach them from elsewhere);
//! `/debug/*` holds the whole mesh configuration and answers only clients on the controller's
//! own host (loopback), unless [`AdminState::remote_debug`] says otherwise.
//!
//! `/metrics` renders the controller's registry ([`crate::metrics`]) here, so there is no
//! second listener.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use api::workload::{Address, GatewayAddress, Service, Workload, address, gateway_address};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::root_rotation::{RootRotation, RotateOptions, RotationError};
use crate::translate::{Published, Snapshot};
use crate::xds::Clients;

/// Whether the controller is ready: once the first translated snapshot is being served, and
/// as long as translation has not failed since (the last good snapshot is still served then,
/// but the controller says why it is not keeping up).
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<Mutex<ReadyState>>);

#[derive(Debug, Default)]
struct ReadyState {
    serving: bool,
    failure: Option<String>,
}

impl Readiness {
    /// Marks the first snapshot as served.
    pub fn set_ready(&self) {
        self.state().serving = true;
    }

    /// Records why the controller cannot follow its input (cleared by [`Readiness::recovered`]).
    pub fn set_failure(&self, reason: String) {
        self.state().failure = Some(reason);
    }

    /// Clears a failure recorded by [`Readiness::set_failure`].
    pub fn recovered(&self) {
        self.state().failure = None;
    }

    /// Whether the controller serves a snapshot and follows its input.
    pub fn is_ready(&self) -> bool {
        self.status().is_ok()
    }

    /// `Ok` when ready, else the reason.
    pub fn status(&self) -> Result<(), String> {
        let state = self.state();
        match (&state.failure, state.serving) {
            (Some(reason), _) => Err(reason.clone()),
            (None, false) => Err("no configuration translated yet".to_owned()),
            (None, true) => Ok(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ReadyState> {
        // The state is two plain fields: a panic while holding the lock cannot leave it torn.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What the admin endpoint reads.
#[derive(Clone)]
pub struct AdminState {
    /// Renders `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The snapshot being served, for `/debug/config_dump`.
    pub snapshots: watch::Receiver<Published>,
    /// Answers `/ready`.
    pub readiness: Readiness,
    /// Whether `/debug/*` answers clients that are not on loopback.
    pub remote_debug: bool,
    /// The connected xDS clients, for `/debug/syncz`.
    pub clients: Clients,
    /// Root rotation, for `/debug/ca` and `POST /debug/ca/rotate-root`.
    pub rotation: Option<RootRotation>,
}

/// Admin connections served at once; more are closed on accept (they hold a task each).
const MAX_CONNECTIONS: usize = 64;

/// Serves the admin endpoint on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let state = Arc::new(state);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%remote, "too many admin connections; closing this one");
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&req, remote, &state).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(tcp), service);
            // Idle or slow admin clients must not hold a task forever.
            match tokio::time::timeout(Duration::from_secs(60), conn).await {
                Ok(Err(e)) => tracing::debug!(%remote, error = %e, "admin connection error"),
                Err(_) => tracing::debug!(%remote, "admin connection timed out"),
                Ok(Ok(())) => {}
            }
        });
    }
}

/// Answers one admin request from `remote`.
pub async fn route(
    req: &Request<Incoming>,
    remote: std::net::SocketAddr,
    state: &AdminState,
) -> Response<Full<Bytes>> {
    let local = remote.ip().to_canonical().is_loopback();
    if let Err((status, why)) = admitted(req.method(), req.uri().path(), local, state.remote_debug)
    {
        tracing::debug!(%remote, path = req.uri().path(), "refused an admin request");
        return text(status, why.into());
    }
    match req.uri().path() {
        "/metrics" => {
            let mut response = text(StatusCode::OK, state.metrics.render());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(prometheus_registry::text::CONTENT_TYPE),
            );
            response
        }
        "/ready" => match state.readiness.status() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        "/debug/syncz" => {
            let clients = state.clients.list();
            // The current version of every type served or subscribed to.
            let snapshot = state.snapshots.borrow().clone();
            let versions: std::collections::BTreeMap<&String, String> = snapshot
                .as_ref()
                .map(|snapshot| {
                    let types = clients.iter().flat_map(|c| c.types.keys());
                    types
                        .chain(snapshot.resources.keys())
                        .map(|t| (t, snapshot.system_version(t)))
                        .collect()
                })
                .unwrap_or_default();
            json_response(
                StatusCode::OK,
                &json!({ "versions": versions, "clients": clients }),
            )
        }
        "/debug/ca" => match &state.rotation {
            Some(rotation) => json_response(StatusCode::OK, &json!(rotation.status())),
            None => text(StatusCode::NOT_FOUND, "no CA\n".into()),
        },
        ROTATE_ROOT | REPLACE if req.method() == Method::POST => {
            rotate(req.uri().path(), req.uri().query(), state).await
        }
        "/debug/config_dump" => {
            let Some(snapshot) = state.snapshots.borrow().clone() else {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no configuration translated yet\n".into(),
                );
            };
            json_response(StatusCode::OK, &config_dump(&snapshot))
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// Starts a root rotation: `?new_root_ttl=SECONDS&reissue_within=SECONDS`.
/// Whether the admin endpoint answers `method path` from a client on the controller's own host
/// (`local`) or elsewhere: GETs of `/metrics` and `/ready` from anyone, of `/debug/*` from the
/// host or, with `remote_debug`, from anyone; the CA's operations (POST) from the host only,
/// whatever the flag says (they change what every workload trusts).
fn admitted(
    method: &Method,
    path: &str,
    local: bool,
    remote_debug: bool,
) -> Result<(), (StatusCode, &'static str)> {
    let operation = [ROTATE_ROOT, REPLACE].contains(&path);
    match (method, operation) {
        (&Method::GET, _) if !path.starts_with("/debug/") || local || remote_debug => Ok(()),
        (&Method::GET, _) => Err((
            StatusCode::FORBIDDEN,
            "debug endpoints answer only on localhost (controller --remote-debug changes that)\n",
        )),
        (&Method::POST, true) if local => Ok(()),
        (&Method::POST, true) => Err((
            StatusCode::FORBIDDEN,
            "CA operations answer only on localhost; in Kubernetes mode, ask through the \
             Secret mesh-ca-rotation (meshctl ca)\n",
        )),
        _ => Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET (POST for rotate-root and replace)\n",
        )),
    }
}

const ROTATE_ROOT: &str = "/debug/ca/rotate-root";
/// Starts replacing the CA's material with a folder's: `?from=NAME&reissue_within=SECONDS`.
const REPLACE: &str = "/debug/ca/replace";

/// Answers `POST /debug/ca/rotate-root` and `/debug/ca/replace`: the status after phase 1,
/// or why it cannot start (400 for bad parameters or refused material, 409 while another
/// runs, 412 for a CA without a folder, 503 on a replica that does not lead).
async fn rotate(path: &str, query: Option<&str>, state: &AdminState) -> Response<Full<Bytes>> {
    let Some(rotation) = &state.rotation else {
        return text(StatusCode::NOT_FOUND, "no CA\n".into());
    };
    let options = match rotate_options(query.unwrap_or_default()) {
        Ok(options) => options,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let started = match (path, &options.from) {
        (REPLACE, Some(from)) => rotation.replace(from, options.rotate.reissue_within).await,
        (REPLACE, None) => return text(StatusCode::BAD_REQUEST, "from: required\n".into()),
        _ => rotation.start(options.rotate).await,
    };
    match started {
        Ok(status) => json_response(StatusCode::OK, &json!(status)),
        Err(e @ RotationError::InProgress(_)) => text(StatusCode::CONFLICT, format!("{e}\n")),
        Err(e @ RotationError::NotLeader) => {
            text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))
        }
        Err(e @ (RotationError::NotRotatable(_) | RotationError::Refused(_))) => {
            text(StatusCode::PRECONDITION_FAILED, format!("{e}\n"))
        }
        Err(e @ (RotationError::Folder(_) | RotationError::Request(_) | RotationError::Ca(_))) => {
            text(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// What a rotation request asks for.
#[derive(Debug)]
struct RotateQuery {
    rotate: RotateOptions,
    /// The folder of replacement material (`replace`).
    from: Option<String>,
}

/// The rotation's options from a query string; unknown parameters are refused by name.
fn rotate_options(query: &str) -> Result<RotateQuery, String> {
    let mut options = RotateOptions {
        new_root_ttl: crate::ca::store::ROOT_TTL,
        reissue_within: Duration::from_secs(60),
    };
    let mut from = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "from" {
            from = Some(value.to_owned());
            continue;
        }
        let seconds = value
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e10)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("{name}={value:?}: expected a number of seconds"))?;
        match name {
            "new_root_ttl" if seconds >= Duration::from_secs(3600) => {
                options.new_root_ttl = seconds
            }
            "new_root_ttl" => return Err("new_root_ttl: at least 3600 seconds".into()),
            "reissue_within" => options.reissue_within = seconds,
            other => {
                return Err(format!(
                    "unknown parameter {other:?} (new_root_ttl, reissue_within, from)"
                ));
            }
        }
    }
    Ok(RotateQuery {
        rotate: options,
        from,
    })
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = text(
        status,
        serde_json::to_string_pretty(body).unwrap_or_default(),
    );
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// The snapshot as JSON: type URL → name → `{version, resource}`. Workload API addresses are
/// mapped field by field; other types are rendered from their `Debug` form. The snapshot
/// holds no key material, so nothing needs redacting.
pub fn config_dump(snapshot: &Snapshot) -> Value {
    let mut types = serde_json::Map::new();
    for (type_url, resources) in &snapshot.resources {
        let mut named = serde_json::Map::new();
        for (name, resource) in resources {
            named.insert(
                name.clone(),
                json!({
                    "version": resource.version,
                    "resource": decode(type_url, &resource.body),
                }),
            );
        }
        types.insert(type_url.clone(), Value::Object(named));
    }
    Value::Object(types)
}

fn decode(type_url: &str, body: &api::prost_types::Any) -> Value {
    match type_url {
        api::ADDRESS_TYPE_URL => match api::unpack::<Address>(body) {
            Ok(Address {
                r#type: Some(address::Type::Workload(w)),
            }) => json!({ "workload": workload(&w) }),
            Ok(Address {
                r#type: Some(address::Type::Service(s)),
            }) => json!({ "service": service(&s) }),
            Ok(Address { r#type: None }) => Value::Null,
            Err(e) => json!({ "error": e.to_string() }),
        },
        api::AUTHORIZATION_TYPE_URL => match api::unpack::<api::security::Authorization>(body) {
            Ok(policy) => json!({ "debug": format!("{policy:?}") }),
            Err(e) => json!({ "error": e.to_string() }),
        },
        api::WAYPOINT_TYPE_URL => match api::unpack::<api::waypoint::Waypoint>(body) {
            Ok(w) => crate::translate::waypoint_json(&w),
            Err(e) => json!({ "error": e.to_string() }),
        },
        _ => json!({ "type_url": body.type_url, "bytes": body.value.len() }),
    }
}

fn ip(bytes: &[u8]) -> String {
    crate::translate::ip_text(bytes).unwrap_or_else(|| format!("invalid({} bytes)", bytes.len()))
}

fn gateway(g: &Option<GatewayAddress>) -> Value {
    match g
        .as_ref()
        .and_then(|g| g.destination.as_ref().map(|d| (g, d)))
    {
        Some((g, gateway_address::Destination::Hostname(h))) => {
            json!({ "hostname": format!("{}/{}", h.namespace, h.hostname), "hbone_mtls_port": g.hbone_mtls_port })
        }
        Some((g, gateway_address::Destination::Address(a))) => {
            json!({ "address": format!("{}/{}", a.network, ip(&a.address)), "hbone_mtls_port": g.hbone_mtls_port })
        }
        None => Value::Null,
    }
}

fn workload(w: &Workload) -> Value {
    let services: serde_json::Map<String, Value> = w
        .services
        .iter()
        .map(|(svc, ports)| {
            let ports: Vec<Value> = ports
                .ports
                .iter()
                .map(|p| json!({ "service_port": p.service_port, "target_port": p.target_port }))
                .collect();
            (svc.clone(), Value::Array(ports))
        })
        .collect();
    json!({
        "uid": w.uid,
        "name": w.name,
        "namespace": w.namespace,
        "addresses": w.addresses.iter().map(|a| ip(a)).collect::<Vec<_>>(),
        "network": w.network,
        "node": w.node,
        "trust_domain": w.trust_domain,
        "service_account": w.service_account,
        "tunnel_protocol": api::workload::TunnelProtocol::try_from(w.tunnel_protocol)
            .map(|p| p.as_str_name().to_owned())
            .unwrap_or_else(|_| w.tunnel_protocol.to_string()),
        "workload_name": w.workload_name,
        "canonical_name": w.canonical_name,
        "canonical_revision": w.canonical_revision,
        "cluster_id": w.cluster_id,
        "waypoint": gateway(&w.waypoint),
        "services": services,
        "authorization_policies": w.authorization_policies,
    })
}

fn service(s: &Service) -> Value {
    json!({
        "name": s.name,
        "namespace": s.namespace,
        "hostname": s.hostname,
        "addresses": s.addresses.iter().map(|a| format!("{}/{}", a.network, ip(&a.address))).collect::<Vec<_>>(),
        "ports": s.ports.iter().map(|p| json!({ "service_port": p.service_port, "target_port": p.target_port })).collect::<Vec<_>>(),
        "subject_alt_names": s.subject_alt_names,
        "waypoint": gateway(&s.waypoint),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_operations_answer_the_controllers_host_only_even_with_remote_debug() {
        let status = |method: Method, path: &str, local: bool, remote_debug: bool| {
            admitted(&method, path, local, remote_debug).map_err(|(status, _)| status.as_u16())
        };
        for remote_debug in [false, true] {
            assert_eq!(status(Method::GET, "/metrics", false, remote_debug), Ok(()));
            assert_eq!(status(Method::GET, "/ready", false, remote_debug), Ok(()));
            assert_eq!(
                status(Method::POST, ROTATE_ROOT, true, remote_debug),
                Ok(())
            );
            assert_eq!(status(Method::POST, REPLACE, false, remote_debug), Err(403));
            assert_eq!(
                status(Method::POST, ROTATE_ROOT, false, remote_debug),
                Err(403)
            );
            assert_eq!(
                status(Method::POST, "/debug/syncz", true, remote_debug),
                Err(405)
            );
            assert_eq!(
                status(Method::DELETE, "/metrics", true, remote_debug),
                Err(405)
            );
        }
        assert_eq!(status(Method::GET, "/debug/syncz", true, false), Ok(()));
        assert_eq!(status(Method::GET, "/debug/syncz", false, false), Err(403));
        assert_eq!(status(Method::GET, "/debug/syncz", false, true), Ok(()));
        assert_eq!(
            status(Method::GET, "/debug/config_dump", false, true),
            Ok(())
        );
    }
    use crate::translate::Resource;

    #[test]
    fn rotate_options_are_seconds_and_unknown_ones_are_refused() {
        let options = rotate_options("new_root_ttl=7200&reissue_within=0.5").unwrap();
        assert_eq!(options.rotate.new_root_ttl, Duration::from_secs(7200));
        assert_eq!(options.rotate.reissue_within, Duration::from_millis(500));
        assert_eq!(options.from, None);
        let defaults = rotate_options("from=incoming").unwrap();
        assert_eq!(defaults.rotate.new_root_ttl, crate::ca::store::ROOT_TTL);
        assert_eq!(defaults.from.as_deref(), Some("incoming"));
        assert!(
            rotate_options("new_root_ttl=60")
                .unwrap_err()
                .contains("3600")
        );
        assert!(
            rotate_options("reissue_within=-1")
                .unwrap_err()
                .contains("seconds")
        );
        assert!(
            rotate_options("ttl=1")
                .unwrap_err()
                .contains("unknown parameter \"ttl\"")
        );
    }

    #[test]
    fn dumps_workloads() {
        let address = Address {
            r#type: Some(address::Type::Workload(Workload {
                name: "web-1".into(),
                namespace: "app".into(),
                addresses: vec![vec![10, 0, 0, 7]],
                tunnel_protocol: api::workload::TunnelProtocol::Hbone as i32,
                ..Default::default()
            })),
        };
        let mut snapshot = Snapshot::default();
        snapshot
            .resources
            .entry(api::ADDRESS_TYPE_URL.into())
            .or_default()
            .insert(
                "Kubernetes//Pod/app/web-1".into(),
                Resource {
                    version: "v1".into(),
                    body: api::pack(&address),
                },
            );
        let dump = config_dump(&snapshot);
        let w = &dump[api::ADDRESS_TYPE_URL]["Kubernetes//Pod/app/web-1"];
        assert_eq!(w["version"], "v1");
        assert_eq!(w["resource"]["workload"]["addresses"][0], "10.0.0.7");
        assert_eq!(w["resource"]["workload"]["tunnel_protocol"], "HBONE");
    }
}
