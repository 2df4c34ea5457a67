//! Objects a fake Kubernetes API server keeps as the real one does, for the collections a
//! test names (`/apis/coordination.k8s.io/v1/namespaces/istio-system/leases`): `POST` to the
//! collection creates (409 AlreadyExists when the name is taken), `GET` of an item reads it
//! (404 when absent), `PUT` replaces it only at its current `metadata.resourceVersion` (409
//! Conflict otherwise). Every write gets the next resourceVersion. Shared by several
//! [`FakeKube`](crate::fake_kube::FakeKube) front ends, it is one cluster that several
//! clients reach each through its own.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::fake_kube::{Reply, Request, not_found};

/// The objects of some collections, by item path.
#[derive(Debug, Default)]
pub struct Objects {
    collections: Vec<String>,
    state: Mutex<Stored>,
}

#[derive(Debug, Default)]
struct Stored {
    items: BTreeMap<String, Value>,
    version: u64,
}

/// `409` as the API server says it: `reason` `AlreadyExists` or `Conflict`.
fn conflict(reason: &str, path: &str) -> Reply {
    let message = match reason {
        "AlreadyExists" => format!("{path} already exists"),
        _ => format!(
            "Operation cannot be fulfilled on {path}: the object has been modified; please \
             apply your changes to the latest version and try again"
        ),
    };
    Reply::Json(
        409,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "message": message, "reason": reason, "code": 409}),
    )
}

impl Objects {
    /// Keeps the objects of `collections` (paths without a trailing `/`).
    pub fn new(collections: &[&str]) -> Self {
        Self {
            collections: collections.iter().map(|c| c.to_string()).collect(),
            state: Mutex::default(),
        }
    }

    /// The answer to `request` when it reads or writes one of the collections' objects.
    pub fn answer(&self, request: &Request) -> Option<Reply> {
        let collection = self.collections.iter().find(|c| {
            request.path == **c
                || request
                    .path
                    .strip_prefix(c.as_str())
                    .is_some_and(|rest| rest.starts_with('/') && !rest[1..].contains('/'))
        })?;
        let mut state = self.state.lock().expect("not poisoned");
        match (request.method.as_str(), request.path == *collection) {
            ("POST", true) => {
                let name = request.body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default();
                let path = format!("{collection}/{name}");
                if state.items.contains_key(&path) {
                    return Some(conflict("AlreadyExists", &path));
                }
                Some(Reply::Json(201, state.store(path, request.body.clone())))
            }
            ("GET", false) => Some(match state.items.get(&request.path) {
                Some(object) => Reply::Json(200, object.clone()),
                None => not_found(),
            }),
            ("PUT", false) => {
                let Some(current) = state.items.get(&request.path) else {
                    return Some(not_found());
                };
                let version = |o: &Value| o["metadata"]["resourceVersion"].clone();
                if version(current) != version(&request.body) {
                    return Some(conflict("Conflict", &request.path));
                }
                Some(Reply::Json(
                    200,
                    state.store(request.path.clone(), request.body.clone()),
                ))
            }
            _ => None,
        }
    }

    /// The object at `path`, as stored.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.state
            .lock()
            .expect("not poisoned")
            .items
            .get(path)
            .cloned()
    }
}

impl Stored {
    /// Stores `object` at `path` with the next resourceVersion; returns it as stored.
    fn store(&mut self, path: String, mut object: Value) -> Value {
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.items.insert(path, object.clone());
        object
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ns/leases";

    fn request(method: &str, path: &str, body: Value) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            content_type: "application/json".into(),
            body,
        }
    }

    fn status(reply: Option<Reply>) -> (u16, Value) {
        match reply {
            Some(Reply::Json(status, body)) => (status, body),
            other => panic!("not a JSON answer: {other:?}"),
        }
    }

    #[test]
    fn creates_once_and_replaces_only_at_the_current_version() {
        let objects = Objects::new(&[LEASES]);
        let item = format!("{LEASES}/l");
        assert_eq!(
            status(objects.answer(&request("GET", &item, Value::Null))).0,
            404
        );
        let lease = json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}});
        let (code, created) = status(objects.answer(&request("POST", LEASES, lease.clone())));
        assert_eq!(
            (code, created["metadata"]["resourceVersion"].as_str()),
            (201, Some("1"))
        );
        let (code, taken) = status(objects.answer(&request("POST", LEASES, lease)));
        assert_eq!(
            (code, taken["reason"].as_str()),
            (409, Some("AlreadyExists"))
        );
        let mut renewed = created.clone();
        renewed["spec"]["holderIdentity"] = json!("b");
        let (code, stored) = status(objects.answer(&request("PUT", &item, renewed.clone())));
        assert_eq!(
            (code, stored["metadata"]["resourceVersion"].as_str()),
            (200, Some("2"))
        );
        // The same write again carries a stale version.
        let (code, stale) = status(objects.answer(&request("PUT", &item, renewed)));
        assert_eq!((code, stale["reason"].as_str()), (409, Some("Conflict")));
        assert_eq!(objects.get(&item).unwrap()["spec"]["holderIdentity"], "b");
        // Other paths are not its business.
        assert!(
            objects
                .answer(&request("GET", "/api/v1/pods", Value::Null))
                .is_none()
        );
        assert!(
            objects
                .answer(&request("GET", &format!("{item}/status"), Value::Null))
                .is_none()
        );
    }
}
