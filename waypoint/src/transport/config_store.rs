//! The waypoint's configuration from the controller: each `mesh.waypoint.v1.Waypoint` is
//! compiled into an [`Engine`] and swapped in whole; a config that does not compile is
//! refused (NACK) and the previous engine stays in force.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use api::prost_types::Any;
use api::waypoint::Waypoint;
use proxy_core::readiness::{BlockReady, Readiness};
use proxy_core::xds::{NamedSubscription, ResourceHandler};

use crate::engine::{ConfigError, Engine, Runtime};

/// Readiness condition held until the first config is in force.
const WAITING: &str = "waypoint config: first response not yet applied";

/// What is known about the config in force, for `/config_dump`.
#[derive(Clone, Debug, Default)]
struct Current {
    /// The config last accepted (`None`: the empty config, nothing received yet or removed).
    config: Option<Waypoint>,
    /// How many configs were accepted.
    accepted: u64,
    /// The reason the last refused config was refused, if the last one was refused.
    last_error: Option<String>,
}

/// Holds the compiled config in force. Cheap to read on every request.
pub struct ConfigStore {
    /// `<namespace>/<gateway name>`: the resource name subscribed to.
    name: String,
    namespace: String,
    gateway: String,
    runtime: Arc<Runtime>,
    engine: RwLock<Arc<Engine>>,
    current: Mutex<Current>,
    /// Not ready until a config arrived (or the controller said there is none).
    waiting: Mutex<Option<BlockReady>>,
}

impl ConfigStore {
    /// A store for the waypoint `namespace`/`gateway`, serving the empty config until the
    /// controller's arrives; `readiness` stays blocked until then.
    pub fn new(
        namespace: &str,
        gateway: &str,
        runtime: Arc<Runtime>,
        readiness: &Readiness,
    ) -> Result<Arc<Self>, ConfigError> {
        let engine = Engine::compile(&empty(namespace, gateway), runtime.clone())?;
        Ok(Arc::new(Self {
            name: format!("{namespace}/{gateway}"),
            namespace: namespace.to_owned(),
            gateway: gateway.to_owned(),
            runtime,
            engine: RwLock::new(Arc::new(engine)),
            current: Mutex::new(Current::default()),
            waiting: Mutex::new(Some(readiness.block(WAITING))),
        }))
    }

    /// The engine in force (requests take one and keep it for their whole life).
    pub fn engine(&self) -> Arc<Engine> {
        self.engine
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The state shared by every engine (metrics, outlier detection, budgets).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The resource name this store subscribes to: `<namespace>/<gateway name>`.
    pub fn resource_name(&self) -> &str {
        &self.name
    }

    /// The xDS subscription feeding this store.
    pub fn subscription(self: &Arc<Self>) -> NamedSubscription {
        NamedSubscription {
            type_url: api::WAYPOINT_TYPE_URL.to_owned(),
            names: vec![self.name.clone()],
            handler: self.clone(),
        }
    }

    /// Compiles `config` and puts it in force, or says why it cannot be.
    pub fn install(&self, config: Waypoint) -> Result<(), ConfigError> {
        let engine = match Engine::compile(&config, self.runtime.clone()) {
            Ok(engine) => engine,
            Err(e) => {
                self.current().last_error = Some(e.to_string());
                return Err(e);
            }
        };
        *self.engine.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(engine);
        {
            let mut current = self.current();
            current.config = Some(config);
            current.accepted += 1;
            current.last_error = None;
        }
        self.ready();
        Ok(())
    }

    /// What is in force, as JSON for `/config_dump` (the config holds no secrets).
    pub fn dump(&self) -> serde_json::Value {
        let current = self.current().clone();
        let config = current.config.as_ref();
        serde_json::json!({
            "resource": self.name,
            "accepted": current.accepted,
            "last_error": current.last_error,
            "services": config.map(|c| c.services.iter().map(|s| serde_json::json!({
                "hostname": s.hostname,
                "addresses": s.addresses,
                "ports": s.ports.iter().map(|p| serde_json::json!({
                    "name": p.name,
                    "port": p.port,
                    "target_port": p.target_port,
                    "protocol": p.protocol().as_str_name(),
                })).collect::<Vec<_>>(),
                "routes": s.routes.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
                "rate_limited": s.rate_limit.is_some(),
            })).collect::<Vec<_>>()).unwrap_or_default(),
            "destinations": config
                .map(|c| c.destinations.iter().map(|d| d.hostname.as_str()).collect::<Vec<_>>())
                .unwrap_or_default(),
            "authorization_policies": config
                .map(|c| c.authorization_policies.iter()
                    .map(|p| format!("{}/{}", p.namespace, p.name))
                    .collect::<Vec<_>>())
                .unwrap_or_default(),
            // The whole config, readable: the protobuf types carry no serde support.
            "detail": config.map(|c| format!("{c:?}")),
        })
    }

    fn current(&self) -> MutexGuard<'_, Current> {
        // Plain data replaced whole: a panic elsewhere cannot leave it half-written.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Clears the readiness condition (once).
    fn ready(&self) {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

impl ResourceHandler for ConfigStore {
    fn apply(&self, name: &str, resource: &Any) -> Result<(), String> {
        if name != self.name {
            return Err(format!("this waypoint is {}, not {name}", self.name));
        }
        let config: Waypoint =
            api::unpack(resource).map_err(|e| format!("decoding the waypoint config: {e}"))?;
        if config.namespace != self.namespace || config.name != self.gateway {
            return Err(format!(
                "the config is for {}/{}, this waypoint is {}",
                config.namespace, config.name, self.name
            ));
        }
        let services = config.services.len();
        match self.install(config) {
            Ok(()) => {
                tracing::info!(waypoint = %self.name, services, "waypoint config applied");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(waypoint = %self.name, error = %e, "waypoint config refused; the previous one stays in force");
                Err(e.to_string())
            }
        }
    }

    fn remove(&self, name: &str) {
        if name != self.name {
            return;
        }
        match Engine::compile(&empty(&self.namespace, &self.gateway), self.runtime.clone()) {
            Ok(engine) => {
                *self.engine.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(engine);
                self.current().config = None;
                tracing::warn!(waypoint = %self.name, "waypoint config removed by the controller");
            }
            Err(e) => {
                tracing::error!(waypoint = %self.name, error = %e, "the empty config does not compile; keeping the last one");
            }
        }
    }

    fn synced(&self) {
        let current = self.current().clone();
        if current.config.is_none() && current.last_error.is_none() {
            // The controller answered and holds nothing for us: that is the config.
            tracing::warn!(waypoint = %self.name, "the controller has no config for this waypoint; serving the empty config");
            self.ready();
        }
    }
}

/// The config of a waypoint that serves nothing yet.
fn empty(namespace: &str, gateway: &str) -> Waypoint {
    Waypoint {
        name: gateway.to_owned(),
        namespace: namespace.to_owned(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use api::waypoint as wp;

    use super::*;

    fn store() -> (Arc<ConfigStore>, Readiness) {
        let readiness = Readiness::new();
        let store = ConfigStore::new("shop", "waypoint", Runtime::new(), &readiness).unwrap();
        (store, readiness)
    }

    fn config(path_regex: &str) -> Waypoint {
        Waypoint {
            name: "waypoint".into(),
            namespace: "shop".into(),
            services: vec![wp::Service {
                hostname: "orders.shop.svc.cluster.local".into(),
                namespace: "shop".into(),
                name: "orders".into(),
                addresses: vec!["10.96.0.10".into()],
                routes: vec![wp::Route {
                    name: "r".into(),
                    matches: vec![wp::RouteMatch {
                        path: Some(wp::PathMatch {
                            kind: Some(wp::path_match::Kind::Regex(path_regex.into())),
                            ignore_case: false,
                        }),
                        ..Default::default()
                    }],
                    action: Some(wp::route::Action::DirectResponse(wp::DirectResponse {
                        status: 200,
                        body: Vec::new(),
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn accepted_configs_replace_the_engine_and_refused_ones_do_not() {
        let (store, readiness) = store();
        assert_eq!(readiness.pending(), [WAITING]);
        let before = store.engine();

        let good = api::pack(&config("/items/[0-9]+"));
        let refusal = store.apply("shop/other", &good).unwrap_err();
        assert!(refusal.contains("shop/waypoint"), "{refusal}");
        assert!(Arc::ptr_eq(&before, &store.engine()));

        store.apply("shop/waypoint", &good).unwrap();
        assert!(readiness.pending().is_empty());
        let installed = store.engine();
        assert!(!Arc::ptr_eq(&before, &installed));
        assert_eq!(store.dump()["accepted"], 1);
        assert_eq!(store.dump()["services"][0]["routes"][0], "r");

        let bad = api::pack(&config("([unclosed"));
        assert!(store.apply("shop/waypoint", &bad).is_err());
        assert!(
            Arc::ptr_eq(&installed, &store.engine()),
            "the previous engine stays"
        );
        assert_eq!(store.dump()["accepted"], 1);
        assert!(store.dump()["last_error"].is_string());

        let mut other = config("/x");
        other.name = "elsewhere".into();
        assert!(store.apply("shop/waypoint", &api::pack(&other)).is_err());

        store.remove("shop/waypoint");
        assert!(store.dump()["services"].as_array().unwrap().is_empty());
        assert!(!Arc::ptr_eq(&installed, &store.engine()));
    }

    #[test]
    fn an_empty_first_response_makes_the_waypoint_ready() {
        let (store, readiness) = store();
        store.synced();
        assert!(readiness.pending().is_empty());
    }

    #[test]
    fn a_refused_first_config_keeps_the_waypoint_unready() {
        let (store, readiness) = store();
        assert!(
            store
                .apply("shop/waypoint", &api::pack(&config("([")))
                .is_err()
        );
        store.synced();
        assert_eq!(readiness.pending(), [WAITING]);
        assert_eq!(store.subscription().names, ["shop/waypoint"]);
        assert_eq!(store.subscription().type_url, api::WAYPOINT_TYPE_URL);
    }
}
