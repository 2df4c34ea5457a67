//! The delta ADS server driven by real tonic clients over loopback TLS.

mod xds_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use api::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest};
use api::prost_types::Any;
use controller::ca::CertificateAuthority;
use controller::translate::{Published, Resource, Snapshot};
use test_support::ads::AdsStream;
use test_support::control_plane::Controller;
use test_support::grpc::with_token;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use xds_common::*;

const ADDR: &str = api::ADDRESS_TYPE_URL;
const AUTHZ: &str = api::AUTHORIZATION_TYPE_URL;
const WAYPOINT: &str = api::WAYPOINT_TYPE_URL;

fn snapshot(entries: &[(&str, &str, &str)]) -> Published {
    let mut resources: BTreeMap<String, BTreeMap<String, Resource>> = BTreeMap::new();
    for (type_url, name, version) in entries {
        resources.entry(type_url.to_string()).or_default().insert(
            name.to_string(),
            Resource {
                version: version.to_string(),
                body: Any {
                    type_url: type_url.to_string(),
                    value: format!("{name}@{version}").into_bytes(),
                },
            },
        );
    }
    Some(Arc::new(Snapshot::new(resources)))
}

fn ca() -> CertificateAuthority {
    CertificateAuthority::open(None, TD).unwrap()
}

/// A node proxy's stream, with the waits these tests make.
struct Client(AdsStream);

impl Client {
    async fn connect(h: &Controller, token: &str) -> Result<Client, tonic::Status> {
        AdsStream::open(h.channel(), token).await.map(Client)
    }

    async fn send(&self, request: DeltaDiscoveryRequest) {
        self.0.send(request).await;
    }

    async fn subscribe(&self, type_url: &str, initial: &[(&str, &str)]) {
        self.0
            .subscribe("ztunnel~10.0.0.1~test", type_url, initial)
            .await;
    }

    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(10), self.0.message())
            .await
            .expect("no response in time")
            .expect("stream error")
            .expect("stream ended")
    }

    /// Nothing further arrives for a while.
    async fn quiet(&mut self) {
        let got = tokio::time::timeout(Duration::from_millis(300), self.0.message()).await;
        assert!(got.is_err(), "unexpected response: {got:?}");
    }

    async fn ack(&self, response: &DeltaDiscoveryResponse) {
        self.0.ack(response).await;
    }
}

fn names(response: &DeltaDiscoveryResponse) -> Vec<(String, String)> {
    let mut v: Vec<_> = response
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    v.sort();
    v
}

fn pairs(entries: &[(&str, &str)]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn subscribe_update_delete() {
    let h = start(
        snapshot(&[(ADDR, "a", "1"), (ADDR, "b", "1"), (AUTHZ, "p", "1")]),
        ca(),
    )
    .await;
    let mut c = Client::connect(&h, "zt-node1").await.unwrap();
    c.subscribe(ADDR, &[]).await;
    let first = c.recv().await;
    assert_eq!(first.type_url, ADDR);
    assert_eq!(names(&first), pairs(&[("a", "1"), ("b", "1")]));
    assert!(first.resources.iter().all(|r| r.resource.is_some()));
    assert!(!first.nonce.is_empty());
    c.ack(&first).await;
    c.quiet().await;

    h.publish(snapshot(&[
        (ADDR, "a", "1"),
        (ADDR, "b", "2"),
        (AUTHZ, "p", "2"),
    ]));
    let update = c.recv().await;
    assert_eq!(update.type_url, ADDR, "only the subscribed type is pushed");
    assert_eq!(names(&update), pairs(&[("b", "2")]));
    assert!(update.removed_resources.is_empty());
    assert_ne!(update.nonce, first.nonce);
    assert_ne!(update.system_version_info, first.system_version_info);
    assert_eq!(update.resources[0].resource.as_ref().unwrap().value, b"b@2");
    c.ack(&update).await;

    h.publish(snapshot(&[(ADDR, "b", "2")]));
    let removal = c.recv().await;
    assert!(removal.resources.is_empty());
    assert_eq!(removal.removed_resources, ["a"]);
    c.ack(&removal).await;
    c.quiet().await;

    // A second type subscribed later gets its current state.
    c.subscribe(AUTHZ, &[]).await;
    let authz = c.recv().await;
    assert_eq!(authz.type_url, AUTHZ);
    assert!(authz.resources.is_empty() && authz.removed_resources.is_empty());
}

#[tokio::test]
async fn empty_snapshot_still_answers() {
    let h = start(Some(Arc::new(Snapshot::default())), ca()).await;
    let mut c = Client::connect(&h, "zt-node1").await.unwrap();
    c.subscribe(ADDR, &[]).await;
    let first = c.recv().await;
    assert!(first.resources.is_empty());
}

#[tokio::test]
async fn nack_is_counted_and_stream_keeps_working() {
    let h = start(snapshot(&[(ADDR, "a", "1")]), ca()).await;
    let mut c = Client::connect(&h, "zt-node1").await.unwrap();
    c.subscribe(ADDR, &[]).await;
    let first = c.recv().await;
    let before = counter("controller_xds_nacks_total");
    c.send(DeltaDiscoveryRequest {
        type_url: ADDR.into(),
        response_nonce: first.nonce.clone(),
        error_detail: Some(api::rpc::Status {
            code: Code::InvalidArgument as i32,
            message: "cannot apply a@1".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await;
    // The rejected version is not resent.
    c.quiet().await;
    assert!(counter("controller_xds_nacks_total") >= before + 1.0);

    h.publish(snapshot(&[(ADDR, "a", "2")]));
    let update = c.recv().await;
    assert_eq!(names(&update), pairs(&[("a", "2")]));
}

#[tokio::test]
async fn a_client_connecting_before_the_first_snapshot_waits_for_it_and_keeps_what_it_has() {
    // A controller that has not translated its configuration yet, and a node proxy
    // reconnecting with what it holds.
    let h = start(None, ca()).await;
    let mut c = Client::connect(&h, "zt-node1").await.unwrap();
    c.subscribe(ADDR, &[("a", "1"), ("b", "1")]).await;
    // Nothing is answered from a configuration not read yet: compared with nothing, what the
    // client holds would all be removed.
    c.quiet().await;

    h.publish(snapshot(&[
        (ADDR, "a", "1"),
        (ADDR, "b", "2"),
        (ADDR, "c", "1"),
    ]));
    let first = c.recv().await;
    assert_eq!(names(&first), pairs(&[("b", "2"), ("c", "1")]));
    assert!(first.removed_resources.is_empty(), "{first:?}");
}

#[tokio::test]
async fn reconnect_sends_only_differences() {
    let h = start(
        snapshot(&[(ADDR, "a", "1"), (ADDR, "b", "2"), (ADDR, "c", "1")]),
        ca(),
    )
    .await;
    let mut c = Client::connect(&h, "zt-node1").await.unwrap();
    c.subscribe(ADDR, &[("a", "1"), ("b", "1"), ("gone", "1")])
        .await;
    let first = c.recv().await;
    assert_eq!(names(&first), pairs(&[("b", "2"), ("c", "1")]));
    assert_eq!(first.removed_resources, ["gone"]);
}

#[tokio::test]
async fn two_clients_see_the_same_state() {
    let h = start(snapshot(&[(ADDR, "a", "1")]), ca()).await;
    let mut c1 = Client::connect(&h, "zt-node1").await.unwrap();
    let mut c2 = Client::connect(&h, "zt-node2").await.unwrap();
    c1.subscribe(ADDR, &[]).await;
    c2.subscribe(ADDR, &[]).await;
    let (r1, r2) = (c1.recv().await, c2.recv().await);
    assert_eq!(names(&r1), names(&r2));
    assert_eq!(r1.system_version_info, r2.system_version_info);
    h.publish(snapshot(&[(ADDR, "a", "2"), (ADDR, "b", "1")]));
    let (u1, u2) = (c1.recv().await, c2.recv().await);
    assert_eq!(names(&u1), pairs(&[("a", "2"), ("b", "1")]));
    assert_eq!(names(&u1), names(&u2));
    assert_eq!(u1.system_version_info, u2.system_version_info);
}

#[tokio::test]
async fn explicit_subscriptions() {
    let h = start(snapshot(&[(ADDR, "a", "1"), (ADDR, "b", "1")]), ca()).await;
    let mut c = Client::connect(&h, "zt-node1").await.unwrap();
    c.send(DeltaDiscoveryRequest {
        type_url: ADDR.into(),
        resource_names_subscribe: vec!["a".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(names(&c.recv().await), pairs(&[("a", "1")]));
    c.send(DeltaDiscoveryRequest {
        type_url: ADDR.into(),
        resource_names_subscribe: vec!["b".into()],
        resource_names_unsubscribe: vec!["a".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(names(&c.recv().await), pairs(&[("b", "1")]));
    // "a" is no longer subscribed: its change is not pushed.
    h.publish(snapshot(&[(ADDR, "a", "2"), (ADDR, "b", "1")]));
    c.quiet().await;
}

#[tokio::test]
async fn waypoint_subscribes_to_its_own_configuration() {
    let h = start(
        snapshot(&[
            (ADDR, "a", "1"),
            (WAYPOINT, "shop/waypoint", "1"),
            (WAYPOINT, "other/waypoint", "1"),
        ]),
        ca(),
    )
    .await;
    let mut c = Client::connect(&h, "zt-node1").await.unwrap();
    // A named (non-wildcard) subscription from the first request on.
    c.send(DeltaDiscoveryRequest {
        node: Some(api::core::Node {
            id: "waypoint~10.244.1.2~waypoint-7d9f-abcde.shop~shop.svc.cluster.local".into(),
            ..Default::default()
        }),
        type_url: WAYPOINT.into(),
        resource_names_subscribe: vec!["shop/waypoint".into()],
        ..Default::default()
    })
    .await;
    let first = c.recv().await;
    assert_eq!(first.type_url, WAYPOINT);
    assert_eq!(names(&first), pairs(&[("shop/waypoint", "1")]));
    let body = first.resources[0].resource.as_ref().unwrap();
    assert_eq!(body.type_url, WAYPOINT);
    assert_eq!(body.value, b"shop/waypoint@1");
    c.ack(&first).await;
    c.quiet().await;

    // Another waypoint's change is not pushed; its own is.
    h.publish(snapshot(&[
        (ADDR, "a", "2"),
        (WAYPOINT, "shop/waypoint", "1"),
        (WAYPOINT, "other/waypoint", "2"),
    ]));
    c.quiet().await;
    h.publish(snapshot(&[
        (WAYPOINT, "shop/waypoint", "2"),
        (WAYPOINT, "other/waypoint", "2"),
    ]));
    let update = c.recv().await;
    assert_eq!(names(&update), pairs(&[("shop/waypoint", "2")]));
    c.ack(&update).await;

    // The waypoint (its Gateway) is deleted: the removal is pushed.
    h.publish(snapshot(&[(WAYPOINT, "other/waypoint", "2")]));
    let removal = c.recv().await;
    assert_eq!(removal.removed_resources, ["shop/waypoint"]);
}

#[tokio::test]
async fn missing_or_bad_token_is_unauthenticated() {
    let h = start(Some(Arc::new(Snapshot::default())), ca()).await;
    let err = Client::connect(&h, "not-a-token").await.err().unwrap();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut grpc = AggregatedDiscoveryServiceClient::new(h.channel());
    let (_keep, requests) = mpsc::channel::<DeltaDiscoveryRequest>(1);
    let err = grpc
        .delta_aggregated_resources(ReceiverStream::new(requests))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn state_of_the_world_is_unimplemented() {
    let h = start(Some(Arc::new(Snapshot::default())), ca()).await;
    let mut grpc = AggregatedDiscoveryServiceClient::new(h.channel());
    let (_keep, requests) = mpsc::channel::<DiscoveryRequest>(1);
    let err = grpc
        .stream_aggregated_resources(with_token(ReceiverStream::new(requests), "zt-node1"))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::Unimplemented);
}
