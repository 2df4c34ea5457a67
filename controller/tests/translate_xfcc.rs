//! `ambient.istio.io/xfcc-include-client-identity` on waypoint Gateways → the waypoint's
//! `xfcc_include_client_identity`; a bad value, and the annotation on a GatewayClass (which
//! the mesh does not read), are reported.

#[path = "translate_common.rs"]
mod common;
#[path = "translate_routes_common.rs"]
mod routes;

use common::*;
use controller::model::{WARNING_PREFIX, parse_documents};
use controller::translate::{TranslateOptions, translate};

const FIELD: &str = "metadata.annotations[ambient.istio.io/xfcc-include-client-identity]";

/// A waypoint Gateway in `shop`, with the annotation when `value` is set.
fn gateway(name: &str, value: Option<&str>) -> String {
    let annotations = value.map_or_else(String::new, |v| {
        format!("  annotations:\n    ambient.istio.io/xfcc-include-client-identity: {v:?}\n")
    });
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  \
         namespace: shop\n{annotations}spec:\n  gatewayClassName: istio-waypoint\n  listeners:\n  \
         - {{name: mesh, port: 15008, protocol: HBONE}}\n"
    )
}

fn translation() -> controller::translate::Translation {
    let yaml = [
        gateway("on", Some("true")),
        gateway("off", Some("false")),
        gateway("plain", None),
        gateway("typo", Some("yes")),
    ]
    .join("---\n");
    translate(
        &index_from("inline.yaml", &yaml),
        &TranslateOptions::default(),
    )
}

fn enabled(t: &controller::translate::Translation, name: &str) -> bool {
    routes::waypoint(t, &format!("shop/{name}"))
        .unwrap_or_else(|| panic!("shop/{name} is served"))
        .xfcc_include_client_identity
}

#[test]
fn the_annotation_turns_client_identity_on_for_its_waypoint_only() {
    let t = translation();
    assert!(enabled(&t, "on"));
    assert!(!enabled(&t, "off"));
    assert!(!enabled(&t, "plain"));
    for name in ["on", "off", "plain"] {
        assert!(
            problems_about(&t, "Gateway", name).is_empty(),
            "{name}: {:?}",
            t.problems
        );
    }
}

#[test]
fn a_value_other_than_true_or_false_is_reported_and_leaves_it_off() {
    let t = translation();
    assert!(!enabled(&t, "typo"));
    let problems = problems_about(&t, "Gateway", "typo");
    assert_eq!(problems.len(), 1, "{:?}", t.problems);
    assert_eq!(problems[0].namespace, "shop");
    assert_eq!(problems[0].field, FIELD);
    assert_eq!(
        problems[0].message,
        "unknown value \"yes\" (\"true\" or \"false\"); x-forwarded-client-cert is not set"
    );
    assert!(!problems[0].is_warning());
}

#[test]
fn the_annotation_on_a_gateway_class_is_reported_where_it_has_no_effect() {
    let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  \
                name: istio-waypoint\n  annotations:\n    \
                ambient.istio.io/xfcc-include-client-identity: \"true\"\nspec:\n  \
                controllerName: istio.io/waypoint-controller\n";
    let parsed = parse_documents("class.yaml", yaml, false);
    assert!(parsed.objects.is_empty());
    let about_field: Vec<_> = parsed
        .problems
        .iter()
        .filter(|p| p.field == FIELD)
        .collect();
    assert_eq!(about_field.len(), 1, "{:?}", parsed.problems);
    let problem = about_field[0];
    assert_eq!(
        (problem.kind.as_str(), problem.name.as_str()),
        ("GatewayClass", "istio-waypoint")
    );
    assert_eq!(
        problem.message,
        format!(
            "{WARNING_PREFIX}the mesh reads ambient.istio.io/xfcc-include-client-identity on the \
             waypoint Gateway only, not on its GatewayClass: \"true\" here has no effect (set it \
             on each waypoint Gateway)"
        )
    );
    // The class itself is reported as ever, apart from its annotation.
    assert_eq!(parsed.problems.len(), 2, "{:?}", parsed.problems);
}
