//! Packing messages into `google.protobuf.Any`, as xDS carries resources.

use prost::Name;
use prost_types::Any;

/// Type URL of `istio.workload.Address` resources (workloads and services).
pub const ADDRESS_TYPE_URL: &str = "type.googleapis.com/istio.workload.Address";

/// Type URL of `istio.security.Authorization` resources.
pub const AUTHORIZATION_TYPE_URL: &str = "type.googleapis.com/istio.security.Authorization";

/// Type URL of `mesh.waypoint.v1.Waypoint` resources (one per waypoint).
pub const WAYPOINT_TYPE_URL: &str = "type.googleapis.com/mesh.waypoint.v1.Waypoint";

/// Type URL of `mesh.ca.v1.TrustBundle` resources.
pub const TRUST_BUNDLE_TYPE_URL: &str = "type.googleapis.com/mesh.ca.v1.TrustBundle";

/// The name of the one trust bundle resource.
pub const TRUST_BUNDLE_NAME: &str = "default";

/// Type URL of `mesh.telemetry.v1.AccessLogging` resources.
pub const ACCESS_LOGGING_TYPE_URL: &str = "type.googleapis.com/mesh.telemetry.v1.AccessLogging";

/// The name of the one access logging resource.
pub const ACCESS_LOGGING_NAME: &str = "default";

/// Packs `message` into an `Any` tagged `type.googleapis.com/<full name>`.
pub fn pack<M: Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// Decodes an `Any` as `M`, failing if its type URL names another type.
pub fn unpack<M: Name + Default>(any: &Any) -> Result<M, prost::DecodeError> {
    any.to_msg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{security, telemetry, trust, waypoint, workload};

    #[test]
    fn type_urls_match_generated_names() {
        assert_eq!(workload::Address::type_url(), ADDRESS_TYPE_URL);
        assert_eq!(security::Authorization::type_url(), AUTHORIZATION_TYPE_URL);
        assert_eq!(waypoint::Waypoint::type_url(), WAYPOINT_TYPE_URL);
        assert_eq!(trust::TrustBundle::type_url(), TRUST_BUNDLE_TYPE_URL);
        assert_eq!(
            telemetry::AccessLogging::type_url(),
            ACCESS_LOGGING_TYPE_URL
        );
    }

    #[test]
    fn pack_then_unpack() {
        let policy = security::Authorization {
            name: "allow-all".into(),
            ..Default::default()
        };
        let any = pack(&policy);
        assert_eq!(any.type_url, AUTHORIZATION_TYPE_URL);
        assert_eq!(unpack::<security::Authorization>(&any).unwrap(), policy);
        assert!(unpack::<workload::Address>(&any).is_err());
    }
}
