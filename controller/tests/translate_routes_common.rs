//! Helpers for the waypoint configuration tests (included with `#[path]`
//! after `translate_common.rs`).
#![allow(dead_code)]

use api::waypoint::{
    DestinationPolicy, Forward, Route, Service, StringMatch, Waypoint, route, string_match,
};
use controller::model::Problem;
use controller::translate::Translation;

/// The configuration of waypoint `ns/name`.
pub fn waypoint(t: &Translation, name: &str) -> Option<Waypoint> {
    t.snapshot
        .resources
        .get(api::WAYPOINT_TYPE_URL)
        .and_then(|m| m.get(name))
        .map(|r| api::unpack(&r.body).expect("decodes"))
}

/// The configuration of the fixtures' waypoint, `shop/waypoint`.
pub fn shop(t: &Translation) -> Waypoint {
    waypoint(t, "shop/waypoint").expect("shop/waypoint is served")
}

/// A served service, by name.
pub fn served(w: &Waypoint, name: &str) -> Service {
    w.services
        .iter()
        .find(|s| s.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not served; have {:?}", names(w)))
}

/// Names of the served services.
pub fn names(w: &Waypoint) -> Vec<&str> {
    w.services.iter().map(|s| s.name.as_str()).collect()
}

/// Route names of a service, in order.
pub fn route_names(s: &Service) -> Vec<&str> {
    s.routes.iter().map(|r| r.name.as_str()).collect()
}

/// A route by name.
pub fn route<'a>(s: &'a Service, name: &str) -> &'a Route {
    s.routes
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no route {name}; have {:?}", route_names(s)))
}

/// The forward action of a route.
pub fn forward(r: &Route) -> &Forward {
    match &r.action {
        Some(route::Action::Forward(f)) => f,
        other => panic!("{}: not a forward: {other:?}", r.name),
    }
}

/// (hostname, port, subset, weight) of each destination.
pub fn destinations(f: &Forward) -> Vec<(String, u32, String, u32)> {
    f.destinations
        .iter()
        .map(|w| {
            let d = w.destination.as_ref().expect("destination");
            (d.hostname.clone(), d.port, d.subset.clone(), w.weight)
        })
        .collect()
}

/// `name.shop.svc.cluster.local`.
pub fn host(name: &str) -> String {
    format!("{name}.shop.svc.cluster.local")
}

/// The upstream policy of a hostname.
pub fn policy<'a>(w: &'a Waypoint, hostname: &str) -> &'a DestinationPolicy {
    w.destinations
        .iter()
        .find(|d| d.hostname == hostname)
        .unwrap_or_else(|| panic!("no policy for {hostname}"))
}

/// String match shorthands.
pub fn exact(s: &str) -> StringMatch {
    kind(string_match::Kind::Exact(s.into()))
}
pub fn prefix(s: &str) -> StringMatch {
    kind(string_match::Kind::Prefix(s.into()))
}
pub fn suffix(s: &str) -> StringMatch {
    kind(string_match::Kind::Suffix(s.into()))
}
pub fn regex(s: &str) -> StringMatch {
    kind(string_match::Kind::Regex(s.into()))
}
pub fn present() -> StringMatch {
    kind(string_match::Kind::Present(()))
}
fn kind(k: string_match::Kind) -> StringMatch {
    StringMatch {
        kind: Some(k),
        ignore_case: false,
    }
}

/// Seconds and nanoseconds as a Duration.
pub fn dur(seconds: i64, nanos: i32) -> Option<api::prost_types::Duration> {
    Some(api::prost_types::Duration { seconds, nanos })
}

/// Problems that are not warnings.
pub fn errors(t: &Translation) -> Vec<&Problem> {
    t.problems
        .iter()
        .filter(|p| !p.message.starts_with("warning:"))
        .collect()
}
