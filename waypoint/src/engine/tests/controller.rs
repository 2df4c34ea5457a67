//! The controller's own translation of its route fixtures compiles here: the two ends of the
//! waypoint config agree.

use std::collections::BTreeMap;

use controller::model::{Index, parse_documents};
use controller::translate::{TranslateOptions, translate};

use crate::engine::{Engine, Runtime, Target};

/// Every waypoint config the controller serves for these fixtures.
fn waypoints(fixtures: &[&str]) -> BTreeMap<String, api::waypoint::Waypoint> {
    let dir = format!(
        "{}/../controller/tests/fixtures",
        env!("CARGO_MANIFEST_DIR")
    );
    let origins = fixtures
        .iter()
        .map(|name| {
            let path = format!("{dir}/{name}");
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let parsed = parse_documents(name, &text, false);
            (name.to_string(), parsed.objects, parsed.problems)
        })
        .collect();
    let t = translate(&Index::from_origins(origins), &TranslateOptions::default());
    t.snapshot
        .of_type(api::WAYPOINT_TYPE_URL)
        .map(|(name, r)| (name.clone(), api::unpack(&r.body).expect("decodes")))
        .collect()
}

#[test]
fn every_fixture_translation_compiles() {
    let sets: [&[&str]; 5] = [
        &["routes-mesh.yaml", "routes-istio.yaml"],
        &["routes-mesh.yaml", "routes-httproute.yaml"],
        &["routes-mesh.yaml", "routes-smi-linkerd.yaml"],
        &["routes-mesh.yaml", "routes-ratelimit.yaml"],
        &["routes-mesh.yaml", "routes-authz.yaml"],
    ];
    for set in sets {
        let ws = waypoints(set);
        assert!(!ws.is_empty(), "{set:?} yields no waypoint");
        for (name, w) in ws {
            let engine = Engine::compile(&w, Runtime::new())
                .unwrap_or_else(|e| panic!("{set:?} {name}: {e}"));
            for s in &w.services {
                for a in &s.addresses {
                    for p in &s.ports {
                        let target = Target {
                            address: std::net::SocketAddr::new(a.parse().unwrap(), p.port as u16),
                        };
                        assert_eq!(engine.port_protocol(&target) as i32, p.protocol);
                    }
                }
            }
        }
    }
}
