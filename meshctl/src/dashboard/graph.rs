//! The service graph: workloads as nodes, who talked to whom as edges, and a layout in which
//! no two nodes overlap: columns by how far a workload is from the callers (the longest
//! path to it), rows in name order, a column wrapped into several when it grows tall.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::requests::RequestEdge;
use crate::operator::stat::{Edge, Row};

/// Horizontal distance between columns, in SVG units.
pub const COLUMN_WIDTH: u32 = 300;
/// Vertical distance between rows, in SVG units.
pub const ROW_HEIGHT: u32 = 70;
/// At most this many nodes in one column before it wraps.
pub const MAX_ROWS: usize = 20;
/// Room around the drawing.
const MARGIN: u32 = 40;

/// A workload in the graph, placed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Node {
    /// `namespace/name`.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Workload (Deployment, or a bare pod's name as the metrics call it).
    pub name: String,
    /// Its `stat` row, when it is a Deployment.
    pub row: Option<Row>,
    /// Left edge, SVG units.
    pub x: u32,
    /// Top edge, SVG units.
    pub y: u32,
}

/// Connections from one workload to another over the window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Link {
    /// The client's node id.
    pub from: String,
    /// The server's node id.
    pub to: String,
    /// Mutual TLS, or plaintext; `None` when only requests were seen (through a waypoint),
    /// not the connections.
    pub secured: Option<bool>,
    /// Connections opened per second.
    pub connections_per_second: f64,
    /// Connections opened in the window.
    pub connections: u64,
    /// Requests per second, when a waypoint saw them.
    pub requests_per_second: Option<f64>,
    /// Share of those requests that did not fail.
    pub success_rate: Option<f64>,
}

/// The graph, ready to draw.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Graph {
    /// Placed workloads.
    pub nodes: Vec<Node>,
    /// Edges between them.
    pub links: Vec<Link>,
    /// Width of the drawing.
    pub width: u32,
    /// Height of the drawing.
    pub height: u32,
}

fn id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The graph of the `rows` (every Deployment), the `edges` and the `requests` of a window
/// `seconds` long; a workload seen only in edges (a bare pod, an unknown client) is a node
/// too.
pub fn graph(rows: &[Row], edges: &[Edge], requests: &[RequestEdge], seconds: f64) -> Graph {
    let mut names: BTreeMap<String, (String, String, Option<Row>)> = rows
        .iter()
        .map(|r| {
            let key = id(&r.namespace, &r.name);
            (key, (r.namespace.clone(), r.name.clone(), Some(r.clone())))
        })
        .collect();
    let mut links: BTreeMap<(String, String, Option<bool>), u64> = BTreeMap::new();
    for e in edges {
        for (ns, name) in [
            (&e.source_namespace, &e.source),
            (&e.destination_namespace, &e.destination),
        ] {
            names
                .entry(id(ns, name))
                .or_insert_with(|| (ns.clone(), name.clone(), None));
        }
        let key = (
            id(&e.source_namespace, &e.source),
            id(&e.destination_namespace, &e.destination),
            Some(e.secured),
        );
        *links.entry(key).or_default() += e.connections;
    }
    for r in requests {
        for (ns, name) in [&r.from, &r.to].map(|id| id.split_once('/').unwrap_or(("", id))) {
            names
                .entry(id(ns, name))
                .or_insert_with(|| (ns.to_owned(), name.to_owned(), None));
        }
        if !links
            .keys()
            .any(|(from, to, _)| from == &r.from && to == &r.to)
        {
            links.insert((r.from.clone(), r.to.clone(), None), 0);
        }
    }
    let pairs: BTreeSet<(String, String)> = links
        .keys()
        .map(|(from, to, _)| (from.clone(), to.clone()))
        .filter(|(from, to)| from != to)
        .collect();
    let depth = depths(names.keys(), &pairs);
    let mut columns: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for key in names.keys() {
        columns.entry(depth[key]).or_default().push(key.clone());
    }
    let (mut nodes, mut column, mut tallest) = (Vec::new(), 0u32, 0usize);
    for members in columns.values() {
        for chunk in members.chunks(MAX_ROWS) {
            tallest = tallest.max(chunk.len());
            for (row, key) in chunk.iter().enumerate() {
                let (namespace, name, stat) = names[key].clone();
                nodes.push(Node {
                    id: key.clone(),
                    namespace,
                    name,
                    row: stat,
                    x: MARGIN + column * COLUMN_WIDTH,
                    y: MARGIN + row as u32 * ROW_HEIGHT,
                });
            }
            column += 1;
        }
    }
    let mut links: Vec<Link> = links
        .into_iter()
        .map(|((from, to, secured), connections)| Link {
            from,
            to,
            secured,
            connections,
            connections_per_second: if seconds > 0.0 {
                connections as f64 / seconds
            } else {
                0.0
            },
            requests_per_second: None,
            success_rate: None,
        })
        .collect();
    for r in requests {
        // On the pair's first link only, so that no request is shown twice.
        if let Some(link) = links.iter_mut().find(|l| l.from == r.from && l.to == r.to) {
            link.requests_per_second = Some(r.requests_per_second);
            link.success_rate = r.success_rate;
        }
    }
    Graph {
        nodes,
        links,
        width: 2 * MARGIN + column.max(1) * COLUMN_WIDTH,
        height: 2 * MARGIN + tallest.max(1) as u32 * ROW_HEIGHT,
    }
}

/// Each node's column: the longest path to it from a node nobody calls, counted in edges;
/// cycles are cut by bounding the relaxation to as many rounds as there are nodes.
fn depths<'a>(
    nodes: impl Iterator<Item = &'a String>,
    pairs: &BTreeSet<(String, String)>,
) -> BTreeMap<String, usize> {
    let mut depth: BTreeMap<String, usize> = nodes.map(|n| (n.clone(), 0)).collect();
    let limit = depth.len();
    for _ in 0..limit {
        let mut changed = false;
        for (from, to) in pairs {
            let wanted = (depth[from] + 1).min(limit);
            if depth[to] < wanted {
                depth.insert(to.clone(), wanted);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(from: &str, to: &str, secured: bool, connections: u64) -> Edge {
        Edge {
            source_namespace: "shop".into(),
            source: from.into(),
            source_identity: "unknown".into(),
            destination_namespace: "shop".into(),
            destination: to.into(),
            destination_identity: "unknown".into(),
            secured,
            connections,
        }
    }

    fn row(name: &str) -> Row {
        Row {
            namespace: "shop".into(),
            name: name.into(),
            meshed_pods: 1,
            pods: 1,
            requests: None,
            success_rate: None,
            requests_per_second: None,
            latency_ms_p50: None,
            latency_ms_p95: None,
            latency_ms_p99: None,
            tcp_connections: 0,
            tcp_opened: 0,
            read_bytes_per_second: 0.0,
            write_bytes_per_second: 0.0,
            mtls_share: None,
        }
    }

    #[test]
    fn callers_come_before_callees_and_edges_keep_their_security() {
        let rows = [row("frontend"), row("orders"), row("payments")];
        let edges = [
            edge("client", "frontend", false, 10),
            edge("frontend", "orders", true, 10),
            edge("orders", "payments", true, 20),
            edge("payments", "orders", true, 1),
        ];
        let requests = [
            RequestEdge {
                from: "shop/frontend".into(),
                to: "shop/orders".into(),
                requests_per_second: 1.5,
                success_rate: Some(0.9),
                latency_ms_p99: Some(4.0),
            },
            RequestEdge {
                from: "shop/api-gateway".into(),
                to: "shop/orders".into(),
                requests_per_second: 0.5,
                success_rate: Some(1.0),
                latency_ms_p99: Some(2.0),
            },
        ];
        let g = graph(&rows, &edges, &requests, 10.0);
        let x = |name: &str| g.nodes.iter().find(|n| n.name == name).unwrap().x;
        assert!(x("client") < x("frontend"));
        assert!(x("frontend") < x("orders"));
        assert!(x("orders") <= x("payments"));
        let client = g.nodes.iter().find(|n| n.name == "client").unwrap();
        assert_eq!(client.row, None);
        let plaintext: Vec<_> = g
            .links
            .iter()
            .filter(|l| l.secured == Some(false))
            .collect();
        assert_eq!(plaintext.len(), 1);
        assert_eq!(plaintext[0].from, "shop/client");
        let payments = g.links.iter().find(|l| l.to == "shop/payments").unwrap();
        assert_eq!(payments.connections_per_second, 2.0);
        assert_eq!(payments.requests_per_second, None);
        let orders = g
            .links
            .iter()
            .find(|l| l.from == "shop/frontend" && l.to == "shop/orders")
            .unwrap();
        assert_eq!(
            (orders.requests_per_second, orders.success_rate),
            (Some(1.5), Some(0.9))
        );
        // Requests seen only through a waypoint: an edge whose security is not known.
        let gateway = g
            .links
            .iter()
            .find(|l| l.from == "shop/api-gateway")
            .unwrap();
        assert_eq!((gateway.secured, gateway.connections), (None, 0));
        assert_eq!(gateway.requests_per_second, Some(0.5));
    }

    #[test]
    fn two_hundred_workloads_never_overlap_and_fit_the_drawing() {
        let rows: Vec<Row> = (0..200).map(|i| row(&format!("app-{i:03}"))).collect();
        let edges: Vec<Edge> = (0..199)
            .filter(|i| i % 3 != 2)
            .map(|i| {
                edge(
                    &format!("app-{i:03}"),
                    &format!("app-{:03}", i + 1),
                    true,
                    1,
                )
            })
            .collect();
        let g = graph(&rows, &edges, &[], 10.0);
        assert_eq!(g.nodes.len(), 200);
        let places: BTreeSet<(u32, u32)> = g.nodes.iter().map(|n| (n.x, n.y)).collect();
        assert_eq!(places.len(), 200, "two nodes share a place");
        for n in &g.nodes {
            assert!(
                n.x + COLUMN_WIDTH <= g.width && n.y + ROW_HEIGHT <= g.height,
                "{n:?}"
            );
        }
        let column = |x: u32| g.nodes.iter().filter(|n| n.x == x).count();
        assert!(g.nodes.iter().all(|n| column(n.x) <= MAX_ROWS));
    }
}
