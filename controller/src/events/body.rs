//! The `events.k8s.io/v1` objects the writer sends: a new Event about one problem of one
//! object, and the series update of one whose problem persists.

use kube::api::DynamicObject;
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use super::memory::Occurrence;
use crate::source::kube::WatchedKind;

/// `action` of every Event: what the controller was doing when it found the problem.
pub const ACTION: &str = "Translate";
/// `type` of every Event: Kubernetes has only Normal and Warning, and every problem is worth
/// a look.
pub const TYPE: &str = "Warning";
/// Longest `reportingInstance` the API server accepts.
pub const MAX_INSTANCE: usize = 128;

/// Who writes the Events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reporter {
    /// `reportingController`.
    pub controller: String,
    /// `reportingInstance`: the controller's pod.
    pub instance: String,
}

/// Where the API serves Events.
pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
        "events",
    )
}

/// The namespace of Events about `namespace`'s objects: their own, `default` for
/// cluster-scoped objects (the API server requires one of the two).
pub fn event_namespace(namespace: &str) -> &str {
    if namespace.is_empty() {
        "default"
    } else {
        namespace
    }
}

/// The Event `namespace/name` telling `occurrence` about an object of `kind`, at `now`
/// (a MicroTime, see [`micro_time`]).
pub fn new_event(
    occurrence: &Occurrence,
    kind: &WatchedKind,
    name: &str,
    reporter: &Reporter,
    now: &str,
) -> DynamicObject {
    let object = &occurrence.object;
    let mut regarding = json!({
        "apiVersion": kind.api_version(),
        "kind": kind.api_kind(),
        "name": object.name,
    });
    if !object.namespace.is_empty() {
        regarding["namespace"] = json!(object.namespace);
    }
    if !occurrence.uid.is_empty() {
        regarding["uid"] = json!(occurrence.uid);
    }
    DynamicObject::new(name, &resource())
        .within(event_namespace(&object.namespace))
        .data(json!({
            "eventTime": now,
            "reportingController": reporter.controller,
            "reportingInstance": reporter.instance,
            "action": ACTION,
            "reason": occurrence.reason.as_str(),
            "regarding": regarding,
            "note": occurrence.note,
            "type": TYPE,
        }))
}

/// The merge patch saying the problem was seen `count` times, last at `now`.
pub fn series_patch(count: u32, now: &str) -> Value {
    json!({"series": {"count": count, "lastObservedTime": now}})
}

/// `time` as the API's MicroTime: RFC 3339 in UTC with six fractional digits.
pub fn micro_time(time: k8s_openapi::jiff::Timestamp) -> String {
    format!(
        "{}.{:06}Z",
        time.strftime("%Y-%m-%dT%H:%M:%S"),
        time.subsec_microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::reason::Reason;
    use crate::model::ObjectKey;

    fn reporter() -> Reporter {
        Reporter {
            controller: "istio.io/mesh-controller".into(),
            instance: "controller-7d9f-x2".into(),
        }
    }

    #[test]
    fn an_event_regards_its_object() {
        let occurrence = Occurrence {
            object: ObjectKey::new("AuthorizationPolicy", "shop", "deny"),
            uid: "u-1".into(),
            reason: Reason::FailedClosed,
            note: "spec.action: unknown action".into(),
        };
        let kind = WatchedKind::by_kind("AuthorizationPolicy").unwrap();
        let event = new_event(&occurrence, kind, "deny.1f", &reporter(), "T");
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": {"name": "deny.1f", "namespace": "shop"},
                "eventTime": "T",
                "reportingController": "istio.io/mesh-controller",
                "reportingInstance": "controller-7d9f-x2",
                "action": "Translate",
                "reason": "FailedClosed",
                "regarding": {
                    "apiVersion": "security.istio.io/v1",
                    "kind": "AuthorizationPolicy",
                    "namespace": "shop",
                    "name": "deny",
                    "uid": "u-1",
                },
                "note": "spec.action: unknown action",
                "type": "Warning",
            })
        );
    }

    #[test]
    fn cluster_scoped_objects_get_events_in_default() {
        let occurrence = Occurrence {
            object: ObjectKey::new("Namespace", "", "shop"),
            uid: String::new(),
            reason: Reason::ConfigurationWarning,
            note: "n".into(),
        };
        let kind = WatchedKind::by_kind("Namespace").unwrap();
        let event =
            serde_json::to_value(new_event(&occurrence, kind, "e", &reporter(), "T")).unwrap();
        assert_eq!(event["metadata"]["namespace"], "default");
        assert_eq!(
            event["regarding"],
            json!({"apiVersion": "v1", "kind": "Namespace", "name": "shop"})
        );
    }

    #[test]
    fn times_have_microseconds() {
        let time: k8s_openapi::jiff::Timestamp = "2026-01-02T03:04:05.123456789Z".parse().unwrap();
        assert_eq!(micro_time(time), "2026-01-02T03:04:05.123456Z");
        let whole: k8s_openapi::jiff::Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        assert_eq!(micro_time(whole), "2026-01-02T03:04:05.000000Z");
        assert_eq!(
            series_patch(3, "T"),
            json!({"series": {"count": 3, "lastObservedTime": "T"}})
        );
    }
}
