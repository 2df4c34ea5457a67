//! Config builders and request helpers for the engine tests: a `reviews` service in `shop`
//! with subsets v1 (two pods) and v2 (one pod), and a `ratings` service.

use std::sync::Arc;

use api::prost_types::Duration as PbDuration;
use api::waypoint::{self as pb, route, string_match};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;

use super::fake::Fake;
use crate::engine::{Body, Caller, Engine, Runtime, Target, UpstreamClient, body};

pub const VIP: &str = "10.96.0.10";
pub const PORT: u16 = 9080;
pub const HOST: &str = "reviews.shop.svc.cluster.local";
pub const RATINGS: &str = "ratings.shop.svc.cluster.local";
pub const RATINGS_VIP: &str = "10.96.0.11";
pub const V1A: &str = "Kubernetes//Pod/shop/reviews-v1-a";
pub const V1B: &str = "Kubernetes//Pod/shop/reviews-v1-b";
pub const V2: &str = "Kubernetes//Pod/shop/reviews-v2-a";
pub const V1A_ADDR: &str = "10.0.1.1:9080";
pub const V1B_ADDR: &str = "10.0.1.2:9080";
pub const V2_ADDR: &str = "10.0.2.1:9080";
pub const RATINGS_UID: &str = "Kubernetes//Pod/shop/ratings-a";

/// A protobuf duration.
pub fn secs(s: i64) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: s,
        nanos: 0,
    })
}

/// An exact string match.
pub fn exact(s: &str) -> pb::StringMatch {
    pb::StringMatch {
        kind: Some(string_match::Kind::Exact(s.into())),
        ignore_case: false,
    }
}

/// A destination of `reviews` (optionally a subset).
pub fn dest(host: &str, subset: &str) -> pb::Destination {
    pb::Destination {
        hostname: host.into(),
        namespace: "shop".into(),
        port: 0,
        subset: subset.into(),
        subset_labels: Default::default(),
    }
}

/// A forwarding action to weighted subsets of `reviews`.
pub fn forward(subsets: &[(&str, u32)]) -> pb::Forward {
    pb::Forward {
        destinations: subsets
            .iter()
            .map(|(s, w)| pb::WeightedDestination {
                destination: Some(dest(HOST, s)),
                weight: *w,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// A route.
pub fn route(name: &str, matches: Vec<pb::RouteMatch>, f: pb::Forward) -> pb::Route {
    pb::Route {
        name: name.into(),
        matches,
        action: Some(route::Action::Forward(f)),
        ..Default::default()
    }
}

/// A match on a header value.
pub fn header_is(name: &str, value: &str) -> pb::RouteMatch {
    pb::RouteMatch {
        headers: vec![pb::HeaderMatch {
            name: name.into(),
            value: Some(exact(value)),
            invert: false,
        }],
        ..Default::default()
    }
}

/// The `reviews` service with `routes`.
pub fn reviews(routes: Vec<pb::Route>) -> pb::Service {
    pb::Service {
        hostname: HOST.into(),
        namespace: "shop".into(),
        name: "reviews".into(),
        addresses: vec![VIP.into()],
        ports: vec![pb::Port {
            name: "http".into(),
            port: u32::from(PORT),
            target_port: u32::from(PORT),
            protocol: pb::Protocol::Http as i32,
        }],
        routes,
        rate_limit: None,
        telemetry: None,
        tcp_routes: Vec::new(),
    }
}

/// The upstream policy of `reviews` with subsets v1 and v2.
pub fn reviews_policy(traffic: Option<pb::TrafficPolicy>) -> pb::DestinationPolicy {
    pb::DestinationPolicy {
        hostname: HOST.into(),
        namespace: "shop".into(),
        traffic_policy: traffic,
        subsets: vec![
            pb::Subset {
                name: "v1".into(),
                workload_uids: vec![V1A.into(), V1B.into()],
                ..Default::default()
            },
            pb::Subset {
                name: "v2".into(),
                workload_uids: vec![V2.into()],
                ..Default::default()
            },
        ],
        retry_budget: None,
        sources: vec![],
    }
}

/// A waypoint config.
pub fn waypoint(
    services: Vec<pb::Service>,
    destinations: Vec<pb::DestinationPolicy>,
    policies: Vec<pb::AuthorizationPolicy>,
) -> pb::Waypoint {
    pb::Waypoint {
        name: "waypoint".into(),
        namespace: "shop".into(),
        services,
        destinations,
        authorization_policies: policies,
        ..Default::default()
    }
}

/// The fake transport with every endpoint answering 200.
pub fn fake() -> Arc<Fake> {
    Arc::new(
        Fake::new()
            .service(VIP, "shop", HOST)
            .service(RATINGS_VIP, "shop", RATINGS)
            .endpoint(HOST, V1A, V1A_ADDR)
            .endpoint(HOST, V1B, V1B_ADDR)
            .endpoint(HOST, V2, V2_ADDR)
            .endpoint(RATINGS, RATINGS_UID, "10.0.3.1:9080"),
    )
}

/// An engine whose one route sends reviews to v1 and copies every request to v2.
pub fn mirrored_to_v2() -> Arc<Engine> {
    let mut f = forward(&[("v1", 1)]);
    f.mirrors = vec![pb::Mirror {
        destination: Some(dest(HOST, "v2")),
        percentage: 100.0,
    }];
    engine(&waypoint(
        vec![reviews(vec![route("mirrored", vec![], f)])],
        vec![reviews_policy(None)],
        vec![],
    ))
}

/// A compiled engine with fresh runtime state.
pub fn engine(w: &pb::Waypoint) -> Arc<Engine> {
    Arc::new(Engine::compile(w, Runtime::new()).expect("config compiles"))
}

/// A caller running as service account `sa` in `shop`.
pub fn caller(sa: &str) -> Caller {
    Caller {
        identity: Some(
            format!("spiffe://cluster.local/ns/shop/sa/{sa}")
                .parse()
                .unwrap(),
        ),
        ip: "10.0.9.9".parse().unwrap(),
    }
}

/// What a test sees of a response.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Sends one request to `reviews` and reads the whole answer.
pub async fn send(
    engine: &Arc<Engine>,
    fake: &Arc<Fake>,
    caller: Caller,
    request: Request<Body>,
) -> Answer {
    let upstream: Arc<dyn UpstreamClient> = fake.clone();
    let target = Target {
        address: std::net::SocketAddr::new(VIP.parse().unwrap(), PORT),
    };
    let resp = engine.handle(upstream, caller, target, request).await;
    let (parts, b) = resp.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: b.collect().await.map(|c| c.to_bytes()).unwrap_or_default(),
    }
}

/// A request to `reviews`.
pub fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body_text: &'static str,
) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("reviews:{PORT}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(if body_text.is_empty() {
        body::empty()
    } else {
        body::full(body_text)
    })
    .unwrap()
}

/// GET `path` as the `web` service account.
pub async fn get(
    engine: &Arc<Engine>,
    fake: &Arc<Fake>,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    send(
        engine,
        fake,
        caller("web"),
        request("GET", path, headers, ""),
    )
    .await
}
