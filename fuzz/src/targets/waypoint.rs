//! The waypoint's config from the controller: a `mesh.waypoint.v1.Waypoint` body is decoded
//! and compiled as the waypoint compiles each xDS update; a config it accepts then serves a
//! few requests to every service port it declares, on the paused clock (so fuzzed delays
//! and timeouts cost nothing).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use api::waypoint::Waypoint;
use http::Request;
use prost::Message;
use waypoint::engine::{Engine, Runtime, Target as Destination};

use super::support::{PATIENCE, paused_runtime};
use super::upstream::{caller, full, upstream};
use crate::mutate::Shape;
use crate::target::Target;

/// `mesh.waypoint.v1.Waypoint` bodies.
pub const CONFIG: Target = Target {
    name: "waypoint_config",
    run: waypoint_config,
    shape: Shape::Protobuf,
    dictionary: &[
        b"reviews.shop.svc.cluster.local",
        b"10.96.0.10",
        b"fd00::a",
        b"(a+)+$",
        b"[",
        b".*",
        b"\\",
        b"%PREFIX()%",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
        b"\x80\x80\x80\x80\x10",
    ],
    max_len: 32 * 1024,
};

/// Service ports a fuzzed config gets requests on, at most.
const MAX_DESTINATIONS: usize = 8;

/// Decodes and compiles a config; serves requests with it if it is accepted.
pub fn waypoint_config(data: &[u8]) {
    let Ok(config) = Waypoint::decode(data) else {
        return;
    };
    let Ok(engine) = Engine::compile(&config, Runtime::new()) else {
        return;
    };
    let engine = Arc::new(engine);
    let destinations = destinations(&config);
    paused_runtime().block_on(async {
        for destination in destinations {
            for request in requests() {
                let handled = engine.handle(upstream(), caller(), destination.clone(), request);
                tokio::time::timeout(PATIENCE, handled)
                    .await
                    .expect("a request was never answered");
            }
        }
    });
}

/// Every (address, port) the config serves, up to [`MAX_DESTINATIONS`].
fn destinations(config: &Waypoint) -> Vec<Destination> {
    let mut out = Vec::new();
    for service in &config.services {
        for address in &service.addresses {
            let Ok(ip) = address.parse::<IpAddr>() else {
                continue;
            };
            for port in &service.ports {
                let Ok(port) = u16::try_from(port.port) else {
                    continue;
                };
                out.push(Destination {
                    address: SocketAddr::new(ip, port),
                });
                if out.len() == MAX_DESTINATIONS {
                    return out;
                }
            }
        }
    }
    out
}

/// Method, URI, headers and body length of a request.
type RequestSpec = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    usize,
);

/// Requests that reach the usual route matches: methods, paths, headers, query parameters,
/// a body, a trace, and paths the endpoints answer with failures.
fn requests() -> Vec<Request<waypoint::engine::Body>> {
    let specs: [RequestSpec; 6] = [
        (
            "GET",
            "/api/v1?v=12",
            &[("end-user", "jason"), ("x-debug", "1")],
            0,
        ),
        (
            "POST",
            "/reviews/1",
            &[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )],
            2048,
        ),
        ("GET", "/fail", &[("x-token", "secret-1")], 0),
        ("PUT", "/reset", &[], 16),
        ("GET", "/tea/pot", &[("host", "reviews.shop")], 0),
        ("DELETE", "/old", &[("grpc-timeout", "1S")], 0),
    ];
    specs
        .iter()
        .filter_map(|(method, uri, headers, body)| {
            let mut builder = Request::builder().method(*method).uri(*uri);
            for (name, value) in *headers {
                builder = builder.header(*name, *value);
            }
            builder.body(full(vec![b'x'; *body])).ok()
        })
        .collect()
}
