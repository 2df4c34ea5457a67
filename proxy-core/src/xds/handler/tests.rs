//! Tests of response handling: apply, ACK/NACK, removals, sync and versions held.

use api::discovery::Resource;
use api::workload::{Address, Workload, address};

use super::*;

fn workload(name: &str, ip: &[u8]) -> Any {
    api::pack(&Address {
        r#type: Some(address::Type::Workload(Workload {
            uid: format!("c//Pod/ns/{name}"),
            name: name.into(),
            namespace: "ns".into(),
            addresses: vec![ip.to_vec()],
            ..Default::default()
        })),
    })
}

fn resource(name: &str, version: &str, body: Option<Any>) -> Resource {
    Resource {
        name: name.into(),
        version: version.into(),
        resource: body,
        ..Default::default()
    }
}

fn response(
    type_url: &str,
    nonce: &str,
    resources: Vec<Resource>,
    removed: &[&str],
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: type_url.into(),
        nonce: nonce.into(),
        resources,
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn acks_applies_and_tracks_versions() {
    let state = ProxyState::new();
    let mut tracker = Tracker::default();
    let (ack, outcome) = tracker.handle(
        &state,
        response(
            api::ADDRESS_TYPE_URL,
            "n1",
            vec![
                resource("c//Pod/ns/a", "v1", Some(workload("a", &[10, 0, 0, 1]))),
                resource("c//Pod/ns/b", "v1", Some(workload("b", &[10, 0, 0, 2]))),
            ],
            &[],
        ),
    );
    assert_eq!(ack.response_nonce, "n1");
    assert_eq!(ack.type_url, api::ADDRESS_TYPE_URL);
    assert!(ack.error_detail.is_none());
    assert_eq!((outcome.applied, outcome.removed), (2, 0));
    assert!(state.workload_by_uid("c//Pod/ns/a").is_some());

    let (ack, _) = tracker.handle(
        &state,
        response(api::ADDRESS_TYPE_URL, "n2", vec![], &["c//Pod/ns/a"]),
    );
    assert!(ack.error_detail.is_none());
    assert!(state.workload_by_uid("c//Pod/ns/a").is_none());
    assert_eq!(tracker.held(ResourceType::Address), 1);

    let node = Node {
        id: "ztunnel~x".into(),
        ..Default::default()
    };
    let initial = tracker.initial_requests(&node);
    assert_eq!(initial.len(), 2);
    assert_eq!(initial[0].type_url, api::ADDRESS_TYPE_URL);
    assert_eq!(
        initial[0].initial_resource_versions,
        [("c//Pod/ns/b".to_string(), "v1".to_string())].into()
    );
    assert_eq!(initial[1].type_url, api::AUTHORIZATION_TYPE_URL);
    assert!(initial[1].initial_resource_versions.is_empty());
    // A wildcard subscription: no names, as Istio's ztunnel subscribes.
    assert!(initial.iter().all(|r| r.resource_names_subscribe.is_empty()
        && r.resource_names_unsubscribe.is_empty()
        && r.node.as_ref().is_some_and(|n| n.id == "ztunnel~x")
        && r.response_nonce.is_empty()));
}

#[test]
fn nacks_invalid_resources_but_applies_the_valid_ones() {
    let state = ProxyState::new();
    let mut tracker = Tracker::default();
    // Held at v1; its v2 is invalid, so v1 stays in force and stays the version reported.
    tracker.handle(
        &state,
        response(
            api::ADDRESS_TYPE_URL,
            "n0",
            vec![resource(
                "c//Pod/ns/kept",
                "v1",
                Some(workload("kept", &[10, 0, 0, 9])),
            )],
            &[],
        ),
    );
    let policy_body = api::pack(&api::security::Authorization {
        name: "p".into(),
        namespace: "ns".into(),
        ..Default::default()
    });
    let (nack, outcome) = tracker.handle(
        &state,
        response(
            api::ADDRESS_TYPE_URL,
            "n1",
            vec![
                resource(
                    "c//Pod/ns/good",
                    "v1",
                    Some(workload("good", &[10, 0, 0, 1])),
                ),
                resource("c//Pod/ns/kept", "v2", Some(workload("kept", &[10, 0, 0]))),
                resource("wrong-type", "v1", Some(policy_body)),
                resource("no-body", "v1", None),
            ],
            &[],
        ),
    );
    assert_eq!(nack.response_nonce, "n1");
    let detail = nack.error_detail.unwrap();
    assert_eq!(detail.code, 3);
    for name in ["c//Pod/ns/kept", "wrong-type", "no-body"] {
        assert!(detail.message.contains(name), "{}", detail.message);
    }
    assert!(detail.message.starts_with("rejected 3 resource(s)"));
    assert_eq!((outcome.applied, outcome.rejected.len()), (1, 3));
    assert!(state.workload_by_uid("c//Pod/ns/good").is_some());
    assert_eq!(
        state.workload_by_uid("c//Pod/ns/kept").unwrap().addresses,
        ["10.0.0.9".parse::<std::net::IpAddr>().unwrap()]
    );
    let initial = tracker.initial_requests(&Node::default());
    assert_eq!(
        initial[0].initial_resource_versions,
        [
            ("c//Pod/ns/good".to_string(), "v1".to_string()),
            ("c//Pod/ns/kept".to_string(), "v1".to_string())
        ]
        .into()
    );
}

#[test]
fn nack_messages_are_bounded() {
    let state = ProxyState::new();
    let mut tracker = Tracker::default();
    let resources = (0..25)
        .map(|i| resource(&format!("bad-{i}"), "v", None))
        .collect();
    let (nack, _) = tracker.handle(&state, response(api::ADDRESS_TYPE_URL, "n", resources, &[]));
    let message = nack.error_detail.unwrap().message;
    assert!(
        message.contains("bad-9") && !message.contains("bad-10:"),
        "{message}"
    );
    assert!(message.ends_with("and 15 more"), "{message}");
}

#[test]
fn unknown_types_are_nacked() {
    let state = ProxyState::new();
    let (nack, _) = Tracker::default().handle(
        &state,
        response("type.googleapis.com/some.Other", "n", vec![], &[]),
    );
    assert_eq!(nack.type_url, "type.googleapis.com/some.Other");
    assert!(
        nack.error_detail
            .unwrap()
            .message
            .contains("not subscribed")
    );
}

#[test]
fn synced_after_the_first_response_of_both_types() {
    let state = ProxyState::new();
    let mut tracker = Tracker::default();
    tracker.handle(&state, response(api::ADDRESS_TYPE_URL, "1", vec![], &[]));
    tracker.handle(&state, response(api::ADDRESS_TYPE_URL, "2", vec![], &[]));
    assert!(!state.is_synced());
    tracker.handle(
        &state,
        response(api::AUTHORIZATION_TYPE_URL, "3", vec![], &[]),
    );
    assert!(state.is_synced());
}

/// A handler recording what it is given; refuses resources whose body is not a workload.
#[derive(Default)]
struct Recorder {
    applied: std::sync::Mutex<Vec<String>>,
    removed: std::sync::Mutex<Vec<String>>,
    synced: std::sync::atomic::AtomicUsize,
}

impl super::super::ResourceHandler for Recorder {
    fn apply(&self, name: &str, resource: &Any) -> Result<(), String> {
        api::unpack::<Address>(resource).map_err(|e| e.to_string())?;
        self.applied.lock().unwrap().push(name.to_owned());
        Ok(())
    }

    fn remove(&self, name: &str) {
        self.removed.lock().unwrap().push(name.to_owned());
    }

    fn synced(&self) {
        self.synced
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

const NAMED_TYPE: &str = "type.googleapis.com/mesh.waypoint.v1.Waypoint";

fn named_tracker(recorder: &std::sync::Arc<Recorder>) -> Tracker {
    Tracker::with_subscriptions(vec![NamedSubscription {
        type_url: NAMED_TYPE.into(),
        names: vec!["shop/waypoint".into()],
        handler: recorder.clone(),
    }])
}

#[test]
fn named_subscriptions_ask_by_name_and_reach_their_handler() {
    let recorder = std::sync::Arc::new(Recorder::default());
    let mut tracker = named_tracker(&recorder);
    let state = ProxyState::new();
    let initial = tracker.initial_requests(&Node::default());
    assert_eq!(initial.len(), 3);
    assert_eq!(tracker.request_count(), 3);
    assert_eq!(initial[2].type_url, NAMED_TYPE);
    assert_eq!(initial[2].resource_names_subscribe, ["shop/waypoint"]);

    // The first response may be empty: the handler learns it is in sync all the same.
    let (ack, _) = tracker.handle(&state, response(NAMED_TYPE, "1", vec![], &[]));
    assert!(ack.error_detail.is_none());
    assert_eq!(recorder.synced.load(std::sync::atomic::Ordering::SeqCst), 1);

    let (ack, outcome) = tracker.handle(
        &state,
        response(
            NAMED_TYPE,
            "2",
            vec![resource(
                "shop/waypoint",
                "v1",
                Some(workload("a", &[10, 0, 0, 1])),
            )],
            &[],
        ),
    );
    assert!(ack.error_detail.is_none());
    assert_eq!(outcome.applied, 1);
    assert_eq!(*recorder.applied.lock().unwrap(), ["shop/waypoint"]);
    // Named resources never touch the workload state, and do not mark it synced.
    assert!(state.workload_by_uid("c//Pod/ns/a").is_none());
    assert!(!state.is_synced());

    // A refused version is NACKed and not recorded: v1 stays the version reported.
    let bad = api::pack(&api::security::Authorization::default());
    let (nack, _) = tracker.handle(
        &state,
        response(
            NAMED_TYPE,
            "3",
            vec![resource("shop/waypoint", "v2", Some(bad))],
            &[],
        ),
    );
    assert_eq!(nack.response_nonce, "3");
    assert!(nack.error_detail.unwrap().message.contains("shop/waypoint"));
    let initial = tracker.initial_requests(&Node::default());
    assert_eq!(
        initial[2].initial_resource_versions,
        [("shop/waypoint".to_string(), "v1".to_string())].into()
    );

    let (ack, _) = tracker.handle(
        &state,
        response(NAMED_TYPE, "4", vec![], &["shop/waypoint"]),
    );
    assert!(ack.error_detail.is_none());
    assert_eq!(*recorder.removed.lock().unwrap(), ["shop/waypoint"]);
    assert_eq!(recorder.synced.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        tracker.initial_requests(&Node::default())[2]
            .initial_resource_versions
            .is_empty()
    );
}

/// A tracker holding workloads `a` and `b` and policy `p`, from an earlier stream.
fn holding_two_workloads_and_a_policy(state: &ProxyState) -> Tracker {
    let mut tracker = Tracker::default();
    tracker.stream_opened();
    tracker.handle(
        state,
        response(
            api::ADDRESS_TYPE_URL,
            "n1",
            vec![
                resource("c//Pod/ns/a", "v1", Some(workload("a", &[10, 0, 0, 1]))),
                resource("c//Pod/ns/b", "v1", Some(workload("b", &[10, 0, 0, 2]))),
            ],
            &[],
        ),
    );
    let policy = api::pack(&api::security::Authorization {
        name: "p".into(),
        namespace: "ns".into(),
        ..Default::default()
    });
    tracker.handle(
        state,
        response(
            api::AUTHORIZATION_TYPE_URL,
            "n2",
            vec![resource("ns/p", "v1", Some(policy))],
            &[],
        ),
    );
    tracker
}

#[tokio::test(start_paused = true)]
async fn a_wipe_right_after_reconnecting_is_held_back_until_confirmed() {
    let state = ProxyState::new();
    let mut tracker = holding_two_workloads_and_a_policy(&state);

    // Reconnected; the controller answers before it has read its configuration.
    tracker.stream_opened();
    let (ack, outcome) = tracker.handle(
        &state,
        response(
            api::ADDRESS_TYPE_URL,
            "n3",
            vec![],
            &["c//Pod/ns/a", "c//Pod/ns/b"],
        ),
    );
    assert!(
        ack.error_detail.is_none(),
        "ACKed: the controller may resend"
    );
    assert_eq!((outcome.removed, outcome.deferred), (0, 2));
    let (_, outcome) = tracker.handle(
        &state,
        response(api::AUTHORIZATION_TYPE_URL, "n4", vec![], &["ns/p"]),
    );
    assert_eq!(outcome.deferred, 1);
    assert!(state.workload_by_uid("c//Pod/ns/a").is_some());
    assert!(state.workload_by_uid("c//Pod/ns/b").is_some());
    assert_eq!(
        state.config_dump()["policies"].as_array().map(Vec::len),
        Some(1)
    );
    // What the controller believes is what a reconnection reports.
    assert_eq!(tracker.held(ResourceType::Address), 0);

    // It then sends `a` and the policy again: they stay; `b` never comes back.
    tracker.handle(
        &state,
        response(
            api::ADDRESS_TYPE_URL,
            "n5",
            vec![resource(
                "c//Pod/ns/a",
                "v1",
                Some(workload("a", &[10, 0, 0, 1])),
            )],
            &[],
        ),
    );
    let policy = api::pack(&api::security::Authorization {
        name: "p".into(),
        namespace: "ns".into(),
        ..Default::default()
    });
    tracker.handle(
        &state,
        response(
            api::AUTHORIZATION_TYPE_URL,
            "n6",
            vec![resource("ns/p", "v1", Some(policy))],
            &[],
        ),
    );
    let deadline = tracker.next_deadline().expect("b is still due for removal");
    assert_eq!(tracker.expire(&state, tokio::time::Instant::now()), 0);
    assert!(
        state.workload_by_uid("c//Pod/ns/b").is_some(),
        "not before the delay"
    );

    tokio::time::sleep_until(deadline).await;
    assert_eq!(tracker.expire(&state, tokio::time::Instant::now()), 1);
    assert!(state.workload_by_uid("c//Pod/ns/b").is_none());
    assert!(state.workload_by_uid("c//Pod/ns/a").is_some());
    assert_eq!(
        state.config_dump()["policies"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(tracker.next_deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn removals_that_leave_something_or_come_later_apply_at_once() {
    let state = ProxyState::new();
    let mut tracker = holding_two_workloads_and_a_policy(&state);

    // First response of a new stream removing one of two: an ordinary change.
    tracker.stream_opened();
    let (_, outcome) = tracker.handle(
        &state,
        response(api::ADDRESS_TYPE_URL, "n3", vec![], &["c//Pod/ns/a"]),
    );
    assert_eq!((outcome.removed, outcome.deferred), (1, 0));
    assert!(state.workload_by_uid("c//Pod/ns/a").is_none());

    // Later on the same stream, removing the last one is trusted too.
    let (_, outcome) = tracker.handle(
        &state,
        response(api::ADDRESS_TYPE_URL, "n4", vec![], &["c//Pod/ns/b"]),
    );
    assert_eq!((outcome.removed, outcome.deferred), (1, 0));
    assert!(state.workload_by_uid("c//Pod/ns/b").is_none());
    assert_eq!(tracker.next_deadline(), None);
}
