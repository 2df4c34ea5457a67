//! The controller as the sandbox runs it: a real controller process in the
//! sandbox's control-plane namespace, reached from the test over the host
//! port forwarder with gRPC over TLS, exactly as a ztunnel would reach it
//! (node token, delta ADS, Istio CA).

#[path = "controller/check.rs"]
mod check;
#[path = "controller/telemetry.rs"]
mod telemetry;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use api::discovery::DeltaDiscoveryResponse;
use api::security::Authorization;
use api::workload::{Address, Service, TunnelProtocol, Workload, address};
use e2e::{Component, Options, PodInfo, Sandbox};
use hbone::{CertificateRequest, Identity, WorkloadCertificate};
use proxy_core::control::ControlPlane;
use proxy_core::settings::ControlPlaneSettings;
use rustls_pki_types::CertificateDer;
use test_support::ads::AdsStream;
use test_support::grpc::create_certificate;
use test_support::tls::handshake_with;
use tonic::Code;
use tonic::transport::Channel;

const NS: &str = "ctl";
use e2e::CONTROLLER_IDENTITY as CONTROLLER;
/// Upper bound for config to arrive; generous, as the machine may be busy.
const WAIT: Duration = Duration::from_secs(10);

/// A namespace with a 2-replica Deployment (spread over both nodes), its
/// Service, a pod pinned to node2 with its own service account, an
/// AuthorizationPolicy and a namespace-wide STRICT PeerAuthentication.
fn manifests() -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      serviceAccountName: web
      containers:
      - name: web
        command: [meshctl, app, http-echo, --port, "8080"]
        ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NS}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: lonely, namespace: {NS}, labels: {{app: lonely}}}}
spec:
  nodeName: node2
  serviceAccountName: lonely
  containers: [{{name: c, command: [sleep, infinity]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-web, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/{NS}/sa/lonely]}}}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: strict, namespace: {NS}}}
spec:
  mtls: {{mode: STRICT}}
"#
    )
}

fn roots(pem: &str) -> Vec<CertificateDer<'static>> {
    hbone::cert::certificates_from_pem(pem, "root certificate").unwrap()
}

/// A gRPC channel to the sandbox's forwarded xDS port, made the way a ztunnel makes it: TLS
/// that accepts only the controller's identity chained to the sandbox's root. Tokens are
/// added per request, so one test can speak for several callers.
async fn channel(sb: &Sandbox) -> Channel {
    let config = ControlPlaneSettings {
        address: sb.controller_xds_addr().to_string(),
        root_cert: sb.controller_info().expect("controller info").root_cert,
        token_file: None,
        server_identity: CONTROLLER.into(),
        learned_roots: Default::default(),
    };
    ControlPlane::connect(&config)
        .await
        .expect("TLS channel to the controller")
        .channel
}

/// A delta ADS client keeping the resources it was sent.
struct Ads {
    stream: AdsStream,
    addresses: BTreeMap<String, Address>,
    policies: BTreeMap<String, Authorization>,
}

impl Ads {
    async fn connect(channel: Channel, token: &str) -> Ads {
        let stream = AdsStream::open(channel, token)
            .await
            .expect("delta ADS stream");
        // Wildcard subscriptions (no names), as ztunnel subscribes.
        for type_url in [api::ADDRESS_TYPE_URL, api::AUTHORIZATION_TYPE_URL] {
            stream
                .subscribe(
                    "ztunnel~172.18.0.2~e2e.istio-system~istio-system.svc.cluster.local",
                    type_url,
                    &[],
                )
                .await;
        }
        Ads {
            stream,
            addresses: BTreeMap::new(),
            policies: BTreeMap::new(),
        }
    }

    /// Applies one response to the kept state and ACKs it.
    async fn apply(&mut self, response: DeltaDiscoveryResponse) {
        for r in &response.resources {
            let any = r.resource.as_ref().expect("resource body");
            match response.type_url.as_str() {
                api::ADDRESS_TYPE_URL => {
                    self.addresses
                        .insert(r.name.clone(), api::unpack(any).expect("Address"));
                }
                api::AUTHORIZATION_TYPE_URL => {
                    self.policies
                        .insert(r.name.clone(), api::unpack(any).expect("Authorization"));
                }
                other => panic!("unexpected type {other}"),
            }
        }
        for name in &response.removed_resources {
            self.addresses.remove(name);
            self.policies.remove(name);
        }
        self.stream.ack(&response).await;
    }

    /// Receives, applies and ACKs responses until `done` holds; returns how
    /// long that took. Panics (with the state) if it does not within WAIT.
    async fn until(&mut self, what: &str, done: impl Fn(&Ads) -> bool) -> Duration {
        let start = Instant::now();
        while !done(self) {
            let left = WAIT.saturating_sub(start.elapsed());
            let next = tokio::time::timeout(left, self.stream.message()).await;
            match next {
                Ok(Ok(Some(response))) => self.apply(response).await,
                Ok(Ok(None)) => panic!("{what}: the stream ended"),
                Ok(Err(status)) => panic!("{what}: stream error {status}"),
                Err(_) => panic!(
                    "{what}: not within {WAIT:?}; workloads {:#?}; policies {:?}",
                    self.workloads(),
                    self.policies.keys().collect::<Vec<_>>()
                ),
            }
        }
        start.elapsed()
    }

    fn workloads(&self) -> Vec<&Workload> {
        self.addresses
            .values()
            .filter_map(|a| match &a.r#type {
                Some(address::Type::Workload(w)) if w.namespace == NS => Some(w),
                _ => None,
            })
            .collect()
    }

    fn workload(&self, name: &str) -> Option<&Workload> {
        self.workloads().into_iter().find(|w| w.name == name)
    }

    fn service(&self, name: &str) -> Option<&Service> {
        self.addresses.values().find_map(|a| match &a.r#type {
            Some(address::Type::Service(s)) if s.namespace == NS && s.name == name => Some(s),
            _ => None,
        })
    }
}

/// True when `w` is `pod` as the sandbox placed it.
fn matches_pod(w: &Workload, pod: &PodInfo, service_account: &str) -> bool {
    w.node == pod.node
        && w.service_account == service_account
        && w.addresses == [pod.ip.octets().to_vec()]
}

/// Asks the CA for `identity` on behalf of a node.
async fn certificate(
    channel: Channel,
    token: &str,
    identity: &Identity,
) -> Result<(CertificateRequest, Vec<String>), tonic::Status> {
    let csr = CertificateRequest::generate(identity).unwrap();
    let impersonate = identity.to_string();
    let chain = create_certificate(channel, token, csr.csr_pem(), 3600, Some(&impersonate)).await?;
    Ok((csr, chain))
}

/// Proves `cert` chains to the sandbox's root and carries `identity`: a TLS
/// handshake whose client trusts only that root and that identity.
async fn verify_against_root(cert: &WorkloadCertificate, root_pem: &str, identity: &Identity) {
    let done = handshake_with(
        hbone::tls::server_config_without_client_auth(cert).unwrap(),
        hbone::tls::client_config_without_client_auth(
            &roots(root_pem),
            std::slice::from_ref(identity),
        )
        .unwrap(),
    )
    .await;
    done.client
        .expect("the issued chain verifies against the sandbox root");
    done.server.unwrap();
}

#[test]
fn the_controller_serves_the_sandbox_over_xds_and_issues_node_scoped_certificates() {
    let sb = Sandbox::up_with(&manifests(), Options::default()).expect("sandbox up");
    let pods: Vec<PodInfo> = sb
        .pods()
        .unwrap()
        .into_iter()
        .filter(|p| p.namespace == NS)
        .collect();
    let web: Vec<&PodInfo> = pods.iter().filter(|p| p.name.starts_with("web-")).collect();
    let lonely = pods.iter().find(|p| p.name == "lonely").unwrap().clone();
    let mut web_nodes: Vec<&str> = web.iter().map(|p| p.node.as_str()).collect();
    web_nodes.sort();
    assert_eq!(web_nodes, ["node1", "node2"], "replicas on both nodes");
    let root_pem = sb.root_cert_pem().unwrap();
    let token1 = sb.node_token("node1").unwrap();
    let token2 = sb.node_token("node2").unwrap();
    assert_ne!(token1, token2);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Delta ADS as node1's ztunnel.
        let mut ads = Ads::connect(channel(&sb).await, &token1).await;
        let took = ads
            .until("workloads, service and policies", |a| {
                web.iter().all(|p| {
                    a.workload(&p.name)
                        .is_some_and(|w| matches_pod(w, p, "web"))
                }) && a
                    .workload("lonely")
                    .is_some_and(|w| matches_pod(w, &lonely, "lonely"))
                    && a.service("web").is_some()
                    && a.policies.contains_key(&format!("{NS}/allow-web"))
                    && a.policies
                        .contains_key("istio-system/istio_converted_static_strict")
            })
            .await;
        eprintln!("initial config received after {took:?}");
        let svc = ads.service("web").unwrap();
        assert_eq!(svc.hostname, format!("web.{NS}.svc.cluster.local"));
        let key = format!("{NS}/web.{NS}.svc.cluster.local");
        for p in &web {
            let w = ads.workload(&p.name).unwrap();
            assert!(w.services.contains_key(&key), "{w:?}");
            assert_eq!(
                w.tunnel_protocol,
                TunnelProtocol::None as i32,
                "not enrolled yet"
            );
        }
        let policy = &ads.policies[&format!("{NS}/allow-web")];
        assert_eq!(policy.namespace, NS);
        assert_eq!(policy.name, "allow-web");

        // Enrolling the namespace turns its workloads to HBONE.
        sb.label(NS, "istio.io/dataplane-mode=ambient").unwrap();
        let took = ads
            .until("workloads turn HBONE", |a| {
                let ws = a.workloads();
                ws.len() == 3
                    && ws
                        .iter()
                        .all(|w| w.tunnel_protocol == TunnelProtocol::Hbone as i32)
            })
            .await;
        eprintln!("label reached the ztunnel view after {took:?}");

        // CA: node1 may have a certificate for web (a pod runs there)...
        let web_id: Identity = format!("spiffe://cluster.local/ns/{NS}/sa/web")
            .parse()
            .unwrap();
        let (csr, chain) = certificate(channel(&sb).await, &token1, &web_id)
            .await
            .expect("node1 may impersonate web");
        assert_eq!(roots(chain.last().unwrap()), roots(&root_pem), "roots last");
        let cert = csr.into_certificate(&chain).expect("chain assembles");
        assert_eq!(cert.identity(), &web_id, "SAN is the identity");
        verify_against_root(&cert, &root_pem, &web_id).await;

        // ...but not for lonely, whose only pod is on node2.
        let lonely_id: Identity = format!("spiffe://cluster.local/ns/{NS}/sa/lonely")
            .parse()
            .unwrap();
        let refused = certificate(channel(&sb).await, &token1, &lonely_id)
            .await
            .expect_err("node1 has no pod of lonely");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        let (_, chain) = certificate(channel(&sb).await, &token2, &lonely_id)
            .await
            .expect("node2 may impersonate lonely");
        assert!(!chain.is_empty());
        // An unknown token gets nothing.
        let stranger = certificate(channel(&sb).await, "nope", &web_id)
            .await
            .expect_err("unknown token");
        assert_eq!(stranger.code(), Code::Unauthenticated);
    });

    // An invalid object is reported with its file, object and field: by apply, which exits
    // non-zero, and in the controller's log.
    let broken = format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: broken, namespace: {NS}}}\nspec: {{action: BOGUS}}\n"
    );
    let refused = sb
        .apply(&broken)
        .expect_err("apply reports the error")
        .to_string();
    assert!(
        refused.contains(&format!(
            "AuthorizationPolicy {NS}/broken: field spec.action"
        )),
        "{refused}"
    );
    let deadline = Instant::now() + WAIT;
    let mut log = String::new();
    while Instant::now() < deadline {
        log = sb.logs(&Component::Controller).unwrap();
        if log.contains("authorizationpolicy-broken.yaml") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let line = log
        .lines()
        .find(|l| l.contains("authorizationpolicy-broken.yaml"))
        .unwrap_or_else(|| panic!("no report of the broken policy in:\n{log}"));
    assert!(
        line.contains(&format!("AuthorizationPolicy {NS}/broken")),
        "{line}"
    );
    assert!(line.contains("spec.action"), "{line}");

    // The admin endpoint's dump holds the workloads.
    let dump = sb.config_dump().unwrap();
    let addresses = &dump[api::ADDRESS_TYPE_URL];
    for p in &web {
        let w = &addresses[format!("Kubernetes//Pod/{NS}/{}", p.name)]["resource"]["workload"];
        assert_eq!(w["node"], p.node.as_str(), "{dump}");
        assert_eq!(w["tunnel_protocol"], "HBONE");
    }
}

#[test]
fn a_restarted_controller_keeps_its_ca_and_serves_again() {
    let yaml = manifests();
    let opts = Options {
        ztunnel: false,
        ..Options::default()
    };
    let sb = Sandbox::up_with(&yaml, opts).expect("sandbox up");
    let root_before = sb.root_cert_pem().unwrap();
    let token = sb.node_token("node2").unwrap();
    let addr = sb.controller_xds_addr();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut ads = rt.block_on(async {
        let mut ads = Ads::connect(channel(&sb).await, &token).await;
        ads.until("lonely", |a| a.workload("lonely").is_some())
            .await;
        ads
    });

    sb.stop(&Component::Controller).unwrap();
    rt.block_on(async {
        // Responses sent before the stop may still be buffered; then the
        // stream must end.
        let ended = tokio::time::timeout(WAIT, async {
            while let Ok(Some(_)) = ads.stream.message().await {}
        })
        .await;
        assert!(ended.is_ok(), "the stream of a stopped controller ends");
    });
    let admin = sb.controller_admin_url();
    assert!(
        sb.config_dump().is_err(),
        "admin of a stopped controller answers ({admin})"
    );

    sb.restart(&Component::Controller).unwrap();
    assert_eq!(
        sb.root_cert_pem().unwrap(),
        root_before,
        "the CA root persists"
    );
    rt.block_on(async {
        let mut ads = Ads::connect(channel(&sb).await, &token).await;
        ads.until("lonely after restart", |a| {
            a.workload("lonely").is_some() && a.service("web").is_some()
        })
        .await;
    });
    let info = sb.controller_info().unwrap();
    assert_eq!(info.xds_port, addr.port(), "same forwarded port");
}

/// Objects the mesh does not read are named at `apply`, with a hint: a near miss of an API
/// group is an error (exit status 1), a kind the mesh does not implement a warning.
#[test]
fn apply_reports_objects_the_mesh_does_not_read() {
    let sb = Sandbox::up(&test_support::manifests::namespace(NS, true)).expect("sandbox up");
    let scratch = test_support::TempDir::new("e2e-unread");
    let file = scratch.join("linkerd-server.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: security.linkerd.io/v1beta1\nkind: Server\n\
             metadata: {{name: web, namespace: {NS}}}\n\
             spec: {{podSelector: {{matchLabels: {{app: web}}}}, port: http}}\n"
        ),
    )
    .unwrap();
    let analyze = [
        "analyze".to_owned(),
        "-f".to_owned(),
        file.display().to_string(),
    ];
    let analyzed = sb
        .run(&analyze)
        .expect_err("analyze exits non-zero")
        .to_string();
    assert!(
        analyzed.contains("did you mean apiVersion: policy.linkerd.io/v1beta1?"),
        "{analyzed}"
    );
    let args = [
        "apply".to_owned(),
        "-f".to_owned(),
        file.display().to_string(),
    ];
    let refused = sb.run(&args).expect_err("apply exits non-zero").to_string();
    for expected in [
        &format!("{}: Server {NS}/web:", file.display()),
        "there is no API group security.linkerd.io",
        "did you mean apiVersion: policy.linkerd.io/v1beta1?",
    ] {
        assert!(
            refused.contains(expected),
            "{expected:?} missing from:\n{refused}"
        );
    }

    std::fs::write(
        &file,
        format!(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n\
             metadata: {{name: traces, namespace: {NS}}}\n\
             spec: {{tracing: [{{providers: [{{name: jaeger}}]}}]}}\n"
        ),
    )
    .unwrap();
    let applied = sb.run(&args).expect("a warning does not fail apply");
    let warned = String::from_utf8_lossy(&applied.stderr);
    assert!(
        warned.contains(&format!(
            "Telemetry {NS}/traces: field spec.tracing[0].providers[0].name: warning: \
             \"jaeger\" names no extension provider of the mesh config"
        )),
        "{warned}"
    );

    // A pod field the sandbox accepts but does not apply is named too.
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: confined, namespace: {NS}}}\n\
             spec:\n  securityContext: {{seccompProfile: {{type: RuntimeDefault}}}}\n  \
             containers: [{{name: c, command: [sleep, infinity]}}]\n"
        ),
    )
    .unwrap();
    let applied = sb.run(&args).expect("a warning does not fail apply");
    let warned = String::from_utf8_lossy(&applied.stderr);
    assert!(
        warned.contains(&format!(
            "Pod {NS}/confined: field spec.securityContext.seccompProfile: warning: not \
             applied in the sandbox"
        )),
        "{warned}"
    );
    // So is a field of an object the mesh reads that it does not act on.
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {NS}}}\n\
             spec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
             metadata: {{name: typo, namespace: {NS}}}\n\
             spec: {{hosts: [web], http: [{{route: [{{destination: {{host: web}}}}], \
             retires: {{attempts: 3}}}}]}}\n"
        ),
    )
    .unwrap();
    let applied = sb.run(&args).expect("a warning does not fail apply");
    let warned = String::from_utf8_lossy(&applied.stderr);
    assert!(
        warned.contains(&format!(
            "VirtualService {NS}/typo: field spec.http[0].retires: warning: the mesh does not \
             read this field"
        )),
        "{warned}"
    );
}
