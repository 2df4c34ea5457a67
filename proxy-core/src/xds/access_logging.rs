//! The subscription to the controller's access log switches
//! (`mesh.telemetry.v1.AccessLogging`, one resource named "default"), applied to a proxy's
//! [`AccessLogSwitch`].

use std::sync::Arc;

use api::telemetry::AccessLogging;

use super::named::{NamedSubscription, ResourceHandler};
use crate::telemetry::AccessLogSwitch;

/// The named subscription that keeps `switch` as the controller serves it.
pub fn access_logging_subscription(switch: Arc<AccessLogSwitch>) -> NamedSubscription {
    NamedSubscription {
        type_url: api::ACCESS_LOGGING_TYPE_URL.to_owned(),
        names: vec![api::ACCESS_LOGGING_NAME.to_owned()],
        handler: Arc::new(Handler(switch)),
    }
}

struct Handler(Arc<AccessLogSwitch>);

impl ResourceHandler for Handler {
    fn apply(&self, _name: &str, resource: &api::prost_types::Any) -> Result<(), String> {
        let served: AccessLogging = api::unpack(resource).map_err(|e| format!("decoding: {e}"))?;
        self.0.set(served);
        Ok(())
    }

    fn remove(&self, _name: &str) {
        self.0.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_switches_apply_a_wrong_type_is_refused_and_removal_resets() {
        let switch = Arc::new(AccessLogSwitch::default());
        let sub = access_logging_subscription(switch.clone());
        assert_eq!(sub.type_url, api::ACCESS_LOGGING_TYPE_URL);
        assert_eq!(sub.names, [api::ACCESS_LOGGING_NAME]);
        let quiet = AccessLogging {
            namespaces: [("quiet".to_string(), true)].into(),
            ..AccessLogging::default()
        };
        sub.handler.apply("default", &api::pack(&quiet)).unwrap();
        assert!(!switch.logs("quiet", "web"));
        let wrong = api::pack(&api::trust::TrustBundle::default());
        assert!(sub.handler.apply("default", &wrong).is_err());
        assert!(
            !switch.logs("quiet", "web"),
            "a refused resource changes nothing"
        );
        sub.handler.remove("default");
        assert!(switch.logs("quiet", "web"));
    }
}
