//! `meshctl edges` on the demo shop: who talked to whom while it watched, with both SPIFFE
//! identities, mutual TLS inside the mesh and the un-meshed client's edge as plaintext.

use std::path::PathBuf;

use e2e::Sandbox;
use e2e::mesh::{wait_namespace_captured, wait_ready};

/// Requests from the client (namespace `default`, outside the mesh) to the frontend.
const REQUESTS: &str = "20";

fn identity(account: &str) -> String {
    format!("spiffe://cluster.local/ns/shop/sa/{account}")
}

#[test]
fn edges_show_identities_mutual_tls_and_the_plaintext_edge_from_outside_the_mesh() {
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/demo");
    let sb = Sandbox::up(&demo.display().to_string()).expect("sandbox up");
    sb.label("shop", super::AMBIENT).unwrap();
    wait_ready(&sb);
    wait_namespace_captured(&sb, "shop");

    let (mut edges, line) = sb
        .spawn_watching(&[
            "edges", "deploy", "-n", "shop", "--window", "20s", "-o", "json",
        ])
        .expect("meshctl edges starts");
    assert!(line.starts_with("scraped 2 proxies"), "{line}");
    let load = sb
        .load(
            "client",
            &["--url", "http://frontend.shop:8080/", "-n", REQUESTS],
        )
        .expect("the client reaches the frontend");
    assert_eq!(load.by_pod.values().sum::<u64>(), 20, "{load:?}");
    assert!(
        edges.try_wait().unwrap().is_none(),
        "the load outlasted the 20 s window"
    );
    let out = edges.wait_with_output().unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let seen: Vec<(String, String, String, String, bool)> = report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (
                text("source"),
                text("destination"),
                text("source_identity"),
                text("destination_identity"),
                e["secured"].as_bool().unwrap(),
            )
        })
        .collect();
    let has = |edge: (&str, &str, String, String, bool)| {
        let edge = (edge.0.to_owned(), edge.1.to_owned(), edge.2, edge.3, edge.4);
        assert!(seen.contains(&edge), "{edge:?} missing from {seen:#?}");
    };
    has((
        "client",
        "frontend",
        "unknown".into(),
        identity("frontend"),
        false,
    ));
    for orders in ["orders-v1", "orders-v2"] {
        has((
            "frontend",
            orders,
            identity("frontend"),
            identity("orders"),
            true,
        ));
        has((
            orders,
            "payments",
            identity("orders"),
            identity("payments"),
            true,
        ));
    }
    assert_eq!(seen.len(), 5, "{seen:#?}");
}
