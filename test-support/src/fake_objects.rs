//! Objects a fake Kubernetes API server keeps as the real one does, for the collections a
//! test names (`/apis/coordination.k8s.io/v1/namespaces/istio-system/leases`): `POST` to the
//! collection creates (409 AlreadyExists when the name is taken), `GET` of an item reads it
//! (404 when absent), `PUT` replaces it only at its current `metadata.resourceVersion` (409
//! Conflict otherwise). Every write gets the next resourceVersion. `GET` of the collection
//! lists it, or with `watch=true` streams every later write as an event (`ADDED` or
//! `MODIFIED`, from the `resourceVersion` asked), as a list-then-watch client (kube's watcher)
//! expects; both honour a `fieldSelector` of `metadata.name=<name>`. Shared by several
//! [`FakeKube`](crate::fake_kube::FakeKube) front ends, it is one cluster that several
//! clients reach each through its own.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::fake_kube::{Events, Reply, Request, not_found};

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
    watches: Vec<Watch>,
}

/// An open watch: the items it follows and where their events go.
#[derive(Debug)]
struct Watch {
    scope: Scope,
    events: mpsc::UnboundedSender<Value>,
}

/// A collection, and one name in it when a field selector says so.
#[derive(Debug)]
struct Scope {
    collection: String,
    name: Option<String>,
}

impl Scope {
    fn of(collection: &str, query: &str) -> Self {
        let name = query_param(query, "fieldSelector")
            .and_then(|selector| selector.strip_prefix("metadata.name=").map(str::to_owned));
        Self {
            collection: collection.to_owned(),
            name,
        }
    }

    fn holds(&self, path: &str) -> bool {
        path.strip_prefix(self.collection.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|name| self.name.as_deref().is_none_or(|n| n == name))
    }
}

/// The decoded value of `key` in `query`.
fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
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
            ("GET", true) => {
                let scope = Scope::of(collection, &request.query);
                Some(match query_param(&request.query, "watch").as_deref() {
                    Some("true" | "1") => state.watch(scope, &request.query),
                    _ => Reply::Json(200, state.list(&scope)),
                })
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
    /// Stores `object` at `path` with the next resourceVersion, telling the watches that
    /// follow it; returns it as stored.
    fn store(&mut self, path: String, mut object: Value) -> Value {
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        let kind = match self.items.insert(path.clone(), object.clone()) {
            None => "ADDED",
            Some(_) => "MODIFIED",
        };
        let event = json!({"type": kind, "object": object});
        self.watches
            .retain(|w| !w.scope.holds(&path) || w.events.send(event.clone()).is_ok());
        object
    }

    /// The items `scope` holds, as a list at the current version.
    fn list(&self, scope: &Scope) -> Value {
        let items: Vec<Value> = self
            .items
            .iter()
            .filter(|(path, _)| scope.holds(path))
            .map(|(_, item)| item.clone())
            .collect();
        json!({"kind": "List", "apiVersion": "v1",
               "metadata": {"resourceVersion": self.version.to_string()}, "items": items})
    }

    /// A watch of `scope` from the query's `resourceVersion`: the items written since, then
    /// every later write.
    fn watch(&mut self, scope: Scope, query: &str) -> Reply {
        let since: u64 = query_param(query, "resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (events, reply) = Events::channel();
        let version = |item: &Value| {
            item["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        for (_, item) in self.items.iter().filter(|(path, _)| scope.holds(path)) {
            if version(item) > since {
                let _ = events.send(json!({"type": "MODIFIED", "object": item}));
            }
        }
        self.watches.push(Watch { scope, events });
        Reply::Events(reply)
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

    fn watch(objects: &Objects, query: &str) -> mpsc::UnboundedReceiver<Value> {
        let mut watching = request("GET", LEASES, Value::Null);
        watching.query = query.into();
        let reply = objects.answer(&watching);
        let Some(Reply::Events(events)) = reply else {
            panic!("not a watch: {reply:?}");
        };
        events.take_receiver().expect("untaken")
    }

    #[test]
    fn a_watch_streams_the_writes_after_its_version_of_the_names_it_selects() {
        let objects = Objects::new(&[LEASES]);
        let lease = |name: &str| json!({"metadata": {"name": name}});
        status(objects.answer(&request("POST", LEASES, lease("a"))));
        let mut all = watch(&objects, "watch=true&resourceVersion=0");
        let mut named = watch(
            &objects,
            "watch=1&resourceVersion=1&fieldSelector=metadata.name%3Db",
        );
        let added = all.try_recv().expect("the write before the watch");
        assert_eq!(
            (
                added["type"].as_str(),
                added["object"]["metadata"]["name"].as_str()
            ),
            (Some("MODIFIED"), Some("a"))
        );
        status(objects.answer(&request("POST", LEASES, lease("b"))));
        let mut b = status(objects.answer(&request("GET", &format!("{LEASES}/b"), Value::Null))).1;
        b["spec"] = json!({"holderIdentity": "x"});
        status(objects.answer(&request("PUT", &format!("{LEASES}/b"), b)));
        let kinds = |rx: &mut mpsc::UnboundedReceiver<Value>| {
            std::iter::from_fn(|| rx.try_recv().ok())
                .map(|e| {
                    format!(
                        "{} {}",
                        e["type"].as_str().unwrap_or_default(),
                        e["object"]["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds(&mut all), ["ADDED 2", "MODIFIED 3"]);
        assert_eq!(kinds(&mut named), ["ADDED 2", "MODIFIED 3"]);
        // A write of another name is not sent to the named watch.
        status(objects.answer(&request("POST", LEASES, lease("c"))));
        assert_eq!(kinds(&mut named), Vec::<String>::new());
        assert_eq!(kinds(&mut all), ["ADDED 4"]);
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
        // The collection lists, by name with a field selector.
        let mut listing = request("GET", LEASES, Value::Null);
        listing.query = "fieldSelector=metadata.name%3Dl".into();
        let (code, list) = status(objects.answer(&listing));
        assert_eq!(
            (code, list["items"][0]["spec"]["holderIdentity"].as_str()),
            (200, Some("b"))
        );
        listing.query = "fieldSelector=metadata.name%3Dother".into();
        assert_eq!(status(objects.answer(&listing)).1["items"], json!([]));
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
