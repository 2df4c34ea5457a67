//! The requests of each graph edge: for every (client workload, server workload) pair the
//! waypoints counted requests of, `stat`'s own row computation over just that client's
//! samples, so an edge's rate, success and latency are what `stat` would say of the server
//! if that client were its only caller.

use std::collections::BTreeSet;

use prometheus_registry::scrape::Sample;
use serde::Serialize;

use crate::operator::stat::{Resource, Target, rows};
use crate::operator::window::Window;

/// The request figures of one edge over the window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RequestEdge {
    /// The client's `namespace/workload`.
    pub from: String,
    /// The server's `namespace/workload`.
    pub to: String,
    /// Requests per second.
    pub requests_per_second: f64,
    /// Share of them that did not fail (not 5xx), from 0 to 1.
    pub success_rate: Option<f64>,
    /// 99th percentile latency, milliseconds.
    pub latency_ms_p99: Option<f64>,
}

/// Every pair the window's `istio_requests_total` names, with its figures.
pub fn request_edges(window: &Window) -> Vec<RequestEdge> {
    let side = |s: &Sample, which: &str| {
        (
            s.label(&format!("{which}_workload_namespace")).to_owned(),
            s.label(&format!("{which}_workload")).to_owned(),
        )
    };
    let pairs: BTreeSet<((String, String), (String, String))> = window
        .increase
        .iter()
        .filter(|s| s.name == "istio_requests_total")
        .map(|s| (side(s, "source"), side(s, "destination")))
        .collect();
    pairs
        .into_iter()
        .filter_map(|(from, to)| {
            let from_client = |s: &&Sample| side(s, "source") == from;
            let grown: Vec<Sample> = window
                .increase
                .iter()
                .filter(from_client)
                .cloned()
                .collect();
            let now: Vec<Sample> = window.now.iter().filter(from_client).cloned().collect();
            let target = Target::new(&to.0, &to.1, []);
            let row = rows(
                Resource::Deployment,
                &[target],
                &grown,
                &now,
                window.seconds,
            )
            .pop()?;
            Some(RequestEdge {
                from: format!("{}/{}", from.0, from.1),
                to: format!("{}/{}", to.0, to.1),
                requests_per_second: row.requests_per_second.unwrap_or_default(),
                success_rate: row.success_rate,
                latency_ms_p99: row.latency_ms_p99,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(source: &str, destination: &str, code: &str, value: f64) -> Sample {
        Sample::new(
            "istio_requests_total",
            &[
                ("reporter", "waypoint"),
                ("source_workload_namespace", "shop"),
                ("source_workload", source),
                ("destination_workload_namespace", "shop"),
                ("destination_workload", destination),
                ("response_code", code),
            ],
            value,
        )
    }

    #[test]
    fn each_client_server_pair_gets_stats_figures_of_its_own_requests() {
        let window = Window {
            increase: vec![
                requests("frontend", "orders-v1", "200", 18.0),
                requests("frontend", "orders-v1", "503", 2.0),
                requests("api-gateway", "orders-v1", "200", 10.0),
                requests("orders-v1", "payments", "200", 30.0),
            ],
            now: Vec::new(),
            seconds: 10.0,
            unreachable: Vec::new(),
        };
        let edges = request_edges(&window);
        let figures: Vec<(&str, &str, f64, Option<f64>)> = edges
            .iter()
            .map(|e| {
                (
                    e.from.as_str(),
                    e.to.as_str(),
                    e.requests_per_second,
                    e.success_rate,
                )
            })
            .collect();
        assert_eq!(
            figures,
            [
                ("shop/api-gateway", "shop/orders-v1", 1.0, Some(1.0)),
                ("shop/frontend", "shop/orders-v1", 2.0, Some(0.9)),
                ("shop/orders-v1", "shop/payments", 3.0, Some(1.0)),
            ]
        );
    }
}
