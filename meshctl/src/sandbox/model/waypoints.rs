//! Waypoint deployment: what the controller does in Kubernetes for a Gateway
//! of class `istio-waypoint`, done by the sandbox. Both render the same
//! template (`manifests/waypoint-template.yaml`, through
//! [`controller::deploy::waypoints`]), here with the sandbox's paths: the
//! controller on the control netns, its root certificate and a token issued
//! per waypoint. For each such Gateway three objects are kept beside it,
//! owned by it (removed with it):
//!
//! - ServiceAccount `<gateway>`: the waypoint's identity
//!   `spiffe://cluster.local/ns/<ns>/sa/<gateway>`;
//! - Deployment `<gateway>` (one replica, pods `<gateway>-<hash>-<suffix>`)
//!   running the `waypoint` binary, its pods labelled
//!   `gateway.networking.k8s.io/gateway-name: <gateway>` (how the controller
//!   knows they are the waypoint) and `istio.io/dataplane-mode: none` (the
//!   waypoint speaks HBONE itself and must not be captured);
//! - Service `<gateway>` with ports `status-port` 15021 and `mesh` 15008
//!   selecting those pods: the controller points ztunnels at the waypoint
//!   through the Service named after the Gateway.
//!
//! This is the pure part: which objects, with which content. Storing them
//! and issuing the waypoint's bearer token is `ops::waypoints`.

use std::net::Ipv4Addr;

use controller::deploy::waypoints::{
    self as template, MANAGED_LABEL, MANAGED_VALUE, WaypointGateway, WaypointRuntime,
};
use serde_json::Value;

use super::cluster::Cluster;
use super::control::{Layout, XDS_PORT};
use super::objects::Object;

/// The sandbox's waypoint runtime: no images, the controller at `control_ip`,
/// the sandbox root and the waypoint's own token file.
fn runtime(gateway: &WaypointGateway, layout: &Layout, control_ip: Ipv4Addr) -> WaypointRuntime {
    let path = |p: std::path::PathBuf| p.display().to_string();
    WaypointRuntime {
        image: "waypoint".into(),
        controller: format!("{control_ip}:{XDS_PORT}"),
        root_cert: path(layout.root_cert()),
        token_file: path(layout.waypoint_token_file(&gateway.namespace, &gateway.name)),
    }
}

/// ServiceAccount, Deployment and Service for `gateway`'s waypoint, its
/// container given `extra_args` (`up --waypoint-arg`) after the template's;
/// the error names the Gateway.
pub fn objects(
    gateway: &WaypointGateway,
    layout: &Layout,
    control_ip: Ipv4Addr,
    extra_args: &[String],
) -> Result<Vec<Object>, String> {
    let mut rendered = template::render(gateway, &runtime(gateway, layout, control_ip))
        .map_err(|e| format!("Gateway {}/{}: {e}", gateway.namespace, gateway.name))?;
    for value in &mut rendered {
        if value["kind"] == "Deployment"
            && let Some(args) =
                value["spec"]["template"]["spec"]["containers"][0]["args"].as_array_mut()
        {
            args.extend(extra_args.iter().map(|a| Value::String(a.clone())));
        }
    }
    Ok(rendered
        .into_iter()
        .map(|value| Object {
            api_version: value["apiVersion"].as_str().unwrap_or_default().into(),
            kind: value["kind"].as_str().unwrap_or_default().into(),
            namespace: Some(gateway.namespace.clone()),
            name: gateway.name.clone(),
            source: format!(
                "(waypoint for Gateway {}/{})",
                gateway.namespace, gateway.name
            ),
            value,
        })
        .collect())
}

/// Every waypoint Gateway of the cluster, in apply order.
pub fn gateways(cluster: &Cluster) -> Vec<WaypointGateway> {
    cluster
        .objects
        .iter()
        .filter_map(|a| WaypointGateway::from_json(&a.object.value))
        .collect()
}

/// True for an object generated for a waypoint Gateway (label and owner).
pub fn is_generated(object: &Object) -> bool {
    let managed = object.labels().get(MANAGED_LABEL).map(String::as_str) == Some(MANAGED_VALUE);
    let owned = object
        .value
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| refs.iter().any(|r| r["kind"] == "Gateway"));
    managed && owned
}

/// What the objects should be: `(to store, to remove)`. Generated objects
/// whose Gateway is gone (or no longer a waypoint) are removed; an object
/// the user wrote under a generated name is replaced, as Istio does.
pub fn plan(
    cluster: &Cluster,
    layout: &Layout,
    control_ip: Ipv4Addr,
) -> Result<(Vec<Object>, Vec<Object>), String> {
    let mut wanted = Vec::new();
    let extra_args = cluster
        .control
        .as_ref()
        .map_or(&[][..], |c| c.waypoint_args.as_slice());
    for gateway in gateways(cluster) {
        wanted.extend(objects(&gateway, layout, control_ip, extra_args)?);
    }
    let stale = cluster
        .objects
        .iter()
        .map(|a| &a.object)
        .filter(|o| is_generated(o) && !wanted.iter().any(|w| w.same_identity(o)))
        .cloned()
        .collect();
    Ok((wanted, stale))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::model::cluster::Applied;
    use crate::sandbox::model::control::CONTROL_IP;
    use crate::sandbox::model::ids::tests::Counter;
    use crate::sandbox::model::manifest::parse_documents;
    use crate::sandbox::model::objects::DeploymentObject;
    use crate::sandbox::model::validate::{validate_deployment, validate_service};
    use controller::deploy::waypoints::GATEWAY_NAME_LABEL;
    use std::path::Path;

    const GATEWAYS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop, uid: u-1}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
  infrastructure:
    labels: {team: shop}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ingress, namespace: shop}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
"#;

    fn layout() -> Layout {
        Layout::new(Path::new("/run/meshctl/t"), Path::new("/opt/bin"))
    }

    fn cluster(yaml: &str) -> Cluster {
        let mut c = Cluster::new("t", 2, 0);
        for object in parse_documents(yaml, "t.yaml").unwrap() {
            c.objects.push(Applied { object, created: 0 });
        }
        c
    }

    fn find<'a>(objects: &'a [Object], kind: &str) -> &'a Object {
        objects.iter().find(|o| o.kind == kind).unwrap()
    }

    #[test]
    fn only_waypoint_class_gateways_get_a_waypoint() {
        let c = cluster(GATEWAYS);
        let gws = gateways(&c);
        assert_eq!(gws.len(), 1);
        assert_eq!(
            (gws[0].namespace.as_str(), gws[0].name.as_str()),
            ("shop", "waypoint")
        );
        assert_eq!(gws[0].uid, "u-1");
        assert_eq!(
            crate::sandbox::model::control::waypoint_identity(&gws[0].namespace, &gws[0].name),
            "spiffe://cluster.local/ns/shop/sa/waypoint"
        );
    }

    #[test]
    fn generated_objects_match_what_the_controller_looks_for() {
        let gw = &gateways(&cluster(GATEWAYS))[0];
        let objects = objects(gw, &layout(), CONTROL_IP, &["--cert-ttl-secs=20".into()]).unwrap();
        let kinds: Vec<&str> = objects.iter().map(|o| o.kind.as_str()).collect();
        assert_eq!(kinds, ["ServiceAccount", "Deployment", "Service"]);
        assert!(objects.iter().all(|o| o.name == "waypoint"));
        assert!(
            objects
                .iter()
                .all(|o| o.namespace.as_deref() == Some("shop"))
        );
        assert!(objects.iter().all(is_generated));
        for o in &objects {
            assert_eq!(
                o.labels()["team"],
                "shop",
                "infrastructure labels propagate"
            );
            assert_eq!(o.value["metadata"]["ownerReferences"][0]["uid"], "u-1");
        }

        let svc = find(&objects, "Service");
        assert_eq!(
            svc.value["spec"]["selector"][GATEWAY_NAME_LABEL],
            "waypoint"
        );
        let ports = &svc.value["spec"]["ports"];
        assert_eq!(ports[0]["name"], "status-port");
        assert_eq!(ports[0]["port"], 15021);
        assert_eq!(ports[0]["appProtocol"], "tcp");
        assert_eq!(ports[1]["name"], "mesh");
        assert_eq!(ports[1]["port"], 15008);
        assert_eq!(ports[1]["appProtocol"], "all");
        let typed: crate::sandbox::model::objects::ServiceObject = svc.typed().unwrap();
        validate_service(&typed.spec).unwrap();

        let deployment = find(&objects, "Deployment");
        let d: DeploymentObject = deployment.typed().unwrap();
        validate_deployment(&d).unwrap();
        assert_eq!(d.spec.replicas, Some(1));
        let pod_labels = &d.spec.template.metadata.labels;
        assert_eq!(pod_labels[GATEWAY_NAME_LABEL], "waypoint");
        assert_eq!(pod_labels["istio.io/dataplane-mode"], "none");
        let spec = &d.spec.template.spec;
        assert_eq!(spec.service_account_name.as_deref(), Some("waypoint"));
        let c = &spec.containers[0];
        assert_eq!(c.name, "istio-proxy");
        assert_eq!(
            crate::sandbox::model::env::container_argv(c, &[]).join(" "),
            "waypoint --namespace=shop --name=waypoint --service-account=waypoint \
             --controller=172.18.255.1:15012 \
             --root-cert=/run/meshctl/t/ca/root-cert.pem \
             --token-file=/run/meshctl/t/tokens/waypoint-shop.waypoint \
             --hbone-addr=0.0.0.0:15008 --metrics-addr=0.0.0.0:15020 --ready-addr=0.0.0.0:15021 \
             --cert-ttl-secs=20"
        );
        let ports: Vec<u16> = c.ports.iter().map(|p| p.container_port).collect();
        assert_eq!(ports, [15008, 15020, 15021]);
    }

    #[test]
    fn the_deployment_yields_one_waypoint_pod_and_removal_is_planned() {
        let mut c = cluster(GATEWAYS);
        let (wanted, stale) = plan(&c, &layout(), CONTROL_IP).unwrap();
        assert!(stale.is_empty());
        for object in wanted {
            c.objects.push(Applied { object, created: 0 });
        }
        let mut pods = c.plan_pods().create;
        assert_eq!(pods.len(), 1);
        let pod = c.place(pods.remove(0), 1, &mut Counter(0)).unwrap();
        assert!(pod.name.starts_with("waypoint-"), "{}", pod.name);
        assert_eq!(pod.service_account, "waypoint");
        assert_eq!(pod.labels[GATEWAY_NAME_LABEL], "waypoint");
        assert_eq!(pod.labels["istio.io/dataplane-mode"], "none");

        // The Gateway goes (or changes class): its objects are stale.
        c.objects.retain(|a| a.object.kind != "Gateway");
        let (wanted, stale) = plan(&c, &layout(), CONTROL_IP).unwrap();
        assert!(wanted.is_empty());
        let mut kinds: Vec<&str> = stale.iter().map(|o| o.kind.as_str()).collect();
        kinds.sort();
        assert_eq!(kinds, ["Deployment", "Service", "ServiceAccount"]);
    }

    #[test]
    fn user_objects_are_not_mistaken_for_generated_ones() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: shop, labels: {gateway.istio.io/managed: istio.io-mesh-controller}}\nspec: {ports: [{port: 80}]}\n";
        let c = cluster(yaml);
        assert!(!is_generated(&c.objects[0].object), "no Gateway owner");
        let (wanted, stale) = plan(&c, &layout(), CONTROL_IP).unwrap();
        assert!(wanted.is_empty() && stale.is_empty());
    }
}
